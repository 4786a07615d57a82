//! Handing artifacts out, always verified against their names: restoring a workspace
//! output (replacing what is there), exporting into a folder (merging, never replacing
//! what differs unless forced), read-only views for stages, and whole objects.
//!
//! Paths outside the cache are resolved through [`Confined`]: never through a symbolic
//! link. An object found missing or damaged on the way is taken out of the store
//! ([`Cache::drop_damaged`]), so whatever used it counts as not cached from then on.

use std::{
    collections::HashSet,
    fs::File,
    io::Write,
    os::fd::{AsFd, BorrowedFd, OwnedFd},
    path::{Path, PathBuf},
};

use rustix::fs::{AtFlags, Mode, OFlags};

use crate::{
    confined::{self, Confined, Entry},
    Artifact, Cache, Error, Hash, Result,
};

/// What [`Cache::export`] did with each file.
#[derive(Debug, Default, Clone)]
pub struct ExportReport {
    /// Written (new, or replaced with `force`).
    pub written: Vec<PathBuf>,
    /// Already there with the same bytes.
    pub unchanged: Vec<PathBuf>,
}

impl Cache {
    /// Puts an artifact back at workspace path `rel` under `root`: a file replaces what
    /// is there atomically (temp file beside it, then rename); a folder replaces the old
    /// folder. No folder on the way may be a symbolic link ([`Error::ThroughLink`]); a
    /// link at `rel` itself is replaced, not followed (whether it may be is the caller's
    /// decision, from its claims).
    ///
    /// Every byte is verified against its object's name: a missing or damaged object
    /// ends the restore with [`Error::MissingObject`] / [`Error::DamagedObject`] after it
    /// is taken out of the store and the records that use it are dropped.
    ///
    /// Temp files an interrupted restore of `rel` left beside it are removed (once per
    /// restore; a folder's own leftovers go with its old content).
    pub fn restore_output(&self, artifact: &Artifact, root: &Path, rel: &str) -> Result<()> {
        let ws = Confined::open(root)?;
        let (dir, name) = ws.parent(rel, true)?.expect("created");
        let dest = ws.path(rel);
        remove_stale_temps(dir.as_fd(), &name, &dest);
        let r = match &artifact.entries {
            None => self.write_verified(dir.as_fd(), &name, &dest, &artifact.hash, artifact.exec),
            Some(entries) => (|| -> Result<()> {
                confined::remove_at(dir.as_fd(), &name, &dest)?;
                mkdir(dir.as_fd(), &name, &dest)?;
                let top = confined::open_folders(dir.as_fd(), ws.root(), &[name.as_str()], false)?
                    .expect("just made");
                let mut folders = Folders::new(top, dest.clone());
                for e in entries {
                    let (sub, file) = folders.parent_of(&e.path)?;
                    let path = dest.join(&e.path);
                    self.write_verified(sub, file, &path, &e.hash, e.exec)?;
                }
                Ok(())
            })(),
        };
        self.on_damage(r)
    }

