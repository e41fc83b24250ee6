//! The opt-in fetcher of "download offered" URLs (issue 15), run by the ADMIN, never the sensor,
//! so the home network a sensor sits in never talks to a malware host.
//!
//! Off by default (`[fetcher] enabled = false`). When on, every URL an attacker offered
//! (http, https, ftp, tftp) is fetched at most once ([`FetcherConfig::remembered_urls`]) with
//! caps on size, total time, redirects and concurrency. The admin is the one thing in the fleet
//! with access to its own private network, so the attacker chooses the URL but not where we
//! connect: every name is resolved once, every address is checked by [`guard`] (public unicast
//! only unless `allow` names the range), and we connect to that checked address ourselves, for
//! each redirect hop and each FTP data connection too (PASV answers only give a port).
//!
//! [`Fetcher::fetch`] fetches one URL; [`Fetcher::spawn`] starts a bounded job queue that hands
//! each outcome to a callback (the sample store records the sample and an event).

mod ftp;
pub mod guard;
mod http;
mod tftp;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::collections::{HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use url::Url;

/// `[fetcher]` in the admin config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FetcherConfig {
    /// Fetch offered URLs at all (off by default: it makes the admin contact malware hosts).
    pub enabled: bool,
    /// CIDR ranges that may be fetched even though they are not public (for tests and labs),
    /// e.g. ["127.0.0.0/8"]. Empty = public unicast addresses only.
    pub allow: Vec<String>,
    /// Largest file fetched, bytes; a bigger one is dropped and reported.
    pub max_bytes: u64,
    /// Seconds one URL may take, all redirects and the transfer included.
    pub timeout_s: u64,
    /// Seconds to connect to one address.
    pub connect_timeout_s: u64,
    /// Redirects followed (each hop is resolved and checked again).
    pub max_redirects: u32,
    /// URLs fetched at once.
    pub max_concurrent: usize,
    /// URLs waiting in the job queue; more are shed and counted.
    pub queue: usize,
    /// URLs remembered as already fetched (the oldest are forgotten first).
    pub remembered_urls: usize,
    /// Longest URL accepted, bytes.
    pub max_url_bytes: usize,
    /// User-Agent sent on http(s) (droppers often serve only wget/curl).
    pub user_agent: String,
}

impl Default for FetcherConfig {
    fn default() -> Self {
        FetcherConfig {
            enabled: false,
            allow: Vec::new(),
            max_bytes: 16 << 20,
            timeout_s: 60,
            connect_timeout_s: 10,
            max_redirects: 5,
            max_concurrent: 4,
            queue: 256,
            remembered_urls: 65_536,
            max_url_bytes: 2048,
            user_agent: "Wget/1.21.3".into(),
        }
    }
}

impl FetcherConfig {
    /// The `allow` ranges, or the first one that is not a CIDR.
    pub fn allow_nets(&self) -> Result<Vec<IpNet>, String> {
        self.allow
            .iter()
            .map(|s| s.parse::<IpNet>().or_else(|_| s.parse::<IpAddr>().map(IpNet::from)).map_err(|_| s.clone()))
            .collect()
    }
}

