use std::path::PathBuf;

/// Errors of the artifact store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{context} `{path}`: {source}")]
    Io {
        context: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cache index `{path}`: {source}")]
    Db {
        path: PathBuf,
        #[source]
        source: sled::Error,
    },
    #[error("the cache `{path}` is in use by {holder}; wait for it to finish or pass --wait")]
    Locked { path: PathBuf, holder: String },
    #[error("corrupt entry in cache tree `{tree}`: {detail}")]
    Corrupt { tree: &'static str, detail: String },
    #[error("object `{0}` is missing from the cache")]
    MissingObject(String),
    #[error("`{0}` is not a valid blake3 hash")]
    BadHash(String),
    #[error("unsupported file type at `{0}` (only regular files and directories are stored)")]
    Unsupported(PathBuf),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(
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
}
