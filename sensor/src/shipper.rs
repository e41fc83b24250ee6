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
use std::path::{Path, PathBuf};
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
/// After shutdown is requested, how long to wait for acknowledgements of batches in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);
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

/// Optional surroundings of the shipper.
#[derive(Clone, Debug, Default)]
pub struct ShipperContext {
    /// The sensor's data directory; rejected batches go to `data_dir/rejected/`. Without it they
    /// go to `rejected/` next to the uplink key file.
    pub data_dir: Option<PathBuf>,
    /// Where to report rejected batches as events.
    pub sink: Option<EventSink>,
}

/// Ships until `shutdown` is cancelled. Never gives up on the admin (jittered backoff).
pub async fn run(
    cfg: UplinkSection,
    sensor: Arc<str>,
    store: StoreHandle,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    run_with(cfg, sensor, store, ShipperContext::default(), shutdown).await
}

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

struct Shipper<B: Backlog> {
    cfg: UplinkSection,
    sensor: Arc<str>,
    backlog: B,
    connector: TlsConnector,
    server_name: ServerName<'static>,
    rejected_dir: PathBuf,
    sink: Option<EventSink>,
    backoff_max: Duration,
}

/// [`run`] with a data directory and an event sink, over any [`Backlog`].
pub async fn run_with<B: Backlog>(
    cfg: UplinkSection,
    sensor: Arc<str>,
    backlog: B,
    ctx: ShipperContext,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let tls = drosera_uplink::tls::client_config(&cfg.ca_cert, &cfg.cert, &cfg.key)?;
    let host = if cfg.server_name.is_empty() {
        cfg.admin.rsplit_once(':').map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']')).unwrap_or("")
    } else {
        cfg.server_name.as_str()
    };
    let server_name = ServerName::try_from(host.to_string())
        .map_err(|e| anyhow::anyhow!("uplink.server_name / uplink.admin: {host:?} is not a valid server name ({e})"))?;
    let rejected_dir = match &ctx.data_dir {
        Some(d) => d.join("rejected"),
        None => cfg.key.parent().unwrap_or(Path::new(".")).join("rejected"),
    };
    let shipper = Shipper {
        backoff_max: Duration::from_secs(cfg.backoff_max_s.max(1)),
        cfg,
        sensor,
        backlog,
        connector: TlsConnector::from(tls),
        server_name,
        rejected_dir,
        sink: ctx.sink,
    };
    shipper.run(&shutdown).await
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

    async fn run(&self, shutdown: &CancellationToken) -> anyhow::Result<()> {
        let mut backoff = self.backoff();
        let mut failures: u64 = 0;
        loop {
            if shutdown.is_cancelled() {
                return Ok(());
            }
            let mut progress = false;
            let result = self.session(&mut progress, shutdown).await;
            if progress {
                backoff = self.backoff();
                failures = 0;
            }
            match result {
                Ok(()) => return Ok(()),
                Err(e) => {
                    failures += 1;
                    // Cap: the backoff never stops; the iterator is infinite, the fallback is the max.
                    let delay = backoff.next().unwrap_or(self.backoff_max).min(self.backoff_max);
                    match &e {
                        ShipError::Refused(_) => {
                            tracing::error!(error = %e, retry_in_ms = delay.as_millis() as u64, "uplink refused")
                        }
                        _ if failures <= 3 => {
                            tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "uplink session ended")
                        }
                        _ => {
                            tracing::debug!(error = %e, retry_in_ms = delay.as_millis() as u64, "uplink session ended")
                        }
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = shutdown.cancelled() => return Ok(()),
                    }
                }
            }
        }
    }

    async fn connect(&self) -> Result<tokio_rustls::client::TlsStream<TcpStream>, ShipError> {
        let addr = self.cfg.admin.clone();
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&addr))
            .await
            .map_err(|_| ShipError::Timeout("TCP connect"))?
            .map_err(|source| ShipError::Connect { addr: addr.clone(), source })?;
        let _ = tcp.set_nodelay(true);
        tokio::time::timeout(CONNECT_TIMEOUT, self.connector.connect(self.server_name.clone(), tcp))
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

    async fn converse<W: tokio::io::AsyncWrite + Unpin>(
        &self,
        wr: &mut W,
        rx: &mut mpsc::Receiver<Result<Frame, FrameError>>,
        progress: &mut bool,
        shutdown: &CancellationToken,
    ) -> Result<(), ShipError> {
        frame::write_frame(
            wr,
            &Frame::Hello {
                sensor: self.sensor.to_string(),
                protocol_version: PROTOCOL_VERSION,
                schema_version: SCHEMA_VERSION,
                software: concat!("drosera-sensor ", env!("CARGO_PKG_VERSION")).to_string(),
            },
        )
        .await?;
        let (schema, max_events, max_bytes) = match tokio::time::timeout(RESPONSE_TIMEOUT, rx.recv())
            .await
            .map_err(|_| ShipError::Timeout("hello ack"))?
        {
            Some(Ok(Frame::HelloAck { schema_version, high_water_seq, max_batch_events, max_batch_bytes })) => {
                tracing::info!(admin = %self.cfg.admin, schema_version, high_water_seq, "uplink connected");
                (
                    schema_version.min(SCHEMA_VERSION),
                    self.cfg.batch_max_events.min(max_batch_events as usize).max(1),
                    // read_batch sizes are approximate: stay well inside the admin's cap.
                    self.cfg.batch_max_bytes.min(max_batch_bytes as usize / 2).max(1024),
                )
            }
            Some(Ok(Frame::Refused { reason })) => return Err(ShipError::Refused(reason)),
            Some(Ok(other)) => return Err(ShipError::Protocol(format!("expected hello ack, got {}", other.name()))),
            Some(Err(e)) => return Err(e.into()),
            None => return Err(ShipError::Closed),
        };

        // (first_seq, last_seq, payload) of batches sent and not yet answered.
        let mut inflight: VecDeque<(u64, u64, Vec<u8>)> = VecDeque::new();
        let mut acked = self.backlog.acked_seq();
        let mut next_after = acked;
        let mut draining: Option<Instant> = None;
        let mut last_heard = Instant::now();
        let mut ping_sent: Option<Instant> = None;
        loop {
            // Fill the window.
            while draining.is_none() && inflight.len() < WINDOW {
                let after = next_after;
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
                let f = Frame::Batch {
                    first_seq: first,
                    last_seq: last,
                    count,
                    codec: codec::CODEC_ZSTD_POSTCARD,
                    payload,
                };
                frame::write_frame(wr, &f).await?;
                if let Frame::Batch { payload, .. } = f {
                    inflight.push_back((first, last, payload));
                }
                next_after = last;
            }
            if draining.is_some() && inflight.is_empty() {
                return Ok(());
            }
            let wait = match draining {
                Some(deadline) => deadline.saturating_duration_since(Instant::now()),
                None if inflight.is_empty() && ping_sent.is_none() => POLL,
                None => Duration::from_secs(1),
            };
            tokio::select! {
                msg = rx.recv() => {
                    last_heard = Instant::now();
                    match msg {
                        Some(Ok(Frame::Ack { upto_seq })) => {
                            // Never free more than was sent on this connection.
                            let upto = upto_seq.min(next_after);
                            while inflight.front().is_some_and(|b| b.1 <= upto) {
                                inflight.pop_front();
                            }
                            if upto > acked {
                                self.blocking(move |b| b.ack(upto)).await?;
                                acked = upto;
                                *progress = true;
                            }
                        }
                        Some(Ok(Frame::Rejected { first_seq, last_seq, reason })) => {
                            let Some((first, last, payload)) = inflight.pop_front() else {
                                return Err(ShipError::Protocol("rejection without a batch in flight".into()));
                            };
                            if (first, last) != (first_seq, last_seq) {
                                return Err(ShipError::Protocol(format!(
                                    "rejection for {first_seq}..={last_seq} but the oldest batch is {first}..={last}"
                                )));
                            }
                            self.set_aside(first, last, &payload, &reason);
                            self.blocking(move |b| b.ack(last)).await?;
                            acked = acked.max(last);
                            *progress = true;
                        }
                        Some(Ok(Frame::Pong)) => ping_sent = None,
                        Some(Ok(Frame::Refused { reason })) => return Err(ShipError::Refused(reason)),
                        Some(Ok(other)) => {
                            return Err(ShipError::Protocol(format!("unexpected {} frame", other.name())))
                        }
                        Some(Err(e)) => return Err(e.into()),
                        None => return Err(ShipError::Closed),
                    }
                }
                _ = tokio::time::sleep(wait) => {
                    if let Some(deadline) = draining {
                        if Instant::now() >= deadline {
                            return Ok(());
                        }
                    }
                    let waiting = !inflight.is_empty() || ping_sent.is_some();
                    if waiting && last_heard.elapsed() > RESPONSE_TIMEOUT {
                        return Err(ShipError::Timeout("the admin's answer"));
                    }
                    if !waiting && last_heard.elapsed() > PING_EVERY {
                        frame::write_frame(wr, &Frame::Ping).await?;
                        ping_sent = Some(Instant::now());
                        last_heard = Instant::now();
                    }
                }
                _ = shutdown.cancelled(), if draining.is_none() => {
                    draining = Some(Instant::now() + DRAIN_TIMEOUT);
                }
            }
        }
    }

    /// Keeps a rejected batch under `rejected/` (if there is room) and reports it.
    fn set_aside(&self, first: u64, last: u64, payload: &[u8], reason: &str) {
        let kept = match self.write_rejected(first, last, payload, reason) {
            Ok(Some(path)) => path.display().to_string(),
            Ok(None) => String::new(),
            Err(e) => {
                tracing::error!(error = %e, dir = %self.rejected_dir.display(), "cannot keep a rejected batch");
                String::new()
            }
        };
        tracing::error!(first_seq = first, last_seq = last, %reason, kept_at = %kept,
            "admin rejected a batch as invalid; kept aside and skipped");
        if let Some(sink) = &self.sink {
            sink.emit(Event {
                sensor: self.sensor.to_string(),
                bytes_in: payload.len() as u64,
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
    }

    fn write_rejected(&self, first: u64, last: u64, payload: &[u8], reason: &str) -> std::io::Result<Option<PathBuf>> {
        std::fs::create_dir_all(&self.rejected_dir)?;
        let (mut files, mut bytes) = (0usize, 0u64);
        for entry in std::fs::read_dir(&self.rejected_dir)?.flatten() {
            files += 1;
            bytes += entry.metadata().map(|m| m.len()).unwrap_or(0);
        }
        if files + 2 > REJECTED_MAX_FILES || bytes + payload.len() as u64 > REJECTED_MAX_BYTES {
            tracing::error!(files, bytes, "rejected/ is full; the rejected batch is reported but not kept");
            return Ok(None);
        }
        let path = self.rejected_dir.join(format!("batch-{first}-{last}.postcard.zst"));
        std::fs::write(&path, payload)?;
        std::fs::write(path.with_extension("reason.txt"), reason)?;
        Ok(Some(path))
    }
}

#[cfg(test)]
#[path = "shipper_tests.rs"]
mod tests;
