//! Eviction: oldest first within the lowest priority class first; `System` records last.
//!
//! Runs inside the writer's transaction and returns the exact account of what it removed, which
//! the writer stores as a [`Detail::EvictionGap`] record in the *same* transaction, so an
//! eviction and its report are durable together or not at all.

use super::schema::{decode_head, table, used_bytes};
use super::StoreError;
use drosera_uplink::event::{Detail, Event, Priority, Protocol};
use rusqlite::Connection;
use std::collections::BTreeMap;

/// Exact account of one eviction.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Gap {
    pub count: u64,
    pub first_seq: u64,
    pub last_seq: u64,
    pub first_time_ms: i64,
    pub last_time_ms: i64,
    pub per_protocol: BTreeMap<Protocol, u64>,
    pub per_priority: BTreeMap<Priority, u64>,
}

impl Gap {
    fn add(&mut self, seq: u64, prio: Priority, head: Option<(i64, Protocol)>) {
        let (time, proto) = head.unwrap_or((0, Protocol::Sensor));
        if self.count == 0 {
            self.first_seq = seq;
            self.last_seq = seq;
            self.first_time_ms = time;
            self.last_time_ms = time;
        } else {
            self.first_seq = self.first_seq.min(seq);
            self.last_seq = self.last_seq.max(seq);
            self.first_time_ms = self.first_time_ms.min(time);
            self.last_time_ms = self.last_time_ms.max(time);
        }
        self.count += 1;
        *self.per_protocol.entry(proto).or_insert(0) += 1;
        *self.per_priority.entry(prio).or_insert(0) += 1;
    }

    /// The gap as an event, stamped now (seq and sensor are filled in by the store).
    pub fn to_event(&self) -> Event {
        Event::internal(Detail::EvictionGap {
            count: self.count,
            first_seq: self.first_seq,
            last_seq: self.last_seq,
            first_time_ms: self.first_time_ms,
            last_time_ms: self.last_time_ms,
            per_protocol: self.per_protocol.iter().map(|(p, n)| (*p, *n)).collect(),
            per_priority: self.per_priority.iter().map(|(p, n)| (*p, *n)).collect(),
        })
    }
}

/// Deletes rows until the pages in use are at most `target` bytes, at most about `max_bytes` of
/// row bodies per call (bounding the transaction), given `rows` rows in the store. Returns the
/// gap, or `None` if nothing was evicted.
pub fn evict(conn: &Connection, target: u64, max_bytes: u64, rows: u64) -> Result<Option<Gap>, StoreError> {
    let mut gap = Gap::default();
    let mut budget = max_bytes as i64;
    let mut rows_left = rows;
    for prio in Priority::ALL {
        let t = table(prio);
        loop {
            let used = used_bytes(conn)?;
            if used <= target || budget <= 0 {
                return Ok((gap.count > 0).then_some(gap));
            }
            let avg = (used / rows_left.max(1)).max(24);
            let want = ((used - target) / avg + 1).clamp(32, 50_000);
            let mut last: Option<u64> = None;
            let mut n = 0u64;
            {
                let mut st = conn.prepare_cached(&format!("SELECT seq, body FROM {t} ORDER BY seq LIMIT ?1"))?;
                let mut rs = st.query([want as i64])?;
                while let Some(r) = rs.next()? {
                    let seq = r.get::<_, i64>(0)?.max(0) as u64;
                    let body = r.get_ref(1)?.as_blob().unwrap_or(&[]);
                    gap.add(seq, prio, decode_head(body));
                    budget -= body.len() as i64 + 16;
                    last = Some(seq);
                    n += 1;
                    if budget <= 0 {
                        break;
                    }
                }
            }
            let Some(last) = last else { break };
            conn.prepare_cached(&format!("DELETE FROM {t} WHERE seq <= ?1"))?.execute([last as i64])?;
            rows_left = rows_left.saturating_sub(n);
        }
    }
    Ok((gap.count > 0).then_some(gap))
}
