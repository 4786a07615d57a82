//! `dagrun cache gc` and `dagrun cache verify` (`push` and `pull`: `cmd_remote.rs`).

use std::collections::HashSet;

use dagrun_engine::{
    plan::{Evaluator, Selection},
    slurm::{stale_staging, SlurmSettings},
};

use crate::{
    cli::CacheCommand,
    cmd_inspect::human_bytes,
    context::Ctx,
    exit::{usage, CliResult},
};

pub fn cmd_cache(ctx: &Ctx, c: &CacheCommand) -> CliResult {
    // Remote caches: a pull may be the first thing a fresh clone does.
    match c {
        CacheCommand::Push(a) => return crate::cmd_remote::cmd_push(ctx, a),
        CacheCommand::Pull(a) => return crate::cmd_remote::cmd_pull(ctx, a),
        _ => {}
    }
    let cache = ctx
        .open_existing_cache("cache")?
        .ok_or_else(|| usage("no cache here yet"))?;
    match c {
        CacheCommand::Gc {
            pipelines,
            dry_run,
            overrides,
        } => {
            // Keep, for every node of the given pipelines, the record its current key
            // names and the record of its last run.
            let mut keep = HashSet::new();
            let mut current = std::collections::HashMap::new();
            let mut stagings = std::collections::BTreeSet::new();
            for file in pipelines {
                let p = ctx.load_with(file, overrides)?;
                stagings.insert(SlurmSettings::new(&p.slurm, &p.workdir, cache.dir()).staging);
                let ev = Evaluator::new(&p, Some(&cache), false);
                for (i, e) in ev.plan(&Selection::default())?.into_iter().enumerate() {
                    if let Some(k) = e.and_then(|e| e.key) {
                        keep.insert(k);
                        current.insert(k.to_hex(), k);
                    }
                    if let Some(l) = cache.latest(&p.nodes[i].id)? {
                        keep.insert(l.key);
                    }
                }
            }
            let r = cache.gc(&keep, *dry_run)?;
            let verb = if *dry_run { "would remove" } else { "removed" };
            println!(
                "{verb} {} records and {} objects, {} freed; kept {} records",
                r.records_removed,
                r.objects_removed,
                human_bytes(r.bytes_freed),
                r.records_kept
            );
            // Slurm staging folders that no run can adopt any more.
            let adoptable = |key: &str| {
                current
                    .get(key)
                    .is_some_and(|h| !cache.has_record(h).unwrap_or(true))
            };
            let stale: Vec<_> = stagings
                .iter()
                .flat_map(|s| stale_staging(s, &adoptable))
                .collect();
            if !stale.is_empty() {
                if !*dry_run {
                    for d in &stale {
                        std::fs::remove_dir_all(d).map_err(|e| {
                            crate::exit::Failure::Other(anyhow::anyhow!(
                                "cannot remove {}: {e}",
                                d.display()
                            ))
                        })?;
                    }
                }
                println!("{verb} {} Slurm staging folder(s)", stale.len());
            }
        }
        CacheCommand::Push(_) | CacheCommand::Pull(_) => unreachable!("handled above"),
        CacheCommand::Verify => {
            let r = cache.verify()?;
            if let Some(d) = &r.index_damage {
                println!("index damage: {d}");
            }
            if r.corrupt_objects.is_empty() && r.records_dropped.is_empty() {
                println!("verified {} objects: no corruption", r.objects_checked);
            } else {
                println!(
                    "verified {} objects: {} corrupt (moved to {})",
                    r.objects_checked,
                    r.corrupt_objects.len(),
                    cache.dir().join("quarantine").display()
                );
                for h in &r.corrupt_objects {
                    println!("  corrupt object {h}");
                }
                for n in &r.records_dropped {
                    println!("  dropped the record of `{n}`: it will run again");
                }
            }
            for (key, why) in &r.unreadable_records {
                println!("  removed the unreadable record {key} ({why}): its node will run again");
            }
            for f in &r.stray_files {
                println!(
                    "  `{}` is not an object (left alone; dagrun did not write it)",
                    f.display()
                );
            }
            if !r.is_clean() {
                return Err(crate::exit::Failure::StageFailed);
            }
        }
    }
    Ok(())
}
