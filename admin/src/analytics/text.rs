//! Plain-text rendering: the report `drosera-admin report` prints, and the time and string
//! formatting the dashboard pages share.

use super::drill::{Attacker, ListCut, SearchResults, Seen, Session};
use super::queries::{Report, Timeline};

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

/// Escapes control and format characters so attacker strings cannot mess with a terminal or
/// pass for other text (see [`crate::shown`]).
pub fn printable(s: &str) -> String {
    crate::shown::escaped(s)
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
        if t.evicted_events > 0 {
            let _ = writeln!(
                o,
                "Evicted: the sensors evicted {} events ({} attempts) before sending them to stay under their store caps; \
                 they are counted above, but their details (credentials, commands, payloads) are gone.",
                t.evicted_events, t.evicted_attempts
            );
        }
        for l in &self.labelled {
            let how = if l.included { "included above" } else { "not counted above" };
            let _ = writeln!(
                o,
                "Labelled {} ({how}): {} attempts, {} logins, {} events from {} addresses{}",
                l.label,
                l.attempts,
                l.logins,
                l.events,
                l.attackers,
                if l.top_sources.is_empty() {
                    String::new()
                } else {
                    format!(
                        " (top: {})",
                        l.top_sources.iter().take(5).map(|s| s.ip.as_str()).collect::<Vec<_>>().join(", ")
                    )
                }
            );
        }
        o += &self.timeline.to_text();
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
            let label = r.label.as_ref().map(|l| format!(" [{l}]")).unwrap_or_default();
            let _ = writeln!(o, "  {:<40} {:>9} {:>7} {:<8} {}{label}", r.ip, r.attempts, r.logins, r.country, asn);
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
        if !c.recovered.is_empty() {
            let _ = writeln!(
                o,
                "\nRecovered passwords (from challenge-responses; user / password [recovered, protocol]: logins):"
            );
            for r in &c.recovered {
                let _ = writeln!(
                    o,
                    "  {} / {} [recovered, {}]: {}",
                    printable(&r.username),
                    printable(&r.password),
                    printable(&r.protocol),
                    r.count
                );
            }
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
        let sc = &self.scans;
        let _ = writeln!(
            o,
            "\nScans: {} packets (SYNs and UDP) in {} source windows from {} scanners; {} unattributed (past a sensor's source cap), {} dropped by the kernel{}",
            sc.packets,
            sc.windows,
            sc.scanners,
            sc.unattributed_packets,
            sc.kernel_drops,
            if sc.truncated { "; TRUNCATED at the row cap, narrow the range" } else { "" }
        );
        if !sc.fingerprints.is_empty() {
            let fps: Vec<String> =
                sc.fingerprints.iter().map(|f| format!("{} {}", printable(&f.value), f.count)).collect();
            let _ = writeln!(o, "  fingerprints (packets): {}", fps.join(", "));
        }
        let _ = writeln!(o, "  Top scanned ports (source windows):");
        for p in &sc.top_ports {
            let _ = writeln!(o, "    {:>5}/{:<4} {:>9}", p.port, p.transport, p.windows);
        }
        let _ = writeln!(
            o,
            "  Top scanners:\n    {:<40} {:>10} {:>7} {:>9}  fingerprints",
            "ip", "packets", "windows", "max ports"
        );
        for s in &sc.top_scanners {
            let fps: Vec<String> =
                s.fingerprints.iter().map(|f| format!("{} {}", printable(&f.value), f.count)).collect();
            let _ = writeln!(
                o,
                "    {:<40} {:>10} {:>7} {:>9}  {}",
                s.ip,
                s.packets,
                s.windows,
                s.max_distinct_ports,
                fps.join(", ")
            );
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

/// A bucket's start as the timeline shows it: `HH:MM` (minutes), `MM-DD HH:00` (hours),
/// `YYYY-MM-DD` (days), UTC.
pub fn bucket_label(resolution: &str, ms: i64) -> String {
    let s = fmt_time(Some(ms));
    match resolution {
        "minute" => s.get(11..).unwrap_or(&s).to_string(),
        "hour" => s.get(5..).unwrap_or(&s).to_string(),
        _ => s.get(..10).unwrap_or(&s).to_string(),
    }
}

/// Most protocol columns of the text timeline (the rest are summed in "other").
const TEXT_PROTOCOLS: usize = 6;

impl Timeline {
    /// The attempts per bucket as a table: one line per bucket, a column per protocol.
    pub fn to_text(&self) -> String {
        use std::fmt::Write;
        let mut o = String::new();
        let protos: Vec<&super::queries::ProtocolSeries> = self.per_protocol.iter().take(TEXT_PROTOCOLS).collect();
        let other = self.per_protocol.len() > TEXT_PROTOCOLS;
        let _ = write!(o, "\nAttempts per {} (UTC):\n  {:<16} {:>9}", self.resolution, "bucket", "attempts");
        for p in &protos {
            let _ = write!(o, " {:>9}", printable(&p.protocol));
        }
        if other {
            let _ = write!(o, " {:>9}", "other");
        }
        let _ = writeln!(o);
        for (i, b) in self.buckets.iter().enumerate() {
            let total = self.attempts.get(i).copied().unwrap_or(0);
            let _ = write!(o, "  {:<16} {:>9}", bucket_label(&self.resolution, *b), total);
            let mut shown = 0;
            for p in &protos {
                let v = p.attempts.get(i).copied().unwrap_or(0);
                shown += v;
                let _ = write!(o, " {v:>9}");
            }
            if other {
                let _ = write!(o, " {:>9}", total - shown);
            }
            let _ = writeln!(o);
        }
        o
    }
}

fn seen_lines(o: &mut String, title: &str, v: &[Seen], list: &str, cuts: &[ListCut]) {
    use std::fmt::Write;
    match cuts.iter().find(|c| c.list == list) {
        Some(c) => {
            let _ = writeln!(
                o,
                "\n{title} (TRUNCATED: the {} most frequent of {} distinct, the cap [drill] list_rows):",
                c.shown, c.distinct
            );
        }
        None => {
            let _ = writeln!(o, "\n{title}:");
        }
    }
    for s in v {
        let detail = if s.detail.is_empty() { String::new() } else { format!(" {}", printable(&s.detail)) };
        let _ = writeln!(
            o,
            "  {}{detail} x{}, {} .. {}",
            printable(&s.value),
            s.count,
            fmt_time(Some(s.first_seen_ms)),
            fmt_time(Some(s.last_seen_ms))
        );
    }
}

impl Attacker {
    /// The plain-text form printed by `drosera-admin attacker`.
    pub fn to_text(&self) -> String {
        use std::fmt::Write;
        let mut o = String::new();
        let asn = self.asn.map(|a| format!("AS{a} {}", printable(&self.as_org))).unwrap_or_default();
        let _ = writeln!(
            o,
            "Attacker {} ({}{}{})",
            self.ip,
            printable(&self.country),
            if asn.is_empty() { "" } else { ", " },
            asn
        );
        if let Some(l) = &self.label {
            let _ = writeln!(o, "Label: {}", printable(l));
        }
        let _ = writeln!(
            o,
            "First seen {}, last seen {}; {} attempts, {} events read{}",
            fmt_time(self.first_seen_ms),
            fmt_time(self.last_seen_ms),
            self.attempts,
            self.events,
            if self.truncated {
                format!(
                    " (TRUNCATED at {} events, the cap [drill] attacker_events; the lists cover the newest)",
                    self.max_events
                )
            } else {
                String::new()
            }
        );
        let cuts = &self.lists_cut;
        seen_lines(&mut o, "Sensors (events)", &self.sensors, "sensors", cuts);
        seen_lines(&mut o, "Protocols (events)", &self.protocols, "protocols", cuts);
        seen_lines(&mut o, "Credentials (user password)", &self.credentials, "credentials", cuts);
        seen_lines(&mut o, "Commands", &self.commands, "commands", cuts);
        seen_lines(&mut o, "Samples and payloads (sha256 size)", &self.samples, "samples", cuts);
        seen_lines(&mut o, "Downloads offered (url tool)", &self.downloads, "downloads", cuts);
        seen_lines(&mut o, "Exploits (name cve)", &self.exploits, "exploits", cuts);
        seen_lines(&mut o, "Scans (transport first-ports)", &self.scans, "scans", cuts);
        let _ =
            writeln!(o, "\nSessions ({} in all, page {}, {} per page):", self.sessions_total, self.page, self.per_page);
        for s in &self.sessions {
            let _ = writeln!(
                o,
                "  {}/{} {} port {} {} .. {}: {} events, {} logins, {} commands",
                printable(&s.sensor),
                s.session_id,
                s.protocol,
                s.dst_port,
                fmt_time(Some(s.start_ms)),
                fmt_time(Some(s.end_ms)),
                s.events,
                s.logins,
                s.commands
            );
        }
        o
    }
}

impl Session {
    /// The plain-text form printed by `drosera-admin session`: a transcript.
    pub fn to_text(&self) -> String {
        use std::fmt::Write;
        let mut o = String::new();
        let _ = writeln!(
            o,
            "Session {}/{}: {}:{} -> {} port {} ({}), {} .. {}, {} bytes in, {} out{}",
            printable(&self.sensor),
            self.session_id,
            self.src_ip,
            self.src_port,
            self.protocol,
            self.dst_port,
            printable(&self.country),
            fmt_time(Some(self.start_ms)),
            fmt_time(Some(self.end_ms)),
            self.bytes_in,
            self.bytes_out,
            if self.truncated {
                format!(" (TRUNCATED: the first {} events only, the cap [drill] session_events)", self.max_events)
            } else {
                String::new()
            }
        );
        for e in &self.events {
            let _ = writeln!(o, "{} #{} {:<16} {}", fmt_time(Some(e.time_ms)), e.seq, e.kind, printable(&e.summary));
            if e.kind == "http_request" || e.kind == "login" {
                for (k, v) in &e.fields {
                    let _ = writeln!(o, "    {}: {}", printable(k), printable(v));
                }
            }
            for d in &e.derived {
                let _ = writeln!(o, "    => {}", printable(d));
            }
        }
        o
    }
}

impl SearchResults {
    /// The plain-text form printed by `drosera-admin search`.
    pub fn to_text(&self) -> String {
        use std::fmt::Write;
        let mut o = String::new();
        let kinds: Vec<&str> = self.kinds.iter().map(|k| k.as_str()).collect();
        let _ = writeln!(
            o,
            "{} results for {} as {}{}",
            self.hits.len(),
            printable(&self.query),
            kinds.join(" or "),
            if self.truncated {
                format!(
                    " (TRUNCATED: more may match; at most the newest {} rows of each kind read, {} results, the caps [drill] search_scan and search_hits; narrow the range)",
                    self.max_scan, self.max_hits
                )
            } else {
                String::new()
            }
        );
        for h in &self.hits {
            let session = if h.session_id == 0 {
                String::new()
            } else {
                format!(" session {}/{}", printable(&h.sensor), h.session_id)
            };
            let _ = writeln!(
                o,
                "  {} {:<8} {} {} from {}{session}",
                if h.time_ms == 0 { "-".to_string() } else { fmt_time(Some(h.time_ms)) },
                h.what,
                printable(&h.value),
                printable(&h.detail),
                h.src_ip
            );
        }
        o
    }
}
