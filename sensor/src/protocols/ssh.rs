//! SSH (22, 2222): a real SSH handshake (russh), every password and public key recorded,
//! every authentication refused.
//!
//! SSH brute force is the bulk of what an Internet-facing sensor sees. A fake banner is not
//! enough — clients must complete key exchange before they send credentials — so the handshake
//! is real (russh, ring crypto, so it cross-compiles to arm64), while authentication always
//! fails. Besides credentials we record the client's version string and a HASSH fingerprint
//! (MD5 of the client's KEXINIT algorithm lists), which identifies the brute-force tool far
//! better than its banner. The KEXINIT is read from a tee of the first bytes the client sends,
//! so russh keeps sole ownership of the stream.

use crate::config::ServiceSection;
use crate::session::{Emitter, Session, SessionResult};
use drosera_uplink::event::{CloseReason, Detail, Secret};
use md5::{Digest, Md5};
use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::{HashAlg, PrivateKey};
use russh::server::{Auth, PublicKeyOffer};
use russh::{MethodKind, MethodSet, SshId};
use std::collections::HashMap;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Default version string: Debian 12's OpenSSH.
pub const DEFAULT_BANNER: &str = "SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3";
/// Authentication attempts recorded per connection (OpenSSH's default MaxAuthTries is 6).
const MAX_AUTH_ATTEMPTS: usize = 6;
/// Bytes of the client's first input kept for the KEXINIT fingerprint.
const TEE_CAP: usize = 16 * 1024;

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
        let s = body.get(at + 4..at + 4 + n).ok_or(SshParseError::BadKexinit)?;
        lists.push(String::from_utf8_lossy(s).into_owned());
        at += 4 + n;
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

/// A stream wrapper that copies the first [`TEE_CAP`] bytes read into a shared buffer.
struct Tee<S> {
    inner: S,
    seen: Arc<Mutex<Vec<u8>>>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Tee<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            if seen.len() < TEE_CAP {
                let new = &buf.filled()[before..];
                let take = new.len().min(TEE_CAP - seen.len());
                seen.extend_from_slice(&new[..take]);
            }
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tee<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Per-connection russh handler: records, refuses.
struct Trap {
    em: Emitter,
    seen: Arc<Mutex<Vec<u8>>>,
    fingerprinted: Arc<AtomicBool>,
    attempts: Arc<AtomicUsize>,
}

impl Trap {
    fn fingerprint_once(&self) {
        if self.fingerprinted.load(Ordering::Relaxed) {
            return;
        }
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Ok(hello) = parse_client_hello(&seen) {
            self.fingerprinted.store(true, Ordering::Relaxed);
            self.em.emit(Detail::Fingerprint {
                kind: "ssh_client".into(),
                value: hello.version.clone(),
                extra: vec![
                    ("hassh".into(), hello.hassh()),
                    ("hassh_algorithms".into(), hello.hassh_algorithms()),
                    ("host_key_algorithms".into(), hello.host_key.clone()),
                ],
            });
        }
    }

    fn login(&self, user: &str, secret: Secret, method: &str) -> Auth {
        self.fingerprint_once();
        if self.attempts.fetch_add(1, Ordering::Relaxed) < MAX_AUTH_ATTEMPTS {
            self.em.emit(Detail::Login {
                username: user.to_string(),
                secret,
                success: false,
                extra: vec![("method".into(), method.into())],
            });
        }
        Auth::reject()
    }
}

impl russh::server::Handler for Trap {
    type Error = russh::Error;

    async fn auth_none(&mut self, _user: &str) -> Result<Auth, Self::Error> {
        self.fingerprint_once();
        Ok(Auth::reject())
    }

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        Ok(self.login(user, Secret::Password(password.to_string()), "password"))
    }

    async fn auth_publickey_offered(&mut self, user: &str, offer: PublicKeyOffer<'_>) -> Result<Auth, Self::Error> {
        let secret = Secret::PublicKey {
            algorithm: offer.algorithm.to_string(),
            fingerprint: offer.public_key.fingerprint(HashAlg::Sha256).to_string(),
        };
        Ok(self.login(user, secret, "publickey"))
    }
}

