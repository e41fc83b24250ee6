//! The one write path for events: group commit with the per-sensor high-water mark.

use super::super::row::{Lifted, Tally};
use super::super::{BatchIn, BatchOutcome, StorageError};
use drosera_uplink::event::Event;
use rusqlite::{params, Connection, Transaction, TransactionBehavior};

/// Stores a group of batches in one transaction (see `Storage::commit_batches`).
pub fn commit_batches(conn: &Connection, batches: &[BatchIn<'_>], now: i64) -> Result<Vec<BatchOutcome>, StorageError> {
    // IMMEDIATE: the transaction reads the high-water marks and then writes; a deferred one
    // would fail with "database is locked" (not wait) when another process wrote in between.
    let tx = Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
    let mut outcomes = Vec::with_capacity(batches.len());
    for b in batches {
        outcomes.push(store_batch(&tx, b, now)?);
    }
    tx.commit()?;
    Ok(outcomes)
}

/// Stores one batch inside the group's transaction.
fn store_batch(tx: &Transaction<'_>, b: &BatchIn<'_>, now: i64) -> rusqlite::Result<BatchOutcome> {
    let (revoked, hw): (bool, i64) =
        tx.query_row("SELECT revoked, high_water_seq FROM sensors WHERE id = ?1", params![b.sensor_id], |r| {
            Ok((r.get::<_, i64>(0)? != 0, r.get(1)?))
        })?;
    if revoked {
        return Ok(BatchOutcome::Refused("sensor is revoked".into()));
    }
    let hw = hw.max(0) as u64;
    if b.last_seq <= hw {
        // Already stored (a resend after a lost ack): acknowledge again, store nothing.
        tx.execute("UPDATE sensors SET last_contact_ms = ?2 WHERE id = ?1", params![b.sensor_id, now])?;
        return Ok(BatchOutcome::Ack(hw));
    }
    let mut tally = Tally::default();
    for ev in b.events {
        if ev.seq <= hw || !insert_event(tx, b.sensor_id, ev)? {
            continue;
        }
        tally.add(ev);
        super::samples::insert_sighting(tx, b.sensor_id, ev)?;
    }
    tx.execute(
        "UPDATE sensors SET high_water_seq = ?2, last_contact_ms = ?3, evicted_total = evicted_total + ?4,
                shed_total = shed_total + ?5, health_json = COALESCE(?6, health_json)
         WHERE id = ?1",
        params![b.sensor_id, b.last_seq as i64, now, tally.evicted, tally.shed, tally.health],
    )?;
    Ok(BatchOutcome::Ack(b.last_seq))
}

/// Returns the id of sensor `name`, creating its row if needed (test fixtures and benchmarks
/// that write events without enrolling).
pub fn sensor_id(tx: &Transaction<'_>, name: &str) -> rusqlite::Result<i64> {
    tx.execute("INSERT OR IGNORE INTO sensors(name) VALUES (?1)", params![name])?;
    tx.query_row("SELECT id FROM sensors WHERE name = ?1", params![name], |r| r.get(0))
}

/// Inserts one event for `sensor_id` inside the caller's transaction; returns false if
/// (sensor, seq) was already stored.
pub fn insert_event(tx: &Connection, sensor_id: i64, ev: &Event) -> rusqlite::Result<bool> {
    let l = Lifted::of(ev);
    let mut stmt = tx.prepare_cached(
        "INSERT OR IGNORE INTO events (sensor_id, seq, time_ms, transport, protocol, kind, src_ip, src_port,
            dst_port, session_id, duration_ms, bytes_in, bytes_out, priority, count, username, password,
            payload_sha256, url, fields)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20)",
    )?;
    let n = stmt.execute(params![
        sensor_id,
        ev.seq as i64,
        ev.time_ms,
        ev.transport.as_str(),
        ev.protocol.as_str(),
        l.kind,
        ev.src_ip.to_string(),
        ev.src_port,
        ev.dst_port,
        ev.session_id as i64,
        ev.duration_ms,
        ev.bytes_in as i64,
        ev.bytes_out as i64,
        ev.priority.as_u8(),
        l.count,
        l.username,
        l.password,
        l.payload_sha256,
        l.url,
        l.fields,
    ])?;
    if n == 1 && (l.derived.is_some() || l.body_text.is_some()) {
        tx.prepare_cached(
            "INSERT OR REPLACE INTO event_derived (event_id, sensor_id, time_ms, src_ip, derived, body_text)
             VALUES (last_insert_rowid(), ?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![sensor_id, ev.time_ms, ev.src_ip.to_string(), l.derived, l.body_text])?;
    }
    Ok(n == 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use drosera_uplink::event::{Detail, Priority, Protocol, Secret, Transport};

    #[test]
    fn insert_is_idempotent_per_sensor_and_seq() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = super::super::open(&dir.path().join("a.db")).unwrap();
        let ev = Event {
            seq: 7,
            time_ms: 1,
            sensor: "s".into(),
            transport: Transport::Tcp,
            protocol: Protocol::Telnet,
            src_ip: "203.0.113.1".parse().unwrap(),
            src_port: 1,
            dst_port: 23,
            session_id: 3,
            duration_ms: 0,
            bytes_in: 0,
            bytes_out: 0,
            priority: Priority::Credential,
            detail: Detail::Login {
                username: "root".into(),
                secret: Secret::Password("xc3511".into()),
                success: false,
                extra: vec![],
            },
        };
        let tx = conn.transaction().unwrap();
        let id = sensor_id(&tx, "s").unwrap();
        assert!(insert_event(&tx, id, &ev).unwrap());
        assert!(!insert_event(&tx, id, &ev).unwrap());
        tx.commit().unwrap();
        let (u, p): (String, String) =
            conn.query_row("SELECT username, password FROM events", [], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
        assert_eq!((u.as_str(), p.as_str()), ("root", "xc3511"));
    }
}
