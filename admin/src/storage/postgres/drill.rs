//! The drill-down reads (attacker, session, search) on PostgreSQL: raw events through the
//! `events_source` and `events_session` indexes (schema version 5) or `events_time`, each with
//! a row limit, joined with the sensor and the enrichment like the export.

use super::super::{DrillFilter, EventRange, ExportRow, IpRecord, ProtocolBucket, StorageError, TimelineSource};
use super::analytics::{params, query, stream, timeline_source};
use super::Postgres;
use std::ops::ControlFlow;

use super::export::{export_row, EXPORT_SELECT as COLUMNS};

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
        let row = export_row(r)?;
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
