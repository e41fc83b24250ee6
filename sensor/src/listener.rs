//! Listeners: bind every configured port, admit connections, run the protocol handler.
//!
//! Binding is separate from serving so that a sensor started as root can bind the low ports and
//! then drop privileges before it reads a single attacker byte. Serving follows mini-redis: one
//! accept loop per socket, one task per admitted connection, bounded by `Admission` — except
//! that we never *wait* for a slot: a flood must not queue inside the sensor, so a connection
//! past any cap is closed at once and counted as a rollup ([`EventSink::shed`]). Every admitted
//! connection ends in exactly one connection event (`Session::close`), whatever ended it, so
//! `accepted = connection events + rolled-up connections` holds exactly.

use crate::admission::Admission;
use crate::config::{Config, LimitsSection, ServiceSection};
use crate::governor::{GovernorHandle, Pressure};
use crate::protocols::{self, blackhole, ServiceKind};
use crate::session::{Session, SessionEnv, SessionLimits};
use drosera_uplink::event::{CloseReason, Protocol, ShedReason};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum ListenerError {
    #[error("cannot bind {protocol} on {addr}: {source}")]
    Bind { protocol: String, addr: SocketAddr, source: std::io::Error },
}

/// What every listener needs at run time.
#[derive(Clone)]
pub struct ListenerContext {
    /// What every session shares: the event sink, the sensor name, the login policy, the
    /// sample area and the persona.
    pub env: Arc<SessionEnv>,
    pub governor: GovernorHandle,
    /// Cancelled when the sensor shuts down.
    pub shutdown: CancellationToken,
}

/// Live counters the health sampler and tests read.
#[derive(Debug, Default)]
pub struct ListenerStats {
    pub active_connections: AtomicU32,
    /// Connections accepted by the kernel and seen by an accept loop.
    pub accepted: AtomicU64,
    /// Of those, connections refused by admission control (counted as rollups).
    pub shed: AtomicU64,
    /// accept() errors (for example out of file descriptors).
    pub accept_errors: AtomicU64,
    /// UDP datagrams read by the UDP services: each was shed (`datagrams_shed`), belonged to
    /// an open flow (`flow_datagrams`), or started one exchange that ends in one connection
    /// event (see `crate::udp`).
    pub datagrams: AtomicU64,
    /// Of those, datagrams shed by the per-source budgets or memory pressure (counted as rollups).
    pub datagrams_shed: AtomicU64,
    /// Of those, datagrams of an open flow (a TFTP upload's blocks).
    pub flow_datagrams: AtomicU64,
    /// UDP replies sent.
    pub replies: AtomicU64,
    /// UDP replies not sent because they were larger than their request (no amplification).
    pub replies_refused: AtomicU64,
}

/// What a bound socket serves.
#[derive(Clone)]
enum Role {
    /// An emulated service from a `[[service]]` section.
    Service { kind: ServiceKind, svc: Arc<ServiceSection> },
    /// A `[blackhole]` port: records the first bytes, never answers.
    Blackhole,
}

impl Role {
    fn protocol(&self) -> Protocol {
        match self {
            Role::Service { kind, .. } => kind.protocol(),
            Role::Blackhole => Protocol::Blackhole,
        }
    }
}

struct Bound {
    /// Non-blocking; registered with the runtime when serving starts.
    listener: std::net::TcpListener,
    role: Role,
    /// The configured bind address (maybe unspecified) and the bound port.
    addr: SocketAddr,
}

/// All bound sockets, before serving.
pub struct Listeners {
    bound: Vec<Bound>,
    udp: Vec<crate::udp::UdpBound>,
    udp_cfg: crate::config::UdpSection,
    limits: LimitsSection,
    blackhole_bytes: usize,
    stats: Arc<ListenerStats>,
}

/// Grace period for running sessions after shutdown is requested.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

