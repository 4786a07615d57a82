//! `dagrun cache push`, `dagrun cache pull`, and the remote side of `dagrun run --pull
//! --push`: which keys a pipeline needs (the engine's planner), moved by `dagrun-remote`.

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    io::IsTerminal,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::anyhow;
use dagrun_cache::{Artifact, Cache, Hash, Record};
use dagrun_engine::{
    fingerprint::KeyComponents,
    locate::{path as ypath, Positions},
    plan::{Evaluator, Selection},
    Pipeline,
};
use dagrun_remote::{
    hooks::conflict_line, Location, PushItem, RecordCheck, Remote, RemoteOptions, RunSync, Stats,
    SyncReport, TransferReport,
};

use crate::{
    cli::{RemoteArgs, RunArgs},
    cmd_inspect::human_bytes,
    context::Ctx,
    display::fmt_secs,
    exit::{usage, CliResult, Failure},
};

/// The remote a pipeline uses: `--remote`, else `DAGRUN_REMOTE`, else its `remote:` key
/// (a relative folder there is relative to the workspace; on the command line and in the
/// variable, to where dagrun started).
pub fn location(ctx: &Ctx, p: &Pipeline, flag: Option<&str>) -> CliResult<Location> {
    if let Some(f) = flag {
        return Location::parse(f, &ctx.started_in).map_err(|e| usage(format!("--remote: {e}")));
    }
    if let Some(v) = std::env::var("DAGRUN_REMOTE")
        .ok()
        .filter(|v| !v.trim().is_empty())
    {
        return Location::parse(&v, &ctx.started_in)
            .map_err(|e| usage(format!("DAGRUN_REMOTE: {e}")));
    }
    if let Some(r) = &p.remote {
        return Location::parse(r, &p.workdir).map_err(|e| {
            let at = std::fs::read_to_string(&p.file)
                .ok()
                .and_then(|src| Positions::read(&src).ok()?.find(&ypath(&["remote"])))
                .map(|(l, c)| format!(":{l}:{c}"))
                .unwrap_or_default();
            usage(format!("{}{at}: `remote`: {e}", p.file.display()))
        });
    }
    Err(usage(format!(
        "no remote cache for `{}`: pass --remote URL, set DAGRUN_REMOTE, or add `remote: URL` \
         to the pipeline (a folder, s3://bucket/prefix, ...)",
        p.name
    )))
}

/// A record from the remote must hash to its key: its key components, hashed the way the
/// engine hashes them, give the key it is stored under.
pub fn record_check() -> RecordCheck {
    Arc::new(|rec: &Record| {
        let c: KeyComponents = serde_json::from_value(rec.components.clone())
            .map_err(|e| format!("its key components do not read: {e}"))?;
        if c.key() == rec.key {
            Ok(())
        } else {
            Err(format!(
                "its key components hash to `{}`, not to its key",
                c.key().short()
            ))
        }
    })
}

fn open(loc: &Location, jobs: usize, create: bool) -> CliResult<Remote> {
    // main() restores SIGPIPE's default (die quietly on `dagrun plan | head`); a socket
    // whose server went away must give the transfer an error instead (the server stopped
    // mid-transfer test: the push died of SIGPIPE, exit status 13, without a word).
    // SAFETY: changing a signal's disposition; no handler runs Rust code.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    Remote::open(
        loc,
        &RemoteOptions {
            transfers: jobs,
            create,
        },
    )
    .map_err(|e| Failure::Other(e.into()))
}

