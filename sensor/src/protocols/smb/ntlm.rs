//! NTLMSSP inside SPNEGO, as SMB session setups (and MSSQL's integrated logins) carry it: the
//! server's challenge we send, the client's AUTHENTICATE message we decode into user, domain,
//! workstation and the response (an NTLMv2 response becomes a hashcat mode 5600 line; the
//! challenge is ours, so it can be cracked offline), and the NTLMv2 check that lets the login
//! policy decide a login whose password never crosses the wire. Pure functions over bytes.

use super::{u16le, u32le, utf16, SmbError};
use hmac::{Hmac, Mac};
use md4::{Digest, Md4};
use rc4::{consts::U16, Rc4, StreamCipher};

type HmacMd5 = Hmac<md5::Md5>;
/// NTLMSSP_NEGOTIATE_KEY_EXCH: the session key is a random one, sent RC4-encrypted.
const NEGOTIATE_KEY_EXCH: u32 = 0x4000_0000;
/// NTLMSSP_NEGOTIATE_EXTENDED_SESSIONSECURITY: an NTLMv1 response is over a challenge mixed
/// with the client's ("NTLM2 session response").
const NEGOTIATE_EXTENDED_SESSIONSECURITY: u32 = 0x0008_0000;

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
    /// The negotiated flags of the AUTHENTICATE message.
    pub flags: u32,
    /// EncryptedRandomSessionKey (with KEY_EXCH).
    pub encrypted_session_key: Vec<u8>,
}

impl NtlmAuth {
    /// The client's response as a line an offline cracker reads: hashcat 5600 (NTLMv2) or 5500
    /// (NTLMv1, `user::domain:lm:nt:challenge`).
    pub fn secret(&self, challenge: &[u8; 8]) -> drosera_uplink::event::Secret {
        use drosera_uplink::event::Secret;
        match self.hashcat_5600(challenge) {
            Some(line) => Secret::Hash { format: "hashcat-5600".into(), value: line },
            None if self.nt_response.is_empty() => Secret::None,
            None => Secret::Hash {
                format: "hashcat-5500".into(),
                value: format!(
                    "{}::{}:{}:{}:{}",
                    self.user,
                    self.domain,
                    hex::encode(&self.lm_response),
                    hex::encode(&self.nt_response),
                    hex::encode(challenge)
                ),
            },
        }
    }

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
        flags,
        encrypted_session_key: secbuf(msg, 52).map(|k| k.to_vec()).unwrap_or_default(),
        lm_response: secbuf(msg, 12)?.to_vec(),
        nt_response: secbuf(msg, 20)?.to_vec(),
        domain: ntlm_string(secbuf(msg, 28)?, unicode),
        user: ntlm_string(secbuf(msg, 36)?, unicode),
        workstation: ntlm_string(secbuf(msg, 44)?, unicode),
    })
}

/// Who the NTLM challenge says we are (NetBIOS and DNS names, OS version). Scanners print these
/// (`smb-os-discovery`, `ms-sql-ntlm-info`), so they come from the persona.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NtlmTarget<'a> {
    /// NetBIOS domain (a standalone Windows server names itself here; Samba its workgroup).
    pub nb_domain: &'a str,
    pub nb_host: &'a str,
    /// DNS domain (empty: left out).
    pub dns_domain: &'a str,
    pub dns_host: &'a str,
    /// The VERSION field: major, minor, build (LE u16), 3 reserved bytes, NTLM revision 15.
    pub version: [u8; 8],
}

/// Windows' VERSION field for `major.minor.build`.
pub const fn ntlm_version(major: u8, minor: u8, build: u16) -> [u8; 8] {
    let b = build.to_le_bytes();
    [major, minor, b[0], b[1], 0, 0, 0, 15]
}

