//! Address labels and the raw-events mark a relabel needs (`crate::labels`).

use super::super::{LabelRecord, StorageError};
use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};

pub fn labels(conn: &Connection) -> Result<Vec<LabelRecord>, StorageError> {
    let mut st = conn.prepare_cached("SELECT cidr, label, note, created_ms FROM labels ORDER BY cidr")?;
    let rows = st.query_map([], |r| {
        Ok(LabelRecord { cidr: r.get(0)?, label: r.get(1)?, note: r.get(2)?, created_ms: r.get(3)? })
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

pub fn put_label(conn: &Connection, rec: &LabelRecord, max: u32) -> Result<bool, StorageError> {
    let tx = Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
    let exists =
        tx.query_row("SELECT 1 FROM labels WHERE cidr = ?1", params![rec.cidr], |_| Ok(())).optional()?.is_some();
    let n: i64 = tx.query_row("SELECT COUNT(*) FROM labels", [], |r| r.get(0))?;
    if !exists && n >= i64::from(max) {
        return Ok(false);
    }
    tx.execute(
        "INSERT INTO labels(cidr, label, note, created_ms) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(cidr) DO UPDATE SET label = excluded.label, note = excluded.note",
        params![rec.cidr, rec.label, rec.note, rec.created_ms],
    )?;
    tx.commit()?;
    Ok(true)
}

pub fn remove_label(conn: &Connection, cidr: &str) -> Result<bool, StorageError> {
    Ok(conn.execute("DELETE FROM labels WHERE cidr = ?1", params![cidr])? > 0)
}

pub fn raw_from(conn: &Connection) -> Result<i64, StorageError> {
    Ok(conn.query_row("SELECT raw_from_ms FROM label_state WHERE id = 1", [], |r| r.get(0)).optional()?.unwrap_or(0))
}

pub fn set_raw_from(conn: &Connection, ms: i64) -> Result<(), StorageError> {
    conn.execute("UPDATE label_state SET raw_from_ms = max(raw_from_ms, ?1) WHERE id = 1", params![ms])?;
    Ok(())
}
