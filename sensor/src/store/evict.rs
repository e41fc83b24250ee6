//! Eviction: oldest first within the lowest priority class first; `System` records last.
//!
//! Runs inside the writer's transaction and returns the exact account of what it removed, which
//! the writer stores as a [`Detail::EvictionSummary`] record in the *same* transaction, so an
//! eviction and its report are durable together or not at all. The account says what the
//! evicted events were (per hour, protocol, port and kind, and the top sources), so the admin
//! can add them back into its totals: the events are gone, their numbers are not.

use super::schema::{table, used_bytes};
use super::StoreError;
use drosera_uplink::event::{Detail, Event, EvictedKind, EvictedSource, Priority, Protocol, MAX_EVICTED_KINDS};
use rusqlite::Connection;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

const HOUR_MS: i64 = 3_600_000;

/// (hour, protocol, port, kind) of evicted events.
type KindKey = (i64, Protocol, u16, &'static str);

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
    /// → (events, what they stood for)
    pub per_kind: BTreeMap<KindKey, (u64, u64)>,
    /// Evicted events and attempts per source address (bounded by the rows one eviction may
    /// remove, which its byte budget caps).
    pub sources: HashMap<IpAddr, (u64, u64)>,
}

impl Gap {
    fn add(&mut self, seq: u64, prio: Priority, ev: Option<&Event>) {
        let time = ev.map(|e| e.time_ms).unwrap_or(0);
        let proto = ev.map(|e| e.protocol).unwrap_or(Protocol::Sensor);
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
        // What the event stood for: a rollup its connections, anything else itself.
        let (kind, port, stands_for, attempts) = match ev {
            Some(e) => {
                let n = match &e.detail {
                    Detail::Rollup { connections, .. } => *connections,
                    _ => 1,
                };
                let attempts = match &e.detail {
                    Detail::Connection { .. } | Detail::Rollup { .. } => n,
                    _ => 0,
                };
                (e.detail.kind(), e.dst_port, n, attempts)
            }
            // A body that does not decode is still an evicted event; say so.
            None => ("undecodable", 0, 1, 0),
        };
        let mut key: KindKey = (time.div_euclid(HOUR_MS) * HOUR_MS, proto, port, kind);
        if self.per_kind.len() >= MAX_EVICTED_KINDS && !self.per_kind.contains_key(&key) {
            // Bounded: past the cap, count it with an entry of the same protocol and kind (the
            // same port if there is one): the numbers stay exact, only hour or port is coarser.
            // Protocols times kinds is small, so a new pair still gets its own entry.
            let same = |k: &&KindKey| k.1 == proto && k.3 == kind;
            if let Some(k) = self.per_kind.keys().filter(same).find(|k| k.2 == port).or(self.per_kind.keys().find(same))
            {
                key = *k;
            }
        }
        let e = self.per_kind.entry(key).or_default();
        e.0 += 1;
        e.1 += stands_for;
        if let Some(ev) = ev.filter(|e| e.protocol != Protocol::Sensor) {
            let s = self.sources.entry(ev.src_ip).or_default();
            s.0 += 1;
            s.1 += attempts;
        }
    }

    /// The gap as an event, stamped now (seq and sensor are filled in by the store), listing
    /// at most `top_sources` addresses.
    pub fn to_event(&self, top_sources: usize) -> Event {
        let mut top: Vec<EvictedSource> = self
            .sources
            .iter()
            .map(|(ip, (events, attempts))| EvictedSource { ip: *ip, events: *events, attempts: *attempts })
            .collect();
        top.sort_by(|a, b| b.events.cmp(&a.events).then(b.attempts.cmp(&a.attempts)).then(a.ip.cmp(&b.ip)));
        top.truncate(top_sources);
        Event::internal(Detail::EvictionSummary {
            count: self.count,
            first_seq: self.first_seq,
            last_seq: self.last_seq,
            first_time_ms: self.first_time_ms,
            last_time_ms: self.last_time_ms,
            per_priority: self.per_priority.iter().map(|(p, n)| (*p, *n)).collect(),
            per_kind: self
                .per_kind
                .iter()
                .map(|((hour_ms, protocol, dst_port, kind), (events, count))| EvictedKind {
                    hour_ms: *hour_ms,
                    protocol: *protocol,
                    dst_port: *dst_port,
                    kind: (*kind).to_string(),
                    events: *events,
                    count: *count,
                })
                .collect(),
            top_sources: top,
            sources: self.sources.len() as u64,
        })
    }
}

