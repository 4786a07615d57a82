//! [`RemoteHooks`]: what the executor asks of a remote cache while it runs
//! (`dagrun run --pull/--push`). The remote itself (object storage, a shared folder) is
//! the `dagrun-remote` crate; the executor only sees these two calls, so it knows nothing
//! of object storage and the remote nothing of pipelines.

use crate::{Cache, Hash, Record};

/// A remote cache the executor consults. Implementations report their own errors (a
/// remote that fails is a warning for the run, never a failed node) and say at the end
/// what they moved.
pub trait RemoteHooks: Send + Sync + std::fmt::Debug {
    /// Before a stale node with key `key` runs: bring its record and objects from the
    /// remote into `cache`, verified. `true` when `cache` now holds a record under `key`
    /// (the node is cached and restores instead of running).
    fn fetch(&self, cache: &Cache, node: &str, key: &Hash) -> bool;

    /// After a node's record is committed to `cache`: upload it (its objects first,
    /// then the record). Must not wait for the upload; the caller waits for all of
    /// them at the end of the run, while it still holds the cache.
    fn committed(&self, cache: &Cache, record: &Record);
}
