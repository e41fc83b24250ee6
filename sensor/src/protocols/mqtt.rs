//! MQTT (1883): an open broker, so IoT botnets and credential stuffers show what they send.
//!
//! Exposed brokers are scanned for anonymous access (subscribe to `#` to read every sensor) and
//! brute-forced with user/password pairs. We speak MQTT 3.1 (`MQIsdp`), 3.1.1 and 5: CONNECT is
//! recorded as a `Login` (client id, user, password, protocol level; an anonymous CONNECT is
//! accepted like a broker without `allow_anonymous false`, one with a user name goes through the
//! login policy and is refused with "not authorized" unless it lets the pair in), SUBSCRIBE
//! topics as a `Command` (granted at the asked QoS), PUBLISH as a `Command` (topic) plus a
//! `Payload` (the message, hashed and prefix-kept), PINGREQ, UNSUBSCRIBE and DISCONNECT answered
//! as a broker does. Nothing a client published is ever delivered; a subscriber to `$SYS`
//! gets the broker's own fixed statistics ([`SYS_TOPICS`], mosquitto 2.0.11), as nmap's
//! `mqtt-subscribe` expects.
//!
//! Bounded by the `[mqtt]` config section ([`MqttSection`]): the remaining-length varint is at
//! most 4 bytes and a packet at most `max_packet_bytes` (a larger one ends the session as a
//! protocol error before anything is allocated), a session handles at most `max_packets`
//! packets and records at most `max_topics` topics of a SUBSCRIBE; the session byte cap covers
//! the rest.

use crate::config::MqttSection;
use crate::session::{Session, SessionResult};
use drosera_uplink::event::{CloseReason, Detail, Secret, MAX_PAYLOAD_PREFIX};
use sha2::Digest;

/// Packet types (the high nibble of the first byte).
pub mod kind {
    pub const CONNECT: u8 = 1;
    pub const PUBLISH: u8 = 3;
    pub const PUBREL: u8 = 6;
    pub const SUBSCRIBE: u8 = 8;
    pub const UNSUBSCRIBE: u8 = 10;
    pub const PINGREQ: u8 = 12;
    pub const DISCONNECT: u8 = 14;
}

/// Why a packet could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MqttError {
    #[error("remaining length longer than 4 bytes")]
    BadLength,
    #[error("packet larger than the cap")]
    TooLarge,
    #[error("malformed packet")]
    Malformed,
}

/// Decodes the remaining-length varint from `bytes` (the bytes after the first header byte):
/// `Ok(Some((length, bytes used)))`, `Ok(None)` when more bytes are needed, `TooLarge` past `max`.
pub fn remaining_length(bytes: &[u8], max: usize) -> Result<Option<(usize, usize)>, MqttError> {
    let mut value = 0usize;
    for (i, &b) in bytes.iter().enumerate().take(4) {
        value |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return if value > max { Err(MqttError::TooLarge) } else { Ok(Some((value, i + 1))) };
        }
    }
    if bytes.len() >= 4 {
        Err(MqttError::BadLength)
    } else {
        Ok(None)
    }
}

/// A CONNECT packet's fields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Connect {
    pub protocol: String,
    /// 3 (3.1), 4 (3.1.1), 5.
    pub level: u8,
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<Vec<u8>>,
    pub will_topic: Option<String>,
    pub keep_alive: u16,
}

/// A cursor over one packet's body.
struct Cur<'a> {
    b: &'a [u8],
}

impl<'a> Cur<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], MqttError> {
        if self.b.len() < n {
            return Err(MqttError::Malformed);
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }
    fn u8(&mut self) -> Result<u8, MqttError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, MqttError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn bin(&mut self) -> Result<&'a [u8], MqttError> {
        let n = self.u16()? as usize;
        self.take(n)
    }
    fn text(&mut self) -> Result<String, MqttError> {
        Ok(String::from_utf8_lossy(self.bin()?).into_owned())
    }
    /// Skips MQTT 5 properties (a varint length and that many bytes).
    fn properties(&mut self) -> Result<(), MqttError> {
        let (len, used) = remaining_length(self.b, usize::MAX)?.ok_or(MqttError::Malformed)?;
        self.take(used)?;
        self.take(len)?;
        Ok(())
    }
}

