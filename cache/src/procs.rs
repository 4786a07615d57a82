//! Process groups started by stages (`command` nodes), recorded in `groups/` of the
//! cache folder while they run, so that the next dagrun to open the cache kills the ones
//! a dead dagrun (`kill -9`) left behind before anything reruns.
//!
//! A record names the group's id, its leader's start time (so that a reused pid is not
//! mistaken for the leader) and a token the group's processes carry in their environment
//! ([`GROUP_ENV`]), which finds them once the leader is gone (processes that moved to
//! another group included).
//!
//! A record is the file `groups/TOKEN.json`: its *name* carries the token, so a record
//! whose contents were never written or were torn by a crash still finds the group's
//! processes. The contents (pgid and start time) are written in place, without the temp
//! file and rename of an atomic write: a command node is on the run's critical path, and
//! two directory operations fewer per node count there (docs/benchmarks.md, issue 19).

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

/// A recorded group; the record is removed when this is dropped (the group finished).
pub struct TrackedGroup {
    path: PathBuf,
    token: String,
}

impl TrackedGroup {
    /// Records the group's leader (`pgid`, once the command has started) in place.
    pub fn leader(&self, pgid: i32) -> std::io::Result<()> {
        std::fs::write(&self.path, record_bytes(pgid, &self.token))
    }
}

impl Drop for TrackedGroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn record_bytes(pgid: i32, token: &str) -> Vec<u8> {
    let rec = GroupRecord {
        pgid,
        start: if pgid > 0 {
            start_time(pgid).unwrap_or(0)
        } else {
            0
        },
        token: token.to_string(),
    };
    serde_json::to_vec(&rec).expect("serialises")
}

/// Records a group about to start (`pgid` 0: no leader yet; [`TrackedGroup::leader`]
/// adds it) under the cache folder. `token` must be a file-name-safe word ([`new_token`]).
pub fn track(cache_dir: &Path, pgid: i32, token: &str) -> std::io::Result<TrackedGroup> {
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("a group token must be letters and digits, not {token:?}"),
        ));
    }
    let dir = groups_dir(cache_dir);
    let path = dir.join(format!("{token}.json"));
    let bytes = record_bytes(pgid, token);
    if let Err(e) = std::fs::write(&path, &bytes) {
        if e.kind() != std::io::ErrorKind::NotFound {
            return Err(e);
        }
        std::fs::create_dir_all(&dir)?;
        std::fs::write(&path, &bytes)?;
    }
    Ok(TrackedGroup {
        path,
        token: token.to_string(),
    })
}

/// The token a record's file name carries (`TOKEN.json`).
fn token_of(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    let token = name.strip_suffix(".json")?;
    (!token.is_empty() && token.bytes().all(|b| b.is_ascii_alphanumeric()))
        .then(|| token.to_string())
}

/// Kills every recorded group that is still alive and removes the records. Call only
/// while holding the cache lock (then no recorded group belongs to a live dagrun).
/// Returns how many processes were signalled.
pub fn kill_leftovers(cache_dir: &Path) -> usize {
    let dir = groups_dir(cache_dir);
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
        if let Some(rec) = &rec {
            // The leader, if it is still the same process: its whole group.
            if rec.pgid > 1 && rec.start != 0 && start_time(rec.pgid) == Some(rec.start) {
                // SAFETY: signalling a process group this cache recorded.
                unsafe { libc::kill(-rec.pgid, libc::SIGKILL) };
            }
        }
        // The token: the record's, or (empty or torn contents) its file name's. Files of
        // earlier versions' atomic writes (`.TOKEN.tmp`) carry none and just go.
        if let Some(token) = rec.map(|r| r.token).or_else(|| token_of(&path)) {
            tokens.push(format!("{GROUP_ENV}={token}").into_bytes());
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

    #[test]
    fn a_record_is_written_in_place_and_goes_with_its_guard() {
        let dir = tempfile::tempdir().unwrap();
        let token = new_token();
        let g = track(dir.path(), 0, &token).unwrap();
        let path = dir.path().join("groups").join(format!("{token}.json"));
        let rec: GroupRecord = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(
            (rec.pgid, rec.start, rec.token.as_str()),
            (0, 0, token.as_str())
        );
        let me = std::process::id() as i32;
        g.leader(me).unwrap();
        let rec: GroupRecord = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(rec.pgid, me);
        assert_eq!(Some(rec.start), start_time(me));
        // Nothing but the record in the folder: no temp file left beside it.
        assert_eq!(
            std::fs::read_dir(dir.path().join("groups"))
                .unwrap()
                .count(),
            1
        );
        drop(g);
        assert!(!path.exists());
        for bad in ["", "../x", "a b", "a/b"] {
            assert!(track(dir.path(), 0, bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_torn_record_still_finds_its_processes_by_the_file_name() {
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
        let groups = dir.path().join("groups");
        std::fs::create_dir_all(&groups).unwrap();
        // Torn: half a JSON object. And a leftover temp file of an earlier version.
        std::fs::write(groups.join(format!("{token}.json")), b"{\"pgid\": 12").unwrap();
        std::fs::write(groups.join(".old.tmp"), b"x").unwrap();
        assert_eq!(kill_leftovers(dir.path()), 1);
        let status = child.wait().unwrap();
        assert!(!status.success(), "{status:?}");
        assert_eq!(std::fs::read_dir(&groups).unwrap().count(), 0);
    }
}
