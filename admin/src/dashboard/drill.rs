//! The drill-down pages (issue 21): `/attacker/{addr}`, `/session/{sensor}/{conn}`,
//! `/search?q=`, and the same data as JSON and CSV under `/api/attacker`, `/api/session` and
//! `/api/search`.
//!
//! WHY tables as data: every table of these pages is built once as a [`Table`] and rendered
//! twice, as HTML and as CSV (`?format=csv&table=ID`), so the download cannot differ from the
//! page. Every cell is attacker text unless it is a number or a time: HTML goes through
//! [`esc`], CSV through `export::csv_cell` (formula-defused, controls escaped).

use super::html::esc;
use crate::analytics::{fmt_time, Attacker, ListCut, SearchResults, Seen, Session};
use std::fmt::Write;

/// Percent-encodes a path segment or query value.
pub fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The link to an address's attacker page.
pub fn ip_link(ip: &str) -> String {
    format!(r#"<a class="ip mono" href="/attacker/{}">{}</a>"#, esc(&url_encode(ip)), esc(ip))
}

/// The link to a session page.
pub fn session_link(sensor: &str, id: i64, text: &str) -> String {
    format!(r#"<a class="session" href="/session/{}/{id}">{}</a>"#, esc(&url_encode(sensor)), esc(text))
}

/// One cell of a [`Table`].
#[derive(Debug, Clone)]
pub enum Cell {
    Text(String),
    /// Attacker text shown in a fixed-width font (lines, URLs, hashes).
    Mono(String),
    Num(i64),
    Time(i64),
    /// An address, linked to its attacker page.
    Ip(String),
    /// A connection, linked to its session page.
    Session {
        sensor: String,
        id: i64,
    },
}

impl Cell {
    fn html(&self) -> String {
        match self {
            Cell::Text(s) => format!("<td>{}</td>", esc(s)),
            // Lines (a session's fields) one per line; esc would show a newline as U+FFFD.
            Cell::Mono(s) => {
                format!(r#"<td class="mono wrap">{}</td>"#, s.split('\n').map(esc).collect::<Vec<_>>().join("<br>"))
            }
            Cell::Num(n) => format!(r#"<td class="n">{n}</td>"#),
            Cell::Time(t) => format!("<td>{}</td>", fmt_time(Some(*t))),
            Cell::Ip(ip) => format!("<td>{}</td>", ip_link(ip)),
            Cell::Session { sensor, id } => {
                format!("<td>{}</td>", session_link(sensor, *id, &format!("{sensor}/{id}")))
            }
        }
    }

    fn csv(&self) -> String {
        match self {
            Cell::Text(s) | Cell::Mono(s) | Cell::Ip(s) => crate::export::csv_cell(s, true),
            Cell::Num(n) => n.to_string(),
            Cell::Time(t) => fmt_time(Some(*t)),
            Cell::Session { sensor, id } => crate::export::csv_cell(&format!("{sensor}/{id}"), true),
        }
    }
}

/// A table of a drill-down page: rendered as HTML and as CSV.
#[derive(Debug, Clone)]
pub struct Table {
    pub id: &'static str,
    pub title: &'static str,
    pub headers: Vec<&'static str>,
    pub rows: Vec<Vec<Cell>>,
    /// Said above the rows when a cap cut them (`[drill]`); the CSV holds the same rows.
    pub note: Option<String>,
}

impl Table {
    /// The table in a card, with its CSV link (`csv_base`: the API URL without `format`).
    pub fn html(&self, csv_base: &str) -> String {
        let mut s = format!(
            r#"<section class="card"><h2>{} <a class="csv small" href="{}&amp;format=csv&amp;table={}">CSV</a></h2>"#,
            esc(self.title),
            esc(csv_base),
            self.id
        );
        if let Some(n) = &self.note {
            let _ = write!(s, r#"<p class="note" id="cut-{}">{}</p>"#, self.id, esc(n));
        }
        let _ = write!(s, r#"<table id="{}"><thead><tr>"#, self.id);
        for h in &self.headers {
            let _ = write!(s, "<th>{}</th>", esc(h));
        }
        s += "</tr></thead><tbody>";
        for r in &self.rows {
            s += "<tr>";
            for c in r {
                s += &c.html();
            }
            s += "</tr>";
        }
        if self.rows.is_empty() {
            let _ = write!(s, r#"<tr><td colspan="{}" class="empty">none</td></tr>"#, self.headers.len());
        }
        s + "</tbody></table></section>"
    }

    /// The table as CSV (a header line, then one line per row).
    pub fn csv(&self) -> String {
        let mut s = self.headers.join(",");
        s.push('\n');
        for r in &self.rows {
            s += &r.iter().map(Cell::csv).collect::<Vec<_>>().join(",");
            s.push('\n');
        }
        s
    }
}

/// What a page says of a list `[drill] list_rows` cut.
pub fn cut_note(c: &ListCut) -> String {
    format!(
        "The {} most frequent of {} distinct values (the cap [drill] list_rows); the CSV holds the same rows.",
        c.shown, c.distinct
    )
}

fn seen_table(id: &'static str, title: &'static str, value: &'static str, detail: &'static str, a: &Attacker) -> Table {
    let v: &[Seen] = match id {
        "credentials" => &a.credentials,
        "commands" => &a.commands,
        "downloads" => &a.downloads,
        "samples" => &a.samples,
        "exploits" => &a.exploits,
        "scans" => &a.scans,
        "sensors" => &a.sensors,
        _ => &a.protocols,
    };
    let note = a.lists_cut.iter().find(|c| c.list == id).map(cut_note);
    let mut headers = vec![value];
    if !detail.is_empty() {
        headers.push(detail);
    }
    headers.extend(["count", "first seen", "last seen"]);
    let rows = v
        .iter()
        .map(|s| {
            let mut r = vec![Cell::Mono(s.value.clone())];
            if !detail.is_empty() {
                r.push(Cell::Mono(s.detail.clone()));
            }
            r.extend([Cell::Num(s.count), Cell::Time(s.first_seen_ms), Cell::Time(s.last_seen_ms)]);
            r
        })
        .collect();
    Table { id, title, headers, rows, note }
}

/// The tables of an attacker page.
pub fn attacker_tables(a: &Attacker) -> Vec<Table> {
    vec![
        Table {
            id: "sessions",
            title: "Sessions",
            headers: vec!["session", "protocol", "port", "start", "end", "events", "logins", "commands"],
            rows: a
                .sessions
                .iter()
                .map(|s| {
                    vec![
                        Cell::Session { sensor: s.sensor.clone(), id: s.session_id },
                        Cell::Text(s.protocol.clone()),
                        Cell::Num(s.dst_port),
                        Cell::Time(s.start_ms),
                        Cell::Time(s.end_ms),
                        Cell::Num(s.events),
                        Cell::Num(s.logins),
                        Cell::Num(s.commands),
                    ]
                })
                .collect(),
            note: None,
        },
        seen_table("credentials", "Credentials tried", "user", "password", a),
        seen_table("commands", "Commands", "line", "", a),
        seen_table("downloads", "Downloads offered", "URL", "tool", a),
        seen_table("samples", "Samples and payloads", "sha256", "size", a),
        seen_table("exploits", "Exploits", "exploit", "CVE", a),
        seen_table("scans", "Scans", "transport", "first ports", a),
        seen_table("sensors", "Sensors", "sensor", "", a),
        seen_table("protocols", "Protocols (events)", "protocol", "", a),
    ]
}

/// The tables of a session page.
pub fn session_tables(s: &Session) -> Vec<Table> {
    vec![Table {
        id: "events",
        title: "Events",
        headers: vec!["time", "seq", "kind", "what", "fields", "derived"],
        rows: s
            .events
            .iter()
            .map(|e| {
                let fields: Vec<String> = e.fields.iter().map(|(k, v)| format!("{k}: {v}")).collect();
                vec![
                    Cell::Time(e.time_ms),
                    Cell::Num(e.seq),
                    Cell::Text(e.kind.clone()),
                    Cell::Mono(e.summary.clone()),
                    Cell::Mono(fields.join("\n")),
                    Cell::Mono(e.derived.join("\n")),
                ]
            })
            .collect(),
        // The page says it above (`#truncated`).
        note: None,
    }]
}

/// The table of a search.
pub fn search_tables(r: &SearchResults) -> Vec<Table> {
    vec![Table {
        id: "hits",
        title: "Results",
        headers: vec!["what", "value", "detail", "address", "session", "time"],
        rows: r
            .hits
            .iter()
            .map(|h| {
                vec![
                    Cell::Text(h.what.clone()),
                    Cell::Mono(h.value.clone()),
                    Cell::Mono(h.detail.clone()),
                    if h.src_ip.is_empty() { Cell::Text(String::new()) } else { Cell::Ip(h.src_ip.clone()) },
                    if h.session_id == 0 {
                        Cell::Text(String::new())
                    } else {
                        Cell::Session { sensor: h.sensor.clone(), id: h.session_id }
                    },
                    if h.time_ms == 0 { Cell::Text(String::new()) } else { Cell::Time(h.time_ms) },
                ]
            })
            .collect(),
        note: None,
    }]
}

fn fact(id: &str, label: &str, value: &str) -> String {
    format!(r#"<tr><th>{}</th><td id="{id}">{}</td></tr>"#, esc(label), esc(value))
}

fn names(v: &[Seen]) -> String {
    v.iter().map(|s| format!("{} ({})", s.value, s.count)).collect::<Vec<_>>().join(", ")
}

/// The attacker page body. `qs`: the page's filter query (`since=...&until=...`), kept in the
/// page links and the CSV links.
pub fn attacker_page(a: &Attacker, qs: &str) -> String {
    let asn = a.asn.map(|n| format!("AS{n} {}", a.as_org)).unwrap_or_default();
    let mut b = String::from(r#"<section class="card"><table id="facts">"#);
    b += &fact("address", "address", &a.ip);
    b += &fact("country", "country", &a.country);
    b += &fact("as", "AS", &asn);
    b += &fact("label", "label", a.label.as_deref().unwrap_or(""));
    b += &fact("first-seen", "first seen", &fmt_time(a.first_seen_ms));
    b += &fact("last-seen", "last seen", &fmt_time(a.last_seen_ms));
    b += &fact("attempts", "attempts", &a.attempts.to_string());
    b += &fact("events", "events read", &a.events.to_string());
    b += &fact("sensor-list", "sensors", &names(&a.sensors));
    b += &fact("protocol-list", "protocols", &names(&a.protocols));
    b += "</table></section>";
    if a.truncated {
        let _ = write!(
            b,
            r#"<p class="note" id="truncated">This address has more than {} events in this range (the cap [drill] attacker_events): the lists cover the newest ones. Narrow the range to see older ones.</p>"#,
            a.max_events
        );
    }
    if !a.lists_cut.is_empty() {
        let lists: Vec<&str> = a.lists_cut.iter().map(|c| c.list.as_str()).collect();
        let _ = write!(
            b,
            r#"<p class="note" id="lists-cut">Cut to their {} most frequent values (the cap [drill] list_rows): {}.</p>"#,
            a.lists_cut[0].shown,
            esc(&lists.join(", "))
        );
    }
    let base = format!("/api/attacker?addr={}{}", url_encode(&a.ip), amp(qs));
    let pages = (a.sessions_total as usize).div_ceil(a.per_page.max(1)).max(1);
    let _ = write!(b, r#"<p id="sessions-paging">{} sessions, page {} of {pages}"#, a.sessions_total, a.page);
    let link = |p: usize, text: &str| {
        format!(r#" <a href="/attacker/{}?page={p}{}">{text}</a>"#, esc(&url_encode(&a.ip)), esc(&amp(qs)))
    };
    if a.page > 1 {
        b += &link(a.page - 1, "newer");
    }
    if a.page < pages {
        b += &link(a.page + 1, "older");
    }
    b += "</p>";
    for t in attacker_tables(a) {
        b += &t.html(&base);
    }
    b
}

fn amp(qs: &str) -> String {
    let qs = qs.trim_start_matches('?');
    if qs.is_empty() {
        String::new()
    } else {
        format!("&{qs}")
    }
}

/// The session page body: facts, the shell transcript (commands in order), every event.
pub fn session_page(s: &Session) -> String {
    let asn = s.asn.map(|n| format!("AS{n} {}", s.as_org)).unwrap_or_default();
    let mut b = String::from(r#"<section class="card"><table id="facts">"#);
    b += &format!(r#"<tr><th>address</th><td id="address">{}</td></tr>"#, ip_link(&s.src_ip));
    b += &fact("src-port", "source port", &s.src_port.to_string());
    b += &fact("country", "country", &s.country);
    b += &fact("as", "AS", &asn);
    b += &fact("sensor", "sensor", &s.sensor);
    b += &fact("protocol", "protocol", &format!("{} port {}", s.protocol, s.dst_port));
    b += &fact("start", "start", &fmt_time(Some(s.start_ms)));
    b += &fact("end", "end", &fmt_time(Some(s.end_ms)));
    b += &fact("bytes", "bytes in / out", &format!("{} / {}", s.bytes_in, s.bytes_out));
    b += "</table></section>";
    if s.truncated {
        let _ = write!(b, r#"<p class="note" id="truncated">{}</p>"#, esc(&session_cut(s)));
    }
    let lines: Vec<String> = s
        .events
        .iter()
        .filter(|e| matches!(e.kind.as_str(), "command" | "login" | "http_request"))
        .map(|e| {
            let prompt = match e.kind.as_str() {
                "command" => "$ ",
                "login" => "# ",
                _ => "> ",
            };
            format!("{prompt}{}", esc(&e.summary))
        })
        .collect();
    if !lines.is_empty() {
        let _ = write!(
            b,
            r#"<section class="card"><h2>Transcript</h2><pre id="transcript" class="mono wrap">{}</pre></section>"#,
            lines.join("\n")
        );
    }
    let base = format!("/api/session?sensor={}&conn={}", url_encode(&s.sensor), s.session_id);
    for t in session_tables(s) {
        b += &t.html(&base);
    }
    b
}

/// What a page says of a session cut by `[drill] session_events`.
fn session_cut(s: &Session) -> String {
    format!(
        "This connection has more than {} events (the cap [drill] session_events): the first ones are shown.",
        s.max_events
    )
}

/// What a page says of a search cut by `[drill] search_scan` or `search_hits`.
fn search_cut(r: &SearchResults) -> String {
    format!(
        "More may match: a search reads at most the newest {} rows of each kind (the cap [drill] search_scan) and returns {} results (the cap [drill] search_hits). Narrow the range.",
        r.max_scan, r.max_hits
    )
}

/// The search page body: the form and the results.
pub fn search_page(q: &str, r: Option<&SearchResults>, f: &super::pages::Filter) -> String {
    let qs = super::pages::filter_query(f);
    // The range filter travels with a new search.
    let mut hidden = String::new();
    for (k, v) in [("since", &f.since), ("until", &f.until), ("sensor", &f.sensor)] {
        if !v.is_empty() {
            let _ = write!(hidden, r#"<input type="hidden" name="{k}" value="{}">"#, esc(v));
        }
    }
    let mut b = format!(
        r#"<form method="get" action="/search" class="filter card" id="search-form"><label>search <input name="q" value="{}" size="40" placeholder="1.2.3.0/24, root, http://..., CVE-2017-0144, sha256, ssh, sensor"></label>{hidden}<button type="submit">Search</button></form>"#,
        esc(q)
    );
    let Some(r) = r else { return b };
    let kinds: Vec<&str> = r.kinds.iter().map(|k| k.as_str()).collect();
    let _ = write!(
        b,
        r#"<p id="search-summary">{} results for <span class="mono">{}</span> as {}.</p>"#,
        r.hits.len(),
        esc(&r.query),
        esc(&kinds.join(" or "))
    );
    if r.truncated {
        let _ = write!(b, r#"<p class="note" id="truncated">{}</p>"#, esc(&search_cut(r)));
    }
    let base = format!("/api/search?q={}{}", url_encode(q), amp(&qs));
    for t in search_tables(r) {
        b += &t.html(&base);
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_are_escaped_in_html_and_defused_in_csv() {
        let t = Table {
            id: "t",
            title: "T",
            headers: vec!["a", "b"],
            rows: vec![vec![Cell::Mono("<script>alert(1)</script>\x1b[31m".into()), Cell::Ip("=1+1\"<>".into())]],
            note: Some("<b>cut</b>".into()),
        };
        let h = t.html("/api/x?a=1");
        assert!(!h.contains("<script>") && h.contains("&lt;script&gt;"), "{h}");
        assert!(!h.contains('\x1b'));
        assert!(h.contains(r#"href="/attacker/%3D1%2B1%22%3C%3E""#), "{h}");
        assert!(h.contains(r#"<p class="note" id="cut-t">&lt;b&gt;cut&lt;/b&gt;</p><table id="t">"#), "{h}");
        let c = t.csv();
        assert!(c.starts_with("a,b\n"));
        assert!(!c.contains('\x1b'), "{c}");
        assert!(c.contains("\"'=1+1\"\"<>\""), "{c}");
    }
}
