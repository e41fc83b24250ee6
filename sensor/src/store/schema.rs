//! Database layout, pragmas and the row encoding.
//!
//! Layout: `meta(k, v)` holds `last_seq`, `acked_seq`, `evicted_total`, `rolled_up_total`,
//! `shipped_seq` (the highest seq handed to the shipper; eviction never passes it);
//! `ev0`..`ev4` hold the events of each [`Priority`] class. A row is `seq INTEGER PRIMARY KEY`
//! (the rowid itself, so no second copy of the key) and `body BLOB`: postcard of the event with
//! `seq = 0` and `sensor = ""`. Time and protocol live inside the body; eviction decodes only the
//! whole body of each evicted row to say what it was in its gap record.

use super::StoreError;
use drosera_uplink::event::{Event, Priority};
use rusqlite::{Connection, OpenFlags, OptionalExtension};
use std::path::Path;
use std::time::Duration;

pub const PAGE_SIZE: u64 = 4096;

/// Table name for each priority class, index = `Priority as u8`.
pub const TABLES: [&str; 5] = ["ev0", "ev1", "ev2", "ev3", "ev4"];

pub fn table(p: Priority) -> &'static str {
    TABLES.get(p.as_u8() as usize).copied().unwrap_or("ev4")
}

/// Opens the writer's connection, creating the schema if needed.
pub fn open_writer(db: &Path, synchronous_full: bool, journal_limit: u64) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(10))?;
    // Must precede the first table: they are fixed when the file is created.
    conn.execute_batch(&format!("PRAGMA page_size = {PAGE_SIZE}; PRAGMA auto_vacuum = INCREMENTAL;"))?;
    let _: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    conn.execute_batch(&format!(
        "PRAGMA synchronous = {};
         PRAGMA wal_autocheckpoint = 0;
         PRAGMA cache_size = -2048;
         PRAGMA temp_store = MEMORY;",
        if synchronous_full { "FULL" } else { "NORMAL" }
    ))?;
    let _: i64 = conn.query_row(&format!("PRAGMA journal_size_limit = {journal_limit}"), [], |r| r.get(0))?;
    let mut ddl =
        String::from("CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v INTEGER NOT NULL) WITHOUT ROWID;");
    for t in TABLES {
        ddl.push_str(&format!("CREATE TABLE IF NOT EXISTS {t} (seq INTEGER PRIMARY KEY, body BLOB NOT NULL);"));
    }
    conn.execute_batch(&ddl)?;
    Ok(conn)
}

/// Opens the handle's connection (reads batches, claims, acknowledges). It writes too (claims and
/// acknowledgements), so it gets the writer's WAL rules: no checkpoints of its own (the writer
/// checkpoints) and the same `journal_size_limit`, so a WAL reset by one of its commits also
/// trims the file back to its bounded size.
pub fn open_reader(db: &Path, journal_limit: u64) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.execute_batch("PRAGMA cache_size = -1024; PRAGMA temp_store = MEMORY; PRAGMA wal_autocheckpoint = 0;")?;
    let _: i64 = conn.query_row(&format!("PRAGMA journal_size_limit = {journal_limit}"), [], |r| r.get(0))?;
    Ok(conn)
}

pub fn meta_get(conn: &Connection, key: &str) -> Result<u64, StoreError> {
    let v: Option<i64> = conn.query_row("SELECT v FROM meta WHERE k = ?1", [key], |r| r.get(0)).optional()?;
    Ok(v.unwrap_or(0).max(0) as u64)
}

pub fn meta_set(conn: &Connection, key: &str, v: u64) -> Result<(), StoreError> {
    conn.prepare_cached("INSERT INTO meta (k, v) VALUES (?1, ?2) ON CONFLICT(k) DO UPDATE SET v = excluded.v")?
        .execute(rusqlite::params![key, v as i64])?;
    Ok(())
}

/// Highest seq present in any event table.
pub fn max_seq(conn: &Connection) -> Result<u64, StoreError> {
    let mut m = 0u64;
    for t in TABLES {
        let v: Option<i64> = conn.query_row(&format!("SELECT max(seq) FROM {t}"), [], |r| r.get(0))?;
        m = m.max(v.unwrap_or(0).max(0) as u64);
    }
    Ok(m)
}

/// Rows over all event tables.
pub fn count_rows(conn: &Connection) -> Result<u64, StoreError> {
    let mut n = 0u64;
    for t in TABLES {
        let v: i64 = conn.query_row(&format!("SELECT count(*) FROM {t}"), [], |r| r.get(0))?;
        n += v.max(0) as u64;
    }
    Ok(n)
}

/// Bytes of pages in use (page_count - freelist_count) * page_size; sees uncommitted changes of
/// the connection's own transaction.
pub fn used_bytes(conn: &Connection) -> Result<u64, StoreError> {
    let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
    let free: i64 = conn.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
    Ok((pages - free).max(0) as u64 * PAGE_SIZE)
}

pub fn page_count(conn: &Connection) -> Result<u64, StoreError> {
    let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
    Ok(pages.max(0) as u64)
}

pub fn freelist_count(conn: &Connection) -> Result<u64, StoreError> {
    let free: i64 = conn.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
    Ok(free.max(0) as u64)
}

/// Encodes an event body (without sensor name and seq) into `out`.
pub fn encode_body(ev: &mut Event, out: &mut Vec<u8>) -> Result<(), StoreError> {
    out.clear();
    encode_body_append(ev, out)
}

/// Appends an event body (without sensor name and seq) to `out`.
pub fn encode_body_append(ev: &mut Event, out: &mut Vec<u8>) -> Result<(), StoreError> {
    let sensor = std::mem::take(&mut ev.sensor);
    let seq = std::mem::replace(&mut ev.seq, 0);
    let r = postcard::to_io(&*ev, &mut *out).map(|_| ());
    ev.sensor = sensor;
    ev.seq = seq;
    r.map_err(|e| StoreError::Decode { seq, message: format!("encode: {e}") })
}

/// Decodes a stored body and fills in `seq` and `sensor`.
pub fn decode_body(seq: u64, body: &[u8], sensor: &str) -> Result<Event, StoreError> {
    let mut ev: Event = postcard::from_bytes(body).map_err(|e| StoreError::Decode { seq, message: e.to_string() })?;
    ev.seq = seq;
    ev.sensor = sensor.to_string();
    Ok(ev)
}
