//! [`Remote`]: one connection to a remote cache, and its operations on one record or
//! object at a time.
//!
//! object_store is async; dagrun is not. A `Remote` owns a small tokio runtime of its own
//! (its threads live as long as it does) and blocks on it at the edges ([`Remote::block_on`]);
//! transfers inside run concurrently, bounded by a semaphore of `transfers` permits.

use std::{
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Once,
    },
    time::Duration,
};

use bytes::Bytes;
use dagrun_cache::{Artifact, Hash, Record};
use futures::StreamExt;
use object_store::{
    aws::{AmazonS3Builder, AmazonS3ConfigKey},
    azure::MicrosoftAzureBuilder,
    gcp::GoogleCloudStorageBuilder,
    local::LocalFileSystem,
    path::Path as ObjPath,
    BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, PutMode, PutPayload, RetryConfig,
    WriteMultipart,
};
use tokio::{io::AsyncReadExt, io::AsyncWriteExt, sync::Semaphore};

use crate::{aws, transfer::Stats, Error, Location, Result};

/// The namespace every path on a remote lies under; its version changes with the layout.
pub const LAYOUT: &str = "dagrun-remote-v1";

/// Objects up to this size go up in one PUT; larger ones as multipart uploads of parts of
/// this size (S3 needs parts of at least 5 MiB).
const PART_SIZE: usize = 8 * 1024 * 1024;
/// Parts of one multipart upload in flight at once.
const PART_CONCURRENCY: usize = 4;
/// Read size when streaming a file up.
const READ_CHUNK: usize = 1024 * 1024;

/// How to connect.
#[derive(Clone, Debug)]
pub struct RemoteOptions {
    /// Transfers (records or objects) in flight at once.
    pub transfers: usize,
    /// Create the remote folder when it does not exist (a push); a pull from a folder
    /// that does not exist is an error.
    pub create: bool,
}

impl Default for RemoteOptions {
    fn default() -> Self {
        RemoteOptions {
            transfers: 8,
            create: false,
        }
    }
}

/// An open remote cache.
pub struct Remote {
    pub(crate) inner: Arc<Inner>,
    pub(crate) rt: tokio::runtime::Runtime,
    pub(crate) transfers: usize,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Remote({})", self.inner.url)
    }
}

/// What the concurrent tasks share.
pub(crate) struct Inner {
    pub(crate) store: Arc<dyn ObjectStore>,
    root: ObjPath,
    pub(crate) url: String,
    sem: Semaphore,
    /// Set after the remote itself failed: later transfers are not attempted.
    pub(crate) stopped: AtomicBool,
}

/// What putting a record did.
#[derive(Debug)]
pub(crate) enum PutRecord {
    Created,
    /// The remote has a record under the key already (perhaps put a moment ago by
    /// another machine).
    Exists(Box<Record>),
}

/// Where an object's bytes come from when it goes up.
#[derive(Clone, Debug)]
pub enum Source {
    /// A small object, read from the cache's index.
    Bytes(Bytes),
    /// A large object: the cache's read-only file.
    File(PathBuf),
}

fn install_crypto() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // reqwest is built without a TLS provider of its own (see Cargo.toml): ring it is.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Timeouts and retries for a network remote: a whole-request timeout would cut a large
/// download short, so a stalled read times out instead; a remote that does not answer
/// fails within seconds rather than after object_store's default three minutes of retries.
fn client_options() -> ClientOptions {
    ClientOptions::new()
        .with_timeout_disabled()
        .with_connect_timeout(Duration::from_secs(10))
        .with_read_timeout(Duration::from_secs(60))
}

fn retry() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            base: 2.0,
        },
        max_retries: 4,
        retry_timeout: Duration::from_secs(60),
    }
}

