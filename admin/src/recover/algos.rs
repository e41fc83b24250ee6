//! The challenge-response algorithms password recovery checks candidates against: pure
//! functions over what the sensors recorded, no I/O, no panics on any input.
//!
//! WHY these and how: MySQL, SMB/RDP/MSSQL (NTLM) and VNC never send the password, only a proof
//! computed from it and the server's random challenge, which the sensor recorded with the proof
//! (`Secret::Hash`, as a cracker-ready line). Checking a candidate is recomputing the proof. The
//! password-only parts (SHA-1 chains, the NT hash) do not depend on the challenge, so they are
//! computed once per candidate per run ([`Candidate`]) and each response costs one or two hashes
//! per candidate.
//!
//! * MySQL `mysql_native_password`: `SHA1(p) XOR SHA1(salt ‖ SHA1(SHA1(p)))`; the sensor
//!   records the hex response and the 20-byte printable salt (`salt` field).
//! * MySQL `caching_sha2_password`: `SHA256(p) XOR SHA256(SHA256(SHA256(p)) ‖ salt)`.
//! * NTLMv2 (hashcat 5600 line `user::domain:challenge:ntproofstr:blob`): [MS-NLMP] 3.3.2,
//!   `HMAC-MD5(HMAC-MD5(MD4(UTF-16LE(p)), UTF-16LE(UPPER(user) ‖ domain)), challenge ‖ blob)`.
//! * NTLMv1 (hashcat 5500 line `user::domain:lm:nt:challenge`): [MS-NLMP] 3.3.1,
//!   `DESL(MD4(UTF-16LE(p)), challenge)`, with extended session security when the LM response
//!   is the client challenge followed by zeros.
//! * VNC (John's `$vnc$*challenge*response`): RFB 7.2.2, DES-ECB of the 16-byte challenge under
//!   the first 8 password bytes, each bit-reversed (so only 8 bytes of a password count).

use des::cipher::{BlockCipherEncrypt, KeyInit as _};
use hmac::{Hmac, Mac};
use md4::{Digest, Md4};
use sha1::Sha1;
use sha2::Sha256;

type HmacMd5 = Hmac<md5::Md5>;

/// Longest NTLMv2 blob accepted (a real one is ~100-300 bytes); longer lines are not targets.
pub const MAX_BLOB: usize = 4096;

/// One recorded response to recover the password of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    MysqlNative { salt: Vec<u8>, response: [u8; 20] },
    MysqlSha2 { salt: Vec<u8>, response: [u8; 32] },
    NtlmV2 { identity: Vec<u8>, challenge: [u8; 8], proof: [u8; 16], blob: Vec<u8> },
    NtlmV1 { challenge: [u8; 8], response: [u8; 24] },
    Vnc { challenge: [u8; 16], response: [u8; 16] },
}

/// The hash formats (`hash_format` field) that [`Target::parse`] reads.
pub const FORMATS: [&str; 6] = [
    "mysql-native-hex",
    "mysql_native_password-hex",
    "caching_sha2_password-hex",
    "hashcat-5600",
    "hashcat-5500",
    "john-vnc",
];

fn hex_array<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

impl Target {
    /// The target a login's `hash_format` and `hash` fields describe (`salt`: the MySQL salt
    /// field); `None` for a format this module does not check or a malformed line.
    pub fn parse(format: &str, hash: &str, salt: Option<&str>) -> Option<Target> {
        match format {
            "mysql-native-hex" | "mysql_native_password-hex" => {
                let salt = salt?.as_bytes();
                (salt.len() == 20).then_some(())?;
                Some(Target::MysqlNative { salt: salt.to_vec(), response: hex_array(hash)? })
            }
            "caching_sha2_password-hex" => {
                let salt = salt?.as_bytes();
                (salt.len() == 20).then_some(())?;
                Some(Target::MysqlSha2 { salt: salt.to_vec(), response: hex_array(hash)? })
            }
            "hashcat-5600" => {
                let mut parts = hash.rsplitn(4, ':');
                let (blob, proof, challenge, who) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
                let (user, domain) = who.split_once("::")?;
                if blob.len() > 2 * MAX_BLOB || blob.len() % 2 != 0 {
                    return None;
                }
                let mut identity = utf16(&user.to_uppercase());
                identity.extend(utf16(domain));
                Some(Target::NtlmV2 {
                    identity,
                    challenge: hex_array(challenge)?,
                    proof: hex_array(proof)?,
                    blob: hex::decode(blob).ok()?,
                })
            }
            "hashcat-5500" => {
                let mut parts = hash.rsplitn(4, ':');
                let (challenge, nt, lm) = (parts.next()?, parts.next()?, parts.next()?);
                let mut challenge: [u8; 8] = hex_array(challenge)?;
                let lm: [u8; 24] = hex_array(lm).unwrap_or([0; 24]);
                // Extended session security: the LM field is the client challenge and zeros.
                if lm[8..].iter().all(|&b| b == 0) && lm[..8].iter().any(|&b| b != 0) {
                    let mixed = md5::Md5::new().chain_update(challenge).chain_update(&lm[..8]).finalize();
                    challenge.copy_from_slice(&mixed[..8]);
                }
                Some(Target::NtlmV1 { challenge, response: hex_array(nt)? })
            }
            "john-vnc" => {
                let rest = hash.strip_prefix("$vnc$*")?;
                let (c, r) = rest.split_once('*')?;
                Some(Target::Vnc {
                    challenge: hex_array(&c.to_ascii_lowercase())?,
                    response: hex_array(&r.to_ascii_lowercase())?,
                })
            }
            _ => None,
        }
    }

