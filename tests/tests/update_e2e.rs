//! Signed updates end to end with the real binaries (issue 22): the sensor runs under
//! `drosera-sensor launch`, the admin signs and rolls out releases, and the sensor
//! * takes a good release (the version it reports changes, and no event is lost or doubled
//!   across the swap: exactly-once counts at the end);
//! * refuses a release signed with another key, one for another architecture and a truncated one
//!   (each reported to the admin as `update_refused`, the version unchanged);
//! * rolls back a release that exits at start (`update_installed`, then `update_failed` shipped
//!   by the previous binary, which runs again);
//!
//! and keeps recording between and after all of them. Pushed configs (`sensor config push`): a
//! good one applies (a new service answers), a bad one is refused (validated like
//! `check-config`), one that fails at runtime (its port is taken) is rolled back.
// Integration tests may panic; the workspace denies unwrap/expect elsewhere.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use drosera_e2e::procs::{self, Proc};
use drosera_e2e::stack::{Bins, SensorOpts, Stack};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

const SENSOR: &str = "upd-1";

fn admin(stack: &Stack, args: &[&str]) -> String {
    let mut all: Vec<&str> = args.to_vec();
    let cfg = stack.admin_cfg.display().to_string();
    all.extend(["--config", &cfg]);
    procs::run(&stack.bins.admin, &all).unwrap()
}

