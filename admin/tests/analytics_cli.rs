//! The `report`, `export` and `user add` commands of the real `drosera-admin` binary.
// Tests, benches and examples may panic; the workspace denies unwrap/expect elsewhere.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod analytics_support;
use analytics_support::*;
use drosera_admin::analytics::{self, DrillConfig, Query};
use std::io::Write;
use std::process::{Command, Stdio};

/// The `[drill]` caps of a config without that section.
const CAPS: DrillConfig = DrillConfig::DEFAULTS;

const BIN: &str = env!("CARGO_BIN_EXE_drosera-admin");

fn setup() -> (tempfile::TempDir, std::path::PathBuf, drosera_admin::storage::Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = fixture(&dir.path().join("admin.db"));
    let cfg = dir.path().join("drosera-admin.toml");
    // relative paths are relative to the config file
    let section = if on_postgres() { db.config_section() } else { "[database]\npath = \"admin.db\"\n".into() };
    std::fs::write(&cfg, section).unwrap();
    (dir, cfg, db.loc.clone())
}

fn run(args: &[&str], stdin: &str) -> (bool, String, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

#[test]
fn report_text_and_json_match_the_library() {
    let (_dir, cfg, loc) = setup();
    let cfg = cfg.to_str().unwrap();
    let range = ["--since", "2024-05-01", "--until", "2024-05-11"];
    let (ok, out, err) = run(&[&["report", "--config", cfg], &range[..]].concat(), "");
    assert!(ok, "{err}");
    assert!(out.contains("116 attempts (100 rolled up), 10 logins"), "{out}");
    assert!(out.contains("root / xc3511: 5"), "{out}");
    assert!(out.contains("8.8.8.8") && out.contains("AS15169 Google LLC"), "{out}");
    assert!(out.contains("s1: last contact"), "{out}");

    let (ok, out, err) =
        run(&[&["report", "--json", "--min-attempts", "10", "--config", cfg], &range[..]].concat(), "");
    assert!(ok, "{err}");
    let got: serde_json::Value = serde_json::from_str(&out).unwrap();
    let c = Db::open(&loc);
    let q = Query { since_ms: Some(T0), until_ms: Some(T0 + 10 * DAY), sensor: None, ..Default::default() };
    assert_eq!(got, serde_json::to_value(analytics::report(&*c, &q, 10, 20).unwrap()).unwrap());
    assert_eq!(got["top_sources"]["matching"], 2);

    let (ok, out, _) = run(&[&["report", "--json", "--sensor", "s2", "--config", cfg], &range[..]].concat(), "");
    assert!(ok);
    let got: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(got["totals"]["attempts"], 3);

    let (ok, _, err) = run(&["report", "--since", "last tuesday", "--config", cfg], "");
    assert!(!ok);
    assert!(err.contains("bad time"), "{err}");
    let (ok, _, err) = run(&["report", "--sensor", "nope", "--config", cfg], "");
    assert!(!ok);
    assert!(err.contains("unknown sensor"), "{err}");
}

#[test]
fn export_streams_attacks_and_events_as_jsonl_and_csv() {
    let (dir, cfg, _loc) = setup();
    let cfg = cfg.to_str().unwrap();
    let out_file = dir.path().join("e.jsonl");
    let (ok, _, err) = run(&["export", "--format", "jsonl", "--out", out_file.to_str().unwrap(), "--config", cfg], "");
    assert!(ok, "{err}");
    let text = std::fs::read_to_string(&out_file).unwrap();
    // The default: one row per attack (12 telnet, 3 ssh, 1 http session and 1 rollup).
    assert_eq!(text.lines().count(), 17);
    let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!((first["source_ip"].as_str(), first["country"].as_str()), (Some("8.8.8.8"), Some("US")));
    // One row per event under its own name.
    let (ok, _, err) =
        run(&["export", "--format", "events-jsonl", "--out", out_file.to_str().unwrap(), "--config", cfg], "");
    assert!(ok, "{err}");
    assert_eq!(std::fs::read_to_string(&out_file).unwrap().lines().count(), 32);

    let (ok, out, err) = run(&["export", "--format", "csv", "--sensor", "s2", "--config", cfg], "");
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 4);
    assert!(out.starts_with("timestamp,end_timestamp,source_ip,source_port,destination_port,protocol"));
    let (ok, out, err) = run(&["export", "--format", "events-csv", "--sensor", "s2", "--config", cfg], "");
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 7);
    assert!(out.starts_with("timestamp,source_ip,source_port,destination_port,protocol"));

    let (ok, _, err) = run(&["export", "--format", "xml", "--config", cfg], "");
    assert!(!ok);
    assert!(err.contains("jsonl or csv") && err.contains("events-jsonl"), "{err}");
}

