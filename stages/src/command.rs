//! The `command` kind: a shell command with declared input files (`deps`) and output
//! paths (`outs`), as in DVC. The engine hashes `deps`, removes `outs` before the run,
//! and stores them in the cache afterwards.
//!
//! The command runs with `sh -c` in the workspace, in its own process group, with
//! stdout and stderr captured into the node's log through one pipe (in the order the
//! command wrote them). It sees:
//!
//! | variable            | value                                              |
//! |---------------------|----------------------------------------------------|
//! | `DAGRUN_NODE`       | the node id, e.g. `train[seed=1]`                  |
//! | `DAGRUN_SCRATCH`    | a folder kept across interruptions (checkpoints)   |
//! | `DAGRUN_DEVICE`     | the node's `device`                                |
//! | `DAGRUN_MATRIX_<K>` | each matrix value (key upper-cased)                |
//! | `CUDA_VISIBLE_DEVICES` | the GPUs the scheduler assigned, when `resources.gpus` > 0 |
//!
//! A line `dagrun:progress DONE/TOTAL [message]` in its output updates the live display;
//! a line `dagrun:metric NAME VALUE [STEP]` adds a metric to the node's record (a scalar,
//! or a point of a series when STEP is given; under `--tensorboard` a point also goes to
//! the node's TensorBoard curves as it is read). Once the command has succeeded, each file
//! of the stage's `metrics:` (JSON objects) adds its values: nested objects flattened
//! with dots (`eval.acc`), numbers as scalars, booleans and strings kept as they are.

