//! Streaming exports: one row per attack (the default) or one row per event, as JSON lines or
//! CSV.
//!
//! # One row per attack (`jsonl`, `csv`)
//! An attack is one connection, as the reports count it (see [`crate::analytics`]): the row has
//! the names MHN's session export used (`timestamp`, `source_ip`, `source_port`,
//! `destination_port`, `protocol`, `sensor`) plus enrichment and everything the session did,
//! folded in: its login attempts (count, last user name and password, the pairs), commands,
//! HTTP requests, payloads, samples, download URLs, exploits and fingerprints. So the field
//! report's `df.source_ip.value_counts()` counts attacks per address. `count` is the number of
//! connections a row stands for: 1 for a session, the rolled-up connections of a `rollup` row
//! (connections the sensor shed and only counted), and for an `evicted` row the attempts an
//! eviction gap says the sensor evicted from that address (`evicted: true`; their details are
//! gone). `df.groupby("source_ip")["count"].sum()` is therefore exact in every case;
//! counting rows is exact when nothing was shed or evicted. A `partial` row is a session whose
//! connection record is not in the range (it started before `--since`, or it was evicted): its
//! `count` is 0, since the connection is counted where it is (or in the gap). Sensor-internal
//! records (health, gaps, recovery, protocol `sensor`) are never rows.
//!
//! Folding is streamed: rows come from the storage in time order ([`Storage::export_events`],
//! the same cursor on both backends, through the time index), and a session's events all lie
//! between its start (the time of its `connection` record, which the sensor writes last but
//! stamps with the start) and its end (start plus `duration_ms`). So an attack is written as
//! soon as the stream passes its end, and only sessions open at the current point of the
//! stream are held in memory, keyed by (sensor, session id), each with capped lists; past
//! [`MAX_OPEN`] open sessions the one ending first is written early. Rows therefore come out in
//! the order attacks end.
//!
//! # One row per event (`events-jsonl`, `events-csv`)
//! Every stored event with the common fields and every detail field flattened to the top level
//! (a detail field whose name clashes with a common one is prefixed `detail_`).
//!
//! # Labels
//! Both shapes end with a `label` column: the source address's label (`self`, `research` or the
//! admin's own name, `crate::labels`; JSON `null`, CSV empty when none), resolved once per
//! address. Exports keep every row: filter on `label` (the report leaves labelled traffic out).
//!
//! # Types
//! JSON values are typed: numbers are JSON numbers and flags JSON booleans (`success`,
//! `truncated`, `evicted`), so `df[df.success]` works in pandas; attacker-chosen text stays text
//! even when it looks like a number. CSV cells are text.
//!
//! WHY streamed: an export of months of data must not need memory in proportion to it (the
//! field report's export "was too big to handle"). Time bounds are exact (milliseconds), unlike
//! the hour-aligned analytics.

use crate::analytics::{evicted_sources, now_ms, AnalyticsError, Query};
use crate::labels::Labeler;
use crate::storage::{EventRange, ExportRow, Storage, StorageError};
use serde_json::{Map, Value};
use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::ops::ControlFlow;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per attack (connection), the default.
    Jsonl,
    /// One CSV line per attack.
    Csv,
    /// One JSON object per stored event.
    EventsJsonl,
    /// One CSV line per stored event.
    EventsCsv,
    /// One JSON object per stored event in Elastic Common Schema field names (`crate::ecs`).
    Ecs,
}