impl Listeners {
    /// Binds every enabled service port and every blackhole port from `cfg`.
    /// Synchronous and runtime-free, so that `drosera-sensor run` can bind before any thread
    /// exists (see `app::bind_and_drop`).
    pub fn bind(cfg: &Config) -> Result<Listeners, ListenerError> {
        let mut bound = Vec::new();
        let mut udp = Vec::new();
        for svc in cfg.services.iter().filter(|s| s.enabled) {
            // UPnP's device description and SOAP control, over HTTP on TCP; bound first so that
            // SSDP replies name the port actually bound (port 0 in tests gets an ephemeral one).
            let mut svc = svc.clone();
            let mut description = None;
            if let Some(port) = svc.upnp_description_port() {
                let role = Role::Service { kind: svc.kind, svc: Arc::new(svc.clone()) };
                let b = bind_one(role, SocketAddr::new(svc.bind, port))?;
                svc.description_port = b.listener.local_addr().ok().map(|a| a.port());
                description = Some(b);
            }
            let shared = Arc::new(svc.clone());
            let role = Role::Service { kind: svc.kind, svc: shared.clone() };
            if let Some(mut b) = description {
                b.role = role.clone();
                bound.push(b);
            }
            let (tcp, on_udp) = svc.transports();
            for port in &svc.ports {
                let addr = SocketAddr::new(svc.bind, *port);
                if tcp {
                    bound.push(bind_one(role.clone(), addr)?);
                }
                if on_udp {
                    let socket = crate::udp::bind(addr).map_err(|source| ListenerError::Bind {
                        protocol: format!("{}/udp", svc.kind.protocol()),
                        addr,
                        source,
                    })?;
                    udp.push(crate::udp::UdpBound { socket, kind: svc.kind, svc: shared.clone() });
                }
            }
        }
        for port in &cfg.blackhole.ports {
            bound.push(bind_one(Role::Blackhole, SocketAddr::new(cfg.blackhole.bind, *port))?);
        }
        Ok(Listeners {
            bound,
            udp,
            udp_cfg: cfg.udp.clone(),
            limits: cfg.limits.clone(),
            blackhole_bytes: cfg.blackhole.record_bytes,
            stats: Arc::new(ListenerStats::default()),
        })
    }

    /// The actually bound addresses (port 0 in the config gets an ephemeral port).
    pub fn local_addrs(&self) -> Vec<(Protocol, SocketAddr)> {
        self.bound.iter().filter_map(|b| Some((b.role.protocol(), b.listener.local_addr().ok()?))).collect()
    }

    /// The bound UDP addresses (port 0 in the config gets an ephemeral port).
    pub fn local_udp_addrs(&self) -> Vec<(Protocol, SocketAddr)> {
        self.udp.iter().filter_map(|b| Some((b.kind.protocol(), b.socket.local_addr().ok()?))).collect()
    }

    pub fn stats(&self) -> Arc<ListenerStats> {
        self.stats.clone()
    }

    /// Serves until `ctx.shutdown` is cancelled, then stops accepting and gives running sessions
    /// a short grace period before closing them (each still records its connection event).
    pub async fn serve(self, ctx: ListenerContext) {
        let admission = Admission::new(&self.limits);
        let limits = Arc::new(self.limits.clone());
        let session_ids = Arc::new(AtomicU64::new((rand::random::<u32>() as u64) << 32));
        let mut loops = JoinSet::new();
        for b in self.bound {
            let shared = Shared {
                ctx: ctx.clone(),
                admission: admission.clone(),
                limits: limits.clone(),
                blackhole_bytes: self.blackhole_bytes,
                stats: self.stats.clone(),
                session_ids: session_ids.clone(),
            };
            loops.spawn(accept_loop(b, shared));
        }
        let udp_shared = crate::udp::UdpShared {
            env: ctx.env.clone(),
            governor: ctx.governor.clone(),
            shutdown: ctx.shutdown.clone(),
            stats: self.stats.clone(),
            budget: Arc::new(std::sync::Mutex::new(crate::udp::Budget::new(&self.udp_cfg))),
            session_ids: session_ids.clone(),
            cfg: Arc::new(self.udp_cfg.clone()),
            first_bytes: self.limits.first_bytes,
            max_payload: self.limits.max_payload,
        };
        for b in self.udp {
            loops.spawn(crate::udp::serve(b, udp_shared.clone()));
        }
        let housekeeping = {
            let admission = admission.clone();
            let shutdown = ctx.shutdown.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(10));
                loop {
                    tokio::select! {
                        _ = tick.tick() => admission.housekeeping(),
                        _ = shutdown.cancelled() => break,
                    }
                }
            })
        };
        while loops.join_next().await.is_some() {}
        housekeeping.abort();
    }
}

fn bind_one(role: Role, addr: SocketAddr) -> Result<Bound, ListenerError> {
    use socket2::{Domain, Socket, Type};
    let err = |source| ListenerError::Bind { protocol: role.protocol().to_string(), addr, source };
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None).map_err(err)?;
    socket.set_reuse_address(true).map_err(err)?;
    socket.set_nonblocking(true).map_err(err)?;
    socket.bind(&addr.into()).map_err(err)?;
    socket.listen(1024).map_err(err)?;
    Ok(Bound { listener: socket.into(), role, addr })
}

