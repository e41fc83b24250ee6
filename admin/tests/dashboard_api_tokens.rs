//! Issue 21: per-user API tokens and the CSV of every table. Every `/api/...` endpoint is asked
//! without credentials, with a made-up token, a malformed header, a revoked token, a good token
//! and a session cookie; pages and forms must ignore tokens; wrong tokens are throttled like
//! wrong passwords; CSV cells an attacker chose cannot run as spreadsheet formulas.
// Tests, benches and examples may panic; the workspace denies unwrap/expect elsewhere.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod analytics_support;
use analytics_support::*;
use drosera_admin::dashboard::DashboardConfig;
use drosera_admin::users;
use drosera_uplink::event::Protocol;

const RANGE: &str = "since=1714521600000&until=1715385600000";

/// Every JSON endpoint, then every CSV table.
const JSON: [&str; 14] = [
    "totals",
    "timeline",
    "sources",
    "countries",
    "protocols",
    "ports",
    "credentials",
    "payloads",
    "exploits",
    "downloads",
    "sensors",
    "scans",
    "report",
    "field",
];
const CSV: [&str; 16] = [
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

fn session_cookie(a: std::net::SocketAddr, user: &str, pass: &str) -> String {
    let r = http(a, "GET", "/login", &[], "");
    let c = r.cookies().into_iter().find(|c| c.starts_with("drosera_login=")).unwrap().to_string();
    let nonce = c.trim_start_matches("drosera_login=").split(';').next().unwrap().to_string();
    let body = format!("csrf={nonce}&username={user}&password={}", pass.replace(' ', "+"));
    let cookie = format!("drosera_login={nonce}");
    let r =
        http(a, "POST", "/login", &[("Content-Type", "application/x-www-form-urlencoded"), ("Cookie", &cookie)], &body);
    assert_eq!(r.status, 303, "login of {user}");
    let sc = r.cookies().into_iter().find(|c| c.starts_with("drosera_session=")).unwrap().to_string();
    sc.split(';').next().unwrap().to_string()
}

#[test]
fn every_api_endpoint_checks_tokens_and_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let c = fixture(&dir.path().join("a.db"));
    // Attacker-chosen credentials that a spreadsheet would run as formulas.
    insert(
        &*c,
        "s1",
        &[
            ev(1000, T0 + 3 * HOUR, Protocol::Ssh, "9.9.9.9", 22, 900, login("=HYPERLINK(\"http://x\")", "+1+1")),
            ev(1001, T0 + 3 * HOUR, Protocol::Ssh, "9.9.9.9", 22, 900, login("@SUM(A1)", "-2")),
            ev(1002, T0 + 3 * HOUR, Protocol::Ssh, "9.9.9.9", 22, 900, conn()),
        ],
    );
    users::add_user(&*c, "admin", "correct horse").unwrap();
    users::add_user(&*c, "bob", "battery staple").unwrap();
    let (_, good) = users::create_api_token(&*c, "admin", "tests", 10).unwrap();
    let (revoked_id, revoked) = users::create_api_token(&*c, "admin", "old", 10).unwrap();
    let (_, bobs) = users::create_api_token(&*c, "bob", "", 10).unwrap();
    assert!(users::revoke_api_token(&*c, "admin", &revoked_id).unwrap());
    let loc = c.loc.clone();
    drop(c);
    // Enough free failures that the per-endpoint refusals below are not throttled (the
    // throttle has its own test below).
    let cfg = DashboardConfig { login_free_failures: 1000, login_failures_per_minute: 1000, ..Default::default() };
    let served = serve_dashboard_cfg(&loc, cfg);
    let a = served.addr;
    let session = session_cookie(a, "admin", "correct horse");

    let bearer = |t: &str| format!("Bearer {t}");
    let made_up = format!("{}{}", users::API_TOKEN_PREFIX, "ab".repeat(32));
    let paths: Vec<String> = JSON
        .iter()
        .map(|e| format!("/api/{e}?{RANGE}&min_attempts=1"))
        .chain(CSV.iter().map(|t| format!("/api/csv/{t}?{RANGE}&min_attempts=1")))
        .collect();
    for p in &paths {
        let no_auth = http(a, "GET", p, &[], "");
        assert_eq!(no_auth.status, 401, "{p} without credentials");
        for (what, h) in [
            ("made-up token", bearer(&made_up)),
            ("revoked token", bearer(&revoked)),
            ("token without its prefix", bearer(&good[users::API_TOKEN_PREFIX.len()..])),
            ("not Bearer", format!("Basic {good}")),
            ("empty", String::new()),
        ] {
            let r = http(a, "GET", p, &[("Authorization", &h)], "");
            assert_eq!(r.status, 401, "{p}: {what}");
            assert_eq!(r.header("www-authenticate"), Some("Bearer"), "{p}: {what}");
        }
        // A bad token is refused even next to a good session cookie.
        let r = http(a, "GET", p, &[("Authorization", &bearer(&made_up)), ("Cookie", &session)], "");
        assert_eq!(r.status, 401, "{p}: bad token with a cookie");
        let by_token = http(a, "GET", p, &[("Authorization", &bearer(&good))], "");
        let by_cookie = http(a, "GET", p, &[("Cookie", &session)], "");
        let by_bob = http(a, "GET", p, &[("Authorization", &bearer(&bobs))], "");
        assert_eq!((by_token.status, by_cookie.status, by_bob.status), (200, 200, 200), "{p}");
        assert_eq!(by_token.body, by_cookie.body, "{p}: token and session see the same");
        assert!(by_token.body.len() > 10, "{p}: {}", by_token.body);
    }

    // The field report's charts over the fixture: of the attackers with at least 10 attempts,
    // one is in Ireland (100 rolled-up SMB attempts) and one in the US (12 telnet attempts).
    let r = http(a, "GET", &format!("/api/field?{RANGE}&min_attempts=10"), &[("Authorization", &bearer(&good))], "");
    let f: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(f["attackers"], 2);
    let rows = |k: &str| -> Vec<(String, i64, i64)> {
        f[k].as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["country"].as_str().unwrap().to_string(),
                    c["attackers"].as_i64().unwrap(),
                    c["attempts"].as_i64().unwrap(),
                )
            })
            .collect()
    };
    let want = vec![("IE".to_string(), 1, 100), ("US".to_string(), 1, 12)];
    assert_eq!((rows("attackers_by_country"), rows("attacks_by_country")), (want.clone(), want));
    let protocols: Vec<&str> =
        f["protocols"].as_array().unwrap().iter().map(|p| p["protocol"].as_str().unwrap()).collect();
    assert_eq!(protocols, ["smb", "telnet", "ssh", "http"]);
    let r = http(a, "GET", &format!("/api/csv/field-countries?{RANGE}&min_attempts=10"), &[("Cookie", &session)], "");
    assert_eq!(r.body, "country,name,attackers,attempts\r\nIE,Ireland,1,100\r\nUS,United States of America,1,12\r\n");

    // Tokens open no page and pass no form.
    for p in ["/", "/attackers", "/credentials", "/payloads", "/scans", "/sensors"] {
        let r = http(a, "GET", p, &[("Authorization", &bearer(&good))], "");
        assert_eq!((r.status, r.header("location")), (303, Some("/login")), "{p} with a token");
    }
    let r = http(
        a,
        "POST",
        "/logout",
        &[("Authorization", &bearer(&good)), ("Content-Type", "application/x-www-form-urlencoded")],
        "csrf=x",
    );
    assert_eq!((r.status, r.header("location")), (303, Some("/login")));

    // CSV: a header row, the JSON's numbers, attacker formulas defused.
    let r = http(a, "GET", &format!("/api/csv/usernames?{RANGE}"), &[("Authorization", &bearer(&good))], "");
    assert_eq!(r.header("content-type"), Some("text/csv; charset=utf-8"));
    assert!(r.header("content-disposition").unwrap().contains("usernames.csv"));
    let lines: Vec<&str> = r.body.split("\r\n").collect();
    assert_eq!(lines[0], "value,tries");
    assert!(lines.contains(&"root,8"), "{lines:?}");
    assert!(lines.contains(&"\"'=HYPERLINK(\"\"http://x\"\")\",1"), "{lines:?}");
    assert!(lines.contains(&"'@SUM(A1),1"), "{lines:?}");
    assert!(!r.body.contains("\n=") && !r.body.contains(",="), "{}", r.body);
    let r = http(a, "GET", &format!("/api/csv/passwords?{RANGE}"), &[("Cookie", &session)], "");
    assert!(r.body.contains("\r\n'+1+1,1\r\n") && r.body.contains("\r\n'-2,1\r\n"), "{}", r.body);
    let r = http(a, "GET", &format!("/api/csv/countries?{RANGE}"), &[("Cookie", &session)], "");
    assert!(r.body.starts_with("country,name,attackers,attempts,logins\r\n"), "{}", r.body);
    assert!(r.body.contains("US,United States of America,"), "{}", r.body);
    let r = http(a, "GET", "/api/csv/nope", &[("Cookie", &session)], "");
    assert_eq!(r.status, 404);

    // Every table on the pages links its CSV, with the page's filter.
    for (p, tables) in [
        ("/", &["protocols", "countries", "labelled"][..]),
        ("/attackers", &["sources", "ports", "field-countries", "countries"][..]),
        ("/credentials", &["usernames", "passwords", "pairs", "recovered"][..]),
        ("/payloads", &["payloads", "exploits", "downloads"][..]),
        ("/scans", &["scan-ports", "scanners"][..]),
        ("/sensors", &["sensors"][..]),
    ] {
        let r = http(a, "GET", &format!("{p}?{RANGE}"), &[("Cookie", &session)], "");
        assert_eq!(r.status, 200, "{p}");
        let tables_on_page = r.body.matches("<table id=\"").count();
        let links = r.body.matches("<a class=\"csv\"").count();
        assert_eq!(links, tables_on_page, "{p}: every table has a CSV link");
        for t in tables {
            let href = format!("href=\"/api/csv/{t}?since=1714521600000&amp;until=1715385600000\"");
            assert!(r.body.contains(&href), "{p}: {t}");
        }
    }
}

