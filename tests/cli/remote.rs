//! The remote cache (`dagrun cache push/pull`, `run --pull/--push`) against a folder and
//! against a real S3 server on localhost (CI starts moto's server with `ci/s3/start.sh`).
//! Tests that need the server say they were skipped when none answers; with
//! `DAGRUN_S3_TESTS=1` a missing server is a failure.

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::support::*;

/// A small pipeline with every kind of artifact: small files (the index), a file over
/// 16 KiB (an object file), folders with an executable file, a native kind's output, and
/// a node downstream of a sweep.
const SHARED: &str = r#"
stages:
  prepare:
    kind: command
    cmd: printf 'hello\n' > data.txt && head -c 100000 /dev/zero | tr '\0' x > big.bin
    outs: [data.txt, big.bin]
  train:
    kind: command
    matrix: {seed: [0, 1]}
    deps: [data.txt]
    cmd: >-
      mkdir -p model-${matrix.seed} && cat data.txt > model-${matrix.seed}/weights.txt &&
      echo ${matrix.seed} > model-${matrix.seed}/seed.sh && chmod +x model-${matrix.seed}/seed.sh
    outs: [model-${matrix.seed}]
  theory:
    kind: bandit
    params: {beta: 0.4}
  report:
    kind: command
    deps: [model-0, model-1]
    cmd: cat model-0/weights.txt model-1/seed.sh > report.txt
    outs: [report.txt]
"#;

/// Workspace outputs of `SHARED`, for byte comparisons.
const OUTPUTS: [&str; 7] = [
    "data.txt",
    "big.bin",
    "model-0/weights.txt",
    "model-0/seed.sh",
    "model-1/weights.txt",
    "model-1/seed.sh",
    "report.txt",
];

fn all_nodes() -> std::collections::BTreeSet<String> {
    set(&[
        "prepare",
        "train[seed=0]",
        "train[seed=1]",
        "theory",
        "report",
    ])
}

/// node → key from `dagrun plan --json` (`""` when not known yet).
fn keys(ws: &Ws, pipeline: &str) -> BTreeMap<String, String> {
    ws.plan_json(pipeline)["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["node"].as_str().unwrap().to_string(),
                n["key"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// node → state from `dagrun plan --json`.
fn states(ws: &Ws, pipeline: &str) -> BTreeMap<String, String> {
    ws.plan_json(pipeline)["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["node"].as_str().unwrap().to_string(),
                n["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn all_cached(ws: &Ws) -> bool {
    states(ws, "p.yaml").values().all(|s| s == "cached")
}

/// Asserts that two workspaces hold the same outputs, byte for byte and mode for mode,
/// and the same native output (exported from the cache).
fn same_outputs(a: &Ws, b: &Ws) {
    use std::os::unix::fs::PermissionsExt;
    for f in OUTPUTS {
        let (x, y) = (std::fs::read(a.p(f)).unwrap(), std::fs::read(b.p(f)));
        assert_eq!(Some(&x), y.as_ref().ok(), "{f} differs");
        let mode = |ws: &Ws| std::fs::metadata(ws.p(f)).unwrap().permissions().mode() & 0o111;
        assert_eq!(mode(a), mode(b), "{f}: executable bit");
    }
    for ws in [a, b] {
        ws.ok(&["export", "theory", "exported"]);
    }
    let read = |ws: &Ws| {
        let d = ws.p("exported/result");
        let p = if d.is_dir() { d.join("result.json") } else { d };
        std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    };
    assert_eq!(read(a), read(b), "theory's exported result");
}

fn fails(ws: &Ws, args: &[&str], envs: &[(&str, &str)]) -> String {
    let mut c = ws.cmd(args);
    for (k, v) in envs {
        c.env(k, v);
    }
    let o = c.output().unwrap();
    assert!(
        !o.status.success(),
        "dagrun {args:?} succeeded:\n{}",
        text(&o)
    );
    text(&o)
}

fn ok_env(ws: &Ws, args: &[&str], envs: &[(&str, &str)]) -> (String, String) {
    let mut c = ws.cmd(args);
    for (k, v) in envs {
        c.env(k, v);
    }
    let o = c.output().unwrap();
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    );
    assert!(o.status.success(), "dagrun {args:?} failed\n{out}{err}");
    (out, err)
}

/// Every file under `dir` (relative paths), sorted.
fn files_under(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, d: &Path, out: &mut Vec<String>) {
        if let Ok(rd) = std::fs::read_dir(d) {
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(root, &p, out);
                } else {
                    out.push(p.strip_prefix(root).unwrap().to_string_lossy().into_owned());
                }
            }
        }
    }
    let mut v = Vec::new();
    walk(dir, dir, &mut v);
    v.sort();
    v
}

/// The object files of a folder remote, largest first.
fn remote_objects(remote: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = files_under(&remote.join("dagrun-remote-v1/objects"))
        .into_iter()
        .map(|f| remote.join("dagrun-remote-v1/objects").join(f))
        .collect();
    v.sort_by_key(|p| std::cmp::Reverse(std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)));
    v
}

