//! The analyst's drill-down (issue 21): one attacker, one session, and search.
//!
//! WHY raw events here, unlike the rest of the analytics: the aggregates count, they cannot say
//! which passwords one address tried or what one intruder typed. These functions read raw
//! events through the indexes of schema version 6 (SQLite) / 5 (PostgreSQL): `events_source`
//! (address, time) and `events_session` (sensor, connection, seq), so each is a bounded index
//! range scan: at most `[drill] attacker_events` newest events of an address, at most
//! `session_events` of a connection, at most `search_scan` newest rows per kind a search reads
//! ([`DrillConfig`]). What is cut is said (`truncated`, `lists_cut`), never silently dropped.
//!
//! Everything here is attacker text: the dashboard escapes it, the CLI prints it through
//! [`super::printable`].

use super::drill_config::DrillConfig;
use super::range::{now_ms, Query};
use super::AnalyticsError;
use crate::labels::Labeler;
use crate::storage::{DrillFilter, EventRange, ExportRow, Storage};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::ops::ControlFlow;

/// The raw range of a query (exact milliseconds; everything when unset).
fn event_range(db: &dyn Storage, q: &Query) -> Result<EventRange, AnalyticsError> {
    let sensor_id = match &q.sensor {
        None => None,
        Some(name) => Some(db.sensor_id(name)?.ok_or_else(|| AnalyticsError::UnknownSensor(name.clone()))?),
    };
    Ok(EventRange {
        since_ms: q.since_ms.unwrap_or(0).max(0),
        until_ms: q.until_ms.unwrap_or_else(|| now_ms() + 1),
        sensor_id,
    })
}

/// The flat fields of a stored event (a JSON object of strings); empty if unreadable.
pub fn fields_of(row: &ExportRow<'_>) -> BTreeMap<String, String> {
    row.detail()
        .into_iter()
        .map(|(k, v)| {
            let s = match v {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
            (k, s)
        })
        .collect()
}

/// A value with how often and when.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    pub value: String,
    /// A second column: password (credentials), CVE (exploits), tool (downloads), size
    /// (samples), ports (scans).
    pub detail: String,
    pub count: i64,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
}

#[derive(Default)]
struct Tally(HashMap<(String, String), Seen>);

impl Tally {
    fn add(&mut self, value: &str, detail: &str, t: i64, n: i64) {
        let e = self.0.entry((value.to_string(), detail.to_string())).or_insert_with(|| Seen {
            value: value.to_string(),
            detail: detail.to_string(),
            count: 0,
            first_seen_ms: t,
            last_seen_ms: t,
        });
        e.count += n;
        e.first_seen_ms = e.first_seen_ms.min(t);
        e.last_seen_ms = e.last_seen_ms.max(t);
    }

    /// The `cap` most frequent values; a list cut by the cap is recorded in `cut` as `list`.
    fn top(self, list: &str, cap: usize, cut: &mut Vec<ListCut>) -> Vec<Seen> {
        let mut v: Vec<Seen> = self.0.into_values().collect();
        v.sort_by(|a, b| {
            b.count.cmp(&a.count).then_with(|| a.value.cmp(&b.value)).then_with(|| a.detail.cmp(&b.detail))
        });
        if v.len() > cap {
            cut.push(ListCut { list: list.to_string(), shown: cap, distinct: v.len() });
            v.truncate(cap);
        }
        v
    }
}

/// A list of an attacker page that `[drill] list_rows` cut: its `shown` most frequent values of
/// `distinct`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListCut {
    /// The list (its table id: `credentials`, `commands`, ...).
    pub list: String,
    pub shown: usize,
    pub distinct: usize,
}

/// One connection as a list row.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRow {
    pub sensor: String,
    /// The sensor's connection id (`Event::session_id`).
    pub session_id: i64,
    pub src_ip: String,
    pub protocol: String,
    pub dst_port: i64,
    pub start_ms: i64,
    pub end_ms: i64,
    /// Events of it read.
    pub events: i64,
    pub logins: i64,
    pub commands: i64,
}

