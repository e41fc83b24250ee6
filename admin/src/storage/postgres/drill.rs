//! The drill-down reads (attacker, session, search) on PostgreSQL: raw events through the
//! `events_source` and `events_session` indexes (schema version 5) or `events_time`, each with
//! a row limit, joined with the sensor and the enrichment like the export.

use super::super::{
    DrillFilter, EventRange, ExportRow, IpRecord, MinuteCount, ProtocolBucket, StorageError, TimelineSource,
};
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
    let ranged = |cond: &str, limit: &str| {
        format!("{COLUMNS} WHERE {cond} AND {in_range} ORDER BY e.time_ms DESC, e.seq DESC LIMIT {limit}")
    };
    let mut each = |r: &tokio_postgres::Row| -> Result<ControlFlow<()>, tokio_postgres::Error> {
        let row = export_row(r)?;
        Ok(f(&row))
    };
    match *filter {
        DrillFilter::Source(ip) => {
            let sql = ranged("e.src_ip = $4", "$5");
            stream(db, &sql, &[&range.since_ms, &range.until_ms, &range.sensor_id, &ip, &limit], &mut each)
        }
        DrillFilter::Kind(kind) => {
            // The kind as a literal, so that the plan can use the kind's partial index (a
            // parameter cannot match an index predicate in a generic plan).
            let sql = ranged(&format!("e.kind = {}", kind_literal(kind)?), "$4");
            stream(db, &sql, &[&range.since_ms, &range.until_ms, &range.sensor_id, &limit], &mut each)
        }
        DrillFilter::Session { sensor_id, session_id } => {
            let sql = format!("{COLUMNS} WHERE e.sensor_id = $1 AND e.session_id = $2 ORDER BY e.seq LIMIT $3");
            stream(db, &sql, &[&sensor_id, &session_id, &limit], &mut each)
        }
    }
}

/// `kind` as an SQL literal: event kinds are snake_case names (`drosera_uplink` defines them);
/// anything else is refused rather than quoted.
fn kind_literal(kind: &str) -> Result<String, StorageError> {
    if kind.is_empty() || !kind.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
        return Err(StorageError::Postgres(format!("not an event kind: {kind:?}")));
    }
    Ok(format!("'{kind}'"))
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

/// [`crate::storage::DrillStorage::minute_counts`] counted by PostgreSQL: per kind, one GROUP BY
/// over at most `max_rows + 1` rows in range (through `events_time`), without the export's
/// joins; the groups' row counts tell whether the cap was passed (as on SQLite).
pub fn minute_counts(
    db: &Postgres,
    range: &EventRange,
    max_rows: i64,
) -> Result<Option<Vec<MinuteCount>>, StorageError> {
    // The kind as a literal (see `kind_literal`): logins are read through their partial index.
    let sql = |kind: &str| -> Result<String, StorageError> {
        Ok(format!(
            "SELECT (e.time_ms / 60000) * 60000, s.name, e.protocol, SUM(e.count)::bigint, COUNT(*)
             FROM (SELECT time_ms, sensor_id, protocol, count FROM events
                   WHERE kind = {} AND time_ms >= $1 AND time_ms < $2 AND ($3::bigint IS NULL OR sensor_id = $3)
                   LIMIT $4) e
             JOIN sensors s ON s.id = e.sensor_id
             GROUP BY 1, e.sensor_id, s.name, e.protocol",
            kind_literal(kind)?
        ))
    };
    crate::storage::minute_counts_by_groups(max_rows, &mut |kind, limit| {
        query(db, &sql(kind)?, &[&range.since_ms, &range.until_ms, &range.sensor_id, &limit], |r| {
            Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?, r.try_get(4)?))
        })
    })
}

impl crate::storage::DrillStorage for Postgres {
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

#[cfg(test)]
mod tests {
    use super::kind_literal;

    #[test]
    fn only_event_kind_names_become_literals() {
        assert_eq!(kind_literal("scan_window").unwrap(), "'scan_window'");
        for bad in ["", "login'", "x' OR '1'='1", "Login", "a b", "kind;"] {
            assert!(kind_literal(bad).is_err(), "{bad:?}");
        }
    }
}