/// Builds an NTLMSSP CHALLENGE (type 2) for `challenge`, naming `target`.
pub fn ntlm_challenge(challenge: &[u8; 8], target: &NtlmTarget<'_>, filetime: u64) -> Vec<u8> {
    let mut info = Vec::new();
    for (id, val) in [(2u16, target.nb_domain), (1, target.nb_host), (4, target.dns_domain), (3, target.dns_host)] {
        if val.is_empty() && id == 4 {
            continue;
        }
        let v = utf16(val);
        info.extend_from_slice(&id.to_le_bytes());
        info.extend_from_slice(&(v.len() as u16).to_le_bytes());
        info.extend_from_slice(&v);
    }
    info.extend_from_slice(&7u16.to_le_bytes());
    info.extend_from_slice(&8u16.to_le_bytes());
    info.extend_from_slice(&filetime.to_le_bytes());
    info.extend_from_slice(&[0, 0, 0, 0]);
    let target_name = utf16(target.nb_domain);
    let header_len = 56u32;
    let flags: u32 = 0xe28a_8215; // unicode, request target, NTLM, always sign, target type domain,
                                  // extended session security, target info, version, 128, 56, key exch
    let mut m = Vec::new();
    m.extend_from_slice(NTLMSSP_SIG);
    m.extend_from_slice(&2u32.to_le_bytes());
    m.extend_from_slice(&(target_name.len() as u16).to_le_bytes());
    m.extend_from_slice(&(target_name.len() as u16).to_le_bytes());
    m.extend_from_slice(&header_len.to_le_bytes());
    m.extend_from_slice(&flags.to_le_bytes());
    m.extend_from_slice(challenge);
    m.extend_from_slice(&[0; 8]);
    m.extend_from_slice(&(info.len() as u16).to_le_bytes());
    m.extend_from_slice(&(info.len() as u16).to_le_bytes());
    m.extend_from_slice(&(header_len + target_name.len() as u32).to_le_bytes());
    m.extend_from_slice(&target.version);
    m.extend_from_slice(&target_name);
    m.extend_from_slice(&info);
    m
}

/// NTOWFv2 ([MS-NLMP] 3.3.2): HMAC-MD5(MD4(UTF-16 password), UTF-16(UPPER(user) ‖ domain)).
fn ntowf_v2(auth: &NtlmAuth, password: &str) -> Option<[u8; 16]> {
    let nt_hash = Md4::digest(utf16(password));
    let mut owf = HmacMd5::new_from_slice(&nt_hash).ok()?;
    owf.update(&utf16(&auth.user.to_uppercase()));
    owf.update(&utf16(&auth.domain));
    Some(owf.finalize().into_bytes().into())
}

/// Whether the NTLMv2 response of `auth` was computed from `password` for our
/// `server_challenge` ([MS-NLMP] 3.3.2: NTProofStr = HMAC-MD5(NTOWFv2, challenge ‖ blob)).
/// NTLMv1 and anonymous responses prove nothing and give false.
pub fn ntlmv2_proves(auth: &NtlmAuth, server_challenge: &[u8; 8], password: &str) -> bool {
    if auth.nt_response.len() <= 24 {
        return false;
    }
    let (proof, blob) = auth.nt_response.split_at(16);
    let Some(key) = ntowf_v2(auth, password) else { return false };
    let Ok(mut mac) = HmacMd5::new_from_slice(&key) else { return false };
    mac.update(server_challenge);
    mac.update(blob);
    mac.verify_slice(proof).is_ok()
}

/// Whether the NTLMv1 response of `auth` (24 bytes: what hydra's `smb` module, old clients and
/// bots send, in the basic SMB1 session setup or in NTLMSSP) was computed from `password` for
/// our `server_challenge` ([MS-NLMP] 3.3.1: DESL(NT hash, challenge); with extended session
/// security the challenge is MD5(server challenge ‖ client challenge)[..8], the client's in the
/// first 8 bytes of the LM response).
pub fn ntlmv1_proves(auth: &NtlmAuth, server_challenge: &[u8; 8], password: &str) -> bool {
    use md5::Digest as _;
    let Ok(response) = <[u8; 24]>::try_from(auth.nt_response.as_slice()) else { return false };
    let mut challenge = *server_challenge;
    if auth.flags & NEGOTIATE_EXTENDED_SESSIONSECURITY != 0 && auth.lm_response.len() == 24 {
        let mixed = md5::Md5::new().chain_update(server_challenge).chain_update(&auth.lm_response[..8]).finalize();
        challenge.copy_from_slice(&mixed[..8]);
    }
    let nt_hash: [u8; 16] = Md4::digest(utf16(password)).into();
    desl(&nt_hash, &challenge) == response
}

