//! Accounting: what the sensor says it committed and what the admin holds.
//!
//! Two identities are checked:
//! * connections: every connection the client saw accepted is, at the admin, one `connection`
//!   event or part of a `rollup` event's count (`SUM(count)` over both kinds);
//! * sequence numbers: every seq in `1..=last_seq` the sensor's store committed is at the admin
//!   exactly once, or inside an eviction gap the sensor reported.

use anyhow::{Context, Result};
use rusqlite::{params, Connection, OpenFlags};
use std::path::Path;

/// The fields of `drosera-sensor status --json` this suite reads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SensorStatus {
    pub backlog_events: u64,
    pub store_bytes: u64,
    pub cap_bytes: u64,
    pub evicted_events: u64,
    pub shed_connections: u64,
    pub last_seq: u64,
    pub acked_seq: u64,
}

impl SensorStatus {
    pub fn parse(json: &str) -> Result<SensorStatus> {
        let v: serde_json::Value = serde_json::from_str(json.trim()).context("status --json is not JSON")?;
        let f = |k: &str| -> Result<u64> {
            v.get(k).and_then(|x| x.as_u64()).with_context(|| format!("status --json has no numeric `{k}`: {json}"))
        };
        Ok(SensorStatus {
            backlog_events: f("backlog_events")?,
            store_bytes: f("store_bytes")?,
            cap_bytes: f("cap_bytes")?,
            evicted_events: f("evicted_events")?,
            shed_connections: f("shed_connections")?,
            last_seq: f("last_seq")?,
            acked_seq: f("acked_seq")?,
        })
    }
}

/// What the admin database holds for one sensor.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AdminTotals {
    pub rows: u64,
    pub distinct_seqs: u64,
    pub max_seq: u64,
    pub connection_events: u64,
    pub rollup_connections: u64,
    pub rollup_events: u64,
    /// Sum of `count` over eviction gap events.
    pub evicted: u64,
    pub gap_events: u64,
    /// Seqs in `1..=last_seq` neither at the admin nor inside any reported gap range.
    pub missing: u64,
}

impl AdminTotals {
    /// Connections the admin accounts for: one per connection event plus every rolled-up one.
    pub fn connections(&self) -> u64 {
        self.connection_events + self.rollup_connections
    }
}

