//! Your own tests are not attacks (issue 23), end to end with the real binaries: the sensor is
//! enrolled with `sensor add --label-self 127.0.0.1`, an "attacker" (curl from 127.0.0.2) logs
//! in, then nmap scans the sensor from 127.0.0.1. The report's headline numbers are the same
//! before and after the scan, the scan shows under "self", `--include self` brings it back,
//! and the export says each row's label.
//!
//! The real binaries (`cargo build --workspace --bins` first), real clients (curl, nmap) on
//! loopback only. Without nmap or curl the test is skipped, unless `DROSERA_REQUIRE_CLIENTS=1`
//! (CI), where it fails.
// Integration tests may panic; the workspace denies unwrap/expect elsewhere.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use drosera_e2e::stack::{Bins, SensorOpts, Stack};
use serde_json::Value;
use std::process::Command;
use std::time::Duration;

fn have(bin: &str) -> bool {
    let found =
        Command::new("sh").args(["-c", &format!("command -v {bin}")]).output().is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var("DROSERA_REQUIRE_CLIENTS").as_deref() != Ok("1"),
            "{bin} is required (scripts/install-deps.sh)"
        );
        eprintln!("skipped: {bin} not installed");
    }
    found
}

fn admin(s: &Stack, args: &[&str]) -> String {
    let cfg = s.admin_cfg.display().to_string();
    let mut all = args.to_vec();
    all.extend(["--config", &cfg]);
    drosera_e2e::procs::run(&s.bins.admin, &all).unwrap()
}

fn report(s: &Stack, include: &str) -> Value {
    serde_json::from_str(&admin(s, &["report", "--json", "--include", include])).unwrap()
}

/// The headline numbers: everything a reader compares, without sensor-internal records (the
/// sensor's own health samples and restarts come and go).
fn headline(r: &Value) -> Value {
    let t = &r["totals"];
    let keep = ["attempts", "logins", "commands", "http_requests", "payloads", "exploits", "attackers", "countries"];
    let totals: serde_json::Map<String, Value> = keep.iter().map(|k| (k.to_string(), t[*k].clone())).collect();
    let sources: Vec<Value> = r["top_sources"]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| Value::from(vec![x["ip"].clone(), x["attempts"].clone()]))
        .collect();
    serde_json::json!({ "totals": totals, "protocols": r["protocols"], "ports": r["ports"], "sources": sources, "credentials": r["credentials"]["pairs"] })
}

fn labelled<'a>(r: &'a Value, label: &str) -> &'a Value {
    r["labelled"].as_array().unwrap().iter().find(|l| l["label"] == label).unwrap()
}

#[test]
fn nmap_from_a_self_labelled_address_leaves_the_headline_numbers_unchanged() {
    if !have("nmap") || !have("curl") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let opts = SensorOpts { name: "labels".into(), label_self: Some("127.0.0.1".into()), ..Default::default() };
    let mut s = Stack::create(&Bins::beside_test_exe().unwrap(), tmp.path(), opts).unwrap();
    let list = admin(&s, &["label", "list"]);
    assert!(list.lines().any(|l| l.starts_with("127.0.0.1/32") && l.contains(" self ")), "{list}");
    s.start_admin().unwrap();
    s.start_sensor().unwrap();
    let targets = s.targets.clone();
    let port = |svc: &str| targets.iter().find(|t| t.service == svc).unwrap().addr.port();
    // The attacker: HTTP basic-auth logins from 127.0.0.2 (a loopback address of its own).
    for i in 0..5 {
        let st = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "--max-time", "10", "--interface", "127.0.0.2"])
            .args(["-u", &format!("admin:pw{i}"), &format!("http://127.0.0.1:{}/admin", port("http"))])
            .status()
            .unwrap();
        assert!(st.success(), "curl failed: {st}");
    }
    s.settle(Duration::from_secs(120)).unwrap();
    let before = report(&s, "");
    assert_eq!(before["totals"]["attempts"], 5, "{}", before["totals"]);
    assert_eq!(before["top_sources"]["rows"][0]["ip"], "127.0.0.2");
    assert_eq!(before["top_sources"]["rows"][0]["label"], Value::Null);
    assert_eq!(labelled(&before, "self")["attempts"], 0);

    // Our own scan, from the labelled address (a connect scan, bounded in time).
    let ports = format!("{},{},{}", port("ftp"), port("ssh"), port("http"));
    let out = Command::new("nmap")
        .args(["-sT", "-Pn", "-n", "--max-retries", "1", "--host-timeout", "60s", "-p", &ports, "127.0.0.1"])
        .output()
        .unwrap();
    assert!(out.status.success(), "nmap failed: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).matches("/tcp open").count(),
        3,
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    s.settle(Duration::from_secs(120)).unwrap();

    let after = report(&s, "");
    assert_eq!(headline(&after), headline(&before), "the scan changed the headline numbers");
    let me = labelled(&after, "self");
    assert_eq!(me["included"], false);
    assert!(me["attempts"].as_i64().unwrap() >= 3, "the scan's connections are not under self: {me}");
    assert_eq!(me["attackers"], 1);
    assert_eq!(me["top_sources"][0]["ip"], "127.0.0.1");
    assert_eq!(me["top_sources"][0]["label"], "self");
    // The switch brings it back, exactly.
    let all = report(&s, "self,research");
    let total = |r: &Value| r["totals"]["attempts"].as_i64().unwrap();
    assert_eq!(total(&all), total(&after) + me["attempts"].as_i64().unwrap());
    let row = all["top_sources"]["rows"].as_array().unwrap().iter().find(|r| r["ip"] == "127.0.0.1").unwrap();
    assert_eq!(row["label"], "self");
    let text = admin(&s, &["report"]);
    assert!(text.contains("Labelled self (not counted above)"), "{text}");

    // The export keeps every row and says its label.
    let csv = admin(&s, &["export", "--format", "csv"]);
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let (ip, label) = (header.iter().position(|c| *c == "source_ip").unwrap(), header.len() - 1);
    assert_eq!(header[label], "label");
    let (mut own, mut other) = (0, 0);
    for l in lines {
        let cells: Vec<&str> = l.split(',').collect();
        match (cells[ip], cells[cells.len() - 1]) {
            ("127.0.0.1", "self") => own += 1,
            ("127.0.0.2", "") => other += 1,
            x => panic!("unexpected row {x:?}: {l}"),
        }
    }
    assert_eq!(other, 5);
    assert!(own >= 3, "{own} self rows");
    s.admin.stop(Duration::from_secs(30));
    s.sensor.stop(Duration::from_secs(30));
}
