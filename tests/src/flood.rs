//! The load: many short connections from several loopback source addresses, each speaking a
//! service's first probe, bounded in count, concurrency and time.
//!
//! WHY a generator of its own (and not `drosera-flood`): the accounting check needs to know, per
//! connection, whether the *sensor application* took it, and the shedding check needs one source
//! address to make a large share of the load. Every connection is bound to a source address in
//! 127.0.0.0/8 (all of it is loopback on Linux) with `IP_BIND_ADDRESS_NO_PORT`, so the kernel
//! picks the source port at connect time per 4-tuple and 20,000-connection bursts from one
//! address do not run out of ports.
//!
//! Counting rules (they are what `accepted = stored + rolled up` is checked against):
//! * `connected`: the TCP handshake completed (the kernel queued the connection).
//! * `confirmed`: the server application showed it had the connection: it sent bytes, closed it
//!   (EOF) or reset it. A connection can only end like that after the sensor accepted it.
//! * `unconfirmed`: connected, but nothing came back before the read timeout (possible only if
//!   the sensor never accepted it — for example, the accept queue overflowed).
//!
//! UDP targets get one datagram each from a fresh socket bound to the job's source address
//! (`udp_sent` counts the datagrams the kernel took), then the client waits briefly for the reply
//! (`udp_answered`). A reply proves an exchange, but no reply proves nothing (the sensor sheds
//! over-budget datagrams silently, as it must), so the UDP account does not rest on replies: it
//! is `sent = exchanges + shed + dropped by the kernel`, with the kernel's own drop counters
//! (see `kernel.rs`).

use drosera_flood::probe;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// What the client sends first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    /// The server speaks first (FTP, Telnet, SSH, MySQL): read its banner.
    Banner,
    Http,
    /// A TDS PRELOGIN packet.
    Mssql,
    /// An SMB1 NEGOTIATE offering "NT LM 0.12" and SMB 2.
    Smb,
    /// Redis `PING` and `QUIT`.
    Redis,
    /// An ADB `CNXN`.
    Adb,
    /// The Docker CLI's `GET /_ping`.
    Docker,
    /// An RDP X.224 Connection Request with a `mstshash` cookie.
    Rdp,
    /// An anonymous MQTT CONNECT and DISCONNECT.
    Mqtt,
    /// A legacy MongoDB `isMaster` query.
    Mongodb,
    /// A DCE/RPC bind to the endpoint mapper.
    Epmap,
    /// A PPTP Start-Control-Connection-Request and Stop.
    Pptp,
    /// A PJL `@PJL INFO ID` job.
    Printer,
    /// A SIP `OPTIONS` over TCP.
    Sip,
    /// memcached `stats` then `quit`.
    Memcached,
    /// A UPnP device description fetch on the description (HTTP) port.
    UpnpDescription,
    /// UDP: a TFTP read request (answered "File not found").
    Tftp,
    /// UDP: a SIP `OPTIONS`.
    SipUdp,
    /// UDP: memcached `stats` in its 8-byte frame.
    MemcachedUdp,
    /// UDP: an SSDP `M-SEARCH` for every device.
    Ssdp,
}

impl Probe {
    /// Whether this probe is one UDP datagram (else a TCP connection).
    pub fn is_udp(self) -> bool {
        matches!(self, Probe::Tftp | Probe::SipUdp | Probe::MemcachedUdp | Probe::Ssdp)
    }
}

/// How long a UDP job waits for its reply (information only: the account does not need it).
pub const UDP_REPLY_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Clone, Debug)]
pub struct Target {
    pub service: &'static str,
    pub addr: SocketAddr,
    pub probe: Probe,
}

