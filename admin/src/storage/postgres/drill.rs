//! The drill-down reads (attacker, session, search) on PostgreSQL: raw events through the
//! `events_source` and `events_session` indexes (schema version 5) or `events_time`, each with
//! a row limit, joined with the sensor and the enrichment like the export.

use super::super::{DrillFilter, EventRange, ExportRow, IpRecord, ProtocolBucket, StorageError, TimelineSource};
use super::analytics::{params, query, stream, timeline_source};
use super::Postgres;
use std::ops::ControlFlow;

const COLUMNS: &str = "SELECT e.time_ms, e.src_ip, e.src_port, e.dst_port, e.protocol, e.transport, s.name,
        COALESCE(i.country, ''), i.asn, COALESCE(i.as_org, ''), e.kind, e.session_id, e.duration_ms,
        e.bytes_in, e.bytes_out, e.count, e.username, e.password, e.payload_sha256, e.url, e.fields, e.seq,
        e.derived, e.recovered
 FROM events e JOIN sensors s ON s.id = e.sensor_id LEFT JOIN ip_info i ON i.ip = e.src_ip";

pub fn drill_events(
    db: &Postgres,
    filter: &DrillFilter<'_>,
    range: &EventRange,
    limit: i64,
    f: &mut dyn FnMut(&ExportRow<'_>) -> ControlFlow<()>,
) -> Result<(), StorageError> {
    let in_range = "e.time_ms >= $1 AND e.time_ms < $2 AND ($3::bigint IS NULL OR e.sensor_id = $3)";
    let ranged =
        |cond: &str| format!("{COLUMNS} WHERE {cond} AND {in_range} ORDER BY e.time_ms DESC, e.seq DESC LIMIT $5");
    let mut each = |r: &tokio_postgres::Row| -> Result<ControlFlow<()>, tokio_postgres::Error> {
        let row = ExportRow {
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
        };
        Ok(f(&row))
    };
    match *filter {
        DrillFilter::Source(ip) => {
            let sql = ranged("e.src_ip = $4");
            stream(db, &sql, &[&range.since_ms, &range.until_ms, &range.sensor_id, &ip, &limit], &mut each)
        }
        DrillFilter::Kind(kind) => {
            let sql = ranged("e.kind = $4");
            stream(db, &sql, &[&range.since_ms, &range.until_ms, &range.sensor_id, &kind, &limit], &mut each)
        }
        DrillFilter::Session { sensor_id, session_id } => {
            let sql = format!("{COLUMNS} WHERE e.sensor_id = $1 AND e.session_id = $2 ORDER BY e.seq LIMIT $3");
            stream(db, &sql, &[&sensor_id, &session_id, &limit], &mut each)
        }
    }
}

pub fn find_addresses(db: &Postgres, from: &str, to: &str, limit: i64) -> Result<Vec<IpRecord>, StorageError> {
    // COLLATE "C": byte order, as SQLite compares text, so both backends give the same prefixes.
    let sql = "SELECT ip, country, cc, asn, as_org FROM ip_info
               WHERE ip COLLATE \"C\" >= $1 AND ip COLLATE \"C\" < $2 ORDER BY ip COLLATE \"C\" LIMIT $3";
    query(db, sql, &[&from, &to, &limit], |r| {
        Ok(IpRecord {
            ip: r.try_get(0)?,
            country: r.try_get(1)?,
            cc: r.try_get(2)?,
            asn: r.try_get::<_, Option<i64>>(3)?.and_then(|a| u32::try_from(a).ok()),
            as_org: r.try_get(4)?,
        })
    })
}

pub fn timeline_protocols(
    db: &Postgres,
    src: &TimelineSource,
    sensor_id: i64,
    first: i64,
    last: i64,
) -> Result<Vec<ProtocolBucket>, StorageError> {
    let (source, v) = timeline_source(src, sensor_id);
    let sql = format!(
        "SELECT bucket, protocol, SUM(n)::bigint FROM ({source}) t
         WHERE bucket >= {first} AND bucket <= {last} AND kind IN ('connection','rollup')
         GROUP BY bucket, protocol ORDER BY bucket, protocol COLLATE \"C\""
    );
    query(db, &sql, &params(&v), |row| {
        Ok(ProtocolBucket { bucket: row.try_get(0)?, protocol: row.try_get(1)?, attempts: row.try_get(2)? })
    })
}

impl crate::storage::DrillStorage for Postgres {
    fn drill_events(
        &self,
        filter: &DrillFilter<'_>,
        range: &EventRange,
        limit: i64,
        f: &mut dyn FnMut(&ExportRow<'_>) -> ControlFlow<()>,
    ) -> Result<(), StorageError> {
        drill_events(self, filter, range, limit, f)
    }
    fn find_addresses(&self, from: &str, to: &str, limit: i64) -> Result<Vec<IpRecord>, StorageError> {
        find_addresses(self, from, to, limit)
    }
    fn timeline_protocols(
        &self,
        src: &TimelineSource,
        sensor_id: i64,
        first: i64,
        last: i64,
    ) -> Result<Vec<ProtocolBucket>, StorageError> {
        timeline_protocols(self, src, sensor_id, first, last)
    }
}
