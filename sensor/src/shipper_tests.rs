//! The shipper against a scripted admin over real mutual TLS (certificates made here with
//! rcgen): what it frees and when, how it retries, and what it does with a rejected batch.

use super::*;
use drosera_uplink::event::{CloseReason, Priority, Protocol, Transport};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// A CA, an admin certificate for 127.0.0.1 and a sensor client certificate, as files.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str, mode: u32| {
            drosera_uplink::tls::write_file_atomic(&dir.path().join(name), text.as_bytes(), mode).unwrap()
        };
        let ca_key = KeyPair::generate().unwrap();
        let mut cp = CertificateParams::default();
        cp.distinguished_name = DistinguishedName::new();
        cp.distinguished_name.push(DnType::CommonName, "test CA");
        cp.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        cp.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        let ca = cp.self_signed(&ca_key).unwrap();
        let leaf = |names: Vec<String>, cn: &str, eku: ExtendedKeyUsagePurpose| {
            let mut p = CertificateParams::new(names).unwrap();
            p.distinguished_name = DistinguishedName::new();
            p.distinguished_name.push(DnType::CommonName, cn);
            p.extended_key_usages = vec![eku];
            p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            let key = KeyPair::generate().unwrap();
            let cert = p.signed_by(&key, &ca, &ca_key).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let (server, server_key) = leaf(vec!["127.0.0.1".into()], "admin", ExtendedKeyUsagePurpose::ServerAuth);
        let (client, client_key) = leaf(vec!["s1".into()], "s1", ExtendedKeyUsagePurpose::ClientAuth);
        write("ca.pem", &ca.pem(), 0o644);
        write("server.pem", &server, 0o644);
        write("server.key", &server_key, 0o600);
        write("sensor.pem", &client, 0o644);
        write("sensor.key", &client_key, 0o600);
        Pki { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn uplink(&self, admin: String, batch_max_events: usize) -> UplinkSection {
        UplinkSection {
            admin: admin.into(),
            server_name: String::new(),
            ca_cert: self.path("ca.pem"),
            cert: self.path("sensor.pem"),
            key: self.path("sensor.key"),
            batch_max_events,
            batch_max_bytes: 1 << 20,
            backoff_max_s: 1,
        }
    }
}

/// An in-memory store: events with their seqs, and what was freed.
#[derive(Clone, Default)]
struct MemBacklog {
    inner: Arc<Mutex<MemInner>>,
    /// Signalled by `push`, like the store writer's commits.
    committed: Arc<tokio::sync::Notify>,
}

#[derive(Default)]
struct MemInner {
    events: Vec<Event>,
    acked: u64,
    /// Every `ack` call, in order.
    acks: Vec<u64>,
}

impl MemBacklog {
    fn with_events(n: u64) -> MemBacklog {
        let b = MemBacklog::default();
        b.push(1, n);
        b
    }

    /// Appends events with seqs `from..=to`.
    fn push(&self, from: u64, to: u64) {
        let mut g = self.inner.lock().unwrap();
        for seq in from..=to {
            g.events.push(event(seq));
        }
        self.committed.notify_one();
    }

    fn acked(&self) -> u64 {
        self.inner.lock().unwrap().acked
    }

    fn acks(&self) -> Vec<u64> {
        self.inner.lock().unwrap().acks.clone()
    }

    fn unfreed(&self) -> usize {
        let g = self.inner.lock().unwrap();
        g.events.iter().filter(|e| e.seq > g.acked).count()
    }
}

impl Backlog for MemBacklog {
    type Error = std::convert::Infallible;
    fn read_batch(&self, after_seq: u64, max_events: usize, _max_bytes: usize) -> Result<Vec<Event>, Self::Error> {
        let g = self.inner.lock().unwrap();
        Ok(g.events.iter().filter(|e| e.seq > after_seq).take(max_events).cloned().collect())
    }
    fn ack(&self, upto_seq: u64) -> Result<(), Self::Error> {
        let mut g = self.inner.lock().unwrap();
        assert!(upto_seq >= g.acked, "ack went backwards: {upto_seq} < {}", g.acked);
        let newest = g.events.last().map(|e| e.seq).unwrap_or(0);
        assert!(upto_seq <= newest, "acked {upto_seq}, beyond the newest stored event {newest}");
        g.acked = upto_seq;
        g.acks.push(upto_seq);
        Ok(())
    }
    fn acked_seq(&self) -> u64 {
        self.inner.lock().unwrap().acked
    }
    fn committed(&self) -> impl std::future::Future<Output = ()> + Send {
        let n = self.committed.clone();
        async move { n.notified().await }
    }
}

fn event(seq: u64) -> Event {
    Event {
        seq,
        time_ms: 1_700_000_000_000 + seq as i64,
        sensor: "s1".into(),
        transport: Transport::Tcp,
        protocol: Protocol::Http,
        src_ip: IpAddr::V4(Ipv4Addr::new(192, 0, 2, (seq % 250) as u8)),
        src_port: 40000,
        dst_port: 80,
        session_id: seq,
        duration_ms: 1,
        bytes_in: 10,
        bytes_out: 20,
        priority: Priority::Noise,
        detail: Detail::Connection { first_bytes: b"GET /".to_vec(), closed_by: CloseReason::ClientClosed },
    }
}

/// What the scripted admin does with one batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Answer {
    Ack,
    /// Acknowledge this sequence number instead of the batch's last one.
    AckUpTo(u64),
    Reject,
    /// Close the connection without answering.
    Hangup,
}

