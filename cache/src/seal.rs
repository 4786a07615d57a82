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

use std::{
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
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

pub(crate) struct Seal {
    file: PathBuf,
    /// Where the file is written before it is renamed into place.
    tmp: PathBuf,
    meta: sled::Tree,
    generation: AtomicU64,
}

impl Seal {
    /// Compares the index with its seal file; returns the seal and any damage found (also
    /// noted in the index until [`Seal::take_damage`]).
    pub(crate) fn open(
        dir: &Path,
        tmp: &Path,
        meta: sled::Tree,
    ) -> Result<(Seal, Option<IndexDamage>)> {
        let file = dir.join("db-seal");
        let inside: Mark = meta
            .get(GEN_KEY)
            .map_err(db_err)?
            .and_then(|v| serde_json::from_slice(&v).ok())
            .unwrap_or_default();
        let outside: Option<Mark> = std::fs::read(&file)
            .ok()
            .and_then(|v| serde_json::from_slice(&v).ok());
        let seal = Seal {
            file,
            tmp: tmp.to_path_buf(),
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
        // A temp file and a rename: the seal is whole or absent (then nothing is checked).
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let tmp = self.tmp.join(format!(
            "seal-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let ok = std::fs::write(&tmp, serde_json::to_vec(&mark).expect("serialises"))
            .and_then(|_| std::fs::rename(&tmp, &self.file));
        if let Err(e) = ok {
            let _ = std::fs::remove_file(&tmp);
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
