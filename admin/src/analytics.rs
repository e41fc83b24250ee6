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
//! Reports over ten million events must answer in well under a second, so they never scan the
//! raw `events` table except for the rare kinds (payloads, exploits, downloads), which have an
//! index. [`refresh`] folds new events (by `events.id`, which only grows) into small aggregate
//! tables at three resolutions: hours (`res = 0`), days (`res = 1`) and weeks (`res = 2`), each
//! once per sensor and once for all sensors together (`sensor_id = 0`), keyed so that every query
//! is one index range scan per span. A query over a range uses week rows for the whole weeks
//! inside it, day rows for the whole days at the edges of those, and hour rows for the partial
//! days at its ends, so ranges are exact to the hour: `since` is rounded down and `until` up to a
//! whole hour.
//! Retention prunes raw events and hour rows but keeps day rows, so old ranges still answer
//! (at day granularity).
//!
//! Refreshing happens before every query from the CLI and the dashboard (cheap when nothing is
//! new) and periodically in `serve`; ingest itself is not slowed down by it.

use crate::enrich::{Enricher, IpInfo};
use drosera_uplink::event::Health;
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
const MAX_IPS_PER_ITEM: i64 = 20;

pub const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS analytics_state (
    id             INTEGER PRIMARY KEY CHECK (id = 1),
    last_event_id  INTEGER NOT NULL,
    -- hour rows older than this were pruned by retention (day rows remain)
    hourly_from_ms INTEGER NOT NULL DEFAULT 0
);
INSERT OR IGNORE INTO analytics_state(id, last_event_id) VALUES (1, 0);
CREATE TABLE IF NOT EXISTS ip_info (
    ip      TEXT PRIMARY KEY,
    country TEXT NOT NULL,
    asn     INTEGER,
    as_org  TEXT NOT NULL DEFAULT ''
) WITHOUT ROWID;
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
    res INTEGER NOT NULL, bucket INTEGER NOT NULL, sensor_id INTEGER NOT NULL, src_ip TEXT NOT NULL,
    attempts INTEGER NOT NULL, logins INTEGER NOT NULL, events INTEGER NOT NULL,
    first_ms INTEGER NOT NULL, last_ms INTEGER NOT NULL,
    PRIMARY KEY (res, sensor_id, bucket, src_ip)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS agg_cred (
    res INTEGER NOT NULL, bucket INTEGER NOT NULL, sensor_id INTEGER NOT NULL,
    username TEXT NOT NULL, password TEXT NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (res, sensor_id, bucket, username, password)
) WITHOUT ROWID;
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

/// Creates the analytics tables and indexes (idempotent). Called by every entry point.
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

