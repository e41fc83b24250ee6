//! Refresh: enrich new source addresses and fold new events into the aggregate tables.
//!
//! The rules of counting live here (see the module docs of [`crate::analytics`]): which events
//! are attempts and logins, which resolutions and sensor rows each event is added to, and that
//! sensor-internal records have no source address. The storage backend reads the events, interns
//! addresses and strings, and writes the resulting [`AggDelta`] in the same transaction that
//! moves its fold cursor.

use super::range::floor_to;
use super::AnalyticsError;
use crate::enrich::{Enricher, IpInfo};
use crate::labels::{class_sensor, Class, Labeler};
use crate::storage::{AggDelta, FoldEvent, FoldTx, IpRecord, Resolution, Storage, StorageError};
use drosera_uplink::event::{EvictedKind, EvictedSource};
use std::collections::HashMap;

/// Events folded into the aggregates per transaction.
const REFRESH_BATCH: u64 = 50_000;
/// Most entries kept in the interner's memory caches (they are only caches).
const INTERN_CACHE: usize = 200_000;

/// The (resolution, all-sensors row) combinations every event is folded into.
const AGG_KEYS: [(Resolution, bool); 6] = [
    (Resolution::Hour, false),
    (Resolution::Day, false),
    (Resolution::Week, false),
    (Resolution::Hour, true),
    (Resolution::Day, true),
    (Resolution::Week, true),
];

