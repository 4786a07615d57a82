//! Outputs and inputs that touch the workspace itself or dagrun's own folders, and
//! outputs of other stages inside input folders.

use crate::support::*;

#[test]
fn an_output_holding_a_cache_folder_inside_the_workspace_is_refused() {
    let ws = Ws::new();
    ws.write(
        "p.yaml",
        "stages:\n  a:\n    kind: command\n    cmd: mkdir -p state && echo a > state/x\n    outs: [state]\n",
    );
    for args in [
        ["plan", "p.yaml", "--cache", "state/cache"],
        ["run", "p.yaml", "--cache", "state/cache"],
    ] {
        let o = ws.dagrun(&args);
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        assert!(
            text(&o)
                .contains("p.yaml:5:12: output `state` contains the cache folder `state/cache`"),
            "{}",
            text(&o)
        );
    }
    assert!(ws.p("p.yaml").exists());
    assert!(!ws.p("state").exists());
    // With the cache elsewhere, the same output is fine.
    ws.run(&["p.yaml"]);
    assert_eq!(ws.read("state/x"), "a\n");
}

#[test]
fn the_workspace_as_an_input_leaves_the_cache_folder_out() {
    let ws = Ws::new();
    ws.write("in/a.txt", "a\n");
    ws.write(
        "p.yaml",
        "stages:\n  count:\n    kind: command\n    cmd: ls in > /dev/null\n    deps: [.]\n",
    );
    assert_eq!(ws.run(&["p.yaml"]), set(&["count"]));
    // The cache folder changes on every run (its lock, its database): not an input.
    assert!(ws.run(&["p.yaml"]).is_empty());
    assert!(ws.run(&["p.yaml"]).is_empty());
    ws.write("in/a.txt", "b\n");
    assert_eq!(ws.run(&["p.yaml"]), set(&["count"]));
}

#[test]
fn an_absolute_input_inside_the_workspace_is_a_workspace_input() {
    let ws = Ws::new();
    let abs = std::fs::canonicalize(ws.path()).unwrap();
    ws.write(
        "p.yaml",
        &format!(
            "stages:\n  a:\n    kind: command\n    cmd: echo a > data.txt\n    outs: [data.txt]\n  b:\n    kind: command\n    cmd: cat {0}/data.txt > b.txt\n    deps: [{0}/./data.txt]\n    outs: [b.txt]\n",
            abs.display()
        ),
    );
    // The input is `a`'s output: an edge, so `b` runs after `a`.
    assert_eq!(ws.run(&["p.yaml"]), set(&["a", "b"]));
    assert_eq!(ws.read("b.txt"), "a\n");
    let (out, _) = ws.ok(&["graph", "p.yaml"]);
    assert!(out.contains("a") && out.contains("b"), "{out}");
    assert!(ws.run(&["p.yaml"]).is_empty());
}

#[test]
fn only_restores_the_cached_upstream_outputs_it_reads() {
    let ws = Ws::new();
    ws.write("p.yaml", SWEEP);
    ws.run(&["p.yaml"]);
    ws.write("data.txt", "bad\n");
    let (_, err) = ws.ok(&["p.yaml", "--only", "train", "--rerun", "train"]);
    assert_eq!(
        executed(&err),
        set(&["train[seed=0]", "train[seed=1]", "train[seed=2]"])
    );
    // The node read what its key says: the cached `data.txt`, put back first.
    assert_eq!(ws.read("data.txt"), "hello\n");
    assert_eq!(ws.read("model-1.txt"), "hello\n1\n");
    std::fs::remove_file(ws.p("model-1.txt")).unwrap();
    ws.run(&["p.yaml"]);
    assert_eq!(ws.read("model-1.txt"), "hello\n1\n");
}