/// Timeline rows: one series per sensor (never the all-sensors rows), or the one asked for.
const PER_SENSOR: &str = "(CASE WHEN ?11 = 0 THEN sensor_id <> 0 ELSE sensor_id = ?11 END)";

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
    fn from(&self, table: &str, cols: &str) -> String {
        self.from_where(table, cols, "sensor_id = ?11")
    }

    fn from_where(&self, table: &str, cols: &str, sensor_cond: &str) -> String {
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

#[derive(Default)]
struct Batch {
    kind: HashMap<(i64, i64, i64, String, String), (i64, i64)>,
    port: HashMap<(i64, i64, i64, String, i64), i64>,
    src: HashMap<(i64, i64, i64, String), (i64, i64, i64, i64, i64)>,
    cred: HashMap<(i64, i64, i64, String, String), i64>,
    new_ips: HashSet<String>,
}

/// Folds events added since the last call into the aggregate tables and enriches their new
/// source addresses; returns how many events were folded. Safe to call concurrently with ingest
/// (each batch is one transaction; `events.id` only grows).
pub fn refresh(conn: &mut Connection, enricher: &Enricher) -> Result<u64, AnalyticsError> {
    migrate(conn)?;
    let mut total = 0u64;
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
                let ip: String = r.get(5)?;
                let port: i64 = r.get(6)?;
                let count: i64 = r.get(7)?;
                let user: Option<String> = r.get(8)?;
                let pass: Option<String> = r.get(9)?;
                let attempt = if kind == "connection" || kind == "rollup" { count } else { 0 };
                let login = i64::from(kind == "login");
                for (res, unit, sensor) in AGG_KEYS.map(|(r, u, all)| (r, u, if all { 0 } else { sensor })) {
                    let bucket = floor_to(t, unit);
                    let e = b.kind.entry((res, bucket, sensor, protocol.clone(), kind.clone())).or_default();
                    e.0 += 1;
                    e.1 += count;
                    if protocol == "sensor" {
                        continue;
                    }
                    if attempt > 0 {
                        *b.port.entry((res, bucket, sensor, protocol.clone(), port)).or_default() += attempt;
                    }
                    let s = b.src.entry((res, bucket, sensor, ip.clone())).or_insert((0, 0, 0, i64::MAX, i64::MIN));
                    s.0 += attempt;
                    s.1 += login;
                    s.2 += 1;
                    s.3 = s.3.min(t);
                    s.4 = s.4.max(t);
                    if let Some(u) = &user {
                        let p = pass.clone().unwrap_or_default();
                        *b.cred.entry((res, bucket, sensor, u.clone(), p)).or_default() += 1;
                    }
                }
                if protocol != "sensor" && !b.new_ips.contains(&ip) {
                    b.new_ips.insert(ip);
                }
            }
        }
        if n == 0 {
            return Ok(total);
        }
        write_batch(&tx, &b, enricher)?;
        tx.execute("UPDATE analytics_state SET last_event_id = ?1 WHERE id = 1", params![max_id])?;
        tx.commit()?;
        total += n as u64;
        if n < REFRESH_BATCH {
            return Ok(total);
        }
    }
}

