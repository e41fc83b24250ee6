//! `drosera-torture`: the reliability suite behind `scripts/torture.sh` (issue 7).
//!
//! Runs the real `drosera-admin` and `drosera-sensor` binaries on loopback and attacks them the
//! way an operator would doubt them: a sustained flood with bursts (one source address making a
//! large share), a soak that watches RSS and descriptors for a leak, faults (admin killed, admin
//! away for a whole stretch, sensor kill -9 at random moments, its disk filled by another
//! process, its clock jumping backwards), and the same flood on the arm64 binary under
//! qemu-user. Every phase ends with an exact account: what the client saw accepted, what the
//! sensor committed, what the admin holds, what was reported evicted; and for the UDP services,
//! every datagram sent is an exchange or a shed datagram at the admin, or a drop the kernel
//! counted at the sensor's socket. The result is one table
//! (Markdown), printed and optionally written to a file; the exit code is non-zero if any row
//! failed.
//!
//! Everything is bounded in time and stays on 127.0.0.0/8 (plus a tmpfs mounted when root).

mod sample;

use drosera_e2e::{account, flood, kernel, procs, stack};

use anyhow::{bail, Context, Result};
use clap::Parser;
use flood::{Flood, Sources};
use sample::{Sampler, Series};
use stack::{Bins, SensorOpts, Stack};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

#[derive(Parser, Debug, Clone)]
#[command(name = "drosera-torture", about = "Flood, soak, fault and arm64 runs against the real binaries")]
struct Args {
    /// CI sizes (a few minutes in all) instead of the by-hand sizes.
    #[arg(long)]
    short: bool,
    /// Directory holding drosera-admin and drosera-sensor (default: next to this binary).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Work directory (default: a new temporary directory, removed unless --keep).
    #[arg(long)]
    work: Option<PathBuf>,
    #[arg(long)]
    keep: bool,
    /// Also write the table (Markdown) to this file.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Comma-separated phases: flood, soak, faults, arm64.
    #[arg(long, default_value = "flood,soak,faults,arm64")]
    phases: String,
    /// Flood: seconds of sustained load (default 600, short 30).
    #[arg(long)]
    flood_secs: Option<u64>,
    /// Flood: new connections per second, across all services.
    #[arg(long, default_value_t = 500)]
    rate: u64,
    /// Flood: bursts during the flood (default 3, short 1).
    #[arg(long)]
    bursts: Option<u64>,
    /// Connections per burst.
    #[arg(long, default_value_t = 20_000)]
    burst_count: u64,
    /// Connections open at once during a burst.
    #[arg(long, default_value_t = 2_000)]
    burst_concurrency: usize,
    /// Percent of all connections made by the one heavy source address (127.0.0.2).
    #[arg(long, default_value_t = 40)]
    heavy_pct: u64,
    /// Other source addresses (127.0.0.3 ...).
    #[arg(long, default_value_t = 48)]
    sources: u8,
    /// Soak: seconds at a steady rate (default 1800, short 60).
    #[arg(long)]
    soak_secs: Option<u64>,
    /// Soak: connections per second.
    #[arg(long, default_value_t = 100)]
    soak_rate: u64,
    /// Soak: seconds between RSS / descriptor samples (default 60, short 5).
    #[arg(long)]
    sample_secs: Option<u64>,
    /// Faults: seconds of load while faults happen (default 300, short 60).
    #[arg(long)]
    fault_secs: Option<u64>,
    /// Faults: connections per second during the fault run.
    #[arg(long, default_value_t = 200)]
    fault_rate: u64,
    /// Faults: sensor kill -9 count (default 6, short 3).
    #[arg(long)]
    sensor_kills: Option<u32>,
    /// Seed for the random kill moments (default: from the clock; printed).
    #[arg(long)]
    seed: Option<u64>,
    /// arm64: the aarch64 drosera-sensor binary (default: target/aarch64-unknown-linux-gnu/release).
    #[arg(long)]
    arm64_sensor: Option<PathBuf>,
    /// arm64: connections per second under qemu.
    #[arg(long, default_value_t = 50)]
    arm64_rate: u64,
    /// arm64: seconds of load (default 120, short 30).
    #[arg(long)]
    arm64_secs: Option<u64>,
}

