//! hpfeeds publishing (the protocol of MHN and the Honeynet Project's broker): every committed
//! event, as its Elastic Common Schema document (`crate::ecs`), published on a channel
//! (`drosera.events` by default), so existing hpfeeds consumers (hpfeeds-logger, MHN's
//! mnemosyne-style collectors, SIEM bridges) keep working.
//!
//! # The protocol (hpfeeds v1)
//! Every message is `u32 length (big-endian, the whole message) ‖ u8 opcode ‖ body`; strings in
//! bodies are `u8 length ‖ bytes`. The broker speaks first, `INFO(name, nonce[4])`; the client
//! answers `AUTH(ident, SHA1(nonce ‖ secret))`, then sends `PUBLISH(ident, channel, payload)`.
//! A broker that refuses sends `ERROR(text)` and closes. [`Frame::decode`] is the pure parser
//! (fuzzed: `fuzz/fuzz_targets/hpfeeds_frame.rs`), capped at [`MAX_FRAME`].
//!
//! # Bounds and loss
//! Events come from the committed-events tap (`crate::tap`, `queue` events; a full queue sheds
//! and counts). The publisher reconnects with backoff (1 s doubling to `reconnect_max_s`); the
//! event in hand when a connection fails is published after the reconnect, others wait in the
//! tap's queue. A document larger than `max_message_bytes` is dropped and counted
//! (`drosera_admin_hpfeeds_total{result="too_large"}`). The broker is the operator's (`host`);
//! nothing an attacker sends chooses where the admin connects.

use crate::metrics::Metrics;
use crate::storage::{row::Lifted, ExportRow};
use drosera_uplink::event::Event;
use serde::{Deserialize, Serialize};
use sha1::{Digest, Sha1};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub const OP_ERROR: u8 = 0;
pub const OP_INFO: u8 = 1;
pub const OP_AUTH: u8 = 2;
pub const OP_PUBLISH: u8 = 3;
pub const OP_SUBSCRIBE: u8 = 4;

/// Largest message read from a broker (INFO and ERROR are small).
pub const MAX_FRAME: usize = 1 << 20;

/// `[hpfeeds]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HpfeedsConfig {
    /// The broker's host name or address; empty: no publishing.
    pub host: String,
    pub port: u16,
    /// The ident the broker knows this admin by.
    pub ident: String,
    /// A file holding the ident's secret.
    pub secret_file: PathBuf,
    /// The channel events are published on.
    pub channel: String,
    /// Committed events waiting to be published (the tap's queue); more are shed and counted.
    pub queue: usize,
    /// Largest document published, bytes; larger ones are dropped and counted.
    pub max_message_bytes: usize,
    /// Longest wait between reconnection attempts, seconds.
    pub reconnect_max_s: u64,
}

impl Default for HpfeedsConfig {
    fn default() -> Self {
        HpfeedsConfig {
            host: String::new(),
            port: 10000,
            ident: String::new(),
            secret_file: PathBuf::new(),
            channel: "drosera.events".into(),
            queue: 10_000,
            max_message_bytes: 256 * 1024,
            reconnect_max_s: 60,
        }
    }
}

impl HpfeedsConfig {
    pub fn enabled(&self) -> bool {
        !self.host.is_empty()
    }

