//! `dagrun run` and `dagrun plan`.

use std::sync::{
    atomic::{AtomicBool, AtomicUsize, Ordering},
    Arc,
};

use dagrun_engine::{
    job::{job_path, run_worker, JobStatus},
    plan::{Evaluation, Evaluator, State},
    run::{run, Outcome, RunOptions, RunReport},
    slurm::OnInterrupt,
    spec::Executor,
    Pipeline,
};
use serde_json::json;

use crate::{
    cli::{ExecutorArg, OnInterruptArg, OverrideArgs, RunArgs, SelectArgs, WorkerArgs},
    context::{detect_gpus, Ctx},
    display::{fmt_secs, Display},
    exit::{usage, CliResult, Failure},
};

/// The error for a run without a pipeline. `--rerun`, `--only` and `--until` take every
/// value up to the next option, so `dagrun --rerun train p.yaml` reads `p.yaml` as a node:
/// say so when a value looks like a pipeline file.
fn no_pipeline(select: &SelectArgs) -> String {
    let lists = [
        ("--rerun", &select.rerun),
        ("--only", &select.only),
        ("--until", &select.until),
    ];
    for (flag, values) in lists {
        if let Some(v) = values.iter().find(|v| {
            v.ends_with(".yaml") || v.ends_with(".yml") || std::path::Path::new(v).is_file()
        }) {
            return format!(
                "no pipeline given: `{v}` was read as a value of {flag}; put the pipeline \
                 first (`dagrun {v} {flag} ...`) or end the list with `--`"
            );
        }
    }
    "no pipeline given: `dagrun PIPELINE.yaml` (see `dagrun --help`)".to_string()
}

pub fn cmd_run(ctx: &Ctx, args: &RunArgs) -> CliResult {
    let Some(file) = &args.pipeline else {
        return Err(usage(no_pipeline(&args.select)));
    };
    if args.dry_run {
        return cmd_plan(
            ctx,
            file,
            &args.select,
            args.json,
            args.executor,
            args.gpus,
            &args.overrides,
        );
    }
    let t0 = std::time::Instant::now();
    // An unchanged rerun is answered from the no-op stamp (`noop.rs`), before anything
    // is parsed or opened.
    if crate::noop::answer(ctx, args, t0) {
        return Ok(());
    }
    let mut p = ctx.load_with(file, &args.overrides)?;
    if let Some(e) = args.executor {
        p.set_default_executor(executor(e));
    }
    if let Some(dir) = &args.tensorboard {
        p.tensorboard = Some(std::path::absolute(dir).map_err(|e| {
            usage(format!(
                "--tensorboard {}: not a usable path: {e}",
                dir.display()
            ))
        })?);
    }
    let sel = ctx.selection(&p, &args.select)?;
    let missing = p.missing_inputs(&|i| sel.includes(i));
    if !missing.is_empty() {
        return Err(usage(missing.join("\n")));
    }
    let cache = ctx.open_cache(&format!("run {}", file.display()))?;
    // `--pull`/`--push`: the remote is opened (and answers) before anything runs.
    let sync = crate::cmd_remote::run_sync(ctx, &p, args)?;
    let cancel = Arc::new(AtomicBool::new(false));
    install_ctrl_c(cancel.clone());
    let display = Display::new(ctx.global.verbose > 0, ctx.global.quiet);
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    display.write_snapshots(ctx.cache_dir.join("live.json"), command.clone());
    let gpus = args.gpus.unwrap_or_else(detect_gpus);
    let opts = RunOptions {
        jobs: args.jobs.max(1),
        gpus,
        selection: sel,
        command,
        on_interrupt: args.on_interrupt.map(|o| match o {
            OnInterruptArg::Cancel => OnInterrupt::Cancel,
            OnInterruptArg::Keep => OnInterrupt::Keep,
        }),
        remote: sync
            .clone()
            .map(|s| s as Arc<dyn dagrun_cache::RemoteHooks>),
    };
    let result = run(&p, &cache, &opts, display.clone(), cancel.clone());
    display.finish();
    // Uploads still running finish while the cache is held.
    let not_pushed = sync
        .as_ref()
        .map_or(0, |s| crate::cmd_remote::finish_sync(ctx, s));
    let report = result?;
    summarize(ctx, &p, &report, t0.elapsed().as_secs_f64());
    let counts = report.counts();
    if !report.interrupted
        && report.detached.is_empty()
        && not_pushed == 0
        && counts.ran + counts.cached == counts.nodes()
    {
        crate::noop::write(
            ctx,
            args,
            &p,
            &opts.selection,
            &cache,
            gpus,
            // What a run that finds all of them cached prints.
            format!(
                "{}: {}, {}",
                p.name,
                nodes(counts.nodes()),
                dagrun_cache::RunCounts {
                    cached: counts.nodes(),
                    ..Default::default()
                }
            ),
        );
    }
    if !report.detached.is_empty() {
        eprintln!(
            "{} Slurm job(s) keep running ({}); the next run of this pipeline collects their results",
            report.detached.len(),
            report.detached.join(" ")
        );
    }
    if report.interrupted {
        eprintln!("interrupted: finished nodes are cached; run the same command again to resume");
        return Err(Failure::Interrupted);
    }
    if !report.failed().is_empty() {
        return Err(Failure::StageFailed);
    }
    if not_pushed > 0 {
        return Err(Failure::Other(anyhow::anyhow!(
            "{} could not be pushed (they are cached here: `dagrun cache push {}` retries)",
            nodes(not_pushed),
            file.display()
        )));
    }
    Ok(())
}