use std::{
    io::{BufRead, BufReader},
    os::unix::process::CommandExt,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use dagrun_engine::{
    selector::scalar_string,
    stage::{Cancelled, ParamError, Place, StageContext, StageError, StageKind},
};
use serde_json::Value;

use crate::tensorboard::Curves;

pub struct CommandKind;

impl StageKind for CommandKind {
    fn name(&self) -> &'static str {
        "command"
    }

    fn version(&self) -> u32 {
        1
    }

    fn summary(&self) -> &'static str {
        "a shell command with declared `deps` and `outs`"
    }

    fn takes_cmd(&self) -> bool {
        true
    }

    /// The command sees its `device` as DAGRUN_DEVICE, so a device set on the stage (or
    /// in `defaults`) is part of its key; `auto`, the default, adds nothing (keys of
    /// stages that set none are unchanged).
    fn environment(
        &self,
        device: &str,
        _place: Place,
    ) -> Result<std::collections::BTreeMap<String, String>, String> {
        let mut env = std::collections::BTreeMap::new();
        if !device.is_empty() && device != "auto" {
            env.insert("device".to_string(), device.to_string());
        }
        Ok(env)
    }

    fn validate(&self, params: &Value) -> Result<(), ParamError> {
        match params.get("cmd") {
            Some(Value::String(s)) if s.trim().is_empty() => {
                Err(ParamError::general("`cmd` is empty"))
            }
            Some(Value::String(_)) | Some(Value::Object(_)) => Ok(()),
            _ => Err(ParamError::general("`cmd` must be a string")),
        }
    }

    fn run(&self, ctx: &mut StageContext) -> Result<(), StageError> {
        let cmd = ctx
            .params
            .get("cmd")
            .and_then(Value::as_str)
            .ok_or("`cmd` is not a string")?
            .to_string();
        ctx.log(format!("$ {cmd}"));
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg(&cmd)
            .current_dir(&ctx.workdir)
            .stdin(Stdio::null());
        // One pipe for both streams, so that the log keeps the order the command wrote
        // its lines in (two pipes read by two threads would interleave them by chance).
        let (reader, writer) = std::io::pipe().map_err(|e| format!("cannot make a pipe: {e}"))?;
        c.stdout(Stdio::from(
            writer
                .try_clone()
                .map_err(|e| format!("cannot make a pipe: {e}"))?,
        ))
        .stderr(Stdio::from(writer));
        c.env("DAGRUN_NODE", &ctx.node)
            .env("DAGRUN_SCRATCH", ctx.scratch())
            .env("DAGRUN_DEVICE", &ctx.device);
        for (k, v) in &ctx.matrix {
            c.env(
                format!("DAGRUN_MATRIX_{}", k.to_uppercase().replace('-', "_")),
                scalar_string(v),
            );
        }
        // In a Slurm job, Slurm has set CUDA_VISIBLE_DEVICES to the job's GPUs already.
        if !ctx.gpus.is_empty() && ctx.place == Place::Here {
            let ids: Vec<String> = ctx.gpus.iter().map(|g| g.to_string()).collect();
            c.env("CUDA_VISIBLE_DEVICES", ids.join(","));
        }
        // Its own process group, which Ctrl-C signals as a whole; its processes carry a
        // token so that, should dagrun die (`kill -9`), the next dagrun finds and kills
        // what is left of the group before anything reruns.
        //
        // Here, no `pre_exec` hook: with one, `Command` must `fork`, copying dagrun's page
        // tables for every command — the largest per-node cost the profile found
        // (docs/benchmarks.md, issue 19). Without, it uses `posix_spawn` (a `vfork`-style
        // clone), as ninja and make do; the group records above cover a dagrun that dies.
        // In a Slurm job there are no group records, and Slurm may end a job's processes
        // by process group (`proctrack/pgid`), which this group escapes: there `sh` dies
        // with the worker (PR_SET_PDEATHSIG), one command a job, so the fork costs nothing
        // that counts.
        let token = dagrun_cache::procs::new_token();
        c.env(dagrun_cache::procs::GROUP_ENV, &token);
        c.process_group(0);
        if ctx.place != Place::Here {
            die_with_parent(&mut c);
        }
        // Recorded before it starts (its token, no leader yet), so that even a dagrun
        // killed right after the spawn leaves a record for the next one to act on; the
        // leader is added once it is known.
        let tracked = ctx.track_group(0, &token);
        let spawned = c.spawn();
        // The command holds the pipe's write ends until dropped: close ours, so that the
        // reader sees the end of the output when the command's processes have exited.
        drop(c);
        let child = spawned.map_err(|e| format!("cannot start `sh`: {e}"))?;
        let pid = child.id() as i32;
        if let Some(Err(e)) = tracked.as_ref().map(|t| t.leader(pid)) {
            tracing::warn!(node = %ctx.node, error = %e, "cannot record a process group's leader");
        }
        let ctx_ref: &StageContext = ctx;
        let curves = crate::tensorboard::Curves::for_node(ctx_ref);
        let cancelled = || ctx_ref.cancelled();
        let (status, reported) = match ExitWatch::open(pid) {
            // Linux: this thread reads the output and sees the exit, through `poll`.
            Some(watch) => {
                let mut out = Watched {
                    reader,
                    watch,
                    cancel: Escalation::new(pid, &cancelled),
                };
                let reported = pump(ctx_ref, &mut out, curves);
                (out.exit(child), reported)
            }
            // Elsewhere: a thread reads, another waits.
            None => std::thread::scope(|s| {
                let pumping = s.spawn(|| pump(ctx_ref, reader, curves));
                let status = wait_or_cancel(child, pid, cancelled);
                (status, pumping.join().unwrap_or_default())
            }),
        };
        let status = status?;
        if ctx.cancelled() {
            return Err(Box::new(Cancelled));
        }
        for m in reported {
            match m.step {
                Some(step) => ctx.series(&m.name, step, m.value),
                None => ctx.metric(&m.name, m.value),
            }
        }
        match status {
            Some(st) if st.success() => read_metric_files(ctx),
            Some(st) => match st.code() {
                Some(code) => Err(format!("command exited with status {code}").into()),
                None => Err("command was killed by a signal".into()),
            },
            None => Err("command did not finish".into()),
        }
    }
}

