//! Alert webhooks: a generic JSON POST to the operator's URLs when a sensor goes silent, a
//! sensor evicts events, a new sample arrives or a new exploit is seen.
//!
//! # Bounds and loss
//! Alerts are detected from the committed-events tap (`crate::tap`, its own bounded queue) and
//! from a periodic look at the sensors' last contact; they go through one bounded queue
//! (`queue`) to one sender. Past `max_per_minute` alerts are dropped; a full queue drops them;
//! a URL that still fails after `max_retries` retries (exponential backoff from 1 s, at most
//! 60 s) loses that alert. Every drop is counted (`drosera_admin_webhook_dropped_total{reason}`,
//! `drosera_admin_webhook_deliveries_total{result="failed"}`) and logged. Ingest never waits for
//! any of it. "New" means new to this process: the samples and exploit names already alerted
//! are remembered (at most `remembered` of each; forgotten oldest first), so a restart may alert
//! again.
//!
//! # Who is fetched
//! Only the URLs the operator wrote in `[webhooks] urls` (http or https, validated at load);
//! nothing an attacker sends ever becomes a URL here. Responses are read up to 64 KiB and ignored
//! apart from their status (2xx is success).
//!
//! # The document
//! `{"alert": KIND, "time": RFC 3339, "time_ms": .., "sensor": NAME, "summary": TEXT,
//! "details": {...}}`, one per POST (`Content-Type: application/json`).

use crate::metrics::Metrics;
use crate::storage;
use drosera_uplink::event::{Detail, Event};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What can be alerted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// A sensor not heard from for `silent_after_s`.
    SensorSilent,
    /// A sensor evicted events unsent (its store was full).
    Evictions,
    /// A sample not alerted before.
    NewSample,
    /// An exploit (by name) not alerted before.
    NewExploit,
}

impl AlertKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::SensorSilent => "sensor_silent",
            AlertKind::Evictions => "evictions",
            AlertKind::NewSample => "new_sample",
            AlertKind::NewExploit => "new_exploit",
        }
    }
}

/// `[webhooks]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// URLs every alert is POSTed to (http:// or https://); empty: no webhooks.
    pub urls: Vec<String>,
    /// Which alerts to send.
    pub events: Vec<AlertKind>,
    /// A sensor not heard from for this many seconds is silent (sensors ping every 30 s).
    pub silent_after_s: u64,
    /// Seconds between looks at the sensors' last contact.
    pub check_interval_s: u64,
    /// Alerts waiting to be sent; more are dropped (and counted).
    pub queue: usize,
    /// Alerts sent per minute at most; more are dropped (and counted).
    pub max_per_minute: u32,
    /// Retries of a failed POST (backoff 1 s, 2 s, 4 s ... at most 60 s).
    pub max_retries: u32,
    /// Seconds one POST may take (connect, TLS, request, response).
    pub timeout_s: u64,
    /// Samples and exploit names remembered as already alerted (each).
    pub remembered: usize,
    /// Committed events queued for alert detection (the tap's queue).
    pub tap_queue: usize,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        WebhooksConfig {
            urls: Vec::new(),
            events: vec![AlertKind::SensorSilent, AlertKind::Evictions, AlertKind::NewSample, AlertKind::NewExploit],
            silent_after_s: 900,
            check_interval_s: 60,
            queue: 256,
            max_per_minute: 30,
            max_retries: 5,
            timeout_s: 10,
            remembered: 10_000,
            tap_queue: 10_000,
        }
    }
}

impl WebhooksConfig {
    /// (key, problem, fix) of the first bad value.
    pub fn validate(&self) -> Result<(), (String, String, String)> {
        let bad = |k: &str, p: String, f: &str| Err((format!("webhooks.{k}"), p, f.to_string()));
        for u in &self.urls {
            match url::Url::parse(u) {
                Ok(p) if matches!(p.scheme(), "http" | "https") && p.host_str().is_some() => {}
                _ => {
                    return bad(
                        "urls",
                        format!("{u:?} is not an http:// or https:// URL"),
                        "write e.g. \"https://hooks.example.net/drosera\"",
                    )
                }
            }
        }
        for (k, v, d) in [
            ("silent_after_s", self.silent_after_s, "900"),
            ("check_interval_s", self.check_interval_s, "60"),
            ("queue", self.queue as u64, "256"),
            ("max_per_minute", u64::from(self.max_per_minute), "30"),
            ("timeout_s", self.timeout_s, "10"),
            ("remembered", self.remembered as u64, "10000"),
            ("tap_queue", self.tap_queue as u64, "10000"),
        ] {
            if v == 0 {
                return bad(k, "must be at least 1".into(), &format!("use the default, {d}"));
            }
        }
        if self.silent_after_s < 60 {
            return bad(
                "silent_after_s",
                "sensors ping every 30 s; less than 60 s alerts on healthy sensors".into(),
                "use at least 60; the default is 900",
            );
        }
        if self.max_retries > 20 {
            return bad("max_retries", "must be at most 20".into(), "use the default, 5");
        }
        Ok(())
    }

