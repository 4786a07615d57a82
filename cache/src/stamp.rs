//! The no-op stamp: a small file under the cache folder that lets the next identical
//! run answer "nothing to do" without parsing the pipeline or opening the index.
//!
//! A run in which every selected node ended cached writes it (temp file + rename), with
//! a key over everything that decides the plan (computed by the caller) and the
//! signature of every workspace path the plan depended on. The next run compares both;
//! any difference, any unreadable byte, any error sends it down the ordinary path. The
//! stamp never decides anything the ordinary path would decide differently: it is an
//! accelerator and may always be ignored or deleted.
//!
//! [`crate::Cache::open`] deletes the stamp once it holds the lock, so any dagrun command
//! that opens the cache (a run, `cache gc`, a pull...) invalidates it before it can change
//! anything; the run that ends with everything cached writes a new one.

use std::{
    io::Write,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use crate::Hash;

/// The stamp's file name in the cache folder.
pub const STAMP_FILE: &str = "noop-stamp";
const MAGIC: &[u8] = b"dagrun no-op stamp 1\n";
/// A path changed this recently (by its modification or status-change time) may change
/// again within the file system's timestamp resolution without its times showing it:
/// the stamp is not written over such a path (the stat cache's rule, `workspace.rs`).
pub const RACY_NS: i128 = 2_000_000_000;

/// What `lstat`/`stat` says of a path: enough to see that it was replaced, rewritten,
/// renamed over, re-permissioned or turned into another kind of thing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sig {
    /// 0 missing, 1 regular file, 2 folder, 3 symbolic link, 4 anything else.
    pub kind: u8,
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub mode: u32,
}

const SIG_LEN: usize = 1 + 8 * 5 + 4;

impl Sig {
    pub const MISSING: Sig = Sig {
        kind: 0,
        dev: 0,
        ino: 0,
        size: 0,
        mtime_ns: 0,
        ctime_ns: 0,
        mode: 0,
    };

    pub fn of(meta: &std::fs::Metadata) -> Sig {
        let t = meta.file_type();
        let kind = if t.is_file() {
            1
        } else if t.is_dir() {
            2
        } else if t.is_symlink() {
            3
        } else {
            4
        };
        Sig {
            kind,
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.len(),
            mtime_ns: meta.mtime().saturating_mul(1_000_000_000) + meta.mtime_nsec(),
            ctime_ns: meta.ctime().saturating_mul(1_000_000_000) + meta.ctime_nsec(),
            mode: meta.mode(),
        }
    }

    /// `lstat` (`follow` false) or `stat` of `path`; a missing path is [`Sig::MISSING`].
    pub fn take(path: &Path, follow: bool) -> std::io::Result<Sig> {
        let m = if follow {
            std::fs::metadata(path)
        } else {
            std::fs::symlink_metadata(path)
        };
        match m {
            Ok(m) => Ok(Sig::of(&m)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Sig::MISSING),
            Err(e) => Err(e),
        }
    }

    pub fn changed_ns(&self) -> i128 {
        i128::from(self.mtime_ns.max(self.ctime_ns))
    }

    /// The fields that say which thing is there, not what it holds.
    fn identity(&self) -> (u8, u64, u64, u32) {
        (self.kind, self.dev, self.ino, self.mode)
    }

    fn put(&self, out: &mut Vec<u8>) {
        out.push(self.kind);
        out.extend_from_slice(&self.dev.to_le_bytes());
        out.extend_from_slice(&self.ino.to_le_bytes());
        out.extend_from_slice(&self.size.to_le_bytes());
        out.extend_from_slice(&self.mtime_ns.to_le_bytes());
        out.extend_from_slice(&self.ctime_ns.to_le_bytes());
        out.extend_from_slice(&self.mode.to_le_bytes());
    }

    fn get(r: &mut Reader) -> Result<Sig, String> {
        let b = r.take(SIG_LEN)?;
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        Ok(Sig {
            kind: b[0],
            dev: u64_at(1),
            ino: u64_at(9),
            size: u64_at(17),
            mtime_ns: u64_at(25) as i64,
            ctime_ns: u64_at(33) as i64,
            mode: u32::from_le_bytes(b[41..45].try_into().expect("4 bytes")),
        })
    }
}

/// How much of a path's signature must stay the same.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Watch {
    /// Everything: the path's content (or, for a folder, its list of names) matters.
    Full,
    /// Only which thing is there (kind, device, inode, mode): a folder on the way to a
    /// path that matters, which must not become a symbolic link or another folder, but
    /// may gain unrelated entries.
    Identity,
}

/// One path the plan depended on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StampEntry {
    pub path: PathBuf,
    pub watch: Watch,
    /// `lstat`: a symbolic link shows as one.
    pub lstat: Sig,
    /// `stat` through a symbolic link (what it leads to), when `lstat` saw a link.
    pub target: Option<Sig>,
}

