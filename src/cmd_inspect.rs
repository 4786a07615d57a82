//! `status`, `show`, `why`, `log`, `export`, `kinds`.

use std::collections::BTreeMap;

use dagrun_cache::{Cache, Record};
use dagrun_engine::plan::{Evaluator, Selection, State};
use serde_json::json;

use crate::{
    cli::{ExportArgs, KindsArgs, LogArgs, ShowArgs, StatusArgs, WhyArgs},
    context::Ctx,
    display::fmt_secs,
    exit::{usage, CliResult, Failure},
};

pub fn cmd_status(ctx: &Ctx, a: &StatusArgs) -> CliResult {
    let cache = match ctx.open_existing_cache("status") {
        Err(Failure::Busy(e)) => return live_status(ctx, a, e),
        other => other?,
    };
    let file = ctx.pipeline_or_last(a.pipeline.as_deref(), cache.as_ref())?;
    let p = ctx.load_with(&file, &a.overrides)?;
    let ev = Evaluator::new(&p, cache.as_ref(), false);
    let plan = ev.plan(&Selection::default())?;
    let mut per_stage: BTreeMap<&str, BTreeMap<&str, usize>> = BTreeMap::new();
    for (i, e) in plan.iter().enumerate() {
        if let Some(e) = e {
            *per_stage
                .entry(p.nodes[i].stage.as_str())
                .or_default()
                .entry(e.state.label())
                .or_default() += 1;
        }
    }
    if a.json {
        let stages: serde_json::Map<String, serde_json::Value> = p
            .stages
            .keys()
            .map(|s| {
                (
                    s.clone(),
                    json!(per_stage.get(s.as_str()).cloned().unwrap_or_default()),
                )
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({"pipeline": p.name, "stages": stages, "in_progress": null})
            )
            .expect("json")
        );
        return Ok(());
    }
    println!("{}", p.name);
    let all_cached = plan
        .iter()
        .flatten()
        .all(|e| matches!(e.state, State::Cached { .. }));
    for (name, info) in &p.stages {
        let counts = per_stage.get(name.as_str()).cloned().unwrap_or_default();
        let summary: Vec<String> = counts.iter().map(|(l, c)| format!("{c} {l}")).collect();
        let n = info.nodes.len();
        let label = if n == 1 {
            name.clone()
        } else {
            format!("{name} [{n} nodes]")
        };
        println!("  {label:<32} {}", summary.join(", "));
        // The first reason of the first non-cached node, as a hint.
        if let Some(e) = info
            .nodes
            .iter()
            .filter_map(|&i| plan[i].as_ref())
            .find(|e| !matches!(e.state, State::Cached { .. }))
        {
            if let Some(r) = e.state.reasons().first() {
                println!("  {:<32}   e.g. {r}", "");
            }
        }
    }
    if all_cached {
        println!("everything is cached");
    }
    Ok(())
}

/// The latest record of a node id, with a helpful error.
fn latest_record(cache: &Cache, node: &str) -> CliResult<Record> {
    if let Some(l) = cache.latest(node)? {
        if let Some(r) = cache.record(&l.key)? {
            return Ok(r);
        }
        return Err(usage(format!("the record of `{node}` was removed from the cache (gc or verify); run the pipeline again")));
    }
    let prefix = format!("{node}[");
    let similar: Vec<String> = cache
        .latest_all()?
        .into_iter()
        .map(|(n, _)| n)
        .filter(|n| n.starts_with(&prefix))
        .take(10)
        .collect();
    if similar.is_empty() {
        Err(usage(format!(
            "no record of node `{node}` in this cache (has it run?)"
        )))
    } else {
        Err(usage(format!(
            "`{node}` is a sweep; name one node, e.g.:\n  {}",
            similar.join("\n  ")
        )))
    }
}

