//! What each persona's SSH server offers: its version string, its KEXINIT algorithm lists (in
//! the real server's order), its authentication methods and MaxAuthTries, and its shell.
//!
//! WHY: `nmap --script ssh2-enum-algos`, `ssh -vvv` and Shodan-style scanners compare what a
//! server offers with what the version it announces would offer. The lists below were taken
//! from the real servers (see `docs/ssh-personas.md`); where russh lacks an algorithm the real
//! server offers, it is left out (an algorithm offered but not implemented would break every
//! client that picks it); the tests' `MISSING` list names each one and checks that russh really
//! lacks it.

use crate::config::Persona;
use crate::protocols::shell::Flavor;
use russh::keys::{Algorithm, EcdsaCurve, HashAlg};
use russh::{cipher, compression, kex, mac, MethodKind};

/// One SSH server as a persona shows it.
pub(super) struct Profile {
    /// The version line (without CR LF).
    pub version: &'static str,
    pub kex: &'static [kex::Name],
    /// Host key algorithms in the server's order (the keys it has decide which are offered),
    /// then the other client key algorithms it accepts.
    pub key: &'static [Algorithm],
    pub cipher: &'static [cipher::Name],
    pub mac: &'static [mac::Name],
    pub compression: &'static [compression::Name],
    pub methods: &'static [MethodKind],
    /// Failed authentications before the server hangs up.
    pub max_auth_tries: usize,
    pub flavor: Flavor,
}

const RSA512: Algorithm = Algorithm::Rsa { hash: Some(HashAlg::Sha512) };
const RSA256: Algorithm = Algorithm::Rsa { hash: Some(HashAlg::Sha256) };
const RSA_SHA1: Algorithm = Algorithm::Rsa { hash: None };
const P256: Algorithm = Algorithm::Ecdsa { curve: EcdsaCurve::NistP256 };
const P384: Algorithm = Algorithm::Ecdsa { curve: EcdsaCurve::NistP384 };
const P521: Algorithm = Algorithm::Ecdsa { curve: EcdsaCurve::NistP521 };

/// Debian 12's OpenSSH 9.2p1-2+deb12u3 (`sshd -T` defaults with a stock Debian config:
/// `KbdInteractiveAuthentication no`, RSA, ECDSA and Ed25519 host keys).
pub(super) const DEBIAN_OPENSSH: Profile = Profile {
    version: "SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3",
    kex: &[
        kex::CURVE25519,
        kex::CURVE25519_PRE_RFC_8731,
        kex::ECDH_SHA2_NISTP256,
        kex::ECDH_SHA2_NISTP384,
        kex::ECDH_SHA2_NISTP521,
        kex::DH_GEX_SHA256,
        kex::DH_G16_SHA512,
        kex::DH_G18_SHA512,
        kex::DH_G14_SHA256,
        kex::EXTENSION_OPENSSH_STRICT_KEX_AS_SERVER,
    ],
    key: &[RSA512, RSA256, P256, Algorithm::Ed25519, P384, P521],
    cipher: &[
        cipher::CHACHA20_POLY1305,
        cipher::AES_128_CTR,
        cipher::AES_192_CTR,
        cipher::AES_256_CTR,
        cipher::AES_128_GCM,
        cipher::AES_256_GCM,
    ],
    mac: &[
        mac::HMAC_SHA256_ETM,
        mac::HMAC_SHA512_ETM,
        mac::HMAC_SHA1_ETM,
        mac::HMAC_SHA256,
        mac::HMAC_SHA512,
        mac::HMAC_SHA1,
    ],
    compression: &[compression::NONE, compression::ZLIB_LEGACY],
    methods: &[MethodKind::PublicKey, MethodKind::Password],
    max_auth_tries: 6,
    flavor: Flavor::Debian,
};

/// Dropbear 2022.83 as Debian 12 builds it (2022.83-1+deb12u3, with the strict-kex fix),
/// the SSH server of routers and cameras. MaxAuthTries 10 (its default).
pub(super) const DROPBEAR: Profile = Profile {
    version: "SSH-2.0-dropbear_2022.83",
    kex: &[
        kex::CURVE25519,
        kex::CURVE25519_PRE_RFC_8731,
        kex::ECDH_SHA2_NISTP521,
        kex::ECDH_SHA2_NISTP384,
        kex::ECDH_SHA2_NISTP256,
        kex::DH_G14_SHA256,
        kex::DH_G14_SHA1,
        kex::EXTENSION_OPENSSH_STRICT_KEX_AS_SERVER,
    ],
    key: &[Algorithm::Ed25519, P256, RSA256, RSA_SHA1, P384, P521],
    cipher: &[cipher::CHACHA20_POLY1305, cipher::AES_128_CTR, cipher::AES_256_CTR],
    mac: &[mac::HMAC_SHA1, mac::HMAC_SHA256],
    compression: &[compression::ZLIB_LEGACY, compression::NONE],
    methods: &[MethodKind::PublicKey, MethodKind::Password],
    max_auth_tries: 10,
    flavor: Flavor::BusyBox,
};

