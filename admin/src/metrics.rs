//! Prometheus `/metrics` (OpenMetrics text, the `prometheus-client` crate).
//!
//! # Where it listens, and why
//! On its own address (`[metrics] listen`, off by default), never on the dashboard's: a
//! scraper is a machine on the monitoring network, the dashboard is for people behind a login,
//! and the two are firewalled differently. A loopback address needs no credentials; any other
//! address requires a bearer token (`bearer_token_file`, checked in constant time) or the
//! config is refused, so the sensors' health is never published unauthenticated by accident.
//!
//! # What it says
//! * Per sensor, from the database (read at most every `min_refresh_s`, whatever the scrape
//!   rate): last contact, acknowledged sequence number (`rate()` of it is the ingest rate),
//!   events stored, evictions and shed connections (totals the sensors report), and from its
//!   last health sample the backlog, the governor state (one series per state, 1 for the
//!   current), memory, disk, store size and connections.
//! * The samples held and their bytes.
//! * This process: events committed per sensor since start (the tap), each integration's
//!   queue (handed over / shed), password recovery runs, webhooks and hpfeeds deliveries.
//!
//! An example alert rule for a silent sensor is `admin/examples/prometheus-alerts.yml`.

use crate::storage::{self, SensorRecord};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// `[metrics]`: the Prometheus endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// `host:port` of the endpoint (`GET /metrics`); empty: no endpoint.
    pub listen: String,
    /// A file holding the bearer token scrapers must send (`Authorization: Bearer TOKEN`);
    /// required unless `listen` is a loopback address. Empty: no token.
    pub bearer_token_file: PathBuf,
    /// Scrapes served at once; more get 503.
    pub max_concurrent_requests: usize,
    /// The database is read at most this often (seconds); scrapes in between get the last read.
    pub min_refresh_s: u64,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: String::new(),
            bearer_token_file: PathBuf::new(),
            max_concurrent_requests: 4,
            min_refresh_s: 5,
        }
    }
}

impl MetricsConfig {
    /// The address to listen on, if the endpoint is on.
    pub fn addr(&self) -> Option<SocketAddr> {
        self.listen.parse().ok()
    }

    /// (key, problem, fix) of the first bad value.
    pub fn validate(&self) -> Result<(), (String, String, String)> {
        let bad = |k: &str, p: String, f: &str| Err((format!("metrics.{k}"), p, f.to_string()));
        if self.listen.is_empty() {
            return Ok(());
        }
        let Some(addr) = self.addr() else {
            return bad("listen", format!("{:?} is not an address:port", self.listen), "write e.g. \"127.0.0.1:9473\"");
        };
        if !addr.ip().is_loopback() && self.bearer_token_file.as_os_str().is_empty() {
            return bad(
                "bearer_token_file",
                format!("is empty while metrics.listen ({addr}) is not a loopback address"),
                "name a file holding a long random token (Prometheus: authorization.credentials_file), or listen on 127.0.0.1",
            );
        }
        if self.max_concurrent_requests == 0 {
            return bad("max_concurrent_requests", "must be at least 1".into(), "use the default, 4");
        }
        if self.min_refresh_s == 0 {
            return bad("min_refresh_s", "must be at least 1 second".into(), "use the default, 5");
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("cannot listen on metrics.listen {addr}: {error}")]
    Bind { addr: SocketAddr, error: std::io::Error },
    #[error("cannot read metrics.bearer_token_file {path}: {error}")]
    Token { path: PathBuf, error: String },
    #[error("metrics server: {0}")]
    Io(#[from] std::io::Error),
}

/// What the database said at the last refresh.
#[derive(Debug, Default, Clone)]
struct Snapshot {
    sensors: Vec<SensorRecord>,
    samples: (i64, i64),
    /// Wall clock of the read (seconds).
    read_at_s: f64,
}

/// Per-label counters ("reason", "result", ...).
type Labelled = Family<Vec<(String, String)>, Counter>;

/// The admin's metrics: process counters and the database snapshot.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    snapshot: Arc<Mutex<Snapshot>>,
    refreshed: Mutex<Option<Instant>>,
    pub recovery_runs: Counter,
    pub recovery_tried: Counter,
    pub recovered: Counter,
    pub recovery_attempts: Counter,
    /// Webhook deliveries by result (`sent`, `failed`, `retried`).
    pub webhooks: Labelled,
    /// Webhook alerts not sent, by reason (`queue_full`, `rate_limited`).
    pub webhooks_dropped: Labelled,
    /// hpfeeds publishes by result (`published`, `dropped`, `connect_failed`).
    pub hpfeeds: Labelled,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let snapshot = Arc::new(Mutex::new(Snapshot::default()));
        let m = Metrics {
            registry: Registry::default(),
            snapshot: snapshot.clone(),
            refreshed: Mutex::new(None),
            recovery_runs: Counter::default(),
            recovery_tried: Counter::default(),
            recovered: Counter::default(),
            recovery_attempts: Counter::default(),
            webhooks: Labelled::default(),
            webhooks_dropped: Labelled::default(),
            hpfeeds: Labelled::default(),
        };
        let p = "drosera_admin";
        registry.register(format!("{p}_recovery_runs"), "Password recovery runs", m.recovery_runs.clone());
        registry.register(
            format!("{p}_recovery_tried"),
            "Challenge-responses checked against the whole candidate list",
            m.recovery_tried.clone(),
        );
        registry.register(format!("{p}_recovered_passwords"), "Passwords recovered", m.recovered.clone());
        registry.register(
            format!("{p}_recovery_proofs"),
            "Proofs computed by password recovery",
            m.recovery_attempts.clone(),
        );
        registry.register(format!("{p}_webhook_deliveries"), "Webhook POSTs by result", m.webhooks.clone());
        registry.register(
            format!("{p}_webhook_dropped"),
            "Webhook alerts not sent, by reason",
            m.webhooks_dropped.clone(),
        );
        registry.register(format!("{p}_hpfeeds"), "hpfeeds publishing by result", m.hpfeeds.clone());
        registry.register_collector(Box::new(DbCollector { snapshot }));
        registry.register_collector(Box::new(TapCollector));
        Metrics { registry, ..m }
    }

