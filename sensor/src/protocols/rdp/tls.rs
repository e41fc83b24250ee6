//! RDP's TLS: the host's self-signed certificate, RSA 2048 with SHA-256 and the host's name
//! as its subject, valid for six months from a month ago, as Windows makes for its Remote
//! Desktop service (an ECDSA key or a fresh certificate per connection would stand out to
//! scanners that record certificates); and a stream that gives rustls the ClientHello we
//! already read to fingerprint it.
//!
//! The certificate is made on the first connection of the sensor process (in a blocking
//! thread: RSA key generation takes a while on a Pi) and kept for the process. With the
//! service's `host_key = FILE` it is kept in FILE (certificate and key, PEM, created 0600), so it
//! survives restarts like a real host's; without, each start makes a new one.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::ServerConfig;

/// RSA modulus size of the certificate (what Windows uses for its RDP certificate).
const RSA_BITS: usize = 2048;
/// Certificates kept per process (one per configured host name and file).
const MAX_CONFIGS: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("tls: {0}")]
    Tls(#[from] tokio_rustls::rustls::Error),
    #[error("rsa key: {0}")]
    Rsa(String),
    #[error("{path}: {err}")]
    File { path: PathBuf, err: String },
}

type Key = (String, Option<PathBuf>);

/// The TLS server config for `host`, its certificate kept in `file` if given.
pub async fn server_config(host: &str, file: Option<&Path>) -> Result<Arc<ServerConfig>, CertError> {
    static CONFIGS: tokio::sync::Mutex<Option<HashMap<Key, Arc<ServerConfig>>>> = tokio::sync::Mutex::const_new(None);
    // Held while a certificate is made, so concurrent first connections make one.
    let mut configs = CONFIGS.lock().await;
    let map = configs.get_or_insert_with(HashMap::new);
    let key = (host.to_string(), file.map(Path::to_path_buf));
    if let Some(c) = map.get(&key) {
        return Ok(c.clone());
    }
    let (h, f) = key.clone();
    let config = tokio::task::spawn_blocking(move || load_or_make(&h, f.as_deref()))
        .await
        .map_err(|e| CertError::Rsa(e.to_string()))??;
    if map.len() < MAX_CONFIGS {
        map.insert(key, config.clone());
    }
    Ok(config)
}

fn load_or_make(host: &str, file: Option<&Path>) -> Result<Arc<ServerConfig>, CertError> {
    let bad = |path: &Path, err: String| CertError::File { path: path.to_path_buf(), err };
    let (cert, key) = match file.map(|f| (f, std::fs::read(f))) {
        Some((path, Ok(pem))) => {
            let cert = CertificateDer::from_pem_slice(&pem).map_err(|e| bad(path, e.to_string()))?;
            let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| bad(path, e.to_string()))?;
            (cert, key)
        }
        Some((path, Err(e))) if e.kind() != std::io::ErrorKind::NotFound => return Err(bad(path, e.to_string())),
        other => {
            let (cert_pem, key_pem) = make_certificate(host)?;
            if let Some((path, _)) = other {
                let text = format!("{cert_pem}{key_pem}");
                drosera_uplink::tls::write_file_atomic(path, text.as_bytes(), 0o600)
                    .map_err(|e| bad(path, e.to_string()))?;
            }
            let cert =
                CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|e| CertError::Rsa(e.to_string()))?;
            let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| CertError::Rsa(e.to_string()))?;
            (cert, key)
        }
    };
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)?;
    Ok(Arc::new(config))
}

/// A self-signed RSA certificate for `host` (certificate PEM, PKCS#8 key PEM).
pub fn make_certificate(host: &str) -> Result<(String, String), CertError> {
    use rsa::pkcs8::EncodePrivateKey;
    let rsa_key = rsa::RsaPrivateKey::new(&mut russh::keys::key::safe_rng(), RSA_BITS)
        .map_err(|e| CertError::Rsa(e.to_string()))?;
    let der = rsa_key.to_pkcs8_der().map_err(|e| CertError::Rsa(e.to_string()))?;
    let pkcs8 = PrivatePkcs8KeyDer::from(der.as_bytes().to_vec());
    let key = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8, &rcgen::PKCS_RSA_SHA256)?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::CommonName, host);
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(30);
    params.not_after = now + time::Duration::days(152);
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

pub use crate::protocols::prefixed::Prefixed;

#[cfg(test)]
mod tests {
    use super::*;

    /// The certificate made for a `host_key` file is written private once and then read back
    /// (the same certificate after a restart).
    #[test]
    fn the_certificate_file_is_created_private_once_and_then_kept() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rdp_cert.pem");
        load_or_make("FILESRV01", Some(&path)).unwrap();
        let first = std::fs::read_to_string(&path).unwrap();
        assert!(first.starts_with("-----BEGIN CERTIFICATE-----") && first.contains("PRIVATE KEY-----"));
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        load_or_make("FILESRV01", Some(&path)).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), first);
        std::fs::write(&path, "not pem").unwrap();
        let err = load_or_make("FILESRV01", Some(&path)).unwrap_err().to_string();
        assert!(err.contains("rdp_cert.pem"), "{err}");
    }
}