impl Format {
    fn per_event(self) -> bool {
        matches!(self, Format::EventsJsonl | Format::EventsCsv | Format::Ecs)
    }
    fn json(self) -> bool {
        matches!(self, Format::Jsonl | Format::EventsJsonl)
    }
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "jsonl" | "json" => Ok(Format::Jsonl),
            "csv" => Ok(Format::Csv),
            "events-jsonl" | "events-json" => Ok(Format::EventsJsonl),
            "events-csv" => Ok(Format::EventsCsv),
            "ecs" => Ok(Format::Ecs),
            _ => Err(format!(
                "unknown export format {s:?}: use jsonl or csv (one row per attack), events-jsonl or events-csv (one row per event), or ecs (one Elastic Common Schema document per event)"
            )),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Analytics(#[from] AnalyticsError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("write error: {0}")]
    Io(#[from] std::io::Error),
}

/// CSV columns of the per-event export, in order.
pub const CSV_COLUMNS: [&str; 24] = [
    "timestamp",
    "source_ip",
    "source_port",
    "destination_port",
    "protocol",
    "transport",
    "sensor",
    "country",
    "asn",
    "as_org",
    "kind",
    "session_id",
    "duration_ms",
    "bytes_in",
    "bytes_out",
    "count",
    "username",
    "password",
    "payload_sha256",
    "url",
    "fields",
    "label",
    "derived",
    "recovered_password",
];

/// Reading the JSON columns of an [`ExportRow`], the same for every export format, the ECS
/// documents (`crate::ecs`) and the drill-down.
impl ExportRow<'_> {
    /// The detail's fields (the `fields` column) as a JSON object; empty when unreadable.
    pub fn detail(&self) -> Map<String, Value> {
        match serde_json::from_str::<Value>(self.fields) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        }
    }

    /// What the exploit rules derived (the `derived` column) as a JSON object, if anything.
    pub fn derived_object(&self) -> Option<Map<String, Value>> {
        match self.derived.map(serde_json::from_str::<Value>) {
            Some(Ok(Value::Object(d))) => Some(d),
            _ => None,
        }
    }
}

/// A time as RFC 3339 UTC with milliseconds (every export's `timestamp`, ECS `@timestamp`).
pub(crate) fn rfc3339(ms: i64) -> String {
    let nanos = (ms as i128) * 1_000_000;
    match time::OffsetDateTime::from_unix_timestamp_nanos(nanos) {
        Ok(t) => {
            let fmt = time::macros::format_description!(
                "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
            );
            t.format(&fmt).unwrap_or_else(|_| ms.to_string())
        }
        Err(_) => ms.to_string(),
    }
}

/// A CSV cell: control and format characters written as visible escapes (`cat` of the file
/// must not run an attacker's `ESC` sequence), quoted when needed; text that a spreadsheet would
/// run as a formula gets a leading `'` (attackers choose these strings).
pub(crate) fn csv_cell(s: &str, text: bool) -> String {
    let mut v = crate::shown::escaped(s);
    if text && v.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        v.insert(0, '\'');
    }
    if v.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", v.replace('"', "\"\""))
    } else {
        v
    }
}

/// One JSONL row, with C1 controls and format characters escaped (serde_json escapes C0).
fn write_json_line(out: &mut dyn Write, v: &Value) -> std::io::Result<()> {
    let line = serde_json::to_string(v).map_err(std::io::Error::from)?;
    out.write_all(crate::shown::json_line(&line).as_bytes())?;
    out.write_all(b"\n")
}

/// Writes the attacks or events of `q` (exact bounds; `None` = unbounded) to `out`; returns
/// rows written. The caller should [`crate::analytics::refresh()`] first so `country` is
/// filled in.
pub fn export(db: &dyn Storage, q: &Query, format: Format, out: &mut dyn Write) -> Result<u64, ExportError> {
    let sensor_id = match &q.sensor {
        None => None,
        Some(name) => Some(db.sensor_id(name)?.ok_or_else(|| AnalyticsError::UnknownSensor(name.clone()))?),
    };
    let range = EventRange {
        since_ms: q.since_ms.unwrap_or(i64::MIN),
        until_ms: q.until_ms.unwrap_or_else(|| now_ms() + 1),
        sensor_id,
    };
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    if format == Format::EventsCsv {
        writeln!(out, "{}", CSV_COLUMNS.join(","))?;
    }
    if format == Format::Csv {
        writeln!(out, "{}", ATTACK_COLUMNS.join(","))?;
    }
    let mut n = 0u64;
    let mut failed = None;
    let mut labels = LabelCache::new(Labeler::new(&db.labels()?, true));
    if format.per_event() {
        db.export_events(&range, &mut |r| match write_row(&mut out, format, r, labels.get(r.src_ip, r.asn)) {
            Ok(()) => {
                n += 1;
                ControlFlow::Continue(())
            }
            Err(e) => {
                failed = Some(e);
                ControlFlow::Break(())
            }
        })?;
    } else {
        let mut folder = Folder { labels, ..Default::default() };
        let json = format.json();
        db.export_events(&range, &mut |r| {
            folder.add(r);
            match folder.write_ready(&mut out, json, r.time_ms) {
                Ok(k) => {
                    n += k;
                    ControlFlow::Continue(())
                }
                Err(e) => {
                    failed = Some(e);
                    ControlFlow::Break(())
                }
            }
        })?;
        if failed.is_none() {
            match folder.write_ready(&mut out, json, i64::MAX) {
                Ok(k) => n += k,
                Err(e) => failed = Some(e),
            }
        }
    }
    if let Some(e) = failed {
        return Err(e.into());
    }
    out.flush()?;
    Ok(n)
}