/// A fetched file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fetched {
    /// The URL as offered.
    pub url: String,
    /// The URL the bytes came from (after redirects).
    pub final_url: String,
    /// The address the bytes came from (the checked one).
    pub peer: SocketAddr,
    /// HTTP status (2xx), the FTP transfer's final reply code (226 or 250), or 0 for TFTP.
    pub status: u16,
    pub bytes: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("the fetcher is disabled ([fetcher] enabled = false)")]
    Disabled,
    #[error("already fetched (each URL is fetched once)")]
    AlreadyFetched,
    #[error("not a URL we fetch: {0}")]
    BadUrl(String),
    #[error("cannot resolve {host}: {reason}")]
    Resolve { host: String, reason: String },
    #[error("refused to connect to {addr} ({host}): {reason}")]
    Forbidden { host: String, addr: IpAddr, reason: &'static str },
    #[error("cannot connect to {addr}: {reason}")]
    Connect { addr: SocketAddr, reason: String },
    #[error("took longer than {0:?}")]
    Timeout(Duration),
    #[error("larger than the {cap}-byte cap ([fetcher] max_bytes)")]
    TooLarge { cap: u64 },
    #[error("more than {cap} redirects ([fetcher] max_redirects)")]
    TooManyRedirects { cap: u32 },
    #[error("HTTP status {status} from {url}")]
    HttpStatus { status: u16, url: String },
    #[error("{protocol} error: {reason}")]
    Protocol { protocol: &'static str, reason: String },
}

fn protocol_error(protocol: &'static str, reason: impl std::fmt::Display) -> FetchError {
    FetchError::Protocol { protocol, reason: reason.to_string() }
}

/// What the job queue hands to its callback: the URL and what fetching it gave.
#[derive(Debug)]
pub struct FetchOutcome {
    pub url: String,
    pub result: Result<Fetched, FetchError>,
}

/// Bounded set of URLs already fetched (FIFO forgetting past the cap).
#[derive(Default)]
struct Remembered {
    set: HashSet<String>,
    order: VecDeque<String>,
}

/// The fetcher: config, the remembered URLs and the concurrency limit.
pub struct Fetcher {
    cfg: FetcherConfig,
    allow: Vec<IpNet>,
    seen: Mutex<Remembered>,
    slots: Semaphore,
    forgotten: AtomicU64,
    tls: Arc<rustls::ClientConfig>,
}

/// A deadline shared by every step of one fetch.
#[derive(Clone, Copy)]
pub(crate) struct Deadline {
    at: Instant,
    total: Duration,
}

impl Deadline {
    pub(crate) async fn run<T, F>(self, fut: F) -> Result<T, FetchError>
    where
        F: std::future::Future<Output = Result<T, FetchError>>,
    {
        let left = self.at.saturating_duration_since(Instant::now());
        tokio::time::timeout(left, fut).await.unwrap_or(Err(FetchError::Timeout(self.total)))
    }
}

impl Fetcher {
    /// A fetcher for `cfg` (validated: a bad `allow` entry is an error naming it).
    pub fn new(cfg: FetcherConfig) -> Result<Self, FetchError> {
        let allow = cfg
            .allow_nets()
            .map_err(|bad| FetchError::BadUrl(format!("[fetcher] allow entry {bad:?} is not a CIDR")))?;
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| protocol_error("tls", e))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Fetcher {
            slots: Semaphore::new(cfg.max_concurrent.max(1)),
            cfg,
            allow,
            seen: Mutex::new(Remembered::default()),
            forgotten: AtomicU64::new(0),
            tls: Arc::new(tls),
        })
    }

    pub fn config(&self) -> &FetcherConfig {
        &self.cfg
    }

    /// URLs forgotten from the remembered set because it was full (they may be fetched again).
    pub fn forgotten(&self) -> u64 {
        self.forgotten.load(Ordering::Relaxed)
    }

    /// Marks `url` as fetched; false when it already was.
    fn remember(&self, url: &str) -> bool {
        let Ok(mut seen) = self.seen.lock() else { return false };
        if seen.set.contains(url) {
            return false;
        }
        let cap = self.cfg.remembered_urls.max(1);
        while seen.order.len() >= cap {
            if let Some(old) = seen.order.pop_front() {
                seen.set.remove(&old);
                self.forgotten.fetch_add(1, Ordering::Relaxed);
            }
        }
        seen.set.insert(url.to_string());
        seen.order.push_back(url.to_string());
        true
    }

    /// Fetches `url` once: caps, address checks and the per-URL deadline applied.
    pub async fn fetch(&self, url: &str) -> Result<Fetched, FetchError> {
        if !self.cfg.enabled {
            return Err(FetchError::Disabled);
        }
        if url.len() > self.cfg.max_url_bytes {
            return Err(FetchError::BadUrl(format!(
                "longer than {} bytes ([fetcher] max_url_bytes)",
                self.cfg.max_url_bytes
            )));
        }
        let parsed = Url::parse(url).map_err(|e| FetchError::BadUrl(e.to_string()))?;
        if !matches!(parsed.scheme(), "http" | "https" | "ftp" | "tftp") {
            return Err(FetchError::BadUrl(format!("scheme {:?} (only http, https, ftp, tftp)", parsed.scheme())));
        }
        if !self.remember(parsed.as_str()) {
            return Err(FetchError::AlreadyFetched);
        }
        let _slot = self.slots.acquire().await.map_err(|e| protocol_error("fetcher", e))?;
        let total = Duration::from_secs(self.cfg.timeout_s.max(1));
        let deadline = Deadline { at: Instant::now() + total, total };
        let started = Instant::now();
        let result = deadline
            .run(async {
                match parsed.scheme() {
                    "http" | "https" => http::get(self, parsed.clone()).await,
                    "ftp" => ftp::get(self, &parsed).await,
                    _ => tftp::get(self, &parsed).await,
                }
            })
            .await
            .map(|mut f| {
                f.url = url.to_string();
                f
            });
        match &result {
            Ok(f) => {
                tracing::info!(url, final_url = %f.final_url, peer = %f.peer, bytes = f.bytes.len(), ms = started.elapsed().as_millis() as u64, "sample fetched")
            }
            Err(e) => tracing::info!(url, error = %e, "sample fetch failed"),
        }
        result
    }

    /// Resolves `host` once and returns the first address that passes [`guard::check`].
    pub(crate) async fn resolve(&self, url: &Url) -> Result<SocketAddr, FetchError> {
        let host = url.host().ok_or_else(|| FetchError::BadUrl("no host".into()))?;
        let port = url.port_or_known_default().unwrap_or(match url.scheme() {
            "tftp" => 69,
            _ => 21,
        });
        let name = host.to_string();
        let candidates: Vec<IpAddr> = match host {
            url::Host::Ipv4(v4) => vec![IpAddr::V4(v4)],
            url::Host::Ipv6(v6) => vec![IpAddr::V6(v6)],
            url::Host::Domain(d) => {
                let found = tokio::time::timeout(
                    Duration::from_secs(self.cfg.connect_timeout_s.max(1)),
                    tokio::net::lookup_host((d, port)),
                )
                .await
                .map_err(|_| FetchError::Resolve { host: name.clone(), reason: "timed out".into() })?
                .map_err(|e| FetchError::Resolve { host: name.clone(), reason: e.to_string() })?;
                found.map(|a| a.ip()).take(32).collect()
            }
        };
        let mut refused = None;
        for ip in candidates {
            match guard::check(ip, &self.allow) {
                Ok(ip) => return Ok(SocketAddr::new(ip, port)),
                Err(reason) => {
                    refused.get_or_insert(FetchError::Forbidden { host: name.clone(), addr: ip, reason });
                }
            }
        }
        Err(refused.unwrap_or(FetchError::Resolve { host: name, reason: "no address".into() }))
    }

    /// TCP connection to an address [`Fetcher::resolve`] checked.
    pub(crate) async fn connect(&self, addr: SocketAddr) -> Result<tokio::net::TcpStream, FetchError> {
        let limit = Duration::from_secs(self.cfg.connect_timeout_s.max(1));
        match tokio::time::timeout(limit, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(e)) => Err(FetchError::Connect { addr, reason: e.to_string() }),
            Err(_) => Err(FetchError::Connect { addr, reason: format!("no answer within {limit:?}") }),
        }
    }

    /// Starts the bounded job queue: URLs given to [`FetchQueue::offer`] are fetched (at most
    /// `max_concurrent` at once) and every outcome, success or failure, goes to `on_done`.
    pub fn spawn<F>(self: Arc<Self>, mut on_done: F) -> FetchQueue
    where
        F: FnMut(FetchOutcome) + Send + 'static,
    {
        let (tx, mut rx) = mpsc::channel::<String>(self.cfg.queue.max(1));
        let max = self.cfg.max_concurrent.max(1);
        let fetcher = self;
        tokio::spawn(async move {
            let mut running = JoinSet::new();
            loop {
                tokio::select! {
                    next = rx.recv(), if running.len() < max => match next {
                        Some(url) => {
                            let f = fetcher.clone();
                            running.spawn(async move {
                                let result = f.fetch(&url).await;
                                FetchOutcome { url, result }
                            });
                        }
                        None => break,
                    },
                    Some(done) = running.join_next(), if !running.is_empty() => match done {
                        Ok(outcome) => on_done(outcome),
                        Err(e) => tracing::error!(error = %e, "fetch task failed"),
                    },
                }
            }
            while let Some(done) = running.join_next().await {
                match done {
                    Ok(outcome) => on_done(outcome),
                    Err(e) => tracing::error!(error = %e, "fetch task failed"),
                }
            }
        });
        FetchQueue { tx, shed: Arc::new(AtomicU64::new(0)) }
    }
}

