//! The reader API the shipper uses: batches bounded by events and bytes (at least one event),
//! in sequence order with `seq` and `sensor` filled, no sequence skipped while the writer
//! commits concurrently, and durable acknowledgements that free rows.
// Integration tests and benches may panic; the workspace denies unwrap/expect elsewhere.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use drosera_sensor::config::StoreSection;
use drosera_sensor::rollup::RollupTable;
use drosera_sensor::store::{self, synthetic_event};
use std::sync::Arc;

fn cfg() -> StoreSection {
    StoreSection {
        cap_bytes: 32 << 20,
        reserve_bytes: 0,
        commit_interval_ms: 5,
        commit_max_events: 300,
        ..Default::default()
    }
}

#[test]
fn batches_are_bounded_ordered_and_never_skip_while_writing() {
    let dir = tempfile::tempdir().unwrap();
    let (handle, writer) = store::open(&cfg(), dir.path(), "rd").unwrap();
    let (tx, rx) = drosera_sensor::sink::EventQueue::blocking(1000);
    let stop = tokio_util::sync::CancellationToken::new();
    let wh = writer.spawn(rx, Arc::new(RollupTable::new(10)), stop.clone()).unwrap();
    let total = 30_000u64;
    let producer = std::thread::spawn(move || {
        for i in 1..=total {
            tx.blocking_send(synthetic_event(i)).unwrap();
        }
    });
    // Read (and ack) concurrently, like the shipper.
    let mut after = 0u64;
    let mut seen = 0u64;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(40);
    while seen < total {
        assert!(std::time::Instant::now() < deadline, "reader stalled at {seen}");
        let batch = handle.read_batch(after, 700, 64 * 1024).unwrap();
        assert!(batch.len() <= 700);
        let bytes: usize = batch.iter().map(|e| postcard::to_stdvec(e).unwrap().len()).sum();
        assert!(bytes <= 64 * 1024 + 8 * 1024, "batch of {bytes} bytes");
        for ev in &batch {
            assert_eq!(ev.seq, after + 1, "sequence skipped or reordered");
            assert_eq!(ev.sensor, "rd");
            after = ev.seq;
            seen += 1;
        }
        if seen % 3000 < 700 && after > 100 {
            handle.ack(after - 100).unwrap();
            assert_eq!(handle.acked_seq(), after - 100);
        }
    }
    producer.join().unwrap();
    // The writer also stops by itself once every sender is gone.
    stop.cancel();
    wh.join().unwrap();
    // A tiny byte bound still returns one event.
    let one = handle.read_batch(0, 10, 1).unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].seq, handle.acked_seq() + 1, "acknowledged rows are gone");
    handle.ack(total).unwrap();
    assert_eq!(handle.status().unwrap().backlog_events, 0);
    assert!(handle.read_batch(0, 10, 1 << 20).unwrap().is_empty());
    // Acknowledgements are durable.
    drop(handle);
    let (h2, _w2) = store::open(&cfg(), dir.path(), "rd").unwrap();
    assert_eq!(h2.acked_seq(), total);
    assert_eq!(h2.last_seq(), total);
    assert_eq!(h2.status().unwrap().backlog_events, 0);
    // Acking backwards is a no-op.
    h2.ack(5).unwrap();
    assert_eq!(h2.acked_seq(), total);
}

#[test]
fn writer_without_a_shutdown_sender_runs_until_the_channel_closes() {
    let dir = tempfile::tempdir().unwrap();
    let (handle, writer) = store::open(&cfg(), dir.path(), "rd").unwrap();
    let (tx, rx) = drosera_sensor::sink::EventQueue::blocking(10);
    // Nobody holds the token any more: it can never be cancelled.
    let stop = tokio_util::sync::CancellationToken::new();
    let wh = writer.spawn(rx, Arc::new(RollupTable::new(10)), stop.child_token()).unwrap();
    drop(stop);
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert!(!wh.is_finished(), "writer must keep running while producers exist");
    for i in 1..=50 {
        tx.blocking_send(synthetic_event(i)).unwrap();
    }
    drop(tx);
    wh.join().unwrap();
    assert_eq!(handle.last_seq(), 50);
}
