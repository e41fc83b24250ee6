//! Startup check: `PRAGMA quick_check`, and quarantine of a database that fails it.
//!
//! A corrupt or foreign file must never stop the sensor (no crash loop, no human needed): the
//! db, wal and shm files are renamed to `store.db.corrupt-<unix-time>[-wal|-shm]`, a fresh store
//! starts, and the writer records a `StoreRecovered` event. Only the newest [`KEEP`] quarantined
//! sets are kept, so repeated corruption cannot fill the disk.

use super::disk::store_files;
use super::StoreError;
use rusqlite::{Connection, OpenFlags};
use std::path::{Path, PathBuf};

const KEEP: usize = 2;

/// What happened to a database that failed the check.
#[derive(Debug, Clone)]
pub struct Recovered {
    pub quarantined_path: String,
    pub reason: String,
    pub last_seq_before: u64,
}

/// Why `db` is unusable, or `None` if it passes `quick_check` (or does not exist yet).
fn check(db: &Path) -> Option<String> {
    if !db.exists() {
        return None;
    }
    let conn =
        match Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX) {
            Ok(c) => c,
            Err(e) => return Some(format!("cannot open: {e}")),
        };
    let _ = conn.busy_timeout(std::time::Duration::from_secs(5));
    let rows: Result<Vec<String>, rusqlite::Error> =
        conn.prepare("PRAGMA quick_check(5)").and_then(|mut st| st.query_map([], |r| r.get::<_, String>(0))?.collect());
    match rows {
        Ok(r) if r.len() == 1 && r[0] == "ok" => None,
        Ok(r) => Some(format!("quick_check: {}", r.join("; "))),
        Err(e) => Some(format!("quick_check failed: {e}")),
    }
}

/// Best effort: the last sequence number recorded in a quarantined database.
fn readable_last_seq(db: &Path) -> u64 {
    let Ok(conn) = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY) else { return 0 };
    let meta = super::schema::meta_get(&conn, "last_seq").unwrap_or(0);
    meta.max(super::schema::max_seq(&conn).unwrap_or(0))
}

/// Checks `db`; if it is unusable, moves it aside and returns what happened.
pub fn check_or_quarantine(db: &Path, seq_ceiling: u64) -> Result<Option<Recovered>, StoreError> {
    let Some(reason) = check(db) else { return Ok(None) };
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let files = store_files(db);
    let mut target = PathBuf::from(format!("{}.corrupt-{stamp}", db.display()));
    let mut n = 1;
    while target.exists() {
        target = PathBuf::from(format!("{}.corrupt-{stamp}.{n}", db.display()));
        n += 1;
    }
    let last_in_file = readable_last_seq(db);
    for (i, f) in files.iter().enumerate() {
        if !f.exists() {
            continue;
        }
        let to = match i {
            0 => target.clone(),
            1 => PathBuf::from(format!("{}-wal", target.display())),
            _ => PathBuf::from(format!("{}-shm", target.display())),
        };
        std::fs::rename(f, &to).map_err(|e| StoreError::io(f, e))?;
    }
    tracing::error!(path = %target.display(), reason = %reason, "store database failed its check; quarantined it and starting a fresh store");
    prune(db);
    Ok(Some(Recovered {
        quarantined_path: target.display().to_string(),
        reason,
        last_seq_before: seq_ceiling.max(last_in_file),
    }))
}

/// Deletes all but the newest [`KEEP`] quarantined databases (and their wal/shm).
fn prune(db: &Path) {
    let (Some(dir), Some(name)) = (db.parent(), db.file_name().and_then(|n| n.to_str())) else { return };
    let prefix = format!("{name}.corrupt-");
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    let mut mains: Vec<(std::time::SystemTime, PathBuf)> = rd
        .filter_map(|e| e.ok())
        .filter(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            n.starts_with(&prefix) && !n.ends_with("-wal") && !n.ends_with("-shm")
        })
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    mains.sort();
    let excess = mains.len().saturating_sub(KEEP);
    for (_, p) in mains.into_iter().take(excess) {
        for f in store_files(&p) {
            let _ = std::fs::remove_file(f);
        }
    }
}
