//! Every table of the dashboard as CSV (`/api/csv/TABLE`, the table's `id` on its page).
//!
//! WHY one function per table id rather than scraping the HTML: the CSV carries the same
//! numbers as the JSON API, from the same [`crate::analytics`] calls with the same filter, in
//! full (no clipping). Cells go through [`crate::export::csv_cell`], the export's cell writer:
//! attacker text that a spreadsheet would run as a formula (`=`, `+`, `-`, `@`) gets a leading
//! `'`, control and format characters are written as visible escapes, and quoting follows
//! RFC 4180. Numbers are written as numbers (a negative one is not a formula).

use crate::analytics::{self, fmt_time, AnalyticsError, ItemRow, Query};
use crate::export::csv_cell;
use crate::storage::Storage;

/// The table ids that have a CSV (the dashboard links only these).
pub const TABLES: [&str; 16] = [
    "protocols",
    "countries",
    "labelled",
    "sources",
    "ports",
    "usernames",
    "passwords",
    "pairs",
    "payloads",
    "exploits",
    "downloads",
    "scan-ports",
    "scanners",
    "sensors",
    "field-countries",
    "recovered",
];

pub fn has(id: &str) -> bool {
    TABLES.contains(&id)
}

/// A cell: attacker-influenced text (`T`) or a number (`N`).
enum Cell {
    T(String),
    N(i64),
}
use Cell::{N, T};

fn render(header: &[&str], rows: Vec<Vec<Cell>>) -> String {
    let mut out = header.join(",");
    out.push_str("\r\n");
    for r in rows {
        let cells: Vec<String> = r
            .into_iter()
            .map(|c| match c {
                T(s) => csv_cell(&s, true),
                N(n) => n.to_string(),
            })
            .collect();
        out.push_str(&cells.join(","));
        out.push_str("\r\n");
    }
    out
}

fn items(rows: &[ItemRow], key: &str, detail: &str) -> String {
    render(
        &[key, detail, "count", "sources", "first_seen", "last_seen", "addresses"],
        rows.iter()
            .map(|r| {
                vec![
                    T(r.key.clone()),
                    T(r.detail.clone()),
                    N(r.count),
                    N(r.sources),
                    T(fmt_time(Some(r.first_seen_ms))),
                    T(fmt_time(Some(r.last_seen_ms))),
                    T(r.ips.join(" ")),
                ]
            })
            .collect(),
    )
}

fn country_name(cc: &str) -> String {
    super::world::name(cc).unwrap_or("").to_string()
}

