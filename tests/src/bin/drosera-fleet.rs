//! `drosera-fleet`: the fleet benchmark behind `scripts/bench-fleet.sh` (issue 20).
//!
//! Sets up one or two admins the way an operator would (`drosera-admin init`, `init --join`)
//! on SQLite or on a PostgreSQL started for the run, enrolls N sensors, gives each a backlog of
//! synthetic events, connects them all, then lets them ship at once ([`drosera_e2e::fleet`]).
//! Prints one Markdown row: events per second end to end (first batch sent to last
//! acknowledgement), the admins' CPU, their resident memory before, with every sensor
//! connected and at the peak, and the exactly-once account (every sensor's events stored once,
//! its high-water mark at its last sequence number, no duplicate `(sensor, seq)`).
//!
//! Not a test: it is timed and sized by hand. Loopback only; every wait is bounded.

use anyhow::{bail, Context, Result};
use clap::Parser;
use drosera_admin::storage::{open_backend, Backend};
use drosera_e2e::fleet::{self, ShipStats, SimSensor};
use drosera_e2e::procs::{self, Proc};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
#[command(name = "drosera-fleet", about = "Enroll N simulated sensors and ship their backlogs at once")]
struct Args {
    /// sqlite or postgres.
    #[arg(long, default_value = "postgres")]
    backend: String,
    /// Admins sharing the database (PostgreSQL only for more than 1).
    #[arg(long, default_value_t = 1)]
    admins: usize,
    #[arg(long, default_value_t = 10)]
    sensors: usize,
    /// Events in all, split evenly between the sensors.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Events per batch (the sensor's default is 5000).
    #[arg(long, default_value_t = 5000)]
    batch: usize,
    /// Batches in flight per connection (the sensor's window is 4).
    #[arg(long, default_value_t = 4)]
    window: usize,
    /// PostgreSQL without fsync (not what a deployment runs; the default is durable).
    #[arg(long)]
    pg_no_fsync: bool,
    /// Directory holding drosera-admin (default: next to this binary).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Work directory (default: a new temporary directory, removed at the end).
    #[arg(long)]
    work: Option<PathBuf>,
    /// Report mode instead of shipping: move this SQLite admin database (made by
    /// `bench_admin gen`) into a PostgreSQL started for the run with `drosera-admin migrate`
    /// (timed), then run `bench_admin url` on it (fold, every report query).
    #[arg(long, value_name = "SQLITE_DB")]
    report_db: Option<PathBuf>,
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(&args) {
        eprintln!("drosera-fleet: error: {e:#}");
        std::process::exit(1);
    }
}

fn free_addr() -> Result<SocketAddr> {
    Ok(SocketAddr::from(([127, 0, 0, 1], procs::free_port()?)))
}

/// `--report-db`: migrate to PostgreSQL, then fold and time the report queries there.
fn report(a: &Args, src: &Path) -> Result<()> {
    let bin_dir = match &a.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()?.parent().context("no binary directory")?.to_path_buf(),
    };
    let pgbin = drosera_admin::testpg::bin_dir().context("PostgreSQL is not installed")?;
    let pg = drosera_admin::testpg::TestPg::start_opts(&pgbin, !a.pg_no_fsync)?;
    let url = pg.create_database("report")?;
    let t = Instant::now();
    let out = procs::run(
        &bin_dir.join("drosera-admin"),
        &["migrate", "--from", &format!("sqlite:{}", src.display()), "--to", &url],
    )?;
    println!("migrate (SQLite -> PostgreSQL, every table): {:.1} s\n{out}", t.elapsed().as_secs_f64());
    let bench = bin_dir.join("examples").join("bench_admin");
    let status = std::process::Command::new(&bench).args(["url", &url]).status()?;
    if !status.success() {
        bail!("{} failed: {status}", bench.display());
    }
    let size = procs::run(Path::new("/usr/bin/du"), &["-sh", &pg.data_dir().display().to_string()])?;
    println!("PostgreSQL data directory: {}", size.split_whitespace().next().unwrap_or("?"));
    Ok(())
}

