//! The client's first bytes: its version line and its KEXINIT algorithm lists, and the HASSH
//! fingerprint made from them.
//!
//! WHY: the client's version string and HASSH (MD5 of its KEXINIT lists) identify a brute-force
//! tool far better than anything it types. Pure functions over the first bytes the client sent,
//! bounded by them: no length read from the wire is trusted before it is checked against the
//! buffer.

use md5::{Digest, Md5};

/// Longest version line a client may send (RFC 4253: 255 bytes with CR LF).
pub const MAX_VERSION_LINE: usize = 255;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SshParseError {
    #[error("no SSH version line")]
    NoVersion,
    #[error("truncated or malformed KEXINIT")]
    BadKexinit,
}

/// The client's identification and KEXINIT algorithm lists.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClientHello {
    pub version: String,
    pub kex: String,
    pub host_key: String,
    pub enc_c2s: String,
    pub mac_c2s: String,
    pub cmp_c2s: String,
}

impl ClientHello {
    /// The HASSH algorithm string: `kex;enc;mac;cmp` (client to server).
    pub fn hassh_algorithms(&self) -> String {
        format!("{};{};{};{}", self.kex, self.enc_c2s, self.mac_c2s, self.cmp_c2s)
    }

    /// HASSH: lower-case hex MD5 of [`hassh_algorithms`](Self::hassh_algorithms).
    pub fn hassh(&self) -> String {
        hex::encode(Md5::digest(self.hassh_algorithms().as_bytes()))
    }
}

/// Parses the client's first bytes: optional pre-banner lines, `SSH-2.0-...\r\n`, then the
/// first binary packet, which must be an unencrypted KEXINIT (message 20).
pub fn parse_client_hello(buf: &[u8]) -> Result<ClientHello, SshParseError> {
    let mut pos = 0;
    let version = loop {
        let rest = buf.get(pos..).ok_or(SshParseError::NoVersion)?;
        let nl = rest.iter().position(|&b| b == b'\n').ok_or(SshParseError::NoVersion)?;
        let line = &rest[..nl];
        pos += nl + 1;
        if line.starts_with(b"SSH-") {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            break String::from_utf8_lossy(line).into_owned();
        }
        if pos > 8192 {
            return Err(SshParseError::NoVersion);
        }
    };
    let pkt = buf.get(pos..).ok_or(SshParseError::BadKexinit)?;
    let len = u32::from_be_bytes(
        pkt.get(..4).ok_or(SshParseError::BadKexinit)?.try_into().map_err(|_| SshParseError::BadKexinit)?,
    ) as usize;
    let body = pkt.get(5..4usize.saturating_add(len)).ok_or(SshParseError::BadKexinit)?;
    if body.first() != Some(&20) {
        return Err(SshParseError::BadKexinit);
    }
    let mut at = 17; // message byte + 16-byte cookie
    let mut lists = Vec::with_capacity(10);
    for _ in 0..10 {
        let n = u32::from_be_bytes(
            body.get(at..at + 4).ok_or(SshParseError::BadKexinit)?.try_into().map_err(|_| SshParseError::BadKexinit)?,
        ) as usize;
        // checked: `n` comes from the wire and `usize` may be 32 bits wide.
        let end = (at + 4).checked_add(n).ok_or(SshParseError::BadKexinit)?;
        let s = body.get(at + 4..end).ok_or(SshParseError::BadKexinit)?;
        lists.push(String::from_utf8_lossy(s).into_owned());
        at = end;
    }
    Ok(ClientHello {
        version,
        kex: lists[0].clone(),
        host_key: lists[1].clone(),
        enc_c2s: lists[2].clone(),
        mac_c2s: lists[4].clone(),
        cmp_c2s: lists[6].clone(),
    })
}

/// The version line at the start of `buf` (without CR LF): `Ok(Some(len))` with the bytes it
/// takes including the line end, `Ok(None)` when more bytes are needed, `Err` when the line is
/// too long or is not an SSH 2 version (`SSH-2.0-` or `SSH-1.99-`).
pub fn client_version_line(buf: &[u8]) -> Result<Option<usize>, SshParseError> {
    match buf.iter().take(MAX_VERSION_LINE).position(|&b| b == b'\n') {
        Some(nl) => {
            let line = &buf[..nl];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.starts_with(b"SSH-2.0-") || line.starts_with(b"SSH-1.99-") {
                Ok(Some(nl + 1))
            } else {
                Err(SshParseError::NoVersion)
            }
        }
        None if buf.len() >= MAX_VERSION_LINE => Err(SshParseError::NoVersion),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kexinit(lists: &[&str]) -> Vec<u8> {
        let mut body = vec![20];
        body.extend_from_slice(&[0xab; 16]);
        for l in lists {
            body.extend_from_slice(&(l.len() as u32).to_be_bytes());
            body.extend_from_slice(l.as_bytes());
        }
        body.extend_from_slice(&[0, 0, 0, 0, 0]);
        let pad = 4;
        let mut pkt = ((body.len() + pad + 1) as u32).to_be_bytes().to_vec();
        pkt.push(pad as u8);
        pkt.extend_from_slice(&body);
        pkt.extend_from_slice(&[0; 4]);
        pkt
    }

    #[test]
    fn hassh_of_a_kexinit() {
        let lists = [
            "curve25519-sha256",
            "ssh-ed25519",
            "aes128-ctr",
            "aes128-ctr",
            "hmac-sha2-256",
            "hmac-sha2-256",
            "none",
            "none",
            "",
            "",
        ];
        let mut buf = b"SSH-2.0-Go\r\n".to_vec();
        buf.extend_from_slice(&kexinit(&lists));
        let h = parse_client_hello(&buf).unwrap();
        assert_eq!(h.version, "SSH-2.0-Go");
        assert_eq!(h.hassh_algorithms(), "curve25519-sha256;aes128-ctr;hmac-sha2-256;none");
        assert_eq!(h.hassh(), hex::encode(Md5::digest(b"curve25519-sha256;aes128-ctr;hmac-sha2-256;none")));
    }

    #[test]
    fn version_lines() {
        assert_eq!(client_version_line(b"SSH-2.0-OpenSSH_9.2\r\nrest"), Ok(Some(21)));
        assert_eq!(client_version_line(b"SSH-1.99-x\n"), Ok(Some(11)));
        assert_eq!(client_version_line(b"SSH-2.0-OpenSSH"), Ok(None));
        assert_eq!(client_version_line(b"GET / HTTP/1.1\r\n"), Err(SshParseError::NoVersion));
        assert_eq!(client_version_line(&[b'S'; 300]), Err(SshParseError::NoVersion));
    }

    #[test]
    fn hostile_input_never_panics() {
        let mut buf = b"SSH-2.0-x\r\n".to_vec();
        buf.extend_from_slice(&kexinit(&["a"; 10]));
        for t in crate::protocols::hostile::truncations(&buf) {
            let _ = parse_client_hello(t);
        }
        let mut huge = b"SSH-2.0-x\r\n".to_vec();
        huge.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 4, 20]);
        assert_eq!(parse_client_hello(&huge), Err(SshParseError::BadKexinit));
        for tail in crate::protocols::hostile::random_inputs(0x1234_5678_9abc_def1, 20_000, 300, false) {
            let mut b = b"SSH-2.0-z\n".to_vec();
            b.extend(tail);
            let _ = parse_client_hello(&b);
        }
        for b in crate::protocols::hostile::random_inputs(0x55a5_0001_c0de_f00d, 20_000, 300, true) {
            let _ = client_version_line(&b);
        }
    }
}
