//! The dashboard over plain HTTP: nothing answers without login, the login is CSRF-safe, the
//! cookie carries Secure/HttpOnly/SameSite=Strict, and the API gives the analytics numbers.

mod analytics_support;
use analytics_support::*;
use drosera_admin::analytics::{self, Query};

const RANGE: &str = "since=1714521600000&until=1715385600000";

fn all() -> Query {
    Query { since_ms: Some(T0), until_ms: Some(T0 + 10 * DAY), sensor: None }
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
