//! Bounded in-memory rollup counters: what happens to an event or connection the sensor could
//! not record one by one.
//!
//! When the channel into the store is full, or a listener sheds a connection (caps, rate limit,
//! memory pressure), the observation is *counted* here instead of being dropped: one counter per
//! (source IP, destination port, protocol, minute, reason). The store writer drains the table into
//! [`Detail::Rollup`] events whenever it has room, so every shed connection reaches the admin.
//!
//! The table itself is bounded by `max_keys`. Once full, further keys fold into one overflow
//! counter per reason, protocol and transport with an unspecified source address, so the total count stays exact even
//! when a flood uses millions of source addresses.

use drosera_uplink::event::{Detail, Event, Protocol, ShedReason, Transport};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Key {
    transport: Transport,
    src_ip: IpAddr,
    dst_port: u16,
    protocol: Protocol,
    minute_ms: i64,
    reason: ShedReason,
}

/// Shared, bounded table of shed counters.
#[derive(Debug)]
pub struct RollupTable {
    max_keys: usize,
    inner: Mutex<HashMap<Key, u64>>,
    /// Everything ever counted here (monotonic, for status and health).
    total: AtomicU64,
}

impl RollupTable {
    pub fn new(max_keys: usize) -> Self {
        RollupTable { max_keys: max_keys.max(1), inner: Mutex::new(HashMap::new()), total: AtomicU64::new(0) }
    }

    /// Counts `n` TCP observations that were not recorded individually.
    pub fn add(&self, src_ip: IpAddr, dst_port: u16, protocol: Protocol, time_ms: i64, reason: ShedReason, n: u64) {
        self.add_on(Transport::Tcp, src_ip, dst_port, protocol, time_ms, reason, n);
    }

    /// Counts `n` observations over `transport` (UDP datagrams are counted apart from TCP
    /// connections to the same port) that were not recorded individually.
    #[allow(clippy::too_many_arguments)] // one counter key, spelled out
    pub fn add_on(
        &self,
        transport: Transport,
        src_ip: IpAddr,
        dst_port: u16,
        protocol: Protocol,
        time_ms: i64,
        reason: ShedReason,
        n: u64,
    ) {
        let transport = if transport == Transport::Udp { Transport::Udp } else { Transport::Tcp };
        let minute_ms = time_ms - time_ms.rem_euclid(60_000);
        let mut key = Key { transport, src_ip, dst_port, protocol, minute_ms, reason };
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if !map.contains_key(&key) && map.len() >= self.max_keys {
            // The transport stays: the admin's account keeps TCP connections and UDP datagrams
            // apart, also for what overflowed.
            key = Key {
                transport,
                src_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                dst_port: 0,
                protocol,
                minute_ms: 0,
                reason,
            };
            if !map.contains_key(&key) && map.len() >= self.max_keys + Protocol::ALL.len() * 6 * 2 {
                // Overflow keys are bounded too (protocols × reasons); fold into the first one.
                key.protocol = Protocol::Sensor;
            }
        }
        *map.entry(key).or_insert(0) += n;
        self.total.fetch_add(n, Ordering::Relaxed);
    }

    /// Monotonic total of everything counted since start.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// Number of distinct counters held now.
    pub fn len(&self) -> usize {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes up to `max` counters out of the table as rollup events (the caller stores them).
    /// Counters not taken stay for the next drain.
    pub fn drain(&self, max: usize, sensor: &str, now_ms: i64) -> Vec<Event> {
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let keys: Vec<Key> = map.keys().take(max).copied().collect();
        keys.into_iter()
            .filter_map(|k| map.remove(&k).map(|n| (k, n)))
            .map(|(k, n)| rollup_event(sensor, now_ms, k, n))
            .collect()
    }

    /// Puts counters back (for example when the store could not take them after all).
    pub fn restore(&self, events: Vec<Event>) {
        for ev in events {
            if let Detail::Rollup { minute_ms, reason, connections } = ev.detail {
                let transport = if ev.transport == Transport::Udp { Transport::Udp } else { Transport::Tcp };
                let key = Key {
                    transport,
                    src_ip: ev.src_ip,
                    dst_port: ev.dst_port,
                    protocol: ev.protocol,
                    minute_ms,
                    reason,
                };
                let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
                *map.entry(key).or_insert(0) += connections;
            }
        }
    }
}

/// The sensor's own account of connections it shed: an internal event, except that it names
/// the source, port and protocol the counter is about.
fn rollup_event(sensor: &str, now_ms: i64, k: Key, n: u64) -> Event {
    Event {
        time_ms: if k.minute_ms > 0 { k.minute_ms } else { now_ms },
        sensor: sensor.to_string(),
        transport: if k.protocol == Protocol::Sensor { Transport::Internal } else { k.transport },
        protocol: k.protocol,
        src_ip: k.src_ip,
        dst_port: k.dst_port,
        ..Event::internal(Detail::Rollup { minute_ms: k.minute_ms, reason: k.reason, connections: n })
    }
}

/// Sum of the `connections` of rollup events (helper for accounting tests and status).
pub fn rolled_up(events: &[Event]) -> u64 {
    events
        .iter()
        .map(|e| match e.detail {
            Detail::Rollup { connections, .. } => connections,
            _ => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_stay_exact_past_the_key_cap() {
        let t = RollupTable::new(10);
        for i in 0..10_000u32 {
            let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
            t.add(ip, 445, Protocol::Smb, 120_000, ShedReason::ChannelFull, 1);
        }
        assert!(t.len() <= 10 + Protocol::ALL.len() * 6 + 1);
        let mut sum = 0;
        loop {
            let evs = t.drain(7, "s", 0);
            if evs.is_empty() {
                break;
            }
            sum += rolled_up(&evs);
        }
        assert_eq!(sum, 10_000);
        assert_eq!(t.total(), 10_000);
    }

    #[test]
    fn overflowed_counts_keep_their_transport() {
        let t = RollupTable::new(4);
        for i in 0..1_000u32 {
            let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
            let transport = if i % 4 == 0 { Transport::Udp } else { Transport::Tcp };
            t.add_on(transport, ip, 5060, Protocol::Sip, 120_000, ShedReason::ChannelFull, 1);
        }
        assert!(t.len() <= 4 + Protocol::ALL.len() * 6 * 2 + 2);
        let (mut udp, mut tcp) = (0, 0);
        loop {
            let evs = t.drain(3, "s", 0);
            if evs.is_empty() {
                break;
            }
            for ev in &evs {
                let n = rolled_up(std::slice::from_ref(ev));
                match ev.transport {
                    Transport::Udp => udp += n,
                    _ => tcp += n,
                }
            }
        }
        assert_eq!((udp, tcp), (250, 750));
    }

    #[test]
    fn same_source_same_minute_is_one_counter() {
        let t = RollupTable::new(100);
        let ip: IpAddr = "198.51.100.9".parse().unwrap();
        for s in 0..50 {
            t.add(ip, 1433, Protocol::Mssql, 60_000 + s * 1000, ShedReason::RateLimited, 1);
        }
        assert_eq!(t.len(), 1);
        let evs = t.drain(10, "s", 0);
        assert_eq!(evs.len(), 1);
        assert_eq!(rolled_up(&evs), 50);
        t.restore(evs);
        assert_eq!(rolled_up(&t.drain(10, "s", 0)), 50);
    }
}