/// One line of the result table.
#[derive(Clone, Debug)]
struct Row {
    check: String,
    tried: String,
    result: String,
    lost: String,
    pass: bool,
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64)
}

fn main() {
    let args = Args::parse();
    match run(args) {
        Ok(failed) => std::process::exit(if failed { 1 } else { 0 }),
        Err(e) => {
            eprintln!("drosera-torture: {e:#}");
            std::process::exit(2);
        }
    }
}

fn run(args: Args) -> Result<bool> {
    let bin_dir = match &args.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()?.parent().context("binary has no directory")?.to_path_buf(),
    };
    let bins = Bins { admin: bin_dir.join("drosera-admin"), sensor: bin_dir.join("drosera-sensor") };
    for b in [&bins.admin, &bins.sensor] {
        if !b.exists() {
            bail!("{} not found: build the workspace binaries first (cargo build --release --bins)", b.display());
        }
    }
    let tmp = tempfile::Builder::new().prefix("drosera-torture-").tempdir()?;
    let work = args.work.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&work)?;
    let nofile = procs::raise_nofile();
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(7)
    });
    eprintln!("drosera-torture: work dir {}, seed {seed}, open-file limit {nofile}", work.display());
    let phases: Vec<&str> = args.phases.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
    for p in &phases {
        if !["flood", "soak", "faults", "arm64"].contains(p) {
            bail!("unknown phase {p:?}: use flood, soak, faults, arm64");
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let mut rows: Vec<Row> = Vec::new();
    let started = Instant::now();
    if phases.contains(&"flood") || phases.contains(&"soak") {
        let mut s = Stack::create(&bins, &work.join("flood"), SensorOpts::default())?;
        if phases.contains(&"flood") {
            rows.extend(phase_flood(&args, &rt, &mut s, "x86_64").unwrap_or_else(|e| vec![error_row("flood", e)]));
        }
        if phases.contains(&"soak") {
            rows.extend(phase_soak(&args, &rt, &mut s).unwrap_or_else(|e| vec![error_row("soak", e)]));
        }
    }
    if phases.contains(&"faults") {
        rows.extend(
            phase_faults(&args, &rt, &bins, &work.join("faults"), seed)
                .unwrap_or_else(|e| vec![error_row("faults", e)]),
        );
    }
    if phases.contains(&"arm64") {
        rows.extend(
            phase_arm64(&args, &rt, &bins, &work.join("arm64")).unwrap_or_else(|e| vec![error_row("arm64", e)]),
        );
    }
    let table = render(&rows, &args, started.elapsed());
    println!("{table}");
    if let Some(p) = &args.report {
        std::fs::write(p, &table).with_context(|| format!("writing {}", p.display()))?;
    }
    if args.keep || args.work.is_some() {
        eprintln!("drosera-torture: kept {}", work.display());
        let _ = tmp.keep();
    }
    Ok(rows.iter().any(|r| !r.pass))
}

fn error_row(phase: &str, e: anyhow::Error) -> Row {
    Row {
        check: format!("{phase}: ran to the end"),
        tried: "—".into(),
        result: format!("ERROR: {}", format!("{e:#}").replace('\n', " / ").replace('|', "\\|")),
        lost: "unknown".into(),
        pass: false,
    }
}

fn render(rows: &[Row], args: &Args, took: Duration) -> String {
    let mut out = String::new();
    let mode = if args.short { "short (CI)" } else { "full" };
    out.push_str(&format!(
        "Mode: {mode}; took {:.0} s; {} of {} checks passed.\n\n",
        took.as_secs_f64(),
        rows.iter().filter(|r| r.pass).count(),
        rows.len()
    ));
    out.push_str("| check | what was tried | result | lost | ok |\n|---|---|---|---|---|\n");
    for r in rows {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            r.check,
            r.tried,
            r.result,
            r.lost,
            if r.pass { "PASS" } else { "FAIL" }
        ));
    }
    out
}

