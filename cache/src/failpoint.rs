//! Failpoints for the crash and fault tests, one mechanism for every crate: in debug
//! builds (the ones `cargo test` runs), a process started with `DAGRUN_FAILPOINT=NAME`
//! or `NAME:N` aborts on the spot, as `kill -9` would stop it (no unwinding, no flush),
//! the first or the N-th time it passes the point `NAME`. Release builds compile the
//! points away. The engine uses this module (`dagrun_cache::failpoint`).
//!
//! | point                   | where                                                     |
//! |-------------------------|-----------------------------------------------------------|
//! | `node-finished`         | engine: a node's outputs are ingested, its record not yet queued |
//! | `commit-insert`         | engine: before each record of a group commit is inserted  |
//! | `commit-before-flush`   | engine: the group's records are inserted, not yet flushed |
//! | `commit-after-flush`    | engine: a group's flush is done, its nodes not yet reported |
//! | `restore-before-rename` | cache: a restored output is written and checked, not yet in place |
//! | `gc-records-removed`    | cache: `gc`'s record removals are durable, no object deleted yet |
//! | `gc-object-removed`     | cache: after each object `gc` deletes                     |

/// The environment variable that arms a failpoint.
pub const ENV: &str = "DAGRUN_FAILPOINT";

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
    use std::sync::{
        atomic::{AtomicU64, Ordering},
        OnceLock,
    };

    /// The armed point and after how many passes it fires.
    fn armed() -> &'static Option<(String, u64)> {
        static ARMED: OnceLock<Option<(String, u64)>> = OnceLock::new();
        ARMED.get_or_init(|| {
            let v = std::env::var(super::ENV).ok()?;
            match v.rsplit_once(':') {
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