/// Linux: `sh` gets SIGKILL when the thread that spawned it dies (PR_SET_PDEATHSIG; it
/// reaches `sh` only, not what `sh` starts). Elsewhere nothing.
#[cfg(target_os = "linux")]
fn die_with_parent(c: &mut Command) {
    // SAFETY: prctl is async-signal-safe.
    unsafe {
        c.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_parent(_c: &mut Command) {}

/// How often a running command checks for Ctrl-C. Its exit is not polled: it is seen the
/// moment it happens (a `poll` on its pidfd, or a thread blocked in `wait`).
const CANCEL_CHECK: Duration = Duration::from_millis(50);

/// Ctrl-C for one command: once `cancelled` says so, the group gets SIGTERM, then SIGKILL
/// after 3 s. [`Escalation::check`] is called every [`CANCEL_CHECK`] at most.
struct Escalation<'a> {
    pid: i32,
    cancelled: &'a dyn Fn() -> bool,
    term_sent: Option<Instant>,
}

impl<'a> Escalation<'a> {
    fn new(pid: i32, cancelled: &'a dyn Fn() -> bool) -> Self {
        Escalation {
            pid,
            cancelled,
            term_sent: None,
        }
    }

    fn check(&mut self) {
        if !(self.cancelled)() {
            return;
        }
        match self.term_sent {
            None => {
                signal_group(self.pid, libc::SIGTERM);
                self.term_sent = Some(Instant::now());
            }
            Some(t) if t.elapsed() > Duration::from_secs(3) => {
                signal_group(self.pid, libc::SIGKILL)
            }
            _ => {}
        }
    }
}

/// Waits for `child` (the leader of process group `pid`) to exit. A thread blocks in
/// `wait`, so the exit is seen at once; meanwhile this thread checks `cancelled` every
/// [`CANCEL_CHECK`] ([`Escalation`]). Returns `None` when the command's exit status could
/// not be had. (Where [`ExitWatch`] works, the command's own thread does all of this.)
fn wait_or_cancel(
    mut child: std::process::Child,
    pid: i32,
    cancelled: impl Fn() -> bool,
) -> std::io::Result<Option<std::process::ExitStatus>> {
    let (tx, rx) = std::sync::mpsc::channel();
    let mut cancel = Escalation::new(pid, &cancelled);
    std::thread::scope(|s| {
        s.spawn(move || {
            let _ = tx.send(child.wait());
        });
        loop {
            match rx.recv_timeout(CANCEL_CHECK) {
                Ok(status) => return status.map(Some),
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return Ok(None),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            }
            cancel.check();
        }
    })
}

/// The command's exit as a file descriptor (Linux's `pidfd_open`, 5.3+): readable once the
/// leader has exited. With it, one thread reads the output and sees the exit, both through
/// `poll`, with no thread started per command (two fewer a node than [`wait_or_cancel`]
/// and a reading thread: a cost on the critical path of a run of short commands,
/// docs/benchmarks.md, issue 19).
struct ExitWatch {
    fd: std::os::fd::OwnedFd,
    exited: bool,
}

impl ExitWatch {
    /// `None` where there is no `pidfd_open` (another OS, an older kernel).
    #[cfg(target_os = "linux")]
    fn open(pid: i32) -> Option<Self> {
        use std::os::fd::FromRawFd;
        // SAFETY: pidfd_open of our own unreaped child; the pid cannot be reused before
        // we reap it.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            return None;
        }
        // SAFETY: a new descriptor that nothing else owns.
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) };
        Some(ExitWatch { fd, exited: false })
    }

    #[cfg(not(target_os = "linux"))]
    fn open(_pid: i32) -> Option<Self> {
        None
    }

    /// Waits until `out` (if given) is readable or closed, or the leader has exited, at
    /// most [`CANCEL_CHECK`]. Returns whether `out` is ready.
    fn poll(&mut self, out: Option<std::os::fd::RawFd>) -> std::io::Result<bool> {
        use std::os::fd::AsRawFd;
        let mut fds = [
            libc::pollfd {
                fd: out.unwrap_or(-1),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                // A negative descriptor is ignored by poll.
                fd: if self.exited { -1 } else { self.fd.as_raw_fd() },
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let timeout = CANCEL_CHECK.as_millis() as libc::c_int;
        // SAFETY: two valid pollfd structures.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, timeout) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            return match e.kind() {
                std::io::ErrorKind::Interrupted => Ok(false),
                _ => Err(e),
            };
        }
        if fds[1].revents != 0 {
            self.exited = true;
        }
        Ok(out.is_some() && fds[0].revents != 0)
    }
}

/// The command's output, read by the thread that also watches the exit and Ctrl-C.
struct Watched<'a> {
    reader: std::io::PipeReader,
    watch: ExitWatch,
    cancel: Escalation<'a>,
}

impl Watched<'_> {
    /// Once the output has ended: waits for the leader's exit (still checking Ctrl-C),
    /// then reaps it.
    fn exit(
        mut self,
        mut child: std::process::Child,
    ) -> std::io::Result<Option<std::process::ExitStatus>> {
        while !self.watch.exited {
            self.watch.poll(None)?;
            self.cancel.check();
        }
        child.wait().map(Some)
    }
}

