//! The event store: a bounded SQLite ring buffer with group commit.
//!
//! STUB (issue 2 fills it in). The `StoreHandle` methods are the contract the shipper and the
//! `status` command use.

use crate::config::StoreSection;
use drosera_uplink::event::Event;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("store I/O error on {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("stored event {seq} cannot be decoded: {message}")]
    Decode { seq: u64, message: String },
}

/// What `drosera-sensor status --json` prints.
#[derive(Debug, Clone, Default, serde::Serialize, PartialEq)]
pub struct StoreStatus {
    pub backlog_events: u64,
    pub store_bytes: u64,
    pub cap_bytes: u64,
    pub evicted_events: u64,
    pub shed_connections: u64,
    pub last_seq: u64,
    pub acked_seq: u64,
}

/// Cloneable, thread-safe handle for readers (shipper, status, health). Blocking methods: call
/// them from `spawn_blocking` in async code.
#[derive(Clone, Debug)]
pub struct StoreHandle {}

impl StoreHandle {
    /// Events with `seq > after_seq` in sequence order, at most `max_events` and about
    /// `max_bytes` of encoded size (always at least one event if any is pending). Each event has
    /// `seq` and `sensor` filled in.
    pub fn read_batch(&self, _after_seq: u64, _max_events: usize, _max_bytes: usize) -> Result<Vec<Event>, StoreError> {
        Ok(Vec::new())
    }

    /// Durably records that the admin committed everything up to `upto_seq`, freeing those rows.
    pub fn ack(&self, _upto_seq: u64) -> Result<(), StoreError> {
        Ok(())
    }

    /// Highest acknowledged sequence number.
    pub fn acked_seq(&self) -> u64 {
        0
    }

    pub fn status(&self) -> Result<StoreStatus, StoreError> {
        Ok(StoreStatus::default())
    }
}

/// The single writer; consumes the channel and commits in groups.
pub struct StoreWriter {}

/// Opens (creating, checking, recovering) the store in `data_dir`.
pub fn open(_cfg: &StoreSection, _data_dir: &Path, _sensor: &str) -> Result<(StoreHandle, StoreWriter), StoreError> {
    Ok((StoreHandle {}, StoreWriter {}))
}
