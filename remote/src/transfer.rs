//! Many records at a time: [`Remote::push`] and [`Remote::pull`], with their objects
//! moving `transfers` at a time, each object once even when several records share it.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
};

use bytes::Bytes;
use dagrun_cache::{Cache, Hash, Imported, Record};
use futures::StreamExt;
use tokio::sync::OnceCell;

use crate::{
    store::{join_error, Inner, PutRecord, Source},
    Error, Remote, Result,
};

/// Counters a progress display reads while a transfer runs (every field only grows).
#[derive(Debug, Default)]
pub struct Stats {
    /// Nodes to look at, and nodes done with (moved, already there, or failed).
    pub nodes_total: AtomicU64,
    pub nodes_done: AtomicU64,
    /// Bytes of the objects that have to move (known before they move; a log's size is
    /// counted once it arrives), and bytes moved so far.
    pub bytes_total: AtomicU64,
    pub bytes_done: AtomicU64,
}

impl Stats {
    pub(crate) fn add_bytes(&self, n: u64) {
        self.bytes_done.fetch_add(n, Ordering::Relaxed);
    }
    fn node_done(&self) {
        self.nodes_done.fetch_add(1, Ordering::Relaxed);
    }
}

/// What happened to one node's record.
#[derive(Debug)]
pub enum NodeOutcome {
    /// Moved: its record, and the objects the other side lacked.
    Moved { objects: usize, bytes: u64 },
    /// The other side had its record already, with the same outputs.
    AlreadyThere,
    /// The other side has a record under the same key with other outputs; it was kept
    /// (records are never replaced). The node is not deterministic, or this is a bug.
    Conflict { kept: Box<Record> },
}

/// The outcome of a push or pull: one entry per record, in no particular order.
#[derive(Debug, Default)]
pub struct TransferReport {
    pub nodes: Vec<(Record, Result<NodeOutcome>)>,
}

impl TransferReport {
    /// (nodes moved, objects moved, bytes moved).
    pub fn moved(&self) -> (usize, usize, u64) {
        let mut t = (0, 0, 0);
        for (_, r) in &self.nodes {
            if let Ok(NodeOutcome::Moved { objects, bytes }) = r {
                t.0 += 1;
                t.1 += objects;
                t.2 += bytes;
            }
        }
        t
    }
    pub fn already(&self) -> usize {
        self.nodes
            .iter()
            .filter(|(_, r)| matches!(r, Ok(NodeOutcome::AlreadyThere)))
            .count()
    }
    pub fn conflicts(&self) -> impl Iterator<Item = (&Record, &Record)> {
        self.nodes.iter().filter_map(|(rec, r)| match r {
            Ok(NodeOutcome::Conflict { kept }) => Some((rec, kept.as_ref())),
            _ => None,
        })
    }
    pub fn errors(&self) -> impl Iterator<Item = (&Record, &Error)> {
        self.nodes
            .iter()
            .filter_map(|(rec, r)| r.as_ref().err().map(|e| (rec, e)))
    }
}

/// A record ready to go up: the bytes of its small objects read from the cache, the
/// files of its large ones named (so the upload can run while the cache is busy).
#[derive(Clone, Debug)]
pub struct PushItem {
    pub record: Record,
    objects: Vec<(Hash, Source, u64)>,
}

impl PushItem {
    pub fn from_cache(cache: &Cache, record: Record) -> Result<PushItem> {
        let mut objects = Vec::new();
        let unique: BTreeSet<Hash> = record.objects().into_iter().collect();
        for h in unique {
            match cache.object_file(&h) {
                Some(path) => {
                    let size = std::fs::metadata(&path)
                        .map_err(Error::io("cannot stat", &path))?
                        .len();
                    objects.push((h, Source::File(path), size));
                }
                None => {
                    let b = cache.read_bytes(&h)?;
                    let n = b.len() as u64;
                    objects.push((h, Source::Bytes(Bytes::from(b)), n));
                }
            }
        }
        Ok(PushItem { record, objects })
    }
}

/// One slot per object, so that records sharing an object move it once.
#[derive(Default)]
pub(crate) struct Once {
    cells: Mutex<HashMap<Hash, Arc<OnceCell<u64>>>>,
}

