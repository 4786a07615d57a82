use std::{
    collections::HashSet,
    path::{Path, PathBuf},
};

use crate::{
    confined::{Confined, Entry},
    lock::CacheLock,
    objects::{db_err, Objects},
    seal::{IndexDamage, Seal},
    Artifact, ArtifactEntry, ArtifactType, Error, FileStat, Hash, Latest, Record, Result,
    RunSummary,
};

/// How to open a cache.
#[derive(Clone, Debug, Default)]
pub struct OpenOptions {
    /// Wait for another process to release the cache instead of failing.
    pub wait: bool,
    /// Who is opening it (shown to a second process that finds the cache locked).
    pub holder: String,
}

/// An open cache folder. Holds the folder's exclusive lock while alive.
pub struct Cache {
    pub(crate) dir: PathBuf,
    db: sled::Db,
    pub(crate) objects: Objects,
    seal: Seal,
    /// Views verified by this process ([`Cache::materialize`]).
    pub(crate) verified_views: crate::restore::VerifiedViews,
    /// Records found unreadable (reported once each).
    unreadable: std::sync::Mutex<HashSet<Vec<u8>>>,
    /// Node folders under tmp/ free for the next node ([`Cache::node_dir`]).
    node_dirs: std::sync::Mutex<Vec<PathBuf>>,
    /// Emptied scratch folders parked under tmp/ ([`Cache::make_scratch`]).
    free_scratch: std::sync::Mutex<Vec<PathBuf>>,
    pub(crate) records: sled::Tree,
    latest: sled::Tree,
    stat: sled::Tree,
    runs: sled::Tree,
    claims: sled::Tree,
    failures: sled::Tree,
    _lock: CacheLock,
}

/// The folders and records kept for reuse go when the cache is closed (the next open
/// would remove them anyway; this keeps `.dagrun/` tidy between runs).
impl Drop for Cache {
    fn drop(&mut self) {
        for pool in [&self.node_dirs, &self.free_scratch] {
            for d in pool.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
                let _ = std::fs::remove_dir_all(d);
            }
        }
        crate::procs::release_idle(&self.dir);
    }
}

/// What `cache gc` removed (or would remove).
#[derive(Debug, Default, Clone)]
pub struct GcReport {
    pub records_removed: usize,
    pub records_kept: usize,
    pub objects_removed: usize,
    pub bytes_freed: u64,
}

/// What [`Cache::import_record`] did with a record made elsewhere.
#[derive(Debug, Clone, PartialEq)]
pub enum Imported {
    /// The cache had no record under its key: it has this one now.
    Added,
    /// The cache had a record under its key with the same outputs: kept as it was.
    Present,
    /// The cache has a record under its key with other outputs: kept, not replaced.
    Differs(Box<Record>),
}

/// What `cache verify` found.
#[derive(Debug, Default, Clone)]
pub struct VerifyReport {
    pub objects_checked: usize,
    pub corrupt_objects: Vec<Hash>,
    pub records_dropped: Vec<String>,
    /// Records the index holds but that cannot be read (removed): `(key, why)`.
    pub unreadable_records: Vec<(String, String)>,
    /// Files in `objects-v1/` that are not objects (left alone).
    pub stray_files: Vec<PathBuf>,
    /// Damage to the index itself, found when the cache was opened (see `seal.rs`).
    pub index_damage: Option<IndexDamage>,
}

impl VerifyReport {
    /// Whether anything was wrong (stray files are not: they are only reported).
    pub fn is_clean(&self) -> bool {
        self.corrupt_objects.is_empty()
            && self.records_dropped.is_empty()
            && self.unreadable_records.is_empty()
            && self.index_damage.is_none()
    }
}

