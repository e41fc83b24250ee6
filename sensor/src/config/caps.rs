//! The per-protocol caps of issue 16's services: `[mqtt]`, `[mongodb]`, `[epmap]`, `[pptp]`,
//! `[printer]`, `[sip]`, `[memcached]` and `[upnp]`.
//!
//! Every service bounds what one connection may cost (bytes by `limits.max_bytes_in`, time by
//! the timeouts); these sections bound what the protocol itself lets a client ask for: the
//! largest message it will read (checked against the length the client announced, before
//! anything is allocated), how many messages one connection gets, how many items of a list are
//! recorded. They were module constants; as config keys an operator can tighten them on a small
//! Pi or loosen them to see more of a campaign, within a ceiling each key states (past it a
//! value is an error that names the key and its default). What stays a constant is protocol
//! shape, not cost: BSON's nesting depth (a recursion guard), memcached's 250-byte key, SIP's
//! header count, the printer's 64-byte ready message.
//!
//! Each section has `deny_unknown_fields` and a default for every key (the example config lists
//! them, a test compares the two), and is handed to the sessions through
//! [`Shared`](crate::protocols::Shared).

use super::{invalid, ConfigError};
use serde::Deserialize;

/// Checks `(key, value, lowest, highest, default)` rows; the error names the key and the default.
fn check(rows: &[(&str, u64, u64, u64, u64)]) -> Result<(), ConfigError> {
    for &(key, v, lo, hi, default) in rows {
        if v < lo || v > hi {
            let name = key.rsplit('.').next().unwrap_or(key);
            return Err(invalid(key, format!("{v} is outside {lo}..={hi}"), format!("use {name} = {default}")));
        }
    }
    Ok(())
}

/// `[mqtt]`: the MQTT broker (`kind = "mqtt"`).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct MqttSection {
    /// Largest packet read (fixed header excluded); a client announcing more is a protocol error.
    pub max_packet_bytes: usize,
    /// Packets handled per connection; the broker then closes.
    pub max_packets: usize,
    /// Topics recorded from one SUBSCRIBE (every one is still granted and counted).
    pub max_topics: usize,
}

impl Default for MqttSection {
    fn default() -> Self {
        MqttSection { max_packet_bytes: 256 * 1024, max_packets: 10_000, max_topics: 64 }
    }
}

/// `[mongodb]`: the MongoDB server (`kind = "mongodb"`).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct MongodbSection {
    /// Largest message read (header included); a client announcing more is a protocol error.
    pub max_message_bytes: usize,
    /// Messages handled per connection.
    pub max_messages: usize,
}

impl Default for MongodbSection {
    fn default() -> Self {
        MongodbSection { max_message_bytes: 1024 * 1024, max_messages: 10_000 }
    }
}

/// `[epmap]`: the DCE/RPC endpoint mapper (`kind = "epmap"`).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct EpmapSection {
    /// Largest PDU fragment read (Windows' own default is 5840); larger ends the connection.
    pub max_fragment_bytes: usize,
    /// Presentation contexts read from one bind (and kept bound per connection).
    pub max_contexts: usize,
    /// PDUs handled per connection.
    pub max_pdus: usize,
}

impl Default for EpmapSection {
    fn default() -> Self {
        EpmapSection { max_fragment_bytes: 5840, max_contexts: 32, max_pdus: 1_000 }
    }
}

/// `[pptp]`: the PPTP VPN server's control connection (`kind = "pptp"`).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct PptpSection {
    /// Largest control message read (the largest the protocol defines is 220 bytes).
    pub max_message_bytes: usize,
    /// Control messages handled per connection.
    pub max_messages: usize,
}

impl Default for PptpSection {
    fn default() -> Self {
        PptpSection { max_message_bytes: 512, max_messages: 1_000 }
    }
}

/// `[printer]`: the raw (JetDirect) printer (`kind = "printer"`).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct PrinterSection {
    /// Longest PJL/PostScript command line recorded; the rest of a longer line is skipped (it
    /// is still kept in the job's sample).
    pub max_line_bytes: usize,
    /// Commands recorded per connection (the job is still read and kept).
    pub max_commands: usize,
}

impl Default for PrinterSection {
    fn default() -> Self {
        PrinterSection { max_line_bytes: 1024, max_commands: 256 }
    }
}

/// `[sip]`: SIP over TCP (`kind = "sip"`; a UDP request is one datagram, bounded by
/// `udp.max_datagram_bytes`).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct SipSection {
    /// Requests handled per TCP connection.
    pub max_messages: usize,
    /// Largest request body read (`Content-Length`); larger ends the connection.
    pub max_body_bytes: usize,
}