/// `n` HTTP requests to the sensor, each on its own connection, answered before the next.
fn connections(stack: &Stack, n: usize) {
    let http = stack.targets.iter().find(|t| t.service == "http").unwrap().addr;
    for _ in 0..n {
        let mut s = TcpStream::connect_timeout(&http, Duration::from_secs(5)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        assert!(buf.starts_with(b"HTTP/1."), "no HTTP answer: {:?}", String::from_utf8_lossy(&buf));
    }
}

/// Update events at the admin: (kind, version, reason).
fn update_events(stack: &Stack) -> Vec<(String, String, String)> {
    let Ok(db) = drosera_admin::storage::open_backend(&drosera_admin::storage::Backend::Sqlite(stack.admin_db.clone()))
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let range = drosera_admin::storage::EventRange { since_ms: i64::MIN, until_ms: i64::MAX, sensor_id: None };
    let _ = db.export_events(&range, &mut |r| {
        if let Ok(f) = serde_json::from_str::<serde_json::Value>(r.fields) {
            let s = |k: &str| f.get(k).and_then(|v| v.as_str()).unwrap_or("").to_string();
            if s("kind").starts_with("update_") || s("kind").starts_with("config_") {
                out.push((s("kind"), s("version"), s("reason")));
            }
        }
        std::ops::ControlFlow::Continue(())
    });
    out
}

fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn wait_event(stack: &mut Stack, kind: &str, version: &str) -> String {
    let end = Instant::now() + Duration::from_secs(90);
    loop {
        assert!(stack.sensor.running(), "launcher died; log:\n{}", stack.sensor.log_tail(40));
        let events = update_events(stack);
        if let Some((_, _, r)) = events.iter().find(|(k, v, _)| k == kind && v == version) {
            return r.clone();
        }
        assert!(
            Instant::now() < end,
            "timed out waiting for {kind} {version} at the admin; update events: {events:?}\nsensor log:\n{}",
            stack.sensor.log_tail(30)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn reported_version(stack: &Stack) -> String {
    let list: serde_json::Value = serde_json::from_str(&admin(stack, &["sensor", "list", "--json"])).unwrap();
    list[0]["version"].as_str().unwrap_or("").to_string()
}

/// Signs `binary` as `version` at the admin and rolls it out to the sensor.
fn release(stack: &Stack, binary: &Path, version: &str, arch: Option<&str>) {
    let b = binary.display().to_string();
    let mut args = vec!["release", "add", &b, "--version", version];
    if let Some(a) = arch {
        args.extend(["--arch", a]);
    }
    admin(stack, &args);
    admin(stack, &["release", "rollout", version, "--sensors", SENSOR]);
}

/// A stack whose sensor runs under the launcher, the admin checking rollouts every second.
fn launcher_stack(dir: &Path) -> Stack {
    let bins = Bins::beside_test_exe().unwrap();
    let opts = SensorOpts { name: SENSOR.into(), ..Default::default() };
    let mut stack = Stack::create(&bins, dir, opts).unwrap();
    // Check the rollout every second on open connections; short trials.
    let mut admin_cfg = std::fs::read_to_string(&stack.admin_cfg).unwrap();
    assert!(admin_cfg.trim_end().ends_with("dir = \"releases\""), "init ends with [updates]: {admin_cfg}");
    admin_cfg.push_str("check_interval_s = 1\n");
    std::fs::write(&stack.admin_cfg, admin_cfg).unwrap();
    let mut sensor_cfg = std::fs::read_to_string(&stack.sensor_cfg).unwrap();
    sensor_cfg.push_str("\n[update]\ntrial_timeout_s = 30\nchunk_bytes = 262144\n");
    std::fs::write(&stack.sensor_cfg, sensor_cfg).unwrap();
    let cfg_arg = stack.sensor_cfg.display().to_string();
    stack.sensor = Proc::new("sensor", &bins.sensor, &["launch", "--config", &cfg_arg], dir.join("sensor.log"))
        .env("RUST_LOG", "info");
    stack
}

#[test]
fn signed_updates_are_taken_refused_or_rolled_back_and_nothing_is_lost() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut stack = launcher_stack(dir);
    let bins = stack.bins.clone();
    let state = stack.data_dir.join("update").join("state.json");
    let arch = std::env::consts::ARCH;

    stack.start_admin().unwrap();
    stack.start_sensor().unwrap();
    let mut made = 0;
    connections(&stack, 5);
    made += 5;
    let first = wait_for("the sensor's first hello", Duration::from_secs(30), || {
        Some(reported_version(&stack)).filter(|v| !v.is_empty())
    });
    assert_eq!(first, env!("CARGO_PKG_VERSION"));

    // 1. A good release: the same binary, signed as a new version.
    let good = dir.join("good-sensor");
    std::fs::copy(&bins.sensor, &good).unwrap();
    release(&stack, &good, "0.2.0-e2e", None);
    wait_event(&mut stack, "update_installed", "0.2.0-e2e");
    wait_event(&mut stack, "update_applied", "0.2.0-e2e");
    wait_for("the new version at the admin", Duration::from_secs(60), || {
        (reported_version(&stack) == "0.2.0-e2e").then_some(())
    });
    let st: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    assert_eq!(st["active"], "a", "{st}");
    assert!(st["pending"].is_null(), "{st}");
    connections(&stack, 5);
    made += 5;

    // 2. Signed with another admin's key.
    let other = dir.join("other-admin");
    procs::run(&bins.admin, &["init", "--dir", &other.display().to_string()]).unwrap();
    let other_cfg = other.join("drosera-admin.toml").display().to_string();
    let g = good.display().to_string();
    procs::run(&bins.admin, &["release", "add", &g, "--version", "0.3.0-e2e", "--config", &other_cfg]).unwrap();
    let from = other.join("releases").join(format!("0.3.0-e2e-{arch}"));
    let to = stack.admin_cfg.parent().unwrap().join("releases").join(format!("0.3.0-e2e-{arch}"));
    std::fs::create_dir_all(&to).unwrap();
    for f in ["drosera-sensor", "release.json"] {
        std::fs::copy(from.join(f), to.join(f)).unwrap();
    }
    admin(&stack, &["release", "rollout", "0.3.0-e2e", "--sensors", SENSOR]);
    let why = wait_event(&mut stack, "update_refused", "0.3.0-e2e");
    assert!(why.contains("signature"), "{why}");
    connections(&stack, 3);
    made += 3;

    // 3. For another architecture (signed correctly), filed under this one's folder: the admin
    // offers releases by folder, the sensor checks the signed architecture.
    let other_arch = if arch == "x86_64" { "aarch64" } else { "x86_64" };
    let script = dir.join("exits");
    std::fs::write(&script, "#!/bin/sh\nexit 3\n").unwrap();
    let s = script.display().to_string();
    admin(&stack, &["release", "add", &s, "--version", "0.4.0-e2e", "--arch", other_arch]);
    let releases = stack.admin_cfg.parent().unwrap().join("releases");
    std::fs::rename(releases.join(format!("0.4.0-e2e-{other_arch}")), releases.join(format!("0.4.0-e2e-{arch}")))
        .unwrap();
    admin(&stack, &["release", "rollout", "0.4.0-e2e", "--sensors", SENSOR]);
    let why = wait_event(&mut stack, "update_refused", "0.4.0-e2e");
    assert!(why.contains(other_arch), "{why}");

    // 4. Truncated at the admin after signing (before the rollout).
    admin(&stack, &["release", "add", &g, "--version", "0.5.0-e2e"]);
    let stored =
        stack.admin_cfg.parent().unwrap().join("releases").join(format!("0.5.0-e2e-{arch}")).join("drosera-sensor");
    let len = std::fs::metadata(&stored).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&stored).unwrap().set_len(len / 3).unwrap();
    admin(&stack, &["release", "rollout", "0.5.0-e2e", "--sensors", SENSOR]);
    let why = wait_event(&mut stack, "update_refused", "0.5.0-e2e");
    assert!(why.contains("truncated") || why.contains("sha256"), "{why}");
    connections(&stack, 3);
    made += 3;

    // 5. A binary that exits at start: installed, tried, rolled back, reported.
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    release(&stack, &script, "0.6.0-e2e", Some(arch));
    wait_event(&mut stack, "update_installed", "0.6.0-e2e");
    let why = wait_event(&mut stack, "update_failed", "0.6.0-e2e");
    assert!(why.contains("exited before it was healthy"), "{why}");
    let st: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    assert_eq!(st["active"], "a", "the good release runs again: {st}");
    assert!(st["failed"].as_array().unwrap().iter().any(|v| v == "0.6.0-e2e"), "{st}");
    assert_eq!(reported_version(&stack), "0.2.0-e2e");
    connections(&stack, 4);
    made += 4;

    // Exactly once: every connection at the admin, every seq once, nothing missing.
    let (s, t) = stack.settle(Duration::from_secs(60)).unwrap();
    assert_eq!(t.missing, 0, "{t:?} {s:?}");
    assert_eq!(t.rows, t.distinct_seqs, "no event twice: {t:?}");
    assert_eq!(t.connections(), made, "{t:?}");
    // Each update step was reported exactly once.
    let events = update_events(&stack);
    for (kind, version) in [
        ("update_installed", "0.2.0-e2e"),
        ("update_applied", "0.2.0-e2e"),
        ("update_refused", "0.3.0-e2e"),
        ("update_refused", "0.4.0-e2e"),
        ("update_refused", "0.5.0-e2e"),
        ("update_installed", "0.6.0-e2e"),
        ("update_failed", "0.6.0-e2e"),
    ] {
        let n = events.iter().filter(|(k, v, _)| k == kind && v == version).count();
        assert_eq!(n, 1, "{kind} {version}: {events:?}");
    }
    stack.sensor.stop(Duration::from_secs(30));
    stack.admin.stop(Duration::from_secs(10));
}

#[test]
fn pushed_configs_apply_are_refused_or_roll_back() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut stack = launcher_stack(dir);
    let state = stack.data_dir.join("update").join("state.json");
    stack.start_admin().unwrap();
    stack.start_sensor().unwrap();
    connections(&stack, 3);
    let mut made = 3;
    let base = std::fs::read_to_string(&stack.sensor_cfg).unwrap();
    let push = |stack: &Stack, text: &str, n: usize| {
        let f = dir.join(format!("pushed-{n}.toml"));
        std::fs::write(&f, text).unwrap();
        admin(stack, &["sensor", "config", "push", SENSOR, &f.display().to_string()]);
    };

    // 1. A good change: one more service, on a new port.
    let port = procs::free_port().unwrap();
    let good = format!("{base}\n[[service]]\nkind = \"telnet\"\nports = [{port}]\nbind = \"127.0.0.1\"\n");
    push(&stack, &good, 1);
    wait_event(&mut stack, "config_installed", "1");
    wait_event(&mut stack, "config_applied", "1");
    let st: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    assert_eq!(st["config_active"], 1, "{st}");
    TcpStream::connect(("127.0.0.1", port)).expect("the pushed config's new service answers");
    made += 1;

    // 2. A bad one: refused before anything restarts, with the key named.
    push(&stack, &format!("{good}\n[limits]\nno_such_key = 1\n"), 2);
    let why = wait_event(&mut stack, "config_refused", "2");
    assert!(why.contains("no_such_key") || why.contains("limits"), "{why}");
    connections(&stack, 2);
    made += 2;

    // 3. Valid, but it cannot run here (its port is taken): tried, rolled back, reported.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap().port();
    push(&stack, &format!("{good}\n[[service]]\nkind = \"ftp\"\nports = [{busy}]\nbind = \"127.0.0.1\"\n"), 3);
    wait_event(&mut stack, "config_installed", "3");
    let why = wait_event(&mut stack, "config_failed", "3");
    assert!(why.contains("exited before it was healthy"), "{why}");
    drop(taken);
    let st: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    assert_eq!(st["config_active"], 1, "the last good config runs again: {st}");
    // The rolled-back sensor runs config 1 again: its extra service answers.
    wait_for("the last good config's service", Duration::from_secs(30), || {
        TcpStream::connect(("127.0.0.1", port)).ok().map(drop)
    });
    made += 1;
    connections(&stack, 2);
    made += 2;

    let (s, t) = stack.settle(Duration::from_secs(60)).unwrap();
    assert_eq!(t.missing, 0, "{t:?} {s:?}");
    assert_eq!(t.rows, t.distinct_seqs, "no event twice: {t:?}");
    assert_eq!(t.connections(), made, "{t:?}");
    stack.sensor.stop(Duration::from_secs(30));
    stack.admin.stop(Duration::from_secs(10));
}
