//! The single writer: drains the bounded channel, commits in groups, evicts, checkpoints.
//!
//! Runs on its own OS thread with its own connection (SQLite work never blocks tokio workers).
//! Producers never see a database error: when a commit fails (disk full, I/O error) the writer
//! keeps the batch (bounded by `commit_max_events`), re-reads the free disk space, evicts, shrinks
//! the file, backs off and retries. Meanwhile the channel fills and producers fold their events
//! into rollup counters, which are counted and written once the store catches up.

use super::disk::{self, Budget};
use super::evict::{evict, Gap};
use super::reader::SHIPPED_SEQ;
use super::recover::Recovered;
use super::schema::{self, encode_body, encode_body_append, meta_get, meta_set, table, PAGE_SIZE};
use super::seqfile::SeqFile;
use super::{Shared, StoreError, DB_FILE};
use crate::config::{StoreSection, Synchronous};
use crate::rollup::RollupTable;
use crate::sink::EventQueue;
use drosera_uplink::event::{Detail, Event, Priority};
use drosera_uplink::now_ms;
use rusqlite::{Connection, TransactionBehavior};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Per-row overhead of SQLite (cell pointer, lengths, rowid, record header), for estimates.
const ROW_OVERHEAD: u64 = 12;

/// How long the writer waits when the only rows it could evict are in flight to the admin.
const AWAIT_ACKS_NAP: Duration = Duration::from_millis(50);

/// Most rollup counters drained into one commit.
const ROLLUPS_PER_COMMIT: usize = 1000;

/// An encoded event waiting for its commit.
struct Pending {
    prio: Priority,
    /// Where its encoded body lies in `StoreWriter::buf`.
    start: usize,
    len: usize,
    /// Connections this record accounts for if it is a rollup.
    rolled: u64,
}

/// The single writer; consumes the channel and commits in groups.
pub struct StoreWriter {
    cfg: StoreSection,
    dir: PathBuf,
    db: PathBuf,
    conn: Connection,
    shared: Arc<Shared>,
    seqfile: SeqFile,
    next_seq: u64,
    evicted_total: u64,
    rolled_up_total: u64,
    budget: Budget,
    last_disk_check: Instant,
    pending: Vec<Pending>,
    /// Encoded bodies of `pending`, back to back (one allocation for the whole group).
    buf: Vec<u8>,
    pending_bytes: u64,
    /// Most events per transaction right now (shrinks after failures, grows back on success).
    commit_limit: usize,
    /// Most row bytes evicted per transaction right now (shrinks after failures).
    evict_limit: u64,
    failures: u32,
    last_ballast_try: Option<Instant>,
}

impl std::fmt::Debug for StoreWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreWriter").field("db", &self.db).field("next_seq", &self.next_seq).finish()
    }
}

/// How a commit attempt went.
enum Progress {
    /// Events (and maybe a gap) committed.
    Committed,
    /// Only an eviction fitted in this transaction; call again.
    EvictedOnly,
}

