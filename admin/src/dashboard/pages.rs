//! Server-rendered HTML pages. Every value that can come from attackers (addresses, user names,
//! passwords, URLs, AS names) goes through [`esc`]; the pages carry no script at all, and the
//! Content-Security-Policy set by the server forbids any. Charts come from [`svg`].

use super::drill::ip_link;
use super::html::esc;
use super::svg;
use super::world;
use crate::analytics::{
    fmt_time, CountryRow, Credentials, ItemRow, LabelledTotals, PortRow, ProtocolRow, Scans, SensorHealth, Timeline,
    TopSources, Totals,
};
use crate::labels::Include;
use std::fmt::Write;

static STYLE: &str = include_str!("../../assets/style.css");

/// The filter values a page was asked for, echoed into links and the filter form.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub since: String,
    pub until: String,
    pub sensor: String,
    pub min_attempts: i64,
    /// Labelled traffic taken back into the numbers (the "labelled" switch).
    pub include: Include,
}

/// The filter as a query string (`?since=...`; "" when empty), for links that keep it.
pub fn filter_query(f: &Filter) -> String {
    f.query_string()
}

impl Filter {
    fn query_string(&self) -> String {
        let mut parts = Vec::new();
        let include = self.include.as_param().to_string();
        for (k, v) in [("since", &self.since), ("until", &self.until), ("sensor", &self.sensor), ("include", &include)]
        {
            if !v.is_empty() {
                parts.push(format!("{k}={}", url_encode(v)));
            }
        }
        if parts.is_empty() {
            String::new()
        } else {
            format!("?{}", parts.join("&"))
        }
    }
}

