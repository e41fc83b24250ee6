//! Ingest: the mutual-TLS server sensors ship their batches to.
//!
//! WHY this shape:
//! * **Bounded**: a semaphore caps connections (acquired *before* accept, mini-redis style), every
//!   frame length is checked before reading ([`frame::read_frame`]), every batch is decoded under
//!   a decompressed-size and an event-count cap, each connection may have only a few batches
//!   waiting for commit, and the queue to the database writer is bounded, so a fast sensor is
//!   slowed down by TCP back-pressure instead of growing memory.
//! * **Exactly-once effect**: one writer thread owns a storage handle. It stores a batch's events
//!   and advances that sensor's high-water mark in the same transaction
//!   ([`Storage::commit_batches`]), and acknowledges only after the commit. A batch at or below
//!   the high-water mark is acknowledged again without being stored; `(sensor, seq)` is unique as
//!   a second guard.
//! * **Group commit**: the writer takes every batch waiting in its queue (from any number of
//!   sensors) and commits them in one transaction, so many sensors cost one fsync.
//! * **A compromised sensor cannot take the admin down** (issue 19): each sensor has one
//!   connection (a new one replaces the old), at most `max_concurrent_decodes` batches are
//!   decompressed at once over all connections (each capped at `max_batch_bytes`, a few MiB),
//!   clamped strings give their memory back, and internal events are validated like attacker
//!   input. Before TLS, an address may hold only `max_handshakes_per_source` connections, and a
//!   connection that does not send its first TLS byte within `client_hello_timeout_s` is closed,
//!   so idle connections cannot keep real sensors waiting for a slot.
//! * **Isolation**: a connection that sends garbage, an oversized frame or the wrong name is
//!   closed; it never affects the others. A batch that is well framed but invalid (bad zstd, bad
//!   events, sequence numbers that do not match) is answered with [`Frame::Rejected`], so the
//!   sensor keeps it aside instead of resending it forever.
//! * **Samples** (protocol version 2, issue 15): offers are answered from the database (one copy
//!   per fleet), chunks go through the connection's [`Receiver`] (in order, capped, written to a
//!   part file), a complete sample is verified, classified and compressed on a blocking thread
//!   (at most `samples.max_concurrent_verifies` at once) while batches keep flowing, and its row
//!   is written by the same writer thread as events. The sensor hears `SampleStored` only after
//!   that commit. Version-1 sensors are served as before, without samples.
//! * **Signed updates** (protocol version 3, issue 22): after the hello the admin offers the
//!   release the current rollout names for this sensor ([`crate::releases::offer_for`]), unless
//!   the sensor already runs it, and answers each `UpdateWant` with one chunk read from the
//!   release file (at most `[updates] chunk_bytes`). The sensor verifies everything itself.
//! * **Fetching** (opt-in, `[fetcher]`): after a batch commits, the writer hands its events to
//!   the [`crate::samples::fetching`] hook, which claims and queues the download URLs they offer;
//!   fetched files come back through `Job::Run` like verified uploads.

use crate::clock::now_ms;
use crate::config::{AdminConfig, IngestConfig};
use crate::releases::{self, UpdatesConfig};
use crate::samples::classify::{Classifier, ClassifyConfig};
use crate::samples::fetching::{self, FetchHook};
use crate::samples::receiver::{self, ChunkResult, Receiver, SampleContext};
use crate::samples::store::SampleStore;
use crate::samples::SamplesConfig;
use crate::sensors::{self, Admission};
use crate::storage::{BatchIn, BatchOutcome, SampleStored, Storage};
use drosera_uplink::codec::{self, CodecError, DecodeLimits};
use drosera_uplink::event::{Event, SCHEMA_VERSION};
use drosera_uplink::frame::{
    self, Frame, FrameError, SampleRef, MAX_CONTROL_FRAME, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION,
    SAMPLES_SINCE_VERSION, UPDATES_SINCE_VERSION,
};
use drosera_uplink::tls::{self, PeerIdentity, TlsError};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// Most queued batches the writer folds into one transaction.
const MAX_GROUP: usize = 64;

/// What the writer answers for a batch: the storage's outcome, or why the commit failed.
type Outcome = Result<BatchOutcome, String>;

/// Work the writer runs on its database handle.
pub(crate) type DbWork = Box<dyn FnOnce(&dyn Storage) + Send>;