/// Draws transfer progress on stderr while `f` runs: a line redrawn every half second
/// on a terminal, else a line every 10 seconds once a transfer takes that long.
fn with_progress<T>(ctx: &Ctx, verb: &str, stats: &Stats, f: impl FnOnce() -> T) -> T {
    if ctx.global.quiet {
        return f();
    }
    let tty = std::io::stderr().is_terminal() && std::env::var_os("DAGRUN_PLAIN").is_none();
    let done = AtomicBool::new(false);
    let t0 = Instant::now();
    let line = || {
        let g = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let (bd, bt) = (g(&stats.bytes_done), g(&stats.bytes_total));
        let secs = t0.elapsed().as_secs_f64().max(1e-3);
        format!(
            "{verb}: {}/{} nodes, {} of {} ({}/s)",
            g(&stats.nodes_done),
            g(&stats.nodes_total),
            human_bytes(bd),
            human_bytes(bt.max(bd)),
            human_bytes((bd as f64 / secs) as u64)
        )
    };
    let out = std::thread::scope(|s| {
        s.spawn(|| {
            let mut last = Instant::now();
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
                let every = if tty { 500 } else { 10_000 };
                if last.elapsed() >= Duration::from_millis(every) {
                    last = Instant::now();
                    if tty {
                        eprint!("\r\x1b[K{}", line());
                    } else {
                        eprintln!("{}", line());
                    }
                }
            }
        });
        let out = f();
        done.store(true, Ordering::Relaxed);
        out
    });
    if tty {
        eprint!("\r\x1b[K");
    }
    out
}

/// `N nodes (M objects, X)`.
fn moved_text(r: &TransferReport) -> String {
    let (n, o, b) = r.moved();
    format!(
        "{} ({o} object{}, {})",
        crate::cmd_run::nodes(n),
        if o == 1 { "" } else { "s" },
        human_bytes(b)
    )
}

fn rate(r: &TransferReport, secs: f64) -> String {
    let b = r.moved().2;
    if b == 0 || secs <= 0.0 {
        String::new()
    } else {
        format!(", {}/s", human_bytes((b as f64 / secs) as u64))
    }
}

/// Prints a transfer's conflicts and errors (stderr); the number of errors.
fn print_problems(r: &TransferReport, conflict_where: &str) -> usize {
    for (rec, kept) in r.conflicts() {
        eprintln!(
            "warning: {}",
            conflict_line(&rec.node, &rec.key, kept, conflict_where)
        );
    }
    let errors: Vec<_> = r.errors().collect();
    let stopped = errors
        .iter()
        .filter(|(_, e)| matches!(e, dagrun_remote::Error::Stopped))
        .count();
    for (rec, e) in errors
        .iter()
        .filter(|(_, e)| !matches!(e, dagrun_remote::Error::Stopped))
        .take(20)
    {
        eprintln!("error: `{}`: {e}", rec.node);
    }
    if stopped > 0 {
        eprintln!("error: {stopped} more node(s) not attempted after the remote failed; run the same command again to resume");
    }
    errors.len()
}

/// Loads the pipelines and groups them by the remote each uses.
fn by_remote<'a>(
    ctx: &Ctx,
    a: &RemoteArgs,
    pipelines: &'a [Pipeline],
) -> CliResult<BTreeMap<String, (Location, Vec<&'a Pipeline>)>> {
    let mut groups: BTreeMap<String, (Location, Vec<&Pipeline>)> = BTreeMap::new();
    for p in pipelines {
        let loc = location(ctx, p, a.remote.as_deref())?;
        groups
            .entry(loc.to_string())
            .or_insert_with(|| (loc, Vec::new()))
            .1
            .push(p);
    }
    Ok(groups)
}

