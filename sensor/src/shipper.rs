//! The shipper: reads batches from the store and sends them to the admin over mutual TLS.
//!
//! WHY it is shaped like this:
//! * **Nothing is freed before the admin has it**: events leave the store only through
//!   [`Backlog::ack`], called with the sequence number the admin acknowledged after its commit.
//!   A crash anywhere means the unacknowledged batches are read and sent again; the admin stores
//!   each (sensor, seq) once, so the effect is exactly once.
//! * **Never gives up**: every failure (refused, unreachable, timeout, bad answer) ends the
//!   session, and the next one starts after a jittered exponential backoff (`backon`) capped at
//!   `uplink.backoff_max_s`; the backoff resets once a session makes progress.
//! * **Fails over** between the admins of a fleet (`uplink.admin` as a list): a failed session
//!   moves to the next admin at once; the backoff applies once all of them failed in a row. The
//!   admins share one database, so the high-water mark in the hello ack is the fleet's and a
//!   batch resent to another admin is stored once.
//! * **Throughput**: one long-lived connection with up to [`WINDOW`] batches in flight, so
//!   reading and compressing the next batch overlaps the admin's commit of the previous one.
//! * **A poisoned batch cannot block the queue**: a batch the admin rejects as invalid is written
//!   aside under `data_dir/rejected/` (bounded in files and bytes), reported in the log and as an
//!   event, and then acknowledged locally so shipping continues.
//!
//! * **Samples after events** (protocol version 2): when the admin sent `SampleTerms`, the
//!   shipper offers the sha256s of kept samples (at most the admin's `max_offer`), sends the
//!   ones the admin wants in chunks from the offset it names (a cut transfer resumes), and
//!   deletes a sample only when the admin answers `SampleStored` (or `Have`: the fleet already
//!   has it). Every turn of the loop fills the event window first and then sends at most one
//!   chunk, with at most [`SAMPLE_WINDOW`] chunks unanswered, so samples never hold events back.
//!   A sample the admin refuses for good (too large, store full), or rejects
//!   [`SAMPLE_MAX_ATTEMPTS`] times, is deleted and reported as a `sample_not_shipped` event.
//! * **Version fallback**: an admin of an older protocol version refuses the hello with the
//!   version it speaks; the shipper then says that version (1: events only; 2: no updates).
//! * **Signed updates** (protocol version 3, issue 22): an `UpdateOffer` is checked by the
//!   [`Updater`](crate::update::fetch::Updater) (signature, architecture, size); the shipper then
//!   asks for one chunk at a time (`UpdateWant`, resumable from the part file) between its event
//!   turns, and once the release is installed it cancels `handover`, which stops the sensor in
//!   order so the launcher starts the new slot. On trial, the ack covering the first health
//!   event cancels `health_shipped` (the proof of health the launcher waits for).
//!
//! Responses are read by a separate task and handed over a channel, so waiting for them never
//! cancels a half-read frame.

use crate::config::UplinkSection;
use crate::samples::SampleArea;
use crate::sink::EventSink;
use crate::store::{StoreError, StoreHandle};
use backon::BackoffBuilder;
use drosera_uplink::codec;
use drosera_uplink::event::to_hex;
use drosera_uplink::event::{Detail, Event, SCHEMA_VERSION};
use drosera_uplink::frame::{
    self, Frame, FrameError, SampleRef, SampleVerdict, MAX_CONTROL_FRAME, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION,
    VERSION_REFUSAL_MARK,
};
use drosera_uplink::release::Manifest;
use std::collections::{HashMap, VecDeque};
use std::io::{Read, Seek};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;

/// Batches sent before waiting for an acknowledgement.
pub const WINDOW: usize = 4;
/// How often an idle shipper looks for new events if no commit woke it ([`Backlog::committed`]
/// wakes it at once; this is only the fallback). An idle sensor wakes for it 0.2 times a second
/// where the old 200 ms poll woke it 5 times (issue 18).
const IDLE_FALLBACK: Duration = Duration::from_secs(5);
/// An idle connection sends a ping this often (the admin's idle timeout is longer).
const PING_EVERY: Duration = Duration::from_secs(30);
/// Longest wait for the admin's answer to a batch, a hello or a ping.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for the TLS handshake: longer than the admin's own handshake timeout (10 s by
/// default), so that a busy admin closes a slow handshake rather than the sensor giving up on
/// one the admin is about to finish.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(20);
/// After shutdown is requested, how long to wait for acknowledgements of batches in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);
/// Pause before trying the next admin of a fleet after a session with one failed.
const FAILOVER_DELAY: Duration = Duration::from_millis(200);
/// Caps on what `data_dir/rejected/` may hold.
pub const REJECTED_MAX_FILES: usize = 100;
pub const REJECTED_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// Sample chunks sent before waiting for the admin's answer.
pub const SAMPLE_WINDOW: usize = 4;
/// Pause before offering again when nothing is kept or the admin wanted nothing now.
const SAMPLE_IDLE: Duration = Duration::from_secs(2);
/// Rejections of one sample (hash mismatch, bad chunk) before it is dropped and reported.
pub const SAMPLE_MAX_ATTEMPTS: u32 = 5;
/// Samples whose rejections are remembered (the table is cleared past it).
const SAMPLE_ATTEMPTS_TRACKED: usize = 1024;
/// Largest chunk the shipper sends whatever the admin allows.
const SAMPLE_CHUNK_CAP: u32 = 4 * 1024 * 1024;

