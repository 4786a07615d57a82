//! The README's examples, run: every ```` ```console ```` block is executed and its output
//! compared with what the README shows, so the documentation and the tool cannot drift
//! apart.
//!
//! The rules (also in the README's last section, for whoever edits it):
//! - Each `## ` section gets a fresh workspace holding a copy of `pipelines/`. A fenced
//!   block right after a line `<!-- file: NAME -->` is written to NAME there first.
//! - A ```` ```console ```` block runs in one `bash` process in that workspace (so `cd`
//!   and variables carry from one command to the next, not to the next block). A line
//!   starting with `$ ` is a command; the lines up to the next command are its expected
//!   output, stdout and stderr together. In expected output, `[..]` matches anything
//!   within a line and a line `...` matches any number of lines (snapbox's patterns).
//! - A command must exit 0, unless it ends with a comment `# exit N`.
//! - ```` ```sh ```` blocks are not run: installing, building, and setting up clusters
//!   and GPU machines. What they do is exercised elsewhere (CI runs `scripts/test.sh`,
//!   `ci/slurm/start.sh` and `ci/s3/start.sh`; `tests/cli/quickstart.rs` runs the
//!   quickstart pipeline).

use std::{path::Path, process::Command};

use snapbox::{Assert, IntoData};

use crate::support::BIN;

/// One `$ ` command of a console block and what it must print.
struct Step {
    cmd: String,
    expected: String,
    exit: i32,
}

/// A section of the README: its title, the files it defines, its console blocks.
#[derive(Default)]
struct Section {
    title: String,
    files: Vec<(String, String)>,
    blocks: Vec<(usize, Vec<Step>)>,
}

fn parse(readme: &str) -> Vec<Section> {
    let mut sections = vec![Section::default()];
    let mut lines = readme.lines().enumerate().peekable();
    let mut pending_file: Option<String> = None;
    while let Some((n, line)) = lines.next() {
        if let Some(t) = line.strip_prefix("## ") {
            pending_file = None;
            sections.push(Section {
                title: t.to_string(),
                ..Section::default()
            });
            continue;
        }
        if let Some(name) = line
            .strip_prefix("<!-- file: ")
            .and_then(|r| r.strip_suffix(" -->"))
        {
            pending_file = Some(name.trim().to_string());
            continue;
        }
        let Some(info) = line.strip_prefix("```") else {
            if !line.trim().is_empty() {
                pending_file = None;
            }
            continue;
        };
        let mut body = Vec::new();
        for (_, l) in lines.by_ref() {
            if l.starts_with("```") {
                break;
            }
            body.push(l);
        }
        let section = sections.last_mut().unwrap();
        if let Some(name) = pending_file.take() {
            section.files.push((name, body.join("\n") + "\n"));
        } else if info.split_whitespace().next() == Some("console") {
            section.blocks.push((n + 1, steps(&body)));
        }
    }
    sections
}

fn steps(body: &[&str]) -> Vec<Step> {
    let mut out: Vec<Step> = Vec::new();
    for l in body {
        if let Some(cmd) = l.strip_prefix("$ ") {
            // `# exit N` at the end of the line; anything else is part of the command.
            let annotated = cmd
                .rsplit_once(" # exit ")
                .and_then(|(c, code)| Some((c.trim_end(), code.trim().parse::<i32>().ok()?)));
            let (cmd, exit) = annotated.unwrap_or((cmd, 0));
            out.push(Step {
                cmd: cmd.to_string(),
                expected: String::new(),
                exit,
            });
        } else {
            let step = out.last_mut().expect("a console block starts with `$ `");
            step.expected.push_str(l);
            step.expected.push('\n');
        }
    }
    out
}

/// Runs a block's commands in one shell; returns each command's output and exit code.
fn run_block(dir: &Path, steps: &[Step]) -> Vec<(String, i32)> {
    // Each command's output is framed by a marker line with its exit code.
    const MARK: &str = "\u{1}dagrun-readme-step";
    // A pipe's status is its first failure's; the marker starts a line of its own even
    // after output without a final newline (the newline added before it is taken off).
    let mut script = String::from("set -o pipefail\n");
    for s in steps {
        // `:` keeps a group holding only a comment valid.
        script.push_str(&format!(
            "{{ :\n{}\n}} 2>&1\nprintf '\\n%s %d\\n' \"{MARK}\" \"$?\"\n",
            s.cmd
        ));
    }
    let bin_dir = Path::new(BIN).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(dir)
        .env("PATH", path)
        .env("DAGRUN_PLAIN", "1")
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .env_remove("DAGRUN_REMOTE")
        .output()
        .expect("bash");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut results = Vec::new();
    let mut cur = String::new();
    for line in text.split_inclusive('\n') {
        if let Some(code) = line.strip_prefix(MARK) {
            let mut got = std::mem::take(&mut cur);
            got.pop(); // the newline printed before the marker
            results.push((got, code.trim().parse().unwrap_or(-1)));
        } else {
            cur.push_str(line);
        }
    }
    results
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

#[test]
fn readme_console_examples_print_what_the_readme_says() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let sections = parse(&readme);
    let blocks: usize = sections.iter().map(|s| s.blocks.len()).sum();
    assert!(blocks >= 3, "the README has {blocks} console blocks");
    let assert = Assert::new().normalize_paths(false);
    let mut failures = Vec::new();
    for section in sections.iter().filter(|s| !s.blocks.is_empty()) {
        let tmp = tempfile::tempdir().unwrap();
        let ws = tmp.path().join("ws");
        copy_dir(&root.join("pipelines"), &ws.join("pipelines"));
        for (name, text) in &section.files {
            std::fs::write(ws.join(name), text).unwrap();
        }
        for (line, steps) in &section.blocks {
            if steps.is_empty() {
                failures.push(format!(
                    "README.md:{line}: a console block without a `$ ` command"
                ));
                continue;
            }
            let results = run_block(&ws, steps);
            for (i, step) in steps.iter().enumerate() {
                let place = format!("README.md:{line} ({}): $ {}", section.title, step.cmd);
                let Some((got, code)) = results.get(i) else {
                    failures.push(format!(
                        "{place}\n  did not run (an earlier one ended the shell)"
                    ));
                    continue;
                };
                if *code != step.exit {
                    failures.push(format!(
                        "{place}\n  exit {code}, the README says {}\n{got}",
                        step.exit
                    ));
                    continue;
                }
                if let Err(e) = assert.try_eq(
                    None,
                    got.clone().into_data(),
                    step.expected.clone().into_data(),
                ) {
                    failures.push(format!("{place}\n{e}"));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} README examples differ:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}