pub fn cmd_push(ctx: &Ctx, a: &RemoteArgs) -> CliResult {
    let pipelines = a
        .pipelines
        .iter()
        .map(|f| ctx.load_with(f, &a.overrides))
        .collect::<CliResult<Vec<_>>>()?;
    let groups = by_remote(ctx, a, &pipelines)?;
    let cache = ctx
        .open_existing_cache("cache push")?
        .ok_or_else(|| usage("nothing to push: no cache here yet (run the pipeline first)"))?;
    let mut failed = 0;
    for (loc, ps) in groups.values() {
        let t0 = Instant::now();
        // The records of every node whose current key is cached here.
        let mut keys = HashSet::new();
        let mut items = Vec::new();
        let mut not_cached = 0;
        for p in ps {
            let ev = Evaluator::new(p, Some(&cache), false);
            for e in ev.plan(&Selection::default())? {
                match e.and_then(|e| e.record.and(e.key)) {
                    Some(k) => {
                        if keys.insert(k) {
                            if let Some(rec) = cache.record(&k)? {
                                items.push(
                                    PushItem::from_cache(&cache, rec)
                                        .map_err(|e| Failure::Other(e.into()))?,
                                );
                            }
                        }
                    }
                    None => not_cached += 1,
                }
            }
        }
        let remote = open(loc, a.jobs, true)?;
        let stats = Arc::new(Stats::default());
        let report = with_progress(ctx, "push", &stats, || remote.push(items, stats.clone()));
        let secs = t0.elapsed().as_secs_f64();
        let mut line = format!(
            "pushed {} to {} in {}{}",
            moved_text(&report),
            remote.url(),
            fmt_secs(secs),
            rate(&report, secs)
        );
        let already = report.already();
        if already > 0 {
            line.push_str(&format!("; {already} already there"));
        }
        if not_cached > 0 {
            line.push_str(&format!(
                "; {} not cached here (run {} first)",
                crate::cmd_run::nodes(not_cached),
                if not_cached == 1 { "it" } else { "them" }
            ));
        }
        println!("{line}");
        failed += print_problems(&report, "remote");
    }
    if failed > 0 {
        return Err(Failure::Other(anyhow!(
            "{} could not be pushed",
            crate::cmd_run::nodes(failed)
        )));
    }
    Ok(())
}

/// What the walk of a pipeline found for `cache pull`.
#[derive(Default)]
struct Walk {
    /// Records on the remote for keys not cached here.
    found: Vec<Record>,
    /// Nodes cached here already.
    here: usize,
    /// Nodes whose key the remote lacks.
    absent: usize,
    /// Nodes whose key cannot be known: an upstream node is neither here nor on the
    /// remote, or an input is missing.
    unknown: usize,
    /// Records the remote has that are not valid: (node, why).
    bad: Vec<(String, String)>,
}

/// Finds the pipeline's current keys, asking the remote for those not cached here. A
/// key depends on the upstream outputs, so the walk goes in rounds: each round asks the
/// remote (all at once) for the nodes whose upstream is known, and the records it
/// returns make the next round's keys known.
fn walk(p: &Pipeline, cache: &Cache, remote: &Remote, check: &RecordCheck) -> CliResult<Walk> {
    let ev = Evaluator::new(p, Some(cache), false);
    let sel = Selection::default();
    let n = p.nodes.len();
    let mut known: Vec<Option<BTreeMap<String, Artifact>>> = vec![None; n];
    let mut settled = vec![false; n];
    let mut w = Walk::default();
    loop {
        let mut ask: Vec<(usize, Hash)> = Vec::new();
        for &i in &p.order {
            let ups = &p.nodes[i].upstream;
            if settled[i] || ups.iter().any(|&u| !settled[u]) {
                continue;
            }
            if ups.iter().any(|&u| known[u].is_none()) {
                settled[i] = true;
                w.unknown += 1;
                continue;
            }
            let e = ev.evaluate(i, &sel, &|u| known[u].clone())?;
            match (e.record, e.key) {
                (Some(r), _) => {
                    known[i] = Some(r.outputs);
                    settled[i] = true;
                    w.here += 1;
                }
                (None, Some(k)) => ask.push((i, k)),
                (None, None) => {
                    settled[i] = true;
                    w.unknown += 1;
                }
            }
        }
        if ask.is_empty() {
            return Ok(w);
        }
        let keys: Vec<Hash> = ask.iter().map(|a| a.1).collect();
        for (&(i, _), res) in ask.iter().zip(remote.get_records(&keys)) {
            settled[i] = true;
            let id = &p.nodes[i].id;
            match res {
                Ok(Some(rec)) => match check(&rec) {
                    Ok(()) => {
                        known[i] = Some(rec.outputs.clone());
                        w.found.push(rec);
                    }
                    Err(why) => w.bad.push((id.clone(), why)),
                },
                Ok(None) => w.absent += 1,
                Err(e) if e.is_remote_down() => return Err(Failure::Other(e.into())),
                Err(e) => w.bad.push((id.clone(), e.to_string())),
            }
        }
    }
}

