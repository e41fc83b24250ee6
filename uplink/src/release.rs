//! Signed sensor releases: what the admin signs and what the sensor (and its launcher) check.
//!
//! WHY in the contract crate: the admin signs and the sensor verifies the very same bytes, so the
//! message is built in one place ([`signed_message`]). The signature covers the version, the
//! architecture, the size and the sha256 of the binary: a binary of another architecture, a
//! truncated or altered file, or a manifest whose version was edited all fail
//! [`Manifest::verify`]. The key is ed25519 (`ed25519-dalek`); the admin keeps the 32-byte
//! private seed (mode 0600) and sensor bundles carry only the public key, as hex in a text file.
//!
//! Everything here is a pure function over bytes that may come from the network: it never
//! panics and never allocates from a length it was given.

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Longest release version (`1.2.3`, `0.2.0-rc1+pi`).
pub const MAX_VERSION_LEN: usize = 64;

/// The architectures a release can be built for (Rust's `std::env::consts::ARCH` names).
pub const ARCHES: [&str; 2] = ["aarch64", "x86_64"];

/// A release as the admin offers it and a slot keeps it next to the binary (`release.json`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub version: String,
    pub arch: String,
    pub size: u64,
    /// sha256 of the binary, lower-case hex.
    pub sha256: String,
    /// ed25519 signature of [`signed_message`], lower-case hex.
    pub signature: String,
}

/// Why a release is not accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReleaseError {
    #[error(
        "version {0:?} is not valid: 1 to 64 of letters, digits, '.', '-', '+', '_', starting with a letter or digit"
    )]
    BadVersion(String),
    #[error("architecture {0:?} is not one of aarch64, x86_64")]
    BadArch(String),
    #[error("release is for {release}, this sensor is {here}")]
    WrongArch { release: String, here: String },
    #[error("the public key is not 64 hex digits of an ed25519 key")]
    BadPublicKey,
    #[error("the private key is not 64 hex digits")]
    BadPrivateKey,
    #[error("signature is malformed")]
    BadSignature,
    #[error("signature does not verify with the update public key (signed with another key, or altered)")]
    SignatureMismatch,
    #[error("sha256 is malformed")]
    BadSha256,
    #[error("binary has {got} bytes, the release says {want}")]
    Size { got: u64, want: u64 },
    #[error("binary's sha256 {got} differs from the release's {want} (truncated or altered)")]
    Sha256 { got: String, want: String },
    #[error("config is for sensor {0:?}")]
    WrongSensor(String),
    #[error("config of {0} bytes is larger than {MAX_CONFIG_BYTES}")]
    ConfigTooLarge(usize),
}

/// Largest sensor config the admin may push.
pub const MAX_CONFIG_BYTES: usize = 256 * 1024;

/// A sensor config the admin pushes (`drosera-admin sensor config push`), signed with the update
/// key like a release: the sensor name, a serial that only grows, and the sha256 of the text.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SignedConfig {
    pub sensor: String,
    pub serial: u64,
    pub toml: String,
    /// ed25519 signature of [`config_message`], lower-case hex.
    pub signature: String,
}

/// The bytes signed for a pushed config.
pub fn config_message(sensor: &str, serial: u64, toml: &str) -> Vec<u8> {
    format!("drosera-sensor-config-v1\nsensor={sensor}\nserial={serial}\nsha256={}\n", sha256_hex(toml.as_bytes()))
        .into_bytes()
}

impl SignedConfig {
    pub fn sign(key: &SigningKey, sensor: &str, serial: u64, toml: &str) -> Result<SignedConfig, ReleaseError> {
        if toml.len() > MAX_CONFIG_BYTES {
            return Err(ReleaseError::ConfigTooLarge(toml.len()));
        }
        let sig = key.sign(&config_message(sensor, serial, toml));
        Ok(SignedConfig { sensor: sensor.into(), serial, toml: toml.into(), signature: to_hex(&sig.to_bytes()) })
    }

    /// Checks the signature and that the config is for `sensor`.
    pub fn verify(&self, key: &VerifyingKey, sensor: &str) -> Result<(), ReleaseError> {
        if self.toml.len() > MAX_CONFIG_BYTES {
            return Err(ReleaseError::ConfigTooLarge(self.toml.len()));
        }
        if self.sensor != sensor {
            return Err(ReleaseError::WrongSensor(self.sensor.chars().take(64).collect()));
        }
        let sig: [u8; 64] = hex_array(&self.signature).ok_or(ReleaseError::BadSignature)?;
        let msg = config_message(&self.sensor, self.serial, &self.toml);
        key.verify(&msg, &Signature::from_bytes(&sig)).map_err(|_| ReleaseError::SignatureMismatch)
    }
}