fn object_name(p: &Path) -> String {
    let leaf = p.file_name().unwrap().to_string_lossy().into_owned();
    let shard = p
        .parent()
        .unwrap()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    format!("{shard}{leaf}")
}

#[test]
fn keys_do_not_depend_on_where_the_clone_is() {
    let a = Ws::new();
    let b = Ws::new();
    // The second clone one folder deeper, under another name.
    let b_root = b.p("deeper/clone-b");
    std::fs::create_dir_all(&b_root).unwrap();
    let b = Ws {
        dir: tempfile::tempdir_in(&b_root).unwrap(),
    };
    for ws in [&a, &b] {
        ws.write("p.yaml", SHARED);
    }
    let (ka, kb) = (keys(&a, "p.yaml"), keys(&b, "p.yaml"));
    assert!(
        !ka["prepare"].is_empty() && !ka["theory"].is_empty(),
        "{ka:?}"
    );
    assert_eq!(ka, kb, "keys before running");
    assert_eq!(a.run(&["p.yaml"]), all_nodes());
    assert_eq!(b.run(&["p.yaml"]), all_nodes());
    let (ka, kb) = (keys(&a, "p.yaml"), keys(&b, "p.yaml"));
    assert!(ka.values().all(|k| k.len() == 64), "{ka:?}");
    assert_eq!(ka, kb, "keys after running, every upstream output known");
}

#[test]
fn a_folder_remote_shares_results_between_two_workspaces() {
    let (a, b) = (Ws::new(), Ws::new());
    let shared = tempfile::tempdir().unwrap();
    let remote = shared.path().join("team-cache");
    let url = format!("file://{}", remote.display());
    a.write("p.yaml", SHARED);
    assert_eq!(a.run(&["p.yaml"]), all_nodes());
    let (out, _) = a.ok(&["cache", "push", "p.yaml", "--remote", &url]);
    assert!(out.starts_with("pushed 5 nodes ("), "{out}");
    assert!(out.contains(&format!("to {}", remote.display())), "{out}");
    // The layout: objects named by blake3, records named by key, under a version.
    let files = files_under(&remote);
    assert!(
        files.iter().all(|f| f.starts_with("dagrun-remote-v1/")),
        "{files:?}"
    );
    let records: Vec<_> = files.iter().filter(|f| f.contains("/records/")).collect();
    assert_eq!(records.len(), 5, "{files:?}");
    for obj in remote_objects(&remote) {
        let (h, _) = dagrun_cache_hash(&obj);
        assert_eq!(h, object_name(&obj), "an object is named by its blake3");
    }
    // A second push moves nothing.
    let (out, _) = a.ok(&["cache", "push", "p.yaml", "--remote", &url]);
    assert!(out.starts_with("pushed 0 nodes (0 objects"), "{out}");
    assert!(out.contains("5 already there"), "{out}");

    // B: a fresh copy of the pipeline elsewhere, the remote named in the pipeline.
    b.write("p.yaml", &format!("remote: {}\n{SHARED}", remote.display()));
    assert!(states(&b, "p.yaml").values().any(|s| s == "stale"));
    let (out, _) = b.ok(&["cache", "pull", "p.yaml"]);
    assert!(out.starts_with("pulled 5 nodes ("), "{out}");
    assert!(all_cached(&b), "{:?}", states(&b, "p.yaml"));
    assert!(b.run(&["p.yaml"]).is_empty(), "B computes nothing");
    same_outputs(&a, &b);
    // Pulling again moves nothing.
    let (out, _) = b.ok(&["cache", "pull", "p.yaml"]);
    assert!(out.starts_with("pulled 0 nodes"), "{out}");
    assert!(out.contains("5 cached here already"), "{out}");
}

