//! MySQL emulation against the real `mariadb` client from Debian.
// Integration tests and benches may panic; the workspace denies unwrap/expect elsewhere.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use drosera_uplink::event::{Detail, Protocol, Secret};
use std::time::Duration;
use support::{require_client, run_client, Harness};

fn mysql_client() -> Option<&'static str> {
    ["mariadb", "mysql"].into_iter().find(|c| support::require_client_quiet(c))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_client_login_is_recorded_and_refused() {
    let Some(bin) = mysql_client() else {
        require_client("mariadb");
        return;
    };
    let h = Harness::start(&["mysql"]).await;
    let port = h.port(Protocol::Mysql);
    let mut cmd = tokio::process::Command::new(bin);
    cmd.args([
        "-h",
        "127.0.0.1",
        "-P",
        &port.to_string(),
        "-u",
        "root",
        "-pS3cret!",
        "--skip-ssl",
        "shop",
        "-e",
        "select 1",
    ]);
    let out = run_client(cmd, Duration::from_secs(20)).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("1045") && stderr.contains("Access denied for user 'root'"), "client said: {stderr}");
    let evs = h.wait_connections(1, Duration::from_secs(10)).await;
    let login = evs
        .iter()
        .find_map(|e| match &e.detail {
            Detail::Login { username, secret, extra, .. } => Some((username.clone(), secret.clone(), extra.clone())),
            _ => None,
        })
        .expect("login event");
    assert_eq!(login.0, "root");
    match &login.1 {
        // mysql_native_password: SHA1-based scramble, 20 bytes = 40 hex characters.
        Secret::Hash { format, value } => {
            assert_eq!(format, "mysql_native_password-hex");
            assert_eq!(value.len(), 40, "{value}");
        }
        other => panic!("unexpected secret {other:?}"),
    }
    let get = |k: &str| login.2.iter().find(|(kk, _)| kk == k).map(|(_, v)| v.clone());
    assert_eq!(get("database").as_deref(), Some("shop"));
    assert_eq!(get("auth_plugin").as_deref(), Some("mysql_native_password"));
    let login_ev = evs.iter().find(|e| matches!(e.detail, Detail::Login { .. })).unwrap();
    assert_eq!(login_ev.protocol, Protocol::Mysql);
    assert_eq!(login_ev.dst_port, port);
}