/// Reads the totals for `sensor` from the admin database at `db`, checking seqs up to `last_seq`.
pub fn admin_totals(db: &Path, sensor: &str, last_seq: u64) -> Result<AdminTotals> {
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .with_context(|| format!("opening admin database {}", db.display()))?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    let sid: Option<i64> = conn.query_row("SELECT id FROM sensors WHERE name = ?1", params![sensor], |r| r.get(0)).ok();
    let Some(sid) = sid else { return Ok(AdminTotals { missing: last_seq, ..Default::default() }) };
    let mut t = AdminTotals::default();
    let (rows, distinct, max): (i64, i64, Option<i64>) = conn.query_row(
        "SELECT COUNT(*), COUNT(DISTINCT seq), MAX(seq) FROM events WHERE sensor_id = ?1",
        params![sid],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    t.rows = rows as u64;
    t.distinct_seqs = distinct as u64;
    t.max_seq = max.unwrap_or(0) as u64;
    let sum_kind = |kind: &str| -> Result<(u64, u64)> {
        let (n, s): (i64, Option<i64>) = conn.query_row(
            "SELECT COUNT(*), SUM(count) FROM events WHERE sensor_id = ?1 AND kind = ?2",
            params![sid, kind],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        Ok((n as u64, s.unwrap_or(0) as u64))
    };
    t.connection_events = sum_kind("connection")?.0;
    let (rn, rs) = sum_kind("rollup")?;
    t.rollup_events = rn;
    t.rollup_connections = rs;
    // Gap ranges from the detail's flat fields.
    let mut gaps: Vec<(u64, u64)> = Vec::new();
    let mut stmt = conn.prepare(
        "SELECT CAST(json_extract(fields, '$.count') AS INTEGER), CAST(json_extract(fields, '$.first_seq') AS INTEGER),
                CAST(json_extract(fields, '$.last_seq') AS INTEGER)
         FROM events WHERE sensor_id = ?1 AND kind = 'eviction_gap'",
    )?;
    let rows = stmt.query_map(params![sid], |r| {
        Ok((r.get::<_, Option<i64>>(0)?, r.get::<_, Option<i64>>(1)?, r.get::<_, Option<i64>>(2)?))
    })?;
    for row in rows {
        let (c, f, l) = row?;
        t.gap_events += 1;
        t.evicted += c.unwrap_or(0).max(0) as u64;
        gaps.push((f.unwrap_or(0).max(0) as u64, l.unwrap_or(0).max(0) as u64));
    }
    gaps.sort_unstable();
    // Merge overlapping gap ranges so a hole's uncovered part is one subtraction per range.
    let mut merged: Vec<(u64, u64)> = Vec::new();
    for (f, l) in gaps.into_iter().filter(|(f, l)| f <= l) {
        match merged.last_mut() {
            Some(m) if f <= m.1.saturating_add(1) => m.1 = m.1.max(l),
            _ => merged.push((f, l)),
        }
    }
    // Walk the admin's seqs in order and count holes not covered by a gap range.
    let mut present =
        conn.prepare("SELECT DISTINCT seq FROM events WHERE sensor_id = ?1 AND seq <= ?2 ORDER BY seq")?;
    let seqs = present.query_map(params![sid, last_seq.min(i64::MAX as u64) as i64], |r| r.get::<_, i64>(0))?;
    let mut expect: u64 = 1;
    let mut missing = 0u64;
    // O(gap ranges) per hole, whatever its length (a huge `last_seq` must not mean a huge loop).
    let count_hole = |from: u64, to: u64, missing: &mut u64| {
        let covered: u64 = merged.iter().map(|&(f, l)| (to.min(l) + 1).saturating_sub(from.max(f))).sum();
        *missing += (to - from + 1).saturating_sub(covered);
    };
    for s in seqs {
        let s = s?.max(0) as u64;
        if s > expect {
            count_hole(expect, s - 1, &mut missing);
        }
        expect = s + 1;
    }
    if expect <= last_seq {
        count_hole(expect, last_seq, &mut missing);
    }
    t.missing = missing;
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db_with(events: &[(u64, &str, i64, &str)]) -> (tempfile::TempDir, std::path::PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.db");
        let c = Connection::open(&p).unwrap();
        c.execute_batch(
            "CREATE TABLE sensors(id INTEGER PRIMARY KEY, name TEXT UNIQUE);
             CREATE TABLE events(id INTEGER PRIMARY KEY, sensor_id INTEGER, seq INTEGER, kind TEXT,
                                 count INTEGER, fields TEXT, UNIQUE(sensor_id, seq));
             INSERT INTO sensors(id, name) VALUES (1, 's');",
        )
        .unwrap();
        for (seq, kind, count, fields) in events {
            c.execute(
                "INSERT INTO events(sensor_id, seq, kind, count, fields) VALUES (1, ?1, ?2, ?3, ?4)",
                params![*seq as i64, kind, count, fields],
            )
            .unwrap();
        }
        (d, p)
    }

    #[test]
    fn connections_and_rollups_add_up() {
        let (_d, p) = db_with(&[
            (1, "connection", 1, "{}"),
            (2, "login", 1, "{}"),
            (3, "rollup", 40, "{}"),
            (4, "connection", 1, "{}"),
        ]);
        let t = admin_totals(&p, "s", 4).unwrap();
        assert_eq!(t.connections(), 42);
        assert_eq!(t.missing, 0);
        assert_eq!(t.distinct_seqs, 4);
    }

    #[test]
    fn holes_are_missing_unless_a_gap_covers_them() {
        let gap = r#"{"count":"3","first_seq":"2","last_seq":"4"}"#;
        let (_d, p) = db_with(&[(1, "connection", 1, "{}"), (5, "eviction_gap", 1, gap), (7, "connection", 1, "{}")]);
        let t = admin_totals(&p, "s", 9).unwrap();
        assert_eq!(t.evicted, 3);
        // 6, 8 and 9 are not covered.
        assert_eq!(t.missing, 3);
        let t = admin_totals(&p, "s", 7).unwrap();
        assert_eq!(t.missing, 1);
        assert_eq!(admin_totals(&p, "nobody", 5).unwrap().missing, 5);
    }

    #[test]
    fn status_json_is_parsed_and_checked() {
        let s = SensorStatus::parse(
            r#"{"backlog_events":1,"store_bytes":2,"cap_bytes":3,"evicted_events":4,"shed_connections":5,"last_seq":6,"acked_seq":7,"extra":"x"}"#,
        )
        .unwrap();
        assert_eq!(s.last_seq, 6);
        assert!(SensorStatus::parse(r#"{"backlog_events":1}"#).is_err());
    }
}