/// Parses a CONNECT body (after the fixed header).
pub fn parse_connect(body: &[u8]) -> Result<Connect, MqttError> {
    let mut c = Cur { b: body };
    let protocol = c.text()?;
    let level = c.u8()?;
    let flags = c.u8()?;
    let keep_alive = c.u16()?;
    if level >= 5 {
        c.properties()?;
    }
    let client_id = c.text()?;
    let mut will_topic = None;
    if flags & 0x04 != 0 {
        if level >= 5 {
            c.properties()?;
        }
        will_topic = Some(c.text()?);
        c.bin()?;
    }
    let username = if flags & 0x80 != 0 { Some(c.text()?) } else { None };
    let password = if flags & 0x40 != 0 { Some(c.bin()?.to_vec()) } else { None };
    Ok(Connect { protocol, level, client_id, username, password, will_topic, keep_alive })
}

/// A SUBSCRIBE's packet id, the first `max_topics` `(topic, requested QoS)` pairs and how
/// many topics it named (every one is granted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    pub id: u16,
    pub topics: Vec<(String, u8)>,
    pub count: usize,
}

/// Parses a SUBSCRIBE body.
pub fn parse_subscribe(body: &[u8], level: u8, max_topics: usize) -> Result<Subscribe, MqttError> {
    let mut c = Cur { b: body };
    let id = c.u16()?;
    if level >= 5 {
        c.properties()?;
    }
    let mut topics = Vec::new();
    let mut count = 0usize;
    while !c.b.is_empty() {
        let topic = c.text()?;
        let opts = c.u8()?;
        count += 1;
        if topics.len() < max_topics {
            topics.push((topic, opts & 0x03));
        }
    }
    if count == 0 {
        return Err(MqttError::Malformed);
    }
    Ok(Subscribe { id, topics, count })
}

/// An UNSUBSCRIBE's packet id and topic count.
pub fn parse_unsubscribe(body: &[u8], level: u8) -> Result<(u16, usize), MqttError> {
    let mut c = Cur { b: body };
    let id = c.u16()?;
    if level >= 5 {
        c.properties()?;
    }
    let mut n = 0;
    while !c.b.is_empty() {
        c.bin()?;
        n += 1;
    }
    Ok((id, n))
}

/// A PUBLISH: topic, packet id (QoS 1 and 2), payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish<'a> {
    pub topic: String,
    pub qos: u8,
    pub retain: bool,
    pub packet_id: Option<u16>,
    pub payload: &'a [u8],
}

/// Parses a PUBLISH body; `flags` is the low nibble of the first header byte.
pub fn parse_publish(flags: u8, body: &[u8], level: u8) -> Result<Publish<'_>, MqttError> {
    let qos = (flags >> 1) & 0x03;
    if qos == 3 {
        return Err(MqttError::Malformed);
    }
    let mut c = Cur { b: body };
    let topic = c.text()?;
    let packet_id = if qos > 0 { Some(c.u16()?) } else { None };
    if level >= 5 {
        c.properties()?;
    }
    Ok(Publish { topic, qos, retain: flags & 1 != 0, packet_id, payload: c.b })
}

/// CONNACK: session present 0 and `code` (3.x: 0 accepted, 5 not authorized; 5: 0 or 0x87).
pub fn connack(level: u8, accepted: bool) -> Vec<u8> {
    match (level >= 5, accepted) {
        (false, true) => vec![0x20, 2, 0, 0],
        (false, false) => vec![0x20, 2, 0, 5],
        (true, true) => vec![0x20, 3, 0, 0, 0],
        (true, false) => vec![0x20, 3, 0, 0x87, 0],
    }
}