    /// Adds one password recovery run.
    pub fn recovery_run(&self, s: &crate::recover::RunStats) {
        self.recovery_runs.inc();
        self.recovery_tried.inc_by(s.tried as u64);
        self.recovered.inc_by(s.recovered as u64);
        self.recovery_attempts.inc_by(s.attempts);
    }

    /// Counts one of a labelled family.
    pub fn count(family: &Labelled, key: &str, value: &str) {
        family.get_or_create(&vec![(key.to_string(), value.to_string())]).inc();
    }

    /// Reads the database again if the last read is older than `min`.
    pub async fn refresh(&self, db: &storage::Shared, min: Duration) {
        {
            let Ok(mut r) = self.refreshed.lock() else { return };
            if r.is_some_and(|t| t.elapsed() < min) {
                return;
            }
            *r = Some(Instant::now());
        }
        let read = db.run(|db| Ok::<_, storage::StorageError>((db.list_sensors()?, db.sample_totals()?))).await;
        match read {
            Ok(Ok((sensors, samples))) => {
                if let Ok(mut s) = self.snapshot.lock() {
                    *s = Snapshot { sensors, samples, read_at_s: crate::clock::now_ms() as f64 / 1000.0 };
                }
            }
            Ok(Err(e)) | Err(e) => tracing::warn!(error = %e, "metrics: reading the database failed"),
        }
    }

    /// The OpenMetrics text of everything.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "metrics: encoding failed");
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

fn gauge_family<V: Copy + Into<f64>>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(Vec<(String, String)>, V)],
) -> Result<(), std::fmt::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let g = ConstGauge::new(0.0f64);
    let mut me = enc.encode_descriptor(name, help, None, g.metric_type())?;
    for (labels, v) in rows {
        ConstGauge::new((*v).into()).encode(me.encode_family(labels)?)?;
    }
    Ok(())
}

fn counter_family(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(Vec<(String, String)>, u64)],
) -> Result<(), std::fmt::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let c = ConstCounter::new(0u64);
    let mut me = enc.encode_descriptor(name, help, None, c.metric_type())?;
    for (labels, v) in rows {
        ConstCounter::new(*v).encode(me.encode_family(labels)?)?;
    }
    Ok(())
}

fn sensor(name: &str) -> Vec<(String, String)> {
    vec![("sensor".to_string(), name.to_string())]
}

/// The database snapshot as metric families.
#[derive(Debug)]
struct DbCollector {
    snapshot: Arc<Mutex<Snapshot>>,
}