impl Remote {
    /// Connects to a remote and checks that it answers (a missing bucket or folder, bad
    /// credentials and an unreachable server are reported here, before any transfer).
    pub fn open(location: &Location, opts: &RemoteOptions) -> Result<Remote> {
        install_crypto();
        let url = location.to_string();
        let config = |detail: String| Error::Config {
            url: url.clone(),
            detail,
        };
        let (store, prefix): (Arc<dyn ObjectStore>, ObjPath) = match location {
            Location::Folder(dir) => {
                if opts.create {
                    std::fs::create_dir_all(dir)
                        .map_err(|e| config(format!("cannot create the folder: {e}")))?;
                } else if !dir.is_dir() {
                    return Err(config(
                        "no such folder (a push creates it; a pull needs one)".into(),
                    ));
                }
                let fs = LocalFileSystem::new_with_prefix(dir)
                    .map_err(|e| config(e.to_string()))?
                    .with_fsync(true);
                (Arc::new(fs), ObjPath::default())
            }
            Location::S3 { bucket, prefix } => {
                let profile = aws::env_profile().map_err(config)?;
                let s = aws::s3_settings(&profile);
                let mut b = AmazonS3Builder::new()
                    .with_client_options(client_options())
                    .with_retry(retry());
                for (k, v) in &s.config {
                    if let Ok(key) = k.parse::<AmazonS3ConfigKey>() {
                        b = b.with_config(key, v);
                    }
                }
                b = b.with_region(&s.region).with_bucket_name(bucket);
                if let Some(ep) = &s.endpoint {
                    // An endpoint written as http:// is the user's explicit choice (a
                    // server on localhost or a private network).
                    b = b
                        .with_endpoint(ep)
                        .with_allow_http(ep.starts_with("http://"));
                }
                let store = b.build().map_err(|e| config(e.to_string()))?;
                (Arc::new(store), url_prefix(prefix))
            }
            Location::Gcs { bucket, prefix } => {
                let store = GoogleCloudStorageBuilder::from_env()
                    .with_client_options(client_options())
                    .with_retry(retry())
                    .with_bucket_name(bucket)
                    .build()
                    .map_err(|e| config(e.to_string()))?;
                (Arc::new(store), url_prefix(prefix))
            }
            Location::Azure { url: u } => {
                let parsed = url::Url::parse(u).map_err(|e| config(e.to_string()))?;
                let (_, prefix) = object_store::ObjectStoreScheme::parse(&parsed)
                    .map_err(|e| config(e.to_string()))?;
                let store = MicrosoftAzureBuilder::from_env()
                    .with_client_options(client_options())
                    .with_retry(retry())
                    .with_url(u.as_str())
                    .build()
                    .map_err(|e| config(e.to_string()))?;
                (Arc::new(store), prefix)
            }
        };
        let root = prefix.parts().chain([LAYOUT.into()]).collect();
        let transfers = opts.transfers.max(1);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 8)))
            .thread_name("dagrun-remote")
            .enable_all()
            .build()
            .map_err(|e| config(format!("cannot start the transfer threads: {e}")))?;
        let remote = Remote {
            inner: Arc::new(Inner {
                store,
                root,
                url,
                sem: Semaphore::new(transfers),
                stopped: AtomicBool::new(false),
            }),
            rt,
            transfers,
        };
        remote.block_on(remote.inner.clone().check())?;
        Ok(remote)
    }

    /// The remote as the user named it.
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    /// Runs a future on the remote's runtime, blocking this thread until it is done.
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// The record stored under `key`, checked (see [`Inner::get_record`]); `None` when
    /// the remote has none.
    pub fn get_record(&self, key: &Hash) -> Result<Option<Record>> {
        self.block_on(self.inner.clone().get_record(*key))
    }

    /// The records of many keys at once (`transfers` requests in flight), in order.
    pub fn get_records(&self, keys: &[Hash]) -> Vec<Result<Option<Record>>> {
        let inner = self.inner.clone();
        self.block_on(async move {
            let tasks: Vec<_> = keys
                .iter()
                .map(|k| tokio::spawn(inner.clone().get_record(*k)))
                .collect();
            let mut out = Vec::with_capacity(tasks.len());
            for t in tasks {
                out.push(t.await.unwrap_or_else(|e| Err(join_error(&inner.url, e))));
            }
            out
        })
    }
}

pub(crate) fn join_error(url: &str, e: tokio::task::JoinError) -> Error {
    Error::Config {
        url: url.to_string(),
        detail: format!("a transfer task failed: {e}"),
    }
}

/// An object_store path from a URL's (percent-encoded) path.
fn url_prefix(prefix: &str) -> ObjPath {
    ObjPath::from_url_path(prefix).unwrap_or_else(|_| ObjPath::from(prefix))
}

/// The parts of an object's name: `ab/cdef…`.
fn object_parts(hash: &Hash) -> (String, String) {
    let hex = hash.to_hex();
    (hex[..2].to_string(), hex[2..].to_string())
}

impl Inner {
    fn record_path(&self, key: &Hash) -> ObjPath {
        self.root
            .clone()
            .join("records")
            .join(format!("{}.json", key.to_hex()))
    }

    fn object_path(&self, hash: &Hash) -> ObjPath {
        let (a, b) = object_parts(hash);
        self.root.clone().join("objects").join(a).join(b)
    }

