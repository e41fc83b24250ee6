//! MSSQL emulation against FreeTDS `tsql` from Debian and hydra's `mssql` module (TDS 4.2
//! logins). nmap's `ms-sql-info` / `ms-sql-ntlm-info` run in `persona_smb_mssql.rs`.
// Integration tests and benches may panic; the workspace denies unwrap/expect elsewhere.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use drosera_uplink::event::{Detail, Event, Protocol, Secret};
use std::collections::BTreeSet;
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

/// 20 user/password pairs with what breaks naive parsers: spaces (also at the ends), quotes,
/// colons, UTF-8 (2-, 3- and 4-byte), `%`, backslashes, shell and SQL metacharacters, an empty
/// password. Each fits hydra's 30-byte TDS 4.2 fields.
const PAIRS: [(&str, &str); 20] = [
    ("sa", ""),
    ("sa", "sa"),
    ("sa", "P@ssw0rd"),
    ("admin", "pass word"),
    ("o'brien", "quo\"te"),
    ("root", "a:b:c"),
    ("user", "pässwörd"),
    ("管理员", "密码"),
    ("sa", "100%"),
    ("sa", "%00%41%"),
    ("sa", "back\\slash"),
    ("sa", "\\\\double"),
    ("  lead", "trail  "),
    ("test", ";DROP TABLE users--"),
    ("sa", "$(id)`uname`"),
    ("sa", "emoji 😀"),
    ("x", "<>&\"'"),
    ("dbo", "{braces}[]"),
    ("sa", "tab\tinside"),
    ("sa", "Summer2024!Summer2024!Summer"),
];

/// (user, password, extra attributes) of a login event with a clear password.
type PasswordLogin = (String, String, Vec<(String, String)>);

fn password_logins(evs: &[Event]) -> Vec<PasswordLogin> {
    evs.iter()
        .filter_map(|e| match &e.detail {
            Detail::Login { username, secret: Secret::Password(p), extra, .. } => {
                Some((username.clone(), p.clone(), extra.clone()))
            }
            _ => None,
        })
        .collect()
}

/// The (login, password) of each `[ATTEMPT]` line hydra -V prints:
/// `[ATTEMPT] target 127.0.0.1 - login "x" - pass "y" - 1 of 20 [child 0] (0/0)`.
fn hydra_attempts(out: &str) -> Vec<(String, String)> {
    out.lines()
        .filter(|l| l.starts_with("[ATTEMPT]"))
        .filter_map(|l| {
            let login_at = l.find(" - login \"")? + 10;
            let pass_sep = l[login_at..].find("\" - pass \"")? + login_at;
            let end = l.rfind("\" - ")?;
            Some((l[login_at..pass_sep].to_string(), l[pass_sep + 10..end].to_string()))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hydra_tds42_logins_are_recorded_exactly_and_refused() {
    if !require_client("hydra") {
        return;
    }
    let h = Harness::start(&["mssql"]).await;
    let port = h.port(Protocol::Mssql);
    let dir = tempfile::tempdir().unwrap();
    let list: String = PAIRS.iter().map(|(u, p)| format!("{u}:{p}\n")).collect();
    std::fs::write(dir.path().join("pairs"), list).unwrap();
    let mut cmd = tokio::process::Command::new("hydra");
    cmd.current_dir(dir.path());
    cmd.args(["-I", "-V", "-t", "4", "-C", "pairs", "-s", &port.to_string(), "mssql://127.0.0.1"]);
    let out = run_client(cmd, Duration::from_secs(120)).await;
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(said.contains("0 valid password"), "18456 is a failure to hydra; it said: {said}");
    let attempts = hydra_attempts(&said);
    assert_eq!(attempts.len(), 20, "hydra's own count; it said: {said}");
    let sent: BTreeSet<(String, String)> = attempts.into_iter().collect();
    let wanted: BTreeSet<(String, String)> = PAIRS.iter().map(|(u, p)| (u.to_string(), p.to_string())).collect();
    assert_eq!(sent, wanted, "hydra sent the list as written");

    let evs = h.wait_for(Duration::from_secs(20), |evs| password_logins(evs).len() >= 20).await;
    let logins = password_logins(&evs);
    assert_eq!(logins.len(), 20, "one login event per attempt");
    let recorded: BTreeSet<(String, String)> = logins.iter().map(|(u, p, _)| (u.clone(), p.clone())).collect();
    assert_eq!(recorded, wanted, "every pair recorded exactly");
    let extra = &logins[0].2;
    let get = |k: &str| extra.iter().find(|(kk, _)| kk == k).map(|(_, v)| v.clone()).unwrap_or_default();
    assert_eq!(get("tds_version"), "4.2.0.0");
    assert_eq!(get("library"), "MSDBLIB");
}