    /// Copies outputs into folder `dir`, each as `dir/<name>` (a file, or a folder whose
    /// files are merged into what `dir/<name>` holds: other files there stay). A file
    /// already there with the same bytes is left alone; one that differs (or a symbolic
    /// link there) is replaced only with `force`. A symbolic link on the way, or a folder
    /// where a file goes, is never replaced. Either everything is written or nothing:
    /// conflicts are all reported ([`Error::ExportConflict`]) before anything is written,
    /// and files are verified into temp files before the first one is renamed into place.
    pub fn export(
        &self,
        outputs: &[(&str, &Artifact)],
        dir: &Path,
        force: bool,
    ) -> Result<ExportReport> {
        std::fs::create_dir_all(dir).map_err(Error::io("cannot create", dir))?;
        let out = Confined::open(dir)?;
        let mut files: Vec<(String, Hash, bool)> = Vec::new();
        for (name, artifact) in outputs {
            match &artifact.entries {
                None => files.push((name.to_string(), artifact.hash, artifact.exec)),
                Some(entries) => files.extend(
                    entries
                        .iter()
                        .map(|e| (format!("{name}/{}", e.path), e.hash, e.exec)),
                ),
            }
        }
        let mut report = ExportReport::default();
        let mut todo = Vec::new();
        let mut conflicts = Vec::new();
        for (rel, hash, exec) in files {
            let path = out.path(&rel);
            let entry = match out.entry(&rel) {
                Ok(e) => e,
                Err(e @ (Error::ThroughLink { .. } | Error::NotAFolder { .. })) => {
                    conflicts.push(e.to_string());
                    continue;
                }
                Err(e) => return Err(e),
            };
            match entry {
                Entry::Missing => todo.push((rel, hash, exec)),
                Entry::File => {
                    let mut f = out.open_file(&rel)?;
                    let mut h = blake3::Hasher::new();
                    std::io::copy(&mut f, &mut h).map_err(Error::io("cannot read", &path))?;
                    if Hash::from(h.finalize()) == hash {
                        report.unchanged.push(path);
                    } else if force {
                        todo.push((rel, hash, exec));
                    } else {
                        conflicts.push(format!(
                            "`{}` exists with other content (--force replaces it)",
                            path.display()
                        ));
                    }
                }
                Entry::Link { .. } if force => todo.push((rel, hash, exec)),
                Entry::Link { target } => conflicts.push(format!(
                    "`{}` is a symbolic link (to `{}`) (--force replaces the link)",
                    path.display(),
                    target.display()
                )),
                Entry::Dir | Entry::Other => conflicts.push(format!(
                    "`{}` is a folder or special file where the output has a file; move it away",
                    path.display()
                )),
            }
        }
        if !conflicts.is_empty() {
            return Err(Error::ExportConflict(conflicts));
        }
        // Write every file to a temp name first (verified), then rename them all.
        let mut staged: Vec<(OwnedFd, String, String, PathBuf)> = Vec::new();
        let written = (|| -> Result<()> {
            for (rel, hash, exec) in &todo {
                let (d, file) = out.parent(rel, true)?.expect("created");
                let path = out.path(rel);
                let tmp = self.write_temp(d.as_fd(), &file, &path, hash, *exec)?;
                staged.push((d, tmp, file, path));
            }
            Ok(())
        })();
        if let Err(e) = self.on_damage(written) {
            for (d, tmp, _, _) in &staged {
                let _ = rustix::fs::unlinkat(d, tmp.as_str(), AtFlags::empty());
            }
            return Err(e);
        }
        for (d, tmp, file, path) in staged {
            rustix::fs::renameat(&d, tmp.as_str(), &d, file.as_str())
                .map_err(|e| Error::io("cannot rename into", &path)(e.into()))?;
            report.written.push(path);
        }
        Ok(report)
    }

    /// A read-only view of an artifact inside the cache folder, for stages that consume
    /// it: hard links to the object files (small objects are written out). The view is
    /// content-addressed and reused. Its files are verified against their names when it
    /// is made, and the first time this process hands out an existing view (a view
    /// shares its files' bytes with the objects, so damage to one is damage to both).
    pub fn materialize(&self, artifact: &Artifact) -> Result<PathBuf> {
        let r = self.materialize_verified(artifact);
        self.on_damage(r)
    }

