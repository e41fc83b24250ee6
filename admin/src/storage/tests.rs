//! Conformance tests of the [`Storage`] contract. Each check takes a `&dyn Storage`, so every
//! backend runs the same checks: add a backend to [`backends`].

use super::*;
use crate::sensors;
use drosera_uplink::event::{CloseReason, Detail, Priority, Protocol, Transport};

/// A fresh, empty database of every backend (with what keeps it alive).
fn backends() -> Vec<(Box<dyn Storage>, tempfile::TempDir)> {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = sqlite::open(&dir.path().join("a.db")).unwrap();
    vec![(Box::new(sqlite), dir)]
}

fn ev(seq: u64) -> Event {
    Event {
        seq,
        time_ms: 1_700_000_000_000,
        sensor: "liar".into(),
        transport: Transport::Tcp,
        protocol: Protocol::Http,
        src_ip: "198.51.100.9".parse().unwrap(),
        src_port: 5,
        dst_port: 80,
        session_id: seq,
        duration_ms: 1,
        bytes_in: 1,
        bytes_out: 1,
        priority: Priority::Noise,
        detail: Detail::Connection { first_bytes: vec![], closed_by: CloseReason::ClientClosed },
    }
}

fn commit(db: &dyn Storage, sensor_id: i64, last_seq: u64, events: &[Event]) -> BatchOutcome {
    let mut out = db.commit_batches(&[BatchIn { sensor_id, last_seq, events }], 1).unwrap();
    assert_eq!(out.len(), 1);
    out.remove(0)
}

fn store_batch_is_exactly_once_and_keeps_health(db: &dyn Storage) {
    sensors::register(db, "pi", "aa", 0).unwrap();
    let id = db.enrollment("pi").unwrap().unwrap().sensor_id;
    let mut gap = ev(4);
    gap.detail = Detail::EvictionGap {
        count: 7,
        first_seq: 1,
        last_seq: 7,
        first_time_ms: 0,
        last_time_ms: 0,
        per_protocol: vec![],
        per_priority: vec![],
    };
    let mut health = ev(5);
    health.detail = Detail::Health(drosera_uplink::event::Health { backlog_events: 12, ..Default::default() });
    let batch = vec![ev(1), ev(2), ev(3), gap, health];
    for _ in 0..2 {
        assert_eq!(commit(db, id, 5, &batch), BatchOutcome::Ack(5));
    }
    // Overlapping resend with one new event.
    assert_eq!(commit(db, id, 6, &[ev(5), ev(6)]), BatchOutcome::Ack(6));
    let l = sensors::list(db).unwrap();
    assert_eq!(l[0].events, 6);
    assert_eq!((l[0].high_water_seq, l[0].evicted_total), (6, 7));
    assert_eq!(l[0].health.as_ref().unwrap().backlog_events, 12);
    sensors::revoke(db, "pi").unwrap();
    assert!(matches!(commit(db, id, 7, &[ev(7)]), BatchOutcome::Refused(_)));
}

fn a_failed_group_stores_nothing(db: &dyn Storage) {
    sensors::register(db, "pi", "aa", 0).unwrap();
    let id = db.enrollment("pi").unwrap().unwrap().sensor_id;
    let (one, two) = ([ev(1)], [ev(1)]);
    let group = [
        BatchIn { sensor_id: id, last_seq: 1, events: &one },
        BatchIn { sensor_id: id + 1000, last_seq: 1, events: &two },
    ];
    assert!(db.commit_batches(&group, 1).is_err(), "a batch of an unknown sensor fails the group");
    let l = sensors::list(db).unwrap();
    assert_eq!((l[0].events, l[0].high_water_seq), (0, 0), "the other batch of the group was rolled back");
    assert_eq!(commit(db, id, 1, &one), BatchOutcome::Ack(1));
}

fn group_commit_answers_each_batch_in_order(db: &dyn Storage) {
    for name in ["a", "b"] {
        sensors::register(db, name, "cc", 0).unwrap();
    }
    let a = db.enrollment("a").unwrap().unwrap().sensor_id;
    let b = db.enrollment("b").unwrap().unwrap().sensor_id;
    let (a1, b1, a2) = ([ev(1), ev(2)], [ev(1)], [ev(3)]);
    let group = [
        BatchIn { sensor_id: a, last_seq: 2, events: &a1 },
        BatchIn { sensor_id: b, last_seq: 1, events: &b1 },
        BatchIn { sensor_id: a, last_seq: 2, events: &a1 },
        BatchIn { sensor_id: a, last_seq: 3, events: &a2 },
    ];
    let out = db.commit_batches(&group, 1).unwrap();
    use BatchOutcome::Ack;
    assert_eq!(out, vec![Ack(2), Ack(1), Ack(2), Ack(3)]);
    let l = sensors::list(db).unwrap();
    assert_eq!((l[0].name.as_str(), l[0].events, l[1].events), ("a", 3, 1));
}

#[test]
fn exactly_once() {
    for (db, _dir) in backends() {
        store_batch_is_exactly_once_and_keeps_health(&*db);
    }
}

#[test]
fn failed_group() {
    for (db, _dir) in backends() {
        a_failed_group_stores_nothing(&*db);
    }
}

#[test]
fn group_order() {
    for (db, _dir) in backends() {
        group_commit_answers_each_batch_in_order(&*db);
    }
}
