//! The export read on PostgreSQL: raw events joined with their sensor and enrichment, streamed
//! (the day partitions come out in time order through `events_time`).

use super::super::{EventRange, ExportRow, StorageError};
use super::analytics::stream;
use super::Postgres;
use std::ops::ControlFlow;

/// The columns and joins of an exported event; the drill-down (`drill.rs`) reads the same rows
/// with its own `WHERE`, through [`export_row`].
pub(super) const EXPORT_SELECT: &str =
    "SELECT e.time_ms, e.src_ip, e.src_port, e.dst_port, e.protocol, e.transport, s.name,
        COALESCE(i.country, ''), i.asn, COALESCE(i.as_org, ''), e.kind, e.session_id, e.duration_ms,
        e.bytes_in, e.bytes_out, e.count, e.username, e.password, e.payload_sha256, e.url, e.fields, e.seq,
        e.derived, e.recovered
 FROM events e JOIN sensors s ON s.id = e.sensor_id LEFT JOIN ip_info i ON i.ip = e.src_ip";

/// One row of [`EXPORT_SELECT`].
pub(super) fn export_row(r: &tokio_postgres::Row) -> Result<ExportRow<'_>, tokio_postgres::Error> {
    Ok(ExportRow {
        time_ms: r.try_get(0)?,
        src_ip: r.try_get(1)?,
        src_port: i64::from(r.try_get::<_, i32>(2)?),
        dst_port: i64::from(r.try_get::<_, i32>(3)?),
        protocol: r.try_get(4)?,
        transport: r.try_get(5)?,
        sensor: r.try_get(6)?,
        country: r.try_get(7)?,
        asn: r.try_get(8)?,
        as_org: r.try_get(9)?,
        kind: r.try_get(10)?,
        session_id: r.try_get(11)?,
        duration_ms: r.try_get(12)?,
        bytes_in: r.try_get(13)?,
        bytes_out: r.try_get(14)?,
        count: r.try_get(15)?,
        username: r.try_get(16)?,
        password: r.try_get(17)?,
        payload_sha256: r.try_get(18)?,
        url: r.try_get(19)?,
        fields: r.try_get(20)?,
        seq: r.try_get(21)?,
        derived: r.try_get(22)?,
        recovered: r.try_get(23)?,
    })
}

pub fn export_events(
    db: &Postgres,
    range: &EventRange,
    f: &mut dyn FnMut(&ExportRow<'_>) -> ControlFlow<()>,
) -> Result<(), StorageError> {
    let sql = format!(
        "{EXPORT_SELECT}
         WHERE e.time_ms >= $1 AND e.time_ms < $2 AND ($3::bigint IS NULL OR e.sensor_id = $3)
         ORDER BY e.time_ms, e.sensor_id, e.seq"
    );
    stream(db, &sql, &[&range.since_ms, &range.until_ms, &range.sensor_id], &mut |r| Ok(f(&export_row(r)?)))
}
