//! The report's fast paths (aggregate scans summed in vectors and integer-keyed maps, covering
//! indexes for payloads, exploits and downloads) against straightforward SQL over the raw events
//! of a small generated database, for ranges that mix hour, day and week rows, with and without
//! a sensor filter.
// Tests, benches and examples may panic; the workspace denies unwrap/expect elsewhere.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod analytics_support;
use analytics_support::*;
use drosera_admin::analytics::{self, Query};
use drosera_uplink::event::{Detail, Event, Priority, Protocol, Secret, ShedReason, Transport};
use rand::{Rng, SeedableRng};
use rusqlite::{params, Connection};

const SENSORS: [&str; 3] = ["a", "b", "c"];

fn ip(rng: &mut impl Rng) -> String {
    // A heavy head, as real sources have; some IPv6 and private addresses.
    let i: u32 = (300.0 * rng.gen::<f64>().powi(3)) as u32;
    match i % 10 {
        0 => format!("2001:db8::{i:x}"),
        1 => format!("10.1.{}.{}", i / 256, i % 256),
        _ => format!("{}.{}.{}.{}", 1 + i % 200, i / 7 % 256, i % 13, 1 + i % 250),
    }
}

fn generate(c: &mut Connection) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut seq = [0u64; 3];
    let mut batch: Vec<Vec<Event>> = vec![Vec::new(); 3];
    for k in 0..6000u64 {
        let s = rng.gen_range(0..3);
        seq[s] += 1;
        let t = T0 - DAY + rng.gen_range(0..12 * DAY);
        let roll = rng.gen_range(0..100);
        let detail = match roll {
            0..=39 => conn(),
            40..=69 => {
                let u = ["root", "admin", "pi", "x"][rng.gen_range(0..4)];
                let p = format!("pw{}", (40.0 * rng.gen::<f64>().powi(2)) as u32);
                Detail::Login { username: u.into(), secret: Secret::Password(p), success: false, extra: vec![] }
            }
            70..=71 => Detail::Login { username: "k".into(), secret: Secret::None, success: false, extra: vec![] },
            72..=79 => Detail::Payload {
                sha256: [rng.gen_range(0..6u8); 32],
                size: rng.gen_range(1..4),
                name: String::new(),
                prefix: vec![],
                truncated: false,
            },
            80..=87 => Detail::Exploit {
                name: format!("e{}", rng.gen_range(0..5)),
                cve: format!("CVE-{}", rng.gen_range(0..3)),
                extra: vec![],
            },
            88..=95 => Detail::DownloadOffered {
                url: format!("http://x/{}", rng.gen_range(0..7)),
                tool: ["wget", "curl"][rng.gen_range(0..2)].into(),
            },
            96..=97 => {
                Detail::Rollup { minute_ms: t, reason: ShedReason::RateLimited, connections: rng.gen_range(1..50) }
            }
            _ => Detail::Command { line: "id".into() },
        };
        let mut e = ev(seq[s], t, Protocol::Telnet, &ip(&mut rng), 23, k, detail);
        if roll == 99 {
            e.protocol = Protocol::Sensor;
            e.transport = Transport::Internal;
            e.priority = Priority::System;
            e.src_ip = "0.0.0.0".parse().unwrap();
        }
        batch[s].push(e);
    }
    for (s, evs) in batch.iter().enumerate() {
        insert(c, SENSORS[s], evs);
    }
}

/// `(AND time and sensor condition, its parameters)` for raw-event SQL matching `q`.
fn raw_where(c: &Connection, q: &Query) -> (String, i64, i64, Option<i64>) {
    let r = analytics::totals(c, q).unwrap().range.unwrap();
    let sensor: Option<i64> = q
        .sensor
        .as_ref()
        .map(|name| c.query_row("SELECT id FROM sensors WHERE name = ?1", [name], |row| row.get(0)).unwrap());
    ("time_ms >= ?1 AND time_ms < ?2 AND (?3 IS NULL OR sensor_id = ?3)".into(), r.since_ms, r.until_ms, sensor)
}