/// Runs the steady load and the bursts of a flood; returns the client counters.
fn run_flood(
    rt: &tokio::runtime::Runtime,
    f: &Flood,
    rate: u64,
    secs: u64,
    bursts: u64,
    args: &Args,
) -> flood::Snapshot {
    let stop = CancellationToken::new();
    rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let steady = {
            let f = f.clone();
            let stop = stop.clone();
            tokio::spawn(async move { f.steady(rate, deadline, 1000, stop).await })
        };
        for k in 0..bursts {
            let at = Duration::from_secs(secs * (k + 1) / (bursts + 1));
            tokio::time::sleep_until((deadline - Duration::from_secs(secs) + at).into()).await;
            eprintln!(
                "drosera-torture: burst {} of {}: {} connections, {} at once",
                k + 1,
                bursts,
                args.burst_count,
                args.burst_concurrency
            );
            f.burst(args.burst_count, args.burst_concurrency).await;
        }
        let _ = steady.await;
    });
    f.counters.snapshot()
}

/// Flood rows for a stack whose admin and sensor are (or will be) started here.
fn phase_flood(args: &Args, rt: &tokio::runtime::Runtime, s: &mut Stack, arch: &str) -> Result<Vec<Row>> {
    let (secs, bursts, rate, burst_count) = if arch == "x86_64" {
        (
            args.flood_secs.unwrap_or(if args.short { 30 } else { 600 }),
            args.bursts.unwrap_or(if args.short { 1 } else { 3 }),
            args.rate,
            args.burst_count,
        )
    } else {
        (args.arm64_secs.unwrap_or(if args.short { 30 } else { 120 }), 1, args.arm64_rate, args.burst_count / 10)
    };
    s.start_admin()?;
    s.start_sensor()?;
    let sampler = Sampler::start(s.sensor.pid.clone(), s.data_dir.clone(), Duration::from_millis(100));
    let f = Flood::new(
        s.targets.clone(),
        Sources { heavy_pct: args.heavy_pct, others: args.sources },
        Duration::from_secs(5),
        Duration::from_secs(8),
    );
    let mut a = args.clone();
    a.burst_count = burst_count;
    if arch != "x86_64" {
        a.burst_concurrency = (args.burst_concurrency / 10).max(1);
    }
    eprintln!("drosera-torture: {arch} flood: {rate}/s for {secs} s, {bursts} burst(s) of {burst_count}");
    let backlog0 = kernel::softnet_dropped();
    let c = run_flood(rt, &f, rate, secs, bursts, &a);
    // The kernel's UDP counters before the sensor stops (they go with its sockets).
    let udp_kernel = kernel::udp_sockets_drained(&s.udp_ports(), Duration::from_secs(30));
    let backlog = kernel::softnet_dropped().saturating_sub(backlog0);
    let alive = s.sensor.running();
    let hwm = s.sensor.current_pid().and_then(sample::rss_of).map(|x| x.1).unwrap_or(0);
    let peaks = sampler.finish();
    let crashes = s.sensor.unexpected_exits.clone();
    let (st, totals) = s.settle(Duration::from_secs(if arch == "x86_64" { 120 } else { 300 }))?;
    let mut rows = Vec::new();
    let p = format!("{arch} flood");
    rows.push(Row {
        check: format!("{p}: sensor alive throughout"),
        tried: format!(
            "{} connections and {} datagrams tried ({rate}/s for {secs} s + {bursts} × {burst_count} at {} concurrent, round-robin over {} TCP and UDP ports), {}% from 127.0.0.2, rest from {} other addresses",
            c.attempted, c.udp_attempted, a.burst_concurrency, s.targets.len(), args.heavy_pct, args.sources
        ),
        result: if alive && crashes.is_empty() { "alive, answered after the flood".into() } else { format!("DIED: {crashes:?}") },
        lost: "—".into(),
        pass: alive && crashes.is_empty() && peaks.dead_samples == 0,
    });
    let rss_limit = s.opts.hard_limit;
    let peak = peaks.max_rss.max(hwm);
    rows.push(Row {
        check: format!("{p}: RSS never above the hard limit"),
        tried: format!("{} samples of VmRSS every 100 ms + VmHWM", peaks.samples),
        result: format!("peak {} (limit {})", mib(peak), mib(rss_limit)),
        lost: "—".into(),
        pass: arch != "x86_64" || peak <= rss_limit,
    });
    rows.push(Row {
        check: format!("{p}: store never above its cap"),
        tried: "db + wal + shm sizes sampled every 100 ms".into(),
        result: format!("peak {} (cap {})", mib(peaks.max_store), mib(s.opts.cap_bytes)),
        lost: "—".into(),
        pass: peaks.max_store <= s.opts.cap_bytes,
    });
    let admin_conns = totals.connections();
    let exact = c.unconfirmed == 0 && admin_conns == c.connected;
    rows.push(Row {
        check: format!("{p}: accepted = stored + rolled up"),
        tried: format!(
            "client: {} connected ({} confirmed by the server, {} of them reset by it during connect; {} never answered), {} refused, {} connect timeouts, {} other errors, {} skipped by the client",
            c.connected, c.confirmed, c.reset_on_connect, c.unconfirmed, c.refused, c.connect_timeout, c.other_error, c.client_skipped
        ),
        result: format!(
            "admin: {} TCP connection events + {} rolled up in {} rollups = {}; sensor shed {} (TCP and UDP)",
            totals.connection_events, totals.rollup_connections, totals.rollup_events, admin_conns, st.shed_connections
        ),
        lost: format!("{}", c.connected as i64 - admin_conns as i64),
        pass: exact,
    });
    let udp = UdpAccount {
        exchanges: totals.udp_exchanges,
        shed: totals.udp_rollup_datagrams,
        rollups: totals.udp_rollup_events,
    };
    rows.push(udp_row(&p, &c, udp, &udp_kernel, backlog));
    rows.push(seq_row(&p, &st, &totals));
    s.sensor.stop(Duration::from_secs(30));
    Ok(rows)
}