/// Everything about one source address.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attacker {
    pub ip: String,
    pub country: String,
    pub asn: Option<u32>,
    pub as_org: String,
    /// `self`, `research` or the admin's own label.
    pub label: Option<String>,
    pub first_seen_ms: Option<i64>,
    pub last_seen_ms: Option<i64>,
    /// Connections (sessions plus rolled-up connections) among the events read.
    pub attempts: i64,
    /// Events read (at most `max_events`, newest first).
    pub events: i64,
    /// True when the address has more events in the range than were read: the lists cover
    /// the newest ones.
    pub truncated: bool,
    /// The cap on events read (`[drill] attacker_events`).
    pub max_events: i64,
    /// The lists cut to their `[drill] list_rows` most frequent values.
    pub lists_cut: Vec<ListCut>,
    /// Events per sensor and per protocol.
    pub sensors: Vec<Seen>,
    pub protocols: Vec<Seen>,
    /// Every credential tried: value = user name, detail = password (or key/hash).
    pub credentials: Vec<Seen>,
    /// Shell lines and protocol commands: value = line.
    pub commands: Vec<Seen>,
    /// Payloads and samples: value = sha256, detail = size.
    pub samples: Vec<Seen>,
    /// Download URLs offered: value = URL, detail = tool.
    pub downloads: Vec<Seen>,
    /// Recognised exploits: value = name, detail = CVE.
    pub exploits: Vec<Seen>,
    /// Scan windows: value = transport, detail = first ports.
    pub scans: Vec<Seen>,
    /// Its connections, newest first, one page.
    pub sessions: Vec<SessionRow>,
    /// Connections among the events read, and which page of them `sessions` is (from 1).
    pub sessions_total: i64,
    pub page: usize,
    pub per_page: usize,
}

fn credential_of(f: &BTreeMap<String, String>, row: &ExportRow<'_>) -> (String, String) {
    let user = row.username.map(str::to_string).or_else(|| f.get("username").cloned()).unwrap_or_default();
    let secret = row
        .password
        .map(str::to_string)
        .or_else(|| f.get("password").cloned())
        .or_else(|| f.get("key_fingerprint").map(|k| format!("key {k}")))
        .or_else(|| {
            f.get("hash").map(|h| format!("{} {h}", f.get("hash_format").map(String::as_str).unwrap_or("hash")))
        })
        .unwrap_or_default();
    (user, secret)
}

