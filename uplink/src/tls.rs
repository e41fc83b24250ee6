//! rustls configurations for both ends of the uplink: TLS 1.3 only, mutual authentication, the
//! `ring` crypto provider (pure Rust + assembly that cross-compiles to aarch64 without cmake).
//!
//! WHY like this: each config is built once at start from PEM files, validated, and then shared
//! immutably (`Arc`). The admin accepts only client certificates signed by its own CA and maps the
//! certificate to the sensor name (its common name); the sensor trusts only that CA, never the
//! system roots. Private keys must not be readable by anyone but their owner: a key file with
//! group/other permissions is refused with an error that says how to fix it, and keys are written
//! with mode 0600 through a temporary file and a rename, so a crash never leaves half a key.

use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Largest PEM file we read (certificates and keys are a few KiB).
const MAX_PEM_FILE: u64 = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a usable PEM file: {message}")]
    Pem { path: PathBuf, message: String },
    #[error(
        "private key {path} has mode {mode:o}, readable by others; fix: chmod 600 {path} (and check who could have copied it)"
    )]
    KeyPermissions { path: PathBuf, mode: u32 },
    #[error("TLS configuration error: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client certificate verifier: {0}")]
    Verifier(String),
    #[error("peer certificate: {0}")]
    PeerCert(String),
}

/// The crypto provider both ends use.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_bounded(path: &Path) -> Result<(std::fs::File, Vec<u8>), TlsError> {
    let file = std::fs::File::open(path).map_err(|source| TlsError::Read { path: path.to_path_buf(), source })?;
    let mut buf = Vec::new();
    (&file)
        .take(MAX_PEM_FILE)
        .read_to_end(&mut buf)
        .map_err(|source| TlsError::Read { path: path.to_path_buf(), source })?;
    Ok((file, buf))
}

/// All certificates in a PEM file (at least one).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let (_, pem) = read_bounded(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem { path: path.to_path_buf(), message: e.to_string() })?;
    if certs.is_empty() {
        return Err(TlsError::Pem { path: path.to_path_buf(), message: "no CERTIFICATE section".into() });
    }
    Ok(certs)
}

/// The private key in a PEM file; refuses a file that group or others may read or write.
pub fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let (file, pem) = read_bounded(path)?;
    check_key_mode(&file, path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::Pem { path: path.to_path_buf(), message: e.to_string() })
}

/// Like [`load_private_key`] but returns the PEM text (for rcgen, which parses keys itself).
pub fn read_private_key_pem(path: &Path) -> Result<String, TlsError> {
    let (file, pem) = read_bounded(path)?;
    check_key_mode(&file, path)?;
    String::from_utf8(pem).map_err(|_| TlsError::Pem { path: path.to_path_buf(), message: "not UTF-8 text".into() })
}

#[cfg(unix)]
fn check_key_mode(file: &std::fs::File, path: &Path) -> Result<(), TlsError> {
    use std::os::unix::fs::PermissionsExt;
    let mode =
        file.metadata().map_err(|source| TlsError::Read { path: path.to_path_buf(), source })?.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(TlsError::KeyPermissions { path: path.to_path_buf(), mode: mode & 0o7777 });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_key_mode(_file: &std::fs::File, _path: &Path) -> Result<(), TlsError> {
    Ok(())
}

/// Writes `data` to `path` atomically (temporary file in the same directory, fsync, rename) with
/// permissions `mode` from the start (so a secret is never briefly world-readable).
pub fn write_file_atomic(path: &Path, data: &[u8], mode: u32) -> Result<(), TlsError> {
    let err = |source| TlsError::Write { path: path.to_path_buf(), source };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(mode);
    }
    let result = (|| {
        let mut f = opts.open(&tmp)?;
        #[cfg(unix)]
        {
            // The umask may have removed bits we asked for; set exactly `mode`.
            use std::os::unix::fs::PermissionsExt;
            f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        }
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(err)
}

/// A root store holding only the certificates in `ca_cert`.
fn roots(ca_cert: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for c in load_certs(ca_cert)? {
        roots.add(c).map_err(|e| TlsError::Pem { path: ca_cert.to_path_buf(), message: e.to_string() })?;
    }
    Ok(roots)
}

/// The admin's server config: TLS 1.3, client certificate required and signed by `ca_cert`.
pub fn server_config(ca_cert: &Path, cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca_cert)?), provider.clone())
        .build()
        .map_err(|e| TlsError::Verifier(e.to_string()))?;
    let config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(load_certs(cert)?, load_private_key(key)?)?;
    Ok(Arc::new(config))
}

/// The sensor's client config: TLS 1.3, trusts only `ca_cert`, presents `cert`/`key`.
pub fn client_config(ca_cert: &Path, cert: &Path, key: &Path) -> Result<Arc<ClientConfig>, TlsError> {
    let config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots(ca_cert)?)
        .with_client_auth_cert(load_certs(cert)?, load_private_key(key)?)?;
    Ok(Arc::new(config))
}

/// A client config that presents no certificate (tests use it to check the admin refuses it).
pub fn client_config_without_cert(ca_cert: &Path) -> Result<Arc<ClientConfig>, TlsError> {
    let config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots(ca_cert)?)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Who is on the other end of an authenticated connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The sensor name: the certificate's common name.
    pub name: String,
    /// Lower-case hex SHA-256 of the certificate (DER).
    pub cert_sha256: String,
}

/// Lower-case hex SHA-256 of a DER certificate.
pub fn cert_sha256(der: &[u8]) -> String {
    crate::event::to_hex(&Sha256::digest(der))
}

/// Maps the (already verified) end-entity certificate to the sensor name.
pub fn peer_identity(certs: Option<&[CertificateDer<'_>]>) -> Result<PeerIdentity, TlsError> {
    let der = certs.and_then(|c| c.first()).ok_or_else(|| TlsError::PeerCert("no client certificate".into()))?;
    let cn = common_name(der.as_ref())?;
    if !valid_sensor_name(&cn) {
        return Err(TlsError::PeerCert(format!("certificate common name {cn:?} is not a valid sensor name")));
    }
    Ok(PeerIdentity { name: cn, cert_sha256: cert_sha256(der.as_ref()) })
}

/// The subject common name of a DER certificate.
pub fn common_name(der: &[u8]) -> Result<String, TlsError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| TlsError::PeerCert(e.to_string()))?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .ok_or_else(|| TlsError::PeerCert("certificate has no common name".into()))?;
    Ok(cn.to_string())
}

/// Sensor names: 1 to 64 characters of ASCII letters, digits, `.`, `_` and `-`, starting with a
/// letter or digit (they become file names, certificate names and DNS names).
pub fn valid_sensor_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sensor_names() {
        for ok in ["pi-1", "a", "lab.sensor_2"] {
            assert!(valid_sensor_name(ok), "{ok}");
        }
        for bad in ["", "-x", "../x", "a b", "ä", &"x".repeat(65)] {
            assert!(!valid_sensor_name(bad), "{bad}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn keys_are_written_0600_and_wide_modes_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("drosera-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("k.pem");
        write_file_atomic(&p, b"not a key", 0o600).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        // Mode is fine, content is not a key: a PEM error, not a permission error.
        assert!(matches!(load_private_key(&p), Err(TlsError::Pem { .. })));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = load_private_key(&p).unwrap_err();
        assert!(matches!(e, TlsError::KeyPermissions { mode: 0o644, .. }), "{e}");
        assert!(e.to_string().contains("chmod 600"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
