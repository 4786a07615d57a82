//! What verifying restores costs: restoring a large artifact with verification
//! (`Cache::restore_output`: the kernel copies, then blake3 reads the copy back), against
//! the copy a restore made before verification (`std::fs::copy` of the object file, which
//! uses `copy_file_range`), and blake3 over the file alone. A benchmark, not a test; the
//! numbers go in docs/benchmarks.md.
//!
//!   cargo run --release -p dagrun-cache --example bench_restore -- [MiB] [reps] [dir]
//!
//! Defaults: 1024 MiB, 5 timed repetitions (after one warm-up), a temp folder in
//! $TMPDIR. Files are in the page cache (just written and read): the figures are the
//! CPU and memory-bandwidth cost, which is what verification adds.

use std::{
    io::Write,
    path::Path,
    time::{Duration, Instant},
};

use dagrun_cache::{ArtifactType, Cache, OpenOptions};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time(reps: usize, mut f: impl FnMut()) -> Duration {
    f();
    median(
        (0..reps)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed()
            })
            .collect(),
    )
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mib: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1024);
    let reps: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(5);
    let tmp = match args.get(3) {
        Some(d) => tempfile::tempdir_in(d),
        None => tempfile::tempdir(),
    }
    .expect("temp folder");
    let ws = tmp.path();
    let src = ws.join("src.bin");
    {
        // Incompressible bytes (xorshift), written in 1 MiB blocks.
        let mut f = std::io::BufWriter::new(std::fs::File::create(&src).unwrap());
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut block = vec![0u8; 1 << 20];
        for _ in 0..mib {
            for chunk in block.chunks_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                chunk.copy_from_slice(&x.to_le_bytes());
            }
            f.write_all(&block).unwrap();
        }
    }
    let cache = Cache::open(
        &ws.join(".dagrun"),
        &OpenOptions {
            wait: false,
            holder: "bench".into(),
        },
        &|_| {},
    )
    .unwrap();
    let art = cache.ingest(&src, ArtifactType::File).unwrap();
    let hex = art.hash.to_hex();
    let object = ws
        .join(".dagrun/objects-v1")
        .join(&hex[..2])
        .join(&hex[2..]);
    let dest = ws.join("out.bin");
    let plain = time(reps, || {
        let _ = std::fs::remove_file(&dest);
        std::fs::copy(&object, &dest).unwrap();
    });
    let verified = time(reps, || {
        let _ = std::fs::remove_file(&dest);
        cache.restore_output(&art, ws, "out.bin").unwrap();
    });
    let hash_only = time(reps, || {
        dagrun_cache::hash_file(Path::new(&object)).unwrap();
    });
    let gbs = |d: Duration| mib as f64 / 1024.0 / d.as_secs_f64();
    println!("artifact: {mib} MiB, median of {reps} (after a warm-up)");
    println!(
        "  copy without verification (std::fs::copy): {:>8.3} s  {:>6.2} GiB/s",
        plain.as_secs_f64(),
        gbs(plain)
    );
    println!(
        "  verified restore (restore_output):         {:>8.3} s  {:>6.2} GiB/s",
        verified.as_secs_f64(),
        gbs(verified)
    );
    println!(
        "  blake3 of the object alone (hash_file):    {:>8.3} s  {:>6.2} GiB/s",
        hash_only.as_secs_f64(),
        gbs(hash_only)
    );
}
