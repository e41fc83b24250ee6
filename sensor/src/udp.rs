//! The one UDP framework every UDP service runs on (TFTP, SIP, memcached, UPnP/SSDP).
//!
//! WHY one framework: a UDP source address can be forged, so a UDP honeypot that answers
//! carelessly is a reflector, an amplifier for someone else's flood. The rules that prevent that
//! are enforced here, once, and not by each protocol:
//! * **No amplification**: a handler returns the reply to one datagram and this module sends it
//!   only when it is no larger than that datagram; a larger one is refused (not sent) and
//!   counted (`ListenerStats::replies_refused`). Replies go to the datagram's source only.
//! * **Per-source budgets**: datagrams and bytes per source address per window (`[udp]`), the
//!   UDP counterpart of TCP's per-source rate limit; past them, and under hard memory pressure,
//!   datagrams are shed and counted as rollups (`transport = udp`) exactly like shed TCP
//!   connections. The budget table is bounded (`udp.max_tracked_sources`).
//! * **Bounded flows**: a protocol that needs state across datagrams (a TFTP upload) opens a
//!   [`Flow`], keyed by the peer's address; at most `udp.max_flows` per port, each ended after
//!   `udp.flow_timeout_s` without a datagram. Datagrams of an open flow do not spend the
//!   source's budget (the flow's own caps bound them: one reply of at most its request each).
//! * **Exact accounting**: every datagram read is either shed (one rollup count), starts one
//!   exchange, or belongs to an open flow, and every exchange ends in exactly one
//!   `Detail::Connection` event with `Transport::Udp` (so `datagrams = exchanges + flow
//!   datagrams + shed`, see `ListenerStats`). A datagram's source is the "connection": one
//!   exchange per datagram, or per flow.
//!
//! A datagram is handled in the socket's own receive task, one at a time: the kernel's receive
//! buffer is the only queue, so a flood cannot make the sensor queue anything (what the kernel
//! drops when its buffer is full never reaches the sensor, like SYNs a full backlog drops).

use crate::capture::PayloadCapture;
use crate::config::{ServiceSection, UdpSection};
use crate::governor::{GovernorHandle, Pressure};
use crate::listener::ListenerStats;
use crate::protocols::ServiceKind;
use crate::session::SessionEnv;
use drosera_uplink::event::{CloseReason, Detail, Event, Protocol, ShedReason, Transport};
use drosera_uplink::now_ms;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// One bound UDP socket and the service it serves.
pub struct UdpBound {
    /// Non-blocking; registered with the runtime when serving starts.
    pub(crate) socket: std::net::UdpSocket,
    pub(crate) kind: ServiceKind,
    pub(crate) svc: Arc<ServiceSection>,
}

