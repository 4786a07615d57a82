//! Paths that cannot escape a folder: every operation on a workspace output (or an
//! export) resolves its path one component at a time from an open folder, with
//! `openat(O_NOFOLLOW)`, so a symbolic link anywhere on the way is refused instead of
//! followed, and a link or a file swapped in by someone else is never written through.
//!
//! Why not the `cap-std` crate: its `Dir` follows symbolic links as long as they stay
//! inside the folder, and that is not enough here. A link `sub -> data` inside the
//! workspace would let a restore of `sub/o` replace the user's `data/o`, so dagrun refuses
//! every link on the way to a path it writes or deletes ([`Error::ThroughLink`]), which
//! takes a dozen `openat`/`unlinkat` calls (through `rustix`, already in the dependency
//! tree) rather than a capability library.
//!
//! What a link *at* a path is (rather than on the way to it) is the caller's to judge
//! ([`Entry::Link`]): removing it removes the link itself, never what it points to.

use std::{
    ffi::CStr,
    fs::File,
    os::fd::{AsFd, BorrowedFd, OwnedFd},
    path::{Path, PathBuf},
};

use rustix::{
    fs::{AtFlags, FileType, Mode, OFlags},
    io::Errno,
};

use crate::{Error, Result};

/// What is at a path (the path itself is not followed if it is a link).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    Missing,
    File,
    Dir,
    /// A symbolic link, and where it points.
    Link {
        target: PathBuf,
    },
    /// A FIFO, socket or device.
    Other,
}

/// A folder that paths are resolved under without following links (see the module
/// documentation). The folder itself is opened normally: a link to it is fine.
pub struct Confined {
    root: PathBuf,
    fd: OwnedFd,
}

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