/// The attacker page of `ip` (an address as the sensors report it), sessions page `page`
/// (from 1), within the caps of `caps`. `None`: no event of it in the range.
pub fn attacker(
    db: &dyn Storage,
    q: &Query,
    ip: &str,
    page: usize,
    caps: &DrillConfig,
) -> Result<Option<Attacker>, AnalyticsError> {
    let range = event_range(db, q)?;
    let max_events = i64::from(caps.attacker_events);
    let per_page = caps.sessions_per_page as usize;
    // No page past the last can hold a session (a number from a URL is clamped, not trusted).
    let page = page.clamp(1, caps.last_attacker_page());
    let mut a = Attacker { ip: ip.to_string(), page, per_page, max_events, ..Default::default() };
    let (mut sensors, mut protocols, mut creds, mut commands) =
        (Tally::default(), Tally::default(), Tally::default(), Tally::default());
    let (mut samples, mut downloads, mut exploits, mut scans) =
        (Tally::default(), Tally::default(), Tally::default(), Tally::default());
    let mut sessions: HashMap<(String, i64), SessionRow> = HashMap::new();
    let mut read = 0i64;
    db.drill_events(&DrillFilter::Source(ip), &range, max_events + 1, &mut |row| {
        read += 1;
        if read > max_events {
            return ControlFlow::Break(());
        }
        if a.events == 0 {
            a.country = row.country.to_string();
            a.asn = row.asn.and_then(|n| u32::try_from(n).ok());
            a.as_org = row.as_org.to_string();
        }
        a.events += 1;
        let t = row.time_ms;
        a.first_seen_ms = Some(a.first_seen_ms.map_or(t, |x| x.min(t)));
        a.last_seen_ms = Some(a.last_seen_ms.map_or(t, |x| x.max(t)));
        sensors.add(row.sensor, "", t, 1);
        protocols.add(row.protocol, "", t, 1);
        let f = fields_of(row);
        match row.kind {
            "connection" | "rollup" => a.attempts += row.count,
            "login" => {
                let (u, p) = credential_of(&f, row);
                creds.add(&u, &p, t, 1);
            }
            "command" => commands.add(f.get("line").map(String::as_str).unwrap_or(""), "", t, 1),
            "payload" | "sample" => samples.add(
                row.payload_sha256.or(f.get("sha256").map(String::as_str)).unwrap_or(""),
                f.get("size").map(String::as_str).unwrap_or(""),
                t,
                1,
            ),
            "download_offered" => downloads.add(
                row.url.or(f.get("url").map(String::as_str)).unwrap_or(""),
                f.get("tool").map(String::as_str).unwrap_or(""),
                t,
                1,
            ),
            "exploit" => exploits.add(
                f.get("name").map(String::as_str).unwrap_or(""),
                f.get("cve").map(String::as_str).unwrap_or(""),
                t,
                1,
            ),
            "scan_window" => scans.add(row.transport, f.get("ports").map(String::as_str).unwrap_or(""), t, 1),
            _ => {}
        }
        if let Some(d) = row.derived {
            let d = crate::exploits::Derived::from_column(Some(d));
            for e in &d.exploits {
                exploits.add(&e.name, &e.cve, t, 1);
            }
            for u in &d.downloads {
                downloads.add(&u.url, &u.tool, t, 1);
            }
        }
        if row.session_id != 0 {
            let s = sessions.entry((row.sensor.to_string(), row.session_id)).or_insert_with(|| SessionRow {
                sensor: row.sensor.to_string(),
                session_id: row.session_id,
                src_ip: row.src_ip.to_string(),
                protocol: row.protocol.to_string(),
                dst_port: row.dst_port,
                start_ms: t,
                end_ms: t,
                ..Default::default()
            });
            s.events += 1;
            s.start_ms = s.start_ms.min(t);
            s.end_ms = s.end_ms.max(t);
            match row.kind {
                "login" => s.logins += 1,
                "command" => s.commands += 1,
                _ => {}
            }
        }
        ControlFlow::Continue(())
    })?;
    if a.events == 0 {
        return Ok(None);
    }
    a.truncated = read > max_events;
    let labeler = Labeler::new(&db.labels()?, true);
    let asn = a.asn;
    a.label = labeler.label_str(ip, || asn).map(|l| l.to_string());
    let (cap, cut) = (caps.list_rows as usize, &mut a.lists_cut);
    a.sensors = sensors.top("sensors", cap, cut);
    a.protocols = protocols.top("protocols", cap, cut);
    a.credentials = creds.top("credentials", cap, cut);
    a.commands = commands.top("commands", cap, cut);
    a.samples = samples.top("samples", cap, cut);
    a.downloads = downloads.top("downloads", cap, cut);
    a.exploits = exploits.top("exploits", cap, cut);
    a.scans = scans.top("scans", cap, cut);
    let mut s: Vec<SessionRow> = sessions.into_values().collect();
    s.sort_by(|x, y| {
        y.start_ms.cmp(&x.start_ms).then_with(|| x.sensor.cmp(&y.sensor)).then(x.session_id.cmp(&y.session_id))
    });
    a.sessions_total = s.len() as i64;
    a.sessions = s.into_iter().skip((a.page - 1).saturating_mul(per_page)).take(per_page).collect();
    Ok(Some(a))
}

/// One event of a session, as shown.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionEvent {
    pub time_ms: i64,
    pub seq: i64,
    pub kind: String,
    /// One line saying what happened (a shell line, `GET /path?query`, `login root / 1234`).
    pub summary: String,
    /// Every field the sensor recorded (HTTP headers, NTLM domain, ...).
    pub fields: BTreeMap<String, String>,
    /// What the exploit rules derived: exploit names and download URLs.
    pub derived: Vec<String>,
}

/// Every event of one connection, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub sensor: String,
    pub session_id: i64,
    pub src_ip: String,
    pub src_port: i64,
    pub country: String,
    pub asn: Option<u32>,
    pub as_org: String,
    pub protocol: String,
    pub dst_port: i64,
    pub start_ms: i64,
    pub end_ms: i64,
    pub bytes_in: i64,
    pub bytes_out: i64,
    /// True when it has more than `max_events` events (the first ones are shown).
    pub truncated: bool,
    /// The cap on events shown (`[drill] session_events`).
    pub max_events: i64,
    pub events: Vec<SessionEvent>,
}