/// Most addresses whose label an export remembers (a cache: it is cleared when full).
const LABEL_CACHE: usize = 100_000;

/// The label of each row's source address (`crate::labels`), resolved once per address.
#[derive(Default)]
struct LabelCache {
    labeler: Labeler,
    cache: HashMap<String, Option<String>>,
}

impl LabelCache {
    fn new(labeler: Labeler) -> LabelCache {
        LabelCache { labeler, cache: HashMap::new() }
    }

    fn get(&mut self, ip: &str, asn: Option<i64>) -> Option<String> {
        if let Some(l) = self.cache.get(ip) {
            return l.clone();
        }
        let l = self.labeler.label_str(ip, || asn.and_then(|a| u32::try_from(a).ok())).map(|l| l.to_string());
        if self.cache.len() >= LABEL_CACHE {
            self.cache.clear();
        }
        self.cache.insert(ip.to_string(), l.clone());
        l
    }
}

/// A detail field as a typed JSON value: the numeric and boolean fields the sensor writes are
/// numbers and booleans; everything else (attacker-chosen text included) stays a string.
fn typed(kind: &str, key: &str, v: &str) -> Value {
    let boolean =
        matches!((kind, key), ("login", "success") | ("payload", "truncated") | ("scan_window", "distinct_exact"));
    let number = matches!(
        (kind, key),
        ("payload" | "sample", "size")
            | ("http_request", "body_len")
            | ("rollup", "minute_ms" | "connections")
            | ("eviction_gap", "count" | "first_seq" | "last_seq" | "first_time_ms" | "last_time_ms" | "sources")
            | ("health", "rss_bytes" | "store_bytes" | "backlog_events" | "evicted_total" | "shed_total")
            | ("store_recovered", "last_seq_before")
            | ("scan_window", "window_start_ms" | "window_ms" | "packets" | "distinct_ports" | "kernel_drops")
    );
    if boolean {
        match v {
            "true" => return Value::Bool(true),
            "false" => return Value::Bool(false),
            _ => {}
        }
    }
    if number {
        if let Ok(i) = v.parse::<i64>() {
            return Value::from(i);
        }
        if let Ok(u) = v.parse::<u64>() {
            return Value::from(u);
        }
    }
    Value::String(v.to_string())
}

/// Most sessions held open while folding (beyond it, the one ending first is written early).
pub const MAX_OPEN: usize = 50_000;
/// Most entries in each list of an attack row (credentials, commands, ...); more are counted.
const MAX_LIST: usize = 20;
/// Most bytes of listed text per attack row.
const MAX_ROW_TEXT: usize = 16 * 1024;
/// A closed session is written once the stream is this far past its end (events are stamped by
/// the wall clock, its duration by a monotonic one).
const END_SLACK_MS: i64 = 10_000;
/// A session whose connection record is not (yet) seen is written after this long without
/// events.
const ORPHAN_MS: i64 = 10 * 60_000;

/// CSV columns of the per-attack export, in order (list cells are JSON arrays).
pub const ATTACK_COLUMNS: [&str; 37] = [
    "timestamp",
    "end_timestamp",
    "source_ip",
    "source_port",
    "destination_port",
    "protocol",
    "transport",
    "sensor",
    "session_id",
    "country",
    "asn",
    "as_org",
    "kind",
    "count",
    "evicted",
    "duration_ms",
    "closed_by",
    "bytes_in",
    "bytes_out",
    "events",
    "login_attempts",
    "success",
    "username",
    "password",
    "credentials",
    "command_count",
    "commands",
    "http_requests",
    "http",
    "user_agent",
    "payloads",
    "samples",
    "downloads",
    "exploits",
    "fingerprints",
    // Passwords recovered from its challenge-responses (`crate::recover`); before `label`,
    // which stays the last column (see the module docs).
    "recovered_passwords",
    "label",
];