    pub fn enabled(&self) -> bool {
        !self.urls.is_empty() && !self.events.is_empty()
    }
}

/// One alert.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub kind: AlertKind,
    pub time_ms: i64,
    pub sensor: String,
    pub summary: String,
    pub details: Value,
}

impl Alert {
    pub fn document(&self) -> Value {
        let time = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.time_ms) * 1_000_000)
            .ok()
            .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
            .unwrap_or_default();
        json!({
            "alert": self.kind.as_str(),
            "time": time,
            "time_ms": self.time_ms,
            "sensor": self.sensor,
            "summary": self.summary,
            "details": self.details,
        })
    }
}

/// A set that forgets its oldest entries past `cap`.
#[derive(Debug, Default)]
struct Remembered {
    cap: usize,
    set: HashSet<String>,
    order: VecDeque<String>,
}

impl Remembered {
    fn new(cap: usize) -> Self {
        Remembered { cap, ..Default::default() }
    }
    /// True if `k` is new (and now remembered).
    fn insert(&mut self, k: &str) -> bool {
        if self.set.contains(k) {
            return false;
        }
        if self.order.len() >= self.cap {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        self.set.insert(k.to_string());
        self.order.push_back(k.to_string());
        true
    }
}

/// Alert detection over committed events: pure apart from its memory of what was alerted.
pub struct Detector {
    wanted: HashSet<AlertKind>,
    samples: Remembered,
    exploits: Remembered,
}

impl Detector {
    pub fn new(cfg: &WebhooksConfig) -> Detector {
        Detector {
            wanted: cfg.events.iter().copied().collect(),
            samples: Remembered::new(cfg.remembered),
            exploits: Remembered::new(cfg.remembered),
        }
    }

    /// The alerts one committed event raises.
    pub fn on_event(&mut self, ev: &Event) -> Vec<Alert> {
        let mut out = Vec::new();
        let alert = |kind, summary: String, details| Alert {
            kind,
            time_ms: ev.time_ms,
            sensor: ev.sensor.clone(),
            summary,
            details,
        };
        match &ev.detail {
            Detail::EvictionGap { count, .. } | Detail::EvictionSummary { count, .. }
                if self.wanted.contains(&AlertKind::Evictions) =>
            {
                out.push(alert(
                    AlertKind::Evictions,
                    format!("sensor {} evicted {count} events unsent (its store was full)", ev.sensor),
                    json!({ "evicted": count, "kind": ev.detail.kind() }),
                ));
            }
            Detail::Sample { sha256, name, source, .. } if self.wanted.contains(&AlertKind::NewSample) => {
                let sha = hex::encode(sha256);
                if self.samples.insert(&sha) {
                    out.push(alert(
                        AlertKind::NewSample,
                        format!("new sample {sha} via {} on sensor {}", ev.protocol.as_str(), ev.sensor),
                        json!({ "sha256": sha, "name": name, "source": source, "protocol": ev.protocol.as_str(), "src_ip": ev.src_ip.to_string() }),
                    ));
                }
            }
            _ => {}
        }
        if self.wanted.contains(&AlertKind::NewExploit) {
            for (name, cve) in exploits_of(ev) {
                if self.exploits.insert(&name) {
                    out.push(alert(
                        AlertKind::NewExploit,
                        format!("new exploit {name} {cve} from {} on sensor {}", ev.src_ip, ev.sensor),
                        json!({ "name": name, "cve": cve, "protocol": ev.protocol.as_str(), "src_ip": ev.src_ip.to_string() }),
                    ));
                }
            }
        }
        out
    }