fn summary(kind: &str, f: &BTreeMap<String, String>, row: &ExportRow<'_>) -> String {
    let g = |k: &str| f.get(k).map(String::as_str).unwrap_or("");
    match kind {
        "command" => g("line").to_string(),
        "login" => {
            let (u, p) = credential_of(f, row);
            format!("login {u} / {p}")
        }
        "http_request" => {
            let q = g("query");
            format!("{} {}{}{}", g("method"), g("path"), if q.is_empty() { "" } else { "?" }, q)
        }
        "payload" | "sample" => format!("{} {} bytes {}", g("sha256"), g("size"), g("name")),
        "download_offered" => format!("{} {}", g("tool"), g("url")),
        "exploit" => format!("{} {}", g("name"), g("cve")),
        "connection" => format!("closed ({})", g("closed_by")),
        _ => f.iter().take(6).map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" "),
    }
}

/// Every event of connection `session_id` of sensor `sensor`, in sequence order, at most
/// `[drill] session_events`. `None`: no such sensor or no event of that connection.
pub fn session(
    db: &dyn Storage,
    sensor: &str,
    session_id: i64,
    caps: &DrillConfig,
) -> Result<Option<Session>, AnalyticsError> {
    let Some(sensor_id) = db.sensor_id(sensor)? else { return Ok(None) };
    if session_id == 0 {
        return Ok(None);
    }
    let max_events = i64::from(caps.session_events);
    let mut s = Session { sensor: sensor.to_string(), session_id, max_events, ..Default::default() };
    let range = EventRange { since_ms: 0, until_ms: i64::MAX, sensor_id: Some(sensor_id) };
    let mut read = 0i64;
    db.drill_events(&DrillFilter::Session { sensor_id, session_id }, &range, max_events + 1, &mut |row| {
        read += 1;
        if read > max_events {
            return ControlFlow::Break(());
        }
        if s.events.is_empty() {
            s.src_ip = row.src_ip.to_string();
            s.src_port = row.src_port;
            s.country = row.country.to_string();
            s.asn = row.asn.and_then(|n| u32::try_from(n).ok());
            s.as_org = row.as_org.to_string();
            s.protocol = row.protocol.to_string();
            s.dst_port = row.dst_port;
            s.start_ms = row.time_ms;
        }
        s.start_ms = s.start_ms.min(row.time_ms);
        s.end_ms = s.end_ms.max(row.time_ms);
        s.bytes_in = s.bytes_in.max(row.bytes_in);
        s.bytes_out = s.bytes_out.max(row.bytes_out);
        let f = fields_of(row);
        let mut derived = Vec::new();
        if let Some(d) = row.derived {
            let d = crate::exploits::Derived::from_column(Some(d));
            derived.extend(d.exploits.iter().map(|e| format!("exploit {} {}", e.name, e.cve)));
            derived.extend(d.downloads.iter().map(|u| format!("download {} {}", u.tool, u.url)));
        }
        s.events.push(SessionEvent {
            time_ms: row.time_ms,
            seq: row.seq,
            kind: row.kind.to_string(),
            summary: summary(row.kind, &f, row),
            fields: f,
            derived,
        });
        ControlFlow::Continue(())
    })?;
    s.truncated = read > max_events;
    Ok(if s.events.is_empty() { None } else { Some(s) })
}

/// What a search looked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SearchKind {
    Address,
    User,
    Password,
    Url,
    Sha256,
    Cve,
    Protocol,
    Sensor,
}

impl SearchKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SearchKind::Address => "address",
            SearchKind::User => "user",
            SearchKind::Password => "password",
            SearchKind::Url => "url",
            SearchKind::Sha256 => "sha256",
            SearchKind::Cve => "cve",
            SearchKind::Protocol => "protocol",
            SearchKind::Sensor => "sensor",
        }
    }
}