/// One attack being folded.
#[derive(Debug, Default)]
struct Attack {
    sensor: String,
    session_id: i64,
    kind: &'static str,
    start_ms: i64,
    end_ms: i64,
    deadline: i64,
    connection: bool,
    src_ip: String,
    src_port: i64,
    dst_port: i64,
    protocol: String,
    transport: String,
    country: String,
    asn: Option<i64>,
    as_org: String,
    count: i64,
    duration_ms: i64,
    closed_by: String,
    bytes_in: i64,
    bytes_out: i64,
    events: i64,
    logins: i64,
    success: bool,
    username: Option<String>,
    password: Option<String>,
    credentials: Vec<(String, String)>,
    commands_n: i64,
    commands: Vec<String>,
    http_n: i64,
    http: Vec<String>,
    user_agent: String,
    payloads: Vec<String>,
    samples: Vec<String>,
    downloads: Vec<String>,
    exploits: Vec<String>,
    fingerprints: Vec<String>,
    /// Passwords recovered from its challenge-responses (`crate::recover`).
    recovered: Vec<String>,
    text: usize,
}

impl Attack {
    fn new(r: &ExportRow<'_>, kind: &'static str) -> Attack {
        Attack {
            sensor: r.sensor.to_string(),
            session_id: r.session_id,
            kind,
            start_ms: r.time_ms,
            end_ms: r.time_ms,
            deadline: r.time_ms.saturating_add(ORPHAN_MS),
            src_ip: r.src_ip.to_string(),
            src_port: r.src_port,
            dst_port: r.dst_port,
            protocol: r.protocol.to_string(),
            transport: r.transport.to_string(),
            country: r.country.to_string(),
            asn: r.asn,
            as_org: r.as_org.to_string(),
            ..Attack::default()
        }
    }

    /// Adds `v` to a capped list (with the row's text budget).
    fn push(list: &mut Vec<String>, text: &mut usize, v: &str) {
        if list.len() < MAX_LIST && *text + v.len() <= MAX_ROW_TEXT && !list.iter().any(|x| x == v) {
            *text += v.len();
            list.push(v.to_string());
        }
    }

    fn add(&mut self, r: &ExportRow<'_>, f: &Map<String, Value>) {
        let s = |k: &str| f.get(k).and_then(Value::as_str).unwrap_or("");
        self.events += 1;
        self.start_ms = self.start_ms.min(r.time_ms);
        self.end_ms = self.end_ms.max(r.time_ms);
        match r.kind {
            "connection" => {
                self.connection = true;
                self.kind = "connection";
                self.count = 1;
                self.start_ms = r.time_ms;
                self.duration_ms = r.duration_ms;
                self.end_ms = self.end_ms.max(r.time_ms.saturating_add(r.duration_ms));
                self.bytes_in = r.bytes_in;
                self.bytes_out = r.bytes_out;
                self.closed_by = s("closed_by").to_string();
                self.src_port = r.src_port;
            }
            "login" => {
                self.logins += 1;
                self.success |= s("success") == "true";
                self.username = r.username.map(str::to_string);
                self.password = r.password.map(str::to_string);
                let (u, p) = (r.username.unwrap_or(""), r.password.unwrap_or(""));
                if self.credentials.len() < MAX_LIST && self.text + u.len() + p.len() <= MAX_ROW_TEXT {
                    self.text += u.len() + p.len();
                    self.credentials.push((u.to_string(), p.to_string()));
                }
                if let Some(p) = r.recovered {
                    if self.recovered.len() < MAX_LIST && !self.recovered.iter().any(|x| x == p) {
                        self.recovered.push(p.to_string());
                    }
                }
            }
            "command" => {
                self.commands_n += 1;
                Attack::push(&mut self.commands, &mut self.text, s("line"));
            }
            "http_request" => {
                self.http_n += 1;
                let line = format!(
                    "{} {}{}{}",
                    s("method"),
                    s("path"),
                    if s("query").is_empty() { "" } else { "?" },
                    s("query")
                );
                Attack::push(&mut self.http, &mut self.text, &line);
                if self.user_agent.is_empty() && self.text + s("user_agent").len() <= MAX_ROW_TEXT {
                    self.user_agent = s("user_agent").to_string();
                    self.text += self.user_agent.len();
                }
            }
            "payload" => Attack::push(&mut self.payloads, &mut self.text, r.payload_sha256.unwrap_or("")),
            "sample" => Attack::push(&mut self.samples, &mut self.text, s("sha256")),
            "download_offered" => Attack::push(&mut self.downloads, &mut self.text, r.url.unwrap_or("")),
            "exploit" => {
                let v =
                    if s("cve").is_empty() { s("name").to_string() } else { format!("{} ({})", s("name"), s("cve")) };
                Attack::push(&mut self.exploits, &mut self.text, &v);
            }
            "fingerprint" => {
                Attack::push(&mut self.fingerprints, &mut self.text, &format!("{}={}", s("kind"), s("value")))
            }
            _ => {}
        }
        // Exploits and downloads the admin's rules recognised in a request or command line.
        if let Some(d) = r.derived {
            let d = crate::exploits::Derived::from_column(Some(d));
            for e in &d.exploits {
                let v = if e.cve.is_empty() { e.name.clone() } else { format!("{} ({})", e.name, e.cve) };
                Attack::push(&mut self.exploits, &mut self.text, &v);
            }
            for u in &d.downloads {
                Attack::push(&mut self.downloads, &mut self.text, &u.url);
            }
        }
        self.deadline = if self.connection {
            self.end_ms.saturating_add(END_SLACK_MS)
        } else {
            self.end_ms.saturating_add(ORPHAN_MS)
        };
    }

