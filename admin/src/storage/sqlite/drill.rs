//! The drill-down reads (attacker, session, search) on SQLite: raw events through the
//! `events_source` and `events_session` indexes (schema version 6) or `events_kind`, each with
//! a row limit, joined with the sensor and the enrichment like the export.

use super::super::{
    DrillFilter, EventRange, ExportRow, IpRecord, MinuteCount, ProtocolBucket, StorageError, TimelineSource,
};
use super::analytics::{run, timeline_source};
use rusqlite::types::ToSql;
use rusqlite::Connection;
use std::ops::ControlFlow;

use super::export::{export_row, EXPORT_SELECT as COLUMNS};

pub fn drill_events(
    conn: &Connection,
    filter: &DrillFilter<'_>,
    range: &EventRange,
    limit: i64,
    f: &mut dyn FnMut(&ExportRow<'_>) -> ControlFlow<()>,
) -> Result<(), StorageError> {
    let in_range = "e.time_ms >= ?1 AND e.time_ms < ?2 AND (?3 IS NULL OR e.sensor_id = ?3)";
    let ranged = |cond: &str, key: String| -> (String, Vec<Box<dyn ToSql>>) {
        let sql = format!("{COLUMNS} WHERE {cond} AND {in_range} ORDER BY e.time_ms DESC, e.seq DESC LIMIT ?5");
        let p: Vec<Box<dyn ToSql>> = vec![
            Box::new(range.since_ms) as Box<dyn ToSql>,
            Box::new(range.until_ms),
            Box::new(range.sensor_id),
            Box::new(key),
            Box::new(limit),
        ];
        (sql, p)
    };
    let (sql, p) = match *filter {
        DrillFilter::Source(ip) => ranged("e.src_ip = ?4", ip.to_string()),
        DrillFilter::Kind(kind) => ranged("e.kind = ?4", kind.to_string()),
        DrillFilter::Session { sensor_id, session_id } => {
            let sql = format!("{COLUMNS} WHERE e.sensor_id = ?1 AND e.session_id = ?2 ORDER BY e.seq LIMIT ?3");
            let p: Vec<Box<dyn ToSql>> =
                vec![Box::new(sensor_id) as Box<dyn ToSql>, Box::new(session_id), Box::new(limit)];
            (sql, p)
        }
    };
    let mut stmt = conn.prepare_cached(&sql)?;
    let p: Vec<&dyn ToSql> = p.iter().map(|b| b.as_ref()).collect();
    let mut rows = stmt.query(p.as_slice())?;
    while let Some(r) = rows.next()? {
        let row = export_row(r)?;
        if f(&row).is_break() {
            break;
        }
    }
    Ok(())
}

pub fn find_addresses(conn: &Connection, from: &str, to: &str, limit: i64) -> Result<Vec<IpRecord>, StorageError> {
    let sql = "SELECT ip, country, cc, asn, as_org FROM ip_info WHERE ip >= ?1 AND ip < ?2 ORDER BY ip LIMIT ?3";
    let p: Vec<Box<dyn ToSql>> =
        vec![Box::new(from.to_string()) as Box<dyn ToSql>, Box::new(to.to_string()), Box::new(limit)];
    run(conn, sql, p, |r| {
        Ok(IpRecord { ip: r.get(0)?, country: r.get(1)?, cc: r.get(2)?, asn: r.get(3)?, as_org: r.get(4)? })
    })
}

pub fn timeline_protocols(
    conn: &Connection,
    src: &TimelineSource,
    sensor_id: i64,
    first: i64,
    last: i64,
) -> Result<Vec<ProtocolBucket>, StorageError> {
    let (source, p) = timeline_source(src, sensor_id);
    let sql = format!(
        "SELECT bucket, protocol, SUM(n) FROM ({source})
         WHERE bucket >= {first} AND bucket <= {last} AND kind IN ('connection','rollup')
         GROUP BY bucket, protocol ORDER BY bucket, protocol"
    );
    run(conn, &sql, p, |row| Ok(ProtocolBucket { bucket: row.get(0)?, protocol: row.get(1)?, attempts: row.get(2)? }))
}

/// [`crate::storage::DrillStorage::minute_counts`] counted by SQLite: per kind, one GROUP BY
/// over at most `max_rows + 1` rows in range (through `events_kind`), without the export's
/// joins; the groups' row counts tell whether the cap was passed.
pub fn minute_counts(
    conn: &Connection,
    range: &EventRange,
    max_rows: i64,
) -> Result<Option<Vec<MinuteCount>>, StorageError> {
    let mut stmt = conn.prepare_cached(
        "SELECT (time_ms / 60000) * 60000, s.name, protocol, SUM(count), COUNT(*)
         FROM (SELECT time_ms, sensor_id, protocol, count FROM events
               WHERE kind = ?1 AND time_ms >= ?2 AND time_ms < ?3 AND (?4 IS NULL OR sensor_id = ?4)
               LIMIT ?5) e
         JOIN sensors s ON s.id = e.sensor_id
         GROUP BY 1, e.sensor_id, protocol",
    )?;
    crate::storage::minute_counts_by_groups(max_rows, &mut |kind, limit| {
        let p = rusqlite::params![kind, range.since_ms, range.until_ms, range.sensor_id, limit];
        let rows = stmt.query_map(p, |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    })
}

impl crate::storage::DrillStorage for Connection {
    fn minute_counts(&self, range: &EventRange, max_rows: i64) -> Result<Option<Vec<MinuteCount>>, StorageError> {
        minute_counts(self, range, max_rows)
    }
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