/// One thing a search found. `session_id` 0: not tied to a connection.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchHit {
    /// What matched: `address`, `login`, `download`, `request`, `exploit`, `sample`, `session`.
    pub what: String,
    pub value: String,
    pub detail: String,
    pub src_ip: String,
    pub sensor: String,
    pub session_id: i64,
    pub time_ms: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchResults {
    pub query: String,
    /// The kinds searched (a query without a `kind:` prefix may be several).
    pub kinds: Vec<SearchKind>,
    pub hits: Vec<SearchHit>,
    /// True when more rows matched or could have matched than were read or returned.
    pub truncated: bool,
    /// The caps: newest rows of one kind read (`[drill] search_scan`), results returned
    /// (`[drill] search_hits`).
    pub max_scan: i64,
    pub max_hits: usize,
}

/// A parsed IPv4/IPv6 network for address search.
fn parse_net(s: &str) -> Option<ipnet::IpNet> {
    if let Ok(ip) = s.parse::<std::net::IpAddr>() {
        return Some(ipnet::IpNet::from(ip));
    }
    s.parse::<ipnet::IpNet>().ok().map(|n| n.trunc())
}

/// The text ranges `[from, to)` of addresses a network may contain (addresses are stored as
/// text): IPv4 by the whole octets of the prefix, IPv6 by its leading whole groups; the exact
/// containment is checked afterwards.
fn text_ranges(net: &ipnet::IpNet) -> Vec<(String, String)> {
    match net {
        ipnet::IpNet::V4(n) if n.prefix_len() == 32 => vec![(n.addr().to_string(), format!("{}\u{0}", n.addr()))],
        ipnet::IpNet::V4(n) => {
            let o = n.network().octets();
            let whole = (n.prefix_len() / 8) as usize;
            let mut p: String = o[..whole].iter().map(|b| format!("{b}.")).collect();
            if whole == 0 {
                p.clear();
            }
            // The octet after the whole ones: each value it may take is its own prefix.
            let bits = n.prefix_len() % 8;
            if whole < 4 && bits > 0 {
                let span = 1u16 << (8 - bits);
                let first = u16::from(o[whole]);
                return (first..first + span).map(|v| (format!("{p}{v}."), format!("{p}{v}/"))).collect();
            }
            if p.is_empty() {
                return vec![("0".into(), ":".into())];
            }
            vec![(p.clone(), format!("{}/", p.trim_end_matches('.')))]
        }
        ipnet::IpNet::V6(n) if n.prefix_len() == 128 => {
            vec![(n.addr().to_string(), format!("{}\u{0}", n.addr()))]
        }
        ipnet::IpNet::V6(n) => {
            let groups = (n.prefix_len() / 16) as usize;
            let seg = n.network().segments();
            let p: String = seg[..groups].iter().map(|g| format!("{g:x}:")).collect();
            if p.is_empty() {
                // Every IPv6 address has a ':'; IPv4 ones sort before them only partly: scan all.
                return vec![(String::new(), "\u{10ffff}".into())];
            }
            vec![(p.clone(), format!("{};", p.trim_end_matches(':')))]
        }
    }
}

/// Detects what `q` is: `kind:value` says it, otherwise its shape does (an address or
/// network, a sha256, a CVE, a URL, a protocol or sensor name, else a user name or password).
pub fn parse_search(db: &dyn Storage, q: &str) -> Result<(Vec<SearchKind>, String), AnalyticsError> {
    let q = q.trim();
    if let Some((k, v)) = q.split_once(':') {
        let kind = match k.to_ascii_lowercase().as_str() {
            "ip" | "address" | "addr" | "net" => Some(SearchKind::Address),
            "user" | "username" => Some(SearchKind::User),
            "pass" | "password" => Some(SearchKind::Password),
            "url" => Some(SearchKind::Url),
            "sha256" | "hash" => Some(SearchKind::Sha256),
            "cve" => Some(SearchKind::Cve),
            "protocol" | "proto" => Some(SearchKind::Protocol),
            "sensor" => Some(SearchKind::Sensor),
            _ => None,
        };
        if let Some(kind) = kind {
            return Ok((vec![kind], v.trim().to_string()));
        }
    }
    let lower = q.to_ascii_lowercase();
    let kinds = if parse_net(q).is_some() {
        vec![SearchKind::Address]
    } else if q.len() == 64 && q.bytes().all(|b| b.is_ascii_hexdigit()) {
        vec![SearchKind::Sha256]
    } else if lower.starts_with("cve-") {
        vec![SearchKind::Cve]
    } else if lower.contains("://") {
        vec![SearchKind::Url]
    } else if db.sensor_id(q)?.is_some() {
        vec![SearchKind::Sensor]
    } else if drosera_uplink::event::Protocol::ALL.iter().any(|p| p.as_str() == lower) {
        vec![SearchKind::Protocol]
    } else {
        vec![SearchKind::User, SearchKind::Password]
    };
    let v = if kinds == [SearchKind::Cve] || kinds == [SearchKind::Sha256] || kinds == [SearchKind::Protocol] {
        lower
    } else {
        q.to_string()
    };
    Ok((kinds, v))
}

