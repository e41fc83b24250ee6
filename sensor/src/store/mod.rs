//! The event store: a bounded SQLite ring buffer with group commit.
//!
//! WHY it looks like this:
//! * One writer thread ([`StoreWriter`]) owns the only write-heavy connection and commits in
//!   groups (every `commit_interval_ms` or `commit_max_events`): an SD card wears out with
//!   per-event commits, and one writer means no lock fights with producers, who only ever touch
//!   the bounded channel.
//! * One table per [`Priority`](drosera_uplink::Priority) class (`ev0` .. `ev4`, `seq INTEGER PRIMARY KEY, body BLOB`).
//!   Eviction is "oldest first within the lowest class", and acknowledgement is "everything up to
//!   a sequence number"; with a table per class both are always deletions from the *front* of a
//!   B-tree, which free whole pages and write almost nothing to the WAL. That keeps the WAL (and
//!   therefore the byte cap) bounded, and no secondary index costs bytes per row.
//! * The body is the postcard encoding of the event without its sensor name and sequence number
//!   (both are implied), so a typical connection event costs well under 150 bytes on disk.
//! * The byte cap covers db + wal + shm. A headroom slice of the cap is kept for the WAL and SHM
//!   (see [`disk::Budget`]); the writer checkpoints itself (`wal_autocheckpoint=0`) and bounds
//!   each transaction, so the WAL never outgrows its slice. `auto_vacuum=INCREMENTAL` lets the
//!   file shrink when the disk fills from elsewhere and the effective cap drops.
//! * A full filesystem is survivable: checkpoints use RESTART (never TRUNCATE), so the WAL keeps
//!   its bounded blocks (`journal_size_limit`) and later commits reuse them; and a small ballast
//!   file inside the headroom is released on `SQLITE_FULL`, so a checkpoint that must grow the
//!   database file can finish and eviction can proceed. The writer then shrinks the store to the
//!   new effective cap (evict, `incremental_vacuum`, checkpoint) and re-creates the ballast later.
//!   Producers never see any of it: a failed group stays in the writer (bounded) and is retried
//!   with smaller transactions; the channel meanwhile folds events into counted rollups.
//! * Every event leaves the store exactly one way: acknowledged by the admin, or evicted and
//!   counted in a gap record. The shipper reads with [`StoreHandle::claim_batch`], which raises
//!   `shipped_seq` in the same write transaction, and eviction (in the writer's own write
//!   transaction) skips every row up to it; SQLite's write lock orders the two, and the claim is
//!   durable, so a restart between sending and the acknowledgement changes nothing. Before
//!   (issue 18) an eviction could count rows that were in flight, and the admin counted them
//!   twice. Claimed rows are few (a batch is at most 1/16 of the low-water mark, the shipper
//!   keeps 4 in flight); if they are all that is left, the writer waits for the acknowledgement.
//!   Eviction records themselves are never evicted (their counts would go with them).
//! * Sequence numbers are assigned by the writer at commit and persisted in the database; a tiny
//!   sidecar file (`store.seq`) holds a reserved ceiling so that even a quarantined database never
//!   leads to reuse.

mod debug;
mod disk;
mod evict;
mod reader;
mod recover;
mod schema;
mod seqfile;
mod writer;

pub use debug::{debug_writer, synthetic_event};
pub use disk::{dir_free_bytes, Budget};
pub use reader::read_status;
pub use writer::StoreWriter;

use crate::config::StoreSection;
use drosera_uplink::event::Event;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// File name of the database inside `data_dir`.
pub const DB_FILE: &str = "store.db";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("store I/O error on {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("stored event {seq} cannot be decoded: {message}")]
    Decode { seq: u64, message: String },
    /// Not a failure of the disk: the events waiting for one commit do not fit into what the
    /// store can free; the writer retries at once with a smaller group.
    #[error("a group of {events} events is larger than the free store budget; retrying smaller")]
    GroupTooLarge { events: usize },
    /// Not a failure of the disk either: the only rows left are ones eviction never removes
    /// (claimed by the shipper, in flight to the admin, or eviction records); the writer keeps
    /// its group until an acknowledgement frees room.
    #[error("the store holds only events that wait for the admin's acknowledgement; {events} events wait for room")]
    AwaitingAcks { events: usize },
}

