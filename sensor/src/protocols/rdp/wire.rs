//! RDP's pure parsers and builders: the X.224 Connection Request and Confirm with their RDP
//! negotiation ([MS-RDPBCGR] 2.2.1.1-2), the TLS ClientHello's JA3 fingerprint, and CredSSP's
//! TSRequest ([MS-CSSP] 2.2.1) as far as NTLM needs it. No I/O; attacker bytes only in.

use crate::protocols::smb::ntlm::der;

/// Largest X.224 Connection Request we read (a cookie and a negotiation request fit in 300).
pub const MAX_CONNECTION_REQUEST: usize = 2048;
/// Largest TLS record we read before the handshake (TLS's own limit plus the header).
pub const MAX_TLS_RECORD: usize = 16 * 1024 + 2048 + 5;
/// Largest TSRequest we read (an NTLM AUTHENTICATE with pubKeyAuth is under 2 KiB).
pub const MAX_TS_REQUEST: usize = 16 * 1024;

/// PROTOCOL_SSL / PROTOCOL_HYBRID / PROTOCOL_RDSTLS / PROTOCOL_HYBRID_EX.
pub const PROTOCOL_SSL: u32 = 1;
pub const PROTOCOL_HYBRID: u32 = 2;
/// RDP_NEG_FAILURE code: the server requires NLA.
pub const HYBRID_REQUIRED_BY_SERVER: u32 = 5;
/// NTSTATUS a refused CredSSP login carries.
pub const STATUS_LOGON_FAILURE: u32 = 0xC000_006D;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RdpError {
    #[error("not a TPKT/X.224 connection request")]
    NotConnectionRequest,
    #[error("truncated message")]
    Truncated,
    #[error("not a TLS handshake record")]
    NotTls,
    #[error("not a DER TSRequest")]
    NotTsRequest,
}

/// An X.224 Connection Request, decoded.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnectionRequest {
    /// The whole `Cookie: ...` line without its CRLF (`mstshash=USER` or a routing token).
    pub cookie: String,
    /// The user of `mstshash=`, if the cookie is one.
    pub user: String,
    /// RDP_NEG_REQ's requestedProtocols; `None` without a negotiation request (standard RDP
    /// security only).
    pub requested: Option<u32>,
    /// RDP_NEG_REQ's flags.
    pub flags: u8,
}

/// The TPKT length of a 4-byte header (`03 00 len_hi len_lo`).
pub fn tpkt_length(header: &[u8]) -> Result<usize, RdpError> {
    match header {
        [3, 0, hi, lo, ..] => Ok(u16::from_be_bytes([*hi, *lo]) as usize),
        [_, _, _, _, ..] => Err(RdpError::NotConnectionRequest),
        _ => Err(RdpError::Truncated),
    }
}

/// Parses a TPKT-framed X.224 Connection Request.
pub fn parse_connection_request(msg: &[u8]) -> Result<ConnectionRequest, RdpError> {
    let len = tpkt_length(msg)?;
    let msg = msg.get(..len).ok_or(RdpError::Truncated)?;
    // LI, CR code (0xE0), DST-REF, SRC-REF, class.
    let li = *msg.get(4).ok_or(RdpError::Truncated)? as usize;
    if msg.get(5).map(|c| c & 0xf0) != Some(0xe0) || li < 6 {
        return Err(RdpError::NotConnectionRequest);
    }
    let end = (5 + li).min(msg.len());
    let mut var = msg.get(11..end).unwrap_or(&[]);
    let mut req = ConnectionRequest::default();
    if var.starts_with(b"Cookie:") {
        let line_end = var.windows(2).position(|w| w == b"\r\n").unwrap_or(var.len());
        req.cookie = String::from_utf8_lossy(&var[..line_end]).chars().take(256).collect();
        if let Some(user) = req.cookie.strip_prefix("Cookie:").map(str::trim).and_then(|c| c.strip_prefix("mstshash="))
        {
            req.user = user.to_string();
        }
        var = var.get(line_end + 2..).unwrap_or(&[]);
    }
    if let [1, flags, 8, 0, p0, p1, p2, p3, ..] = var {
        req.flags = *flags;
        req.requested = Some(u32::from_le_bytes([*p0, *p1, *p2, *p3]));
    }
    Ok(req)
}

