//! Process groups started by stages (`command` nodes), recorded in `groups/` of the
//! cache folder while they run, so that the next dagrun to open the cache kills the ones
//! a dead dagrun (`kill -9`) left behind before anything reruns.
//!
//! A record names the group's id, its leader's start time (so that a reused pid is not
//! mistaken for the leader) and a token the group's processes carry in their environment
//! ([`GROUP_ENV`]), which finds them once the leader is gone (processes that moved to
//! another group included).

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
}

impl Drop for TrackedGroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Records a running group (its leader is `pgid`) under the cache folder.
pub fn track(cache_dir: &Path, pgid: i32, token: &str) -> std::io::Result<TrackedGroup> {
    let dir = groups_dir(cache_dir);
    std::fs::create_dir_all(&dir)?;
    let rec = GroupRecord {
        pgid,
        start: start_time(pgid).unwrap_or(0),
        token: token.to_string(),
    };
    let path = dir.join(format!("{token}.json"));
    let tmp = dir.join(format!(".{token}.tmp"));
    std::fs::write(&tmp, serde_json::to_vec(&rec).expect("serialises"))?;
    std::fs::rename(&tmp, &path)?;
    Ok(TrackedGroup { path })
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
        if let Some(rec) = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<GroupRecord>(&b).ok())
        {
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
