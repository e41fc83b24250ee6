//! Analytics: every number the CLI `report`, the JSON API and the dashboard show.
//!
//! WHY one module: the three front ends call the same functions with the same [`Query`], so they
//! can never disagree. Every function takes a time range and an optional sensor and returns a
//! serializable struct.
//!
//! # Definitions (see also `docs/enrichment.md`)
//! * An **attempt** (an "attack") is one connection: one session, counted once through the
//!   `connection` event the sensor records when the session ends, or one connection folded into
//!   a `rollup` event (which counts its `count`). Logins, commands, requests inside a session are
//!   not further attempts, so a session is never counted once per message.
//! * A **login** is one `login` event (one credential pair tried).
//! * An **attacker** is a distinct source address with at least one event in the range.
//!
//! # Speed: aggregate tables
//! Reports over ten million events must answer in well under a second, so they never scan the raw
//! `events` table except for the rare kinds (payloads, exploits, downloads), which have a covering
//! partial index each (see [`SCHEMA`]). [`refresh`] folds new events (by `events.id`, which only
//! grows) into small aggregate tables at three resolutions: hours (`res = 0`), days (`res = 1`) and
//! weeks (`res = 2`), each once per sensor and once for all sensors together (`sensor_id = 0`),
//! keyed so that every query is one index range scan per span. A query over a range uses week rows
//! for the whole weeks inside it, day rows for the whole days at the edges of those, and hour rows
//! for the partial days at its ends, so ranges are exact to the hour: `since` is rounded down and
//! `until` up to a whole hour.
//! Retention prunes raw events and hour rows but keeps day rows, so old ranges still answer
//! (at day granularity).
//!
//! A 30-day range at ten million events still reads ~600,000 source rows and ~800,000
//! credential rows (the week rows cover at most the middle; edge days and hours add the rest).
//! They are summed in Rust rather than grouped in SQL, in vectors indexed by the interned ids
//! (addresses, strings) and an integer-keyed map with a cheap hash for credential pairs; "top"
//! lists select their cut instead of sorting every candidate. `docs/benchmarks.md` has the times.
//!
//! Refreshing happens before every query from the CLI and the dashboard (cheap when nothing is
//! new) and periodically in `serve`; ingest itself is not slowed down by it.

use crate::enrich::{Enricher, IpInfo};
use drosera_uplink::event::Health;
use rusqlite::types::ValueRef;
use rusqlite::{params, Connection, OptionalExtension, ToSql};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};

pub const HOUR_MS: i64 = 3_600_000;
pub const DAY_MS: i64 = 86_400_000;
/// Week buckets (aligned to the epoch, so they start on Thursdays; internal only).
pub const WEEK_MS: i64 = 7 * DAY_MS;
/// Most rows any "top" list returns, whatever the caller asks.
pub const MAX_LIMIT: usize = 1000;
/// Events folded into the aggregates per transaction by [`refresh`].
const REFRESH_BATCH: i64 = 50_000;
/// Most buckets in a timeline (beyond it, the range is cut to the most recent buckets).
const MAX_BUCKETS: i64 = 2000;
/// Timelines over at most this span are hourly, longer ones daily.
const HOURLY_TIMELINE_MAX_MS: i64 = 7 * DAY_MS;
/// Most source addresses listed per payload, exploit or download.
const MAX_IPS_PER_ITEM: usize = 20;