    fn materialize_verified(&self, artifact: &Artifact) -> Result<PathBuf> {
        let root = self.dir.join("views-v1").join(artifact.hash.to_hex());
        let handed = if artifact.is_dir() {
            root.clone()
        } else {
            root.join("file")
        };
        if root.exists() {
            if self.verified_views.lock().unwrap().contains(&artifact.hash) {
                return Ok(handed);
            }
            if view_intact(artifact, &root) {
                self.verified_views.lock().unwrap().insert(artifact.hash);
                return Ok(handed);
            }
            // Damaged (with its objects, or on its own): made again from the objects,
            // which are checked on the way.
            tracing::warn!(view = %root.display(), "a view's files do not match their names; making it again");
            std::fs::remove_dir_all(&root).map_err(Error::io("cannot remove", &root))?;
        }
        let tmp = self.objects.temp_path();
        std::fs::create_dir_all(&tmp).map_err(Error::io("cannot create", &tmp))?;
        let place = |hash: &Hash, dest: &Path, exec: bool| -> Result<()> {
            if let Some(parent) = dest.parent() {
                std::fs::create_dir_all(parent).map_err(Error::io("cannot create", parent))?;
            }
            let src = self.objects.file_path(hash);
            if src.exists() {
                self.objects.check(hash)?;
                if std::fs::hard_link(&src, dest).is_ok() {
                    return Ok(());
                }
            }
            let mut f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(dest)
                .map_err(Error::io("cannot create", dest))?;
            self.objects.copy_verified_to_file(hash, &mut f, dest)?;
            set_mode(&f, dest, exec)
        };
        let placed = match &artifact.entries {
            None => place(&artifact.hash, &tmp.join("file"), artifact.exec),
            Some(entries) => entries
                .iter()
                .try_for_each(|e| place(&e.hash, &tmp.join(&e.path), e.exec)),
        };
        if let Err(e) = placed {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        std::fs::create_dir_all(root.parent().unwrap())
            .map_err(Error::io("cannot create", &root))?;
        if let Err(e) = std::fs::rename(&tmp, &root) {
            // Another thread made the same view meanwhile (views are content-addressed,
            // so it is the same): keep theirs, drop ours.
            let _ = std::fs::remove_dir_all(&tmp);
            if !root.exists() {
                return Err(Error::Io {
                    context: "cannot rename into",
                    path: root,
                    source: e,
                });
            }
        }
        self.verified_views.lock().unwrap().insert(artifact.hash);
        Ok(handed)
    }

    /// An object's bytes, verified against its name. A missing or damaged object is an
    /// error after it is taken out of the store (see [`Cache::drop_damaged`]).
    pub fn read_verified(&self, hash: &Hash) -> Result<Vec<u8>> {
        let r = self.objects.read(hash);
        self.on_damage(r)
    }

    /// Streams an object's bytes into `out`, verified as they go (for copies too large to
    /// hold in memory). On [`Error::MissingObject`] or [`Error::DamagedObject`] what was
    /// written to `out` must be discarded; the object has then been taken out of the
    /// store (see [`Cache::drop_damaged`]).
    pub fn copy_verified_to(&self, hash: &Hash, out: &mut dyn Write) -> Result<u64> {
        let r = self
            .objects
            .copy_verified(hash, out, Path::new("(the copy's destination)"));
        self.on_damage(r)
    }

    /// Passes `r` on; when it is a missing or damaged object, takes that object out of the
    /// store first (see [`Cache::drop_damaged`]).
    fn on_damage<T>(&self, r: Result<T>) -> Result<T> {
        if let Err(e) = &r {
            if let Some(hash) = e.damaged_object() {
                if let Err(d) = self.drop_damaged(&hash, &e.to_string()) {
                    tracing::warn!("cannot take object {} out of the cache: {d}", hash.short());
                }
            }
        }
        r
    }

    /// Takes a missing or damaged object out of the store (a damaged file goes to
    /// `quarantine/`) and drops every record that names it: their nodes are not cached
    /// any more and run again. Returns the node ids whose records were dropped.
    pub fn drop_damaged(&self, hash: &Hash, why: &str) -> Result<Vec<String>> {
        self.objects.quarantine(hash)?;
        self.verified_views.lock().unwrap().clear();
        let mut dropped = Vec::new();
        for rec in self.readable_records()?.0 {
            if rec.objects().contains(hash) {
                self.drop_record(&rec.key)?;
                dropped.push(rec.node);
            }
        }
        self.flush()?;
        tracing::warn!(
            "{why}: the cache does not hand it out; {}",
            if dropped.is_empty() {
                "no record names it".to_string()
            } else {
                format!(
                    "dropped the record of {}, which will run again",
                    dropped
                        .iter()
                        .map(|n| format!("`{n}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        );
        Ok(dropped)
    }

    /// Writes an object at `name` in `dir`: verified into a temp file beside it, then
    /// renamed over whatever is there (a folder there is removed first).
    fn write_verified(
        &self,
        dir: BorrowedFd<'_>,
        name: &str,
        path: &Path,
        hash: &Hash,
        exec: bool,
    ) -> Result<()> {
        let tmp = self.write_temp(dir, name, path, hash, exec)?;
        crate::failpoint::hit("restore-before-rename");
        if confined::entry_at(dir, name, path)? == Entry::Dir {
            confined::remove_at(dir, name, path)?;
        }
        rustix::fs::renameat(dir, tmp.as_str(), dir, name)
            .map_err(|e| Error::io("cannot rename into", path)(e.into()))
    }

    /// Writes an object, verified, into `.NAME.dagrun-tmp-PID` in `dir`; returns that
    /// name. Nothing is left behind when the object turns out damaged.
    fn write_temp(
        &self,
        dir: BorrowedFd<'_>,
        name: &str,
        path: &Path,
        hash: &Hash,
        exec: bool,
    ) -> Result<String> {
        let tmp = format!(".{name}.dagrun-tmp-{}", std::process::id());
        let fd = rustix::fs::openat(
            dir,
            tmp.as_str(),
            OFlags::RDWR | OFlags::CREATE | OFlags::TRUNC | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
        )
        .map_err(|e| Error::io("cannot create", path)(e.into()))?;
        let mut f = File::from(fd);
        let written = self
            .objects
            .copy_verified_to_file(hash, &mut f, path)
            .and_then(|_| set_mode(&f, path, exec));
        if let Err(e) = written {
            drop(f);
            let _ = rustix::fs::unlinkat(dir, tmp.as_str(), AtFlags::empty());
            return Err(e);
        }
        Ok(tmp)
    }
}

fn set_mode(f: &File, path: &Path, exec: bool) -> Result<()> {
    let mode = if exec { 0o755 } else { 0o644 };
    rustix::fs::fchmod(f, Mode::from_raw_mode(mode))
        .map_err(|e| Error::io("cannot chmod", path)(e.into()))
}

fn mkdir(dir: BorrowedFd<'_>, name: &str, path: &Path) -> Result<()> {
    match rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(0o777)) {
        Ok(()) | Err(rustix::io::Errno::EXIST) => Ok(()),
        Err(e) => Err(Error::io("cannot create", path)(e.into())),
    }
}

/// Whether every file of a view still has the bytes its name says.
fn view_intact(artifact: &Artifact, root: &Path) -> bool {
    let check = |path: &Path, want: &Hash| crate::hash_file(path).is_ok_and(|(h, _)| h == *want);
    match &artifact.entries {
        None => check(&root.join("file"), &artifact.hash),
        Some(entries) => entries.iter().all(|e| check(&root.join(&e.path), &e.hash)),
    }
}

/// Folders of a folder artifact being restored, opened once each (entries come sorted,
/// so the last one opened is usually the next one's).
struct Folders {
    top: OwnedFd,
    top_path: PathBuf,
    last: Option<(String, OwnedFd)>,
}

impl Folders {
    fn new(top: OwnedFd, top_path: PathBuf) -> Self {
        Folders {
            top,
            top_path,
            last: None,
        }
    }

    /// The open folder holding entry `rel` (made if needed) and the entry's file name.
    fn parent_of<'a>(&mut self, rel: &'a str) -> Result<(BorrowedFd<'_>, &'a str)> {
        let Some((folder, file)) = rel.rsplit_once('/') else {
            return Ok((self.top.as_fd(), rel));
        };
        if self.last.as_ref().map(|(f, _)| f.as_str()) != Some(folder) {
            let comps: Vec<&str> = folder.split('/').collect();
            if comps
                .iter()
                .any(|c| c.is_empty() || *c == "." || *c == "..")
            {
                return Err(Error::Io {
                    context: "refusing a path that is not inside its folder",
                    path: self.top_path.join(rel),
                    source: std::io::ErrorKind::InvalidInput.into(),
                });
            }
            let fd = confined::open_folders(self.top.as_fd(), &self.top_path, &comps, true)?
                .expect("created");
            self.last = Some((folder.to_string(), fd));
        }
        Ok((self.last.as_ref().expect("set").1.as_fd(), file))
    }
}

/// Removes the `.NAME.dagrun-tmp-PID` files an interrupted restore of `name` left in
/// `dir` (one listing of the folder).
fn remove_stale_temps(dir: BorrowedFd<'_>, name: &str, dest: &Path) {
    #[cfg(test)]
    STALE_SCANS.with(|c| c.set(c.get() + 1));
    let prefix = format!(".{name}.dagrun-tmp-");
    let parent = dest.parent().unwrap_or(Path::new("."));
    for n in confined::list(dir, parent).unwrap_or_default() {
        if n.starts_with(&prefix) && crate::is_restore_temp(&n) {
            let _ = rustix::fs::unlinkat(dir, n.as_str(), AtFlags::empty());
        }
    }
}

#[cfg(test)]
thread_local! {
    /// How many times this thread listed a folder for stale restore temp files.
    pub(crate) static STALE_SCANS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// The set of views this process verified (see [`Cache::materialize`]).
pub(crate) type VerifiedViews = std::sync::Mutex<HashSet<Hash>>;