/// Where the shipper reads from: the store, or a test double.
pub trait Backlog: Clone + Send + Sync + 'static {
    /// What reading or freeing can fail with.
    type Error: std::error::Error + Send + Sync + 'static;
    /// Events with `seq > after_seq`, in order, at most `max_events` and about `max_bytes`.
    fn read_batch(&self, after_seq: u64, max_events: usize, max_bytes: usize) -> Result<Vec<Event>, Self::Error>;
    /// Durably frees everything up to `upto_seq`.
    fn ack(&self, upto_seq: u64) -> Result<(), Self::Error>;
    /// Highest sequence number acknowledged so far.
    fn acked_seq(&self) -> u64;
    /// Resolves when events may have been added since it last resolved (a signal sent while
    /// nobody waits must be kept). The default never resolves: the shipper then finds new events
    /// only at its idle fallback.
    fn committed(&self) -> impl std::future::Future<Output = ()> + Send {
        std::future::pending()
    }
}

impl Backlog for StoreHandle {
    type Error = StoreError;
    /// Claims what it reads: eviction never removes events the admin may have (issue 18).
    fn read_batch(&self, after_seq: u64, max_events: usize, max_bytes: usize) -> Result<Vec<Event>, StoreError> {
        if after_seq >= self.last_seq() {
            // Nothing committed past it: no transaction (the commit that adds one wakes us).
            return Ok(Vec::new());
        }
        StoreHandle::claim_batch(self, after_seq, max_events, max_bytes)
    }
    fn ack(&self, upto_seq: u64) -> Result<(), StoreError> {
        StoreHandle::ack(self, upto_seq)
    }
    fn acked_seq(&self) -> u64 {
        StoreHandle::acked_seq(self)
    }
    fn committed(&self) -> impl std::future::Future<Output = ()> + Send {
        StoreHandle::committed(self)
    }
}

/// What the shipper needs around it.
#[derive(Clone, Debug)]
pub struct ShipperContext {
    /// The sensor's data directory; rejected batches are kept under `data_dir/rejected/`.
    pub data_dir: PathBuf,
    /// Where rejected batches are reported as events.
    pub sink: EventSink,
    /// The sample area whose samples are shipped (none: events only).
    pub samples: Option<Arc<SampleArea>>,
    /// Takes signed releases the admin offers (none: offers are ignored).
    pub updates: Option<crate::update::fetch::Updater>,
    /// Cancelled once a release is installed: the sensor stops and the launcher starts it.
    pub handover: CancellationToken,
    /// On trial: cancelled once the admin acknowledged the first health event.
    pub health_shipped: Option<CancellationToken>,
}