/// What the writer thread does, in queue order.
pub(crate) enum Job {
    Hello {
        peer: PeerIdentity,
        schema_version: u16,
        reply: oneshot::Sender<Result<Admission, String>>,
    },
    Batch {
        sensor_id: i64,
        last_seq: u64,
        events: Vec<Event>,
        reply: oneshot::Sender<Outcome>,
    },
    Contact {
        sensor_id: i64,
    },
    /// Sample work on the writer's database handle (queries and the rows of verified samples);
    /// the closure answers through its own channel.
    Run(DbWork),
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("cannot listen on [ingest] listen = {addr}: {error} (choose a free address)")]
    Bind { addr: SocketAddr, error: std::io::Error },
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("[samples] dir: {0}")]
    Samples(#[from] crate::samples::store::StoreError),
    #[error("[classify] rules_dir: {0}")]
    Rules(#[from] crate::samples::classify::ClassifyError),
    #[error("[fetcher]: {0}")]
    Fetcher(#[from] crate::samples::fetch::FetchError),
    #[error("ingest")]
    Io(#[from] std::io::Error),
}

/// The live connection of each sensor: a new one cancels the old one's token, so a sensor (or
/// a stolen certificate) holds one connection and one window of batches, not 256.
#[derive(Default)]
struct LiveSensors {
    next_id: AtomicU64,
    by_sensor: Mutex<HashMap<i64, (u64, CancellationToken)>>,
}

impl LiveSensors {
    /// Registers a connection of `sensor_id`; returns its id and the token cancelled when a
    /// newer connection of the same sensor arrives.
    fn register(&self, sensor_id: i64) -> (u64, CancellationToken) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let token = CancellationToken::new();
        let old = match self.by_sensor.lock() {
            Ok(mut m) => m.insert(sensor_id, (id, token.clone())),
            Err(poisoned) => poisoned.into_inner().insert(sensor_id, (id, token.clone())),
        };
        if let Some((_, old)) = old {
            old.cancel();
        }
        (id, token)
    }

    fn unregister(&self, sensor_id: i64, id: u64) {
        let mut m = match self.by_sensor.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        if m.get(&sensor_id).map(|(i, _)| *i) == Some(id) {
            m.remove(&sensor_id);
        }
    }
}

/// Connections per address that have not finished their hello yet (bounded by
/// `max_handshakes_per_source`); a [`HandshakeSlot`] gives its place back when dropped.
#[derive(Default)]
struct Handshaking(Mutex<HashMap<IpAddr, usize>>);

struct HandshakeSlot {
    table: Arc<Handshaking>,
    ip: IpAddr,
}

impl Handshaking {
    fn try_take(table: &Arc<Handshaking>, ip: IpAddr, max: usize) -> Option<HandshakeSlot> {
        let mut m = table.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(HandshakeSlot { table: table.clone(), ip })
    }
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        let mut m = self.table.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

/// What every connection shares.
#[derive(Clone)]
struct Shared {
    acceptor: TlsAcceptor,
    jobs: mpsc::Sender<Job>,
    cfg: Arc<IngestConfig>,
    live: Arc<LiveSensors>,
    decodes: Arc<Semaphore>,
    /// `None` when `[samples] enabled = false`.
    samples: Option<Arc<SampleContext>>,
    verifies: Arc<Semaphore>,
    updates: Arc<UpdatesConfig>,
}

/// The shared sample context for `cfg` (opens the store, loads the rules), or `None` when
/// samples are off.
pub fn sample_context(
    cfg: &SamplesConfig,
    classify: &ClassifyConfig,
    ingest: &IngestConfig,
) -> Result<Option<Arc<SampleContext>>, IngestError> {
    if !cfg.enabled {
        return Ok(None);
    }
    let store = SampleStore::open(&cfg.dir)?;
    let classifier = Classifier::from_config(classify)?;
    // Room for the chunk frame's other fields.
    let max_chunk = cfg.chunk_bytes.min(ingest.max_frame_bytes.saturating_sub(1024) as u32).max(1024);
    Ok(Some(Arc::new(SampleContext { cfg: cfg.clone(), store, classifier, counters: Default::default(), max_chunk })))
}

/// Binds `[ingest] listen` and serves until `shutdown` is cancelled; `db` becomes the writer's.
/// Reads the `[ingest]`, `[tls]`, `[samples]`, `[classify]`, `[updates]` and `[fetcher]`
/// sections of `config`.
pub async fn serve(config: &AdminConfig, db: Box<dyn Storage>, shutdown: CancellationToken) -> Result<(), IngestError> {
    let cfg = &config.ingest;
    let listener =
        TcpListener::bind(cfg.listen).await.map_err(|error| IngestError::Bind { addr: cfg.listen, error })?;
    serve_listener(listener, config, db, shutdown).await
}

/// Like [`serve`] on an already bound listener.
pub async fn serve_listener(
    listener: TcpListener,
    config: &AdminConfig,
    db: Box<dyn Storage>,
    shutdown: CancellationToken,
) -> Result<(), IngestError> {
    let (cfg, tls_cfg, samples_cfg) = (&config.ingest, &config.tls, &config.samples);
    let (classify, updates, fetcher) = (&config.classify, &config.updates, &config.fetcher);
    let tls_config = tls::server_config(&tls_cfg.ca_cert, &tls_cfg.cert, &tls_cfg.key)?;
    let samples = sample_context(samples_cfg, classify, cfg)?;
    let acceptor = TlsAcceptor::from(tls_config);
    let (jobs_tx, jobs_rx) = mpsc::channel::<Job>(cfg.commit_queue);
    let hook = fetching::start(fetcher, samples.clone(), jobs_tx.clone())?;
    let writer =
        std::thread::Builder::new().name("ingest-writer".into()).spawn(move || writer_loop(db, jobs_rx, hook))?;
    let icfg = Arc::new(cfg.clone());
    let max = icfg.max_connections;
    let permits = Arc::new(Semaphore::new(max));
    let handshaking = Arc::new(Handshaking::default());
    let shared = Shared {
        acceptor,
        jobs: jobs_tx,
        cfg: icfg.clone(),
        live: Arc::new(LiveSensors::default()),
        decodes: Arc::new(Semaphore::new(icfg.max_concurrent_decodes)),
        samples: samples.clone(),
        verifies: Arc::new(Semaphore::new(samples_cfg.max_concurrent_verifies.max(1))),
        updates: Arc::new(updates.clone()),
    };
    let mut refused_at_accept = 0u64;
    tracing::info!(addr = %listener.local_addr()?, max_connections = max, "ingest listening");
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = shutdown.cancelled() => break,
        };
        let (stream, addr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Typically EMFILE: wait a little instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let Some(slot) = Handshaking::try_take(&handshaking, addr.ip(), icfg.max_handshakes_per_source) else {
            // Closed at once (the permit goes back with it); counted and logged, not silently.
            refused_at_accept += 1;
            if refused_at_accept.is_power_of_two() {
                tracing::warn!(%addr, refused_at_accept, "too many connections from one address in the handshake; closed");
            }
            continue;
        };
        let sh = shared.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match handle(stream, addr, slot, &sh, stop).await {
                Ok(()) => tracing::debug!(%addr, "sensor connection closed"),
                Err(e) => tracing::warn!(%addr, error = %e, "sensor connection closed"),
            }
        });
    }
    if refused_at_accept > 0 {
        tracing::info!(refused_at_accept, "connections closed at accept (per-address handshake cap)");
    }
    if let Some(s) = &samples {
        let c = &s.counters;
        tracing::info!(
            stored = c.stored.load(Ordering::Relaxed),
            already_had = c.already_had.load(Ordering::Relaxed),
            rejected = c.rejected.load(Ordering::Relaxed),
            chunks = c.chunks.load(Ordering::Relaxed),
            bytes = c.bytes.load(Ordering::Relaxed),
            "sample transfers"
        );
    }
    drop(shared);
    // Let open connections finish their in-flight batches (they watch `shutdown` too).
    let _ = tokio::time::timeout(Duration::from_secs(10), permits.acquire_many(max as u32)).await;
    let _ = tokio::task::spawn_blocking(move || writer.join()).await;
    tracing::info!("ingest stopped");
    Ok(())
}

