//! Scan detection in the reports: what the sensors' packet sockets saw (issue 16), from the
//! `scan_window` events (one per source, transport and window; see
//! `drosera_uplink::event::Detail::ScanWindow`).
//!
//! WHY from the raw rows and not the aggregate tables: a scan window is already an aggregate
//! (a sensor sends at most one per source and minute), so a month is on the order of the
//! number of scanners times their active minutes, and the numbers wanted here (packets, ports
//! inside the detail, fingerprints) are not in the aggregate tables. The rows are read through
//! the `(kind, time_ms)` index, at most [`MAX_SCAN_ROWS`] per query (then `truncated` is set),
//! and folded into bounded maps (ports: at most 2 × 65,536 keys; scanners: one per address).
//!
//! Scans are not attempts: a SYN to a port is no connection, so `scan` never adds to the
//! attack totals; its events appear in the protocol table's `events` column and the
//! protocol chart's `scan` bar (scan windows per protocol), and in the event export.
//!
//! Port counts are *source windows*: how many (source, window) pairs hit the port among the
//! first ports each window lists (`scan.first_ports` on the sensor, 32 by default), which is
//! every port for all but wide scans.

use super::queries::Counted;
use super::range::{limit, resolve, RangeInfo};
use super::{AnalyticsError, Query};
use crate::storage::{EventRange, ScanRef, Storage};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::ops::ControlFlow;

/// Most scan window rows read per query.
pub const MAX_SCAN_ROWS: usize = 1_000_000;
/// Most fingerprints listed per scanner.
const MAX_FINGERPRINTS: usize = 8;

/// A destination port and how many source windows hit it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanPortRow {
    /// `tcp` (SYN) or `udp`.
    pub transport: String,
    pub port: i64,
    /// (source, window) pairs that hit the port.
    pub windows: i64,
}

/// One scanning address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScannerRow {
    pub ip: String,
    /// Packets (SYNs and UDP datagrams) seen from it.
    pub packets: i64,
    /// Windows in which it was seen.
    pub windows: i64,
    /// The most distinct ports it hit in one window.
    pub max_distinct_ports: i64,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    /// Scanner fingerprints with the packets that matched each, most first.
    pub fingerprints: Vec<Counted>,
}

/// Everything the report shows about scans.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scans {
    pub range: RangeInfo,
    /// Scan window events read.
    pub windows: i64,
    /// Packets in them (exact, including those the sensors could not attribute).
    pub packets: i64,
    /// Distinct scanning addresses.
    pub scanners: i64,
    /// Packets of sources past a sensor's tracking cap (`scan.max_sources`), not attributed.
    pub unattributed_packets: i64,
    /// Packets the sensors' kernels dropped before counting them (socket buffer full).
    pub kernel_drops: i64,
    /// Packets per fingerprint over all scanners, most first.
    pub fingerprints: Vec<Counted>,
    pub top_ports: Vec<ScanPortRow>,
    pub top_scanners: Vec<ScannerRow>,
    /// True when [`MAX_SCAN_ROWS`] cut the reading (narrow the range).
    pub truncated: bool,
}

#[derive(Default)]
struct Acc {
    packets: i64,
    windows: i64,
    max_distinct: i64,
    first: i64,
    last: i64,
    fingerprints: HashMap<String, i64>,
}

fn field<'a>(f: &'a serde_json::Map<String, serde_json::Value>, k: &str) -> &'a str {
    f.get(k).and_then(|v| v.as_str()).unwrap_or("")
}

fn number(f: &serde_json::Map<String, serde_json::Value>, k: &str) -> i64 {
    field(f, k).parse::<u64>().map(|v| v.min(i64::MAX as u64) as i64).unwrap_or(0)
}

/// `name:count,name:count` (the sensor's flat form of the fingerprint list).
fn fingerprints(s: &str) -> impl Iterator<Item = (&str, i64)> {
    s.split(',').filter_map(|e| {
        let (name, n) = e.rsplit_once(':')?;
        Some((name, n.parse::<i64>().ok()?))
    })
}

fn counted(m: HashMap<String, i64>, n: usize) -> Vec<Counted> {
    let mut v: Vec<Counted> = m.into_iter().map(|(value, count)| Counted { value, count }).collect();
    v.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.value.cmp(&b.value)));
    v.truncate(n);
    v
}

