//! What a no-op stamp (`dagrun_cache::stamp`) must watch for a plan: every workspace
//! path the plan depended on, and whether a pipeline's plan depends on anything else of
//! this machine that the stamp cannot see.

use std::{
    collections::BTreeSet,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use dagrun_cache::stamp::{StampEntry, Watch};

use crate::{
    pipeline::{DepSource, Pipeline},
    plan::Selection,
    spec::Executor,
};

/// Why the selected nodes' plan depends on more than files and the pipeline (a stamp is
/// not written for them), if it does: a Slurm node (its jobs live outside the
/// workspace), a node asking for GPUs (the machine's count), a kind whose environment
/// (its backend, its device) is part of the key.
pub fn unstampable(p: &Pipeline, sel: &Selection) -> Option<String> {
    for &i in &p.order {
        if !sel.includes(i) {
            continue;
        }
        let n = &p.nodes[i];
        if n.executor != Executor::Local {
            return Some(format!("{} runs on Slurm", n.id));
        }
        if n.resources.gpus > 0 {
            return Some(format!("{} asks for GPUs", n.id));
        }
        match n.kind.environment(&n.device, n.place()) {
            Ok(env) if env.is_empty() => {}
            _ => return Some(format!("{}'s key depends on this machine", n.id)),
        }
    }
    None
}

/// The workspace paths the plan of the selected nodes depends on, as they are now: each
/// input and output (a folder with everything inside it, links followed as the
/// workspace's hashing follows them) in full, and the folders on the way to them by
/// identity (they must not turn into links or other folders). `skip` are the folders a
/// folder's hash leaves out (`plan::dagrun_folders`).
pub fn snapshot(
    p: &Pipeline,
    sel: &Selection,
    skip: &[PathBuf],
) -> std::io::Result<Vec<StampEntry>> {
    let mut rels = BTreeSet::new();
    for &i in &p.order {
        if !sel.includes(i) {
            continue;
        }
        let n = &p.nodes[i];
        for d in &n.deps {
            if let DepSource::Workspace { .. } = d.source {
                rels.insert(d.path.as_str());
            }
        }
        rels.extend(n.outs.iter().map(String::as_str));
    }
    let mut skip_ids = Vec::new();
    for d in skip {
        if let Ok(m) = std::fs::metadata(d) {
            skip_ids.push((m.dev(), m.ino()));
        }
    }
    let mut ways = BTreeSet::new();
    let mut out = Vec::new();
    for rel in &rels {
        let abs = if *rel == "." {
            p.workdir.clone()
        } else {
            p.workdir.join(rel)
        };
        let mut way = abs.parent();
        while let Some(w) = way {
            if w == p.workdir || !w.starts_with(&p.workdir) || !ways.insert(w.to_path_buf()) {
                break;
            }
            way = w.parent();
        }
        visit(abs, skip, &skip_ids, 0, &mut out)?;
    }
    for w in ways {
        out.push(StampEntry::take(w, Watch::Identity)?);
    }
    Ok(out)
}

fn visit(
    path: PathBuf,
    skip: &[PathBuf],
    skip_ids: &[(u64, u64)],
    depth: usize,
    out: &mut Vec<StampEntry>,
) -> std::io::Result<()> {
    if depth > 64 {
        return Err(std::io::Error::other(format!(
            "`{}`: folders nested too deep (a loop of links?)",
            path.display()
        )));
    }
    let e = StampEntry::take(path, Watch::Full)?;
    let is_dir = e.followed().kind == 2;
    let id = (e.followed().dev, e.followed().ino);
    if is_dir && depth > 0 && (skip.contains(&e.path) || skip_ids.contains(&id)) {
        // Not part of the folder's hash (the cache folder itself, Slurm staging).
        return Ok(());
    }
    let path = e.path.clone();
    out.push(e);
    if is_dir {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&path)? {
            let entry = entry?;
            names.push(entry.file_name());
        }
        names.sort();
        for name in names {
            visit(path.join(name), skip, skip_ids, depth + 1, out)?;
        }
    }
    Ok(())
}

/// The first entry of a snapshot whose times are too recent to trust at `now_ns`.
pub fn first_racy(entries: &[StampEntry], now_ns: i128) -> Option<&Path> {
    entries
        .iter()
        .find(|e| e.racy(now_ns))
        .map(|e| e.path.as_path())
}
