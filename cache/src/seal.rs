//! Finding out that the index lost what it had made durable.
//!
//! sled checks every message of its log with a CRC, and when recovery meets one that
//! fails (a flipped byte, a bad sector) it takes it for the torn end of the log: it
//! stops there and zeroes the rest, silently dropping every record, claim and object
//! written after that point. To notice, every [`Cache::flush`](crate::Cache::flush)
//! counts a generation, stored both inside the index (`meta-v1`) and, once the flush
//! returned, in the file `db-seal` beside it. The file never runs ahead of what the
//! index made durable, so on open an index whose generation is behind the file's has
//! lost durable writes: that is reported (and kept in `meta-v1` until `cache verify`
//! shows it), and whatever was lost counts as absent — its nodes run again.
//!
//! The file is [`SEAL_LEN`] bytes rewritten in place (one positioned write, no temp file
//! and rename: a flush per commit group would otherwise create and delete an inode each
//! time, which ext4 makes slower with every one, docs/benchmarks.md, issue 19): the JSON
//! mark, a line with the first 16 hex digits of its blake3 hash, and spaces. A mark whose
//! hash does not match (a write torn by a power loss) counts as no seal, as a missing file
//! does: nothing is checked that once, and nothing is reported that did not happen. A
//! file of earlier versions (the JSON alone) is read as it was written.

use std::{
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex,
    },
};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{objects::db_err, Result};

const GEN_KEY: &[u8] = b"generation";
const DAMAGE_KEY: &[u8] = b"index-damage";

/// A generation and when it was made durable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Mark {
    generation: u64,
    at: Option<DateTime<Utc>>,
}

/// Damage found on open: the index is older than its seal.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IndexDamage {
    pub found: DateTime<Utc>,
    /// The last flush the index still holds, and the last one it had made durable.
    pub intact_until: Option<DateTime<Utc>>,
    pub lost_until: Option<DateTime<Utc>>,
    /// How many flushes were lost.
    pub lost_flushes: u64,
}

impl std::fmt::Display for IndexDamage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = |d: &Option<DateTime<Utc>>| {
            d.map(|d| d.format("%Y-%m-%d %H:%M:%S UTC").to_string())
                .unwrap_or_else(|| "its start".into())
        };
        write!(
            f,
            "the cache index (`db/`) was found damaged on {}: what it recorded after {} \
             (up to {}, {} commit(s)) is lost — those nodes are not cached any more and run \
             again, and workspace outputs they wrote may be reported as not written by \
             dagrun (delete them if they are)",
            self.found.format("%Y-%m-%d %H:%M:%S UTC"),
            t(&self.intact_until),
            t(&self.lost_until),
            self.lost_flushes
        )
    }
}

/// The length of the seal file.
pub const SEAL_LEN: usize = 160;

/// The seal file's bytes for `mark`.
fn encode(mark: &Mark) -> Vec<u8> {
    let mut bytes = serde_json::to_vec(mark).expect("serialises");
    let sum = crate::hash_bytes(&bytes).to_hex()[..16].to_string();
    bytes.push(b'\n');
    bytes.extend_from_slice(sum.as_bytes());
    bytes.push(b'\n');
    bytes.resize(SEAL_LEN.max(bytes.len()), b' ');
    bytes
}

/// The mark in a seal file's bytes; `None` when they hold none (torn, damaged, empty).
fn decode(bytes: &[u8]) -> Option<Mark> {
    let text = std::str::from_utf8(bytes).ok()?.trim_end_matches(' ');
    match text.split_once('\n') {
        Some((json, rest)) => {
            let sum = rest.strip_suffix('\n')?;
            (crate::hash_bytes(json.as_bytes()).to_hex()[..16] == *sum)
                .then(|| serde_json::from_str(json).ok())
                .flatten()
        }
        // Earlier versions: the JSON alone, written whole by a rename.
        None => serde_json::from_str(text).ok(),
    }
}

pub(crate) struct Seal {
    file: PathBuf,
    /// The file, open for writing once the first mark is written.
    handle: Mutex<Option<std::fs::File>>,
    meta: sled::Tree,
    generation: AtomicU64,
}

impl Seal {
    /// Compares the index with its seal file; returns the seal and any damage found (also
    /// noted in the index until [`Seal::take_damage`]).
    pub(crate) fn open(dir: &Path, meta: sled::Tree) -> Result<(Seal, Option<IndexDamage>)> {
        let file = dir.join("db-seal");
        let inside: Mark = meta
            .get(GEN_KEY)
            .map_err(db_err)?
            .and_then(|v| serde_json::from_slice(&v).ok())
            .unwrap_or_default();
        let outside: Option<Mark> = std::fs::read(&file).ok().and_then(|v| decode(&v));
        let seal = Seal {
            file,
            handle: Mutex::new(None),
            meta,
            generation: AtomicU64::new(inside.generation),
        };
        let damage = match outside {
            Some(o) if o.generation > inside.generation => Some(IndexDamage {
                found: Utc::now(),
                intact_until: inside.at,
                lost_until: o.at,
                lost_flushes: o.generation - inside.generation,
            }),
            _ => None,
        };
        if let Some(d) = &damage {
            seal.meta
                .insert(DAMAGE_KEY, serde_json::to_vec(d).expect("serialises"))
                .map_err(db_err)?;
            // The seal starts again from what the index holds.
            seal.write_file(inside);
        }
        Ok((seal, damage))
    }

