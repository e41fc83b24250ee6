//! VNC (5900): the RFB handshake as far as the password, so VNC brute-forcers show their hand.
//!
//! Exposed VNC servers are brute-forced all day (VNC auth takes at most 8 password
//! characters). We speak RFB 3.8 (and the 3.3 and 3.7 variants a client may ask for), offer only
//! security type 2 (VNC authentication), send a random 16-byte challenge and read the client's
//! DES response. We record the client's RFB version (`Fingerprint` `rfb-client`) and each
//! attempt as a `Login` whose secret is the challenge and response as a John the Ripper `vnc`
//! line (`$vnc$*CHALLENGE*RESPONSE`, crackable offline: the challenge is ours), with the
//! security types offered and chosen. Every attempt is refused ("Authentication failed"): there
//! is no desktop behind the door, so the login policy's weak pairs are not let in here (RFB has
//! no user name either). RFB carries no client name before a login succeeds, so none is
//! recorded.
//!
//! Per persona ([`Flavor`]): a RealVNC-like RFB 3.8 server on windows-server, TigerVNC/x11vnc
//! (RFB 3.8) on mixed and linux-server, an embedded libvncserver speaking RFB 3.3 (the server
//! picks the security type) on the iot-router. `nmap -sV` names "VNC (protocol 3.8)" (or 3.3),
//! `vnc-info` lists "VNC Authentication". A configured `banner` (`RFB 003.007`) replaces the
//! server's version.
//!
//! Bounded: the handshake is a fixed number of fixed-size reads (at most [`MAX_ATTEMPTS`]
//! security type choices), then the session ends.

use crate::config::{Persona, ServiceSection};
use crate::session::{Session, SessionResult};
use drosera_uplink::event::{Detail, Secret};

/// RFB security type 2: VNC authentication (DES challenge/response).
pub const SECURITY_VNC_AUTH: u8 = 2;
/// Security type choices read per connection (a client that picks an offered type gets one).
pub const MAX_ATTEMPTS: usize = 1;

/// What the server says about itself, per persona.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flavor {
    /// The 12-byte ProtocolVersion message.
    pub version: &'static str,
    /// The security types offered (RFB 3.7+), or the one chosen by the server (3.3).
    pub types: &'static [u8],
}

/// The VNC server of `persona`.
pub fn flavor(persona: Persona) -> Flavor {
    match persona {
        Persona::IotRouter => Flavor { version: "RFB 003.003\n", types: &[SECURITY_VNC_AUTH] },
        Persona::Mixed | Persona::LinuxServer | Persona::WindowsServer => {
            Flavor { version: "RFB 003.008\n", types: &[SECURITY_VNC_AUTH] }
        }
    }
}

/// The `(major, minor)` of a 12-byte `RFB xxx.yyy\n` ProtocolVersion message.
pub fn parse_version(msg: &[u8]) -> Option<(u16, u16)> {
    if msg.len() != 12 || !msg.starts_with(b"RFB ") || msg[7] != b'.' || msg[11] != b'\n' {
        return None;
    }
    let num = |b: &[u8]| -> Option<u16> {
        if !b.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(b).ok()?.parse().ok()
    };
    Some((num(&msg[4..7])?, num(&msg[8..11])?))
}

/// The minor version both sides speak: 3.3, 3.7 or 3.8 (RFB 6.1.1: anything else is treated as
/// 3.3; a newer client gets 3.8), never above what the server offered.
pub fn negotiated_minor(client: Option<(u16, u16)>, server_minor: u16) -> u16 {
    let minor = match client {
        Some((3, m)) if m >= 8 => 8,
        Some((3, 7)) => 7,
        Some((major, _)) if major > 3 => 8,
        _ => 3,
    };
    minor.min(server_minor)
}

