//! Integrations (issue 21): the ECS export, Prometheus `/metrics`, alert webhooks against a
//! local HTTP server, and hpfeeds publishing to a tiny broker written here. Everything on
//! loopback, every wait bounded.
// Tests, benches and examples may panic; the workspace denies unwrap/expect elsewhere.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod analytics_support;
use analytics_support::*;
use drosera_admin::analytics::{self, Query};
use drosera_admin::export::{export, Format};
use drosera_admin::metrics::{Metrics, MetricsConfig};
use drosera_admin::storage::{self, Storage};
use drosera_admin::webhooks::{AlertKind, WebhooksConfig};
use drosera_uplink::event::{Detail, Event, Health, Priority, Protocol, SampleOutcome, Transport};
use std::io::{Read, Write};
use std::net::TcpListener as StdListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

fn event(seq: u64, sensor: &str, protocol: Protocol, detail: Detail) -> Event {
    Event {
        seq,
        time_ms: drosera_admin::clock::now_ms(),
        sensor: sensor.into(),
        transport: Transport::Tcp,
        protocol,
        src_ip: "203.0.113.50".parse().unwrap(),
        src_port: 40000,
        dst_port: 80,
        session_id: seq,
        duration_ms: 5,
        bytes_in: 10,
        bytes_out: 20,
        priority: Priority::Interaction,
        detail,
    }
}

#[test]
fn ecs_export_has_elastic_common_schema_names() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = fixture(&dir.path().join("a.db"));
    analytics::refresh(&mut *c, &enricher()).unwrap();
    let mut out = Vec::new();
    let n = export(&*c, &Query::default(), Format::Ecs, &mut out).unwrap();
    assert_eq!(n, 32);
    let docs: Vec<serde_json::Value> =
        String::from_utf8(out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(docs.len(), 32);
    let first = &docs[0];
    assert_eq!(first["@timestamp"], "2024-05-01T01:01:00.000Z");
    assert_eq!(first["ecs"]["version"], drosera_admin::ecs::ECS_VERSION);
    assert_eq!(first["source"]["ip"], "8.8.8.8");
    assert_eq!(first["source"]["geo"]["country_iso_code"], "US");
    assert_eq!(first["source"]["as"]["number"], 15169);
    assert_eq!(first["user"]["name"], "root");
    assert_eq!(first["event"]["category"], serde_json::json!(["authentication"]));
    assert_eq!(first["event"]["outcome"], "failure");
    assert_eq!(first["drosera"]["password"], "xc3511");
    let payload = docs.iter().find(|d| d["event"]["action"] == "payload").unwrap();
    assert_eq!(payload["file"]["hash"]["sha256"], "ab".repeat(32));
    for d in &docs {
        assert!(d["observer"]["name"].is_string() && d["event"]["dataset"] == "drosera.events", "{d}");
    }
    assert_eq!("ecs".parse::<Format>().unwrap(), Format::Ecs);
}