    fn write(&self, out: &mut impl Write, json: bool, label: Option<String>) -> std::io::Result<()> {
        let list = |v: &[String]| Value::Array(v.iter().map(|x| Value::from(x.as_str())).collect());
        let creds = Value::Array(
            self.credentials.iter().map(|(u, p)| Value::Array(vec![u.as_str().into(), p.as_str().into()])).collect(),
        );
        let opt = |v: &Option<String>| v.as_deref().map(Value::from).unwrap_or(Value::Null);
        let mut m = Map::new();
        m.insert("timestamp".into(), rfc3339(self.start_ms).into());
        m.insert("end_timestamp".into(), rfc3339(self.end_ms).into());
        m.insert("time_ms".into(), self.start_ms.into());
        m.insert("end_time_ms".into(), self.end_ms.into());
        m.insert("source_ip".into(), self.src_ip.as_str().into());
        m.insert("source_port".into(), self.src_port.into());
        m.insert("destination_port".into(), self.dst_port.into());
        m.insert("protocol".into(), self.protocol.as_str().into());
        m.insert("transport".into(), self.transport.as_str().into());
        m.insert("sensor".into(), self.sensor.as_str().into());
        m.insert("session_id".into(), self.session_id.into());
        m.insert("country".into(), self.country.as_str().into());
        m.insert("asn".into(), self.asn.map(Value::from).unwrap_or(Value::Null));
        m.insert("as_org".into(), self.as_org.as_str().into());
        m.insert("kind".into(), self.kind.into());
        m.insert("count".into(), self.count.into());
        m.insert("evicted".into(), (self.kind == "evicted").into());
        m.insert("duration_ms".into(), self.duration_ms.into());
        m.insert("closed_by".into(), self.closed_by.as_str().into());
        m.insert("bytes_in".into(), self.bytes_in.into());
        m.insert("bytes_out".into(), self.bytes_out.into());
        m.insert("events".into(), self.events.into());
        m.insert("login_attempts".into(), self.logins.into());
        m.insert("success".into(), self.success.into());
        m.insert("username".into(), opt(&self.username));
        m.insert("password".into(), opt(&self.password));
        m.insert("credentials".into(), creds);
        m.insert("command_count".into(), self.commands_n.into());
        m.insert("commands".into(), list(&self.commands));
        m.insert("http_requests".into(), self.http_n.into());
        m.insert("http".into(), list(&self.http));
        m.insert("user_agent".into(), self.user_agent.as_str().into());
        m.insert("payloads".into(), list(&self.payloads));
        m.insert("samples".into(), list(&self.samples));
        m.insert("downloads".into(), list(&self.downloads));
        m.insert("exploits".into(), list(&self.exploits));
        m.insert("fingerprints".into(), list(&self.fingerprints));
        m.insert("label".into(), label.map(Value::from).unwrap_or(Value::Null));
        m.insert("recovered_passwords".into(), list(&self.recovered));
        if json {
            return write_json_line(out, &Value::Object(m));
        }
        // CSV: text cells in the column order (lists as JSON arrays; text defused).
        let cells: Vec<String> = ATTACK_COLUMNS
            .iter()
            .map(|c| match m.get(*c) {
                Some(Value::String(v)) => {
                    let attacker_text =
                        matches!(*c, "sensor" | "as_org" | "username" | "password" | "user_agent" | "closed_by");
                    csv_cell(v, attacker_text)
                }
                Some(Value::Null) | None => String::new(),
                Some(v @ (Value::Array(_) | Value::Object(_))) => csv_cell(&v.to_string(), true),
                Some(v) => v.to_string(),
            })
            .collect();
        writeln!(out, "{}", cells.join(","))
    }
}