/// Why the shipper cannot start at all (everything after the start is retried, never fatal).
#[derive(Debug, thiserror::Error)]
pub enum ShipperError {
    #[error("uplink TLS setup: {0}")]
    Tls(#[from] drosera_uplink::tls::TlsError),
    #[error("uplink.server_name / uplink.admin: {host:?} is not a valid server name ({message})")]
    ServerName { host: String, message: String },
}

/// Why one uplink session ended (the shipper then backs off and connects again).
#[derive(Debug, thiserror::Error)]
enum ShipError {
    #[error("cannot connect to {addr}: {source}")]
    Connect { addr: String, source: std::io::Error },
    #[error("TLS handshake with {addr} failed: {source}")]
    Tls { addr: String, source: std::io::Error },
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    #[error("admin refused this sensor: {0}")]
    Refused(String),
    #[error("connection: {0}")]
    Frame(#[from] FrameError),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("admin closed the connection")]
    Closed,
    #[error("store: {0}")]
    Store(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("cannot encode a batch: {0}")]
    Encode(#[from] codec::CodecError),
    #[error("shipper task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Starts the shipper on its own OS thread with a current-thread runtime, like
/// [`StoreWriter::spawn`](crate::store::StoreWriter::spawn): its TLS work and blocking store
/// calls stay off the listeners' workers, and its future need not be `Send`. It ships until
/// `shutdown` is cancelled.
pub fn spawn(
    cfg: UplinkSection,
    sensor: Arc<str>,
    store: StoreHandle,
    ctx: ShipperContext,
    shutdown: CancellationToken,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name("shipper".into()).spawn(move || {
        let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!(error = %e, "shipper cannot build its runtime");
                return;
            }
        };
        if let Err(e) = rt.block_on(run(cfg, sensor, store, ctx, shutdown)) {
            tracing::error!(error = %e, "shipper stopped");
        }
    })
}

/// Checks that the shipper can start with `cfg`: the CA, certificate and key load (the key
/// only with mode 0600 or stricter) and every admin has a valid TLS server name. `run` and
/// `check-config` call it, so a sensor never starts without being able to ship.
pub fn check(cfg: &UplinkSection) -> Result<(), ShipperError> {
    plan(cfg).map(drop)
}

/// The TLS client configuration and every admin (address, TLS name), in the config's order.
#[allow(clippy::type_complexity)]
fn plan(
    cfg: &UplinkSection,
) -> Result<(Arc<tokio_rustls::rustls::ClientConfig>, Vec<(String, ServerName<'static>)>), ShipperError> {
    let tls = drosera_uplink::tls::client_config(&cfg.ca_cert, &cfg.cert, &cfg.key)?;
    let mut admins = Vec::with_capacity(cfg.admin.0.len());
    for addr in &cfg.admin.0 {
        let host = if cfg.server_name.is_empty() {
            addr.rsplit_once(':').map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']')).unwrap_or("")
        } else {
            cfg.server_name.as_str()
        };
        let server_name = ServerName::try_from(host.to_string())
            .map_err(|e| ShipperError::ServerName { host: host.to_string(), message: e.to_string() })?;
        admins.push((addr.clone(), server_name));
    }
    Ok((tls, admins))
}

/// Ships from `backlog` until `shutdown` is cancelled; never gives up on the admin (jittered
/// backoff). Fails only when the uplink config cannot work at all.
pub async fn run<B: Backlog>(
    cfg: UplinkSection,
    sensor: Arc<str>,
    backlog: B,
    ctx: ShipperContext,
    shutdown: CancellationToken,
) -> Result<(), ShipperError> {
    let (tls, admins) = plan(&cfg)?;
    let shipper = Shipper {
        backoff_max: Duration::from_secs(cfg.backoff_max_s.max(1)),
        cfg,
        sensor,
        backlog,
        connector: TlsConnector::from(tls),
        admins,
        current: AtomicUsize::new(0),
        rejected_dir: ctx.data_dir.join("rejected"),
        sink: ctx.sink,
        samples: ctx.samples,
        updates: ctx.updates,
        handover: ctx.handover,
        health_shipped: ctx.health_shipped,
        version: AtomicU16::new(PROTOCOL_VERSION),
        attempts: std::sync::Mutex::new(HashMap::new()),
    };
    shipper.run(&shutdown).await;
    Ok(())
}

struct Shipper<B: Backlog> {
    cfg: UplinkSection,
    sensor: Arc<str>,
    backlog: B,
    connector: TlsConnector,
    /// Every admin (address, TLS name), in the config's order.
    admins: Vec<(String, ServerName<'static>)>,
    /// The admin the next session connects to (an index into `admins`).
    current: AtomicUsize,
    rejected_dir: PathBuf,
    sink: EventSink,
    backoff_max: Duration,
    samples: Option<Arc<SampleArea>>,
    updates: Option<crate::update::fetch::Updater>,
    handover: CancellationToken,
    health_shipped: Option<CancellationToken>,
    /// The protocol version said in hellos (1 after a version-1 admin refused version 2).
    version: AtomicU16,
    /// Rejections per sample so far (bounded by [`SAMPLE_ATTEMPTS_TRACKED`]).
    attempts: std::sync::Mutex<HashMap<[u8; 32], u32>>,
}

/// A batch sent on this connection and not answered yet.
struct InFlight {
    first: u64,
    last: u64,
    /// The encoded batch, kept to set it aside if the admin rejects it.
    payload: Vec<u8>,
}

/// What the admin's hello ack allows on this connection.
#[derive(Clone, Copy)]
struct Terms {
    /// Schema version the events are downgraded to.
    schema: u16,
    max_events: usize,
    max_bytes: usize,
}

/// What the admin's `SampleTerms` allow.
#[derive(Clone, Copy)]
struct SampleTerms {
    max_chunk: usize,
    max_offer: usize,
}

/// A sample being sent.
struct Sending {
    sha256: [u8; 32],
    size: u64,
    /// Bytes sent so far (the next chunk's offset).
    sent: u64,
    file: std::fs::File,
}

/// The sample side of one connection.
#[derive(Default)]
struct SampleShip {
    /// `None` until the admin sends `SampleTerms` (never, for a version-1 admin).
    terms: Option<SampleTerms>,
    /// The last offer, waiting for its answers: sha256 → size.
    offered: Option<HashMap<[u8; 32], u64>>,
    /// Not before this instant is the next offer made.
    next_offer: Option<Instant>,
    /// Wanted samples not started yet: (sha256, size, offset).
    queue: VecDeque<([u8; 32], u64, u64)>,
    current: Option<Sending>,
    /// Chunks sent and not answered yet.
    unacked: usize,
}

impl SampleShip {
    fn waiting(&self) -> bool {
        self.offered.is_some() || self.unacked > 0
    }
}

/// The state of one connection's conversation after the hello.
struct Conversation {
    terms: Terms,
    inflight: VecDeque<InFlight>,
    /// Highest seq freed in the store.
    acked: u64,
    /// Highest seq sent on this connection.
    next_after: u64,
    /// Set once shutdown is requested: the end of the wait for the last answers.
    draining: Option<Instant>,
    last_heard: Instant,
    ping_sent: Option<Instant>,
    samples: SampleShip,
    /// A release being downloaded: its manifest and the offset asked for (one chunk at a time).
    update: Option<(Manifest, u64)>,
    /// The offset of the `UpdateWant` in flight, if one is.
    update_asked: Option<u64>,
    /// On trial: the seq of the first health event sent (its ack is the proof of health).
    health_seq: Option<u64>,
}

impl Conversation {
    /// How long to wait for the admin before looking at the clock again.
    fn wait(&self) -> Duration {
        match self.draining {
            Some(deadline) => deadline.saturating_duration_since(Instant::now()),
            None if self.inflight.is_empty() && self.ping_sent.is_none() => IDLE_FALLBACK,
            None => Duration::from_secs(1),
        }
    }
}

impl<B: Backlog> Shipper<B> {
    fn backoff(&self) -> impl Iterator<Item = Duration> {
        backon::ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(500))
            .with_max_delay(self.backoff_max)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times()
            .build()
    }

