use crate::support::*;

#[test]
fn gc_keeps_what_the_pipeline_references() {
    let ws = Ws::new();
    let big = |tag: &str| {
        format!("stages:\n  a:\n    kind: command\n    cmd: head -c 100000 /dev/zero | tr '\\0' '{tag}' > a.bin\n    outs: [a.bin]\n")
    };
    ws.write("p.yaml", &big("x"));
    ws.run(&["p.yaml"]);
    ws.write("p.yaml", &big("y"));
    ws.run(&["p.yaml"]);
    let (out, _) = ws.ok(&["cache", "gc", "p.yaml", "--dry-run"]);
    assert!(out.contains("would remove 1 records"), "{out}");
    let (out, _) = ws.ok(&["cache", "gc", "p.yaml"]);
    assert!(out.contains("removed 1 records"), "{out}");
    assert!(out.contains("97.7 KiB") || out.contains("KiB"), "{out}");
    // What is referenced is still cached.
    assert!(ws.run(&["p.yaml"]).is_empty());
    // The old version must run again.
    ws.write("p.yaml", &big("x"));
    assert_eq!(ws.run(&["p.yaml"]), set(&["a"]));
}

#[test]
fn verify_finds_and_drops_corrupt_artifacts() {
    let ws = Ws::new();
    ws.write("p.yaml", "stages:\n  a:\n    kind: command\n    cmd: head -c 50000 /dev/urandom > a.bin\n    outs: [a.bin]\n");
    ws.run(&["p.yaml"]);
    let (out, _) = ws.ok(&["cache", "verify"]);
    assert!(out.contains("no corruption"), "{out}");
    // Corrupt the stored object.
    let objs = ws.p(".dagrun/objects-v1");
    let shard = std::fs::read_dir(&objs)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let f = std::fs::read_dir(&shard)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    std::fs::write(&f, b"bitrot").unwrap();
    let o = ws.dagrun(&["cache", "verify"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("dropped the record of `a`"),
        "{}",
        text(&o)
    );
    // The node runs again.
    let (out, _) = ws.ok(&["why", "a"]);
    assert!(out.contains("removed from the cache"), "{out}");
    assert_eq!(ws.run(&["p.yaml"]), set(&["a"]));
}