/// DESL ([MS-NLMP] 6): the 16-byte key padded to 21 bytes, three DES keys of 7 bytes each,
/// each encrypting `data`.
fn desl(key: &[u8; 16], data: &[u8; 8]) -> [u8; 24] {
    use des::cipher::{BlockCipherEncrypt, KeyInit};
    let mut k21 = [0u8; 21];
    k21[..16].copy_from_slice(key);
    let mut out = [0u8; 24];
    for (k7, o) in k21.chunks_exact(7).zip(out.chunks_exact_mut(8)) {
        // 56 key bits spread over 8 bytes, 7 in each (DES ignores the low parity bit).
        let bits = k7.iter().fold(0u64, |a, b| (a << 8) | *b as u64);
        let k8: [u8; 8] = std::array::from_fn(|i| ((bits >> (49 - 7 * i)) as u8 & 0x7f) << 1);
        let cipher = des::Des::new(&k8.into());
        let mut block = (*data).into();
        cipher.encrypt_block(&mut block);
        o.copy_from_slice(&block);
    }
    out
}

/// The session key of an NTLMv2 login made with `password` (already proven): the session base
/// key HMAC-MD5(NTOWFv2, NTProofStr), or with KEY_EXCH the random key the client sent
/// RC4-encrypted under it. SMB2 signs with it.
pub fn ntlmv2_session_key(auth: &NtlmAuth, password: &str) -> Option<[u8; 16]> {
    let proof = auth.nt_response.get(..16).filter(|_| auth.nt_response.len() > 24)?;
    let mut mac = HmacMd5::new_from_slice(&ntowf_v2(auth, password)?).ok()?;
    mac.update(proof);
    let base: [u8; 16] = mac.finalize().into_bytes().into();
    if auth.flags & NEGOTIATE_KEY_EXCH == 0 {
        return Some(base);
    }
    let mut key: [u8; 16] = auth.encrypted_session_key.as_slice().try_into().ok()?;
    let mut rc4 = <Rc4<U16> as rc4::KeyInit>::new_from_slice(&base).ok()?;
    rc4.apply_keystream(&mut key);
    Some(key)
}

/// A DER length (short form, or long form up to 0xffff), for the SPNEGO and CredSSP wrappers.
pub(crate) fn der_len(n: usize, out: &mut Vec<u8>) {
    if n < 0x80 {
        out.push(n as u8);
    } else if n < 0x100 {
        out.extend_from_slice(&[0x81, n as u8]);
    } else {
        out.extend_from_slice(&[0x82, (n >> 8) as u8, n as u8]);
    }
}

