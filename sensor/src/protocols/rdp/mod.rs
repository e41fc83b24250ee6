//! RDP (3389): a Windows server that requires Network Level Authentication, as far as the NTLM
//! login, so RDP brute-forcers (the most common on the internet) leave user, domain,
//! workstation and a crackable response.
//!
//! The conversation ([MS-RDPBCGR] 1.3.1.1, [MS-CSSP] 3.1.5):
//! 1. The client's X.224 Connection Request: its `Cookie: mstshash=USER` and the requested
//!    protocols are recorded (`Fingerprint` `rdp-connection-request`).
//! 2. We confirm PROTOCOL_HYBRID (CredSSP) like Windows Server with NLA required (a client
//!    that offers only TLS or standard RDP security gets HYBRID_REQUIRED_BY_SERVER).
//! 3. TLS with a self-signed RSA certificate named after the host, made once per sensor
//!    process or kept in the service's `host_key` file (like a Windows host's own RDP
//!    certificate, see `tls`). The ClientHello is recorded as a JA3 string
//!    and its MD5 (`Fingerprint` `ja3`).
//! 4. CredSSP over TLS: the client's NTLM NEGOTIATE, our CHALLENGE naming the persona's host
//!    (what `nmap --script rdp-ntlm-info` prints), the client's AUTHENTICATE: a `Login` with the
//!    user, domain and workstation and the NTLMv2 response as a hashcat mode 5600 line (the
//!    challenge is ours). The NTLM code is SMB's ([`super::smb`]).
//! 5. We refuse: a TSRequest with STATUS_LOGON_FAILURE, as Windows answers a wrong password.
//!    There is no desktop behind the door, so no login is ever accepted.
//!
//! Per persona: `windows-server` and `mixed` answer as the Windows host of the SMB service
//! (same NetBIOS name and version). RDP makes no sense on a Linux server or a router, so on
//! `linux-server` and `iot-router` the port records the connection request and closes without
//! an answer (nmap: `tcpwrapped`); enable the service only with a Windows persona. A configured
//! `banner` replaces the host name (certificate subject, NTLM target names).
//!
//! Bounded: every read has a fixed cap ([`wire`]'s `MAX_*`), idle and session timeouts apply
//! after TLS too, and a connection carries one login.

mod tls;
pub mod wire;

pub use tls::Prefixed;
pub use wire::{
    connection_confirm, der_total_length, ja3, parse_connection_request, protocol_names, tls_record_length,
    tpkt_length, ts_request, ts_request_version, ConnectionRequest, RdpError,
};

use crate::config::{Persona, ServiceSection};
use crate::protocols::smb::{find_ntlmssp, ntlm_challenge, ntlmssp_type, parse_ntlm_authenticate, SmbPersona};
use crate::session::{Session, SessionResult};
use drosera_uplink::event::{CloseReason, Detail};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use wire::*;