const FOLDER: &str = "stages:
  a:
    kind: command
    cmd: mkdir -p data && echo a > data/a.txt
    outs: [data/a.txt]
  b:
    kind: command
    cmd: cat data/* > b.txt
    deps: [data]
    outs: [b.txt]
";

#[test]
fn an_input_folder_holding_cached_outputs_is_hashed_as_restored() {
    let ws = Ws::new();
    ws.write("p.yaml", FOLDER);
    assert_eq!(ws.run(&["p.yaml"]), set(&["a", "b"]));
    std::fs::remove_dir_all(ws.p("data")).unwrap();
    let (out, _) = ws.ok(&["plan", "p.yaml"]);
    assert!(!out.contains("missing"), "{out}");
    assert!(ws.run(&["p.yaml"]).is_empty());
    assert_eq!(ws.read("data/a.txt"), "a\n");
    // Another file in the folder is an input change.
    ws.write("data/extra.txt", "x\n");
    assert_eq!(ws.run(&["p.yaml"]), set(&["b"]));
    assert_eq!(ws.read("b.txt"), "a\nx\n");
    // A modified output inside it is restored, and `b` stays cached.
    ws.write("data/a.txt", "tampered\n");
    assert!(ws.run(&["p.yaml"]).is_empty());
    assert_eq!(ws.read("data/a.txt"), "a\n");
}

const CLOBBER: &str = "stages:
  make:
    kind: command
    cmd: 'false'
    outs: [raw.csv]
";

#[test]
fn an_output_dagrun_did_not_write_is_never_deleted() {
    let ws = Ws::new();
    ws.write("raw.csv", "precious\n");
    ws.write("p.yaml", CLOBBER);
    let (out, _) = ws.ok(&["plan", "p.yaml"]);
    assert!(
        out.contains("missing  make")
            && out.contains("output `raw.csv` exists and dagrun did not write it"),
        "{out}"
    );
    let o = ws.dagrun(&["p.yaml"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o)
            .contains("p.yaml:5:12: output `raw.csv` of `make` exists and dagrun did not write it"),
        "{}",
        text(&o)
    );
    assert_eq!(ws.read("raw.csv"), "precious\n");
    // A folder too.
    std::fs::remove_file(ws.p("raw.csv")).unwrap();
    ws.write("raw.csv/part", "precious\n");
    assert_eq!(ws.dagrun(&["p.yaml"]).status.code(), Some(2));
    assert_eq!(ws.read("raw.csv/part"), "precious\n");
    // Moved away, the node runs (and fails); what a failed run left is dagrun's, so the
    // next run may remove it.
    std::fs::rename(ws.p("raw.csv"), ws.p("kept")).unwrap();
    ws.write(
        "p.yaml",
        "stages:\n  make:\n    kind: command\n    cmd: echo partial > raw.csv; false\n    outs: [raw.csv]\n",
    );
    assert_eq!(ws.dagrun(&["p.yaml"]).status.code(), Some(1));
    assert_eq!(ws.read("raw.csv"), "partial\n");
    assert_eq!(ws.dagrun(&["p.yaml"]).status.code(), Some(1));
    // An output whose content the cache holds (an earlier version) is replaced.
    ws.write(
        "p.yaml",
        "stages:\n  make:\n    kind: command\n    cmd: echo v1 > raw.csv\n    outs: [raw.csv]\n",
    );
    ws.run(&["p.yaml"]);
    ws.write(
        "p.yaml",
        "stages:\n  make:\n    kind: command\n    cmd: echo v2 > raw.csv\n    outs: [raw.csv]\n",
    );
    assert_eq!(ws.run(&["p.yaml"]), set(&["make"]));
    assert_eq!(ws.read("raw.csv"), "v2\n");
}

const SHARED: &str = "stages:
  make:
    kind: command
    cmd: cat in.txt > out.txt
    deps: [in.txt]
    outs: [out.txt]
";

/// A workspace that ran `make` with the cache at `cache`, and another one, `ws2`, where
/// the same run restored `out.txt` from that cache.
fn shared_cache_restored(cache: &str) -> Ws {
    let ws1 = Ws::new();
    ws1.write("in.txt", "1\n");
    ws1.write("p.yaml", SHARED);
    assert_eq!(ws1.run(&["--cache", cache, "p.yaml"]), set(&["make"]));
    let ws2 = Ws::new();
    ws2.write("in.txt", "1\n");
    ws2.write("p.yaml", SHARED);
    assert!(ws2.run(&["--cache", cache, "p.yaml"]).is_empty());
    assert_eq!(ws2.read("out.txt"), "1\n");
    ws2
}

#[test]
fn an_output_dagrun_restored_is_dagruns_to_replace() {
    let cache = tempfile::tempdir().unwrap();
    let cache = cache.path().join("c");
    let cache = cache.to_str().unwrap();
    let ws2 = shared_cache_restored(cache);
    // Edited by hand, then its input changes: the node reruns over it.
    ws2.write("out.txt", "1\nedit\n");
    ws2.write("in.txt", "2\n");
    assert_eq!(ws2.run(&["--cache", cache, "p.yaml"]), set(&["make"]));
    assert_eq!(ws2.read("out.txt"), "2\n");
}

#[test]
fn a_restore_never_replaces_a_file_dagrun_did_not_write() {
    let cache = tempfile::tempdir().unwrap();
    let cache = cache.path().join("c");
    let cache = cache.to_str().unwrap();
    let ws2 = shared_cache_restored(cache);
    // The user's own file where a cached output would be restored: left alone, as when
    // the node would run.
    let ws3 = Ws::new();
    ws3.write("in.txt", "1\n");
    ws3.write("p.yaml", SHARED);
    ws3.write("out.txt", "precious user data\n");
    let (out, _) = ws3.ok(&["--cache", cache, "plan", "p.yaml"]);
    assert!(
        out.contains("missing  make")
            && out.contains("output `out.txt` exists and dagrun did not write it"),
        "{out}"
    );
    let o = ws3.dagrun(&["--cache", cache, "p.yaml"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o)
            .contains("p.yaml:6:12: output `out.txt` of `make` exists and dagrun did not write it"),
        "{}",
        text(&o)
    );
    assert_eq!(ws3.read("out.txt"), "precious user data\n");
    // Moved away, it is restored.
    std::fs::rename(ws3.p("out.txt"), ws3.p("kept.txt")).unwrap();
    assert!(ws3.run(&["--cache", cache, "p.yaml"]).is_empty());
    assert_eq!(ws3.read("out.txt"), "1\n");
    // An output dagrun restored and the user edited is restored over the edit.
    ws2.write("out.txt", "hand edit\n");
    assert!(ws2.run(&["--cache", cache, "p.yaml"]).is_empty());
    assert_eq!(ws2.read("out.txt"), "1\n");
}

#[test]
fn only_names_the_file_that_keeps_an_upstream_node_from_running() {
    let ws = Ws::new();
    ws.write("p.yaml", SWEEP);
    // `prepare` never ran, and a file of the user's sits where it would write.
    ws.write("data.txt", "mine\n");
    let o = ws.dagrun(&["p.yaml", "--only", "train"]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(
        t.contains("needs `prepare`, which is outside the selection"),
        "{t}"
    );
    assert!(
        t.contains("output `data.txt` of `prepare` exists and dagrun did not write it"),
        "{t}"
    );
    assert_eq!(ws.read("data.txt"), "mine\n");
}

/// `make` writes `sub/o`; `use` reads it.
const SUB: &str = "stages:
  make:
    kind: command
    cmd: mkdir -p sub && echo made > sub/o
    outs: [sub/o]
";

#[test]
fn an_output_behind_a_symbolic_link_is_never_written_or_deleted_through_it() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("o"), "precious\n").unwrap();
    for (case, args) in [
        // The output is cached: a restore would write through the link.
        ("restore", vec!["p.yaml"]),
        // The node reruns: removing its old output would delete through the link.
        ("rerun", vec!["p.yaml", "--rerun", "make"]),
    ] {
        let ws = Ws::new();
        ws.write("p.yaml", SUB);
        ws.run(&["p.yaml"]);
        std::fs::remove_dir_all(ws.p("sub")).unwrap();
        std::os::unix::fs::symlink(outside.path(), ws.p("sub")).unwrap();
        let (out, _) = ws.ok(&["plan", "p.yaml"]);
        assert!(
            out.contains("missing  make") && out.contains("lies behind the symbolic link `sub`"),
            "{case}: {out}"
        );
        let o = ws.dagrun(&args);
        let t = text(&o);
        assert_eq!(o.status.code(), Some(2), "{case}: {t}");
        assert!(
            t.contains("p.yaml:2:3: `make`: output `sub/o` lies behind the symbolic link `sub`"),
            "{case}: {t}"
        );
        assert_eq!(
            std::fs::read_to_string(outside.path().join("o")).unwrap(),
            "precious\n",
            "{case}"
        );
        assert_eq!(
            std::fs::read_dir(outside.path()).unwrap().count(),
            1,
            "{case}"
        );
    }
}

#[test]
fn a_symbolic_link_the_user_put_at_an_output_is_never_replaced() {
    let ws = Ws::new();
    ws.write("p.yaml", SUB);
    // Before the node ever ran, and after: a link of the user's, even a dangling one.
    std::fs::create_dir_all(ws.p("sub")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/target", ws.p("sub/o")).unwrap();
    let o = ws.dagrun(&["p.yaml"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("output `sub/o` of `make` exists and dagrun did not write it"),
        "{}",
        text(&o)
    );
    assert!(std::fs::symlink_metadata(ws.p("sub/o"))
        .unwrap()
        .is_symlink());
    std::fs::remove_file(ws.p("sub/o")).unwrap();
    ws.run(&["p.yaml"]);
    // Once dagrun wrote the path, it is dagrun's (as any hand edit of it is).
    std::fs::remove_file(ws.p("sub/o")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/target", ws.p("sub/o")).unwrap();
    assert!(ws.run(&["p.yaml"]).is_empty());
    assert_eq!(ws.read("sub/o"), "made\n");
}

const EXPORTED: &str = "stages:
  make:
    kind: command
    cmd: mkdir -p data/deep && echo a > data/a.txt && echo b > data/deep/b.txt && echo r > report.txt
    outs: [data, report.txt]
";

#[test]
fn export_merges_into_the_folder_and_never_overwrites_a_differing_file_unasked() {
    let ws = Ws::new();
    ws.write("p.yaml", EXPORTED);
    ws.run(&["p.yaml"]);
    // The user's folder holds files of their own, in the output's folder too.
    ws.write("out/data/notes.txt", "mine\n");
    ws.write("out/other.txt", "mine\n");
    let (out, _) = ws.ok(&["export", "make", "out"]);
    assert!(out.contains("out/data  (2 files)"), "{out}");
    assert_eq!(ws.read("out/data/deep/b.txt"), "b\n");
    assert_eq!(ws.read("out/data/notes.txt"), "mine\n");
    assert_eq!(ws.read("out/other.txt"), "mine\n");
    assert_eq!(ws.read("out/report.txt"), "r\n");
    // Again: nothing differs, nothing is written.
    let (out, _) = ws.ok(&["export", "make", "out"]);
    assert!(
        out.contains("out/data  (0 files written, 2 unchanged)"),
        "{out}"
    );
    // A file that differs: refused, naming it, and nothing at all is written.
    ws.write("out/data/a.txt", "edited\n");
    std::fs::remove_file(ws.p("out/report.txt")).unwrap();
    let o = ws.dagrun(&["export", "make", "out"]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(
        t.contains("nothing exported")
            && t.contains("out/data/a.txt` exists with other content (--force replaces it)"),
        "{t}"
    );
    assert_eq!(ws.read("out/data/a.txt"), "edited\n");
    assert!(!ws.p("out/report.txt").exists());
    ws.ok(&["export", "make", "out", "--force"]);
    assert_eq!(ws.read("out/data/a.txt"), "a\n");
    assert_eq!(ws.read("out/data/notes.txt"), "mine\n");
    assert_eq!(ws.read("out/report.txt"), "r\n");
}