/// A DER element: `tag`, the length of `content`, `content`.
pub(crate) fn der(tag: u8, content: &[u8]) -> Vec<u8> {
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

/// SPNEGO NegTokenResp accept-completed: the last token of a successful login.
pub fn spnego_accept_completed() -> Vec<u8> {
    der(0xa1, &der(0x30, &der(0xa0, &[0x0a, 0x01, 0x00])))
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

    /// [MS-NLMP] 4.2.4: user "User", domain "Domain", password "Password".
    #[test]
    fn ntlmv2_proof_matches_the_specification_vector() {
        let mut nt = hex::decode("68cd0ab851e51c96aabc927bebef6a1c").unwrap();
        nt.extend(
            hex::decode(
                "01010000000000000000000000000000aaaaaaaaaaaaaaaa0000000002000c0044006f006d00610069006e\
                 0001000c005300650072007600650072000000000000000000",
            )
            .unwrap(),
        );
        let auth = NtlmAuth { user: "User".into(), domain: "Domain".into(), nt_response: nt, ..NtlmAuth::default() };
        let challenge = [0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef];
        assert!(ntlmv2_proves(&auth, &challenge, "Password"));
        assert!(!ntlmv2_proves(&auth, &challenge, "password"));
        assert!(!ntlmv2_proves(&auth, &[0; 8], "Password"));
        // [MS-NLMP] 4.2.4.1.2: the session base key; with KEY_EXCH, the random key (4.2.4.2.3)
        // that the client sent encrypted under it.
        assert_eq!(hex::encode(ntlmv2_session_key(&auth, "Password").unwrap()), "8de40ccadbc14a82f15cb0ad0de95ca3");
        let mut exch = auth.clone();
        exch.flags = NEGOTIATE_KEY_EXCH;
        exch.encrypted_session_key = hex::decode("c5dad2544fc9799094ce1ce90bc9d03e").unwrap();
        assert_eq!(hex::encode(ntlmv2_session_key(&exch, "Password").unwrap()), "55555555555555555555555555555555");
        let v1 = NtlmAuth { nt_response: vec![1; 24], ..auth };
        assert!(!ntlmv2_proves(&v1, &challenge, "Password"));
        assert!(ntlmv2_session_key(&v1, "Password").is_none());
    }

    /// [MS-NLMP] 4.2.2 (NTLMv1) and 4.2.3 (with extended session security): password
    /// "Password", server challenge 0123456789abcdef, client challenge aaaaaaaaaaaaaaaa; and
    /// hydra 9.4's `smb` module on the wire (admin:admin, basic SMB1 session setup).
    #[test]
    fn ntlmv1_proof_matches_the_specification_and_hydra() {
        let challenge = [0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef];
        let v1 = NtlmAuth {
            user: "User".into(),
            nt_response: hex::decode("67c43011f30298a2ad35ece64f16331c44bdbed927841f94").unwrap(),
            ..NtlmAuth::default()
        };
        assert!(ntlmv1_proves(&v1, &challenge, "Password"));
        assert!(!ntlmv1_proves(&v1, &challenge, "password"));
        assert!(!ntlmv1_proves(&v1, &[0; 8], "Password"));
        let mut lm = vec![0xaa; 8];
        lm.extend([0; 16]);
        let ess = NtlmAuth {
            flags: NEGOTIATE_EXTENDED_SESSIONSECURITY,
            lm_response: lm,
            nt_response: hex::decode("7537f803ae367128ca458204bde7caf81e97ed2683267232").unwrap(),
            ..v1.clone()
        };
        assert!(ntlmv1_proves(&ess, &challenge, "Password"));
        assert!(!ntlmv1_proves(&NtlmAuth { flags: 0, ..ess }, &challenge, "Password"), "ESS mixes the challenge");
        let hydra = NtlmAuth {
            user: "admin".into(),
            lm_response: vec![0; 24],
            nt_response: hex::decode("b834f6bf46ed08492c76a1f18a46d699ff186c4597ff4394").unwrap(),
            ..NtlmAuth::default()
        };
        let hydra_challenge = hex::decode("9d7ab21ff65f2611").unwrap().try_into().unwrap();
        assert!(ntlmv1_proves(&hydra, &hydra_challenge, "admin"));
        assert!(!ntlmv1_proves(&hydra, &hydra_challenge, "letmein"));
        // An NTLMv2 response is no NTLMv1 proof, and a short one none at all.
        assert!(!ntlmv1_proves(&NtlmAuth { nt_response: vec![0; 40], ..hydra.clone() }, &hydra_challenge, "admin"));
        assert!(!ntlmv1_proves(&NtlmAuth { nt_response: vec![], ..hydra }, &hydra_challenge, ""));
    }

    #[test]
    fn challenge_and_spnego_are_well_formed() {
        let target = NtlmTarget {
            nb_domain: "WORKGROUP",
            nb_host: "FILESRV01",
            dns_domain: "",
            dns_host: "filesrv01",
            version: ntlm_version(6, 1, 7601),
        };
        let c = ntlm_challenge(&[7; 8], &target, 1);
        assert_eq!(&c[48..56], &[6, 1, 0xb1, 0x1d, 0, 0, 0, 15]);
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
