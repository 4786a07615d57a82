//! Process groups started by stages (`command` nodes), recorded in `groups/` of the
//! cache folder while they run, so that the next dagrun to open the cache kills the ones
//! a dead dagrun (`kill -9`) left behind before anything reruns.
//!
//! A record names the group's id, its leader's start time (so that a reused pid is not
//! mistaken for the leader) and a token the group's processes carry in their environment
//! ([`GROUP_ENV`]), which finds them once the leader is gone (processes that moved to
//! another group included).
//!
//! A record is a file of `groups/`, [`RECORD_LEN`] bytes of JSON padded with spaces,
//! written in place with one positioned write. When its group finishes it is overwritten
//! with an idle record (no token) and kept for the next group of this process, so a run of
//! many short commands does not create and delete a file per command: on ext4 every new
//! inode skips the recently deleted ones, and that churn made long runs slow down
//! (docs/benchmarks.md, issue 19). The next open removes every record. A single write of a
//! few hundred bytes within one page is not torn by `kill -9` (the signal is taken between
//! system calls); a power loss can tear it, but then no process it names is alive.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The environment variable carrying a group's token.
pub const GROUP_ENV: &str = "DAGRUN_GROUP";

#[derive(Serialize, Deserialize)]
struct GroupRecord {
    pgid: i32,
    start: u64,
    token: String,
}

fn groups_dir(cache_dir: &Path) -> PathBuf {
    cache_dir.join("groups")
}

/// A fresh token for a group about to start.
pub fn new_token() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let seed = format!(
        "{}-{now}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    );
    crate::hash_bytes(seed.as_bytes()).to_hex()[..32].to_string()
}

/// The length of a record file: the JSON, then spaces.
pub const RECORD_LEN: usize = 256;

/// Record files of this process that hold an idle record, free for the next group.
static FREE: std::sync::Mutex<Vec<(PathBuf, std::fs::File)>> = std::sync::Mutex::new(Vec::new());

/// A recorded group; its record is made idle (and the file kept for reuse) when this is
/// dropped (the group finished).
pub struct TrackedGroup {
    path: PathBuf,
    file: Option<std::fs::File>,
    token: String,
}

impl TrackedGroup {
    /// Records the group's leader (`pgid`, once the command has started) in place.
    pub fn leader(&self, pgid: i32) -> std::io::Result<()> {
        write_record(
            self.file.as_ref().expect("held until drop"),
            pgid,
            &self.token,
        )
    }
}

impl Drop for TrackedGroup {
    fn drop(&mut self) {
        let file = self.file.take().expect("held until drop");
        match write_record(&file, 0, "") {
            Ok(()) => FREE
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((std::mem::take(&mut self.path), file)),
            Err(_) => {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

/// Writes a record (`pgid` 0: no leader; `token` empty: idle) over the file's first
/// [`RECORD_LEN`] bytes, with one positioned write.
fn write_record(file: &std::fs::File, pgid: i32, token: &str) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let rec = GroupRecord {
        pgid,
        start: if pgid > 0 {
            start_time(pgid).unwrap_or(0)
        } else {
            0
        },
        token: token.to_string(),
    };
    let mut bytes = serde_json::to_vec(&rec).expect("serialises");
    if bytes.len() > RECORD_LEN {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "a group record longer than its file",
        ));
    }
    bytes.resize(RECORD_LEN, b' ');
    file.write_all_at(&bytes, 0)
}

/// The most characters of a token: its record fits in [`RECORD_LEN`].
const MAX_TOKEN: usize = 128;

/// Records a group about to start (`pgid` 0: no leader yet; [`TrackedGroup::leader`]
/// adds it) under the cache folder, in a record file this process used before when one
/// is free. `token` must be letters and digits ([`new_token`]).
pub fn track(cache_dir: &Path, pgid: i32, token: &str) -> std::io::Result<TrackedGroup> {
    if token.is_empty()
        || token.len() > MAX_TOKEN
        || !token.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("a group token must be 1 to {MAX_TOKEN} letters and digits, not {token:?}"),
        ));
    }
    let dir = groups_dir(cache_dir);
    let reused = {
        use std::os::unix::fs::MetadataExt;
        let mut free = FREE.lock().unwrap_or_else(|e| e.into_inner());
        free.iter()
            .position(|(p, _)| p.parent() == Some(dir.as_path()))
            .map(|i| free.swap_remove(i))
            // Still linked in `groups/` (not removed by an open's cleaning since).
            .filter(|(_, f)| f.metadata().is_ok_and(|m| m.nlink() > 0))
    };
    let (path, file) = match reused {
        Some(pf) => pf,
        None => {
            let path = dir.join(format!("{}.json", new_token()));
            let open = || {
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&path)
            };
            let file = match open() {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    std::fs::create_dir_all(&dir)?;
                    open()?
                }
                other => other?,
            };
            (path, file)
        }
    };
    let g = TrackedGroup {
        path,
        file: Some(file),
        token: token.to_string(),
    };
    write_record(g.file.as_ref().expect("just set"), pgid, token)?;
    Ok(g)
}

/// Removes this process's idle record files under the cache folder (the cache is closing).
pub fn release_idle(cache_dir: &Path) {
    let dir = groups_dir(cache_dir);
    FREE.lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|(p, _)| {
            if p.parent() == Some(dir.as_path()) {
                let _ = std::fs::remove_file(p);
                false
            } else {
                true
            }
        });
}

