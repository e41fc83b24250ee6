//! Ingest: the mutual-TLS server sensors ship their batches to.
//!
//! WHY this shape:
//! * **Bounded**: a semaphore caps connections (acquired *before* accept, mini-redis style), every
//!   frame length is checked before reading ([`frame::read_frame`]), every batch is decoded under
//!   a decompressed-size and an event-count cap, each connection may have only a few batches
//!   waiting for commit, and the queue to the database writer is bounded, so a fast sensor is
//!   slowed down by TCP back-pressure instead of growing memory.
//! * **Exactly-once effect**: one writer thread owns the database. It stores a batch's events and
//!   advances that sensor's `high_water_seq` in the same transaction, and acknowledges only after
//!   the commit. A batch at or below the high-water mark is acknowledged again without being
//!   stored; `(sensor_id, seq)` is unique as a second guard.
//! * **Group commit**: the writer takes every batch waiting in its queue (from any number of
//!   sensors) and commits them in one transaction, so many sensors cost one fsync.
//! * **Isolation**: a connection that sends garbage, an oversized frame or the wrong name is
//!   closed; it never affects the others. A batch that is well framed but invalid (bad zstd, bad
//!   events, sequence numbers that do not match) is answered with [`Frame::Rejected`], so the
//!   sensor keeps it aside instead of resending it forever.

use crate::config::{AdminConfig, IngestConfig};
use crate::sensors::{self, Admission};
use drosera_uplink::codec::{self, DecodeLimits};
use drosera_uplink::event::{Detail, Event, SCHEMA_VERSION};
use drosera_uplink::frame::{self, Frame, FrameError, MAX_CONTROL_FRAME, PROTOCOL_VERSION};
use drosera_uplink::tls::{self, PeerIdentity};
use rusqlite::{params, Connection};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio_rustls::TlsAcceptor;

/// Most queued batches the writer folds into one transaction.
const MAX_GROUP: usize = 64;

/// What the writer answers for a batch.
#[derive(Debug)]
enum BatchOutcome {
    Ack(u64),
    Refused(String),
    Failed(String),
}

enum Job {
    Hello { peer: PeerIdentity, schema_version: u16, reply: oneshot::Sender<Result<Admission, String>> },
    Batch { sensor_id: i64, last_seq: u64, events: Vec<Event>, reply: oneshot::Sender<BatchOutcome> },
    Contact { sensor_id: i64 },
}

/// `drosera-admin serve`: the ingest server and the dashboard, until `shutdown` turns true.
pub async fn serve_all(cfg: &AdminConfig, shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    let mut dash_stop = shutdown.clone();
    let ingest = serve(cfg, shutdown);
    let dashboard =
        crate::dashboard::serve(&cfg.dashboard, &cfg.enrichment, &cfg.retention, &cfg.database.path, async move {
            let _ = dash_stop.wait_for(|v| *v).await;
        });
    // The first failure (for example a port in use) stops both.
    tokio::try_join!(ingest, dashboard).map(|_| ())
}

/// Binds `[ingest] listen` and serves until `shutdown` turns true.
pub async fn serve(cfg: &AdminConfig, shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    let listener = TcpListener::bind(cfg.ingest.listen).await.map_err(|e| {
        anyhow::anyhow!("cannot listen on [ingest] listen = {}: {e} (choose a free address)", cfg.ingest.listen)
    })?;
    serve_listener(listener, cfg, shutdown).await
}