#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("TLS handshake failed: {0}")]
    Handshake(std::io::Error),
    #[error("timed out ({0})")]
    Timeout(&'static str),
    #[error("{0}")]
    Peer(#[from] tls::TlsError),
    #[error("frame error: {0}")]
    Frame(#[from] FrameError),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("refused: {0}")]
    Refused(String),
    #[error("admin is shutting down")]
    Shutdown,
    #[error("replaced by a newer connection of the same sensor")]
    Replaced,
}

async fn refuse<W: tokio::io::AsyncWrite + Unpin>(wr: &mut W, reason: String) -> Result<(), ConnError> {
    let _ = frame::write_frame(wr, &Frame::Refused { reason: reason.clone() }).await;
    let _ = wr.shutdown().await;
    Err(ConnError::Refused(reason))
}

enum Pending {
    Now(Frame),
    Wait(oneshot::Receiver<Outcome>),
    /// A sample's answer, once it is verified and recorded.
    Later(oneshot::Receiver<Frame>),
}

async fn handle(
    stream: TcpStream,
    addr: SocketAddr,
    slot: HandshakeSlot,
    sh: &Shared,
    shutdown: CancellationToken,
) -> Result<(), ConnError> {
    let (cfg, jobs) = (&*sh.cfg, &sh.jobs);
    let _ = stream.set_nodelay(true);
    // A sensor sends its ClientHello at once; an idle connection is closed long before the
    // handshake timeout, so it cannot hold a connection slot.
    let mut first = [0u8; 1];
    match tokio::time::timeout(Duration::from_secs(cfg.client_hello_timeout_s), stream.peek(&mut first)).await {
        Err(_) => return Err(ConnError::Timeout("first TLS byte")),
        Ok(Err(e)) => return Err(ConnError::Handshake(e)),
        Ok(Ok(0)) => return Ok(()),
        Ok(Ok(_)) => {}
    }
    let handshake = Duration::from_secs(cfg.handshake_timeout_s);
    let tls = tokio::time::timeout(handshake, sh.acceptor.accept(stream))
        .await
        .map_err(|_| ConnError::Timeout("TLS handshake"))?
        .map_err(ConnError::Handshake)?;
    let peer = tls::peer_identity(tls.get_ref().1.peer_certificates())?;
    let (mut rd, mut wr) = tokio::io::split(tls);

    let hello = tokio::time::timeout(handshake, frame::read_frame(&mut rd, MAX_CONTROL_FRAME))
        .await
        .map_err(|_| ConnError::Timeout("hello"))??;
    let (sensor, protocol_version, schema_version, software) = match hello {
        Some(Frame::Hello { sensor, protocol_version, schema_version, software }) => {
            (sensor, protocol_version, schema_version, software)
        }
        Some(other) => return Err(ConnError::Protocol(format!("expected hello, got {}", other.name()))),
        None => return Err(ConnError::Protocol("closed before hello".into())),
    };
    if sensor != peer.name {
        return refuse(&mut wr, format!("hello names sensor {sensor:?} but the certificate is for {:?}", peer.name))
            .await;
    }
    if !(MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&protocol_version) {
        return refuse(
            &mut wr,
            format!("protocol version {protocol_version} is not supported (admin speaks {PROTOCOL_VERSION})"),
        )
        .await;
    }
    let (tx, rx) = oneshot::channel();
    jobs.send(Job::Hello { peer: peer.clone(), schema_version, reply: tx }).await.map_err(|_| ConnError::Shutdown)?;
    let (sensor_id, high_water) = match rx.await.map_err(|_| ConnError::Shutdown)? {
        Ok(Admission::Accepted { sensor_id, high_water_seq }) => (sensor_id, high_water_seq),
        Ok(Admission::Refused(reason)) => return refuse(&mut wr, reason).await,
        Err(e) => return refuse(&mut wr, format!("admin database error: {e}")).await,
    };
    frame::write_frame(
        &mut wr,
        &Frame::HelloAck {
            schema_version: SCHEMA_VERSION,
            high_water_seq: high_water,
            max_batch_events: cfg.max_batch_events,
            max_batch_bytes: cfg.max_batch_bytes,
        },
    )
    .await?;
    let receiver = match &sh.samples {
        Some(ctx) if protocol_version >= SAMPLES_SINCE_VERSION => {
            frame::write_frame(
                &mut wr,
                &Frame::SampleTerms {
                    max_chunk_bytes: ctx.max_chunk,
                    max_offer: ctx.cfg.max_offer,
                    max_sample_bytes: ctx.cfg.max_sample_bytes,
                },
            )
            .await?;
            Some(Receiver::new(ctx.clone(), sensor_id))
        }
        _ => None,
    };
    let updates = protocol_version >= UPDATES_SINCE_VERSION;
    let mut update = None;
    let mut config_serial = None;
    if updates {
        if let Some((manifest, path)) = find_offer(sh, &peer.name, &software, true).await {
            tracing::info!(sensor = %peer.name, version = %manifest.version, arch = %manifest.arch, "offering a release");
            update = Some((manifest.version.clone(), path));
            frame::write_frame(&mut wr, &Frame::UpdateOffer { manifest }).await?;
        }
        if let Some(config) = find_config(sh, &peer.name).await {
            config_serial = Some(config.serial);
            frame::write_frame(&mut wr, &Frame::ConfigOffer { config }).await?;
        }
    }
    tracing::info!(%addr, sensor = %peer.name, schema_version, protocol_version, high_water, samples = receiver.is_some(), %software, update = update.as_ref().map(|(v, _)| v.as_str()).unwrap_or(""), "sensor connected");
    drop(slot);
    let (conn_id, replaced) = sh.live.register(sensor_id);
    let upd = UpdateSide { enabled: updates, software, offered: update, config_serial };
    let result = serve_batches(rd, wr, &peer, sensor_id, receiver, upd, sh, &shutdown, &replaced).await;
    sh.live.unregister(sensor_id, conn_id);
    result
}

/// The update side of a version-3 connection.
struct UpdateSide {
    /// The sensor speaks protocol version 3 or newer.
    enabled: bool,
    /// What its hello said it runs.
    software: String,
    /// The release offered on this connection: (version, binary path).
    offered: Option<(String, std::path::PathBuf)>,
    /// The serial of the pushed config offered on this connection.
    config_serial: Option<u64>,
}

/// The config pushed to `sensor`, if any.
async fn find_config(sh: &Shared, sensor: &str) -> Option<drosera_uplink::release::SignedConfig> {
    let (cfg, name) = (sh.updates.clone(), sensor.to_string());
    tokio::task::spawn_blocking(move || releases::config_for(&cfg, &name)).await.ok().flatten()
}

/// The release the current rollout names for a sensor that runs `software`, if any (and, with
/// `record`, remembers that software for `sensor list`).
async fn find_offer(
    sh: &Shared,
    sensor: &str,
    software: &str,
    record: bool,
) -> Option<(drosera_uplink::release::Manifest, std::path::PathBuf)> {
    let (cfg, name, sw) = (sh.updates.clone(), sensor.to_string(), software.to_string());
    tokio::task::spawn_blocking(move || {
        if record {
            releases::record_running(&cfg, &name, &sw);
        }
        let (version, arch) = releases::parse_software(&sw)?;
        releases::offer_for(&cfg, &name, &version, arch.as_deref()?)
    })
    .await
    .ok()
    .flatten()
}

/// Reads batches and pings of an admitted sensor until it closes, idles out, is replaced by a
/// newer connection, or the admin stops.
#[allow(clippy::too_many_arguments)]
async fn serve_batches<R, W>(
    mut rd: R,
    mut wr: W,
    peer: &PeerIdentity,
    sensor_id: i64,
    mut receiver: Option<Receiver>,
    mut update: UpdateSide,
    sh: &Shared,
    shutdown: &CancellationToken,
    replaced: &CancellationToken,
) -> Result<(), ConnError>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (cfg, jobs) = (&*sh.cfg, &sh.jobs);

    // Replies go out in order from a separate task, so reading the next batch overlaps the
    // commit of the previous ones (bounded by max_in_flight_per_connection).
    let (ptx, mut prx) = mpsc::channel::<Pending>(cfg.max_in_flight_per_connection);
    let acker = tokio::spawn(async move {
        while let Some(p) = prx.recv().await {
            let f = match p {
                Pending::Now(f) => f,
                Pending::Wait(rx) => match rx.await {
                    Ok(Ok(BatchOutcome::Ack(upto))) => Frame::Ack { upto_seq: upto },
                    Ok(Ok(BatchOutcome::Refused(reason))) => Frame::Refused { reason },
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "commit failed; closing the connection so the sensor retries");
                        break;
                    }
                    Err(_) => break,
                },
                Pending::Later(rx) => match rx.await {
                    Ok(f) => f,
                    Err(_) => break,
                },
            };
            let last = matches!(f, Frame::Refused { .. });
            if frame::write_frame(&mut wr, &f).await.is_err() || last {
                break;
            }
        }
        let _ = wr.shutdown().await;
    });

    let limits =
        DecodeLimits { max_decompressed: cfg.max_batch_bytes as usize, max_events: cfg.max_batch_events as usize };
    let idle = Duration::from_secs(cfg.idle_timeout_s);
    // A rollout started while the sensor is connected reaches it at the next check.
    let mut rollout_check = tokio::time::interval(Duration::from_secs(sh.updates.check_interval_s.max(1)));
    rollout_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    rollout_check.tick().await;
    let mut read = Box::pin(tokio::time::timeout(idle, frame::read_frame(&mut rd, cfg.max_frame_bytes)));
    let result = loop {
        let next = tokio::select! {
            r = &mut read => r,
            _ = rollout_check.tick(), if update.enabled => {
                if let Some(config) = find_config(sh, &peer.name).await {
                    if update.config_serial != Some(config.serial) {
                        update.config_serial = Some(config.serial);
                        tracing::info!(sensor = %peer.name, serial = config.serial, "offering a pushed config");
                        if ptx.send(Pending::Now(Frame::ConfigOffer { config })).await.is_err() {
                            break Ok(());
                        }
                    }
                }
                let Some((manifest, path)) = find_offer(sh, &peer.name, &update.software, false).await else { continue };
                if update.offered.as_ref().is_some_and(|(v, _)| *v == manifest.version) {
                    continue;
                }
                tracing::info!(sensor = %peer.name, version = %manifest.version, "offering a release (new rollout)");
                update.offered = Some((manifest.version.clone(), path));
                if ptx.send(Pending::Now(Frame::UpdateOffer { manifest })).await.is_err() {
                    break Ok(());
                }
                continue;
            }
            _ = shutdown.cancelled() => break Ok(()),
            _ = replaced.cancelled() => break Err(ConnError::Replaced),
        };
        drop(read);
        read = Box::pin(tokio::time::timeout(idle, frame::read_frame(&mut rd, cfg.max_frame_bytes)));
        let f = match next {
            Err(_) => break Err(ConnError::Timeout("idle")),
            Ok(Err(e)) => break Err(e.into()),
            Ok(Ok(None)) => break Ok(()),
            Ok(Ok(Some(f))) => f,
        };
        let pending = match f {
            Frame::Batch { first_seq, last_seq, count, codec, payload } => {
                let name = peer.name.clone();
                // One of `max_concurrent_decodes` slots for the whole admin: decompression
                // memory stays bounded however many connections send at once.
                let Ok(decode_slot) = sh.decodes.clone().acquire_owned().await else {
                    break Err(ConnError::Shutdown);
                };
                let checked = tokio::task::spawn_blocking(move || {
                    let _slot = decode_slot;
                    check_batch(first_seq, last_seq, count, codec, &payload, &name, limits)
                })
                .await
                .unwrap_or_else(|e| Err(BatchError::Internal(e.to_string())));
                match checked {
                    Err(reason) => {
                        tracing::warn!(sensor = %peer.name, first_seq, last_seq, %reason, "batch rejected");
                        Pending::Now(Frame::Rejected { first_seq, last_seq, reason: reason.to_string() })
                    }
                    Ok(events) => {
                        let (tx, rx) = oneshot::channel();
                        if jobs.send(Job::Batch { sensor_id, last_seq, events, reply: tx }).await.is_err() {
                            break Err(ConnError::Shutdown);
                        }
                        Pending::Wait(rx)
                    }
                }
            }
            Frame::Ping => {
                let _ = jobs.try_send(Job::Contact { sensor_id });
                Pending::Now(Frame::Pong)
            }
            Frame::SampleOffer { samples } => {
                let (Some(ctx), Some(recv)) = (&sh.samples, receiver.as_mut()) else {
                    break Err(ConnError::Protocol("sample offer on a connection without samples".into()));
                };
                let offered: Vec<SampleRef> = samples.into_iter().take(ctx.cfg.max_offer as usize).collect();
                let hexes: Vec<String> = offered.iter().map(|s| hex::encode(s.sha256)).collect();
                let (tx, rx) = oneshot::channel();
                let job = Job::Run(Box::new(move |db: &dyn Storage| {
                    let _ = tx.send(db.samples_known(&hexes).map_err(|e| e.to_string()));
                }));
                if jobs.send(job).await.is_err() {
                    break Err(ConnError::Shutdown);
                }
                let known = match rx.await {
                    Ok(Ok(k)) => k.into_iter().collect(),
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "cannot look up offered samples; closing so the sensor retries");
                        break Err(ConnError::Shutdown);
                    }
                    Err(_) => break Err(ConnError::Shutdown),
                };
                Pending::Now(Frame::SampleAnswers { answers: recv.answer_offer(&offered, &known) })
            }
            Frame::SampleChunk { sha256, offset, size, data } => {
                let (Some(ctx), Some(mut recv)) = (sh.samples.clone(), receiver.take()) else {
                    break Err(ConnError::Protocol("sample chunk on a connection without samples".into()));
                };
                let Ok((recv, result)) = tokio::task::spawn_blocking(move || {
                    let r = recv.on_chunk(&sha256, offset, size, &data);
                    (recv, r)
                })
                .await
                else {
                    break Err(ConnError::Shutdown);
                };
                receiver = Some(recv);
                match result {
                    ChunkResult::Ack(next_offset) => Pending::Now(Frame::SampleAck { sha256, next_offset }),
                    ChunkResult::Reject { reason, retry } => {
                        report_rejection(jobs, &ctx, sensor_id, &peer.name, &sha256, &reason);
                        Pending::Now(Frame::SampleRejected { sha256, reason, retry })
                    }
                    ChunkResult::Complete(part) => {
                        let (tx, rx) = oneshot::channel();
                        let (jobs, verifies, name) = (jobs.clone(), sh.verifies.clone(), peer.name.clone());
                        tokio::spawn(async move {
                            let f = finish_sample(ctx, jobs, verifies, sensor_id, name, sha256, part).await;
                            let _ = tx.send(f);
                        });
                        Pending::Later(rx)
                    }
                }
            }
            Frame::UpdateWant { version, offset, max_bytes } => {
                let Some((offered, path)) = update.offered.as_ref().filter(|(v, _)| *v == version).cloned() else {
                    break Err(ConnError::Protocol(format!("update_want for {version:?}, which was not offered")));
                };
                let max = max_bytes.min(sh.updates.chunk_bytes).max(1);
                let data = tokio::task::spawn_blocking(move || releases::read_chunk(&path, offset, max)).await;
                match data {
                    Ok(Ok(data)) => Pending::Now(Frame::UpdateChunk { version: offered, offset, data }),
                    Ok(Err(e)) => {
                        tracing::error!(sensor = %peer.name, %version, error = %e, "cannot read the release; sending no bytes");
                        Pending::Now(Frame::UpdateChunk { version: offered, offset, data: Vec::new() })
                    }
                    Err(_) => break Err(ConnError::Shutdown),
                }
            }
            other => break Err(ConnError::Protocol(format!("unexpected {} frame", other.name()))),
        };
        if ptx.send(pending).await.is_err() {
            break Ok(());
        }
    };
    drop(ptx);
    let _ = acker.await;
    result
}

