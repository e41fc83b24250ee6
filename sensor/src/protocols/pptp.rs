//! PPTP (1723): the control connection of a VPN concentrator, so VPN scanners and brute-forcers
//! show who they claim to be.
//!
//! PPTP (RFC 2637) starts with a TCP control connection: Start-Control-Connection-Request
//! carries the client's host name and vendor (scanners and VPN clients name themselves there),
//! then an Outgoing-Call-Request opens a call whose PPP (and its MS-CHAPv2 login) would run
//! over GRE, which the sensor does not speak. We record the start request (`Fingerprint`
//! `pptp-client`: host name, vendor, firmware, protocol version), answer with a believable
//! reply per persona (Microsoft RRAS on windows-server and mixed, MikroTik on the iot-router,
//! pptpd on linux-server; a configured `banner` replaces the vendor), record each call request
//! (`Command`: phone number, call id, speeds), answer Echo, Set-Link-Info, Call-Clear and
//! Stop-Control-Connection like a server does. `nmap -sV` (its `pptp-version` script) reads
//! the vendor and host name from the reply.
//!
//! Bounded by the `[pptp]` config section ([`PptpSection`]): every control message is
//! length-prefixed and at most `max_message_bytes` (a larger or shorter length ends the session
//! before anything is allocated), at most `max_messages` per session.

use crate::config::{Persona, PptpSection, ServiceSection};
use crate::session::{Session, SessionResult};
use drosera_uplink::event::{CloseReason, Detail};

/// The magic cookie of every control message.
pub const MAGIC: u32 = 0x1A2B_3C4D;

/// Control message types (RFC 2637 2.0).
pub mod ctrl {
    pub const START_REQUEST: u16 = 1;
    pub const START_REPLY: u16 = 2;
    pub const STOP_REQUEST: u16 = 3;
    pub const STOP_REPLY: u16 = 4;
    pub const ECHO_REQUEST: u16 = 5;
    pub const ECHO_REPLY: u16 = 6;
    pub const OUTGOING_CALL_REQUEST: u16 = 7;
    pub const OUTGOING_CALL_REPLY: u16 = 8;
    pub const INCOMING_CALL_REQUEST: u16 = 9;
    pub const CALL_CLEAR_REQUEST: u16 = 12;
    pub const CALL_DISCONNECT_NOTIFY: u16 = 13;
    pub const SET_LINK_INFO: u16 = 15;
}

/// The common header of a control message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub length: u16,
    pub message_type: u16,
    pub cookie: u32,
    pub control_type: u16,
}

/// Parses the 12-byte header; `None` when its length is outside `12..=max_message`.
pub fn parse_header(b: &[u8], max_message: usize) -> Option<Header> {
    if b.len() < 12 {
        return None;
    }
    let h = Header {
        length: u16::from_be_bytes([b[0], b[1]]),
        message_type: u16::from_be_bytes([b[2], b[3]]),
        cookie: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
        control_type: u16::from_be_bytes([b[8], b[9]]),
    };
    (12..=max_message).contains(&(h.length as usize)).then_some(h)
}

/// A Start-Control-Connection-Request's fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartRequest {
    pub version: u16,
    pub framing: u32,
    pub bearer: u32,
    pub max_channels: u16,
    pub firmware: u16,
    pub host_name: String,
    pub vendor: String,
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// A fixed-size NUL-padded text field.
fn text(b: &[u8], at: usize, len: usize) -> Option<String> {
    let f = b.get(at..at + len)?;
    let end = f.iter().position(|&c| c == 0).unwrap_or(f.len());
    Some(String::from_utf8_lossy(&f[..end]).into_owned())
}

/// Parses a whole Start-Control-Connection-Request (header included, 156 bytes).
pub fn parse_start_request(m: &[u8]) -> Option<StartRequest> {
    Some(StartRequest {
        version: be16(m, 12)?,
        framing: be32(m, 16)?,
        bearer: be32(m, 20)?,
        max_channels: be16(m, 24)?,
        firmware: be16(m, 26)?,
        host_name: text(m, 28, 64)?,
        vendor: text(m, 92, 64)?,
    })
}

/// An Outgoing-Call-Request's fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRequest {
    pub call_id: u16,
    pub serial: u16,
    pub min_bps: u32,
    pub max_bps: u32,
    pub phone: String,
    pub subaddress: String,
}

/// Parses a whole Outgoing-Call-Request (168 bytes).
pub fn parse_call_request(m: &[u8]) -> Option<CallRequest> {
    Some(CallRequest {
        call_id: be16(m, 12)?,
        serial: be16(m, 14)?,
        min_bps: be32(m, 16)?,
        max_bps: be32(m, 20)?,
        phone: text(m, 40, 64)?,
        subaddress: text(m, 104, 64)?,
    })
}

/// What the server says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flavor {
    pub host_name: &'static str,
    pub vendor: &'static str,
    pub firmware: u16,
}