impl Once {
    fn cell(&self, h: Hash) -> Arc<OnceCell<u64>> {
        self.cells.lock().unwrap().entry(h).or_default().clone()
    }
}

/// Uploads one record: nothing when the remote has it; else its missing objects, then
/// the record (created, never replaced).
pub(crate) async fn push_item(
    inner: Arc<Inner>,
    item: PushItem,
    stats: Arc<Stats>,
    once: Arc<Once>,
) -> (Record, Result<NodeOutcome>) {
    let res = push_inner(&inner, &item, &stats, &once).await;
    stats.node_done();
    (item.record, res)
}

async fn push_inner(
    inner: &Arc<Inner>,
    item: &PushItem,
    stats: &Stats,
    once: &Once,
) -> Result<NodeOutcome> {
    let rec = &item.record;
    if let Some(there) = inner.clone().get_record(rec.key).await? {
        return Ok(compare(rec, there));
    }
    let mut moved = 0usize;
    let mut bytes = 0u64;
    let uploads = item.objects.iter().map(|(h, src, size)| {
        let cell = once.cell(*h);
        async move {
            // Another record's upload of the same object counts there, not here.
            let mine = AtomicBool::new(false);
            let n = cell
                .get_or_try_init(|| async {
                    if inner.has_object(h).await? {
                        return Ok::<u64, Error>(0);
                    }
                    stats.bytes_total.fetch_add(*size, Ordering::Relaxed);
                    mine.store(true, Ordering::Relaxed);
                    inner.upload_object(*h, src.clone(), stats).await
                })
                .await?;
            Ok::<(bool, u64), Error>((mine.load(Ordering::Relaxed), *n))
        }
    });
    for r in futures::future::join_all(uploads).await {
        let (mine, n) = r?;
        if mine {
            moved += 1;
            bytes += n;
        }
    }
    match inner.clone().put_record(rec).await? {
        PutRecord::Created => Ok(NodeOutcome::Moved {
            objects: moved,
            bytes,
        }),
        PutRecord::Exists(there) => Ok(compare(rec, *there)),
    }
}

fn compare(ours: &Record, theirs: Record) -> NodeOutcome {
    if ours.outputs == theirs.outputs {
        NodeOutcome::AlreadyThere
    } else {
        NodeOutcome::Conflict {
            kept: Box::new(theirs),
        }
    }
}

impl Remote {
    /// Uploads records (with their objects) that the remote lacks, `transfers` at a time.
    /// After the remote itself fails, the records not started yet are reported as
    /// [`Error::Stopped`].
    pub fn push(&self, items: Vec<PushItem>, stats: Arc<Stats>) -> TransferReport {
        stats
            .nodes_total
            .fetch_add(items.len() as u64, Ordering::Relaxed);
        let once = Arc::new(Once::default());
        let inner = self.inner.clone();
        let nodes = self.block_on(async {
            futures::stream::iter(items)
                .map(|item| {
                    let url = inner.url.clone();
                    let task = tokio::spawn(push_item(
                        inner.clone(),
                        item.clone(),
                        stats.clone(),
                        once.clone(),
                    ));
                    async move {
                        task.await
                            .unwrap_or_else(|e| (item.record, Err(join_error(&url, e))))
                    }
                })
                .buffer_unordered(self.transfers)
                .collect::<Vec<_>>()
                .await
        });
        TransferReport { nodes }
    }

    /// Starts uploading one record in the background; the handle gives its outcome.
    pub(crate) fn spawn_push(
        &self,
        item: PushItem,
        stats: Arc<Stats>,
        once: Arc<Once>,
    ) -> tokio::task::JoinHandle<(Record, Result<NodeOutcome>)> {
        stats.nodes_total.fetch_add(1, Ordering::Relaxed);
        self.rt
            .spawn(push_item(self.inner.clone(), item, stats, once))
    }