/// What the admin holds of a run's UDP datagrams.
#[derive(Clone, Copy, Debug)]
struct UdpAccount {
    /// One exchange per datagram (connection events with transport udp).
    exchanges: u64,
    /// Datagrams shed and counted, in `rollups` UDP rollup events.
    shed: u64,
    rollups: u64,
}

/// The UDP account: every datagram the client sent is one exchange or one shed datagram at the
/// admin, or the kernel dropped it at the sensor's socket (its own counter; see `kernel.rs`).
fn udp_row(p: &str, c: &flood::Snapshot, a: UdpAccount, k: &Result<kernel::UdpSockets>, backlog: u64) -> Row {
    let tried = format!(
        "client: {} datagrams sent to tftp, sip, memcached and ssdp from the same source addresses ({} answered within {} s), {} not sent",
        c.udp_sent,
        c.udp_answered,
        flood::UDP_REPLY_TIMEOUT.as_secs(),
        c.udp_send_errors
    );
    let k = match k {
        Ok(k) => *k,
        Err(e) => {
            return Row {
                check: format!("{p}: UDP sent = exchanges + shed + dropped by the kernel"),
                tried,
                result: format!("ERROR: {}", format!("{e:#}").replace('\n', " / ").replace('|', "\\|")),
                lost: "unknown".into(),
                pass: false,
            };
        }
    };
    let accounted = a.exchanges + a.shed + k.drops;
    let lost = c.udp_sent as i64 - accounted as i64;
    let mut result = format!(
        "admin: {} UDP exchanges + {} shed in {} UDP rollups; kernel: {} dropped at the sensor's {} UDP sockets ({} bytes left unread); = {accounted}",
        a.exchanges, a.shed, a.rollups, k.drops, k.sockets, k.rx_queue
    );
    if backlog > 0 {
        result.push_str(&format!(
            "; the machine's input backlog dropped {backlog} packets meanwhile (any protocol: a difference may be the kernel's, not waived)"
        ));
    }
    Row {
        check: format!("{p}: UDP sent = exchanges + shed + dropped by the kernel"),
        tried,
        result,
        lost: format!("{lost}"),
        // Exercised (datagrams were sent and exchanges made), nothing left unread, every reply
        // from an exchange, and the books balance to the datagram.
        pass: c.udp_sent > 0 && a.exchanges > 0 && k.rx_queue == 0 && c.udp_answered <= a.exchanges && lost == 0,
    }
}