/// The PPTP server of `persona`.
pub fn flavor(persona: Persona) -> Flavor {
    match persona {
        Persona::IotRouter => Flavor { host_name: "MikroTik", vendor: "MikroTik", firmware: 1 },
        Persona::LinuxServer => Flavor { host_name: "local", vendor: "Linux", firmware: 1 },
        Persona::Mixed | Persona::WindowsServer => Flavor { host_name: "", vendor: "Microsoft", firmware: 3790 },
    }
}

/// A control message of `control_type` with `body` after the 12-byte header.
pub fn message(control_type: u16, body: &[u8]) -> Vec<u8> {
    let len = (12 + body.len()) as u16;
    let mut m = Vec::with_capacity(len as usize);
    m.extend_from_slice(&len.to_be_bytes());
    m.extend_from_slice(&1u16.to_be_bytes());
    m.extend_from_slice(&MAGIC.to_be_bytes());
    m.extend_from_slice(&control_type.to_be_bytes());
    m.extend_from_slice(&[0, 0]);
    m.extend_from_slice(body);
    m
}

fn padded(s: &str, len: usize) -> Vec<u8> {
    let mut v: Vec<u8> = s.bytes().take(len - 1).collect();
    v.resize(len, 0);
    v
}

/// The Start-Control-Connection-Reply (156 bytes, result 1: OK).
pub fn start_reply(f: &Flavor, vendor: &str) -> Vec<u8> {
    let mut b = Vec::with_capacity(144);
    b.extend_from_slice(&0x0100u16.to_be_bytes());
    b.extend_from_slice(&[1, 0]);
    b.extend_from_slice(&1u32.to_be_bytes()); // framing: async
    b.extend_from_slice(&1u32.to_be_bytes()); // bearer: analog
    b.extend_from_slice(&0u16.to_be_bytes()); // max channels
    b.extend_from_slice(&f.firmware.to_be_bytes());
    b.extend_from_slice(&padded(f.host_name, 64));
    b.extend_from_slice(&padded(vendor, 64));
    message(ctrl::START_REPLY, &b)
}

/// The Outgoing-Call-Reply to `req` (result 1: connected), with our call id.
pub fn call_reply(req: &CallRequest, our_id: u16) -> Vec<u8> {
    let mut b = Vec::with_capacity(20);
    b.extend_from_slice(&our_id.to_be_bytes());
    b.extend_from_slice(&req.call_id.to_be_bytes());
    b.extend_from_slice(&[1, 0]);
    b.extend_from_slice(&0u16.to_be_bytes()); // cause
    b.extend_from_slice(&req.max_bps.max(64_000).to_be_bytes()); // connect speed
    b.extend_from_slice(&64u16.to_be_bytes()); // receive window
    b.extend_from_slice(&0u16.to_be_bytes()); // processing delay
    b.extend_from_slice(&0u32.to_be_bytes()); // physical channel
    message(ctrl::OUTGOING_CALL_REPLY, &b)
}

async fn read_message(session: &mut Session, max_message: usize) -> SessionResult<(Header, Vec<u8>)> {
    let mut head = [0u8; 12];
    session.read_exact(&mut head).await?;
    let h = parse_header(&head, max_message).ok_or(CloseReason::ProtocolError)?;
    let mut m = vec![0u8; h.length as usize];
    m[..12].copy_from_slice(&head);
    session.read_exact(&mut m[12..]).await?;
    Ok((h, m))
}

