//! The shipper: reads batches from the store and sends them to the admin over mutual TLS.
//!
//! STUB (issue 4 fills it in). The signature below is the contract `app.rs` uses.

use crate::config::UplinkSection;
use crate::store::StoreHandle;
use std::sync::Arc;
use tokio::sync::watch;

/// Ships until `shutdown` turns true. Never gives up on the admin (jittered backoff).
pub async fn run(
    _cfg: UplinkSection,
    _sensor: Arc<str>,
    _store: StoreHandle,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    while !*shutdown.borrow() {
        if shutdown.changed().await.is_err() {
            break;
        }
    }
    Ok(())
}