/// The handle to the fetch job queue. Dropping every handle lets queued jobs finish, then stops.
#[derive(Clone)]
pub struct FetchQueue {
    tx: mpsc::Sender<String>,
    shed: Arc<AtomicU64>,
}

impl FetchQueue {
    /// Queues `url`; false (and counted in [`FetchQueue::shed`]) when the queue is full.
    pub fn offer(&self, url: impl Into<String>) -> bool {
        let ok = self.tx.try_send(url.into()).is_ok();
        if !ok {
            self.shed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("fetch queue full: URL shed");
        }
        ok
    }

    /// URLs refused because the queue was full.
    pub fn shed(&self) -> u64 {
        self.shed.load(Ordering::Relaxed)
    }
}

/// Appends `data` to `buf` unless that passes `cap`.
pub(crate) fn append_capped(buf: &mut Vec<u8>, data: &[u8], cap: u64) -> Result<(), FetchError> {
    if buf.len() as u64 + data.len() as u64 > cap {
        return Err(FetchError::TooLarge { cap });
    }
    buf.extend_from_slice(data);
    Ok(())
}

/// `%XX`-decoded URL path without its leading `/`; refuses bytes that could end a protocol
/// command (CR, LF, NUL), so a URL cannot smuggle FTP commands or TFTP fields.
pub(crate) fn decoded_path(url: &Url, protocol: &'static str) -> Result<String, FetchError> {
    let raw = url.path().trim_start_matches('/').as_bytes();
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (raw[i], raw.get(i + 1).copied().and_then(hex), raw.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    if out.is_empty() || out.iter().any(|c| matches!(c, b'\r' | b'\n' | 0)) {
        return Err(protocol_error(protocol, "empty path or a CR/LF/NUL in the path"));
    }
    String::from_utf8(out).map_err(|_| protocol_error(protocol, "path is not UTF-8"))
}
