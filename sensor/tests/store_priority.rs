//! Issue 2, test 2: under eviction, low-priority events go first; logins and payloads survive
//! longest, and `System` records (gaps) go last of all.
// Integration tests and benches may panic; the workspace denies unwrap/expect elsewhere.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use drosera_sensor::config::StoreSection;
use drosera_sensor::rollup::RollupTable;
use drosera_sensor::store::{self, synthetic_event, StoreHandle};
use drosera_uplink::event::{Detail, Event, Priority};
use std::sync::Arc;

fn run_events(cfg: &StoreSection, dir: &std::path::Path, events: impl Iterator<Item = Event>) -> StoreHandle {
    let (handle, writer) = store::open(cfg, dir, "prio").unwrap();
    let (tx, rx) = drosera_sensor::sink::EventQueue::blocking(cfg.channel_capacity);
    let stop = tokio_util::sync::CancellationToken::new();
    let wh = writer.spawn(rx, Arc::new(RollupTable::new(10)), stop.clone()).unwrap();
    for ev in events {
        tx.blocking_send(ev).unwrap();
    }
    stop.cancel();
    wh.join().unwrap();
    handle
}

fn all(handle: &StoreHandle) -> Vec<Event> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let b = handle.read_batch(after, 5000, 8 << 20).unwrap();
        let Some(last) = b.last() else { break };
        after = last.seq;
        out.extend(b);
    }
    out
}

/// For every gap: no event of a lower class older than the gap may still be stored (it would
/// have had to go first).
fn assert_priority_order(events: &[Event]) {
    for g in events {
        if let Detail::EvictionSummary { per_priority, .. } = &g.detail {
            let highest = per_priority.iter().map(|(p, _)| *p).max().unwrap();
            for ev in events {
                if ev.seq < g.seq && ev.priority < highest && !matches!(ev.detail, Detail::EvictionSummary { .. }) {
                    panic!(
                        "gap {} evicted {:?} while older {:?} event {} was kept",
                        g.seq, highest, ev.priority, ev.seq
                    );
                }
            }
        }
    }
}

#[test]
fn low_priority_goes_first_and_logins_payloads_survive() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = StoreSection {
        cap_bytes: 2 * 1024 * 1024,
        reserve_bytes: 0,
        commit_interval_ms: 10,
        commit_max_events: 1000,
        channel_capacity: 5000,
        ..StoreSection::default()
    };
    // Phase 1: a flood of mostly noise (every 10th a login, every 50th a payload), ~5x the cap.
    let n1 = 60_000u64;
    let handle = run_events(&cfg, dir.path(), (0..n1).map(synthetic_event));
    let evs = all(&handle);
    let count = |p: Priority| evs.iter().filter(|e| e.priority == p).count() as u64;
    let gaps: Vec<&Event> = evs.iter().filter(|e| matches!(e.detail, Detail::EvictionSummary { .. })).collect();
    assert!(!gaps.is_empty(), "nothing evicted");
    let logins = (0..n1).filter(|i| i % 10 == 0 && i % 50 != 0).count() as u64;
    let payloads = (0..n1).filter(|i| i % 50 == 0).count() as u64;
    assert_eq!(count(Priority::Credential), logins, "every login must survive a noise flood");
    assert_eq!(count(Priority::Critical), payloads, "every payload must survive a noise flood");
    assert!(count(Priority::Noise) > 0 && count(Priority::Noise) < n1 - logins - payloads);
    for g in &gaps {
        if let Detail::EvictionSummary { per_priority, .. } = &g.detail {
            assert!(per_priority.iter().all(|(p, _)| *p == Priority::Noise), "only noise evicted: {per_priority:?}");
        }
    }
    assert_priority_order(&evs);
    drop(handle);

    // Phase 2: only logins and payloads now; noise must be gone before any of them goes, and
    // logins before payloads.
    let phase2 = (0..40_000u64).map(|i| synthetic_event(if i % 5 == 0 { 50 * i } else { 10 * i + 10 }));
    let handle = run_events(&cfg, dir.path(), phase2);
    let evs = all(&handle);
    assert_priority_order(&evs);
    let per_class = |p: Priority| evs.iter().filter(|e| e.priority == p).count();
    eprintln!(
        "after phase 2: noise {} credential {} critical {} system {}",
        per_class(Priority::Noise),
        per_class(Priority::Credential),
        per_class(Priority::Critical),
        per_class(Priority::System)
    );
    assert_eq!(per_class(Priority::Noise), 0, "noise must be evicted before logins and payloads");
    let evicted_credentials: u64 = evs
        .iter()
        .filter_map(|e| match &e.detail {
            Detail::EvictionSummary { per_priority, .. } => {
                per_priority.iter().find(|(p, _)| *p == Priority::Credential).map(|(_, n)| *n)
            }
            _ => None,
        })
        .sum();
    assert!(evicted_credentials > 0, "phase 2 must have evicted logins");
    // Every system record (gaps) survived.
    let st = handle.status().unwrap();
    let gap_sum: u64 = evs
        .iter()
        .filter_map(|e| match &e.detail {
            Detail::EvictionSummary { count, .. } => Some(*count),
            _ => None,
        })
        .sum();
    assert_eq!(gap_sum, st.evicted_events, "no gap record was evicted");
}