pub fn cmd_show(ctx: &Ctx, a: &ShowArgs) -> CliResult {
    let cache = ctx
        .open_existing_cache("show")?
        .ok_or_else(|| usage("no cache here yet: nothing has run"))?;
    let failure = cache.failure(&a.node)?;
    let rec = match (latest_record(&cache, &a.node), &failure) {
        (Ok(rec), _) => rec,
        // Failed nodes leave no record: say how it failed, and show its log.
        (Err(_), Some(f)) if !a.json => {
            println!("node      {}", a.node);
            println!("pipeline  {}", f.pipeline);
            print_failure(ctx, f, a.log_lines);
            return Ok(());
        }
        (Err(_), Some(f)) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&json!({"node": a.node, "last_failure": f}))
                    .expect("json")
            );
            return Ok(());
        }
        (Err(e), None) => return Err(e),
    };
    let log = rec
        .log
        .and_then(|h| cache.read_bytes(&h).ok())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let tail = last_lines(&log, a.log_lines);
    if a.json {
        let mut v = serde_json::to_value(&rec).expect("json");
        v["log_tail"] = json!(tail);
        if let Some(f) = &failure {
            v["last_failure"] = json!(f);
        }
        println!("{}", serde_json::to_string_pretty(&v).expect("json"));
        return Ok(());
    }
    println!("node      {}", rec.node);
    println!("kind      {} v{}", rec.kind, rec.kind_version);
    println!("key       {}", rec.key);
    println!("pipeline  {}", rec.pipeline);
    println!(
        "ran       {} ({}), dagrun {}",
        rec.timing.finished.format("%Y-%m-%d %H:%M:%S UTC"),
        fmt_secs(rec.timing.seconds),
        rec.engine_version
    );
    let comps = &rec.components;
    if let Some(params) = comps
        .get("params")
        .and_then(|p| p.as_object())
        .filter(|o| !o.is_empty())
    {
        println!("params");
        for (k, v) in params {
            println!("  {k}: {}", compact(v));
        }
    }
    if let Some(m) = comps
        .get("matrix")
        .and_then(|p| p.as_object())
        .filter(|o| !o.is_empty())
    {
        println!("matrix");
        for (k, v) in m {
            println!("  {k}: {}", compact(v));
        }
    }
    if !rec.param_refs.is_empty() {
        println!("pipeline params it reads");
        for (k, v) in &rec.param_refs {
            println!("  {k}: {}", compact(v));
        }
    }
    for section in ["inputs", "env"] {
        if let Some(m) = comps
            .get(section)
            .and_then(|p| p.as_object())
            .filter(|o| !o.is_empty())
        {
            println!("{section}");
            for (k, v) in m {
                let s = v.as_str().unwrap_or_default();
                let shown = if section == "inputs" {
                    s.chars().take(16).collect::<String>()
                } else {
                    s.to_string()
                };
                println!("  {k}: {shown}");
            }
        }
    }
    if !rec.outputs.is_empty() {
        println!("outputs");
        for (name, art) in &rec.outputs {
            let files = art
                .entries
                .as_ref()
                .map(|e| format!(", {} files", e.len()))
                .unwrap_or_default();
            println!(
                "  {name}  {} {}{files}  {}",
                art.kind.as_str(),
                human_bytes(art.size),
                art.hash.short()
            );
        }
    }
    if !rec.metrics.is_empty() {
        println!("metrics");
        for (k, v) in &rec.metrics.scalars {
            println!("  {k} = {v}");
        }
        for (k, v) in &rec.metrics.other {
            println!("  {k} = {v}");
        }
        for (k, s) in &rec.metrics.series {
            let last = s
                .last()
                .map(|(x, y)| format!(", last ({x}, {y})"))
                .unwrap_or_default();
            println!("  {k}: {} points{last}", s.len());
        }
    }
    if !tail.is_empty() {
        println!("log (last {} lines)", tail.len());
        for l in tail {
            println!("  {l}");
        }
    }
    if let Some(f) = &failure {
        println!("a later run of this node failed:");
        print_failure(ctx, f, a.log_lines);
    }
    Ok(())
}

/// When and how a node's last execution failed, and the tail of its kept log.
fn print_failure(ctx: &Ctx, f: &dagrun_cache::NodeFailure, lines: usize) {
    println!(
        "failed    {}: {}",
        f.at.format("%Y-%m-%d %H:%M:%S UTC"),
        f.error
    );
    let Some(log) = &f.log else { return };
    println!(
        "log       {}",
        log.strip_prefix(&ctx.workdir).unwrap_or(log).display()
    );
    if let Ok(text) = std::fs::read_to_string(log) {
        let tail = last_lines(&text, lines);
        println!("log (last {} lines)", tail.len());
        for l in tail {
            println!("  {l}");
        }
    }
}

/// The last `n` lines of a log.
fn last_lines(text: &str, n: usize) -> Vec<&str> {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(n)..].to_vec()
}

fn compact(v: &serde_json::Value) -> String {
    let s = v.to_string();
    if s.len() > 120 {
        format!("{}…", &s[..120])
    } else {
        s
    }
}

pub fn human_bytes(n: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut x = n as f64;
    let mut u = 0;
    while x >= 1024.0 && u < U.len() - 1 {
        x /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{x:.1} {}", U[u])
    }
}