#[test]
fn run_pull_downloads_what_the_remote_has_and_runs_the_rest() {
    let (a, b) = (Ws::new(), Ws::new());
    let shared = tempfile::tempdir().unwrap();
    let remote = shared.path().join("r");
    let env = [("DAGRUN_REMOTE", remote.to_str().unwrap())];
    // A has run (and pushed as it ran) only the upstream part.
    a.write("p.yaml", SHARED);
    let (_, err) = ok_env(&a, &["p.yaml", "--until", "train", "--push"], &env);
    assert_eq!(
        executed(&err),
        set(&["prepare", "train[seed=0]", "train[seed=1]"])
    );
    assert!(
        err.contains("remote ") && err.contains("pushed 3 nodes"),
        "{err}"
    );
    b.write("p.yaml", SHARED);
    let (_, err) = ok_env(&b, &["p.yaml", "--pull"], &env);
    assert_eq!(
        executed(&err),
        set(&["theory", "report"]),
        "what the remote lacks runs: {err}"
    );
    assert!(err.contains("pulled 3 nodes"), "{err}");
    assert!(all_cached(&b));
    assert_eq!(b.read("model-1/weights.txt"), "hello\n");
    // `--remote` without --pull/--push is a usage error.
    let o = b.dagrun(&["p.yaml", "--remote", "/x"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}

#[test]
fn a_corrupt_or_missing_remote_object_is_named_and_nothing_is_taken_from_it() {
    let (a, b) = (Ws::new(), Ws::new());
    let shared = tempfile::tempdir().unwrap();
    let remote = shared.path().join("r");
    let url = remote.to_str().unwrap();
    a.write("p.yaml", SHARED);
    a.run(&["p.yaml"]);
    a.ok(&["cache", "push", "p.yaml", "--remote", url]);
    // The largest object is big.bin (prepare's): flip its bytes, same length.
    let big = remote_objects(&remote).remove(0);
    let name = object_name(&big);
    let mut bytes = std::fs::read(&big).unwrap();
    assert_eq!(bytes.len(), 100_000);
    bytes[5000] ^= 1;
    std::fs::write(&big, &bytes).unwrap();
    b.write("p.yaml", SHARED);
    let err = fails(&b, &["cache", "pull", "p.yaml", "--remote", url], &[]);
    assert!(
        err.contains(&format!("object `{name}` is corrupt or truncated")),
        "{err}"
    );
    assert!(err.contains("`prepare`"), "{err}");
    // Nothing of prepare was taken (nor what depends on it); the rest was.
    let s = states(&b, "p.yaml");
    assert_eq!(s["prepare"], "stale", "{s:?}");
    assert_eq!(s["theory"], "cached", "{s:?}");
    assert!(!b.p("big.bin").exists());
    // Truncated: the same.
    std::fs::write(&big, &bytes[..50_000]).unwrap();
    let err = fails(&b, &["cache", "pull", "p.yaml", "--remote", url], &[]);
    assert!(
        err.contains(&format!("object `{name}` is corrupt or truncated")),
        "{err}"
    );
    // Missing.
    std::fs::remove_file(&big).unwrap();
    let err = fails(&b, &["cache", "pull", "p.yaml", "--remote", url], &[]);
    assert!(
        err.contains(&format!("object `{name}` is missing")),
        "{err}"
    );
    assert_eq!(states(&b, "p.yaml")["prepare"], "stale");
    // `run --pull` runs the node instead, with a warning naming the object.
    let (_, err) = ok_env(&b, &["p.yaml", "--pull", "--remote", url], &[]);
    assert!(executed(&err).contains("prepare"), "{err}");
    assert!(
        err.contains(&format!("object `{name}` is missing")),
        "{err}"
    );
    same_outputs(&a, &b);
    // A push repairs the remote: the object is missing there, so it goes up again.
    a.ok(&["cache", "push", "p.yaml", "--remote", url]);
    assert!(
        !big.exists(),
        "records present: their objects are not looked at again"
    );
}

#[test]
fn a_local_object_that_does_not_match_its_name_is_not_uploaded() {
    let a = Ws::new();
    let shared = tempfile::tempdir().unwrap();
    let remote = shared.path().join("r");
    let url = remote.to_str().unwrap();
    a.write("p.yaml", SHARED);
    a.run(&["p.yaml"]);
    // Damage big.bin's object in A's cache.
    let objs = a.p(".dagrun/objects-v1");
    let mut files: Vec<PathBuf> = files_under(&objs)
        .into_iter()
        .map(|f| objs.join(f))
        .collect();
    files.sort_by_key(|p| std::cmp::Reverse(std::fs::metadata(p).unwrap().len()));
    let big = &files[0];
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(big, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(big, vec![b'y'; 100_000]).unwrap();
    let err = fails(&a, &["cache", "push", "p.yaml", "--remote", url], &[]);
    assert!(err.contains("does not hash to its name"), "{err}");
    assert!(err.contains("`prepare`"), "{err}");
    assert!(
        !files_under(&remote)
            .iter()
            .any(|f| f.ends_with(&object_name(big)[2..])),
        "the damaged bytes did not go up"
    );
}

/// `SHARED` plus a model folder of 8 × 16 MiB: transfers long enough to interrupt.
fn with_weights() -> String {
    format!(
        "{SHARED}  weights:\n    kind: command\n    cmd: mkdir -p weights && for i in 1 2 3 4 5 6 7 8; do head -c 16777216 /dev/urandom > weights/part-$i.bin; done\n    outs: [weights]\n"
    )
}

/// Kills `child` with SIGKILL once `cond` holds; `false` when it exited first.
fn kill_when(child: &mut Child, what: &str, mut cond: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            eprintln!("note: finished before {what}");
            return false;
        }
        if cond() {
            kill(child.id(), libc::SIGKILL);
            child.wait().unwrap();
            return true;
        }
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Every record on a folder remote names only objects that are there, whole.
fn remote_is_consistent(remote: &Path) {
    let root = remote.join("dagrun-remote-v1");
    for f in files_under(&root.join("records")) {
        let rec: serde_json::Value =
            serde_json::from_slice(&std::fs::read(root.join("records").join(&f)).unwrap()).unwrap();
        let mut hashes = vec![];
        for a in rec["outputs"].as_object().unwrap().values() {
            match a["entries"].as_array() {
                Some(es) => {
                    hashes.extend(es.iter().map(|e| e["hash"].as_str().unwrap().to_string()))
                }
                None => hashes.push(a["hash"].as_str().unwrap().to_string()),
            }
        }
        hashes.extend(rec["log"].as_str().map(str::to_string));
        for h in hashes {
            let p = root.join("objects").join(&h[..2]).join(&h[2..]);
            assert_eq!(
                dagrun_cache_hash(&p).0,
                h,
                "record {f} names {h}: there, whole"
            );
        }
    }
}

#[test]
fn an_interrupted_push_or_pull_leaves_nothing_half_visible_and_resumes() {
    let (a, b) = (Ws::new(), Ws::new());
    let shared = tempfile::tempdir().unwrap();
    let remote = shared.path().join("r");
    let url = remote.to_str().unwrap();
    a.write("p.yaml", &with_weights());
    a.run(&["p.yaml"]);
    // kill -9 while an object is being written (a staged file in the remote folder).
    let mut push = a.spawn(&["cache", "push", "p.yaml", "--remote", url, "-j", "1"]);
    kill_when(&mut push, "a staged upload", || {
        files_under(&remote).iter().any(|f| f.contains('#'))
    });
    remote_is_consistent(&remote);
    let (out, _) = a.ok(&["cache", "push", "p.yaml", "--remote", url]);
    assert!(out.starts_with("pushed "), "{out}");
    remote_is_consistent(&remote);
    // A kill during a record's write leaves its `NAME#N` staging file, which no reader
    // looks at (README, "Sharing results"); the records are the other files.
    let records = |r: &std::path::Path| {
        files_under(&r.join("dagrun-remote-v1/records"))
            .into_iter()
            .filter(|f| !f.contains('#'))
            .count()
    };
    assert_eq!(records(&remote), 6);

    // kill -9 during a pull: what B's cache holds is whole; the next pull resumes.
    b.write("p.yaml", &with_weights());
    let mut pull = b.spawn(&["cache", "pull", "p.yaml", "--remote", url, "-j", "1"]);
    let tmp = b.p(".dagrun/tmp");
    let killed = kill_when(&mut pull, "a download in progress", || {
        files_under(&tmp)
            .iter()
            .any(|f| std::fs::metadata(tmp.join(f)).is_ok_and(|m| m.len() > 0))
    });
    if killed {
        assert_eq!(
            states(&b, "p.yaml")["weights"],
            "stale",
            "nothing half-visible"
        );
    }
    let (out, _) = b.ok(&["cache", "verify"]);
    assert!(out.contains("no corruption"), "{out}");
    let (out, _) = b.ok(&["cache", "pull", "p.yaml", "--remote", url]);
    assert!(out.starts_with("pulled "), "{out}");
    assert!(all_cached(&b));
    assert!(b.run(&["p.yaml"]).is_empty());
    for i in 1..=8 {
        let f = format!("weights/part-{i}.bin");
        assert!(
            std::fs::read(a.p(&f)).unwrap() == std::fs::read(b.p(&f)).unwrap(),
            "{f}"
        );
    }
}

/// Two workspaces that ran the same pipeline push to one remote at the same time.
fn concurrent_pushes(url: &str, envs: &[(&str, &str)]) {
    let (a1, a2, b) = (Ws::new(), Ws::new(), Ws::new());
    // `stamp` is not deterministic: both runs have a record under its key, with
    // different outputs.
    let pipeline = format!(
        "{SHARED}  stamp:\n    kind: command\n    cmd: date +%s%N > stamp.txt\n    outs: [stamp.txt]\n"
    );
    for ws in [&a1, &a2] {
        ws.write("p.yaml", &pipeline);
        ws.run(&["p.yaml"]);
    }
    assert_eq!(keys(&a1, "p.yaml"), keys(&a2, "p.yaml"));
    assert_ne!(a1.read("stamp.txt"), a2.read("stamp.txt"));
    let spawn = |ws: &Ws| -> Child {
        let mut c = ws.cmd(&["cache", "push", "p.yaml", "--remote", url]);
        c.envs(envs.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c.spawn().unwrap()
    };
    let (p1, p2) = (spawn(&a1), spawn(&a2));
    let (o1, o2) = (
        p1.wait_with_output().unwrap(),
        p2.wait_with_output().unwrap(),
    );
    assert!(o1.status.success(), "{}", text(&o1));
    assert!(o2.status.success(), "{}", text(&o2));
    // Each record went up once; the two stamps were reported, by whichever push came
    // second (or by both, if each saw the other's record first).
    let both = format!("{}{}", text(&o1), text(&o2));
    assert!(
        both.contains("`stamp`") && both.contains("different outputs"),
        "{both}"
    );
    b.write("p.yaml", &pipeline);
    ok_env(&b, &["cache", "pull", "p.yaml", "--remote", url], envs);
    assert!(b.run(&["p.yaml"]).is_empty());
    same_outputs(&a1, &b);
    let stamp = b.read("stamp.txt");
    assert!(stamp == a1.read("stamp.txt") || stamp == a2.read("stamp.txt"));
    // A workspace whose own record of `stamp` differs keeps it: a pull does not ask the
    // remote for keys cached here, and a push of it says that the remote differs.
    let mine = if stamp == a1.read("stamp.txt") {
        &a2
    } else {
        &a1
    };
    let before = mine.read("stamp.txt");
    let (out, _) = ok_env(mine, &["cache", "pull", "p.yaml", "--remote", url], envs);
    assert!(out.contains("6 cached here already"), "{out}");
    assert!(mine.run(&["p.yaml"]).is_empty());
    assert_eq!(mine.read("stamp.txt"), before, "the local record stays");
    let (_, err) = ok_env(mine, &["cache", "push", "p.yaml", "--remote", url], envs);
    assert!(
        err.contains("`stamp`")
            && err.contains("the remote record of this key has different outputs"),
        "{err}"
    );
}

#[test]
fn concurrent_pushes_to_a_folder_leave_one_record_per_key() {
    let shared = tempfile::tempdir().unwrap();
    let remote = shared.path().join("r");
    concurrent_pushes(remote.to_str().unwrap(), &[]);
    let records = files_under(&remote.join("dagrun-remote-v1/records"));
    assert_eq!(records.len(), 6, "{records:?}");
}

#[test]
fn a_bad_remote_is_an_error_pointing_at_it() {
    let ws = Ws::new();
    ws.write(
        "p.yaml",
        "params: {}\nremote: ftp://x/y\nstages:\n  a:\n    kind: command\n    cmd: echo a > a.txt\n    outs: [a.txt]\n",
    );
    let o = ws.dagrun(&["cache", "pull", "p.yaml"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("p.yaml:2:9: `remote`: remote `ftp://x/y`: unsupported scheme `ftp` ("),
        "{}",
        text(&o)
    );
    ws.write("q.yaml", SHARED);
    let o = ws.dagrun(&["cache", "pull", "q.yaml"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o).contains("no remote cache for `q.yaml`"),
        "{}",
        text(&o)
    );
    let o = ws.dagrun(&["cache", "pull", "q.yaml", "--remote", "/does/not/exist"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("no such folder"), "{}", text(&o));
    // Nothing to push from a workspace that never ran.
    let o = ws.dagrun(&["cache", "push", "q.yaml", "--remote", "/tmp/x"]);
    assert!(text(&o).contains("no cache here yet"), "{}", text(&o));
}

// ---- against a real S3 server ------------------------------------------------------

/// The S3 server of `ci/s3/start.sh`: its endpoint and bucket, when one answers.
struct S3 {
    endpoint: String,
    bucket: String,
}

fn s3() -> Option<S3> {
    let required = std::env::var("DAGRUN_S3_TESTS").is_ok_and(|v| v == "1");
    let endpoint = std::env::var("AWS_ENDPOINT_URL").ok();
    let bucket = std::env::var("DAGRUN_S3_BUCKET").ok();
    let up = match (&endpoint, &bucket) {
        (Some(e), Some(_)) => http(e, "GET", "/", b"").is_some(),
        _ => false,
    };
    assert!(
        up || !required,
        "DAGRUN_S3_TESTS=1 but no S3 server answers (eval \"$(ci/s3/start.sh)\" starts one)"
    );
    if !up {
        eprintln!("skipped: no S3 server here (eval \"$(ci/s3/start.sh)\" starts one)");
        return None;
    }
    Some(S3 {
        endpoint: endpoint.unwrap(),
        bucket: bucket.unwrap(),
    })
}

impl S3 {
    /// A URL under a prefix of this test's own.
    fn url(&self, test: &str) -> String {
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        format!("s3://{}/{test}-{}-{nonce}", self.bucket, std::process::id())
    }
}

/// One plain HTTP request; the status and body. moto does not check signatures, but it
/// treats a request without credentials as anonymous (and refuses anonymous writes).
fn http(endpoint: &str, method: &str, path: &str, body: &[u8]) -> Option<(u16, Vec<u8>)> {
    let host = endpoint.trim_start_matches("http://").trim_end_matches('/');
    let mut s = TcpStream::connect(host).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\nConnection: close\r\n\
         Authorization: AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/s3/aws4_request, \
         SignedHeaders=host, Signature=0\r\n\r\n",
        body.len()
    )
    .ok()?;
    s.write_all(body).ok()?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).ok()?;
    let head_end = resp.windows(4).position(|w| w == b"\r\n\r\n")?;
    let status = std::str::from_utf8(&resp[..head_end])
        .ok()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some((status, resp[head_end + 4..].to_vec()))
}

#[test]
fn s3_two_workspaces_push_and_pull() {
    let Some(s3) = s3() else { return };
    let url = s3.url("two-workspaces");
    let (a, b) = (Ws::new(), Ws::new());
    a.write("p.yaml", SHARED);
    // A runs and pushes as it runs.
    let (_, err) = ok_env(&a, &["p.yaml", "--push"], &[("DAGRUN_REMOTE", &url)]);
    assert_eq!(executed(&err), all_nodes());
    assert!(err.contains("pushed 5 nodes"), "{err}");
    // B, a fresh copy elsewhere: pull, then a run computes nothing.
    b.write("p.yaml", SHARED);
    let (out, _) = b.ok(&["cache", "pull", "p.yaml", "--remote", &url]);
    assert!(out.starts_with("pulled 5 nodes ("), "{out}");
    assert!(out.contains(&url), "{out}");
    assert!(all_cached(&b));
    assert!(b.run(&["p.yaml"]).is_empty());
    same_outputs(&a, &b);
    // The objects on the server are named by their blake3.
    let (status, body) = http(
        &s3.endpoint,
        "GET",
        &format!(
            "/{}?list-type=2&prefix={}/dagrun-remote-v1/",
            s3.bucket,
            url.rsplit('/').next().unwrap()
        ),
        b"",
    )
    .unwrap();
    assert_eq!(status, 200);
    let listing = String::from_utf8_lossy(&body);
    assert_eq!(listing.matches("/records/").count(), 5, "{listing}");
    // `run --pull` in a third workspace: nothing runs either.
    let c = Ws::new();
    c.write("p.yaml", SHARED);
    let (_, err) = ok_env(&c, &["p.yaml", "--pull"], &[("DAGRUN_REMOTE", &url)]);
    assert!(executed(&err).is_empty(), "{err}");
    assert!(err.contains("pulled 5 nodes"), "{err}");
    same_outputs(&a, &c);
}

#[test]
fn s3_a_corrupt_object_is_named_and_not_taken() {
    let Some(s3) = s3() else { return };
    let url = s3.url("corrupt");
    let (a, b) = (Ws::new(), Ws::new());
    a.write("p.yaml", SHARED);
    a.run(&["p.yaml"]);
    a.ok(&["cache", "push", "p.yaml", "--remote", &url]);
    // Overwrite big.bin's object on the server with other bytes.
    let big = blake3_hex(&std::fs::read(a.p("big.bin")).unwrap());
    let prefix = url.trim_start_matches("s3://");
    let path = format!(
        "/{prefix}/dagrun-remote-v1/objects/{}/{}",
        &big[..2],
        &big[2..]
    );
    assert_eq!(
        http(&s3.endpoint, "PUT", &path, &vec![b'z'; 100_000])
            .unwrap()
            .0,
        200
    );
    b.write("p.yaml", SHARED);
    let err = fails(&b, &["cache", "pull", "p.yaml", "--remote", &url], &[]);
    assert!(
        err.contains(&format!("object `{big}` is corrupt or truncated")),
        "{err}"
    );
    assert_eq!(states(&b, "p.yaml")["prepare"], "stale");
    // Missing.
    assert!(http(&s3.endpoint, "DELETE", &path, b"").unwrap().0 < 300);
    let err = fails(&b, &["cache", "pull", "p.yaml", "--remote", &url], &[]);
    assert!(err.contains(&format!("object `{big}` is missing")), "{err}");
    assert_eq!(states(&b, "p.yaml")["prepare"], "stale");
}

#[test]
fn s3_concurrent_pushes_leave_one_record_per_key() {
    let Some(s3) = s3() else { return };
    concurrent_pushes(&s3.url("concurrent"), &[]);
}

/// A moto server of this test's own, on a free port, that the test may stop.
struct OwnServer {
    child: Child,
    endpoint: String,
}

impl OwnServer {
    fn start(port: u16) -> Option<OwnServer> {
        let bin = std::env::var("DAGRUN_S3_SERVER").ok()?;
        let child = Command::new(bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let endpoint = format!("http://127.0.0.1:{port}");
        let t = Instant::now();
        while http(&endpoint, "GET", "/", b"").is_none() {
            if t.elapsed() > Duration::from_secs(30) {
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(http(&endpoint, "PUT", "/faults", b"").unwrap().0, 200);
        Some(OwnServer { child, endpoint })
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn s3_server_stopped_mid_transfer() {
    let Some(_) = s3() else { return };
    let port = free_port();
    let Some(mut server) = OwnServer::start(port) else {
        assert!(
            std::env::var("DAGRUN_S3_TESTS").as_deref() != Ok("1"),
            "DAGRUN_S3_TESTS=1 but DAGRUN_S3_SERVER cannot start a server of this test's own"
        );
        eprintln!("skipped: DAGRUN_S3_SERVER cannot start a server (ci/s3/start.sh sets it)");
        return;
    };
    let endpoint = server.endpoint.clone();
    let env = [("AWS_ENDPOINT_URL", endpoint.as_str())];
    let url = "s3://faults/p";
    let (a, b) = (Ws::new(), Ws::new());
    a.write("p.yaml", &with_weights());
    a.run(&["p.yaml"]);

    // Push: stop the server once a multipart upload has begun.
    let spawn = |ws: &Ws, args: &[&str]| {
        let mut c = ws.cmd(args);
        c.envs(env).stdout(Stdio::piped()).stderr(Stdio::piped());
        c.spawn().unwrap()
    };
    let push = spawn(&a, &["cache", "push", "p.yaml", "--remote", url, "-j", "2"]);
    wait_until("a multipart upload", Duration::from_secs(60), || {
        http(&endpoint, "GET", "/faults?uploads", b"")
            .is_some_and(|(_, b)| String::from_utf8_lossy(&b).contains("<UploadId>"))
    });
    server.stop();
    let t = Instant::now();
    let o = push.wait_with_output().unwrap();
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        t.elapsed() < Duration::from_secs(120),
        "a dead server fails the push soon"
    );
    assert!(
        text(&o).contains(&format!("remote `{url}`")),
        "{:?}: {}",
        o.status,
        text(&o)
    );

    // A new server (empty): the push runs again in full, and B pulls from it.
    let mut server = OwnServer::start(port).expect("restart");
    let (out, _) = ok_env(&a, &["cache", "push", "p.yaml", "--remote", url], &env);
    assert!(out.starts_with("pushed 6 nodes"), "{out}");
    b.write("p.yaml", &with_weights());
    // Pull: stop the server while an object of the model folder streams in.
    let pull = spawn(&b, &["cache", "pull", "p.yaml", "--remote", url, "-j", "1"]);
    let tmp = b.p(".dagrun/tmp");
    wait_until("a download in progress", Duration::from_secs(60), || {
        files_under(&tmp)
            .iter()
            .any(|f| std::fs::metadata(tmp.join(f)).is_ok_and(|m| m.len() > 1 << 20))
    });
    server.stop();
    let o = pull.wait_with_output().unwrap();
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains(&format!("remote `{url}`")),
        "{}",
        text(&o)
    );
    assert_eq!(
        states(&b, "p.yaml")["weights"],
        "stale",
        "nothing half-visible"
    );
    let (out, _) = b.ok(&["cache", "verify"]);
    assert!(out.contains("no corruption"), "{out}");
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn blake3_hex(b: &[u8]) -> String {
    blake3::hash(b).to_hex().to_string()
}

/// A file's blake3 (hex) and size.
fn dagrun_cache_hash(p: &Path) -> (String, u64) {
    let b = std::fs::read(p).unwrap();
    (blake3_hex(&b), b.len() as u64)
}