/// Counters shared by every connection task.
#[derive(Default, Debug)]
pub struct Counters {
    pub attempted: AtomicU64,
    pub connected: AtomicU64,
    pub confirmed: AtomicU64,
    pub unconfirmed: AtomicU64,
    pub refused: AtomicU64,
    pub connect_timeout: AtomicU64,
    pub other_error: AtomicU64,
    /// Connections reset by the server before `connect` returned (counted in `connected` too).
    pub reset_on_connect: AtomicU64,
    /// Ticks of the steady driver that found every in-flight slot busy (not attempted).
    pub client_skipped: AtomicU64,
    /// Connections made from the heavy source address.
    pub heavy_connected: AtomicU64,
    /// UDP jobs started (every counter above is about TCP connections only).
    pub udp_attempted: AtomicU64,
    /// Datagrams the kernel took from the client (`send_to` returned their whole length).
    pub udp_sent: AtomicU64,
    /// Datagrams not sent (no socket, or `send_to` failed): never reached the sensor.
    pub udp_send_errors: AtomicU64,
    /// Sent datagrams the sensor answered within [`UDP_REPLY_TIMEOUT`].
    pub udp_answered: AtomicU64,
}

/// A copy of [`Counters`] at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub attempted: u64,
    pub connected: u64,
    pub confirmed: u64,
    pub unconfirmed: u64,
    pub refused: u64,
    pub connect_timeout: u64,
    pub other_error: u64,
    pub reset_on_connect: u64,
    pub client_skipped: u64,
    pub heavy_connected: u64,
    pub udp_attempted: u64,
    pub udp_sent: u64,
    pub udp_send_errors: u64,
    pub udp_answered: u64,
}

impl Counters {
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            attempted: self.attempted.load(Relaxed),
            connected: self.connected.load(Relaxed),
            confirmed: self.confirmed.load(Relaxed),
            unconfirmed: self.unconfirmed.load(Relaxed),
            refused: self.refused.load(Relaxed),
            connect_timeout: self.connect_timeout.load(Relaxed),
            other_error: self.other_error.load(Relaxed),
            reset_on_connect: self.reset_on_connect.load(Relaxed),
            client_skipped: self.client_skipped.load(Relaxed),
            heavy_connected: self.heavy_connected.load(Relaxed),
            udp_attempted: self.udp_attempted.load(Relaxed),
            udp_sent: self.udp_sent.load(Relaxed),
            udp_send_errors: self.udp_send_errors.load(Relaxed),
            udp_answered: self.udp_answered.load(Relaxed),
        }
    }
}

/// Which source address connection number `i` uses: `heavy_pct` percent come from 127.0.0.2,
/// the rest from 127.0.0.3 .. 127.0.0.(2 + others).
#[derive(Clone, Copy, Debug)]
pub struct Sources {
    pub heavy_pct: u64,
    pub others: u8,
}

impl Sources {
    pub fn pick(&self, i: u64) -> (Ipv4Addr, bool) {
        if i % 100 < self.heavy_pct || self.others == 0 {
            (Ipv4Addr::new(127, 0, 0, 2), true)
        } else {
            let k = (i / 100 * 7 + i) % u64::from(self.others);
            (Ipv4Addr::new(127, 0, 0, 3 + k as u8), false)
        }
    }
}

/// Shared settings of a flood.
#[derive(Clone)]
pub struct Flood {
    pub targets: Arc<Vec<Target>>,
    pub sources: Sources,
    pub counters: Arc<Counters>,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    next: Arc<AtomicU64>,
}

impl Flood {
    pub fn new(targets: Vec<Target>, sources: Sources, connect_timeout: Duration, read_timeout: Duration) -> Self {
        Flood {
            targets: Arc::new(targets),
            sources,
            counters: Arc::new(Counters::default()),
            connect_timeout,
            read_timeout,
            next: Arc::new(AtomicU64::new(0)),
        }
    }

    fn next_job(&self) -> (Ipv4Addr, bool, Target) {
        let i = self.next.fetch_add(1, Relaxed);
        let (src, heavy) = self.sources.pick(i);
        let t = self.targets[(i % self.targets.len() as u64) as usize].clone();
        (src, heavy, t)
    }

