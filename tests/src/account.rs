//! Accounting: what the sensor says it committed and what the admin holds.
//!
//! Three identities are checked:
//! * connections: every TCP connection the client saw accepted is, at the admin, one TCP
//!   `connection` event or part of a TCP `rollup` event's count (`SUM(count)` over both kinds);
//! * datagrams: every UDP datagram the client sent is, at the admin, one UDP exchange (a
//!   `connection` event with transport `udp`: the sensor makes one per datagram that opens no
//!   flow) or part of a UDP `rollup` (a datagram shed by the per-source budget or memory
//!   pressure), or the kernel dropped it before the sensor read it (`kernel.rs`);
//! * sequence numbers: every seq in `1..=last_seq` the sensor's store committed is at the admin
//!   exactly once, or inside an eviction gap the sensor reported.

use anyhow::{Context, Result};
use drosera_admin::storage::{open_backend, Backend, EventRange};
use std::ops::ControlFlow;

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
    /// TCP connections recorded one by one (`connection` events of any transport but UDP).
    pub connection_events: u64,
    /// TCP connections shed and counted (`count` of rollups of any transport but UDP).
    pub rollup_connections: u64,
    pub rollup_events: u64,
    /// UDP exchanges (`connection` events with transport `udp`).
    pub udp_exchanges: u64,
    /// UDP datagrams shed and counted (`count` of rollups with transport `udp`).
    pub udp_rollup_datagrams: u64,
    pub udp_rollup_events: u64,
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

    /// UDP datagrams the admin accounts for: one per exchange plus every shed one.
    pub fn datagrams(&self) -> u64 {
        self.udp_exchanges + self.udp_rollup_datagrams
    }
}

/// Reads the totals for `sensor` from the admin database `db` (either backend, through the
/// admin's own storage interface: its export cursor), checking seqs up to `last_seq`.
pub fn admin_totals(db: &Backend, sensor: &str, last_seq: u64) -> Result<AdminTotals> {
    let store = open_backend(db).with_context(|| format!("opening admin database {db:?}"))?;
    let Some(sid) = store.sensor_id(sensor)? else {
        return Ok(AdminTotals { missing: last_seq, ..Default::default() });
    };
    let mut t = AdminTotals::default();
    let mut seqs: Vec<u64> = Vec::new();
    let mut gaps: Vec<(u64, u64)> = Vec::new();
    let range = EventRange { since_ms: i64::MIN, until_ms: i64::MAX, sensor_id: Some(sid) };
    let mut bad_fields = None;
    store.export_events(&range, &mut |row| {
        t.rows += 1;
        seqs.push(row.seq.max(0) as u64);
        let udp = row.transport == "udp";
        match row.kind {
            "connection" if udp => t.udp_exchanges += 1,
            "connection" => t.connection_events += 1,
            "rollup" if udp => {
                t.udp_rollup_events += 1;
                t.udp_rollup_datagrams += row.count.max(0) as u64;
            }
            "rollup" => {
                t.rollup_events += 1;
                t.rollup_connections += row.count.max(0) as u64;
            }
            "eviction_gap" => {
                // Gap ranges from the detail's flat fields.
                let f: serde_json::Value = match serde_json::from_str(row.fields) {
                    Ok(v) => v,
                    Err(e) => {
                        bad_fields = Some(e);
                        return ControlFlow::Break(());
                    }
                };
                let num = |k: &str| f.get(k).and_then(|v| v.as_str()).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
                t.gap_events += 1;
                t.evicted += num("count");
                gaps.push((num("first_seq"), num("last_seq")));
            }
            _ => {}
        }
        ControlFlow::Continue(())
    })?;
    if let Some(e) = bad_fields {
        return Err(e).context("an eviction gap's fields are not JSON");
    }
    seqs.sort_unstable();
    t.max_seq = seqs.last().copied().unwrap_or(0);
    seqs.dedup();
    t.distinct_seqs = seqs.len() as u64;
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
    let mut expect: u64 = 1;
    let mut missing = 0u64;
    // O(gap ranges) per hole, whatever its length (a huge `last_seq` must not mean a huge loop).
    let count_hole = |from: u64, to: u64, missing: &mut u64| {
        let covered: u64 = merged.iter().map(|&(f, l)| (to.min(l) + 1).saturating_sub(from.max(f))).sum();
        *missing += (to - from + 1).saturating_sub(covered);
    };
    for &s in seqs.iter().take_while(|&&s| s <= last_seq) {
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
    use drosera_admin::storage::BatchIn;
    use drosera_uplink::event::{CloseReason, Detail, Event, Priority, Protocol, ShedReason, Transport};

    fn ev(seq: u64, detail: Detail) -> Event {
        Event {
            seq,
            time_ms: 1_700_000_000_000,
            sensor: String::new(),
            transport: Transport::Tcp,
            protocol: Protocol::Http,
            src_ip: "198.51.100.9".parse().unwrap(),
            src_port: 5,
            dst_port: 80,
            session_id: seq,
            duration_ms: 1,
            bytes_in: 1,
            bytes_out: 1,
            priority: Priority::Noise,
            detail,
        }
    }

    fn conn() -> Detail {
        Detail::Connection { first_bytes: vec![], closed_by: CloseReason::ClientClosed }
    }

    fn db_with(events: &[Event]) -> (tempfile::TempDir, Backend) {
        let d = tempfile::tempdir().unwrap();
        let loc = Backend::Sqlite(d.path().join("a.db"));
        let store = open_backend(&loc).unwrap();
        store.register_sensor("s", "", 0).unwrap();
        let id = store.sensor_id("s").unwrap().unwrap();
        let last_seq = events.last().unwrap().seq;
        store.commit_batches(&[BatchIn { sensor_id: id, last_seq, events }], 0).unwrap();
        (d, loc)
    }

    #[test]
    fn connections_and_rollups_add_up() {
        let rollup = Detail::Rollup { minute_ms: 0, reason: ShedReason::GlobalConnections, connections: 40 };
        let login = Detail::Login {
            username: "u".into(),
            secret: drosera_uplink::event::Secret::None,
            success: false,
            extra: vec![],
        };
        let udp = |seq, d| Event { transport: Transport::Udp, ..ev(seq, d) };
        let shed = Detail::Rollup { minute_ms: 0, reason: ShedReason::RateLimited, connections: 7 };
        let (_d, p) = db_with(&[
            ev(1, conn()),
            ev(2, login),
            ev(3, rollup),
            ev(4, conn()),
            udp(5, conn()),
            udp(6, shed),
            udp(7, conn()),
        ]);
        let t = admin_totals(&p, "s", 7).unwrap();
        assert_eq!(t.connections(), 42);
        assert_eq!((t.udp_exchanges, t.udp_rollup_datagrams, t.udp_rollup_events, t.datagrams()), (2, 7, 1, 9));
        assert_eq!(t.missing, 0);
        assert_eq!(t.distinct_seqs, 7);
    }

    #[test]
    fn holes_are_missing_unless_a_gap_covers_them() {
        let gap = Detail::EvictionGap {
            count: 3,
            first_seq: 2,
            last_seq: 4,
            first_time_ms: 0,
            last_time_ms: 0,
            per_protocol: vec![],
            per_priority: vec![],
        };
        let (_d, p) = db_with(&[ev(1, conn()), ev(5, gap), ev(7, conn())]);
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