/// SUBACK granting each topic its requested QoS (at most 1 byte per topic; `count` topics).
pub fn suback(level: u8, id: u16, granted: &[u8], count: usize) -> Vec<u8> {
    let mut body = id.to_be_bytes().to_vec();
    if level >= 5 {
        body.push(0);
    }
    body.extend_from_slice(granted);
    // Topics past the recorded ones are granted QoS 0.
    body.extend(std::iter::repeat_n(0u8, count.saturating_sub(granted.len())));
    packet(0x90, &body)
}

/// A packet with type byte `first` and `body`.
pub fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    let mut n = body.len();
    loop {
        let mut b = (n & 0x7f) as u8;
        n >>= 7;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    out
}

/// The protocol level as a version name.
pub fn version_name(level: u8) -> &'static str {
    match level {
        3 => "3.1",
        4 => "3.1.1",
        5 => "5.0",
        _ => "unknown",
    }
}

/// Reads one packet: `(first byte, body)`.
async fn read_packet(session: &mut Session, max: usize) -> SessionResult<(u8, Vec<u8>)> {
    let mut first = [0u8; 1];
    session.read_exact(&mut first).await?;
    let mut len_bytes = Vec::with_capacity(4);
    let (len, _) = loop {
        let mut b = [0u8; 1];
        session.read_exact(&mut b).await?;
        len_bytes.push(b[0]);
        match remaining_length(&len_bytes, max) {
            Ok(Some(v)) => break v,
            Ok(None) => continue,
            Err(e) => {
                tracing::debug!(error = %e, "mqtt: bad packet length");
                return Err(CloseReason::ProtocolError);
            }
        }
    };
    let mut body = vec![0u8; len];
    session.read_exact(&mut body).await?;
    Ok((first[0], body))
}

pub(crate) async fn handle(session: &mut Session, _svc: &crate::config::ServiceSection) -> SessionResult<()> {
    let caps: MqttSection = session.services().mqtt;
    let (first, body) = read_packet(session, caps.max_packet_bytes).await?;
    if first >> 4 != kind::CONNECT {
        return Err(CloseReason::ProtocolError);
    }
    let Ok(c) = parse_connect(&body) else {
        return Err(CloseReason::ProtocolError);
    };
    let level = c.level;
    let accepted = match (&c.username, &c.password) {
        (None, _) => true,
        (Some(u), p) => session.check_login(u, &String::from_utf8_lossy(p.as_deref().unwrap_or_default())),
    };
    let mut extra = vec![
        ("method".into(), "mqtt-connect".into()),
        ("client_id".into(), c.client_id.clone()),
        ("protocol".into(), format!("{} {}", c.protocol, version_name(level))),
        ("keep_alive".into(), c.keep_alive.to_string()),
    ];
    if let Some(t) = &c.will_topic {
        extra.push(("will_topic".into(), t.clone()));
    }
    session.emit(Detail::Login {
        username: c.username.clone().unwrap_or_default(),
        secret: match &c.password {
            Some(p) => Secret::Password(String::from_utf8_lossy(p).into_owned()),
            None => Secret::None,
        },
        success: accepted,
        extra,
    });
    session.write_all(&connack(level, accepted)).await?;
    if !accepted {
        session.flush().await?;
        return Ok(());
    }
    for _ in 0..caps.max_packets {
        let (first, body) = read_packet(session, caps.max_packet_bytes).await?;
        let (typ, flags) = (first >> 4, first & 0x0f);
        match typ {
            kind::PUBLISH => {
                let Ok(p) = parse_publish(flags, &body, level) else {
                    return Err(CloseReason::ProtocolError);
                };
                session.emit(Detail::Command {
                    line: format!("PUBLISH {} qos={}{}", p.topic, p.qos, if p.retain { " retain" } else { "" }),
                });
                if !p.payload.is_empty() {
                    session.emit(payload_detail(&p.topic, p.payload));
                }
                match (p.qos, p.packet_id) {
                    (1, Some(id)) => session.write_all(&ack(0x40, id, level)).await?,
                    (2, Some(id)) => session.write_all(&ack(0x50, id, level)).await?,
                    _ => {}
                }
            }
            kind::PUBREL => {
                if let Some(id) = body.get(..2) {
                    session.write_all(&ack(0x70, u16::from_be_bytes([id[0], id[1]]), level)).await?;
                }
            }
            kind::SUBSCRIBE => {
                let Ok(Subscribe { id, topics, count }) = parse_subscribe(&body, level, caps.max_topics) else {
                    return Err(CloseReason::ProtocolError);
                };
                let names: Vec<&str> = topics.iter().map(|(t, _)| t.as_str()).collect();
                session.emit(Detail::Command { line: format!("SUBSCRIBE {}", names.join(" ")) });
                let granted: Vec<u8> = topics.iter().map(|(_, q)| (*q).min(2)).collect();
                session.write_all(&suback(level, id, &granted, count)).await?;
                if topics.iter().any(|(t, _)| t.starts_with("$SYS")) {
                    for (topic, value) in SYS_TOPICS {
                        session.write_all(&sys_publish(level, topic, value)).await?;
                    }
                }
            }
            kind::UNSUBSCRIBE => {
                let Ok((id, n)) = parse_unsubscribe(&body, level) else {
                    return Err(CloseReason::ProtocolError);
                };
                let mut b = id.to_be_bytes().to_vec();
                if level >= 5 {
                    b.push(0);
                    b.extend(std::iter::repeat_n(0u8, n));
                }
                session.write_all(&packet(0xb0, &b)).await?;
            }
            kind::PINGREQ => session.write_all(&[0xd0, 0]).await?,
            kind::DISCONNECT => return Ok(()),
            _ => {}
        }
    }
    Ok(())
}