    /// Session after session, with a backoff between failed ones, until shutdown.
    async fn run(&self, shutdown: &CancellationToken) {
        let mut backoff = self.backoff();
        let mut failures: u64 = 0;
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            let mut progress = false;
            let result = self.session(&mut progress, shutdown).await;
            if progress {
                backoff = self.backoff();
                failures = 0;
            }
            let Err(e) = result else { return };
            failures += 1;
            if let ShipError::Refused(reason) = &e {
                let said = self.version.load(Ordering::Relaxed);
                if reason.contains(VERSION_REFUSAL_MARK) && said > MIN_PROTOCOL_VERSION {
                    // Say the version the admin speaks (a version-2 admin: samples, no updates).
                    let speaks = frame::refusal_speaks(reason)
                        .filter(|v| (MIN_PROTOCOL_VERSION..said).contains(v))
                        .unwrap_or(MIN_PROTOCOL_VERSION);
                    self.version.store(speaks, Ordering::Relaxed);
                    tracing::warn!(%reason, speaks, "the admin speaks an older uplink protocol; falling back");
                    continue;
                }
            }
            // Fail over: the next session goes to the next admin of the list. Only once every
            // admin failed in a row does the shipper back off.
            let n = self.admins.len();
            let from = self.current.load(Ordering::Relaxed);
            self.current.store((from + 1) % n, Ordering::Relaxed);
            let delay = if n > 1 && failures % n as u64 != 0 {
                tracing::warn!(error = %e, from = %self.admins[from].0, to = %self.admins[(from + 1) % n].0, "uplink failing over");
                FAILOVER_DELAY
            } else {
                // Cap: the backoff never stops; the iterator is infinite, the fallback is the max.
                backoff.next().unwrap_or(self.backoff_max).min(self.backoff_max)
            };
            let retry_in_ms = delay.as_millis() as u64;
            match &e {
                ShipError::Refused(_) => tracing::error!(error = %e, retry_in_ms, "uplink refused"),
                _ if failures <= 3 => tracing::warn!(error = %e, retry_in_ms, "uplink session ended"),
                _ => tracing::debug!(error = %e, retry_in_ms, "uplink session ended"),
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    /// The admin sessions go to now.
    fn admin(&self) -> &(String, ServerName<'static>) {
        &self.admins[self.current.load(Ordering::Relaxed) % self.admins.len()]
    }

    async fn connect(&self) -> Result<tokio_rustls::client::TlsStream<TcpStream>, ShipError> {
        let (addr, server_name) = self.admin().clone();
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&addr))
            .await
            .map_err(|_| ShipError::Timeout("TCP connect"))?
            .map_err(|source| ShipError::Connect { addr: addr.clone(), source })?;
        let _ = tcp.set_nodelay(true);
        tokio::time::timeout(HANDSHAKE_TIMEOUT, self.connector.connect(server_name, tcp))
            .await
            .map_err(|_| ShipError::Timeout("TLS handshake"))?
            .map_err(|source| ShipError::Tls { addr, source })
    }

    /// Runs a blocking backlog call off the async workers.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(B) -> Result<T, B::Error> + Send + 'static,
    ) -> Result<T, ShipError> {
        let b = self.backlog.clone();
        tokio::task::spawn_blocking(move || f(b)).await?.map_err(|e| ShipError::Store(Box::new(e)))
    }

    /// One connection: hello, then batches until an error or shutdown (`Ok` only on shutdown).
    async fn session(&self, progress: &mut bool, shutdown: &CancellationToken) -> Result<(), ShipError> {
        let tls = self.connect().await?;
        let (mut rd, mut wr) = tokio::io::split(tls);
        let (tx, mut rx) = mpsc::channel::<Result<Frame, FrameError>>(2 * WINDOW + 2);
        // Update chunks are the only large frames an admin sends.
        let max_frame =
            self.updates.as_ref().map(|u| u.chunk_bytes as usize + 4096).unwrap_or(0).max(MAX_CONTROL_FRAME);
        let reader = tokio::spawn(async move {
            loop {
                let r = frame::read_frame(&mut rd, max_frame).await;
                let stop = !matches!(r, Ok(Some(_)));
                let item = match r {
                    Ok(Some(f)) => Ok(f),
                    Ok(None) => Err(FrameError::Truncated),
                    Err(e) => Err(e),
                };
                if tx.send(item).await.is_err() || stop {
                    break;
                }
            }
        });
        let result = self.converse(&mut wr, &mut rx, progress, shutdown).await;
        reader.abort();
        let _ = wr.shutdown().await;
        result
    }