/// Like [`serve`] on an already bound listener.
pub async fn serve_listener(
    listener: TcpListener,
    cfg: &AdminConfig,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let tls_config = tls::server_config(&cfg.tls.ca_cert, &cfg.tls.cert, &cfg.tls.key)?;
    let acceptor = TlsAcceptor::from(tls_config);
    let conn = crate::db::open(&cfg.database.path)?;
    let (jobs_tx, jobs_rx) = mpsc::channel::<Job>(cfg.ingest.commit_queue);
    let writer = std::thread::Builder::new().name("ingest-writer".into()).spawn(move || writer_loop(conn, jobs_rx))?;
    let icfg = Arc::new(cfg.ingest.clone());
    let max = icfg.max_connections;
    let permits = Arc::new(Semaphore::new(max));
    tracing::info!(addr = %listener.local_addr()?, max_connections = max, "ingest listening");
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = shutdown.wait_for(|v| *v) => break,
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
            _ = shutdown.wait_for(|v| *v) => break,
        };
        let acceptor = acceptor.clone();
        let jobs = jobs_tx.clone();
        let icfg = icfg.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match handle(stream, addr, acceptor, jobs, &icfg, stop).await {
                Ok(()) => tracing::debug!(%addr, "sensor connection closed"),
                Err(e) => tracing::warn!(%addr, error = %e, "sensor connection closed"),
            }
        });
    }
    drop(jobs_tx);
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
}

async fn refuse<W: tokio::io::AsyncWrite + Unpin>(wr: &mut W, reason: String) -> Result<(), ConnError> {
    let _ = frame::write_frame(wr, &Frame::Refused { reason: reason.clone() }).await;
    let _ = wr.shutdown().await;
    Err(ConnError::Refused(reason))
}

enum Pending {
    Now(Frame),
    Wait(oneshot::Receiver<BatchOutcome>),
}