    /// Downloads records the caller fetched (and checked) from the remote into `cache`:
    /// every object the cache lacks, verified as it streams and stored as soon as it is
    /// complete; each record imported once all of its objects are stored. An interrupted
    /// pull keeps the objects that arrived whole, so running it again resumes.
    pub fn pull(&self, cache: &Cache, records: Vec<Record>, stats: Arc<Stats>) -> TransferReport {
        stats
            .nodes_total
            .fetch_add(records.len() as u64, Ordering::Relaxed);
        let mut results: Vec<Option<Result<NodeOutcome>>> =
            (0..records.len()).map(|_| None).collect();
        // Objects to fetch → the records waiting for them; per record: how many it waits
        // for, and what they weigh.
        let mut wanted: HashMap<Hash, Vec<usize>> = HashMap::new();
        let mut sizes: HashMap<Hash, u64> = HashMap::new();
        let mut waiting = vec![0usize; records.len()];
        let mut moved = vec![(0usize, 0u64); records.len()];
        for (i, rec) in records.iter().enumerate() {
            for a in rec.outputs.values() {
                match &a.entries {
                    None => {
                        sizes.insert(a.hash, a.size);
                    }
                    Some(es) => sizes.extend(es.iter().map(|e| (e.hash, e.size))),
                }
            }
            let unique: BTreeSet<Hash> = rec.objects().into_iter().collect();
            for h in unique {
                match cache.contains_object(&h) {
                    Ok(true) => {}
                    Ok(false) => {
                        let w = wanted.entry(h).or_default();
                        if w.is_empty() {
                            stats
                                .bytes_total
                                .fetch_add(sizes.get(&h).copied().unwrap_or(0), Ordering::Relaxed);
                        }
                        w.push(i);
                        waiting[i] += 1;
                    }
                    Err(e) => results[i] = Some(Err(e.into())),
                }
            }
        }
        let import = |i: usize, moved: (usize, u64)| -> Result<NodeOutcome> {
            Ok(match cache.import_record(&records[i])? {
                Imported::Added => NodeOutcome::Moved {
                    objects: moved.0,
                    bytes: moved.1,
                },
                Imported::Present => NodeOutcome::AlreadyThere,
                Imported::Differs(kept) => NodeOutcome::Conflict { kept },
            })
        };
        for i in 0..records.len() {
            if waiting[i] == 0 && results[i].is_none() {
                results[i] = Some(import(i, (0, 0)));
                stats.node_done();
            }
        }
        let dir = match cache.temp_dir() {
            Ok(d) => d,
            Err(e) => {
                let e = Arc::new(Error::from(e));
                for r in results.iter_mut().filter(|r| r.is_none()) {
                    *r = Some(Err(Error::Shared(e.clone())));
                }
                return finish(records, results);
            }
        };
        let inner = self.inner.clone();
        self.block_on(async {
            let mut downloads = futures::stream::iter(wanted.keys().copied().collect::<Vec<_>>())
                .map(|h| {
                    let url = inner.url.clone();
                    let inner = inner.clone();
                    let stats = stats.clone();
                    let dest = dir.join(h.to_hex());
                    let task = tokio::spawn(async move {
                        let r = inner.download_object(h, &dest, &stats).await;
                        r.map(|n| (dest, n))
                    });
                    async move { (h, task.await.unwrap_or_else(|e| Err(join_error(&url, e)))) }
                })
                .buffer_unordered(self.transfers);
            while let Some((h, res)) = downloads.next().await {
                let res = res.and_then(|(dest, n)| {
                    cache.adopt_object(&dest, &h)?;
                    Ok(n)
                });
                let (n, err) = match res {
                    Ok(n) => (n, None),
                    Err(e) => (0, Some(Arc::new(e))),
                };
                for &i in &wanted[&h] {
                    if results[i].is_some() {
                        continue;
                    }
                    if let Some(e) = &err {
                        // The record is not imported; the object's error is its error.
                        results[i] = Some(Err(Error::Shared(e.clone())));
                        stats.node_done();
                        continue;
                    }
                    moved[i].0 += 1;
                    moved[i].1 += n;
                    waiting[i] -= 1;
                    if waiting[i] == 0 {
                        results[i] = Some(import(i, moved[i]));
                        stats.node_done();
                    }
                }
            }
        });
        let _ = cache.flush();
        let _ = std::fs::remove_dir_all(&dir);
        finish(records, results)
    }
}

fn finish(records: Vec<Record>, results: Vec<Option<Result<NodeOutcome>>>) -> TransferReport {
    TransferReport {
        nodes: records
            .into_iter()
            .zip(results)
            .map(|(rec, r)| (rec, r.unwrap_or(Err(Error::Stopped))))
            .collect(),
    }
}
