//! The drill-down reads (attacker, session, search) on SQLite: raw events through the
//! `events_source` and `events_session` indexes (schema version 6) or `events_kind`, each with
//! a row limit, joined with the sensor and the enrichment like the export.

use super::super::{DrillFilter, EventRange, ExportRow, IpRecord, ProtocolBucket, StorageError, TimelineSource};
use super::analytics::{run, timeline_source};
use super::{opt_text, text};
use rusqlite::types::ToSql;
use rusqlite::Connection;
use std::ops::ControlFlow;

const COLUMNS: &str = "SELECT e.time_ms, e.src_ip, e.src_port, e.dst_port, e.protocol, e.transport, s.name,
        COALESCE(i.country, ''), i.asn, COALESCE(i.as_org, ''), e.kind, e.session_id, e.duration_ms,
        e.bytes_in, e.bytes_out, e.count, e.username, e.password, e.payload_sha256, e.url, e.fields, e.seq,
        d.derived, c.recovered
 FROM events e JOIN sensors s ON s.id = e.sensor_id LEFT JOIN ip_info i ON i.ip = e.src_ip
      LEFT JOIN event_derived d ON d.event_id = e.id LEFT JOIN event_crack c ON c.event_id = e.id";

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
        let row = ExportRow {
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
        };
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

impl crate::storage::DrillStorage for Connection {
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