fn check(c: &Connection, q: &Query) {
    let (w, since, until, sensor) = raw_where(c, q);
    let p = params![since, until, sensor];
    let report = analytics::report(c, q, 3, 15).unwrap();

    // Totals: attackers and countries from the raw source addresses.
    let (attackers, countries): (i64, i64) = c
        .query_row(
            &format!(
                "SELECT COUNT(DISTINCT e.src_ip), COUNT(DISTINCT i.cc) FROM events e JOIN ip_info i ON i.ip = e.src_ip
                 WHERE e.protocol <> 'sensor' AND {w}"
            ),
            p,
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .unwrap();
    assert_eq!((report.totals.attackers, report.totals.countries), (attackers, countries), "{q:?}");
    assert_eq!(report.totals, analytics::totals(c, q).unwrap());

    // Top sources: (ip, attempts, logins, events, first, last), ordered as the report orders.
    let per_ip = format!(
        "SELECT src_ip, SUM(CASE WHEN kind IN ('connection','rollup') THEN count ELSE 0 END) AS a,
                SUM(kind = 'login') AS l, COUNT(*) AS n, MIN(time_ms), MAX(time_ms)
         FROM events WHERE protocol <> 'sensor' AND {w} GROUP BY src_ip"
    );
    let mut stmt =
        c.prepare(&format!("SELECT * FROM ({per_ip}) WHERE a >= 3 ORDER BY a DESC, n DESC, src_ip")).unwrap();
    let raw: Vec<(String, i64, i64, i64, i64, i64)> = stmt
        .query_map(p, |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?, row.get(5)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(report.top_sources.matching, raw.len() as i64, "{q:?}");
    let got: Vec<_> = report
        .top_sources
        .rows
        .iter()
        .map(|r| (r.ip.clone(), r.attempts, r.logins, r.events, r.first_seen_ms, r.last_seen_ms))
        .collect();
    assert_eq!(got, raw.into_iter().take(15).collect::<Vec<_>>(), "{q:?}");
    assert_eq!(report.top_sources, analytics::top_sources(c, q, 3, 15).unwrap());

    // Countries: (label, attackers, attempts, logins), most attempts, then attackers, then label.
    let mut stmt = c
        .prepare(&format!(
            "SELECT i.cc, COUNT(*), SUM(s.a), SUM(s.l) FROM ({per_ip}) s JOIN ip_info i ON i.ip = s.src_ip GROUP BY i.cc"
        ))
        .unwrap();
    let mut raw: Vec<(String, i64, i64, i64)> = stmt
        .query_map(p, |row| Ok((analytics::cc_label(row.get(0)?), row.get(1)?, row.get(2)?, row.get(3)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    raw.sort_by(|a, b| (b.2, b.1).cmp(&(a.2, a.1)).then_with(|| a.0.cmp(&b.0)));
    raw.truncate(15);
    let got: Vec<_> = report.countries.iter().map(|r| (r.country.clone(), r.attackers, r.attempts, r.logins)).collect();
    assert_eq!(got, raw, "{q:?}");
    assert_eq!(report.countries, analytics::countries(c, q, 15).unwrap());

    // Credentials: user names, passwords and pairs by count, then by value.
    let top = |cols: &str| -> Vec<(String, i64)> {
        let mut stmt = c
            .prepare(&format!(
                "SELECT {cols} AS v, COUNT(*) AS k FROM events
                 WHERE username IS NOT NULL AND protocol <> 'sensor' AND {w} GROUP BY v ORDER BY k DESC, v LIMIT 15"
            ))
            .unwrap();
        stmt.query_map(p, |row| Ok((row.get(0)?, row.get(1)?))).unwrap().collect::<Result<_, _>>().unwrap()
    };
    let cr = &report.credentials;
    let got: Vec<_> = cr.usernames.iter().map(|x| (x.value.clone(), x.count)).collect();
    assert_eq!(got, top("username"), "{q:?}");
    let got: Vec<_> = cr.passwords.iter().map(|x| (x.value.clone(), x.count)).collect();
    assert_eq!(got, top("COALESCE(password, '')"), "{q:?}");
    let got: Vec<_> = cr.pairs.iter().map(|x| (format!("{}\n{}", x.username, x.password), x.count)).collect();
    assert_eq!(got, top("username || char(10) || COALESCE(password, '')"), "{q:?}");
    assert_eq!(report.credentials, analytics::credentials(c, q, 15).unwrap());

    // Items, straight from the table (NOT INDEXED: no covering index).
    for (list, kind, key, detail) in [
        (&report.payloads, "payload", "payload_sha256", "json_extract(fields, '$.size')"),
        (&report.exploits, "exploit", "json_extract(fields, '$.name')", "json_extract(fields, '$.cve')"),
        (&report.downloads, "download_offered", "url", "json_extract(fields, '$.tool')"),
    ] {
        let mut stmt = c
            .prepare(&format!(
                "SELECT COALESCE({key}, '') AS k, MAX(COALESCE({detail}, '')), COUNT(*) AS n, MIN(time_ms), MAX(time_ms),
                        COUNT(DISTINCT src_ip)
                 FROM events NOT INDEXED WHERE kind = '{kind}' AND {w} GROUP BY k ORDER BY n DESC, k LIMIT 15"
            ))
            .unwrap();
        let raw: Vec<(String, String, i64, i64, i64, i64)> = stmt
            .query_map(p, |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?, row.get(5)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(!raw.is_empty(), "{kind} {q:?}");
        let got: Vec<_> = list
            .iter()
            .map(|r| (r.key.clone(), r.detail.clone(), r.count, r.first_seen_ms, r.last_seen_ms, r.sources))
            .collect();
        assert_eq!(got, raw, "{kind} {q:?}");
        for item in list.iter() {
            let mut stmt = c
                .prepare(&format!(
                    "SELECT DISTINCT src_ip FROM events NOT INDEXED
                     WHERE kind = '{kind}' AND COALESCE({key}, '') = ?4 AND {w} ORDER BY src_ip LIMIT 20"
                ))
                .unwrap();
            let ips: Vec<String> = stmt
                .query_map(params![since, until, sensor, item.key], |row| row.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            assert_eq!(item.ips, ips, "{kind} {q:?}");
        }
    }
    assert_eq!(report.payloads, analytics::payloads(c, q, 15).unwrap());
    assert_eq!(report.exploits, analytics::exploits(c, q, 15).unwrap());
    assert_eq!(report.downloads, analytics::downloads(c, q, 15).unwrap());
}

#[test]
fn report_matches_straightforward_queries_over_raw_events() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = drosera_admin::storage::sqlite::open(&dir.path().join("a.db")).unwrap();
    generate(&mut c);
    analytics::refresh(&mut c, &enricher()).unwrap();
    // The items lists read their covering indexes.
    for (kind, index, key) in [
        ("payload", "events_payload", "payload_sha256"),
        ("exploit", "events_exploit", "json_extract(fields, '$.name')"),
        ("download_offered", "events_download", "url"),
    ] {
        let plan: String = c
            .query_row(
                &format!(
                    "EXPLAIN QUERY PLAN SELECT {key}, json_extract(fields, '$.x'), time_ms, src_ip FROM events INDEXED BY {index}
                     WHERE kind = '{kind}' AND time_ms >= 0 AND time_ms < 1 AND (NULL IS NULL OR sensor_id = 1)"
                ),
                [],
                |row| row.get(3),
            )
            .unwrap();
        assert!(plan.contains(&format!("COVERING INDEX {index}")), "{plan}");
    }
    // T0 is a Wednesday; weeks start on Thursdays: these mix hour, day and week rows.
    for (since, until) in [
        (T0 + 5 * HOUR, T0 + 9 * DAY + 7 * HOUR),
        (T0 - DAY, T0 + 11 * DAY),
        (T0 + 3 * DAY + 13 * HOUR, T0 + 4 * DAY + 2 * HOUR),
        (T0 - 30 * DAY, T0 + 30 * DAY),
    ] {
        for sensor in [None, Some("b".to_string())] {
            check(&c, &Query { since_ms: Some(since), until_ms: Some(until), sensor, ..Default::default() });
        }
    }
}