    /// Hello, then keep the window full and handle answers until shutdown has drained it.
    async fn converse<W: tokio::io::AsyncWrite + Unpin>(
        &self,
        wr: &mut W,
        rx: &mut mpsc::Receiver<Result<Frame, FrameError>>,
        progress: &mut bool,
        shutdown: &CancellationToken,
    ) -> Result<(), ShipError> {
        let terms = self.hello(wr, rx).await?;
        let acked = self.backlog.acked_seq();
        let mut c = Conversation {
            terms,
            inflight: VecDeque::new(),
            acked,
            next_after: acked,
            draining: None,
            last_heard: Instant::now(),
            ping_sent: None,
            samples: SampleShip::default(),
            update: None,
            update_asked: None,
            health_seq: None,
        };
        loop {
            let mut busy = false;
            if c.draining.is_none() {
                self.fill_window(wr, &mut c).await?;
                busy = self.sample_turn(wr, &mut c).await?;
                self.update_turn(wr, &mut c).await?;
            }
            if c.draining.is_some() && c.inflight.is_empty() {
                return Ok(());
            }
            let wait = if busy { Duration::ZERO } else { c.wait() };
            tokio::select! {
                msg = rx.recv() => {
                    c.last_heard = Instant::now();
                    self.on_frame(msg, &mut c, progress).await?;
                }
                _ = tokio::time::sleep(wait) => {
                    if c.draining.is_some_and(|deadline| Instant::now() >= deadline) {
                        return Ok(());
                    }
                    self.on_quiet(wr, &mut c).await?;
                }
                _ = shutdown.cancelled(), if c.draining.is_none() => {
                    c.draining = Some(Instant::now() + DRAIN_TIMEOUT);
                }
                // New events: the next turn fills the window (a commit while the window is full
                // stays signalled until then).
                _ = self.backlog.committed(), if c.draining.is_none() && c.inflight.len() < WINDOW => {}
            }
        }
    }

    /// Sends the hello and reads the admin's terms (or its refusal).
    async fn hello<W: tokio::io::AsyncWrite + Unpin>(
        &self,
        wr: &mut W,
        rx: &mut mpsc::Receiver<Result<Frame, FrameError>>,
    ) -> Result<Terms, ShipError> {
        let hello = Frame::Hello {
            sensor: self.sensor.to_string(),
            protocol_version: self.version.load(Ordering::Relaxed),
            schema_version: SCHEMA_VERSION,
            software: crate::update::software(),
        };
        frame::write_frame(wr, &hello).await?;
        let answer =
            tokio::time::timeout(RESPONSE_TIMEOUT, rx.recv()).await.map_err(|_| ShipError::Timeout("hello ack"))?;
        match answer {
            Some(Ok(Frame::HelloAck { schema_version, high_water_seq, max_batch_events, max_batch_bytes })) => {
                tracing::info!(admin = %self.admin().0, schema_version, high_water_seq, "uplink connected");
                Ok(Terms {
                    schema: schema_version.min(SCHEMA_VERSION),
                    max_events: self.cfg.batch_max_events.min(max_batch_events as usize).max(1),
                    // read_batch sizes are approximate: stay well inside the admin's cap.
                    max_bytes: self.cfg.batch_max_bytes.min(max_batch_bytes as usize / 2).max(1024),
                })
            }
            other => Err(unexpected(other, "hello ack")),
        }
    }

    /// Reads, encodes and sends batches until [`WINDOW`] are in flight or nothing is pending.
    async fn fill_window<W: tokio::io::AsyncWrite + Unpin>(
        &self,
        wr: &mut W,
        c: &mut Conversation,
    ) -> Result<(), ShipError> {
        while c.inflight.len() < WINDOW {
            let (after, Terms { schema, max_events, max_bytes }) = (c.next_after, c.terms);
            let events = self.blocking(move |b| b.read_batch(after, max_events, max_bytes)).await?;
            let Some(last) = events.last().map(|e| e.seq) else { break };
            if self.health_shipped.is_some() && c.health_seq.is_none() {
                c.health_seq = events.iter().find(|e| matches!(e.detail, Detail::Health(_))).map(|e| e.seq);
            }
            let first = events.first().map(|e| e.seq).unwrap_or(last);
            let count = events.len() as u32;
            let payload = tokio::task::spawn_blocking(move || {
                let mut events = events;
                for ev in &mut events {
                    ev.downgrade_to(schema);
                }
                codec::encode(&events, codec::DEFAULT_LEVEL)
            })
            .await??;
            let f =
                Frame::Batch { first_seq: first, last_seq: last, count, codec: codec::CODEC_ZSTD_POSTCARD, payload };
            frame::write_frame(wr, &f).await?;
            if let Frame::Batch { payload, .. } = f {
                c.inflight.push_back(InFlight { first, last, payload });
            }
            c.next_after = last;
        }
        Ok(())
    }