async fn handle(
    stream: TcpStream,
    addr: SocketAddr,
    acceptor: TlsAcceptor,
    jobs: mpsc::Sender<Job>,
    cfg: &IngestConfig,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), ConnError> {
    let _ = stream.set_nodelay(true);
    let handshake = Duration::from_secs(cfg.handshake_timeout_s);
    let tls = tokio::time::timeout(handshake, acceptor.accept(stream))
        .await
        .map_err(|_| ConnError::Timeout("TLS handshake"))?
        .map_err(ConnError::Handshake)?;
    let peer = tls::peer_identity(tls.get_ref().1.peer_certificates())?;
    let (mut rd, mut wr) = tokio::io::split(tls);

    let hello = tokio::time::timeout(handshake, frame::read_frame(&mut rd, MAX_CONTROL_FRAME))
        .await
        .map_err(|_| ConnError::Timeout("hello"))??;
    let (sensor, protocol_version, schema_version) = match hello {
        Some(Frame::Hello { sensor, protocol_version, schema_version, .. }) => {
            (sensor, protocol_version, schema_version)
        }
        Some(other) => return Err(ConnError::Protocol(format!("expected hello, got {}", other.name()))),
        None => return Err(ConnError::Protocol("closed before hello".into())),
    };
    if sensor != peer.name {
        return refuse(&mut wr, format!("hello names sensor {sensor:?} but the certificate is for {:?}", peer.name))
            .await;
    }
    if protocol_version != PROTOCOL_VERSION {
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
    tracing::info!(%addr, sensor = %peer.name, schema_version, high_water, "sensor connected");

    // Replies go out in order from a separate task, so reading the next batch overlaps the
    // commit of the previous ones (bounded by max_in_flight_per_connection).
    let (ptx, mut prx) = mpsc::channel::<Pending>(cfg.max_in_flight_per_connection);
    let acker = tokio::spawn(async move {
        while let Some(p) = prx.recv().await {
            let f = match p {
                Pending::Now(f) => f,
                Pending::Wait(rx) => match rx.await {
                    Ok(BatchOutcome::Ack(upto)) => Frame::Ack { upto_seq: upto },
                    Ok(BatchOutcome::Refused(reason)) => Frame::Refused { reason },
                    Ok(BatchOutcome::Failed(e)) => {
                        tracing::error!(error = %e, "commit failed; closing the connection so the sensor retries");
                        break;
                    }
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
    let result = loop {
        let next = tokio::select! {
            r = tokio::time::timeout(idle, frame::read_frame(&mut rd, cfg.max_frame_bytes)) => r,
            _ = shutdown.wait_for(|v| *v) => break Ok(()),
        };
        let f = match next {
            Err(_) => break Err(ConnError::Timeout("idle")),
            Ok(Err(e)) => break Err(e.into()),
            Ok(Ok(None)) => break Ok(()),
            Ok(Ok(Some(f))) => f,
        };
        let pending = match f {
            Frame::Batch { first_seq, last_seq, count, codec, payload } => {
                let name = peer.name.clone();
                let checked = tokio::task::spawn_blocking(move || {
                    check_batch(first_seq, last_seq, count, codec, &payload, &name, limits)
                })
                .await
                .unwrap_or_else(|e| Err(format!("internal error: {e}")));
                match checked {
                    Err(reason) => {
                        tracing::warn!(sensor = %peer.name, first_seq, last_seq, %reason, "batch rejected");
                        Pending::Now(Frame::Rejected { first_seq, last_seq, reason })
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

/// Checks a batch frame and decodes its events; `Err` is the reason sent with
/// [`Frame::Rejected`]. Events get the authenticated sensor name and are clamped.
pub fn check_batch(
    first_seq: u64,
    last_seq: u64,
    count: u32,
    codec_id: u8,
    payload: &[u8],
    sensor: &str,
    limits: DecodeLimits,
) -> Result<Vec<Event>, String> {
    if count == 0 || first_seq == 0 || first_seq > last_seq {
        return Err(format!("bad batch header: first_seq {first_seq}, last_seq {last_seq}, count {count}"));
    }
    if count as usize > limits.max_events {
        return Err(format!("batch of {count} events exceeds the limit of {}", limits.max_events));
    }
    let mut events = codec::decode(codec_id, payload, limits).map_err(|e| e.to_string())?;
    if events.len() != count as usize {
        return Err(format!("header says {count} events, payload has {}", events.len()));
    }
    let mut prev = 0u64;
    for ev in &mut events {
        if ev.seq <= prev || ev.seq < first_seq || ev.seq > last_seq {
            return Err(format!("event seq {} out of order or outside {first_seq}..={last_seq}", ev.seq));
        }
        prev = ev.seq;
        ev.sensor.clear();
        ev.sensor.push_str(sensor);
        ev.clamp();
    }
    if events.first().map(|e| e.seq) != Some(first_seq) || prev != last_seq {
        return Err(format!("events do not span {first_seq}..={last_seq}"));
    }
    Ok(events)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn writer_loop(mut conn: Connection, mut rx: mpsc::Receiver<Job>) {
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
                    let r = hello(&conn, &peer, schema_version).map_err(|e| e.to_string());
                    let _ = reply.send(r);
                }
                Job::Contact { sensor_id } => contacts.push(sensor_id),
                Job::Batch { sensor_id, last_seq, events, reply } => batches.push((sensor_id, last_seq, events, reply)),
            }
        }
        let now = now_ms();
        for id in contacts {
            let _ = conn.execute("UPDATE sensors SET last_contact_ms = ?2 WHERE id = ?1", params![id, now]);
        }
        if batches.is_empty() {
            continue;
        }
        let mut outcomes = Vec::with_capacity(batches.len());
        let committed = (|| -> rusqlite::Result<()> {
            let tx = conn.transaction()?;
            for (sensor_id, last_seq, events, _) in &batches {
                outcomes.push(store_batch(&tx, *sensor_id, *last_seq, events, now)?);
            }
            tx.commit()
        })();
        match committed {
            Ok(()) => {
                for ((_, _, _, reply), outcome) in batches.into_iter().zip(outcomes) {
                    let _ = reply.send(outcome);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "ingest transaction failed");
                for (_, _, _, reply) in batches {
                    let _ = reply.send(BatchOutcome::Failed(e.to_string()));
                }
            }
        }
    }
}

fn hello(conn: &Connection, peer: &PeerIdentity, schema_version: u16) -> rusqlite::Result<Admission> {
    let a = sensors::admit(conn, peer)?;
    if let Admission::Accepted { sensor_id, .. } = &a {
        conn.execute(
            "UPDATE sensors SET last_contact_ms = ?2, schema_version = ?3 WHERE id = ?1",
            params![sensor_id, now_ms(), schema_version],
        )?;
    }
    Ok(a)
}

/// Stores one batch inside the writer's transaction.
fn store_batch(
    tx: &rusqlite::Transaction<'_>,
    sensor_id: i64,
    last_seq: u64,
    events: &[Event],
    now: i64,
) -> rusqlite::Result<BatchOutcome> {
    let (revoked, hw): (bool, i64) =
        tx.query_row("SELECT revoked, high_water_seq FROM sensors WHERE id = ?1", params![sensor_id], |r| {
            Ok((r.get::<_, i64>(0)? != 0, r.get(1)?))
        })?;
    if revoked {
        return Ok(BatchOutcome::Refused("sensor is revoked".into()));
    }
    let hw = hw.max(0) as u64;
    if last_seq <= hw {
        // Already stored (a resend after a lost ack): acknowledge again, store nothing.
        tx.execute("UPDATE sensors SET last_contact_ms = ?2 WHERE id = ?1", params![sensor_id, now])?;
        return Ok(BatchOutcome::Ack(hw));
    }
    let mut evicted: i64 = 0;
    let mut shed: i64 = 0;
    let mut health: Option<String> = None;
    for ev in events {
        if ev.seq <= hw || !crate::db::insert_event(tx, sensor_id, ev)? {
            continue;
        }
        match &ev.detail {
            Detail::EvictionGap { count, .. } => evicted = evicted.saturating_add(*count as i64),
            Detail::Rollup { connections, .. } => shed = shed.saturating_add(*connections as i64),
            Detail::Health(h) => health = serde_json::to_string(h).ok(),
            _ => {}
        }
    }
    tx.execute(
        "UPDATE sensors SET high_water_seq = ?2, last_contact_ms = ?3, evicted_total = evicted_total + ?4,
                shed_total = shed_total + ?5, health_json = COALESCE(?6, health_json)
         WHERE id = ?1",
        params![sensor_id, last_seq as i64, now, evicted, shed, health],
    )?;
    Ok(BatchOutcome::Ack(last_seq))
}

#[cfg(test)]
mod tests {
    use super::*;
    use drosera_uplink::event::{CloseReason, Priority, Protocol, Transport};

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

    #[test]
    fn store_batch_is_exactly_once_and_keeps_health() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = crate::db::open(&dir.path().join("a.db")).unwrap();
        sensors::register(&conn, "pi", "aa", 0).unwrap();
        let id: i64 = conn.query_row("SELECT id FROM sensors", [], |r| r.get(0)).unwrap();
        let mut gap = ev(4);
        gap.detail = Detail::EvictionGap {
            count: 7,
            first_seq: 1,
            last_seq: 7,
            first_time_ms: 0,
            last_time_ms: 0,
            per_protocol: vec![],
            per_priority: vec![],
        };
        let mut health = ev(5);
        health.detail = Detail::Health(drosera_uplink::event::Health { backlog_events: 12, ..Default::default() });
        let batch = vec![ev(1), ev(2), ev(3), gap, health];
        for _ in 0..2 {
            let tx = conn.transaction().unwrap();
            assert!(matches!(store_batch(&tx, id, 5, &batch, 1).unwrap(), BatchOutcome::Ack(5)));
            tx.commit().unwrap();
        }
        // Overlapping resend with one new event.
        let tx = conn.transaction().unwrap();
        assert!(matches!(store_batch(&tx, id, 6, &[ev(5), ev(6)], 1).unwrap(), BatchOutcome::Ack(6)));
        tx.commit().unwrap();
        let n: i64 = conn.query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 6);
        let l = sensors::list(&conn).unwrap();
        assert_eq!((l[0].high_water_seq, l[0].evicted_total), (6, 7));
        assert_eq!(l[0].health.as_ref().unwrap().backlog_events, 12);
        sensors::revoke(&conn, "pi").unwrap();
        let tx = conn.transaction().unwrap();
        assert!(matches!(store_batch(&tx, id, 7, &[ev(7)], 1).unwrap(), BatchOutcome::Refused(_)));
    }
}
