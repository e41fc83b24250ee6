//! SSH (22, 2222): the persona's sshd, as far as a scanner or a client can tell, with every
//! password and public key recorded and the shared fake shell, scp and SFTP behind the logins
//! the policy lets in.
//!
//! SSH brute force is the bulk of what an Internet-facing sensor sees, and most of the rest is
//! banner grabbing. So:
//! * the version exchange is ours ([`exchange`]): a client that only reads the banner (or sends
//!   its own and leaves) costs no russh session at all;
//! * a client that goes on gets a real handshake (russh, ring crypto, so it cross-compiles to
//!   arm64) with the persona's algorithm lists and host keys ([`profile`], [`keys`]) — Debian's
//!   OpenSSH 9.2p1, dropbear 2022.83 on the router, OpenSSH for Windows 8.1;
//! * authentication behaves like that server ([`server`]): the one login policy decides,
//!   refusals offer the methods again, MaxAuthTries ends the connection;
//! * besides credentials we record the client's version string and HASSH (MD5 of its KEXINIT
//!   lists) ([`tee`]), which identify the tool far better than its banner.

mod exchange;
pub mod hello;
mod keys;
mod profile;
pub mod scp;
mod server;
mod sftp;
mod tee;

pub use hello::{parse_client_hello, ClientHello, SshParseError};

use crate::config::ServiceSection;
use crate::protocols::shell::ShellLimits;
use crate::session::{Session, SessionResult};
use drosera_uplink::event::{CloseReason, Detail};
use exchange::Exchange;
use russh::{MethodSet, Preferred, SshId};
use std::borrow::Cow;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// Default version string (the `mixed` and `linux-server` personas): Debian 12's OpenSSH.
pub const DEFAULT_BANNER: &str = profile::DEBIAN_OPENSSH.version;
/// Messages queued per channel inside russh (each up to a 32 KiB packet): bounds what a client
/// can park in memory on a channel that nobody reads yet.
const CHANNEL_BUFFER: usize = 8;

/// Server configs, one per (persona profile, banner, host key file), built once.
fn server_config(
    profile: &'static profile::Profile,
    banner: &str,
    host_key: Option<PathBuf>,
    keys: &keys::HostKeys,
    idle: Duration,
) -> Arc<russh::server::Config> {
    type Cache = Mutex<HashMap<(&'static str, String, Option<PathBuf>, Duration), Arc<russh::server::Config>>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let key = (profile.version, banner.to_string(), host_key, idle);
    let mut cache = CACHE.get_or_init(Default::default).lock().unwrap_or_else(|p| p.into_inner());
    if let Some(c) = cache.get(&key) {
        return c.clone();
    }
    let config = Arc::new(russh::server::Config {
        server_id: SshId::Standard(banner.to_string().into()),
        methods: MethodSet::from(profile.methods),
        auth_rejection_time: Duration::from_millis(500),
        auth_rejection_time_initial: Some(Duration::ZERO),
        keys: vec![keys.rsa.clone(), keys.ecdsa.clone(), keys.ed25519.clone()],
        // The profile's MaxAuthTries is enforced by the handler (like sshd: a disconnect after
        // the last failure); this is russh's backstop, counting the first `none` too.
        max_auth_attempts: profile.max_auth_tries + 2,
        inactivity_timeout: Some(idle),
        nodelay: true,
        channel_buffer_size: CHANNEL_BUFFER,
        preferred: Preferred {
            kex: Cow::Borrowed(profile.kex),
            key: Cow::Borrowed(profile.key),
            host_key_certificates: Cow::Borrowed(&[]),
            cipher: Cow::Borrowed(profile.cipher),
            mac: Cow::Borrowed(profile.mac),
            compression: Cow::Borrowed(profile.compression),
        },
        ..Default::default()
    });
    cache.insert(key, config.clone());
    config
}

pub(crate) async fn handle(session: &mut Session, svc: &ServiceSection) -> SessionResult<()> {
    let profile = profile::for_persona(session.persona());
    let banner = svc.banner_or(profile.version).to_string();
    let (version, prefix) = match exchange::exchange(session, &banner).await? {
        Exchange::Gone { version } => {
            if let Some(value) = version {
                session.emit(Detail::Fingerprint { kind: "ssh_client".into(), value, extra: Vec::new() });
            }
            return Err(CloseReason::ClientClosed);
        }
        Exchange::Continue { version, prefix } => (version, prefix),
    };
    let keys = keys::host_keys(svc.host_key.as_deref()).await;
    let config = server_config(profile, &banner, svc.host_key.clone(), &keys, session.limits.idle_timeout);
    let em = session.emitter();
    let mut io = session.take_io().await?;
    // scp and SFTP uploads arrive over this one connection: each may bring up to the sample cap.
    let uploads = session.max_sample_bytes().unwrap_or(0).saturating_add(1).saturating_mul(server::MAX_UPLOADS as u64);
    io.get_mut().set_max_bytes_in(session.limits.max_bytes_in.saturating_add(uploads));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let swallow = banner.len() + 2;
    let stream = tee::Tee { inner: exchange::Replay::new(prefix, io, swallow), seen: seen.clone() };
    let fingerprint = Arc::new(tee::Fingerprint::new(seen, version));
    let handle_cell = Arc::new(OnceLock::new());
    let limits = ShellLimits::for_session(session.limits.max_payload, session.max_sample_bytes());
    let trap = server::Trap::new(
        em.clone(),
        profile,
        fingerprint.clone(),
        handle_cell.clone(),
        limits,
        session.limits.max_line,
    );
    let running = russh::server::run_stream(config, stream, trap).await.map_err(|_| CloseReason::ProtocolError)?;
    let handle = running.handle();
    let _ = handle_cell.set(handle.clone());
    // russh runs the connection on its own task; make sure it ends with this session's deadline.
    let result = tokio::time::timeout_at(session.deadline(), running).await;
    fingerprint.once(&em, true);
    match result {
        Ok(Ok(())) => Err(CloseReason::ClientClosed),
        Ok(Err(_)) => Err(CloseReason::ProtocolError),
        Err(_) => {
            let _ = handle.disconnect(russh::Disconnect::ByApplication, "timeout".into(), String::new()).await;
            Err(CloseReason::SessionTimeout)
        }
    }
}
