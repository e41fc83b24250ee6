//! Shared fixture for the analytics, export, enrichment and dashboard tests: a small admin
//! database with known numbers.
#![allow(dead_code)]
// Test fixtures may panic; the workspace denies unwrap/expect elsewhere.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use drosera_admin::storage::{open_backend, Backend, BatchIn, BatchOutcome, Storage};
use drosera_uplink::event::{CloseReason, Detail, Event, Health, Priority, Protocol, Secret, ShedReason, Transport};
use std::path::Path;

/// True when these tests run on PostgreSQL (`DROSERA_TEST_BACKEND=postgres`, the second pass of
/// `scripts/test.sh`); SQLite otherwise. The tests are the same on both.
pub fn on_postgres() -> bool {
    std::env::var("DROSERA_TEST_BACKEND").as_deref() == Ok("postgres")
}

/// A test database: SQLite at the given path, or a fresh database on the test PostgreSQL.
pub fn location(path: &Path) -> Backend {
    if on_postgres() {
        let url = drosera_admin::testpg::fresh_database()
            .unwrap_or_else(|| panic!("DROSERA_TEST_BACKEND=postgres but PostgreSQL is not installed"));
        Backend::Postgres(url)
    } else {
        Backend::Sqlite(path.to_path_buf())
    }
}

/// An open test database and where it is (to open more handles on it).
pub struct Db {
    store: Box<dyn Storage>,
    pub loc: Backend,
}

impl Db {
    pub fn open(loc: &Backend) -> Db {
        Db { store: open_backend(loc).unwrap(), loc: loc.clone() }
    }

    /// The `[database]` section of an admin config for it.
    pub fn config_section(&self) -> String {
        match &self.loc {
            Backend::Sqlite(p) => format!("[database]\npath = {:?}\n", p.display().to_string()),
            Backend::Postgres(url) => format!("[database]\nurl = {url:?}\n"),
        }
    }

    /// Runs SQL both backends understand, outside the storage interface (fixture set-up).
    pub fn exec(&self, sql: &str) {
        match &self.loc {
            Backend::Sqlite(p) => rusqlite::Connection::open(p).unwrap().execute_batch(sql).unwrap(),
            Backend::Postgres(url) => {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                rt.block_on(async {
                    let (c, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
                    let task = tokio::spawn(conn);
                    c.batch_execute(sql).await.unwrap();
                    drop(c);
                    let _ = task.await;
                });
            }
        }
    }

    /// Raw event rows stored, all sensors.
    pub fn raw_events(&self) -> u64 {
        self.store.list_sensors().unwrap().iter().map(|s| s.events as u64).sum()
    }
}

impl std::ops::Deref for Db {
    type Target = dyn Storage;
    fn deref(&self) -> &Self::Target {
        &*self.store
    }
}

impl std::ops::DerefMut for Db {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut *self.store
    }
}

/// 2024-05-01T00:00:00Z
pub const T0: i64 = 1_714_521_600_000;
pub const HOUR: i64 = 3_600_000;
pub const DAY: i64 = 86_400_000;

pub fn ev(seq: u64, t: i64, proto: Protocol, ip: &str, port: u16, session: u64, detail: Detail) -> Event {
    Event {
        seq,
        time_ms: t,
        sensor: String::new(),
        transport: Transport::Tcp,
        protocol: proto,
        src_ip: ip.parse().unwrap(),
        src_port: 40000,
        dst_port: port,
        session_id: session,
        duration_ms: 10,
        bytes_in: 5,
        bytes_out: 7,
        priority: detail.default_priority(),
        detail,
    }
}

pub fn conn() -> Detail {
    Detail::Connection { first_bytes: b"x".to_vec(), closed_by: CloseReason::ClientClosed }
}

pub fn login(u: &str, p: &str) -> Detail {
    Detail::Login { username: u.into(), secret: Secret::Password(p.into()), success: false, extra: vec![] }
}