/// Deletes rows until the pages in use are at most `target` bytes, at most about `max_bytes` of
/// row bodies per call (bounding the transaction), given `rows` rows in the store. Returns the
/// gap, or `None` if nothing was evicted.
///
/// Rows with `seq <= claimed` are never touched: the shipper has read them (they may be at the
/// admin already) and only an acknowledgement frees them. Counting them here as well counted
/// them twice (issue 18). `claimed` must be read in the same write transaction as the deletion
/// (see [`super::reader::read_batch`]).
pub fn evict(
    conn: &Connection,
    target: u64,
    max_bytes: u64,
    rows: u64,
    claimed: u64,
) -> Result<Option<Gap>, StoreError> {
    let claimed = claimed.min(i64::MAX as u64) as i64;
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
            // Reached a gap record: it is never evicted (its counts would be lost with it); it
            // leaves only when shipped and acknowledged. Nothing after it is evicted either.
            let mut at_gap = false;
            {
                let mut st =
                    conn.prepare_cached(&format!("SELECT seq, body FROM {t} WHERE seq > ?2 ORDER BY seq LIMIT ?1"))?;
                let mut rs = st.query([want as i64, claimed])?;
                while let Some(r) = rs.next()? {
                    let seq = r.get::<_, i64>(0)?.max(0) as u64;
                    let body = r.get_ref(1)?.as_blob().unwrap_or(&[]);
                    let ev = postcard::from_bytes::<Event>(body).ok();
                    if ev.as_ref().is_some_and(is_gap_record) {
                        at_gap = true;
                        break;
                    }
                    gap.add(seq, prio, ev.as_ref());
                    budget -= body.len() as i64 + 16;
                    last = Some(seq);
                    n += 1;
                    if budget <= 0 {
                        break;
                    }
                }
            }
            let Some(last) = last else { break };
            conn.prepare_cached(&format!("DELETE FROM {t} WHERE seq > ?2 AND seq <= ?1"))?
                .execute([last as i64, claimed])?;
            rows_left = rows_left.saturating_sub(n);
            if at_gap {
                break;
            }
        }
    }
    Ok((gap.count > 0).then_some(gap))
}

/// An eviction's own record (either generation).
fn is_gap_record(ev: &Event) -> bool {
    matches!(ev.detail, Detail::EvictionSummary { .. } | Detail::EvictionGap { .. })
}

#[cfg(test)]
mod tests {
    use super::*;
    use drosera_uplink::event::{CloseReason, Secret, ShedReason};

    fn event(ip: [u8; 4], protocol: Protocol, detail: Detail) -> Event {
        let mut ev = Event::internal(detail);
        ev.protocol = protocol;
        ev.src_ip = IpAddr::from(ip);
        ev.dst_port = 23;
        ev.time_ms = 1_700_000_000_000;
        ev
    }

    #[test]
    fn a_gap_says_what_it_evicted_and_who_sent_most() {
        let conn = || Detail::Connection { first_bytes: vec![], closed_by: CloseReason::ClientClosed };
        let mut g = Gap::default();
        let mut seq = 0;
        let mut add = |g: &mut Gap, ev: Option<Event>| {
            seq += 1;
            g.add(seq, Priority::Noise, ev.as_ref());
        };
        for _ in 0..3 {
            add(&mut g, Some(event([203, 0, 113, 1], Protocol::Telnet, conn())));
        }
        add(&mut g, Some(event([203, 0, 113, 2], Protocol::Telnet, conn())));
        let login = Detail::Login { username: "u".into(), secret: Secret::None, success: false, extra: vec![] };
        add(&mut g, Some(event([203, 0, 113, 2], Protocol::Telnet, login)));
        let rollup = Detail::Rollup { minute_ms: 0, reason: ShedReason::RateLimited, connections: 50 };
        add(&mut g, Some(event([198, 51, 100, 1], Protocol::Telnet, rollup)));
        add(&mut g, Some(Event::internal(Detail::Command { line: "health".into() })));
        add(&mut g, None);
        let ev = g.to_event(2);
        let Detail::EvictionSummary { count, per_kind, top_sources, sources, .. } = ev.detail else { panic!() };
        assert_eq!(count, 8);
        assert_eq!(per_kind.iter().map(|k| k.events).sum::<u64>(), 8);
        let of = |kind: &str| {
            per_kind.iter().filter(|k| k.kind == kind).fold((0, 0), |(e, c), k| (e + k.events, c + k.count))
        };
        assert_eq!(of("connection"), (4, 4));
        assert_eq!(of("rollup"), (1, 50), "a rollup stands for its connections");
        assert_eq!(of("login"), (1, 1));
        assert_eq!(of("undecodable"), (1, 1));
        assert!(per_kind.iter().all(|k| k.hour_ms == 1_699_999_200_000 || k.kind != "connection"));
        // Three addresses (internal records have none); the two with most events listed.
        assert_eq!(sources, 3);
        assert_eq!(top_sources.len(), 2);
        assert_eq!(
            (top_sources[0].ip, top_sources[0].events, top_sources[0].attempts),
            (IpAddr::from([203, 0, 113, 1]), 3, 3)
        );
        assert_eq!((top_sources[1].events, top_sources[1].attempts), (2, 1));
    }
}
