//! Retention: bounds the admin database by age and by size, keeping daily rollups.
//!
//! WHY: raw events are the bulk of the database; the questions asked of old data (who, from
//! where, which protocols, how many) are answered by the daily aggregate rows that
//! [`crate::analytics::refresh`] maintains. So pruning deletes raw events and hourly aggregates
//! (oldest first) and keeps the daily (and weekly) ones, which are themselves kept for
//! `rollup_days`.
//!
//! Pruning only ever deletes events the aggregates already include (`id <= last_event_id`) and
//! never the newest event row, so `events.id` keeps growing and no event is missed by analytics.
//! Payload, exploit and download lists come from raw events and therefore cover the retained
//! period only.

use crate::analytics::{self, AnalyticsError, DAY_MS};
use crate::enrich::Enricher;
use rusqlite::{params, Connection, OptionalExtension};
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

/// Used bytes of the database (pages in use, not the file size: freed pages are reused).
pub fn used_bytes(conn: &Connection) -> rusqlite::Result<u64> {
    let pages: i64 = conn.pragma_query_value(None, "page_count", |r| r.get(0))?;
    let free: i64 = conn.pragma_query_value(None, "freelist_count", |r| r.get(0))?;
    let size: i64 = conn.pragma_query_value(None, "page_size", |r| r.get(0))?;
    Ok(((pages - free).max(0) * size) as u64)
}

const AGG_TABLES: [&str; 4] = ["agg_kind", "agg_port", "agg_src", "agg_cred"];

/// Runs one retention pass at time `now_ms`.
pub fn prune(
    conn: &mut Connection,
    cfg: &RetentionConfig,
    enricher: &Enricher,
    now_ms: i64,
) -> Result<PruneStats, AnalyticsError> {
    analytics::refresh(conn, enricher)?;
    let mut st = PruneStats::default();
    let last: i64 = conn.query_row("SELECT last_event_id FROM analytics_state WHERE id = 1", [], |r| r.get(0))?;
    let max_id: i64 = conn.query_row("SELECT COALESCE(MAX(id), 0) FROM events", [], |r| r.get(0))?;
    let limit_id = last.min(max_id - 1);
    if cfg.max_age_days > 0 {
        let cutoff = now_ms.saturating_sub(i64::from(cfg.max_age_days) * DAY_MS);
        loop {
            let n = conn.execute(
                "DELETE FROM events WHERE id IN
                   (SELECT id FROM events WHERE time_ms < ?1 AND id <= ?2 ORDER BY time_ms LIMIT ?3)",
                params![cutoff, limit_id, CHUNK],
            )?;
            st.events_by_age += n as u64;
            if (n as i64) < CHUNK {
                break;
            }
        }
    }
    if cfg.max_bytes > 0 {
        while used_bytes(conn)? > cfg.max_bytes {
            let n = conn.execute(
                "DELETE FROM events WHERE id IN
                   (SELECT id FROM events WHERE id <= ?1 ORDER BY time_ms LIMIT ?2)",
                params![limit_id, CHUNK],
            )?;
            st.events_by_size += n as u64;
            if n == 0 {
                break;
            }
        }
    }
    // Hour rows are kept as long as the raw events of their day.
    let oldest: Option<i64> = conn.query_row("SELECT MIN(time_ms) FROM events", [], |r| r.get(0)).optional()?.flatten();
    let mut hcut = oldest.map(|t| t.div_euclid(DAY_MS) * DAY_MS).unwrap_or(0);
    if cfg.max_age_days > 0 {
        let age_cut = now_ms.saturating_sub(i64::from(cfg.max_age_days) * DAY_MS).div_euclid(DAY_MS) * DAY_MS;
        hcut = if oldest.is_some() { hcut.min(age_cut) } else { age_cut };
    }
    if hcut > 0 {
        let tx = conn.transaction()?;
        for t in AGG_TABLES {
            st.hourly_rows +=
                tx.execute(&format!("DELETE FROM {t} WHERE res = 0 AND bucket < ?1"), params![hcut])? as u64;
        }
        tx.execute("UPDATE analytics_state SET hourly_from_ms = MAX(hourly_from_ms, ?1) WHERE id = 1", params![hcut])?;
        tx.commit()?;
    }
    if cfg.rollup_days > 0 {
        let dcut = now_ms.saturating_sub(i64::from(cfg.rollup_days) * DAY_MS).div_euclid(DAY_MS) * DAY_MS;
        let tx = conn.transaction()?;
        for t in AGG_TABLES {
            st.daily_rows += tx.execute(
                &format!("DELETE FROM {t} WHERE (res = 1 AND bucket < ?1) OR (res = 2 AND bucket + ?2 <= ?1)"),
                params![dcut, analytics::WEEK_MS],
            )? as u64;
        }
        if st.daily_rows > 0 {
            tx.execute("DELETE FROM ip_info WHERE id NOT IN (SELECT ip_id FROM agg_src)", [])?;
            tx.execute(
                "DELETE FROM strings WHERE id NOT IN (SELECT user_id FROM agg_cred)
                   AND id NOT IN (SELECT pass_id FROM agg_cred)",
                [],
            )?;
        }
        tx.commit()?;
    }
    st.used_bytes_after = used_bytes(conn)?;
    Ok(st)
}