/// The broker statistics a mosquitto publishes (retained) under `$SYS`, sent to a client that
/// subscribes there (scanners read the broker version from them). Never an attacker's message.
pub const SYS_TOPICS: [(&str, &str); 4] = [
    ("$SYS/broker/version", "mosquitto version 2.0.11"),
    ("$SYS/broker/uptime", "1726371 seconds"),
    ("$SYS/broker/clients/connected", "3"),
    ("$SYS/broker/messages/received", "52219"),
];

/// A retained QoS 0 PUBLISH of `payload` on `topic`.
pub fn sys_publish(level: u8, topic: &str, payload: &str) -> Vec<u8> {
    let mut body = (topic.len() as u16).to_be_bytes().to_vec();
    body.extend_from_slice(topic.as_bytes());
    if level >= 5 {
        body.push(0);
    }
    body.extend_from_slice(payload.as_bytes());
    packet(0x31, &body)
}

/// PUBACK/PUBREC/PUBCOMP for `id`.
fn ack(first: u8, id: u16, _level: u8) -> Vec<u8> {
    let b = id.to_be_bytes();
    vec![first, 2, b[0], b[1]]
}

/// A published message as a `Payload` event (named by its topic).
fn payload_detail(topic: &str, payload: &[u8]) -> Detail {
    Detail::Payload {
        sha256: sha2::Sha256::digest(payload).into(),
        size: payload.len() as u64,
        name: topic.to_string(),
        prefix: payload[..payload.len().min(MAX_PAYLOAD_PREFIX)].to_vec(),
        truncated: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connect_bytes(level: u8, user: Option<&str>, pass: Option<&str>) -> Vec<u8> {
        let mut b = Vec::new();
        let s = |b: &mut Vec<u8>, t: &[u8]| {
            b.extend_from_slice(&(t.len() as u16).to_be_bytes());
            b.extend_from_slice(t);
        };
        s(&mut b, b"MQTT");
        b.push(level);
        b.push(u8::from(user.is_some()) << 7 | u8::from(pass.is_some()) << 6 | 2);
        b.extend_from_slice(&60u16.to_be_bytes());
        if level >= 5 {
            b.push(0);
        }
        s(&mut b, b"bot-1");
        if let Some(u) = user {
            s(&mut b, u.as_bytes());
        }
        if let Some(p) = pass {
            s(&mut b, p.as_bytes());
        }
        b
    }

    #[test]
    fn connect_fields_are_read_for_every_level() {
        for level in [3, 4, 5] {
            let c = parse_connect(&connect_bytes(level, Some("admin"), Some("pw"))).unwrap();
            assert_eq!(c.level, level);
            assert_eq!(c.client_id, "bot-1");
            assert_eq!(c.username.as_deref(), Some("admin"));
            assert_eq!(c.password.as_deref(), Some(&b"pw"[..]));
        }
        let c = parse_connect(&connect_bytes(4, None, None)).unwrap();
        assert_eq!(c.username, None);
        assert!(parse_connect(&connect_bytes(4, Some("a"), None)[..10]).is_err());
    }

    #[test]
    fn remaining_length_is_capped() {
        let max = MqttSection::default().max_packet_bytes;
        assert_eq!(remaining_length(&[0x00], max), Ok(Some((0, 1))));
        assert_eq!(remaining_length(&[0x7f], max), Ok(Some((127, 1))));
        assert_eq!(remaining_length(&[0x80, 0x01], max), Ok(Some((128, 2))));
        assert_eq!(remaining_length(&[0x80], max), Ok(None));
        assert_eq!(remaining_length(&[0xff, 0xff, 0xff, 0x7f], max), Err(MqttError::TooLarge));
        assert_eq!(remaining_length(&[0x80, 0x80, 0x80, 0x80, 0x01], max), Err(MqttError::BadLength));
        let p = packet(0x30, &vec![7u8; 300]);
        assert_eq!(remaining_length(&p[1..], max), Ok(Some((300, 2))));
        // The configured cap, not a constant: 300 is too large for a 299-byte cap.
        assert_eq!(remaining_length(&p[1..], 299), Err(MqttError::TooLarge));
    }

    #[test]
    fn subscribe_publish_and_replies() {
        let mut b = 7u16.to_be_bytes().to_vec();
        b.extend_from_slice(&[0, 1, b'#', 1]);
        b.extend_from_slice(&[0, 3, b'a', b'/', b'b', 0]);
        let Subscribe { id, topics, count: n } = parse_subscribe(&b, 4, 64).unwrap();
        assert_eq!((id, n), (7, 2));
        assert_eq!(topics, vec![("#".into(), 1), ("a/b".into(), 0)]);
        let Subscribe { topics, count: n, .. } = parse_subscribe(&b, 4, 1).unwrap();
        assert_eq!((topics, n), (vec![("#".into(), 1)], 2));
        assert_eq!(suback(4, 7, &[1, 0], 2), vec![0x90, 4, 0, 7, 1, 0]);
        assert!(parse_subscribe(&7u16.to_be_bytes(), 4, 64).is_err());
        let mut p = vec![0, 3, b'x', b'/', b'y', 0, 9];
        p.extend_from_slice(b"hello");
        let got = parse_publish(0x02, &p, 4).unwrap();
        assert_eq!((got.topic.as_str(), got.qos, got.packet_id, got.payload), ("x/y", 1, Some(9), &b"hello"[..]));
        assert!(parse_publish(0x06, &p, 4).is_err());
        assert_eq!(connack(4, false), vec![0x20, 2, 0, 5]);
        assert_eq!(connack(5, true), vec![0x20, 3, 0, 0, 0]);
        let p = sys_publish(4, "$SYS/broker/version", "v");
        let got = parse_publish(p[0] & 0x0f, &p[2..], 4).unwrap();
        assert_eq!((got.topic.as_str(), got.retain, got.payload), ("$SYS/broker/version", true, &b"v"[..]));
    }

    #[test]
    fn hostile_input_never_panics() {
        for b in crate::protocols::hostile::random_inputs(0x1883_0000_0001, 20_000, 64, false) {
            let _ = remaining_length(&b, 1 << 20);
            let _ = parse_connect(&b);
            for level in [4, 5] {
                let _ = parse_subscribe(&b, level, 64);
                let _ = parse_unsubscribe(&b, level);
                let _ = parse_publish(b.first().copied().unwrap_or(0) & 0x0f, &b, level);
            }
        }
        let good = connect_bytes(5, Some("u"), Some("p"));
        for t in crate::protocols::hostile::truncations(&good) {
            let _ = parse_connect(t);
        }
    }
}