pub fn cmd_why(ctx: &Ctx, a: &WhyArgs) -> CliResult {
    let cache = ctx.open_existing_cache("why")?;
    let from_latest = match (&a.pipeline, &cache) {
        (None, Some(c)) => c.latest(&a.node)?.map(|l| ctx.workdir.join(l.pipeline)),
        _ => None,
    };
    let file = match from_latest {
        Some(f) => f,
        None => ctx.pipeline_or_last(a.pipeline.as_deref(), cache.as_ref())?,
    };
    let p = ctx.load_with(&file, &a.overrides)?;
    let nodes = p.select(&a.node).map_err(usage)?;
    let ev = Evaluator::new(&p, cache.as_ref(), false);
    let plan = ev.plan(&Selection::default())?;
    for i in nodes {
        let e = plan[i].as_ref().expect("every node is planned");
        let id = &p.nodes[i].id;
        match &e.state {
            State::Cached { restore } => {
                let when = e
                    .record
                    .as_ref()
                    .map(|r| {
                        r.timing
                            .finished
                            .format("%Y-%m-%d %H:%M:%S UTC")
                            .to_string()
                    })
                    .unwrap_or_default();
                println!("{id}: cached (ran {when}); nothing changed");
                if !restore.is_empty() {
                    println!(
                        "  workspace outputs differ from the cache and will be restored: {}",
                        restore.join(", ")
                    );
                }
            }
            s => {
                println!("{id}: {}", s.label());
                for r in s.reasons() {
                    println!("  - {r}");
                }
            }
        }
    }
    Ok(())
}

pub fn cmd_log(ctx: &Ctx, a: &LogArgs) -> CliResult {
    let Some(cache) = ctx.open_existing_cache("log")? else {
        println!("no runs yet");
        return Ok(());
    };
    let runs = cache.runs()?;
    for r in &runs[runs.len().saturating_sub(a.count)..] {
        let secs = (r.finished - r.started).num_milliseconds() as f64 / 1000.0;
        let mut line = format!(
            "{}  {:<11} {}  ",
            r.started.format("%Y-%m-%d %H:%M:%S"),
            r.outcome,
            r.pipeline,
        );
        match &r.counts {
            Some(c) => line.push_str(&format!("{}, {c}", crate::cmd_run::nodes(c.nodes()))),
            // Older records counted every started node, failed or interrupted ones too.
            None => {
                line.push_str(&format!(
                    "{} started, {} cached",
                    r.executed.len(),
                    r.cached
                ));
                if r.cut_off > 0 {
                    line.push_str(&format!(" ({} kept by early cutoff)", r.cut_off));
                }
            }
        }
        if !r.failed.is_empty() {
            line.push_str(&format!(" (failed: {})", r.failed.join(", ")));
        }
        line.push_str(&format!("  ({})", fmt_secs(secs)));
        println!("{line}");
        if !r.overrides.is_empty() {
            println!("    with -S {}", r.overrides.join(" -S "));
        }
    }
    if runs.is_empty() {
        println!("no runs yet");
    }
    Ok(())
}

pub fn cmd_export(ctx: &Ctx, a: &ExportArgs) -> CliResult {
    let cache = ctx
        .open_existing_cache("export")?
        .ok_or_else(|| usage("no cache here yet: nothing has run"))?;
    let rec = latest_record(&cache, &a.node)?;
    std::fs::create_dir_all(&a.dir)
        .map_err(|e| usage(format!("cannot create `{}`: {e}", a.dir.display())))?;
    let outputs: Vec<(&str, &dagrun_cache::Artifact)> =
        rec.outputs.iter().map(|(n, a)| (n.as_str(), a)).collect();
    let r = cache
        .export(&outputs, &a.dir, a.force)
        .map_err(|e| match e {
            dagrun_cache::Error::ExportConflict(c) => usage(format!(
                "nothing exported: {} in `{}` would be overwritten or are in the way:\n  {}",
                if c.len() == 1 { "a file" } else { "files" },
                a.dir.display(),
                c.join("\n  ")
            )),
            e if e.damaged_object().is_some() => usage(format!(
                "nothing exported: {e}; its record is dropped, so the next run of `{}` \
                 computes it again",
                a.node
            )),
            e => e.into(),
        })?;
    // One line per output: its path, and for a folder how many files were written.
    for (name, art) in &rec.outputs {
        let dest = a.dir.join(name);
        let count =
            |paths: &[std::path::PathBuf]| paths.iter().filter(|p| p.starts_with(&dest)).count();
        let (n, same) = (count(&r.written), count(&r.unchanged));
        match (art.is_dir(), same) {
            (false, 0) => println!("{}", dest.display()),
            (false, _) => println!("{}  (unchanged)", dest.display()),
            (true, 0) => println!("{}  ({n} files)", dest.display()),
            (true, _) => println!("{}  ({n} files written, {same} unchanged)", dest.display()),
        }
    }
    Ok(())
}

