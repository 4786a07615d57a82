//! Errors at the edge, and the exit codes they map to.

use std::process::ExitCode;

/// How the process ends.
#[derive(Debug)]
pub enum Failure {
    /// Bad pipeline or usage: exit 2.
    Usage(anyhow::Error),
    /// A stage failed (the summary was printed): exit 1.
    StageFailed,
    /// Interrupted by Ctrl-C: exit 130.
    Interrupted,
    /// Another dagrun holds the cache (without --wait): exit 3.
    Busy(anyhow::Error),
    /// Anything else (I/O, a corrupt cache): exit 1.
    Other(anyhow::Error),
}

impl Failure {
    pub fn code(&self) -> ExitCode {
        match self {
            Failure::Usage(_) => ExitCode::from(2),
            Failure::StageFailed | Failure::Other(_) => ExitCode::from(1),
            Failure::Interrupted => ExitCode::from(130),
            Failure::Busy(_) => ExitCode::from(3),
        }
    }
}

impl From<dagrun_engine::Error> for Failure {
    fn from(e: dagrun_engine::Error) -> Self {
        if e.is_usage() {
            Failure::Usage(e.into())
        } else if e.is_busy() {
            Failure::Busy(e.into())
        } else {
            Failure::Other(e.into())
        }
    }
}

impl From<dagrun_cache::Error> for Failure {
    fn from(e: dagrun_cache::Error) -> Self {
        dagrun_engine::Error::from(e).into()
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Other(e)
    }
}

pub fn usage(msg: impl std::fmt::Display) -> Failure {
    Failure::Usage(anyhow::anyhow!("{msg}"))
}

pub type CliResult<T = ()> = Result<T, Failure>;