/// What the scripted admin does with a hello.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Greeting {
    Accept,
    Refuse,
    /// Behave like a protocol-version-1 admin: refuse any other version with its fixed message.
    OldAdmin,
}

type BatchScript = dyn Fn(usize, u64, u64) -> Answer + Send + Sync;
type HelloScript = dyn Fn(usize) -> Greeting + Send + Sync;

/// (connection, first_seq, last_seq, seqs decoded from the payload).
type SeenBatch = (usize, u64, u64, Vec<u64>);

/// What the scripted admin saw.
#[derive(Default)]
struct Seen {
    connections: AtomicUsize,
    /// The protocol version of every hello.
    versions: Mutex<Vec<u16>>,
    batches: Mutex<Vec<SeenBatch>>,
    /// Seqs the admin "committed" (acknowledged).
    committed: Mutex<BTreeSet<u64>>,
}

/// Starts an admin on 127.0.0.1 that answers hellos and batches as scripted.
async fn scripted_admin(pki: &Pki, hello: Arc<HelloScript>, batch: Arc<BatchScript>) -> (String, Arc<Seen>) {
    let cfg = drosera_uplink::tls::server_config(&pki.path("ca.pem"), &pki.path("server.pem"), &pki.path("server.key"))
        .unwrap();
    let acceptor = TlsAcceptor::from(cfg);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Seen::default());
    let seen2 = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let conn = seen2.connections.fetch_add(1, Ordering::SeqCst);
            let (acceptor, hello, batch, seen) = (acceptor.clone(), hello.clone(), batch.clone(), seen2.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                let Ok(Some(Frame::Hello { sensor, protocol_version, .. })) =
                    frame::read_frame(&mut tls, MAX_CONTROL_FRAME).await
                else {
                    return;
                };
                assert_eq!(sensor, "s1");
                seen.versions.lock().unwrap().push(protocol_version);
                if hello(conn) == Greeting::OldAdmin && protocol_version != 1 {
                    // drosera-admin 0.1's exact refusal.
                    let reason = format!("protocol version {protocol_version} is not supported (admin speaks 1)");
                    let _ = frame::write_frame(&mut tls, &Frame::Refused { reason }).await;
                    return;
                }
                if hello(conn) == Greeting::Refuse {
                    let _ = frame::write_frame(&mut tls, &Frame::Refused { reason: "revoked".into() }).await;
                    return;
                }
                let high = seen.committed.lock().unwrap().last().copied().unwrap_or(0);
                let ack = Frame::HelloAck {
                    schema_version: SCHEMA_VERSION,
                    high_water_seq: high,
                    max_batch_events: 100_000,
                    max_batch_bytes: 64 << 20,
                };
                if frame::write_frame(&mut tls, &ack).await.is_err() {
                    return;
                }
                while let Ok(Some(f)) = frame::read_frame(&mut tls, 64 << 20).await {
                    let answer = match f {
                        Frame::Batch { first_seq, last_seq, payload, .. } => {
                            let events =
                                codec::decode(codec::CODEC_ZSTD_POSTCARD, &payload, codec::DecodeLimits::default())
                                    .unwrap();
                            let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
                            seen.batches.lock().unwrap().push((conn, first_seq, last_seq, seqs.clone()));
                            match batch(conn, first_seq, last_seq) {
                                Answer::Ack => {
                                    seen.committed.lock().unwrap().extend(seqs);
                                    Frame::Ack { upto_seq: last_seq }
                                }
                                Answer::AckUpTo(n) => {
                                    seen.committed.lock().unwrap().extend(seqs);
                                    Frame::Ack { upto_seq: n }
                                }
                                Answer::Reject => Frame::Rejected { first_seq, last_seq, reason: "scripted".into() },
                                Answer::Hangup => return,
                            }
                        }
                        Frame::Ping => Frame::Pong,
                        other => panic!("unexpected {other:?}"),
                    };
                    if frame::write_frame(&mut tls, &answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr.to_string(), seen)
}

/// A data directory and an event sink for a shipper whose rejection reports the test does not
/// read (the directory lives as long as the returned guard).
fn unwatched() -> (ShipperContext, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let (sink, _reports) = EventSink::new(16, Arc::new(crate::rollup::RollupTable::new(16)));
    (
        ShipperContext {
            data_dir: dir.path().to_path_buf(),
            sink,
            samples: None,
            updates: None,
            handover: CancellationToken::new(),
            health_shipped: None,
        },
        dir,
    )
}

/// Runs the shipper until `done` holds (checked every 20 ms) or 20 s pass; then shuts it down.
async fn ship_until(
    cfg: UplinkSection,
    backlog: MemBacklog,
    ctx: ShipperContext,
    done: impl Fn(&MemBacklog) -> bool,
) -> bool {
    let stop = CancellationToken::new();
    let task = tokio::spawn(run(cfg, Arc::from("s1"), backlog.clone(), ctx, stop.clone()));
    let until = Instant::now() + Duration::from_secs(20);
    let mut ok = false;
    while Instant::now() < until {
        if done(&backlog) {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel();
    let r = tokio::time::timeout(Duration::from_secs(10), task).await;
    assert!(matches!(r, Ok(Ok(Ok(())))), "the shipper did not stop cleanly: {r:?}");
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ships_everything_in_order_and_frees_only_what_was_acknowledged() {
    let pki = Pki::new();
    let (addr, seen) = scripted_admin(&pki, Arc::new(|_| Greeting::Accept), Arc::new(|_, _, _| Answer::Ack)).await;
    let backlog = MemBacklog::with_events(95);
    let (ctx, _data) = unwatched();
    let ok = ship_until(pki.uplink(addr, 10), backlog.clone(), ctx, |b| b.acked() == 95).await;
    assert!(ok, "not everything was acknowledged: acked {}", backlog.acked());
    let batches = seen.batches.lock().unwrap().clone();
    assert_eq!(batches.len(), 10, "95 events in batches of at most 10");
    let mut expect = 1;
    for (_, first, last, seqs) in &batches {
        assert_eq!(*first, expect);
        assert_eq!(seqs.first(), Some(first));
        assert_eq!(seqs.last(), Some(last));
        assert!(seqs.len() <= 10);
        expect = last + 1;
    }
    assert_eq!(expect, 96);
    // Frees follow the admin's acks: increasing, each a batch end, never beyond what it committed.
    let acks = backlog.acks();
    assert!(acks.windows(2).all(|w| w[0] < w[1]), "acks not increasing: {acks:?}");
    assert!(acks.iter().all(|a| batches.iter().any(|b| b.2 == *a)), "freed at a seq no batch ended on: {acks:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_1_admin_gets_a_version_1_hello_and_every_event() {
    let pki = Pki::new();
    let (addr, seen) = scripted_admin(&pki, Arc::new(|_| Greeting::OldAdmin), Arc::new(|_, _, _| Answer::Ack)).await;
    let backlog = MemBacklog::with_events(25);
    let (ctx, _data) = unwatched();
    let ok = ship_until(pki.uplink(addr, 10), backlog.clone(), ctx, |b| b.acked() == 25).await;
    assert!(ok, "acked {}", backlog.acked());
    let versions = seen.versions.lock().unwrap().clone();
    assert_eq!(versions.first(), Some(&PROTOCOL_VERSION), "a new sensor tries its own version first");
    assert_eq!(versions.get(1), Some(&1), "then falls back to version 1: {versions:?}");
    assert!(versions[1..].iter().all(|v| *v == 1), "and stays there: {versions:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hangup_frees_nothing_and_the_next_connection_sends_the_batch_again() {
    let pki = Pki::new();
    // The first connection hangs up on every batch, without an answer; later ones acknowledge.
    let (addr, seen) = scripted_admin(
        &pki,
        Arc::new(|_| Greeting::Accept),
        Arc::new(|conn, _, _| if conn == 0 { Answer::Hangup } else { Answer::Ack }),
    )
    .await;
    let backlog = MemBacklog::with_events(30);
    let (ctx, _data) = unwatched();
    let ok = ship_until(pki.uplink(addr, 10), backlog.clone(), ctx, |b| b.acked() == 30).await;
    assert!(ok, "acked {}", backlog.acked());
    let batches = seen.batches.lock().unwrap().clone();
    let first_conn: Vec<_> = batches.iter().filter(|b| b.0 == 0).collect();
    assert!(!first_conn.is_empty(), "the first connection saw no batch");
    // Nothing was freed on the strength of the connection that never answered: the batch it saw
    // went again on a later connection, and every seq was committed.
    for (_, first, last, _) in &first_conn {
        assert!(batches.iter().any(|b| b.0 > 0 && b.1 == *first && b.2 == *last), "batch {first}..={last} not resent");
    }
    assert_eq!(seen.committed.lock().unwrap().len(), 30);
    assert!(seen.connections.load(Ordering::SeqCst) >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_wakes_an_idle_shipper_before_its_fallback() {
    let pki = Pki::new();
    let (addr, _seen) = scripted_admin(&pki, Arc::new(|_| Greeting::Accept), Arc::new(|_, _, _| Answer::Ack)).await;
    let backlog = MemBacklog::with_events(2);
    let (ctx, _data) = unwatched();
    let stop = CancellationToken::new();
    let task = tokio::spawn(run(pki.uplink(addr, 10), Arc::from("s1"), backlog.clone(), ctx, stop.clone()));
    let wait_for = |acked: u64, within: Duration| {
        let b = backlog.clone();
        async move {
            let until = Instant::now() + within;
            while b.acked() < acked && Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            b.acked() >= acked
        }
    };
    assert!(wait_for(2, Duration::from_secs(20)).await, "the first events were not shipped");
    // Idle now: the shipper sleeps on its fallback timer, which started at least this long ago.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pushed = Instant::now();
    backlog.push(3, 4);
    // The fallback could wake it no sooner than IDLE_FALLBACK - 300 ms after the push; shipping
    // well before that proves the commit signal woke it.
    let limit = IDLE_FALLBACK - Duration::from_secs(1);
    let shipped = wait_for(4, limit).await;
    let took = pushed.elapsed();
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    assert!(shipped, "events committed to an idle shipper waited {took:?}: no wake-up from the commit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ack_beyond_what_was_sent_frees_only_what_was_sent() {
    let pki = Pki::new();
    // A confused (or hostile) admin acknowledges far more than it was sent.
    let (addr, _seen) =
        scripted_admin(&pki, Arc::new(|_| Greeting::Accept), Arc::new(|_, _, _| Answer::AckUpTo(1_000_000))).await;
    let backlog = MemBacklog::with_events(5);
    let b2 = backlog.clone();
    let (ctx, _data) = unwatched();
    let ok = ship_until(pki.uplink(addr, 10), backlog.clone(), ctx, move |b| {
        // Once the first five are freed, events 6..=8 arrive; they must still be shipped.
        if b.acked() == 5 && b.inner.lock().unwrap().events.len() == 5 {
            b2.push(6, 8);
        }
        b.acked() == 8
    })
    .await;
    assert!(ok, "acked {}", backlog.acked());
    // MemBacklog::ack asserts that nothing beyond the newest stored event is ever freed.
    assert_eq!(backlog.acks(), vec![5, 8]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_batch_is_kept_aside_reported_and_skipped() {
    let pki = Pki::new();
    let data = tempfile::tempdir().unwrap();
    let (addr, seen) = scripted_admin(
        &pki,
        Arc::new(|_| Greeting::Accept),
        Arc::new(|_, first, _| if first == 11 { Answer::Reject } else { Answer::Ack }),
    )
    .await;
    let rollups = Arc::new(crate::rollup::RollupTable::new(16));
    let (sink, mut reports) = EventSink::new(16, rollups);
    let ctx = ShipperContext {
        data_dir: data.path().to_path_buf(),
        sink,
        samples: None,
        updates: None,
        handover: CancellationToken::new(),
        health_shipped: None,
    };
    let backlog = MemBacklog::with_events(25);
    let ok = ship_until(pki.uplink(addr, 10), backlog.clone(), ctx, |b| b.acked() == 25).await;
    assert!(ok, "shipping stopped at the rejected batch: acked {}", backlog.acked());
    // The admin committed everything but the rejected batch.
    let committed = seen.committed.lock().unwrap().clone();
    assert_eq!(committed, (1..=10).chain(21..=25).collect::<BTreeSet<u64>>());
    // The batch is kept, byte for byte decodable, with its reason.
    let kept = data.path().join("rejected/batch-11-20.postcard.zst");
    let bytes = std::fs::read(&kept).expect("the rejected batch is kept under data_dir/rejected/");
    let events = codec::decode(codec::CODEC_ZSTD_POSTCARD, &bytes, codec::DecodeLimits::default()).unwrap();
    assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), (11..=20).collect::<Vec<_>>());
    assert_eq!(std::fs::read_to_string(kept.with_extension("reason.txt")).unwrap(), "scripted");
    // And reported as an event that will itself be shipped.
    let report = reports.try_recv().expect("the rejection was reported as an event");
    match report.detail {
        Detail::Extension { kind, fields } => {
            assert_eq!(kind, "uplink_batch_rejected");
            let get = |k: &str| fields.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap_or_default();
            assert_eq!(get("first_seq"), "11");
            assert_eq!(get("last_seq"), "20");
            assert_eq!(get("reason"), "scripted");
            assert_eq!(get("kept_at"), kept.display().to_string());
        }
        other => panic!("unexpected report {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_sensor_keeps_trying_and_ships_once_let_in() {
    let pki = Pki::new();
    // Refused on the first three connections (revoked, then re-enrolled, say).
    let (addr, seen) = scripted_admin(
        &pki,
        Arc::new(|conn| if conn < 3 { Greeting::Refuse } else { Greeting::Accept }),
        Arc::new(|_, _, _| Answer::Ack),
    )
    .await;
    let backlog = MemBacklog::with_events(7);
    let (ctx, _data) = unwatched();
    let ok = ship_until(pki.uplink(addr, 10), backlog.clone(), ctx, |b| b.acked() == 7).await;
    assert!(ok, "acked {}", backlog.acked());
    assert!(seen.connections.load(Ordering::SeqCst) >= 4);
    assert!(seen.batches.lock().unwrap().iter().all(|b| b.0 >= 3), "a batch went to a connection that was refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_with_a_certificate_from_another_ca_gets_nothing() {
    let pki = Pki::new();
    let impostor = Pki::new();
    // The impostor admin would acknowledge everything; the sensor must not talk to it at all.
    let (addr, seen) = scripted_admin(&impostor, Arc::new(|_| Greeting::Accept), Arc::new(|_, _, _| Answer::Ack)).await;
    let backlog = MemBacklog::with_events(3);
    let seen2 = seen.clone();
    let (ctx, _data) = unwatched();
    let ok =
        ship_until(pki.uplink(addr, 10), backlog.clone(), ctx, move |_| seen2.connections.load(Ordering::SeqCst) >= 2)
            .await;
    assert!(ok, "the sensor did not retry");
    assert!(seen.batches.lock().unwrap().is_empty(), "a batch was sent to an admin the sensor's CA did not sign");
    assert_eq!(backlog.acked(), 0);
    assert_eq!(backlog.unfreed(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_list_fails_over_to_the_next_admin_and_stays_there() {
    let pki = Pki::new();
    // Admin 1 hangs up on every batch; admin 2 acknowledges. A third address refuses TCP.
    let (bad, bad_seen) =
        scripted_admin(&pki, Arc::new(|_| Greeting::Accept), Arc::new(|_, _, _| Answer::Hangup)).await;
    let (good, good_seen) = scripted_admin(&pki, Arc::new(|_| Greeting::Accept), Arc::new(|_, _, _| Answer::Ack)).await;
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let mut cfg = pki.uplink(dead, 10);
    cfg.admin.0.extend([bad, good]);
    let backlog = MemBacklog::with_events(40);
    let (ctx, _data) = unwatched();
    let ok = ship_until(cfg, backlog.clone(), ctx, |b| b.acked() == 40).await;
    assert!(ok, "acked {}", backlog.acked());
    assert!(bad_seen.connections.load(Ordering::SeqCst) >= 1, "the second admin was tried");
    assert_eq!(good_seen.committed.lock().unwrap().len(), 40, "the third admin has everything");
    // Once shipping works it keeps to that admin (one connection was enough).
    assert_eq!(good_seen.connections.load(Ordering::SeqCst), 1);
}

#[test]
fn the_admin_key_takes_one_address_or_a_list() {
    let base = "[uplink]\nca_cert = \"/c\"\ncert = \"/s\"\nkey = \"/k\"\n";
    let parse =
        |admin: &str| crate::config::Config::parse(&format!("{base}admin = {admin}\n"), std::path::Path::new("x"));
    assert_eq!(parse("\"a:1\"").unwrap().uplink.unwrap().admin.0, vec!["a:1".to_string()]);
    assert_eq!(parse("[\"a:1\", \"b:2\"]").unwrap().uplink.unwrap().admin.0, vec!["a:1".to_string(), "b:2".into()]);
    for bad in ["[]", "[\"a:1\", \"b\"]", "7"] {
        let e = parse(bad).unwrap_err().to_string();
        assert!(e.contains("uplink.admin") || e.contains("admin"), "{bad}: {e}");
    }
}