impl Collector for DbCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = match self.snapshot.lock() {
            Ok(s) => s.clone(),
            Err(_) => return Ok(()),
        };
        let active: Vec<&SensorRecord> = s.sensors.iter().filter(|r| !r.revoked).collect();
        let g = |f: &dyn Fn(&SensorRecord) -> Option<f64>| -> Vec<(Vec<(String, String)>, f64)> {
            active.iter().filter_map(|r| f(r).map(|v| (sensor(&r.name), v))).collect()
        };
        let c = |f: &dyn Fn(&SensorRecord) -> i64| -> Vec<(Vec<(String, String)>, u64)> {
            active.iter().map(|r| (sensor(&r.name), f(r).max(0) as u64)).collect()
        };
        gauge_family(
            &mut enc,
            "drosera_sensor_last_contact_timestamp_seconds",
            "Last time the sensor was heard from",
            &g(&|r| r.last_contact_ms.map(|ms| ms as f64 / 1000.0)),
        )?;
        gauge_family(
            &mut enc,
            "drosera_sensor_snapshot_timestamp_seconds",
            "When the admin read these sensor values from its database",
            &g(&|_| Some(s.read_at_s)),
        )?;
        counter_family(
            &mut enc,
            "drosera_sensor_acked_events",
            "Highest event sequence number stored (rate() is the ingest rate)",
            &c(&|r| r.high_water_seq),
        )?;
        gauge_family(
            &mut enc,
            "drosera_sensor_stored_events",
            "Raw events stored for the sensor",
            &g(&|r| Some(r.events as f64)),
        )?;
        counter_family(
            &mut enc,
            "drosera_sensor_evicted_events",
            "Events the sensor evicted unsent (its eviction records)",
            &c(&|r| r.evicted_total),
        )?;
        counter_family(
            &mut enc,
            "drosera_sensor_shed_connections",
            "Connections the sensor shed (its rollup records)",
            &c(&|r| r.shed_total),
        )?;
        let h = |f: &dyn Fn(&drosera_uplink::event::Health) -> f64| g(&|r| r.health.as_ref().map(f));
        gauge_family(
            &mut enc,
            "drosera_sensor_backlog_events",
            "Events in the sensor's store not yet acknowledged (last health sample)",
            &h(&|x| x.backlog_events as f64),
        )?;
        gauge_family(
            &mut enc,
            "drosera_sensor_rss_bytes",
            "Sensor resident memory (last health sample)",
            &h(&|x| x.rss_bytes as f64),
        )?;
        gauge_family(
            &mut enc,
            "drosera_sensor_disk_free_bytes",
            "Free disk on the sensor (last health sample)",
            &h(&|x| x.disk_free_bytes as f64),
        )?;
        gauge_family(
            &mut enc,
            "drosera_sensor_store_bytes",
            "Sensor store size (last health sample)",
            &h(&|x| x.store_bytes as f64),
        )?;
        gauge_family(
            &mut enc,
            "drosera_sensor_active_connections",
            "Attacker connections open on the sensor (last health sample)",
            &h(&|x| f64::from(x.active_connections)),
        )?;
        gauge_family(
            &mut enc,
            "drosera_sensor_cpu_permille",
            "Sensor CPU use, per mille of one core (last health sample)",
            &h(&|x| f64::from(x.cpu_permille)),
        )?;
        let mut gov = Vec::new();
        for r in &active {
            if let Some(hs) = &r.health {
                for state in ["normal", "soft", "hard"] {
                    let labels = vec![("sensor".to_string(), r.name.clone()), ("state".to_string(), state.to_string())];
                    gov.push((labels, if hs.governor == state { 1.0 } else { 0.0 }));
                }
            }
        }
        gauge_family(
            &mut enc,
            "drosera_sensor_governor_state",
            "The sensor's pressure governor state (1 for the current one)",
            &gov,
        )?;
        for (name, help, v) in [
            ("drosera_samples_stored", "Malware samples the admin holds", s.samples.0),
            ("drosera_samples_stored_bytes", "Bytes of the sample store", s.samples.1),
        ] {
            let g = ConstGauge::new(v);
            g.encode(enc.encode_descriptor(name, help, None, g.metric_type())?)?;
        }
        Ok(())
    }
}

/// The committed-events tap (`crate::tap`): per sensor and per subscriber.
#[derive(Debug)]
struct TapCollector;

impl Collector for TapCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(tap) = crate::tap::get() else { return Ok(()) };
        let committed: Vec<(Vec<(String, String)>, u64)> = match tap.committed.lock() {
            Ok(c) => c.iter().map(|(k, v)| (sensor(k), *v)).collect(),
            Err(_) => Vec::new(),
        };
        counter_family(
            &mut enc,
            "drosera_admin_ingested_events",
            "Events committed by this admin process since it started",
            &committed,
        )?;
        let sub = |f: &dyn Fn(&crate::tap::Subscriber) -> u64| -> Vec<(Vec<(String, String)>, u64)> {
            tap.subscribers.iter().map(|s| (vec![("subscriber".to_string(), s.name.to_string())], f(s))).collect()
        };
        counter_family(
            &mut enc,
            "drosera_admin_tap_sent",
            "Committed events handed to an integration",
            &sub(&|s| s.sent.load(Ordering::Relaxed)),
        )?;
        counter_family(
            &mut enc,
            "drosera_admin_tap_dropped",
            "Committed events an integration's full queue shed",
            &sub(&|s| s.dropped.load(Ordering::Relaxed)),
        )?;
        Ok(())
    }
}