    /// `rate` new connections per second until `deadline` or until `stop` is cancelled, at most
    /// `max_inflight` open at once (ticks that find no free slot are counted as skipped).
    pub async fn steady(&self, rate: u64, deadline: Instant, max_inflight: usize, stop: CancellationToken) {
        if rate == 0 || self.targets.is_empty() {
            return;
        }
        let slots = Arc::new(Semaphore::new(max_inflight));
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let start = Instant::now();
        let mut launched: u64 = 0;
        while Instant::now() < deadline && !stop.is_cancelled() {
            tick.tick().await;
            let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
            while launched < due {
                launched += 1;
                match slots.clone().try_acquire_owned() {
                    Ok(permit) => {
                        let job = self.next_job();
                        let me = self.clone();
                        tokio::spawn(async move {
                            me.one(job.0, job.1, &job.2).await;
                            drop(permit);
                        });
                    }
                    Err(_) => {
                        self.counters.client_skipped.fetch_add(1, Relaxed);
                    }
                }
            }
        }
        // Let the connections in flight finish, so the counters are final when this returns.
        let _ = slots.acquire_many(max_inflight as u32).await;
    }

    /// `count` connections, `concurrency` at a time, as fast as the sensor takes them.
    pub async fn burst(&self, count: u64, concurrency: usize) {
        if self.targets.is_empty() {
            return;
        }
        let slots = Arc::new(Semaphore::new(concurrency));
        for _ in 0..count {
            let Ok(permit) = slots.clone().acquire_owned().await else { break };
            let job = self.next_job();
            let me = self.clone();
            tokio::spawn(async move {
                me.one(job.0, job.1, &job.2).await;
                drop(permit);
            });
        }
        let _ = slots.acquire_many(concurrency as u32).await;
    }

    async fn one(&self, src: Ipv4Addr, heavy: bool, t: &Target) {
        if t.probe.is_udp() {
            return self.one_datagram(src, t).await;
        }
        let c = &self.counters;
        c.attempted.fetch_add(1, Relaxed);
        let sock = match socket_from(src) {
            Ok(s) => s,
            Err(_) => {
                c.other_error.fetch_add(1, Relaxed);
                return;
            }
        };
        let mut stream = match tokio::time::timeout(self.connect_timeout, sock.connect(t.addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                c.refused.fetch_add(1, Relaxed);
                return;
            }
            // Reset before connect() returned: the handshake completed and the server application
            // accepted and aborted it (the sensor sheds with a zero linger). The kernel alone never
            // resets a completed handshake here (tcp_abort_on_overflow is 0), so the server had it.
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                c.connected.fetch_add(1, Relaxed);
                c.confirmed.fetch_add(1, Relaxed);
                c.reset_on_connect.fetch_add(1, Relaxed);
                if heavy {
                    c.heavy_connected.fetch_add(1, Relaxed);
                }
                return;
            }
            Ok(Err(_)) => {
                c.other_error.fetch_add(1, Relaxed);
                return;
            }
            Err(_) => {
                c.connect_timeout.fetch_add(1, Relaxed);
                return;
            }
        };
        c.connected.fetch_add(1, Relaxed);
        if heavy {
            c.heavy_connected.fetch_add(1, Relaxed);
        }
        let probe = probe_bytes(t.probe);
        let confirmed = tokio::time::timeout(self.read_timeout, async {
            if !probe.is_empty() {
                if let Err(e) = stream.write_all(&probe).await {
                    // A reset or broken pipe means the application closed it: it had it.
                    return matches!(e.kind(), std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe);
                }
            }
            let mut buf = [0u8; 2048];
            match stream.read(&mut buf).await {
                Ok(_) => true, // bytes, or EOF: both come from the application
                Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
            }
        })
        .await;
        match confirmed {
            Ok(true) => c.confirmed.fetch_add(1, Relaxed),
            Ok(false) => c.other_error.fetch_add(1, Relaxed),
            Err(_) => c.unconfirmed.fetch_add(1, Relaxed),
        };
    }
}

