//! The artifact store behind dagrun: a sled index plus content-addressed files.
//!
//! This crate knows nothing of pipelines. It stores *records* (what one execution of a
//! node produced, keyed by the node's fingerprint) and *objects* (the bytes of the
//! artifacts, named by their blake3 hash).
//!
//! Key types:
//! - [`Cache`]: an open store, holding the exclusive [`lock::CacheLock`] of its folder.
//! - [`Hash`]: a blake3 digest, printed as 64 hex digits.
//! - [`Artifact`]: the manifest of one output (a file or a directory tree of files).
//! - [`Record`]: the committed result of one node execution.
//!
//! Layout of a cache folder (every namespace carries a version so that a schema change
//! leaves old data behind instead of misreading it):
//!
//! | path              | what                                                        |
//! |-------------------|-------------------------------------------------------------|
//! | `lock`            | lock file; holds the pid and command of the current holder  |
//! | `db/`             | sled: trees `records-v1`, `latest-v1`, `blobs-v1`, `stat-v1`, `runs-v1`, `claims-v1`, `failures-v1` |
//! | `objects-v1/ab/…` | large artifacts, named by blake3, read-only                 |
//! | `tmp/`            | files being written; emptied whenever the cache is opened   |
//! | `scratch/<key>/`  | per-node scratch folders that survive an interruption       |
//! | `logs/`           | logs of failed nodes (failed nodes have no record)          |
//! | `groups/`         | process groups of running commands ([`procs`]): killed on the next open if their dagrun died |
//!
//! Invariants:
//! - An object is visible under its name only once its bytes are durable (temp file,
//!   fsync, rename, fsync of the folder).
//! - A record is inserted only after every object it names is durable, and the index is
//!   flushed before the commit returns: an interrupted node leaves nothing visible.

mod artifact;
mod confined;
#[cfg(test)]
mod damage_tests;
mod error;
pub mod failpoint;
mod hash;
pub mod lock;
mod objects;
pub mod procs;
mod record;
mod restore;
mod seal;
pub mod stamp;
mod stat;
mod store;
mod sync;

pub use artifact::{Artifact, ArtifactEntry, ArtifactType};
pub use confined::{Confined, Entry};
pub use error::{Error, Result};
pub use hash::{hash_bytes, hash_file, Hash, Hasher};
pub use objects::{is_restore_temp, SMALL_OBJECT_LIMIT};
pub use record::{Latest, Metrics, NodeFailure, Record, RecordHead, RunCounts, RunSummary, Timing};
pub use restore::ExportReport;
pub use seal::IndexDamage;
pub use stat::FileStat;
pub use store::{Cache, GcReport, Imported, OpenOptions, VerifyReport};
pub use sync::RemoteHooks;
