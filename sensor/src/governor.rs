//! The pressure governor: samples memory and tells the listeners how much to accept.
//!
//! STUB (issue 2 fills it in): the handle's API is the contract the listeners use.

use tokio::sync::watch;

/// Memory pressure as seen by the listeners.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Pressure {
    /// Accept up to the configured caps.
    Normal,
    /// Above the soft limit: accept half the usual concurrency, keep no payloads.
    Soft,
    /// Above the hard limit: accept nothing (shed and count) until below the soft limit.
    Hard,
}

impl Pressure {
    pub fn as_str(self) -> &'static str {
        match self {
            Pressure::Normal => "normal",
            Pressure::Soft => "soft",
            Pressure::Hard => "hard",
        }
    }
}

/// Cheap, cloneable view of the governor's current state.
#[derive(Clone, Debug)]
pub struct GovernorHandle {
    rx: watch::Receiver<Pressure>,
}

impl GovernorHandle {
    pub fn new(rx: watch::Receiver<Pressure>) -> Self {
        GovernorHandle { rx }
    }

    /// A handle stuck at `p` (tests, tools).
    pub fn fixed(p: Pressure) -> Self {
        let (tx, rx) = watch::channel(p);
        std::mem::forget(tx);
        GovernorHandle { rx }
    }

    pub fn pressure(&self) -> Pressure {
        *self.rx.borrow()
    }

    /// Waits until the state changes (for listeners that want to react).
    pub async fn changed(&mut self) -> Pressure {
        let _ = self.rx.changed().await;
        *self.rx.borrow()
    }
}