/// Searches the range of `q` for `text` (see [`parse_search`]): at most `[drill] search_hits`
/// hits, newest first, each tied to an address and, where the event had one, a connection.
pub fn search(db: &dyn Storage, q: &Query, text: &str, caps: &DrillConfig) -> Result<SearchResults, AnalyticsError> {
    let chars = text.chars().count();
    if chars > caps.search_chars as usize {
        return Err(AnalyticsError::SearchTooLong { chars, max: caps.search_chars });
    }
    let (kinds, v) = parse_search(db, text)?;
    let (max_scan, max_hits) = (i64::from(caps.search_scan), caps.search_hits as usize);
    let mut out = SearchResults {
        query: text.trim().to_string(),
        kinds: kinds.clone(),
        max_scan,
        max_hits,
        ..Default::default()
    };
    if v.is_empty() {
        return Ok(out);
    }
    let mut range = event_range(db, q)?;
    let hit = |what: &str, value: &str, detail: &str, row: &ExportRow<'_>| SearchHit {
        what: what.to_string(),
        value: value.to_string(),
        detail: detail.to_string(),
        src_ip: row.src_ip.to_string(),
        sensor: row.sensor.to_string(),
        session_id: row.session_id,
        time_ms: row.time_ms,
    };
    for kind in kinds {
        let mut hits: Vec<SearchHit> = Vec::new();
        // Reads up to max_scan newest rows of one kind, keeping what `keep` returns.
        let mut scan = |db: &dyn Storage,
                        range: &EventRange,
                        ev_kind: &str,
                        keep: &mut dyn FnMut(&ExportRow<'_>) -> Option<SearchHit>|
         -> Result<bool, AnalyticsError> {
            let mut read = 0i64;
            let mut full = false;
            db.drill_events(&DrillFilter::Kind(ev_kind), range, max_scan, &mut |row| {
                read += 1;
                if let Some(h) = keep(row) {
                    if hits.len() >= max_hits {
                        full = true;
                        return ControlFlow::Break(());
                    }
                    hits.push(h);
                }
                ControlFlow::Continue(())
            })?;
            Ok(full || read >= max_scan)
        };
        let mut cut = false;
        match kind {
            SearchKind::Address => {
                let Some(net) = parse_net(&v) else { continue };
                for (from, to) in text_ranges(&net) {
                    let limit = max_hits as i64 + 1;
                    for rec in db.find_addresses(&from, &to, limit)? {
                        let inside = rec.ip.parse::<std::net::IpAddr>().map(|ip| net.contains(&ip)).unwrap_or(false);
                        if !inside {
                            continue;
                        }
                        if hits.len() >= max_hits {
                            cut = true;
                            break;
                        }
                        let asn = rec.asn.map(|a| format!("AS{a} {}", rec.as_org)).unwrap_or_default();
                        hits.push(SearchHit {
                            what: "address".into(),
                            value: rec.ip.clone(),
                            detail: format!("{} {asn}", rec.country).trim().to_string(),
                            src_ip: rec.ip,
                            ..Default::default()
                        });
                    }
                }
            }
            SearchKind::User | SearchKind::Password => {
                let user = kind == SearchKind::User;
                cut |= scan(db, &range, "login", &mut |row| {
                    let f = fields_of(row);
                    let (u, p) = credential_of(&f, row);
                    let m = if user { u == v } else { p == v };
                    m.then(|| hit("login", &u, &p, row))
                })?;
            }
            SearchKind::Url => {
                for k in ["download_offered", "http_request", "command"] {
                    cut |= scan(db, &range, k, &mut |row| {
                        let f = fields_of(row);
                        let d = row.derived.map(|d| crate::exploits::Derived::from_column(Some(d))).unwrap_or_default();
                        if let Some(u) = d.downloads.iter().find(|u| u.url.contains(v.as_str())) {
                            return Some(hit("download", &u.url, &u.tool, row));
                        }
                        match k {
                            "download_offered" => {
                                let url = row.url.or(f.get("url").map(String::as_str)).unwrap_or("");
                                url.contains(v.as_str())
                                    .then(|| hit("download", url, f.get("tool").map(String::as_str).unwrap_or(""), row))
                            }
                            "http_request" => {
                                let path = f.get("path").map(String::as_str).unwrap_or("");
                                path.contains(v.as_str()).then(|| {
                                    hit("request", path, f.get("method").map(String::as_str).unwrap_or(""), row)
                                })
                            }
                            _ => None,
                        }
                    })?;
                }
            }
            SearchKind::Sha256 => {
                for k in ["payload", "sample"] {
                    cut |= scan(db, &range, k, &mut |row| {
                        let f = fields_of(row);
                        let sha = row.payload_sha256.or(f.get("sha256").map(String::as_str)).unwrap_or("");
                        (sha.eq_ignore_ascii_case(&v))
                            .then(|| hit("sample", sha, f.get("name").map(String::as_str).unwrap_or(""), row))
                    })?;
                }
            }
            SearchKind::Cve => {
                for k in ["exploit", "http_request", "command", "payload"] {
                    cut |= scan(db, &range, k, &mut |row| {
                        let d = row.derived.map(|d| crate::exploits::Derived::from_column(Some(d))).unwrap_or_default();
                        if let Some(e) = d.exploits.iter().find(|e| e.cve.eq_ignore_ascii_case(&v)) {
                            return Some(hit("exploit", &e.name, &e.cve, row));
                        }
                        if k != "exploit" {
                            return None;
                        }
                        let f = fields_of(row);
                        let cve = f.get("cve").map(String::as_str).unwrap_or("");
                        cve.eq_ignore_ascii_case(&v)
                            .then(|| hit("exploit", f.get("name").map(String::as_str).unwrap_or(""), cve, row))
                    })?;
                }
            }
            SearchKind::Protocol => {
                cut |= scan(db, &range, "connection", &mut |row| {
                    (row.protocol == v).then(|| hit("session", row.protocol, &row.dst_port.to_string(), row))
                })?;
            }
            SearchKind::Sensor => {
                let Some(id) = db.sensor_id(&v)? else { continue };
                range.sensor_id = Some(id);
                cut |= scan(db, &range, "connection", &mut |row| {
                    Some(hit("session", row.protocol, &row.dst_port.to_string(), row))
                })?;
            }
        }
        out.truncated |= cut;
        out.hits.extend(hits);
    }
    out.hits.sort_by(|a, b| b.time_ms.cmp(&a.time_ms).then_with(|| a.value.cmp(&b.value)));
    if out.hits.len() > max_hits {
        out.hits.truncate(max_hits);
        out.truncated = true;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges(s: &str) -> Vec<(String, String)> {
        text_ranges(&parse_net(s).unwrap())
    }

    #[test]
    fn networks_become_text_ranges_that_cover_them() {
        assert_eq!(ranges("10.1.0.0/16"), vec![("10.1.".to_string(), "10.1/".to_string())]);
        assert_eq!(ranges("1.2.3.4"), vec![("1.2.3.4".to_string(), "1.2.3.4\u{0}".to_string())]);
        // /12: the second octet takes 16 values, each its own prefix.
        let r = ranges("172.16.0.0/12");
        assert_eq!(r.len(), 16);
        assert_eq!(r[0].0, "172.16.");
        assert_eq!(r[15].0, "172.31.");
        assert_eq!(ranges("2a00:1450::/32"), vec![("2a00:1450:".to_string(), "2a00:1450;".to_string())]);
        for (from, to) in ranges("10.0.0.0/8") {
            assert!("10.200.3.4" >= from.as_str() && "10.200.3.4" < to.as_str());
            assert!(!("100.2.3.4" >= from.as_str() && "100.2.3.4" < to.as_str()));
        }
    }
}
