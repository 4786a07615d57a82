//! The exclusive lock of a cache folder, with the holder's identity for error messages.

use std::{
    fs::File,
    io::{Read, Seek, SeekFrom, Write},
    path::{Path, PathBuf},
};

use crate::{Error, Result};

/// Holds an exclusive `File::lock` (`flock(LOCK_EX)`) on `<cache>/lock` until dropped. The kernel releases the lock
/// when the process dies, even by `kill -9`, so a crash never leaves the cache locked.
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
            on_wait(&who);
            try_flock(&file, true)?;
        }
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
    fn lock_is_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        drop(CacheLock::acquire(dir.path(), "a", false, &|_| {}).unwrap());
        CacheLock::acquire(dir.path(), "b", false, &|_| {}).unwrap();
    }
}