    /// Silent-sensor alerts: sensors whose last contact is older than `silent_after_ms`, each
    /// once until it is heard from again (`silent`: the names alerted and still silent).
    pub fn silent_sensors(
        &self,
        sensors: &[storage::SensorRecord],
        silent: &mut HashSet<String>,
        silent_after_ms: i64,
        now_ms: i64,
    ) -> Vec<Alert> {
        if !self.wanted.contains(&AlertKind::SensorSilent) {
            return Vec::new();
        }
        let mut out = Vec::new();
        for s in sensors.iter().filter(|s| !s.revoked) {
            let Some(last) = s.last_contact_ms else { continue };
            if now_ms.saturating_sub(last) >= silent_after_ms {
                if silent.insert(s.name.clone()) {
                    let mins = now_ms.saturating_sub(last) / 60_000;
                    out.push(Alert {
                        kind: AlertKind::SensorSilent,
                        time_ms: now_ms,
                        sensor: s.name.clone(),
                        summary: format!("sensor {} silent for {mins} minutes", s.name),
                        details: json!({ "last_contact_ms": last, "silent_minutes": mins }),
                    });
                }
            } else {
                silent.remove(&s.name);
            }
        }
        out
    }
}

/// (name, CVE) of the exploits an event is or carries: the sensor's own exploit records and
/// what the admin's rules derive from requests, bodies and commands.
fn exploits_of(ev: &Event) -> Vec<(String, String)> {
    if let Detail::Exploit { name, cve, .. } = &ev.detail {
        return vec![(name.clone(), cve.clone())];
    }
    if !matches!(ev.detail, Detail::HttpRequest { .. } | Detail::Payload { .. } | Detail::Command { .. }) {
        return Vec::new();
    }
    let l = storage::row::Lifted::of(ev);
    crate::exploits::Derived::from_column(l.derived.as_deref()).exploits.into_iter().map(|e| (e.name, e.cve)).collect()
}

/// Counts and drops alerts past `per_minute` (a sliding window of send times).
struct RateLimit {
    per_minute: usize,
    sent: VecDeque<Instant>,
}

impl RateLimit {
    fn allow(&mut self, now: Instant) -> bool {
        while self.sent.front().is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(60)) {
            self.sent.pop_front();
        }
        if self.sent.len() >= self.per_minute {
            return false;
        }
        self.sent.push_back(now);
        true
    }
}

fn tls_config() -> Option<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let c = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .ok()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Some(Arc::new(c))
}

/// POSTs `body` to `url`; Ok(status) if a response came back.
pub async fn post(url: &str, body: Bytes, tls: Option<Arc<rustls::ClientConfig>>) -> Result<u16, String> {
    let u = url::Url::parse(url).map_err(|e| e.to_string())?;
    let host = u.host_str().ok_or("no host")?.to_string();
    let port = u.port_or_known_default().ok_or("no port")?;
    let tcp = tokio::net::TcpStream::connect((host.trim_start_matches('[').trim_end_matches(']'), port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let target = match u.query() {
        Some(q) => format!("{}?{q}", u.path()),
        None => u.path().to_string(),
    };
    let authority = match u.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.clone(),
    };
    let req = hyper::Request::post(target)
        .header(hyper::header::HOST, authority)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(hyper::header::USER_AGENT, concat!("drosera-admin/", env!("CARGO_PKG_VERSION")))
        .header(hyper::header::CONNECTION, "close")
        .body(Full::new(body))
        .map_err(|e| e.to_string())?;
    async fn send<S>(io: S, req: hyper::Request<Full<Bytes>>) -> Result<u16, String>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(io)).await.map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        // Read (and drop) at most 64 KiB of the answer.
        let mut body = resp.into_body();
        let mut n = 0usize;
        while let Some(Ok(frame)) = body.frame().await {
            n += frame.data_ref().map_or(0, |d| d.len());
            if n > 64 * 1024 {
                break;
            }
        }
        Ok(status)
    }
    if u.scheme() == "https" {
        let tls = tls.ok_or("no TLS configuration")?;
        let name = rustls_pki_types::ServerName::try_from(host.clone()).map_err(|e| e.to_string())?;
        let s = tokio_rustls::TlsConnector::from(tls).connect(name, tcp).await.map_err(|e| format!("tls: {e}"))?;
        send(s, req).await
    } else {
        send(tcp, req).await
    }
}