impl StoreError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> StoreError {
        StoreError::Io { path: path.display().to_string(), source }
    }

    /// True when SQLite reports a full disk or a write error (the writer evicts and retries).
    pub fn is_disk_full(&self) -> bool {
        match self {
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => {
                matches!(e.code, rusqlite::ErrorCode::DiskFull | rusqlite::ErrorCode::SystemIoFailure)
            }
            StoreError::Io { source, .. } => source.raw_os_error() == Some(libc::ENOSPC),
            _ => false,
        }
    }
}

/// What `drosera-sensor status --json` prints.
#[derive(Debug, Clone, Default, serde::Serialize, PartialEq)]
pub struct StoreStatus {
    /// Events stored and not yet acknowledged by the admin.
    pub backlog_events: u64,
    /// Bytes of db + wal + shm right now.
    pub store_bytes: u64,
    /// Effective cap: `min(cap_bytes, store + free disk - reserve)`.
    pub cap_bytes: u64,
    /// Events evicted to stay under the cap since the store was created (exact).
    pub evicted_events: u64,
    /// Shed connections written to the store as rollup counters (exact, durable).
    pub shed_connections: u64,
    pub last_seq: u64,
    pub acked_seq: u64,
    /// The configured cap (before the free-disk check).
    pub configured_cap_bytes: u64,
    /// Commits that failed (disk full, I/O) and were retried since start (0 from another process).
    pub write_retries: u64,
}

/// State shared between the writer and the handles (all monotonic or last-known values).
#[derive(Debug, Default)]
pub(crate) struct Shared {
    pub last_seq: AtomicU64,
    pub acked_seq: AtomicU64,
    pub evicted_total: AtomicU64,
    pub rolled_up_total: AtomicU64,
    /// Rows in the store (the backlog).
    pub rows: AtomicU64,
    pub store_bytes: AtomicU64,
    pub cap_bytes: AtomicU64,
    pub write_retries: AtomicU64,
    /// Signalled (one permit) after every commit that added rows, for the shipper.
    pub committed: tokio::sync::Notify,
    /// Signalled after an acknowledgement deleted rows, for the writer (it checkpoints).
    pub acked: tokio::sync::Notify,
}

/// Cloneable, thread-safe handle for readers (shipper, status, health). Blocking methods: call
/// them from `spawn_blocking` in async code.
#[derive(Clone, Debug)]
pub struct StoreHandle {
    conn: Arc<Mutex<rusqlite::Connection>>,
    shared: Arc<Shared>,
    sensor: Arc<str>,
    cfg: StoreSection,
    dir: PathBuf,
}

