//! Named crash points for the crash tests: `DAGRUN_CRASH_AT=NAME` (or `NAME:N`, the N-th
//! time the point is reached, 1 by default) makes the process abort there, the way
//! `kill -9` would stop it (no destructor runs, nothing is flushed). Unset — always,
//! outside the tests — a point costs one load of a cached value.

use std::sync::{
    atomic::{AtomicUsize, Ordering},
    OnceLock,
};

/// The environment variable naming the crash point.
pub const CRASH_AT_ENV: &str = "DAGRUN_CRASH_AT";

fn target() -> &'static Option<(String, usize)> {
    static T: OnceLock<Option<(String, usize)>> = OnceLock::new();
    T.get_or_init(|| {
        let v = std::env::var(CRASH_AT_ENV).ok()?;
        let (name, n) = match v.rsplit_once(':') {
            Some((name, n)) => (name.to_string(), n.parse().ok()?),
            None => (v, 1),
        };
        Some((name, n))
    })
}

/// Aborts the process if `name` is the crash point and this is the chosen hit.
pub fn hit(name: &str) {
    static HITS: AtomicUsize = AtomicUsize::new(0);
    if let Some((want, n)) = target() {
        if want == name && HITS.fetch_add(1, Ordering::SeqCst) + 1 == *n {
            eprintln!("dagrun: crashing at `{name}` ({CRASH_AT_ENV})");
            std::process::abort();
        }
    }
}
