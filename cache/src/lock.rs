//! The exclusive lock of a cache folder, with the holder's identity for error messages.

use std::{
    fs::File,
    io::{Read, Seek, SeekFrom, Write},
    path::{Path, PathBuf},
};

use crate::{Error, Result};

/// Holds an exclusive `File::lock` (`flock(LOCK_EX)`) on `<cache>/lock` until dropped. The kernel releases the lock
/// when the process dies, even by `kill -9`, so a crash never leaves the cache locked.
///
/// The lock is taken on the file that is at `lock` once it is held: a file another
/// process deleted or replaced meanwhile is let go and the new one locked. (That
/// someone deletes `lock` while a run holds it is caught by the index's own lock,
/// which [`crate::Cache::open`] takes next.)
#[derive(Debug)]
pub struct CacheLock {
    _file: File,
    path: PathBuf,
}

impl CacheLock {
    /// Takes the lock. When another process holds it: waits if `wait`, else returns
    /// [`Error::Locked`] naming the holder. `on_wait` is called once before blocking.
    pub fn acquire(
        dir: &Path,
        holder: &str,
        wait: bool,
        on_wait: &dyn Fn(&str),
    ) -> Result<CacheLock> {
        let path = dir.join("lock");
        let mut waited = false;
        let mut file = loop {
            let mut file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(Error::io("cannot open lock file", &path))?;
            if !try_flock(&file, false)? {
                let who = read_holder(&mut file);
                if !wait {
                    return Err(Error::Locked {
                        path: dir.to_path_buf(),
                        holder: who,
                    });
                }
                if !waited {
                    on_wait(&who);
                    waited = true;
                }
                try_flock(&file, true)?;
            }
            if still_at(&file, &path) {
                break file;
            }
        };
        file.set_len(0)
            .map_err(Error::io("cannot write lock file", &path))?;
        file.seek(SeekFrom::Start(0))
            .map_err(Error::io("cannot write lock file", &path))?;
        let host = hostname();
        let line = format!(
            "pid {} on {host}: {holder} (since {})\n",
            std::process::id(),
            chrono::Utc::now().format("%Y-%m-%d %H:%M:%S UTC")
        );
        file.write_all(line.as_bytes())
            .map_err(Error::io("cannot write lock file", &path))?;
        Ok(CacheLock { _file: file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Takes the exclusive lock (`File::lock`: `flock` on Unix); `Ok(false)` when another
/// process holds it and `block` is false.
fn try_flock(file: &File, block: bool) -> Result<bool> {
    let err = |source| Error::Io {
        context: "cannot lock",
        path: PathBuf::from("lock"),
        source,
    };
    if block {
        loop {
            match file.lock() {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                r => return r.map(|()| true).map_err(err),
            }
        }
    }
    match file.try_lock() {
        Ok(()) => Ok(true),
        Err(std::fs::TryLockError::WouldBlock) => Ok(false),
        Err(std::fs::TryLockError::Error(e)) => Err(err(e)),
    }
}

/// Whether the open `file` is still the one at `path` (not deleted or replaced).
fn still_at(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Who holds the index's lock on `db_file` (sled's `flock` on `db/db`), from
/// `/proc/locks`: for when the `lock` file that names the holder was deleted.
pub(crate) fn index_holder(db_file: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    let unnamed = "another dagrun process (its `lock` file was deleted while it ran)".to_string();
    let Ok(meta) = std::fs::metadata(db_file) else {
        return unnamed;
    };
    let ino = meta.ino().to_string();
    let locks = std::fs::read_to_string("/proc/locks").unwrap_or_default();
    // `1: FLOCK  ADVISORY  WRITE 4242 00:2f:131 0 EOF`
    let pid = locks.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let id = f.iter().position(|x| x.matches(':').count() == 2)?;
        let file_ino = f[id].rsplit(':').next()?;
        (f.get(1) == Some(&"FLOCK") && file_ino == ino).then(|| f[id - 1].to_string())
    });
    match pid {
        Some(pid) if pid.parse::<u32>().is_ok_and(|p| p != std::process::id()) => {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|b| {
                    b.split(|&c| c == 0)
                        .filter(|a| !a.is_empty())
                        .map(|a| String::from_utf8_lossy(a).into_owned())
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default();
            format!(
                "another dagrun process (pid {pid}: {cmd}; its `lock` file was deleted while it ran)"
            )
        }
        _ => unnamed,
    }
}

fn read_holder(file: &mut File) -> String {
    let mut s = String::new();
    let _ = file.seek(SeekFrom::Start(0));
    let _ = file.read_to_string(&mut s);
    let s = s.trim();
    if s.is_empty() {
        "another dagrun process".to_string()
    } else {
        format!("another dagrun process ({s})")
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_refused_with_name() {
        let dir = tempfile::tempdir().unwrap();
        let _a = CacheLock::acquire(dir.path(), "dagrun run a.yaml", false, &|_| {}).unwrap();
        let err = CacheLock::acquire(dir.path(), "dagrun run b.yaml", false, &|_| {}).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("dagrun run a.yaml"), "{msg}");
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
    }

    #[test]
    fn a_lock_file_deleted_before_it_is_locked_is_not_the_one_held() {
        let dir = tempfile::tempdir().unwrap();
        let a = CacheLock::acquire(dir.path(), "a", false, &|_| {}).unwrap();
        assert!(still_at(&a._file, a.path()));
        std::fs::remove_file(a.path()).unwrap();
        assert!(!still_at(&a._file, a.path()));
    }

    #[test]
    fn lock_is_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        drop(CacheLock::acquire(dir.path(), "a", false, &|_| {}).unwrap());
        CacheLock::acquire(dir.path(), "b", false, &|_| {}).unwrap();
    }
}
