//! A property test of the pipeline front end: YAML text → checked pipeline → plan must
//! never panic or hang, and every rejection must point at `file:line:col`.
//!
//! Cases are mutations of a seed corpus: the repository's `pipelines/*.yaml`, the bad
//! pipelines in `tests/bad/`, and the YAML blocks of README.md. Each case gets one to
//! eight mutations (byte flips, deletions, duplicated or swapped lines, and insertions
//! of tokens that have broken the front end before: edge numbers, non-ASCII text,
//! `${`, anchors and aliases, flow indicators, CRs, a second document).
//!
//! CI runs `DAGRUN_FUZZ_CASES` cases (default 500); run a long campaign
//! by hand with e.g. `DAGRUN_FUZZ_CASES=50000 cargo test -p dagrun-stages --test
//! frontend_fuzz`. `DAGRUN_FUZZ_SEED` picks the random seed (default fixed, so that CI
//! is repeatable). A failing case is written to the test's output in full.

use std::{path::Path, sync::mpsc, time::Duration};

use dagrun_engine::{plan::Evaluator, plan::Selection, Pipeline};
use dagrun_stages::registry;

/// How long one case may take before it counts as a hang (debug build, loaded machine).
const HANG: Duration = Duration::from_secs(20);

const TOKENS: &[&str] = &[
    "0",
    "-1",
    "1e308",
    "-1e308",
    "1e14",
    "1e30",
    "99999999999999999999999",
    ".nan",
    ".inf",
    "-.inf",
    "NaN",
    "\"\"",
    "''",
    "~",
    "null",
    "true",
    "日本語",
    "ü",
    "\u{feff}",
    "${",
    "}",
    "${params.",
    "${stages.",
    "${matrix.",
    "${ü}",
    "&a ",
    "*a",
    "<<: *a",
    "-",
    "- ",
    "#",
    "#x",
    ": ",
    ":",
    "{",
    "}",
    "[",
    "]",
    ",",
    "\r",
    "\t",
    "\n",
    "\n---\n",
    "...",
    "!!str ",
    "!tag ",
    "|",
    ">",
    "?",
    "%",
    "@",
    "`",
    "\"",
    "'",
    "\\",
    "\0",
    "kind: ",
    "cmd: ",
    "params: ",
    "matrix: ",
    "needs: ",
    "deps: ",
    "outs: ",
    "resources: ",
    "slurm: ",
    "executor: ",
    "device: ",
    "gpus: ",
    "poll_seconds: ",
    "exclude: ",
    "steps: ",
    "n_head: ",
    "n_embd: ",
    "draws: ",
    "heads: ",
    "weights: ",
    "lr: ",
    "seed: ",
    "/",
    "..",
    "/dev/zero",
    ".dagrun",
    "out/",
    "a[",
    "=",
    "*",
    "**",
];

fn seeds() -> Vec<Vec<u8>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut out = Vec::new();
    for dir in ["pipelines", "tests/bad"] {
        let mut files: Vec<_> = std::fs::read_dir(root.join(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
            .collect();
        files.sort();
        out.extend(files.iter().map(|f| std::fs::read(f).unwrap()));
    }
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let mut block: Option<String> = None;
    for line in readme.lines() {
        match &mut block {
            None if line.trim_start().starts_with("```yaml") => block = Some(String::new()),
            Some(b) if line.trim_start().starts_with("```") => {
                out.push(std::mem::take(b).into_bytes());
                block = None;
            }
            Some(b) => {
                b.push_str(line);
                b.push('\n');
            }
            None => {}
        }
    }
    assert!(out.len() >= 40, "seed corpus has {} files", out.len());
    out
}

fn mutate(rng: &mut fastrand::Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut s = seeds[rng.usize(..seeds.len())].clone();
    for _ in 0..rng.usize(1..=8) {
        let at = rng.usize(..=s.len());
        match rng.u8(..8) {
            0 if !s.is_empty() => {
                let i = rng.usize(..s.len());
                s[i] ^= 1 << rng.u8(..8);
            }
            1 if !s.is_empty() => {
                let end = (at + rng.usize(1..12)).min(s.len());
                s.drain(at..end);
            }
            2..=4 => {
                let t = TOKENS[rng.usize(..TOKENS.len())].as_bytes();
                s.splice(at..at, t.iter().copied());
            }
            5 => {
                // Replace a number with an edge value.
                if let Some(i) = (at..s.len()).find(|&i| s[i].is_ascii_digit()) {
                    let end = (i..s.len())
                        .find(|&j| !s[j].is_ascii_digit() && s[j] != b'.')
                        .unwrap_or(s.len());
                    let t =
                        ["0", "-1", "1e14", "1e308", ".nan", "-0.5", "4294967296"][rng.usize(..7)];
                    s.splice(i..end, t.bytes());
                }
            }
            6 => {
                // Duplicate or drop a line.
                let lines: Vec<&[u8]> = s.split(|&b| b == b'\n').collect();
                let i = rng.usize(..lines.len());
                let mut v: Vec<&[u8]> = lines.clone();
                if rng.bool() {
                    v.insert(i, lines[i]);
                } else {
                    v.remove(i);
                }
                s = v.join(&b'\n');
            }
            _ => {
                // Splice in a line of another seed, at a line start.
                let other = &seeds[rng.usize(..seeds.len())];
                let lines: Vec<&[u8]> = other.split(|&b| b == b'\n').collect();
                let l = lines[rng.usize(..lines.len())];
                let start = s[..at]
                    .iter()
                    .rposition(|&b| b == b'\n')
                    .map_or(0, |i| i + 1);
                let mut ins = l.to_vec();
                ins.push(b'\n');
                s.splice(start..start, ins);
            }
        }
    }
    s
}

/// What one case did: `Ok` or the complaint (panic, unlocated error).
fn check(bytes: Vec<u8>) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.yaml");
    std::fs::write(&file, &bytes).unwrap();
    let registry = registry();
    let p = match Pipeline::load(&file, dir.path(), &registry) {
        Ok(p) => p,
        Err(errs) => {
            for e in &errs.0 {
                if e.location.line == 0 {
                    return Err(format!("error without a line:col: {e}"));
                }
            }
            return Ok(());
        }
    };
    // A plan may fail (an unreadable dep, a device the machine lacks); it may not panic.
    let _ = Evaluator::new(&p, None, false)
        .with_gpus(0)
        .plan(&Selection::default());
    Ok(())
}

#[test]
fn mutated_pipelines_never_panic_hang_or_lose_their_place() {
    let cases: usize = std::env::var("DAGRUN_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let seed: u64 = std::env::var("DAGRUN_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(17);
    let seeds = seeds();
    let mut rng = fastrand::Rng::with_seed(seed);
    // Panics are caught and reported per case; keep their default messages off stderr.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut failures = Vec::new();
    for n in 0..cases {
        let case = mutate(&mut rng, &seeds);
        let (tx, rx) = mpsc::channel();
        let c = case.clone();
        std::thread::spawn(move || {
            let r = std::panic::catch_unwind(|| check(c)).unwrap_or_else(|p| {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                Err(format!("panic: {msg}"))
            });
            let _ = tx.send(r);
        });
        let verdict = match rx.recv_timeout(HANG) {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {HANG:?} (a hang?)")),
        };
        if let Err(why) = verdict {
            failures.push(format!(
                "case {n} (seed {seed}): {why}\n--- case ---\n{}\n------------",
                String::from_utf8_lossy(&case)
            ));
            if failures.len() >= 20 {
                break;
            }
        }
    }
    std::panic::set_hook(hook);
    assert!(
        failures.is_empty(),
        "{} failing cases:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