impl StoreWriter {
    pub(crate) fn open(
        cfg: StoreSection,
        dir: &Path,
        shared: Arc<Shared>,
        seqfile: SeqFile,
        recovered: Option<Recovered>,
    ) -> Result<StoreWriter, StoreError> {
        let db = dir.join(DB_FILE);
        let budget = Budget::new(Budget::effective_cap(&cfg, dir, &db), &cfg);
        let conn = schema::open_writer(&db, cfg.synchronous == Synchronous::Full, budget.wal_keep())?;
        let db_last = meta_get(&conn, "last_seq")?.max(schema::max_seq(&conn)?);
        // A fresh database (new, deleted or quarantined) starts above everything ever reserved.
        let last = if db_last == 0 { seqfile.ceiling() } else { db_last };
        let rows = schema::count_rows(&conn)?;
        let evicted_total = meta_get(&conn, "evicted_total")?;
        let rolled_up_total = meta_get(&conn, "rolled_up_total")?;
        let acked = meta_get(&conn, "acked_seq")?;
        shared.last_seq.store(last, Ordering::Release);
        shared.acked_seq.store(acked, Ordering::Release);
        shared.rows.store(rows, Ordering::Release);
        shared.evicted_total.store(evicted_total, Ordering::Release);
        shared.rolled_up_total.store(rolled_up_total, Ordering::Release);
        shared.cap_bytes.store(budget.cap, Ordering::Release);
        shared.store_bytes.store(disk::store_bytes(&db), Ordering::Release);
        let commit_limit = cfg.commit_max_events.max(1);
        let mut w = StoreWriter {
            cfg,
            dir: dir.to_path_buf(),
            db,
            conn,
            shared,
            seqfile,
            next_seq: last + 1,
            evicted_total,
            rolled_up_total,
            budget,
            last_disk_check: Instant::now(),
            pending: Vec::new(),
            buf: Vec::new(),
            pending_bytes: 0,
            commit_limit,
            evict_limit: budget.txn_bytes,
            failures: 0,
            last_ballast_try: None,
        };
        if let Some(r) = recovered {
            let mut ev = Event::internal(Detail::StoreRecovered {
                quarantined_path: r.quarantined_path,
                reason: r.reason,
                last_seq_before: r.last_seq_before,
            });
            w.push(&mut ev, 0)?;
            w.flush_pending(Duration::from_secs(5));
        }
        tracing::info!(db = %w.db.display(), last_seq = last, rows, cap = w.budget.cap, "store opened");
        Ok(w)
    }

    /// Runs on a dedicated OS thread until `shutdown` is cancelled (or every sender is gone),
    /// then drains the channel and the rollup table, commits and returns.
    pub fn spawn(
        self,
        rx: EventQueue,
        rollups: Arc<RollupTable>,
        shutdown: CancellationToken,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        self.spawn_notifying(rx, rollups, shutdown, CancellationToken::new())
    }

    /// [`Self::spawn`], and `done` is cancelled when the thread ends (also by a panic), so the
    /// sensor can wait for that without polling.
    pub fn spawn_notifying(
        self,
        rx: EventQueue,
        rollups: Arc<RollupTable>,
        shutdown: CancellationToken,
        done: CancellationToken,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new().name("store-writer".into()).spawn(move || {
            let _done = done.drop_guard();
            self.run(rx, rollups, shutdown)
        })
    }