/// The sequence-number account: every committed seq at the admin once, or reported evicted.
fn seq_row(p: &str, st: &account::SensorStatus, t: &account::AdminTotals) -> Row {
    Row {
        check: format!("{p}: every committed event at the admin exactly once or reported evicted"),
        tried: format!("sensor committed seqs 1..={} (acked {})", st.last_seq, st.acked_seq),
        result: format!(
            "admin holds {} distinct seqs in {} rows; {} evicted in {} gap records",
            t.distinct_seqs, t.rows, t.evicted, t.gap_events
        ),
        lost: format!("{}", t.missing),
        pass: t.missing == 0 && t.rows == t.distinct_seqs && st.last_seq > 0,
    }
}

fn phase_soak(args: &Args, rt: &tokio::runtime::Runtime, s: &mut Stack) -> Result<Vec<Row>> {
    let secs = args.soak_secs.unwrap_or(if args.short { 60 } else { 1800 });
    let every = Duration::from_secs(args.sample_secs.unwrap_or(if args.short { 5 } else { 60 }));
    if !s.admin.running() {
        s.start_admin()?;
    }
    if !s.sensor.running() {
        s.start_sensor()?;
    }
    let before = s.drain(Duration::from_secs(60))?;
    let t0 = s.admin_totals(before.last_seq)?;
    let backlog0 = kernel::softnet_dropped();
    let f = Flood::new(
        s.targets.clone(),
        Sources { heavy_pct: 10, others: args.sources },
        Duration::from_secs(5),
        Duration::from_secs(8),
    );
    let pid = s.sensor.current_pid().context("sensor not running")?;
    let mut series = Series::default();
    let start = Instant::now();
    let stop = CancellationToken::new();
    eprintln!("drosera-torture: soak: {}/s for {secs} s, sampling every {every:?}", args.soak_rate);
    let c = rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let load = {
            let f = f.clone();
            let stop = stop.clone();
            let rate = args.soak_rate;
            tokio::spawn(async move { f.steady(rate, deadline, 1000, stop).await })
        };
        while Instant::now() < deadline {
            series.take(pid, start);
            tokio::time::sleep(every.min(deadline.saturating_duration_since(Instant::now()))).await;
        }
        series.take(pid, start);
        let _ = load.await;
        f.counters.snapshot()
    });
    let alive = s.sensor.running() && s.sensor.current_pid() == Some(pid);
    let udp_kernel = kernel::udp_sockets_drained(&s.udp_ports(), Duration::from_secs(30));
    let backlog = kernel::softnet_dropped().saturating_sub(backlog0);
    // Skip the first fifth as warm-up (allocator arenas, SQLite page cache filling).
    let (rss_slope, fd_slope) = series.slopes(series.points.len() / 5);
    let minutes = secs as f64 / 60.0;
    let rss_growth = rss_slope * minutes;
    let first = series.points.first().copied().unwrap_or_default();
    let last = series.points.last().copied().unwrap_or_default();
    let (st, t1) = s.settle(Duration::from_secs(120))?;
    let got = t1.connections().saturating_sub(t0.connections());
    let mut rows = vec![
        Row {
            check: "soak: RSS flat".into(),
            tried: format!(
                "{} connections and {} datagrams at {}/s for {:.0} min, {} samples",
                c.attempted,
                c.udp_attempted,
                args.soak_rate,
                minutes,
                series.points.len()
            ),
            result: format!(
                "slope {:+.1} KiB/min ({} → {}); fitted growth over the run {:+.1} KiB",
                rss_slope / 1024.0,
                mib(first.rss),
                mib(last.rss),
                rss_growth / 1024.0
            ),
            lost: "—".into(),
            // Flat: the fitted growth over the whole run stays under 5% of the hard limit.
            pass: alive && rss_growth < s.opts.hard_limit as f64 * 0.05,
        },
        Row {
            check: "soak: open descriptors flat".into(),
            tried: "count of /proc/PID/fd at each sample".into(),
            result: format!("slope {:+.2} fds/min ({} → {})", fd_slope, first.fds, last.fds),
            lost: "—".into(),
            pass: alive && fd_slope * minutes < 16.0,
        },
        Row {
            check: "soak: accepted = stored + rolled up".into(),
            tried: format!("{} connected, {} never answered", c.connected, c.unconfirmed),
            result: format!("admin gained {got} connections"),
            lost: format!("{}", c.connected as i64 - got as i64),
            pass: c.unconfirmed == 0 && got == c.connected,
        },
    ];
    let udp = UdpAccount {
        exchanges: t1.udp_exchanges.saturating_sub(t0.udp_exchanges),
        shed: t1.udp_rollup_datagrams.saturating_sub(t0.udp_rollup_datagrams),
        rollups: t1.udp_rollup_events.saturating_sub(t0.udp_rollup_events),
    };
    rows.push(udp_row("soak", &c, udp, &udp_kernel, backlog));
    rows.push(seq_row("soak", &st, &t1));
    s.sensor.stop(Duration::from_secs(30));
    s.admin.stop(Duration::from_secs(30));
    Ok(rows)
}