/// True for a usable release version.
pub fn valid_version(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= MAX_VERSION_LEN
        && v.as_bytes()[0].is_ascii_alphanumeric()
        && v.bytes().all(|b| b.is_ascii_alphanumeric() || b".-+_".contains(&b))
}

/// The bytes that are signed: a fixed prefix and the four fields, one per line.
pub fn signed_message(version: &str, arch: &str, size: u64, sha256_hex: &str) -> Vec<u8> {
    format!("drosera-sensor-release-v1\nversion={version}\narch={arch}\nsize={size}\nsha256={sha256_hex}\n")
        .into_bytes()
}

fn hex_array<const N: usize>(s: &str) -> Option<[u8; N]> {
    let s = s.trim();
    if s.len() != 2 * N || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

fn to_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Parses a public key file's text: 64 hex digits (lines starting with `#` are comments).
pub fn parse_public_key(text: &str) -> Result<VerifyingKey, ReleaseError> {
    let line = text.lines().map(str::trim).find(|l| !l.is_empty() && !l.starts_with('#')).unwrap_or("");
    let bytes: [u8; 32] = hex_array(line).ok_or(ReleaseError::BadPublicKey)?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| ReleaseError::BadPublicKey)
}

/// Parses a private key file's text (the 32-byte seed as 64 hex digits).
pub fn parse_private_key(text: &str) -> Result<SigningKey, ReleaseError> {
    let line = text.lines().map(str::trim).find(|l| !l.is_empty() && !l.starts_with('#')).unwrap_or("");
    let seed: [u8; 32] = hex_array(line).ok_or(ReleaseError::BadPrivateKey)?;
    Ok(SigningKey::from_bytes(&seed))
}

/// A key from 32 random bytes: (private key file text, public key file text).
pub fn key_files(seed: [u8; 32]) -> (String, String) {
    let k = SigningKey::from_bytes(&seed);
    (
        format!(
            "# Drosera update signing key (ed25519 seed). Keep it mode 0600; never copy it to a sensor.\n{}\n",
            to_hex(&seed)
        ),
        format!(
            "# Drosera update public key (ed25519): sensors accept releases signed by its private key.\n{}\n",
            to_hex(k.verifying_key().as_bytes())
        ),
    )
}

/// The sha256 of `data` as lower-case hex.
pub fn sha256_hex(data: &[u8]) -> String {
    to_hex(&Sha256::digest(data))
}

impl Manifest {
    /// Signs a release of `binary` (sha256 + size + version + arch).
    pub fn sign(key: &SigningKey, version: &str, arch: &str, binary: &[u8]) -> Result<Manifest, ReleaseError> {
        check_fields(version, arch)?;
        let sha256 = sha256_hex(binary);
        let size = binary.len() as u64;
        let sig = key.sign(&signed_message(version, arch, size, &sha256));
        Ok(Manifest { version: version.into(), arch: arch.into(), size, sha256, signature: to_hex(&sig.to_bytes()) })
    }

    /// The sha256 as bytes.
    pub fn sha256_bytes(&self) -> Result<[u8; 32], ReleaseError> {
        hex_array(&self.sha256).ok_or(ReleaseError::BadSha256)
    }

    /// Checks the fields, the architecture (`here`) and the signature (not the binary).
    pub fn verify(&self, key: &VerifyingKey, here: &str) -> Result<(), ReleaseError> {
        check_fields(&self.version, &self.arch)?;
        if self.arch != here {
            return Err(ReleaseError::WrongArch { release: self.arch.clone(), here: here.into() });
        }
        self.sha256_bytes()?;
        let sig: [u8; 64] = hex_array(&self.signature).ok_or(ReleaseError::BadSignature)?;
        let msg = signed_message(&self.version, &self.arch, self.size, &self.sha256);
        key.verify(&msg, &Signature::from_bytes(&sig)).map_err(|_| ReleaseError::SignatureMismatch)
    }

    /// Checks a binary against the (verified) manifest: size and sha256.
    pub fn check_binary(&self, size: u64, sha256_hex: &str) -> Result<(), ReleaseError> {
        if size != self.size {
            return Err(ReleaseError::Size { got: size, want: self.size });
        }
        if sha256_hex != self.sha256 {
            return Err(ReleaseError::Sha256 { got: sha256_hex.into(), want: self.sha256.clone() });
        }
        Ok(())
    }
}