impl Filter {
    /// The query string of a CSV link: the filter, with `min_attempts` when set.
    pub fn csv_query_string(&self) -> String {
        let qs = self.query_string();
        match (self.min_attempts, qs.is_empty()) {
            (0, _) => qs,
            (m, true) => format!("?min_attempts={m}"),
            (m, false) => format!("{qs}&min_attempts={m}"),
        }
    }
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

const NAV: [(&str, &str); 8] = [
    ("/", "Overview"),
    ("/attackers", "Attackers"),
    ("/credentials", "Credentials"),
    ("/payloads", "Payloads"),
    ("/scans", "Scans"),
    ("/sensors", "Sensors"),
    ("/search", "Search"),
    ("/samples", "Samples"),
];

pub fn layout(title: &str, path: &str, user: &str, csrf: &str, f: &Filter, body: &str) -> String {
    let qs = f.query_string();
    let mut nav = String::new();
    for (href, name) in NAV {
        let cls = if href == path { " class=\"active\"" } else { "" };
        let _ = write!(nav, r#"<a href="{href}{qs}"{cls}>{name}</a>"#, qs = esc(&qs));
    }
    let min_field = if path == "/attackers" {
        format!(
            r#"<label>min attempts <input name="min_attempts" type="number" min="0" value="{}" size="5"></label>"#,
            f.min_attempts
        )
    } else {
        String::new()
    };
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · Drosera</title><style>{STYLE}</style></head>
<body><header><div class="brand">Drosera</div><nav>{nav}</nav>
<form method="post" action="/logout" class="logout"><input type="hidden" name="csrf" value="{csrf}"><span>{user}</span> <button type="submit">Log out</button></form></header>
<main><form method="get" action="{path}" class="filter">
<label>since <input name="since" value="{since}" placeholder="7d or 2024-05-01" size="14"></label>
<label>until <input name="until" value="{until}" placeholder="now" size="14"></label>
<label>sensor <input name="sensor" value="{sensor}" placeholder="all" size="10"></label>{min_field}
<label>labelled <select name="include" id="include">{include_options}</select></label>
<button type="submit">Apply</button></form>
<h1>{title}</h1>
{body}</main>
<footer>Country data: ip-location-db geo-whois-asn-country (NRO, CC BY 4.0). AS data: RouteViews, NRO and
<a href="https://db-ip.com">IP Geolocation by DB-IP</a> (CC BY 4.0). All lookups are local.</footer>
</body></html>"#,
        title = esc(title),
        csrf = esc(csrf),
        user = esc(user),
        path = esc(path),
        since = esc(&f.since),
        until = esc(&f.until),
        sensor = esc(&f.sensor),
        include_options = include_options(f.include),
    )
}

/// The "labelled" switch: leave `self` and `research` out of the numbers (the default), or
/// take them back in.
fn include_options(inc: Include) -> String {
    let mut s = String::new();
    for (value, text) in [
        ("", "left out (self, research)"),
        ("research", "research included"),
        ("self", "self included"),
        ("self,research", "all included"),
    ] {
        let sel = if inc.as_param() == value { " selected" } else { "" };
        let _ = write!(s, r#"<option value="{value}"{sel}>{text}</option>"#);
    }
    s
}

/// The labelled traffic's own numbers (see `analytics::labelled`).
pub fn labelled(rows: &[LabelledTotals]) -> String {
    let mut b = String::from(
        r#"<section class="card"><h2>Labelled traffic</h2><table id="labelled"><thead><tr><th>label</th><th>in the numbers above</th><th>attempts</th><th>logins</th><th>events</th><th>addresses</th><th>top addresses</th></tr></thead><tbody>"#,
    );
    for l in rows {
        let top: Vec<String> = l.top_sources.iter().take(5).map(|s| ip_link(&s.ip)).collect();
        let _ = write!(
            b,
            r#"<tr data-key="{k}"><td>{k}</td><td class="included">{}</td><td class="n attempts">{}</td><td class="n logins">{}</td><td class="n events">{}</td><td class="n attackers">{}</td><td class="mono">{}</td></tr>"#,
            if l.included { "included" } else { "left out" },
            l.attempts,
            l.logins,
            l.events,
            l.attackers,
            top.join(" "),
            k = esc(&l.label)
        );
    }
    b + "</tbody></table></section>"
}

pub fn login(nonce: &str, error: Option<&str>) -> String {
    let err = error.map(|e| format!(r#"<p class="error">{}</p>"#, esc(e))).unwrap_or_default();
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Log in · Drosera</title><style>{STYLE}</style></head>
<body class="login"><form method="post" action="/login" class="card" id="login-form">
<h1>Drosera</h1>{err}
<input type="hidden" name="csrf" value="{nonce}">
<label>User <input id="username" name="username" autocomplete="username" required maxlength="64"></label>
<label>Password <input id="password" name="password" type="password" autocomplete="current-password" required maxlength="1024"></label>
<button type="submit" id="login-button">Log in</button></form></body></html>"#,
        nonce = esc(nonce)
    )
}

fn stat(id: &str, label: &str, v: i64) -> String {
    format!(r#"<div class="stat"><div class="v" id="{id}">{v}</div><div class="l">{label}</div></div>"#)
}

fn label_for(t: &Timeline, b: i64) -> String {
    crate::analytics::bucket_label(&t.resolution, b)
}

pub fn overview(t: &Totals, tl: &Timeline, protocols: &[ProtocolRow], countries: &[CountryRow]) -> String {
    let mut b = String::from(r#"<section class="stats">"#);
    b += &stat("total-attempts", "attempts", t.attempts);
    b += &stat("total-attackers", "attackers", t.attackers);
    b += &stat("total-countries", "countries", t.countries);
    b += &stat("total-logins", "logins", t.logins);
    b += &stat("total-commands", "commands", t.commands);
    b += &stat("total-payloads", "payloads", t.payloads);
    b += &stat("total-exploits", "exploits", t.exploits);
    b += &stat("total-rolled-up", "rolled up", t.rolled_up);
    b += &stat("total-evicted", "evicted", t.evicted_events);
    b += "</section>";
    if t.evicted_events > 0 {
        let _ = write!(
            b,
            r#"<p class="note" id="evicted-note">The sensors evicted {} events ({} attempts) before sending them, to stay under their store caps. They are counted in these totals, but their details (credentials, commands, payloads) are gone.</p>"#,
            t.evicted_events, t.evicted_attempts
        );
    }
    let labels: Vec<String> = tl.buckets.iter().map(|x| label_for(tl, *x)).collect();
    let mut series = vec![("all sensors".to_string(), tl.attempts.clone())];
    if tl.per_sensor.len() > 1 {
        series.extend(tl.per_sensor.iter().take(6).map(|s| (s.sensor.clone(), s.attempts.clone())));
    }
    let _ = write!(
        b,
        r#"<section class="card"><h2>Attempts per {}</h2>{}</section>"#,
        esc(&tl.resolution),
        svg::timeline("attempts over time", &labels, &series)
    );
    // The same buckets stacked per protocol: every bucket is a bar, a single one too.
    let stacks: Vec<(String, Vec<i64>)> =
        tl.per_protocol.iter().map(|p| (p.protocol.clone(), p.attempts.clone())).collect();
    let _ = write!(
        b,
        r#"<section class="card"><h2>Attempts per {} and protocol (UTC)</h2>{}</section>"#,
        esc(&tl.resolution),
        svg::stacked("attempts over time per protocol", &labels, &stacks)
    );
    // Scan detection has no attempts (a SYN is no connection): its bar is its scan windows
    // (one per source and minute), so the chart shows scanning beside the services.
    let prows: Vec<(String, i64)> = protocols
        .iter()
        .map(|p| if p.protocol == "scan" { (p.protocol.clone(), p.events) } else { (p.protocol.clone(), p.attempts) })
        .collect();
    let crows: Vec<(String, i64)> = countries
        .iter()
        .take(12)
        .map(|c| {
            let flag = world::flag(&c.country);
            let label = if flag.is_empty() { c.country.clone() } else { format!("{flag} {}", c.country) };
            (label, c.attempts)
        })
        .collect();
    let _ = write!(
        b,
        r#"<div class="grid"><section class="card"><h2>Protocols</h2>{}{}</section><section class="card"><h2>Countries</h2>{}{}</section></div>"#,
        svg::bars("attempts per protocol (scan: source windows)", &prows),
        protocol_table(protocols),
        svg::bars("attempts per country", &crows),
        country_table(countries)
    );
    b
}

fn protocol_table(rows: &[ProtocolRow]) -> String {
    let mut s = String::from(
        r#"<table id="protocols"><thead><tr><th>protocol</th><th>attempts</th><th>logins</th><th>events</th></tr></thead><tbody>"#,
    );
    for p in rows {
        let _ = write!(
            s,
            r#"<tr data-key="{k}"><td>{k}</td><td class="n attempts">{}</td><td class="n logins">{}</td><td class="n events">{}</td></tr>"#,
            p.attempts,
            p.logins,
            p.events,
            k = esc(&p.protocol)
        );
    }
    s + "</tbody></table>"
}

fn country_table(rows: &[CountryRow]) -> String {
    let mut s = String::from(
        r#"<table id="countries"><thead><tr><th>country</th><th>attackers</th><th>attempts</th><th>logins</th></tr></thead><tbody>"#,
    );
    for c in rows {
        let _ = write!(
            s,
            r#"<tr data-key="{k}"><td class="country">{}</td><td class="n attackers">{}</td><td class="n attempts">{}</td><td class="n logins">{}</td></tr>"#,
            world::label_html(&c.country),
            c.attackers,
            c.attempts,
            c.logins,
            k = esc(&c.country)
        );
    }
    s + "</tbody></table>"
}

pub fn attackers(s: &TopSources, countries: &[CountryRow], ports: &[PortRow]) -> String {
    let mut b = format!(
        r#"<p><span id="sources-matching">{}</span> source addresses with at least {} attempts.</p>
<table id="sources"><thead><tr><th>address</th><th>label</th><th>attempts</th><th>logins</th><th>events</th><th>country</th><th>AS</th><th>first seen</th><th>last seen</th></tr></thead><tbody>"#,
        s.matching, s.min_attempts
    );
    for r in &s.rows {
        let asn = r.asn.map(|a| format!("AS{a} {}", r.as_org)).unwrap_or_default();
        let _ = write!(
            b,
            r#"<tr data-key="{ip}"><td class="mono">{link}</td><td class="label">{}</td><td class="n attempts">{}</td><td class="n logins">{}</td><td class="n events">{}</td><td class="country" title="{cname}">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>"#,
            esc(r.label.as_deref().unwrap_or("")),
            r.attempts,
            r.logins,
            r.events,
            esc(&r.country),
            esc(&asn),
            fmt_time(Some(r.first_seen_ms)),
            fmt_time(Some(r.last_seen_ms)),
            ip = esc(&r.ip),
            link = ip_link(&r.ip),
            cname = esc(world::name(&r.country).unwrap_or(""))
        );
    }
    b += "</tbody></table>";
    let _ = write!(
        b,
        r#"<div class="grid"><section class="card"><h2>Countries</h2>{}</section>"#,
        country_table(countries)
    );
    b += r#"<section class="card"><h2>Destination ports</h2><table id="ports"><thead><tr><th>port</th><th>protocol</th><th>attempts</th></tr></thead><tbody>"#;
    for p in ports {
        let _ = write!(
            b,
            r#"<tr data-key="{}/{}"><td class="n">{}</td><td>{}</td><td class="n attempts">{}</td></tr>"#,
            p.port,
            esc(&p.protocol),
            p.port,
            esc(&p.protocol),
            p.attempts
        );
    }
    b + "</tbody></table></section></div>"
}

/// Characters of a credential shown in a table cell; the whole value is in the cell's title
/// (a tooltip), so a 200-character password cannot push the table off the screen.
const CELL_CHARS: usize = 40;

/// A table cell for attacker-chosen text: at most [`CELL_CHARS`] characters, the full value in
/// `title`, clipped by CSS as well (`td.clip`).
fn clip_cell(v: &str) -> String {
    let shown: String = v.chars().take(CELL_CHARS).collect();
    let more = if shown.len() < v.len() { "…" } else { "" };
    format!(r#"<td class="mono clip" title="{}">{}{more}</td>"#, esc(v), esc(&shown))
}

pub fn credentials(c: &Credentials) -> String {
    let mut b = String::from(r#"<div class="grid3">"#);
    for (id, title, rows) in [("usernames", "User names", &c.usernames), ("passwords", "Passwords", &c.passwords)] {
        let _ = write!(
            b,
            r#"<section class="card"><h2>{title}</h2><table id="{id}" class="creds"><thead><tr><th>value</th><th class="tries">tries</th></tr></thead><tbody>"#
        );
        for r in rows {
            let _ = write!(
                b,
                r#"<tr data-key="{k}">{}<td class="n count">{}</td></tr>"#,
                clip_cell(&r.value),
                r.count,
                k = esc(&r.value)
            );
        }
        b += "</tbody></table></section>";
    }
    b += r#"<section class="card"><h2>Pairs</h2><table id="pairs" class="creds"><thead><tr><th>user</th><th>password</th><th class="tries">tries</th></tr></thead><tbody>"#;
    for p in &c.pairs {
        let _ = write!(
            b,
            r#"<tr data-key="{u}&#10;{p}">{}{}<td class="n count">{}</td></tr>"#,
            clip_cell(&p.username),
            clip_cell(&p.password),
            p.count,
            u = esc(&p.username),
            p = esc(&p.password)
        );
    }
    b += "</tbody></table></section></div>";
    // Passwords recovered from challenge-responses (`crate::recover`), marked as recovered.
    b += r#"<section class="card"><h2>Recovered passwords</h2><p class="note">MySQL, NTLM and VNC logins send a challenge-response, not the password; these were found by trying common passwords and every password seen in clear against them.</p><table id="recovered" class="creds"><thead><tr><th>user</th><th>password</th><th>protocol</th><th class="tries">logins</th></tr></thead><tbody>"#;
    for r in &c.recovered {
        let _ = write!(
            b,
            r#"<tr class="recovered">{}{}<td>{}</td><td class="n count">{}</td></tr>"#,
            clip_cell(&r.username),
            clip_cell(&format!("{} (recovered)", r.password)),
            esc(&r.protocol),
            r.count
        );
    }
    b + "</tbody></table></section>"
}

fn item_table(id: &str, key: &str, detail: &str, rows: &[ItemRow]) -> String {
    let mut s = format!(
        r#"<table id="{id}"><thead><tr><th>{key}</th><th>{detail}</th><th>count</th><th>sources</th><th>first seen</th><th>last seen</th><th>addresses</th></tr></thead><tbody>"#
    );
    for r in rows {
        let _ = write!(
            s,
            r#"<tr data-key="{k}"><td class="mono wrap">{k}</td><td>{}</td><td class="n count">{}</td><td class="n sources">{}</td><td>{}</td><td>{}</td><td class="mono small">{}</td></tr>"#,
            esc(&r.detail),
            r.count,
            r.sources,
            fmt_time(Some(r.first_seen_ms)),
            fmt_time(Some(r.last_seen_ms)),
            r.ips.iter().map(|ip| ip_link(ip)).collect::<Vec<_>>().join(" "),
            k = esc(&r.key)
        );
    }
    if rows.is_empty() {
        s += r#"<tr><td colspan="7" class="empty">none in this range</td></tr>"#;
    }
    s + "</tbody></table>"
}

pub fn payloads(p: &[ItemRow], e: &[ItemRow], d: &[ItemRow]) -> String {
    format!(
        r#"<section class="card"><h2>Captured payloads</h2>{}</section><section class="card"><h2>Exploit attempts</h2>{}</section><section class="card"><h2>Download URLs offered</h2>{}</section>"#,
        item_table("payloads", "sha256", "size (bytes)", p),
        item_table("exploits", "exploit", "CVE", e),
        item_table("downloads", "URL", "tool", d)
    )
}

/// The scans page: totals, fingerprints, top scanned ports and top scanners.
pub fn scans(s: &Scans) -> String {
    let mut b = String::from(r#"<section class="stats">"#);
    b += &stat("scan-packets", "scan packets", s.packets);
    b += &stat("scan-scanners", "scanners", s.scanners);
    b += &stat("scan-windows", "source windows", s.windows);
    b += &stat("scan-unattributed", "unattributed packets", s.unattributed_packets);
    b += &stat("scan-kernel-drops", "kernel drops", s.kernel_drops);
    b += "</section>";
    if s.truncated {
        b += r#"<p class="note" id="scans-truncated">Too many scan windows in this range: the lists are cut. Narrow the range.</p>"#;
    }
    let fps: Vec<(String, i64)> = s.fingerprints.iter().map(|f| (f.value.clone(), f.count)).collect();
    let ports: Vec<(String, i64)> =
        s.top_ports.iter().take(12).map(|p| (format!("{}/{}", p.port, p.transport), p.windows)).collect();
    let _ = write!(
        b,
        r#"<div class="grid"><section class="card"><h2>Fingerprints (packets)</h2>{}</section><section class="card"><h2>Most scanned ports (source windows)</h2>{}"#,
        svg::bars("packets per scanner fingerprint", &fps),
        svg::bars("source windows per port", &ports)
    );
    b += r#"<table id="scan-ports"><thead><tr><th>port</th><th>transport</th><th>source windows</th></tr></thead><tbody>"#;
    for p in &s.top_ports {
        let _ = write!(b, "<tr><td>{}</td><td>{}</td><td>{}</td></tr>", p.port, esc(&p.transport), p.windows);
    }
    if s.top_ports.is_empty() {
        b += r#"<tr><td colspan="3" class="empty">none in this range</td></tr>"#;
    }
    b += r#"</tbody></table></section></div><section class="card"><h2>Top scanners</h2><table id="scanners"><thead><tr><th>address</th><th>packets</th><th>windows</th><th>most ports in a window</th><th>fingerprints</th><th>first seen</th><th>last seen</th></tr></thead><tbody>"#;
    for r in &s.top_scanners {
        let fps: Vec<String> = r.fingerprints.iter().map(|f| format!("{} {}", f.value, f.count)).collect();
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            ip_link(&r.ip),
            r.packets,
            r.windows,
            r.max_distinct_ports,
            esc(&fps.join(", ")),
            fmt_time(Some(r.first_seen_ms)),
            fmt_time(Some(r.last_seen_ms))
        );
    }
    if s.top_scanners.is_empty() {
        b += r#"<tr><td colspan="7" class="empty">none in this range</td></tr>"#;
    }
    b + "</tbody></table></section>"
}

fn mib(b: u64) -> String {
    format!("{:.1}", b as f64 / 1048576.0)
}

pub fn sensors(rows: &[SensorHealth], now_ms: i64) -> String {
    let mut b = String::from(
        r#"<table id="sensors"><thead><tr><th>sensor</th><th>last contact</th><th>events stored</th><th>backlog</th><th>evicted</th><th>shed</th><th>CPU %</th><th>RSS MiB</th><th>mem avail MiB</th><th>disk free MiB</th><th>store MiB</th><th>governor</th></tr></thead><tbody>"#,
    );
    for s in rows {
        let h = s.health.clone().unwrap_or_default();
        let age = s.last_contact_ms.map(|t| (now_ms - t) / 1000);
        let stale = age.map(|a| a > 300).unwrap_or(true);
        let _ = write!(
            b,
            r#"<tr data-key="{k}"><td>{k}{rev}</td><td class="{cls}">{}</td><td class="n events">{}</td><td class="n backlog">{}</td><td class="n evicted">{}</td><td class="n shed">{}</td><td class="n">{:.1}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td><td>{}</td></tr>"#,
            fmt_time(s.last_contact_ms),
            s.events_stored,
            h.backlog_events,
            s.evicted_total,
            s.shed_total,
            h.cpu_permille as f64 / 10.0,
            mib(h.rss_bytes),
            mib(h.mem_available_bytes),
            mib(h.disk_free_bytes),
            mib(h.store_bytes),
            esc(&h.governor),
            k = esc(&s.name),
            rev = if s.revoked { " (revoked)" } else { "" },
            cls = if stale { "stale" } else { "fresh" }
        );
    }
    if rows.is_empty() {
        b += r#"<tr><td colspan="12" class="empty">no sensors enrolled</td></tr>"#;
    }
    b + "</tbody></table>"
}

/// The world map of attempts per country (overview); `rows` are every country of the range.
pub fn world_map(rows: &[CountryRow]) -> String {
    let v: Vec<(String, i64)> = rows.iter().map(|c| (c.country.clone(), c.attempts)).collect();
    format!(
        r#"<section class="card"><h2>Attempts per country</h2>{}<p class="small">Shapes: Natural Earth (public domain). Darker: more attempts (log scale).</p></section>"#,
        world::map("attempts per country", &v)
    )
}

/// The field report's charts (attackers page): attackers with at least N attempts by country,
/// their attempts by country, and attempts per protocol on a log scale.
pub fn field_charts(f: &crate::analytics::FieldCharts) -> String {
    let label = |cc: &str| match world::name(cc) {
        Some(n) => format!("{} {cc} {n}", world::flag(cc)),
        None => cc.to_string(),
    };
    let by_attackers: Vec<(String, i64)> =
        f.attackers_by_country.iter().take(40).map(|c| (label(&c.country), c.attackers)).collect();
    let by_attacks: Vec<(String, i64)> =
        f.attacks_by_country.iter().take(40).map(|c| (label(&c.country), c.attempts)).collect();
    let protocols: Vec<(String, i64)> = f.protocols.iter().map(|p| (p.protocol.clone(), p.attempts)).collect();
    let mut b = format!(
        r#"<div class="grid"><section class="card" id="field-report"><h2>Attackers with at least <span id="field-min">{min}</span> attempts (<span id="field-attackers">{n}</span>) by country</h2>{}</section>"#,
        svg::columns(
            &format!("attackers with at least {} attempts per country", f.min_attempts),
            "chart-attackers-by-country",
            &by_attackers,
            false
        ),
        min = f.min_attempts,
        n = f.attackers,
    );
    let _ = write!(
        b,
        r#"<section class="card"><h2>Attacks per country (attackers with at least {min} attempts)</h2>{}</section></div><section class="card"><h2>Protocol distribution (log10 scale, all attempts)</h2>{}</section>"#,
        svg::columns("attempts per country", "chart-attacks-by-country", &by_attacks, false),
        svg::columns("attempts per protocol, log10", "chart-protocols-log", &protocols, true),
        min = f.min_attempts,
    );
    b += r#"<section class="card"><h2>Countries of attackers with at least N attempts</h2><table id="field-countries"><thead><tr><th>country</th><th>attackers</th><th>attempts</th></tr></thead><tbody>"#;
    for c in &f.attackers_by_country {
        let _ = write!(
            b,
            r#"<tr data-key="{k}"><td class="country">{}</td><td class="n attackers">{}</td><td class="n attempts">{}</td></tr>"#,
            world::label_html(&c.country),
            c.attackers,
            c.attempts,
            k = esc(&c.country)
        );
    }
    if f.attackers_by_country.is_empty() {
        b += r#"<tr><td colspan="3" class="empty">none in this range</td></tr>"#;
    }
    b + "</tbody></table></section>"
}

/// Puts a CSV download link before every table whose id `has_csv` knows (`/api/csv/ID` with
/// the page's filter): the tables are ours, so their ids are found by their fixed opening.
pub fn csv_links(body: &str, query: &str, has_csv: impl Fn(&str) -> bool) -> String {
    const OPEN: &str = "<table id=\"";
    let mut out = String::with_capacity(body.len() + 1024);
    let mut rest = body;
    while let Some(at) = rest.find(OPEN) {
        out.push_str(&rest[..at]);
        let after = &rest[at + OPEN.len()..];
        let id = after.split('"').next().unwrap_or("");
        if has_csv(id) {
            let _ = write!(
                out,
                r#"<a class="csv" id="csv-{id}" href="/api/csv/{id}{q}" download="{id}.csv">CSV</a>"#,
                id = esc(id),
                q = esc(query)
            );
        }
        out.push_str(OPEN);
        rest = after;
    }
    out.push_str(rest);
    out
}

pub fn error_page(msg: &str) -> String {
    format!(r#"<p class="error">{}</p>"#, esc(msg))
}