/// Logs a rejected sample transfer and records it in the database (best effort: a full writer
/// queue drops the record, never the connection; the log line and the counter stay).
fn report_rejection(
    jobs: &mpsc::Sender<Job>,
    ctx: &SampleContext,
    sensor_id: i64,
    sensor: &str,
    sha256: &[u8; 32],
    reason: &str,
) {
    let sha = hex::encode(sha256);
    tracing::warn!(sensor, sha256 = %sha, %reason, rejected_total = ctx.counters.rejected.load(Ordering::Relaxed), "sample transfer rejected");
    let (reason, keep) = (reason.to_string(), i64::from(ctx.cfg.max_rejections_kept));
    let job = Job::Run(Box::new(move |db: &dyn Storage| {
        if let Err(e) = db.record_sample_rejection(sensor_id, &sha, &reason, now_ms(), keep) {
            tracing::warn!(error = %e, "cannot record a sample rejection");
        }
    }));
    if jobs.try_send(job).is_err() {
        tracing::warn!(sensor, "writer queue full: a sample rejection is logged but not recorded");
    }
}

/// Verifies a complete sample, stores its file and then its row; the answer for the sensor.
async fn finish_sample(
    ctx: Arc<SampleContext>,
    jobs: mpsc::Sender<Job>,
    verifies: Arc<Semaphore>,
    sensor_id: i64,
    sensor: String,
    sha256: [u8; 32],
    part: std::path::PathBuf,
) -> Frame {
    let reject = |reason: String, retry: bool| {
        ctx.counters.rejected.fetch_add(1, Ordering::Relaxed);
        report_rejection(&jobs, &ctx, sensor_id, &sensor, &sha256, &reason);
        Frame::SampleRejected { sha256, reason, retry }
    };
    let Ok(_permit) = verifies.acquire_owned().await else {
        return reject("the admin is shutting down".into(), true);
    };
    let c = ctx.clone();
    let verified = tokio::task::spawn_blocking(move || receiver::verify(&c, &sha256, &part))
        .await
        .unwrap_or_else(|e| Err(format!("internal error: {e}")));
    let v = match verified {
        Ok(v) => v,
        Err(reason) => return reject(reason, true),
    };
    let (tx, rx) = oneshot::channel();
    let (sample, max) = (v.sample.clone(), ctx.cfg.max_bytes);
    let job = Job::Run(Box::new(move |db: &dyn Storage| {
        let _ = tx.send(db.store_sample(&sample, max, now_ms()).map_err(|e| e.to_string()));
    }));
    if jobs.send(job).await.is_err() {
        return reject("the admin is shutting down".into(), true);
    }
    match rx.await {
        Ok(Ok(SampleStored::Stored)) => {
            ctx.counters.stored.fetch_add(1, Ordering::Relaxed);
            tracing::info!(%sensor, sha256 = %v.sample.sha256, size = v.sample.size, file_type = %v.sample.file_type, "sample stored");
            Frame::SampleStored { sha256 }
        }
        Ok(Ok(SampleStored::AlreadyHad)) => {
            ctx.counters.already_had.fetch_add(1, Ordering::Relaxed);
            Frame::SampleStored { sha256 }
        }
        Ok(Ok(SampleStored::Full)) => {
            ctx.store.remove(&v.sample.sha256);
            reject(
                format!(
                    "the admin's sample store is full (samples.max_bytes = {}); {} bytes not kept",
                    ctx.cfg.max_bytes, v.sample.size
                ),
                false,
            )
        }
        Ok(Err(e)) => reject(format!("admin database error: {e}"), true),
        Err(_) => reject("the admin is shutting down".into(), true),
    }
}

