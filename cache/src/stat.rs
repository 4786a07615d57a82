use serde::{Deserialize, Serialize};

use crate::Hash;

/// What dagrun remembers of a workspace file so that an unchanged file is not rehashed:
/// if size, modification time and inode are the same, the hash is reused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileStat {
    pub size: u64,
    pub mtime_ns: i128,
    pub inode: u64,
    pub hash: Hash,
}

impl FileStat {
    /// The identity of a file's current state, without its hash.
    pub fn probe(meta: &std::fs::Metadata) -> (u64, i128, u64) {
        use std::os::unix::fs::MetadataExt;
        let mtime_ns = meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128;
        (meta.len(), mtime_ns, meta.ino())
    }

    pub fn matches(&self, meta: &std::fs::Metadata) -> bool {
        let (size, mtime_ns, inode) = Self::probe(meta);
        self.size == size && self.mtime_ns == mtime_ns && self.inode == inode
    }
}
