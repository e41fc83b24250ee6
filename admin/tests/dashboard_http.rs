//! The dashboard over plain HTTP: nothing answers without login, the login is CSRF-safe, the
//! cookie carries Secure/HttpOnly/SameSite=Strict, and the API gives the analytics numbers.
// Tests, benches and examples may panic; the workspace denies unwrap/expect elsewhere.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod analytics_support;
use analytics_support::*;
use drosera_admin::analytics::{self, Query};

const RANGE: &str = "since=1714521600000&until=1715385600000";

fn all() -> Query {
    Query { since_ms: Some(T0), until_ms: Some(T0 + 10 * DAY), sensor: None, ..Default::default() }
}

fn login_nonce(addr: std::net::SocketAddr) -> String {
    let r = http(addr, "GET", "/login", &[], "");
    assert_eq!(r.status, 200);
    let c = r.cookies().into_iter().find(|c| c.starts_with("drosera_login=")).unwrap().to_string();
    assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.contains("Secure"), "{c}");
    let nonce = c.trim_start_matches("drosera_login=").split(';').next().unwrap().to_string();
    assert!(r.body.contains(&format!("name=\"csrf\" value=\"{nonce}\"")));
    nonce
}

fn form(nonce: &str, user: &str, pass: &str) -> String {
    format!("csrf={nonce}&username={user}&password={}", pass.replace(' ', "+"))
}