    /// Handles one answer from the admin: frees what it acknowledged, sets aside what it
    /// rejected; anything unexpected ends the session.
    async fn on_frame(
        &self,
        msg: Option<Result<Frame, FrameError>>,
        c: &mut Conversation,
        progress: &mut bool,
    ) -> Result<(), ShipError> {
        match msg {
            Some(Ok(Frame::Ack { upto_seq })) => {
                // Never free more than was sent on this connection.
                let upto = upto_seq.min(c.next_after);
                while c.inflight.front().is_some_and(|b| b.last <= upto) {
                    c.inflight.pop_front();
                }
                if upto > c.acked {
                    self.blocking(move |b| b.ack(upto)).await?;
                    c.acked = upto;
                    *progress = true;
                }
                if let (Some(token), Some(seq)) = (&self.health_shipped, c.health_seq) {
                    if upto >= seq && !token.is_cancelled() {
                        token.cancel();
                    }
                }
                Ok(())
            }
            Some(Ok(Frame::Rejected { first_seq, last_seq, reason })) => {
                let Some(batch) = c.inflight.pop_front() else {
                    return Err(ShipError::Protocol("rejection without a batch in flight".into()));
                };
                if (batch.first, batch.last) != (first_seq, last_seq) {
                    return Err(ShipError::Protocol(format!(
                        "rejection for {first_seq}..={last_seq} but the oldest batch is {}..={}",
                        batch.first, batch.last
                    )));
                }
                self.set_aside(&batch, &reason);
                let last = batch.last;
                self.blocking(move |b| b.ack(last)).await?;
                c.acked = c.acked.max(last);
                *progress = true;
                Ok(())
            }
            Some(Ok(Frame::Pong)) => {
                c.ping_sent = None;
                Ok(())
            }
            Some(Ok(Frame::SampleTerms { max_chunk_bytes, max_offer, .. })) => {
                c.samples.terms = Some(SampleTerms {
                    max_chunk: max_chunk_bytes.clamp(1024, SAMPLE_CHUNK_CAP) as usize,
                    max_offer: (max_offer as usize).clamp(1, 1024),
                });
                Ok(())
            }
            Some(Ok(Frame::SampleAnswers { answers })) => self.on_answers(answers, c, progress),
            Some(Ok(Frame::SampleAck { sha256, .. })) => {
                if c.samples.current.as_ref().is_some_and(|s| s.sha256 == sha256) {
                    c.samples.unacked = c.samples.unacked.saturating_sub(1);
                }
                Ok(())
            }
            Some(Ok(Frame::SampleStored { sha256 })) => {
                if let Some(area) = &self.samples {
                    area.remove_shipped(&sha256);
                }
                self.forget_attempts(&sha256);
                if c.samples.current.as_ref().is_some_and(|s| s.sha256 == sha256) {
                    c.samples.current = None;
                    c.samples.unacked = 0;
                }
                tracing::info!(sha256 = %to_hex(&sha256), "sample stored at the admin; local copy deleted");
                *progress = true;
                Ok(())
            }
            Some(Ok(Frame::SampleRejected { sha256, reason, retry })) => {
                if c.samples.current.as_ref().is_none_or(|s| s.sha256 != sha256) {
                    // A later chunk of a transfer the admin already threw away.
                    tracing::debug!(sha256 = %to_hex(&sha256), %reason, "stale sample rejection");
                    return Ok(());
                }
                c.samples.current = None;
                c.samples.unacked = 0;
                let attempts = self.count_attempt(&sha256);
                tracing::warn!(sha256 = %to_hex(&sha256), %reason, retry, attempts, "the admin rejected a sample transfer");
                if !retry || attempts >= SAMPLE_MAX_ATTEMPTS {
                    self.drop_sample(&sha256, &format!("rejected by the admin after {attempts} attempts: {reason}"));
                }
                Ok(())
            }
            Some(Ok(Frame::UpdateOffer { manifest })) => {
                let Some(u) = self.updates.clone() else {
                    tracing::info!(version = %manifest.version, "the admin offers a release; updates are off here");
                    return Ok(());
                };
                if c.update.is_some() {
                    return Ok(());
                }
                let m = manifest.clone();
                let decision = tokio::task::spawn_blocking(move || u.on_offer(&m)).await?;
                if let crate::update::fetch::Decision::Fetch { offset } = decision {
                    c.update = Some((manifest, offset));
                }
                Ok(())
            }
            Some(Ok(Frame::ConfigOffer { config })) => {
                let Some(u) = self.updates.clone() else {
                    tracing::info!(serial = config.serial, "the admin pushes a config; updates are off here");
                    return Ok(());
                };
                if tokio::task::spawn_blocking(move || u.on_config(&config)).await? {
                    *progress = true;
                    self.handover.cancel();
                }
                Ok(())
            }
            Some(Ok(Frame::UpdateChunk { version, offset, data })) => {
                c.update_asked = None;
                let (Some(u), Some((m, want))) = (self.updates.clone(), c.update.take()) else {
                    return Err(ShipError::Protocol("an update chunk nobody asked for".into()));
                };
                if version != m.version || offset != want {
                    return Err(ShipError::Protocol(format!(
                        "update chunk {version}@{offset}, asked for {}@{want}",
                        m.version
                    )));
                }
                let mm = m.clone();
                let progress_ = tokio::task::spawn_blocking(move || u.on_chunk(&mm, offset, &data)).await?;
                match progress_ {
                    crate::update::fetch::Progress::Next(next) => c.update = Some((m, next)),
                    crate::update::fetch::Progress::Installed => {
                        *progress = true;
                        self.handover.cancel();
                    }
                    crate::update::fetch::Progress::Refused => {}
                }
                Ok(())
            }
            other => Err(unexpected(other, "ack, rejection or pong")),
        }
    }