/// Packs a country label into an integer for the aggregates: two-letter codes as two bytes,
/// `private` 1, `reserved` 2, anything else (`unknown`) 3.
pub fn cc_code(country: &str) -> i64 {
    match country.as_bytes() {
        b"private" => 1,
        b"reserved" => 2,
        [a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => {
            (i64::from(a.to_ascii_uppercase()) << 8) | i64::from(b.to_ascii_uppercase())
        }
        _ => 3,
    }
}

/// The label for a packed country (inverse of [`cc_code`]).
pub fn cc_label(cc: i64) -> String {
    match cc {
        1 => "private".into(),
        2 => "reserved".into(),
        c if c > 0xff => {
            let (a, b) = ((c >> 8) as u8, (c & 0xff) as u8);
            if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() {
                format!("{}{}", a as char, b as char)
            } else {
                "unknown".into()
            }
        }
        _ => "unknown".into(),
    }
}

/// Memory caches of interned addresses and strings, kept for one refresh (ids of a failed
/// transaction die with it, since the refresh then returns).
#[derive(Default)]
struct Interner {
    ips: HashMap<String, (i64, i64)>,
    strings: HashMap<String, i64>,
    /// The label class of each address (resolved once per refresh).
    classes: HashMap<String, Option<Class>>,
}

impl Interner {
    /// The class of `ip` under `labeler` (an ASN lookup only when no range decides).
    fn class(&mut self, ip: &str, labeler: &Labeler, enricher: &Enricher) -> Option<Class> {
        if labeler.is_empty() {
            return None;
        }
        if let Some(c) = self.classes.get(ip) {
            return *c;
        }
        let c = labeler.label_str(ip, || ip.parse().ok().and_then(|a| enricher.lookup(a).asn)).and_then(|l| l.class());
        if self.classes.len() >= INTERN_CACHE {
            self.classes.clear();
        }
        self.classes.insert(ip.to_string(), c);
        c
    }

    fn ip(&mut self, tx: &mut dyn FoldTx, ip: &str, enricher: &Enricher) -> Result<(i64, i64), StorageError> {
        if let Some(v) = self.ips.get(ip) {
            return Ok(*v);
        }
        let v = tx.ip_id(ip, &mut || {
            let info = match ip.parse() {
                Ok(addr) => enricher.lookup(addr),
                Err(_) => IpInfo { country: "unknown".into(), asn: None, as_org: String::new() },
            };
            IpRecord {
                ip: ip.to_string(),
                cc: cc_code(&info.country),
                country: info.country,
                asn: info.asn,
                as_org: info.as_org,
            }
        })?;
        if self.ips.len() >= INTERN_CACHE {
            self.ips.clear();
        }
        self.ips.insert(ip.to_string(), v);
        Ok(v)
    }

    fn string(&mut self, tx: &mut dyn FoldTx, s: &str) -> Result<i64, StorageError> {
        if let Some(v) = self.strings.get(s) {
            return Ok(*v);
        }
        let id = tx.string_id(s)?;
        if self.strings.len() >= INTERN_CACHE {
            self.strings.clear();
        }
        self.strings.insert(s.to_string(), id);
        Ok(id)
    }
}

/// Kind rows that count what eviction gaps say was evicted (sensor-internal, `rows` 0, `n` the
/// evicted events resp. the evicted attempts), in the hour of the evicted events.
pub const EVICTED_EVENTS_KIND: &str = "evicted_events";
pub const EVICTED_ATTEMPTS_KIND: &str = "evicted_attempts";

fn gap_field(fields: &str, key: &str) -> Option<String> {
    match serde_json::from_str::<serde_json::Value>(fields).ok()?.get(key)? {
        serde_json::Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// What an eviction gap's flat fields say was evicted (empty for a gap of the first shape,
/// which only counted).
pub fn evicted_kinds(fields: &str) -> Vec<EvictedKind> {
    gap_field(fields, "evicted").map(|s| EvictedKind::parse_list(&s)).unwrap_or_default()
}

/// The source addresses an eviction gap's flat fields list.
pub fn evicted_sources(fields: &str) -> Vec<EvictedSource> {
    gap_field(fields, "top_sources").map(|s| EvictedSource::parse_list(&s)).unwrap_or_default()
}

/// Adds what an eviction gap says was evicted: each evicted (hour, protocol, port, kind) into
/// the kind and port rows as if the events were stored (so attempts, logins, per-protocol and
/// per-port numbers and the timeline include them), the marker rows [`EVICTED_EVENTS_KIND`]
/// and [`EVICTED_ATTEMPTS_KIND`] (so reports can say how much of that is evicted), and the
/// listed top sources into the source rows, at the hour of the gap's oldest evicted event.
fn fold_gap(
    ev: &FoldEvent<'_>,
    fields: &str,
    tx: &mut dyn FoldTx,
    b: &mut AggDelta,
    interner: &mut Interner,
    enricher: &Enricher,
) -> Result<(), StorageError> {
    let kinds = evicted_kinds(fields);
    if kinds.is_empty() {
        return Ok(());
    }
    let first_ms = gap_field(fields, "first_time_ms").and_then(|s| s.parse::<i64>().ok()).unwrap_or(ev.time_ms);
    let mut sources = Vec::new();
    for s in evicted_sources(fields) {
        let ip = s.ip.to_string();
        let (id, cc) = interner.ip(tx, &ip, enricher)?;
        sources.push((id, cc, s));
    }
    for (res, all) in AGG_KEYS {
        let (res, unit) = (res.code(), res.width_ms());
        let s = if all { 0 } else { ev.sensor_id };
        for k in &kinds {
            let (events, count) = (k.events.min(i64::MAX as u64) as i64, k.count.min(i64::MAX as u64) as i64);
            let bucket = floor_to(k.hour_ms, unit);
            let protocol = k.protocol.as_str();
            let e = b.kind.entry((res, bucket, s, protocol.to_string(), k.kind.clone())).or_default();
            e.0 += events;
            e.1 += count;
            let internal = protocol == "sensor";
            let attempt = if !internal && (k.kind == "connection" || k.kind == "rollup") { count } else { 0 };
            if attempt > 0 {
                *b.port.entry((res, bucket, s, protocol.to_string(), i64::from(k.dst_port))).or_default() += attempt;
            }
            let sensor = "sensor".to_string();
            b.kind.entry((res, bucket, s, sensor.clone(), EVICTED_EVENTS_KIND.into())).or_default().1 += events;
            b.kind.entry((res, bucket, s, sensor, EVICTED_ATTEMPTS_KIND.into())).or_default().1 += attempt;
        }
        let bucket = floor_to(first_ms, unit);
        for (id, cc, src) in &sources {
            let a = b.src.entry((res, bucket, s, *id)).or_insert((*cc, 0, 0, 0, i64::MAX, i64::MIN));
            a.1 += src.attempts.min(i64::MAX as u64) as i64;
            a.3 += src.events.min(i64::MAX as u64) as i64;
            a.4 = a.4.min(first_ms);
            a.5 = a.5.max(first_ms);
        }
    }
    Ok(())
}

/// What one fold pass writes.
#[derive(Clone, Copy)]
enum Pass {
    /// New events: every row, and the label class rows of a labelled source.
    New,
    /// A relabel: only the class rows, of buckets at or after `from[res]`.
    Classes { from: [i64; 3] },
}

/// Everything a fold step reads besides the event.
struct Folder<'a> {
    interner: Interner,
    enricher: &'a Enricher,
    labeler: Labeler,
    pass: Pass,
}

/// Adds one event to the delta.
fn fold(ev: &FoldEvent<'_>, tx: &mut dyn FoldTx, b: &mut AggDelta, f: &mut Folder<'_>) -> Result<(), StorageError> {
    let internal = ev.protocol == "sensor";
    let class = if internal { None } else { f.interner.class(ev.src_ip, &f.labeler, f.enricher) };
    match f.pass {
        Pass::New => {
            if let (Some(fields), "eviction_gap") = (ev.gap_fields, ev.kind) {
                fold_gap(ev, fields, tx, b, &mut f.interner, f.enricher)?;
            }
            add(ev, tx, b, &mut f.interner, f.enricher, &|s, _| Some(s))?;
            if let Some(c) = class {
                add(ev, tx, b, &mut f.interner, f.enricher, &|s, _| Some(class_sensor(s, c)))?;
            }
        }
        Pass::Classes { from } => {
            if let Some(c) = class {
                add(ev, tx, b, &mut f.interner, f.enricher, &|s, (res, bucket)| {
                    (bucket >= from[res as usize]).then(|| class_sensor(s, c))
                })?;
            }
        }
    }
    Ok(())
}

/// Adds one event to the rows `row_sensor` names: given the sensor (0 = all) and the
/// (resolution, bucket), the sensor id to write under, or none.
fn add(
    ev: &FoldEvent<'_>,
    tx: &mut dyn FoldTx,
    b: &mut AggDelta,
    interner: &mut Interner,
    enricher: &Enricher,
    row_sensor: &dyn Fn(i64, (i64, i64)) -> Option<i64>,
) -> Result<(), StorageError> {
    let (t, kind, count) = (ev.time_ms, ev.kind, ev.count);
    let internal = ev.protocol == "sensor";
    let attempt = if kind == "connection" || kind == "rollup" { count } else { 0 };
    let login = i64::from(kind == "login");
    let (ip_id, cc) = if internal { (0, 0) } else { interner.ip(tx, ev.src_ip, enricher)? };
    let cred = match ev.username {
        Some(u) if !internal => {
            let u = interner.string(tx, u)?;
            let p = interner.string(tx, ev.password.unwrap_or_default())?;
            Some((u, p))
        }
        _ => None,
    };
    for (res, all) in AGG_KEYS {
        let (res, unit) = (res.code(), res.width_ms());
        let bucket = floor_to(t, unit);
        let Some(s) = row_sensor(if all { 0 } else { ev.sensor_id }, (res, bucket)) else { continue };
        let e = b.kind.entry((res, bucket, s, ev.protocol.to_string(), kind.to_string())).or_default();
        e.0 += 1;
        e.1 += count;
        if internal {
            continue;
        }
        if attempt > 0 {
            *b.port.entry((res, bucket, s, ev.protocol.to_string(), ev.dst_port)).or_default() += attempt;
        }
        let a = b.src.entry((res, bucket, s, ip_id)).or_insert((cc, 0, 0, 0, i64::MAX, i64::MIN));
        a.1 += attempt;
        a.2 += login;
        a.3 += 1;
        a.4 = a.4.min(t);
        a.5 = a.5.max(t);
        if let Some((u, p)) = cred {
            *b.cred.entry((res, bucket, s, u, p)).or_default() += 1;
        }
    }
    Ok(())
}

/// Folds events added since the last call into the aggregate tables and enriches their new
/// source addresses; returns how many events were folded. Safe to call concurrently with ingest
/// (each batch is one short transaction; event ids only grow). Takes the storage exclusively:
/// it writes, in many transactions.
pub fn refresh(db: &mut dyn Storage, enricher: &Enricher) -> Result<u64, AnalyticsError> {
    let mut total = 0u64;
    // The labels as they are now (a small table): a label added later is applied to the
    // events folded before it by `relabel`.
    let labeler = Labeler::new(&db.labels()?, true);
    let mut f = Folder { interner: Interner::default(), enricher, labeler, pass: Pass::New };
    loop {
        let n = db.fold_events(REFRESH_BATCH, &mut |ev, tx, delta| fold(ev, tx, delta, &mut f))?;
        total += n;
        if n < REFRESH_BATCH {
            return Ok(total);
        }
    }
}

/// What a [`relabel`] did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Relabelled {
    /// Raw events read again.
    pub events: u64,
    /// Buckets starting before this time kept the labels they were folded with: their raw
    /// events were deleted by retention (`None`: everything was rebuilt).
    pub kept_before_ms: Option<i64>,
}

/// Applies the current labels (the admin's and the bundled research list) to history: folds
/// new events first, then rebuilds every label class row from the raw events, in one
/// transaction, so each number a report shows with or without a label is exact again. Buckets
/// whose raw events retention has (partly) deleted keep the labels they had.
pub fn relabel(db: &mut dyn Storage, enricher: &Enricher) -> Result<Relabelled, AnalyticsError> {
    refresh(db, enricher)?;
    let raw_from = db.raw_from()?;
    let from = if raw_from <= 0 {
        [i64::MIN; 3]
    } else {
        // Buckets that start at or after the mark are whole in the raw events.
        [Resolution::Hour, Resolution::Day, Resolution::Week].map(|r| {
            let w = r.width_ms();
            floor_to(raw_from.saturating_add(w - 1), w)
        })
    };
    let labeler = Labeler::new(&db.labels()?, true);
    let mut f = Folder { interner: Interner::default(), enricher, labeler, pass: Pass::Classes { from } };
    let events = db.refold_classes(from, &mut |ev, tx, delta| fold(ev, tx, delta, &mut f))?;
    Ok(Relabelled { events, kept_before_ms: (raw_from > 0).then_some(raw_from) })
}
