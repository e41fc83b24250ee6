//! End to end with the real binaries (`drosera_e2e::stack`) and Debian's `hydra`: hydra brute
//! forces the sensor's MySQL (and VNC) with passwords from the admin's bundled list; those
//! logins carry a challenge-response, never the password. `drosera-admin recover` (the pass
//! `serve` runs in the background) finds them, and the report, its text and the ECS export show
//! them marked recovered.
// Integration tests may panic; the workspace denies unwrap/expect elsewhere.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use drosera_e2e::stack::{Bins, SensorOpts, Stack};
use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

/// From the bundled list (admin/data/passwords.txt).
const PASSWORDS: [&str; 4] = ["123456", "letmein", "dragon", "trustno1"];

fn hydra(port: u16, args: &[&str], service: &str, list: &std::path::Path) -> String {
    let mut cmd = Command::new("timeout");
    // -I: never wait for a restore file; -w/-W: answer timeouts; one task (VNC servers refuse
    // parallel logins); bounded by timeout(1).
    cmd.args(["120", "hydra", "-I", "-V", "-t", "1", "-w", "10", "-W", "1"]).args(args);
    cmd.arg("-P").arg(list).args(["-s", &port.to_string(), "127.0.0.1", service]);
    let out = cmd.output().unwrap();
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[test]
fn hydra_passwords_behind_mysql_and_vnc_challenges_are_recovered() {
    if Command::new("hydra").arg("-h").output().is_err() {
        assert!(std::env::var("DROSERA_REQUIRE_CLIENTS").as_deref() != Ok("1"), "hydra is required");
        eprintln!("SKIP: hydra not installed");
        return;
    }
    let bins = Bins::beside_test_exe().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let opts = SensorOpts { name: "recover-1".into(), ..SensorOpts::default() };
    let mut stack = Stack::create(&bins, tmp.path(), opts).unwrap();
    stack.start_admin().unwrap();
    stack.start_sensor().unwrap();
    let port = |svc: &str| stack.targets.iter().find(|t| t.service == svc).unwrap().addr.port();
    let list = tmp.path().join("passwords.txt");
    std::fs::write(&list, PASSWORDS.join("\n") + "\n").unwrap();
    let out = hydra(port("mysql"), &["-l", "root"], "mysql", &list);
    assert!(out.contains("login \"root\" - pass \"trustno1\""), "hydra did not try the list:\n{out}");
    let out = hydra(port("vnc"), &[], "vnc", &list);
    assert!(out.contains("pass \"dragon\""), "hydra did not try the list:\n{out}");
    // Wait until the logins are in the sensor's store and nothing more arrives, then drain.
    let until = Instant::now() + Duration::from_secs(30);
    let mut seen = 0;
    while Instant::now() < until {
        let now = stack.status().map(|s| s.last_seq).unwrap_or(0);
        if now >= 8 && now == seen {
            break;
        }
        seen = now;
        std::thread::sleep(Duration::from_millis(500));
    }
    stack.drain(Duration::from_secs(60)).unwrap();

    let cfg = stack.admin_cfg.display().to_string();
    let run = |args: &[&str]| drosera_e2e::procs::run(&bins.admin, args).unwrap();
    // Before recovery the report has hashes only.
    let report: serde_json::Value =
        serde_json::from_str(&run(&["report", "--config", &cfg, "--json", "--since", "0"])).unwrap();
    assert_eq!(report["credentials"]["recovered"], serde_json::json!([]));
    let out = run(&["recover", "--config", &cfg]);
    assert!(out.contains("(0 in formats not checked"), "{out}");
    let report: serde_json::Value =
        serde_json::from_str(&run(&["report", "--config", &cfg, "--json", "--since", "0"])).unwrap();
    let got: BTreeSet<(String, String, String)> = report["credentials"]["recovered"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap().to_string();
            (s("protocol"), s("username"), s("password"))
        })
        .collect();
    for p in PASSWORDS {
        assert!(
            got.contains(&("mysql".to_string(), "root".to_string(), p.to_string())),
            "mysql {p} missing from {got:?}"
        );
        assert!(got.iter().any(|(proto, _, pw)| proto == "vnc" && pw == p), "vnc {p} missing from {got:?}");
    }
    let text = run(&["report", "--config", &cfg, "--since", "0"]);
    assert!(text.contains("root / letmein [recovered, mysql]"), "{text}");
    // A second pass has nothing left to try.
    let out = run(&["recover", "--config", &cfg]);
    assert!(out.starts_with("tried 0 responses"), "{out}");
    // The ECS export marks them on their events.
    let ecs = run(&["export", "--config", &cfg, "--format", "ecs", "--since", "0"]);
    let recovered: BTreeSet<String> = ecs
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter_map(|d| d["drosera"]["recovered_password"].as_str().map(str::to_string))
        .collect();
    assert_eq!(recovered, PASSWORDS.iter().map(|p| p.to_string()).collect::<BTreeSet<_>>());
}