    /// Whether `c` is the password behind this response.
    pub fn check(&self, c: &Candidate) -> bool {
        match self {
            Target::MysqlNative { salt, response } => {
                let h = Sha1::new().chain_update(salt).chain_update(c.sha1_sha1).finalize();
                response.iter().zip(h.iter()).zip(c.sha1.iter()).all(|((r, h), p)| r ^ h == *p)
            }
            Target::MysqlSha2 { salt, response } => {
                let h = Sha256::new().chain_update(c.sha256_sha256).chain_update(salt).finalize();
                response.iter().zip(h.iter()).zip(c.sha256.iter()).all(|((r, h), p)| r ^ h == *p)
            }
            Target::NtlmV2 { identity, challenge, proof, blob } => {
                let Ok(mut k) = HmacMd5::new_from_slice(&c.nt_hash) else { return false };
                k.update(identity);
                let key = k.finalize().into_bytes();
                let Ok(mut mac) = HmacMd5::new_from_slice(&key) else { return false };
                mac.update(challenge);
                mac.update(blob);
                mac.verify_slice(proof).is_ok()
            }
            Target::NtlmV1 { challenge, response } => desl(&c.nt_hash, challenge) == *response,
            Target::Vnc { challenge, response } => vnc_response(challenge, c.word.as_bytes()) == *response,
        }
    }
}

/// A candidate password with the parts of every algorithm that depend on it alone.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub word: String,
    sha1: [u8; 20],
    sha1_sha1: [u8; 20],
    sha256: [u8; 32],
    sha256_sha256: [u8; 32],
    nt_hash: [u8; 16],
}

impl Candidate {
    pub fn new(word: &str) -> Candidate {
        let sha1: [u8; 20] = Sha1::digest(word.as_bytes()).into();
        let sha256: [u8; 32] = Sha256::digest(word.as_bytes()).into();
        Candidate {
            word: word.to_string(),
            sha1,
            sha1_sha1: Sha1::digest(sha1).into(),
            sha256,
            sha256_sha256: Sha256::digest(Sha256::digest(sha256)).into(),
            nt_hash: Md4::digest(utf16(word)).into(),
        }
    }
}

