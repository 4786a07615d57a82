//! Hashing workspace files and folders, with a stat cache so that unchanged files are
//! not read again (what makes a no-op run fast).

use std::{
    cell::RefCell,
    collections::HashMap,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use dagrun_cache::{Artifact, ArtifactEntry, Cache, Confined, Entry, FileStat, Hash};

use crate::{
    error::{Error, Result},
    reason::Reason,
};

/// The workspace as dagrun sees it.
pub struct Workspace<'a> {
    pub root: PathBuf,
    cache: Option<&'a Cache>,
    /// Whether newly computed hashes may be written to the stat cache (not in a dry run).
    write: bool,
    memo: RefCell<HashMap<String, Option<Hash>>>,
    /// Folders never part of a folder's hash (the cache folder, Slurm staging): by path,
    /// and by device and inode where they exist.
    skip: Vec<PathBuf>,
    skip_ids: Vec<(u64, u64)>,
}

impl<'a> Workspace<'a> {
    pub fn new(root: &Path, cache: Option<&'a Cache>, write: bool) -> Self {
        Workspace {
            root: root.to_path_buf(),
            cache,
            write,
            memo: RefCell::new(HashMap::new()),
            skip: Vec::new(),
            skip_ids: Vec::new(),
        }
    }

    /// Leaves these folders out of every folder hash.
    pub fn skipping(mut self, dirs: Vec<PathBuf>) -> Self {
        use std::os::unix::fs::MetadataExt;
        for d in dirs {
            if let Ok(m) = std::fs::metadata(&d) {
                self.skip_ids.push((m.dev(), m.ino()));
            }
            self.skip.push(d);
        }
        self
    }

    fn skipped(&self, path: &Path, meta: &std::fs::Metadata) -> bool {
        use std::os::unix::fs::MetadataExt;
        self.skip.iter().any(|s| s == path) || self.skip_ids.contains(&(meta.dev(), meta.ino()))
    }

    pub fn abs(&self, rel: &str) -> PathBuf {
        if rel == "." {
            self.root.clone()
        } else {
            self.root.join(rel)
        }
    }

    /// Forget memoised hashes (after a node wrote into the workspace).
    pub fn invalidate(&self, rel: &str) {
        // No allocation per entry: this runs once per finished node over every memoised
        // path.
        self.memo.borrow_mut().retain(|k, _| {
            !(k == rel
                || k == "."
                || crate::pipeline::is_inside(k, rel)
                || crate::pipeline::is_inside(rel, k))
        });
    }

