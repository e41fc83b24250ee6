//! The queries: every number the report, the JSON API and the dashboard show, each a function
//! of a [`Query`] returning a serializable struct.

use super::range::{floor_to, limit, resolve, spans, Query, RangeInfo, Resolved, DAY_MS, HOUR_MS};
use super::refresh::cc_label;
use super::scan::{scan_class, scan_sources, top_n, Counts, IdHash, SrcMap};
use super::AnalyticsError;
use crate::labels::{Class, Labeler};
use crate::storage::{CredAgg, EventRange, ItemKind, KindSum, Storage, TimelineSource};
use drosera_uplink::event::Health;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::ops::ControlFlow;

/// Most buckets in a timeline (beyond it, the range is cut to the most recent buckets).
const MAX_BUCKETS: i64 = 2000;
/// Timelines over at most this span have minute buckets (read from raw events), ...
const MINUTE_TIMELINE_MAX_MS: i64 = 3 * HOUR_MS;
/// ...over at most this span hour buckets, longer ones day buckets.
const HOURLY_TIMELINE_MAX_MS: i64 = 3 * DAY_MS;
/// Raw rows of one kind a minute timeline reads at most; beyond it, the timeline is hourly.
const MAX_MINUTE_ROWS: i64 = 200_000;
const MINUTE_MS: i64 = 60_000;
/// Most source addresses listed per payload, exploit or download.
const MAX_IPS_PER_ITEM: usize = 20;
/// Raw rows of one rare kind scanned per query at most (payloads, exploits, downloads).
const MAX_ITEM_ROWS: usize = 2_000_000;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub range: Option<RangeInfo>,
    /// Connections (sessions plus rolled-up connections): see the module docs.
    pub attempts: i64,
    /// Of `attempts`, connections the sensor folded into rollups instead of recording.
    pub rolled_up: i64,
    pub logins: i64,
    pub commands: i64,
    pub http_requests: i64,
    pub payloads: i64,
    pub exploits: i64,
    pub downloads: i64,
    /// Event rows of any kind, sensor-internal ones included: those stored plus those the
    /// sensors evicted before sending (see `evicted_events`).
    pub events: i64,
    /// Of `events`, events the sensors evicted to stay under their store caps: they are counted
    /// in every number here (attempts, logins, ...) but their details are gone.
    pub evicted_events: i64,
    /// Of `attempts`, connections whose events were evicted.
    pub evicted_attempts: i64,
    /// Distinct source addresses.
    pub attackers: i64,
    /// Distinct countries of those addresses.
    pub countries: i64,
}

pub fn totals(db: &dyn Storage, q: &Query) -> Result<Totals, AnalyticsError> {
    let r = resolve(db, q)?;
    let src = scan_sources(db, &r, q)?;
    totals_in(db, q, &r, &src)
}

/// The overview page's totals and every country (up to `n`) from one scan of the source
/// aggregates: [`totals`] and [`countries`] each scan them, which doubled the overview's time at
/// ten million events (`docs/benchmarks.md`, the drill-down and page table).
pub fn overview(db: &dyn Storage, q: &Query, n: usize) -> Result<(Totals, Vec<CountryRow>), AnalyticsError> {
    let r = resolve(db, q)?;
    let src = scan_sources(db, &r, q)?;
    Ok((totals_in(db, q, &r, &src)?, countries_in(&src, n)?))
}

/// The kind sums of `r` without the label classes `q` leaves out (their rows subtracted).
fn kind_sums_net(db: &dyn Storage, q: &Query, r: &Resolved) -> Result<Vec<KindSum>, AnalyticsError> {
    let mut sums = db.kind_sums(&r.agg())?;
    for c in q.include.excluded() {
        for k in db.kind_sums(&r.class_agg(c))? {
            if let Some(e) = sums.iter_mut().find(|e| e.kind == k.kind) {
                e.rows -= k.rows;
                e.n -= k.n;
            }
        }
    }
    Ok(sums)
}