#[test]
fn user_add_reads_the_password_from_stdin() {
    let (_dir, cfg, loc) = setup();
    let cfg = cfg.to_str().unwrap();
    let (ok, _, err) = run(&["user", "add", "alice", "--config", cfg], "correct horse\n");
    assert!(ok, "{err}");
    let c = Db::open(&loc);
    assert!(drosera_admin::users::verify(&*c, "alice", "correct horse").unwrap());
    assert!(!drosera_admin::users::verify(&*c, "alice", "correct horse\n").unwrap());
    let (ok, _, err) = run(&["user", "add", "bob", "--config", cfg], "short\n");
    assert!(!ok);
    assert!(err.contains("password must be"), "{err}");
    let (ok, _, err) = run(&["user", "add", "bad name", "--config", cfg], "correct horse\n");
    assert!(!ok);
    assert!(err.contains("user name"), "{err}");
}

/// Issue 21: `attacker`, `session` and `search`, as text and as the API's JSON.
#[test]
fn attacker_session_and_search_commands() {
    let (_dir, cfg, loc) = setup();
    let cfg = cfg.to_str().unwrap();
    let range = ["--since", "2024-05-01", "--until", "2024-05-11"];
    let (ok, out, err) = run(&[&["attacker", "8.8.8.8", "--config", cfg], &range[..]].concat(), "");
    assert!(ok, "{err}");
    assert!(out.starts_with("Attacker 8.8.8.8 (US, AS15169 Google LLC)"), "{out}");
    assert!(out.contains("root xc3511 x5"), "{out}");
    assert!(
        out.contains("Sessions (12 in all, page 1, 50 per page):") && out.contains("s1/111 telnet port 23"),
        "{out}"
    );
    let (ok, out, err) = run(&[&["attacker", "8.8.8.8", "--json", "--config", cfg], &range[..]].concat(), "");
    assert!(ok, "{err}");
    let got: serde_json::Value = serde_json::from_str(&out).unwrap();
    let c = Db::open(&loc);
    let q = Query { since_ms: Some(T0), until_ms: Some(T0 + 10 * DAY), sensor: None, ..Default::default() };
    assert_eq!(got, serde_json::to_value(analytics::attacker(&*c, &q, "8.8.8.8", 1, &CAPS).unwrap().unwrap()).unwrap());
    let (ok, _, err) = run(&["attacker", "192.0.2.1", "--config", cfg], "");
    assert!(!ok && err.contains("no events of 192.0.2.1"), "{err}");
    let (ok, _, err) = run(&["attacker", "not-an-ip", "--config", cfg], "");
    assert!(!ok && err.contains("invalid"), "{err}");

    let (ok, out, err) = run(&["session", "s1", "100", "--config", cfg], "");
    assert!(ok, "{err}");
    assert!(out.starts_with("Session s1/100: 8.8.8.8:40000 -> telnet port 23"), "{out}");
    assert!(out.contains("login root / xc3511") && out.contains("connection"), "{out}");
    let (ok, out, _) = run(&["session", "s1", "100", "--json", "--config", cfg], "");
    assert!(ok);
    let got: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(got, serde_json::to_value(analytics::session(&*c, "s1", 100, &CAPS).unwrap().unwrap()).unwrap());
    let (ok, _, err) = run(&["session", "s1", "999", "--config", cfg], "");
    assert!(!ok && err.contains("no connection 999"), "{err}");

    let (ok, out, err) = run(&[&["search", "xc3511", "--config", cfg], &range[..]].concat(), "");
    assert!(ok, "{err}");
    assert!(out.starts_with("5 results for xc3511 as user or password"), "{out}");
    assert_eq!(out.matches(" session s1/").count(), 5, "{out}");
    let (ok, out, _) = run(&[&["search", "1.1.1.0/24", "--json", "--config", cfg], &range[..]].concat(), "");
    assert!(ok);
    let got: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(got, serde_json::to_value(analytics::search(&*c, &q, "1.1.1.0/24", &CAPS).unwrap()).unwrap());
    assert_eq!(got["hits"][0]["value"], "1.1.1.1");
}