/// The response a client computes for `challenge` with `password` (RFB 7.2.2): DES-ECB of the
/// challenge under the first 8 password bytes (zero padded), each key byte bit-reversed (the
/// reference implementation's d3des takes key bits in that order).
pub fn des_response(challenge: &[u8; 16], password: &[u8]) -> [u8; 16] {
    use des::cipher::{BlockCipherEncrypt, KeyInit};
    let mut key = [0u8; 8];
    for (k, p) in key.iter_mut().zip(password) {
        *k = p.reverse_bits();
    }
    let cipher = des::Des::new(&key.into());
    let mut out = [0u8; 16];
    for (c, o) in challenge.chunks_exact(8).zip(out.chunks_exact_mut(8)) {
        let mut block = [0u8; 8];
        block.copy_from_slice(c);
        let mut block = block.into();
        cipher.encrypt_block(&mut block);
        o.copy_from_slice(&block);
    }
    out
}

/// The challenge and response as John the Ripper's `vnc` format reads them.
pub fn john_line(challenge: &[u8; 16], response: &[u8; 16]) -> String {
    format!("$vnc$*{}*{}", hex::encode_upper(challenge), hex::encode_upper(response))
}

/// A human name of an RFB security type (as nmap's `vnc-info` prints them).
pub fn security_type_name(t: u8) -> &'static str {
    match t {
        0 => "Invalid",
        1 => "None",
        2 => "VNC Authentication",
        5 => "RA2",
        6 => "RA2ne",
        16 => "Tight",
        17 => "Ultra",
        18 => "TLS",
        19 => "VeNCrypt",
        20 => "GTK-VNC SASL",
        21 => "MD5 hash authentication",
        22 => "Colin Dean xvp",
        30 => "Apple Remote Desktop",
        113 | 114 => "UltraVNC MS Logon",
        _ => "unknown",
    }
}

/// The failure the server sends after a refused response (3.8 adds a reason string).
pub fn auth_failed(minor: u16) -> Vec<u8> {
    let mut out = 1u32.to_be_bytes().to_vec();
    if minor >= 8 {
        let reason = b"Authentication failed";
        out.extend_from_slice(&(reason.len() as u32).to_be_bytes());
        out.extend_from_slice(reason);
    }
    out
}

pub(crate) async fn handle(session: &mut Session, svc: &ServiceSection) -> SessionResult<()> {
    let f = flavor(session.persona());
    let server_version = if svc.banner.is_empty() { f.version.to_string() } else { banner_version(&svc.banner) };
    let server_minor = parse_version(server_version.as_bytes()).map_or(8, |(_, m)| m);
    session.write_all(server_version.as_bytes()).await?;
    let mut raw = [0u8; 12];
    session.read_exact(&mut raw).await?;
    let client = parse_version(&raw);
    let client_text = String::from_utf8_lossy(&raw).trim_end().to_string();
    let minor = negotiated_minor(client, server_minor);
    session.emit(Detail::Fingerprint {
        kind: "rfb-client".into(),
        value: client_text.clone(),
        extra: vec![("negotiated".into(), format!("3.{minor}"))],
    });
    let offered = f.types.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(",");
    let chosen = if minor >= 7 {
        let mut msg = vec![f.types.len() as u8];
        msg.extend_from_slice(f.types);
        session.write_all(&msg).await?;
        let mut pick = [0u8; 1];
        session.read_exact(&mut pick).await?;
        pick[0]
    } else {
        session.write_all(&u32::from(f.types[0]).to_be_bytes()).await?;
        f.types[0]
    };
    if !f.types.contains(&chosen) {
        session.emit(Detail::Fingerprint {
            kind: "rfb-security-type".into(),
            value: format!("{chosen} ({})", security_type_name(chosen)),
            extra: vec![("offered".into(), offered), ("rfb_version".into(), client_text)],
        });
        session.write_all(&auth_failed(minor)).await?;
        return Ok(());
    }
    let challenge: [u8; 16] = rand::random();
    session.write_all(&challenge).await?;
    let mut response = [0u8; 16];
    session.read_exact(&mut response).await?;
    session.emit(Detail::Login {
        username: String::new(),
        secret: Secret::Hash { format: "john-vnc".into(), value: john_line(&challenge, &response) },
        success: false,
        extra: vec![
            ("method".into(), "vnc-auth".into()),
            ("rfb_version".into(), client_text),
            ("security_types".into(), offered),
            ("security_type".into(), chosen.to_string()),
        ],
    });
    session.write_all(&auth_failed(minor)).await?;
    session.flush().await?;
    Ok(())
}

