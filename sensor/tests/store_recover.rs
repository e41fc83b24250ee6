//! Issue 2, test 5: a corrupt database at start is quarantined (db + wal + shm moved aside with a
//! timestamp), a fresh store starts with a `StoreRecovered` event, and sequence numbers continue
//! above everything the old file used. Repeated corruption never stops the store and keeps at
//! most two quarantined copies.
// Integration tests and benches may panic; the workspace denies unwrap/expect elsewhere.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use drosera_sensor::config::StoreSection;
use drosera_sensor::rollup::RollupTable;
use drosera_sensor::store::{self, synthetic_event};
use drosera_uplink::event::Detail;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Arc;

fn cfg() -> StoreSection {
    StoreSection { cap_bytes: 8 << 20, reserve_bytes: 0, commit_interval_ms: 10, ..StoreSection::default() }
}

/// Opens the store, writes `n` events, closes it; returns the last seq.
fn write(dir: &Path, n: u64) -> (u64, Vec<drosera_uplink::event::Event>) {
    let (handle, writer) = store::open(&cfg(), dir, "rec").unwrap();
    let (tx, rx) = drosera_sensor::sink::EventQueue::blocking(1000);
    let stop = tokio_util::sync::CancellationToken::new();
    let wh = writer.spawn(rx, Arc::new(RollupTable::new(10)), stop.clone()).unwrap();
    for i in 0..n {
        tx.blocking_send(synthetic_event(i + 1)).unwrap();
    }
    stop.cancel();
    wh.join().unwrap();
    let first = handle.read_batch(0, 3, 1 << 20).unwrap();
    (handle.last_seq(), first)
}

fn quarantined(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("store.db.corrupt-") && !n.ends_with("-wal") && !n.ends_with("-shm"))
        .collect();
    v.sort();
    v
}

#[test]
fn corrupt_database_is_quarantined_and_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("store.db");
    let (last1, _) = write(dir.path(), 3000);
    assert!(last1 >= 3000);

    // Damage B-tree pages in the middle of a real SQLite file.
    {
        let mut f = std::fs::OpenOptions::new().write(true).open(&db).unwrap();
        let len = f.metadata().unwrap().len();
        assert!(len > 16 * 4096, "store too small to corrupt ({len})");
        for page in [3u64, 5, 8, 13] {
            f.seek(SeekFrom::Start(page * 4096)).unwrap();
            f.write_all(&[0xA5; 512]).unwrap();
        }
    }
    let (last2, first) = write(dir.path(), 10);
    let q = quarantined(dir.path());
    assert_eq!(q.len(), 1, "one quarantined copy expected: {q:?}");
    match &first[0].detail {
        Detail::StoreRecovered { quarantined_path, reason, last_seq_before } => {
            assert!(quarantined_path.contains("store.db.corrupt-"), "{quarantined_path}");
            assert!(!reason.is_empty());
            assert!(*last_seq_before >= last1, "last_seq_before {last_seq_before} < {last1}");
        }
        other => panic!("first event after recovery is {other:?}"),
    }
    assert!(first[0].seq > last1, "seq reused after recovery: {} <= {last1}", first[0].seq);
    assert!(last2 > first[0].seq);

    // Not SQLite at all; and a stale -wal next to it.
    std::fs::write(&db, b"this is not a database, just attacker-sized garbage".repeat(100)).unwrap();
    std::fs::write(dir.path().join("store.db-wal"), b"junk").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (last3, first) = write(dir.path(), 10);
    assert!(matches!(first[0].detail, Detail::StoreRecovered { .. }));
    assert!(first[0].seq > last2, "seq reused after the second recovery");
    assert!(last3 > last2);

    // Third time: still no crash loop, and at most two quarantined copies are kept.
    std::fs::write(&db, vec![0u8; 9000]).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (last4, first) = write(dir.path(), 10);
    assert!(matches!(first[0].detail, Detail::StoreRecovered { .. }), "{:?}", first[0].detail);
    assert!(last4 > last3);
    let q = quarantined(dir.path());
    assert_eq!(q.len(), 2, "only the newest two quarantined copies are kept: {q:?}");
    let status = store::read_status(&cfg(), dir.path()).unwrap();
    assert_eq!(status.last_seq, last4);
}
