//! Issue 2, test 3: a child process writes events and the parent kills it (SIGKILL) at random
//! moments, 24 times. After every kill the database passes `integrity_check`, sequence numbers
//! continue without reuse, and every event the child reported committed is present or accounted
//! for by an eviction gap.
// Integration tests and benches may panic; the workspace denies unwrap/expect elsewhere.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use drosera_uplink::event::{Detail, Event};
use rand::{Rng, SeedableRng};
use rusqlite::Connection;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Everything in the store: present seqs, gap ranges and their total count.
fn inspect(db: &Path) -> (BTreeSet<u64>, Vec<(u64, u64)>, u64, u64) {
    let conn = Connection::open(db).unwrap();
    let check: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(check, "ok", "integrity_check failed");
    let mut present = BTreeSet::new();
    let mut gaps = Vec::new();
    let mut gap_total = 0;
    for t in ["ev0", "ev1", "ev2", "ev3", "ev4"] {
        let mut st = conn.prepare(&format!("SELECT seq, body FROM {t}")).unwrap();
        let mut rows = st.query([]).unwrap();
        while let Some(r) = rows.next().unwrap() {
            let seq: i64 = r.get(0).unwrap();
            let body: Vec<u8> = r.get(1).unwrap();
            assert!(present.insert(seq as u64), "seq {seq} stored twice");
            let ev: Event = postcard::from_bytes(&body).unwrap();
            if let Detail::EvictionSummary { count, first_seq, last_seq, .. } = ev.detail {
                gaps.push((first_seq, last_seq));
                gap_total += count;
            }
        }
    }
    let last: i64 = conn.query_row("SELECT v FROM meta WHERE k = 'last_seq'", [], |r| r.get(0)).unwrap_or(0);
    let evicted: i64 = conn.query_row("SELECT v FROM meta WHERE k = 'evicted_total'", [], |r| r.get(0)).unwrap_or(0);
    assert_eq!(evicted as u64, gap_total, "gap records account for every eviction");
    (present, gaps, gap_total, last as u64)
}

#[test]
fn kill_dash_nine_loop_keeps_the_store_consistent() {
    let bin = env!("CARGO_BIN_EXE_drosera-sensor");
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("store.db");
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x00d0_5e7a);
    let mut max_committed = 0u64;
    let mut evicting_rounds = 0;
    let started = Instant::now();
    for round in 0..24 {
        let mut child = Command::new(bin)
            .args(["debug-store-writer", "--data-dir"])
            .arg(dir.path())
            .args(["--cap-bytes", "1048576"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // Wait for the child's first commit, then kill it at a random moment.
        let mut start_seq = None;
        let mut committed = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while committed.is_empty() && Instant::now() < deadline {
            if let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) {
                if let Some(s) = line.strip_prefix("start ") {
                    start_seq = Some(s.parse::<u64>().unwrap());
                } else if let Some(s) = line.strip_prefix("committed ") {
                    committed.push(s.parse::<u64>().unwrap());
                }
            }
        }
        assert!(!committed.is_empty(), "round {round}: child never committed");
        std::thread::sleep(Duration::from_millis(rng.gen_range(0..400)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        reader.join().unwrap();
        for line in rx.try_iter() {
            if let Some(s) = line.strip_prefix("committed ") {
                committed.push(s.parse::<u64>().unwrap());
            }
        }
        let start = start_seq.expect("child printed its start seq");
        assert!(start >= max_committed, "round {round}: restarted at {start} below committed {max_committed}");
        let first_new = *committed.first().unwrap();
        assert!(first_new > max_committed, "round {round}: seq {first_new} reused (had {max_committed})");
        let top = *committed.iter().max().unwrap();
        assert!(committed.windows(2).all(|w| w[0] < w[1]), "committed seqs not increasing");

        let (present, gaps, gap_total, last) = inspect(&db);
        assert!(last >= top, "round {round}: db last_seq {last} < reported committed {top}");
        for s in 1..=top {
            if !present.contains(&s) {
                assert!(
                    gaps.iter().any(|(a, b)| *a <= s && s <= *b),
                    "round {round}: committed event {s} neither present nor covered by a gap"
                );
            }
        }
        // Exact accounting: every sequence number up to last is stored or evicted.
        assert_eq!(present.len() as u64 + gap_total, last, "round {round}: written != kept + evicted");
        if gap_total > 0 {
            evicting_rounds += 1;
        }
        max_committed = max_committed.max(top).max(last);
    }
    eprintln!("24 kills in {:?}, max seq {max_committed}, rounds with evictions {evicting_rounds}", started.elapsed());
    assert!(evicting_rounds > 0, "the cap was never reached; the test did not exercise eviction");
}