    /// The writer loop (blocking; see [`StoreWriter::spawn`]).
    fn run(mut self, mut rx: EventQueue, rollups: Arc<RollupTable>, shutdown: CancellationToken) {
        let rt = match tokio::runtime::Builder::new_current_thread().enable_time().build() {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!(error = %e, "store writer cannot build its timer runtime");
                return;
            }
        };
        let interval = Duration::from_millis(self.cfg.commit_interval_ms.max(1));
        let max_events = self.cfg.commit_max_events.max(1);
        let mut stopping = false;
        let mut closed = false;
        let mut stop_deadline: Option<Instant> = None;
        // Commits in a row that found no room only an acknowledgement could free (for logging).
        let mut waits: u32 = 0;
        loop {
            if !stopping && shutdown.is_cancelled() {
                stopping = true;
                rx.close();
                stop_deadline = Some(Instant::now() + Duration::from_secs(10));
            }
            // Gather a group: up to the event and byte bounds, or until the interval ends.
            let deadline = Instant::now() + interval;
            while !closed && self.pending.len() < max_events && self.pending_bytes < self.budget.txn_bytes {
                match rx.try_recv() {
                    Ok(mut ev) => self.push_logged(&mut ev, 0),
                    Err(mpsc::error::TryRecvError::Disconnected) => closed = true,
                    Err(mpsc::error::TryRecvError::Empty) => {
                        let now = Instant::now();
                        if stopping || now >= deadline || self.failures > 0 {
                            break;
                        }
                        if !self.pending.is_empty() {
                            // A group is forming: sleep until its deadline, or until producers
                            // have queued a group's worth (a wake-up costs more than an insert;
                            // one wake-up per group instead of one per event or per poll).
                            let stop = rt.block_on(async {
                                tokio::select! {
                                    _ = rx.group_waiting() => false,
                                    _ = tokio::time::sleep_until(deadline.into()) => false,
                                    _ = shutdown.cancelled() => true,
                                }
                            });
                            if stop {
                                break;
                            }
                            continue;
                        }
                        // Nothing pending: an idle sensor needs no group timer, only the disk
                        // check (and rollups, which arrive without an event to wake us), so it
                        // sleeps until then instead of waking every commit interval (issue 18:
                        // an idle Pi should wake a few times a second at most).
                        let wake_at = if rollups.is_empty() { deadline.max(self.next_disk_check()) } else { deadline };
                        let got = rt.block_on(async {
                            tokio::select! {
                                r = rx.recv() => Wake::Event(r.map(Box::new)),
                                _ = tokio::time::sleep_until(wake_at.into()) => Wake::Timer,
                                _ = self.shared.acked.notified() => Wake::Acked,
                                _ = shutdown.cancelled() => Wake::Shutdown,
                            }
                        });
                        match got {
                            Wake::Event(Some(mut ev)) => self.push_logged(&mut ev, 0),
                            Wake::Event(None) => closed = true,
                            Wake::Timer => {}
                            // An acknowledgement deleted rows on the handle's connection: its
                            // WAL frames need our checkpoint (maintain) now, not at the next
                            // disk check, or the WAL outgrows its slice while a backlog ships.
                            Wake::Acked | Wake::Shutdown => break,
                        }
                    }
                }
            }
            // Rollups whenever there is room in this group.
            if self.pending.len() < max_events {
                let room = (max_events - self.pending.len()).min(ROLLUPS_PER_COMMIT);
                for mut ev in rollups.drain(room, "", now_ms()) {
                    let n = match ev.detail {
                        Detail::Rollup { connections, .. } => connections,
                        _ => 0,
                    };
                    self.push_logged(&mut ev, n);
                }
            }
            if !self.pending.is_empty() {
                let mut res = self.commit_once();
                for _ in 0..64 {
                    match res {
                        Ok(Progress::EvictedOnly) if !self.pending.is_empty() => {
                            // Keep the WAL inside its slice between back-to-back evictions.
                            self.checkpoint_if_needed();
                            res = self.commit_once();
                        }
                        _ => break,
                    }
                }
                if !matches!(res, Err(StoreError::AwaitingAcks { .. })) {
                    waits = 0;
                }
                match res {
                    Ok(_) => {
                        if self.failures > 0 {
                            tracing::info!(retries = self.failures, "store writes succeed again");
                        }
                        self.failures = 0;
                        self.commit_limit = (self.commit_limit * 2).min(max_events);
                        self.evict_limit = (self.evict_limit * 2).min(self.budget.txn_bytes);
                    }
                    // The group is already halved; the next cycle commits the smaller one.
                    Err(StoreError::GroupTooLarge { events }) => {
                        tracing::debug!(events, commit_limit = self.commit_limit, "group too large; retrying smaller")
                    }
                    Err(StoreError::AwaitingAcks { events }) => {
                        waits = waits.saturating_add(1);
                        if waits == 1 || waits % 100 == 0 {
                            tracing::warn!(events, waits, "store full of events only an acknowledgement frees (in flight, eviction records); waiting");
                        }
                        // Nothing on disk failed: no backoff ladder, just give the shipper a moment.
                        std::thread::sleep(AWAIT_ACKS_NAP);
                    }
                    Err(e) => self.on_failure(&e),
                }
            }
            self.maintain();
            // `closed` is only set once the channel is closed (by us on shutdown, or by the last
            // sender) *and* empty, so nothing accepted is left behind.
            let done = closed && self.pending.is_empty() && rollups.is_empty();
            let give_up = stop_deadline.is_some_and(|d| Instant::now() > d);
            if done || give_up {
                if give_up && !done {
                    tracing::error!(pending = self.pending.len(), "store writer stopping with uncommitted events");
                }
                break;
            }
        }
        let _ = self.conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
        tracing::info!(last_seq = self.next_seq - 1, "store writer stopped");
    }

    fn push_logged(&mut self, ev: &mut Event, rolled: u64) {
        if let Err(e) = self.push(ev, rolled) {
            // Only an encoding failure lands here; count it as shed instead of losing it silently.
            tracing::error!(error = %e, "event cannot be encoded; dropped");
        }
    }

    fn push(&mut self, ev: &mut Event, rolled: u64) -> Result<(), StoreError> {
        ev.clamp();
        let start = self.buf.len();
        if let Err(e) = encode_body_append(ev, &mut self.buf) {
            self.buf.truncate(start);
            return Err(e);
        }
        let len = self.buf.len() - start;
        self.pending_bytes += len as u64 + ROW_OVERHEAD;
        self.pending.push(Pending { prio: ev.priority, start, len, rolled });
        Ok(())
    }

    /// Forgets the first `k` pending events (committed, or impossible to store).
    fn consume(&mut self, k: usize) {
        let k = k.min(self.pending.len());
        if k == 0 {
            return;
        }
        let end = self.pending.get(k - 1).map(|p| p.start + p.len).unwrap_or(0);
        let bytes: u64 = self.pending.drain(..k).map(|p| p.len as u64 + ROW_OVERHEAD).sum();
        self.pending_bytes = self.pending_bytes.saturating_sub(bytes);
        if self.pending.is_empty() {
            self.buf.clear();
        } else {
            self.buf.drain(..end.min(self.buf.len()));
            for p in self.pending.iter_mut() {
                p.start -= end;
            }
        }
    }

    /// Commits pending events (used at open and by tests/tools), retrying for at most `max`.
    fn flush_pending(&mut self, max: Duration) {
        let end = Instant::now() + max;
        while !self.pending.is_empty() && Instant::now() < end {
            if self.commit_once().is_err() {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// One transaction: make room (evicting with a gap record) and insert the next group.
    fn commit_once(&mut self) -> Result<Progress, StoreError> {
        let mut n = 0usize;
        let mut bytes = 0u64;
        for p in self.pending.iter().take(self.commit_limit) {
            let b = p.len as u64 + ROW_OVERHEAD;
            if n > 0 && bytes + b > self.budget.txn_bytes {
                break;
            }
            bytes += b;
            n += 1;
        }
        // Pages the insert will need, with slack for page fill and interior pages.
        let incoming = bytes + bytes / 8 + 2 * PAGE_SIZE;
        self.seqfile.ensure(self.next_seq + n as u64 + 1)?;
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let used = schema::used_bytes(&tx)?;
        let mut gap: Option<Gap> = None;
        // Read inside this write transaction: the shipper claims under the same write lock.
        let claimed = meta_get(&tx, SHIPPED_SEQ)?;
        if used + incoming > self.budget.high {
            let target = self.budget.low.saturating_sub(incoming);
            gap = evict(&tx, target, self.evict_limit, self.shared.rows.load(Ordering::Acquire), claimed)?;
        }
        let room = schema::used_bytes(&tx)? + incoming <= self.budget.db;
        let insert = if room {
            n
        } else if gap.is_some() {
            0
        } else if n > 1 {
            self.commit_limit = (n / 2).max(1);
            return Err(StoreError::GroupTooLarge { events: n });
        } else if schema::max_seq(&tx)? > 0 {
            // What is left only an acknowledgement frees (rows in flight to the admin, eviction
            // records): wait for it (the event stays here, the group is bounded; the channel
            // folds new events into counted rollups meanwhile).
            drop(tx);
            return Err(StoreError::AwaitingAcks { events: n });
        } else {
            // Nothing left to evict and one event alone exceeds the budget: it can never fit.
            drop(tx);
            tracing::error!(bytes, db_budget = self.budget.db, "event larger than the whole store budget; dropped");
            self.consume(1);
            return Ok(Progress::EvictedOnly);
        };
        let mut seq = self.next_seq;
        let mut gap_rows = 0u64;
        if let Some(g) = &gap {
            let mut ev = g.to_event(self.cfg.gap_top_sources);
            let mut body = Vec::with_capacity(128);
            encode_body(&mut ev, &mut body)?;
            tx.prepare_cached(insert_sql(Priority::System))?.execute(rusqlite::params![seq as i64, body])?;
            seq += 1;
            gap_rows = 1;
        }
        let mut rolled = 0u64;
        for p in self.pending.iter().take(insert) {
            tx.prepare_cached(insert_sql(p.prio))?
                .execute(rusqlite::params![seq as i64, &self.buf[p.start..p.start + p.len]])?;
            rolled += p.rolled;
            seq += 1;
        }
        let evicted = gap.as_ref().map(|g| g.count).unwrap_or(0);
        meta_set(&tx, "last_seq", seq - 1)?;
        meta_set(&tx, "evicted_total", self.evicted_total + evicted)?;
        meta_set(&tx, "rolled_up_total", self.rolled_up_total + rolled)?;
        tx.commit()?;

        // Durable: publish.
        self.next_seq = seq;
        self.evicted_total += evicted;
        self.rolled_up_total += rolled;
        self.consume(insert);
        if let Some(g) = &gap {
            tracing::info!(
                count = g.count,
                first_seq = g.first_seq,
                last_seq = g.last_seq,
                cap = self.budget.cap,
                "evicted events to stay under the store cap"
            );
        }
        let s = &self.shared;
        add_rows(&s.rows, insert as u64 + gap_rows, evicted);
        s.evicted_total.store(self.evicted_total, Ordering::Release);
        s.rolled_up_total.store(self.rolled_up_total, Ordering::Release);
        s.last_seq.store(seq - 1, Ordering::Release);
        s.committed.notify_one();
        Ok(if insert == 0 { Progress::EvictedOnly } else { Progress::Committed })
    }

    /// After a failed commit: re-read the disk, make room, shrink the batch and back off.
    fn on_failure(&mut self, e: &StoreError) {
        self.failures = self.failures.saturating_add(1);
        self.shared.write_retries.fetch_add(1, Ordering::Relaxed);
        if self.failures <= 3 || self.failures % 50 == 0 {
            tracing::warn!(error = %e, disk_full = e.is_disk_full(), retries = self.failures, wal = disk::wal_bytes(&self.db), commit_limit = self.commit_limit, evict_limit = self.evict_limit, "store commit failed; evicting and retrying");
        }
        self.commit_limit = (self.commit_limit / 4).max(1);
        self.evict_limit = (self.evict_limit / 4).max(2 * PAGE_SIZE);
        let ballast = disk::ballast_path(&self.db);
        if e.is_disk_full() && ballast.exists() {
            // Give the filesystem our spare blocks so the checkpoint below can finish (it may
            // need to grow the database file) and the WAL can restart from its beginning.
            let _ = std::fs::remove_file(&ballast);
            tracing::warn!(bytes = self.budget.ballast(), "filesystem full: released the store's ballast");
        }
        self.refresh_budget();
        let _ = self.conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
        self.shrink_if_needed(true);
        let backoff = Duration::from_millis((25u64 << self.failures.min(5)).min(1000));
        // Nothing else runs on this thread: a plain sleep is the backoff.
        std::thread::sleep(backoff);
    }

    fn refresh_budget(&mut self) {
        let b = Budget::new(Budget::effective_cap(&self.cfg, &self.dir, &self.db), &self.cfg);
        if b != self.budget {
            if b.cap != self.budget.cap {
                tracing::info!(old = self.budget.cap, new = b.cap, "effective store cap changed");
            }
            let _ = self.conn.query_row(&format!("PRAGMA journal_size_limit = {}", b.wal_keep()), [], |_| Ok(()));
            self.budget = b;
            self.shared.cap_bytes.store(b.cap, Ordering::Release);
        }
        self.last_disk_check = Instant::now();
    }

    /// The WAL bytes kept after a checkpoint (`journal_size_limit`) for the current budget.
    pub(crate) fn wal_keep(&self) -> u64 {
        self.budget.wal_keep()
    }

    /// When [`Self::maintain`] next re-checks the disk.
    fn next_disk_check(&self) -> Instant {
        self.last_disk_check + Duration::from_secs(self.cfg.disk_check_interval_s.max(1))
    }

    /// Periodic work after each cycle: checkpoint a grown WAL, re-check the disk, shrink.
    fn maintain(&mut self) {
        self.checkpoint_if_needed();
        if Instant::now() >= self.next_disk_check() {
            self.refresh_budget();
        }
        self.shrink_if_needed(false);
        self.checkpoint_if_needed();
        if self.failures == 0 {
            self.ensure_ballast();
        }
        self.shared.store_bytes.store(disk::store_bytes(&self.db), Ordering::Release);
    }

    /// PASSIVE checkpoint past `wal_checkpoint`; RESTART past `wal_keep`.
    fn checkpoint_if_needed(&mut self) {
        if disk::wal_bytes(&self.db) > self.budget.wal_checkpoint {
            let _ = self.conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
        }
        if disk::wal_bytes(&self.db) > self.budget.headroom / 2 {
            // The WAL outgrew its slice (readers kept old snapshots, so PASSIVE could not reset
            // it): wait for them, copy everything back and restart it; journal_size_limit then
            // trims the file at the next write.
            let _ = self.conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |_| Ok(()));
        }
    }

    /// (Re)creates the ballast file when it is missing and fits under the cap.
    fn ensure_ballast(&mut self) {
        let path = disk::ballast_path(&self.db);
        let want = self.budget.ballast();
        let have = disk::file_bytes(&path);
        if have == want {
            return;
        }
        let period = Duration::from_secs(self.cfg.disk_check_interval_s.max(1));
        if self.last_ballast_try.is_some_and(|t| t.elapsed() < period) {
            return;
        }
        self.last_ballast_try = Some(Instant::now());
        if have > want {
            let _ = std::fs::remove_file(&path);
        }
        if disk::store_bytes(&self.db) + want > self.budget.cap {
            return;
        }
        let res = (|| -> std::io::Result<()> {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new().create(true).write(true).truncate(true).open(&path)?;
            let zeros = vec![0u8; 64 * 1024];
            let mut left = want;
            while left > 0 {
                let n = left.min(zeros.len() as u64) as usize;
                f.write_all(&zeros[..n])?;
                left -= n as u64;
            }
            f.sync_all()
        })();
        if res.is_err() {
            let _ = std::fs::remove_file(&path);
        }
    }

    /// If the database file is larger than its budget (the effective cap dropped), evict and
    /// give pages back to the filesystem in small steps, checkpointing between them so the WAL
    /// stays within its slice.
    fn shrink_if_needed(&mut self, force_evict: bool) {
        for _ in 0..64 {
            let pages = schema::page_count(&self.conn).unwrap_or(0);
            let used = schema::used_bytes(&self.conn).unwrap_or(0);
            let file_too_big = pages * PAGE_SIZE > self.budget.db;
            let must_evict = force_evict && used > self.budget.low;
            if !file_too_big && !must_evict {
                return;
            }
            let mut evicted = false;
            if used > self.budget.low {
                match self.evict_only() {
                    Ok(e) => evicted = e,
                    Err(e) => {
                        tracing::debug!(error = %e, "eviction-only transaction failed");
                        return;
                    }
                }
            }
            let free = schema::freelist_count(&self.conn).unwrap_or(0);
            if free == 0 {
                // Nothing more to evict (what is left is in flight to the admin) or no need.
                if used <= self.budget.low || !evicted {
                    return;
                }
                continue;
            }
            let chunk = (self.budget.wal_checkpoint / PAGE_SIZE / 2).clamp(8, 1024).min(free);
            if self.conn.execute_batch(&format!("PRAGMA incremental_vacuum({chunk})")).is_err() {
                return;
            }
            // RESTART, not TRUNCATE: a complete checkpoint truncates the *database* file to its
            // new size, while the WAL keeps its (bounded) blocks, so the next commit needs no new
            // disk space even when something else has filled the filesystem meanwhile.
            let _ = self.conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |_| Ok(()));
        }
    }

    /// A transaction that only evicts (down to the low-water mark) and writes its gap record.
    /// True if it evicted anything.
    fn evict_only(&mut self) -> Result<bool, StoreError> {
        self.seqfile.ensure(self.next_seq + 1)?;
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let claimed = meta_get(&tx, SHIPPED_SEQ)?;
        let rows = self.shared.rows.load(Ordering::Acquire);
        let Some(g) = evict(&tx, self.budget.low, self.evict_limit, rows, claimed)? else {
            return Ok(false);
        };
        let mut ev = g.to_event(self.cfg.gap_top_sources);
        let mut body = Vec::with_capacity(128);
        encode_body(&mut ev, &mut body)?;
        let seq = self.next_seq;
        tx.prepare_cached(insert_sql(Priority::System))?.execute(rusqlite::params![seq as i64, body])?;
        meta_set(&tx, "last_seq", seq)?;
        meta_set(&tx, "evicted_total", self.evicted_total + g.count)?;
        tx.commit()?;
        self.next_seq = seq + 1;
        self.evicted_total += g.count;
        tracing::info!(
            count = g.count,
            first_seq = g.first_seq,
            last_seq = g.last_seq,
            cap = self.budget.cap,
            "evicted events to shrink the store"
        );
        let s = &self.shared;
        add_rows(&s.rows, 1, g.count);
        s.evicted_total.store(self.evicted_total, Ordering::Release);
        s.last_seq.store(seq, Ordering::Release);
        s.committed.notify_one();
        Ok(true)
    }
}

/// The row count is shared with acknowledgements (which delete rows on the reader's connection).
fn add_rows(rows: &std::sync::atomic::AtomicU64, plus: u64, minus: u64) {
    let _ = rows.fetch_update(Ordering::AcqRel, Ordering::Acquire, |r| Some((r + plus).saturating_sub(minus)));
}

/// The INSERT statement for a priority class (static, so the statement cache needs no allocation).
fn insert_sql(p: Priority) -> &'static str {
    const SQL: [&str; 5] = [
        "INSERT INTO ev0 (seq, body) VALUES (?1, ?2)",
        "INSERT INTO ev1 (seq, body) VALUES (?1, ?2)",
        "INSERT INTO ev2 (seq, body) VALUES (?1, ?2)",
        "INSERT INTO ev3 (seq, body) VALUES (?1, ?2)",
        "INSERT INTO ev4 (seq, body) VALUES (?1, ?2)",
    ];
    debug_assert_eq!(table(p), &SQL[p.as_u8().min(4) as usize][12..15]);
    SQL[p.as_u8().min(4) as usize]
}

/// Why the writer's wait for the next event ended.
enum Wake {
    Event(Option<Box<Event>>),
    Timer,
    Acked,
    Shutdown,
}
