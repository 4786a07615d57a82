//! Progress display: a live view of running nodes on a terminal, plain lines otherwise.

use std::{
    io::{IsTerminal, Write},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use dagrun_engine::{
    run::{Observer, Outcome},
    stage::{Progress, ProgressSink},
};
use indexmap::IndexMap;

struct Running {
    started: Instant,
    progress: Option<Progress>,
    last_line: String,
    last_plain_report: Instant,
}

#[derive(Default)]
struct Counts {
    total: usize,
    to_run: usize,
    ran: usize,
    cached: usize,
    failed: usize,
}

struct Inner {
    running: IndexMap<String, Running>,
    counts: Counts,
    drawn: usize,
}

pub struct Display {
    live: bool,
    verbose: bool,
    quiet: bool,
    inner: Mutex<Inner>,
    stop: AtomicBool,
    /// The thread writing [`LiveRun`] snapshots, and the sender whose drop stops it.
    snapshots: Mutex<Option<(std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>)>>,
}

/// What a run is doing, written to `CACHE/live.json` about once a second while it runs, so
/// that `dagrun status` in another terminal can say it although the run holds the cache.
#[derive(serde::Serialize, serde::Deserialize, Debug)]
pub struct LiveRun {
    pub pid: u32,
    pub command: String,
    /// Seconds since the Unix epoch.
    pub started: u64,
    pub updated: u64,
    pub nodes: usize,
    pub to_run: usize,
    pub ran: usize,
    pub cached: usize,
    pub failed: usize,
    pub running: Vec<LiveNode>,
}

#[derive(serde::Serialize, serde::Deserialize, Debug)]
pub struct LiveNode {
    pub node: String,
    pub seconds: f64,
    pub done: u64,
    pub total: u64,
    pub message: String,
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

const SPIN: [&str; 10] = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"];

impl Display {
    pub fn new(verbose: bool, quiet: bool) -> Arc<Display> {
        let live =
            std::io::stderr().is_terminal() && !quiet && std::env::var_os("DAGRUN_PLAIN").is_none();
        let d = Arc::new(Display {
            live,
            verbose,
            quiet,
            inner: Mutex::new(Inner {
                running: IndexMap::new(),
                counts: Counts::default(),
                drawn: 0,
            }),
            stop: AtomicBool::new(false),
            snapshots: Mutex::new(None),
        });
        if live {
            let d2 = d.clone();
            std::thread::spawn(move || {
                let mut tick = 0usize;
                while !d2.stop.load(Ordering::Relaxed) {
                    {
                        let mut g = d2.inner.lock().unwrap();
                        d2.redraw(&mut g, tick);
                    }
                    tick += 1;
                    std::thread::sleep(Duration::from_millis(100));
                }
            });
        }
        d
    }

    /// Writes the run's state to `path` now and then about once a second (atomically:
    /// a temporary file renamed over it) until [`Display::finish`], which removes it.
    pub fn write_snapshots(self: &Arc<Self>, path: std::path::PathBuf, command: String) {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let d = self.clone();
        let started = unix_now();
        let handle = std::thread::spawn(move || loop {
            let snap = d.snapshot(&command, started);
            let tmp = path.with_extension("json.tmp");
            if std::fs::write(&tmp, serde_json::to_vec(&snap).expect("JSON")).is_ok() {
                let _ = std::fs::rename(&tmp, &path);
            }
            match rx.recv_timeout(Duration::from_secs(1)) {
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
                _ => {
                    let _ = std::fs::remove_file(&path);
                    return;
                }
            }
        });
        *self.snapshots.lock().unwrap() = Some((tx, handle));
    }

    fn snapshot(&self, command: &str, started: u64) -> LiveRun {
        let g = self.inner.lock().unwrap();
        LiveRun {
            pid: std::process::id(),
            command: command.to_string(),
            started,
            updated: unix_now(),
            nodes: g.counts.total,
            to_run: g.counts.to_run,
            ran: g.counts.ran,
            cached: g.counts.cached,
            failed: g.counts.failed,
            running: g
                .running
                .iter()
                .map(|(id, r)| LiveNode {
                    node: id.clone(),
                    seconds: r.started.elapsed().as_secs_f64(),
                    done: r.progress.as_ref().map_or(0, |p| p.done),
                    total: r.progress.as_ref().map_or(0, |p| p.total),
                    message: match &r.progress {
                        Some(p) if !p.message.is_empty() => p.message.clone(),
                        _ => r.last_line.clone(),
                    },
                })
                .collect(),
        }
    }

    /// Stops the live view and erases it; stops and removes the snapshots.
    pub fn finish(&self) {
        if let Some((tx, handle)) = self.snapshots.lock().unwrap().take() {
            drop(tx);
            let _ = handle.join();
        }
        self.stop.store(true, Ordering::Relaxed);
        if self.live {
            let mut g = self.inner.lock().unwrap();
            clear(&mut g);
        }
    }

    fn redraw(&self, g: &mut Inner, tick: usize) {
        clear(g);
        let mut out = String::new();
        let width = terminal_width();
        for (id, r) in &g.running {
            let secs = r.started.elapsed().as_secs_f64();
            let mut line = format!("  {} {id}  {:>6}", SPIN[tick % SPIN.len()], fmt_secs(secs));
            if let Some(p) = &r.progress {
                // total 0: a status message (e.g. a Slurm job's state), no counts.
                if p.total > 0 {
                    line.push_str(&format!(
                        "  {} {}/{}",
                        bar(p.done, p.total, 20),
                        p.done,
                        p.total
                    ));
                }
                if !p.message.is_empty() {
                    line.push_str(&format!("  {}", p.message));
                }
            } else if !r.last_line.is_empty() {
                line.push_str(&format!("  {}", r.last_line));
            }
            out.push_str(&truncate(&line, width));
            out.push('\n');
        }
        let c = &g.counts;
        out.push_str(&truncate(
            &format!(
                "  [{}/{}] {} running, {} ran, {} cached{}",
                c.ran + c.cached + c.failed,
                c.total,
                g.running.len(),
                c.ran,
                c.cached,
                if c.failed > 0 {
                    format!(", {} failed", c.failed)
                } else {
                    String::new()
                }
            ),
            width,
        ));
        out.push('\n');
        g.drawn = out.lines().count();
        let mut e = std::io::stderr().lock();
        let _ = e.write_all(out.as_bytes());
        let _ = e.flush();
    }

    /// Prints a permanent line above the live view.
    fn line(&self, g: &mut Inner, text: &str) {
        if self.quiet {
            return;
        }
        if self.live {
            clear(g);
        }
        eprintln!("{text}");
    }
}

fn clear(g: &mut Inner) {
    if g.drawn > 0 {
        eprint!("\x1b[{}A\x1b[J", g.drawn);
        g.drawn = 0;
    }
}

fn terminal_width() -> usize {
    // SAFETY: ioctl TIOCGWINSZ on stderr with a zeroed winsize.
    unsafe {
        let mut ws: libc::winsize = std::mem::zeroed();
        if libc::ioctl(2, libc::TIOCGWINSZ, &mut ws) == 0 && ws.ws_col > 0 {
            return ws.ws_col as usize;
        }
    }
    100
}

fn truncate(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        s.to_string()
    } else {
        s.chars().take(width.saturating_sub(1)).collect::<String>() + "…"
    }
}

fn bar(done: u64, total: u64, width: usize) -> String {
    let frac = if total == 0 {
        0.0
    } else {
        (done as f64 / total as f64).clamp(0.0, 1.0)
    };
    let filled = (frac * width as f64).round() as usize;
    format!("[{}{}]", "#".repeat(filled), "-".repeat(width - filled))
}

pub fn fmt_secs(s: f64) -> String {
    if s < 60.0 {
        format!("{s:.1}s")
    } else if s < 3600.0 {
        format!("{}m{:02}s", (s / 60.0) as u64, (s % 60.0) as u64)
    } else {
        format!(
            "{}h{:02}m",
            (s / 3600.0) as u64,
            ((s % 3600.0) / 60.0) as u64
        )
    }
}

impl ProgressSink for Display {
    fn progress(&self, node: &str, p: &Progress) {
        let mut g = self.inner.lock().unwrap();
        let live = self.live;
        let mut plain = None;
        if let Some(r) = g.running.get_mut(node) {
            r.progress = Some(p.clone());
            if !live && r.last_plain_report.elapsed() > Duration::from_secs(5) {
                r.last_plain_report = Instant::now();
                plain = Some(if p.total > 0 {
                    format!("  ..     {node}  {}/{} {}", p.done, p.total, p.message)
                } else {
                    format!("  ..     {node}  {}", p.message)
                });
            }
        }
        if let Some(l) = plain {
            self.line(&mut g, &l);
        }
    }

    fn log_line(&self, node: &str, line: &str) {
        let mut g = self.inner.lock().unwrap();
        if let Some(r) = g.running.get_mut(node) {
            r.last_line = line.chars().take(200).collect();
        }
        if self.verbose && !self.live {
            self.line(&mut g, &format!("  [{node}] {line}"));
        }
    }
}

impl Observer for Display {
    fn planned(&self, nodes: usize, to_run: usize) {
        let mut g = self.inner.lock().unwrap();
        g.counts.total = nodes;
        g.counts.to_run = to_run;
    }

    fn started(&self, node: &str) {
        let mut g = self.inner.lock().unwrap();
        g.running.insert(
            node.to_string(),
            Running {
                started: Instant::now(),
                progress: None,
                last_line: String::new(),
                last_plain_report: Instant::now(),
            },
        );
        if !self.live {
            self.line(&mut g, &format!("  run    {node}"));
        }
    }

    fn finished(&self, node: &str, outcome: &Outcome) {
        let mut g = self.inner.lock().unwrap();
        g.running.shift_remove(node);
        let text = match outcome {
            Outcome::Cached { restored, cut_off } => {
                g.counts.cached += 1;
                if *cut_off {
                    Some(format!(
                        "  cached {node}  (upstream reran with identical outputs)"
                    ))
                } else if !restored.is_empty() {
                    Some(format!(
                        "  cached {node}  (restored {})",
                        restored.join(", ")
                    ))
                } else if self.verbose {
                    Some(format!("  cached {node}"))
                } else {
                    None
                }
            }
            Outcome::Ran { seconds } => {
                g.counts.ran += 1;
                Some(format!("  done   {node}  ({})", fmt_secs(*seconds)))
            }
            Outcome::Failed { error, .. } => {
                g.counts.failed += 1;
                Some(format!("  FAILED {node}: {error}"))
            }
            Outcome::Skipped { reason } => Some(format!("  skip   {node}  ({reason})")),
            Outcome::Interrupted => Some(format!("  stop   {node}  (interrupted)")),
        };
        if let Some(t) = text {
            self.line(&mut g, &t);
        }
    }
}