pub(crate) async fn handle(session: &mut Session, svc: &ServiceSection) -> SessionResult<()> {
    let f = flavor(session.persona());
    let vendor = if svc.banner.is_empty() { f.vendor } else { svc.banner.as_str() };
    let mut next_call = 0x4000u16.wrapping_add(rand::random::<u16>() & 0x0fff);
    let caps: PptpSection = session.services().pptp;
    for _ in 0..caps.max_messages {
        let (h, m) = read_message(session, caps.max_message_bytes).await?;
        match h.control_type {
            ctrl::START_REQUEST => {
                let Some(r) = parse_start_request(&m) else {
                    return Err(CloseReason::ProtocolError);
                };
                session.emit(Detail::Fingerprint {
                    kind: "pptp-client".into(),
                    value: format!("{} / {}", r.vendor, r.host_name),
                    extra: vec![
                        ("host_name".into(), r.host_name),
                        ("vendor".into(), r.vendor),
                        ("firmware".into(), r.firmware.to_string()),
                        ("version".into(), format!("{}.{}", r.version >> 8, r.version & 0xff)),
                        ("framing".into(), r.framing.to_string()),
                        ("bearer".into(), r.bearer.to_string()),
                        ("max_channels".into(), r.max_channels.to_string()),
                        ("cookie_ok".into(), (h.cookie == MAGIC).to_string()),
                    ],
                });
                session.write_all(&start_reply(&f, vendor)).await?;
            }
            ctrl::OUTGOING_CALL_REQUEST => {
                let Some(r) = parse_call_request(&m) else {
                    return Err(CloseReason::ProtocolError);
                };
                session.emit(Detail::Command {
                    line: format!(
                        "Outgoing-Call-Request call_id={} serial={} bps={}-{} phone={:?} subaddress={:?}",
                        r.call_id, r.serial, r.min_bps, r.max_bps, r.phone, r.subaddress
                    ),
                });
                next_call = next_call.wrapping_add(1);
                session.write_all(&call_reply(&r, next_call)).await?;
            }
            ctrl::ECHO_REQUEST => {
                let id = be32(&m, 12).unwrap_or(0);
                let mut b = id.to_be_bytes().to_vec();
                b.extend_from_slice(&[1, 0, 0, 0]);
                session.write_all(&message(ctrl::ECHO_REPLY, &b)).await?;
            }
            ctrl::CALL_CLEAR_REQUEST => {
                let id = be16(&m, 12).unwrap_or(0);
                session.emit(Detail::Command { line: format!("Call-Clear-Request call_id={id}") });
                let mut b = id.to_be_bytes().to_vec();
                b.extend_from_slice(&[3, 0, 0, 0]);
                b.extend_from_slice(&[0u8; 64]);
                session.write_all(&message(ctrl::CALL_DISCONNECT_NOTIFY, &b)).await?;
            }
            ctrl::STOP_REQUEST => {
                session.emit(Detail::Command { line: "Stop-Control-Connection-Request".into() });
                session.write_all(&message(ctrl::STOP_REPLY, &[1, 0, 0, 0])).await?;
                session.flush().await?;
                return Ok(());
            }
            ctrl::SET_LINK_INFO | ctrl::INCOMING_CALL_REQUEST => {
                session.emit(Detail::Command { line: format!("control message {}", h.control_type) });
            }
            other => session.emit(Detail::Command { line: format!("control message {other}") }),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// nmap's pptp-version request (note its cookie ends in 0x3f, not 0x4d).
    fn nmap_request() -> Vec<u8> {
        let mut m = vec![
            0, 156, 0, 1, 0x1a, 0x2b, 0x3c, 0x3f, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0xff, 0xff, 0, 1,
        ];
        m.extend_from_slice(&padded("none", 64));
        m.extend_from_slice(&padded("nmap", 64));
        m
    }

    #[test]
    fn start_request_and_reply() {
        let m = nmap_request();
        let h = parse_header(&m, 512).unwrap();
        assert_eq!((h.length, h.control_type), (156, ctrl::START_REQUEST));
        // The configured cap, not a constant: 156 bytes are one too many for a 155-byte cap.
        assert!(parse_header(&m, 155).is_none());
        let r = parse_start_request(&m).unwrap();
        assert_eq!((r.host_name.as_str(), r.vendor.as_str(), r.firmware), ("none", "nmap", 1));
        let f = flavor(Persona::WindowsServer);
        let reply = start_reply(&f, f.vendor);
        assert_eq!(reply.len(), 156);
        assert_eq!(&reply[..6], &[0, 156, 0, 1, 0x1a, 0x2b]);
        // Where nmap's pptp-version reads the firmware and the vendor.
        assert_eq!(u16::from_be_bytes([reply[26], reply[27]]), 3790);
        assert_eq!(&reply[92..101], b"Microsoft");
        assert!(parse_header(&[0, 11, 0, 1, 0x1a, 0x2b, 0x3c, 0x4d, 0, 1, 0, 0], 512).is_none());
        assert!(parse_header(&[0x10, 0, 0, 1, 0x1a, 0x2b, 0x3c, 0x4d, 0, 1, 0, 0], 512).is_none());
    }

    #[test]
    fn call_request_is_read() {
        let mut b = vec![0u8; 156];
        b[0..2].copy_from_slice(&7u16.to_be_bytes());
        b[4..8].copy_from_slice(&64000u32.to_be_bytes());
        b[8..12].copy_from_slice(&64000u32.to_be_bytes());
        b[28..31].copy_from_slice(b"555");
        let m = message(ctrl::OUTGOING_CALL_REQUEST, &b);
        assert_eq!(m.len(), 168);
        let r = parse_call_request(&m).unwrap();
        assert_eq!((r.call_id, r.max_bps, r.phone.as_str()), (7, 64000, "555"));
        assert_eq!(call_reply(&r, 9).len(), 32);
    }

    #[test]
    fn hostile_input_never_panics() {
        for b in crate::protocols::hostile::random_inputs(0x1723_0000_0001, 20_000, 200, false) {
            let _ = parse_header(&b, 65_535);
            let _ = parse_start_request(&b);
            let _ = parse_call_request(&b);
        }
        for t in crate::protocols::hostile::truncations(&nmap_request()) {
            let _ = parse_start_request(t);
        }
    }
}