impl std::io::Read for Watched<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::os::fd::AsRawFd;
        loop {
            // Before every wait: a command that never stops writing is still stopped by
            // Ctrl-C (the check is one atomic load until it is set).
            self.cancel.check();
            if self.watch.poll(Some(self.reader.as_raw_fd()))? {
                return self.reader.read(buf);
            }
        }
    }
}

/// Sends `sig` to the process group `pgid` (the command and what it started). Linux
/// does not hand out a group id while any process of the group lives, so once the leader
/// is reaped the signal still reaches what is left of the group, or nobody.
fn signal_group(pgid: i32, sig: libc::c_int) {
    // SAFETY: signalling the command's own process group.
    unsafe { libc::kill(-pgid, sig) };
}

/// Reads the stage's `metrics:` files (workspace paths, in the node's params) into the
/// node's metrics.
fn read_metric_files(ctx: &mut StageContext) -> Result<(), StageError> {
    let files: Vec<String> = match ctx.params.get("metrics") {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        _ => return Ok(()),
    };
    for f in files {
        let path = ctx.workdir.join(&f);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                format!("the command did not write its metrics file `{f}`")
            } else {
                format!("cannot read the metrics file `{f}`: {e}")
            }
        })?;
        let doc: Value = serde_json::from_str(&text)
            .map_err(|e| format!("the metrics file `{f}` is not JSON: {e}"))?;
        let Value::Object(_) = doc else {
            return Err(format!(
                "the metrics file `{f}` holds {}, not a JSON object of metrics",
                json_what(&doc)
            )
            .into());
        };
        let mut skipped = Vec::new();
        for (name, v) in flatten_metrics(&doc) {
            match v {
                Value::Number(n) => match n.as_f64() {
                    Some(x) => ctx.metric(&name, x),
                    None => skipped.push(name),
                },
                Value::Bool(_) | Value::String(_) => ctx.other_metric(&name, v.clone()),
                _ => skipped.push(name),
            }
        }
        if !skipped.is_empty() {
            ctx.log(format!(
                "dagrun: {f}: left out of the metrics (lists and nulls are not metrics): {}",
                skipped.join(", ")
            ));
        }
    }
    Ok(())
}

fn json_what(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// A JSON object's leaves with dotted names (`{"eval": {"acc": 1}}` → `eval.acc`).
fn flatten_metrics(v: &Value) -> Vec<(String, &Value)> {
    fn walk<'a>(prefix: &str, v: &'a Value, out: &mut Vec<(String, &'a Value)>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    let name = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&name, x, out);
                }
            }
            other => out.push((prefix.to_string(), other)),
        }
    }
    let mut out = Vec::new();
    walk("", v, &mut out);
    out
}

/// A `dagrun:metric NAME VALUE [STEP]` report.
#[derive(Debug, PartialEq)]
struct MetricReport {
    name: String,
    value: f64,
    step: Option<f64>,
}

/// The metric report in a line, if any: `Err` for a line that has the marker but not
/// the form (so that it is logged with a note rather than silently lost).
fn metric_in(line: &str) -> Option<Result<MetricReport, ()>> {
    const MARK: &str = "dagrun:metric ";
    let at = line.rfind(MARK)?;
    let rest = &line[at + MARK.len()..];
    if rest.contains('\r') {
        return None;
    }
    let parts: Vec<&str> = rest.split_whitespace().collect();
    let number = |s: &str| s.parse::<f64>().ok();
    Some(match parts.as_slice() {
        [name, value] => number(value)
            .map(|value| MetricReport {
                name: name.to_string(),
                value,
                step: None,
            })
            .ok_or(()),
        [name, value, step] => match (number(value), number(step)) {
            (Some(value), Some(step)) => Ok(MetricReport {
                name: name.to_string(),
                value,
                step: Some(step),
            }),
            _ => Err(()),
        },
        _ => Err(()),
    })
}

