//! The listener framework's admission control: every connection past a cap is closed at once and
//! counted, so accepted = connection events + rolled-up connections, exactly.
// Integration tests and benches may panic; the workspace denies unwrap/expect elsewhere.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use drosera_sensor::governor::Pressure;
use drosera_uplink::event::{Detail, Protocol, ShedReason};
use std::sync::atomic::Ordering;
use std::time::Duration;
use support::Harness;
use tokio::io::AsyncWriteExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_source_cap_sheds_and_counts() {
    let mut cfg = support::config_for(&[]);
    cfg.blackhole.ports = vec![0];
    cfg.blackhole.bind = "127.0.0.1".parse().unwrap();
    cfg.limits.max_per_source = 5;
    cfg.limits.idle_timeout_s = 2;
    let h = Harness::start_with(cfg, Pressure::Normal, 10_000).await;
    let addr = h.addr(Protocol::Blackhole);
    // Hold 20 connections open at once from 127.0.0.1: 5 admitted, 15 shed.
    let mut held = Vec::new();
    for _ in 0..20 {
        // A shed connection is reset at once; connect() may already see the reset.
        if let Ok(mut s) = tokio::net::TcpStream::connect(addr).await {
            let _ = s.write_all(b"probe").await;
            held.push(s);
        }
    }
    let evs = h.wait_for(Duration::from_secs(10), |_| h.stats.shed.load(Ordering::Relaxed) >= 15).await;
    drop(held);
    let evs = h.wait_connections(5, Duration::from_secs(10)).await.len().max(evs.len());
    let _ = evs;
    let conns = h.events().iter().filter(|e| matches!(e.detail, Detail::Connection { .. })).count() as u64;
    let rolled: u64 = drosera_sensor::rollup::rolled_up(&h.rollups.drain(1000, "t", 0));
    assert_eq!(conns, 5);
    assert_eq!(rolled, 15);
    assert_eq!(h.stats.accepted.load(Ordering::Relaxed), conns + rolled);
    // The blackhole recorded the probe bytes as a payload.
    assert!(h.events().iter().any(|e| matches!(&e.detail, Detail::Payload { prefix, .. } if prefix == b"probe")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hard_pressure_refuses_everything_but_counts_it() {
    let mut cfg = support::config_for(&[]);
    cfg.blackhole.ports = vec![0];
    cfg.blackhole.bind = "127.0.0.1".parse().unwrap();
    let h = Harness::start_with(cfg, Pressure::Hard, 10_000).await;
    let addr = h.addr(Protocol::Blackhole);
    for _ in 0..10 {
        let _ = tokio::net::TcpStream::connect(addr).await;
    }
    h.wait_for(Duration::from_secs(10), |_| h.stats.shed.load(Ordering::Relaxed) >= 10).await;
    let evs = h.rollups.drain(100, "t", 0);
    assert!(evs.iter().all(|e| matches!(e.detail, Detail::Rollup { reason: ShedReason::MemoryPressure, .. })));
    assert_eq!(drosera_sensor::rollup::rolled_up(&evs), 10);
    assert!(h.events().is_empty());
}
