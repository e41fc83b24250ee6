//! A fleet end to end: two `drosera-admin serve` processes on one PostgreSQL, three sensors
//! whose `[uplink] admin` lists both, each with a backlog to ship. One admin is killed -9 while
//! the sensors ship: every sensor fails over to the other admin, and the database then holds
//! every event of every sensor exactly once (no hole, no duplicate sequence number).
//!
//! Needs PostgreSQL (Debian's `postgresql`; a throwaway server, `drosera_admin::testpg`):
//! skipped without it, failing when `DROSERA_REQUIRE_CLIENTS=1`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use drosera_admin::storage::Backend;
use drosera_e2e::account::{self, SensorStatus};
use drosera_e2e::procs::{self, Proc};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const SENSORS: usize = 3;
const EVENTS: u64 = 40_000;

fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
    for b in ["drosera-admin", "drosera-sensor"] {
        assert!(dir.join(b).is_file(), "{b} not built: run `cargo build --workspace --bins` first");
    }
    dir
}

fn addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], procs::free_port().unwrap()))
}

/// A log without its ANSI colours.
fn plain(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn status(bin: &Path, cfg: &Path) -> Option<SensorStatus> {
    let out =
        procs::run(&bin.join("drosera-sensor"), &["status", "--config", &cfg.display().to_string(), "--json"]).ok()?;
    SensorStatus::parse(&out).ok()
}

#[test]
fn a_sensor_fleet_fails_over_when_an_admin_is_killed_and_nothing_is_lost_or_doubled() {
    let Some(url) = drosera_admin::testpg::fresh_database() else { return };
    let bin = bin_dir();
    let admin_bin = bin.join("drosera-admin");
    let tmp = tempfile::tempdir().unwrap();
    let w = tmp.path();
    let (ingest_a, ingest_b) = (addr(), addr());
    let s = |p: &Path| p.display().to_string();

    // The fleet: admin A creates the CA and the schema; admin B joins with the same CA.
    let (dir_a, dir_b) = (w.join("admin-a"), w.join("admin-b"));
    procs::run(
        &admin_bin,
        &[
            "init",
            "--dir",
            &s(&dir_a),
            "--admin",
            &ingest_a.to_string(),
            "--listen",
            &ingest_a.to_string(),
            "--dashboard-listen",
            &addr().to_string(),
            "--db-url",
            &url,
        ],
    )
    .unwrap();
    procs::run(
        &admin_bin,
        &[
            "init",
            "--dir",
            &s(&dir_b),
            "--join",
            &s(&dir_a),
            "--admin",
            &ingest_b.to_string(),
            "--listen",
            &ingest_b.to_string(),
            "--dashboard-listen",
            &addr().to_string(),
            "--db-url",
            &url,
        ],
    )
    .unwrap();
    let (cfg_a, cfg_b) = (dir_a.join("drosera-admin.toml"), dir_b.join("drosera-admin.toml"));

    // Sensors: enrolled at A (B accepts them too: same CA, same database); half list A first.
    let mut sensors = Vec::new();
    for i in 0..SENSORS {
        let name = format!("fleet-{i}");
        let (first, second) = if i % 2 == 0 { (ingest_a, ingest_b) } else { (ingest_b, ingest_a) };
        let bundle = w.join(format!("bundle-{i}"));
        procs::run(
            &admin_bin,
            &[
                "sensor",
                "add",
                &name,
                "--out",
                &s(&bundle),
                "--config",
                &s(&cfg_a),
                "--admin",
                &first.to_string(),
                "--admin",
                &second.to_string(),
            ],
        )
        .unwrap();
        let data = w.join(format!("data-{i}"));
        // The backlog the sensor ships when it starts.
        procs::run(
            &bin.join("drosera-sensor"),
            &[
                "debug-store-writer",
                "--data-dir",
                &s(&data),
                "--cap-bytes",
                &(256u64 << 20).to_string(),
                "--events",
                &EVENTS.to_string(),
            ],
        )
        .unwrap();
        let uplink = std::fs::read_to_string(bundle.join("uplink.toml")).unwrap();
        let cfg = w.join(format!("sensor-{i}.toml"));
        std::fs::write(
            &cfg,
            format!(
                "[sensor]\nname = \"{name}\"\ndata_dir = \"{}\"\nuser = \"\"\nhealth_interval_s = 3600\n\n\
                 [store]\ncap_bytes = {}\nreserve_bytes = 0\n\n\
                 [[service]]\nkind = \"http\"\nports = [{}]\nbind = \"127.0.0.1\"\n\n{uplink}backoff_max_s = 2\n\
                 batch_max_events = 1000\n",
                s(&data),
                256u64 << 20,
                procs::free_port().unwrap()
            ),
        )
        .unwrap();
        let proc = Proc::new(
            &name,
            &bin.join("drosera-sensor"),
            &["run", "--config", &s(&cfg)],
            w.join(format!("{name}.log")),
        )
        .env("RUST_LOG", "info");
        sensors.push((name, cfg, proc));
    }

    let mut admin_a = Proc::new("admin-a", &admin_bin, &["serve", "--config", &s(&cfg_a)], w.join("admin-a.log"))
        .env("RUST_LOG", "info");
    let mut admin_b = Proc::new("admin-b", &admin_bin, &["serve", "--config", &s(&cfg_b)], w.join("admin-b.log"))
        .env("RUST_LOG", "info");
    admin_a.start().unwrap();
    admin_b.start().unwrap();
    procs::wait_listening(&mut admin_a, ingest_a, Duration::from_secs(30)).unwrap();
    procs::wait_listening(&mut admin_b, ingest_b, Duration::from_secs(30)).unwrap();
    for (_, _, p) in &mut sensors {
        p.start().unwrap();
    }

    // Kill A while shipping is under way: a fifth of the events arrived, not all.
    let db = Backend::Postgres(url.clone());
    let total = SENSORS as u64 * EVENTS;
    let until = Instant::now() + Duration::from_secs(60);
    let stored = || -> u64 {
        drosera_admin::storage::open_backend(&db).unwrap().list_sensors().unwrap().iter().map(|s| s.events).sum::<i64>()
            as u64
    };
    loop {
        let n = stored();
        if n >= total / 5 {
            assert!(n < total, "everything arrived before the kill ({n}); the test proves nothing: raise EVENTS");
            break;
        }
        assert!(
            Instant::now() < until,
            "nothing arrived at the admins in 60 s; admin A log:\n{}",
            admin_a.log_tail(20)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    admin_a.kill9();
    let at_kill = stored();

    // Every sensor drains through B.
    let until = Instant::now() + Duration::from_secs(180);
    for (name, cfg, p) in &mut sensors {
        loop {
            match status(&bin, cfg) {
                Some(st) if st.backlog_events == 0 && st.acked_seq >= st.last_seq && st.last_seq >= EVENTS => break,
                _ if Instant::now() > until => {
                    panic!("{name} did not drain after the failover; log:\n{}", p.log_tail(30))
                }
                _ => std::thread::sleep(Duration::from_millis(250)),
            }
        }
        assert!(p.running(), "{name} died");
    }
    for (name, cfg, p) in &mut sensors {
        let st = status(&bin, cfg).unwrap();
        let t = account::admin_totals(&db, name, st.last_seq).unwrap();
        assert_eq!(t.missing, 0, "{name}: events missing at the admins: {t:?}");
        assert_eq!(t.rows, t.distinct_seqs, "{name}: a sequence number stored twice: {t:?}");
        assert_eq!(t.rows, st.last_seq, "{name}: {t:?} vs {st:?}");
        p.stop(Duration::from_secs(10));
    }
    // The sensors that had A first went over to B: B served every sensor.
    let log_b = plain(&std::fs::read_to_string(w.join("admin-b.log")).unwrap());
    for (i, (name, _, _)) in sensors.iter().enumerate() {
        let log = plain(&std::fs::read_to_string(w.join(format!("{name}.log"))).unwrap());
        if i % 2 == 0 {
            assert!(log.contains("uplink failing over"), "{name} listed A first and never failed over:\n{log}");
        }
        assert!(
            log_b.contains(&format!("sensor={name}")),
            "{name} never reached admin B; its log:\n{log}\nB's log:\n{}",
            &log_b[log_b.len().saturating_sub(3000)..]
        );
    }
    eprintln!(
        "fleet: {total} events, {at_kill} stored when admin A was killed, all {total} stored once after failover"
    );
    admin_b.stop(Duration::from_secs(10));
}
