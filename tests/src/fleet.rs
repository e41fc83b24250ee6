//! A simulated sensor fleet: N enrolled sensors, each with a backlog of synthetic events,
//! shipping at once to one or several admins over the real uplink (mutual TLS, postcard + zstd
//! batches, a window of batches in flight), failing over to the next admin when a session
//! fails. Used by the fleet benchmark (`drosera-fleet`, `scripts/bench-fleet.sh`).
//!
//! WHY simulated and not N `drosera-sensor` processes: a thousand sensor processes (each with
//! its store, listeners and runtime) would measure this 2-core machine, not the admin. The
//! simulation speaks the same protocol as the sensor's shipper, with the same batch size and
//! window, from pre-encoded batches, so nearly all CPU goes to the admins and the database. The
//! real sensor's failover is covered by `tests/tests/fleet_e2e.rs`.

use anyhow::{bail, Context, Result};
use drosera_uplink::codec;
use drosera_uplink::event::{CloseReason, Detail, Event, Priority, Protocol, Secret, Transport, SCHEMA_VERSION};
use drosera_uplink::frame::{self, Frame, MAX_CONTROL_FRAME, MIN_PROTOCOL_VERSION};
use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::ClientConfig;
use tokio_rustls::TlsConnector;

/// One encoded batch: `first..=last`, `count` events.
#[derive(Clone)]
pub struct Batch {
    pub first: u64,
    pub last: u64,
    pub count: u32,
    pub payload: Vec<u8>,
}

/// A simulated sensor: its name, its client TLS config and its backlog.
pub struct SimSensor {
    pub name: String,
    pub tls: Arc<ClientConfig>,
    pub batches: Vec<Batch>,
    pub events: u64,
}

/// The synthetic events of sensor number `k`: connections (60 %), logins (30 %) and shell
/// commands (10 %) from a pool of 50,000 addresses with a heavy head, over the hour before
/// `now_ms`.
pub fn events(k: usize, n: u64, now_ms: i64) -> Vec<Event> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ (k as u64).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    const USERS: [&str; 6] = ["root", "admin", "user", "pi", "support", "test"];
    (1..=n)
        .map(|seq| {
            let r = rnd();
            let u = (r % 10_000) as f64 / 10_000.0;
            let ipn = (50_000.0 * u.powi(4)) as u32;
            let src = IpAddr::V4(Ipv4Addr::from(0x0b00_0000u32 + ipn * 7919 % 0x00ff_ffff));
            let (protocol, port) =
                [(Protocol::Telnet, 23), (Protocol::Ssh, 22), (Protocol::Http, 80)][(r >> 20) as usize % 3];
            let detail = match (r >> 8) % 10 {
                0..=5 => {
                    Detail::Connection { first_bytes: b"\xff\xfb\x01".to_vec(), closed_by: CloseReason::ClientClosed }
                }
                6..=8 => Detail::Login {
                    username: USERS[(r >> 32) as usize % USERS.len()].into(),
                    secret: Secret::Password(format!("pw{}", (r >> 40) % 2000)),
                    success: false,
                    extra: vec![],
                },
                _ => Detail::Command { line: "uname -a; cat /proc/cpuinfo".into() },
            };
            Event {
                seq,
                time_ms: now_ms - 3_600_000 + (seq as i64 * 3_600_000 / n.max(1) as i64),
                sensor: String::new(),
                transport: Transport::Tcp,
                protocol,
                src_ip: src,
                src_port: 40_000 + (r % 20_000) as u16,
                dst_port: port,
                session_id: seq,
                duration_ms: 100,
                bytes_in: 50,
                bytes_out: 80,
                priority: Priority::Noise,
                detail,
            }
        })
        .collect()
}

/// Encodes a backlog in batches of `batch` events, as the sensor's shipper would.
pub fn encode(events: &[Event], batch: usize) -> Result<Vec<Batch>> {
    events
        .chunks(batch.max(1))
        .map(|c| {
            Ok(Batch {
                first: c[0].seq,
                last: c[c.len() - 1].seq,
                count: c.len() as u32,
                payload: codec::encode(c, codec::DEFAULT_LEVEL)?,
            })
        })
        .collect()
}

/// Loads a sensor bundle written by `drosera-admin sensor add` (`ca.pem`, `sensor.pem`,
/// `sensor.key`) and encodes its backlog.
pub fn sensor(name: &str, bundle: &Path, k: usize, events_n: u64, batch: usize, now_ms: i64) -> Result<SimSensor> {
    let tls = drosera_uplink::tls::client_config(
        &bundle.join("ca.pem"),
        &bundle.join("sensor.pem"),
        &bundle.join("sensor.key"),
    )
    .with_context(|| format!("bundle of {name}"))?;
    let batches = encode(&events(k, events_n, now_ms), batch)?;
    Ok(SimSensor { name: name.to_string(), tls, batches, events: events_n })
}

/// What one sensor's shipping took.
#[derive(Debug, Clone, Default)]
pub struct ShipStats {
    pub sessions: u32,
    pub failovers: u32,
    /// Highest sequence number acknowledged.
    pub acked: u64,
}

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