    /// (key, problem, fix) of the first bad value.
    pub fn validate(&self) -> Result<(), (String, String, String)> {
        let bad = |k: &str, p: &str, f: &str| Err((format!("hpfeeds.{k}"), p.to_string(), f.to_string()));
        if !self.enabled() {
            return Ok(());
        }
        if self.ident.is_empty() || self.ident.len() > 255 {
            return bad(
                "ident",
                "must be 1 to 255 bytes when hpfeeds.host is set",
                "write the ident your broker issued",
            );
        }
        if self.secret_file.as_os_str().is_empty() {
            return bad("secret_file", "is empty while hpfeeds.host is set", "name a file holding the ident's secret");
        }
        if self.channel.is_empty() || self.channel.len() > 255 {
            return bad("channel", "must be 1 to 255 bytes", "use the default, \"drosera.events\"");
        }
        if self.port == 0 {
            return bad("port", "must not be 0", "use the broker's port; the default is 10000");
        }
        if self.queue == 0 || self.max_message_bytes < 1024 || self.max_message_bytes > MAX_FRAME {
            return bad(
                "queue / hpfeeds.max_message_bytes",
                "queue must be at least 1 and max_message_bytes between 1024 and 1048576",
                "use the defaults, 10000 and 262144",
            );
        }
        if self.reconnect_max_s == 0 {
            return bad("reconnect_max_s", "must be at least 1", "use the default, 60");
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HpfeedsError {
    #[error("message of {0} bytes is over the cap")]
    TooLarge(usize),
    #[error("message length {0} is shorter than its header")]
    TooShort(u32),
    #[error("malformed {0} message")]
    Malformed(&'static str),
    #[error("a name is longer than 255 bytes")]
    NameTooLong,
}

/// One decoded message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Error(String),
    Info { name: String, nonce: Vec<u8> },
    Auth { ident: String, hash: Vec<u8> },
    Publish { ident: String, channel: String, payload: Vec<u8> },
    Subscribe { ident: String, channel: String },
    Unknown(u8),
}

fn name(b: &[u8], what: &'static str) -> Result<(String, usize), HpfeedsError> {
    let n = *b.first().ok_or(HpfeedsError::Malformed(what))? as usize;
    let s = b.get(1..1 + n).ok_or(HpfeedsError::Malformed(what))?;
    Ok((String::from_utf8_lossy(s).into_owned(), 1 + n))
}

impl Frame {
    /// Decodes the first message of `buf`: `Ok(None)` if more bytes are needed, else the
    /// message and the bytes it took. Never allocates more than the message's own bytes.
    pub fn decode(buf: &[u8], max: usize) -> Result<Option<(Frame, usize)>, HpfeedsError> {
        let Some(head) = buf.get(..5) else { return Ok(None) };
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        if len < 5 {
            return Err(HpfeedsError::TooShort(len));
        }
        let len = len as usize;
        if len > max {
            return Err(HpfeedsError::TooLarge(len));
        }
        let Some(body) = buf.get(5..len) else { return Ok(None) };
        let f = match head[4] {
            OP_ERROR => Frame::Error(String::from_utf8_lossy(body).into_owned()),
            OP_INFO => {
                let (name, n) = name(body, "info")?;
                Frame::Info { name, nonce: body[n..].to_vec() }
            }
            OP_AUTH => {
                let (ident, n) = name(body, "auth")?;
                Frame::Auth { ident, hash: body[n..].to_vec() }
            }
            OP_PUBLISH => {
                let (ident, n) = name(body, "publish")?;
                let (channel, m) = name(&body[n..], "publish")?;
                Frame::Publish { ident, channel, payload: body[n + m..].to_vec() }
            }
            OP_SUBSCRIBE => {
                let (ident, n) = name(body, "subscribe")?;
                Frame::Subscribe { ident, channel: String::from_utf8_lossy(&body[n..]).into_owned() }
            }
            op => Frame::Unknown(op),
        };
        Ok(Some((f, len)))
    }
}

fn message(op: u8, parts: &[&[u8]]) -> Vec<u8> {
    let len = 5 + parts.iter().map(|p| p.len()).sum::<usize>();
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&(len as u32).to_be_bytes());
    m.push(op);
    for p in parts {
        m.extend_from_slice(p);
    }
    m
}

fn short(s: &str) -> Result<[u8; 1], HpfeedsError> {
    u8::try_from(s.len()).map(|n| [n]).map_err(|_| HpfeedsError::NameTooLong)
}

/// `SHA1(nonce ‖ secret)`, the AUTH proof.
pub fn auth_hash(nonce: &[u8], secret: &[u8]) -> [u8; 20] {
    Sha1::new().chain_update(nonce).chain_update(secret).finalize().into()
}

pub fn encode_auth(ident: &str, nonce: &[u8], secret: &[u8]) -> Result<Vec<u8>, HpfeedsError> {
    Ok(message(OP_AUTH, &[&short(ident)?, ident.as_bytes(), &auth_hash(nonce, secret)]))
}

pub fn encode_publish(ident: &str, channel: &str, payload: &[u8]) -> Result<Vec<u8>, HpfeedsError> {
    if payload.len() > MAX_FRAME {
        return Err(HpfeedsError::TooLarge(payload.len()));
    }
    Ok(message(OP_PUBLISH, &[&short(ident)?, ident.as_bytes(), &short(channel)?, channel.as_bytes(), payload]))
}

pub fn encode_info(name: &str, nonce: &[u8; 4]) -> Result<Vec<u8>, HpfeedsError> {
    Ok(message(OP_INFO, &[&short(name)?, name.as_bytes(), nonce]))
}

pub fn encode_error(text: &str) -> Vec<u8> {
    message(OP_ERROR, &[text.as_bytes()])
}

/// The ECS document of a just-committed event (enrichment is not looked up here: `source.geo`
/// and `source.as` are absent; the stored export has them).
pub fn document_of(ev: &Event) -> serde_json::Value {
    let l = Lifted::of(ev);
    let src_ip = ev.src_ip.to_string();
    let row = ExportRow {
        time_ms: ev.time_ms,
        src_ip: &src_ip,
        src_port: i64::from(ev.src_port),
        dst_port: i64::from(ev.dst_port),
        protocol: ev.protocol.as_str(),
        transport: ev.transport.as_str(),
        sensor: &ev.sensor,
        country: "",
        asn: None,
        as_org: "",
        kind: l.kind,
        session_id: ev.session_id.min(i64::MAX as u64) as i64,
        duration_ms: i64::from(ev.duration_ms),
        bytes_in: ev.bytes_in.min(i64::MAX as u64) as i64,
        bytes_out: ev.bytes_out.min(i64::MAX as u64) as i64,
        count: l.count,
        username: l.username.as_deref(),
        password: l.password.as_deref(),
        payload_sha256: l.payload_sha256.as_deref(),
        url: l.url.as_deref(),
        fields: &l.fields,
        seq: ev.seq.min(i64::MAX as u64) as i64,
        derived: l.derived.as_deref(),
        recovered: None,
    };
    crate::ecs::document(&row, None)
}

/// One authenticated connection to the broker.
pub struct Connection {
    stream: tokio::net::TcpStream,
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("broker: {0}")]
    Protocol(#[from] HpfeedsError),
    #[error("the broker refused: {0}")]
    Refused(String),
    #[error("the broker did not start with INFO")]
    NoInfo,
}

impl Connection {
    /// Connects, reads INFO and authenticates (within `timeout`).
    pub async fn open(cfg: &HpfeedsConfig, secret: &[u8], timeout: Duration) -> Result<Connection, ConnectError> {
        match tokio::time::timeout(timeout, Connection::handshake(cfg, secret)).await {
            Ok(r) => r,
            Err(_) => {
                Err(ConnectError::Io(std::io::Error::new(std::io::ErrorKind::TimedOut, "broker handshake timed out")))
            }
        }
    }

    async fn handshake(cfg: &HpfeedsConfig, secret: &[u8]) -> Result<Connection, ConnectError> {
        let mut stream = tokio::net::TcpStream::connect((cfg.host.as_str(), cfg.port)).await?;
        let mut buf = Vec::new();
        let info = loop {
            if let Some((f, _)) = Frame::decode(&buf, 64 * 1024)? {
                break f;
            }
            let mut chunk = [0u8; 1024];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(ConnectError::NoInfo);
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let nonce = match info {
            Frame::Info { nonce, .. } => nonce,
            Frame::Error(e) => return Err(ConnectError::Refused(e)),
            _ => return Err(ConnectError::NoInfo),
        };
        stream.write_all(&encode_auth(&cfg.ident, &nonce, secret)?).await?;
        Ok(Connection { stream })
    }

    /// Publishes one payload.
    pub async fn publish(&mut self, ident: &str, channel: &str, payload: &[u8]) -> Result<(), ConnectError> {
        self.stream.write_all(&encode_publish(ident, channel, payload)?).await?;
        Ok(())
    }
}

/// Reads the secret file (trailing newline removed).
pub fn load_secret(cfg: &HpfeedsConfig) -> Result<Vec<u8>, String> {
    std::fs::read_to_string(&cfg.secret_file)
        .map(|s| s.trim_end_matches(['\r', '\n']).as_bytes().to_vec())
        .map_err(|e| format!("cannot read hpfeeds.secret_file {}: {e}", cfg.secret_file.display()))
}

/// Publishes every event of `events` (the tap) until `shutdown`.
pub async fn run(
    cfg: HpfeedsConfig,
    secret: Vec<u8>,
    mut events: mpsc::Receiver<Arc<Event>>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let mut conn: Option<Connection> = None;
    let mut pending: Option<Vec<u8>> = None;
    let mut backoff = Duration::from_secs(1);
    let max_backoff = Duration::from_secs(cfg.reconnect_max_s);
    loop {
        if pending.is_none() {
            let ev = tokio::select! {
                _ = shutdown.cancelled() => return,
                ev = events.recv() => match ev { Some(ev) => ev, None => return },
            };
            let doc = document_of(&ev).to_string().into_bytes();
            if doc.len() > cfg.max_message_bytes {
                Metrics::count(&metrics.hpfeeds, "result", "too_large");
                continue;
            }
            pending = Some(doc);
        }
        if conn.is_none() {
            match Connection::open(&cfg, &secret, Duration::from_secs(10)).await {
                Ok(c) => {
                    tracing::info!(host = %cfg.host, port = cfg.port, "hpfeeds connected");
                    conn = Some(c);
                    backoff = Duration::from_secs(1);
                }
                Err(e) => {
                    Metrics::count(&metrics.hpfeeds, "result", "connect_failed");
                    tracing::warn!(host = %cfg.host, error = %e, retry_s = backoff.as_secs(), "hpfeeds connection failed");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(max_backoff);
                    continue;
                }
            }
        }
        if let (Some(c), Some(doc)) = (conn.as_mut(), pending.as_ref()) {
            match c.publish(&cfg.ident, &cfg.channel, doc).await {
                Ok(()) => {
                    Metrics::count(&metrics.hpfeeds, "result", "published");
                    pending = None;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "hpfeeds publish failed; reconnecting");
                    conn = None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_hostile_ones_are_refused() {
        let m = encode_publish("drosera", "drosera.events", b"{}").unwrap();
        assert_eq!(&m[..5], &[0, 0, 0, 30, OP_PUBLISH]); // 5 + 1 + 7 + 1 + 14 + 2
        let (f, n) = Frame::decode(&m, MAX_FRAME).unwrap().unwrap();
        assert_eq!(n, m.len());
        assert_eq!(
            f,
            Frame::Publish { ident: "drosera".into(), channel: "drosera.events".into(), payload: b"{}".to_vec() }
        );
        assert_eq!(Frame::decode(&m[..m.len() - 1], MAX_FRAME).unwrap(), None);
        let info = encode_info("broker", &[1, 2, 3, 4]).unwrap();
        assert_eq!(
            Frame::decode(&info, MAX_FRAME).unwrap().unwrap().0,
            Frame::Info { name: "broker".into(), nonce: vec![1, 2, 3, 4] }
        );
        assert_eq!(Frame::decode(&[0, 0, 0, 2, 0], MAX_FRAME), Err(HpfeedsError::TooShort(2)));
        assert_eq!(Frame::decode(&[0xff, 0, 0, 0, 0], MAX_FRAME), Err(HpfeedsError::TooLarge(0xff00_0000)));
        assert_eq!(Frame::decode(&[0, 0, 0, 7, OP_PUBLISH, 9, 1], MAX_FRAME), Err(HpfeedsError::Malformed("publish")));
        assert!(encode_publish(&"x".repeat(256), "c", b"").is_err());
    }

    /// Truncations and mutations of real messages and random bytes: never a panic, and a
    /// decoded message never claims more bytes than it was given.
    #[test]
    fn hostile_input_never_panics() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let good = [
            encode_publish("i", "c", b"{\"a\":1}").unwrap(),
            encode_info("b", &[1, 2, 3, 4]).unwrap(),
            encode_auth("i", b"n", b"s").unwrap(),
            encode_error("no"),
        ];
        for _ in 0..20_000 {
            let mut m = good[(next() % 4) as usize].clone();
            let cut = (next() as usize) % (m.len() + 1);
            m.truncate(cut);
            for _ in 0..(next() % 3) {
                if !m.is_empty() {
                    let i = (next() as usize) % m.len();
                    m[i] = next() as u8;
                }
            }
            if let Ok(Some((_, n))) = Frame::decode(&m, 64) {
                assert!(n <= m.len() && n >= 5);
            }
        }
    }

    /// The proof of the reference client (hpfeeds.py: `hashlib.sha1(nonce + secret)`).
    #[test]
    fn auth_is_sha1_of_nonce_and_secret() {
        assert_eq!(hex::encode(auth_hash(b"", b"abc")), "a9993e364706816aba3e25717850c26c9cd0d89d");
        let a = encode_auth("id", b"\x01\x02\x03\x04", b"s").unwrap();
        let (f, _) = Frame::decode(&a, MAX_FRAME).unwrap().unwrap();
        assert_eq!(f, Frame::Auth { ident: "id".into(), hash: auth_hash(b"\x01\x02\x03\x04", b"s").to_vec() });
    }
}