    /// Counts a generation in the index; call [`Seal::sealed`] with it once the index is
    /// flushed.
    pub(crate) fn next(&self) -> Result<u64> {
        let g = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let mark = Mark {
            generation: g,
            at: Some(Utc::now()),
        };
        let bytes = serde_json::to_vec(&mark).expect("serialises");
        // Never lower it (flushes from several threads may interleave).
        self.meta
            .fetch_and_update(GEN_KEY, |old| {
                let old_g = old
                    .and_then(|v| serde_json::from_slice::<Mark>(v).ok())
                    .map(|m| m.generation)
                    .unwrap_or(0);
                Some(if old_g > g {
                    old.unwrap().to_vec()
                } else {
                    bytes.clone()
                })
            })
            .map_err(db_err)?;
        Ok(g)
    }

    /// Records outside the index that generation `g` is durable.
    pub(crate) fn sealed(&self, g: u64) {
        self.write_file(Mark {
            generation: g,
            at: Some(Utc::now()),
        });
    }

    fn write_file(&self, mark: Mark) {
        use std::os::unix::fs::FileExt;
        let mut handle = self.handle.lock().unwrap_or_else(|e| e.into_inner());
        let written = (|| -> std::io::Result<()> {
            if handle.is_none() {
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(&self.file)?;
                // A longer file of another version: its tail would outlive the mark.
                f.set_len(SEAL_LEN as u64)?;
                *handle = Some(f);
            }
            handle
                .as_ref()
                .expect("just opened")
                .write_all_at(&encode(&mark), 0)
        })();
        if let Err(e) = written {
            *handle = None;
            tracing::debug!("cannot write {}: {e}", self.file.display());
        }
    }

    /// Damage found by an earlier open that `cache verify` has not shown yet; clears it.
    pub(crate) fn take_damage(&self) -> Result<Option<IndexDamage>> {
        Ok(self
            .meta
            .remove(DAMAGE_KEY)
            .map_err(db_err)?
            .and_then(|v| serde_json::from_slice(&v).ok()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mark_round_trips_and_a_torn_one_is_no_seal() {
        let mark = Mark {
            generation: 41,
            at: Some(Utc::now()),
        };
        let bytes = encode(&mark);
        assert_eq!(bytes.len(), SEAL_LEN);
        assert_eq!(decode(&bytes), Some(mark));
        // A torn write: the new mark's first bytes over the old one's last.
        let old_mark = Mark {
            generation: 9,
            at: Some(Utc::now()),
        };
        let older = encode(&old_mark);
        for cut in [1, 12, 20, 40, 70, 90, 120] {
            let mut torn = bytes[..cut].to_vec();
            torn.extend_from_slice(&older[cut..]);
            if torn != older && torn != bytes {
                let got = decode(&torn);
                // Never a mark that was not written.
                assert!(
                    got.is_none() || got == Some(mark) || got == Some(old_mark),
                    "cut at {cut}: {got:?}"
                );
            }
        }
        let mut flipped = bytes.clone();
        flipped[15] ^= 1;
        assert_eq!(decode(&flipped), None);
        assert_eq!(decode(b""), None);
        assert_eq!(decode(&[b' '; SEAL_LEN]), None);
        // An earlier version's file: the JSON alone.
        let old = serde_json::to_vec(&mark).unwrap();
        assert_eq!(decode(&old), Some(mark));
    }

    #[test]
    fn the_seal_is_rewritten_in_place() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().temporary(true).open().unwrap();
        let meta = db.open_tree("meta-v1").unwrap();
        let file = dir.path().join("db-seal");
        // A longer file of another version is cut to length.
        std::fs::write(&file, vec![b'x'; 400]).unwrap();
        let (seal, damage) = Seal::open(dir.path(), meta).unwrap();
        assert!(damage.is_none());
        let ino = std::fs::metadata(&file).unwrap().ino();
        for _ in 0..3 {
            let g = seal.next().unwrap();
            seal.sealed(g);
            let bytes = std::fs::read(&file).unwrap();
            assert_eq!(bytes.len(), SEAL_LEN);
            assert_eq!(decode(&bytes).map(|m| m.generation), Some(g));
            assert_eq!(std::fs::metadata(&file).unwrap().ino(), ino);
        }
    }
}
