//! The version exchange, answered without russh, and the stream russh gets when the client
//! goes on.
//!
//! WHY: most SSH connections a sensor sees are banner grabs (nmap -sV, Shodan-style scanners):
//! they read our version line and leave, some after sending theirs. Building a russh session
//! (a task, buffers, a KEXINIT) for each of them cost more than everything else the connection
//! does (issue 18). So the sensor sends its version line and reads the client's itself, bounded
//! in bytes ([`MAX_VERSION_LINE`]) and time (the session's idle timeout). A client that leaves
//! there is recorded (its version as a fingerprint) and russh never starts. A client that goes
//! on gets russh over a [`Replay`] stream, which hands russh the client's version line and
//! whatever followed it first, and swallows russh's own version line (already sent). A client
//! that waits for our KEXINIT before sending its own gets russh after [`KEXINIT_WAIT`].

use super::hello::{client_version_line, MAX_VERSION_LINE};
use crate::protocols::prefixed::Prefixed;
use crate::session::{Session, SessionResult};
use drosera_uplink::event::{CloseReason, Detail};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How long the sensor waits after the client's version line for its next bytes before it
/// starts russh anyway (for clients that wait for the server's KEXINIT first).
pub(super) const KEXINIT_WAIT: Duration = Duration::from_millis(1500);

/// How the version exchange ended.
pub(super) enum Exchange {
    /// The client left; `version` is its version line, if it sent one.
    Gone { version: Option<String> },
    /// The client goes on. `prefix` is everything read from it so far (its version line and
    /// maybe the start of its KEXINIT), for russh to read first.
    Continue { version: String, prefix: Vec<u8> },
}

/// Sends `server_line` (without CR LF) and reads the client's version line, then waits (at
/// most [`KEXINIT_WAIT`]) to see whether the client goes on. A client that sends something
/// other than an SSH 2 version line gets sshd's answer and the session ends as a protocol error.
pub(super) async fn exchange(session: &mut Session, server_line: &str) -> SessionResult<Exchange> {
    session.write_all(format!("{server_line}\r\n").as_bytes()).await?;
    let mut got: Vec<u8> = Vec::new();
    let line_len = loop {
        let room = MAX_VERSION_LINE.saturating_sub(got.len()).max(1);
        let chunk = match session.peek_some(room).await {
            Ok(c) => c,
            Err(CloseReason::ClientClosed) if got.is_empty() => return Ok(Exchange::Gone { version: None }),
            Err(e) => return Err(e),
        };
        let n = chunk.len();
        got.extend_from_slice(chunk);
        session.consume(n);
        match client_version_line(&got) {
            Ok(Some(len)) => break len,
            Ok(None) => continue,
            Err(_) => {
                // What sshd answers: an SSH 1 client (`SSH-1.5-`), or a client that does not
                // speak SSH at all.
                let answer: &[u8] = if got.starts_with(b"SSH-") && got.contains(&b'\n') {
                    b"Protocol major versions differ.\r\n"
                } else {
                    b"Invalid SSH identification string.\r\n"
                };
                session.write_all(answer).await?;
                if let Some(nl) = got.iter().position(|&b| b == b'\n') {
                    let line = String::from_utf8_lossy(&got[..nl]).trim_end().to_string();
                    session.emit(Detail::Fingerprint { kind: "ssh_client".into(), value: line, extra: Vec::new() });
                }
                return Err(CloseReason::ProtocolError);
            }
        }
    };
    let line = &got[..line_len];
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let version = String::from_utf8_lossy(line.strip_suffix(b"\r").unwrap_or(line)).into_owned();
    if got.len() > line_len {
        return Ok(Exchange::Continue { version, prefix: got });
    }
    match tokio::time::timeout(KEXINIT_WAIT, session.peek_some(1)).await {
        Ok(Ok(_)) | Err(_) => Ok(Exchange::Continue { version, prefix: got }),
        Ok(Err(CloseReason::ClientClosed | CloseReason::IoError)) => Ok(Exchange::Gone { version: Some(version) }),
        Ok(Err(e)) => Err(e),
    }
}

/// The stream russh owns: reads start with `prefix` (the client's version line, already read by
/// [`exchange`]), and the first `swallow` bytes russh writes (its own version line, already sent)
/// are dropped.
pub(super) struct Replay<S> {
    pub inner: Prefixed<S>,
    pub swallow: usize,
}

impl<S> Replay<S> {
    pub fn new(prefix: Vec<u8>, inner: S, swallow: usize) -> Replay<S> {
        Replay { inner: Prefixed::new(prefix, inner), swallow }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Replay<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Replay<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        if this.swallow > 0 {
            let n = this.swallow.min(data.len());
            this.swallow -= n;
            return Poll::Ready(Ok(n));
        }
        Pin::new(&mut this.inner).poll_write(cx, data)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn replay_reads_the_prefix_first_and_swallows_the_first_write() {
        let (a, mut b) = tokio::io::duplex(1024);
        let mut r = Replay::new(b"SSH-2.0-x\r\n".to_vec(), a, 5);
        b.write_all(b"KEX").await.unwrap();
        let mut got = vec![0u8; 14];
        r.read_exact(&mut got).await.unwrap();
        assert_eq!(got, b"SSH-2.0-x\r\nKEX");
        r.write_all(b"SSH-2").await.unwrap();
        r.write_all(b".0-y\r\n").await.unwrap();
        r.flush().await.unwrap();
        let mut out = vec![0u8; 6];
        b.read_exact(&mut out).await.unwrap();
        assert_eq!(out, b".0-y\r\n", "exactly the swallowed bytes are dropped");
    }
}