fn utf16(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

/// DES-ECB of one 8-byte block under an 8-byte key.
fn des_block(key: [u8; 8], block: &[u8]) -> [u8; 8] {
    let cipher = des::Des::new(&key.into());
    let mut b = [0u8; 8];
    b.copy_from_slice(&block[..8]);
    let mut b = b.into();
    cipher.encrypt_block(&mut b);
    let mut out = [0u8; 8];
    out.copy_from_slice(&b);
    out
}

/// A 7-byte key spread over 8 bytes (parity bits left zero; DES ignores them).
fn des_key7(k: &[u8]) -> [u8; 8] {
    let mut out = [0u8; 8];
    let bits = k.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
    for (i, o) in out.iter_mut().enumerate() {
        *o = (((bits >> (49 - 7 * i)) & 0x7f) << 1) as u8;
    }
    out
}

/// [MS-NLMP] DESL: the 16-byte key padded to 21, three DES encryptions of the challenge.
fn desl(key: &[u8; 16], challenge: &[u8; 8]) -> [u8; 24] {
    let mut k = [0u8; 21];
    k[..16].copy_from_slice(key);
    let mut out = [0u8; 24];
    for i in 0..3 {
        out[8 * i..8 * i + 8].copy_from_slice(&des_block(des_key7(&k[7 * i..7 * i + 7]), challenge));
    }
    out
}

/// The VNC client's response to `challenge` for `password` (RFB 7.2.2).
pub fn vnc_response(challenge: &[u8; 16], password: &[u8]) -> [u8; 16] {
    let mut key = [0u8; 8];
    for (k, p) in key.iter_mut().zip(password) {
        *k = p.reverse_bits();
    }
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&des_block(key, &challenge[..8]));
    out[8..].copy_from_slice(&des_block(key, &challenge[8..]));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cracks(t: &Target, word: &str) -> bool {
        t.check(&Candidate::new(word))
    }

    /// [MS-NLMP] 4.2.4: user "User", domain "Domain", password "Password", server challenge
    /// 0123456789abcdef, the blob of 4.2.4.1.3 and the NTProofStr of 4.2.4.2.2.
    #[test]
    fn ntlmv2_specification_vector() {
        let blob = "01010000000000000000000000000000aaaaaaaaaaaaaaaa0000000002000c0044006f006d00610069006e\
                    0001000c005300650072007600650072000000000000000000";
        let line = format!("User::Domain:0123456789abcdef:68cd0ab851e51c96aabc927bebef6a1c:{blob}");
        let t = Target::parse("hashcat-5600", &line, None).unwrap();
        assert!(cracks(&t, "Password"));
        assert!(!cracks(&t, "password"));
        // The user name is upper-cased, the domain is not.
        let t = Target::parse("hashcat-5600", &line.replacen("User", "USER", 1), None).unwrap();
        assert!(cracks(&t, "Password"));
        let t = Target::parse("hashcat-5600", &line.replacen("Domain", "DOMAIN", 1), None).unwrap();
        assert!(!cracks(&t, "Password"));
    }

    /// [MS-NLMP] 4.2.2.2.1 (NTLMv1) and 4.2.3.2.2 (with extended session security: the LM
    /// response is the client challenge aaaaaaaaaaaaaaaa and zeros).
    #[test]
    fn ntlmv1_specification_vectors() {
        let v1 = "User::Domain:98def7b87f88aa5dafe2df779688a172def11c7d5ccdef13:\
                  67c43011f30298a2ad35ece64f16331c44bdbed927841f94:0123456789abcdef";
        let t = Target::parse("hashcat-5500", v1, None).unwrap();
        assert!(cracks(&t, "Password") && !cracks(&t, "Passwort"));
        let ess = format!(
            "User::Domain:aaaaaaaaaaaaaaaa{}:7537f803ae367128ca458204bde7caf81e97ed2683267232:0123456789abcdef",
            "00".repeat(16)
        );
        let t = Target::parse("hashcat-5500", &ess, None).unwrap();
        assert!(cracks(&t, "Password") && !cracks(&t, "password"));
    }

    /// The VNC DES with vncpasswd's fixed key {23,82,107,6,35,78,88,7}: vncpasswd stores
    /// "password" as dbd83cfd727a1458 (the same d3des with the same bit order), so the response
    /// to the challenge "password" twice, with that key as the password, is that block twice.
    #[test]
    fn vnc_vector() {
        let key = [23u8, 82, 107, 6, 35, 78, 88, 7];
        let r = vnc_response(b"passwordpassword", &key);
        assert_eq!(hex::encode(r), "dbd83cfd727a1458dbd83cfd727a1458");
        let challenge: [u8; 16] = *b"0123456789abcdef";
        let line =
            format!("$vnc$*{}*{}", hex::encode_upper(challenge), hex::encode_upper(vnc_response(&challenge, b"admin")));
        let t = Target::parse("john-vnc", &line, None).unwrap();
        assert!(cracks(&t, "admin") && !cracks(&t, "admim"));
        // Only 8 bytes count.
        let line = format!("$vnc$*{}*{}", hex::encode(challenge), hex::encode(vnc_response(&challenge, b"password")));
        let t = Target::parse("john-vnc", &line, None).unwrap();
        assert!(cracks(&t, "password123"));
    }

    /// MySQL's scramble (sql/auth/password.cc, `scramble`) built from its definition with a
    /// fixed salt; the real client's responses are checked end to end (hydra,
    /// `tests/tests/recover_e2e.rs`).
    #[test]
    fn mysql_native_vector() {
        let salt = "0123456789abcdefghij";
        let h1: [u8; 20] = Sha1::digest(b"secret").into();
        let h2: [u8; 20] = Sha1::digest(h1).into();
        let h3 = Sha1::new().chain_update(salt.as_bytes()).chain_update(h2).finalize();
        let resp: Vec<u8> = h1.iter().zip(h3.iter()).map(|(a, b)| a ^ b).collect();
        let t = Target::parse("mysql_native_password-hex", &hex::encode(&resp), Some(salt)).unwrap();
        assert!(cracks(&t, "secret") && !cracks(&t, "Secret"));
        assert_eq!(hex::encode(h1), "e5e9fa1ba31ecd1ae84f75caaa474f3a663f05f4");
        assert!(Target::parse("mysql-native-hex", &hex::encode(&resp), Some("short")).is_none());
        assert!(Target::parse("mysql-native-hex", &hex::encode(&resp), None).is_none());
    }

    /// Responses Debian's hydra 9.4 (`hydra -l root -P list mysql`) sent to a MySQL greeting
    /// with this salt (printable, as the sensor's), captured on the wire 2026-12-02.
    #[test]
    fn mysql_native_hydra_vectors() {
        let salt = "A6RnLLIjdK>d`&GpLJz,";
        for (hash, word) in [
            ("ba2ea2c4d14696a649f115ed57760b63476847eb", "123456"),
            ("98260697291d19cbf872a28c40b78d464e0f8f91", "letmein"),
            ("4f4ddf4b2846c7a437389156a92e681aabc7cf4f", "dragon"),
            ("71dd02974a78f56c6b767c6a9b2d1f2f178f48b8", "trustno1"),
        ] {
            let t = Target::parse("mysql-native-hex", hash, Some(salt)).unwrap();
            assert!(cracks(&t, word), "{word}");
            assert!(!cracks(&t, "123457"), "{word}");
        }
    }

    #[test]
    fn caching_sha2_vector() {
        let salt = "ABCDEFGHIJKLMNOPQRST";
        let h1: [u8; 32] = Sha256::digest(b"root").into();
        let h3 = Sha256::new().chain_update(Sha256::digest(Sha256::digest(h1))).chain_update(salt).finalize();
        let resp: Vec<u8> = h1.iter().zip(h3.iter()).map(|(a, b)| a ^ b).collect();
        let t = Target::parse("caching_sha2_password-hex", &hex::encode(resp), Some(salt)).unwrap();
        assert!(cracks(&t, "root") && !cracks(&t, "toor"));
    }

    /// Truncated and mutated lines of every format: never a panic (the fuzz target
    /// `hpfeeds_frame` runs the same over arbitrary text).
    #[test]
    fn hostile_input_never_panics() {
        let lines = [
            ("hashcat-5600", "User::Domain:0123456789abcdef:68cd0ab851e51c96aabc927bebef6a1c:0101000000000000aaaaaaaaaaaaaaaa"),
            ("hashcat-5500", "u::d:aaaaaaaaaaaaaaaa00000000000000000000000000000000:7537f803ae367128ca458204bde7caf81e97ed2683267232:0123456789abcdef"),
            ("john-vnc", "$vnc$*30313233343536373839616263646566*30313233343536373839616263646566"),
            ("mysql-native-hex", "00112233445566778899aabbccddeeff00112233"),
        ];
        let c = Candidate::new("password");
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            let (f, l) = lines[(seed >> 60) as usize % lines.len()];
            let mut b = l.as_bytes().to_vec();
            b.truncate((seed >> 20) as usize % (b.len() + 1));
            if !b.is_empty() {
                let i = (seed >> 8) as usize % b.len();
                b[i] = [b':', b'*', b'0', b'z', 0xff][(seed >> 40) as usize % 5];
            }
            let text = String::from_utf8_lossy(&b);
            if let Some(t) = Target::parse(f, &text, Some("0123456789abcdefghij")) {
                let _ = t.check(&c);
            }
        }
    }

    #[test]
    fn malformed_lines_are_no_targets() {
        for (f, h) in [
            ("hashcat-5600", ""),
            ("hashcat-5600", "a::b:zz:00:00"),
            ("hashcat-5600", "::::"),
            ("hashcat-5500", "a::b:00:11"),
            ("john-vnc", "$vnc$*00*11"),
            ("john-vnc", "nothing"),
            ("mysql-native-hex", "abc"),
            ("unknown", "00"),
        ] {
            assert!(Target::parse(f, h, Some("0123456789abcdefghij")).is_none(), "{f} {h}");
        }
    }
}