fn write_batch(tx: &rusqlite::Transaction<'_>, b: &Batch, enricher: &Enricher) -> rusqlite::Result<()> {
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
    let mut st = tx.prepare_cached(
        "INSERT INTO agg_src(res, bucket, sensor_id, src_ip, attempts, logins, events, first_ms, last_ms)
         VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9)
         ON CONFLICT DO UPDATE SET attempts = attempts + excluded.attempts, logins = logins + excluded.logins,
           events = events + excluded.events, first_ms = min(first_ms, excluded.first_ms),
           last_ms = max(last_ms, excluded.last_ms)",
    )?;
    for ((res, bucket, s, ip), (a, l, e, f, la)) in &b.src {
        st.execute(params![res, bucket, s, ip, a, l, e, f, la])?;
    }
    let mut st = tx.prepare_cached(
        "INSERT INTO agg_cred(res, bucket, sensor_id, username, password, n) VALUES (?1,?2,?3,?4,?5,?6)
         ON CONFLICT DO UPDATE SET n = n + excluded.n",
    )?;
    for ((res, bucket, s, u, p), n) in &b.cred {
        st.execute(params![res, bucket, s, u, p, n])?;
    }
    let mut known = tx.prepare_cached("SELECT 1 FROM ip_info WHERE ip = ?1")?;
    let mut ins = tx.prepare_cached("INSERT OR IGNORE INTO ip_info(ip, country, asn, as_org) VALUES (?1,?2,?3,?4)")?;
    for ip in &b.new_ips {
        if known.exists(params![ip])? {
            continue;
        }
        let info = match ip.parse() {
            Ok(addr) => enricher.lookup(addr),
            Err(_) => IpInfo { country: "unknown".into(), asn: None, as_org: String::new() },
        };
        ins.execute(params![ip, info.country, info.asn, info.as_org])?;
    }
    Ok(())
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
    let sql = format!("SELECT kind, SUM(rows), SUM(n) FROM ({}) GROUP BY kind", r.from("agg_kind", "kind, rows, n"));
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
    let sql = format!(
        "SELECT COUNT(*), COUNT(DISTINCT COALESCE(i.country, 'unknown')) FROM (SELECT DISTINCT src_ip FROM ({})) t
         LEFT JOIN ip_info i ON i.ip = t.src_ip",
        r.from("agg_src", "src_ip")
    );
    let v = run(conn, &sql, r.params(), |row| Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?)))?;
    if let Some((a, c)) = v.first() {
        t.attackers = *a;
        t.countries = *c;
    }
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
        format!("SELECT bucket, sensor_id, kind, n FROM agg_kind WHERE res = 0 AND {PER_SENSOR} AND bucket >= ?1 AND bucket < ?2")
    } else {
        // A week row cannot be split into days: a daily timeline reads day rows (and hour rows
        // at the edges).
        let f = days.from_where("agg_kind", "bucket, sensor_id, kind, n", PER_SENSOR);
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
    let params = params();
    let sql = format!(
        "SELECT bucket, s.name, SUM(CASE WHEN kind IN ('connection','rollup') THEN n ELSE 0 END),
                SUM(CASE WHEN kind = 'login' THEN n ELSE 0 END)
         FROM ({source}) t JOIN sensors s ON s.id = t.sensor_id
         WHERE bucket >= {first} AND bucket <= {last}
         GROUP BY bucket, s.name ORDER BY s.name"
    );
    let rows = run(conn, &sql, params, |row| {
        Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?, row.get::<_, i64>(2)?, row.get::<_, i64>(3)?))
    })?;
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
    let grouped = format!(
        "SELECT src_ip, SUM(attempts) AS a, SUM(logins) AS l, SUM(events) AS e, MIN(first_ms) AS f, MAX(last_ms) AS la
         FROM ({}) GROUP BY src_ip HAVING a >= ?12",
        r.from("agg_src", "src_ip, attempts, logins, events, first_ms, last_ms")
    );
    let mut params = r.params();
    params.push(Box::new(min_attempts));
    let matching = run(conn, &format!("SELECT COUNT(*) FROM ({grouped})"), params, |row| row.get::<_, i64>(0))?
        .first()
        .copied()
        .unwrap_or(0);
    let mut params = r.params();
    params.push(Box::new(min_attempts));
    params.push(Box::new(limit(n)));
    let sql = format!(
        "SELECT t.src_ip, t.a, t.l, t.e, t.f, t.la, COALESCE(i.country, 'unknown'), i.asn, COALESCE(i.as_org, '')
         FROM (SELECT * FROM ({grouped}) ORDER BY a DESC, e DESC, src_ip LIMIT ?13) t
         LEFT JOIN ip_info i ON i.ip = t.src_ip ORDER BY t.a DESC, t.e DESC, t.src_ip"
    );
    let rows = run(conn, &sql, params, |row| {
        Ok(SourceRow {
            ip: row.get(0)?,
            attempts: row.get(1)?,
            logins: row.get(2)?,
            events: row.get(3)?,
            first_seen_ms: row.get(4)?,
            last_seen_ms: row.get(5)?,
            country: row.get(6)?,
            asn: row.get(7)?,
            as_org: row.get(8)?,
        })
    })?;
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
    let mut params = r.params();
    params.push(Box::new(limit(n)));
    let sql = format!(
        "SELECT COALESCE(i.country, 'unknown') AS c, COUNT(*), SUM(t.a), SUM(t.l)
         FROM (SELECT src_ip, SUM(attempts) AS a, SUM(logins) AS l FROM ({}) GROUP BY src_ip) t
         LEFT JOIN ip_info i ON i.ip = t.src_ip
         GROUP BY c ORDER BY SUM(t.a) DESC, COUNT(*) DESC, c LIMIT ?12",
        r.from("agg_src", "src_ip, attempts, logins")
    );
    run(conn, &sql, params, |row| {
        Ok(CountryRow { country: row.get(0)?, attackers: row.get(1)?, attempts: row.get(2)?, logins: row.get(3)? })
    })
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
        r.from("agg_kind", "protocol, kind, rows, n")
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
        r.from("agg_port", "protocol, dst_port, attempts")
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
    let src = r.from("agg_cred", "username, password, n");
    let one = |col: &str| -> Result<Vec<Counted>, AnalyticsError> {
        let mut params = r.params();
        params.push(Box::new(limit(n)));
        let sql = format!("SELECT {col}, SUM(n) AS c FROM ({src}) GROUP BY {col} ORDER BY c DESC, {col} LIMIT ?12");
        run(conn, &sql, params, |row| Ok(Counted { value: row.get(0)?, count: row.get(1)? }))
    };
    let usernames = one("username")?;
    let passwords = one("password")?;
    let mut params = r.params();
    params.push(Box::new(limit(n)));
    let sql = format!(
        "SELECT username, password, SUM(n) AS c FROM ({src}) GROUP BY username, password
         ORDER BY c DESC, username, password LIMIT ?12"
    );
    let pairs = run(conn, &sql, params, |row| {
        Ok(PairRow { username: row.get(0)?, password: row.get(1)?, count: row.get(2)? })
    })?;
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

