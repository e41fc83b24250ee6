//! End to end with the real binaries: a real client's login against the sensor arrives at the
//! admin over mutual TLS with its fields; with the admin stopped the sensor keeps the events,
//! and after the admin restarts every one of them arrives exactly once.
// Integration tests and benches may panic; the workspace denies unwrap/expect elsewhere.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use drosera_admin::storage::Backend;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn bin_dir() -> PathBuf {
    let bins = drosera_e2e::stack::Bins::beside_test_exe().unwrap();
    bins.admin.parent().unwrap().to_path_buf()
}

fn free_port() -> u16 {
    drosera_e2e::procs::free_port().unwrap()
}

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run_ok(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

fn start_admin(bin: &Path, cfg: &Path) -> Proc {
    Proc(
        Command::new(bin.join("drosera-admin"))
            .args(["serve", "--config"])
            .arg(cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

fn start_sensor(bin: &Path, cfg: &Path) -> Proc {
    let mut child = Command::new(bin.join("drosera-sensor"))
        .args(["run", "--config"])
        .arg(cfg)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let mut lines = BufReader::new(out).lines();
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let line = lines.next().expect("sensor exited before it was ready").unwrap();
        if line.starts_with("ready") {
            break;
        }
        assert!(Instant::now() < end, "sensor not ready in time");
    }
    std::thread::spawn(move || for _ in lines {});
    Proc(child)
}

fn curl_login(port: u16, user: &str, pass: &str) {
    let st = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-u", &format!("{user}:{pass}"), &format!("http://127.0.0.1:{port}/admin")])
        .status()
        .unwrap();
    assert!(st.success());
}

/// The logins the admin stored, by seq (read through the admin's storage, either backend).
fn query_logins(db: &Backend) -> Vec<(i64, String, String)> {
    let Ok(store) = drosera_admin::storage::open_backend(db) else { return Vec::new() };
    let mut rows = Vec::new();
    let range = drosera_admin::storage::EventRange { since_ms: i64::MIN, until_ms: i64::MAX, sensor_id: None };
    let _ = store.export_events(&range, &mut |r| {
        if r.kind == "login" {
            rows.push((r.seq, r.username.unwrap_or("").to_string(), r.password.unwrap_or("").to_string()));
        }
        std::ops::ControlFlow::Continue(())
    });
    rows.sort();
    rows
}

fn wait_logins(db: &Backend, n: usize) -> Vec<(i64, String, String)> {
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let rows = query_logins(db);
        if rows.len() >= n || Instant::now() > end {
            return rows;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn logins_reach_the_admin_exactly_once_even_across_an_admin_outage() {
    if Command::new("curl").arg("--version").output().is_err() {
        assert!(std::env::var("DROSERA_REQUIRE_CLIENTS").as_deref() != Ok("1"), "curl is required");
        eprintln!("SKIP: curl not installed");
        return;
    }
    let bin = bin_dir();
    let tmp = tempfile::tempdir().unwrap();
    let ingest = format!("127.0.0.1:{}", free_port());
    let dash = format!("127.0.0.1:{}", free_port());
    let admin_dir = tmp.path().join("admin");
    let mut init = Command::new(bin.join("drosera-admin"));
    init.args(["init", "--dir"]).arg(&admin_dir).args([
        "--admin",
        &ingest,
        "--listen",
        &ingest,
        "--dashboard-listen",
        &dash,
    ]);
    // The second pass of scripts/test.sh: the same test with the admin on PostgreSQL.
    if std::env::var("DROSERA_TEST_BACKEND").as_deref() == Ok("postgres") {
        let url = drosera_admin::testpg::fresh_database().expect("DROSERA_TEST_BACKEND=postgres needs PostgreSQL");
        init.args(["--db-url", &url]);
    }
    run_ok(&mut init);
    let admin_cfg = admin_dir.join("drosera-admin.toml");
    let bundle = tmp.path().join("bundle");
    run_ok(
        Command::new(bin.join("drosera-admin"))
            .args(["sensor", "add", "e2e-sensor", "--out"])
            .arg(&bundle)
            .arg("--config")
            .arg(&admin_cfg),
    );
    let http = free_port();
    let sensor_cfg = tmp.path().join("sensor.toml");
    let mut text = format!(
        "[sensor]\nname = \"e2e-sensor\"\ndata_dir = \"{}\"\nuser = \"\"\nhealth_interval_s = 3600\n\n[store]\ncap_bytes = 16777216\nreserve_bytes = 0\n\n[[service]]\nkind = \"http\"\nports = [{http}]\nbind = \"127.0.0.1\"\n\n",
        tmp.path().join("sensor-data").display()
    );
    text.push_str(&std::fs::read_to_string(bundle.join("uplink.toml")).unwrap());
    std::fs::write(&sensor_cfg, text).unwrap();
    let admin_db = drosera_admin::config::AdminConfig::load(&admin_cfg).unwrap().database.backend().unwrap();

    let admin = start_admin(&bin, &admin_cfg);
    let _sensor = start_sensor(&bin, &sensor_cfg);
    curl_login(http, "eve", "s3cret!");
    let rows = wait_logins(&admin_db, 1);
    assert_eq!(rows.len(), 1, "the login did not arrive at the admin");
    assert_eq!((rows[0].1.as_str(), rows[0].2.as_str()), ("eve", "s3cret!"));

    // Admin down: the sensor keeps what it records.
    drop(admin);
    for i in 0..20 {
        curl_login(http, &format!("user{i}"), &format!("pw{i}"));
    }
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(query_logins(&admin_db).len(), 1, "nothing can arrive while the admin is down");
    let _admin = start_admin(&bin, &admin_cfg);
    let rows = wait_logins(&admin_db, 21);
    assert_eq!(rows.len(), 21, "after the restart every login arrives: {rows:?}");
    let mut seqs: Vec<i64> = rows.iter().map(|r| r.0).collect();
    seqs.dedup();
    assert_eq!(seqs.len(), 21, "no duplicates");
    for i in 0..20 {
        assert!(rows.iter().any(|r| r.1 == format!("user{i}") && r.2 == format!("pw{i}")), "user{i} missing");
    }
}
