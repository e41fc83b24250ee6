//! Listeners: bind every configured port, accept under admission control, run the protocol.
//!
//! STUB (issue 3 fills it in). The signatures below are the contract `app.rs` uses.

use crate::config::Config;
use crate::governor::GovernorHandle;
use crate::sink::EventSink;
use drosera_uplink::event::Protocol;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU32;
use std::sync::Arc;
use tokio::sync::watch;

#[derive(Debug, thiserror::Error)]
pub enum ListenerError {
    #[error("cannot bind {protocol} on {addr}: {source}")]
    Bind { protocol: String, addr: SocketAddr, source: std::io::Error },
}

/// What every listener needs at run time.
#[derive(Clone)]
pub struct ListenerContext {
    pub sink: EventSink,
    pub governor: GovernorHandle,
    pub sensor: Arc<str>,
    /// Becomes `true` when the sensor shuts down.
    pub shutdown: watch::Receiver<bool>,
}

/// Live counters the health sampler reads.
#[derive(Debug, Default)]
pub struct ListenerStats {
    pub active_connections: AtomicU32,
}

/// All bound sockets, before serving (bound first so privileges can be dropped in between).
pub struct Listeners {
    stats: Arc<ListenerStats>,
}

impl Listeners {
    /// Binds every enabled service port and blackhole port from `cfg`.
    pub async fn bind(_cfg: &Config) -> Result<Listeners, ListenerError> {
        Ok(Listeners { stats: Arc::new(ListenerStats::default()) })
    }

    /// The actually bound addresses (port 0 in the config gets an ephemeral port).
    pub fn local_addrs(&self) -> Vec<(Protocol, SocketAddr)> {
        Vec::new()
    }

    pub fn stats(&self) -> Arc<ListenerStats> {
        self.stats.clone()
    }

    /// Serves until `ctx.shutdown` turns true, then stops accepting and lets sessions finish
    /// (bounded by their own caps).
    pub async fn serve(self, mut ctx: ListenerContext) {
        while !*ctx.shutdown.borrow() {
            if ctx.shutdown.changed().await.is_err() {
                break;
            }
        }
    }
}