#[derive(Clone)]
struct Ctx {
    metrics: Arc<Metrics>,
    db: storage::Shared,
    token: Option<Arc<String>>,
    requests: Arc<Semaphore>,
    min_refresh: Duration,
}

fn authorized(token: &Option<Arc<String>>, headers: &HeaderMap) -> bool {
    let Some(token) = token else { return true };
    let Some(got) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else { return false };
    let Some(got) = got.strip_prefix("Bearer ") else { return false };
    // Constant time in the token's content.
    got.len() == token.len() && got.bytes().zip(token.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

async fn scrape(State(c): State<Ctx>, headers: HeaderMap) -> Response {
    if !authorized(&c.token, &headers) {
        return (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer")], "unauthorized\n").into_response();
    }
    let Ok(_permit) = c.requests.try_acquire() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "busy\n").into_response();
    };
    c.metrics.refresh(&c.db, c.min_refresh).await;
    let body = c.metrics.encode();
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], body).into_response()
}

/// Reads the bearer token file (trimmed), if configured.
pub fn load_token(cfg: &MetricsConfig) -> Result<Option<String>, MetricsError> {
    if cfg.bearer_token_file.as_os_str().is_empty() {
        return Ok(None);
    }
    let t = std::fs::read_to_string(&cfg.bearer_token_file)
        .map_err(|e| MetricsError::Token { path: cfg.bearer_token_file.clone(), error: e.to_string() })?;
    let t = t.trim().to_string();
    if t.len() < 16 {
        return Err(MetricsError::Token {
            path: cfg.bearer_token_file.clone(),
            error: "the token is shorter than 16 characters; write a long random one (openssl rand -hex 32)".into(),
        });
    }
    Ok(Some(t))
}

/// Serves `GET /metrics` on `listener` until `shutdown`.
pub async fn serve_listener(
    listener: tokio::net::TcpListener,
    cfg: &MetricsConfig,
    metrics: Arc<Metrics>,
    db: storage::Shared,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), MetricsError> {
    let token = load_token(cfg)?.map(Arc::new);
    let ctx = Ctx {
        metrics,
        db,
        token,
        requests: Arc::new(Semaphore::new(cfg.max_concurrent_requests.max(1))),
        min_refresh: Duration::from_secs(cfg.min_refresh_s),
    };
    let app = axum::Router::new().route("/metrics", axum::routing::get(scrape)).with_state(ctx);
    tracing::info!(addr = %listener.local_addr()?, "metrics listening");
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await?;
    Ok(())
}

/// Binds `[metrics] listen` (if set) and serves until `shutdown`.
pub async fn serve(
    cfg: &MetricsConfig,
    metrics: Arc<Metrics>,
    db: storage::Shared,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), MetricsError> {
    let Some(addr) = cfg.addr() else { return Ok(()) };
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|error| MetricsError::Bind { addr, error })?;
    serve_listener(listener, cfg, metrics, db, shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_public_address_needs_a_token() {
        let cfg = MetricsConfig { listen: "0.0.0.0:9473".into(), ..MetricsConfig::default() };
        let (key, _, _) = cfg.validate().unwrap_err();
        assert_eq!(key, "metrics.bearer_token_file");
        let cfg = MetricsConfig { listen: "127.0.0.1:9473".into(), ..MetricsConfig::default() };
        assert!(cfg.validate().is_ok());
        let cfg = MetricsConfig { listen: "metrics:1".into(), ..MetricsConfig::default() };
        assert_eq!(cfg.validate().unwrap_err().0, "metrics.listen");
        assert!(MetricsConfig::default().validate().is_ok());
    }

    #[test]
    fn tokens_are_compared_whole() {
        let t = Some(Arc::new("0123456789abcdef".to_string()));
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::AUTHORIZATION, v.parse().unwrap());
            m
        };
        assert!(authorized(&t, &h("Bearer 0123456789abcdef")));
        assert!(!authorized(&t, &h("Bearer 0123456789abcde")));
        assert!(!authorized(&t, &h("Bearer 0123456789abcdeF")));
        assert!(!authorized(&t, &HeaderMap::new()));
        assert!(authorized(&None, &HeaderMap::new()));
    }
}
