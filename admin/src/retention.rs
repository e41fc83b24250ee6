//! Retention: bounds the admin database by age and by size, keeping daily rollups.
//!
//! WHY: raw events are the bulk of the database; the questions asked of old data (who, from
//! where, which protocols, how many) are answered by the daily aggregate rows that
//! [`crate::analytics::refresh()`] maintains. So pruning deletes raw events and hourly aggregates
//! (oldest first) and keeps the daily (and weekly) ones, which are themselves kept for
//! `rollup_days`.
//!
//! Pruning only ever deletes events the aggregates already include (each backend checks against
//! its fold cursor: SQLite by event id, never the newest row so ids keep growing; PostgreSQL
//! drops whole day partitions whose every row is folded), so no event is missed by analytics.
//! Payload, exploit and download lists come from raw events and therefore cover the retained
//! period only.

use crate::analytics::{self, AnalyticsError, DAY_MS};
use crate::enrich::Enricher;
use crate::storage::Storage;
use serde::{Deserialize, Serialize};

/// Raw events deleted per statement (keeps each write transaction short).
const CHUNK: i64 = 50_000;

/// `[retention]` config section. 0 disables a limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Raw events (and hourly aggregates) older than this many days are deleted.
    pub max_age_days: u32,
    /// When the database's used pages exceed this many bytes, the oldest raw events go first.
    pub max_bytes: u64,
    /// Daily rollups are kept this many days.
    pub rollup_days: u32,
    /// Seconds between retention runs in `serve`.
    pub interval_s: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig { max_age_days: 90, max_bytes: 8 << 30, rollup_days: 1825, interval_s: 3600 }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PruneStats {
    pub events_by_age: u64,
    pub events_by_size: u64,
    pub hourly_rows: u64,
    pub daily_rows: u64,
    pub used_bytes_after: u64,
}

/// Runs one retention pass at time `now_ms`.
pub fn prune(
    db: &mut dyn Storage,
    cfg: &RetentionConfig,
    enricher: &Enricher,
    now_ms: i64,
) -> Result<PruneStats, AnalyticsError> {
    analytics::refresh(db, enricher)?;
    let mut st = PruneStats::default();
    if cfg.max_age_days > 0 {
        let cutoff = now_ms.saturating_sub(i64::from(cfg.max_age_days) * DAY_MS);
        loop {
            let n = db.delete_events_before(cutoff, CHUNK)?;
            st.events_by_age += n;
            if (n as i64) < CHUNK {
                break;
            }
        }
    }
    if cfg.max_bytes > 0 {
        while db.used_bytes()? > cfg.max_bytes {
            let n = db.delete_oldest_events(CHUNK)?;
            st.events_by_size += n;
            if n == 0 {
                break;
            }
        }
    }
    // Hour rows are kept as long as the raw events of their day.
    let oldest = db.oldest_event_ms()?;
    // Where the raw events now start, for `analytics::relabel` (which can rebuild the label
    // class rows only where every raw event is still there).
    let mut raw_from = 0;
    if st.events_by_age > 0 {
        raw_from = now_ms.saturating_sub(i64::from(cfg.max_age_days) * DAY_MS);
    }
    if st.events_by_size > 0 {
        raw_from = raw_from.max(oldest.unwrap_or(now_ms));
    }
    if raw_from > 0 {
        db.set_raw_from(raw_from)?;
    }
    let mut hcut = oldest.map(|t| t.div_euclid(DAY_MS) * DAY_MS).unwrap_or(0);
    if cfg.max_age_days > 0 {
        let age_cut = now_ms.saturating_sub(i64::from(cfg.max_age_days) * DAY_MS).div_euclid(DAY_MS) * DAY_MS;
        hcut = if oldest.is_some() { hcut.min(age_cut) } else { age_cut };
    }
    if hcut > 0 {
        st.hourly_rows = db.prune_hourly(hcut)?;
    }
    if cfg.rollup_days > 0 {
        let dcut = now_ms.saturating_sub(i64::from(cfg.rollup_days) * DAY_MS).div_euclid(DAY_MS) * DAY_MS;
        st.daily_rows = db.prune_rollups(dcut)?;
    }
    st.used_bytes_after = db.used_bytes()?;
    Ok(st)
}