fn items(
    conn: &Connection,
    q: &Query,
    kind: &str,
    key: &str,
    detail: &str,
    n: usize,
) -> Result<Vec<ItemRow>, AnalyticsError> {
    let r = resolve(conn, q)?;
    let base = format!(
        "FROM events WHERE kind = '{kind}' AND time_ms >= ?1 AND time_ms < ?2 AND (?3 IS NULL OR sensor_id = ?3)"
    );
    let sql = format!(
        "SELECT {key} AS k, MAX({detail}), COUNT(*) AS c, MIN(time_ms), MAX(time_ms), COUNT(DISTINCT src_ip)
         {base} GROUP BY k ORDER BY c DESC, k LIMIT ?4"
    );
    let params: Vec<Box<dyn ToSql>> =
        vec![Box::new(r.since), Box::new(r.until), Box::new(r.sensor_id), Box::new(limit(n))];
    let mut rows = run(conn, &sql, params, |row| {
        Ok(ItemRow {
            key: row.get::<_, Option<String>>(0)?.unwrap_or_default(),
            detail: row.get::<_, Option<String>>(1)?.unwrap_or_default(),
            count: row.get(2)?,
            first_seen_ms: row.get(3)?,
            last_seen_ms: row.get(4)?,
            sources: row.get(5)?,
            ips: Vec::new(),
        })
    })?;
    let sql = format!("SELECT DISTINCT src_ip {base} AND {key} = ?4 ORDER BY src_ip LIMIT {MAX_IPS_PER_ITEM}");
    for item in &mut rows {
        let params: Vec<Box<dyn ToSql>> =
            vec![Box::new(r.since), Box::new(r.until), Box::new(r.sensor_id), Box::new(item.key.clone())];
        item.ips = run(conn, &sql, params, |row| row.get(0))?;
    }
    Ok(rows)
}

/// Captured payloads: sha256, size, how often, first and last seen, from which addresses.
pub fn payloads(conn: &Connection, q: &Query, n: usize) -> Result<Vec<ItemRow>, AnalyticsError> {
    items(conn, q, "payload", "payload_sha256", "CAST(json_extract(fields, '$.size') AS TEXT)", n)
}

/// Recognised exploit attempts by name (detail = CVE).
pub fn exploits(conn: &Connection, q: &Query, n: usize) -> Result<Vec<ItemRow>, AnalyticsError> {
    items(conn, q, "exploit", "json_extract(fields, '$.name')", "json_extract(fields, '$.cve')", n)
}

/// Download URLs attackers offered (detail = tool).
pub fn downloads(conn: &Connection, q: &Query, n: usize) -> Result<Vec<ItemRow>, AnalyticsError> {
    items(conn, q, "download_offered", "url", "json_extract(fields, '$.tool')", n)
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
    Ok(Report {
        totals: totals(conn, q)?,
        protocols: protocols(conn, q)?,
        ports: ports(conn, q, n)?,
        top_sources: top_sources(conn, q, min_attempts, n)?,
        countries: countries(conn, q, n)?,
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
            "\nTop source IPs ({} with >= {} attempts):\n  {:<40} {:>9} {:>7} {:<8} {}",
            s.matching, s.min_attempts, "ip", "attempts", "logins", "country", "AS"
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