/// Folds events into attacks, holding only the sessions open at the stream's current time.
#[derive(Default)]
struct Folder {
    open: HashMap<(String, i64), Attack>,
    /// (deadline, sensor, session) of every open session.
    by_deadline: BTreeSet<(i64, String, i64)>,
    /// Rows ready to be written (rollups, evicted, sessions written early).
    ready: Vec<Attack>,
    labels: LabelCache,
}

impl Folder {
    fn add(&mut self, r: &ExportRow<'_>) {
        if r.protocol == "sensor" || r.transport == "internal" {
            // Sensor-internal: never an attack. An eviction gap adds what it evicted per source.
            if r.kind == "eviction_gap" {
                let first_ms = serde_json::from_str::<Value>(r.fields)
                    .ok()
                    .and_then(|f| f.get("first_time_ms").and_then(Value::as_str).and_then(|v| v.parse().ok()))
                    .unwrap_or(r.time_ms);
                for s in evicted_sources(r.fields).into_iter().filter(|s| s.attempts > 0) {
                    let mut a = Attack::new(r, "evicted");
                    a.src_ip = s.ip.to_string();
                    a.src_port = 0;
                    a.dst_port = 0;
                    a.protocol = String::new();
                    a.transport = String::new();
                    a.session_id = 0;
                    // Not enriched per address here (the gap row is the sensor's own).
                    a.country = String::new();
                    a.asn = None;
                    a.as_org = String::new();
                    a.start_ms = first_ms;
                    a.end_ms = first_ms;
                    a.count = s.attempts.min(i64::MAX as u64) as i64;
                    a.events = s.events.min(i64::MAX as u64) as i64;
                    self.ready.push(a);
                }
            }
            return;
        }
        if r.kind == "rollup" {
            let mut a = Attack::new(r, "rollup");
            a.count = r.count;
            self.ready.push(a);
            return;
        }
        if r.session_id == 0 {
            // Not part of a connection (scan detection): not an attack (see the module docs).
            return;
        }
        let fields = r.detail();
        let key = (r.sensor.to_string(), r.session_id);
        let a = self.open.entry(key.clone()).or_insert_with(|| Attack::new(r, "partial"));
        let old = a.deadline;
        let fresh = a.events == 0;
        a.add(r, &fields);
        if fresh || old != a.deadline {
            if !fresh {
                self.by_deadline.remove(&(old, key.0.clone(), key.1));
            }
            self.by_deadline.insert((a.deadline, key.0, key.1));
        }
        while self.open.len() > MAX_OPEN {
            self.pop_first();
        }
    }

    fn pop_first(&mut self) {
        if let Some((_, sensor, id)) = self.by_deadline.pop_first() {
            if let Some(a) = self.open.remove(&(sensor, id)) {
                self.ready.push(a);
            }
        }
    }