impl Default for SipSection {
    fn default() -> Self {
        SipSection { max_messages: 100, max_body_bytes: 64 * 1024 }
    }
}

/// `[memcached]`: memcached over TCP (`kind = "memcached"`; UDP is one datagram each).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct MemcachedSection {
    /// Commands handled per connection.
    pub max_commands: usize,
    /// Largest value a storage command may announce; a larger one is refused as memcached
    /// does (`SERVER_ERROR object too large for cache`) and its bytes read and dropped.
    pub max_value_bytes: u64,
}

impl Default for MemcachedSection {
    fn default() -> Self {
        MemcachedSection { max_commands: 1000, max_value_bytes: 1024 * 1024 }
    }
}

/// `[upnp]`: UPnP's description and SOAP control over HTTP (`kind = "upnp"`'s
/// `description_port`; SSDP is one datagram each).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct UpnpSection {
    /// HTTP requests handled per connection.
    pub max_requests: usize,
    /// Largest SOAP body read (`Content-Length`); larger ends the connection (protocol error).
    pub max_body_bytes: usize,
}

impl Default for UpnpSection {
    fn default() -> Self {
        UpnpSection { max_requests: 50, max_body_bytes: 16 * 1024 }
    }
}

/// All eight sections of `cfg`, checked together by [`super::Config::validate`].
pub(super) fn validate(cfg: &super::Config) -> Result<(), ConfigError> {
    let super::Config { mqtt, mongodb, epmap, pptp, printer, sip, memcached, upnp, .. } = cfg;
    let (q, g, e, p, r) = (
        MqttSection::default(),
        MongodbSection::default(),
        EpmapSection::default(),
        PptpSection::default(),
        PrinterSection::default(),
    );
    let (s, m, u) = (SipSection::default(), MemcachedSection::default(), UpnpSection::default());
    let n = |v: usize| v as u64;
    check(&[
        // MQTT's remaining length is a 4-byte varint: 268435455 at most; 16 MiB is plenty.
        ("mqtt.max_packet_bytes", n(mqtt.max_packet_bytes), 64, 16 << 20, n(q.max_packet_bytes)),
        ("mqtt.max_packets", n(mqtt.max_packets), 1, 1_000_000, n(q.max_packets)),
        ("mqtt.max_topics", n(mqtt.max_topics), 1, 4096, n(q.max_topics)),
        // mongod's own maximum message is 48000000 bytes; a header alone is 16.
        ("mongodb.max_message_bytes", n(mongodb.max_message_bytes), 64, 48_000_000, n(g.max_message_bytes)),
        ("mongodb.max_messages", n(mongodb.max_messages), 1, 1_000_000, n(g.max_messages)),
        // A fragment length is 16 bits and a bind's context count 8 bits.
        ("epmap.max_fragment_bytes", n(epmap.max_fragment_bytes), 64, 65_535, n(e.max_fragment_bytes)),
        ("epmap.max_contexts", n(epmap.max_contexts), 1, 255, n(e.max_contexts)),
        ("epmap.max_pdus", n(epmap.max_pdus), 1, 1_000_000, n(e.max_pdus)),
        // A PPTP length is 16 bits; below 220 the largest control messages would be refused.
        ("pptp.max_message_bytes", n(pptp.max_message_bytes), 220, 65_535, n(p.max_message_bytes)),
        ("pptp.max_messages", n(pptp.max_messages), 1, 1_000_000, n(p.max_messages)),
        ("printer.max_line_bytes", n(printer.max_line_bytes), 16, 65_536, n(r.max_line_bytes)),
        ("printer.max_commands", n(printer.max_commands), 0, 1_000_000, n(r.max_commands)),
        ("sip.max_messages", n(sip.max_messages), 1, 100_000, n(s.max_messages)),
        ("sip.max_body_bytes", n(sip.max_body_bytes), 0, 16 << 20, n(s.max_body_bytes)),
        ("memcached.max_commands", n(memcached.max_commands), 1, 1_000_000, n(m.max_commands)),
        ("memcached.max_value_bytes", memcached.max_value_bytes, 1, 64 << 20, m.max_value_bytes),
        ("upnp.max_requests", n(upnp.max_requests), 1, 100_000, n(u.max_requests)),
        ("upnp.max_body_bytes", n(upnp.max_body_bytes), 0, 1 << 20, n(u.max_body_bytes)),
    ])
}
