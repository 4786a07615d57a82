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
    #[error("object `{0}` is missing from the cache")]
    MissingObject(String),
    /// An object whose bytes no longer match its name (flipped or truncated on disk).
    #[error("object `{hash}` is damaged: {detail}")]
    DamagedObject { hash: String, detail: String },
    /// A path that would be reached through a symbolic link ([`crate::Confined`]).
    #[error(
        "`{path}` lies behind the symbolic link `{link}` (to `{target}`): dagrun never writes, \
         replaces or deletes anything through a link; replace the link with a folder"
    )]
    ThroughLink {
        path: PathBuf,
        link: PathBuf,
        target: PathBuf,
    },
    /// `export` found files in the way (nothing was written).
    #[error("nothing exported:\n  {}", .0.join("\n  "))]
    ExportConflict(Vec<String>),
    /// A file (or something else) where a path needs a folder.
    #[error("`{path}` is in the way: `{blocker}` is not a folder")]
    NotAFolder { path: PathBuf, blocker: PathBuf },
    #[error("`{0}` is not a valid blake3 hash")]
    BadHash(String),
    #[error("unsupported file type at `{0}` (only regular files and directories are stored)")]
    Unsupported(PathBuf),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The object this error found missing or damaged: the cache then treats whatever
    /// used it as not cached.
    pub fn damaged_object(&self) -> Option<crate::Hash> {
        match self {
            Error::MissingObject(h) | Error::DamagedObject { hash: h, .. } => h.parse().ok(),
            _ => None,
        }
    }

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