/// Why a well-framed batch is rejected (sent back with [`Frame::Rejected`]).
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("bad batch header: first_seq {first_seq}, last_seq {last_seq}, count {count}")]
    Header { first_seq: u64, last_seq: u64, count: u32 },
    #[error("batch of {count} events exceeds the limit of {max}")]
    TooMany { count: u32, max: usize },
    #[error(transparent)]
    Decode(#[from] CodecError),
    #[error("header says {count} events, payload has {found}")]
    Count { count: u32, found: usize },
    #[error("event seq {seq} out of order or outside {first_seq}..={last_seq}")]
    Order { seq: u64, first_seq: u64, last_seq: u64 },
    #[error("events do not span {first_seq}..={last_seq}")]
    Span { first_seq: u64, last_seq: u64 },
    #[error("internal error: {0}")]
    Internal(String),
}

/// Checks a batch frame and decodes its events. Events get the authenticated sensor name and
/// are clamped.
pub fn check_batch(
    first_seq: u64,
    last_seq: u64,
    count: u32,
    codec_id: u8,
    payload: &[u8],
    sensor: &str,
    limits: DecodeLimits,
) -> Result<Vec<Event>, BatchError> {
    if count == 0 || first_seq == 0 || first_seq > last_seq {
        return Err(BatchError::Header { first_seq, last_seq, count });
    }
    if count as usize > limits.max_events {
        return Err(BatchError::TooMany { count, max: limits.max_events });
    }
    let mut events = codec::decode(codec_id, payload, limits)?;
    if events.len() != count as usize {
        return Err(BatchError::Count { count, found: events.len() });
    }
    let mut prev = 0u64;
    for ev in &mut events {
        if ev.seq <= prev || ev.seq < first_seq || ev.seq > last_seq {
            return Err(BatchError::Order { seq: ev.seq, first_seq, last_seq });
        }
        prev = ev.seq;
        ev.sensor.clear();
        ev.sensor.push_str(sensor);
        ev.clamp();
    }
    if events.first().map(|e| e.seq) != Some(first_seq) || prev != last_seq {
        return Err(BatchError::Span { first_seq, last_seq });
    }
    Ok(events)
}