/// The names of the protocol bits of requestedProtocols (`rdp` for 0).
pub fn protocol_names(p: u32) -> String {
    if p == 0 {
        return "rdp".into();
    }
    let names = [(1, "ssl"), (2, "hybrid"), (4, "rdstls"), (8, "hybrid_ex"), (16, "rdstls_aad")];
    let mut out: Vec<String> = names.iter().filter(|(b, _)| p & b != 0).map(|(_, n)| n.to_string()).collect();
    let rest = p & !0x1f;
    if rest != 0 {
        out.push(format!("0x{rest:x}"));
    }
    out.join(",")
}

/// An X.224 Connection Confirm: with RDP_NEG_RSP (`Ok(selected protocol)`, flags as Windows
/// Server 2016+ sets them), or RDP_NEG_FAILURE (`Err(code)`).
pub fn connection_confirm(answer: Result<u32, u32>) -> Vec<u8> {
    let (kind, flags, value) = match answer {
        Ok(p) => (2u8, 0x1fu8, p),
        Err(code) => (3, 0, code),
    };
    let mut m = vec![3, 0, 0, 19, 14, 0xd0, 0, 0, 0x12, 0x34, 0, kind, flags, 8, 0];
    m.extend_from_slice(&value.to_le_bytes());
    m
}

/// The length of the TLS record whose 5-byte header is `header` (a handshake record only).
pub fn tls_record_length(header: &[u8]) -> Result<usize, RdpError> {
    match header {
        [0x16, 3, _, hi, lo, ..] => Ok(5 + u16::from_be_bytes([*hi, *lo]) as usize),
        [_, _, _, _, _, ..] => Err(RdpError::NotTls),
        _ => Err(RdpError::Truncated),
    }
}

