//! Errors of the engine. A bad pipeline is a [`SpecError`]: it always carries the place
//! (`file:line:col`) and is reported before anything runs or is written.

use std::{fmt, path::PathBuf};

/// A place in a pipeline file, 1-based. A value set on the command line has no line:
/// its `file` is the override as given (`-S params.lr=abc`) and `line` is 0.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Location {
    pub file: PathBuf,
    pub line: usize,
    pub col: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.file.display())
        } else {
            write!(f, "{}:{}:{}", self.file.display(), self.line, self.col)
        }
    }
}

/// A bad pipeline: where, and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{location}: {message}")]
pub struct SpecError {
    pub location: Location,
    pub message: String,
}

impl SpecError {
    pub fn new(location: Location, message: impl Into<String>) -> Self {
        SpecError {
            location,
            message: message.into(),
        }
    }
}

/// Several pipeline errors found in one pass (all are reported, not just the first).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecErrors(pub Vec<SpecError>);

impl fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SpecErrors {}

impl From<SpecError> for SpecErrors {
    fn from(e: SpecError) -> Self {
        SpecErrors(vec![e])
    }
}

/// Everything that can stop the engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The pipeline is invalid (exit code 2).
    #[error("{0}")]
    Spec(#[from] SpecErrors),
    /// The request is invalid: an unknown node in `--rerun`, say (exit code 2).
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Cache(#[from] dagrun_cache::Error),
    #[error("{context} `{path}`: {source}")]
    Io {
        context: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub fn io(
        context: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io {
            context,
            path,
            source,
        }
    }

    /// Whether this is the user's input that is wrong (exit code 2) rather than a failure.
    pub fn is_usage(&self) -> bool {
        matches!(self, Error::Spec(_) | Error::Usage(_))
    }

    /// Another dagrun holds the cache.
    pub fn is_busy(&self) -> bool {
        matches!(self, Error::Cache(dagrun_cache::Error::Locked { .. }))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
