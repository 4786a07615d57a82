//! dagrun's remote cache: the records and objects of a local cache pushed to, and pulled
//! from, a place a team shares — a folder (a shared filesystem) or object storage
//! (S3 and S3-compatible servers; Google Cloud Storage and Azure through the same
//! interface).
//!
//! This crate knows nothing of pipelines: it moves [`Record`]s by key and objects by
//! blake3, between an open [`Cache`] and a [`Remote`]. Which keys a pipeline needs is
//! the caller's business (the binary's `cache push/pull`), and so is checking that a
//! record's key components hash to its key (a `check` the caller hands in).
//!
//! Map:
//! - [`location`]: a remote's URL or folder → [`location::Location`].
//! - [`aws`]: S3 settings from the environment and the AWS shared files.
//! - [`store`]: [`Remote`] — the connection (object_store on a tokio runtime of its own),
//!   one record or object at a time, every object checked against its name.
//! - [`transfer`]: many at a time — [`Remote::push`], [`Remote::pull`], their
//!   [`Stats`] and per-node outcomes.
//! - [`hooks`]: [`RunSync`], the `--pull`/`--push` of `dagrun run` behind the
//!   executor's [`dagrun_cache::RemoteHooks`].
//!
//! # Remote layout (`dagrun-remote-v1`)
//!
//! Under the remote's prefix (`s3://bucket/PREFIX`, or the folder):
//!
//! | path                                   | what                                          |
//! |----------------------------------------|-----------------------------------------------|
//! | `dagrun-remote-v1/objects/ab/cdef…`     | an object: bytes whose blake3 is `abcdef…` (64 hex digits, split after 2) |
//! | `dagrun-remote-v1/records/<key>.json`  | a record: the JSON of a [`Record`] whose `key` is `<key>` |
//!
//! The version is in the namespace: a change of either format writes `dagrun-remote-v2/`
//! beside it, and old clients neither read nor damage it.
//!
//! # Invariants
//!
//! - **Verified on the way in and out.** An object's bytes are hashed while they stream,
//!   in both directions; an upload whose local bytes do not hash to the name is aborted,
//!   a download that does not is an error naming the object, and nothing is stored from
//!   it. A record's manifest (tree hashes, sizes, relative paths) is checked before it is
//!   used, and the caller's `check` ties its key to its components.
//! - **Records last.** A record is uploaded only after every object it names is on the
//!   remote, and imported into the local cache only after every object it names is
//!   stored there: a reader that sees a record finds its objects.
//! - **Nothing half-visible.** Objects are written whole (a single PUT, or a multipart
//!   upload completed only after every part; a folder's temp file renamed into place);
//!   an interrupted transfer leaves nothing under a final name, and running it again
//!   skips what arrived.
//! - **First record wins.** Records are created with a conditional put (`If-None-Match`
//!   on S3, a hard link on a folder): two machines pushing the same key at once leave
//!   one record, and a record is never replaced — neither on the remote nor in the local
//!   cache. When the two differ in their outputs it is reported (a non-deterministic
//!   node, or a bug), and the first stays.
//!
//! [`Record`]: dagrun_cache::Record
//! [`Cache`]: dagrun_cache::Cache

pub mod aws;
mod error;
pub mod hooks;
pub mod location;
pub mod store;
pub mod transfer;

pub use error::{Error, Result};
pub use hooks::{RecordCheck, RunSync, SyncReport};
pub use location::Location;
pub use store::{Remote, RemoteOptions, LAYOUT};
pub use transfer::{NodeOutcome, PushItem, Stats, TransferReport};
