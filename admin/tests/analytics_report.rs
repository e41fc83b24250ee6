//! Analytics over a fixture with known numbers: totals, filters, ranges, incremental refresh,
//! retention keeping daily rollups.
// Tests, benches and examples may panic; the workspace denies unwrap/expect elsewhere.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod analytics_support;
use analytics_support::*;
use drosera_admin::analytics::{self, Query};
use drosera_admin::retention::{self, RetentionConfig};
use drosera_uplink::event::Protocol;

fn all() -> Query {
    Query { since_ms: Some(T0), until_ms: Some(T0 + 10 * DAY), sensor: None, ..Default::default() }
}

#[test]
fn totals_and_lists_match_the_fixture() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = fixture(&dir.path().join("a.db"));
    let en = enricher();
    assert_eq!(analytics::refresh(&mut *c, &en).unwrap(), 32);
    assert_eq!(analytics::refresh(&mut *c, &en).unwrap(), 0, "nothing new the second time");
    let t = analytics::totals(&*c, &all()).unwrap();
    assert_eq!(
        (t.attempts, t.rolled_up, t.logins, t.attackers, t.countries, t.payloads, t.exploits, t.downloads),
        (116, 100, 10, 4, 4, 1, 1, 1)
    );
    assert_eq!(t.events, 32);

    let p = analytics::protocols(&*c, &all()).unwrap();
    let got: Vec<(&str, i64, i64)> = p.iter().map(|r| (r.protocol.as_str(), r.attempts, r.logins)).collect();
    assert_eq!(got, vec![("smb", 100, 0), ("telnet", 12, 7), ("ssh", 3, 3), ("http", 1, 0)]);

    let ports = analytics::ports(&*c, &all(), 10).unwrap();
    assert_eq!((ports[0].port, ports[0].attempts), (445, 100));

    let s = analytics::top_sources(&*c, &all(), 0, 10).unwrap();
    assert_eq!(s.matching, 4);
    let ips: Vec<(&str, i64, &str)> = s.rows.iter().map(|r| (r.ip.as_str(), r.attempts, r.country.as_str())).collect();
    assert_eq!(
        ips,
        vec![("2a00:1450:4001::1", 100, "IE"), ("8.8.8.8", 12, "US"), ("1.1.1.1", 3, "AU"), ("10.0.0.5", 1, "private")]
    );
    assert_eq!(s.rows[1].asn, Some(15169));
    assert_eq!(s.rows[1].logins, 7);
    // attackers with 10 or more attempts
    let s = analytics::top_sources(&*c, &all(), 10, 10).unwrap();
    assert_eq!(s.matching, 2);
    assert_eq!(s.rows.len(), 2);

    let countries = analytics::countries(&*c, &all(), 10).unwrap();
    assert_eq!(countries.len(), 4);
    assert!(countries.iter().all(|r| r.attackers == 1));
    assert_eq!(countries[0].country, "IE");

    let cr = analytics::credentials(&*c, &all(), 10).unwrap();
    assert_eq!((cr.usernames[0].value.as_str(), cr.usernames[0].count), ("root", 8));
    assert_eq!((cr.passwords[0].value.as_str(), cr.passwords[0].count), ("xc3511", 5));
    assert_eq!(
        (cr.pairs[1].username.as_str(), cr.pairs[1].password.as_str(), cr.pairs[1].count),
        ("root", "123456", 3)
    );

    let pl = analytics::payloads(&*c, &all(), 10).unwrap();
    assert_eq!(pl.len(), 1);
    assert_eq!(pl[0].key, "ab".repeat(32));
    assert_eq!(pl[0].detail, "1234");
    assert_eq!(pl[0].ips, vec!["10.0.0.5".to_string()]);
    let ex = analytics::exploits(&*c, &all(), 10).unwrap();
    assert_eq!((ex[0].key.as_str(), ex[0].detail.as_str()), ("shellshock", "CVE-2014-6271"));
    let dl = analytics::downloads(&*c, &all(), 10).unwrap();
    assert_eq!((dl[0].key.as_str(), dl[0].detail.as_str()), ("http://198.51.100.7/<b>x.sh", "wget"));

    let sensors = analytics::sensors(&*c, &all()).unwrap();
    assert_eq!(sensors.len(), 2);
    let h = sensors[0].health.as_ref().unwrap();
    assert_eq!(
        (sensors[0].name.as_str(), h.backlog_events, h.cpu_permille, sensors[0].evicted_total),
        ("s1", 3, 125, 7)
    );
    assert_eq!(sensors[0].events_stored, 26);

    // The report is the same functions put together.
    let r = analytics::report(&*c, &all(), 10, 10).unwrap();
    assert_eq!(r.totals, analytics::totals(&*c, &all()).unwrap());
    // The overview page's one-scan pair is the two functions' answers.
    let (t, countries) = analytics::overview(&*c, &all(), 10).unwrap();
    assert_eq!(t, analytics::totals(&*c, &all()).unwrap());
    assert_eq!(countries, analytics::countries(&*c, &all(), 10).unwrap());
    assert!(!countries.is_empty());
    assert_eq!(r.top_sources.matching, 2);
    let text = r.to_text();
    assert!(text.contains("116 attempts"), "{text}");
    assert!(text.contains("root / xc3511: 5"), "{text}");
    assert!(text.contains("8.8.8.8"), "{text}");
}