/// Binds one UDP port (before the root drop, like the TCP listeners).
pub(crate) fn bind(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// Per-source datagram and byte budgets per window, over a bounded table of sources.
#[derive(Debug)]
pub struct Budget {
    window: Duration,
    max_datagrams: u32,
    max_bytes: u64,
    max_tracked: usize,
    table: HashMap<IpAddr, Window>,
    next_purge: Option<Instant>,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    datagrams: u32,
    bytes: u64,
}

impl Budget {
    pub fn new(cfg: &UdpSection) -> Budget {
        Budget {
            window: Duration::from_secs(cfg.window_s.max(1)),
            max_datagrams: cfg.datagrams_per_source,
            max_bytes: cfg.bytes_per_source,
            max_tracked: cfg.max_tracked_sources.max(1),
            table: HashMap::new(),
            next_purge: None,
        }
    }

    /// Spends `len` bytes and one datagram of `ip`'s budget at `now`, or says why not.
    pub fn admit(&mut self, ip: IpAddr, len: usize, now: Instant) -> Result<(), ShedReason> {
        let len = len as u64;
        if !self.table.contains_key(&ip) && self.table.len() >= self.max_tracked {
            // Forget the sources whose window is over, at most once per window (a flood from
            // forged addresses must not make every datagram scan the whole table).
            if self.next_purge.is_none_or(|t| now >= t) {
                let window = self.window;
                self.table.retain(|_, w| now.duration_since(w.start) < window);
                self.next_purge = Some(now + window);
            }
            if self.table.len() >= self.max_tracked {
                return Err(ShedReason::RateLimited);
            }
        }
        let w = self.table.entry(ip).or_insert(Window { start: now, datagrams: 0, bytes: 0 });
        if now.duration_since(w.start) >= self.window {
            *w = Window { start: now, datagrams: 0, bytes: 0 };
        }
        if w.datagrams >= self.max_datagrams || w.bytes.saturating_add(len) > self.max_bytes {
            return Err(ShedReason::RateLimited);
        }
        w.datagrams += 1;
        w.bytes += len;
        Ok(())
    }

    /// Source addresses tracked now.
    pub fn sources(&self) -> usize {
        self.table.len()
    }
}

/// State a protocol keeps across the datagrams of one peer (a TFTP upload), owned by the
/// framework's bounded flow table.
pub(crate) trait Flow: Send {
    /// The next datagram from the flow's peer: the reply (sent only when no larger than `data`)
    /// and whether the flow is over.
    fn datagram(&mut self, x: &Exchange, data: &[u8]) -> (Option<Vec<u8>>, bool);
    /// The flow ends (`reason`: server_closed when it said it was over, idle_timeout, shutdown);
    /// it records what it still holds.
    fn end(self: Box<Self>, x: &Exchange, reason: CloseReason);
}

/// One UDP exchange (a datagram and its reply, or a flow): the UDP counterpart of a
/// TCP session, which builds the exchange's events.
pub(crate) struct Exchange {
    env: Arc<SessionEnv>,
    protocol: Protocol,
    pub peer: SocketAddr,
    pub local: SocketAddr,
    id: u64,
    started: Instant,
    started_ms: i64,
    bytes_in: u64,
    bytes_out: u64,
    first: Vec<u8>,
    max_payload: usize,
    flow_room: bool,
    flow: Option<Box<dyn Flow>>,
}

impl Exchange {
    /// Builds and emits an event with this exchange's common fields.
    pub fn emit(&self, detail: Detail) {
        self.env.sink.emit(self.event(detail));
    }

    fn event(&self, detail: Detail) -> Event {
        Event {
            seq: 0,
            time_ms: now_ms(),
            sensor: self.env.sensor.to_string(),
            transport: Transport::Udp,
            protocol: self.protocol,
            src_ip: self.peer.ip(),
            src_port: self.peer.port(),
            dst_port: self.local.port(),
            session_id: self.id,
            duration_ms: self.started.elapsed().as_millis().min(u32::MAX as u128) as u32,
            bytes_in: self.bytes_in,
            bytes_out: self.bytes_out,
            priority: detail.default_priority(),
            detail,
        }
    }

    /// A capture for a whole file the peer delivers (as a TCP session's `capture`).
    pub fn capture(&self, source: &'static str) -> PayloadCapture {
        crate::session::new_capture(&self.env, self.max_payload, source)
    }

    /// Records a finished capture: its `Payload` event and its `Sample` event.
    pub fn emit_capture(&self, capture: PayloadCapture, name: &str) {
        let done = capture.finish(name);
        self.emit(done.payload);
        if let Some(sample) = done.sample {
            self.emit(sample);
        }
    }

    /// The sample area's per-sample cap in bytes (`None`: this sensor keeps no samples).
    pub fn max_sample_bytes(&self) -> Option<u64> {
        self.env.samples.as_ref().map(|a| a.max_sample_bytes())
    }

    /// True when this port's flow table has room for one more flow.
    pub fn flow_room(&self) -> bool {
        self.flow_room
    }

    /// Keeps `flow` for the peer's next datagrams (only after [`Exchange::flow_room`] said yes).
    pub fn start_flow(&mut self, flow: Box<dyn Flow>) {
        if self.flow_room {
            self.flow = Some(flow);
        }
    }

    /// Ends the exchange: its one connection event.
    fn close(self, closed_by: CloseReason) {
        let first_bytes = self.first.clone();
        let mut ev = self.event(Detail::Connection { first_bytes, closed_by });
        ev.time_ms = self.started_ms;
        self.env.sink.emit(ev);
    }
}

/// What every UDP socket's task shares.
#[derive(Clone)]
pub(crate) struct UdpShared {
    pub env: Arc<SessionEnv>,
    pub governor: GovernorHandle,
    pub shutdown: CancellationToken,
    pub stats: Arc<ListenerStats>,
    pub budget: Arc<Mutex<Budget>>,
    pub session_ids: Arc<AtomicU64>,
    pub cfg: Arc<UdpSection>,
    /// Bytes of a datagram kept in its exchange's connection event.
    pub first_bytes: usize,
    /// Payload bytes kept per capture (0 under memory pressure, checked per exchange).
    pub max_payload: usize,
}

struct OpenFlow {
    x: Exchange,
    flow: Box<dyn Flow>,
    last: Instant,
}

/// Serves one UDP socket until shutdown: reads datagrams, applies the budgets, runs the
/// service's handler, sends replies no larger than their requests, and ends idle flows.
pub(crate) async fn serve(b: UdpBound, sh: UdpShared) {
    let protocol = b.kind.protocol();
    let local = match b.socket.local_addr() {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, %protocol, "cannot read a bound UDP socket's address");
            return;
        }
    };
    let socket = match tokio::net::UdpSocket::from_std(b.socket) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, port = local.port(), %protocol, "cannot serve a bound UDP port");
            return;
        }
    };
    // One datagram's buffer; the kernel discards what does not fit (a cut datagram).
    let mut buf = vec![0u8; sh.cfg.max_datagram_bytes.max(1)];
    let mut flows: HashMap<SocketAddr, OpenFlow> = HashMap::new();
    let flow_timeout = Duration::from_secs(sh.cfg.flow_timeout_s.max(1));
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        let (n, peer) = tokio::select! {
            r = socket.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(e) => {
                    // ICMP errors reported on the socket (a peer's port unreachable) and the like.
                    tracing::debug!(error = %e, port = local.port(), "UDP receive error");
                    continue;
                }
            },
            // Only while flows are open: an idle port needs no timer (issue 18: it woke the
            // sensor twice a second per UDP port). A flow that opens later ticks at once.
            _ = tick.tick(), if !flows.is_empty() => {
                let now = Instant::now();
                let idle: Vec<SocketAddr> =
                    flows.iter().filter(|(_, f)| now.duration_since(f.last) >= flow_timeout).map(|(a, _)| *a).collect();
                for a in idle {
                    if let Some(f) = flows.remove(&a) {
                        f.flow.end(&f.x, CloseReason::IdleTimeout);
                        f.x.close(CloseReason::IdleTimeout);
                    }
                }
                continue;
            }
            _ = sh.shutdown.cancelled() => break,
        };
        let data = &buf[..n];
        sh.stats.datagrams.fetch_add(1, Ordering::Relaxed);
        if let Some(f) = flows.get_mut(&peer) {
            sh.stats.flow_datagrams.fetch_add(1, Ordering::Relaxed);
            f.last = Instant::now();
            f.x.bytes_in += n as u64;
            let (reply, done) = f.flow.datagram(&f.x, data);
            if let Some(r) = reply {
                f.x.bytes_out += send_reply(&socket, &sh.stats, &r, n, peer, protocol);
            }
            if done {
                if let Some(f) = flows.remove(&peer) {
                    f.flow.end(&f.x, CloseReason::ServerClosed);
                    f.x.close(CloseReason::ServerClosed);
                }
            }
            continue;
        }
        let pressure = sh.governor.pressure();
        let admitted = if pressure == Pressure::Hard {
            Err(ShedReason::MemoryPressure)
        } else {
            sh.budget.lock().unwrap_or_else(|p| p.into_inner()).admit(peer.ip(), n, Instant::now())
        };
        if let Err(reason) = admitted {
            sh.env.sink.shed_datagram(peer.ip(), local.port(), protocol, reason);
            sh.stats.datagrams_shed.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let mut x = Exchange {
            env: sh.env.clone(),
            protocol,
            peer,
            local,
            id: sh.session_ids.fetch_add(1, Ordering::Relaxed),
            started: Instant::now(),
            started_ms: now_ms(),
            bytes_in: n as u64,
            bytes_out: 0,
            first: data[..n.min(sh.first_bytes)].to_vec(),
            max_payload: if pressure == Pressure::Normal { sh.max_payload } else { 0 },
            flow_room: flows.len() < sh.cfg.max_flows,
            flow: None,
        };
        let reply = crate::protocols::datagram(b.kind, &mut x, &b.svc, data);
        if let Some(r) = reply {
            x.bytes_out += send_reply(&socket, &sh.stats, &r, n, peer, protocol);
        }
        match x.flow.take() {
            Some(flow) => {
                flows.insert(peer, OpenFlow { x, flow, last: Instant::now() });
            }
            None => x.close(CloseReason::ServerClosed),
        }
    }
    for (_, f) in flows.drain() {
        f.flow.end(&f.x, CloseReason::Shutdown);
        f.x.close(CloseReason::Shutdown);
    }
}