impl Cache {
    /// Opens (creating if needed) the cache in `dir`, taking its lock first.
    ///
    /// Two locks guard a cache: `flock` on `lock` (which also names the holder), then
    /// sled's own exclusive lock on `db/db`, taken before anything that could disturb
    /// another process (emptying `tmp/`, stopping leftover commands). `lock` stays behind
    /// after every run, and people delete stale-looking lock files; a second dagrun
    /// then gets a fresh `lock`, but not the index, and stops (or waits) there.
    pub fn open(dir: &Path, opts: &OpenOptions, on_wait: &dyn Fn(&str)) -> Result<Cache> {
        std::fs::create_dir_all(dir).map_err(Error::io("cannot create cache folder", dir))?;
        let lock = CacheLock::acquire(dir, &opts.holder, opts.wait, on_wait)?;
        // Whatever this command does may change what a no-op run would decide: the stamp
        // goes before anything can (a run that ends with everything cached writes it
        // again; see `stamp.rs`).
        crate::stamp::Stamp::remove(dir)
            .map_err(Error::io("cannot remove", &crate::stamp::Stamp::path(dir)))?;
        let db_path = dir.join("db");
        let db = open_index(dir, &db_path, opts.wait, on_wait)?;
        let tmp = dir.join("tmp");
        // Anything in tmp/ belongs to an interrupted writer: we hold the lock, so nobody
        // else is writing.
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(Error::io("cannot clean", &tmp))?;
        }
        std::fs::create_dir_all(&tmp).map_err(Error::io("cannot create", &tmp))?;
        // Commands a dagrun that died (`kill -9`) left running: we hold the lock, so they
        // belong to nobody; stop them before anything reruns in their place.
        crate::procs::kill_leftovers(dir);
        let tree = |name: &str| {
            db.open_tree(name).map_err(|source| Error::Db {
                path: db_path.clone(),
                source,
            })
        };
        let (seal, damage) = Seal::open(dir, tree("meta-v1")?)?;
        if let Some(d) = &damage {
            tracing::warn!("{d}");
        }
        let objects = Objects {
            root: dir.join("objects-v1"),
            quarantine: dir.join("quarantine"),
            tmp,
            blobs: tree("blobs-v1")?,
        };
        Ok(Cache {
            dir: dir.to_path_buf(),
            records: tree("records-v1")?,
            latest: tree("latest-v1")?,
            stat: tree("stat-v1")?,
            runs: tree("runs-v1")?,
            claims: tree("claims-v1")?,
            failures: tree("failures-v1")?,
            db,
            objects,
            seal,
            verified_views: Default::default(),
            unreadable: Default::default(),
            node_dirs: Default::default(),
            free_scratch: Default::default(),
            _lock: lock,
        })
    }

    /// Whether `dir` holds a cache at all (without opening or creating it).
    pub fn exists(dir: &Path) -> bool {
        dir.join("db").exists()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    // ---- records -------------------------------------------------------------------

    pub fn record(&self, key: &Hash) -> Result<Option<Record>> {
        self.decode_record(key)
    }

    /// The outputs and timing of a record, without decoding the rest.
    pub fn record_head(&self, key: &Hash) -> Result<Option<crate::RecordHead>> {
        self.decode_record(key)
    }

    /// A record that cannot be read (damaged bytes, a format this version does not know)
    /// is reported once and treated as absent: its node runs again, and the new record
    /// replaces it.
    fn decode_record<T: serde::de::DeserializeOwned>(&self, key: &Hash) -> Result<Option<T>> {
        match self.records.get(key.0).map_err(db_err)? {
            None => Ok(None),
            Some(v) => match serde_json::from_slice(&v) {
                Ok(r) => Ok(Some(r)),
                Err(e) => {
                    self.report_unreadable(&key.0, &e.to_string());
                    Ok(None)
                }
            },
        }
    }

    fn report_unreadable(&self, key: &[u8], why: &str) {
        if self.unreadable.lock().unwrap().insert(key.to_vec()) {
            tracing::warn!(
                "the cache's record {} is unreadable ({why}): treated as not cached \
                 (`dagrun cache verify` removes it)",
                hex_short(key)
            );
        }
    }

    pub fn has_record(&self, key: &Hash) -> Result<bool> {
        self.records.contains_key(key.0).map_err(db_err)
    }

    /// Commits a record and points the node's `latest` entry at it, then flushes the
    /// index. Call only after every object the record names is stored (they are durable
    /// as soon as the `put_*` call returns).
    pub fn commit(&self, record: &Record) -> Result<()> {
        self.insert_record(record)?;
        self.flush()
    }

    /// The first half of [`Cache::commit`], for group commit: inserts the record and its
    /// `latest` entry without flushing. Neither is durable until the next
    /// [`Cache::flush`]; the caller flushes once for every record inserted together, and
    /// inserts a record only once the objects it names, and the records of the inputs it
    /// was computed from, have been flushed.
    pub fn insert_record(&self, record: &Record) -> Result<()> {
        for obj in record.objects() {
            if !self.objects.contains(&obj)? {
                return Err(Error::MissingObject(obj.to_hex()));
            }
        }
        let bytes = serde_json::to_vec(record).expect("records serialise");
        let latest = Latest {
            key: record.key,
            pipeline: record.pipeline.clone(),
            at: record.timing.finished,
        };
        self.records.insert(record.key.0, bytes).map_err(db_err)?;
        self.latest
            .insert(
                record.node.as_bytes(),
                serde_json::to_vec(&latest).expect("serialises"),
            )
            .map_err(db_err)?;
        Ok(())
    }

    /// The last committed key of a node id.
    /// An unreadable entry is treated as absent (the node's next success rewrites it).
    pub fn latest(&self, node: &str) -> Result<Option<Latest>> {
        Ok(self
            .latest
            .get(node.as_bytes())
            .map_err(db_err)?
            .and_then(|v| serde_json::from_slice(&v).ok()))
    }

    /// Every node id with a committed record, and its latest entry.
    pub fn latest_all(&self) -> Result<Vec<(String, Latest)>> {
        let mut out = Vec::new();
        for item in self.latest.iter() {
            let (k, v) = item.map_err(db_err)?;
            if let Ok(l) = serde_json::from_slice(&v) {
                out.push((String::from_utf8_lossy(&k).into_owned(), l));
            }
        }
        Ok(out)
    }

    /// Points a node at an existing record (a cached node that the latest run used).
    pub fn set_latest(&self, node: &str, latest: &Latest) -> Result<()> {
        self.latest
            .insert(
                node.as_bytes(),
                serde_json::to_vec(latest).expect("serialises"),
            )
            .map_err(db_err)?;
        Ok(())
    }

    /// Every readable record (unreadable ones are reported and left out).
    pub fn records(&self) -> Result<Vec<Record>> {
        Ok(self.readable_records()?.0)
    }

    /// Every readable record, and the keys of those that cannot be read with why.
    pub(crate) fn readable_records(&self) -> Result<(Vec<Record>, Vec<Unreadable>)> {
        let mut out = Vec::new();
        let mut bad = Vec::new();
        for item in self.records.iter() {
            let (k, v) = item.map_err(db_err)?;
            match serde_json::from_slice(&v) {
                Ok(r) => out.push(r),
                Err(e) => {
                    self.report_unreadable(&k, &e.to_string());
                    bad.push((k, e.to_string()));
                }
            }
        }
        Ok((out, bad))
    }

    /// Every readable record of the given node ids: every variant (key) the cache holds
    /// for each of them, whichever run made it. The index is keyed by key, not by node,
    /// so this reads every record once, decoding in full only the ones asked for.
    pub fn records_of(&self, nodes: &HashSet<&str>) -> Result<Vec<Record>> {
        #[derive(serde::Deserialize)]
        struct NodeOnly<'a> {
            #[serde(borrow)]
            node: std::borrow::Cow<'a, str>,
        }
        let mut out = Vec::new();
        for item in self.records.iter() {
            let (k, v) = item.map_err(db_err)?;
            let Ok(head) = serde_json::from_slice::<NodeOnly>(&v) else {
                continue;
            };
            if !nodes.contains(head.node.as_ref()) {
                continue;
            }
            match serde_json::from_slice(&v) {
                Ok(r) => out.push(r),
                Err(e) => self.report_unreadable(&k, &e.to_string()),
            }
        }
        Ok(out)
    }

    /// Removes the record of `key` (its objects stay until `cache gc`).
    pub fn drop_record(&self, key: &Hash) -> Result<()> {
        self.records.remove(key.0).map_err(db_err)?;
        Ok(())
    }

    /// Makes every write so far durable (and notes it in the index's seal, see
    /// `seal.rs`).
    pub fn flush(&self) -> Result<()> {
        let generation = self.seal.next()?;
        self.db.flush().map_err(db_err)?;
        self.seal.sealed(generation);
        Ok(())
    }

    // ---- objects -------------------------------------------------------------------

    pub fn put_bytes(&self, bytes: &[u8]) -> Result<Hash> {
        self.objects.put_bytes(bytes)
    }

    /// An object's bytes, verified against its name: the same as
    /// [`Cache::read_verified`].
    pub fn read_bytes(&self, hash: &Hash) -> Result<Vec<u8>> {
        self.read_verified(hash)
    }

    pub fn contains_object(&self, hash: &Hash) -> Result<bool> {
        self.objects.contains(hash)
    }

    // ---- records and objects made elsewhere (a remote cache) -----------------------

    /// The file holding a large object, `None` for a small one (kept in the index) or
    /// one this cache lacks. Object files are read-only and never change while the
    /// cache is open (its lock keeps `gc` and `verify` out).
    pub fn object_file(&self, hash: &Hash) -> Option<PathBuf> {
        let p = self.objects.file_path(hash);
        p.is_file().then_some(p)
    }

    /// Stores `file`, a file under this cache's `tmp/` whose bytes the caller has just
    /// checked to hash to `hash` (a download verified while it streamed), as object
    /// `hash`: moved into place (fsync, read-only, rename) or, when small, copied into
    /// the index. The file is gone afterwards.
    pub fn adopt_object(&self, file: &Path, hash: &Hash) -> Result<()> {
        let len = std::fs::metadata(file)
            .map_err(Error::io("cannot stat", file))?
            .len();
        if len <= crate::SMALL_OBJECT_LIMIT {
            let bytes = std::fs::read(file).map_err(Error::io("cannot read", file))?;
            let _ = std::fs::remove_file(file);
            let stored = self.objects.put_bytes(&bytes)?;
            if stored != *hash {
                return Err(Error::DamagedObject {
                    hash: hash.to_hex(),
                    detail: format!("the bytes adopted as `{hash}` hash to `{stored}`"),
                });
            }
            return Ok(());
        }
        let dest = self.objects.file_path(hash);
        // A copy of the same size is kept; one truncated or extended on disk is replaced
        // (as storing the same bytes again does).
        if std::fs::metadata(&dest).is_ok_and(|m| m.len() == len) {
            let _ = std::fs::remove_file(file);
            return Ok(());
        }
        let f = std::fs::File::open(file).map_err(Error::io("cannot open", file))?;
        self.objects.publish(f, file, &dest)
    }

    /// Adds a record made elsewhere (pulled from a remote cache) without pointing the
    /// node's `latest` entry at it: it is cached, not run here. Every object it names
    /// must be stored already. A record already under the same key is never replaced:
    /// [`Imported::Differs`] hands it back when its outputs are not the same (a
    /// non-deterministic node, or a bug). Not flushed: call [`Cache::flush`] after a batch.
    pub fn import_record(&self, record: &Record) -> Result<Imported> {
        for obj in record.objects() {
            if !self.objects.contains(&obj)? {
                return Err(Error::MissingObject(obj.to_hex()));
            }
        }
        let bytes = serde_json::to_vec(record).expect("records serialise");
        let swapped = self
            .records
            .compare_and_swap(record.key.0, None as Option<&[u8]>, Some(bytes))
            .map_err(db_err)?;
        match swapped {
            Ok(()) => Ok(Imported::Added),
            Err(_) => match self.record(&record.key)? {
                Some(local) if local.outputs != record.outputs => {
                    Ok(Imported::Differs(Box::new(local)))
                }
                _ => Ok(Imported::Present),
            },
        }
    }

    /// Stores a workspace file or directory as an artifact.
    pub fn ingest(&self, path: &Path, kind: ArtifactType) -> Result<Artifact> {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(path).map_err(Error::io("cannot read output", path))?;
        if meta.is_file() {
            let (hash, size) = self.objects.put_file(path)?;
            let exec = meta.permissions().mode() & 0o111 != 0;
            return Ok(Artifact {
                kind,
                hash,
                size,
                entries: None,
                exec,
            });
        }
        if !meta.is_dir() {
            return Err(Error::Unsupported(path.to_path_buf()));
        }
        let mut files = Vec::new();
        walk(path, path, &mut files)?;
        files.sort();
        let mut entries = Vec::with_capacity(files.len());
        let mut total = 0;
        for rel in files {
            let full = path.join(&rel);
            let meta = std::fs::metadata(&full).map_err(Error::io("cannot read output", &full))?;
            let (hash, size) = self.objects.put_file(&full)?;
            total += size;
            entries.push(ArtifactEntry {
                path: rel,
                hash,
                size,
                exec: meta.permissions().mode() & 0o111 != 0,
            });
        }
        Ok(Artifact {
            kind,
            hash: Artifact::tree_hash(&entries),
            size: total,
            entries: Some(entries),
            exec: false,
        })
    }

    // ---- workspace stat cache ------------------------------------------------------

    pub fn stat_get(&self, path: &Path) -> Result<Option<FileStat>> {
        use std::os::unix::ffi::OsStrExt;
        Ok(self
            .stat
            .get(path.as_os_str().as_bytes())
            .map_err(db_err)?
            .and_then(|v| serde_json::from_slice(&v).ok()))
    }

    pub fn stat_put(&self, path: &Path, stat: &FileStat) -> Result<()> {
        use std::os::unix::ffi::OsStrExt;
        self.stat
            .insert(
                path.as_os_str().as_bytes(),
                serde_json::to_vec(stat).expect("serialises"),
            )
            .map_err(db_err)?;
        Ok(())
    }

    // ---- failures ------------------------------------------------------------------

    /// Notes that the last execution of `node` failed.
    pub fn record_failure(&self, node: &str, failure: &crate::NodeFailure) -> Result<()> {
        self.failures
            .insert(
                node.as_bytes(),
                serde_json::to_vec(failure).expect("serialises"),
            )
            .map_err(db_err)?;
        self.flush()
    }

    /// The last failed execution of `node`, unless it has succeeded since.
    pub fn failure(&self, node: &str) -> Result<Option<crate::NodeFailure>> {
        Ok(self
            .failures
            .get(node.as_bytes())
            .map_err(db_err)?
            .and_then(|v| serde_json::from_slice(&v).ok()))
    }

    /// Forgets a node's failure (it has just succeeded).
    pub fn clear_failure(&self, node: &str) -> Result<()> {
        self.failures.remove(node.as_bytes()).map_err(db_err)?;
        Ok(())
    }

    // ---- workspace outputs dagrun writes -------------------------------------------

    /// Notes that node `node` is about to write the workspace output at `path` (before
    /// removing what is there): whatever is at `path` afterwards is dagrun's, even if
    /// the node fails or is killed before its record is committed.
    pub fn claim_output(&self, path: &Path, node: &str) -> Result<()> {
        use std::os::unix::ffi::OsStrExt;
        self.claims
            .insert(path.as_os_str().as_bytes(), node.as_bytes())
            .map_err(db_err)?;
        self.flush()
    }

    /// [`Cache::claim_output`] for many outputs at once, with one flush (none for no
    /// output): the outputs of every node a run may run are claimed before the first
    /// starts.
    pub fn claim_outputs<'p>(
        &self,
        claims: impl IntoIterator<Item = (&'p Path, &'p str)>,
    ) -> Result<()> {
        use std::os::unix::ffi::OsStrExt;
        let mut any = false;
        for (path, node) in claims {
            self.claims
                .insert(path.as_os_str().as_bytes(), node.as_bytes())
                .map_err(db_err)?;
            any = true;
        }
        if any {
            self.flush()?;
        }
        Ok(())
    }

    /// The node that last claimed the workspace output at `path`, if any.
    pub fn output_claim(&self, path: &Path) -> Result<Option<String>> {
        use std::os::unix::ffi::OsStrExt;
        Ok(self
            .claims
            .get(path.as_os_str().as_bytes())
            .map_err(db_err)?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    // ---- scratch, logs, runs -------------------------------------------------------

    /// The scratch folder of a node key: kept across interruptions, removed on commit.
    pub fn scratch_dir(&self, key: &Hash) -> PathBuf {
        self.dir.join("scratch").join(key.to_hex())
    }

    /// Makes the scratch folder of `key` exist: as it was left (an interrupted node), or
    /// an empty one — moved into place from those earlier nodes of this process left
    /// empty ([`Cache::remove_scratch`]) when there is one, so that a run of many short
    /// nodes does not create and delete a folder per node (see [`Cache::node_dir`]).
    pub fn make_scratch(&self, key: &Hash) -> Result<PathBuf> {
        let d = self.scratch_dir(key);
        if d.is_dir() {
            return Ok(d);
        }
        let free = self
            .free_scratch
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop();
        if let Some(free) = free {
            if std::fs::rename(&free, &d).is_ok() {
                return Ok(d);
            }
            let _ = std::fs::remove_dir_all(&free);
        }
        std::fs::create_dir_all(&d).map_err(Error::io("cannot create", &d))?;
        Ok(d)
    }

    /// Removes the scratch folder of `key` (its node's record is durable). An empty one is
    /// parked under tmp/ for [`Cache::make_scratch`] instead.
    pub fn remove_scratch(&self, key: &Hash) -> Result<()> {
        let d = self.scratch_dir(key);
        let empty = match std::fs::read_dir(&d) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Ok(mut entries) => entries.next().is_none(),
            Err(_) => false,
        };
        if empty {
            let parked = self.objects.temp_path();
            if std::fs::rename(&d, &parked).is_ok() {
                self.free_scratch
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(parked);
                return Ok(());
            }
        }
        std::fs::remove_dir_all(&d).map_err(Error::io("cannot remove", &d))
    }

    /// A folder under tmp/ for one running node (its log, its `out/`), with nothing in it
    /// but possibly an emptied `log` file: a folder an earlier node of this process gave
    /// back ([`Cache::recycle_node_dir`]), else a new one. Reusing folders keeps a run of
    /// many short nodes from creating and deleting inodes for every node: ext4 makes each
    /// new inode skip the recently deleted ones (`recently_deleted`), which made a
    /// 1,000-node run's cost grow with the square of its length (docs/benchmarks.md,
    /// issue 19). Whatever is under tmp/ is removed when the cache is next opened.
    pub fn node_dir(&self) -> Result<PathBuf> {
        if let Some(d) = self
            .node_dirs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
        {
            return Ok(d);
        }
        self.temp_dir()
    }

    /// Gives a node folder back for reuse: everything in it but `log` is removed and
    /// `log` is emptied. A folder that cannot be emptied is removed (or left for the next
    /// open's cleaning) and not reused.
    pub fn recycle_node_dir(&self, dir: PathBuf) {
        let emptied = (|| -> std::io::Result<()> {
            for e in std::fs::read_dir(&dir)? {
                let e = e?;
                if e.file_name() == "log" && e.file_type()?.is_file() {
                    std::fs::OpenOptions::new()
                        .write(true)
                        .open(e.path())?
                        .set_len(0)?;
                } else if e.file_type()?.is_dir() {
                    std::fs::remove_dir_all(e.path())?;
                } else {
                    std::fs::remove_file(e.path())?;
                }
            }
            Ok(())
        })();
        match emptied {
            Ok(()) => self
                .node_dirs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(dir),
            Err(_) => {
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
    }

    /// A fresh, empty folder under tmp/ (removed when the cache is next opened).
    pub fn temp_dir(&self) -> Result<PathBuf> {
        let d = self.objects.temp_path();
        std::fs::create_dir_all(&d).map_err(Error::io("cannot create", &d))?;
        Ok(d)
    }

    /// Where the log of a failed node is kept.
    pub fn failure_log_path(&self, node: &str) -> PathBuf {
        let safe: String = node
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "-_=.,".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.dir.join("logs").join(format!("{safe}.log"))
    }

    pub fn log_run(&self, run: &RunSummary) -> Result<()> {
        let id = self.db.generate_id().map_err(db_err)?;
        self.runs
            .insert(
                id.to_be_bytes(),
                serde_json::to_vec(run).expect("serialises"),
            )
            .map_err(db_err)?;
        self.flush()
    }

    pub fn runs(&self) -> Result<Vec<RunSummary>> {
        let mut out = Vec::new();
        for item in self.runs.iter() {
            let (_, v) = item.map_err(db_err)?;
            if let Ok(r) = serde_json::from_slice(&v) {
                out.push(r);
            }
        }
        Ok(out)
    }

    // ---- maintenance ---------------------------------------------------------------

    /// Removes every record whose key is not in `keep` (and every unreadable one), then
    /// every object no kept record refers to. With `dry_run`, only counts.
    ///
    /// The order survives a kill at any point: the removal of records is made durable
    /// before the first object they named is deleted, so no record is ever left naming a
    /// deleted object. Files in `objects-v1/` that are not objects are left alone.
    pub fn gc(&self, keep: &HashSet<Hash>, dry_run: bool) -> Result<GcReport> {
        let mut report = GcReport::default();
        let mut live: HashSet<Hash> = HashSet::new();
        // Artifacts of kept records: their views stay (a Slurm job left running may be
        // reading one).
        let mut live_views: HashSet<String> = HashSet::new();
        let (records, unreadable) = self.readable_records()?;
        for rec in records {
            if keep.contains(&rec.key) {
                report.records_kept += 1;
                live.extend(rec.objects());
                live_views.extend(rec.outputs.values().map(|a| a.hash.to_hex()));
            } else {
                report.records_removed += 1;
                if !dry_run {
                    self.records.remove(rec.key.0).map_err(db_err)?;
                }
            }
        }
        for (k, _) in unreadable {
            report.records_removed += 1;
            if !dry_run {
                self.records.remove(k).map_err(db_err)?;
            }
        }
        if !dry_run {
            for (node, latest) in self.latest_all()? {
                if !keep.contains(&latest.key) {
                    self.latest.remove(node.as_bytes()).map_err(db_err)?;
                }
            }
            // Durable before any object goes.
            self.flush()?;
            crate::failpoint::hit("gc-records-removed");
        }
        for item in self.objects.blobs.iter() {
            let (k, v) = item.map_err(db_err)?;
            let mut h = [0u8; 32];
            if k.len() == 32 {
                h.copy_from_slice(&k);
            }
            if !live.contains(&Hash(h)) {
                report.objects_removed += 1;
                report.bytes_freed += v.len() as u64;
                if !dry_run {
                    self.objects.blobs.remove(k).map_err(db_err)?;
                }
            }
        }
        let files = self.object_files()?;
        for (hash, path) in files.objects {
            if !live.contains(&hash) {
                report.objects_removed += 1;
                report.bytes_freed += std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                if !dry_run {
                    std::fs::remove_file(&path).map_err(Error::io("cannot remove", &path))?;
                    crate::failpoint::hit("gc-object-removed");
                }
            }
        }
        if !dry_run {
            // Scratch folders are named by key: those of keys still referenced hold the
            // checkpoints of interrupted nodes (or of Slurm jobs still running) and stay.
            // Quarantined objects go.
            let kept_keys: HashSet<String> = keep.iter().map(|k| k.to_hex()).collect();
            let nothing = HashSet::new();
            for (extra, kept) in [
                ("views-v1", &live_views),
                ("scratch", &kept_keys),
                ("quarantine", &nothing),
            ] {
                let d = self.dir.join(extra);
                let Ok(rd) = std::fs::read_dir(&d) else {
                    continue;
                };
                for e in rd.flatten() {
                    if kept.contains(e.file_name().to_string_lossy().as_ref()) {
                        continue;
                    }
                    let path = e.path();
                    report.bytes_freed += if path.is_dir() {
                        dir_size(&path)
                    } else {
                        e.metadata().map(|m| m.len()).unwrap_or(0)
                    };
                    let r = if path.is_dir() {
                        std::fs::remove_dir_all(&path)
                    } else {
                        std::fs::remove_file(&path)
                    };
                    r.map_err(Error::io("cannot remove", &path))?;
                }
            }
            self.flush()?;
        }
        Ok(report)
    }

    /// Rehashes every object. Corrupt objects are taken out of the store (files go to
    /// `quarantine/`), and every record that refers to a corrupt or missing object is
    /// dropped, so that its node simply runs again; so are records that cannot be read.
    /// Files in `objects-v1/` that are not objects are reported and left alone, and
    /// damage to the index found when the cache was opened is reported (once).
    pub fn verify(&self) -> Result<VerifyReport> {
        let mut report = VerifyReport {
            index_damage: self.seal.take_damage()?,
            ..Default::default()
        };
        let mut bad: HashSet<Hash> = HashSet::new();
        for item in self.objects.blobs.iter() {
            let (k, v) = item.map_err(db_err)?;
            report.objects_checked += 1;
            if k.len() != 32 || crate::hash_bytes(&v).0[..] != k[..] {
                let mut h = [0u8; 32];
                h[..k.len().min(32)].copy_from_slice(&k[..k.len().min(32)]);
                bad.insert(Hash(h));
                self.objects.blobs.remove(k).map_err(db_err)?;
            }
        }
        let files = self.object_files()?;
        report.stray_files = files.stray;
        for (hash, _) in files.objects {
            report.objects_checked += 1;
            match self.objects.check(&hash) {
                Ok(()) => {}
                Err(e) if e.damaged_object().is_some() => {
                    bad.insert(hash);
                    self.objects.quarantine(&hash)?;
                }
                Err(e) => return Err(e),
            }
        }
        let (records, unreadable) = self.readable_records()?;
        for rec in records {
            let mut broken = false;
            for obj in rec.objects() {
                if bad.contains(&obj) || !self.objects.contains(&obj)? {
                    broken = true;
                }
            }
            if broken {
                self.records.remove(rec.key.0).map_err(db_err)?;
                report.records_dropped.push(rec.node.clone());
            }
        }
        for (k, why) in unreadable {
            self.records.remove(&k).map_err(db_err)?;
            report.unreadable_records.push((hex_short(&k), why));
        }
        // Views may hold links to removed objects: they are rebuilt on demand.
        let views = self.dir.join("views-v1");
        if !bad.is_empty() && views.exists() {
            std::fs::remove_dir_all(&views).map_err(Error::io("cannot remove", &views))?;
        }
        report.corrupt_objects = bad.into_iter().collect();
        report.corrupt_objects.sort();
        self.flush()?;
        Ok(report)
    }

    /// The object files in `objects-v1/`, and the files there that are not objects (a
    /// `.DS_Store`, a copy someone left): those are dagrun's to report, not to delete.
    fn object_files(&self) -> Result<ObjectFiles> {
        let mut out = ObjectFiles::default();
        let root = &self.objects.root;
        if !root.exists() {
            return Ok(out);
        }
        for shard in std::fs::read_dir(root).map_err(Error::io("cannot list", root))? {
            let shard = shard.map_err(Error::io("cannot list", root))?;
            let prefix = shard.file_name().to_string_lossy().into_owned();
            let is_shard = prefix.len() == 2
                && prefix.bytes().all(|b| b.is_ascii_hexdigit())
                && shard.file_type().is_ok_and(|t| t.is_dir());
            if !is_shard {
                out.stray.push(shard.path());
                continue;
            }
            for f in
                std::fs::read_dir(shard.path()).map_err(Error::io("cannot list", shard.path()))?
            {
                let f = f.map_err(Error::io("cannot list", shard.path()))?;
                let name = format!("{prefix}{}", f.file_name().to_string_lossy());
                match name.parse::<Hash>() {
                    Ok(h) if h.to_hex() == name && f.file_type().is_ok_and(|t| t.is_file()) => {
                        out.objects.push((h, f.path()))
                    }
                    _ => out.stray.push(f.path()),
                }
            }
        }
        Ok(out)
    }

    /// Stores a workspace output (`rel` under `root`) as an artifact: as
    /// [`Cache::ingest`], but a symbolic link on the way to it is refused (a link at the
    /// output itself is read through, as a file).
    pub fn ingest_output(&self, root: &Path, rel: &str, kind: ArtifactType) -> Result<Artifact> {
        let ws = Confined::open(root)?;
        match ws.entry(rel)? {
            Entry::Missing => Err(Error::Io {
                context: "cannot read output",
                path: ws.path(rel),
                source: std::io::ErrorKind::NotFound.into(),
            }),
            _ => self.ingest(&ws.path(rel), kind),
        }
    }
}

/// A record's key in the index, and why its value cannot be read.
pub(crate) type Unreadable = (sled::IVec, String);

/// What `objects-v1/` holds.
#[derive(Default)]
struct ObjectFiles {
    objects: Vec<(Hash, PathBuf)>,
    stray: Vec<PathBuf>,
}

/// The first 12 hex digits of a record key (or of whatever bytes a damaged index holds).
fn hex_short(key: &[u8]) -> String {
    key.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

/// Opens the index. sled takes an exclusive lock on `db/db`: when another process holds
/// it (one whose `lock` file was deleted), this is the cache being busy.
fn open_index(dir: &Path, db_path: &Path, wait: bool, on_wait: &dyn Fn(&str)) -> Result<sled::Db> {
    let mut waited = false;
    loop {
        let r = sled::Config::new()
            .path(db_path)
            .flush_every_ms(Some(500))
            .open();
        match r {
            Ok(db) => return Ok(db),
            Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock") => {
                let holder = crate::lock::index_holder(&db_path.join("db"));
                if !wait {
                    return Err(Error::Locked {
                        path: dir.to_path_buf(),
                        holder,
                    });
                }
                if !waited {
                    on_wait(&holder);
                    waited = true;
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Err(source) => {
                return Err(Error::Db {
                    path: db_path.to_path_buf(),
                    source,
                })
            }
        }
    }
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(Error::io("cannot list", dir))? {
        let entry = entry.map_err(Error::io("cannot list", dir))?;
        let path = entry.path();
        let ft = entry.file_type().map_err(Error::io("cannot stat", &path))?;
        if ft.is_dir() {
            walk(root, &path, out)?;
        } else if crate::is_restore_temp(&entry.file_name().to_string_lossy()) {
            // Left by an interrupted restore: not content.
        } else if ft.is_file() || (ft.is_symlink() && path.is_file()) {
            let rel = path.strip_prefix(root).expect("under root");
            out.push(
                rel.components()
                    .map(|c| c.as_os_str().to_string_lossy())
                    .collect::<Vec<_>>()
                    .join("/"),
            );
        } else {
            return Err(Error::Unsupported(path));
        }
    }
    Ok(())
}

fn dir_size(d: &Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(d) {
        for e in rd.flatten() {
            match e.file_type() {
                Ok(ft) if ft.is_dir() => total += dir_size(&e.path()),
                Ok(_) => total += e.metadata().map(|m| m.len()).unwrap_or(0),
                Err(_) => {}
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::{Metrics, Timing};

    fn open(dir: &Path) -> Cache {
        Cache::open(
            dir,
            &OpenOptions {
                wait: false,
                holder: "test".into(),
            },
            &|_| {},
        )
        .unwrap()
    }

    fn record_for(node: &str, key: Hash, outputs: BTreeMap<String, Artifact>) -> Record {
        let now = chrono::Utc::now();
        Record {
            key,
            node: node.into(),
            kind: "command".into(),
            kind_version: 1,
            components: serde_json::json!({}),
            outputs,
            metrics: Metrics::default(),
            timing: Timing {
                started: now,
                finished: now,
                seconds: 0.0,
            },
            log: None,
            engine_version: "test".into(),
            pipeline: "p.yaml".into(),
            param_refs: Default::default(),
        }
    }

    #[test]
    fn records_of_finds_every_variant_of_the_nodes_asked_for() {
        let ws = tempfile::tempdir().unwrap();
        let cache = open(&ws.path().join(".dagrun"));
        for (node, k) in [("a", b"1"), ("a", b"2"), ("b", b"3")] {
            cache
                .commit(&record_for(node, crate::hash_bytes(k), BTreeMap::new()))
                .unwrap();
        }
        let got = |ids: &[&str]| {
            let mut keys: Vec<Hash> = cache
                .records_of(&ids.iter().copied().collect())
                .unwrap()
                .into_iter()
                .map(|r| r.key)
                .collect();
            keys.sort_by_key(|k| k.to_hex());
            keys
        };
        let mut want = vec![crate::hash_bytes(b"1"), crate::hash_bytes(b"2")];
        want.sort_by_key(|k| k.to_hex());
        assert_eq!(got(&["a"]), want);
        assert_eq!(got(&["b"]), vec![crate::hash_bytes(b"3")]);
        assert!(got(&["c"]).is_empty());
    }

    #[test]
    fn small_and_large_files_round_trip() {
        let ws = tempfile::tempdir().unwrap();
        let cache = open(&ws.path().join(".dagrun"));
        let small = ws.path().join("small.txt");
        let large = ws.path().join("large.bin");
        std::fs::write(&small, b"hi").unwrap();
        let big: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&large, &big).unwrap();
        let a = cache.ingest(&small, ArtifactType::File).unwrap();
        let b = cache.ingest(&large, ArtifactType::File).unwrap();
        assert_eq!(b.hash, crate::hash_bytes(&big));
        assert!(
            cache.objects.file_path(&b.hash).exists(),
            "large objects are files"
        );
        assert!(
            !cache.objects.file_path(&a.hash).exists(),
            "small objects live in sled"
        );
        std::fs::remove_file(&small).unwrap();
        std::fs::remove_file(&large).unwrap();
        cache.restore_output(&a, ws.path(), "small.txt").unwrap();
        cache.restore_output(&b, ws.path(), "large.bin").unwrap();
        assert_eq!(std::fs::read(&small).unwrap(), b"hi");
        assert_eq!(std::fs::read(&large).unwrap(), big);
    }

    #[test]
    fn directory_artifacts_hash_their_tree() {
        let ws = tempfile::tempdir().unwrap();
        let cache = open(&ws.path().join(".dagrun"));
        let d = ws.path().join("out");
        std::fs::create_dir_all(d.join("sub")).unwrap();
        std::fs::write(d.join("a.txt"), b"a").unwrap();
        std::fs::write(d.join("sub/b.txt"), b"b").unwrap();
        let art = cache.ingest(&d, ArtifactType::Dataset).unwrap();
        let names: Vec<_> = art
            .entries
            .as_ref()
            .unwrap()
            .iter()
            .map(|e| e.path.clone())
            .collect();
        assert_eq!(names, ["a.txt", "sub/b.txt"]);
        std::fs::write(d.join("sub/b.txt"), b"B").unwrap();
        let art2 = cache.ingest(&d, ArtifactType::Dataset).unwrap();
        assert_ne!(art.hash, art2.hash);
        let view = cache.materialize(&art).unwrap();
        assert_eq!(std::fs::read(view.join("sub/b.txt")).unwrap(), b"b");
    }

    #[test]
    fn restores_look_for_stale_temp_files_once_per_output_not_per_file() {
        use crate::restore::STALE_SCANS;
        let scans = || STALE_SCANS.with(|c| c.get());
        let ws = tempfile::tempdir().unwrap();
        let cache = open(&ws.path().join(".dagrun"));
        // A top-level file output: the temp file an interrupted restore left is removed.
        let f = ws.path().join("out.txt");
        std::fs::write(&f, b"v1").unwrap();
        let fa = cache.ingest(&f, ArtifactType::File).unwrap();
        let stale = ws.path().join(".out.txt.dagrun-tmp-999999");
        let other = ws.path().join(".other.txt.dagrun-tmp-999999");
        std::fs::write(&stale, b"half").unwrap();
        std::fs::write(&other, b"half").unwrap();
        std::fs::write(&f, b"edited").unwrap();
        let before = scans();
        cache.restore_output(&fa, ws.path(), "out.txt").unwrap();
        assert_eq!(scans() - before, 1);
        assert_eq!(std::fs::read(&f).unwrap(), b"v1");
        assert!(
            !stale.exists(),
            "the leftover temp file of out.txt is removed"
        );
        assert!(other.exists(), "another output's is not");
        // A folder of many files: one listing, not one per file.
        let d = ws.path().join("data");
        std::fs::create_dir_all(d.join("sub")).unwrap();
        for i in 0..50 {
            std::fs::write(d.join(format!("f{i}.txt")), format!("{i}")).unwrap();
            std::fs::write(d.join(format!("sub/g{i}.txt")), format!("g{i}")).unwrap();
        }
        let da = cache.ingest(&d, ArtifactType::Dataset).unwrap();
        std::fs::write(d.join(".f1.txt.dagrun-tmp-999999"), b"half").unwrap();
        std::fs::remove_file(d.join("f3.txt")).unwrap();
        let before = scans();
        cache.restore_output(&da, ws.path(), "data").unwrap();
        assert_eq!(scans() - before, 1);
        assert_eq!(std::fs::read(d.join("f3.txt")).unwrap(), b"3");
        assert_eq!(std::fs::read(d.join("sub/g7.txt")).unwrap(), b"g7");
        assert!(!d.join(".f1.txt.dagrun-tmp-999999").exists());
        // Views of native kinds: no listing at all.
        let before = scans();
        let view = cache.materialize(&da).unwrap();
        cache.materialize(&fa).unwrap();
        assert_eq!(scans(), before);
        assert_eq!(std::fs::read(view.join("f3.txt")).unwrap(), b"3");
    }

    #[test]
    fn threads_materializing_the_same_folder_all_get_the_view() {
        let ws = tempfile::tempdir().unwrap();
        let cache = open(&ws.path().join(".dagrun"));
        let d = ws.path().join("out");
        std::fs::create_dir_all(&d).unwrap();
        for i in 0..200 {
            std::fs::write(d.join(format!("f{i}.txt")), format!("{i}")).unwrap();
        }
        let art = cache.ingest(&d, ArtifactType::Dataset).unwrap();
        let barrier = std::sync::Barrier::new(8);
        let results: Vec<Result<PathBuf>> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..8)
                .map(|_| {
                    s.spawn(|| {
                        barrier.wait();
                        cache.materialize(&art)
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for r in results {
            let view = r.expect("every thread gets the view");
            assert_eq!(std::fs::read(view.join("f7.txt")).unwrap(), b"7");
        }
    }

    #[test]
    fn gc_keeps_scratch_folders_and_views_still_referenced() {
        let ws = tempfile::tempdir().unwrap();
        let cache = open(&ws.path().join(".dagrun"));
        let d = ws.path().join("out");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("a"), b"a").unwrap();
        let art = cache.ingest(&d, ArtifactType::Dataset).unwrap();
        let (kept, gone) = (crate::hash_bytes(b"kept"), crate::hash_bytes(b"gone"));
        let mut outs = BTreeMap::new();
        outs.insert("out".to_string(), art.clone());
        cache.commit(&record_for("up", kept, outs)).unwrap();
        let view = cache.materialize(&art).unwrap();
        // An interrupted node with a referenced key, and one with an old key.
        let interrupted = crate::hash_bytes(b"interrupted");
        for k in [interrupted, gone] {
            std::fs::create_dir_all(cache.scratch_dir(&k)).unwrap();
            std::fs::write(cache.scratch_dir(&k).join("ckpt"), b"x").unwrap();
        }
        let keep: HashSet<Hash> = [kept, interrupted].into_iter().collect();
        cache.gc(&keep, false).unwrap();
        assert!(cache.scratch_dir(&interrupted).join("ckpt").exists());
        assert!(!cache.scratch_dir(&gone).exists());
        assert!(view.join("a").exists());
        cache.gc(&HashSet::new(), false).unwrap();
        assert!(!cache.scratch_dir(&interrupted).exists());
        assert!(!view.exists());
    }

    #[test]
    fn node_and_scratch_folders_are_reused_without_new_inodes() {
        use std::os::unix::fs::MetadataExt;
        let ws = tempfile::tempdir().unwrap();
        let cache = open(&ws.path().join(".dagrun"));
        let ino = |p: &Path| std::fs::metadata(p).unwrap().ino();
        // A node folder comes back emptied, its log kept (and emptied).
        let d = cache.node_dir().unwrap();
        std::fs::write(d.join("log"), b"a log").unwrap();
        std::fs::create_dir_all(d.join("out/x")).unwrap();
        std::fs::write(d.join("stray"), b"s").unwrap();
        let (dir_ino, log_ino) = (ino(&d), ino(&d.join("log")));
        cache.recycle_node_dir(d.clone());
        let again = cache.node_dir().unwrap();
        assert_eq!(again, d);
        let names: Vec<_> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("log")]);
        assert_eq!((ino(&d), ino(&d.join("log"))), (dir_ino, log_ino));
        assert_eq!(std::fs::read(d.join("log")).unwrap(), b"");
        // A second one while the first is out: a new folder.
        assert_ne!(cache.node_dir().unwrap(), d);
        // An empty scratch folder is parked and moved into place for the next key; one
        // with something in it is removed; one left by an interruption is kept as it is.
        let (a, b, c) = (
            crate::hash_bytes(b"a"),
            crate::hash_bytes(b"b"),
            crate::hash_bytes(b"c"),
        );
        let sa = cache.make_scratch(&a).unwrap();
        let scratch_ino = ino(&sa);
        cache.remove_scratch(&a).unwrap();
        assert!(!sa.exists());
        let sb = cache.make_scratch(&b).unwrap();
        assert_eq!(sb, cache.scratch_dir(&b));
        assert_eq!(ino(&sb), scratch_ino);
        std::fs::write(sb.join("ckpt"), b"x").unwrap();
        assert_eq!(cache.make_scratch(&b).unwrap(), sb);
        assert!(
            sb.join("ckpt").exists(),
            "an interrupted node's scratch is kept"
        );
        cache.remove_scratch(&b).unwrap();
        assert!(!sb.exists());
        // (A new folder: its inode number may be the removed one's again.)
        let sc = cache.make_scratch(&c).unwrap();
        assert_eq!(std::fs::read_dir(&sc).unwrap().count(), 0);
        cache
            .remove_scratch(&crate::hash_bytes(b"never made"))
            .unwrap();
    }

    #[test]
    fn commit_refuses_records_with_missing_objects() {
        let ws = tempfile::tempdir().unwrap();
        let cache = open(&ws.path().join(".dagrun"));
        let missing = crate::hash_bytes(b"never stored");
        let mut outs = BTreeMap::new();
        outs.insert(
            "x".to_string(),
            Artifact {
                kind: ArtifactType::File,
                hash: missing,
                size: 1,
                entries: None,
                exec: false,
            },
        );
        let rec = record_for("n", crate::hash_bytes(b"key"), outs);
        assert!(matches!(cache.commit(&rec), Err(Error::MissingObject(_))));
        assert!(cache.record(&rec.key).unwrap().is_none());
    }

    #[test]
    fn verify_drops_corrupt_objects_and_their_records_and_gc_frees() {
        let ws = tempfile::tempdir().unwrap();
        let dir = ws.path().join(".dagrun");
        let cache = open(&dir);
        let f = ws.path().join("big");
        std::fs::write(&f, vec![7u8; 50_000]).unwrap();
        let art = cache.ingest(&f, ArtifactType::File).unwrap();
        let key = crate::hash_bytes(b"k1");
        let mut outs = BTreeMap::new();
        outs.insert("big".to_string(), art.clone());
        cache.commit(&record_for("n1", key, outs)).unwrap();
        assert!(cache.verify().unwrap().corrupt_objects.is_empty());
        // Corrupt the object on disk.
        let p = cache.objects.file_path(&art.hash);
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
        std::fs::write(&p, b"garbage").unwrap();
        let rep = cache.verify().unwrap();
        assert_eq!(rep.corrupt_objects, vec![art.hash]);
        assert_eq!(rep.records_dropped, vec!["n1".to_string()]);
        assert!(cache.record(&key).unwrap().is_none());
        // A second object, unreferenced, is collected by gc.
        std::fs::write(&f, vec![9u8; 40_000]).unwrap();
        cache.ingest(&f, ArtifactType::File).unwrap();
        let dry = cache.gc(&HashSet::new(), true).unwrap();
        assert_eq!(dry.objects_removed, 1);
        assert!(dry.bytes_freed >= 40_000);
        let real = cache.gc(&HashSet::new(), false).unwrap();
        assert_eq!(real.objects_removed, 1);
        assert_eq!(cache.gc(&HashSet::new(), true).unwrap().objects_removed, 0);
    }

    #[test]
    fn temp_files_of_an_interrupted_writer_are_removed_on_open() {
        let ws = tempfile::tempdir().unwrap();
        let dir = ws.path().join(".dagrun");
        drop(open(&dir));
        std::fs::write(dir.join("tmp/123-0"), b"half").unwrap();
        drop(open(&dir));
        assert_eq!(std::fs::read_dir(dir.join("tmp")).unwrap().count(), 0);
    }
}
