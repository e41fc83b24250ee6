//! Sensor rows: enrollment, revocation, contact, the listing.

use super::super::{Enrollment, Registered, SensorRecord, StorageError};
use rusqlite::{params, Connection, OptionalExtension};

pub fn enrollment(conn: &Connection, name: &str) -> Result<Option<Enrollment>, StorageError> {
    Ok(conn
        .query_row("SELECT id, revoked, cert_sha256, high_water_seq FROM sensors WHERE name = ?1", params![name], |r| {
            Ok(Enrollment {
                sensor_id: r.get(0)?,
                revoked: r.get::<_, i64>(1)? != 0,
                cert_sha256: r.get(2)?,
                high_water_seq: r.get(3)?,
            })
        })
        .optional()?)
}

pub fn register(conn: &Connection, name: &str, cert_sha256: &str, now_ms: i64) -> Result<Registered, StorageError> {
    // IMMEDIATE: read then write, with other processes writing (see ingest).
    let tx = rusqlite::Transaction::new_unchecked(conn, rusqlite::TransactionBehavior::Immediate)?;
    let existing: Option<(bool, String)> = tx
        .query_row("SELECT revoked, cert_sha256 FROM sensors WHERE name = ?1", params![name], |r| {
            Ok((r.get::<_, i64>(0)? != 0, r.get(1)?))
        })
        .optional()?;
    match existing {
        Some((false, cert)) if !cert.is_empty() => return Ok(Registered::AlreadyActive),
        Some(_) => {
            tx.execute(
                "UPDATE sensors SET cert_sha256 = ?2, revoked = 0, created_ms = ?3 WHERE name = ?1",
                params![name, cert_sha256, now_ms],
            )?;
        }
        None => {
            tx.execute(
                "INSERT INTO sensors(name, cert_sha256, created_ms) VALUES (?1, ?2, ?3)",
                params![name, cert_sha256, now_ms],
            )?;
        }
    }
    tx.commit()?;
    Ok(Registered::Enrolled)
}

pub fn revoke(conn: &Connection, name: &str) -> Result<bool, StorageError> {
    Ok(conn.execute("UPDATE sensors SET revoked = 1 WHERE name = ?1", params![name])? > 0)
}

pub fn record_hello(conn: &Connection, sensor_id: i64, schema_version: u16, now_ms: i64) -> Result<(), StorageError> {
    conn.execute(
        "UPDATE sensors SET last_contact_ms = ?2, schema_version = ?3 WHERE id = ?1",
        params![sensor_id, now_ms, schema_version],
    )?;
    Ok(())
}

pub fn touch(conn: &Connection, sensor_ids: &[i64], now_ms: i64) -> Result<(), StorageError> {
    let mut stmt = conn.prepare_cached("UPDATE sensors SET last_contact_ms = ?2 WHERE id = ?1")?;
    for id in sensor_ids {
        stmt.execute(params![id, now_ms])?;
    }
    Ok(())
}

pub fn list(conn: &Connection) -> Result<Vec<SensorRecord>, StorageError> {
    let mut stmt = conn.prepare(
        "SELECT s.name, s.revoked, s.created_ms, s.last_contact_ms, s.high_water_seq, s.schema_version,
                s.evicted_total, s.shed_total, s.health_json,
                (SELECT COUNT(*) FROM events e WHERE e.sensor_id = s.id)
         FROM sensors s ORDER BY s.name",
    )?;
    let rows = stmt.query_map([], |r| {
        let health: Option<String> = r.get(8)?;
        Ok(SensorRecord {
            name: r.get(0)?,
            revoked: r.get::<_, i64>(1)? != 0,
            created_ms: r.get(2)?,
            last_contact_ms: r.get(3)?,
            high_water_seq: r.get(4)?,
            schema_version: r.get(5)?,
            evicted_total: r.get(6)?,
            shed_total: r.get(7)?,
            health: health.and_then(|h| serde_json::from_str(&h).ok()),
            events: r.get(9)?,
        })
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}
