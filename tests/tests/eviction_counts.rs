//! Eviction keeps the counts (issue 14): a sensor whose store is far too small for what it
//! records while its admin is down evicts most of it, and once the admin is back the report's
//! totals and the default export still count every connection that was made.
//!
//! The real binaries (`cargo build --workspace --bins` first), real TCP connections on loopback.

use drosera_e2e::procs;
use drosera_e2e::stack::{Bins, SensorOpts, Stack};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Connections made (bounded: every thread makes at most this many divided by the threads).
const CONNECTIONS: u64 = 12_000;
const THREADS: u64 = 6;

/// One short Telnet visit: connect, send a user name, close. True when the connection was made.
fn visit(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = s.write_all(b"root\r\n");
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut buf = [0u8; 512];
    // Until the sensor closes (it sees end of file and ends the session).
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
    }
    true
}

#[test]
fn evicted_connections_are_still_counted_in_the_report_and_the_export() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = SensorOpts {
        name: "evict".into(),
        cap_bytes: 1 << 20,
        reserve_bytes: 0,
        max_per_source: 2048,
        rate_per_source: 1_000_000,
        rate_burst: 1_000_000,
        ..Default::default()
    };
    let mut s = Stack::create(&Bins::beside_test_exe().unwrap(), tmp.path(), opts).unwrap();
    // The admin is down: nothing ships, so the 1 MiB store must evict.
    s.start_sensor().unwrap();
    let telnet = s.targets.iter().find(|t| t.service == "telnet").unwrap().addr;
    let made = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let made = made.clone();
            std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(240);
                for _ in 0..CONNECTIONS / THREADS {
                    if Instant::now() > deadline {
                        break;
                    }
                    if visit(telnet) {
                        made.fetch_add(1, Relaxed);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let made = made.load(Relaxed);
    assert!(made > CONNECTIONS / 2, "only {made} connections were made");
    // Every session has ended; stop the sensor gracefully (it writes what it holds) and let
    // the admin take the rest.
    s.start_admin().unwrap();
    let (st, totals) = s.settle(Duration::from_secs(180)).unwrap();
    eprintln!("made {made}; sensor {st:?}; admin {totals:?}");
    assert!(st.evicted_events > 0, "the store did not evict: the test proves nothing");
    assert_eq!(totals.missing, 0, "{totals:?}");
    assert_eq!(totals.evicted, st.evicted_events, "the admin has every gap record");
    assert!(totals.connections() < made, "connection records must have been evicted");

    let cfg = s.admin_cfg.display().to_string();
    let report = procs::run(&s.bins.admin, &["report", "--json", "--since", "0", "--config", &cfg]).unwrap();
    let r: serde_json::Value = serde_json::from_str(&report).unwrap();
    let t = &r["totals"];
    eprintln!("report totals {t}");
    assert_eq!(t["attempts"].as_u64(), Some(made), "the report counts every connection made: {t}");
    assert!(t["evicted_attempts"].as_u64().unwrap() > 0, "{t}");
    assert_eq!(t["evicted_events"].as_u64(), Some(st.evicted_events), "{t}");
    let telnet_row = r["protocols"].as_array().unwrap().iter().find(|p| p["protocol"] == "telnet").unwrap();
    assert_eq!(telnet_row["attempts"].as_u64(), Some(made), "{telnet_row}");

    // The default export: one row per stored connection, one `evicted` row for the address the
    // gaps list, `count` summing to every connection made; no internal rows.
    let out = tmp.path().join("attacks.jsonl");
    procs::run(
        &s.bins.admin,
        &["export", "--format", "jsonl", "--since", "0", "--config", &cfg, "--out", &out.display().to_string()],
    )
    .unwrap();
    let text = std::fs::read_to_string(&out).unwrap();
    let mut sum = 0u64;
    for line in text.lines() {
        let row: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(row["source_ip"], "127.0.0.1", "{row}");
        assert_ne!(row["protocol"], "sensor", "{row}");
        sum += row["count"].as_u64().unwrap();
    }
    assert_eq!(sum, made, "the export's counts add up to every connection made");
}