#[test]
fn sensor_and_time_filters() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = fixture(&dir.path().join("a.db"));
    analytics::refresh(&mut *c, &enricher()).unwrap();
    let q = Query { sensor: Some("s2".into()), ..all() };
    let t = analytics::totals(&*c, &q).unwrap();
    assert_eq!((t.attempts, t.logins, t.attackers), (3, 3, 1));
    let unknown = Query { sensor: Some("nope".into()), ..all() };
    assert!(matches!(analytics::totals(&*c, &unknown), Err(analytics::AnalyticsError::UnknownSensor(_))));

    // Day 3 only (ssh): whole-day span.
    let q = Query { since_ms: Some(T0 + 2 * DAY), until_ms: Some(T0 + 3 * DAY), sensor: None, ..Default::default() };
    assert_eq!(analytics::totals(&*c, &q).unwrap().attempts, 3);
    // Hours 1..=3 of day 1 (partial day: hour rows): telnet connections at 1:01, 2:01, 3:01
    // (+1 s); 3:00..4:00 included since until is rounded up to the hour.
    let q = Query { since_ms: Some(T0 + HOUR), until_ms: Some(T0 + 3 * HOUR + 1), sensor: None, ..Default::default() };
    assert_eq!(analytics::totals(&*c, &q).unwrap().attempts, 3);
    // A range mixing partial and whole days equals a count over raw rows with the same bounds.
    for (since, until) in [
        (T0 + 4 * HOUR, T0 + 2 * DAY + 2 * HOUR),
        (T0 - 5 * HOUR, T0 + DAY + HOUR),
        (T0 + 6 * HOUR, T0 + 6 * HOUR + 1),
        (T0 + 13 * HOUR, T0 + 2 * DAY),
        (T0 - 20 * DAY + 5 * HOUR, T0 + 30 * DAY + 7 * HOUR),
        (T0 + 2 * DAY + HOUR, T0 + 40 * DAY),
    ] {
        let q = Query { since_ms: Some(since), until_ms: Some(until), sensor: None, ..Default::default() };
        let t = analytics::totals(&*c, &q).unwrap();
        let r = t.range.clone().unwrap();
        // The raw rows, read through the export cursor (works on every backend).
        let mut raw = 0i64;
        let range = drosera_admin::storage::EventRange { since_ms: r.since_ms, until_ms: r.until_ms, sensor_id: None };
        c.export_events(&range, &mut |row| {
            if row.kind == "connection" || row.kind == "rollup" {
                raw += row.count;
            }
            std::ops::ControlFlow::Continue(())
        })
        .unwrap();
        assert_eq!(t.attempts, raw, "range {since}..{until}");
    }

    // Timeline over 3 days is hourly; its sum equals the total.
    let q = Query { since_ms: Some(T0), until_ms: Some(T0 + 3 * DAY), sensor: None, ..Default::default() };
    let tl = analytics::timeline(&*c, &q).unwrap();
    assert_eq!(tl.resolution, "hour");
    assert_eq!(tl.buckets.first(), Some(&(T0 + HOUR)));
    assert_eq!(tl.attempts.iter().sum::<i64>(), 116);
    assert_eq!(tl.logins.iter().sum::<i64>(), 10);
    assert_eq!(tl.per_sensor.len(), 2);
    assert_eq!(tl.per_sensor[1].attempts.iter().sum::<i64>(), 3);
    // Over 30 days it is daily.
    let q = Query { since_ms: Some(T0 - 20 * DAY), until_ms: Some(T0 + 10 * DAY), sensor: None, ..Default::default() };
    let tl = analytics::timeline(&*c, &q).unwrap();
    assert_eq!(tl.resolution, "day");
    assert_eq!(tl.buckets, vec![T0, T0 + DAY, T0 + 2 * DAY]);
    assert_eq!(tl.attempts, vec![113, 0, 3]);
}