/// One HTTP request read from a test client socket: (request line + headers, body).
fn read_http(s: &mut std::net::TcpStream) -> (String, Vec<u8>) {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let len = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap())
                })
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                let n = s.read(&mut chunk).unwrap();
                assert!(n > 0);
                buf.extend_from_slice(&chunk[..n]);
            }
            return (head, buf[end + 4..end + 4 + len].to_vec());
        }
        let n = s.read(&mut chunk).unwrap();
        if n == 0 {
            return (String::from_utf8_lossy(&buf).to_string(), Vec::new());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn http_get(addr: std::net::SocketAddr, path: &str, token: Option<&str>) -> (String, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    (head.to_string(), body.to_string())
}

#[test]
fn metrics_are_scraped_with_the_token_and_say_what_the_sensors_report() {
    let dir = tempfile::tempdir().unwrap();
    let db = storage::sqlite::open(&dir.path().join("a.db")).unwrap();
    drosera_admin::sensors::register(&db, "pi-1", "aa", 0).unwrap();
    let id = db.enrollment("pi-1").unwrap().unwrap().sensor_id;
    let health = Health { backlog_events: 17, governor: "soft".into(), ..Health::default() };
    let mut ev = event(1, "pi-1", Protocol::Sensor, Detail::Health(health));
    ev.transport = Transport::Internal;
    let evs = [ev];
    db.commit_batches(&[storage::BatchIn { sensor_id: id, last_seq: 1, events: &evs }], drosera_admin::clock::now_ms())
        .unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "0123456789abcdef0123456789abcdef\n").unwrap();
    let cfg = MetricsConfig { listen: "127.0.0.1:0".into(), bearer_token_file: token_file, ..MetricsConfig::default() };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let shutdown = CancellationToken::new();
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    let metrics = Arc::new(Metrics::new());
    metrics.recovery_run(&drosera_admin::recover::RunStats {
        tried: 3,
        recovered: 2,
        attempts: 100,
        ..Default::default()
    });
    let shared = storage::Shared::new(Box::new(db));
    let stop = shutdown.clone();
    let server = rt.spawn(async move {
        drosera_admin::metrics::serve_listener(listener, &cfg, metrics, shared, stop.cancelled_owned()).await
    });
    let (head, _) = http_get(addr, "/metrics", None);
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    let (head, _) = http_get(addr, "/metrics", Some("0123456789abcdef0123456789abcdeX"));
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    let (head, body) = http_get(addr, "/metrics", Some("0123456789abcdef0123456789abcdef"));
    assert!(head.starts_with("HTTP/1.1 200") && head.contains("openmetrics"), "{head}");
    for line in [
        "drosera_sensor_acked_events_total{sensor=\"pi-1\"} 1",
        "drosera_sensor_backlog_events{sensor=\"pi-1\"} 17",
        "drosera_sensor_governor_state{sensor=\"pi-1\",state=\"soft\"} 1",
        "drosera_sensor_governor_state{sensor=\"pi-1\",state=\"normal\"} 0",
        "drosera_sensor_evicted_events_total{sensor=\"pi-1\"} 0",
        "drosera_sensor_shed_connections_total{sensor=\"pi-1\"} 0",
        "drosera_samples_stored 0",
        "drosera_admin_recovered_passwords_total 2",
        "# EOF",
    ] {
        assert!(body.lines().any(|l| l.starts_with(line)), "{line} missing in:\n{body}");
    }
    assert!(body.contains("drosera_sensor_last_contact_timestamp_seconds{sensor=\"pi-1\"}"), "{body}");
    shutdown.cancel();
    rt.block_on(server).unwrap().unwrap();
}