/// A configured banner as a ProtocolVersion message (`RFB 003.008`, with or without the
/// newline); anything else falls back to 3.8.
fn banner_version(banner: &str) -> String {
    let v = format!("{}\n", banner.trim_end());
    if parse_version(v.as_bytes()).is_some() {
        v
    } else {
        "RFB 003.008\n".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_negotiate_like_rfb_6_1_1() {
        assert_eq!(parse_version(b"RFB 003.008\n"), Some((3, 8)));
        assert_eq!(parse_version(b"RFB 003.889\n"), Some((3, 889)));
        assert_eq!(parse_version(b"RFB 003.008"), None);
        assert_eq!(parse_version(b"RFB 0x3.008\n"), None);
        assert_eq!(parse_version(b"GET / HTTP/1"), None);
        assert_eq!(negotiated_minor(Some((3, 8)), 8), 8);
        assert_eq!(negotiated_minor(Some((3, 7)), 8), 7);
        assert_eq!(negotiated_minor(Some((3, 889)), 8), 8);
        assert_eq!(negotiated_minor(Some((3, 5)), 8), 3);
        assert_eq!(negotiated_minor(Some((3, 8)), 3), 3);
        assert_eq!(negotiated_minor(None, 8), 3);
        assert_eq!(banner_version("RFB 003.007"), "RFB 003.007\n");
        assert_eq!(banner_version("hello"), "RFB 003.008\n");
    }

    /// The response for a password over a fixed challenge, and the John line of it (the real
    /// client's response is checked against it in `tests/proto_vnc.rs`).
    #[test]
    fn des_response_matches_the_reference_implementation() {
        let challenge: [u8; 16] = *b"0123456789abcdef";
        let r = des_response(&challenge, b"password");
        // Same key, same block: both halves differ, and a password past 8 bytes changes nothing.
        assert_ne!(r[..8], r[8..]);
        assert_eq!(des_response(&challenge, b"password-and-more"), r);
        assert_ne!(des_response(&challenge, b"passwore"), r);
        assert!(john_line(&challenge, &r).starts_with("$vnc$*30313233343536373839616263646566*"));
        assert_eq!(auth_failed(3), vec![0, 0, 0, 1]);
        assert_eq!(&auth_failed(8)[8..], b"Authentication failed");
    }

    #[test]
    fn personas_offer_vnc_auth() {
        for p in [Persona::Mixed, Persona::LinuxServer, Persona::WindowsServer, Persona::IotRouter] {
            let f = flavor(p);
            assert!(parse_version(f.version.as_bytes()).is_some());
            assert_eq!(f.types, &[SECURITY_VNC_AUTH]);
        }
        assert_eq!(flavor(Persona::IotRouter).version, "RFB 003.003\n");
    }

    #[test]
    fn hostile_input_never_panics() {
        for b in crate::protocols::hostile::random_inputs(0x5900_0000_0001, 20_000, 24, false) {
            let v = parse_version(&b);
            let _ = negotiated_minor(v, 8);
            let _ = security_type_name(b.first().copied().unwrap_or(0));
            let _ = des_response(&[0; 16], &b);
        }
        for b in crate::protocols::hostile::random_inputs(0x5900_0000_0002, 5_000, 12, true) {
            let mut m = b"RFB ".to_vec();
            m.extend_from_slice(&b);
            let _ = parse_version(&m);
            let _ = banner_version(&String::from_utf8_lossy(&b));
        }
    }
}