fn summarize(ctx: &Ctx, p: &Pipeline, report: &RunReport, secs: f64) {
    let counts = report.counts();
    eprintln!(
        "{}: {}, {counts} in {}",
        p.name,
        nodes(counts.nodes()),
        fmt_secs(secs)
    );
    for (&i, o) in &report.outcomes {
        let Outcome::Failed { error, log } = o else {
            continue;
        };
        eprintln!("  failed: {}: {error}", p.nodes[i].id);
        if let Some(l) = log {
            let shown = l
                .strip_prefix(&ctx.workdir)
                .map(|r| r.display().to_string())
                .unwrap_or(l.display().to_string());
            eprintln!("          log: {shown}");
        }
    }
}

/// `1 node`, `3 nodes`.
pub fn nodes(n: usize) -> String {
    if n == 1 {
        "1 node".to_string()
    } else {
        format!("{n} nodes")
    }
}

fn install_ctrl_c(cancel: Arc<AtomicBool>) {
    let presses = Arc::new(AtomicUsize::new(0));
    let _ = ctrlc::set_handler(move || {
        if presses.fetch_add(1, Ordering::SeqCst) == 0 {
            cancel.store(true, Ordering::SeqCst);
            eprintln!(
                "\nstopping: waiting for running nodes to stop (Ctrl-C again to abort at once)"
            );
        } else {
            std::process::exit(130);
        }
    });
}

/// `dagrun worker`: runs one job of an array (a compute node's side of `executor: slurm`).
/// SIGTERM (scancel, time limit) and SIGINT stop the stage at its next check; the job's
/// `result.json` says so either way.
pub fn cmd_worker(a: &WorkerArgs) -> CliResult {
    let job = job_path(&a.tasks, a.index).map_err(|e| Failure::Other(anyhow::anyhow!(e)))?;
    let cancel = Arc::new(AtomicBool::new(false));
    let c = cancel.clone();
    let _ = ctrlc::set_handler(move || c.store(true, Ordering::SeqCst));
    let registry = dagrun_stages::registry();
    match run_worker(&job, &registry, cancel) {
        Ok(JobStatus::Ok) => Ok(()),
        Ok(JobStatus::Failed) => Err(Failure::StageFailed),
        Ok(JobStatus::Interrupted) => Err(Failure::Interrupted),
        Err(e) => Err(Failure::Other(anyhow::anyhow!(e))),
    }
}

fn executor(e: ExecutorArg) -> Executor {
    match e {
        ExecutorArg::Local => Executor::Local,
        ExecutorArg::Slurm => Executor::Slurm,
    }
}

pub fn cmd_plan(
    ctx: &Ctx,
    file: &std::path::Path,
    select: &SelectArgs,
    json_out: bool,
    exec: Option<ExecutorArg>,
    gpus: Option<u32>,
    overrides: &OverrideArgs,
) -> CliResult {
    let mut p = ctx.load_with(file, overrides)?;
    if let Some(e) = exec {
        p.set_default_executor(executor(e));
    }
    let sel = ctx.selection(&p, select)?;
    let cache = ctx.open_existing_cache(&format!("plan {}", file.display()))?;
    let ev = Evaluator::new(&p, cache.as_ref(), false).with_gpus(gpus.unwrap_or_else(detect_gpus));
    let plan = ev.plan(&sel)?;
    let rows: Vec<(usize, &Evaluation)> = p
        .order
        .iter()
        .filter(|&&i| sel.includes(i))
        .filter_map(|&i| plan[i].as_ref().map(|e| (i, e)))
        .collect();
    if json_out {
        let nodes: Vec<_> = rows
            .iter()
            .map(|(i, e)| {
                json!({
                    "node": p.nodes[*i].id,
                    "stage": p.nodes[*i].stage,
                    "state": e.state.label(),
                    "will_run": e.state.will_run(),
                    "key": e.key.map(|k| k.to_hex()),
                    "executor": p.nodes[*i].executor.name(),
                    "reasons": e.state.reasons(),
                    "restore": match &e.state { State::Cached { restore } => restore.clone(), _ => vec![] },
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"pipeline": p.name, "nodes": nodes}))
                .expect("json")
        );
        return Ok(());
    }
    let count = |l: &str| rows.iter().filter(|(_, e)| e.state.label() == l).count();
    let mut head = format!("{}: {}", p.name, nodes(rows.len()));
    for l in ["stale", "forced", "blocked", "missing", "cached"] {
        let c = count(l);
        if c > 0 {
            head.push_str(&format!(", {c} {l}"));
        }
    }
    println!("{head}");
    let width = rows
        .iter()
        .map(|(i, _)| p.nodes[*i].id.len())
        .max()
        .unwrap_or(0)
        .min(60);
    for (i, e) in &rows {
        let id = &p.nodes[*i].id;
        let reasons = e.state.reasons();
        let extra = match &e.state {
            State::Cached { restore } if !restore.is_empty() => {
                format!("will restore {}", restore.join(", "))
            }
            _ => reasons.first().map(|r| r.to_string()).unwrap_or_default(),
        };
        let extra = if p.nodes[*i].executor == Executor::Slurm && e.state.will_run() {
            format!("{extra} [slurm]")
        } else {
            extra
        };
        let line = format!("  {:<8} {id:<width$}  {extra}", e.state.label());
        println!("{}", line.trim_end());
        for r in reasons.iter().skip(1) {
            println!("  {:<8} {:<width$}  {r}", "", "");
        }
    }
    let missing = count("missing");
    if missing > 0 {
        println!("{missing} node(s) cannot run here (missing inputs, a device this build or machine lacks, or an output in the way that dagrun did not write): a run would stop before doing any work");
    }
    Ok(())
}