impl Flood {
    /// One UDP job: a datagram from `src` (a fresh socket, so a fresh source port, as scanners
    /// do), then up to [`UDP_REPLY_TIMEOUT`] for the reply.
    async fn one_datagram(&self, src: Ipv4Addr, t: &Target) {
        let c = &self.counters;
        c.udp_attempted.fetch_add(1, Relaxed);
        let Ok(sock) = tokio::net::UdpSocket::bind(SocketAddr::from((src, 0))).await else {
            c.udp_send_errors.fetch_add(1, Relaxed);
            return;
        };
        let probe = probe_bytes(t.probe);
        match sock.send_to(&probe, t.addr).await {
            Ok(n) if n == probe.len() => c.udp_sent.fetch_add(1, Relaxed),
            _ => {
                c.udp_send_errors.fetch_add(1, Relaxed);
                return;
            }
        };
        let mut buf = [0u8; 2048];
        if let Ok(Ok((_, from))) = tokio::time::timeout(UDP_REPLY_TIMEOUT, sock.recv_from(&mut buf)).await {
            if from == t.addr {
                c.udp_answered.fetch_add(1, Relaxed);
            }
        }
    }
}

fn socket_from(src: Ipv4Addr) -> std::io::Result<TcpSocket> {
    let sock = TcpSocket::new_v4()?;
    nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::IpBindAddressNoPort, &true)?;
    sock.bind(SocketAddr::from((src, 0)))?;
    Ok(sock)
}

/// The first bytes a client of each service sends (built by `drosera_flood::probe`).
pub fn probe_bytes(p: Probe) -> Vec<u8> {
    match p {
        Probe::Banner => Vec::new(),
        Probe::Http => probe::http_get("/index.html", "torture", "drosera-torture"),
        Probe::Mssql => probe::mssql_prelogin(),
        Probe::Smb => probe::smb1_negotiate(&["NT LM 0.12", "SMB 2.002", "SMB 2.???"]),
        Probe::Redis => probe::redis_ping_quit(),
        Probe::Adb => probe::adb_connect(),
        Probe::Docker => probe::docker_ping("torture"),
        Probe::Rdp => probe::rdp_connection_request("torture"),
        Probe::Mqtt => probe::mqtt_connect_disconnect("torture"),
        Probe::Mongodb => probe::mongodb_is_master(),
        Probe::Epmap => probe::epmap_bind(),
        Probe::Pptp => probe::pptp_start_stop("torture"),
        Probe::Printer => probe::PJL_INFO_ID.to_vec(),
        Probe::Sip => probe::sip_options("torture"),
        Probe::Memcached => probe::MEMCACHED_STATS_QUIT.to_vec(),
        Probe::UpnpDescription => probe::upnp_description_get("torture"),
        Probe::Tftp => probe::tftp_rrq("x86.sh"),
        Probe::SipUdp => probe::sip_options_udp("torture"),
        Probe::MemcachedUdp => probe::memcached_udp_stats(1),
        Probe::Ssdp => probe::ssdp_msearch("drosera-torture"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heavy_source_gets_its_share_and_others_spread() {
        let s = Sources { heavy_pct: 40, others: 10 };
        let mut heavy = 0;
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..10_000 {
            let (ip, h) = s.pick(i);
            if h {
                heavy += 1;
                assert_eq!(ip, Ipv4Addr::new(127, 0, 0, 2));
            } else {
                seen.insert(ip);
            }
        }
        assert_eq!(heavy, 4000);
        assert_eq!(seen.len(), 10);
    }

    #[test]
    fn probes_have_consistent_lengths() {
        let m = probe_bytes(Probe::Mssql);
        assert_eq!(u16::from_be_bytes([m[2], m[3]]) as usize, m.len());
        let s = probe_bytes(Probe::Smb);
        assert_eq!(u16::from_be_bytes([s[2], s[3]]) as usize + 4, s.len());
        let a = probe_bytes(Probe::Adb);
        assert_eq!(u32::from_le_bytes([a[12], a[13], a[14], a[15]]) as usize + 24, a.len());
        assert!(probe_bytes(Probe::Redis).ends_with(b"QUIT\r\n"));
        assert!(probe_bytes(Probe::Docker).starts_with(b"GET /_ping HTTP/1.1\r\n"));
        let udp = [Probe::Tftp, Probe::SipUdp, Probe::MemcachedUdp, Probe::Ssdp];
        assert!(udp.iter().all(|p| p.is_udp() && !probe_bytes(*p).is_empty()));
        assert!(!Probe::Sip.is_udp() && !Probe::UpnpDescription.is_udp() && !Probe::Banner.is_udp());
    }
}
