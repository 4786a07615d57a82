//! Content-addressed objects: small ones in sled, large ones as read-only files.

use std::{
    fs::File,
    io::{Read, Write},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
};

use crate::{Error, Hash, Result};

/// Objects up to this size live in sled's `blobs-v1` tree; larger ones are files.
pub const SMALL_OBJECT_LIMIT: u64 = 16 * 1024;

static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

pub(crate) struct Objects {
    pub(crate) root: PathBuf,
    pub(crate) tmp: PathBuf,
    pub(crate) blobs: sled::Tree,
}

impl Objects {
    pub(crate) fn file_path(&self, hash: &Hash) -> PathBuf {
        let hex = hash.to_hex();
        self.root.join(&hex[..2]).join(&hex[2..])
    }

    pub(crate) fn temp_path(&self) -> PathBuf {
        let n = TMP_SEQ.fetch_add(1, Ordering::Relaxed);
        self.tmp.join(format!("{}-{n}", std::process::id()))
    }

    pub(crate) fn contains(&self, hash: &Hash) -> Result<bool> {
        if self.file_path(hash).exists() {
            return Ok(true);
        }
        self.blobs.contains_key(hash.0).map_err(db_err)
    }

    /// Stores bytes; returns their hash.
    pub(crate) fn put_bytes(&self, bytes: &[u8]) -> Result<Hash> {
        let hash = crate::hash_bytes(bytes);
        if bytes.len() as u64 <= SMALL_OBJECT_LIMIT {
            if !self.blobs.contains_key(hash.0).map_err(db_err)? {
                self.blobs.insert(hash.0, bytes).map_err(db_err)?;
            }
            return Ok(hash);
        }
        let final_path = self.file_path(&hash);
        if final_path.exists() {
            return Ok(hash);
        }
        let tmp = self.temp_path();
        let mut f = File::create(&tmp).map_err(Error::io("cannot create", &tmp))?;
        f.write_all(bytes)
            .map_err(Error::io("cannot write", &tmp))?;
        self.publish(f, &tmp, &final_path)?;
        Ok(hash)
    }

