//! The dagrun engine: pipelines as content-hashed DAGs, planned and run incrementally.
//!
//! The map, in the order data flows:
//! - [`spec`]: the YAML file as written (serde types); [`locate`] finds `file:line:col`.
//! - [`pipeline::Pipeline`]: the checked graph — matrix sweeps expanded into [`pipeline::Node`]s,
//!   `${...}` references resolved ([`interp`], [`selector`]), edges from `needs`,
//!   references and files, cycles refused.
//! - [`fingerprint::KeyComponents`]: what a node's key is computed from.
//! - [`plan::Evaluator`]: a node's [`plan::State`] (cached / stale / forced / blocked /
//!   missing) and its [`reason::Reason`]s; the dry run and the executor share it.
//! - [`run::run`]: the executor's drain loop (`--jobs`, resources, early cutoff), over
//!   [`sched::Schedule`] (its bookkeeping as named steps, testable without processes),
//!   [`exec::execute`] (one node into a record) and [`commit::committer`] (group commit
//!   in dependency order, off the critical path).
//! - [`invoke::invoke`]: the one way a stage runs, here or in a Slurm job.
//! - [`variants`]: every cached variant of a pipeline's nodes with its params and
//!   metrics (`dagrun metrics`).
//! - [`slurm`]: nodes with `executor: slurm` as Slurm jobs (arrays, bulk polling, retries);
//!   [`job`]: the job files on the shared filesystem and the worker that compute nodes run.
//! - [`stage::StageKind`]: the interface stage kinds implement; [`stage::StageContext`] is
//!   what a running node gets.
//!
//! The engine knows nothing of machine learning and nothing of the command line.

pub mod commit;
pub mod error;
pub mod exec;
pub(crate) use dagrun_cache::failpoint;
pub mod fingerprint;
pub mod interp;
pub mod invoke;
pub mod job;
pub mod locate;
pub mod noop;
pub mod pipeline;
pub mod plan;
pub mod reason;
pub mod run;
pub mod sched;
pub mod selector;
pub mod slurm;
pub mod spec;
pub mod stage;
pub mod variants;
pub mod workspace;

pub use error::{Error, Location, Result, SpecError, SpecErrors};
pub use pipeline::Pipeline;

/// The engine version written into every record.
pub const ENGINE_VERSION: &str = env!("CARGO_PKG_VERSION");