fn writer_loop(db: Box<dyn Storage>, mut rx: mpsc::Receiver<Job>, fetch: Option<FetchHook>) {
    // The highest sequence number handed to the integrations' tap per sensor (`crate::tap`).
    let mut published = std::collections::HashMap::new();
    while let Some(first) = rx.blocking_recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(j) => group.push(j),
                Err(_) => break,
            }
        }
        let mut batches = Vec::new();
        let mut contacts = Vec::new();
        for job in group {
            match job {
                Job::Hello { peer, schema_version, reply } => {
                    let r = hello(&*db, &peer, schema_version).map_err(|e| e.to_string());
                    let _ = reply.send(r);
                }
                Job::Contact { sensor_id } => contacts.push(sensor_id),
                Job::Batch { sensor_id, last_seq, events, reply } => batches.push((sensor_id, last_seq, events, reply)),
                Job::Run(f) => f(&*db),
            }
        }
        let now = now_ms();
        if !contacts.is_empty() {
            if let Err(e) = db.touch_sensors(&contacts, now) {
                tracing::warn!(error = %e, "recording sensor contact failed");
            }
        }
        if batches.is_empty() {
            continue;
        }
        let group: Vec<BatchIn<'_>> = batches
            .iter()
            .map(|(sensor_id, last_seq, events, _)| BatchIn { sensor_id: *sensor_id, last_seq: *last_seq, events })
            .collect();
        match db.commit_batches(&group, now) {
            Ok(outcomes) => {
                drop(group);
                for ((sensor_id, _, events, reply), outcome) in batches.into_iter().zip(outcomes) {
                    let stored = matches!(outcome, BatchOutcome::Ack(_));
                    if stored {
                        crate::tap::publish_committed(&mut published, sensor_id, &events);
                    }
                    let _ = reply.send(Ok(outcome));
                    if let (Some(hook), true) = (&fetch, stored) {
                        hook.offer_events(&*db, sensor_id, &events);
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "ingest transaction failed");
                drop(group);
                for (_, _, _, reply) in batches {
                    let _ = reply.send(Err(e.to_string()));
                }
            }
        }
    }
}