impl StoreHandle {
    /// Events with `seq > after_seq` in sequence order, at most `max_events` and about
    /// `max_bytes` of encoded size (always at least one event if any is pending). Each event has
    /// `seq` and `sensor` filled in.
    ///
    /// A plain read (status, tools, tests): eviction may still remove these rows. What is sent
    /// to the admin must be read with [`Self::claim_batch`].
    pub fn read_batch(&self, after_seq: u64, max_events: usize, max_bytes: usize) -> Result<Vec<Event>, StoreError> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        reader::read_batch(&mut conn, &self.sensor, after_seq, max_events, max_bytes, false)
    }

    /// [`Self::read_batch`] for the shipper: the rows read are claimed (durably, in the same
    /// transaction), and eviction never removes a claimed row; they leave the store only through
    /// [`Self::ack`]. So every event is either shipped or counted in an eviction summary, never
    /// both and never neither (issue 18: an eviction used to count rows that were already in
    /// flight to the admin, and the report then counted them twice).
    ///
    /// Claimed rows cannot make room, so a batch is also bounded by a sixteenth of the store's
    /// low-water mark: with the shipper's window of 4 batches at most a quarter of the store is
    /// claimed and unacknowledged, and eviction always has the rest to choose from.
    pub fn claim_batch(&self, after_seq: u64, max_events: usize, max_bytes: usize) -> Result<Vec<Event>, StoreError> {
        let cap = self.shared.cap_bytes.load(Ordering::Acquire);
        let max_bytes = max_bytes.min(Self::claim_bytes(cap, &self.cfg) as usize).max(1);
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        reader::read_batch(&mut conn, &self.sensor, after_seq, max_events, max_bytes, true)
    }

    /// Most body bytes one claimed batch may hold for an effective cap of `cap` bytes.
    pub fn claim_bytes(cap: u64, cfg: &StoreSection) -> u64 {
        (Budget::new(cap, cfg).low / 16).max(4096)
    }

    /// Resolves once the writer has committed since the last call returned (a commit while
    /// nobody waits is remembered), so the shipper waits for new events instead of polling.
    pub async fn committed(&self) {
        self.shared.committed.notified().await
    }

    /// Durably records that the admin committed everything up to `upto_seq`, freeing those rows.
    /// Acknowledging less than the current acknowledged sequence is a no-op.
    pub fn ack(&self, upto_seq: u64) -> Result<(), StoreError> {
        if upto_seq <= self.shared.acked_seq.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let (deleted, upto) = reader::ack(&mut conn, upto_seq)?;
        self.shared.acked_seq.fetch_max(upto, Ordering::AcqRel);
        let _ = self.shared.rows.fetch_update(Ordering::AcqRel, Ordering::Acquire, |r| Some(r.saturating_sub(deleted)));
        if deleted > 0 {
            self.shared.acked.notify_one();
        }
        Ok(())
    }

    /// Highest acknowledged sequence number.
    pub fn acked_seq(&self) -> u64 {
        self.shared.acked_seq.load(Ordering::Acquire)
    }

    /// Highest committed sequence number.
    pub fn last_seq(&self) -> u64 {
        self.shared.last_seq.load(Ordering::Acquire)
    }

    pub fn status(&self) -> Result<StoreStatus, StoreError> {
        let s = &self.shared;
        let store_bytes = disk::store_bytes(&self.dir.join(DB_FILE));
        Ok(StoreStatus {
            backlog_events: s.rows.load(Ordering::Acquire),
            store_bytes,
            cap_bytes: s.cap_bytes.load(Ordering::Acquire),
            evicted_events: s.evicted_total.load(Ordering::Acquire),
            shed_connections: s.rolled_up_total.load(Ordering::Acquire),
            last_seq: s.last_seq.load(Ordering::Acquire),
            acked_seq: s.acked_seq.load(Ordering::Acquire),
            configured_cap_bytes: self.cfg.cap_bytes,
            write_retries: s.write_retries.load(Ordering::Acquire),
        })
    }

    /// Path of the database file.
    pub fn db_path(&self) -> PathBuf {
        self.dir.join(DB_FILE)
    }

    /// Bytes of free disk the store may still claim: its reserve, plus its room up to the
    /// configured cap. The sample area leaves this much free (see [`crate::samples`]).
    pub fn disk_claim(&self) -> u64 {
        let used = self.shared.store_bytes.load(Ordering::Acquire);
        self.cfg.reserve_bytes.saturating_add(self.cfg.cap_bytes.saturating_sub(used))
    }

    /// Free bytes on the store's filesystem (for health reports).
    pub fn disk_free_bytes(&self) -> u64 {
        dir_free_bytes(&self.dir).unwrap_or(0)
    }
}

/// Opens (creating, checking, recovering) the store in `data_dir`.
///
/// A database that fails `quick_check` (or is not SQLite at all) is moved aside with a
/// timestamp and a fresh store starts with a `StoreRecovered` event; sequence numbers continue
/// above anything the old file can have used.
pub fn open(cfg: &StoreSection, data_dir: &Path, sensor: &str) -> Result<(StoreHandle, StoreWriter), StoreError> {
    std::fs::create_dir_all(data_dir).map_err(|e| StoreError::io(data_dir, e))?;
    let db = data_dir.join(DB_FILE);
    let seqfile = seqfile::SeqFile::open(&data_dir.join("store.seq"))?;
    let recovered = recover::check_or_quarantine(&db, seqfile.ceiling())?;
    let shared = Arc::new(Shared::default());
    let sensor: Arc<str> = Arc::from(sensor);
    let writer = StoreWriter::open(cfg.clone(), data_dir, shared.clone(), seqfile, recovered)?;
    let conn = schema::open_reader(&db, writer.wal_keep())?;
    let handle =
        StoreHandle { conn: Arc::new(Mutex::new(conn)), shared, sensor, cfg: cfg.clone(), dir: data_dir.into() };
    Ok((handle, writer))
}
