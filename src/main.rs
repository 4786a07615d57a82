//! The `dagrun` binary: parses the command line and hands off to the `cmd_*` modules.

mod cli;
mod cmd_bench;
mod cmd_cache;
mod cmd_graph;
mod cmd_inspect;
mod cmd_metrics;
mod cmd_remote;
mod cmd_run;
mod context;
mod display;
mod exit;
mod kinds_help;
mod model_cmd;
mod noop;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Die quietly on a closed pipe (`dagrun plan p.yaml | head`), as command-line tools do.
    // SAFETY: restoring the default disposition of SIGPIPE before any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = cli::Cli::parse();
    init_tracing(cli.global.verbose);
    match dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            match &f {
                exit::Failure::Usage(e) | exit::Failure::Other(e) | exit::Failure::Busy(e) => {
                    eprintln!("error: {e:#}")
                }
                exit::Failure::StageFailed | exit::Failure::Interrupted => {}
            }
            f.code()
        }
    }
}

fn dispatch(cli: cli::Cli) -> exit::CliResult {
    use cli::Command::*;
    if let Some(Worker(a)) = &cli.command {
        // A compute node: no workspace of its own (the job file names it), no cache.
        return cmd_run::cmd_worker(a);
    }
    if cli.command.is_some() && !cli.run.is_unset() {
        // `dagrun -j 2 plan p.yaml`: the options of the implicit `run` before a subcommand.
        return Err(exit::usage(
            "a run's options (`-j`, `--rerun`, `--only`, ...) go after the pipeline \
             (`dagrun PIPELINE -j 2`) or after `run`/`plan`; before a subcommand only the \
             global options (--workdir, --cache, --wait, -v, -q) may stand",
        ));
    }
    let ctx = context::Ctx::new(&cli.global)?;
    match cli.command {
        None => cmd_run::cmd_run(&ctx, &cli.run),
        Some(Run(a)) => cmd_run::cmd_run(&ctx, &a),
        Some(Plan(a)) => cmd_run::cmd_plan(
            &ctx,
            &a.pipeline,
            &a.select,
            a.json,
            a.executor,
            a.gpus,
            &a.overrides,
        ),
        Some(Worker(_)) => unreachable!("handled above"),
        Some(Graph(a)) => cmd_graph::cmd_graph(&ctx, &a),
        Some(Status(a)) => cmd_inspect::cmd_status(&ctx, &a),
        Some(Show(a)) => cmd_inspect::cmd_show(&ctx, &a),
        Some(Why(a)) => cmd_inspect::cmd_why(&ctx, &a),
        Some(Log(a)) => cmd_inspect::cmd_log(&ctx, &a),
        Some(Metrics(a)) => cmd_metrics::cmd_metrics(&ctx, &a),
        Some(Export(a)) => cmd_inspect::cmd_export(&ctx, &a),
        Some(Kinds(a)) => cmd_inspect::cmd_kinds(&ctx, &a),
        Some(Cache(c)) => cmd_cache::cmd_cache(&ctx, &c),
        Some(Model(mut m)) => {
            let model = m.model_mut();
            let given = model.display().to_string();
            *model = cmd_inspect::resolve_model(&ctx, model)?;
            // Errors name what the user gave (a node), not the cache's view folder of it.
            let view = model.display().to_string();
            model_cmd::run(m).map_err(|e| {
                let text = format!("{e:#}");
                exit::Failure::Other(if view == given {
                    e
                } else {
                    anyhow::anyhow!(text.replace(&view, &given))
                })
            })
        }
        Some(Bench(b)) => cmd_bench::run(b).map_err(exit::Failure::Other),
    }
}

fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .without_time()
        .try_init();
}
