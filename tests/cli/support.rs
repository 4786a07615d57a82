use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

pub const BIN: &str = env!("CARGO_BIN_EXE_dagrun");

/// A temporary workspace.
pub struct Ws {
    pub dir: tempfile::TempDir,
}

impl Ws {
    pub fn new() -> Ws {
        Ws {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn p(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn write(&self, rel: &str, content: &str) {
        let p = self.p(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(p, content).unwrap();
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.p(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .current_dir(self.path())
            .env("DAGRUN_PLAIN", "1")
            .env_remove("RUST_LOG");
        c
    }

    pub fn dagrun(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run dagrun")
    }

    /// Runs and asserts exit code 0; returns (stdout, stderr).
    pub fn ok(&self, args: &[&str]) -> (String, String) {
        let o = self.dagrun(args);
        let (out, err) = (
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        );
        assert!(
            o.status.success(),
            "dagrun {args:?} failed ({:?})\nstdout:\n{out}\nstderr:\n{err}",
            o.status.code()
        );
        (out, err)
    }

    /// Runs `dagrun ARGS` and returns the ids of the nodes that executed.
    pub fn run(&self, args: &[&str]) -> BTreeSet<String> {
        let (_, err) = self.ok(args);
        executed(&err)
    }

    pub fn spawn(&self, args: &[&str]) -> Child {
        self.cmd(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn dagrun")
    }

    pub fn plan_json(&self, pipeline: &str) -> serde_json::Value {
        let (out, _) = self.ok(&["plan", pipeline, "--json"]);
        serde_json::from_str(&out).expect("plan json")
    }

    /// Node ids the plan says will run for sure, and those blocked on upstream.
    pub fn predicted(&self, pipeline: &str) -> (BTreeSet<String>, BTreeSet<String>) {
        let v = self.plan_json(pipeline);
        let mut run = BTreeSet::new();
        let mut blocked = BTreeSet::new();
        for n in v["nodes"].as_array().unwrap() {
            let id = n["node"].as_str().unwrap().to_string();
            if n["will_run"].as_bool().unwrap() {
                run.insert(id);
            } else if n["state"] == "blocked" {
                blocked.insert(id);
            }
        }
        (run, blocked)
    }

    pub fn wait_for(&self, rel: &str, timeout: Duration) {
        let t = Instant::now();
        while !self.p(rel).exists() {
            assert!(t.elapsed() < timeout, "timed out waiting for {rel}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Node ids from the plain progress lines (`  done   ID  (0.1s)`).
pub fn executed(stderr: &str) -> BTreeSet<String> {
    stderr
        .lines()
        .filter_map(|l| l.strip_prefix("  done   "))
        .map(|rest| {
            rest.rsplit_once("  (")
                .map(|(id, _)| id)
                .unwrap_or(rest)
                .trim()
                .to_string()
        })
        .collect()
}

pub fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The pipeline of the issue: a preparation step and a 3-seed sweep.
pub const SWEEP: &str = r#"
params:
  greeting: hello
stages:
  prepare:
    kind: command
    cmd: echo ${params.greeting} > data.txt
    outs: [data.txt]
  train:
    kind: command
    matrix: {seed: [0, 1, 2]}
    cmd: cat data.txt > model-${matrix.seed}.txt && echo ${matrix.seed} >> model-${matrix.seed}.txt
    deps: [data.txt]
    outs: [model-${matrix.seed}.txt]
"#;

/// Sends `sig` to a process this test spawned.
pub fn kill(pid: u32, sig: i32) {
    // SAFETY: sending a signal to a child we spawned.
    unsafe {
        libc::kill(pid as i32, sig);
    }
}
