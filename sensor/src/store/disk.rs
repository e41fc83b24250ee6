//! File sizes, free disk space and how the byte cap is split between the database and its WAL.

use crate::config::StoreSection;
use std::path::{Path, PathBuf};

/// `path`, `path-wal`, `path-shm`.
pub fn store_files(db: &Path) -> [PathBuf; 3] {
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    let mut shm = db.as_os_str().to_owned();
    shm.push("-shm");
    [db.to_path_buf(), PathBuf::from(wal), PathBuf::from(shm)]
}

/// Allocated-or-apparent size of a file, whichever is larger (0 if missing).
pub fn file_bytes(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).map(|m| m.len().max(m.blocks() * 512)).unwrap_or(0)
}

/// Total bytes of db + wal + shm.
pub fn store_bytes(db: &Path) -> u64 {
    store_files(db).iter().map(|p| file_bytes(p)).sum()
}

/// The ballast file next to the database (see [`Budget::ballast`]).
pub fn ballast_path(db: &Path) -> PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push(".ballast");
    PathBuf::from(p)
}

/// Everything the store occupies on disk: db + wal + shm + ballast.
pub fn footprint(db: &Path) -> u64 {
    store_bytes(db) + file_bytes(&ballast_path(db))
}

pub fn wal_bytes(db: &Path) -> u64 {
    let [_, wal, _] = store_files(db);
    file_bytes(&wal)
}

/// Bytes available to unprivileged users on the filesystem holding `dir`.
pub fn dir_free_bytes(dir: &Path) -> Option<u64> {
    let st = nix::sys::statvfs::statvfs(dir).ok()?;
    Some((st.blocks_available() as u64).saturating_mul(st.fragment_size() as u64))
}

/// Smallest effective cap (the store keeps this much even on a full disk).
pub const MIN_CAP: u64 = 1024 * 1024;

/// How the effective cap is split. All values in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// Effective cap on db + wal + shm.
    pub cap: u64,
    /// Slice of the cap kept for the WAL and SHM.
    pub headroom: u64,
    /// The database file may use `cap - headroom`.
    pub db: u64,
    /// Evict when pages in use would pass this...
    pub high: u64,
    /// ...down to this.
    pub low: u64,
    /// Checkpoint when the WAL passes this (also the `journal_size_limit`).
    pub wal_checkpoint: u64,
    /// Most encoded bytes inserted or evicted in one transaction.
    pub txn_bytes: u64,
}

impl Budget {
    pub fn new(cap: u64, cfg: &StoreSection) -> Budget {
        let cap = cap.max(256 * 1024);
        let headroom = (cap / 8).clamp(384 * 1024, 32 * 1024 * 1024).min(cap / 2);
        let db = cap - headroom;
        Budget {
            cap,
            headroom,
            db,
            high: db / 100 * cfg.high_water_pct as u64,
            low: db / 100 * cfg.low_water_pct as u64,
            wal_checkpoint: headroom / 8,
            txn_bytes: (headroom / 8).max(16 * 1024),
        }
    }

    /// Size of the ballast file: allocated blocks the writer releases when the filesystem is
    /// full, so a checkpoint (which may need to grow the database file) and the following
    /// eviction can complete. It is part of the headroom, so db + wal + shm + ballast <= cap.
    pub fn ballast(&self) -> u64 {
        self.headroom / 4 / 4096 * 4096
    }

    /// WAL bytes kept allocated after a checkpoint (`journal_size_limit`): commits reuse these
    /// blocks, so the store can still write (and evict) when the filesystem is full.
    pub fn wal_keep(&self) -> u64 {
        self.headroom / 4
    }

    /// Effective cap: `min(configured, current store + free disk - reserve)`.
    pub fn effective_cap(cfg: &StoreSection, dir: &Path, db: &Path) -> u64 {
        // Floor: the store never gives back its last MiB (the smallest cap a config may set), so it
        // can keep working inside its own blocks when something else eats every free byte.
        let floor = cfg.cap_bytes.min(MIN_CAP);
        match dir_free_bytes(dir) {
            Some(free) => cfg.cap_bytes.min((footprint(db) + free).saturating_sub(cfg.reserve_bytes)).max(floor),
            None => cfg.cap_bytes,
        }
    }
}
