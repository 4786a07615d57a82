//! Where a remote is: what `--remote`, `DAGRUN_REMOTE` or a pipeline's `remote:` says.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// A remote's place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// A folder (a shared filesystem): a path, or `file:///path`.
    Folder(PathBuf),
    /// S3 or an S3-compatible server: `s3://bucket/prefix`.
    S3 { bucket: String, prefix: String },
    /// Google Cloud Storage: `gs://bucket/prefix`.
    Gcs { bucket: String, prefix: String },
    /// Azure Blob Storage: `az://container/prefix` (and the other forms object_store
    /// reads: `abfs[s]://`, `azure://`, `https://ACCOUNT.blob.core.windows.net/...`).
    Azure { url: String },
}

impl Location {
    /// Reads a remote as written; a relative folder is taken relative to `base`.
    pub fn parse(s: &str, base: &Path) -> Result<Location> {
        let s = s.trim();
        if s.is_empty() {
            return Err(Error::BadLocation(
                "is empty: give a folder, file:///path, s3://bucket/prefix, gs://... or az://..."
                    .into(),
            ));
        }
        let Some((scheme, _)) = s.split_once("://") else {
            return Ok(Location::Folder(base.join(s)));
        };
        let url = url::Url::parse(s)
            .map_err(|e| Error::BadLocation(format!("`{s}`: not a valid URL: {e}")))?;
        let bucket_and_prefix = || -> Result<(String, String)> {
            let bucket = url.host_str().unwrap_or("").to_string();
            if bucket.is_empty() {
                return Err(Error::BadLocation(format!(
                    "`{s}`: no bucket (write {scheme}://BUCKET/PREFIX)"
                )));
            }
            let prefix = url.path().trim_matches('/').to_string();
            // Checked as written: URL parsing resolves `..` away.
            if s.split('/').skip(3).any(|c| c == "." || c == "..") {
                return Err(Error::BadLocation(format!(
                    "`{s}`: the prefix may not contain `.` or `..`"
                )));
            }
            Ok((bucket, prefix))
        };
        match scheme.to_ascii_lowercase().as_str() {
            "file" => url
                .to_file_path()
                .map(Location::Folder)
                .map_err(|_| Error::BadLocation(format!("`{s}`: not a local file URL"))),
            "s3" | "s3a" => {
                let (bucket, prefix) = bucket_and_prefix()?;
                Ok(Location::S3 { bucket, prefix })
            }
            "gs" => {
                let (bucket, prefix) = bucket_and_prefix()?;
                Ok(Location::Gcs { bucket, prefix })
            }
            "az" | "adl" | "azure" | "abfs" | "abfss" => Ok(Location::Azure { url: s.into() }),
            "https" if url.host_str().is_some_and(|h| h.ends_with(".windows.net")) => {
                Ok(Location::Azure { url: s.into() })
            }
            other => Err(Error::BadLocation(format!(
                "`{s}`: unsupported scheme `{other}` (a folder, file:///path, s3://bucket/prefix, \
                 gs://bucket/prefix or az://container/prefix)"
            ))),
        }
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Folder(p) => write!(f, "{}", p.display()),
            Location::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
            Location::Gcs { bucket, prefix } => write!(f, "gs://{bucket}/{prefix}"),
            Location::Azure { url } => f.write_str(url),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_urls_and_errors() {
        let base = Path::new("/ws");
        assert_eq!(
            Location::parse("shared/cache", base).unwrap(),
            Location::Folder("/ws/shared/cache".into())
        );
        assert_eq!(
            Location::parse("/mnt/team", base).unwrap(),
            Location::Folder("/mnt/team".into())
        );
        assert_eq!(
            Location::parse("file:///mnt/team%20a", base).unwrap(),
            Location::Folder("/mnt/team a".into())
        );
        assert_eq!(
            Location::parse("s3://bkt/team/exp1/", base).unwrap(),
            Location::S3 {
                bucket: "bkt".into(),
                prefix: "team/exp1".into()
            }
        );
        assert_eq!(
            Location::parse("s3://bkt", base).unwrap(),
            Location::S3 {
                bucket: "bkt".into(),
                prefix: "".into()
            }
        );
        assert_eq!(
            Location::parse("gs://b/p", base).unwrap().to_string(),
            "gs://b/p"
        );
        for bad in ["", "ftp://x/y", "s3:///nobucket", "s3://b/a/../c"] {
            let e = Location::parse(bad, base).unwrap_err().to_string();
            assert!(e.starts_with("remote "), "{bad}: {e}");
        }
        assert!(Location::parse("ftp://x/y", base)
            .unwrap_err()
            .to_string()
            .contains("unsupported scheme `ftp`"));
    }
}