/// Issue 21: `user token create|list|revoke`: the token is printed once (stdout, nothing else
/// there), works until revoked, and the cap and unknown users give errors naming the fix.
#[test]
fn user_token_create_list_and_revoke() {
    let (dir, cfg, loc) = setup();
    let cfg_path = cfg.to_str().unwrap();
    let (ok, _, err) = run(&["user", "token", "create", "alice", "--config", cfg_path], "");
    assert!(!ok && err.contains("user add"), "{err}");
    let (ok, _, err) = run(&["user", "add", "alice", "--config", cfg_path], "correct horse\n");
    assert!(ok, "{err}");
    let (ok, out, err) = run(&["user", "token", "create", "alice", "--note", "grafana", "--config", cfg_path], "");
    assert!(ok, "{err}");
    let token = out.trim().to_string();
    assert!(token.starts_with(drosera_admin::users::API_TOKEN_PREFIX) && !token.contains('\n'), "{out}");
    let c = Db::open(&loc);
    assert_eq!(drosera_admin::users::api_token_user(&*c, &token).unwrap().as_deref(), Some("alice"));
    let (ok, out, err) = run(&["user", "token", "list", "alice", "--json", "--config", cfg_path], "");
    assert!(ok, "{err}");
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["name"], "grafana");
    assert!(!out.contains(&token[drosera_admin::users::API_TOKEN_PREFIX.len()..]), "list never shows the token");
    let id = list[0]["id"].as_str().unwrap().to_string();
    let (ok, out, _) = run(&["user", "token", "list", "alice", "--config", cfg_path], "");
    assert!(ok && out.contains(&id) && out.contains("grafana"), "{out}");
    let (ok, _, err) = run(&["user", "token", "revoke", "alice", &id, "--config", cfg_path], "");
    assert!(ok, "{err}");
    assert_eq!(drosera_admin::users::api_token_user(&*c, &token).unwrap(), None);
    let (ok, _, err) = run(&["user", "token", "revoke", "alice", &id, "--config", cfg_path], "");
    assert!(!ok && err.contains("no live token"), "{err}");
    // The cap comes from [dashboard] api_tokens_per_user.
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str("\n[dashboard]\napi_tokens_per_user = 1\n");
    std::fs::write(&cfg, text).unwrap();
    let (ok, _, err) = run(&["user", "token", "create", "alice", "--config", cfg_path], "");
    assert!(ok, "{err}");
    let (ok, _, err) = run(&["user", "token", "create", "alice", "--config", cfg_path], "");
    assert!(!ok && err.contains("api_tokens_per_user"), "{err}");
    drop(dir);
}

/// The CLI takes the drill-down caps from `[drill]` and says what they cut.
#[test]
fn drill_caps_come_from_the_config() {
    let (_dir, cfg, loc) = setup();
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str(
        "\n[drill]\nlist_rows = 1\nsession_events = 1\nsearch_hits = 3\nsessions_per_page = 5\nsearch_chars = 10\n",
    );
    std::fs::write(&cfg, text).unwrap();
    let caps =
        DrillConfig { list_rows: 1, session_events: 1, search_hits: 3, sessions_per_page: 5, search_chars: 10, ..CAPS };
    let cfg = cfg.to_str().unwrap();
    let range = ["--since", "2024-05-01", "--until", "2024-05-11"];
    let c = Db::open(&loc);
    let q = Query { since_ms: Some(T0), until_ms: Some(T0 + 10 * DAY), sensor: None, ..Default::default() };

    let (ok, out, err) = run(&[&["attacker", "8.8.8.8", "--config", cfg], &range[..]].concat(), "");
    assert!(ok, "{err}");
    assert!(
        out.contains("Credentials (user password) (TRUNCATED: the 1 most frequent of 2 distinct, the cap [drill] list_rows):\n  root xc3511 x5"),
        "{out}"
    );
    assert!(!out.contains("admin admin"), "{out}");
    assert!(out.contains("Sessions (12 in all, page 1, 5 per page):"), "{out}");
    assert_eq!(out.matches(" telnet port 23 ").count(), 5, "{out}");
    let (ok, out, err) = run(&[&["attacker", "8.8.8.8", "--json", "--config", cfg], &range[..]].concat(), "");
    assert!(ok, "{err}");
    let got: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(got, serde_json::to_value(analytics::attacker(&*c, &q, "8.8.8.8", 1, &caps).unwrap().unwrap()).unwrap());
    assert_eq!(got["lists_cut"][0]["list"], "credentials");

    let (ok, out, err) = run(&["session", "s1", "100", "--config", cfg], "");
    assert!(ok, "{err}");
    assert!(out.contains("(TRUNCATED: the first 1 events only, the cap [drill] session_events)"), "{out}");
    assert!(!out.contains("connection"), "only the first event: {out}");

    let (ok, out, err) = run(&[&["search", "xc3511", "--config", cfg], &range[..]].concat(), "");
    assert!(ok, "{err}");
    assert!(out.starts_with("3 results for xc3511 as user or password (TRUNCATED"), "{out}");
    assert!(out.contains("[drill] search_scan and search_hits"), "{out}");
    let (ok, out, _) = run(&[&["search", "xc3511", "--json", "--config", cfg], &range[..]].concat(), "");
    assert!(ok);
    let got: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(got, serde_json::to_value(analytics::search(&*c, &q, "xc3511", &caps).unwrap()).unwrap());
    let (ok, _, err) = run(&[&["search", "user:xc3511", "--config", cfg], &range[..]].concat(), "");
    assert!(!ok && err.contains("longer than drill.search_chars (10)"), "{err}");

    // A bad value stops the command with the key and the fix.
    std::fs::write(cfg, "[drill]\nsearch_hits = 0\n").unwrap();
    let (ok, _, err) = run(&["search", "root", "--config", cfg], "");
    assert!(!ok && err.contains("drill.search_hits") && err.contains("use the default, 200"), "{err}");
}