#[test]
fn login_required_csrf_and_numbers_match_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("a.db");
    let mut c = fixture(&db);
    drosera_admin::users::add_user(&*c, "admin", "correct horse").unwrap();
    let served = serve_dashboard(&c.loc, true);
    let a = served.addr;

    // Nothing answers without a session.
    for p in ["/", "/attackers", "/credentials", "/payloads", "/sensors", "/nope"] {
        let r = http(a, "GET", p, &[], "");
        assert_eq!((r.status, r.header("location")), (303, Some("/login")), "{p}");
    }
    for p in ["/api/totals", "/api/report", "/api/sources", "/api/nope"] {
        assert_eq!(http(a, "GET", p, &[], "").status, 401, "{p}");
    }
    // A made-up session cookie is no session.
    let fake = format!("drosera_session={}", "a".repeat(64));
    assert_eq!(http(a, "GET", "/api/totals", &[("Cookie", &fake)], "").status, 401);

    // CSRF: the form nonce must match the cookie; a foreign Origin is refused.
    let nonce = login_nonce(a);
    let ct = ("Content-Type", "application/x-www-form-urlencoded");
    let cookie = format!("drosera_login={nonce}");
    let r = http(a, "POST", "/login", &[ct, ("Cookie", &cookie)], &form("wrong", "admin", "correct horse"));
    assert_eq!(r.status, 403);
    let r = http(a, "POST", "/login", &[ct], &form(&nonce, "admin", "correct horse"));
    assert_eq!(r.status, 403, "no nonce cookie");
    let r = http(
        a,
        "POST",
        "/login",
        &[ct, ("Cookie", &cookie), ("Origin", "http://evil.example")],
        &form(&nonce, "admin", "correct horse"),
    );
    assert_eq!(r.status, 403);
    let r = http(a, "POST", "/login", &[ct, ("Cookie", &cookie)], &form(&nonce, "admin", "wrong horse"));
    assert_eq!(r.status, 401);
    assert!(r.cookies().iter().all(|c| !c.starts_with("drosera_session=")));

    let r = http(a, "POST", "/login", &[ct, ("Cookie", &cookie)], &form(&nonce, "admin", "correct horse"));
    assert_eq!((r.status, r.header("location")), (303, Some("/")));
    let sc = r.cookies().into_iter().find(|c| c.starts_with("drosera_session=")).unwrap().to_string();
    assert!(sc.contains("HttpOnly") && sc.contains("SameSite=Strict") && sc.contains("; Secure"), "{sc}");
    let session = sc.split(';').next().unwrap().to_string();
    let auth = [("Cookie", session.as_str())];

    // The API gives exactly what the library computes.
    analytics::refresh(&mut *c, &enricher()).unwrap();
    let r = http(a, "GET", &format!("/api/totals?{RANGE}"), &auth, "");
    assert_eq!(r.status, 200);
    let got: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(got, serde_json::to_value(analytics::totals(&*c, &all()).unwrap()).unwrap());
    assert_eq!(got["attempts"], 116);
    let r = http(a, "GET", &format!("/api/report?{RANGE}&min_attempts=10"), &auth, "");
    let got: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(got, serde_json::to_value(analytics::report(&*c, &all(), 10, 50).unwrap()).unwrap());
    let r = http(a, "GET", &format!("/api/sources?{RANGE}&sensor=s2"), &auth, "");
    let got: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(got["rows"][0]["ip"], "1.1.1.1");
    assert_eq!(got["rows"].as_array().unwrap().len(), 1);
    for ep in
        ["timeline", "countries", "protocols", "ports", "credentials", "payloads", "exploits", "downloads", "sensors"]
    {
        let r = http(a, "GET", &format!("/api/{ep}?{RANGE}"), &auth, "");
        assert_eq!(r.status, 200, "{ep}: {}", r.body);
    }
    let r = http(a, "GET", "/api/totals?since=yesterday", &auth, "");
    assert_eq!(r.status, 400);
    assert!(r.body.contains("bad time"));
    let r = http(a, "GET", "/api/totals?sensor=nope", &auth, "");
    assert_eq!(r.status, 400);

    // Pages: numbers, escaping, security headers.
    let r = http(a, "GET", &format!("/?{RANGE}"), &auth, "");
    assert_eq!(r.status, 200);
    assert!(r.body.contains(r#"id="total-attempts">116<"#), "{}", r.body);
    assert!(r.body.contains("<svg"));
    let csp = r.header("content-security-policy").unwrap();
    assert!(csp.contains("default-src 'none'") && !csp.contains("script-src"), "{csp}");
    let r = http(a, "GET", &format!("/payloads?{RANGE}"), &auth, "");
    assert!(r.body.contains("http://198.51.100.7/&lt;b&gt;x.sh"), "{}", r.body);
    assert!(!r.body.contains("<b>x.sh"));
    assert!(!r.body.contains("<script"));
    for p in ["/attackers", "/credentials", "/sensors"] {
        let r = http(a, "GET", &format!("{p}?{RANGE}&min_attempts=10"), &auth, "");
        assert_eq!(r.status, 200, "{p}");
    }

    // Labels: a self-labelled address leaves the numbers; the switch (include=) brings it back.
    let own = analytics::top_sources(&*c, &all(), 0, 50).unwrap().rows.into_iter().find(|r| r.ip == "1.1.1.1").unwrap();
    assert!(own.attempts > 0 && own.label.is_none());
    drosera_admin::labels::add(&*c, "1.1.1.1", &drosera_admin::labels::Label::SelfTest, "", 10, 1).unwrap();
    analytics::relabel(&mut *c, &enricher()).unwrap();
    let attempts = |q: &str| -> i64 {
        let r = http(a, "GET", &format!("/api/totals?{RANGE}{q}"), &auth, "");
        assert_eq!(r.status, 200, "{}", r.body);
        serde_json::from_str::<serde_json::Value>(&r.body).unwrap()["attempts"].as_i64().unwrap()
    };
    assert_eq!(attempts(""), 116 - own.attempts);
    assert_eq!(attempts("&include=self"), 116);
    assert_eq!(attempts("&include=self,research"), 116);
    assert_eq!(http(a, "GET", &format!("/api/totals?{RANGE}&include=everyone"), &auth, "").status, 400);
    let r = http(a, "GET", &format!("/?{RANGE}"), &auth, "");
    assert!(r.body.contains(&format!(r#"id="total-attempts">{}<"#, 116 - own.attempts)), "{}", r.body);
    assert!(r.body.contains(r#"<select name="include" id="include">"#) && r.body.contains(r#"id="labelled""#));
    assert!(r.body.contains(r#"<tr data-key="self"><td>self</td><td class="included">left out</td>"#), "{}", r.body);
    let r = http(a, "GET", &format!("/attackers?{RANGE}&include=self"), &auth, "");
    assert!(
        r.body.contains(r#"<tr data-key="1.1.1.1"><td class="mono"><a class="ip mono" href="/attacker/1.1.1.1">1.1.1.1</a></td><td class="label">self</td>"#),
        "{}",
        r.body
    );
    assert!(r.body.contains(r#"<option value="self" selected>"#));
    let r = http(a, "GET", &format!("/attackers?{RANGE}"), &auth, "");
    assert!(!r.body.contains(r#"data-key="1.1.1.1""#), "a self address is no attacker by default");

    // Logout needs the session's CSRF value.
    let page = http(a, "GET", "/", &auth, "").body;
    let csrf = page.split("name=\"csrf\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_string();
    let cookie_ct = [ct, auth[0]];
    assert_eq!(http(a, "POST", "/logout", &cookie_ct, "csrf=bad").status, 403);
    assert_eq!(http(a, "GET", "/api/totals", &auth, "").status, 200);
    assert_eq!(http(a, "POST", "/logout", &cookie_ct, &format!("csrf={csrf}")).status, 303);
    assert_eq!(http(a, "GET", "/api/totals", &auth, "").status, 401);
}

#[test]
fn oversized_bodies_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("a.db");
    let c = fixture(&db);
    let served = serve_dashboard(&c.loc, true);
    let big = format!("csrf=x&username=a&password={}", "x".repeat(100_000));
    let r = http(
        served.addr,
        "POST",
        "/login",
        &[("Content-Type", "application/x-www-form-urlencoded"), ("Cookie", "drosera_login=x")],
        &big,
    );
    assert_eq!(r.status, 413);
}

/// Sends `raw` and returns the status code of the answer (0 when the connection closed first).
fn raw_status(addr: std::net::SocketAddr, raw: &str) -> u16 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(30))).unwrap();
    s.write_all(raw.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

/// Issue 19: only loopback and configured Host names are answered (DNS rebinding), clients that
/// announce a body and never send it hold no request slot, and wrong logins are throttled.
#[test]
fn hosts_silent_bodies_and_password_guessing() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("a.db");
    let c = fixture(&db);
    drosera_admin::users::add_user(&*c, "admin", "correct horse").unwrap();
    let served = serve_dashboard(&c.loc, true);
    let a = served.addr;

    // A rebinding page's Host is refused; loopback names are answered.
    let get = |host: &str| raw_status(a, &format!("GET /login HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"));
    assert_eq!(get("evil.example"), 421);
    assert_eq!(get("evil.example:9080"), 421);
    assert_eq!(get(&format!("localhost:{}", a.port())), 200);
    assert_eq!(get(&a.to_string()), 200);
    assert_eq!(raw_status(a, "GET /login HTTP/1.0\r\n\r\n"), 421, "no Host at all");

    // 40 logins that announce a body and send nothing: every slot (32) would be taken for the
    // whole wait before; now the body is awaited first and a real request is answered at once.
    let silent: Vec<std::net::TcpStream> = (0..40)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(a).unwrap();
            let head = format!(
                "POST /login HTTP/1.1\r\nHost: {a}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\n"
            );
            s.write_all(head.as_bytes()).unwrap();
            s
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(http(a, "GET", "/login", &[], "").status, 200, "silent bodies held the request slots");
    drop(silent);

    // Password guessing from one address: after 5 wrong logins the address must wait (429 with
    // Retry-After) and its guesses are not even checked, the right password included.
    let nonce = login_nonce(a);
    let ct = ("Content-Type", "application/x-www-form-urlencoded");
    let cookie = format!("drosera_login={nonce}");
    let mut statuses = Vec::new();
    for i in 0..20 {
        let r = http(a, "POST", "/login", &[ct, ("Cookie", &cookie)], &form(&nonce, "admin", &format!("guess{i}")));
        if r.status == 429 {
            assert!(r.header("retry-after").is_some_and(|v| v.parse::<u64>().is_ok_and(|s| s >= 1)), "{:?}", r.headers);
        }
        statuses.push(r.status);
    }
    assert_eq!(&statuses[..5], &[401; 5], "{statuses:?}");
    assert!(statuses.iter().filter(|s| **s == 429).count() >= 13, "{statuses:?}");
    let r = http(a, "POST", "/login", &[ct, ("Cookie", &cookie)], &form(&nonce, "admin", "correct horse"));
    assert_eq!(r.status, 429, "a blocked address got its password checked");
}
