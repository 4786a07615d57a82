/// Errors of the remote cache. Each names the remote (its URL as the user gave it) and
/// the record or object concerned.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("remote {0}")]
    BadLocation(String),
    #[error("remote `{url}`: {detail}")]
    Config { url: String, detail: String },
    #[error("remote `{url}`: cannot {op} `{path}`: {source}")]
    Store {
        url: String,
        op: &'static str,
        path: String,
        #[source]
        source: Box<object_store::Error>,
    },
    #[error(
        "remote `{url}`: object `{object}` is corrupt or truncated: its {size} bytes hash \
         to `{got}`; nothing was taken from it"
    )]
    CorruptObject {
        url: String,
        object: String,
        got: String,
        size: u64,
    },
    #[error(
        "remote `{url}`: object `{object}` is missing (a record names it); nothing was \
         taken from the record"
    )]
    MissingObject { url: String, object: String },
    #[error("remote `{url}`: record `{key}` is not valid: {detail}; nothing was taken from it")]
    BadRecord {
        url: String,
        key: String,
        detail: String,
    },
    #[error(
        "local object `{object}` does not hash to its name (it hashes to `{got}`): not \
         uploaded; `dagrun cache verify` drops it and the records that use it"
    )]
    CorruptLocal { object: String, got: String },
    #[error("{context} `{path}`: {source}")]
    Io {
        context: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Cache(#[from] dagrun_cache::Error),
    #[error("not attempted: an earlier transfer to the remote failed")]
    Stopped,
    /// One error that several records share (they waited for the same object).
    #[error(transparent)]
    Shared(std::sync::Arc<Error>),
}

impl Error {
    /// Whether the remote itself failed (unreachable, refused, an I/O error on its
    /// folder), as opposed to one bad record or object: further transfers are pointless.
    pub fn is_remote_down(&self) -> bool {
        match self {
            Error::Store { source, .. } => !matches!(
                source.as_ref(),
                object_store::Error::NotFound { .. }
                    | object_store::Error::AlreadyExists { .. }
                    | object_store::Error::Precondition { .. }
            ),
            Error::Shared(e) => e.is_remote_down(),
            _ => false,
        }
    }

    pub(crate) fn io(
        context: &'static str,
        path: &std::path::Path,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.display().to_string();
        move |source| Error::Io {
            context,
            path,
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