impl Confined {
    /// Opens `root` (which must exist).
    pub fn open(root: &Path) -> Result<Confined> {
        let fd = rustix::fs::open(
            root,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::Io {
            context: "cannot open folder",
            path: root.to_path_buf(),
            source: e.into(),
        })?;
        Ok(Confined {
            root: root.to_path_buf(),
            fd,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// The folder that holds `rel`, opened without following links, and `rel`'s last
    /// component. `Ok(None)` when a folder on the way does not exist (and `create` is
    /// false; with `create`, missing folders are made).
    pub(crate) fn parent(&self, rel: &str, create: bool) -> Result<Option<(OwnedFd, String)>> {
        let comps = components(rel)?;
        let (name, folders) = comps.split_last().expect("components are not empty");
        let dir = open_folders(self.fd.as_fd(), &self.root, folders, create).map_err(|e| {
            // Name the whole path, not only the folder where resolving it stopped.
            match e {
                Error::ThroughLink { link, target, .. } => Error::ThroughLink {
                    path: self.path(rel),
                    link,
                    target,
                },
                Error::NotAFolder { blocker, .. } => Error::NotAFolder {
                    path: self.path(rel),
                    blocker,
                },
                e => e,
            }
        })?;
        Ok(dir.map(|d| (d, name.to_string())))
    }

    /// What is at `rel`. A link on the way is an error; a folder missing on the way
    /// means nothing is there.
    pub fn entry(&self, rel: &str) -> Result<Entry> {
        match self.parent(rel, false)? {
            None => Ok(Entry::Missing),
            Some((dir, name)) => entry_at(dir.as_fd(), &name, &self.path(rel)),
        }
    }

    /// Makes the folders that hold `rel`.
    pub fn create_parents(&self, rel: &str) -> Result<()> {
        self.parent(rel, true).map(|_| ())
    }

    /// Removes whatever is at `rel`: a file, a link (not what it points to), or a folder
    /// and everything in it (links inside are removed, not followed). Nothing there is
    /// fine.
    pub fn remove(&self, rel: &str) -> Result<()> {
        let Some((dir, name)) = self.parent(rel, false)? else {
            return Ok(());
        };
        remove_at(dir.as_fd(), &name, &self.path(rel))
    }

    /// Opens the file at `rel` for reading, refusing links (on the way and at `rel`).
    pub fn open_file(&self, rel: &str) -> Result<File> {
        let path = self.path(rel);
        let Some((dir, name)) = self.parent(rel, false)? else {
            return Err(Error::Io {
                context: "cannot open",
                path,
                source: std::io::ErrorKind::NotFound.into(),
            });
        };
        let fd = rustix::fs::openat(
            &dir,
            name.as_str(),
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(io_err("cannot open", &path))?;
        Ok(File::from(fd))
    }
}

/// The components of a relative path; `.` components are skipped.
fn components(rel: &str) -> Result<Vec<&str>> {
    let comps: Vec<&str> = rel
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    if comps.is_empty() || rel.starts_with('/') || comps.contains(&"..") {
        return Err(Error::Io {
            context: "refusing a path that is not inside its folder",
            path: PathBuf::from(rel),
            source: std::io::ErrorKind::InvalidInput.into(),
        });
    }
    Ok(comps)
}

fn io_err<'a>(context: &'static str, path: &'a Path) -> impl FnOnce(Errno) -> Error + 'a {
    move |e| Error::Io {
        context,
        path: path.to_path_buf(),
        source: e.into(),
    }
}

/// Opens `start/folders...` one component at a time without following links.
pub(crate) fn open_folders(
    start: BorrowedFd<'_>,
    start_path: &Path,
    folders: &[&str],
    create: bool,
) -> Result<Option<OwnedFd>> {
    let mut cur = rustix::fs::openat(start, ".", DIR_FLAGS, Mode::empty())
        .map_err(io_err("cannot open folder", start_path))?;
    let mut path = start_path.to_path_buf();
    for comp in folders {
        path.push(comp);
        match open_folder(cur.as_fd(), comp, &path, create)? {
            Some(next) => cur = next,
            None => return Ok(None),
        }
    }
    Ok(Some(cur))
}

/// Opens folder `name` inside `dir` (`path` is its full path, for messages).
fn open_folder(
    dir: BorrowedFd<'_>,
    name: &str,
    path: &Path,
    create: bool,
) -> Result<Option<OwnedFd>> {
    loop {
        match rustix::fs::openat(dir, name, DIR_FLAGS, Mode::empty()) {
            Ok(fd) => return Ok(Some(fd)),
            Err(Errno::NOENT) if create => {
                match rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(0o777)) {
                    Ok(()) | Err(Errno::EXIST) => continue,
                    Err(e) => return Err(io_err("cannot create", path)(e)),
                }
            }
            Err(Errno::NOENT) => return Ok(None),
            Err(e @ (Errno::LOOP | Errno::NOTDIR)) => {
                return match entry_at(dir, name, path)? {
                    Entry::Link { target } => Err(Error::ThroughLink {
                        path: path.to_path_buf(),
                        link: path.to_path_buf(),
                        target,
                    }),
                    Entry::Missing if !create => Ok(None),
                    Entry::Missing => continue,
                    Entry::Dir => Err(io_err("cannot open folder", path)(e)),
                    Entry::File | Entry::Other => Err(Error::NotAFolder {
                        path: path.to_path_buf(),
                        blocker: path.to_path_buf(),
                    }),
                };
            }
            Err(e) => return Err(io_err("cannot open folder", path)(e)),
        }
    }
}

pub(crate) fn entry_at(dir: BorrowedFd<'_>, name: &str, path: &Path) -> Result<Entry> {
    let st = match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::NOENT) => return Ok(Entry::Missing),
        Err(e) => return Err(io_err("cannot stat", path)(e)),
    };
    Ok(match FileType::from_raw_mode(st.st_mode) {
        FileType::RegularFile => Entry::File,
        FileType::Directory => Entry::Dir,
        FileType::Symlink => {
            let target = rustix::fs::readlinkat(dir, name, Vec::new())
                .map(|t| PathBuf::from(t.to_string_lossy().into_owned()))
                .unwrap_or_default();
            Entry::Link { target }
        }
        _ => Entry::Other,
    })
}

/// Removes `name` inside `dir`: a folder with everything in it, or anything else itself.
pub(crate) fn remove_at(dir: BorrowedFd<'_>, name: &str, path: &Path) -> Result<()> {
    match entry_at(dir, name, path)? {
        Entry::Missing => Ok(()),
        Entry::Dir => remove_tree(dir, name, path),
        _ => match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(io_err("cannot remove", path)(e)),
        },
    }
}