    /// Nothing heard for a while: give up on an admin that stopped answering, or ping an idle
    /// connection so neither side's idle timeout closes it.
    async fn on_quiet<W: tokio::io::AsyncWrite + Unpin>(
        &self,
        wr: &mut W,
        c: &mut Conversation,
    ) -> Result<(), ShipError> {
        let waiting =
            !c.inflight.is_empty() || c.ping_sent.is_some() || c.samples.waiting() || c.update_asked.is_some();
        if waiting && c.last_heard.elapsed() > RESPONSE_TIMEOUT {
            return Err(ShipError::Timeout("the admin's answer"));
        }
        if !waiting && c.last_heard.elapsed() > PING_EVERY {
            frame::write_frame(wr, &Frame::Ping).await?;
            c.ping_sent = Some(Instant::now());
            c.last_heard = Instant::now();
        }
        Ok(())
    }

    /// One turn of the sample side: start the next wanted sample, send one chunk, or offer kept
    /// samples. True when it sent a frame (the loop then comes back at once).
    async fn sample_turn<W: tokio::io::AsyncWrite + Unpin>(
        &self,
        wr: &mut W,
        c: &mut Conversation,
    ) -> Result<bool, ShipError> {
        let (Some(area), Some(terms)) = (&self.samples, c.samples.terms) else { return Ok(false) };
        let s = &mut c.samples;
        while s.current.is_none() {
            let Some((sha256, size, offset)) = s.queue.pop_front() else { break };
            match open_at(area, &sha256, offset) {
                Ok(file) => s.current = Some(Sending { sha256, size, sent: offset, file }),
                Err(e) => tracing::warn!(sha256 = %to_hex(&sha256), error = %e, "cannot open a kept sample; skipped"),
            }
        }
        let Some(cur) = s.current.as_mut() else {
            if s.offered.is_some() || s.next_offer.is_some_and(|t| Instant::now() < t) {
                return Ok(false);
            }
            let kept = area.kept(terms.max_offer);
            if kept.is_empty() {
                s.next_offer = Some(Instant::now() + SAMPLE_IDLE);
                return Ok(false);
            }
            s.offered = Some(kept.iter().map(|k| (k.sha256, k.size)).collect());
            let samples = kept.iter().map(|k| SampleRef { sha256: k.sha256, size: k.size }).collect();
            frame::write_frame(wr, &Frame::SampleOffer { samples }).await?;
            return Ok(true);
        };
        if s.unacked >= SAMPLE_WINDOW || cur.sent >= cur.size {
            return Ok(false);
        }
        let n = (cur.size - cur.sent).min(terms.max_chunk as u64) as usize;
        let mut data = vec![0u8; n];
        if let Err(e) = cur.file.read_exact(&mut data) {
            tracing::warn!(sha256 = %to_hex(&cur.sha256), error = %e, "cannot read a kept sample; skipped for now");
            s.current = None;
            s.unacked = 0;
            return Ok(false);
        }
        let f = Frame::SampleChunk { sha256: cur.sha256, offset: cur.sent, size: cur.size, data };
        frame::write_frame(wr, &f).await?;
        cur.sent += n as u64;
        s.unacked += 1;
        Ok(true)
    }

    /// Asks for the next chunk of a release being downloaded (one outstanding at a time: the
    /// offset moves on only when the chunk arrived, so `c.update` holds the next offset only
    /// while no request is in flight).
    async fn update_turn<W: tokio::io::AsyncWrite + Unpin>(
        &self,
        wr: &mut W,
        c: &mut Conversation,
    ) -> Result<(), ShipError> {
        let (Some(u), Some((m, offset))) = (&self.updates, c.update.as_ref()) else { return Ok(()) };
        if c.update_asked == Some(*offset) {
            return Ok(());
        }
        let f = Frame::UpdateWant { version: m.version.clone(), offset: *offset, max_bytes: u.chunk_bytes };
        frame::write_frame(wr, &f).await?;
        c.update_asked = Some(*offset);
        Ok(())
    }

    /// The admin's answers to our offer.
    fn on_answers(
        &self,
        answers: Vec<frame::SampleAnswer>,
        c: &mut Conversation,
        progress: &mut bool,
    ) -> Result<(), ShipError> {
        let Some(offered) = c.samples.offered.take() else {
            return Err(ShipError::Protocol("sample answers without an offer".into()));
        };
        let mut later = false;
        for a in answers {
            let Some(&size) = offered.get(&a.sha256) else {
                return Err(ShipError::Protocol("an answer for a sample that was not offered".into()));
            };
            match a.verdict {
                SampleVerdict::Want { offset } if offset < size => c.samples.queue.push_back((a.sha256, size, offset)),
                SampleVerdict::Want { offset } => {
                    return Err(ShipError::Protocol(format!("admin wants offset {offset} of a {size}-byte sample")));
                }
                SampleVerdict::Have => {
                    if let Some(area) = &self.samples {
                        area.remove_shipped(&a.sha256);
                    }
                    self.forget_attempts(&a.sha256);
                    *progress = true;
                }
                SampleVerdict::Refuse { reason, retry: true } => {
                    tracing::debug!(sha256 = %to_hex(&a.sha256), %reason, "the admin wants this sample later");
                    later = true;
                }
                SampleVerdict::Refuse { reason, retry: false } => {
                    self.drop_sample(&a.sha256, &format!("refused by the admin: {reason}"));
                }
            }
        }
        if later && c.samples.queue.is_empty() {
            c.samples.next_offer = Some(Instant::now() + SAMPLE_IDLE);
        } else {
            c.samples.next_offer = None;
        }
        Ok(())
    }