/// Table `id` as CSV over `q` (`n` rows per list, `min_attempts` for the attackers page), or
/// `None` for an unknown id.
pub fn table(
    db: &dyn Storage,
    q: &Query,
    id: &str,
    n: usize,
    min_attempts: i64,
) -> Result<Option<String>, AnalyticsError> {
    Ok(Some(match id {
        "protocols" => render(
            &["protocol", "attempts", "logins", "events"],
            analytics::protocols(db, q)?
                .into_iter()
                .map(|p| vec![T(p.protocol), N(p.attempts), N(p.logins), N(p.events)])
                .collect(),
        ),
        "countries" => render(
            &["country", "name", "attackers", "attempts", "logins"],
            analytics::countries(db, q, n)?
                .into_iter()
                .map(|c| {
                    let name = country_name(&c.country);
                    vec![T(c.country), T(name), N(c.attackers), N(c.attempts), N(c.logins)]
                })
                .collect(),
        ),
        "labelled" => render(
            &["label", "included", "attempts", "logins", "events", "addresses", "top_addresses"],
            analytics::labelled(db, q, 10)?
                .into_iter()
                .map(|l| {
                    let top: Vec<String> = l.top_sources.iter().take(5).map(|s| s.ip.clone()).collect();
                    vec![
                        T(l.label),
                        T(if l.included { "included" } else { "left out" }.into()),
                        N(l.attempts),
                        N(l.logins),
                        N(l.events),
                        N(l.attackers),
                        T(top.join(" ")),
                    ]
                })
                .collect(),
        ),
        "sources" => render(
            &[
                "address",
                "label",
                "attempts",
                "logins",
                "events",
                "country",
                "asn",
                "as_org",
                "first_seen",
                "last_seen",
            ],
            analytics::top_sources(db, q, min_attempts, n)?
                .rows
                .into_iter()
                .map(|r| {
                    vec![
                        T(r.ip),
                        T(r.label.unwrap_or_default()),
                        N(r.attempts),
                        N(r.logins),
                        N(r.events),
                        T(r.country),
                        T(r.asn.map(|a| a.to_string()).unwrap_or_default()),
                        T(r.as_org),
                        T(fmt_time(Some(r.first_seen_ms))),
                        T(fmt_time(Some(r.last_seen_ms))),
                    ]
                })
                .collect(),
        ),
        "ports" => render(
            &["port", "protocol", "attempts"],
            analytics::ports(db, q, n)?.into_iter().map(|p| vec![N(p.port), T(p.protocol), N(p.attempts)]).collect(),
        ),
        "usernames" | "passwords" => {
            let c = analytics::credentials(db, q, n)?;
            let rows = if id == "usernames" { c.usernames } else { c.passwords };
            render(&["value", "tries"], rows.into_iter().map(|r| vec![T(r.value), N(r.count)]).collect())
        }
        "pairs" => render(
            &["user", "password", "tries"],
            analytics::credentials(db, q, n)?
                .pairs
                .into_iter()
                .map(|p| vec![T(p.username), T(p.password), N(p.count)])
                .collect(),
        ),
        "recovered" => render(
            &["user", "password", "protocol", "logins", "first_seen", "last_seen"],
            analytics::credentials(db, q, n)?
                .recovered
                .into_iter()
                .map(|r| {
                    vec![
                        T(r.username),
                        T(r.password),
                        T(r.protocol),
                        N(r.count),
                        T(fmt_time(Some(r.first_seen_ms))),
                        T(fmt_time(Some(r.last_seen_ms))),
                    ]
                })
                .collect(),
        ),
        "payloads" => items(&analytics::payloads(db, q, n)?, "sha256", "size_bytes"),
        "exploits" => items(&analytics::exploits(db, q, n)?, "exploit", "cve"),
        "downloads" => items(&analytics::downloads(db, q, n)?, "url", "tool"),
        "scan-ports" => render(
            &["port", "transport", "source_windows"],
            analytics::scans(db, q, n)?
                .top_ports
                .into_iter()
                .map(|p| vec![N(p.port), T(p.transport), N(p.windows)])
                .collect(),
        ),
        "scanners" => render(
            &["address", "packets", "windows", "most_ports_in_a_window", "fingerprints", "first_seen", "last_seen"],
            analytics::scans(db, q, n)?
                .top_scanners
                .into_iter()
                .map(|r| {
                    let fps: Vec<String> = r.fingerprints.iter().map(|f| format!("{} {}", f.value, f.count)).collect();
                    vec![
                        T(r.ip),
                        N(r.packets),
                        N(r.windows),
                        N(r.max_distinct_ports),
                        T(fps.join(", ")),
                        T(fmt_time(Some(r.first_seen_ms))),
                        T(fmt_time(Some(r.last_seen_ms))),
                    ]
                })
                .collect(),
        ),
        "sensors" => render(
            &[
                "sensor",
                "revoked",
                "last_contact",
                "events_stored",
                "backlog",
                "evicted",
                "shed",
                "cpu_permille",
                "rss_bytes",
                "mem_available_bytes",
                "disk_free_bytes",
                "store_bytes",
                "governor",
            ],
            analytics::sensors(db, q)?
                .into_iter()
                .map(|s| {
                    let h = s.health.clone().unwrap_or_default();
                    let big = |v: u64| N(i64::try_from(v).unwrap_or(i64::MAX));
                    vec![
                        T(s.name),
                        T(s.revoked.to_string()),
                        T(fmt_time(s.last_contact_ms)),
                        N(s.events_stored),
                        big(h.backlog_events),
                        N(s.evicted_total),
                        N(s.shed_total),
                        N(i64::from(h.cpu_permille)),
                        big(h.rss_bytes),
                        big(h.mem_available_bytes),
                        big(h.disk_free_bytes),
                        big(h.store_bytes),
                        T(h.governor),
                    ]
                })
                .collect(),
        ),
        "field-countries" => render(
            &["country", "name", "attackers", "attempts"],
            analytics::field_charts(db, q, min_attempts, n)?
                .attackers_by_country
                .into_iter()
                .map(|c| {
                    let name = country_name(&c.country);
                    vec![T(c.country), T(name), N(c.attackers), N(c.attempts)]
                })
                .collect(),
        ),
        _ => return Ok(None),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_are_defused_and_numbers_stay_numbers() {
        let s = render(
            &["a", "b"],
            vec![vec![T("=HYPERLINK(\"x\")".into()), N(-5)], vec![T("+1,@x".into()), N(3)], vec![T("-2".into()), N(0)]],
        );
        assert_eq!(s, "a,b\r\n\"'=HYPERLINK(\"\"x\"\")\",-5\r\n\"'+1,@x\",3\r\n'-2,0\r\n");
        assert!(has("sources") && !has("nope"));
    }
}
