//! Store benchmark (run with `cargo bench -p drosera-sensor --bench store` or
//! `scripts/bench-store.sh`): ingest rate with group commit, bytes on disk per typical
//! connection event, and batch-read rate. Prints one `key=value` line per measurement.
//!
//! Not a test: numbers go into docs/benchmarks.md, nothing here asserts on time.
// Integration tests and benches may panic; the workspace denies unwrap/expect elsewhere.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use drosera_sensor::config::{StoreSection, Synchronous};
use drosera_sensor::rollup::RollupTable;
use drosera_sensor::store;
use drosera_uplink::event::{CloseReason, Detail, Event, Priority, Protocol, Transport};
use std::sync::Arc;
use std::time::Instant;

/// A typical flood event: a connection that sent a short HTTP probe and closed.
fn typical(i: u64) -> Event {
    Event {
        seq: 0,
        time_ms: 1_763_800_000_000 + (i / 50) as i64,
        sensor: String::new(),
        transport: Transport::Tcp,
        protocol: Protocol::Http,
        src_ip: std::net::IpAddr::from([(i >> 24) as u8 | 1, (i >> 16) as u8, (i >> 8) as u8, i as u8]),
        src_port: 32_768 + (i % 28_000) as u16,
        dst_port: 80,
        session_id: i,
        duration_ms: 35 + (i % 400) as u32,
        bytes_in: 37,
        bytes_out: 0,
        priority: Priority::Noise,
        detail: Detail::Connection {
            first_bytes: b"GET / HTTP/1.1\r\nHost: 203.0.113.9\r\n\r\n".to_vec(),
            closed_by: CloseReason::ClientClosed,
        },
    }
}

fn ingest(synchronous: Synchronous, n: u64) {
    let name = match synchronous {
        Synchronous::Normal => "normal",
        Synchronous::Full => "full",
    };
    let dir = tempfile::tempdir_in(std::env::var("BENCH_DIR").unwrap_or_else(|_| "/var/tmp".into())).unwrap();
    let cfg = StoreSection { cap_bytes: 4 << 30, reserve_bytes: 0, synchronous, ..StoreSection::default() };
    let (handle, writer) = store::open(&cfg, dir.path(), "bench").unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(cfg.channel_capacity);
    let stop = tokio_util::sync::CancellationToken::new();
    let t0 = Instant::now();
    let wh = writer.spawn(rx, Arc::new(RollupTable::new(10)), stop.clone()).unwrap();
    for i in 0..n {
        tx.blocking_send(typical(i)).unwrap();
    }
    drop(tx);
    stop.cancel();
    wh.join().unwrap();
    let secs = t0.elapsed().as_secs_f64();
    let st = handle.status().unwrap();
    assert_eq!(st.last_seq, n);
    let conn = rusqlite::Connection::open(handle.db_path()).unwrap();
    let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0)).unwrap();
    let free: i64 = conn.query_row("PRAGMA freelist_count", [], |r| r.get(0)).unwrap();
    drop(conn);
    let encoded = postcard::to_stdvec(&typical(n / 2)).unwrap().len();
    println!("ingest synchronous={name} events={n} seconds={secs:.2} events_per_s={:.0}", n as f64 / secs);
    println!(
        "size synchronous={name} postcard_bytes_per_event={encoded} db_bytes_per_event={:.1} files_bytes_per_event={:.1}",
        ((pages - free) as f64 * 4096.0) / n as f64,
        st.store_bytes as f64 / n as f64
    );
    if synchronous == Synchronous::Normal {
        let t1 = Instant::now();
        let mut after = 0;
        let mut got = 0u64;
        loop {
            let b = handle.read_batch(after, 5000, 4 << 20).unwrap();
            let Some(last) = b.last() else { break };
            after = last.seq;
            got += b.len() as u64;
        }
        let secs = t1.elapsed().as_secs_f64();
        assert_eq!(got, n);
        println!("read batch=5000 events={got} seconds={secs:.2} events_per_s={:.0}", got as f64 / secs);
        let t2 = Instant::now();
        let mut upto = 0;
        while upto < n {
            upto = (upto + 5000).min(n);
            handle.ack(upto).unwrap();
        }
        println!("ack batch=5000 events={n} seconds={:.2}", t2.elapsed().as_secs_f64());
    }
}

fn main() {
    // `cargo bench` passes `--bench`; a number argument overrides the event count.
    let n = std::env::args().skip(1).find_map(|a| a.parse::<u64>().ok()).unwrap_or(1_000_000);
    ingest(Synchronous::Normal, n);
    ingest(Synchronous::Full, n / 4);
}
