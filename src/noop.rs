//! The no-op stamp's two ends for `dagrun [run] PIPELINE`: answering an unchanged rerun
//! from the stamp before the pipeline is parsed or the index opened, and writing the
//! stamp at the end of a run that found everything cached. The stamp's file and path
//! checks are `dagrun_cache::stamp`; the paths a plan depends on, `dagrun_engine::noop`.
//!
//! `DAGRUN_NOOP_STAMP=0` turns it off (neither read nor written).

use std::time::Instant;

use dagrun_cache::{
    lock::CacheLock,
    stamp::{self, Sig, Stamp, StampEntry, Watch},
    Cache, Hash, Hasher,
};
use dagrun_engine::{
    noop::{first_racy, snapshot, unstampable},
    plan::{dagrun_folders, Evaluator, Selection, State},
    Pipeline,
};

use crate::{
    cli::{ExecutorArg, RunArgs},
    context::Ctx,
    display::fmt_secs,
};

fn why_not(why: impl std::fmt::Display) {
    tracing::debug!("no-op stamp not used: {why}");
}

/// Whether the stamp is switched on (`DAGRUN_NOOP_STAMP=0`, `off` or `false` turns it off).
pub fn enabled() -> bool {
    !matches!(
        std::env::var("DAGRUN_NOOP_STAMP").as_deref(),
        Ok("0" | "off" | "false")
    )
}

/// Whether this run is the plain local run the stamp answers for: not a dry run, no
/// remote, nothing forced, no Slurm, and no per-node lines to print (`-v`).
pub fn eligible(ctx: &Ctx, args: &RunArgs) -> bool {
    args.pipeline.is_some()
        && !args.dry_run
        && !args.pull
        && !args.push
        && args.remote.is_none()
        && args.select.rerun.is_empty()
        && !args.select.downstream
        && !matches!(args.executor, Some(ExecutorArg::Slurm))
        && ctx.global.verbose == 0
        && enabled()
}

fn part(h: &mut Hasher, bytes: &[u8]) {
    h.update(&(bytes.len() as u64).to_le_bytes());
    h.update(bytes);
}

fn part_sig(h: &mut Hasher, s: &Sig) {
    for v in [s.dev, s.ino, s.size, s.mtime_ns as u64, s.ctime_ns as u64] {
        h.update(&v.to_le_bytes());
    }
    h.update(&[s.kind]);
    h.update(&s.mode.to_le_bytes());
}