/// OpenSSH for Windows 8.1 (Windows Server 2019/2022's optional feature): OpenSSH 8.1's
/// defaults (before strict kex, `ssh-rsa` still allowed, `diffie-hellman-group14-sha1` still
/// in), no compression, and keyboard-interactive offered.
pub(super) const WINDOWS_OPENSSH: Profile = Profile {
    version: "SSH-2.0-OpenSSH_for_Windows_8.1",
    kex: &[
        kex::CURVE25519,
        kex::CURVE25519_PRE_RFC_8731,
        kex::ECDH_SHA2_NISTP256,
        kex::ECDH_SHA2_NISTP384,
        kex::ECDH_SHA2_NISTP521,
        kex::DH_GEX_SHA256,
        kex::DH_G16_SHA512,
        kex::DH_G18_SHA512,
        kex::DH_G14_SHA256,
        kex::DH_G14_SHA1,
    ],
    key: &[RSA512, RSA256, RSA_SHA1, P256, Algorithm::Ed25519, P384, P521],
    cipher: &[
        cipher::CHACHA20_POLY1305,
        cipher::AES_128_CTR,
        cipher::AES_192_CTR,
        cipher::AES_256_CTR,
        cipher::AES_128_GCM,
        cipher::AES_256_GCM,
    ],
    mac: &[
        mac::HMAC_SHA256_ETM,
        mac::HMAC_SHA512_ETM,
        mac::HMAC_SHA1_ETM,
        mac::HMAC_SHA256,
        mac::HMAC_SHA512,
        mac::HMAC_SHA1,
    ],
    compression: &[compression::NONE],
    methods: &[MethodKind::PublicKey, MethodKind::Password, MethodKind::KeyboardInteractive],
    max_auth_tries: 6,
    flavor: Flavor::WindowsCmd,
};

/// Algorithms the real servers offer that russh 0.65 does not implement, so they are not
/// offered: Debian's sshd lists `sntrup761x25519-sha512@openssh.com` first and the four `umac`
/// MACs (OpenSSH for Windows 8.1 the same MACs); dropbear lists `kexguess2@matt.ucc.asn.au`
/// (a marker for its guessed-kex extension, not an algorithm) before the strict-kex marker.
#[cfg(test)]
const MISSING: &[&str] = &[
    "sntrup761x25519-sha512@openssh.com",
    "umac-64-etm@openssh.com",
    "umac-128-etm@openssh.com",
    "umac-64@openssh.com",
    "umac-128@openssh.com",
    "kexguess2@matt.ucc.asn.au",
];

/// The SSH server of `persona`.
pub(super) fn for_persona(persona: Persona) -> &'static Profile {
    match persona {
        Persona::Mixed | Persona::LinuxServer => &DEBIAN_OPENSSH,
        Persona::IotRouter => &DROPBEAR,
        Persona::WindowsServer => &WINDOWS_OPENSSH,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_persona_has_a_server_and_every_algorithm_is_implemented() {
        for p in [Persona::Mixed, Persona::LinuxServer, Persona::WindowsServer, Persona::IotRouter] {
            let prof = for_persona(p);
            assert!(prof.version.starts_with("SSH-2.0-"));
            for k in prof.kex.iter().filter(|k| **k != kex::EXTENSION_OPENSSH_STRICT_KEX_AS_SERVER) {
                assert!(kex::Name::try_from(k.as_ref()).is_ok(), "{}", k.as_ref());
            }
            for c in prof.cipher {
                assert!(cipher::Name::try_from(c.as_ref()).is_ok(), "{}", c.as_ref());
            }
            for m in prof.mac {
                assert!(mac::Name::try_from(m.as_ref()).is_ok(), "{}", m.as_ref());
            }
            assert!(!prof.kex.contains(&kex::MLKEM768X25519_SHA256), "not in any of these versions");
        }
    }

    #[test]
    fn what_is_missing_is_really_missing_from_russh() {
        // When russh gains one of these, this fails: add it to the profiles that list it.
        for name in MISSING {
            assert!(kex::Name::try_from(*name).is_err() && mac::Name::try_from(*name).is_err(), "{name}");
        }
    }
}