/// Sends queued alerts to every URL, with the rate limit and the retries.
async fn sender(
    cfg: WebhooksConfig,
    mut rx: mpsc::Receiver<Alert>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let tls = tls_config();
    let mut limit = RateLimit { per_minute: cfg.max_per_minute as usize, sent: VecDeque::new() };
    loop {
        let alert = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = rx.recv() => match a { Some(a) => a, None => return },
        };
        if !limit.allow(Instant::now()) {
            Metrics::count(&metrics.webhooks_dropped, "reason", "rate_limited");
            tracing::warn!(alert = alert.kind.as_str(), sensor = %alert.sensor, "webhook alert dropped: over webhooks.max_per_minute");
            continue;
        }
        let body = Bytes::from(alert.document().to_string());
        for url in &cfg.urls {
            let mut delay = Duration::from_secs(1);
            let mut attempt = 0;
            loop {
                let r = tokio::time::timeout(Duration::from_secs(cfg.timeout_s), post(url, body.clone(), tls.clone()))
                    .await;
                let problem = match r {
                    Ok(Ok(s)) if (200..300).contains(&s) => None,
                    Ok(Ok(s)) => Some(format!("HTTP status {s}")),
                    Ok(Err(e)) => Some(e),
                    Err(_) => Some(format!("no answer within {} s", cfg.timeout_s)),
                };
                let Some(problem) = problem else {
                    Metrics::count(&metrics.webhooks, "result", "sent");
                    break;
                };
                if attempt >= cfg.max_retries {
                    Metrics::count(&metrics.webhooks, "result", "failed");
                    tracing::warn!(url = %url, alert = alert.kind.as_str(), error = %problem, "webhook failed; alert lost for this URL");
                    break;
                }
                attempt += 1;
                Metrics::count(&metrics.webhooks, "result", "retried");
                tracing::debug!(url = %url, attempt, error = %problem, "webhook failed; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(Duration::from_secs(60));
            }
        }
    }
}

/// Runs the webhooks until `shutdown`: detection from `events` (the tap) and the sensors'
/// last contact, delivery by one sender.
pub async fn run(
    cfg: WebhooksConfig,
    db: storage::Shared,
    mut events: mpsc::Receiver<Arc<Event>>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let (tx, rx) = mpsc::channel::<Alert>(cfg.queue.max(1));
    let send = tokio::spawn(sender(cfg.clone(), rx, metrics.clone(), shutdown.clone()));
    let mut detector = Detector::new(&cfg);
    let mut silent = HashSet::new();
    let mut check = tokio::time::interval(Duration::from_secs(cfg.check_interval_s));
    let enqueue = |alerts: Vec<Alert>| {
        for a in alerts {
            if tx.try_send(a).is_err() {
                Metrics::count(&metrics.webhooks_dropped, "reason", "queue_full");
            }
        }
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            ev = events.recv() => match ev {
                Some(ev) => enqueue(detector.on_event(&ev)),
                None => break,
            },
            _ = check.tick() => {
                match db.run(|db| db.list_sensors()).await {
                    Ok(Ok(sensors)) => {
                        let after = i64::try_from(cfg.silent_after_s.saturating_mul(1000)).unwrap_or(i64::MAX);
                        enqueue(detector.silent_sensors(&sensors, &mut silent, after, crate::clock::now_ms()));
                    }
                    Ok(Err(e)) | Err(e) => tracing::warn!(error = %e, "webhooks: reading sensors failed"),
                }
            }
        }
    }
    drop(tx);
    let _ = send.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_config_names_the_key() {
        let c = WebhooksConfig { urls: vec!["ftp://x/".into()], ..Default::default() };
        assert_eq!(c.validate().unwrap_err().0, "webhooks.urls");
        let c = WebhooksConfig { silent_after_s: 10, ..Default::default() };
        assert_eq!(c.validate().unwrap_err().0, "webhooks.silent_after_s");
        let c = WebhooksConfig { queue: 0, ..Default::default() };
        assert_eq!(c.validate().unwrap_err().0, "webhooks.queue");
        assert!(WebhooksConfig::default().validate().is_ok());
        assert!(!WebhooksConfig::default().enabled());
    }

    #[test]
    fn the_rate_limit_is_per_minute() {
        let mut r = RateLimit { per_minute: 2, sent: VecDeque::new() };
        let t = Instant::now();
        assert!(r.allow(t) && r.allow(t));
        assert!(!r.allow(t + Duration::from_secs(59)));
        assert!(r.allow(t + Duration::from_secs(60)));
    }

    #[test]
    fn remembered_forgets_the_oldest() {
        let mut r = Remembered::new(2);
        assert!(r.insert("a") && r.insert("b") && !r.insert("a"));
        assert!(r.insert("c"));
        assert!(r.insert("a"), "a was forgotten");
    }
}
