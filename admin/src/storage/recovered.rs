//! Password recovery's storage (and the one total the metrics read that no other method gives) (`crate::recover`), on both backends: the login events whose
//! challenge-response can be checked, the passwords seen in clear, what each run tried and
//! what it recovered. Kept apart from [`super::Storage`] so the additions read as one block.
//!
//! What is kept per tried event: the candidate-list generation it was tried with (a hash of the
//! list; a new list tries it again) and, once found, the recovered password. SQLite keeps them
//! in `event_crack` (one row per tried event, deleted with its event by a trigger); PostgreSQL on
//! the event's row (`crack_gen`, `recovered`), so they go with the day partitions. Either way
//! they live exactly as long as the event, which bounds them by retention.

use super::{EventRange, StorageError};
use serde::{Deserialize, Serialize};

/// A login event with a challenge-response (`hash_format` field) to try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrackTarget {
    pub id: i64,
    pub time_ms: i64,
    pub protocol: String,
    /// The detail's flat fields as a JSON object (`hash_format`, `hash`, `salt`, ...).
    pub fields: String,
}

/// What one run found for one target (`password`: `None` when no candidate matched).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrackResult {
    pub id: i64,
    pub time_ms: i64,
    pub password: Option<String>,
}

/// Recovered passwords of a range, per (user, password, protocol).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveredRow {
    pub username: String,
    pub password: String,
    pub protocol: String,
    /// Login events with this recovered pair.
    pub count: i64,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
}

/// Password recovery's reads and writes; each method is one statement or one transaction.
pub trait RecoverStorage {
    /// Up to `limit` login events at or after `since_ms` whose secret is a hash (any format;
    /// the caller parses): first those never tried, newest first, then those tried with
    /// another generation than `generation` and not recovered, never those recorded as
    /// `unsupported` (`crate::recover::UNSUPPORTED`).
    fn crack_targets(&self, since_ms: i64, generation: &str, limit: i64) -> Result<Vec<CrackTarget>, StorageError>;

    /// The distinct passwords logins sent in clear at or after `since_ms`, most used first, at
    /// most `limit`.
    fn clear_passwords(&self, since_ms: i64, limit: i64) -> Result<Vec<String>, StorageError>;

    /// Records that these events were tried with `generation`, and the passwords recovered
    /// (a recovered password is never replaced), in one transaction.
    fn record_cracks(&self, generation: &str, results: &[CrackResult], now_ms: i64) -> Result<(), StorageError>;

    /// Recovered pairs of `range`, most logins first, at most `limit`.
    fn recovered_passwords(&self, range: &EventRange, limit: i64) -> Result<Vec<RecoveredRow>, StorageError>;

    /// (samples held, their stored bytes), for the metrics (`crate::metrics`).
    fn sample_totals(&self) -> Result<(i64, i64), StorageError>;
}