/// Scans in the range: totals, fingerprints, the most scanned ports and the top scanners (each
/// list at most `n` rows).
pub fn scans(db: &dyn Storage, q: &Query, n: usize) -> Result<Scans, AnalyticsError> {
    let r = resolve(db, q)?;
    let n = limit(n);
    let mut out = Scans { range: r.info(q), ..Scans::default() };
    let mut ports: HashMap<(bool, u16), i64> = HashMap::new();
    let mut by_ip: HashMap<String, Acc> = HashMap::new();
    let mut all_fps: HashMap<String, i64> = HashMap::new();
    let range = EventRange { since_ms: r.since, until_ms: r.until, sensor_id: r.sensor_id };
    let mut rows = 0usize;
    db.scan_windows(&range, &mut |s: ScanRef<'_>| {
        rows += 1;
        if rows > MAX_SCAN_ROWS {
            out.truncated = true;
            tracing::warn!(cap = MAX_SCAN_ROWS, "scan report cut at the row cap; narrow the range");
            return ControlFlow::Break(());
        }
        let Ok(serde_json::Value::Object(f)) = serde_json::from_str::<serde_json::Value>(s.fields) else {
            return ControlFlow::Continue(());
        };
        let packets = number(&f, "packets");
        out.windows += 1;
        out.packets = out.packets.saturating_add(packets);
        out.kernel_drops = out.kernel_drops.saturating_add(number(&f, "kernel_drops"));
        for (name, c) in fingerprints(field(&f, "fingerprints")) {
            *all_fps.entry(name.to_string()).or_default() += c;
        }
        let unspecified = s.src_ip.parse::<std::net::IpAddr>().map(|ip| ip.is_unspecified()).unwrap_or(true);
        if unspecified {
            out.unattributed_packets = out.unattributed_packets.saturating_add(packets);
            return ControlFlow::Continue(());
        }
        let udp = s.transport == "udp";
        for p in field(&f, "ports").split(',').filter_map(|p| p.parse::<u16>().ok()) {
            *ports.entry((udp, p)).or_default() += 1;
        }
        if !by_ip.contains_key(s.src_ip) {
            by_ip.insert(s.src_ip.to_string(), Acc { first: i64::MAX, last: i64::MIN, ..Acc::default() });
        }
        if let Some(a) = by_ip.get_mut(s.src_ip) {
            a.packets = a.packets.saturating_add(packets);
            a.windows += 1;
            a.max_distinct = a.max_distinct.max(number(&f, "distinct_ports"));
            a.first = a.first.min(s.time_ms);
            a.last = a.last.max(s.time_ms);
            for (name, c) in fingerprints(field(&f, "fingerprints")) {
                if a.fingerprints.len() < MAX_FINGERPRINTS || a.fingerprints.contains_key(name) {
                    *a.fingerprints.entry(name.to_string()).or_default() += c;
                }
            }
        }
        ControlFlow::Continue(())
    })?;
    out.scanners = by_ip.len() as i64;
    out.fingerprints = counted(all_fps, n);
    let mut port_rows: Vec<ScanPortRow> = ports
        .into_iter()
        .map(|((udp, port), windows)| ScanPortRow {
            transport: if udp { "udp" } else { "tcp" }.to_string(),
            port: i64::from(port),
            windows,
        })
        .collect();
    port_rows.sort_by(|a, b| b.windows.cmp(&a.windows).then(a.port.cmp(&b.port)).then(a.transport.cmp(&b.transport)));
    port_rows.truncate(n);
    out.top_ports = port_rows;
    let mut scanners: Vec<ScannerRow> = by_ip
        .into_iter()
        .map(|(ip, a)| ScannerRow {
            ip,
            packets: a.packets,
            windows: a.windows,
            max_distinct_ports: a.max_distinct,
            first_seen_ms: a.first,
            last_seen_ms: a.last,
            fingerprints: counted(a.fingerprints, MAX_FINGERPRINTS),
        })
        .collect();
    scanners.sort_by(|a, b| b.packets.cmp(&a.packets).then_with(|| a.ip.cmp(&b.ip)));
    scanners.truncate(n);
    out.top_scanners = scanners;
    Ok(out)
}