/// Logs the command's output line by line; `dagrun:progress` lines update the display;
/// `dagrun:metric` lines are logged and returned, and those with a step written to the
/// node's TensorBoard curves as they come.
fn pump(ctx: &StageContext, stream: impl std::io::Read, mut curves: Curves) -> Vec<MetricReport> {
    let reader = BufReader::new(stream);
    let mut metrics = Vec::new();
    for line in reader.split(b'\n') {
        let Ok(line) = line else { break };
        let line = String::from_utf8_lossy(&line);
        let line = line.trim_end_matches('\r');
        match metric_in(line) {
            Some(Ok(m)) => {
                if let Some(step) = m.step {
                    curves.write(step, &[(&m.name, m.value)]);
                }
                metrics.push(m);
                ctx.log(line);
                continue;
            }
            Some(Err(())) => {
                ctx.log(line);
                ctx.log("dagrun: not a metric report, left out (the form is `dagrun:metric NAME VALUE [STEP]`)");
                continue;
            }
            None => {}
        }
        match progress_in(line) {
            Some(p) => {
                if !p.before.trim().is_empty() {
                    ctx.log(p.before.trim_end());
                }
                ctx.progress(p.done, p.total, p.message);
            }
            None => ctx.log(line),
        }
    }
    metrics
}

/// A `dagrun:progress DONE/TOTAL [message]` report found in a line of output.
#[derive(Debug, PartialEq)]
struct ProgressReport<'a> {
    /// What the line held before the report (the rest of another write).
    before: &'a str,
    done: u64,
    total: u64,
    message: &'a str,
}

/// The progress report in a line, if any. stdout and stderr share one pipe (so that the
/// log keeps their order), so a report may follow the unfinished line of the other stream
/// (`Downloading... dagrun:progress 1/2`, or a progress bar redrawn with `\r`): the marker
/// counts wherever it starts, in what follows the line's last `\r`.
fn progress_in(line: &str) -> Option<ProgressReport<'_>> {
    const MARK: &str = "dagrun:progress ";
    let at = line.rfind(MARK)?;
    if line[at..].contains('\r') {
        return None;
    }
    let rest = &line[at + MARK.len()..];
    let (frac, message) = rest.split_once(' ').unwrap_or((rest, ""));
    let (d, t) = frac.split_once('/')?;
    Some(ProgressReport {
        before: &line[..at],
        done: d.trim().parse().ok()?,
        total: t.trim().parse().ok()?,
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(line: &str) -> Option<(String, u64, u64, String)> {
        progress_in(line).map(|p| (p.before.to_string(), p.done, p.total, p.message.to_string()))
    }

    #[test]
    fn metric_reports_and_files() {
        let m = |n: &str, v, s| {
            Some(Ok(MetricReport {
                name: n.to_string(),
                value: v,
                step: s,
            }))
        };
        assert_eq!(metric_in("dagrun:metric loss 0.25"), m("loss", 0.25, None));
        assert_eq!(
            metric_in("dagrun:metric loss 0.5 10"),
            m("loss", 0.5, Some(10.0))
        );
        assert_eq!(
            metric_in("epoch 3 dagrun:metric acc 1e-3"),
            m("acc", 1e-3, None)
        );
        assert_eq!(metric_in("dagrun:metric loss"), Some(Err(())));
        assert_eq!(metric_in("dagrun:metric loss high"), Some(Err(())));
        assert_eq!(metric_in("dagrun:metric loss 1 2 3"), Some(Err(())));
        assert_eq!(metric_in("loss 0.3"), None);
        let doc: Value =
            serde_json::from_str(r#"{"acc": 0.5, "eval": {"f1": 1, "ok": true}, "tag": "x"}"#)
                .unwrap();
        let flat: Vec<String> = flatten_metrics(&doc).into_iter().map(|(k, _)| k).collect();
        assert_eq!(flat, ["acc", "eval.f1", "eval.ok", "tag"]);
    }

    #[test]
    fn a_progress_report_is_found_after_the_other_streams_unfinished_line() {
        let r = |b: &str, d, t, m: &str| Some((b.to_string(), d, t, m.to_string()));
        assert_eq!(
            report("dagrun:progress 3/10 epoch 3"),
            r("", 3, 10, "epoch 3")
        );
        assert_eq!(report("dagrun:progress 1/2"), r("", 1, 2, ""));
        assert_eq!(
            report("Downloading... dagrun:progress 1/2 half"),
            r("Downloading... ", 1, 2, "half")
        );
        assert_eq!(
            report("\r 50%|#####\r 60%|######dagrun:progress 2/2 done"),
            r("\r 50%|#####\r 60%|######", 2, 2, "done")
        );
        // Not a report: no marker, a malformed fraction, or a report overwritten by `\r`.
        assert_eq!(report("loss 0.3"), None);
        assert_eq!(report("dagrun:progress half"), None);
        assert_eq!(report("dagrun:progress 1/x"), None);
        assert_eq!(report("dagrun:progress 1/2\r 50%|#####"), None);
    }
}
