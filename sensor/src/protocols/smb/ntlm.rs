//! NTLMSSP inside SPNEGO, as SMB session setups carry it: the server's challenge we send, and
//! the client's AUTHENTICATE message we decode into user, domain, workstation and the response
//! (an NTLMv2 response becomes a hashcat mode 5600 line; the challenge is ours, so it can be
//! cracked offline). Pure functions over bytes.

use super::{u16le, u32le, utf16, SmbError};

const NTLMSSP_SIG: &[u8; 8] = b"NTLMSSP\0";
const NTLM_OID: [u8; 12] = [0x06, 0x0a, 0x2b, 0x06, 0x01, 0x04, 0x01, 0x82, 0x37, 0x02, 0x02, 0x0a];

/// An NTLMSSP AUTHENTICATE message, decoded.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NtlmAuth {
    pub user: String,
    pub domain: String,
    pub workstation: String,
    pub lm_response: Vec<u8>,
    pub nt_response: Vec<u8>,
}

impl NtlmAuth {
    /// The NTLMv2 response as a hashcat mode 5600 line
    /// (`user::domain:challenge:ntproofstr:blob`), or None for NTLMv1 / anonymous.
    pub fn hashcat_5600(&self, server_challenge: &[u8; 8]) -> Option<String> {
        if self.nt_response.len() <= 24 {
            return None;
        }
        let (proof, blob) = self.nt_response.split_at(16);
        Some(format!(
            "{}::{}:{}:{}:{}",
            self.user,
            self.domain,
            hex::encode(server_challenge),
            hex::encode(proof),
            hex::encode(blob)
        ))
    }
}

/// Finds the NTLMSSP message inside a (possibly SPNEGO-wrapped) security blob.
pub fn find_ntlmssp(blob: &[u8]) -> Option<&[u8]> {
    let at = blob.windows(8).position(|w| w == NTLMSSP_SIG)?;
    blob.get(at..)
}

/// The NTLMSSP message type (1 negotiate, 2 challenge, 3 authenticate).
pub fn ntlmssp_type(msg: &[u8]) -> Option<u32> {
    if msg.get(..8)? != NTLMSSP_SIG {
        return None;
    }
    u32le(msg, 8).ok()
}

fn secbuf(msg: &[u8], at: usize) -> Result<&[u8], SmbError> {
    let len = u16le(msg, at)? as usize;
    let off = u32le(msg, at + 4)? as usize;
    if len == 0 {
        return Ok(&[]);
    }
    msg.get(off..off.checked_add(len).ok_or(SmbError::Truncated)?).ok_or(SmbError::Truncated)
}

pub(super) fn ntlm_string(b: &[u8], unicode: bool) -> String {
    if unicode {
        let units: Vec<u16> = b.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
        String::from_utf16_lossy(&units)
    } else {
        String::from_utf8_lossy(b).into_owned()
    }
}

/// Parses an NTLMSSP AUTHENTICATE (type 3) message.
pub fn parse_ntlm_authenticate(msg: &[u8]) -> Result<NtlmAuth, SmbError> {
    if ntlmssp_type(msg) != Some(3) {
        return Err(SmbError::NotNtlmssp);
    }
    let flags = u32le(msg, 60)?;
    let unicode = flags & 0x1 != 0;
    Ok(NtlmAuth {
        lm_response: secbuf(msg, 12)?.to_vec(),
        nt_response: secbuf(msg, 20)?.to_vec(),
        domain: ntlm_string(secbuf(msg, 28)?, unicode),
        user: ntlm_string(secbuf(msg, 36)?, unicode),
        workstation: ntlm_string(secbuf(msg, 44)?, unicode),
    })
}

/// Builds an NTLMSSP CHALLENGE (type 2) for `challenge`, naming our fake domain and host.
pub fn ntlm_challenge(challenge: &[u8; 8], domain: &str, host: &str, filetime: u64) -> Vec<u8> {
    let mut info = Vec::new();
    for (id, val) in [(2u16, domain), (1, host), (4, domain), (3, host)] {
        let v = utf16(&val.to_lowercase());
        let v = if id <= 2 { utf16(val) } else { v };
        info.extend_from_slice(&id.to_le_bytes());
        info.extend_from_slice(&(v.len() as u16).to_le_bytes());
        info.extend_from_slice(&v);
    }
    info.extend_from_slice(&7u16.to_le_bytes());
    info.extend_from_slice(&8u16.to_le_bytes());
    info.extend_from_slice(&filetime.to_le_bytes());
    info.extend_from_slice(&[0, 0, 0, 0]);
    let target = utf16(domain);
    let header_len = 56u32;
    let flags: u32 = 0xe28a_8215; // unicode, request target, NTLM, always sign, target type domain,
                                  // extended session security, target info, version, 128, 56, key exch
    let mut m = Vec::new();
    m.extend_from_slice(NTLMSSP_SIG);
    m.extend_from_slice(&2u32.to_le_bytes());
    m.extend_from_slice(&(target.len() as u16).to_le_bytes());
    m.extend_from_slice(&(target.len() as u16).to_le_bytes());
    m.extend_from_slice(&header_len.to_le_bytes());
    m.extend_from_slice(&flags.to_le_bytes());
    m.extend_from_slice(challenge);
    m.extend_from_slice(&[0; 8]);
    m.extend_from_slice(&(info.len() as u16).to_le_bytes());
    m.extend_from_slice(&(info.len() as u16).to_le_bytes());
    m.extend_from_slice(&(header_len + target.len() as u32).to_le_bytes());
    m.extend_from_slice(&[10, 0, 0x61, 0x4a, 0, 0, 0, 15]); // version 10.0.19041, NTLM rev 15
    m.extend_from_slice(&target);
    m.extend_from_slice(&info);
    m
}

