use serde::{Deserialize, Serialize};

use crate::Hash;

/// What dagrun remembers of a workspace file so that an unchanged file is not rehashed:
/// if size, modification time, inode, status-change time and mode are the same, the hash
/// is reused. The status-change time (ctime) cannot be set back by `cp -p` or `utime`, so
/// a rewrite that restores the old mtime is still seen. Entries written before ctime and
/// mode were recorded read as 0 and never match (the file is rehashed once).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileStat {
    pub size: u64,
    pub mtime_ns: i128,
    pub inode: u64,
    #[serde(default)]
    pub ctime_ns: i128,
    #[serde(default)]
    pub mode: u32,
    pub hash: Hash,
}

impl FileStat {
    /// A file's current state with its hash.
    pub fn of(meta: &std::fs::Metadata, hash: Hash) -> FileStat {
        use std::os::unix::fs::MetadataExt;
        FileStat {
            size: meta.len(),
            mtime_ns: meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
            inode: meta.ino(),
            ctime_ns: meta.ctime() as i128 * 1_000_000_000 + meta.ctime_nsec() as i128,
            mode: meta.mode(),
            hash,
        }
    }

    /// The latest of the modification and status-change times.
    pub fn changed_ns(&self) -> i128 {
        self.mtime_ns.max(self.ctime_ns)
    }

    /// Whether the file is still in the state this was taken from (every field but the
    /// hash, which `of` copies).
    pub fn matches(&self, meta: &std::fs::Metadata) -> bool {
        *self == Self::of(meta, self.hash)
    }
}
