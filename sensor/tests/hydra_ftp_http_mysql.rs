//! Debian's `hydra` against FTP, HTTP basic auth (`http-get`), the HTTP login form
//! (`http-post-form` against the sensor's own login page) and MySQL (issue 14), each with the
//! same 20 pairs full of odd characters (spaces, quotes, colons, `%`, `\`, `&`, `=`, `+`, `#`,
//! UTF-8). Every pair hydra sends must be recorded exactly once, exactly as sent (for MySQL:
//! the user and the auth response hash), and the counts must agree with hydra's own output
//! (its attempts, and the valid logins it reports against the logins the sensor let in).
// Integration tests and benches may panic; the workspace denies unwrap/expect elsewhere.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use drosera_uplink::event::{Detail, Event, Protocol, Secret};
use std::collections::BTreeSet;
use std::time::Duration;
use support::{require_client, run_client, Harness};

/// `user:password` as hydra's `-C` file takes them (split at the first colon). The last one is
/// on the default accept list, so the FTP login policy lets it in once the address has been
/// refused twice.
const PAIRS: [(&str, &str); 20] = [
    ("root", "toor"),
    ("admin", "pass word"),
    ("o'brien", "it's"),
    ("\"quoted\"", "\"pw\""),
    ("user", "pa:ss:wd"),
    ("pct", "100%"),
    ("pct2", "%41%zz"),
    ("back\\slash", "c:\\temp\\x"),
    ("amp&user", "a&b"),
    ("eq", "a=b=c"),
    ("ütf8", "pässwörd"),
    ("日本", "パスワード"),
    ("emoji", "🔑key"),
    ("semi;colon", "x;y"),
    ("plus+user", "a+b"),
    ("hash#", "#pw"),
    ("lt<", ">gt"),
    ("space user", "  two  spaces "),
    ("anonymous", "guest@example.com"),
    ("admin", "admin"),
];

/// What hydra said about its run.
#[derive(Debug)]
struct HydraRun {
    /// Every (login, password) of an `[ATTEMPT]` or `[RE-ATTEMPT]` line.
    attempts: Vec<(String, String)>,
    /// "N login tries" of its `[DATA]` line.
    tries: usize,
    /// "N valid password(s) found".
    valid: usize,
    output: String,
}

/// Parses `... login "X" - pass "Y" - 3 of 20 [child 1] (0/0)`.
fn attempt(line: &str) -> Option<(String, String)> {
    let rest = line.split_once(" - login \"")?.1;
    let (login, rest) = rest.split_once("\" - pass \"")?;
    let (pass, _) = rest.rsplit_once("\" - ")?;
    Some((login.to_string(), pass.to_string()))
}

fn number_before(text: &str, marker: &str) -> Option<usize> {
    let line = text.lines().find(|l| l.contains(marker))?;
    let before = line.split(marker).next()?;
    before.split_whitespace().last()?.parse().ok()
}

/// Runs hydra with the 20 pairs against `service` on `port`, 4 tasks, bounded in time.
async fn hydra(port: u16, service: &[&str]) -> HydraRun {
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("pairs.txt");
    let text: String = PAIRS.iter().map(|(u, p)| format!("{u}:{p}\n")).collect();
    std::fs::write(&list, text).unwrap();
    let mut cmd = tokio::process::Command::new("hydra");
    // -I: never wait for a restore file; -w/-W: answer timeouts; -V: one line per attempt.
    cmd.current_dir(dir.path()).args(["-I", "-V", "-t", "4", "-w", "10", "-W", "1", "-C"]).arg(&list);
    cmd.args(["-s", &port.to_string(), "127.0.0.1"]).args(service);
    let out = run_client(cmd, Duration::from_secs(120)).await;
    let output = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    // Shown with --nocapture (and by the harness when a test fails).
    eprintln!("hydra {service:?}:\n{output}");
    let attempts = output.lines().filter(|l| l.contains("ATTEMPT]")).filter_map(attempt).collect();
    let tries = number_before(&output, " login tries").unwrap_or_else(|| panic!("no [DATA] line:\n{output}"));
    let valid = number_before(&output, " valid password").unwrap_or_else(|| panic!("no summary:\n{output}"));
    HydraRun { attempts, tries, valid, output }
}

fn expected() -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = PAIRS.iter().map(|(u, p)| (u.to_string(), p.to_string())).collect();
    v.sort();
    v
}

/// (user, password, success) of every login event of `protocol` with `method` (any if empty).
fn logins(evs: &[Event], protocol: Protocol, method: &str) -> Vec<(String, String, bool)> {
    evs.iter()
        .filter(|e| e.protocol == protocol)
        .filter_map(|e| match &e.detail {
            Detail::Login { username, secret, success, extra } => {
                if !method.is_empty() && !extra.contains(&("method".to_string(), method.to_string())) {
                    return None;
                }
                let pw = match secret {
                    Secret::Password(p) => p.clone(),
                    Secret::Hash { value, .. } => value.clone(),
                    other => format!("{other:?}"),
                };
                Some((username.clone(), pw, *success))
            }
            _ => None,
        })
        .collect()
}