async fn connect(s: &SimSensor, admin: SocketAddr) -> Result<Tls> {
    let tcp = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(admin)).await??;
    let _ = tcp.set_nodelay(true);
    let name = ServerName::try_from("localhost")?;
    Ok(tokio::time::timeout(Duration::from_secs(30), TlsConnector::from(s.tls.clone()).connect(name, tcp)).await??)
}

/// Hello; returns the admin's high-water mark for this sensor.
async fn hello(s: &SimSensor, tls: &mut Tls) -> Result<u64> {
    let h = Frame::Hello {
        sensor: s.name.clone(),
        // Events only: a version-1 sensor, which the admin serves without sample frames.
        protocol_version: MIN_PROTOCOL_VERSION,
        schema_version: SCHEMA_VERSION,
        software: "drosera-fleet".into(),
    };
    frame::write_frame(tls, &h).await?;
    match tokio::time::timeout(Duration::from_secs(60), frame::read_frame(tls, MAX_CONTROL_FRAME)).await?? {
        Some(Frame::HelloAck { high_water_seq, .. }) => Ok(high_water_seq),
        other => bail!("{}: expected hello ack, got {:?}", s.name, other.map(|f| f.name())),
    }
}

/// Sends every batch above `hw` with up to `window` in flight; returns the last acked seq.
async fn ship_on(s: &SimSensor, tls: Tls, hw: u64, window: usize, acked: &mut u64) -> Result<()> {
    let (mut rd, mut wr) = tokio::io::split(tls);
    let mut next = s.batches.iter().position(|b| b.last > hw).unwrap_or(s.batches.len());
    *acked = (*acked).max(hw);
    let mut inflight: VecDeque<u64> = VecDeque::new();
    loop {
        while inflight.len() < window && next < s.batches.len() {
            let b = &s.batches[next];
            let f = Frame::Batch {
                first_seq: b.first,
                last_seq: b.last,
                count: b.count,
                codec: codec::CODEC_ZSTD_POSTCARD,
                payload: b.payload.clone(),
            };
            frame::write_frame(&mut wr, &f).await?;
            inflight.push_back(b.last);
            next += 1;
        }
        if inflight.is_empty() {
            return Ok(());
        }
        let f = tokio::time::timeout(Duration::from_secs(120), frame::read_frame(&mut rd, MAX_CONTROL_FRAME)).await??;
        match f {
            Some(Frame::Ack { upto_seq }) => {
                *acked = (*acked).max(upto_seq);
                while inflight.front().is_some_and(|l| *l <= upto_seq) {
                    inflight.pop_front();
                }
            }
            Some(Frame::Pong) => {}
            Some(other) => bail!("{}: admin answered {:?}", s.name, other),
            None => bail!("{}: admin closed the connection", s.name),
        }
    }
}

/// A sensor that has said hello and waits for the start signal.
pub struct Connected {
    tls: Tls,
    hw: u64,
    admin: usize,
}

/// Connects to `admins[first]` (failing over to the next ones) and says hello.
pub async fn connect_hello(
    s: &SimSensor,
    admins: &[SocketAddr],
    first: usize,
    st: &mut ShipStats,
) -> Result<Connected> {
    let mut last_err = None;
    for attempt in 0..admins.len() * 20 {
        let admin = (first + attempt) % admins.len();
        st.sessions += 1;
        if attempt > 0 {
            st.failovers += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        match connect(s, admins[admin]).await {
            Ok(mut tls) => match hello(s, &mut tls).await {
                Ok(hw) => return Ok(Connected { tls, hw, admin }),
                Err(e) => last_err = Some(e),
            },
            Err(e) => last_err = Some(e),
        }
    }
    Err(last_err.unwrap_or_else(|| anyhow::anyhow!("no admin")))
}

/// Ships the whole backlog from an established session, failing over between `admins` (each
/// new session resumes from the admin's high-water mark) until everything is acknowledged.
pub async fn ship(s: &SimSensor, admins: &[SocketAddr], c: Connected, window: usize, st: &mut ShipStats) -> Result<()> {
    let mut c = Some(c);
    let mut next_admin = 0;
    let deadline = Instant::now() + Duration::from_secs(3600);
    loop {
        let conn = match c.take() {
            Some(c) => c,
            None => connect_hello(s, admins, next_admin, st).await?,
        };
        next_admin = conn.admin + 1;
        match ship_on(s, conn.tls, conn.hw, window, &mut st.acked).await {
            Ok(()) if st.acked >= s.events => return Ok(()),
            Ok(()) => bail!("{}: shipped everything but only {} acknowledged", s.name, st.acked),
            Err(e) if Instant::now() < deadline => {
                eprintln!("drosera-fleet: {}: session ended ({e:#}); failing over", s.name);
            }
            Err(e) => return Err(e),
        }
    }
}

/// Resident memory of a process, bytes (`VmRSS`).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 =
        s.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb * 1024)
}

/// CPU time (user + system) of a process so far, seconds.
pub fn cpu_secs(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// CPU time so far of every process named `postgres` (the database server of a benchmark run),
/// seconds.
pub fn postgres_cpu_secs() -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc") else { return 0.0 };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "postgres"))
        .filter_map(cpu_secs)
        .sum()
}
