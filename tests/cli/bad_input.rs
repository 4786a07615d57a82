//! The corpus of bad pipelines in tests/bad: each file's first line says what the
//! error must contain (`# expect: LINE:COL: message`). dagrun must exit with code 2,
//! point at the place, and write nothing.

use crate::support::*;

#[test]
fn every_bad_pipeline_gets_its_message_and_writes_nothing() {
    let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad");
    let mut files: Vec<_> = std::fs::read_dir(&corpus)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 20, "the corpus has {} files", files.len());
    let mut failures = Vec::new();
    for f in files {
        let name = f.file_name().unwrap().to_str().unwrap().to_string();
        // Bytes: some files are not UTF-8 on purpose; the expect line always is.
        let bytes = std::fs::read(&f).unwrap();
        let src = String::from_utf8_lossy(&bytes).into_owned();
        let expect = src
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{name}: no `# expect:` line"))
            .to_string();
        let ws = Ws::new();
        std::fs::write(ws.path().join(&name), &bytes).unwrap();
        for args in [vec!["plan", name.as_str()], vec!["run", name.as_str()]] {
            if name == "missing-input.yaml" && args[0] == "plan" {
                // A dry run reports missing inputs as a node state instead.
                let (out, _) = ws.ok(&args);
                assert!(out.contains("missing") && out.contains("nope.csv"), "{out}");
                continue;
            }
            let o = ws.dagrun(&args);
            let err = String::from_utf8_lossy(&o.stderr).into_owned();
            let want = if expect.chars().next().is_some_and(|c| c.is_ascii_digit()) {
                format!("{name}:{expect}")
            } else {
                expect.clone()
            };
            if o.status.code() != Some(2) || !err.contains(&want) {
                failures.push(format!(
                    "{name} ({}): exit {:?}\n  want: {want}\n  got:  {}",
                    args[0],
                    o.status.code(),
                    err.trim()
                ));
            }
            let written: Vec<_> = std::fs::read_dir(ws.path())
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            if written.len() != 1 {
                failures.push(format!("{name} ({}): wrote {written:?}", args[0]));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