impl StampEntry {
    /// The path's signatures now.
    pub fn take(path: PathBuf, watch: Watch) -> std::io::Result<StampEntry> {
        let lstat = Sig::take(&path, false)?;
        let target = if lstat.kind == 3 {
            Some(Sig::take(&path, true)?)
        } else {
            None
        };
        Ok(StampEntry {
            path,
            watch,
            lstat,
            target,
        })
    }

    /// The signature of what is there once links are followed.
    pub fn followed(&self) -> Sig {
        self.target.unwrap_or(self.lstat)
    }

    /// Whether the path is still as this entry saw it; if not, why.
    pub fn check(&self) -> Result<(), String> {
        let now = StampEntry::take(self.path.clone(), self.watch)
            .map_err(|e| format!("`{}`: {e}", self.path.display()))?;
        let same = match self.watch {
            Watch::Full => now == *self,
            Watch::Identity => {
                now.lstat.identity() == self.lstat.identity()
                    && now.target.map(|s| s.identity()) == self.target.map(|s| s.identity())
            }
        };
        if same {
            Ok(())
        } else {
            Err(format!("`{}` changed", self.path.display()))
        }
    }

    /// Whether this entry's times are too recent to be trusted at `now_ns`.
    pub fn racy(&self, now_ns: i128) -> bool {
        self.watch == Watch::Full
            && [Some(self.lstat), self.target]
                .iter()
                .flatten()
                .any(|s| s.kind != 0 && now_ns - s.changed_ns() <= RACY_NS)
    }
}

/// The stamp itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stamp {
    /// Over everything that decides the plan (the caller's; see the binary's `noop.rs`).
    pub key: Hash,
    /// Names of environment variables whose values the key covers (read again when the
    /// key is computed for a comparison).
    pub env: Vec<String>,
    /// What the run printed as its summary, before the time (`NAME: N nodes, N cached`).
    pub summary: String,
    pub entries: Vec<StampEntry>,
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("the stamp is truncated".into());
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn string(&mut self) -> Result<String, String> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| "the stamp is not UTF-8".into())
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

impl Stamp {
    pub fn encode(&self) -> Vec<u8> {
        use std::os::unix::ffi::OsStrExt;
        let mut out = Vec::with_capacity(64 + self.entries.len() * 96);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.key.0);
        put_bytes(&mut out, self.summary.as_bytes());
        out.extend_from_slice(&(self.env.len() as u32).to_le_bytes());
        for e in &self.env {
            put_bytes(&mut out, e.as_bytes());
        }
        out.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        for e in &self.entries {
            put_bytes(&mut out, e.path.as_os_str().as_bytes());
            out.push(match (e.watch, e.target.is_some()) {
                (Watch::Full, false) => 0,
                (Watch::Full, true) => 1,
                (Watch::Identity, false) => 2,
                (Watch::Identity, true) => 3,
            });
            e.lstat.put(&mut out);
            if let Some(t) = e.target {
                t.put(&mut out);
            }
        }
        let sum = blake3::hash(&out);
        out.extend_from_slice(sum.as_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Stamp, String> {
        use std::os::unix::ffi::OsStrExt;
        if bytes.len() < MAGIC.len() + 64 || !bytes.starts_with(MAGIC) {
            return Err("not a stamp of this version".into());
        }
        let (body, sum) = bytes.split_at(bytes.len() - 32);
        if blake3::hash(body).as_bytes() != sum {
            return Err("the stamp's checksum does not match".into());
        }
        let mut r = Reader(&body[MAGIC.len()..]);
        let key = Hash(r.take(32)?.try_into().expect("32 bytes"));
        let summary = r.string()?;
        let n = r.u32()? as usize;
        let mut env = Vec::with_capacity(n.min(1024));
        for _ in 0..n {
            env.push(r.string()?);
        }
        let n = r.u32()? as usize;
        let mut entries = Vec::with_capacity(n.min(1 << 20));
        for _ in 0..n {
            let path = PathBuf::from(std::ffi::OsStr::from_bytes(r.bytes()?));
            let flags = r.take(1)?[0];
            if flags > 3 {
                return Err("the stamp is damaged".into());
            }
            let watch = if flags < 2 {
                Watch::Full
            } else {
                Watch::Identity
            };
            let lstat = Sig::get(&mut r)?;
            let target = if flags % 2 == 1 {
                Some(Sig::get(&mut r)?)
            } else {
                None
            };
            entries.push(StampEntry {
                path,
                watch,
                lstat,
                target,
            });
        }
        if !r.0.is_empty() {
            return Err("the stamp has trailing bytes".into());
        }
        Ok(Stamp {
            key,
            env,
            summary,
            entries,
        })
    }

    pub fn path(cache_dir: &Path) -> PathBuf {
        cache_dir.join(STAMP_FILE)
    }

    /// The stamp of `cache_dir`, if there is a readable one.
    pub fn read(cache_dir: &Path) -> Result<Stamp, String> {
        let bytes = std::fs::read(Self::path(cache_dir)).map_err(|e| format!("no stamp: {e}"))?;
        Stamp::decode(&bytes)
    }

    /// Writes the stamp: a temporary file renamed over the old one, so a reader sees the
    /// old stamp, the new one, or none (a torn file fails its checksum).
    pub fn write(&self, cache_dir: &Path) -> std::io::Result<()> {
        let tmp = cache_dir.join(format!("{STAMP_FILE}.tmp"));
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&self.encode())?;
        drop(f);
        std::fs::rename(&tmp, Self::path(cache_dir))
    }

