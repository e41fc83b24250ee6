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
//! Responses are read by a separate task and handed over a channel, so waiting for them never
//! cancels a half-read frame.

use crate::config::UplinkSection;
use crate::sink::EventSink;
use crate::store::{StoreError, StoreHandle};
use backon::BackoffBuilder;
use drosera_uplink::codec;
use drosera_uplink::event::{Detail, Event, SCHEMA_VERSION};
use drosera_uplink::frame::{self, Frame, FrameError, MAX_CONTROL_FRAME, PROTOCOL_VERSION};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
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
/// How often an idle shipper looks for new events.
const POLL: Duration = Duration::from_millis(200);
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
}

impl Backlog for StoreHandle {
    type Error = StoreError;
    fn read_batch(&self, after_seq: u64, max_events: usize, max_bytes: usize) -> Result<Vec<Event>, StoreError> {
        StoreHandle::read_batch(self, after_seq, max_events, max_bytes)
    }
    fn ack(&self, upto_seq: u64) -> Result<(), StoreError> {
        StoreHandle::ack(self, upto_seq)
    }
    fn acked_seq(&self) -> u64 {
        StoreHandle::acked_seq(self)
    }
}

/// What the shipper needs around it.
#[derive(Clone, Debug)]
pub struct ShipperContext {
    /// The sensor's data directory; rejected batches are kept under `data_dir/rejected/`.
    pub data_dir: PathBuf,
    /// Where rejected batches are reported as events.
    pub sink: EventSink,
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
}

impl Conversation {
    /// How long to wait for the admin before looking at the clock again.
    fn wait(&self) -> Duration {
        match self.draining {
            Some(deadline) => deadline.saturating_duration_since(Instant::now()),
            None if self.inflight.is_empty() && self.ping_sent.is_none() => POLL,
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
        let reader = tokio::spawn(async move {
            loop {
                let r = frame::read_frame(&mut rd, MAX_CONTROL_FRAME).await;
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
        };
        loop {
            if c.draining.is_none() {
                self.fill_window(wr, &mut c).await?;
            }
            if c.draining.is_some() && c.inflight.is_empty() {
                return Ok(());
            }
            let wait = c.wait();
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
            protocol_version: PROTOCOL_VERSION,
            schema_version: SCHEMA_VERSION,
            software: concat!("drosera-sensor ", env!("CARGO_PKG_VERSION")).to_string(),
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
        let waiting = !c.inflight.is_empty() || c.ping_sent.is_some();
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