/// Stores `events` (in sequence order) for sensor `name` in one batch, as ingest does; the
/// sensor is created (without a certificate) if needed.
pub fn insert(db: &dyn Storage, name: &str, events: &[Event]) {
    if db.enrollment(name).unwrap().is_none() {
        db.register_sensor(name, "", 0).unwrap();
    }
    let id = db.enrollment(name).unwrap().unwrap().sensor_id;
    let last_seq = events.iter().map(|e| e.seq).max().unwrap();
    let out = db.commit_batches(&[BatchIn { sensor_id: id, last_seq, events }], 0).unwrap();
    assert_eq!(out, vec![BatchOutcome::Ack(last_seq)]);
}

/// The fixture. Known numbers (whole range):
/// * attempts 116 = 12 telnet (8.8.8.8, s1) + 3 ssh (1.1.1.1, s2) + 1 http (10.0.0.5, s1)
///   + 100 rolled-up smb (2a00:1450:4001::1, s1); rolled_up 100
/// * logins 10: root/xc3511 x5 + admin/admin x2 (8.8.8.8), root/123456 x3 (1.1.1.1)
/// * attackers 4, countries 4 (US, AU, private, IE)
/// * 1 payload, 1 exploit, 1 download (10.0.0.5); 1 health event (sensor-internal)
/// * the 3 ssh connections are on day 3 (T0 + 2 days), everything else on day 1.
pub fn fixture(path: &Path) -> Db {
    let c = Db::open(&location(path));
    let mut s1 = Vec::new();
    let mut seq = 0;
    let mut next = || {
        seq += 1;
        seq
    };
    for i in 0..12u64 {
        // one session per connection, spread over hours 1..=12 of day 1
        let t = T0 + (i as i64 + 1) * HOUR + 60_000;
        if i < 5 {
            s1.push(ev(next(), t, Protocol::Telnet, "8.8.8.8", 23, 100 + i, login("root", "xc3511")));
        } else if i < 7 {
            s1.push(ev(next(), t, Protocol::Telnet, "8.8.8.8", 23, 100 + i, login("admin", "admin")));
        }
        s1.push(ev(next(), t + 1000, Protocol::Telnet, "8.8.8.8", 23, 100 + i, conn()));
    }
    let t = T0 + 5 * HOUR;
    s1.push(ev(
        next(),
        t,
        Protocol::Http,
        "10.0.0.5",
        80,
        200,
        Detail::HttpRequest {
            method: "POST".into(),
            path: "/cgi-bin/x".into(),
            query: String::new(),
            host: "h".into(),
            user_agent: "curl".into(),
            body_sha256: None,
            body_len: 0,
            extra: vec![],
        },
    ));
    s1.push(ev(
        next(),
        t + 1,
        Protocol::Http,
        "10.0.0.5",
        80,
        200,
        Detail::Payload {
            sha256: [0xab; 32],
            size: 1234,
            name: "x.sh".into(),
            prefix: b"#!".to_vec(),
            truncated: false,
        },
    ));
    s1.push(ev(
        next(),
        t + 2,
        Protocol::Http,
        "10.0.0.5",
        80,
        200,
        Detail::Exploit { name: "shellshock".into(), cve: "CVE-2014-6271".into(), extra: vec![] },
    ));
    s1.push(ev(
        next(),
        t + 3,
        Protocol::Http,
        "10.0.0.5",
        80,
        200,
        Detail::DownloadOffered { url: "http://198.51.100.7/<b>x.sh".into(), tool: "wget".into() },
    ));
    s1.push(ev(next(), t + 4, Protocol::Http, "10.0.0.5", 80, 200, conn()));
    s1.push(ev(
        next(),
        T0 + 6 * HOUR,
        Protocol::Smb,
        "2a00:1450:4001::1",
        445,
        0,
        Detail::Rollup { minute_ms: T0 + 6 * HOUR, reason: ShedReason::RateLimited, connections: 100 },
    ));
    let mut health = ev(
        next(),
        T0 + 7 * HOUR,
        Protocol::Sensor,
        "0.0.0.0",
        0,
        0,
        Detail::Health(Health { backlog_events: 3, governor: "normal".into(), ..Default::default() }),
    );
    health.transport = Transport::Internal;
    health.priority = Priority::System;
    s1.push(health);
    insert(&*c, "s1", &s1);
    let mut s2 = Vec::new();
    for i in 0..3u64 {
        let t = T0 + 2 * DAY + (i as i64) * HOUR + 30_000;
        s2.push(ev(i * 2 + 1, t, Protocol::Ssh, "1.1.1.1", 22, 10 + i, login("root", "123456")));
        s2.push(ev(i * 2 + 2, t + 500, Protocol::Ssh, "1.1.1.1", 22, 10 + i, conn()));
    }
    insert(&*c, "s2", &s2);
    let h = Health {
        uptime_s: 60,
        rss_bytes: 20 << 20,
        mem_available_bytes: 300 << 20,
        cpu_permille: 125,
        disk_free_bytes: 1 << 30,
        store_bytes: 5 << 20,
        cap_bytes: 64 << 20,
        backlog_events: 3,
        evicted_total: 7,
        shed_total: 100,
        active_connections: 2,
        governor: "normal".into(),
    };
    c.exec(&format!(
        "UPDATE sensors SET last_contact_ms = {}, health_json = '{}', evicted_total = 7, shed_total = 100 WHERE name = 's1'",
        T0 + 7 * HOUR,
        serde_json::to_string(&h).unwrap().replace('\'', "''")
    ));
    c
}

