//! MSSQL emulation against FreeTDS `tsql` from Debian.
// Integration tests and benches may panic; the workspace denies unwrap/expect elsewhere.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use drosera_uplink::event::{Detail, Protocol, Secret};
use std::time::Duration;
use support::{require_client, run_client, Harness};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tsql_login_is_recorded_and_refused_with_18456() {
    if !require_client("tsql") {
        return;
    }
    let h = Harness::start(&["mssql"]).await;
    let port = h.port(Protocol::Mssql);
    let mut cmd = tokio::process::Command::new("tsql");
    cmd.args(["-H", "127.0.0.1", "-p", &port.to_string(), "-U", "sa", "-P", "Winter2024!"]);
    cmd.env("TDSVER", "7.4");
    let out = run_client(cmd, Duration::from_secs(20)).await;
    let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(all.contains("18456") || all.contains("Login failed"), "tsql said: {all}");
    let evs = h.wait_connections(1, Duration::from_secs(10)).await;
    let (user, secret, extra) = evs
        .iter()
        .find_map(|e| match &e.detail {
            Detail::Login { username, secret, extra, .. } => Some((username.clone(), secret.clone(), extra.clone())),
            _ => None,
        })
        .expect("login event");
    assert_eq!(user, "sa");
    assert_eq!(secret, Secret::Password("Winter2024!".into()));
    let get = |k: &str| extra.iter().find(|(kk, _)| kk == k).map(|(_, v)| v.clone()).unwrap_or_default();
    assert_eq!(get("app_name"), "TSQL");
    let host = nix_hostname();
    assert_eq!(get("client_host"), host);
    assert!(!get("library").is_empty());
}

fn nix_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim().to_string()
}