#[test]
fn refresh_is_incremental_and_counts_each_session_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = fixture(&dir.path().join("a.db"));
    let en = enricher();
    analytics::refresh(&mut *c, &en).unwrap();
    // A session with many messages (login, commands) and its one connection event.
    let mut evs = Vec::new();
    for i in 0..5 {
        evs.push(ev(100 + i, T0 + 2 * DAY + 10 * HOUR, Protocol::Telnet, "8.8.8.8", 23, 999, login("u", "p")));
    }
    evs.push(ev(
        200,
        T0 + 2 * DAY + 10 * HOUR,
        Protocol::Telnet,
        "8.8.8.8",
        23,
        999,
        drosera_uplink::event::Detail::Command { line: "uname -a".into() },
    ));
    evs.push(ev(201, T0 + 2 * DAY + 10 * HOUR + 5, Protocol::Telnet, "8.8.8.8", 23, 999, conn()));
    insert(&*c, "s2", &evs);
    assert_eq!(analytics::refresh(&mut *c, &en).unwrap(), 7);
    let t = analytics::totals(&*c, &all()).unwrap();
    assert_eq!((t.attempts, t.logins, t.commands, t.attackers), (117, 15, 1, 4));
}

#[test]
fn retention_prunes_raw_events_and_keeps_daily_rollups() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = fixture(&dir.path().join("a.db"));
    let en = enricher();
    analytics::refresh(&mut *c, &en).unwrap();
    let before = analytics::report(&*c, &all(), 0, 50).unwrap();
    // "now" is day 4: with max_age 2 days, day 1's raw events go, day 3's stay.
    let cfg = RetentionConfig { max_age_days: 2, max_bytes: 0, rollup_days: 3650, interval_s: 3600 };
    let st = retention::prune(&mut *c, &cfg, &en, T0 + 3 * DAY + HOUR).unwrap();
    assert_eq!(st.events_by_age, 26, "{st:?}");
    assert_eq!(c.raw_events(), 6);
    assert!(st.hourly_rows > 0);
    let after = analytics::report(&*c, &all(), 0, 50).unwrap();
    assert_eq!(after.totals, before.totals, "daily rollups answer for pruned days");
    assert_eq!(after.top_sources, before.top_sources);
    assert_eq!(after.credentials, before.credentials);
    assert_eq!(after.countries, before.countries);
    // Raw-only lists cover the retained period only.
    assert!(after.payloads.is_empty());
    // A partial-day query in the pruned period is widened to the whole day.
    let q = Query { since_ms: Some(T0 + HOUR), until_ms: Some(T0 + 3 * HOUR), sensor: None, ..Default::default() };
    let t = analytics::totals(&*c, &q).unwrap();
    assert_eq!(t.range.unwrap().since_ms, T0);
    assert_eq!(t.attempts, 113);

    // By size: a tiny cap deletes every raw event but the newest (ids must keep growing).
    // PostgreSQL deletes whole day partitions and never the newest one: day 3 stays whole.
    let cfg = RetentionConfig { max_age_days: 0, max_bytes: 1, rollup_days: 0, interval_s: 3600 };
    let st = retention::prune(&mut *c, &cfg, &en, T0 + 3 * DAY + HOUR).unwrap();
    let (gone, left) = if on_postgres() { (0, 6) } else { (5, 1) };
    assert_eq!(st.events_by_size, gone);
    assert_eq!(c.raw_events(), left);
    assert_eq!(analytics::totals(&*c, &all()).unwrap().attempts, 116);
    // New events after pruning are still folded in.
    insert(&*c, "s2", &[ev(500, T0 + 2 * DAY + 20 * HOUR, Protocol::Ssh, "1.1.1.1", 22, 77, conn())]);
    assert_eq!(analytics::refresh(&mut *c, &en).unwrap(), 1);
    assert_eq!(analytics::totals(&*c, &all()).unwrap().attempts, 117);
}

#[test]
fn parse_time_forms() {
    let now = T0 + DAY;
    assert_eq!(analytics::parse_time("24h", now).unwrap(), T0);
    assert_eq!(analytics::parse_time("1d", now).unwrap(), T0);
    assert_eq!(analytics::parse_time("2024-05-01", now).unwrap(), T0);
    assert_eq!(analytics::parse_time("2024-05-01T01:00:00Z", now).unwrap(), T0 + HOUR);
    assert_eq!(analytics::parse_time("1714521600000", now).unwrap(), T0);
    assert!(analytics::parse_time("yesterday", now).is_err());
    assert!(analytics::parse_time("99999999999999999999d", now).is_err());
}