fn totals_in(db: &dyn Storage, q: &Query, r: &Resolved, src: &SrcMap) -> Result<Totals, AnalyticsError> {
    let mut t = Totals { range: Some(r.info(q)), ..Default::default() };
    for k in kind_sums_net(db, q, r)? {
        let (rows, n) = (k.rows, k.n);
        t.events += rows;
        match k.kind.as_str() {
            "connection" => t.attempts += n,
            "rollup" => {
                t.attempts += n;
                t.rolled_up += n
            }
            "login" => t.logins += rows,
            "command" => t.commands += rows,
            "http_request" => t.http_requests += rows,
            "payload" => t.payloads += rows,
            "exploit" => t.exploits += rows,
            "download_offered" => t.downloads += rows,
            super::EVICTED_EVENTS_KIND => t.evicted_events += n,
            super::EVICTED_ATTEMPTS_KIND => t.evicted_attempts += n,
            _ => {}
        }
    }
    t.attackers = src.len() as i64;
    t.countries = src.iter().map(|(_, v)| v.cc).collect::<HashSet<_>>().len() as i64;
    Ok(t)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Series {
    pub sensor: String,
    pub attempts: Vec<i64>,
}

/// Attempts per bucket of one protocol.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProtocolSeries {
    pub protocol: String,
    pub attempts: Vec<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timeline {
    pub range: RangeInfo,
    /// `minute`, `hour` or `day`: chosen from the span asked for (the data's span when no
    /// `since` is given): up to 3 hours minutes, up to 3 days hours, else days.
    pub resolution: String,
    /// Start of each bucket, ms since the epoch.
    pub buckets: Vec<i64>,
    /// Attempts per bucket, all selected sensors together.
    pub attempts: Vec<i64>,
    /// Logins per bucket.
    pub logins: Vec<i64>,
    /// Attempts per bucket for each sensor.
    pub per_sensor: Vec<Series>,
    /// Bucket width, ms.
    #[serde(default)]
    pub bucket_ms: i64,
    /// Attempts per bucket for each protocol, most attempts first (stacked in the chart).
    #[serde(default)]
    pub per_protocol: Vec<ProtocolSeries>,
}

/// Attempts and logins per minute, hour or day (see [`Timeline::resolution`]), overall, per
/// sensor and per protocol.
pub fn timeline(db: &dyn Storage, q: &Query) -> Result<Timeline, AnalyticsError> {
    let r = resolve(db, q)?;
    let asked_until = q.until_ms.unwrap_or_else(super::now_ms);
    // The span asked for decides the resolution; without `since`, the data's own span does
    // (one day of data reads in hours).
    let (span, minutes) = match q.since_ms {
        Some(since) => (asked_until.saturating_sub(since), (since, asked_until)),
        None => {
            let all = TimelineSource::Hours { from: r.since, to: r.until };
            match db.timeline_bounds(&all, r.sensor_id.unwrap_or(0))? {
                Some((lo, hi)) if lo >= r.hourly_from => (hi + HOUR_MS - lo, (lo, asked_until.min(hi + HOUR_MS))),
                _ => (i64::MAX, (0, 0)),
            }
        }
    };
    if span <= MINUTE_TIMELINE_MAX_MS {
        if let Some(t) = minute_timeline(db, q, &r, minutes.0, minutes.1)? {
            return Ok(t);
        }
    }
    // Hourly for short ranges whose hour rows still exist (see retention), else daily; a week
    // row cannot be split into days, so a daily timeline reads day rows (hours at the edges).
    let hourly = span <= HOURLY_TIMELINE_MAX_MS && r.since >= r.hourly_from;
    let unit = if hourly { HOUR_MS } else { DAY_MS };
    let source = if hourly {
        TimelineSource::Hours { from: r.since, to: r.until }
    } else {
        TimelineSource::Days { spans: spans(r.since, r.until, false) }
    };
    // The all-sensors rows (or the one sensor's) give the bounds.
    let (lo, hi) = db.timeline_bounds(&source, r.sensor_id.unwrap_or(0))?.unwrap_or((r.since, r.since));
    let first = floor_to(lo.max(r.since), unit);
    let mut last = floor_to(hi.min(r.until - 1).max(first), unit);
    let first = first.max(last - (MAX_BUCKETS - 1) * unit);
    last = last.max(first);
    let buckets: Vec<i64> = (0..=((last - first) / unit)).map(|i| first + i * unit).collect();
    let idx = |b: i64| ((b - first) / unit) as usize;
    // One index range scan per sensor.
    let sensors: Vec<(i64, String)> = match r.sensor_id {
        Some(id) => vec![(id, q.sensor.clone().unwrap_or_default())],
        None => db.sensor_names()?,
    };
    let mut rows = Vec::new();
    for (id, name) in sensors {
        for s in db.timeline_sums(&source, id, first, last)? {
            rows.push((s.bucket, name.clone(), s.attempts, s.logins));
        }
        // The label classes left out, subtracted (their rows are a part of the sensor's).
        for c in q.include.excluded() {
            for s in db.timeline_sums(&source, crate::labels::class_sensor(id, c), first, last)? {
                rows.push((s.bucket, name.clone(), -s.attempts, -s.logins));
            }
        }
    }
    let mut attempts = vec![0; buckets.len()];
    let mut logins = vec![0; buckets.len()];
    let mut per_sensor: Vec<Series> = Vec::new();
    for (bucket, sensor, a, l) in rows {
        let i = idx(bucket);
        if i >= buckets.len() {
            continue;
        }
        attempts[i] += a;
        logins[i] += l;
        if per_sensor.last().map(|s| s.sensor != sensor).unwrap_or(true) {
            per_sensor.push(Series { sensor: sensor.clone(), attempts: vec![0; buckets.len()] });
        }
        if let Some(s) = per_sensor.last_mut() {
            s.attempts[i] += a;
        }
    }
    // Per protocol: the all-sensors rows (or the one sensor's), label classes subtracted.
    let agg_id = r.sensor_id.unwrap_or(0);
    let mut per_proto: HashMap<String, Vec<i64>> = HashMap::new();
    let mut add = |rows: Vec<crate::storage::ProtocolBucket>, sign: i64| {
        for p in rows {
            let i = idx(p.bucket);
            if i < buckets.len() {
                per_proto.entry(p.protocol).or_insert_with(|| vec![0; buckets.len()])[i] += sign * p.attempts;
            }
        }
    };
    add(db.timeline_protocols(&source, agg_id, first, last)?, 1);
    for c in q.include.excluded() {
        add(db.timeline_protocols(&source, crate::labels::class_sensor(agg_id, c), first, last)?, -1);
    }
    Ok(Timeline {
        range: r.info(q),
        resolution: if hourly { "hour" } else { "day" }.into(),
        buckets,
        attempts,
        logins,
        per_sensor,
        bucket_ms: unit,
        per_protocol: protocol_series(per_proto),
    })
}

/// Protocols with any attempts, most first.
fn protocol_series(m: HashMap<String, Vec<i64>>) -> Vec<ProtocolSeries> {
    let mut v: Vec<ProtocolSeries> = m
        .into_iter()
        .filter(|(_, a)| a.iter().any(|x| *x != 0))
        .map(|(protocol, attempts)| ProtocolSeries { protocol, attempts })
        .collect();
    v.sort_by(|a, b| {
        b.attempts.iter().sum::<i64>().cmp(&a.attempts.iter().sum::<i64>()).then_with(|| a.protocol.cmp(&b.protocol))
    });
    v
}

/// A minute timeline of `[since, until)` from raw events, or `None` when it cannot be exact:
/// the sensors evicted attempts in the range (evictions are known per hour only), or the range
/// has more than [`MAX_MINUTE_ROWS`] rows of a kind. The caller then draws hours.
fn minute_timeline(
    db: &dyn Storage,
    q: &Query,
    r: &Resolved,
    since: i64,
    until: i64,
) -> Result<Option<Timeline>, AnalyticsError> {
    if since < db.raw_from()? {
        return Ok(None);
    }
    let evicted = kind_sums_net(db, q, r)?.iter().any(|k| k.kind == super::EVICTED_ATTEMPTS_KIND && k.n != 0);
    if evicted {
        return Ok(None);
    }
    let since = floor_to(since, MINUTE_MS);
    let range = EventRange { since_ms: since, until_ms: until, sensor_id: r.sensor_id };
    let labeler = Labeler::new(&db.labels()?, true);
    let left_out: Vec<Class> = q.include.excluded().collect();
    let counts = if left_out.is_empty() || labeler.is_empty() {
        // Nothing to leave out by label: the database counts (each row's address is not needed).
        db.minute_counts(&range, MAX_MINUTE_ROWS)?
    } else if let MinuteNet::Counted(counts) = minute_counts_net(db, q, r, &range)? {
        counts
    } else {
        crate::storage::minute_counts_by_rows(db, &range, MAX_MINUTE_ROWS, &mut |row| {
            let asn = row.asn.and_then(|a| u32::try_from(a).ok());
            let class = labeler.label_str(row.src_ip, || asn).and_then(|l| l.class());
            !class.is_some_and(|c| left_out.contains(&c))
        })?
    };
    let Some(counts) = counts else { return Ok(None) };
    // (minute, sensor, protocol) -> (attempts, logins)
    let mut m: HashMap<(i64, String, String), (i64, i64)> = HashMap::new();
    for c in counts {
        let e = m.entry((c.minute, c.sensor, c.protocol)).or_default();
        e.0 += c.attempts;
        e.1 += c.logins;
    }
    let lo = m.keys().map(|k| k.0).min().unwrap_or(since);
    let hi = m.keys().map(|k| k.0).max().unwrap_or(since);
    let buckets: Vec<i64> = (0..=((hi - lo) / MINUTE_MS)).map(|i| lo + i * MINUTE_MS).collect();
    let n = buckets.len();
    let mut attempts = vec![0; n];
    let mut logins = vec![0; n];
    let mut by_sensor: std::collections::BTreeMap<String, Vec<i64>> = Default::default();
    let mut per_proto: HashMap<String, Vec<i64>> = HashMap::new();
    for ((b, sensor, proto), (a, l)) in m {
        let i = ((b - lo) / MINUTE_MS) as usize;
        attempts[i] += a;
        logins[i] += l;
        if a != 0 {
            by_sensor.entry(sensor).or_insert_with(|| vec![0; n])[i] += a;
            per_proto.entry(proto).or_insert_with(|| vec![0; n])[i] += a;
        }
    }
    Ok(Some(Timeline {
        range: r.info(q),
        resolution: "minute".into(),
        buckets,
        attempts,
        logins,
        per_sensor: by_sensor.into_iter().map(|(sensor, attempts)| Series { sensor, attempts }).collect(),
        bucket_ms: MINUTE_MS,
        per_protocol: protocol_series(per_proto),
    }))
}

/// Most addresses of the label classes left out whose rows [`minute_counts_net`] reads one by one.
const MAX_MINUTE_EXCLUDED_ADDRESSES: usize = 10_000;

/// The minute counts without the label classes `q` leaves out, as the database counts them: every
/// row counted in the database, minus the rows of the addresses those classes hold in the range
/// (known from their source aggregates, so no row needs classifying), each address read through
/// its index. The row-by-row count classified every row's address instead: 337 ms for a minute
/// holding 100,000 events at ten million (`docs/benchmarks.md`). Outside its bounds (more than
/// [`MAX_MINUTE_EXCLUDED_ADDRESSES`] addresses, or more than [`MAX_MINUTE_ROWS`] rows of theirs)
/// it answers [`MinuteNet::ClassifyRows`].
///
/// The aggregates carry the labels as of the last `relabel`, as every other number a report
/// shows does; a label added since applies after it.
fn minute_counts_net(
    db: &dyn Storage,
    q: &Query,
    r: &Resolved,
    range: &EventRange,
) -> Result<MinuteNet, AnalyticsError> {
    let Some(left_out) = excluded_addresses_upto(db, q, r, MAX_MINUTE_EXCLUDED_ADDRESSES)? else {
        return Ok(MinuteNet::ClassifyRows);
    };
    let Some(all) = db.minute_counts(range, MAX_MINUTE_ROWS)? else {
        // More rows in the range than a minute chart reads, whatever is left out: hours.
        return Ok(MinuteNet::Counted(None));
    };
    // (minute, sensor, protocol) -> (attempts, logins)
    let mut m: HashMap<(i64, String, String), (i64, i64)> =
        all.into_iter().map(|c| ((c.minute, c.sensor, c.protocol), (c.attempts, c.logins))).collect();
    let mut read = 0i64;
    for ip in &left_out {
        let budget = MAX_MINUTE_ROWS - read;
        db.drill_events(&crate::storage::DrillFilter::Source(ip), range, budget + 1, &mut |row| {
            read += 1;
            if read > MAX_MINUTE_ROWS {
                return ControlFlow::Break(());
            }
            let minute = floor_to(row.time_ms, MINUTE_MS);
            let attempts = matches!(row.kind, "connection" | "rollup");
            if attempts || row.kind == "login" {
                if let Some(e) = m.get_mut(&(minute, row.sensor.to_string(), row.protocol.to_string())) {
                    if attempts {
                        e.0 -= row.count;
                    } else {
                        e.1 -= 1;
                    }
                }
            }
            ControlFlow::Continue(())
        })?;
        if read > MAX_MINUTE_ROWS {
            return Ok(MinuteNet::ClassifyRows);
        }
    }
    // What is left out entirely is not a bucket (as if its rows were never read).
    m.retain(|_, (a, l)| *a != 0 || *l != 0);
    Ok(MinuteNet::Counted(Some(crate::storage::minute_counts_from(m))))
}

/// What [`minute_counts_net`] found.
enum MinuteNet {
    /// The counts ([`crate::storage::DrillStorage::minute_counts`]'s answer, classes left out).
    Counted(Option<Vec<crate::storage::MinuteCount>>),
    /// Outside its bounds: classify every row instead.
    ClassifyRows,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceRow {
    pub ip: String,
    pub attempts: i64,
    pub logins: i64,
    pub events: i64,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    pub country: String,
    pub asn: Option<u32>,
    pub as_org: String,
    /// The address's label (`self`, `research` or the admin's own name; `None`: none).
    #[serde(default)]
    pub label: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopSources {
    pub range: RangeInfo,
    pub min_attempts: i64,
    /// How many addresses have at least `min_attempts` attempts (the list shows the top ones).
    pub matching: i64,
    pub rows: Vec<SourceRow>,
}

/// Source addresses by attempts, with country and AS, keeping those with >= `min_attempts`.
pub fn top_sources(db: &dyn Storage, q: &Query, min_attempts: i64, n: usize) -> Result<TopSources, AnalyticsError> {
    let r = resolve(db, q)?;
    let src = scan_sources(db, &r, q)?;
    top_sources_in(db, q, &r, &src, min_attempts, n)
}

pub(super) fn top_sources_in(
    db: &dyn Storage,
    q: &Query,
    r: &Resolved,
    src: &SrcMap,
    min_attempts: i64,
    n: usize,
) -> Result<TopSources, AnalyticsError> {
    let items: Vec<(i64, (i64, i64))> =
        src.iter().filter(|(_, v)| v.attempts >= min_attempts).map(|(k, v)| (k, (v.attempts, v.events))).collect();
    let matching = items.len() as i64;
    let mut info = HashMap::new();
    let top = top_n(items, limit(n), |id| {
        let i = match db.ip_of(id)? {
            Some(i) => (i.ip, i.country, i.asn, i.as_org),
            None => (String::new(), "unknown".into(), None, String::new()),
        };
        let name = i.0.clone();
        info.insert(id, i);
        Ok(name)
    })?;
    let labeler = Labeler::new(&db.labels()?, true);
    let rows = top
        .into_iter()
        .filter_map(|(id, _, _)| {
            let v = src.get(id)?;
            let (ip, country, asn, as_org) = info.remove(&id)?;
            let label = labeler.label_str(&ip, || asn).map(|l| l.to_string());
            Some(SourceRow {
                ip,
                attempts: v.attempts,
                logins: v.logins,
                events: v.events,
                first_seen_ms: v.first,
                last_seen_ms: v.last,
                country,
                asn,
                as_org,
                label,
            })
        })
        .collect();
    Ok(TopSources { range: r.info(q), min_attempts, matching, rows })
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountryRow {
    pub country: String,
    /// Distinct source addresses from this country.
    pub attackers: i64,
    pub attempts: i64,
    pub logins: i64,
}

/// Attackers and attempts per country, most attempts first.
pub fn countries(db: &dyn Storage, q: &Query, n: usize) -> Result<Vec<CountryRow>, AnalyticsError> {
    let r = resolve(db, q)?;
    countries_in(&scan_sources(db, &r, q)?, n)
}

pub(super) fn countries_in(src: &SrcMap, n: usize) -> Result<Vec<CountryRow>, AnalyticsError> {
    let mut by: HashMap<i64, (i64, i64, i64)> = HashMap::new();
    for (_, v) in src.iter() {
        let e = by.entry(v.cc).or_default();
        e.0 += 1;
        e.1 += v.attempts;
        e.2 += v.logins;
    }
    let items: Vec<(i64, (i64, i64))> = by.iter().map(|(cc, v)| (*cc, (v.1, v.0))).collect();
    Ok(top_n(items, limit(n), |cc| Ok(cc_label(cc)))?
        .into_iter()
        .map(|(cc, (attempts, attackers), country)| CountryRow {
            country,
            attackers,
            attempts,
            logins: by.get(&cc).map(|v| v.2).unwrap_or(0),
        })
        .collect())
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProtocolRow {
    pub protocol: String,
    pub attempts: i64,
    pub logins: i64,
    pub events: i64,
}

/// Attempts, logins and events per emulated protocol (sensor-internal records excluded).
pub fn protocols(db: &dyn Storage, q: &Query) -> Result<Vec<ProtocolRow>, AnalyticsError> {
    let r = resolve(db, q)?;
    let mut rows: Vec<ProtocolRow> = db
        .protocol_sums(&r.agg())?
        .into_iter()
        .map(|p| ProtocolRow { protocol: p.protocol, attempts: p.attempts, logins: p.logins, events: p.events })
        .collect();
    let mut changed = false;
    for c in q.include.excluded() {
        for p in db.protocol_sums(&r.class_agg(c))? {
            if let Some(e) = rows.iter_mut().find(|e| e.protocol == p.protocol) {
                e.attempts -= p.attempts;
                e.logins -= p.logins;
                e.events -= p.events;
                changed = true;
            }
        }
    }
    if changed {
        rows.retain(|p| p.events != 0 || p.attempts != 0);
        rows.sort_by(|a, b| b.attempts.cmp(&a.attempts).then_with(|| a.protocol.cmp(&b.protocol)));
    }
    Ok(rows)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortRow {
    pub protocol: String,
    pub port: i64,
    pub attempts: i64,
}

/// Attempts per destination port (and the protocol emulated there).
pub fn ports(db: &dyn Storage, q: &Query, n: usize) -> Result<Vec<PortRow>, AnalyticsError> {
    let r = resolve(db, q)?;
    let mut out: HashMap<(String, i64), i64> = HashMap::new();
    for c in q.include.excluded() {
        for p in db.port_sums(&r.class_agg(c), i64::MAX)? {
            *out.entry((p.protocol, p.port)).or_default() += p.attempts;
        }
    }
    // Without labelled traffic to take out, the database picks the top ones itself.
    let all = db.port_sums(&r.agg(), if out.is_empty() { limit(n) as i64 } else { i64::MAX })?;
    let mut rows: Vec<PortRow> = all
        .into_iter()
        .map(|p| {
            let minus = out.get(&(p.protocol.clone(), p.port)).copied().unwrap_or(0);
            PortRow { protocol: p.protocol, port: p.port, attempts: p.attempts - minus }
        })
        .filter(|p| p.attempts > 0)
        .collect();
    if !out.is_empty() {
        rows.sort_by(|a, b| b.attempts.cmp(&a.attempts).then_with(|| a.port.cmp(&b.port)));
        rows.truncate(limit(n));
    }
    Ok(rows)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counted {
    pub value: String,
    pub count: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairRow {
    pub username: String,
    pub password: String,
    pub count: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    pub range: RangeInfo,
    pub usernames: Vec<Counted>,
    pub passwords: Vec<Counted>,
    pub pairs: Vec<PairRow>,
    /// Passwords recovered from challenge-responses (MySQL, NTLM, VNC; `crate::recover`), per
    /// user, password and protocol: the passwords above are those responses as sent.
    #[serde(default)]
    pub recovered: Vec<crate::storage::RecoveredRow>,
}

/// Most tried user names, passwords (or hashes / key fingerprints) and pairs.
pub fn credentials(db: &dyn Storage, q: &Query, n: usize) -> Result<Credentials, AnalyticsError> {
    let r = resolve(db, q)?;
    // ~800,000 rows for 30 days at 10 M events: user names and passwords summed in vectors by
    // string id, pairs in a map with a cheap hash (see IdHasher).
    let mut users = Counts::default();
    let mut passes = Counts::default();
    let mut pairs: HashMap<(i64, i64), i64, IdHash> = HashMap::default();
    db.scan_credentials(&r.agg(), &mut |c: CredAgg| {
        *users.slot(c.user_id, || 0) += c.n;
        *passes.slot(c.pass_id, || 0) += c.n;
        *pairs.entry((c.user_id, c.pass_id)).or_default() += c.n;
    })?;
    // The label classes left out, subtracted (their rows are a part of the ones above).
    for class in q.include.excluded() {
        db.scan_credentials(&r.class_agg(class), &mut |c: CredAgg| {
            *users.slot(c.user_id, || 0) -= c.n;
            *passes.slot(c.pass_id, || 0) -= c.n;
            *pairs.entry((c.user_id, c.pass_id)).or_default() -= c.n;
        })?;
    }
    pairs.retain(|_, n| *n > 0);
    let n = limit(n);
    let counted = |m: Counts| -> Result<Vec<Counted>, AnalyticsError> {
        let entries = m.entries.into_iter().filter(|e| e.1 > 0).collect();
        Ok(top_n(entries, n, |id| Ok(db.string_of(id)?))?
            .into_iter()
            .map(|(_, count, value)| Counted { value, count })
            .collect())
    };
    let usernames = counted(users)?;
    let passwords = counted(passes)?;
    let pairs =
        top_n(pairs.into_iter().collect(), n, |(u, p)| Ok(format!("{}\n{}", db.string_of(u)?, db.string_of(p)?)))?
            .into_iter()
            .map(|(_, count, name)| {
                let (username, password) =
                    name.split_once('\n').map(|(a, b)| (a.to_string(), b.to_string())).unwrap_or_default();
                PairRow { username, password, count }
            })
            .collect();
    let range = EventRange { since_ms: r.since, until_ms: r.until, sensor_id: r.sensor_id };
    let recovered = db.recovered_passwords(&range, i64::try_from(n).unwrap_or(i64::MAX))?;
    Ok(Credentials { range: r.info(q), usernames, passwords, pairs, recovered })
}

/// One group of rare events (a payload, an exploit, a URL) with when and from where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemRow {
    /// The sha256 (payloads), exploit name (exploits) or URL (downloads).
    pub key: String,
    /// Payload size in bytes / exploit CVE / download tool.
    pub detail: String,
    pub count: i64,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    /// Distinct source addresses.
    pub sources: i64,
    /// Up to 20 of those addresses.
    pub ips: Vec<String>,
}

fn items(db: &dyn Storage, q: &Query, kind: ItemKind, n: usize) -> Result<Vec<ItemRow>, AnalyticsError> {
    let r = resolve(db, q)?;
    struct Acc {
        detail: String,
        count: i64,
        first: i64,
        last: i64,
        ips: HashSet<String>,
    }
    let mut m: HashMap<String, Acc> = HashMap::new();
    let mut scanned = 0usize;
    let range = EventRange { since_ms: r.since, until_ms: r.until, sensor_id: r.sensor_id };
    let left_out = excluded_addresses(db, q, &r)?;
    db.scan_items(kind, &range, &mut |row| {
        scanned += 1;
        if scanned > MAX_ITEM_ROWS {
            tracing::warn!(?kind, cap = MAX_ITEM_ROWS, "item list cut at the row cap; narrow the range");
            return ControlFlow::Break(());
        }
        if left_out.contains(row.src_ip) {
            return ControlFlow::Continue(());
        }
        // Borrowed text; owned copies only for new keys, details and addresses.
        if !m.contains_key(row.key) {
            let acc = Acc { detail: String::new(), count: 0, first: i64::MAX, last: i64::MIN, ips: HashSet::new() };
            m.insert(row.key.to_owned(), acc);
        }
        let Some(e) = m.get_mut(row.key) else { return ControlFlow::Continue(()) };
        if row.detail > e.detail.as_str() {
            e.detail = row.detail.to_owned();
        }
        e.count += 1;
        e.first = e.first.min(row.time_ms);
        e.last = e.last.max(row.time_ms);
        if !e.ips.contains(row.src_ip) {
            e.ips.insert(row.src_ip.to_owned());
        }
        ControlFlow::Continue(())
    })?;
    let mut v: Vec<ItemRow> = m
        .into_iter()
        .map(|(key, a)| {
            let mut ips: Vec<String> = a.ips.iter().cloned().collect();
            ips.sort();
            ips.truncate(MAX_IPS_PER_ITEM);
            ItemRow {
                key,
                detail: a.detail,
                count: a.count,
                first_seen_ms: a.first,
                last_seen_ms: a.last,
                sources: a.ips.len() as i64,
                ips,
            }
        })
        .collect();
    v.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.key.cmp(&b.key)));
    v.truncate(limit(n));
    Ok(v)
}

/// Most addresses of the label classes left out that the item lists filter by (beyond it,
/// their payloads, exploits and downloads are listed with the rest; a warning says so).
const MAX_EXCLUDED_ADDRESSES: usize = 100_000;

/// The addresses of the label classes `q` leaves out, as text (the item lists read raw rows).
fn excluded_addresses(db: &dyn Storage, q: &Query, r: &Resolved) -> Result<HashSet<String>, AnalyticsError> {
    let mut set = excluded_addresses_first(db, q, r, MAX_EXCLUDED_ADDRESSES + 1)?;
    if set.len() > MAX_EXCLUDED_ADDRESSES {
        tracing::warn!(cap = MAX_EXCLUDED_ADDRESSES, "too many labelled addresses to filter the item lists by");
        let extra = set.iter().next().cloned();
        if let Some(ip) = extra {
            set.remove(&ip);
        }
    }
    Ok(set)
}

/// The addresses of the label classes `q` leaves out in `r`, or `None` when there are more
/// than `cap`.
fn excluded_addresses_upto(
    db: &dyn Storage,
    q: &Query,
    r: &Resolved,
    cap: usize,
) -> Result<Option<HashSet<String>>, AnalyticsError> {
    let set = excluded_addresses_first(db, q, r, cap + 1)?;
    Ok((set.len() <= cap).then_some(set))
}

/// The first `cap` addresses of the label classes `q` leaves out in `r`.
fn excluded_addresses_first(
    db: &dyn Storage,
    q: &Query,
    r: &Resolved,
    cap: usize,
) -> Result<HashSet<String>, AnalyticsError> {
    let mut set = HashSet::new();
    for c in q.include.excluded() {
        for (id, _) in scan_class(db, r, c)?.iter() {
            if set.len() >= cap {
                return Ok(set);
            }
            if let Some(ip) = db.ip_of(id)? {
                set.insert(ip.ip);
            }
        }
    }
    Ok(set)
}

/// Captured payloads: sha256, size, how often, first and last seen, from which addresses.
pub fn payloads(db: &dyn Storage, q: &Query, n: usize) -> Result<Vec<ItemRow>, AnalyticsError> {
    items(db, q, ItemKind::Payload, n)
}

/// Recognised exploit attempts by name (detail = CVE).
pub fn exploits(db: &dyn Storage, q: &Query, n: usize) -> Result<Vec<ItemRow>, AnalyticsError> {
    items(db, q, ItemKind::Exploit, n)
}

/// Download URLs attackers offered (detail = tool).
pub fn downloads(db: &dyn Storage, q: &Query, n: usize) -> Result<Vec<ItemRow>, AnalyticsError> {
    items(db, q, ItemKind::Download, n)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SensorHealth {
    pub name: String,
    pub revoked: bool,
    pub last_contact_ms: Option<i64>,
    /// Highest sequence number stored.
    pub high_water_seq: i64,
    /// Evicted and shed totals as the admin counted them.
    pub evicted_total: i64,
    pub shed_total: i64,
    /// Event rows stored for this sensor (all time).
    pub events_stored: i64,
    /// The last health sample, if any.
    pub health: Option<Health>,
}

/// Every enrolled sensor with its last contact and last health sample (not range-limited).
pub fn sensors(db: &dyn Storage, q: &Query) -> Result<Vec<SensorHealth>, AnalyticsError> {
    resolve(db, q)?;
    Ok(db
        .sensor_health(q.sensor.as_deref())?
        .into_iter()
        .map(|s| SensorHealth {
            name: s.name,
            revoked: s.revoked,
            last_contact_ms: s.last_contact_ms,
            high_water_seq: s.high_water_seq,
            evicted_total: s.evicted_total,
            shed_total: s.shed_total,
            events_stored: s.events_folded,
            health: s.health,
        })
        .collect())
}

/// Everything `drosera-admin report` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub totals: Totals,
    pub protocols: Vec<ProtocolRow>,
    pub ports: Vec<PortRow>,
    pub top_sources: TopSources,
    pub countries: Vec<CountryRow>,
    pub credentials: Credentials,
    pub payloads: Vec<ItemRow>,
    pub exploits: Vec<ItemRow>,
    pub downloads: Vec<ItemRow>,
    pub sensors: Vec<SensorHealth>,
    /// Scan detection: top scanned ports, top scanners with fingerprints (issue 16).
    #[serde(default)]
    pub scans: super::Scans,
    /// The labelled traffic (`self`, `research`) on its own, whether or not it is included in
    /// the numbers above.
    #[serde(default)]
    pub labelled: Vec<LabelledTotals>,
    /// Attempts over time, per protocol (issue 21): the same [`timeline`] the dashboard draws.
    #[serde(default)]
    pub timeline: Timeline,
}

/// One label class's share of the range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabelledTotals {
    /// `self` or `research`.
    pub label: String,
    /// True if the numbers of the report include it (`--include`).
    pub included: bool,
    pub attempts: i64,
    pub logins: i64,
    /// Event rows.
    pub events: i64,
    /// Distinct source addresses.
    pub attackers: i64,
    /// Its addresses by attempts.
    pub top_sources: Vec<SourceRow>,
}

/// Each label class's share of the range (see [`LabelledTotals`]).
pub fn labelled(db: &dyn Storage, q: &Query, n: usize) -> Result<Vec<LabelledTotals>, AnalyticsError> {
    let r = resolve(db, q)?;
    let mut out = Vec::new();
    for c in Class::ALL {
        let mut t = LabelledTotals {
            label: c.label().to_string(),
            included: q.include.includes(c),
            attempts: 0,
            logins: 0,
            events: 0,
            attackers: 0,
            top_sources: Vec::new(),
        };
        for k in db.kind_sums(&r.class_agg(c))? {
            t.events += k.rows;
            match k.kind.as_str() {
                "connection" | "rollup" => t.attempts += k.n,
                "login" => t.logins += k.rows,
                _ => {}
            }
        }
        let src = scan_class(db, &r, c)?;
        t.attackers = src.len() as i64;
        if src.len() > 0 {
            t.top_sources = top_sources_in(db, q, &r, &src, 0, n)?.rows;
        }
        out.push(t);
    }
    Ok(out)
}

/// The full report (each list capped at `n` rows).
pub fn report(db: &dyn Storage, q: &Query, min_attempts: i64, n: usize) -> Result<Report, AnalyticsError> {
    // One scan of the source aggregates serves totals, top sources and countries.
    let r = resolve(db, q)?;
    let src = scan_sources(db, &r, q)?;
    Ok(Report {
        totals: totals_in(db, q, &r, &src)?,
        protocols: protocols(db, q)?,
        ports: ports(db, q, n)?,
        top_sources: top_sources_in(db, q, &r, &src, min_attempts, n)?,
        countries: countries_in(&src, n)?,
        credentials: credentials(db, q, n)?,
        payloads: payloads(db, q, n)?,
        exploits: exploits(db, q, n)?,
        downloads: downloads(db, q, n)?,
        sensors: sensors(db, q)?,
        labelled: labelled(db, q, n.min(10))?,
        scans: super::scans(db, q, n)?,
        timeline: timeline(db, q)?,
    })
}