/// A local HTTP server that answers each request with the next status of `statuses` (then
/// 200) and keeps the JSON bodies.
fn hook_server(statuses: Vec<u16>) -> (std::net::SocketAddr, Arc<Mutex<Vec<serde_json::Value>>>) {
    let l = StdListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    std::thread::spawn(move || {
        let mut statuses = statuses.into_iter();
        for s in l.incoming().take(50) {
            let Ok(mut s) = s else { continue };
            let (head, body) = read_http(&mut s);
            assert!(head.starts_with("POST /hook HTTP/1.1"), "{head}");
            assert!(head.to_ascii_lowercase().contains("content-type: application/json"), "{head}");
            let status = statuses.next().unwrap_or(200);
            if status == 200 {
                g.lock().unwrap().push(serde_json::from_slice(&body).unwrap());
            }
            let _ = write!(s, "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    (addr, got)
}

fn wait_for(mut ok: impl FnMut() -> bool, secs: u64) -> bool {
    let until = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < until {
        if ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    ok()
}

#[test]
fn webhooks_post_alerts_retry_and_count_what_they_drop() {
    // The first POST fails (503) and is retried after a second.
    let (addr, got) = hook_server(vec![503]);
    let dir = tempfile::tempdir().unwrap();
    let db = storage::sqlite::open(&dir.path().join("a.db")).unwrap();
    // A sensor last heard from an hour ago: silent.
    drosera_admin::sensors::register(&db, "quiet", "aa", 0).unwrap();
    db.touch_sensors(&[db.enrollment("quiet").unwrap().unwrap().sensor_id], drosera_admin::clock::now_ms() - 3_600_000)
        .unwrap();
    let cfg = WebhooksConfig {
        urls: vec![format!("http://{addr}/hook")],
        silent_after_s: 600,
        check_interval_s: 1,
        max_per_minute: 4,
        ..WebhooksConfig::default()
    };
    assert!(cfg.validate().is_ok());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let shutdown = CancellationToken::new();
    let metrics = Arc::new(Metrics::new());
    let (tx, rx) = tokio::sync::mpsc::channel(100);
    let task = rt.spawn(drosera_admin::webhooks::run(
        cfg,
        storage::Shared::new(Box::new(db)),
        rx,
        metrics.clone(),
        shutdown.clone(),
    ));
    let gap = Detail::EvictionGap {
        count: 7,
        first_seq: 1,
        last_seq: 7,
        first_time_ms: 0,
        last_time_ms: 0,
        per_protocol: vec![],
        per_priority: vec![],
    };
    let sample = Detail::Sample {
        sha256: [0xab; 32],
        size: 10,
        name: "x.sh".into(),
        source: "http-body".into(),
        outcome: SampleOutcome::Kept,
    };
    let exploit = Detail::Exploit { name: "EternalBlue".into(), cve: "CVE-2017-0144".into(), extra: vec![] };
    for (i, d) in [gap, sample.clone(), sample, exploit.clone(), exploit].into_iter().enumerate() {
        tx.blocking_send(Arc::new(event(i as u64 + 1, "pi-1", Protocol::Smb, d))).unwrap();
    }
    assert!(wait_for(|| got.lock().unwrap().len() >= 4, 30), "{:?}", got.lock().unwrap());
    let alerts: Vec<serde_json::Value> = got.lock().unwrap().clone();
    let kinds: Vec<&str> = alerts.iter().map(|a| a["alert"].as_str().unwrap()).collect();
    for k in [AlertKind::SensorSilent, AlertKind::Evictions, AlertKind::NewSample, AlertKind::NewExploit] {
        assert_eq!(kinds.iter().filter(|x| **x == k.as_str()).count(), 1, "{k:?} once in {kinds:?}");
    }
    let ev = alerts.iter().find(|a| a["alert"] == "evictions").unwrap();
    assert_eq!((ev["sensor"].as_str(), ev["details"]["evicted"].as_u64()), (Some("pi-1"), Some(7)));
    let s = alerts.iter().find(|a| a["alert"] == "new_sample").unwrap();
    assert_eq!(s["details"]["sha256"], "ab".repeat(32));
    let e = alerts.iter().find(|a| a["alert"] == "new_exploit").unwrap();
    assert_eq!(e["details"]["cve"], "CVE-2017-0144");
    let q = alerts.iter().find(|a| a["alert"] == "sensor_silent").unwrap();
    assert_eq!(q["sensor"], "quiet");
    // Over max_per_minute (4 sent): the next alerts are dropped and counted, never sent.
    let more = Detail::Exploit { name: "Another".into(), cve: String::new(), extra: vec![] };
    tx.blocking_send(Arc::new(event(9, "pi-1", Protocol::Smb, more))).unwrap();
    let text = || metrics.encode();
    assert!(
        wait_for(|| text().contains("drosera_admin_webhook_dropped_total{reason=\"rate_limited\"} 1"), 10),
        "{}",
        text()
    );
    let t = text();
    assert!(t.contains("drosera_admin_webhook_deliveries_total{result=\"retried\"} 1"), "{t}");
    assert!(t.contains("drosera_admin_webhook_deliveries_total{result=\"sent\"} 4"), "{t}");
    assert_eq!(got.lock().unwrap().len(), 4);
    shutdown.cancel();
    rt.block_on(task).unwrap();
}

#[test]
fn hpfeeds_publishes_ecs_documents_to_a_broker_after_authenticating() {
    use drosera_admin::hpfeeds::{self, Frame, HpfeedsConfig};
    let l = StdListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret"), "s3cret\n").unwrap();
    let cfg = HpfeedsConfig {
        host: "127.0.0.1".into(),
        port,
        ident: "drosera-test".into(),
        secret_file: dir.path().join("secret"),
        ..HpfeedsConfig::default()
    };
    assert!(cfg.validate().is_ok());
    let secret = hpfeeds::load_secret(&cfg).unwrap();
    assert_eq!(secret, b"s3cret");
    // The broker: the first connection is refused (ERROR, then closed), the second is served: INFO, AUTH checked, then PUBLISH messages.
    let published = Arc::new(Mutex::new(Vec::<(String, String, serde_json::Value)>::new()));
    let p = published.clone();
    let broker = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let _ = s.write_all(&hpfeeds::encode_error("not now"));
        drop(s);
        let (mut s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let nonce = [9u8, 8, 7, 6];
        s.write_all(&hpfeeds::encode_info("test-broker", &nonce).unwrap()).unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let mut authed = false;
        while p.lock().unwrap().len() < 2 {
            match Frame::decode(&buf, hpfeeds::MAX_FRAME).unwrap() {
                Some((f, n)) => {
                    buf.drain(..n);
                    match f {
                        Frame::Auth { ident, hash } => {
                            assert_eq!(ident, "drosera-test");
                            assert_eq!(hash, hpfeeds::auth_hash(&nonce, b"s3cret").to_vec());
                            authed = true;
                        }
                        Frame::Publish { ident, channel, payload } => {
                            assert!(authed, "published before AUTH");
                            p.lock().unwrap().push((ident, channel, serde_json::from_slice(&payload).unwrap()));
                        }
                        other => panic!("unexpected {other:?}"),
                    }
                }
                None => {
                    let n = s.read(&mut chunk).unwrap();
                    assert!(n > 0, "client closed");
                    buf.extend_from_slice(&chunk[..n]);
                }
            }
        }
    });
    let rt = tokio::runtime::Runtime::new().unwrap();
    let shutdown = CancellationToken::new();
    let metrics = Arc::new(Metrics::new());
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let task = rt.spawn(hpfeeds::run(cfg, secret, rx, metrics.clone(), shutdown.clone()));
    let login = Detail::Login {
        username: "root".into(),
        secret: drosera_uplink::event::Secret::Password("123456".into()),
        success: false,
        extra: vec![],
    };
    tx.blocking_send(Arc::new(event(1, "pi-1", Protocol::Telnet, login))).unwrap();
    let cmd = Detail::Command { line: "uname -a".into() };
    tx.blocking_send(Arc::new(event(2, "pi-1", Protocol::Telnet, cmd))).unwrap();
    broker.join().unwrap();
    let got = published.lock().unwrap().clone();
    assert_eq!(got.len(), 2);
    assert_eq!((got[0].0.as_str(), got[0].1.as_str()), ("drosera-test", "drosera.events"));
    assert_eq!(got[0].2["user"]["name"], "root");
    assert_eq!(got[0].2["source"]["ip"], "203.0.113.50");
    assert_eq!(got[0].2["observer"]["name"], "pi-1");
    assert_eq!(got[1].2["process"]["command_line"], "uname -a");
    assert!(
        metrics.encode().contains("drosera_admin_hpfeeds_total{result=\"connect_failed\"} 1"),
        "{}",
        metrics.encode()
    );
    shutdown.cancel();
    rt.block_on(task).unwrap();
}