/// `dagrun status` while a run holds the cache: what that run wrote to `live.json` (see
/// `Display::write_snapshots`). Without a fresh snapshot of a live process, the busy error.
fn live_status(ctx: &Ctx, a: &StatusArgs, busy: anyhow::Error) -> CliResult {
    let live = std::fs::read(ctx.cache_dir.join("live.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<crate::display::LiveRun>(&b).ok())
        .filter(|l| std::path::Path::new(&format!("/proc/{}", l.pid)).exists());
    let Some(l) = live else {
        return Err(Failure::Busy(busy));
    };
    if a.json {
        // The same shape as without a run in progress; the per-stage view needs the cache.
        let pipeline = a.pipeline.as_ref().map(|p| p.display().to_string());
        println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({"pipeline": pipeline, "stages": null, "in_progress": l})
            )
            .expect("JSON")
        );
        return Ok(());
    }
    let now = crate::display::unix_now();
    println!(
        "a run is in progress (pid {}, started {} ago): {}",
        l.pid,
        fmt_secs(now.saturating_sub(l.started) as f64),
        l.command
    );
    let finished = l.ran + l.cached + l.failed;
    println!(
        "  {finished} of {} nodes finished: {} ran, {} cached, {} failed; {} running",
        l.nodes,
        l.ran,
        l.cached,
        l.failed,
        l.running.len()
    );
    for r in &l.running {
        let counts = if r.total > 0 {
            format!("  {}/{}", r.done, r.total)
        } else {
            String::new()
        };
        println!(
            "  running  {}  {}{counts}  {}",
            r.node,
            fmt_secs(r.seconds),
            r.message
        );
    }
    println!("(the per-stage view needs the cache, which the run holds: `dagrun status --wait` waits for it)");
    Ok(())
}

pub fn cmd_kinds(ctx: &Ctx, args: &KindsArgs) -> CliResult {
    let Some(name) = &args.kind else {
        if args.json {
            let all: serde_json::Map<String, serde_json::Value> = ctx
                .registry
                .kinds()
                .map(|k| {
                    let entry = serde_json::json!({
                        "version": k.version(),
                        "summary": k.summary(),
                        "takes_cmd": k.takes_cmd(),
                        "params": k.params_schema(),
                    });
                    (k.name().to_string(), entry)
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&all).expect("JSON"));
            return Ok(());
        }
        for k in ctx.registry.kinds() {
            println!("{:<18} v{:<3} {}", k.name(), k.version(), k.summary());
        }
        println!("\n`dagrun kinds KIND` lists a kind's params.");
        return Ok(());
    };
    let Some(kind) = ctx.registry.get(name) else {
        return Err(usage(format!(
            "unknown stage kind `{name}` (known: {})",
            ctx.registry.names().join(", ")
        )));
    };
    let schema = kind.params_schema();
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&schema.unwrap_or(serde_json::Value::Null)).expect("JSON")
        );
        return Ok(());
    }
    println!("{} (v{}): {}", kind.name(), kind.version(), kind.summary());
    match schema {
        Some(s) => print!("{}", crate::kinds_help::params_text(&s)),
        None if kind.takes_cmd() => println!(
            "\nNo params: `cmd`, `deps` and `outs` describe it (README, \"A first pipeline\")."
        ),
        None => println!("\nNo params."),
    }
    Ok(())
}

/// A `--model` argument: a folder as it is, or a node (`NODE` or `NODE:OUTPUT`) whose
/// model output is materialised from the cache.
pub fn resolve_model(ctx: &Ctx, given: &std::path::Path) -> CliResult<std::path::PathBuf> {
    if ctx.user_path(given).exists() {
        return Ok(ctx.user_path(given));
    }
    let text = given.to_string_lossy().into_owned();
    let cache = ctx.open_existing_cache("model")?.ok_or_else(|| {
        usage(format!(
            "`{text}` is neither a folder nor a node of this workspace (no cache here)"
        ))
    })?;
    let (node, output) = match text.rsplit_once(':') {
        Some((n, o)) if !o.contains(']') => (n.to_string(), Some(o.to_string())),
        _ => (text.clone(), None),
    };
    let rec = latest_record(&cache, &node).map_err(|_| {
        usage(format!(
            "`{text}` is neither a folder nor a node with a record in this cache"
        ))
    })?;
    let pick = match &output {
        Some(o) => rec.outputs.get_key_value(o.as_str()),
        None => rec
            .outputs
            .iter()
            .find(|(_, a)| a.kind == dagrun_cache::ArtifactType::Model),
    };
    let (_, art) = pick.ok_or_else(|| {
        let names: Vec<&str> = rec.outputs.keys().map(String::as_str).collect();
        let names = names.join(", ");
        usage(match &output {
            Some(o) => format!("node `{node}` has no output `{o}` (its outputs: {names})"),
            None => format!(
                "node `{node}` has no model output (its outputs: {names}); name one as `{node}:OUTPUT`"
            ),
        })
    })?;
    Ok(cache.materialize(art)?)
}