    fn count_attempt(&self, sha256: &[u8; 32]) -> u32 {
        let mut m = self.attempts.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() >= SAMPLE_ATTEMPTS_TRACKED && !m.contains_key(sha256) {
            m.clear();
        }
        let n = m.entry(*sha256).or_insert(0);
        *n += 1;
        *n
    }

    fn forget_attempts(&self, sha256: &[u8; 32]) {
        self.attempts.lock().unwrap_or_else(|p| p.into_inner()).remove(sha256);
    }

    /// Deletes a sample the admin will not take and reports it (never silent).
    fn drop_sample(&self, sha256: &[u8; 32], reason: &str) {
        let Some(area) = &self.samples else { return };
        let size = area.kept(usize::MAX).iter().find(|k| k.sha256 == *sha256).map(|k| k.size).unwrap_or(0);
        area.remove_shipped(sha256);
        self.forget_attempts(sha256);
        tracing::error!(sha256 = %to_hex(sha256), size, %reason, "sample not shipped; deleted and reported");
        self.sink.emit(Event {
            sensor: self.sensor.to_string(),
            bytes_in: size,
            ..Event::internal(Detail::Extension {
                kind: "sample_not_shipped".into(),
                // The kind again as a field: admins store an extension's fields, not its kind.
                fields: vec![
                    ("kind".into(), "sample_not_shipped".into()),
                    ("sha256".into(), to_hex(sha256)),
                    ("size".into(), size.to_string()),
                    ("reason".into(), reason.to_string()),
                ],
            })
        });
    }

    /// Keeps a rejected batch under `rejected/` (if there is room) and reports it.
    fn set_aside(&self, batch: &InFlight, reason: &str) {
        let (first, last) = (batch.first, batch.last);
        let kept = match self.write_rejected(batch, reason) {
            Ok(Some(path)) => path.display().to_string(),
            Ok(None) => String::new(),
            Err(e) => {
                tracing::error!(error = %e, dir = %self.rejected_dir.display(), "cannot keep a rejected batch");
                String::new()
            }
        };
        tracing::error!(first_seq = first, last_seq = last, %reason, kept_at = %kept,
            "admin rejected a batch as invalid; kept aside and skipped");
        self.sink.emit(Event {
            sensor: self.sensor.to_string(),
            bytes_in: batch.payload.len() as u64,
            ..Event::internal(Detail::Extension {
                kind: "uplink_batch_rejected".into(),
                fields: vec![
                    ("first_seq".into(), first.to_string()),
                    ("last_seq".into(), last.to_string()),
                    ("reason".into(), reason.to_string()),
                    ("kept_at".into(), kept),
                ],
            })
        });
    }

    fn write_rejected(&self, batch: &InFlight, reason: &str) -> std::io::Result<Option<PathBuf>> {
        std::fs::create_dir_all(&self.rejected_dir)?;
        let (mut files, mut bytes) = (0usize, 0u64);
        for entry in std::fs::read_dir(&self.rejected_dir)?.flatten() {
            files += 1;
            bytes += entry.metadata().map(|m| m.len()).unwrap_or(0);
        }
        if files + 2 > REJECTED_MAX_FILES || bytes + batch.payload.len() as u64 > REJECTED_MAX_BYTES {
            tracing::error!(files, bytes, "rejected/ is full; the rejected batch is reported but not kept");
            return Ok(None);
        }
        let path = self.rejected_dir.join(format!("batch-{}-{}.postcard.zst", batch.first, batch.last));
        std::fs::write(&path, &batch.payload)?;
        std::fs::write(path.with_extension("reason.txt"), reason)?;
        Ok(Some(path))
    }
}

/// Opens a kept sample read-only at `offset`.
fn open_at(area: &SampleArea, sha256: &[u8; 32], offset: u64) -> std::io::Result<std::fs::File> {
    let path = area.path_of(sha256).ok_or_else(|| std::io::Error::other("no longer kept"))?;
    let mut f = std::fs::File::open(path)?;
    f.seek(std::io::SeekFrom::Start(offset))?;
    Ok(f)
}

/// Why a session ends on an answer other than the `expected` one: the admin refused us, sent
/// another frame, broke the framing or closed the connection.
fn unexpected(answer: Option<Result<Frame, FrameError>>, expected: &str) -> ShipError {
    match answer {
        Some(Ok(Frame::Refused { reason })) => ShipError::Refused(reason),
        Some(Ok(other)) => ShipError::Protocol(format!("expected {expected}, got {}", other.name())),
        Some(Err(e)) => e.into(),
        None => ShipError::Closed,
    }
}

#[cfg(test)]
#[path = "shipper_tests.rs"]
mod tests;