pub(crate) async fn handle(session: &mut Session, svc: &ServiceSection) -> SessionResult<()> {
    let mut head = [0u8; 4];
    session.read_exact(&mut head).await?;
    let len = tpkt_length(&head).map_err(|_| CloseReason::ProtocolError)?;
    if !(11..=MAX_CONNECTION_REQUEST).contains(&len) {
        return Err(CloseReason::ProtocolError);
    }
    let mut msg = head.to_vec();
    msg.resize(len, 0);
    session.read_exact(&mut msg[4..]).await?;
    let req = parse_connection_request(&msg).map_err(|_| CloseReason::ProtocolError)?;
    let mut extra = vec![("requested_protocols".to_string(), req.requested.map_or("none".into(), protocol_names))];
    if !req.cookie.is_empty() {
        extra.push(("cookie".into(), req.cookie.clone()));
    }
    session.emit(Detail::Fingerprint { kind: "rdp-connection-request".into(), value: req.user.clone(), extra });
    let persona = session.persona();
    if matches!(persona, Persona::LinuxServer | Persona::IotRouter) {
        return Ok(());
    }
    let requested = req.requested.unwrap_or(0);
    if requested & PROTOCOL_HYBRID == 0 {
        session.write_all(&connection_confirm(Err(HYBRID_REQUIRED_BY_SERVER))).await?;
        session.flush().await?;
        return Ok(());
    }
    session.write_all(&connection_confirm(Ok(PROTOCOL_HYBRID))).await?;
    session.flush().await?;

    // The ClientHello, read whole so it can be fingerprinted, then handed to rustls.
    let mut rec = [0u8; 5].to_vec();
    session.read_exact(&mut rec).await?;
    let rlen = tls_record_length(&rec).map_err(|_| CloseReason::ProtocolError)?;
    if rlen > MAX_TLS_RECORD {
        return Err(CloseReason::ProtocolError);
    }
    rec.resize(rlen, 0);
    session.read_exact(&mut rec[5..]).await?;
    if let Ok(s) = ja3(&rec) {
        let md5 = hex::encode(<md5::Md5 as md5::Digest>::digest(s.as_bytes()));
        session.emit(Detail::Fingerprint { kind: "ja3".into(), value: md5, extra: vec![("ja3".into(), s)] });
    }
    let smb = SmbPersona::of(persona);
    let host = if svc.banner.is_empty() { smb.default_host.to_string() } else { svc.banner.clone() };
    let config = match tls::server_config(&host, svc.host_key.as_deref()).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "rdp: no TLS certificate");
            return Err(CloseReason::IoError);
        }
    };
    let io = session.take_io().await?;
    let idle = session.limits.idle_timeout;
    let deadline = session.deadline();
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let mut tls = timed_io(idle, deadline, acceptor.accept(Prefixed::new(rec, io))).await?;

    let negotiate = read_ts_request(&mut tls, idle, deadline).await?;
    let client_version = ts_request_version(&negotiate).unwrap_or(2);
    if find_ntlmssp(&negotiate).and_then(ntlmssp_type) != Some(1) {
        return Err(CloseReason::ProtocolError);
    }
    let version = client_version.clamp(2, 6);
    let challenge: [u8; 8] = rand::random();
    let dns_host = host.to_lowercase();
    let target = smb.ntlm_target(&host, &dns_host);
    let ntlm = ntlm_challenge(&challenge, &target, filetime_now());
    timed_io(idle, deadline, tls.write_all(&ts_request(version, Some(&ntlm), None))).await?;
    timed_io(idle, deadline, tls.flush()).await?;

    let authenticate = read_ts_request(&mut tls, idle, deadline).await?;
    let auth = find_ntlmssp(&authenticate)
        .filter(|m| ntlmssp_type(m) == Some(3))
        .and_then(|m| parse_ntlm_authenticate(m).ok())
        .ok_or(CloseReason::ProtocolError)?;
    let secret = auth.secret(&challenge);
    let mut extra = vec![
        ("method".to_string(), "rdp-nla".to_string()),
        ("domain".to_string(), auth.domain.clone()),
        ("workstation".to_string(), auth.workstation.clone()),
        ("credssp_version".to_string(), client_version.to_string()),
    ];
    if !req.user.is_empty() {
        extra.push(("mstshash".into(), req.user.clone()));
    }
    session.emit(Detail::Login { username: auth.user.clone(), secret, success: false, extra });
    if version >= 3 {
        timed_io(idle, deadline, tls.write_all(&ts_request(version, None, Some(STATUS_LOGON_FAILURE)))).await?;
        timed_io(idle, deadline, tls.flush()).await?;
    }
    let _ = timed_io(idle, deadline, tls.shutdown()).await;
    Ok(())
}

/// Runs `fut` under the session's idle timeout and deadline (the session's own reads enforce
/// them, but TLS owns the stream here).
async fn timed_io<T>(
    idle: std::time::Duration,
    deadline: tokio::time::Instant,
    fut: impl std::future::Future<Output = std::io::Result<T>>,
) -> SessionResult<T> {
    let idle_end = tokio::time::Instant::now() + idle;
    let (end, reason) = if idle_end < deadline {
        (idle_end, CloseReason::IdleTimeout)
    } else {
        (deadline, CloseReason::SessionTimeout)
    };
    match tokio::time::timeout_at(end, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(CloseReason::ClientClosed),
        Ok(Err(e)) if e.get_ref().is_some_and(|i| i.is::<crate::session::ByteCapExceeded>()) => {
            Err(CloseReason::ByteCap)
        }
        Ok(Err(_)) => Err(CloseReason::IoError),
        Err(_) => Err(reason),
    }
}

/// Reads one DER TSRequest (at most [`MAX_TS_REQUEST`] bytes).
async fn read_ts_request<S: AsyncRead + AsyncWrite + Unpin>(
    tls: &mut S,
    idle: std::time::Duration,
    deadline: tokio::time::Instant,
) -> SessionResult<Vec<u8>> {
    let mut buf = Vec::with_capacity(512);
    loop {
        match der_total_length(&buf) {
            Err(_) => return Err(CloseReason::ProtocolError),
            Ok(Some(total)) if total > MAX_TS_REQUEST => return Err(CloseReason::ProtocolError),
            Ok(Some(total)) if buf.len() >= total => {
                buf.truncate(total);
                return Ok(buf);
            }
            Ok(Some(total)) => {
                let have = buf.len();
                buf.resize(total, 0);
                timed_io(idle, deadline, tls.read_exact(&mut buf[have..])).await?;
            }
            Ok(None) => {
                let mut b = [0u8; 1];
                timed_io(idle, deadline, tls.read_exact(&mut b)).await?;
                buf.push(b[0]);
            }
        }
    }
}

fn filetime_now() -> u64 {
    let unix =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() / 100).unwrap_or(0)
            as u64;
    unix + 116_444_736_000_000_000
}
