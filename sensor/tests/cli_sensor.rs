//! The `drosera-sensor` command line: check-config names the bad key, status --json prints the
//! store's state, bad arguments print usage, and `run` stores health events and stops cleanly
//! on SIGTERM (flushing the store). Started as root, `run` drops root in every thread and hands
//! its data directory over without following links; a sensor key readable by others fails
//! `check-config` and `run` (issue 19).
// Integration tests and benches may panic; the workspace denies unwrap/expect elsewhere.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use drosera_sensor::config::StoreSection;
use drosera_sensor::rollup::RollupTable;
use drosera_sensor::store::{self, synthetic_event};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_drosera-sensor");

fn write_config(dir: &Path, extra: &str) -> std::path::PathBuf {
    let p = dir.join("sensor.toml");
    std::fs::write(
        &p,
        format!(
            "[sensor]\nname = \"cli-test\"\ndata_dir = \"{}\"\nhealth_interval_s = 1\nuser = \"{}\"\n\n[store]\ncap_bytes = 4194304\nreserve_bytes = 0\n{extra}",
            dir.join("data").display(),
            test_user()
        ),
    )
    .unwrap();
    p
}

/// `nobody` when running as root (the sensor then drops to it, as in production), else empty.
fn test_user() -> &'static str {
    if nix::unistd::geteuid().is_root() && nix::unistd::User::from_name("nobody").ok().flatten().is_some() {
        "nobody"
    } else {
        ""
    }
}

#[test]
fn check_config_names_the_bad_key() {
    let dir = tempfile::tempdir().unwrap();
    for (text, key) in [
        ("[store]\nhigh_water_pct = 99\n", "store.high_water_pct"),
        ("[store]\ncap_byte = 5\n", "cap_byte"),
        ("[memory]\nsoft_limit_bytes = 900\nhard_limit_bytes = 100\n", "memory.soft_limit_bytes"),
    ] {
        let p = dir.path().join("bad.toml");
        std::fs::write(&p, text).unwrap();
        let out = Command::new(BIN).arg("check-config").arg(&p).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "bad config accepted: {text}");
        assert!(stderr.contains(key), "message does not name {key}: {stderr}");
    }
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/drosera-sensor.example.toml");
    let out = Command::new(BIN).args(["check-config", example]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let missing = Command::new(BIN).args(["check-config", "/nonexistent/x.toml"]).output().unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/x.toml"));
}

#[test]
fn passive_ports_prints_what_the_firewall_must_open() {
    let dir = tempfile::tempdir().unwrap();
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/drosera-sensor.example.toml");
    let out = Command::new(BIN).args(["passive-ports", example]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "50000-50031\n");
    let p = write_config(dir.path(), "[[service]]\nkind = \"ftp\"\nports = [21]\npassive_ports = [40000, 40099]\n");
    let out = Command::new(BIN).arg("passive-ports").arg(&p).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "40000-40099\n");
    let p = write_config(dir.path(), "[[service]]\nkind = \"http\"\nports = [80]\n");
    let out = Command::new(BIN).arg("passive-ports").arg(&p).output().unwrap();
    assert!(out.status.success() && out.stdout.is_empty(), "no FTP, nothing to open");
    let p = write_config(dir.path(), "[[service]]\nkind = \"ftp\"\nports = [21]\npassive_ports = [9, 1]\n");
    let out = Command::new(BIN).arg("passive-ports").arg(&p).output().unwrap();
    assert!(!out.status.success() && out.stdout.is_empty(), "a bad range is an error, never printed");
    assert!(String::from_utf8_lossy(&out.stderr).contains("service[0].passive_ports"));
}

#[test]
fn bad_arguments_print_usage() {
    for args in [&["frobnicate"][..], &["status"][..], &[][..]] {
        let out = Command::new(BIN).args(args).output().unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("Usage"), "no usage for {args:?}: {stderr}");
    }
}

#[test]
fn status_json_prints_the_store_state() {
    let dir = tempfile::tempdir().unwrap();
    let cfg_path = write_config(dir.path(), "");
    // Fresh: no database yet, still valid JSON.
    let out = Command::new(BIN).args(["status", "--json", "--config"]).arg(&cfg_path).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["last_seq"], 0);

    let cfg = StoreSection { cap_bytes: 4 << 20, reserve_bytes: 0, commit_interval_ms: 10, ..Default::default() };
    let (handle, writer) = store::open(&cfg, &dir.path().join("data"), "cli-test").unwrap();
    let (tx, rx) = drosera_sensor::sink::EventQueue::blocking(100);
    let stop = tokio_util::sync::CancellationToken::new();
    let wh = writer.spawn(rx, Arc::new(RollupTable::new(10)), stop.clone()).unwrap();
    for i in 1..=500 {
        tx.blocking_send(synthetic_event(i)).unwrap();
    }
    stop.cancel();
    wh.join().unwrap();
    handle.ack(200).unwrap();
    drop(handle);

    let out = Command::new(BIN).args(["status", "--config"]).arg(&cfg_path).arg("--json").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for key in
        ["backlog_events", "store_bytes", "cap_bytes", "evicted_events", "shed_connections", "last_seq", "acked_seq"]
    {
        assert!(v[key].is_u64(), "missing {key}: {v}");
    }
    assert_eq!(v["last_seq"], 500);
    assert_eq!(v["acked_seq"], 200);
    assert_eq!(v["backlog_events"], 300);
    assert_eq!(v["cap_bytes"], 4 << 20);
    assert!(v["store_bytes"].as_u64().unwrap() > 0);
}

