//! Issue 2, test 1: write ten times the cap's worth of events; db + wal + shm never exceed the
//! cap (sampled during the run and at the end), and the gap records account for every evicted
//! event (`written = kept + evicted`).
// Integration tests and benches may panic; the workspace denies unwrap/expect elsewhere.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use drosera_sensor::config::StoreSection;
use drosera_sensor::rollup::RollupTable;
use drosera_sensor::store;
use drosera_uplink::event::{CloseReason, Detail, Event, Priority, Protocol, Transport};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

fn conn_event(i: u64) -> Event {
    Event {
        seq: 0,
        time_ms: 1_700_000_000_000 + i as i64,
        sensor: String::new(),
        transport: Transport::Tcp,
        protocol: Protocol::Http,
        src_ip: std::net::IpAddr::from([198, 51, 100, (i % 250) as u8]),
        src_port: 40_000 + (i % 20_000) as u16,
        dst_port: 80,
        session_id: i,
        duration_ms: 120,
        bytes_in: 78,
        bytes_out: 0,
        priority: Priority::Noise,
        detail: Detail::Connection {
            first_bytes: b"GET / HTTP/1.1\r\nHost: 198.51.100.7\r\nUser-Agent: Mozilla/5.0 zgrab/0.x\r\n\r\n".to_vec(),
            closed_by: CloseReason::ClientClosed,
        },
    }
}

fn files_size(db: &Path) -> u64 {
    ["", "-wal", "-shm"]
        .iter()
        .map(|s| {
            let p = format!("{}{}", db.display(), s);
            std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
        })
        .sum()
}

#[test]
fn ten_caps_of_events_stay_under_the_cap_and_gaps_account_for_evictions() {
    let dir = tempfile::tempdir().unwrap();
    let cap: u64 = 2 * 1024 * 1024;
    let cfg = StoreSection {
        cap_bytes: cap,
        reserve_bytes: 0,
        commit_interval_ms: 20,
        commit_max_events: 2000,
        channel_capacity: 10_000,
        disk_check_interval_s: 1,
        ..StoreSection::default()
    };
    let (handle, writer) = store::open(&cfg, dir.path(), "t1").unwrap();
    let (tx, rx) = drosera_sensor::sink::EventQueue::blocking(cfg.channel_capacity);
    let stop = tokio_util::sync::CancellationToken::new();
    let rollups = Arc::new(RollupTable::new(100));
    let wh = writer.spawn(rx, rollups, stop.clone()).unwrap();

    let db = handle.db_path();
    let done = Arc::new(AtomicBool::new(false));
    let max_seen = Arc::new(AtomicU64::new(0));
    let samples = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (db, done, max_seen, samples) = (db.clone(), done.clone(), max_seen.clone(), samples.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                let total = files_size(&db);
                if total > max_seen.fetch_max(total, Ordering::Relaxed) {
                    let wal = std::fs::metadata(format!("{}-wal", db.display())).map(|m| m.len()).unwrap_or(0);
                    eprintln!("new max {total} (wal {wal})");
                }
                samples.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        })
    };

    // A shipper-like reader runs all the time: its read snapshots hold back checkpoints, and
    // the WAL must still stay inside the cap.
    let reader = {
        let (handle, done) = (handle.clone(), done.clone());
        std::thread::spawn(move || {
            let mut after = 0;
            let mut batches = 0u64;
            while !done.load(Ordering::Relaxed) {
                match handle.read_batch(after, 5000, 1 << 20) {
                    Ok(b) if !b.is_empty() => {
                        after = b.last().unwrap().seq;
                        batches += 1;
                    }
                    _ => after = 0,
                }
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            batches
        })
    };

    let one = postcard::to_stdvec(&conn_event(1)).unwrap().len() as u64;
    let written = 10 * cap / one + 1;
    for i in 0..written {
        tx.blocking_send(conn_event(i)).unwrap();
    }
    stop.cancel();
    wh.join().unwrap();
    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let batches = reader.join().unwrap();
    assert!(batches > 0, "the concurrent reader never read");
    let end = files_size(&db);
    let max = max_seen.load(Ordering::Relaxed).max(end);
    eprintln!(
        "written {written} events of {one} bytes; max size {max}, end {end}, cap {cap}, samples {}",
        samples.load(Ordering::Relaxed)
    );
    assert!(samples.load(Ordering::Relaxed) > 100, "sampler did not run");
    assert!(max <= cap, "store files reached {max} bytes, cap {cap}");
    assert!(end <= cap);

    // Account: every written event is kept or counted in a gap.
    let mut kept = 0u64;
    let mut gap_sum = 0u64;
    let mut min_kept_conn = u64::MAX;
    let mut max_gap_last = 0u64;
    let mut evicted_kinds = 0u64;
    let mut after = 0;
    let mut last_seq = 0;
    loop {
        let batch = handle.read_batch(after, 1000, 1 << 20).unwrap();
        if batch.is_empty() {
            break;
        }
        for ev in &batch {
            assert!(ev.seq > last_seq, "sequence not increasing");
            last_seq = ev.seq;
            assert_eq!(ev.sensor, "t1");
            match &ev.detail {
                Detail::Connection { .. } => {
                    kept += 1;
                    min_kept_conn = min_kept_conn.min(ev.seq);
                }
                Detail::EvictionSummary { count, last_seq, per_priority, per_kind, top_sources, sources, .. } => {
                    gap_sum += count;
                    max_gap_last = max_gap_last.max(*last_seq);
                    assert_eq!(per_priority.iter().map(|(_, n)| n).sum::<u64>(), *count);
                    // What was evicted, by kind: every event counted once, as what it was.
                    assert_eq!(per_kind.iter().map(|k| k.events).sum::<u64>(), *count);
                    assert!(per_kind.iter().all(|k| k.kind == "connection" && k.count == k.events), "{per_kind:?}");
                    evicted_kinds += per_kind.iter().map(|k| k.count).sum::<u64>();
                    assert!(top_sources.len() as u64 <= (*sources).min(16));
                    assert!(top_sources.iter().map(|s| s.attempts).sum::<u64>() <= *count);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        after = batch.last().unwrap().seq;
    }
    let st = handle.status().unwrap();
    eprintln!("kept {kept}, evicted {gap_sum}, status {st:?}");
    assert!(gap_sum > 0, "nothing was evicted");
    assert_eq!(written, kept + gap_sum, "written = kept + evicted");
    assert_eq!(evicted_kinds, gap_sum, "the gaps say what every evicted event was");
    assert_eq!(st.evicted_events, gap_sum);
    assert!(max_gap_last < min_kept_conn, "oldest events must go first");
    // The status seen from another process agrees.
    let other = store::read_status(&cfg, dir.path()).unwrap();
    assert_eq!(other.evicted_events, gap_sum);
    assert_eq!(other.last_seq, st.last_seq);
    assert!(other.store_bytes <= cap);
}