fn is_grease(v: u16) -> bool {
    v & 0x0f0f == 0x0a0a && v >> 8 == v & 0xff
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RdpError> {
        if self.0.len() < n {
            return Err(RdpError::Truncated);
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<usize, RdpError> {
        Ok(self.take(1)?[0] as usize)
    }
    fn u16(&mut self) -> Result<u16, RdpError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
}

fn u16_list(b: &[u8]) -> String {
    b.chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .filter(|v| !is_grease(*v))
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join("-")
}

/// The JA3 string of the ClientHello in a TLS handshake record (GREASE values left out):
/// `version,ciphers,extensions,groups,point formats`.
pub fn ja3(record: &[u8]) -> Result<String, RdpError> {
    let len = tls_record_length(record)?;
    let mut r = Reader(record.get(5..len).ok_or(RdpError::Truncated)?);
    if r.u8()? != 1 {
        return Err(RdpError::NotTls);
    }
    r.take(3)?;
    let version = r.u16()?;
    r.take(32)?;
    let sid = r.u8()?;
    r.take(sid)?;
    let n = r.u16()? as usize;
    let ciphers = u16_list(r.take(n)?);
    let n = r.u8()?;
    r.take(n)?;
    let mut exts = Vec::new();
    let (mut groups, mut formats) = (String::new(), String::new());
    if let Ok(n) = r.u16() {
        let mut e = Reader(r.take(n as usize)?);
        while let Ok(t) = e.u16() {
            let n = e.u16()? as usize;
            let data = e.take(n)?;
            if !is_grease(t) {
                exts.push(t.to_string());
            }
            match t {
                10 => groups = u16_list(data.get(2..).unwrap_or(&[])),
                11 => {
                    formats = data.get(1..).unwrap_or(&[]).iter().map(|v| v.to_string()).collect::<Vec<_>>().join("-")
                }
                _ => {}
            }
        }
    }
    Ok(format!("{version},{ciphers},{},{groups},{formats}", exts.join("-")))
}

/// The total length of the DER element whose first bytes are `head` (tag, length); `Ok(None)`
/// while more header bytes are needed.
pub fn der_total_length(head: &[u8]) -> Result<Option<usize>, RdpError> {
    let (Some(&tag), Some(&first)) = (head.first(), head.get(1)) else { return Ok(None) };
    if tag != 0x30 {
        return Err(RdpError::NotTsRequest);
    }
    if first < 0x80 {
        return Ok(Some(2 + first as usize));
    }
    let n = (first & 0x7f) as usize;
    if n == 0 || n > 3 {
        return Err(RdpError::NotTsRequest);
    }
    let Some(bytes) = head.get(2..2 + n) else { return Ok(None) };
    Ok(Some(2 + n + bytes.iter().fold(0usize, |a, b| (a << 8) | *b as usize)))
}

/// The version a client's TSRequest carries (`[0] INTEGER`), if it starts like one.
pub fn ts_request_version(msg: &[u8]) -> Option<u32> {
    let total = der_total_length(msg).ok()??;
    let hdr = total.checked_sub(content_len(msg)?)?;
    let body = msg.get(hdr..)?;
    // a0 len 02 len value
    if body.first() != Some(&0xa0) || body.get(2) != Some(&0x02) {
        return None;
    }
    let n = *body.get(3)? as usize;
    if n == 0 || n > 4 {
        return None;
    }
    Some(body.get(4..4 + n)?.iter().fold(0u32, |a, b| (a << 8) | *b as u32))
}

fn content_len(msg: &[u8]) -> Option<usize> {
    let first = *msg.get(1)?;
    if first < 0x80 {
        return Some(first as usize);
    }
    let n = (first & 0x7f) as usize;
    Some(msg.get(2..2 + n)?.iter().fold(0usize, |a, b| (a << 8) | *b as usize))
}

fn der_int(v: u32) -> Vec<u8> {
    let mut b = v.to_be_bytes().to_vec();
    while b.len() > 1 && b[0] == 0 && b[1] < 0x80 {
        b.remove(0);
    }
    if b[0] >= 0x80 {
        b.insert(0, 0);
    }
    der(0x02, &b)
}

/// A server TSRequest: `version`, and a negoToken (the NTLM CHALLENGE) or an errorCode.
pub fn ts_request(version: u32, nego_token: Option<&[u8]>, error_code: Option<u32>) -> Vec<u8> {
    let mut body = der(0xa0, &der_int(version));
    if let Some(token) = nego_token {
        let item = der(0x30, &der(0xa0, &der(0x04, token)));
        body.extend_from_slice(&der(0xa1, &der(0x30, &item)));
    }
    if let Some(code) = error_code {
        // errorCode is an INTEGER holding the NTSTATUS's bits.
        body.extend_from_slice(&der(0xa4, &der(0x02, &code.to_be_bytes())));
    }
    der(0x30, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// nmap's TerminalServerCookie probe, and a connection request as xfreerdp sends it.
    #[test]
    fn connection_requests_decode() {
        let nmap = b"\x03\0\0*%\xe0\0\0\0\0\0Cookie: mstshash=nmap\r\n\x01\0\x08\0\x03\0\0\0";
        let r = parse_connection_request(nmap).unwrap();
        assert_eq!((r.user.as_str(), r.cookie.as_str(), r.requested), ("nmap", "Cookie: mstshash=nmap", Some(3)));
        assert_eq!(protocol_names(3), "ssl,hybrid");
        assert_eq!(protocol_names(0), "rdp");
        assert_eq!(protocol_names(0x100 | 8), "hybrid_ex,0x100");
        let bare = b"\x03\0\0\x0b\x06\xe0\0\0\0\0\0";
        assert_eq!(parse_connection_request(bare).unwrap(), ConnectionRequest::default());
        assert_eq!(parse_connection_request(b"GET / HTTP/1.0\r\n"), Err(RdpError::NotConnectionRequest));
        assert_eq!(parse_connection_request(b"\x03\0\0\x30\x06\xe0"), Err(RdpError::Truncated));
        // The answer nmap's service probes name "Microsoft Terminal Services" (Windows).
        assert_eq!(connection_confirm(Ok(PROTOCOL_HYBRID)), b"\x03\0\0\x13\x0e\xd0\0\0\x124\0\x02\x1f\x08\0\x02\0\0\0");
        assert_eq!(connection_confirm(Err(HYBRID_REQUIRED_BY_SERVER))[11..], [3, 0, 8, 0, 5, 0, 0, 0]);
    }

    #[test]
    fn ja3_of_nmaps_tls_probe() {
        let hello = b"\x16\x03\0\0\x69\x01\0\0\x65\x03\x03U\x1c\xa7\xe4random1random2random3random4\0\0\x0c\0/\0\x0a\0\x13\x009\0\x04\0\xff\x01\0\0\x30\0\x0d\0,\0*\0\x01\0\x03\0\x02\x06\x01\x06\x03\x06\x02\x02\x01\x02\x03\x02\x02\x03\x01\x03\x03\x03\x02\x04\x01\x04\x03\x04\x02\x01\x01\x01\x03\x01\x02\x05\x01\x05\x03\x05\x02";
        assert_eq!(tls_record_length(hello), Ok(hello.len()));
        assert_eq!(ja3(hello).unwrap(), "771,47-10-19-57-4-255,13,,");
        assert!(is_grease(0x3a3a) && !is_grease(0x3a3b) && !is_grease(0x0a1a));
        assert_eq!(ja3(b"\x17\x03\x03\0\x01\0"), Err(RdpError::NotTls));
    }

    #[test]
    fn ts_requests_round_trip() {
        let m = ts_request(6, Some(b"NTLMSSP\0\x02\0\0\0"), None);
        assert_eq!(der_total_length(&m), Ok(Some(m.len())));
        assert_eq!(ts_request_version(&m), Some(6));
        let e = ts_request(6, None, Some(STATUS_LOGON_FAILURE));
        assert!(e.ends_with(&[0xa4, 6, 2, 4, 0xc0, 0, 0, 0x6d]));
        assert_eq!(der_total_length(&[0x30, 0x82, 0x01]), Ok(None));
        assert_eq!(der_total_length(&[0x30, 0x82, 0x01, 0x00]), Ok(Some(260)));
        assert_eq!(der_total_length(&[0x31, 0]), Err(RdpError::NotTsRequest));
        assert_eq!(der_int(0x80), vec![2, 2, 0, 0x80]);
    }

    #[test]
    fn hostile_input_never_panics() {
        for b in crate::protocols::hostile::random_inputs(0x3389_0000_0001, 20_000, 96, false) {
            let _ = tpkt_length(&b);
            let _ = parse_connection_request(&b);
            let mut cr = b"\x03\0\0\x40\x3b\xe0\0\0\0\0\0".to_vec();
            cr.extend_from_slice(&b);
            let _ = parse_connection_request(&cr);
            let _ = ja3(&b);
            let mut hello = vec![0x16, 3, 1, 0, b.len() as u8];
            hello.extend_from_slice(&b);
            let _ = ja3(&hello);
            let _ = der_total_length(&b);
            let _ = ts_request_version(&b);
            let _ = protocol_names(b.len() as u32 * 0x0101_0101);
        }
        let good = b"\x03\0\0*%\xe0\0\0\0\0\0Cookie: mstshash=nmap\r\n\x01\0\x08\0\x03\0\0\0";
        for t in crate::protocols::hostile::truncations(good) {
            let _ = parse_connection_request(t);
        }
    }
}