/// Kills every recorded group that is still alive and removes the records. Call only
/// while holding the cache lock (then no recorded group belongs to a live dagrun).
/// Returns how many processes were signalled.
pub fn kill_leftovers(cache_dir: &Path) -> usize {
    let dir = groups_dir(cache_dir);
    // This process's free record files there are about to go.
    FREE.lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|(p, _)| p.parent() != Some(dir.as_path()));
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return 0;
    };
    let mut tokens = Vec::new();
    let mut files = Vec::new();
    for e in rd.flatten() {
        let path = e.path();
        let rec = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<GroupRecord>(&b).ok());
        if let Some(rec) = rec.filter(|r| !r.token.is_empty()) {
            // The leader, if it is still the same process: its whole group.
            if rec.pgid > 1 && rec.start != 0 && start_time(rec.pgid) == Some(rec.start) {
                // SAFETY: signalling a process group this cache recorded.
                unsafe { libc::kill(-rec.pgid, libc::SIGKILL) };
            }
            tokens.push(format!("{GROUP_ENV}={}", rec.token).into_bytes());
        }
        files.push(path);
    }
    let mut killed = Vec::new();
    if !tokens.is_empty() {
        let me = std::process::id() as i32;
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            if pid == me {
                continue;
            }
            let Ok(env) = std::fs::read(e.path().join("environ")) else {
                continue;
            };
            if env
                .split(|b| *b == 0)
                .any(|v| tokens.iter().any(|t| v == t))
            {
                // SAFETY: signalling a process that carries a recorded group's token.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                killed.push(pid);
            }
        }
    }
    // Wait (briefly) until they are gone, so that none writes after we return.
    let t = std::time::Instant::now();
    while killed.iter().any(|&p| alive(p)) && t.elapsed() < std::time::Duration::from_secs(5) {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    for f in files {
        let _ = std::fs::remove_file(f);
    }
    if !killed.is_empty() {
        tracing::warn!(
            processes = killed.len(),
            "killed commands left running by an earlier dagrun"
        );
    }
    killed.len()
}

/// Field 22 of `/proc/PID/stat`: the start time in clock ticks after boot.
fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; fields after it follow the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(19)?.parse().ok()
}

/// Whether a process exists and is not a zombie.
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rfind(')')
            .and_then(|i| stat[i + 2..].chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X'),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(path: &Path) -> (usize, GroupRecord) {
        let b = std::fs::read(path).unwrap();
        (b.len(), serde_json::from_slice(&b).unwrap())
    }

    #[test]
    fn a_record_is_written_in_place_then_made_idle_and_its_file_reused() {
        let dir = tempfile::tempdir().unwrap();
        let groups = dir.path().join("groups");
        let token = new_token();
        let g = track(dir.path(), 0, &token).unwrap();
        let path = g.path.clone();
        let (len, rec) = read(&path);
        assert_eq!(len, RECORD_LEN);
        assert_eq!(
            (rec.pgid, rec.start, rec.token.as_str()),
            (0, 0, token.as_str())
        );
        let me = std::process::id() as i32;
        g.leader(me).unwrap();
        let (len, rec) = read(&path);
        assert_eq!((len, rec.pgid), (RECORD_LEN, me));
        assert_eq!(Some(rec.start), start_time(me));
        drop(g);
        // Idle, and kept.
        let (_, rec) = read(&path);
        assert_eq!((rec.pgid, rec.token.as_str()), (0, ""));
        // The next group of this cache reuses the file; another cache gets its own.
        let other = tempfile::tempdir().unwrap();
        let h = track(other.path(), 0, "b").unwrap();
        assert_ne!(h.path.parent(), Some(groups.as_path()));
        let g2 = track(dir.path(), 0, "a").unwrap();
        assert_eq!(g2.path, path);
        assert_eq!(read(&path).1.token, "a");
        assert_eq!(std::fs::read_dir(&groups).unwrap().count(), 1);
        for bad in ["", "../x", "a b", "a/b", &"x".repeat(MAX_TOKEN + 1)] {
            assert!(track(dir.path(), 0, bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn leftovers_are_killed_by_token_and_idle_or_unreadable_records_just_go() {
        let dir = tempfile::tempdir().unwrap();
        let token = new_token();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .env(GROUP_ENV, &token)
            .spawn()
            .unwrap();
        // Wait until the exec has happened (its environment is the new one).
        let pid = child.id() as i32;
        let t = std::time::Instant::now();
        while !std::fs::read(format!("/proc/{pid}/environ"))
            .unwrap_or_default()
            .windows(token.len())
            .any(|w| w == token.as_bytes())
        {
            assert!(t.elapsed().as_secs() < 5, "the child never started");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        // A record left by a dagrun that died (kept open: a guard that is never dropped).
        let g = track(dir.path(), 0, &token).unwrap();
        std::mem::forget(g);
        let groups = dir.path().join("groups");
        // An idle record, a torn one, and a temp file of an earlier version.
        let idle = track(dir.path(), 0, "idle").unwrap();
        drop(idle);
        std::fs::write(groups.join("torn.json"), b"{\"pgid\": 12").unwrap();
        std::fs::write(groups.join(".old.tmp"), b"x").unwrap();
        assert_eq!(kill_leftovers(dir.path()), 1);
        let status = child.wait().unwrap();
        assert!(!status.success(), "{status:?}");
        assert_eq!(std::fs::read_dir(&groups).unwrap().count(), 0);
        // The idle record's file went with the others: the next group gets a new one.
        let g = track(dir.path(), 0, "next").unwrap();
        assert_eq!(read(&g.path).1.token, "next");
        assert_eq!(std::fs::read_dir(&groups).unwrap().count(), 1);
        // Closing: idle records go, a live one stays.
        let idle = track(dir.path(), 0, "idle2").unwrap();
        drop(idle);
        assert_eq!(std::fs::read_dir(&groups).unwrap().count(), 2);
        release_idle(dir.path());
        assert_eq!(std::fs::read_dir(&groups).unwrap().count(), 1);
        drop(g);
    }
}