fn hello(db: &dyn Storage, peer: &PeerIdentity, schema_version: u16) -> Result<Admission, sensors::SensorError> {
    let a = sensors::admit(db, peer)?;
    if let Admission::Accepted { sensor_id, .. } = &a {
        db.record_hello(*sensor_id, schema_version, now_ms()).map_err(sensors::SensorError::from)?;
    }
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;
    use drosera_uplink::event::{CloseReason, Detail, Priority, Protocol, Transport};

    fn ev(seq: u64) -> Event {
        Event {
            seq,
            time_ms: 1_700_000_000_000,
            sensor: "liar".into(),
            transport: Transport::Tcp,
            protocol: Protocol::Http,
            src_ip: "198.51.100.9".parse().unwrap(),
            src_port: 5,
            dst_port: 80,
            session_id: seq,
            duration_ms: 1,
            bytes_in: 1,
            bytes_out: 1,
            priority: Priority::Noise,
            detail: Detail::Connection { first_bytes: vec![], closed_by: CloseReason::ClientClosed },
        }
    }

    #[test]
    fn check_batch_validates_header_against_events() {
        let lim = DecodeLimits::default();
        let events: Vec<Event> = [3, 5, 9].into_iter().map(ev).collect();
        let p = codec::encode(&events, 3).unwrap();
        let ok = check_batch(3, 9, 3, codec::CODEC_ZSTD_POSTCARD, &p, "pi", lim).unwrap();
        assert!(ok.iter().all(|e| e.sensor == "pi"));
        assert!(check_batch(3, 9, 2, 1, &p, "pi", lim).is_err());
        assert!(check_batch(4, 9, 3, 1, &p, "pi", lim).is_err());
        assert!(check_batch(3, 8, 3, 1, &p, "pi", lim).is_err());
        assert!(check_batch(9, 3, 3, 1, &p, "pi", lim).is_err());
        assert!(check_batch(3, 9, 3, 7, &p, "pi", lim).is_err());
        assert!(check_batch(3, 9, 3, 1, b"garbage", "pi", lim).is_err());
        let unordered = codec::encode(&[ev(5), ev(3)], 3).unwrap();
        assert!(check_batch(3, 5, 2, 1, &unordered, "pi", lim).is_err());
    }
}
