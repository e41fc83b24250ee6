//! The client fingerprint (version string and HASSH) of a connection russh owns.
//!
//! WHY a tee: russh reads the client's KEXINIT itself and does not hand it out, so the stream
//! it reads copies its first [`TEE_CAP`] bytes (the replayed version line, then the KEXINIT)
//! into a shared buffer, and [`Fingerprint::once`] parses them the first time a login arrives
//! or when the connection ends, whichever comes first. Bounded: at most [`TEE_CAP`] bytes.

use super::hello::parse_client_hello;
use crate::session::Emitter;
use drosera_uplink::event::Detail;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes of the client's first input kept for the KEXINIT fingerprint.
const TEE_CAP: usize = 16 * 1024;

/// A stream wrapper that copies the first [`TEE_CAP`] bytes read into a shared buffer.
pub(super) struct Tee<S> {
    pub inner: S,
    pub seen: Arc<Mutex<Vec<u8>>>,
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

/// Emits the connection's `ssh_client` fingerprint once.
pub(super) struct Fingerprint {
    seen: Arc<Mutex<Vec<u8>>>,
    /// The client's version line (known from the version exchange).
    version: String,
    done: AtomicBool,
}

impl Fingerprint {
    pub fn new(seen: Arc<Mutex<Vec<u8>>>, version: String) -> Fingerprint {
        Fingerprint { seen, version, done: AtomicBool::new(false) }
    }

    /// Emits the fingerprint with HASSH if the KEXINIT has arrived (once); with `last`, emits
    /// the version alone when it never did.
    pub fn once(&self, em: &Emitter, last: bool) {
        if self.done.load(Ordering::Relaxed) {
            return;
        }
        let hello = {
            let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            parse_client_hello(&seen)
        };
        let extra = match hello {
            Ok(h) => vec![
                ("hassh".into(), h.hassh()),
                ("hassh_algorithms".into(), h.hassh_algorithms()),
                ("host_key_algorithms".into(), h.host_key.clone()),
            ],
            Err(_) if last => Vec::new(),
            Err(_) => return,
        };
        if !self.done.swap(true, Ordering::Relaxed) {
            em.emit(Detail::Fingerprint { kind: "ssh_client".into(), value: self.version.clone(), extra });
        }
    }
}
