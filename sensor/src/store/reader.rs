//! Reading batches for the shipper, acknowledging, and status (also from another process).
//!
//! A batch is a k-way merge of the five per-priority tables in one read transaction (one
//! snapshot, so no sequence number can be skipped by a concurrent commit). Only the current row
//! of each table is held, so memory depends on the batch bounds, never on the backlog.

use super::disk::{self, Budget};
use super::schema::{count_rows, decode_body, meta_get, meta_set, TABLES};
use super::{StoreError, StoreStatus, DB_FILE};
use crate::config::StoreSection;
use drosera_uplink::event::Event;
use rusqlite::{Connection, OpenFlags, TransactionBehavior};
use std::path::Path;

/// Meta key: the highest sequence number ever handed to the shipper (see [`read_batch`]).
pub const SHIPPED_SEQ: &str = "shipped_seq";

/// Reads a batch. With `claim`, the batch is handed to the shipper: in the same write
/// transaction, `shipped_seq` is raised to its last sequence number, so that eviction (which
/// reads `shipped_seq` inside its own write transaction, see [`super::evict`]) never removes a
/// row that may be at the admin. The two transactions are serialised by SQLite's write lock:
/// either the eviction committed first (and the read never saw those rows) or the claim did (and
/// the eviction skips them). Without `claim` it is a plain read (status, tools, tests).
pub fn read_batch(
    conn: &mut Connection,
    sensor: &str,
    after_seq: u64,
    max_events: usize,
    max_bytes: usize,
    claim: bool,
) -> Result<Vec<Event>, StoreError> {
    let max_events = max_events.max(1);
    let behavior = if claim { TransactionBehavior::Immediate } else { TransactionBehavior::Deferred };
    let tx = conn.transaction_with_behavior(behavior)?;
    let mut out = Vec::new();
    {
        let mut stmts = Vec::with_capacity(TABLES.len());
        for t in TABLES {
            stmts.push(tx.prepare_cached(&format!("SELECT seq, body FROM {t} WHERE seq > ?1 ORDER BY seq LIMIT ?2"))?);
        }
        let after = after_seq.min(i64::MAX as u64) as i64;
        let limit = max_events.min(i64::MAX as usize) as i64;
        let mut cursors = Vec::with_capacity(TABLES.len());
        for st in stmts.iter_mut() {
            cursors.push(st.query(rusqlite::params![after, limit])?);
        }
        let mut heads: Vec<Option<(u64, Vec<u8>)>> = Vec::with_capacity(TABLES.len());
        for c in cursors.iter_mut() {
            heads.push(next_row(c)?);
        }
        let mut bytes = 0usize;
        while out.len() < max_events {
            let mut best: Option<usize> = None;
            for (i, h) in heads.iter().enumerate() {
                if let Some((seq, _)) = h {
                    if best.is_none_or(|b| heads[b].as_ref().is_some_and(|(bs, _)| seq < bs)) {
                        best = Some(i);
                    }
                }
            }
            let Some(i) = best else { break };
            let Some((seq, body)) = heads[i].take() else { break };
            if !out.is_empty() && bytes + body.len() > max_bytes {
                break;
            }
            bytes += body.len();
            out.push(decode_body(seq, &body, sensor)?);
            if let Some(c) = cursors.get_mut(i) {
                heads[i] = next_row(c)?;
            }
        }
    }
    if let (true, Some(last)) = (claim, out.last().map(|e| e.seq)) {
        if meta_get(&tx, SHIPPED_SEQ)? < last {
            meta_set(&tx, SHIPPED_SEQ, last)?;
        }
    }
    tx.commit()?;
    Ok(out)
}

fn next_row(rows: &mut rusqlite::Rows<'_>) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
    match rows.next()? {
        Some(r) => Ok(Some((r.get::<_, i64>(0)?.max(0) as u64, r.get::<_, Vec<u8>>(1)?))),
        None => Ok(None),
    }
}

/// Deletes every event with `seq <= upto` and records the acknowledgement, in one transaction.
/// `upto` is first capped at the database's own `last_seq`: nothing beyond what is committed is
/// ever acknowledged, and (unlike the writer's published copy, which trails its commit by a
/// moment) it never lags the rows a reader could already have seen. Returns the number of rows
/// deleted and the sequence number acknowledged.
pub fn ack(conn: &mut Connection, upto: u64) -> Result<(u64, u64), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let upto = upto.min(meta_get(&tx, "last_seq")?);
    let mut n = 0u64;
    for t in TABLES {
        n += tx
            .prepare_cached(&format!("DELETE FROM {t} WHERE seq <= ?1"))?
            .execute([upto.min(i64::MAX as u64) as i64])? as u64;
    }
    if meta_get(&tx, "acked_seq")? < upto {
        meta_set(&tx, "acked_seq", upto)?;
    }
    tx.commit()?;
    Ok((n, upto))
}

/// The store's status read from another process (for `drosera-sensor status`): opens the
/// database read-only and never writes to it.
pub fn read_status(cfg: &StoreSection, data_dir: &Path) -> Result<StoreStatus, StoreError> {
    let db = data_dir.join(DB_FILE);
    let cap = Budget::effective_cap(cfg, data_dir, &db);
    let mut st = StoreStatus {
        store_bytes: disk::store_bytes(&db),
        cap_bytes: cap,
        configured_cap_bytes: cfg.cap_bytes,
        ..StoreStatus::default()
    };
    if !db.exists() {
        return Ok(st);
    }
    let conn =
        match Connection::open_with_flags(&db, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
            .and_then(|c| c.query_row("SELECT count(*) FROM meta", [], |r| r.get::<_, i64>(0)).map(|_| c))
        {
            Ok(c) => c,
            Err(_) => {
                // No -shm we may use (e.g. another user's running sensor): read the last checkpoint.
                let uri = format!("file:{}?mode=ro&immutable=1", db.display());
                Connection::open_with_flags(
                    uri,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?
            }
        };
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    st.backlog_events = count_rows(&conn)?;
    st.evicted_events = meta_get(&conn, "evicted_total")?;
    st.shed_connections = meta_get(&conn, "rolled_up_total")?;
    st.last_seq = meta_get(&conn, "last_seq")?;
    st.acked_seq = meta_get(&conn, "acked_seq")?;
    Ok(st)
}