/// Files outside the data directory that a root start must not hand to the sensor user, though
/// the data directory holds a symlink and a hard link to them (planted by a compromised sensor
/// in an earlier run).
struct Planted {
    symlink_target: std::path::PathBuf,
    hardlink_target: std::path::PathBuf,
}

fn plant_links(dir: &Path) -> Planted {
    use std::os::unix::fs::PermissionsExt;
    // The sensor user must be able to reach its data directory inside the test's directory.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let data = dir.join("data");
    std::fs::create_dir_all(data.join("samples")).unwrap();
    let symlink_target = dir.join("root-secret");
    let hardlink_target = dir.join("root-secret-2");
    for t in [&symlink_target, &hardlink_target] {
        std::fs::write(t, "root only").unwrap();
        std::fs::set_permissions(t, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    std::os::unix::fs::symlink(&symlink_target, data.join("planted-symlink")).unwrap();
    std::os::unix::fs::symlink(&symlink_target, data.join("samples").join("deeper-symlink")).unwrap();
    std::fs::hard_link(&hardlink_target, data.join("planted-hardlink")).unwrap();
    Planted { symlink_target, hardlink_target }
}

/// Every thread of `pid` has an empty capability bounding set and no_new_privs (the drop
/// happened before any thread existed).
fn assert_every_thread_dropped(pid: u32) {
    let tasks: Vec<_> = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().map(|e| e.unwrap().path()).collect();
    assert!(tasks.len() > 2, "expected the runtime's threads, got {tasks:?}");
    for t in tasks {
        let status = std::fs::read_to_string(t.join("status")).unwrap();
        let field = |name: &str| {
            status.lines().find_map(|l| l.strip_prefix(name)).map(|v| v.trim().to_string()).unwrap_or_default()
        };
        assert_eq!(field("CapBnd:"), "0000000000000000", "{}: {status}", t.display());
        assert_eq!(field("CapEff:"), "0000000000000000", "{}", t.display());
        assert_eq!(field("NoNewPrivs:"), "1", "{}", t.display());
        assert_ne!(field("Uid:").split_whitespace().next(), Some("0"), "{}", t.display());
    }
}

#[test]
fn run_records_health_and_stops_cleanly_on_sigterm() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let root = !test_user().is_empty();
    let planted = root.then(|| plant_links(dir.path()));
    let cfg_path = write_config(dir.path(), "commit_interval_ms = 20\n");
    let mut child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&cfg_path)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut ready = false;
    while Instant::now() < deadline && !ready {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) {
            ready = line.starts_with("ready ");
        }
    }
    assert!(ready, "sensor never printed its ready line");
    if let Some(p) = &planted {
        assert_every_thread_dropped(child.id());
        let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap().uid.as_raw();
        let data = dir.path().join("data");
        assert_eq!(std::fs::metadata(&data).unwrap().uid(), nobody, "the data directory was not handed over");
        assert_eq!(std::fs::metadata(data.join("samples")).unwrap().uid(), nobody);
        assert_eq!(std::fs::metadata(&p.symlink_target).unwrap().uid(), 0, "a symlink was followed");
        assert_eq!(std::fs::metadata(&p.hardlink_target).unwrap().uid(), 0, "a hard link was handed over");
    }
    std::thread::sleep(Duration::from_millis(2600)); // two health intervals
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(t.elapsed() < Duration::from_secs(15), "sensor did not stop after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "sensor exited with {status}");
    let out = Command::new(BIN).args(["status", "--json", "--config"]).arg(&cfg_path).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["last_seq"].as_u64().unwrap() >= 2, "health events were not stored: {v}");
    // The stored events really are health events of this sensor.
    let cfg = StoreSection { cap_bytes: 4 << 20, reserve_bytes: 0, ..Default::default() };
    let (handle, _writer) = store::open(&cfg, &dir.path().join("data"), "cli-test").unwrap();
    let evs = handle.read_batch(0, 100, 1 << 20).unwrap();
    assert!(evs.iter().filter(|e| e.detail.kind() == "health").count() >= 2, "{evs:?}");
    assert!(evs.iter().all(|e| e.sensor == "cli-test"));
}

/// A self-signed certificate and its key, as the uplink's CA, certificate and key files.
fn write_pki(dir: &Path, key_mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["cli-test".into()]).unwrap().self_signed(&key).unwrap();
    std::fs::write(dir.join("ca.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("sensor.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("sensor.key"), key.serialize_pem()).unwrap();
    std::fs::set_permissions(dir.join("sensor.key"), std::fs::Permissions::from_mode(key_mode)).unwrap();
}

/// A sensor whose key others can read would run without ever shipping: `check-config` fails
/// naming the fix, and `run` exits non-zero before it serves.
#[test]
fn a_key_readable_by_others_fails_check_config_and_run() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    write_pki(dir.path(), 0o644);
    let uplink =
        "\n[uplink]\nadmin = \"127.0.0.1:9\"\nca_cert = \"ca.pem\"\ncert = \"sensor.pem\"\nkey = \"sensor.key\"\n";
    let cfg_path = write_config(dir.path(), uplink);
    let out = Command::new(BIN).args(["check-config"]).arg(&cfg_path).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "check-config accepted a 0644 key");
    assert!(err.contains("chmod 600") && err.contains("uplink"), "{err}");

    let mut child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&cfg_path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("run kept going with a key it cannot use");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!status.success(), "run exited 0 with a 0644 key");
    assert!(!stdout.contains("ready "), "run served with a key it cannot use: {stdout}");
    assert!(stderr.contains("chmod 600"), "{stderr}");

    std::fs::set_permissions(dir.path().join("sensor.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = Command::new(BIN).args(["check-config"]).arg(&cfg_path).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
