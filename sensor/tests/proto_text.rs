//! HTTP and FTP against their ordinary clients: curl (HTTP basic auth, form login, FTP login
//! and upload). Telnet has its own file (`proto_telnet.rs`).
// Integration tests and benches may panic; the workspace denies unwrap/expect elsewhere.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use drosera_uplink::event::{Detail, Event, Protocol, SampleOutcome, Secret};
use std::time::Duration;
use support::{require_client, run_client, sha256_hex, Harness};

/// (user, secret, extra attributes) of a login event.
type Login = (String, Secret, Vec<(String, String)>);

/// The `success` of every login event, in order.
fn successes(evs: &[Event]) -> Vec<bool> {
    evs.iter()
        .filter_map(|e| match &e.detail {
            Detail::Login { success, .. } => Some(*success),
            _ => None,
        })
        .collect()
}

fn logins(evs: &[Event]) -> Vec<Login> {
    evs.iter()
        .filter_map(|e| match &e.detail {
            Detail::Login { username, secret, extra, .. } => Some((username.clone(), secret.clone(), extra.clone())),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_basic_auth_and_form_login() {
    if !require_client("curl") {
        return;
    }
    let h = Harness::start(&["http"]).await;
    let url = format!("http://127.0.0.1:{}", h.port(Protocol::Http));
    let mut cmd = tokio::process::Command::new("curl");
    cmd.args([
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-u",
        "admin:hunter2",
        "-A",
        "UA/1",
        &format!("{url}/admin?x=1"),
    ]);
    let out = run_client(cmd, Duration::from_secs(20)).await;
    assert_eq!(String::from_utf8_lossy(&out.stdout), "401");
    let mut cmd = tokio::process::Command::new("curl");
    cmd.args(["-s", "-o", "/dev/null", "--data", "username=root&password=p%40ss", &format!("{url}/login.cgi")]);
    let _ = run_client(cmd, Duration::from_secs(20)).await;
    let evs = h.wait_for(Duration::from_secs(10), |evs| logins(evs).len() >= 2).await;
    let l = logins(&evs);
    assert_eq!((l[0].0.as_str(), &l[0].1), ("admin", &Secret::Password("hunter2".into())));
    assert!(l[0].2.contains(&("method".into(), "basic".into())));
    assert_eq!((l[1].0.as_str(), &l[1].1), ("root", &Secret::Password("p@ss".into())));
    assert!(l[1].2.contains(&("method".into(), "form".into())));
    // HTTP logins are always refused, and a login form is a login, not a captured payload.
    assert_eq!(successes(&evs), vec![false, false]);
    assert!(!evs.iter().any(|e| matches!(e.detail, Detail::Payload { .. } | Detail::Sample { .. })), "{evs:#?}");
    let req = evs
        .iter()
        .find_map(|e| match &e.detail {
            Detail::HttpRequest { method, path, query, user_agent, host, .. } if path == "/admin" => {
                Some((method.clone(), query.clone(), user_agent.clone(), host.clone()))
            }
            _ => None,
        })
        .unwrap();
    assert_eq!(req, ("GET".into(), "x=1".into(), "UA/1".into(), format!("127.0.0.1:{}", h.port(Protocol::Http))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_ftp_login_and_upload_is_kept_as_payload() {
    if !require_client("curl") {
        return;
    }
    let h = Harness::start(&["ftp"]).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("x.sh");
    let content: Vec<u8> = (0..50_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&file, &content).unwrap();
    // The login policy refuses the first two logins from an address (whatever the pair) and
    // then accepts only listed weak pairs: bob is refused twice (curl: "login denied", 67),
    // then admin:admin (a default accept-list pair) gets in and uploads.
    let url = format!("ftp://127.0.0.1:{}/", h.port(Protocol::Ftp));
    for _ in 0..2 {
        let mut cmd = tokio::process::Command::new("curl");
        cmd.args(["-s", "-T"]);
        cmd.arg(&file);
        cmd.args(["--user", "bob:s3cret", &url]);
        let out = run_client(cmd, Duration::from_secs(30)).await;
        assert_eq!(out.status.code(), Some(67), "curl: {}", String::from_utf8_lossy(&out.stderr));
    }
    let mut cmd = tokio::process::Command::new("curl");
    cmd.args(["-s", "-T"]);
    cmd.arg(&file);
    cmd.args(["--user", "admin:admin", &url]);
    let out = run_client(cmd, Duration::from_secs(30)).await;
    assert!(out.status.success(), "curl: {}", String::from_utf8_lossy(&out.stderr));
    let evs =
        h.wait_for(Duration::from_secs(10), |evs| evs.iter().any(|e| matches!(e.detail, Detail::Payload { .. }))).await;
    let l = logins(&evs);
    assert_eq!(l.len(), 3, "{l:?}");
    assert_eq!((l[0].0.as_str(), &l[0].1), ("bob", &Secret::Password("s3cret".into())));
    assert_eq!((l[1].0.as_str(), &l[1].1), ("bob", &Secret::Password("s3cret".into())));
    assert_eq!((l[2].0.as_str(), &l[2].1), ("admin", &Secret::Password("admin".into())));
    assert_eq!(successes(&evs), vec![false, false, true], "the refused pairs are recorded as refused");
    let (sha, size, name, truncated) = evs
        .iter()
        .find_map(|e| match &e.detail {
            Detail::Payload { sha256, size, name, truncated, .. } => {
                Some((hex::encode(sha256), *size, name.clone(), *truncated))
            }
            _ => None,
        })
        .unwrap();
    assert_eq!(sha, sha256_hex(&content));
    assert_eq!(size, content.len() as u64);
    assert_eq!(name, "x.sh");
    assert!(!truncated);
    // The whole file is kept as a sample: one event says so, and the area holds the exact bytes,
    // read-only, under its sha256.
    let samples: Vec<_> = evs
        .iter()
        .filter_map(|e| match &e.detail {
            Detail::Sample { sha256, size, name, source, outcome } => {
                Some((hex::encode(sha256), *size, name.clone(), source.clone(), *outcome))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        samples,
        vec![(sha.clone(), content.len() as u64, "x.sh".into(), "ftp-stor".into(), SampleOutcome::Kept)]
    );
    let kept = h.samples_dir().join(&sha);
    assert_eq!(std::fs::read(&kept).unwrap(), content);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&kept).unwrap().permissions().mode() & 0o777, 0o400);
}