#[test]
fn wrong_tokens_are_throttled_like_wrong_logins() {
    let dir = tempfile::tempdir().unwrap();
    let c = fixture(&dir.path().join("a.db"));
    users::add_user(&*c, "admin", "correct horse").unwrap();
    let (_, good) = users::create_api_token(&*c, "admin", "", 10).unwrap();
    let loc = c.loc.clone();
    drop(c);
    let served = serve_dashboard(&loc, true);
    let a = served.addr;
    let good = format!("Bearer {good}");
    assert_eq!(http(a, "GET", "/api/totals", &[("Authorization", &good)], "").status, 200);
    let bad = format!("Bearer {}{}", users::API_TOKEN_PREFIX, "0".repeat(64));
    // The default allows 5 wrong logins from an address; then it waits.
    for i in 0..5 {
        assert_eq!(http(a, "GET", "/api/totals", &[("Authorization", &bad)], "").status, 401, "try {i}");
    }
    let r = http(a, "GET", "/api/totals", &[("Authorization", &bad)], "");
    assert_eq!(r.status, 429);
    assert!(r.header("retry-after").is_some());
    // While throttled, even a good token waits (guessing gains nothing by being right).
    assert_eq!(http(a, "GET", "/api/totals", &[("Authorization", &good)], "").status, 429);
}
