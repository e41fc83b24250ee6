//! The export read: raw events joined with their sensor and enrichment, streamed.

use super::super::{EventRange, ExportRow, StorageError};
use super::{opt_text, text};
use rusqlite::{params, Connection};
use std::ops::ControlFlow;

/// The columns and joins of an exported event; the drill-down (`drill.rs`) reads the same rows
/// with its own `WHERE`, through [`export_row`].
pub(super) const EXPORT_SELECT: &str =
    "SELECT e.time_ms, e.src_ip, e.src_port, e.dst_port, e.protocol, e.transport, s.name,
        COALESCE(i.country, ''), i.asn, COALESCE(i.as_org, ''), e.kind, e.session_id, e.duration_ms,
        e.bytes_in, e.bytes_out, e.count, e.username, e.password, e.payload_sha256, e.url, e.fields, e.seq,
        d.derived, c.recovered
 FROM events e JOIN sensors s ON s.id = e.sensor_id LEFT JOIN ip_info i ON i.ip = e.src_ip
      LEFT JOIN event_derived d ON d.event_id = e.id LEFT JOIN event_crack c ON c.event_id = e.id";

/// One row of [`EXPORT_SELECT`].
pub(super) fn export_row<'r>(r: &'r rusqlite::Row<'_>) -> rusqlite::Result<ExportRow<'r>> {
    Ok(ExportRow {
        time_ms: r.get(0)?,
        src_ip: text(r, 1)?,
        src_port: r.get(2)?,
        dst_port: r.get(3)?,
        protocol: text(r, 4)?,
        transport: text(r, 5)?,
        sensor: text(r, 6)?,
        country: text(r, 7)?,
        asn: r.get(8)?,
        as_org: text(r, 9)?,
        kind: text(r, 10)?,
        session_id: r.get(11)?,
        duration_ms: r.get(12)?,
        bytes_in: r.get(13)?,
        bytes_out: r.get(14)?,
        count: r.get(15)?,
        username: opt_text(r, 16)?,
        password: opt_text(r, 17)?,
        payload_sha256: opt_text(r, 18)?,
        url: opt_text(r, 19)?,
        fields: text(r, 20)?,
        seq: r.get(21)?,
        derived: opt_text(r, 22)?,
        recovered: opt_text(r, 23)?,
    })
}

pub fn export_events(
    conn: &Connection,
    range: &EventRange,
    f: &mut dyn FnMut(&ExportRow<'_>) -> ControlFlow<()>,
) -> Result<(), StorageError> {
    let mut stmt = conn.prepare(&format!(
        "{EXPORT_SELECT}
         WHERE e.time_ms >= ?1 AND e.time_ms < ?2 AND (?3 IS NULL OR e.sensor_id = ?3)
         ORDER BY e.time_ms, e.sensor_id, e.seq"
    ))?;
    let mut rows = stmt.query(params![range.since_ms, range.until_ms, range.sensor_id])?;
    while let Some(r) = rows.next()? {
        if f(&export_row(r)?).is_break() {
            break;
        }
    }
    Ok(())
}