#[derive(Clone)]
struct Shared {
    ctx: ListenerContext,
    admission: Arc<Admission>,
    limits: Arc<LimitsSection>,
    blackhole_bytes: usize,
    stats: Arc<ListenerStats>,
    session_ids: Arc<AtomicU64>,
}

/// The sessions of one accept loop still running, so that shutdown can wait for them. Not a
/// `JoinSet`: that wakes the accept loop for every session that ends (one more task poll per
/// connection, and a wake-up of the other worker thread when the session ended there, issue
/// 18). Here a session's end touches one atomic, and only the last one during shutdown wakes
/// the waiter.
#[derive(Default)]
struct Running {
    count: AtomicUsize,
    none_left: Notify,
}

/// Held by a session task; counts it out of [`Running`] when the task ends or is dropped.
struct RunningGuard(Arc<Running>);

impl Running {
    fn enter(self: &Arc<Self>) -> RunningGuard {
        self.count.fetch_add(1, Ordering::Relaxed);
        RunningGuard(self.clone())
    }

    /// Returns once no session is running.
    async fn all_done(&self) {
        loop {
            let notified = self.none_left.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.count.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.none_left.notify_waiters();
        }
    }
}

async fn accept_loop(b: Bound, sh: Shared) {
    let shutdown = sh.ctx.shutdown.clone();
    let running = Arc::new(Running::default());
    let local_port = b.listener.local_addr().map(|a| a.port()).unwrap_or(0);
    let listener = match TcpListener::from_std(b.listener) {
        Ok(l) => l,
        Err(e) => {
            // Only possible outside a runtime with I/O enabled: a programming error, logged
            // loudly rather than serving the other ports silently short of one.
            tracing::error!(error = %e, port = local_port, protocol = %b.role.protocol(), "cannot serve a bound port");
            return;
        }
    };
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.cancelled() => break,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // EMFILE/ENFILE and friends: the kernel keeps the connection queued; back off a
                // little instead of spinning.
                sh.stats.accept_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, port = local_port, "accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        sh.stats.accepted.fetch_add(1, Ordering::Relaxed);
        let protocol = b.role.protocol();
        let permit = match sh.admission.admit(peer.ip(), sh.ctx.governor.pressure()) {
            Ok(p) => p,
            Err(reason) => {
                shed(&sh, stream, peer, local_port, protocol, reason);
                continue;
            }
        };
        // The listener's own address unless it listens on every address (then ask the kernel).
        let local = if b.addr.ip().is_unspecified() {
            stream.local_addr().unwrap_or_else(|_| SocketAddr::new(b.addr.ip(), local_port))
        } else {
            SocketAddr::new(b.addr.ip(), local_port)
        };
        // Sessions send each turn's replies in one write (Session::flush), so Nagle's algorithm
        // never holds a reply back; russh writes the SSH handshake in many small pieces itself.
        if matches!(b.role, Role::Service { kind: ServiceKind::Ssh, .. }) {
            let _ = stream.set_nodelay(true);
        }
        let id = sh.session_ids.fetch_add(1, Ordering::Relaxed);
        let mut limits = session_limits(&sh.limits);
        if sh.ctx.governor.pressure() != Pressure::Normal {
            limits.max_payload = 0;
        }
        if matches!(b.role, Role::Blackhole) {
            limits.first_bytes = sh.blackhole_bytes;
        }
        let session = Session::new(Box::new(stream), id, peer, local, protocol, limits, sh.ctx.env.clone());
        let role = b.role.clone();
        let stats = sh.stats.clone();
        let shutdown_rx = sh.ctx.shutdown.clone();
        stats.active_connections.fetch_add(1, Ordering::Relaxed);
        let guard = running.enter();
        tokio::spawn(async move {
            run_session(session, role, shutdown_rx).await;
            stats.active_connections.fetch_sub(1, Ordering::Relaxed);
            drop(permit);
            drop(guard);
        });
    }
    // Shutdown: give sessions a grace period; each records its own end (Shutdown).
    let _ = tokio::time::timeout(SHUTDOWN_GRACE + Duration::from_secs(1), running.all_done()).await;
}