/// The key over everything but workspace paths that decides this run's plan: this
/// build of dagrun, the command line, where it runs, the bytes of the pipeline and the
/// `--params` file, the environment variables the pipeline reads (`env`) and the index's
/// seal (it changes with every flush: every commit, `cache gc`, every run). `None` when
/// something cannot be read (the ordinary path reports it).
fn key(ctx: &Ctx, args: &RunArgs, env: &[String]) -> Option<Hash> {
    use std::os::unix::ffi::OsStrExt;
    let mut h = Hasher::new();
    part(&mut h, b"dagrun no-op key 1");
    part(&mut h, env!("CARGO_PKG_VERSION").as_bytes());
    let exe = std::env::current_exe().ok()?;
    part_sig(&mut h, &Sig::take(&exe, true).ok()?);
    for a in std::env::args_os().skip(1) {
        part(&mut h, a.as_bytes());
    }
    for p in [&ctx.started_in, &ctx.workdir, &ctx.cache_dir] {
        part(&mut h, p.as_os_str().as_bytes());
    }
    let file = ctx.user_path(args.pipeline.as_ref()?);
    part(&mut h, &std::fs::read(file).ok()?);
    if let Some(f) = &args.overrides.params_file {
        part(&mut h, &std::fs::read(ctx.user_path(f)).ok()?);
    }
    for name in env
        .iter()
        .map(String::as_str)
        .chain(["CUDA_VISIBLE_DEVICES"])
    {
        part(&mut h, name.as_bytes());
        match std::env::var_os(name) {
            Some(v) => part(&mut h, &[&[1u8][..], v.as_bytes()].concat()),
            None => part(&mut h, &[0]),
        }
    }
    match std::fs::read(ctx.cache_dir.join("db-seal")) {
        Ok(b) => part(&mut h, &[&[1u8][..], &b].concat()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => part(&mut h, &[0]),
        Err(_) => return None,
    }
    Some(h.finalize().into())
}

/// Answers the run from the stamp if it still holds: prints what the full no-op prints
/// and returns true. False (the ordinary path follows) on any difference or error.
pub fn answer(ctx: &Ctx, args: &RunArgs, t0: Instant) -> bool {
    if !eligible(ctx, args) || !Stamp::path(&ctx.cache_dir).exists() {
        return false;
    }
    let Some(file) = &args.pipeline else {
        return false;
    };
    // The lock the ordinary path takes; if another dagrun holds it, the ordinary path
    // waits or fails exactly as it always did.
    let holder = format!("dagrun run {}", file.display());
    let _lock = match CacheLock::acquire(&ctx.cache_dir, &holder, false, &|_: &str| {}) {
        Ok(l) => l,
        Err(e) => {
            why_not(e);
            return false;
        }
    };
    let stamp = match Stamp::read(&ctx.cache_dir) {
        Ok(s) => s,
        Err(e) => {
            why_not(e);
            return false;
        }
    };
    if key(ctx, args, &stamp.env) != Some(stamp.key) {
        why_not("the pipeline, the command line, the environment or the index changed");
        return false;
    }
    if let Err(e) = stamp.check_paths() {
        why_not(e);
        return false;
    }
    eprintln!(
        "{} in {}",
        stamp.summary,
        fmt_secs(t0.elapsed().as_secs_f64())
    );
    true
}

/// After a run in which every selected node ended cached or done: writes the stamp if
/// the plan now is "everything cached, nothing to restore" and every path it depended
/// on is old enough to be trusted. The run's own result stands either way.
pub fn write(
    ctx: &Ctx,
    args: &RunArgs,
    p: &Pipeline,
    sel: &Selection,
    cache: &Cache,
    gpus: u32,
    summary: String,
) {
    if !eligible(ctx, args) {
        return;
    }
    if let Err(e) = try_write(ctx, args, p, sel, cache, gpus, summary) {
        why_not(format!("not written: {e}"));
    }
}

fn try_write(
    ctx: &Ctx,
    args: &RunArgs,
    p: &Pipeline,
    sel: &Selection,
    cache: &Cache,
    gpus: u32,
    summary: String,
) -> Result<(), String> {
    if let Some(why) = unstampable(p, sel) {
        return Err(why);
    }
    let skip = dagrun_folders(p, Some(cache));
    let before = snapshot(p, sel, &skip).map_err(|e| e.to_string())?;
    if let Some(path) = first_racy(&before, stamp::now_ns()) {
        return Err(format!("`{}` changed too recently", path.display()));
    }
    // The plan as it is now, from paths whose signatures are taken on both sides of it.
    let plan = Evaluator::new(p, Some(cache), false)
        .with_gpus(gpus)
        .plan(sel)
        .map_err(|e| e.to_string())?;
    for &i in &p.order {
        if !sel.includes(i) {
            continue;
        }
        match plan[i].as_ref().map(|e| &e.state) {
            Some(State::Cached { restore }) if restore.is_empty() => {}
            _ => return Err(format!("{} would not be a no-op", p.nodes[i].id)),
        }
    }
    let after = snapshot(p, sel, &skip).map_err(|e| e.to_string())?;
    if before != after {
        return Err("the workspace changed while the stamp was taken".into());
    }
    let key = key(ctx, args, &p.env_keys).ok_or("cannot compute the key")?;
    // The index's files by identity: one deleted or replaced behind dagrun's back is
    // seen (what dagrun itself writes there changes the seal, or removes the stamp).
    let mut entries = after;
    let db = cache.dir().join("db");
    let mut names: Vec<_> = std::fs::read_dir(&db)
        .map_err(|e| e.to_string())?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    names.sort();
    for path in std::iter::once(db).chain(names) {
        entries.push(StampEntry::take(path, Watch::Identity).map_err(|e| e.to_string())?);
    }
    Stamp {
        key,
        env: p.env_keys.clone(),
        summary,
        entries,
    }
    .write(cache.dir())
    .map_err(|e| e.to_string())
}