pub fn cmd_pull(ctx: &Ctx, a: &RemoteArgs) -> CliResult {
    let pipelines = a
        .pipelines
        .iter()
        .map(|f| ctx.load_with(f, &a.overrides))
        .collect::<CliResult<Vec<_>>>()?;
    let groups = by_remote(ctx, a, &pipelines)?;
    // Every remote answers before the cache is opened (a fresh clone's is created).
    let remotes = groups
        .values()
        .map(|(loc, ps)| Ok((open(loc, a.jobs, false)?, ps)))
        .collect::<CliResult<Vec<_>>>()?;
    let cache = ctx.open_cache("cache pull")?;
    let check = record_check();
    let mut failed = 0;
    for (remote, ps) in remotes {
        let t0 = Instant::now();
        let mut found = Vec::new();
        let mut seen = BTreeSet::new();
        let (mut here, mut absent, mut unknown) = (0, 0, 0);
        for p in ps {
            let w = walk(p, &cache, &remote, &check)?;
            here += w.here;
            absent += w.absent;
            unknown += w.unknown;
            for (node, why) in &w.bad {
                eprintln!("error: `{node}`: the remote's record is not valid: {why}");
                failed += 1;
            }
            found.extend(w.found.into_iter().filter(|r| seen.insert(r.key)));
        }
        let stats = Arc::new(Stats::default());
        let report = with_progress(ctx, "pull", &stats, || {
            remote.pull(&cache, found, stats.clone())
        });
        let secs = t0.elapsed().as_secs_f64();
        let mut line = format!(
            "pulled {} from {} in {}{}",
            moved_text(&report),
            remote.url(),
            fmt_secs(secs),
            rate(&report, secs)
        );
        let here = here + report.already();
        if here > 0 {
            line.push_str(&format!("; {here} cached here already"));
        }
        if absent > 0 {
            line.push_str(&format!("; {absent} not on the remote"));
        }
        if unknown > 0 {
            line.push_str(&format!(
                "; {unknown} after nodes that are neither (or with missing inputs)"
            ));
        }
        println!("{line}");
        failed += print_problems(&report, "local");
    }
    if failed > 0 {
        return Err(Failure::Other(anyhow!(
            "{} could not be pulled",
            crate::cmd_run::nodes(failed)
        )));
    }
    Ok(())
}

/// The remote of `dagrun run --pull/--push`, opened before the run starts.
pub fn run_sync(ctx: &Ctx, p: &Pipeline, args: &RunArgs) -> CliResult<Option<Arc<RunSync>>> {
    if !args.pull && !args.push {
        if args.remote.is_some() {
            return Err(usage("--remote goes with --pull or --push"));
        }
        return Ok(None);
    }
    let loc = location(ctx, p, args.remote.as_deref())?;
    let remote = open(&loc, 8, args.push)?;
    Ok(Some(Arc::new(RunSync::new(
        remote,
        args.pull,
        args.push,
        record_check(),
    ))))
}

/// Waits for a run's uploads (with progress), then says what the run moved. The
/// number of nodes that could not be pushed.
pub fn finish_sync(ctx: &Ctx, sync: &RunSync) -> usize {
    let t0 = Instant::now();
    let r: SyncReport = with_progress(ctx, "push", &sync.push_stats, || sync.finish());
    let waited = t0.elapsed().as_secs_f64();
    let mut parts = Vec::new();
    if !r.pulled.nodes.is_empty() {
        parts.push(format!("pulled {}", moved_text(&r.pulled)));
    }
    if !r.pushed.nodes.is_empty() {
        let already = r.pushed.already();
        parts.push(format!(
            "pushed {}{}",
            moved_text(&r.pushed),
            if already > 0 {
                format!(" ({already} already there)")
            } else {
                String::new()
            }
        ));
    }
    if !parts.is_empty() && !ctx.global.quiet {
        let wait = if waited >= 0.1 {
            format!(" (waited {} for uploads)", fmt_secs(waited))
        } else {
            String::new()
        };
        eprintln!("remote {}: {}{wait}", r.url, parts.join(", "));
    }
    for w in &r.warnings {
        eprintln!("warning: {w}");
    }
    r.pushed.errors().count()
}