fn shed(sh: &Shared, stream: TcpStream, peer: SocketAddr, port: u16, protocol: Protocol, reason: ShedReason) {
    sh.stats.shed.fetch_add(1, Ordering::Relaxed);
    sh.ctx.env.sink.shed(peer.ip(), port, protocol, reason);
    // Close at once, with a reset so the socket does not linger in TIME_WAIT on our side. A zero
    // linger never blocks (the deprecation is about non-zero timeouts).
    #[allow(deprecated)]
    let _ = stream.set_linger(Some(Duration::ZERO));
    drop(stream);
}

/// One session from accept to close. Not an `async fn`: those keep a moved-in argument twice
/// (the argument and the body's binding), and a `Session` is 368 bytes of every task.
#[allow(clippy::manual_async_fn)] // deliberately not `async fn`: see above
fn run_session(mut session: Session, role: Role, shutdown: CancellationToken) -> impl std::future::Future<Output = ()> {
    async move {
        let deadline = session.deadline();
        let reason = {
            let handler = async {
                match &role {
                    Role::Service { kind, svc } => protocols::handle(*kind, &mut session, svc).await,
                    // Boxed like every service's handler (see `protocols::handle`): the task stays small.
                    Role::Blackhole => Box::pin(blackhole::handle(&mut session)).await,
                }
            };
            tokio::pin!(handler);
            let grace = async {
                shutdown.cancelled().await;
                tokio::time::sleep(SHUTDOWN_GRACE).await;
            };
            tokio::select! {
                r = tokio::time::timeout_at(deadline, &mut handler) => match r {
                    Ok(Ok(())) => CloseReason::ServerClosed,
                    Ok(Err(reason)) => reason,
                    Err(_) => CloseReason::SessionTimeout,
                },
                _ = grace => CloseReason::Shutdown,
            }
        };
        session.close(reason).await;
    }
}

fn session_limits(l: &LimitsSection) -> SessionLimits {
    SessionLimits {
        idle_timeout: Duration::from_secs(l.idle_timeout_s),
        max_duration: Duration::from_secs(l.session_timeout_s),
        max_bytes_in: l.max_bytes_in,
        max_line: l.max_line,
        max_payload: l.max_payload,
        first_bytes: l.first_bytes,
        max_critical: l.max_critical_per_session,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollup::RollupTable;
    use crate::sink::EventSink;

    /// Shutdown waits for the sessions still running, however they end (a panicking handler
    /// included), and not longer: the accept loop counts them instead of joining them.
    #[tokio::test]
    async fn shutdown_waits_for_every_running_session() {
        let running = Arc::new(Running::default());
        tokio::time::timeout(Duration::from_secs(1), running.all_done()).await.expect("none running: at once");
        let first = running.enter();
        let second = running.enter();
        let panics = running.enter();
        let waiter = tokio::spawn({
            let running = running.clone();
            async move { running.all_done().await }
        });
        let crashed = tokio::spawn(async move {
            let _guard = panics;
            panic!("a handler bug");
        });
        assert!(crashed.await.is_err());
        drop(first);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "one session is still running");
        drop(second);
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("returns once the last session ends")
            .unwrap();
        assert_eq!(running.count.load(Ordering::Relaxed), 0);
    }

    /// Every open connection costs one task of this size (plus its buffers): 2,000 sessions in
    /// flight must fit the sensor's memory budget, so no handler may keep big buffers on its
    /// stack (HTTP's 8 KiB body buffer once made every session's task 9 KiB), and the task must
    /// not hold the session twice or the close's flush state for its whole life (784 bytes in a
    /// debug build since 2026-12-03, 1,952 before).
    #[test]
    fn a_session_task_stays_small() {
        let (sink, _rx) = EventSink::new(16, Arc::new(RollupTable::new(16)));
        let shutdown = CancellationToken::new();
        let services = ServiceKind::ALL.map(|kind| {
            let svc = ServiceSection::new(kind, "127.0.0.1".parse().unwrap(), vec![2]);
            Role::Service { kind, svc: Arc::new(svc) }
        });
        for role in services.into_iter().chain([Role::Blackhole]) {
            let (a, _b) = tokio::io::duplex(64);
            let protocol = role.protocol();
            let session = Session::new(
                Box::new(a),
                1,
                "192.0.2.1:1".parse().unwrap(),
                "127.0.0.1:2".parse().unwrap(),
                protocol,
                SessionLimits::default(),
                SessionEnv::basic(sink.clone(), Arc::from("t")),
            );
            let task = run_session(session, role, shutdown.clone());
            let size = std::mem::size_of_val(&task);
            assert!(size <= 1024, "{protocol} session task is {size} bytes");
        }
    }
}
