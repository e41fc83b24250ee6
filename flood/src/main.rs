//! `drosera-flood`: a bounded load generator that speaks each Drosera service's first probe.
//!
//! It exists to measure the sensor (scripts/bench-sensor.sh) and to flood it in tests, so it is
//! deliberately unable to become an attack tool: loopback targets only (other addresses need
//! `--allow-nonloopback`, meant for test network namespaces), and every run is bounded by a
//! connection count AND a wall-clock limit. `baseline` runs a bare accept-and-close server (the
//! physical upper bound the sensor is compared against) or, with `--proto`, a server that answers
//! that probe with fixed bytes (the same round trips as the sensor, without its work).

use clap::{Parser, Subcommand, ValueEnum};
use drosera_flood::probe;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

#[derive(Parser)]
#[command(name = "drosera-flood", about = "Bounded load generator for Drosera services (loopback only)")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Opens N connections (C at a time) and speaks the service's probe on each.
    Run(RunArgs),
    /// A baseline server the sensor is compared with: by default bare accept-and-close; with
    /// `--proto` it plays the other side of that probe with fixed bytes (same round trips as the
    /// sensor, no parsing, nothing recorded).
    Baseline {
        /// Address to listen on, e.g. 127.0.0.1:19000.
        #[arg(long)]
        listen: SocketAddr,
        /// The probe to answer (`connect`: accept and close at once).
        #[arg(long, value_enum, default_value = "connect")]
        proto: Probe,
        /// Stop after this many seconds.
        #[arg(long, default_value_t = 600)]
        max_seconds: u64,
    },
    /// Sends TCP SYNs on a raw socket at a paced rate (the scan-detection benchmark). Runs only
    /// inside a namespace made with `ip netns add`; bounded by count and time.
    /// Prints `{"sent":N,"failed":N,"seconds":S}`.
    Syn {
        /// Target IPv4 address (inside the test's namespaces).
        #[arg(long)]
        target: std::net::Ipv4Addr,
        /// Source address; without it, a pseudo-random source per packet.
        #[arg(long)]
        source: Option<std::net::Ipv4Addr>,
        /// Destination ports rise from this one.
        #[arg(long, default_value_t = 1)]
        first_port: u16,
        /// SYNs to send.
        #[arg(long)]
        count: u64,
        /// SYNs per second.
        #[arg(long)]
        rate: u64,
        /// Hard wall-clock limit.
        #[arg(long, default_value_t = 60)]
        max_seconds: u64,
        /// Seed of the random sources and source ports.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

#[derive(clap::Args, Clone)]
struct RunArgs {
    /// Target address (loopback unless --allow-nonloopback).
    #[arg(long)]
    target: SocketAddr,
    /// The probe to speak.
    #[arg(long, value_enum)]
    proto: Probe,
    /// Total connections to open.
    #[arg(long, default_value_t = 1000)]
    connections: u64,
    /// Connections in flight at once.
    #[arg(long, default_value_t = 50)]
    concurrency: usize,
    /// Hard wall-clock limit for the whole run.
    #[arg(long, default_value_t = 60)]
    max_seconds: u64,
    /// Per-connection timeout.
    #[arg(long, default_value_t = 10)]
    timeout_seconds: u64,
    /// Open at most this many new connections per second (paced from the run's start, at the
    /// timer's millisecond granularity); without it, as fast as `--concurrency` allows
    /// (saturation). The count and wall-clock bounds apply either way.
    #[arg(long)]
    rate: Option<f64>,
    /// Allow a non-loopback target (only for network namespaces you created).
    #[arg(long)]
    allow_nonloopback: bool,
}

/// What the client says (or waits for) on each connection.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
enum Probe {
    /// Connect and wait for the server to close (the bare accept-and-close baseline).
    Connect,
    /// `GET / HTTP/1.1`, read the status line.
    Http,
    /// Read the 220 banner, `USER`/`PASS`, read the reply.
    Ftp,
    /// Read the login prompt, send a user and password.
    Telnet,
    /// Read the server's SSH version line, send ours.
    Ssh,
    /// TDS PRELOGIN, read the response header.
    Mssql,
    /// Read the MySQL greeting.
    Mysql,
    /// SMB2 NEGOTIATE, read the response header.
    Smb,
    /// Redis `PING` and `QUIT`, read `+PONG`.
    Redis,
    /// ADB `CNXN`, read the device's `CNXN` header.
    Adb,
    /// Docker `GET /_ping`, read the status line.
    Docker,
    /// Read the SMTP 220 banner, `EHLO` and `QUIT`, read the reply.
    Smtp,
    /// RDP X.224 Connection Request (cookie, TLS + CredSSP), read the Connection Confirm.
    Rdp,
    /// VNC: read the RFB version, send ours, read the security types, choose VNC
    /// authentication, read the challenge, send a response, read the refusal.
    Vnc,
    /// MQTT anonymous CONNECT and DISCONNECT, read the CONNACK.
    Mqtt,
    /// MongoDB legacy `isMaster` query, read the reply's header.
    Mongodb,
    /// DCE/RPC bind to the endpoint mapper, read the bind_ack's header.
    Epmap,
    /// PPTP Start-Control-Connection-Request and Stop, read the start reply.
    Pptp,
    /// A PJL `@PJL INFO ID` job (then end of input), read the model's reply.
    Printer,
    /// SIP `OPTIONS` over TCP (then end of input), read the reply's head.
    Sip,
    /// memcached `stats` and `quit` over TCP, read the statistics to `END`.
    Memcached,
}

#[derive(Default)]
struct Stats {
    ok: AtomicU64,
    connect_failed: AtomicU64,
    probe_failed: AtomicU64,
    latencies_us: Mutex<Vec<u32>>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Cmd::Syn { target, source, first_port, count, rate, max_seconds, seed } = cli.cmd {
        let plan = drosera_flood::syn::SynPlan { target, source, first_port, count, rate, max_seconds, seed };
        let r = drosera_flood::syn::send(&plan)?;
        println!("{}", serde_json::json!({ "sent": r.sent, "failed": r.failed, "seconds": r.seconds }));
        return Ok(());
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match cli.cmd {
        Cmd::Run(args) => {
            if !args.target.ip().is_loopback() && !args.allow_nonloopback {
                anyhow::bail!(
                    "refusing non-loopback target {} (use --allow-nonloopback only inside a test network namespace)",
                    args.target
                );
            }
            if args.connections == 0 || args.concurrency == 0 {
                anyhow::bail!("--connections and --concurrency must be greater than zero");
            }
            if args.rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
                anyhow::bail!("--rate must be a positive number of connections per second");
            }
            let report = rt.block_on(run(args))?;
            println!("{}", serde_json::to_string(&report)?);
        }
        // On a worker thread like the sensor's accept loops (block_on would run it on this thread,
        // with a cross-thread wake for every accept).
        Cmd::Baseline { listen, proto, max_seconds } => {
            rt.block_on(rt.spawn(baseline(listen, proto, max_seconds)))??
        }
        Cmd::Syn { .. } => {}
    }
    Ok(())
}

async fn baseline(listen: SocketAddr, proto: Probe, max_seconds: u64) -> anyhow::Result<()> {
    // The same listen backlog as the sensor's listeners (TcpListener::bind would give 128, and
    // bursts would overflow the baseline's accept queue, not the sensor's).
    let socket = if listen.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(listen)?;
    let l = socket.listen(1024)?;
    println!("listening addr={} proto={proto:?}", l.local_addr()?);
    let end = tokio::time::Instant::now() + Duration::from_secs(max_seconds);
    // Bounded like the sensor: at most 4096 scripted exchanges at once, each at most 10 s.
    let slots = Arc::new(Semaphore::new(4096));
    loop {
        tokio::select! {
            r = l.accept() => {
                let Ok((s, _)) = r else { continue };
                if proto == Probe::Connect {
                    drop(s);
                    continue;
                }
                let Ok(permit) = slots.clone().try_acquire_owned() else { continue };
                tokio::spawn(async move {
                    let mut s = s;
                    let _ = tokio::time::timeout(Duration::from_secs(10), async {
                        answer(&mut s, proto).await?;
                        if client_closes_first(proto) {
                            until_closed(&mut s).await?;
                        }
                        std::io::Result::Ok(())
                    })
                    .await;
                    drop(permit);
                });
            }
            _ = tokio::time::sleep_until(end) => return Ok(()),
        }
    }
}

/// Probes after whose answer the sensor waits for the client's next message (RDP's TLS
/// ClientHello, the next DCE/RPC or MongoDB request, the client's SSH KEXINIT), so the client
/// closes first and keeps the TIME_WAIT. The scripted server waits for that close too: a
/// baseline that closed first would leave the TIME_WAITs on its own side, and the generator's
/// `connect()` (which slows down as TIME_WAITs take its ephemeral ports) would favour the
/// baseline. Checked with `ss -tan state time-wait` after a run against each.
fn client_closes_first(p: Probe) -> bool {
    matches!(p, Probe::Rdp | Probe::Epmap | Probe::Mongodb | Probe::Ssh)
}

/// Reads and discards until the client closes (the caller bounds the time).
async fn until_closed(s: &mut TcpStream) -> std::io::Result<()> {
    let mut buf = [0u8; 1024];
    while s.read(&mut buf).await? > 0 {}
    Ok(())
}

/// The server side of each probe with fixed bytes: the least a server can do for that exchange.
async fn answer(s: &mut TcpStream, p: Probe) -> std::io::Result<()> {
    let mut buf = [0u8; 4096];
    match p {
        Probe::Connect => Ok(()),
        Probe::Http => {
            let _ = s.read(&mut buf).await?;
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").await
        }
        Probe::Ftp => {
            s.write_all(b"220 ready\r\n").await?;
            let _ = s.read(&mut buf).await?;
            s.write_all(b"331 password\r\n").await?;
            // `PASS` and `QUIT` arrive together: both answered in one write, as the sensor does,
            // so neither side closes with unread input (which would end in a reset).
            let _ = s.read(&mut buf).await?;
            s.write_all(b"530 Login incorrect.\r\n221 Goodbye.\r\n").await
        }
        Probe::Telnet => {
            s.write_all(b"login: ").await?;
            let _ = s.read(&mut buf).await?;
            s.write_all(b"Password: ").await?;
            let _ = s.read(&mut buf).await?;
            // A shell prompt, as a telnetd (and the sensor) sends after the password. Without
            // it the client, not the server, would close first and keep every TIME_WAIT on its
            // side, and its connect() slows down as ephemeral ports fill up.
            s.write_all(b"\r\n# ").await
        }
        Probe::Ssh => {
            // The sensor answers the version exchange itself and sends its KEXINIT only when
            // the client goes on or waits (protocols/ssh/exchange.rs); this probe leaves after
            // its version line, so neither sends more, and the client closes first.
            s.write_all(b"SSH-2.0-OpenSSH_9.2p1\r\n").await?;
            let _ = s.read(&mut buf).await?;
            Ok(())
        }
        Probe::Mssql => {
            let _ = s.read(&mut buf).await?;
            s.write_all(&[0x04, 1, 0, 8, 0, 0, 1, 0]).await
        }
        Probe::Mysql => s.write_all(&[1, 0, 0, 0, 10]).await,
        Probe::Smb => {
            let _ = s.read(&mut buf).await?;
            s.write_all(&[0, 0, 0, 4, 0xfe, b'S', b'M', b'B']).await
        }
        Probe::Redis => {
            let _ = s.read(&mut buf).await?;
            s.write_all(b"+PONG\r\n+OK\r\n").await
        }
        Probe::Adb => {
            let _ = s.read(&mut buf).await?;
            // The device's CNXN header and identity, as many bytes as the sensor sends.
            let mut cnxn = probe::adb_connect();
            cnxn.truncate(24 + 96);
            s.write_all(&cnxn).await
        }
        Probe::Docker => {
            let _ = s.read(&mut buf).await?;
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nOK").await
        }
        Probe::Smtp => {
            s.write_all(b"220 mail ESMTP\r\n").await?;
            let _ = s.read(&mut buf).await?;
            s.write_all(b"250 mail\r\n221 2.0.0 Bye\r\n").await
        }
        Probe::Rdp => {
            let _ = s.read(&mut buf).await?;
            s.write_all(b"\x03\0\0\x13\x0e\xd0\0\0\x124\0\x02\x1f\x08\0\x02\0\0\0").await
        }
        Probe::Vnc => {
            s.write_all(probe::RFB_3_8).await?;
            let _ = s.read(&mut buf).await?;
            s.write_all(&[1, 2]).await?;
            let _ = s.read(&mut buf).await?;
            s.write_all(&[7u8; 16]).await?;
            let _ = s.read(&mut buf).await?;
            s.write_all(b"\0\0\0\x01\0\0\0\x15Authentication failed").await
        }
        Probe::Mqtt => {
            let _ = s.read(&mut buf).await?;
            s.write_all(&[0x20, 2, 0, 0]).await
        }
        Probe::Mongodb => {
            let _ = s.read(&mut buf).await?;
            // An OP_REPLY as large as the sensor's isMaster reply.
            let mut reply = vec![0u8; 350];
            reply[..4].copy_from_slice(&350i32.to_le_bytes());
            reply[12..16].copy_from_slice(&1i32.to_le_bytes());
            s.write_all(&reply).await
        }
        Probe::Epmap => {
            let _ = s.read(&mut buf).await?;
            let mut ack = vec![0u8; 60];
            ack[..4].copy_from_slice(&[5, 0, 12, 3]);
            ack[8] = 60;
            s.write_all(&ack).await
        }
        Probe::Pptp => {
            let _ = s.read(&mut buf).await?;
            let mut reply = vec![0u8; 156 + 16];
            reply[..10].copy_from_slice(&[0, 156, 0, 1, 0x1a, 0x2b, 0x3c, 0x4d, 0, 2]);
            s.write_all(&reply).await
        }
        Probe::Printer => {
            let _ = s.read(&mut buf).await?;
            s.write_all(b"@PJL INFO ID\r\n\"HP LaserJet 4250\"\r\n\x0c").await
        }
        Probe::Sip => {
            let _ = s.read(&mut buf).await?;
            // A 200 OK as large as the sensor's answer to OPTIONS (its headers echoed).
            let mut ok = b"SIP/2.0 200 OK\r\n".to_vec();
            ok.resize(480, b'x');
            ok.extend_from_slice(b"\r\nContent-Length: 0\r\n\r\n");
            s.write_all(&ok).await
        }
        Probe::Memcached => {
            let _ = s.read(&mut buf).await?;
            // A statistics block as large as memcached 1.6's (and the sensor's).
            let mut stats = Vec::new();
            for i in 0..60 {
                stats.extend_from_slice(format!("STAT stat_{i:02} {}\r\n", 1000 + i).as_bytes());
            }
            stats.extend_from_slice(b"END\r\n");
            s.write_all(&stats).await
        }
    }
}

async fn run(args: RunArgs) -> anyhow::Result<serde_json::Value> {
    let stats = Arc::new(Stats::default());
    let sem = Arc::new(Semaphore::new(args.concurrency));
    let deadline = Instant::now() + Duration::from_secs(args.max_seconds);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let mut launched = 0u64;
    while launched < args.connections && Instant::now() < deadline {
        if let Some(rate) = args.rate {
            // Connection number `launched` is due `launched / rate` seconds after the start; a
            // late generator catches up (the kernel's accept queue absorbs the burst), an early
            // one sleeps, so the offered rate holds over the run.
            let due = started + Duration::from_secs_f64(launched as f64 / rate);
            if due > Instant::now() {
                tokio::time::sleep_until(due.min(deadline).into()).await;
                if Instant::now() >= deadline {
                    break;
                }
            }
        }
        let Ok(permit) = sem.clone().acquire_owned().await else { break };
        launched += 1;
        let stats = stats.clone();
        let a = args.clone();
        tasks.spawn(async move {
            let t0 = Instant::now();
            let timeout = Duration::from_secs(a.timeout_seconds);
            match tokio::time::timeout(timeout, TcpStream::connect(a.target)).await {
                Ok(Ok(mut s)) => match tokio::time::timeout(timeout, probe(&mut s, a.proto)).await {
                    Ok(Ok(())) => {
                        stats.ok.fetch_add(1, Ordering::Relaxed);
                        let us = t0.elapsed().as_micros().min(u32::MAX as u128) as u32;
                        stats.latencies_us.lock().unwrap_or_else(|p| p.into_inner()).push(us);
                    }
                    _ => {
                        stats.probe_failed.fetch_add(1, Ordering::Relaxed);
                    }
                },
                _ => {
                    stats.connect_failed.fetch_add(1, Ordering::Relaxed);
                }
            }
            drop(permit);
        });
        while tasks.try_join_next().is_some() {}
    }
    let remaining = deadline.saturating_duration_since(Instant::now()) + Duration::from_secs(args.timeout_seconds);
    let _ = tokio::time::timeout(remaining, async { while tasks.join_next().await.is_some() {} }).await;
    tasks.abort_all();
    let secs = started.elapsed().as_secs_f64();
    let mut lat = stats.latencies_us.lock().unwrap_or_else(|p| p.into_inner()).clone();
    lat.sort_unstable();
    let pct = |p: f64| -> f64 {
        if lat.is_empty() {
            0.0
        } else {
            lat[((lat.len() - 1) as f64 * p).round() as usize] as f64 / 1000.0
        }
    };
    let ok = stats.ok.load(Ordering::Relaxed);
    Ok(serde_json::json!({
        "proto": format!("{:?}", args.proto).to_lowercase(),
        "offered_rate": args.rate,
        "target": args.target.to_string(),
        "launched": launched,
        "ok": ok,
        "connect_failed": stats.connect_failed.load(Ordering::Relaxed),
        "probe_failed": stats.probe_failed.load(Ordering::Relaxed),
        "seconds": secs,
        "connections_per_second": ok as f64 / secs.max(1e-9),
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
    }))
}

async fn read_some(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 1024];
    let n = s.read(&mut buf).await?;
    if n == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    buf.truncate(n);
    Ok(buf)
}