/// Small xorshift generator for reproducible kill moments.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0.max(1);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Mounts a tmpfs of `bytes` at `dir`; unmounted on drop.
struct Tmpfs(PathBuf);
impl Tmpfs {
    fn mount(dir: &Path, bytes: u64) -> Result<Tmpfs> {
        std::fs::create_dir_all(dir)?;
        let st = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={bytes},mode=0777"),
                "drosera-torture",
                &dir.display().to_string(),
            ])
            .status()?;
        if !st.success() {
            bail!("mount -t tmpfs failed: {st}");
        }
        Ok(Tmpfs(dir.to_path_buf()))
    }
}
impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn free_bytes(dir: &Path) -> u64 {
    match nix::sys::statvfs::statvfs(dir) {
        Ok(s) => s.blocks_available().saturating_mul(s.fragment_size()),
        Err(_) => 0,
    }
}

fn phase_faults(args: &Args, rt: &tokio::runtime::Runtime, bins: &Bins, dir: &Path, seed: u64) -> Result<Vec<Row>> {
    let secs = args.fault_secs.unwrap_or(if args.short { 60 } else { 300 });
    let kills = args.sensor_kills.unwrap_or(if args.short { 3 } else { 6 });
    let mut rng = Rng(seed);
    let mut rows = Vec::new();
    let mut opts =
        SensorOpts { name: "torture-faults".into(), cap_bytes: 24 << 20, reserve_bytes: 4 << 20, ..Default::default() };
    // The disk: a 40 MiB tmpfs that another process fills (root only).
    std::fs::create_dir_all(dir)?;
    let tmpfs = if is_root() {
        match Tmpfs::mount(&dir.join("disk"), 40 << 20) {
            Ok(t) => {
                opts.data_dir = Some(t.0.join("sensor"));
                Some(t)
            }
            Err(e) => {
                eprintln!("drosera-torture: disk-full fault skipped: {e:#}");
                None
            }
        }
    } else {
        eprintln!("drosera-torture: disk-full fault skipped: mounting a tmpfs needs root");
        None
    };
    // The clock: libfaketime with a timestamp file we rewrite; monotonic time stays real, as
    // when NTP steps the wall clock.
    let faketime_file = dir.join("faketime.rc");
    let faketime = Path::new(LIBFAKETIME).exists();
    if faketime {
        std::fs::write(&faketime_file, "+0\n")?;
        opts.env = vec![
            ("LD_PRELOAD".into(), LIBFAKETIME.into()),
            ("FAKETIME_TIMESTAMP_FILE".into(), faketime_file.display().to_string()),
            ("FAKETIME_CACHE_DURATION".into(), "1".into()),
            ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
        ];
    } else {
        eprintln!("drosera-torture: clock fault skipped: {LIBFAKETIME} missing (apt-get install faketime)");
    }
    let mut s = Stack::create(bins, dir, opts)?;
    let f = Flood::new(
        s.targets.clone(),
        Sources { heavy_pct: 20, others: args.sources },
        Duration::from_secs(3),
        Duration::from_secs(8),
    );
    // Stage 1 (first 40%): admin unreachable the whole time; the sensor is killed -9 at random
    // moments and restarted. Stage 2: admin up, killed -9 and restarted once; the disk fills;
    // the clock jumps back one hour; more sensor kills.
    s.start_sensor()?;
    let stop = CancellationToken::new();
    let deadline = Instant::now() + Duration::from_secs(secs);
    let load = {
        let f = f.clone();
        let stop = stop.clone();
        let rate = args.fault_rate;
        rt.spawn(async move { f.steady(rate, deadline, 500, stop).await })
    };
    let t0 = Instant::now();
    let stage1 = secs * 2 / 5;
    let mut kill_at: Vec<u64> = (0..kills).map(|_| 2 + rng.below(secs.saturating_sub(6).max(1))).collect();
    kill_at.sort_unstable();
    let admin_kill_at = stage1 + (secs - stage1) / 4;
    let fill_at = stage1 + (secs - stage1) / 3;
    let jump_at = stage1 + (secs - stage1) / 2;
    let (mut admin_started, mut admin_killed, mut filled, mut jumped) = (false, false, false, false);
    let mut filler_bytes = 0u64;
    let mut sensor_restarts = 0u32;
    let mut problems: Vec<String> = Vec::new();
    let mut admin_down_rows = 0u64;
    while t0.elapsed() < Duration::from_secs(secs) {
        let now = t0.elapsed().as_secs();
        if let Some(&k) = kill_at.first() {
            if now >= k {
                kill_at.remove(0);
                eprintln!("drosera-torture: t={now}s kill -9 sensor");
                s.sensor.kill9();
                if let Err(e) = s.start_sensor() {
                    problems.push(format!("sensor restart failed: {e:#}"));
                    break;
                }
                sensor_restarts += 1;
            }
        }
        if !admin_started && now >= stage1 {
            admin_down_rows = s.admin_totals(u64::MAX).map(|t| t.rows).unwrap_or(0);
            eprintln!("drosera-torture: t={now}s admin starts (was unreachable until now)");
            s.start_admin()?;
            admin_started = true;
        }
        if admin_started && !admin_killed && now >= admin_kill_at {
            eprintln!("drosera-torture: t={now}s kill -9 admin, restart in 3 s");
            s.admin.kill9();
            std::thread::sleep(Duration::from_secs(3));
            s.start_admin()?;
            admin_killed = true;
        }
        if !filled && now >= fill_at {
            filled = true;
            if let Some(t) = &tmpfs {
                // Another process fills the disk to within 1 MiB (less than the store's reserve).
                let free = free_bytes(&t.0);
                let count = free.saturating_sub(1 << 20) >> 20;
                eprintln!("drosera-torture: t={now}s dd fills the sensor's disk with {count} MiB");
                let st = std::process::Command::new("dd")
                    .args(["if=/dev/zero", &format!("of={}/filler", t.0.display()), "bs=1M", &format!("count={count}")])
                    .stderr(std::process::Stdio::null())
                    .status()?;
                filler_bytes = std::fs::metadata(t.0.join("filler")).map(|m| m.len()).unwrap_or(0);
                if !st.success() {
                    eprintln!("drosera-torture: dd: {st} (disk full before the count: as intended)");
                }
            }
        }
        if !jumped && now >= jump_at {
            jumped = true;
            if faketime {
                eprintln!("drosera-torture: t={now}s the sensor's clock jumps back one hour");
                std::fs::write(&faketime_file, "-3600\n")?;
            }
        }
        if !s.sensor.running() {
            problems.push(format!(
                "sensor exited by itself: {:?}; log tail:\n{}",
                s.sensor.unexpected_exits,
                s.sensor.log_tail(10)
            ));
            s.start_sensor()?;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.cancel();
    let _ = rt.block_on(load);
    let c = f.counters.snapshot();
    if !admin_started {
        s.start_admin()?;
    }
    let store_peak = sample::store_bytes(&s.data_dir);
    let drained = s.drain(Duration::from_secs(180));
    let (st, t) = match drained {
        Ok(st) => {
            let t = s.admin_totals(st.last_seq)?;
            (st, t)
        }
        Err(e) => {
            problems.push(format!("{e:#}"));
            let st = s.status().unwrap_or_default();
            let t = s.admin_totals(st.last_seq)?;
            (st, t)
        }
    };
    let disk = match &tmpfs {
        Some(_) => format!("disk (40 MiB tmpfs) filled by dd with {} (store reserve 4 MiB)", mib(filler_bytes)),
        None => "disk fill SKIPPED (not root)".into(),
    };
    let clock = if faketime {
        "clock jumped back 1 h (libfaketime, realtime only)"
    } else {
        "clock jump SKIPPED (no libfaketime)"
    };
    rows.push(Row {
        check: "faults: sensor survives".into(),
        tried: format!(
            "{} s of load at {}/s ({} connected); admin unreachable for the first {stage1} s then started; admin kill -9 + restart at {admin_kill_at} s; sensor kill -9 × {sensor_restarts} at random moments (seed {seed}); {disk}; {clock}",
            secs, args.fault_rate, c.connected
        ),
        result: if problems.is_empty() { format!("no crash; {} events at the admin before it came up: {}", s.opts.name, admin_down_rows) } else { problems.join("; ").replace('\n', " / ").replace('|', "\\|") },
        lost: "—".into(),
        pass: problems.is_empty() && s.sensor.unexpected_exits.is_empty(),
    });
    rows.push(Row {
        check: "faults: store never above its effective cap".into(),
        tried: "db + wal + shm after the run".into(),
        result: format!(
            "{} (cap {}), sensor says {} of {}",
            mib(store_peak),
            mib(s.opts.cap_bytes),
            mib(st.store_bytes),
            mib(st.cap_bytes)
        ),
        lost: "—".into(),
        pass: store_peak <= s.opts.cap_bytes,
    });
    rows.push(seq_row("faults", &st, &t));
    s.sensor.stop(Duration::from_secs(30));
    s.admin.stop(Duration::from_secs(30));
    drop(s);
    drop(tmpfs);
    Ok(rows)
}

fn phase_arm64(args: &Args, rt: &tokio::runtime::Runtime, bins: &Bins, dir: &Path) -> Result<Vec<Row>> {
    let sensor = match &args.arm64_sensor {
        Some(p) => p.clone(),
        None => {
            // target/<profile>/drosera-torture → target/aarch64-unknown-linux-gnu/release
            let target = bins.sensor.parent().and_then(Path::parent).context("no target dir")?;
            target.join("aarch64-unknown-linux-gnu/release/drosera-sensor")
        }
    };
    let qemu = ["/usr/bin/qemu-aarch64-static", "/usr/bin/qemu-aarch64"].into_iter().find(|p| Path::new(p).exists());
    let (Some(qemu), true) = (qemu, sensor.exists()) else {
        return Ok(vec![Row {
            check: "arm64 flood under qemu".into(),
            tried: format!("{} with qemu-aarch64", sensor.display()),
            result: "SKIPPED: aarch64 binary or qemu-aarch64 missing (scripts/cross-build.sh builds it)".into(),
            lost: "—".into(),
            pass: !args.short || std::env::var_os("DROSERA_REQUIRE_ARM64").is_none(),
        }]);
    };
    let arm_bins = Bins { admin: bins.admin.clone(), sensor };
    // Under qemu-user, /proc/self/status is the emulator's: its RSS includes qemu's own
    // translation cache, so the governor's limits are raised accordingly (see docs/reliability.md).
    let opts = SensorOpts {
        name: "torture-arm64".into(),
        soft_limit: 384 << 20,
        hard_limit: 512 << 20,
        wrapper: vec![qemu.to_string(), "-L".into(), "/usr/aarch64-linux-gnu".into()],
        start_timeout: Duration::from_secs(120),
        ..Default::default()
    };
    let mut s = Stack::create(&arm_bins, dir, opts)?;
    let rows = phase_flood(args, rt, &mut s, "arm64 (qemu)")?;
    s.admin.stop(Duration::from_secs(30));
    Ok(rows)
}