    fn store_err(&self, op: &'static str, path: &ObjPath, source: object_store::Error) -> Error {
        let e = Error::Store {
            url: self.url.clone(),
            op,
            path: path.to_string(),
            source: Box::new(source),
        };
        if e.is_remote_down() {
            self.stopped.store(true, Ordering::Relaxed);
        }
        e
    }

    pub(crate) fn check_running(&self) -> Result<()> {
        if self.stopped.load(Ordering::Relaxed) {
            Err(Error::Stopped)
        } else {
            Ok(())
        }
    }

    /// Lists the layout's folder once: an unreachable server, a missing bucket or bad
    /// credentials fail here.
    async fn check(self: Arc<Self>) -> Result<()> {
        match self.store.list_with_delimiter(Some(&self.root)).await {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.store_err("list", &self.root, e)),
        }
    }

    /// The record under `key`: its JSON parsed, its key the one asked for, its manifest
    /// sound ([`check_manifest`]). `None` when the remote has none.
    pub(crate) async fn get_record(self: Arc<Self>, key: Hash) -> Result<Option<Record>> {
        self.check_running()?;
        let path = self.record_path(&key);
        let _permit = self.sem.acquire().await.expect("never closed");
        let bytes = match self.store.get(&path).await {
            Ok(r) => r.bytes().await,
            Err(e) => Err(e),
        };
        let bytes = match bytes {
            Ok(b) => b,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.store_err("read", &path, e)),
        };
        let bad = |detail: String| Error::BadRecord {
            url: self.url.clone(),
            key: key.to_hex(),
            detail,
        };
        let record: Record =
            serde_json::from_slice(&bytes).map_err(|e| bad(format!("not a record: {e}")))?;
        if record.key != key {
            return Err(bad(format!("it holds the record of key `{}`", record.key)));
        }
        check_manifest(&record).map_err(bad)?;
        Ok(Some(record))
    }

    /// Creates the record; never replaces one (a conditional put). Its objects must be
    /// on the remote already.
    pub(crate) async fn put_record(self: Arc<Self>, record: &Record) -> Result<PutRecord> {
        self.check_running()?;
        let path = self.record_path(&record.key);
        let bytes = serde_json::to_vec_pretty(record).expect("records serialise");
        let res = {
            let _permit = self.sem.acquire().await.expect("never closed");
            self.store
                .put_opts(&path, PutPayload::from(bytes), PutMode::Create.into())
                .await
        };
        match res {
            Ok(_) => Ok(PutRecord::Created),
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => {
                match self.clone().get_record(record.key).await? {
                    Some(r) => Ok(PutRecord::Exists(Box::new(r))),
                    None => Err(Error::BadRecord {
                        url: self.url.clone(),
                        key: record.key.to_hex(),
                        detail: "the remote refused it as existing but has none".into(),
                    }),
                }
            }
            Err(e) => Err(self.store_err("write", &path, e)),
        }
    }

    pub(crate) async fn has_object(&self, hash: &Hash) -> Result<bool> {
        self.check_running()?;
        let path = self.object_path(hash);
        let _permit = self.sem.acquire().await.expect("never closed");
        match self.store.head(&path).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.store_err("look up", &path, e)),
        }
    }

    /// Uploads object `hash`, hashing its bytes as they are read: bytes that do not hash
    /// to the name are not uploaded (a multipart upload is aborted, never completed).
    /// Returns the byte count.
    pub(crate) async fn upload_object(
        &self,
        hash: Hash,
        src: Source,
        stats: &Stats,
    ) -> Result<u64> {
        self.check_running()?;
        let path = self.object_path(&hash);
        let _permit = self.sem.acquire().await.expect("never closed");
        let corrupt = |got: blake3::Hash| Error::CorruptLocal {
            object: hash.to_hex(),
            got: got.to_hex().to_string(),
        };
        let file = match src {
            Source::Bytes(b) => {
                let got = blake3::hash(&b);
                if got.as_bytes() != &hash.0 {
                    return Err(corrupt(got));
                }
                let n = b.len() as u64;
                self.store
                    .put(&path, PutPayload::from(b))
                    .await
                    .map_err(|e| self.store_err("write", &path, e))?;
                stats.add_bytes(n);
                return Ok(n);
            }
            Source::File(f) => f,
        };
        let mut input = tokio::fs::File::open(&file)
            .await
            .map_err(Error::io("cannot open", &file))?;
        let size = input
            .metadata()
            .await
            .map_err(Error::io("cannot stat", &file))?
            .len();
        if size as usize <= PART_SIZE {
            let mut buf = Vec::with_capacity(size as usize);
            input
                .read_to_end(&mut buf)
                .await
                .map_err(Error::io("cannot read", &file))?;
            let got = blake3::hash(&buf);
            if got.as_bytes() != &hash.0 {
                return Err(corrupt(got));
            }
            let n = buf.len() as u64;
            self.store
                .put(&path, PutPayload::from(buf))
                .await
                .map_err(|e| self.store_err("write", &path, e))?;
            stats.add_bytes(n);
            return Ok(n);
        }
        let upload = self
            .store
            .put_multipart(&path)
            .await
            .map_err(|e| self.store_err("start uploading", &path, e))?;
        let mut w = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0u8; READ_CHUNK];
        let mut n = 0u64;
        let streamed: Result<()> = async {
            loop {
                let k = input
                    .read(&mut buf)
                    .await
                    .map_err(Error::io("cannot read", &file))?;
                if k == 0 {
                    return Ok(());
                }
                hasher.update(&buf[..k]);
                w.wait_for_capacity(PART_CONCURRENCY)
                    .await
                    .map_err(|e| self.store_err("upload a part of", &path, e))?;
                w.write(&buf[..k]);
                n += k as u64;
                stats.add_bytes(k as u64);
            }
        }
        .await;
        let got = hasher.finalize();
        let verdict = match streamed {
            Err(e) => Err(e),
            Ok(()) if got.as_bytes() != &hash.0 => Err(corrupt(got)),
            Ok(()) => Ok(()),
        };
        if let Err(e) = verdict {
            let _ = w.abort().await;
            return Err(e);
        }
        w.finish()
            .await
            .map_err(|e| self.store_err("finish uploading", &path, e))?;
        Ok(n)
    }

    /// Downloads object `hash` into `dest` (a new file), hashing it as it streams; a
    /// file whose bytes do not hash to the name is removed and reported.
    pub(crate) async fn download_object(
        &self,
        hash: Hash,
        dest: &Path,
        stats: &Stats,
    ) -> Result<u64> {
        self.check_running()?;
        let path = self.object_path(&hash);
        let _permit = self.sem.acquire().await.expect("never closed");
        let res = match self.store.get(&path).await {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(Error::MissingObject {
                    url: self.url.clone(),
                    object: hash.to_hex(),
                })
            }
            Err(e) => return Err(self.store_err("read", &path, e)),
        };
        let mut stream = res.into_stream();
        let mut out = tokio::fs::File::create(dest)
            .await
            .map_err(Error::io("cannot create", dest))?;
        let mut hasher = blake3::Hasher::new();
        let mut n = 0u64;
        let streamed: Result<()> = async {
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| self.store_err("read", &path, e))?;
                hasher.update(&chunk);
                out.write_all(&chunk)
                    .await
                    .map_err(Error::io("cannot write", dest))?;
                n += chunk.len() as u64;
                stats.add_bytes(chunk.len() as u64);
            }
            out.flush().await.map_err(Error::io("cannot write", dest))
        }
        .await;
        drop(out);
        let got = hasher.finalize();
        let verdict = match streamed {
            Err(e) => Err(e),
            Ok(()) if got.as_bytes() != &hash.0 => Err(Error::CorruptObject {
                url: self.url.clone(),
                object: hash.to_hex(),
                got: got.to_hex().to_string(),
                size: n,
            }),
            Ok(()) => Ok(n),
        };
        if verdict.is_err() {
            let _ = tokio::fs::remove_file(dest).await;
        }
        verdict
    }
}

/// Checks a record's manifest as far as it can be without the bytes: every folder's
/// tree hash is the hash of its entries, sizes add up, and entry paths are relative
/// paths that stay inside their folder (a record from elsewhere must not name
/// `../../x`).
pub fn check_manifest(record: &Record) -> std::result::Result<(), String> {
    for (name, a) in &record.outputs {
        let Some(entries) = &a.entries else {
            continue;
        };
        if Artifact::tree_hash(entries) != a.hash {
            return Err(format!(
                "output `{name}`: its files do not hash to its tree hash"
            ));
        }
        if entries.iter().map(|e| e.size).sum::<u64>() != a.size {
            return Err(format!(
                "output `{name}`: its file sizes do not add up to its size"
            ));
        }
        for e in entries {
            let unsafe_path = e.path.is_empty()
                || e.path.starts_with('/')
                || e.path.contains('\0')
                || e.path
                    .split('/')
                    .any(|c| c.is_empty() || c == "." || c == "..");
            if unsafe_path {
                return Err(format!("output `{name}`: unsafe file path `{}`", e.path));
            }
        }
    }
    Ok(())
}