    /// Stores a file's contents, hashing while copying (one pass over the bytes).
    pub(crate) fn put_file(&self, src: &Path) -> Result<(Hash, u64)> {
        let mut input = File::open(src).map_err(Error::io("cannot open", src))?;
        let len = input
            .metadata()
            .map_err(Error::io("cannot stat", src))?
            .len();
        if len <= SMALL_OBJECT_LIMIT {
            let mut bytes = Vec::with_capacity(len as usize);
            input
                .read_to_end(&mut bytes)
                .map_err(Error::io("cannot read", src))?;
            let n = bytes.len() as u64;
            if n <= SMALL_OBJECT_LIMIT {
                return Ok((self.put_bytes(&bytes)?, n));
            }
        }
        let tmp = self.temp_path();
        let mut out = File::create(&tmp).map_err(Error::io("cannot create", &tmp))?;
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0u8; 256 * 1024];
        let mut size = 0u64;
        loop {
            let n = input
                .read(&mut buf)
                .map_err(Error::io("cannot read", src))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n])
                .map_err(Error::io("cannot write", &tmp))?;
            size += n as u64;
        }
        let hash: Hash = hasher.finalize().into();
        let final_path = self.file_path(&hash);
        if final_path.exists() {
            drop(out);
            let _ = std::fs::remove_file(&tmp);
            return Ok((hash, size));
        }
        self.publish(out, &tmp, &final_path)?;
        Ok((hash, size))
    }

    /// fsync the temp file, make it read-only, rename it into place, fsync the folder.
    pub(crate) fn publish(&self, file: File, tmp: &Path, final_path: &Path) -> Result<()> {
        file.sync_all().map_err(Error::io("cannot fsync", tmp))?;
        drop(file);
        std::fs::set_permissions(tmp, std::fs::Permissions::from_mode(0o444))
            .map_err(Error::io("cannot chmod", tmp))?;
        let parent = final_path.parent().expect("object paths have a parent");
        std::fs::create_dir_all(parent).map_err(Error::io("cannot create", parent))?;
        std::fs::rename(tmp, final_path).map_err(Error::io("cannot rename into", final_path))?;
        sync_dir(parent)
    }

    pub(crate) fn read(&self, hash: &Hash) -> Result<Vec<u8>> {
        if let Some(v) = self.blobs.get(hash.0).map_err(db_err)? {
            return Ok(v.to_vec());
        }
        let p = self.file_path(hash);
        match std::fs::read(&p) {
            Ok(v) => Ok(v),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(Error::MissingObject(hash.to_hex()))
            }
            Err(e) => Err(Error::Io {
                context: "cannot read",
                path: p,
                source: e,
            }),
        }
    }

    /// Writes the object's bytes at `dest` (atomically: temp file beside it, then rename).
    /// Temp files an interrupted restore left are not looked for here (that would list
    /// the folder once per file): [`remove_stale_temps`] does it once per restored output.
    pub(crate) fn copy_to(&self, hash: &Hash, dest: &Path, exec: bool) -> Result<()> {
        let parent = dest.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).map_err(Error::io("cannot create", parent))?;
        let name = dest.file_name().and_then(|s| s.to_str()).unwrap_or("out");
        let tmp = parent.join(format!(".{name}.dagrun-tmp-{}", std::process::id()));
        let file_src = self.file_path(hash);
        if let Some(v) = self.blobs.get(hash.0).map_err(db_err)? {
            std::fs::write(&tmp, &v).map_err(Error::io("cannot write", &tmp))?;
        } else if file_src.exists() {
            std::fs::copy(&file_src, &tmp).map_err(Error::io("cannot copy to", &tmp))?;
        } else {
            return Err(Error::MissingObject(hash.to_hex()));
        }
        let mode = if exec { 0o755 } else { 0o644 };
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
            .map_err(Error::io("cannot chmod", &tmp))?;
        if dest.is_dir() {
            std::fs::remove_dir_all(dest).map_err(Error::io("cannot replace", dest))?;
        }
        std::fs::rename(&tmp, dest).map_err(Error::io("cannot rename into", dest))
    }

    /// Rehashes an object; `Ok(false)` when its bytes no longer match its name.
    pub(crate) fn verify_file(&self, path: &Path, expected: &Hash) -> Result<bool> {
        let (h, _) = crate::hash_file(path)?;
        Ok(h == *expected)
    }
}

/// Removes the `.NAME.dagrun-tmp-PID` files an interrupted restore of `dest` left beside
/// it (one listing of `dest`'s folder).
pub(crate) fn remove_stale_temps(dest: &Path) {
    #[cfg(test)]
    STALE_SCANS.with(|c| c.set(c.get() + 1));
    let parent = dest.parent().unwrap_or(Path::new("."));
    let Some(name) = dest.file_name().and_then(|s| s.to_str()) else {
        return;
    };
    let prefix = format!(".{name}.dagrun-tmp-");
    if let Ok(rd) = std::fs::read_dir(parent) {
        for e in rd.flatten() {
            let n = e.file_name();
            let n = n.to_string_lossy();
            if n.starts_with(&prefix) && is_restore_temp(&n) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

#[cfg(test)]
thread_local! {
    /// How many times this thread listed a folder for stale restore temp files.
    pub(crate) static STALE_SCANS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Whether a file name is a temp file that restoring writes beside its destination
/// (`.NAME.dagrun-tmp-PID`). One left by an interrupted restore is not part of a folder's
/// content, and the next restore of NAME removes it.
pub fn is_restore_temp(name: &str) -> bool {
    name.starts_with('.')
        && name.rsplit_once(".dagrun-tmp-").is_some_and(|(head, pid)| {
            head.len() > 1 && !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit())
        })
}

pub(crate) fn db_err(e: sled::Error) -> Error {
    Error::Db {
        path: PathBuf::from("db"),
        source: e,
    }
}

pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(Error::io("cannot fsync folder", dir))
}