    /// Writes the ready rows and every session whose deadline is before `now`; returns rows.
    fn write_ready(&mut self, out: &mut impl Write, json: bool, now: i64) -> std::io::Result<u64> {
        while self.by_deadline.first().is_some_and(|d| d.0 < now || now == i64::MAX) {
            self.pop_first();
        }
        let n = self.ready.len() as u64;
        for a in self.ready.drain(..) {
            let label = self.labels.get(&a.src_ip, a.asn);
            a.write(out, json, label)?;
        }
        Ok(n)
    }
}

fn write_row(out: &mut impl Write, format: Format, r: &ExportRow<'_>, label: Option<String>) -> std::io::Result<()> {
    match format {
        Format::Ecs => write_json_line(out, &crate::ecs::document(r, label.as_deref())),
        Format::Jsonl | Format::EventsJsonl => {
            let mut m = Map::new();
            m.insert("timestamp".into(), rfc3339(r.time_ms).into());
            m.insert("time_ms".into(), r.time_ms.into());
            m.insert("source_ip".into(), r.src_ip.into());
            m.insert("source_port".into(), r.src_port.into());
            m.insert("destination_port".into(), r.dst_port.into());
            m.insert("protocol".into(), r.protocol.into());
            m.insert("transport".into(), r.transport.into());
            m.insert("sensor".into(), r.sensor.into());
            m.insert("seq".into(), r.seq.into());
            m.insert("country".into(), r.country.into());
            m.insert("asn".into(), r.asn.map(Value::from).unwrap_or(Value::Null));
            m.insert("as_org".into(), r.as_org.into());
            m.insert("kind".into(), r.kind.into());
            m.insert("session_id".into(), r.session_id.into());
            m.insert("duration_ms".into(), r.duration_ms.into());
            m.insert("bytes_in".into(), r.bytes_in.into());
            m.insert("bytes_out".into(), r.bytes_out.into());
            m.insert("count".into(), r.count.into());
            m.insert("label".into(), label.clone().map(Value::from).unwrap_or(Value::Null));
            for (k, v) in r.detail() {
                let v = match &v {
                    Value::String(s) => typed(r.kind, &k, s),
                    _ => v,
                };
                let k = if m.contains_key(&k) { format!("detail_{k}") } else { k };
                m.insert(k, v);
            }
            // What the admin's exploit rules derived: `exploits` [{name, cve}], `downloads`
            // [{url, tool}] (the keys no detail has).
            if let Some(d) = r.derived_object() {
                for (k, v) in d {
                    let k = if m.contains_key(&k) { format!("derived_{k}") } else { k };
                    m.insert(k, v);
                }
            }
            // The password recovered from a challenge-response (`crate::recover`), marked as such.
            if let Some(p) = r.recovered {
                m.insert("recovered_password".into(), p.into());
            }
            write_json_line(out, &Value::Object(m))
        }
        Format::Csv | Format::EventsCsv => {
            let cells = [
                csv_cell(&rfc3339(r.time_ms), false),
                csv_cell(r.src_ip, false),
                r.src_port.to_string(),
                r.dst_port.to_string(),
                csv_cell(r.protocol, false),
                csv_cell(r.transport, false),
                csv_cell(r.sensor, true),
                csv_cell(r.country, false),
                r.asn.map(|a| a.to_string()).unwrap_or_default(),
                csv_cell(r.as_org, true),
                csv_cell(r.kind, false),
                r.session_id.to_string(),
                r.duration_ms.to_string(),
                r.bytes_in.to_string(),
                r.bytes_out.to_string(),
                r.count.to_string(),
                csv_cell(r.username.unwrap_or(""), true),
                csv_cell(r.password.unwrap_or(""), true),
                csv_cell(r.payload_sha256.unwrap_or(""), false),
                csv_cell(r.url.unwrap_or(""), true),
                csv_cell(r.fields, true),
                csv_cell(label.as_deref().unwrap_or(""), true),
                csv_cell(r.derived.unwrap_or(""), true),
                csv_cell(r.recovered.unwrap_or(""), true),
            ];
            writeln!(out, "{}", cells.join(","))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row<'a>(t: i64, sensor: &'a str, session: i64, kind: &'a str, duration: i64, fields: &'a str) -> ExportRow<'a> {
        ExportRow {
            time_ms: t,
            src_ip: "203.0.113.1",
            src_port: 4000,
            dst_port: 22,
            protocol: "ssh",
            transport: "tcp",
            sensor,
            country: "",
            asn: None,
            as_org: "",
            kind,
            session_id: session,
            duration_ms: duration,
            bytes_in: 0,
            bytes_out: 0,
            count: 1,
            username: Some("root"),
            password: Some("x"),
            payload_sha256: None,
            url: None,
            fields,
            seq: 0,
            derived: None,
            recovered: None,
        }
    }

    fn lines(out: &[u8]) -> Vec<Value> {
        String::from_utf8_lossy(out).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    /// Folding holds only the sessions open at the stream's time, writes each as soon as the
    /// stream passes its end, and never more than MAX_OPEN at once.
    #[test]
    fn folding_is_bounded_and_writes_sessions_once_they_end() {
        let mut f = Folder::default();
        let mut out = Vec::new();
        let mut n = 0;
        // A session ending at 1,000 with a login inside, then a row far later: it is written.
        for r in [row(0, "a", 1, "connection", 1000, "{}"), row(500, "a", 1, "login", 0, r#"{"success":"true"}"#)] {
            f.add(&r);
            n += f.write_ready(&mut out, true, r.time_ms).unwrap();
        }
        assert_eq!(n, 0, "still open");
        f.add(&row(1000 + END_SLACK_MS + 1, "b", 9, "connection", 0, "{}"));
        n += f.write_ready(&mut out, true, 1000 + END_SLACK_MS + 1).unwrap();
        assert_eq!(n, 1);
        let first = &lines(&out)[0];
        assert_eq!((first["login_attempts"].clone(), first["success"].clone()), (json!(1), json!(true)));
        assert_eq!(
            (first["kind"].clone(), first["count"].clone(), first["duration_ms"].clone()),
            (json!("connection"), json!(1), json!(1000))
        );
        // A login whose connection record is not in the stream: a partial row, counted 0.
        f.add(&row(2 * ORPHAN_MS, "c", 3, "login", 0, "{}"));
        n += f.write_ready(&mut out, true, i64::MAX).unwrap();
        assert_eq!(n, 3);
        let rows = lines(&out);
        let partial = rows.iter().find(|r| r["sensor"] == "c").unwrap();
        assert_eq!((partial["kind"].clone(), partial["count"].clone()), (json!("partial"), json!(0)));
        // Many sessions open at once: never more than MAX_OPEN held, every one written once.
        let mut f = Folder::default();
        let mut out = Vec::new();
        let total = MAX_OPEN as i64 + 1000;
        let mut written = 0;
        for i in 0..total {
            f.add(&row(i, "a", i + 1, "connection", 10 * ORPHAN_MS, "{}"));
            assert!(f.open.len() <= MAX_OPEN && f.by_deadline.len() == f.open.len());
            written += f.write_ready(&mut out, false, i).unwrap();
        }
        assert_eq!(written, 1000, "the ones ending first were written early");
        written += f.write_ready(&mut out, false, i64::MAX).unwrap();
        assert_eq!(written as i64, total);
        assert!(f.open.is_empty() && f.by_deadline.is_empty());
    }

    #[test]
    fn only_the_sensors_own_numeric_and_flag_fields_are_typed() {
        assert_eq!(typed("login", "success", "true"), json!(true));
        assert_eq!(typed("payload", "size", "1234"), json!(1234));
        assert_eq!(typed("login", "username", "1234"), json!("1234"), "attacker text stays text");
        assert_eq!(typed("command", "line", "false"), json!("false"));
        assert_eq!(typed("payload", "size", "12x"), json!("12x"));
    }

    #[test]
    fn csv_cells_are_quoted_and_defused() {
        assert_eq!(csv_cell("a,b", true), "\"a,b\"");
        assert_eq!(csv_cell("say \"hi\"", true), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_cell("=cmd()", true), "'=cmd()");
        assert_eq!(csv_cell("plain", true), "plain");
        // An attacker's terminal escape and a right-to-left override arrive visible, not raw.
        assert_eq!(csv_cell("x\x1b[2J\u{9b}y", true), "x\\u{1b}[2J\\u{9b}y");
        assert_eq!(csv_cell("=1\u{202e}", true), "'=1\\u{202e}");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
    }
}