fn check_fields(version: &str, arch: &str) -> Result<(), ReleaseError> {
    if !valid_version(version) {
        return Err(ReleaseError::BadVersion(version.chars().take(80).collect()));
    }
    if !ARCHES.contains(&arch) {
        return Err(ReleaseError::BadArch(arch.chars().take(80).collect()));
    }
    Ok(())
}

/// The architecture of an ELF executable (from its header), if it is one we release for.
pub fn elf_arch(head: &[u8]) -> Option<&'static str> {
    if head.len() < 20 || &head[..4] != b"\x7fELF" {
        return None;
    }
    // e_machine at offset 18, in the file's byte order (EI_DATA at offset 5: 1 = little).
    let m =
        if head[5] == 2 { u16::from_be_bytes([head[18], head[19]]) } else { u16::from_le_bytes([head[18], head[19]]) };
    match m {
        62 => Some("x86_64"),
        183 => Some("aarch64"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_and_every_refusal() {
        let (private, public) = key_files([7; 32]);
        let key = parse_private_key(&private).unwrap();
        let public = parse_public_key(&public).unwrap();
        let m = Manifest::sign(&key, "0.2.0", "x86_64", b"binary").unwrap();
        m.verify(&public, "x86_64").unwrap();
        m.check_binary(6, &sha256_hex(b"binary")).unwrap();
        assert!(matches!(m.verify(&public, "aarch64"), Err(ReleaseError::WrongArch { .. })));
        let other = parse_public_key(&key_files([8; 32]).1).unwrap();
        assert_eq!(m.verify(&other, "x86_64"), Err(ReleaseError::SignatureMismatch));
        let edited = Manifest { version: "0.3.0".into(), ..m.clone() };
        assert_eq!(edited.verify(&public, "x86_64"), Err(ReleaseError::SignatureMismatch));
        let arch = Manifest { arch: "aarch64".into(), ..m.clone() };
        assert_eq!(arch.verify(&public, "aarch64"), Err(ReleaseError::SignatureMismatch));
        assert!(matches!(m.check_binary(5, &sha256_hex(b"binar")), Err(ReleaseError::Size { .. })));
        assert!(matches!(m.check_binary(6, &sha256_hex(b"BINARY")), Err(ReleaseError::Sha256 { .. })));
        assert!(Manifest::sign(&key, "../x", "x86_64", b"").is_err());
        assert!(Manifest::sign(&key, "1", "mips", b"").is_err());
        let bad = Manifest { signature: "zz".into(), ..m };
        assert_eq!(bad.verify(&public, "x86_64"), Err(ReleaseError::BadSignature));
        assert!(parse_public_key("nothex").is_err());
        assert!(parse_public_key("é".repeat(64).as_str()).is_err());
    }

    #[test]
    fn signed_configs() {
        let key = parse_private_key(&key_files([7; 32]).0).unwrap();
        let public = parse_public_key(&key_files([7; 32]).1).unwrap();
        let c = SignedConfig::sign(&key, "pi", 3, "[sensor]\n").unwrap();
        c.verify(&public, "pi").unwrap();
        assert!(matches!(c.verify(&public, "other"), Err(ReleaseError::WrongSensor(_))));
        let edited = SignedConfig { toml: "[sensor]\nname = \"x\"\n".into(), ..c.clone() };
        assert_eq!(edited.verify(&public, "pi"), Err(ReleaseError::SignatureMismatch));
        let replayed = SignedConfig { serial: 4, ..c };
        assert_eq!(replayed.verify(&public, "pi"), Err(ReleaseError::SignatureMismatch));
        assert!(SignedConfig::sign(&key, "pi", 1, &"x".repeat(MAX_CONFIG_BYTES + 1)).is_err());
    }

    #[test]
    fn versions_and_elf_headers() {
        for ok in ["1", "0.2.0", "0.2.0-rc1+pi", "a_b"] {
            assert!(valid_version(ok), "{ok}");
        }
        for bad in ["", "-1", "../x", "a b", &"1".repeat(65), "v\n"] {
            assert!(!valid_version(bad), "{bad:?}");
        }
        let mut h = vec![0x7f, b'E', b'L', b'F', 2, 1];
        h.resize(20, 0);
        h[18] = 183;
        assert_eq!(elf_arch(&h), Some("aarch64"));
        h[18] = 62;
        assert_eq!(elf_arch(&h), Some("x86_64"));
        assert_eq!(elf_arch(b"#!/bin/sh\n"), None);
        assert_eq!(elf_arch(&h[..10]), None);
    }
}