/// Sends `reply` to `peer` when it is no larger than the `request_len` bytes that caused it
/// (the no-amplification rule); returns the bytes sent.
fn send_reply(
    socket: &tokio::net::UdpSocket,
    stats: &ListenerStats,
    reply: &[u8],
    request_len: usize,
    peer: SocketAddr,
    protocol: Protocol,
) -> u64 {
    if !reply_allowed(reply.len(), request_len) {
        stats.replies_refused.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(%protocol, %peer, reply = reply.len(), request = request_len, "UDP reply larger than its request, not sent");
        return 0;
    }
    match socket.try_send_to(reply, peer) {
        Ok(sent) => {
            stats.replies.fetch_add(1, Ordering::Relaxed);
            sent as u64
        }
        Err(e) => {
            tracing::debug!(%protocol, %peer, error = %e, "UDP reply not sent");
            0
        }
    }
}

/// The no-amplification rule: a reply may be at most as large as its request.
pub fn reply_allowed(reply_len: usize, request_len: usize) -> bool {
    reply_len <= request_len
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(datagrams: u32, bytes: u64, tracked: usize) -> UdpSection {
        UdpSection {
            datagrams_per_source: datagrams,
            bytes_per_source: bytes,
            max_tracked_sources: tracked,
            window_s: 10,
            ..UdpSection::default()
        }
    }

    #[test]
    fn a_source_gets_its_datagrams_and_bytes_per_window() {
        let mut b = Budget::new(&cfg(3, 1000, 16));
        let ip: IpAddr = "198.51.100.1".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(b.admit(ip, 10, t0), Ok(()));
        }
        assert_eq!(b.admit(ip, 10, t0), Err(ShedReason::RateLimited));
        // Another source has its own budget; the first one's refills after the window.
        assert_eq!(b.admit("198.51.100.2".parse().unwrap(), 10, t0), Ok(()));
        assert_eq!(b.admit(ip, 10, t0 + Duration::from_secs(10)), Ok(()));
        // Bytes too.
        let other: IpAddr = "198.51.100.3".parse().unwrap();
        assert_eq!(b.admit(other, 900, t0), Ok(()));
        assert_eq!(b.admit(other, 101, t0), Err(ShedReason::RateLimited));
        assert_eq!(b.admit(other, 100, t0), Ok(()));
    }

    #[test]
    fn the_source_table_is_bounded_and_forgets_finished_windows() {
        let mut b = Budget::new(&cfg(100, 100_000, 4));
        let t0 = Instant::now();
        for i in 0..4u8 {
            assert_eq!(b.admit(IpAddr::from([192, 0, 2, i]), 1, t0), Ok(()));
        }
        assert_eq!(b.admit(IpAddr::from([192, 0, 2, 99]), 1, t0), Err(ShedReason::RateLimited));
        assert_eq!(b.sources(), 4);
        // Known sources still pass; after the window, old entries make room.
        assert_eq!(b.admit(IpAddr::from([192, 0, 2, 1]), 1, t0), Ok(()));
        let later = t0 + Duration::from_secs(11);
        assert_eq!(b.admit(IpAddr::from([192, 0, 2, 99]), 1, later), Ok(()));
        assert!(b.sources() <= 4);
    }

    #[test]
    fn replies_larger_than_their_request_are_not_allowed() {
        assert!(reply_allowed(10, 10));
        assert!(reply_allowed(0, 1));
        assert!(!reply_allowed(11, 10));
    }
}