async fn read_until(s: &mut TcpStream, needle: &[u8]) -> std::io::Result<()> {
    let mut seen = Vec::new();
    while !seen.windows(needle.len()).any(|w| w == needle) {
        seen.extend_from_slice(&read_some(s).await?);
        if seen.len() > 64 * 1024 {
            return Err(std::io::ErrorKind::InvalidData.into());
        }
    }
    Ok(())
}

async fn probe(s: &mut TcpStream, p: Probe) -> std::io::Result<()> {
    match p {
        // Wait for the server to close: a client that hung up at once would not be paced by
        // the server, and connections it already left would overflow the server's accept
        // queue (1-second SYN retransmits then dominate any short run).
        Probe::Connect => {
            let mut buf = [0u8; 256];
            loop {
                match s.read(&mut buf).await {
                    Ok(0) => return Ok(()),
                    Ok(_) => continue,
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(()),
                    Err(e) => return Err(e),
                }
            }
        }
        Probe::Http => {
            s.write_all(&probe::http_get("/", "bench", "drosera-flood")).await?;
            read_until(s, b"HTTP/1.").await
        }
        Probe::Ftp => {
            read_until(s, b"220").await?;
            s.write_all(b"USER anonymous\r\n").await?;
            read_until(s, b"331").await?;
            s.write_all(b"PASS bench@\r\nQUIT\r\n").await?;
            read_some(s).await.map(|_| ())
        }
        Probe::Telnet => {
            read_until(s, b"ogin").await?;
            s.write_all(b"root\r\n").await?;
            read_until(s, b"assword").await?;
            s.write_all(b"root\r\nexit\r\n").await?;
            Ok(())
        }
        Probe::Ssh => {
            read_until(s, b"SSH-").await?;
            s.write_all(b"SSH-2.0-drosera-flood\r\n").await
        }
        Probe::Mssql => {
            s.write_all(&probe::mssql_prelogin()).await?;
            let mut h = [0u8; 8];
            s.read_exact(&mut h).await?;
            if h[0] == 0x04 {
                Ok(())
            } else {
                Err(std::io::ErrorKind::InvalidData.into())
            }
        }
        Probe::Mysql => {
            let mut h = [0u8; 5];
            s.read_exact(&mut h).await?;
            if h[4] == 10 {
                Ok(())
            } else {
                Err(std::io::ErrorKind::InvalidData.into())
            }
        }
        Probe::Smb => {
            s.write_all(&probe::smb2_negotiate(&[0x0202, 0x0210])).await?;
            let mut h = [0u8; 8];
            s.read_exact(&mut h).await?;
            if &h[4..8] == b"\xfeSMB" {
                Ok(())
            } else {
                Err(std::io::ErrorKind::InvalidData.into())
            }
        }
        Probe::Redis => {
            s.write_all(&probe::redis_ping_quit()).await?;
            read_until(s, b"+PONG").await
        }
        Probe::Adb => {
            s.write_all(&probe::adb_connect()).await?;
            let mut h = [0u8; 24];
            s.read_exact(&mut h).await?;
            if &h[..4] == b"CNXN" {
                Ok(())
            } else {
                Err(std::io::ErrorKind::InvalidData.into())
            }
        }
        Probe::Docker => {
            s.write_all(&probe::docker_ping("bench")).await?;
            read_until(s, b"HTTP/1.").await
        }
        Probe::Smtp => {
            read_until(s, b"220").await?;
            s.write_all(&probe::smtp_ehlo_quit("bench")).await?;
            read_until(s, b"250").await
        }
        Probe::Rdp => {
            s.write_all(&probe::rdp_connection_request("bench")).await?;
            let mut h = [0u8; 19];
            s.read_exact(&mut h).await?;
            if h[..2] == [3, 0] && h[5] == 0xd0 {
                Ok(())
            } else {
                Err(std::io::ErrorKind::InvalidData.into())
            }
        }
        Probe::Vnc => {
            let mut version = [0u8; 12];
            s.read_exact(&mut version).await?;
            if !version.starts_with(b"RFB ") {
                return Err(std::io::ErrorKind::InvalidData.into());
            }
            s.write_all(probe::RFB_3_8).await?;
            let mut n = [0u8; 1];
            s.read_exact(&mut n).await?;
            let mut types = vec![0u8; n[0] as usize];
            s.read_exact(&mut types).await?;
            if !types.contains(&2) {
                return Err(std::io::ErrorKind::InvalidData.into());
            }
            s.write_all(&[2]).await?;
            let mut challenge = [0u8; 16];
            s.read_exact(&mut challenge).await?;
            s.write_all(&[0u8; 16]).await?;
            let mut result = [0u8; 4];
            s.read_exact(&mut result).await.map(|_| ())
        }
        Probe::Mqtt => {
            s.write_all(&probe::mqtt_connect_disconnect("bench")).await?;
            let mut ack = [0u8; 4];
            s.read_exact(&mut ack).await?;
            if ack[0] == 0x20 {
                Ok(())
            } else {
                Err(std::io::ErrorKind::InvalidData.into())
            }
        }
        Probe::Mongodb => {
            s.write_all(&probe::mongodb_is_master()).await?;
            let mut h = [0u8; 16];
            s.read_exact(&mut h).await?;
            let len = i32::from_le_bytes([h[0], h[1], h[2], h[3]]);
            if h[12..16] == 1i32.to_le_bytes() && (16..=64 * 1024).contains(&len) {
                // The whole reply, so the client does not close on unread bytes (a reset).
                let mut rest = vec![0u8; len as usize - 16];
                s.read_exact(&mut rest).await.map(|_| ())
            } else {
                Err(std::io::ErrorKind::InvalidData.into())
            }
        }
        Probe::Epmap => {
            s.write_all(&probe::epmap_bind()).await?;
            let mut h = [0u8; 16];
            s.read_exact(&mut h).await?;
            let len = u16::from_le_bytes([h[8], h[9]]) as usize;
            if h[..3] == [5, 0, 12] && len >= 16 {
                let mut rest = vec![0u8; len - 16];
                s.read_exact(&mut rest).await.map(|_| ())
            } else {
                Err(std::io::ErrorKind::InvalidData.into())
            }
        }
        Probe::Pptp => {
            s.write_all(&probe::pptp_start_stop("bench")).await?;
            let mut h = [0u8; 156];
            s.read_exact(&mut h).await?;
            if h[8..10] == [0, 2] {
                Ok(())
            } else {
                Err(std::io::ErrorKind::InvalidData.into())
            }
        }
        Probe::Printer => {
            s.write_all(probe::PJL_INFO_ID).await?;
            s.shutdown().await?;
            read_until(s, b"\x0c").await
        }
        Probe::Sip => {
            s.write_all(&probe::sip_options("bench")).await?;
            s.shutdown().await?;
            read_until(s, b"\r\n\r\n").await
        }
        Probe::Memcached => {
            s.write_all(probe::MEMCACHED_STATS_QUIT).await?;
            read_until(s, b"END\r\n").await
        }
    }
}