    /// Deletes the stamp (nothing there is fine).
    pub fn remove(cache_dir: &Path) -> std::io::Result<()> {
        match std::fs::remove_file(Self::path(cache_dir)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Whether every path is as the stamp saw it; if not, the first that is not.
    pub fn check_paths(&self) -> Result<(), String> {
        self.entries.iter().try_for_each(StampEntry::check)
    }
}

/// Nanoseconds since the epoch.
pub fn now_ns() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp_of(dir: &Path) -> Stamp {
        let f = dir.join("f");
        std::fs::write(&f, "one").unwrap();
        std::os::unix::fs::symlink(&f, dir.join("l")).unwrap();
        Stamp {
            key: crate::hash_bytes(b"k"),
            env: vec!["SEED".into()],
            summary: "p: 1 node, 1 cached".into(),
            entries: vec![
                StampEntry::take(f, Watch::Full).unwrap(),
                StampEntry::take(dir.join("l"), Watch::Full).unwrap(),
                StampEntry::take(dir.join("gone"), Watch::Full).unwrap(),
                StampEntry::take(dir.to_path_buf(), Watch::Identity).unwrap(),
            ],
        }
    }

    #[test]
    fn round_trips_and_refuses_damage() {
        let d = tempfile::tempdir().unwrap();
        let s = stamp_of(d.path());
        assert_eq!(s.entries[1].target.unwrap().kind, 1);
        assert_eq!(s.entries[2].lstat, Sig::MISSING);
        s.write(d.path()).unwrap();
        assert_eq!(Stamp::read(d.path()).unwrap(), s);
        let mut bytes = s.encode();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 1;
        assert!(Stamp::decode(&bytes).is_err());
        let bytes = s.encode();
        assert!(Stamp::decode(&bytes[..bytes.len() - 1]).is_err());
        Stamp::remove(d.path()).unwrap();
        Stamp::remove(d.path()).unwrap();
        assert!(Stamp::read(d.path()).is_err());
    }

    #[test]
    fn sees_rewrites_links_and_new_paths() {
        let d = tempfile::tempdir().unwrap();
        let s = stamp_of(d.path());
        s.check_paths().unwrap();
        // Same size, same mtime: the inode or ctime still differs.
        let f = d.path().join("f");
        let old = std::fs::metadata(&f).unwrap().modified().unwrap();
        std::fs::write(&f, "two").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&f)
            .unwrap()
            .set_modified(old)
            .unwrap();
        assert!(s.check_paths().unwrap_err().contains("/f"));

        let b = d.path().join("b");
        std::fs::create_dir(&b).unwrap();
        let s = stamp_of(&b);
        s.check_paths().unwrap();
        // A file appearing where the stamp saw nothing.
        std::fs::write(d.path().join("b/gone"), "").unwrap();
        assert!(s.check_paths().unwrap_err().contains("gone"));
        std::fs::remove_file(d.path().join("b/gone")).unwrap();
        s.check_paths().unwrap();
        // The link now leads elsewhere.
        std::fs::write(d.path().join("b/g"), "one").unwrap();
        std::fs::remove_file(d.path().join("b/l")).unwrap();
        std::os::unix::fs::symlink(d.path().join("b/g"), d.path().join("b/l")).unwrap();
        assert!(s.check_paths().unwrap_err().contains("/l"));
    }

    #[test]
    fn identity_ignores_new_entries_but_not_a_link() {
        let d = tempfile::tempdir().unwrap();
        let sub = d.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        let e = StampEntry::take(sub.clone(), Watch::Identity).unwrap();
        std::fs::write(sub.join("new"), "").unwrap();
        e.check().unwrap();
        let full = StampEntry::take(sub.clone(), Watch::Full).unwrap();
        std::fs::rename(&sub, d.path().join("moved")).unwrap();
        std::os::unix::fs::symlink(d.path().join("moved"), &sub).unwrap();
        assert!(e.check().is_err());
        assert!(full.check().is_err());
    }

    #[test]
    fn recent_times_are_racy() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("f");
        std::fs::write(&f, "x").unwrap();
        let e = StampEntry::take(f, Watch::Full).unwrap();
        assert!(e.racy(now_ns()));
        assert!(!e.racy(e.lstat.changed_ns() + RACY_NS + 1));
        let id = StampEntry {
            watch: Watch::Identity,
            ..e
        };
        assert!(!id.racy(now_ns()));
    }
}