/// Server configs, one per (banner, host key file), built once.
fn server_config(svc: &ServiceSection, idle: Duration) -> Arc<russh::server::Config> {
    type Cache = Mutex<HashMap<(String, Option<std::path::PathBuf>), Arc<russh::server::Config>>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let banner = svc.banner_or(DEFAULT_BANNER).to_string();
    let key = (banner.clone(), svc.host_key.clone());
    let mut cache = CACHE.get_or_init(Default::default).lock().unwrap_or_else(|p| p.into_inner());
    if let Some(c) = cache.get(&key) {
        return c.clone();
    }
    let seed = svc.host_key.as_deref().and_then(|p| match load_or_create_seed(p) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(path = %p.display(), error = %e, "cannot use the SSH host key file; using a key for this run only");
            None
        }
    });
    let seed = seed.unwrap_or_else(rand::random);
    let host_key = PrivateKey::from(Ed25519Keypair::from_seed(&seed));
    let config = Arc::new(russh::server::Config {
        server_id: SshId::Standard(banner.into()),
        methods: MethodSet::from(&[MethodKind::Password, MethodKind::PublicKey][..]),
        auth_rejection_time: Duration::from_millis(500),
        auth_rejection_time_initial: Some(Duration::ZERO),
        keys: vec![host_key],
        max_auth_attempts: MAX_AUTH_ATTEMPTS,
        inactivity_timeout: Some(idle),
        nodelay: true,
        ..Default::default()
    });
    cache.insert(key, config.clone());
    config
}

/// Reads the 32-byte host key seed (hex) from `path`, creating it (0600) if absent.
fn load_or_create_seed(path: &Path) -> std::io::Result<[u8; 32]> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let bytes = hex::decode(text.trim()).map_err(std::io::Error::other)?;
            bytes.try_into().map_err(|_| std::io::Error::other("host key seed must be 32 bytes of hex"))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let seed: [u8; 32] = rand::random();
            drosera_uplink::tls::write_file_atomic(path, hex::encode(seed).as_bytes(), 0o600)
                .map_err(std::io::Error::other)?;
            Ok(seed)
        }
        Err(e) => Err(e),
    }
}

pub(crate) async fn handle(session: &mut Session, svc: &ServiceSection) -> SessionResult<()> {
    let config = server_config(svc, session.limits.idle_timeout);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let trap = Trap {
        em: session.emitter(),
        seen: seen.clone(),
        fingerprinted: Arc::new(AtomicBool::new(false)),
        attempts: Arc::new(AtomicUsize::new(0)),
    };
    let fingerprint =
        Trap { em: trap.em.clone(), seen, fingerprinted: trap.fingerprinted.clone(), attempts: trap.attempts.clone() };
    let io = Tee { inner: session.take_io().await?, seen: fingerprint.seen.clone() };
    let running = russh::server::run_stream(config, io, trap).await.map_err(|_| CloseReason::ProtocolError)?;
    let handle = running.handle();
    // russh runs the connection on its own task; make sure it ends with this session's deadline.
    let result = tokio::time::timeout_at(session.deadline(), running).await;
    fingerprint.fingerprint_once();
    match result {
        Ok(Ok(())) => Err(CloseReason::ClientClosed),
        Ok(Err(_)) => Err(CloseReason::ProtocolError),
        Err(_) => {
            let _ = handle.disconnect(russh::Disconnect::ByApplication, "timeout".into(), String::new()).await;
            Err(CloseReason::SessionTimeout)
        }
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
    fn the_host_key_seed_is_created_private_once_and_then_kept() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ssh_host_key.seed");
        let seed = load_or_create_seed(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(load_or_create_seed(&path).unwrap(), seed, "a restart keeps the host key");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary file left behind");
        std::fs::write(&path, "not hex").unwrap();
        assert!(load_or_create_seed(&path).is_err());
    }

    #[test]
    fn hostile_hello_is_an_error_not_a_panic() {
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
    }
}
