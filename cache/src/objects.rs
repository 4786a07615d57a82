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
    /// Where damaged object files are moved ([`Objects::quarantine`]).
    pub(crate) quarantine: PathBuf,
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
            // A stored copy that differs (damaged) is replaced by these bytes.
            if self.blobs.get(hash.0).map_err(db_err)?.as_deref() != Some(bytes) {
                self.blobs.insert(hash.0, bytes).map_err(db_err)?;
            }
            return Ok(hash);
        }
        let final_path = self.file_path(&hash);
        if intact_size(&final_path, bytes.len() as u64) {
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
        if intact_size(&final_path, size) {
            drop(out);
            let _ = std::fs::remove_file(&tmp);
            return Ok((hash, size));
        }
        self.publish(out, &tmp, &final_path)?;
        Ok((hash, size))
    }

    /// fsync the temp file, make it read-only, rename it into place, fsync the folder.
    fn publish(&self, file: File, tmp: &Path, final_path: &Path) -> Result<()> {
        file.sync_all().map_err(Error::io("cannot fsync", tmp))?;
        drop(file);
        std::fs::set_permissions(tmp, std::fs::Permissions::from_mode(0o444))
            .map_err(Error::io("cannot chmod", tmp))?;
        let parent = final_path.parent().expect("object paths have a parent");
        std::fs::create_dir_all(parent).map_err(Error::io("cannot create", parent))?;
        std::fs::rename(tmp, final_path).map_err(Error::io("cannot rename into", final_path))?;
        sync_dir(parent)
    }

    /// Writes an object's bytes to `out`, checking them against the object's name as
    /// they go (one pass: blake3 hashes faster than disks read). A missing object is
    /// [`Error::MissingObject`], one whose bytes do not match is
    /// [`Error::DamagedObject`]: `out` has then received bytes that must be discarded.
    /// `out_path` names `out` in error messages.
    pub(crate) fn copy_verified(
        &self,
        hash: &Hash,
        out: &mut dyn Write,
        out_path: &Path,
    ) -> Result<u64> {
        if let Some(v) = self.blobs.get(hash.0).map_err(db_err)? {
            let got = crate::hash_bytes(&v);
            if got != *hash {
                return Err(damaged(
                    hash,
                    "its bytes in the index",
                    &got,
                    v.len() as u64,
                ));
            }
            out.write_all(&v)
                .map_err(Error::io("cannot write", out_path))?;
            return Ok(v.len() as u64);
        }
        let p = self.file_path(hash);
        let mut f = match File::open(&p) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::MissingObject(hash.to_hex()))
            }
            Err(e) => return Err(Error::io("cannot open", &p)(e)),
        };
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0u8; COPY_BUF];
        let mut size = 0u64;
        loop {
            let n = match f.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io("cannot read", &p)(e)),
            };
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n])
                .map_err(Error::io("cannot write", out_path))?;
            size += n as u64;
        }
        let got: Hash = hasher.finalize().into();
        if got != *hash {
            return Err(damaged(hash, "its file", &got, size));
        }
        Ok(size)
    }

    /// Writes an object's bytes into the file `out` (empty, opened for reading and
    /// writing) and checks what was written against the object's name: the kernel copies
    /// (`copy_file_range`), then blake3 reads the copy back, which is faster than hashing
    /// on the way through a user-space buffer and checks the very bytes handed out. A
    /// mismatch is [`Error::DamagedObject`] when the object itself is damaged, and an I/O
    /// error when only the copy is (a failing disk: the object stays).
    pub(crate) fn copy_verified_to_file(
        &self,
        hash: &Hash,
        out: &mut File,
        out_path: &Path,
    ) -> Result<u64> {
        use std::os::unix::fs::FileExt;
        if self.blobs.contains_key(hash.0).map_err(db_err)? {
            return self.copy_verified(hash, out, out_path);
        }
        let p = self.file_path(hash);
        let mut src = match File::open(&p) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::MissingObject(hash.to_hex()))
            }
            Err(e) => return Err(Error::io("cannot open", &p)(e)),
        };
        let size = std::io::copy(&mut src, out).map_err(Error::io("cannot copy to", out_path))?;
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0u8; COPY_BUF];
        let mut at = 0u64;
        loop {
            let n = match out.read_at(&mut buf, at) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io("cannot read back", out_path)(e)),
            };
            hasher.update(&buf[..n]);
            at += n as u64;
        }
        let got: Hash = hasher.finalize().into();
        if got == *hash && at == size {
            return Ok(size);
        }
        // Which one is wrong: the object, or only the copy?
        self.check(hash)?;
        Err(Error::Io {
            context: "the copy does not read back as written",
            path: out_path.to_path_buf(),
            source: std::io::ErrorKind::InvalidData.into(),
        })
    }

    /// Rehashes an object without writing it anywhere.
    pub(crate) fn check(&self, hash: &Hash) -> Result<()> {
        self.copy_verified(hash, &mut std::io::sink(), Path::new("-"))
            .map(|_| ())
    }

    /// An object's bytes, verified against its name (see [`Objects::copy_verified`]).
    pub(crate) fn read(&self, hash: &Hash) -> Result<Vec<u8>> {
        let mut v = Vec::new();
        self.copy_verified(hash, &mut v, Path::new("memory"))?;
        Ok(v)
    }

    /// Takes a damaged object out of the store: a file is moved to `quarantine/` (kept
    /// for inspection until the next `cache gc`), a small object is removed from the
    /// index. Whatever stores the same bytes again gets a fresh, intact copy.
    pub(crate) fn quarantine(&self, hash: &Hash) -> Result<()> {
        self.blobs.remove(hash.0).map_err(db_err)?;
        let p = self.file_path(hash);
        if p.exists() {
            std::fs::create_dir_all(&self.quarantine)
                .map_err(Error::io("cannot create", &self.quarantine))?;
            let dest = self.quarantine.join(hash.to_hex());
            std::fs::rename(&p, &dest).map_err(Error::io("cannot quarantine", &p))?;
        }
        Ok(())
    }
}

/// Whether an object file is already stored with the size its bytes have. (Storing the
/// same bytes again replaces a copy truncated or extended on disk; a copy with flipped
/// bytes is found when it is read: every read is verified.)
fn intact_size(path: &Path, size: u64) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.len() == size)
}

/// Buffer of verified copies (hashing and writing run on the same bytes).
const COPY_BUF: usize = 1 << 20;

fn damaged(hash: &Hash, what: &str, got: &Hash, size: u64) -> Error {
    Error::DamagedObject {
        hash: hash.to_hex(),
        detail: format!(
            "{what} ({size} bytes) hash to {} instead of its name",
            got.short()
        ),
    }
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