fn remove_tree(dir: BorrowedFd<'_>, name: &str, path: &Path) -> Result<()> {
    let sub = match rustix::fs::openat(dir, name, DIR_FLAGS, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(()),
        Err(e) => return Err(io_err("cannot open folder", path)(e)),
    };
    for child in list(sub.as_fd(), path)? {
        let child_path = path.join(&child);
        remove_at(sub.as_fd(), &child, &child_path)?;
    }
    match rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(io_err("cannot remove", path)(e)),
    }
}

/// The names in an open folder (without `.` and `..`).
pub(crate) fn list(dir: BorrowedFd<'_>, path: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    let rd = rustix::fs::Dir::read_from(dir).map_err(io_err("cannot list", path))?;
    for e in rd {
        let e = e.map_err(io_err("cannot list", path))?;
        let n: &CStr = e.file_name();
        let n = n.to_bytes();
        if n != b"." && n != b".." {
            names.push(String::from_utf8_lossy(n).into_owned());
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_on_the_way_are_refused_and_never_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let ws = tmp.path().join("ws");
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(ws.join("real")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("o"), b"precious").unwrap();
        std::os::unix::fs::symlink(&outside, ws.join("sub")).unwrap();
        let c = Confined::open(&ws).unwrap();
        for r in [
            c.entry("sub/o"),
            c.remove("sub/o").map(|_| Entry::Missing),
            c.create_parents("sub/x/o").map(|_| Entry::Missing),
        ] {
            let err = r.unwrap_err();
            assert!(matches!(err, Error::ThroughLink { .. }), "{err}");
            assert!(err.to_string().contains("symbolic link"), "{err}");
        }
        assert_eq!(std::fs::read(outside.join("o")).unwrap(), b"precious");
        // A link at the path itself is reported, and removing it removes only the link.
        std::os::unix::fs::symlink(outside.join("o"), ws.join("real/l")).unwrap();
        assert_eq!(
            c.entry("real/l").unwrap(),
            Entry::Link {
                target: outside.join("o")
            }
        );
        c.remove("real/l").unwrap();
        assert_eq!(c.entry("real/l").unwrap(), Entry::Missing);
        assert_eq!(std::fs::read(outside.join("o")).unwrap(), b"precious");
        // A folder holding a link to the outside is removed without following it.
        std::fs::create_dir_all(ws.join("real/d/e")).unwrap();
        std::os::unix::fs::symlink(&outside, ws.join("real/d/e/out")).unwrap();
        std::fs::write(ws.join("real/d/f"), b"f").unwrap();
        c.remove("real/d").unwrap();
        assert!(!ws.join("real/d").exists());
        assert_eq!(std::fs::read(outside.join("o")).unwrap(), b"precious");
        // Missing folders on the way: nothing there; created on demand.
        assert_eq!(c.entry("a/b/c").unwrap(), Entry::Missing);
        c.create_parents("a/b/c").unwrap();
        assert!(ws.join("a/b").is_dir());
        // A file where a folder is needed.
        std::fs::write(ws.join("file"), b"x").unwrap();
        assert!(matches!(
            c.create_parents("file/x"),
            Err(Error::NotAFolder { .. })
        ));
        // Paths that leave the folder by name are refused outright.
        assert!(c.entry("../outside/o").is_err());
        assert!(c.entry("/etc/passwd").is_err());
    }
}