fn der_len(n: usize, out: &mut Vec<u8>) {
    if n < 0x80 {
        out.push(n as u8);
    } else if n < 0x100 {
        out.extend_from_slice(&[0x81, n as u8]);
    } else {
        out.extend_from_slice(&[0x82, (n >> 8) as u8, n as u8]);
    }
}

fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    der_len(content.len(), &mut out);
    out.extend_from_slice(content);
    out
}

/// SPNEGO NegTokenInit advertising NTLMSSP (the negotiate response's security blob).
pub fn spnego_init() -> Vec<u8> {
    let mech_list = der(0x30, &NTLM_OID);
    let init = der(0x30, &der(0xa0, &mech_list));
    let mut inner = vec![0x06, 0x06, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x02];
    inner.extend_from_slice(&der(0xa0, &init));
    der(0x60, &inner)
}

/// SPNEGO NegTokenResp (accept-incomplete) carrying an NTLMSSP challenge.
pub fn spnego_challenge(ntlm: &[u8]) -> Vec<u8> {
    let mut seq = der(0xa0, &[0x0a, 0x01, 0x01]);
    seq.extend_from_slice(&der(0xa1, &NTLM_OID));
    seq.extend_from_slice(&der(0xa2, &der(0x04, ntlm)));
    der(0xa1, &der(0x30, &seq))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// An NTLMSSP AUTHENTICATE message as a client builds it (for tests of the parser).
    pub(in crate::protocols::smb) fn ntlm_authenticate(user: &str, domain: &str, ws: &str, nt: &[u8]) -> Vec<u8> {
        let fields = [vec![0u8; 24], nt.to_vec(), utf16(domain), utf16(user), utf16(ws), vec![]];
        let mut m = NTLMSSP_SIG.to_vec();
        m.extend_from_slice(&3u32.to_le_bytes());
        let mut payload = Vec::new();
        let base = 72u32;
        for f in &fields {
            m.extend_from_slice(&(f.len() as u16).to_le_bytes());
            m.extend_from_slice(&(f.len() as u16).to_le_bytes());
            m.extend_from_slice(&(base + payload.len() as u32).to_le_bytes());
            payload.extend_from_slice(f);
        }
        m.extend_from_slice(&0xe288_8215u32.to_le_bytes());
        m.extend_from_slice(&[0; 8]);
        assert_eq!(m.len(), 72);
        m.extend_from_slice(&payload);
        m
    }

    #[test]
    fn ntlm_authenticate_to_hashcat_line() {
        let mut nt = vec![0xaa; 16];
        nt.extend_from_slice(&[0x01, 0x01, 0, 0, 0, 0, 0, 0, 9, 9, 9, 9, 9, 9, 9, 9]);
        let msg = ntlm_authenticate("alice", "CORP", "WS1", &nt);
        let wrapped = [vec![0xa1, 0x81, 0x90, 0x30], msg.clone()].concat();
        let auth = parse_ntlm_authenticate(find_ntlmssp(&wrapped).unwrap()).unwrap();
        assert_eq!((auth.user.as_str(), auth.domain.as_str(), auth.workstation.as_str()), ("alice", "CORP", "WS1"));
        let line = auth.hashcat_5600(&[1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
        assert_eq!(
            line,
            format!(
                "alice::CORP:0102030405060708:{}:{}",
                "aa".repeat(16),
                "0101000000000000".to_owned() + &"09".repeat(8)
            )
        );
    }

    #[test]
    fn challenge_and_spnego_are_well_formed() {
        let c = ntlm_challenge(&[7; 8], "WORKGROUP", super::super::DEFAULT_BANNER, 1);
        assert_eq!(ntlmssp_type(&c), Some(2));
        assert_eq!(&c[24..32], &[7; 8]);
        let s = spnego_challenge(&c);
        assert_eq!(s[0], 0xa1);
        assert!(find_ntlmssp(&s).is_some());
        let init = spnego_init();
        assert_eq!(init[0], 0x60);
        assert_eq!(init[1] as usize, init.len() - 2);
    }
}
