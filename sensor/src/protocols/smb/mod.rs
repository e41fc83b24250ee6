//! SMB (445): SMB1 and SMB2 negotiate, NTLMSSP session setup, MS17-010 and DoublePulsar probes.
//!
//! What an SMB honeypot is for: (1) NTLM credentials — every session setup carries the user,
//! domain, workstation and an NTLMv2 response, which we record as a hashcat mode 5600 line (the
//! server challenge is ours, so the line is crackable offline); (2) worm traffic — EternalBlue
//! scanners probe MS17-010 with a PeekNamedPipe transaction on `IPC$`, and check for DoublePulsar
//! with a Trans2 SESSION_SETUP whose multiplex id is 0x41. Both are recorded as exploit attempts.
//!
//! We never offer a file share: SMB2 logins always fail with STATUS_LOGON_FAILURE. For SMB1 we
//! answer negotiate, anonymous session setup and the tree connect to `IPC$` just enough for the
//! MS17-010 probe to arrive, and answer it the way a vulnerable host does so the scanner shows its
//! hand (the payload that follows is recorded, never executed).
//!
//! Framing: direct-TCP NetBIOS session messages (1 type byte + 24-bit length), capped at
//! [`MAX_MESSAGE`]. This file reads and dispatches messages; `smb1` and `smb2` parse and
//! answer their dialect's commands (named constants, one function per command), `ntlm` holds
//! NTLMSSP and SPNEGO. All parsers are pure functions over bytes.

mod ntlm;
mod smb1;
mod smb2;

pub use ntlm::{
    find_ntlmssp, ntlm_challenge, ntlmssp_type, parse_ntlm_authenticate, spnego_challenge, spnego_init, NtlmAuth,
};
pub use smb1::{is_doublepulsar_ping, is_ms17_010_probe, parse_smb1_session_setup, smb1_dialects, Smb1};
pub use smb2::{negotiate_response as smb2_negotiate_response, smb2_dialects, smb2_session_setup_blob, Smb2};

use crate::config::ServiceSection;
use crate::session::{Session, SessionResult};
use drosera_uplink::event::{CloseReason, Detail};

/// Default NetBIOS host name (what the config's `banner` replaces), named in the NTLM challenge.
pub const DEFAULT_BANNER: &str = "FILESRV01";
/// Largest SMB message we accept (real negotiate/session setup messages are < 4 KiB; exploit
/// payloads are bigger, and are recorded only up to this size).
pub const MAX_MESSAGE: usize = 128 * 1024;
/// Messages handled per connection before we close it.
const MAX_MESSAGES: usize = 64;

const STATUS_SUCCESS: u32 = 0;
const STATUS_MORE_PROCESSING_REQUIRED: u32 = 0xC000_0016;
const STATUS_LOGON_FAILURE: u32 = 0xC000_006D;
const STATUS_NOT_SUPPORTED: u32 = 0xC000_00BB;
const STATUS_NOT_IMPLEMENTED: u32 = 0xC000_0002;
const STATUS_INSUFF_SERVER_RESOURCES: u32 = 0xC000_0205;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SmbError {
    #[error("truncated SMB data")]
    Truncated,
    #[error("SMB message too large ({0} bytes)")]
    TooLarge(usize),
    #[error("not an SMB message")]
    NotSmb,
    #[error("not an NTLMSSP message of the expected type")]
    NotNtlmssp,
}

fn u16le(b: &[u8], at: usize) -> Result<u16, SmbError> {
    let s = b.get(at..at + 2).ok_or(SmbError::Truncated)?;
    Ok(u16::from_le_bytes([s[0], s[1]]))
}

fn u32le(b: &[u8], at: usize) -> Result<u32, SmbError> {
    let s = b.get(at..at + 4).ok_or(SmbError::Truncated)?;
    Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn u64le(b: &[u8], at: usize) -> Result<u64, SmbError> {
    let s = b.get(at..at + 8).ok_or(SmbError::Truncated)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(s);
    Ok(u64::from_le_bytes(a))
}

/// Parses the 4-byte direct-TCP header: the message length.
pub fn parse_netbios_header(h: [u8; 4]) -> Result<usize, SmbError> {
    let len = u32::from_be_bytes([0, h[1], h[2], h[3]]) as usize;
    if h[0] != 0 {
        return Err(SmbError::NotSmb);
    }
    if len > MAX_MESSAGE {
        return Err(SmbError::TooLarge(len));
    }
    Ok(len)
}

/// What a client message is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Smb1(Smb1),
    Smb2(Smb2),
}