    /// The content hash of a workspace path (file or folder), `None` if it is missing.
    /// Equal to the hash of the artifact the cache would make of it.
    pub fn hash(&self, rel: &str) -> Result<Option<Hash>> {
        if let Some(h) = self.memo.borrow().get(rel) {
            return Ok(*h);
        }
        let p = self.abs(rel);
        let h = match std::fs::metadata(&p) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                return Err(Error::Io {
                    context: "cannot stat",
                    path: p,
                    source: e,
                })
            }
            Ok(m) if m.is_dir() => {
                let mut entries = Vec::new();
                self.walk(&p, &p, &mut entries)?;
                entries.sort_by(|a, b| a.path.cmp(&b.path));
                Some(Artifact::tree_hash(&entries))
            }
            Ok(m) => Some(self.file_hash(&p, &m)?),
        };
        self.memo.borrow_mut().insert(rel.to_string(), h);
        Ok(h)
    }

    /// The hash of a workspace folder as it will be once other nodes' outputs inside it
    /// are in place: `overlays` are (path inside the folder, artifact) pairs that replace
    /// whatever the workspace holds there now. `None` if the folder is missing and
    /// nothing is overlaid.
    pub fn hash_with(&self, rel: &str, overlays: &[(String, &Artifact)]) -> Result<Option<Hash>> {
        if overlays.is_empty() {
            return self.hash(rel);
        }
        let p = self.abs(rel);
        let mut entries = Vec::new();
        match std::fs::metadata(&p) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(Error::Io {
                    context: "cannot stat",
                    path: p,
                    source: e,
                })
            }
            Ok(m) if m.is_dir() => self.walk(&p, &p, &mut entries)?,
            // A file cannot hold outputs; it is what it is.
            Ok(m) => return Ok(Some(self.file_hash(&p, &m)?)),
        }
        entries.retain(|e| {
            !overlays
                .iter()
                .any(|(o, _)| e.path == *o || e.path.starts_with(&format!("{o}/")))
        });
        for (o, art) in overlays {
            match &art.entries {
                None => entries.push(ArtifactEntry {
                    path: o.clone(),
                    hash: art.hash,
                    size: art.size,
                    exec: art.exec,
                }),
                Some(inner) => entries.extend(inner.iter().map(|e| ArtifactEntry {
                    path: format!("{o}/{}", e.path),
                    ..e.clone()
                })),
            }
        }
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(Some(Artifact::tree_hash(&entries)))
    }

    /// Why removing or replacing workspace path `rel` (as a node does with its outputs
    /// before it runs, or a restore does) is not dagrun's to do, if it is not:
    /// - a folder on the way to it is a symbolic link ([`Reason::ThroughLink`]): dagrun
    ///   never writes or deletes through one;
    /// - something is there that no node of this cache ever wrote, and the cache does not
    ///   hold its content (a file, or every file of a folder), so it could not be
    ///   restored ([`Reason::WouldDelete`]); a symbolic link there is the user's unless
    ///   dagrun wrote it, dangling or not.
    pub fn in_the_way(&self, rel: &str) -> Result<Option<Reason>> {
        let would_delete = Some(Reason::WouldDelete {
            path: rel.to_string(),
        });
        let entry = match Confined::open(&self.root).and_then(|ws| ws.entry(rel)) {
            Ok(e) => e,
            Err(dagrun_cache::Error::ThroughLink { link, target, .. }) => {
                let link = link.strip_prefix(&self.root).unwrap_or(&link);
                return Ok(Some(Reason::ThroughLink {
                    path: rel.to_string(),
                    link: link.display().to_string(),
                    target: target.display().to_string(),
                }));
            }
            Err(e) => return Err(e.into()),
        };
        let p = self.abs(rel);
        let Some(cache) = self.cache else {
            return Ok(if entry == Entry::Missing {
                None
            } else {
                would_delete
            });
        };
        let meta = match entry {
            Entry::Missing => return Ok(None),
            _ if cache.output_claim(&p)?.is_some() => return Ok(None),
            Entry::Link { .. } | Entry::Other => return Ok(would_delete),
            Entry::File | Entry::Dir => {
                std::fs::symlink_metadata(&p).map_err(Error::io("cannot stat", &p))?
            }
        };
        let hashes = if meta.is_dir() {
            let mut entries = Vec::new();
            self.walk(&p, &p, &mut entries)?;
            entries.into_iter().map(|e| e.hash).collect()
        } else {
            vec![self.file_hash(&p, &meta)?]
        };
        for h in hashes {
            if !cache.contains_object(&h)? {
                return Ok(would_delete);
            }
        }
        Ok(None)
    }

    fn file_hash(&self, p: &Path, meta: &std::fs::Metadata) -> Result<Hash> {
        if !meta.is_file() {
            // Reading a FIFO or a character device (`/dev/zero`) would block or never
            // end: only regular files (and folders of them) are inputs.
            return Err(Error::Io {
                context: "cannot hash",
                path: p.to_path_buf(),
                source: std::io::Error::other(format!(
                    "it is {}, not a regular file or a folder",
                    special_kind(meta)
                )),
            });
        }
        if let Some(cache) = self.cache {
            if let Some(st) = cache.stat_get(p)? {
                if st.matches(meta) {
                    return Ok(st.hash);
                }
            }
        }
        let (hash, _) = dagrun_cache::hash_file(p)?;
        if self.write {
            self.remember(p, meta, hash)?;
        }
        Ok(hash)
    }

    fn remember(&self, p: &Path, meta: &std::fs::Metadata, hash: Hash) -> Result<()> {
        if let Some(cache) = self.cache {
            let stat = FileStat::of(meta, hash);
            // A file modified within the clock's resolution could change again without
            // changing its times: do not trust such a stat.
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as i128)
                .unwrap_or(0);
            if now - stat.changed_ns() > 2_000_000_000 {
                cache.stat_put(p, &stat)?;
            }
        }
        Ok(())
    }

    /// Records the hash of a file or folder dagrun just wrote (after ingesting it).
    pub fn remember_artifact(&self, rel: &str, art: &Artifact) -> Result<()> {
        self.invalidate(rel);
        if !self.write {
            return Ok(());
        }
        let p = self.abs(rel);
        match &art.entries {
            None => {
                if let Ok(m) = std::fs::metadata(&p) {
                    self.remember(&p, &m, art.hash)?;
                }
            }
            Some(entries) => {
                for e in entries {
                    let fp = p.join(&e.path);
                    if let Ok(m) = std::fs::metadata(&fp) {
                        self.remember(&fp, &m, e.hash)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn walk(&self, root: &Path, dir: &Path, out: &mut Vec<ArtifactEntry>) -> Result<()> {
        for entry in std::fs::read_dir(dir).map_err(Error::io("cannot list", dir))? {
            let entry = entry.map_err(Error::io("cannot list", dir))?;
            let path = entry.path();
            if dagrun_cache::is_restore_temp(&entry.file_name().to_string_lossy()) {
                // Left by an interrupted restore: not content (the cache ingests folders
                // the same way).
                continue;
            }
            let meta = std::fs::metadata(&path).map_err(Error::io("cannot stat", &path))?;
            if meta.is_dir() {
                if !self.skipped(&path, &meta) {
                    self.walk(root, &path, out)?;
                }
            } else {
                let rel = path.strip_prefix(root).expect("under root");
                let rel = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy())
                    .collect::<Vec<_>>()
                    .join("/");
                let hash = self.file_hash(&path, &meta)?;
                out.push(ArtifactEntry {
                    path: rel,
                    hash,
                    size: meta.len(),
                    exec: meta.permissions().mode() & 0o111 != 0,
                });
            }
        }
        Ok(())
    }
}

/// What a path that is neither a regular file nor a folder is, in words.
fn special_kind(meta: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "a special file"
    }
}

/// The hash of a path inside a folder artifact: a file's hash, or the tree hash of a
/// sub-folder. `None` if nothing is there.
pub fn sub_hash(art: &Artifact, sub: &str) -> Option<Hash> {
    let entries = art.entries.as_ref()?;
    if let Some(e) = entries.iter().find(|e| e.path == sub) {
        return Some(e.hash);
    }
    let prefix = format!("{sub}/");
    let inner: Vec<ArtifactEntry> = entries
        .iter()
        .filter_map(|e| {
            e.path.strip_prefix(&prefix).map(|p| ArtifactEntry {
                path: p.to_string(),
                ..e.clone()
            })
        })
        .collect();
    (!inner.is_empty()).then(|| Artifact::tree_hash(&inner))
}
