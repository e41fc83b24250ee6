//! Drives the dashboard in headless Chromium (Debian's `chromium`) over the DevTools protocol:
//! logs in through the real form, opens every page, and checks the numbers shown against the
//! JSON API as the same browser session sees it. Saves a screenshot of the overview.
// Tests, benches and examples may panic; the workspace denies unwrap/expect elsewhere.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod analytics_support;
mod chromium_support;
use analytics_support::*;
use chromium_support::{logged_in, Cdp, Launch, LoggedIn};
use serde_json::{json, Value};
use std::time::Duration;

const RANGE: &str = "since=1714521600000&until=1715385600000";

const LAUNCH: Launch<'static> = Launch {
    window: (1280, 1100),
    hide_scrollbars: false,
    needs: &[],
    packages: "chromium",
    domains: &["Network"],
    timeout: Duration::from_secs(30),
};

fn num(v: &Value) -> String {
    v.as_i64().map(|n| n.to_string()).unwrap_or_else(|| v.as_str().unwrap_or("").to_string())
}

#[test]
fn chromium_logs_in_and_every_page_matches_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("a.db");
    let c = fixture(&db);
    let Some(LoggedIn { served: _served, browser: _browser, cdp: mut b, base }) = logged_in(c, &LAUNCH) else {
        return;
    };
    // The session cookie is Secure, HttpOnly and SameSite=Strict, and scripts cannot read it.
    let cookies = b.call("Network.getCookies", json!({ "urls": [base.clone()] }));
    let sc = cookies["cookies"].as_array().unwrap().iter().find(|c| c["name"] == "drosera_session").cloned();
    let sc = sc.unwrap_or_else(|| panic!("no session cookie: {cookies}"));
    assert_eq!(
        (sc["secure"].clone(), sc["httpOnly"].clone(), sc["sameSite"].clone()),
        (json!(true), json!(true), json!("Strict"))
    );
    assert_eq!(b.eval("document.cookie"), json!(""));

    // Overview.
    let report = b.api(&base, &format!("/api/report?{RANGE}&min_attempts=10"));
    let totals = &report["totals"];
    assert_eq!(totals["attempts"], 116);
    b.goto(&base, &format!("/?{RANGE}"), "/");
    for (id, key) in [
        ("total-attempts", "attempts"),
        ("total-attackers", "attackers"),
        ("total-countries", "countries"),
        ("total-logins", "logins"),
        ("total-payloads", "payloads"),
        ("total-exploits", "exploits"),
        ("total-rolled-up", "rolled_up"),
    ] {
        let shown = b.eval(&format!("document.getElementById('{id}').textContent"));
        assert_eq!(shown.as_str().unwrap(), num(&totals[key]), "{id}");
    }
    // Attempts over time, the same per protocol (stacked), protocols, countries.
    assert_eq!(b.eval("document.querySelectorAll('svg.chart').length"), json!(4));
    assert!(b.eval("document.querySelectorAll('svg.stacked rect.bar').length").as_u64().unwrap() > 0);
    let protocols = b.table("protocols", &["attempts", "logins"]);
    let want: Vec<Vec<String>> = report["protocols"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| vec![num(&p["protocol"]), num(&p["attempts"]), num(&p["logins"])])
        .collect();
    assert_eq!(protocols, want);
    let countries = b.table("countries", &["attackers", "attempts"]);
    let want: Vec<Vec<String>> = report["countries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| vec![num(&p["country"]), num(&p["attackers"]), num(&p["attempts"])])
        .collect();
    assert_eq!(countries, want);
    assert_eq!(countries.len(), 4);
    let shot = b.call("Page.captureScreenshot", json!({ "format": "png" }));
    use base64::Engine;
    let png = base64::engine::general_purpose::STANDARD.decode(shot["data"].as_str().unwrap()).unwrap();
    assert!(png.starts_with(b"\x89PNG"));
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-overview.png");
    std::fs::write(&out, &png).unwrap();
    eprintln!("overview screenshot: {}", out.display());

    // Attackers with at least 10 attempts.
    b.goto(&base, &format!("/attackers?{RANGE}&min_attempts=10"), "/attackers");
    let rows = b.table("sources", &["attempts", "logins", "country"]);
    let want: Vec<Vec<String>> = report["top_sources"]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| vec![num(&r["ip"]), num(&r["attempts"]), num(&r["logins"]), num(&r["country"])])
        .collect();
    assert_eq!(rows, want);
    assert_eq!(rows.len(), 2);
    assert_eq!(b.eval("document.getElementById('sources-matching').textContent"), json!("2"));
    let ports = b.table("ports", &["attempts"]);
    assert_eq!(ports[0], vec!["445/smb".to_string(), "100".to_string()]);

    // Credentials.
    b.goto(&base, &format!("/credentials?{RANGE}"), "/credentials");
    for (id, key) in [("usernames", "usernames"), ("passwords", "passwords")] {
        let rows = b.table(id, &["count"]);
        let want: Vec<Vec<String>> = report["credentials"][key]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| vec![num(&r["value"]), num(&r["count"])])
            .collect();
        assert_eq!(rows, want, "{id}");
    }
    let pairs = b.table("pairs", &["count"]);
    let want: Vec<Vec<String>> = report["credentials"]["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| vec![format!("{}\n{}", num(&r["username"]), num(&r["password"])), num(&r["count"])])
        .collect();
    assert_eq!(pairs, want);
    assert_eq!(pairs[0], vec!["root\nxc3511".to_string(), "5".to_string()]);

    // Payloads, exploits, downloads (the URL is attacker text: shown as text, not markup).
    b.goto(&base, &format!("/payloads?{RANGE}"), "/payloads");
    for id in ["payloads", "exploits", "downloads"] {
        let rows = b.table(id, &["count", "sources"]);
        let want: Vec<Vec<String>> = report[id]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| vec![num(&r["key"]), num(&r["count"]), num(&r["sources"])])
            .collect();
        assert_eq!(rows, want, "{id}");
        assert_eq!(rows.len(), 1, "{id}");
    }
    assert_eq!(b.eval("document.querySelectorAll('main b').length"), json!(0));

    // Sensors.
    b.goto(&base, &format!("/sensors?{RANGE}"), "/sensors");
    let rows = b.table("sensors", &["events", "backlog", "evicted", "shed"]);
    let want: Vec<Vec<String>> = report["sensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            vec![
                num(&s["name"]),
                num(&s["events_stored"]),
                s["health"].get("backlog_events").map(num).unwrap_or_else(|| "0".into()),
                num(&s["evicted_total"]),
                num(&s["shed_total"]),
            ]
        })
        .collect();
    assert_eq!(rows, want);
    assert_eq!(rows[0], vec!["s1", "26", "3", "7", "100"]);

    // Issue 21: the attacker page (reached by the address's link), its session, and search.
    b.goto(&base, &format!("/attackers?{RANGE}"), "/attackers");
    b.eval("document.querySelector('#sources a[href=\"/attacker/8.8.8.8\"]').click(); true");
    b.wait_for("/attacker/8.8.8.8");
    let api = b.api(&base, &format!("/api/attacker?addr=8.8.8.8&{RANGE}"));
    b.goto(&base, &format!("/attacker/8.8.8.8?{RANGE}"), "/attacker/8.8.8.8");
    let cells = |b: &mut Cdp, id: &str| -> Vec<Vec<String>> {
        let expr = format!(
            "[...document.querySelectorAll('#{id} tbody tr')].map(tr => [...tr.cells].map(td => td.textContent))"
        );
        serde_json::from_value(b.eval(&expr)).unwrap()
    };
    let creds: Vec<Vec<String>> = cells(&mut b, "credentials").into_iter().map(|r| r[..3].to_vec()).collect();
    let want: Vec<Vec<String>> = api["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| vec![num(&c["value"]), num(&c["detail"]), num(&c["count"])])
        .collect();
    assert_eq!(creds, want);
    assert_eq!(creds[0], vec!["root", "xc3511", "5"]);
    assert_eq!(cells(&mut b, "sessions").len(), 12);
    assert_eq!(b.eval("document.getElementById('attempts').textContent"), json!("12"));
    let shot = b.call("Page.captureScreenshot", json!({ "format": "png" }));
    let png = base64::engine::general_purpose::STANDARD.decode(shot["data"].as_str().unwrap()).unwrap();
    std::fs::write(std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-attacker.png"), &png).unwrap();
    b.eval("document.querySelector('#sessions a.session').click(); true");
    b.wait_for("/session/s1/111");
    let events = cells(&mut b, "events");
    assert_eq!(events.iter().map(|r| r[2].as_str()).collect::<Vec<_>>(), vec!["connection"]);
    b.goto(&base, &format!("/search?q=xc3511&{RANGE}"), "/search");
    assert_eq!(cells(&mut b, "hits").len(), 5);
    assert_eq!(b.eval("document.querySelectorAll('#hits a.ip').length"), json!(5));

    // Logging out through the page's form ends the session.
    b.eval("document.querySelector('form.logout').submit(); true");
    b.wait_for("/login");
    b.goto(&base, "/attackers", "/login");
}

/// Issue 14: on a sensor's first hour the time chart shows a point (a one-point polyline draws
/// nothing), a 200-character password stays inside the credentials table (clipped, the whole
/// value in the cell's title), and an eviction is stated on the overview.
#[test]
fn chromium_first_hour_chart_long_passwords_and_the_eviction_note() {
    use drosera_uplink::event::{Detail, Event, EvictedKind, Priority, Protocol};
    let dir = tempfile::tempdir().unwrap();
    let c = Db::open(&location(&dir.path().join("a.db")));
    let now = drosera_admin::analytics::now_ms();
    // One hour of data, even if that hour just began.
    let t = now - (now % HOUR).min(60_000);
    let long: String = (0..200).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    let mut gap = Event::internal(Detail::EvictionSummary {
        count: 40,
        first_seq: 10,
        last_seq: 49,
        first_time_ms: t,
        last_time_ms: t,
        per_priority: vec![(Priority::Noise, 40)],
        per_kind: vec![EvictedKind {
            hour_ms: t - t.rem_euclid(HOUR),
            protocol: Protocol::Ssh,
            dst_port: 22,
            kind: "connection".into(),
            events: 40,
            count: 40,
        }],
        top_sources: vec![],
        sources: 1,
    });
    gap.seq = 3;
    gap.time_ms = t;
    insert(
        &*c,
        "s1",
        &[
            ev(1, t, Protocol::Ssh, "203.0.113.1", 22, 1, login("root", &long)),
            ev(2, t, Protocol::Ssh, "203.0.113.1", 22, 1, conn()),
            gap,
            // An HTTP login form's body, which the sensor records as a payload.
            ev(
                4,
                t,
                Protocol::Http,
                "203.0.113.9",
                80,
                2,
                Detail::Payload {
                    sha256: [9; 32],
                    size: 30,
                    name: "/login.cgi".into(),
                    prefix: b"username=root&password=hunter2".to_vec(),
                    truncated: false,
                },
            ),
        ],
    );
    let Some(LoggedIn { served: _served, browser: _browser, cdp: mut b, base }) = logged_in(c, &LAUNCH) else {
        return;
    };
    let range = format!("since={}&until={}", t - HOUR, now + HOUR);
    b.goto(&base, &format!("/?{range}"), "/");
    assert_eq!(b.eval("document.getElementById('total-attempts').textContent"), json!("41"));
    assert_eq!(b.eval("document.getElementById('total-evicted').textContent"), json!("40"));
    let note = b.eval("document.getElementById('evicted-note').textContent");
    assert!(note.as_str().unwrap().contains("evicted 40 events (40 attempts)"), "{note}");
    // The first chart (attempts over time) has its one point drawn, visibly.
    let point = b.eval(
        "(() => { const c = document.querySelector('svg.chart circle.point');
                  if (!c) return null; const r = c.getBoundingClientRect(); return [r.width, r.height]; })()",
    );
    let wh = point.as_array().unwrap_or_else(|| panic!("no point drawn in the time chart"));
    assert!(wh[0].as_f64().unwrap() > 2.0 && wh[1].as_f64().unwrap() > 2.0, "{point}");

    b.goto(&base, &format!("/credentials?{range}"), "/credentials");
    // Nothing is wider than the window: the page does not scroll sideways...
    assert_eq!(b.eval("document.documentElement.scrollWidth <= window.innerWidth"), json!(true));
    // ...every table fits in its card...
    let overflow = b.eval(
        "[...document.querySelectorAll('table')].filter(t => t.getBoundingClientRect().right > t.closest('.card').getBoundingClientRect().right + 1).map(t => t.id)",
    );
    assert_eq!(overflow, json!([]));
    // ...and the whole password is in the cell's title.
    let title = b.eval("document.querySelector('#passwords tbody td.clip').title");
    assert_eq!(title, json!(long));
    let shown = b.eval("document.querySelector('#pairs tbody td.clip + td.clip').textContent");
    assert!(shown.as_str().unwrap().chars().count() <= 41, "{shown}");

    // A login form's body is not a captured payload.
    b.goto(&base, &format!("/payloads?{range}"), "/payloads");
    assert_eq!(b.eval("document.querySelectorAll('#payloads tbody tr[data-key]').length"), json!(0));
}
