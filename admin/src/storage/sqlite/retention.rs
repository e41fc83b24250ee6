//! Retention's deletes: raw events by age or size, hour rows, old rollups.

use super::super::{StorageError, WEEK_MS};
use rusqlite::{params, Connection, OptionalExtension};

const AGG_TABLES: [&str; 4] = ["agg_kind", "agg_port", "agg_src", "agg_cred"];

/// The highest event id retention may delete: folded into the aggregates (SQLite has one
/// writer, so ids commit in order and the fold cursor is an id), and not the newest event (so
/// ids keep growing).
fn prunable_upto(conn: &Connection) -> Result<i64, StorageError> {
    let last: i64 = conn.query_row("SELECT last_event_id FROM analytics_state WHERE id = 1", [], |r| r.get(0))?;
    let max_id: i64 = conn.query_row("SELECT COALESCE(MAX(id), 0) FROM events", [], |r| r.get(0))?;
    Ok(last.min(max_id - 1))
}

pub fn delete_events_before(conn: &Connection, before_ms: i64, chunk: i64) -> Result<u64, StorageError> {
    let upto_id = prunable_upto(conn)?;
    Ok(conn.execute(
        "DELETE FROM events WHERE id IN
           (SELECT id FROM events WHERE time_ms < ?1 AND id <= ?2 ORDER BY time_ms LIMIT ?3)",
        params![before_ms, upto_id, chunk],
    )? as u64)
}

pub fn delete_oldest_events(conn: &Connection, chunk: i64) -> Result<u64, StorageError> {
    let upto_id = prunable_upto(conn)?;
    Ok(conn.execute(
        "DELETE FROM events WHERE id IN
           (SELECT id FROM events WHERE id <= ?1 ORDER BY time_ms LIMIT ?2)",
        params![upto_id, chunk],
    )? as u64)
}

/// Used bytes of the database (pages in use, not the file size: freed pages are reused).
pub fn used_bytes(conn: &Connection) -> Result<u64, StorageError> {
    let pages: i64 = conn.pragma_query_value(None, "page_count", |r| r.get(0))?;
    let free: i64 = conn.pragma_query_value(None, "freelist_count", |r| r.get(0))?;
    let size: i64 = conn.pragma_query_value(None, "page_size", |r| r.get(0))?;
    Ok(((pages - free).max(0) * size) as u64)
}

pub fn oldest_event_ms(conn: &Connection) -> Result<Option<i64>, StorageError> {
    Ok(conn.query_row("SELECT MIN(time_ms) FROM events", [], |r| r.get(0)).optional()?.flatten())
}

pub fn prune_hourly(conn: &Connection, before_ms: i64) -> Result<u64, StorageError> {
    let tx = conn.unchecked_transaction()?;
    let mut n = 0u64;
    for t in AGG_TABLES {
        n += tx.execute(&format!("DELETE FROM {t} WHERE res = 0 AND bucket < ?1"), params![before_ms])? as u64;
    }
    tx.execute("UPDATE analytics_state SET hourly_from_ms = MAX(hourly_from_ms, ?1) WHERE id = 1", params![before_ms])?;
    tx.commit()?;
    Ok(n)
}

pub fn prune_rollups(conn: &Connection, before_ms: i64) -> Result<u64, StorageError> {
    let tx = conn.unchecked_transaction()?;
    let mut n = 0u64;
    for t in AGG_TABLES {
        n += tx.execute(
            &format!("DELETE FROM {t} WHERE (res = 1 AND bucket < ?1) OR (res = 2 AND bucket + ?2 <= ?1)"),
            params![before_ms, WEEK_MS],
        )? as u64;
    }
    if n > 0 {
        tx.execute("DELETE FROM ip_info WHERE id NOT IN (SELECT ip_id FROM agg_src)", [])?;
        tx.execute(
            "DELETE FROM strings WHERE id NOT IN (SELECT user_id FROM agg_cred)
               AND id NOT IN (SELECT pass_id FROM agg_cred)",
            [],
        )?;
    }
    tx.commit()?;
    Ok(n)
}