pub fn enricher() -> drosera_admin::enrich::Enricher {
    drosera_admin::enrich::Enricher::new(&Default::default()).unwrap()
}

/// A dashboard served from a background thread on 127.0.0.1:0; stops when dropped.
pub struct Served {
    pub addr: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub fn serve_dashboard(loc: &Backend, cookie_secure: bool) -> Served {
    serve_dashboard_cfg(loc, drosera_admin::dashboard::DashboardConfig { cookie_secure, ..Default::default() })
}

/// [`serve_dashboard`] with a whole `[dashboard]` config (its `listen` is ignored).
pub fn serve_dashboard_cfg(loc: &Backend, cfg: drosera_admin::dashboard::DashboardConfig) -> Served {
    serve_dashboard_drill(loc, cfg, Default::default())
}

/// [`serve_dashboard_cfg`] with the drill-down caps of a `[drill]` section.
pub fn serve_dashboard_drill(
    loc: &Backend,
    cfg: drosera_admin::dashboard::DashboardConfig,
    drill: drosera_admin::analytics::DrillConfig,
) -> Served {
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    std_listener.set_nonblocking(true).unwrap();
    let addr = std_listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let loc = loc.clone();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        // Opened outside the async block: a storage handle blocks (see `storage::Shared`).
        let store = drosera_admin::storage::Shared::new(open_backend(&loc).unwrap());
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
            drosera_admin::dashboard::serve_listener(
                listener,
                &cfg,
                drill,
                store,
                std::sync::Arc::new(enricher()),
                async move {
                    let _ = rx.await;
                },
            )
            .await
            .unwrap();
        });
    });
    Served { addr, stop: Some(tx), thread: Some(thread) }
}

/// A minimal HTTP/1.0 client (the dashboard must work with anything that speaks HTTP).
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    pub fn cookies(&self) -> Vec<&str> {
        self.headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie")).map(|(_, v)| v.as_str()).collect()
    }
}

pub fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> HttpResponse {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(30))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let raw = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let mut lines = head.lines();
    let status = lines.next().unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    let headers =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_string(), v.trim().to_string())).collect();
    HttpResponse { status, headers, body: body.to_string() }
}