fn run(a: &Args) -> Result<()> {
    if let Some(src) = &a.report_db {
        return report(a, src);
    }
    if a.sensors == 0 || a.admins == 0 || a.events < a.sensors as u64 {
        bail!("need at least one admin, one sensor and one event per sensor");
    }
    let bin_dir = match &a.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()?.parent().context("no binary directory")?.to_path_buf(),
    };
    let admin_bin = bin_dir.join("drosera-admin");
    let tmp = tempfile::tempdir()?;
    let work = a.work.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&work)?;
    let nofile = procs::raise_nofile();
    if nofile < (a.sensors as u64) * 2 + 256 {
        bail!("open-file limit {nofile} is too low for {} sensors (ulimit -n)", a.sensors);
    }
    let per_sensor = a.events / a.sensors as u64;

    // The database.
    let pg = match a.backend.as_str() {
        "postgres" => {
            let bin = drosera_admin::testpg::bin_dir().context("PostgreSQL is not installed")?;
            Some(drosera_admin::testpg::TestPg::start_opts(&bin, !a.pg_no_fsync)?)
        }
        "sqlite" if a.admins == 1 => None,
        "sqlite" => bail!("several admins share a PostgreSQL database, not SQLite"),
        other => bail!("--backend {other}: use sqlite or postgres"),
    };
    let url = match &pg {
        Some(pg) => Some(pg.create_database("fleet")?),
        None => None,
    };

    // The admins: the first makes the CA, the others join it.
    let mut ingest = Vec::new();
    let mut cfgs = Vec::new();
    for i in 0..a.admins {
        let dir = work.join(format!("admin-{i}"));
        let listen = free_addr()?;
        let mut args: Vec<String> = vec![
            "init".into(),
            "--dir".into(),
            dir.display().to_string(),
            "--admin".into(),
            listen.to_string(),
            "--listen".into(),
            listen.to_string(),
            "--dashboard-listen".into(),
            free_addr()?.to_string(),
        ];
        if let Some(u) = &url {
            args.extend(["--db-url".into(), u.clone()]);
        }
        if i > 0 {
            args.extend(["--join".into(), work.join("admin-0").display().to_string()]);
        }
        procs::run(&admin_bin, &args.iter().map(String::as_str).collect::<Vec<_>>())?;
        let cfg = dir.join("drosera-admin.toml");
        // Every simulated sensor connects from 127.0.0.1, where real ones each have an address:
        // the per-address handshake cap (8) would turn the start into a storm of refused
        // handshakes and retries (it failed a 1,000-sensor run after 20 tries).
        let cap = a.sensors + 64;
        let text = std::fs::read_to_string(&cfg)?
            .replace("[ingest]\n", &format!("[ingest]\nmax_connections = {cap}\nmax_handshakes_per_source = {cap}\n"));
        std::fs::write(&cfg, text)?;
        ingest.push(listen);
        cfgs.push(cfg);
    }
    let db = match &url {
        Some(u) => Backend::Postgres(u.clone()),
        None => Backend::Sqlite(work.join("admin-0").join("admin.db")),
    };

    // Enrollment (in process, through the admin library) and the backlogs.
    let t = Instant::now();
    let admin_cfg = drosera_admin::config::AdminConfig::load(&cfgs[0])?;
    let now = drosera_admin::clock::now_ms();
    let mut sensors: Vec<Arc<SimSensor>> = Vec::with_capacity(a.sensors);
    for k in 0..a.sensors {
        let name = format!("fleet-{k:04}");
        let out = work.join("bundles").join(&name);
        drosera_admin::enroll::add_sensor(
            &admin_cfg,
            &drosera_admin::enroll::AddOptions { name: name.clone(), out: out.clone(), ..Default::default() },
        )?;
        sensors.push(Arc::new(fleet::sensor(&name, &out, k, per_sensor, a.batch, now)?));
    }
    let enroll_s = t.elapsed().as_secs_f64();
    let wire: usize = sensors.iter().flat_map(|s| s.batches.iter().map(|b| b.payload.len())).sum();
    eprintln!(
        "drosera-fleet: {} sensors enrolled and {} events encoded in {enroll_s:.1} s ({:.1} bytes per event)",
        a.sensors,
        per_sensor * a.sensors as u64,
        wire as f64 / (per_sensor * a.sensors as u64) as f64
    );

    // Start the admins.
    let mut admins = Vec::new();
    for (i, cfg) in cfgs.iter().enumerate() {
        let mut p = Proc::new(
            &format!("admin-{i}"),
            &admin_bin,
            &["serve", "--config", &cfg.display().to_string()],
            work.join(format!("admin-{i}.log")),
        )
        .env("RUST_LOG", "warn");
        p.start()?;
        procs::wait_listening(&mut p, ingest[i], Duration::from_secs(60))?;
        admins.push(p);
    }
    let pids: Vec<u32> = admins.iter().filter_map(|p| p.current_pid()).collect();
    std::thread::sleep(Duration::from_millis(500));
    let rss = |pids: &[u32]| -> u64 { pids.iter().filter_map(|p| fleet::rss_bytes(*p)).sum() };
    let cpu = |pids: &[u32]| -> f64 { pids.iter().filter_map(|p| fleet::cpu_secs(*p)).sum() };
    let rss_idle = rss(&pids);

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    // Every sensor connects and says hello (spread over the admins), then waits.
    let connected = rt.block_on(async {
        let mut tasks = Vec::new();
        for (k, s) in sensors.iter().enumerate() {
            let (s, ingest) = (s.clone(), ingest.clone());
            tasks.push(tokio::spawn(async move {
                let mut st = ShipStats::default();
                let c = fleet::connect_hello(&s, &ingest, k % ingest.len(), &mut st).await;
                c.map(|c| (c, st))
            }));
        }
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await??);
        }
        Ok::<_, anyhow::Error>(out)
    })?;
    std::thread::sleep(Duration::from_millis(500));
    let rss_connected = rss(&pids);

    // Ship everything at once.
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(Mutex::new(rss_connected));
    let sampler = {
        let (stop, peak, pids) = (stop.clone(), peak.clone(), pids.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let r: u64 = pids.iter().filter_map(|p| fleet::rss_bytes(*p)).sum();
                let mut g = peak.lock().unwrap_or_else(|e| e.into_inner());
                *g = (*g).max(r);
                drop(g);
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let cpu0 = cpu(&pids);
    let db_cpu0 = fleet::postgres_cpu_secs();
    let t = Instant::now();
    let stats = rt.block_on(async {
        let mut tasks = Vec::new();
        for (s, (c, mut st)) in sensors.iter().cloned().zip(connected) {
            let (ingest, window) = (ingest.clone(), a.window);
            tasks.push(tokio::spawn(async move { fleet::ship(&s, &ingest, c, window, &mut st).await.map(|()| st) }));
        }
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await??);
        }
        Ok::<_, anyhow::Error>(out)
    })?;
    let secs = t.elapsed().as_secs_f64();
    let admin_cpu = cpu(&pids) - cpu0;
    let db_cpu = fleet::postgres_cpu_secs() - db_cpu0;
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    let rss_peak = *peak.lock().unwrap_or_else(|e| e.into_inner());
    let total = per_sensor * a.sensors as u64;

    // The exactly-once account, from the database.
    let store = open_backend(&db)?;
    let list = store.list_sensors()?;
    let mut bad = Vec::new();
    for s in &list {
        if s.events as u64 != per_sensor || s.high_water_seq as u64 != per_sensor {
            bad.push(format!("{}: {} events, high water {}", s.name, s.events, s.high_water_seq));
        }
    }
    let (rows, distinct) = count_rows(&db)?;
    let failovers: u32 = stats.iter().map(|s| s.failovers).sum();
    let account = if bad.is_empty() && rows == total && distinct == total && list.len() == a.sensors {
        format!("ok: {rows} rows, {distinct} distinct (sensor, seq)")
    } else {
        format!("FAILED: {rows} rows, {distinct} distinct, expected {total}; {}", bad.join("; "))
    };
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    println!(
        "| {} | {} | {} | {} | {:.1} s | **{:.0} events/s** | {:.1} CPU-s | {} | {:.0} / {:.0} / {:.0} MiB | {:.1} KiB | {} | {} |",
        if pg.is_some() { if a.pg_no_fsync { "PostgreSQL (fsync off)" } else { "PostgreSQL" } } else { "SQLite" },
        a.admins,
        a.sensors,
        total,
        secs,
        total as f64 / secs,
        admin_cpu,
        if pg.is_some() { format!("{db_cpu:.1} CPU-s") } else { "(in the admin)".into() },
        mib(rss_idle),
        mib(rss_connected),
        mib(rss_peak),
        (rss_connected.saturating_sub(rss_idle)) as f64 / 1024.0 / a.sensors as f64,
        failovers,
        account
    );
    for mut p in admins {
        p.stop(Duration::from_secs(30));
    }
    drop(store);
    drop(pg);
    if !account.starts_with("ok") {
        bail!("exactly-once account failed");
    }
    let _ = Path::new(&work);
    Ok(())
}

/// (rows, distinct (sensor, seq)) in the events table.
fn count_rows(db: &Backend) -> Result<(u64, u64)> {
    let sql = "SELECT COUNT(*), (SELECT COUNT(*) FROM (SELECT DISTINCT sensor_id, seq FROM events) d) FROM events";
    match db {
        Backend::Sqlite(p) => {
            let c = rusqlite::Connection::open(p)?;
            let (a, b): (i64, i64) = c.query_row(sql, [], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok((a as u64, b as u64))
        }
        Backend::Postgres(url) => {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(async {
                let (c, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
                let task = tokio::spawn(conn);
                let r = c.query_one(sql, &[]).await?;
                let out = (r.get::<_, i64>(0) as u64, r.get::<_, i64>(1) as u64);
                drop(c);
                let _ = task.await;
                Ok(out)
            })
        }
    }
}
