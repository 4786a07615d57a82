//! The one error type of the theory module.

use std::path::PathBuf;

/// Everything that can go wrong while running or plotting the theory stages.
#[derive(Debug, thiserror::Error)]
pub enum TheoryError {
    /// A parameter is out of its domain; names the field and says why.
    #[error("invalid parameter `{field}`: {reason}")]
    InvalidParam {
        /// The offending field, as spelled in the params (e.g. `variances[2]`).
        field: String,
        /// Why the value is rejected.
        reason: String,
    },
    /// No TrueType font could be found to lay out and draw plot text.
    #[error(
        "no font for plot text: tried {searched}; install `fonts-dejavu-core` \
         or set `DAGRUN_FONT` to a .ttf file"
    )]
    NoFont {
        /// The candidate paths that were tried, comma separated.
        searched: String,
    },
    /// A font file exists but could not be read or parsed.
    #[error("cannot use font `{path}`: {reason}")]
    BadFont {
        /// The font file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// The plot output path has an extension other than `.svg` or `.png`.
    #[error("cannot plot to `{path}`: unknown extension (expected `.svg` or `.png`)")]
    PlotFormat {
        /// The requested output path.
        path: PathBuf,
    },
    /// The drawing backend failed (I/O or layout).
    #[error("drawing `{path}` failed: {message}")]
    Plot {
        /// The output path being drawn.
        path: PathBuf,
        /// The backend's message.
        message: String,
    },
}

impl TheoryError {
    /// Shorthand for [`TheoryError::InvalidParam`].
    pub(crate) fn param(field: impl Into<String>, reason: impl Into<String>) -> Self {
        TheoryError::InvalidParam {
            field: field.into(),
            reason: reason.into(),
        }
    }
}
