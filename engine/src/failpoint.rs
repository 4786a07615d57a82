//! Failpoints for the fault tests: in debug builds (the ones `cargo test` runs), a
//! process started with `DAGRUN_FAILPOINT=NAME` or `NAME:N` aborts on the spot, as
//! `kill -9` would stop it (no unwinding, no flush), the first or the Nth time it passes
//! the point `NAME`. Release builds compile the points away.
//!
//! | point                 | where                                                       |
//! |-----------------------|-------------------------------------------------------------|
//! | `node-finished`       | a node's outputs are ingested, its record not yet queued     |
//! | `commit-insert`       | before each record of a group commit is inserted            |
//! | `commit-before-flush` | the group's records are inserted, the flush not yet made     |
//! | `commit-after-flush`  | a group commit's flush is done, its nodes not yet reported  |

/// Aborts the process if the failpoint `name` is armed and due.
#[inline]
pub fn hit(name: &str) {
    #[cfg(debug_assertions)]
    armed::hit(name);
    #[cfg(not(debug_assertions))]
    let _ = name;
}

#[cfg(debug_assertions)]
mod armed {
    use std::sync::{atomic::AtomicU64, atomic::Ordering, OnceLock};

    /// The armed point and after how many passes it fires.
    fn armed() -> &'static Option<(String, u64)> {
        static ARMED: OnceLock<Option<(String, u64)>> = OnceLock::new();
        ARMED.get_or_init(|| {
            let v = std::env::var("DAGRUN_FAILPOINT").ok()?;
            match v.split_once(':') {
                Some((n, k)) => Some((n.to_string(), k.parse().ok()?)),
                None => Some((v, 1)),
            }
        })
    }

    static PASSES: AtomicU64 = AtomicU64::new(0);

    pub(super) fn hit(name: &str) {
        if let Some((point, n)) = armed() {
            if point == name && PASSES.fetch_add(1, Ordering::SeqCst) + 1 == *n {
                eprintln!("dagrun: failpoint `{name}` reached: aborting");
                std::process::abort();
            }
        }
    }
}