/// Parses one SMB message (without the NetBIOS header).
pub fn parse_message(msg: &[u8]) -> Result<Message, SmbError> {
    match msg.get(..4) {
        Some([0xff, b'S', b'M', b'B']) => smb1::parse(msg).map(Message::Smb1),
        Some([0xfe, b'S', b'M', b'B']) => smb2::parse(msg).map(Message::Smb2),
        _ => Err(SmbError::NotSmb),
    }
}

fn utf16(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(|u| u.to_le_bytes()).collect()
}

fn filetime_now() -> u64 {
    let unix =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() / 100).unwrap_or(0)
            as u64;
    unix + 116_444_736_000_000_000
}

/// What one connection keeps between messages.
struct Conn<'a> {
    /// Our NetBIOS host name (the config's banner).
    host: &'a str,
    /// Our NTLM server challenge (in the hashcat line of every login).
    challenge: [u8; 8],
    guid: [u8; 16],
    session_id: u64,
    recorded_dialects: bool,
}

/// Whether the conversation goes on after a message.
enum Flow {
    Continue,
    /// The client logged off or disconnected the tree, or nothing it offers can be answered.
    End,
}

async fn read_message(session: &mut Session) -> SessionResult<Vec<u8>> {
    let mut h = [0u8; 4];
    session.read_exact(&mut h).await?;
    let len = parse_netbios_header(h).map_err(|_| CloseReason::ProtocolError)?;
    let mut msg = vec![0u8; len];
    session.read_exact(&mut msg).await?;
    Ok(msg)
}

async fn send(session: &mut Session, msg: &[u8]) -> SessionResult<()> {
    let len = msg.len().min(0x00ff_ffff) as u32;
    let mut out = Vec::with_capacity(4 + msg.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(msg);
    session.write_all(&out).await
}

fn exploit(session: &Session, name: &str, extra: Vec<(String, String)>) {
    session.emit(Detail::Exploit { name: name.into(), cve: "CVE-2017-0144".into(), extra });
}

pub(crate) async fn handle(session: &mut Session, svc: &ServiceSection) -> SessionResult<()> {
    let mut conn = Conn {
        host: svc.banner_or(DEFAULT_BANNER),
        challenge: rand::random(),
        guid: rand::random(),
        session_id: rand::random::<u64>() | 1,
        recorded_dialects: false,
    };
    for _ in 0..MAX_MESSAGES {
        let msg = read_message(session).await?;
        let flow = match parse_message(&msg).map_err(|_| CloseReason::ProtocolError)? {
            Message::Smb1(m) => smb1::respond(session, &mut conn, &m, &msg).await?,
            Message::Smb2(m) => smb2::respond(session, &conn, &m).await?,
        };
        if let Flow::End = flow {
            return Ok(());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ntlm::tests::ntlm_authenticate;

    #[test]
    fn hostile_input_is_an_error_not_a_panic() {
        assert_eq!(parse_netbios_header([0, 0xff, 0xff, 0xff]), Err(SmbError::TooLarge(0xff_ffff)));
        let auth = ntlm_authenticate("u", "d", "w", &[1; 40]);
        for t in crate::protocols::hostile::truncations(&auth) {
            let _ = parse_ntlm_authenticate(t);
        }
        for (i, mut buf) in crate::protocols::hostile::random_inputs(0x853c49e6748fea9b, 30_000, 200, false).enumerate()
        {
            if i % 3 == 0 && buf.len() >= 4 {
                buf[..4].copy_from_slice(&[0xff, b'S', b'M', b'B']);
            } else if i % 3 == 1 && buf.len() >= 4 {
                buf[..4].copy_from_slice(&[0xfe, b'S', b'M', b'B']);
            }
            if let Ok(m) = parse_message(&buf) {
                match m {
                    Message::Smb1(s) => {
                        let _ = parse_smb1_session_setup(&s);
                        let _ = smb1_dialects(&s.bytes);
                    }
                    Message::Smb2(s) => {
                        let _ = smb2_dialects(&s);
                        let _ = smb2_session_setup_blob(&s);
                    }
                }
            }
            let _ = parse_ntlm_authenticate(&buf);
        }
    }
}