/// Checks hydra's own account of the run against the 20 pairs.
fn check_hydra(run: &HydraRun) {
    assert_eq!(run.tries, PAIRS.len(), "{}", run.output);
    let distinct: BTreeSet<&(String, String)> = run.attempts.iter().collect();
    let want = expected();
    assert_eq!(distinct.into_iter().cloned().collect::<Vec<_>>(), want, "hydra tried every pair:\n{}", run.output);
}

/// Waits until `n` logins of `protocol`/`method` are recorded and hydra's sessions have ended.
async fn recorded(h: &Harness, protocol: Protocol, method: &str, n: usize) -> Vec<(String, String, bool)> {
    let evs = h.wait_for(Duration::from_secs(20), |evs| logins(evs, protocol, method).len() >= n).await;
    // Anything more that arrives late would be a duplicate: give it a moment to show.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = evs;
    logins(&h.events(), protocol, method)
}

fn sorted_pairs(v: &[(String, String, bool)]) -> Vec<(String, String)> {
    let mut p: Vec<(String, String)> = v.iter().map(|(u, p, _)| (u.clone(), p.clone())).collect();
    p.sort();
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hydra_ftp_every_pair_recorded_exactly_and_its_valid_count_matches() {
    if !require_client("hydra") {
        return;
    }
    let h = Harness::start(&["ftp"]).await;
    let run = hydra(h.port(Protocol::Ftp), &["ftp"]).await;
    check_hydra(&run);
    let got = recorded(&h, Protocol::Ftp, "ftp", PAIRS.len()).await;
    assert_eq!(sorted_pairs(&got), expected(), "every pair exactly once, as sent:\n{}", run.output);
    // The policy refuses everything but the listed admin:admin (after two refusals); hydra's
    // count of valid logins is the sensor's count of accepted ones.
    let accepted: Vec<_> = got.iter().filter(|l| l.2).collect();
    assert_eq!(accepted.len(), run.valid, "{}", run.output);
    assert_eq!(accepted, vec![&("admin".to_string(), "admin".to_string(), true)]);
    assert!(run.output.contains("login: admin   password: admin"), "{}", run.output);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hydra_http_basic_auth_every_pair_recorded_exactly_and_refused() {
    if !require_client("hydra") {
        return;
    }
    let h = Harness::start(&["http"]).await;
    let run = hydra(h.port(Protocol::Http), &["http-get", "/admin"]).await;
    check_hydra(&run);
    let got = recorded(&h, Protocol::Http, "basic", PAIRS.len()).await;
    assert_eq!(sorted_pairs(&got), expected(), "{}", run.output);
    assert!(got.iter().all(|l| !l.2));
    assert_eq!(run.valid, 0, "{}", run.output);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hydra_http_login_form_every_pair_recorded_exactly_and_refused() {
    if !require_client("hydra") {
        return;
    }
    let h = Harness::start(&["http"]).await;
    // The sensor's own login page posts username and password to /login.cgi and says
    // "Invalid username or password" after a refused login.
    let form = "/login.cgi:username=^USER^&password=^PASS^:F=Invalid username";
    let run = hydra(h.port(Protocol::Http), &["http-post-form", form]).await;
    check_hydra(&run);
    let got = recorded(&h, Protocol::Http, "form", PAIRS.len()).await;
    assert_eq!(sorted_pairs(&got), expected(), "{}", run.output);
    assert!(got.iter().all(|l| !l.2));
    assert_eq!(run.valid, 0, "{}", run.output);
    // Login forms are logins, not captured payloads.
    let evs = h.events();
    assert!(!evs.iter().any(|e| matches!(e.detail, Detail::Payload { .. } | Detail::Sample { .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hydra_mysql_every_user_recorded_with_its_auth_hash() {
    if !require_client("hydra") {
        return;
    }
    let h = Harness::start(&["mysql"]).await;
    let run = hydra(h.port(Protocol::Mysql), &["mysql"]).await;
    check_hydra(&run);
    let got = recorded(&h, Protocol::Mysql, "", PAIRS.len()).await;
    let mut users: Vec<String> = got.iter().map(|l| l.0.clone()).collect();
    users.sort();
    let mut want: Vec<String> = PAIRS.iter().map(|p| p.0.to_string()).collect();
    want.sort();
    assert_eq!(users, want, "{}", run.output);
    assert_eq!(got.len(), run.tries, "one login per pair hydra tried:\n{}", run.output);
    // The password never crosses the wire, only its salted scramble (20 bytes, 40 hex digits),
    // which differs for every pair.
    let hashes: BTreeSet<&String> = got.iter().map(|l| &l.1).collect();
    assert_eq!(hashes.len(), PAIRS.len());
    assert!(got.iter().all(|l| l.1.len() == 40 && !l.2), "{got:?}");
    assert_eq!(run.valid, 0, "{}", run.output);
}