pub const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS analytics_state (
    id             INTEGER PRIMARY KEY CHECK (id = 1),
    last_event_id  INTEGER NOT NULL,
    -- hour rows older than this were pruned by retention (day rows remain)
    hourly_from_ms INTEGER NOT NULL DEFAULT 0
);
INSERT OR IGNORE INTO analytics_state(id, last_event_id) VALUES (1, 0);
-- enrichment cache; `id` is what the aggregates store, `cc` the packed country (see cc_code)
CREATE TABLE IF NOT EXISTS ip_info (
    id      INTEGER PRIMARY KEY,
    ip      TEXT NOT NULL UNIQUE,
    country TEXT NOT NULL,
    cc      INTEGER NOT NULL,
    asn     INTEGER,
    as_org  TEXT NOT NULL DEFAULT ''
);
-- user names and passwords, interned so the credential aggregates hold integers
CREATE TABLE IF NOT EXISTS strings (
    id INTEGER PRIMARY KEY,
    s  TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS agg_kind (
    res INTEGER NOT NULL, bucket INTEGER NOT NULL, sensor_id INTEGER NOT NULL,
    protocol TEXT NOT NULL, kind TEXT NOT NULL,
    rows INTEGER NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (res, sensor_id, bucket, protocol, kind)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS agg_port (
    res INTEGER NOT NULL, bucket INTEGER NOT NULL, sensor_id INTEGER NOT NULL,
    protocol TEXT NOT NULL, dst_port INTEGER NOT NULL, attempts INTEGER NOT NULL,
    PRIMARY KEY (res, sensor_id, bucket, protocol, dst_port)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS agg_src (
    res INTEGER NOT NULL, sensor_id INTEGER NOT NULL, bucket INTEGER NOT NULL, ip_id INTEGER NOT NULL,
    cc INTEGER NOT NULL, attempts INTEGER NOT NULL, logins INTEGER NOT NULL, events INTEGER NOT NULL,
    first_ms INTEGER NOT NULL, last_ms INTEGER NOT NULL,
    PRIMARY KEY (res, sensor_id, bucket, ip_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS agg_cred (
    res INTEGER NOT NULL, sensor_id INTEGER NOT NULL, bucket INTEGER NOT NULL,
    user_id INTEGER NOT NULL, pass_id INTEGER NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (res, sensor_id, bucket, user_id, pass_id)
) WITHOUT ROWID;
-- Covering indexes for the rare kinds `items` lists (payloads, exploits, downloads), one partial
-- index per kind holding every column the list reads: a 30-day list is then one sequential
-- index scan instead of one random read of the events table per row (~3 us each; 160 ms per
-- list at 10 M events through events_kind). Ingest maintains them only for those ~1.5 % of
-- events. Built once (a scan of `events`) the first time a database is opened by this version.
CREATE INDEX IF NOT EXISTS events_payload
    ON events(kind, time_ms, sensor_id, src_ip, payload_sha256, fields) WHERE kind = 'payload';
CREATE INDEX IF NOT EXISTS events_exploit
    ON events(kind, time_ms, sensor_id, src_ip, fields) WHERE kind = 'exploit';
CREATE INDEX IF NOT EXISTS events_download
    ON events(kind, time_ms, sensor_id, src_ip, url, fields) WHERE kind = 'download_offered';
"#;

#[derive(Debug, thiserror::Error)]
pub enum AnalyticsError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("unknown sensor {0:?} (see `drosera-admin sensor list`)")]
    UnknownSensor(String),
    #[error("bad time {0:?}: use RFC 3339 (2024-05-01T00:00:00Z), a date (2024-05-01), milliseconds since the epoch, or an age like 24h / 7d / 30m")]
    BadTime(String),
}

/// Creates the analytics tables and indexes (idempotent). Called by every entry point, after
/// `db::open` (the covering indexes are on `events`).
pub fn migrate(conn: &Connection) -> Result<(), AnalyticsError> {
    conn.execute_batch(SCHEMA)?;
    Ok(())
}

/// The time range and sensor every query takes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Query {
    /// Start, ms since the epoch (inclusive, rounded down to the hour); `None` = everything.
    pub since_ms: Option<i64>,
    /// End, ms since the epoch (exclusive, rounded up to the hour); `None` = now.
    pub until_ms: Option<i64>,
    /// Sensor name; `None` = all sensors.
    pub sensor: Option<String>,
}

/// Parses a `--since` / `--until` value relative to `now_ms`.
pub fn parse_time(s: &str, now_ms: i64) -> Result<i64, AnalyticsError> {
    let bad = || AnalyticsError::BadTime(s.to_string());
    let t = s.trim();
    if t.is_empty() {
        return Err(bad());
    }
    if let Ok(ms) = t.parse::<i64>() {
        return Ok(ms);
    }
    if let Some(unit) = t.chars().last().filter(|c| "smhdw".contains(*c)) {
        if let Ok(n) = t[..t.len() - 1].parse::<i64>() {
            let mul = match unit {
                's' => 1000,
                'm' => 60_000,
                'h' => HOUR_MS,
                'd' => DAY_MS,
                _ => 7 * DAY_MS,
            };
            return n.checked_mul(mul).map(|d| now_ms.saturating_sub(d)).ok_or_else(bad);
        }
    }
    use time::format_description::well_known::Rfc3339;
    if let Ok(dt) = time::OffsetDateTime::parse(t, &Rfc3339) {
        return Ok((dt.unix_timestamp_nanos() / 1_000_000) as i64);
    }
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    if let Ok(d) = time::Date::parse(t, &fmt) {
        return Ok(d.midnight().assume_utc().unix_timestamp() * 1000);
    }
    Err(bad())
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn floor_to(t: i64, unit: i64) -> i64 {
    t.div_euclid(unit) * unit
}

fn ceil_to(t: i64, unit: i64) -> i64 {
    floor_to(t.saturating_add(unit - 1), unit)
}

/// The range a query resolves to, shown with every answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeInfo {
    pub since_ms: i64,
    pub until_ms: i64,
    pub sensor: Option<String>,
}

/// Spans of (resolution, from, to) covering `[since, until)` (hour-aligned) without overlap:
/// hours at the partial-day edges, days at the partial-week edges, weeks in the middle
/// (`weeks = false`: days in the middle).
fn spans(since: i64, until: i64, weeks: bool) -> [(i64, i64, i64); 5] {
    let d0 = ceil_to(since, DAY_MS);
    let d1 = floor_to(until, DAY_MS);
    let w0 = ceil_to(d0, WEEK_MS);
    let w1 = floor_to(d1, WEEK_MS);
    let none = (0, 0, 0);
    if d0 >= d1 {
        [(0, since, until), none, none, none, none]
    } else if !weeks || w0 >= w1 {
        [(0, since, d0), (1, d0, d1), (0, d1, until), none, none]
    } else {
        [(0, since, d0), (1, d0, w0), (2, w0, w1), (1, w1, d1), (0, d1, until)]
    }
}

/// The (resolution, bucket size, all-sensors row) combinations every event is folded into.
const AGG_KEYS: [(i64, i64, bool); 6] = [
    (0, HOUR_MS, false),
    (1, DAY_MS, false),
    (2, WEEK_MS, false),
    (0, HOUR_MS, true),
    (1, DAY_MS, true),
    (2, WEEK_MS, true),
];

/// A query resolved against the database: aligned bounds, sensor id, and the spans of
/// (resolution, from, to) that cover the range without overlap.
#[derive(Clone)]
struct Resolved {
    since: i64,
    until: i64,
    sensor_id: Option<i64>,
    spans: [(i64, i64, i64); 5],
    hourly_from: i64,
}

fn resolve(conn: &Connection, q: &Query) -> Result<Resolved, AnalyticsError> {
    let sensor_id = match &q.sensor {
        None => None,
        Some(name) => Some(
            conn.query_row("SELECT id FROM sensors WHERE name = ?1", params![name], |r| r.get::<_, i64>(0))
                .optional()?
                .ok_or_else(|| AnalyticsError::UnknownSensor(name.clone()))?,
        ),
    };
    let hourly_from: i64 = conn
        .query_row("SELECT hourly_from_ms FROM analytics_state WHERE id = 1", [], |r| r.get(0))
        .optional()?
        .unwrap_or(0);
    let mut since = floor_to(q.since_ms.unwrap_or(0).max(0), HOUR_MS);
    let mut until = ceil_to(q.until_ms.unwrap_or_else(|| now_ms() + 1).max(since), HOUR_MS);
    // Hour rows before `hourly_from` are gone: widen edges there to whole days.
    if since < hourly_from {
        since = floor_to(since, DAY_MS);
    }
    if until < hourly_from {
        until = ceil_to(until, DAY_MS);
    }
    let spans = spans(since, until, true);
    Ok(Resolved { since, until, sensor_id, spans, hourly_from })
}

impl Resolved {
    fn info(&self, q: &Query) -> RangeInfo {
        RangeInfo { since_ms: self.since, until_ms: self.until, sensor: q.sensor.clone() }
    }

    /// `SELECT cols FROM table` restricted to the range and sensor, as a UNION ALL over the
    /// spans. Parameters: ?1..?10 span bounds, ?11 sensor id (0 = the all-sensors rows); callers
    /// add their own from ?12.
    fn select(&self, table: &str, cols: &str) -> String {
        self.select_where(table, cols, "sensor_id = ?11")
    }

    fn select_where(&self, table: &str, cols: &str, sensor_cond: &str) -> String {
        self.spans
            .iter()
            .enumerate()
            .map(|(i, (res, _, _))| {
                format!(
                    "SELECT {cols} FROM {table} WHERE res = {res} AND {sensor_cond} AND bucket >= ?{} AND bucket < ?{}",
                    2 * i + 1,
                    2 * i + 2
                )
            })
            .collect::<Vec<_>>()
            .join(" UNION ALL ")
    }

    fn params(&self) -> Vec<Box<dyn ToSql>> {
        let mut v: Vec<Box<dyn ToSql>> = Vec::with_capacity(13);
        for (_, lo, hi) in self.spans {
            v.push(Box::new(lo));
            v.push(Box::new(hi));
        }
        v.push(Box::new(self.sensor_id.unwrap_or(0)));
        v
    }
}

fn run<T>(
    conn: &Connection,
    sql: &str,
    params: Vec<Box<dyn ToSql>>,
    f: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> Result<Vec<T>, AnalyticsError> {
    let mut stmt = conn.prepare_cached(sql)?;
    let refs: Vec<&dyn ToSql> = params.iter().map(|b| b.as_ref()).collect();
    let rows = stmt.query_map(refs.as_slice(), f)?;
    Ok(rows.collect::<Result<Vec<T>, _>>()?)
}

fn limit(n: usize) -> i64 {
    n.clamp(1, MAX_LIMIT) as i64
}

// ---------------------------------------------------------------------------------------------
// Refresh: fold new events into the aggregates.

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

/// (res, bucket, sensor, protocol, kind)
type KindKey = (i64, i64, i64, String, String);
type SrcVal = (i64, i64, i64, i64, i64, i64);

#[derive(Default)]
struct Batch {
    kind: HashMap<KindKey, (i64, i64)>,
    port: HashMap<(i64, i64, i64, String, i64), i64>,
    /// (res, bucket, sensor, ip id) -> (cc, attempts, logins, events, first, last)
    src: HashMap<(i64, i64, i64, i64), SrcVal>,
    cred: HashMap<(i64, i64, i64, i64, i64), i64>,
}

/// Interns addresses (enriching each new one once) and strings within one refresh.
struct Interner {
    ips: HashMap<String, (i64, i64)>,
    strings: HashMap<String, i64>,
}

/// Most entries kept in the interner's memory caches (they are only caches).
const INTERN_CACHE: usize = 200_000;

impl Interner {
    fn ip(&mut self, tx: &rusqlite::Transaction<'_>, ip: &str, enricher: &Enricher) -> rusqlite::Result<(i64, i64)> {
        if let Some(v) = self.ips.get(ip) {
            return Ok(*v);
        }
        let found = tx
            .prepare_cached("SELECT id, cc FROM ip_info WHERE ip = ?1")?
            .query_row(params![ip], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let v = match found {
            Some(v) => v,
            None => {
                let info = match ip.parse() {
                    Ok(addr) => enricher.lookup(addr),
                    Err(_) => IpInfo { country: "unknown".into(), asn: None, as_org: String::new() },
                };
                let cc = cc_code(&info.country);
                tx.prepare_cached("INSERT INTO ip_info(ip, country, cc, asn, as_org) VALUES (?1, ?2, ?3, ?4, ?5)")?
                    .execute(params![ip, info.country, cc, info.asn, info.as_org])?;
                (tx.last_insert_rowid(), cc)
            }
        };
        if self.ips.len() >= INTERN_CACHE {
            self.ips.clear();
        }
        self.ips.insert(ip.to_string(), v);
        Ok(v)
    }

    fn string(&mut self, tx: &rusqlite::Transaction<'_>, s: &str) -> rusqlite::Result<i64> {
        if let Some(v) = self.strings.get(s) {
            return Ok(*v);
        }
        let found: Option<i64> =
            tx.prepare_cached("SELECT id FROM strings WHERE s = ?1")?.query_row(params![s], |r| r.get(0)).optional()?;
        let id = match found {
            Some(id) => id,
            None => {
                tx.prepare_cached("INSERT INTO strings(s) VALUES (?1)")?.execute(params![s])?;
                tx.last_insert_rowid()
            }
        };
        if self.strings.len() >= INTERN_CACHE {
            self.strings.clear();
        }
        self.strings.insert(s.to_string(), id);
        Ok(id)
    }
}

/// Folds events added since the last call into the aggregate tables and enriches their new
/// source addresses; returns how many events were folded. Safe to call concurrently with ingest
/// (each batch is one short transaction; `events.id` only grows).
pub fn refresh(conn: &mut Connection, enricher: &Enricher) -> Result<u64, AnalyticsError> {
    migrate(conn)?;
    let mut total = 0u64;
    let mut interner = Interner { ips: HashMap::new(), strings: HashMap::new() };
    loop {
        let tx = conn.transaction()?;
        let last: i64 = tx.query_row("SELECT last_event_id FROM analytics_state WHERE id = 1", [], |r| r.get(0))?;
        let mut b = Batch::default();
        let mut max_id = last;
        let mut n = 0i64;
        {
            let mut stmt = tx.prepare_cached(
                "SELECT id, sensor_id, time_ms, protocol, kind, src_ip, dst_port, count, username, password
                 FROM events WHERE id > ?1 ORDER BY id LIMIT ?2",
            )?;
            let mut rows = stmt.query(params![last, REFRESH_BATCH])?;
            while let Some(r) = rows.next()? {
                n += 1;
                max_id = r.get(0)?;
                let sensor: i64 = r.get(1)?;
                let t: i64 = r.get(2)?;
                let protocol: String = r.get(3)?;
                let kind: String = r.get(4)?;
                let count: i64 = r.get(7)?;
                let internal = protocol == "sensor";
                let attempt = if kind == "connection" || kind == "rollup" { count } else { 0 };
                let login = i64::from(kind == "login");
                let (ip_id, cc) = if internal {
                    (0, 0)
                } else {
                    let ip: String = r.get(5)?;
                    interner.ip(&tx, &ip, enricher)?
                };
                let port: i64 = r.get(6)?;
                let cred = match r.get::<_, Option<String>>(8)? {
                    Some(u) if !internal => {
                        let u = interner.string(&tx, &u)?;
                        let p = interner.string(&tx, &r.get::<_, Option<String>>(9)?.unwrap_or_default())?;
                        Some((u, p))
                    }
                    _ => None,
                };
                for (res, unit, all) in AGG_KEYS {
                    let s = if all { 0 } else { sensor };
                    let bucket = floor_to(t, unit);
                    let e = b.kind.entry((res, bucket, s, protocol.clone(), kind.clone())).or_default();
                    e.0 += 1;
                    e.1 += count;
                    if internal {
                        continue;
                    }
                    if attempt > 0 {
                        *b.port.entry((res, bucket, s, protocol.clone(), port)).or_default() += attempt;
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
            }
        }
        if n == 0 {
            return Ok(total);
        }
        write_batch(&tx, &b)?;
        tx.execute("UPDATE analytics_state SET last_event_id = ?1 WHERE id = 1", params![max_id])?;
        tx.commit()?;
        total += n as u64;
        if n < REFRESH_BATCH {
            return Ok(total);
        }
    }
}

fn write_batch(tx: &rusqlite::Transaction<'_>, b: &Batch) -> rusqlite::Result<()> {
    let mut st = tx.prepare_cached(
        "INSERT INTO agg_kind(res, bucket, sensor_id, protocol, kind, rows, n) VALUES (?1,?2,?3,?4,?5,?6,?7)
         ON CONFLICT DO UPDATE SET rows = rows + excluded.rows, n = n + excluded.n",
    )?;
    for ((res, bucket, s, p, k), (rows, n)) in &b.kind {
        st.execute(params![res, bucket, s, p, k, rows, n])?;
    }
    let mut st = tx.prepare_cached(
        "INSERT INTO agg_port(res, bucket, sensor_id, protocol, dst_port, attempts) VALUES (?1,?2,?3,?4,?5,?6)
         ON CONFLICT DO UPDATE SET attempts = attempts + excluded.attempts",
    )?;
    for ((res, bucket, s, p, port), a) in &b.port {
        st.execute(params![res, bucket, s, p, port, a])?;
    }
    // Sorted keys make the b-tree writes sequential.
    let mut src: Vec<_> = b.src.iter().collect();
    src.sort_unstable_by_key(|(k, _)| (k.0, k.2, k.1, k.3));
    let mut st = tx.prepare_cached(
        "INSERT INTO agg_src(res, bucket, sensor_id, ip_id, cc, attempts, logins, events, first_ms, last_ms)
         VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10)
         ON CONFLICT DO UPDATE SET attempts = attempts + excluded.attempts, logins = logins + excluded.logins,
           events = events + excluded.events, first_ms = min(first_ms, excluded.first_ms),
           last_ms = max(last_ms, excluded.last_ms)",
    )?;
    for ((res, bucket, s, ip), (cc, a, l, e, f, la)) in src {
        st.execute(params![res, bucket, s, ip, cc, a, l, e, f, la])?;
    }
    let mut cred: Vec<_> = b.cred.iter().collect();
    cred.sort_unstable_by_key(|(k, _)| (k.0, k.2, k.1, k.3, k.4));
    let mut st = tx.prepare_cached(
        "INSERT INTO agg_cred(res, bucket, sensor_id, user_id, pass_id, n) VALUES (?1,?2,?3,?4,?5,?6)
         ON CONFLICT DO UPDATE SET n = n + excluded.n",
    )?;
    for ((res, bucket, s, u, p), n) in cred {
        st.execute(params![res, bucket, s, u, p, n])?;
    }
    Ok(())
}

/// Per-address sums over a resolved range, read from `agg_src` in one pass.
#[derive(Clone, Copy)]
struct SrcSum {
    cc: i64,
    attempts: i64,
    logins: i64,
    events: i64,
    first: i64,
    last: i64,
}

/// Largest id looked up through [`IdTable`]'s vector index; larger ids (not expected: ids are
/// `ip_info` / `strings` rowids, one per address or string ever seen) go to a map. The index
/// costs 4 bytes per id up to the largest id seen, so at most 16 MiB.
const DENSE_IDS: i64 = 1 << 22;

/// Values by interned id (an `ip_info` or `strings` rowid). A 30-day query folds ~1 M aggregate
/// rows into ~50,000 addresses or ~200,000 strings; ids are small dense integers, so a vector
/// index (id → position) finds each without hashing, and the values themselves stay compact.
struct IdTable<T> {
    /// Position + 1 in `entries` by id; 0 = not seen.
    index: Vec<u32>,
    sparse: HashMap<i64, usize, IdHash>,
    entries: Vec<(i64, T)>,
}

impl<T> Default for IdTable<T> {
    fn default() -> Self {
        IdTable { index: Vec::new(), sparse: HashMap::default(), entries: Vec::new() }
    }
}

impl<T> IdTable<T> {
    fn position(&self, id: i64) -> Option<usize> {
        if (0..DENSE_IDS).contains(&id) {
            self.index.get(id as usize).and_then(|&p| (p as usize).checked_sub(1))
        } else {
            self.sparse.get(&id).copied()
        }
    }

    /// The value for `id`, created by `new` if this is its first row.
    fn slot(&mut self, id: i64, new: impl FnOnce() -> T) -> &mut T {
        let pos = match self.position(id) {
            Some(p) => p,
            None => {
                let p = self.entries.len();
                self.entries.push((id, new()));
                if (0..DENSE_IDS).contains(&id) {
                    let i = id as usize;
                    if i >= self.index.len() {
                        self.index.resize((i + 1).max(self.index.len() * 2).min(DENSE_IDS as usize), 0);
                    }
                    // Positions fit: at most one entry per id below DENSE_IDS (2^22).
                    self.index[i] = (p + 1) as u32;
                } else {
                    self.sparse.insert(id, p);
                }
                p
            }
        };
        &mut self.entries[pos].1
    }

    fn get(&self, id: i64) -> Option<&T> {
        self.position(id).map(|p| &self.entries[p].1)
    }

    fn len(&self) -> usize {
        self.entries.len()
    }

    fn iter(&self) -> impl Iterator<Item = (i64, &T)> {
        self.entries.iter().map(|(id, v)| (*id, v))
    }
}

/// [`SrcSum`]s by address id.
type SrcMap = IdTable<SrcSum>;

/// Hasher for integer keys (the Fx multiply-rotate step): the credential scan folds ~1 M rows
/// into maps keyed by interned ids, where SipHash was a visible share of the time. Keys come
/// from the database's own rowids, not from attackers, so flooding resistance is not needed.
#[derive(Default, Clone, Copy)]
struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn write_i64(&mut self, n: i64) {
        self.write_u64(n as u64);
    }
}

type IdHash = std::hash::BuildHasherDefault<IdHasher>;

/// Sums by string id (user names, passwords).
type Counts = IdTable<i64>;

fn scan_sources(conn: &Connection, r: &Resolved) -> Result<SrcMap, AnalyticsError> {
    let sql = r.select("agg_src", "ip_id, cc, attempts, logins, events, first_ms, last_ms");
    let mut stmt = conn.prepare_cached(&sql)?;
    let params = r.params();
    let refs: Vec<&dyn ToSql> = params.iter().map(|b| b.as_ref()).collect();
    let mut rows = stmt.query(refs.as_slice())?;
    let mut m = SrcMap::default();
    while let Some(row) = rows.next()? {
        let cc: i64 = row.get(1)?;
        let e =
            m.slot(row.get(0)?, || SrcSum { cc, attempts: 0, logins: 0, events: 0, first: i64::MAX, last: i64::MIN });
        e.attempts += row.get::<_, i64>(2)?;
        e.logins += row.get::<_, i64>(3)?;
        e.events += row.get::<_, i64>(4)?;
        e.first = e.first.min(row.get(5)?);
        e.last = e.last.max(row.get(6)?);
    }
    Ok(m)
}

/// The `n` best items by `score` (higher first), ties broken by `name` — names are resolved
/// only for the candidates that can make the cut.
fn top_n<K: Copy, S: Ord + Copy>(
    mut items: Vec<(K, S)>,
    n: usize,
    mut name: impl FnMut(K) -> Result<String, AnalyticsError>,
) -> Result<Vec<(K, S, String)>, AnalyticsError> {
    // The n-th best score is the cut (a selection, not a sort: the credential pairs of 30 days
    // are ~200,000 items); everything scoring at least the cut is a candidate.
    if n > 0 && items.len() > n {
        let cut = items.select_nth_unstable_by_key(n - 1, |x| std::cmp::Reverse(x.1)).1 .1;
        items.retain(|x| x.1 >= cut);
    } else if n == 0 && !items.is_empty() {
        let best = items.iter().map(|x| x.1).max();
        items.retain(|x| Some(x.1) >= best);
    }
    let mut v = items.into_iter().map(|(k, s)| Ok((k, s, name(k)?))).collect::<Result<Vec<_>, AnalyticsError>>()?;
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.2.cmp(&b.2)));
    v.truncate(n);
    Ok(v)
}

fn string_of(conn: &Connection, id: i64) -> Result<String, AnalyticsError> {
    Ok(conn
        .prepare_cached("SELECT s FROM strings WHERE id = ?1")?
        .query_row(params![id], |r| r.get(0))
        .optional()?
        .unwrap_or_default())
}

fn ip_of(conn: &Connection, id: i64) -> Result<(String, String, Option<u32>, String), AnalyticsError> {
    Ok(conn
        .prepare_cached("SELECT ip, country, asn, as_org FROM ip_info WHERE id = ?1")?
        .query_row(params![id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .optional()?
        .unwrap_or_else(|| (String::new(), "unknown".into(), None, String::new())))
}

// ---------------------------------------------------------------------------------------------
// Queries.

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
    /// Stored event rows of any kind, sensor-internal ones included.
    pub events: i64,
    /// Distinct source addresses.
    pub attackers: i64,
    /// Distinct countries of those addresses.
    pub countries: i64,
}

pub fn totals(conn: &Connection, q: &Query) -> Result<Totals, AnalyticsError> {
    let r = resolve(conn, q)?;
    let src = scan_sources(conn, &r)?;
    totals_in(conn, q, &r, &src)
}

fn totals_in(conn: &Connection, q: &Query, r: &Resolved, src: &SrcMap) -> Result<Totals, AnalyticsError> {
    let sql = format!("SELECT kind, SUM(rows), SUM(n) FROM ({}) GROUP BY kind", r.select("agg_kind", "kind, rows, n"));
    let mut t = Totals { range: Some(r.info(q)), ..Default::default() };
    for (kind, rows, n) in
        run(conn, &sql, r.params(), |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?, row.get::<_, i64>(2)?)))?
    {
        t.events += rows;
        match kind.as_str() {
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timeline {
    pub range: RangeInfo,
    /// `hour` or `day`.
    pub resolution: String,
    /// Start of each bucket, ms since the epoch.
    pub buckets: Vec<i64>,
    /// Attempts per bucket, all selected sensors together.
    pub attempts: Vec<i64>,
    /// Logins per bucket.
    pub logins: Vec<i64>,
    /// Attempts per bucket for each sensor.
    pub per_sensor: Vec<Series>,
}

/// Attempts and logins per hour (ranges up to 7 days) or per day, overall and per sensor.
pub fn timeline(conn: &Connection, q: &Query) -> Result<Timeline, AnalyticsError> {
    let r = resolve(conn, q)?;
    // Hourly for short ranges whose hour rows still exist (see retention), else daily.
    let hourly = r.until - r.since <= HOURLY_TIMELINE_MAX_MS && r.since >= r.hourly_from;
    let mut days = r.clone();
    days.spans = spans(r.since, r.until, false);
    let unit = if hourly { HOUR_MS } else { DAY_MS };
    let source = if hourly {
        "SELECT bucket, sensor_id, kind, n FROM agg_kind WHERE res = 0 AND sensor_id = ?11 AND bucket >= ?1 AND bucket < ?2"
            .to_string()
    } else {
        // A week row cannot be split into days: a daily timeline reads day rows (and hour rows
        // at the edges).
        let f = days.select("agg_kind", "bucket, sensor_id, kind, n");
        format!("SELECT (bucket / {DAY_MS}) * {DAY_MS} AS bucket, sensor_id, kind, n FROM ({f})")
    };
    let params = || {
        let mut p = days.params();
        if hourly {
            p[0] = Box::new(r.since);
            p[1] = Box::new(r.until);
        }
        p
    };
    let sql = format!("SELECT MIN(bucket), MAX(bucket) FROM ({source})");
    let bounds = run(conn, &sql, params(), |row| Ok((row.get::<_, Option<i64>>(0)?, row.get::<_, Option<i64>>(1)?)))?;
    let (lo, hi) = match bounds.first() {
        Some((Some(a), Some(b))) => (*a, *b),
        _ => (r.since, r.since),
    };
    let first = floor_to(lo.max(r.since), unit);
    let mut last = floor_to(hi.min(r.until - 1).max(first), unit);
    let first = first.max(last - (MAX_BUCKETS - 1) * unit);
    last = last.max(first);
    let buckets: Vec<i64> = (0..=((last - first) / unit)).map(|i| first + i * unit).collect();
    let idx = |b: i64| ((b - first) / unit) as usize;
    // One index range scan per sensor (the all-sensors rows gave the bounds above).
    let sensors: Vec<(i64, String)> = match r.sensor_id {
        Some(id) => vec![(id, q.sensor.clone().unwrap_or_default())],
        None => {
            run(conn, "SELECT id, name FROM sensors ORDER BY name", Vec::new(), |row| Ok((row.get(0)?, row.get(1)?)))?
        }
    };
    let sql = format!(
        "SELECT bucket, SUM(CASE WHEN kind IN ('connection','rollup') THEN n ELSE 0 END),
                SUM(CASE WHEN kind = 'login' THEN n ELSE 0 END)
         FROM ({source}) WHERE bucket >= {first} AND bucket <= {last} GROUP BY bucket"
    );
    let mut rows = Vec::new();
    for (id, name) in sensors {
        let mut p = params();
        p[10] = Box::new(id);
        for (b, a, l) in
            run(conn, &sql, p, |row| Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?, row.get::<_, i64>(2)?)))?
        {
            rows.push((b, name.clone(), a, l));
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
    Ok(Timeline {
        range: r.info(q),
        resolution: if hourly { "hour" } else { "day" }.into(),
        buckets,
        attempts,
        logins,
        per_sensor,
    })
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
pub fn top_sources(conn: &Connection, q: &Query, min_attempts: i64, n: usize) -> Result<TopSources, AnalyticsError> {
    let r = resolve(conn, q)?;
    let src = scan_sources(conn, &r)?;
    top_sources_in(conn, q, &r, &src, min_attempts, n)
}

fn top_sources_in(
    conn: &Connection,
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
    let top = top_n(items, limit(n) as usize, |id| {
        let i = ip_of(conn, id)?;
        let name = i.0.clone();
        info.insert(id, i);
        Ok(name)
    })?;
    let rows = top
        .into_iter()
        .filter_map(|(id, _, _)| {
            let v = src.get(id)?;
            let (ip, country, asn, as_org) = info.remove(&id)?;
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
pub fn countries(conn: &Connection, q: &Query, n: usize) -> Result<Vec<CountryRow>, AnalyticsError> {
    let r = resolve(conn, q)?;
    countries_in(&scan_sources(conn, &r)?, n)
}

fn countries_in(src: &SrcMap, n: usize) -> Result<Vec<CountryRow>, AnalyticsError> {
    let mut by: HashMap<i64, (i64, i64, i64)> = HashMap::new();
    for (_, v) in src.iter() {
        let e = by.entry(v.cc).or_default();
        e.0 += 1;
        e.1 += v.attempts;
        e.2 += v.logins;
    }
    let items: Vec<(i64, (i64, i64))> = by.iter().map(|(cc, v)| (*cc, (v.1, v.0))).collect();
    Ok(top_n(items, limit(n) as usize, |cc| Ok(cc_label(cc)))?
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
pub fn protocols(conn: &Connection, q: &Query) -> Result<Vec<ProtocolRow>, AnalyticsError> {
    let r = resolve(conn, q)?;
    let sql = format!(
        "SELECT protocol, SUM(CASE WHEN kind IN ('connection','rollup') THEN n ELSE 0 END) AS a,
                SUM(CASE WHEN kind = 'login' THEN rows ELSE 0 END), SUM(rows)
         FROM ({}) WHERE protocol <> 'sensor' GROUP BY protocol ORDER BY a DESC, protocol",
        r.select("agg_kind", "protocol, kind, rows, n")
    );
    run(conn, &sql, r.params(), |row| {
        Ok(ProtocolRow { protocol: row.get(0)?, attempts: row.get(1)?, logins: row.get(2)?, events: row.get(3)? })
    })
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortRow {
    pub protocol: String,
    pub port: i64,
    pub attempts: i64,
}

/// Attempts per destination port (and the protocol emulated there).
pub fn ports(conn: &Connection, q: &Query, n: usize) -> Result<Vec<PortRow>, AnalyticsError> {
    let r = resolve(conn, q)?;
    let mut params = r.params();
    params.push(Box::new(limit(n)));
    let sql = format!(
        "SELECT protocol, dst_port, SUM(attempts) AS a FROM ({}) GROUP BY protocol, dst_port
         ORDER BY a DESC, dst_port LIMIT ?12",
        r.select("agg_port", "protocol, dst_port, attempts")
    );
    run(conn, &sql, params, |row| Ok(PortRow { protocol: row.get(0)?, port: row.get(1)?, attempts: row.get(2)? }))
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
}

/// Most tried user names, passwords (or hashes / key fingerprints) and pairs.
pub fn credentials(conn: &Connection, q: &Query, n: usize) -> Result<Credentials, AnalyticsError> {
    let r = resolve(conn, q)?;
    let sql = r.select("agg_cred", "user_id, pass_id, n");
    // ~800,000 rows for 30 days at 10 M events: user names and passwords summed in vectors by
    // string id, pairs in a map with a cheap hash (see IdHasher).
    let mut users = Counts::default();
    let mut passes = Counts::default();
    let mut pairs: HashMap<(i64, i64), i64, IdHash> = HashMap::default();
    {
        let mut stmt = conn.prepare_cached(&sql)?;
        let params = r.params();
        let refs: Vec<&dyn ToSql> = params.iter().map(|b| b.as_ref()).collect();
        let mut rows = stmt.query(refs.as_slice())?;
        while let Some(row) = rows.next()? {
            let (u, p, c): (i64, i64, i64) = (row.get(0)?, row.get(1)?, row.get(2)?);
            *users.slot(u, || 0) += c;
            *passes.slot(p, || 0) += c;
            *pairs.entry((u, p)).or_default() += c;
        }
    }
    let n = limit(n) as usize;
    let counted = |m: Counts| -> Result<Vec<Counted>, AnalyticsError> {
        Ok(top_n(m.entries, n, |id| string_of(conn, id))?
            .into_iter()
            .map(|(_, count, value)| Counted { value, count })
            .collect())
    };
    let usernames = counted(users)?;
    let passwords = counted(passes)?;
    let pairs = top_n(pairs.into_iter().collect(), n, |(u, p)| {
        Ok(format!("{}\n{}", string_of(conn, u)?, string_of(conn, p)?))
    })?
    .into_iter()
    .map(|(_, count, name)| {
        let (username, password) =
            name.split_once('\n').map(|(a, b)| (a.to_string(), b.to_string())).unwrap_or_default();
        PairRow { username, password, count }
    })
    .collect();
    Ok(Credentials { range: r.info(q), usernames, passwords, pairs })
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

/// Raw rows of one rare kind scanned per query at most (payloads, exploits, downloads).
const MAX_ITEM_ROWS: usize = 2_000_000;

fn items(
    conn: &Connection,
    q: &Query,
    (kind, index): (&str, &str),
    key: &str,
    detail: &str,
    n: usize,
) -> Result<Vec<ItemRow>, AnalyticsError> {
    let r = resolve(conn, q)?;
    // One pass over the kind's covering index (see SCHEMA), grouped here.
    let sql = format!(
        "SELECT {key}, {detail}, time_ms, src_ip FROM events INDEXED BY {index}
         WHERE kind = '{kind}' AND time_ms >= ?1 AND time_ms < ?2 AND (?3 IS NULL OR sensor_id = ?3)"
    );
    struct Acc {
        detail: String,
        count: i64,
        first: i64,
        last: i64,
        ips: HashSet<String>,
    }
    let mut m: HashMap<String, Acc> = HashMap::new();
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query(params![r.since, r.until, r.sensor_id])?;
    let mut scanned = 0usize;
    while let Some(row) = rows.next()? {
        scanned += 1;
        if scanned > MAX_ITEM_ROWS {
            tracing::warn!(kind, cap = MAX_ITEM_ROWS, "item list cut at the row cap; narrow the range");
            break;
        }
        // Borrowed text; owned copies only for new keys, details and addresses.
        let k = text_or_empty(row, 0)?;
        let t: i64 = row.get(2)?;
        if !m.contains_key(k) {
            let acc = Acc { detail: String::new(), count: 0, first: i64::MAX, last: i64::MIN, ips: HashSet::new() };
            m.insert(k.to_owned(), acc);
        }
        let Some(e) = m.get_mut(k) else { continue };
        let d = text_or_empty(row, 1)?;
        if d > e.detail.as_str() {
            e.detail = d.to_owned();
        }
        e.count += 1;
        e.first = e.first.min(t);
        e.last = e.last.max(t);
        let ip = text_or_empty(row, 3)?;
        if !e.ips.contains(ip) {
            e.ips.insert(ip.to_owned());
        }
    }
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
    v.truncate(limit(n) as usize);
    Ok(v)
}

/// Column `i` as text, NULL as "" (what `Option<String>` then `unwrap_or_default` gives),
/// borrowed from the row; other types are an error, as for `String`.
fn text_or_empty<'a>(row: &'a rusqlite::Row<'_>, i: usize) -> rusqlite::Result<&'a str> {
    match row.get_ref(i)? {
        ValueRef::Null => Ok(""),
        ValueRef::Text(b) => std::str::from_utf8(b).map_err(rusqlite::Error::Utf8Error),
        other => Err(rusqlite::Error::InvalidColumnType(i, String::new(), other.data_type())),
    }
}

/// Captured payloads: sha256, size, how often, first and last seen, from which addresses.
pub fn payloads(conn: &Connection, q: &Query, n: usize) -> Result<Vec<ItemRow>, AnalyticsError> {
    items(conn, q, ("payload", "events_payload"), "payload_sha256", "json_extract(fields, '$.size')", n)
}

/// Recognised exploit attempts by name (detail = CVE).
pub fn exploits(conn: &Connection, q: &Query, n: usize) -> Result<Vec<ItemRow>, AnalyticsError> {
    items(conn, q, ("exploit", "events_exploit"), "json_extract(fields, '$.name')", "json_extract(fields, '$.cve')", n)
}

/// Download URLs attackers offered (detail = tool).
pub fn downloads(conn: &Connection, q: &Query, n: usize) -> Result<Vec<ItemRow>, AnalyticsError> {
    items(conn, q, ("download_offered", "events_download"), "url", "json_extract(fields, '$.tool')", n)
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
pub fn sensors(conn: &Connection, q: &Query) -> Result<Vec<SensorHealth>, AnalyticsError> {
    resolve(conn, q)?;
    let sql = "SELECT s.name, s.revoked, s.last_contact_ms, s.high_water_seq, s.evicted_total, s.shed_total,
                      s.health_json,
                      (SELECT COALESCE(SUM(rows), 0) FROM agg_kind a WHERE a.res = 1 AND a.sensor_id = s.id)
               FROM sensors s WHERE (?1 IS NULL OR s.name = ?1) ORDER BY s.name";
    run(conn, sql, vec![Box::new(q.sensor.clone())], |row| {
        let health: Option<String> = row.get(6)?;
        Ok(SensorHealth {
            name: row.get(0)?,
            revoked: row.get::<_, i64>(1)? != 0,
            last_contact_ms: row.get(2)?,
            high_water_seq: row.get(3)?,
            evicted_total: row.get(4)?,
            shed_total: row.get(5)?,
            events_stored: row.get(7)?,
            health: health.and_then(|h| serde_json::from_str(&h).ok()),
        })
    })
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
}

/// The full report (each list capped at `n` rows).
pub fn report(conn: &Connection, q: &Query, min_attempts: i64, n: usize) -> Result<Report, AnalyticsError> {
    // One scan of the source aggregates serves totals, top sources and countries.
    let r = resolve(conn, q)?;
    let src = scan_sources(conn, &r)?;
    Ok(Report {
        totals: totals_in(conn, q, &r, &src)?,
        protocols: protocols(conn, q)?,
        ports: ports(conn, q, n)?,
        top_sources: top_sources_in(conn, q, &r, &src, min_attempts, n)?,
        countries: countries_in(&src, n)?,
        credentials: credentials(conn, q, n)?,
        payloads: payloads(conn, q, n)?,
        exploits: exploits(conn, q, n)?,
        downloads: downloads(conn, q, n)?,
        sensors: sensors(conn, q)?,
    })
}

/// Formats a time in ms as `YYYY-MM-DD HH:MM` UTC (or `-`).
pub fn fmt_time(ms: Option<i64>) -> String {
    let Some(ms) = ms else { return "-".into() };
    match time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000)) {
        Ok(t) => {
            let fmt = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]");
            t.format(&fmt).unwrap_or_else(|_| ms.to_string())
        }
        Err(_) => ms.to_string(),
    }
}

/// Escapes control characters so attacker strings cannot mess with a terminal.
pub fn printable(s: &str) -> String {
    s.chars().flat_map(|c| if c.is_control() { c.escape_default().collect::<Vec<_>>() } else { vec![c] }).collect()
}

impl Report {
    /// The plain-text form printed by `drosera-admin report`.
    pub fn to_text(&self) -> String {
        use std::fmt::Write;
        let mut o = String::new();
        let t = &self.totals;
        if let Some(r) = &t.range {
            let _ = writeln!(
                o,
                "Drosera report {} .. {} UTC{}",
                fmt_time(Some(r.since_ms)),
                fmt_time(Some(r.until_ms)),
                r.sensor.as_ref().map(|s| format!(", sensor {s}")).unwrap_or_default()
            );
        }
        let _ = writeln!(
            o,
            "\nTotals: {} attempts ({} rolled up), {} logins, {} commands, {} http requests, {} payloads, {} exploits, {} downloads; {} attackers from {} countries; {} events",
            t.attempts, t.rolled_up, t.logins, t.commands, t.http_requests, t.payloads, t.exploits, t.downloads, t.attackers, t.countries, t.events
        );
        let _ =
            writeln!(o, "\nPer protocol:\n  {:<10} {:>10} {:>10} {:>10}", "protocol", "attempts", "logins", "events");
        for p in &self.protocols {
            let _ = writeln!(o, "  {:<10} {:>10} {:>10} {:>10}", p.protocol, p.attempts, p.logins, p.events);
        }
        let _ = writeln!(o, "\nDestination ports:");
        for p in &self.ports {
            let _ = writeln!(o, "  {:>5}/{:<10} {:>10}", p.port, p.protocol, p.attempts);
        }
        let s = &self.top_sources;
        let _ = writeln!(
            o,
            "\nTop source IPs ({} with >= {} attempts):\n  {:<40} {:>9} {:>7} {:<8} AS",
            s.matching, s.min_attempts, "ip", "attempts", "logins", "country"
        );
        for r in &s.rows {
            let asn = r.asn.map(|a| format!("AS{a} {}", printable(&r.as_org))).unwrap_or_default();
            let _ = writeln!(o, "  {:<40} {:>9} {:>7} {:<8} {}", r.ip, r.attempts, r.logins, r.country, asn);
        }
        let _ = writeln!(o, "\nCountries:\n  {:<8} {:>9} {:>9}", "country", "attackers", "attempts");
        for c in &self.countries {
            let _ = writeln!(o, "  {:<8} {:>9} {:>9}", c.country, c.attackers, c.attempts);
        }
        let c = &self.credentials;
        let _ = writeln!(o, "\nTop credentials (user / password: tries):");
        for p in &c.pairs {
            let _ = writeln!(o, "  {} / {}: {}", printable(&p.username), printable(&p.password), p.count);
        }
        let _ = writeln!(o, "\nTop user names:");
        for u in &c.usernames {
            let _ = writeln!(o, "  {}: {}", printable(&u.value), u.count);
        }
        let _ = writeln!(o, "\nTop passwords:");
        for u in &c.passwords {
            let _ = writeln!(o, "  {}: {}", printable(&u.value), u.count);
        }
        for (title, list) in [
            ("Payloads (sha256, size)", &self.payloads),
            ("Exploits (name, cve)", &self.exploits),
            ("Download URLs (url, tool)", &self.downloads),
        ] {
            let _ = writeln!(o, "\n{title}:");
            for i in list {
                let _ = writeln!(
                    o,
                    "  {} {} x{} from {} sources, {} .. {}",
                    printable(&i.key),
                    printable(&i.detail),
                    i.count,
                    i.sources,
                    fmt_time(Some(i.first_seen_ms)),
                    fmt_time(Some(i.last_seen_ms))
                );
            }
        }
        let _ = writeln!(o, "\nSensors:");
        for s in &self.sensors {
            let _ = write!(
                o,
                "  {}{}: last contact {}, {} events stored, evicted {}, shed {}",
                s.name,
                if s.revoked { " (revoked)" } else { "" },
                fmt_time(s.last_contact_ms),
                s.events_stored,
                s.evicted_total,
                s.shed_total
            );
            if let Some(h) = &s.health {
                let _ = write!(
                    o,
                    ", backlog {}, cpu {:.1}%, rss {} MiB, mem available {} MiB, disk free {} MiB, governor {}",
                    h.backlog_events,
                    h.cpu_permille as f64 / 10.0,
                    h.rss_bytes >> 20,
                    h.mem_available_bytes >> 20,
                    h.disk_free_bytes >> 20,
                    h.governor
                );
            }
            let _ = writeln!(o);
        }
        o
    }
}

/// Builds a [`Query`] from command-line style values (see [`parse_time`]).
pub fn query_from_args(
    since: Option<&str>,
    until: Option<&str>,
    sensor: Option<&str>,
    now_ms: i64,
) -> Result<Query, AnalyticsError> {
    Ok(Query {
        since_ms: since.map(|s| parse_time(s, now_ms)).transpose()?,
        until_ms: until.map(|s| parse_time(s, now_ms)).transpose()?,
        sensor: sensor.map(str::to_string),
    })
}

/// `drosera-admin report`: the arguments and the command, so `main.rs` stays a thin dispatcher.
#[derive(Debug, Clone, clap::Args)]
pub struct ReportArgs {
    /// Print the report as JSON (the same structure as the dashboard's /api/report).
    #[arg(long)]
    pub json: bool,
    /// Start of the range: RFC 3339, YYYY-MM-DD, ms since the epoch, or an age like 7d / 24h.
    #[arg(long)]
    pub since: Option<String>,
    /// End of the range (same forms); default now.
    #[arg(long)]
    pub until: Option<String>,
    /// Only this sensor.
    #[arg(long)]
    pub sensor: Option<String>,
    /// Only list source addresses with at least this many attempts.
    #[arg(long, default_value_t = 0)]
    pub min_attempts: i64,
    /// Rows per list.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
}

impl ReportArgs {
    /// Folds new events into the analytics tables, then writes the report to `out`.
    pub fn run(
        &self,
        db_path: &std::path::Path,
        enrichment: &crate::enrich::EnrichmentConfig,
        out: &mut dyn std::io::Write,
    ) -> anyhow::Result<()> {
        let q = query_from_args(self.since.as_deref(), self.until.as_deref(), self.sensor.as_deref(), now_ms())?;
        let mut conn = crate::dashboard::open_db(db_path)?;
        refresh(&mut conn, &Enricher::new(enrichment)?)?;
        let r = report(&conn, &q, self.min_attempts, self.limit)?;
        if self.json {
            serde_json::to_writer_pretty(&mut *out, &r)?;
            writeln!(out)?;
        } else {
            out.write_all(r.to_text().as_bytes())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_table_sums_dense_and_sparse_ids_alike() {
        let mut t: IdTable<i64> = IdTable::default();
        for (id, n) in [(3, 1), (-1, 2), (DENSE_IDS, 4), (3, 8), (0, 16), (DENSE_IDS, 32), (1 << 40, 64)] {
            *t.slot(id, || 0) += n;
        }
        assert_eq!(t.len(), 5);
        assert_eq!(t.get(3), Some(&9));
        assert_eq!(t.get(-1), Some(&2));
        assert_eq!(t.get(DENSE_IDS), Some(&36));
        assert_eq!(t.get(0), Some(&16));
        assert_eq!(t.get(1 << 40), Some(&64));
        assert_eq!(t.get(1), None);
        assert_eq!(t.get(5_000_000), None);
        let mut all: Vec<(i64, i64)> = t.iter().map(|(k, v)| (k, *v)).collect();
        all.sort_unstable();
        assert_eq!(all, vec![(-1, 2), (0, 16), (3, 9), (DENSE_IDS, 36), (1 << 40, 64)]);
    }
}
