//! Per-source aggregation of probes into one [`Detail::ScanWindow`] event per source, transport
//! and time window, in bounded memory.
//!
//! WHY aggregate: a SYN scan of one host is 1,000 packets in a second; an event each would
//! drown the store (and a flood would evict everything else). One event per source and window
//! keeps what an analyst wants (how many packets, how many and which ports, which scanner)
//! at a cost independent of the packet rate.
//!
//! # Bounds, and what happens past them
//! * At most `max_sources` (source, transport) entries per window. Packets of further sources
//!   go to one overflow entry per transport, emitted with an unspecified source address: the
//!   packet count stays exact, only the attribution is lost (and counted as `overflow_packets`).
//! * Distinct ports are exact: each entry keeps its first [`SMALL_PORTS`] ports in a small
//!   sorted vector, then switches to a 65,536-bit bitmap (8 KiB). At most `max_port_bitmaps`
//!   bitmaps exist at once (the overflow entries own one each); an entry that needs one when
//!   none is left keeps a lower bound and says so (`distinct_exact = false`).
//! * `first_ports` distinct ports are listed per entry, in order of arrival.
//!
//! Windows are aligned to multiples of `window_ms` since the epoch, so two sensors' windows
//! line up. The tracker is pure state: the receive loop feeds it probes and asks it to flush.

use super::packet::{Fingerprint, Probe, ProbeKind};
use drosera_uplink::event::{Detail, Event, Priority, Protocol, Transport};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

/// Ports kept in the small sorted vector before an entry needs a bitmap.
pub const SMALL_PORTS: usize = 64;
const BITMAP_WORDS: usize = 65_536 / 64;

/// The tracker's caps (from `[scan]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub window_ms: u32,
    pub max_sources: usize,
    pub first_ports: usize,
    pub max_port_bitmaps: usize,
}

#[derive(Debug)]
enum Ports {
    Small(Vec<u16>),
    Bitmap(Box<[u64; BITMAP_WORDS]>),
    /// No bitmap was left: the count so far is kept as a lower bound.
    Saturated,
}

#[derive(Debug)]
struct Entry {
    packets: u64,
    distinct: u32,
    ports: Ports,
    first: Vec<u16>,
    fingerprints: [u64; Fingerprint::ALL.len()],
    src_port: u16,
    first_ms: i64,
    last_ms: i64,
}

impl Entry {
    fn new(now_ms: i64, bitmap: bool) -> Entry {
        Entry {
            packets: 0,
            distinct: 0,
            ports: if bitmap { Ports::Bitmap(Box::new([0; BITMAP_WORDS])) } else { Ports::Small(Vec::new()) },
            first: Vec::new(),
            fingerprints: [0; Fingerprint::ALL.len()],
            src_port: 0,
            first_ms: now_ms,
            last_ms: now_ms,
        }
    }

    /// True if `port` is new to this entry (for a saturated entry: not known to be old).
    fn add_port(&mut self, port: u16, bitmaps_free: &mut usize) -> bool {
        match &mut self.ports {
            Ports::Small(v) => match v.binary_search(&port) {
                Ok(_) => false,
                Err(at) if v.len() < SMALL_PORTS => {
                    v.insert(at, port);
                    true
                }
                Err(_) => {
                    if *bitmaps_free > 0 {
                        *bitmaps_free -= 1;
                        let mut bits = Box::new([0u64; BITMAP_WORDS]);
                        for &p in v.iter().chain(std::iter::once(&port)) {
                            bits[usize::from(p) / 64] |= 1 << (p % 64);
                        }
                        self.ports = Ports::Bitmap(bits);
                    } else {
                        self.ports = Ports::Saturated;
                    }
                    true
                }
            },
            Ports::Bitmap(bits) => {
                let (w, b) = (usize::from(port) / 64, 1u64 << (port % 64));
                let new = bits[w] & b == 0;
                bits[w] |= b;
                new
            }
            // Unknown whether it is new: the count stays a lower bound of the known ones.
            Ports::Saturated => false,
        }
    }

    fn observe(&mut self, p: &Probe, now_ms: i64, first_ports: usize, bitmaps_free: &mut usize) {
        self.packets += 1;
        self.last_ms = now_ms;
        if self.packets == 1 {
            self.src_port = p.src_port;
        }
        if self.add_port(p.dst_port, bitmaps_free) {
            self.distinct += 1;
            if self.first.len() < first_ports {
                self.first.push(p.dst_port);
            }
        }
        if let Some(f) = p.fingerprint {
            self.fingerprints[f as usize] += 1;
        }
    }
}

/// Monotonic totals, for the benchmark's accounting check and the log.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    /// Probes fed to the tracker.
    pub packets: u64,
    /// Of them, probes of sources past `max_sources`, counted in overflow records.
    pub overflow_packets: u64,
    /// Events produced by flushes.
    pub events: u64,
    /// Sum of `packets` over those events (equals `packets` after a flush).
    pub packets_in_events: u64,
}

/// Per-window state (see the module docs).
#[derive(Debug)]
pub struct Tracker {
    limits: Limits,
    window_start_ms: i64,
    entries: HashMap<(IpAddr, ProbeKind), Entry>,
    overflow: [Option<Entry>; 2],
    bitmaps_free: usize,
    totals: Totals,
}

fn kind_index(k: ProbeKind) -> usize {
    match k {
        ProbeKind::TcpSyn => 0,
        ProbeKind::Udp => 1,
    }
}

impl Tracker {
    pub fn new(limits: Limits, now_ms: i64) -> Tracker {
        let limits = Limits { window_ms: limits.window_ms.max(1), max_sources: limits.max_sources.max(1), ..limits };
        Tracker {
            limits,
            window_start_ms: Self::align(now_ms, limits.window_ms),
            entries: HashMap::new(),
            overflow: [None, None],
            bitmaps_free: limits.max_port_bitmaps,
            totals: Totals::default(),
        }
    }

    fn align(now_ms: i64, window_ms: u32) -> i64 {
        now_ms - now_ms.rem_euclid(i64::from(window_ms.max(1)))
    }

    /// When the current window ends (flush at or after it).
    pub fn window_end_ms(&self) -> i64 {
        self.window_start_ms + i64::from(self.limits.window_ms)
    }

    pub fn totals(&self) -> Totals {
        self.totals
    }

    /// Sources tracked in the current window.
    pub fn sources(&self) -> usize {
        self.entries.len()
    }

    /// Counts one probe into the current window.
    pub fn observe(&mut self, p: &Probe, now_ms: i64) {
        self.totals.packets += 1;
        let key = (p.src, p.kind);
        let Limits { first_ports, max_sources, .. } = self.limits;
        if let Some(e) = self.entries.get_mut(&key) {
            e.observe(p, now_ms, first_ports, &mut self.bitmaps_free);
        } else if self.entries.len() < max_sources {
            let e = self.entries.entry(key).or_insert_with(|| Entry::new(now_ms, false));
            e.observe(p, now_ms, first_ports, &mut self.bitmaps_free);
        } else {
            self.totals.overflow_packets += 1;
            let e = self.overflow[kind_index(p.kind)].get_or_insert_with(|| Entry::new(now_ms, true));
            // The overflow entries' bitmaps are their own (allocated with them), not the pool's.
            let mut none = 0;
            e.observe(p, now_ms, first_ports, &mut none);
        }
    }

    /// Ends the current window: one event per tracked (source, transport), plus the overflow
    /// records (unspecified source) when sources were past the cap or `kernel_drops` is not 0,
    /// and starts the window containing `now_ms`.
    pub fn flush(&mut self, now_ms: i64, kernel_drops: u64) -> Vec<Event> {
        let (start, window_ms) = (self.window_start_ms, self.limits.window_ms);
        let mut out = Vec::with_capacity(self.entries.len() + 2);
        for ((src, kind), e) in self.entries.drain() {
            out.push(event(src, kind, e, start, window_ms, 0));
        }
        let mut drops = kernel_drops;
        for (i, kind) in [ProbeKind::TcpSyn, ProbeKind::Udp].into_iter().enumerate() {
            let e = self.overflow[i].take();
            let e = match e {
                Some(e) => e,
                // Kernel drops are reported even in a window without overflow packets.
                None if drops > 0 && kind == ProbeKind::TcpSyn => Entry::new(now_ms, false),
                None => continue,
            };
            out.push(event(IpAddr::V4(Ipv4Addr::UNSPECIFIED), kind, e, start, window_ms, drops));
            drops = 0;
        }
        self.bitmaps_free = self.limits.max_port_bitmaps;
        self.window_start_ms = Self::align(now_ms, window_ms);
        self.totals.events += out.len() as u64;
        self.totals.packets_in_events += out
            .iter()
            .map(|ev| match &ev.detail {
                Detail::ScanWindow { packets, .. } => *packets,
                _ => 0,
            })
            .sum::<u64>();
        out
    }
}

fn event(src: IpAddr, kind: ProbeKind, e: Entry, start: i64, window_ms: u32, kernel_drops: u64) -> Event {
    let fingerprints = Fingerprint::ALL
        .iter()
        .zip(e.fingerprints)
        .filter(|(_, n)| *n > 0)
        .map(|(f, n)| (f.as_str().to_string(), n))
        .collect();
    let distinct_exact = !matches!(e.ports, Ports::Saturated);
    Event {
        seq: 0,
        time_ms: e.last_ms,
        sensor: String::new(),
        transport: match kind {
            ProbeKind::TcpSyn => Transport::Tcp,
            ProbeKind::Udp => Transport::Udp,
        },
        protocol: Protocol::Scan,
        src_ip: src,
        src_port: e.src_port,
        dst_port: e.first.first().copied().unwrap_or(0),
        session_id: 0,
        duration_ms: u32::try_from(e.last_ms.saturating_sub(e.first_ms)).unwrap_or(u32::MAX),
        bytes_in: 0,
        bytes_out: 0,
        priority: Priority::Noise,
        detail: Detail::ScanWindow {
            window_start_ms: start,
            window_ms,
            packets: e.packets,
            distinct_ports: e.distinct,
            distinct_exact,
            ports: e.first,
            fingerprints,
            kernel_drops,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits { window_ms: 60_000, max_sources: 3, first_ports: 5, max_port_bitmaps: 1 };

    fn probe(src: [u8; 4], port: u16, kind: ProbeKind, fp: Option<Fingerprint>) -> Probe {
        Probe {
            src: IpAddr::V4(src.into()),
            dst: IpAddr::V4([192, 0, 2, 1].into()),
            kind,
            src_port: 40000,
            dst_port: port,
            fingerprint: fp,
        }
    }

    /// packets, distinct ports, exact, first ports, fingerprints, kernel drops
    type Window = (u64, u32, bool, Vec<u16>, Vec<(String, u64)>, u64);

    fn window(ev: &Event) -> Window {
        let Detail::ScanWindow { packets, distinct_ports, distinct_exact, ports, fingerprints, kernel_drops, .. } =
            ev.detail.clone()
        else {
            panic!("{ev:?}")
        };
        (packets, distinct_ports, distinct_exact, ports, fingerprints, kernel_drops)
    }

    #[test]
    fn one_event_per_source_and_transport_per_window_with_exact_counts() {
        let t0 = 1_700_000_000_000 - 1_700_000_000_000 % 60_000;
        let mut t = Tracker::new(LIMITS, t0 + 5);
        for port in (1..=200).chain(1..=200) {
            t.observe(&probe([198, 51, 100, 1], port, ProbeKind::TcpSyn, Some(Fingerprint::Nmap)), t0 + 10);
        }
        t.observe(&probe([198, 51, 100, 1], 161, ProbeKind::Udp, None), t0 + 20);
        t.observe(&probe([198, 51, 100, 2], 23, ProbeKind::TcpSyn, Some(Fingerprint::Mirai)), t0 + 30);
        assert_eq!(t.window_end_ms(), t0 + 60_000);
        let mut evs = t.flush(t0 + 60_000, 0);
        evs.sort_by_key(|e| (e.src_ip, e.transport));
        assert_eq!(evs.len(), 3);
        assert_eq!(
            window(&evs[0]),
            (400, 200, true, vec![1, 2, 3, 4, 5], vec![("nmap".to_string(), 400)], 0),
            "the bitmap counts 200 distinct ports exactly"
        );
        assert_eq!((evs[0].transport, evs[0].protocol, evs[0].dst_port), (Transport::Tcp, Protocol::Scan, 1));
        assert_eq!((evs[1].transport, window(&evs[1]).0), (Transport::Udp, 1));
        assert_eq!(window(&evs[2]).4, vec![("mirai".to_string(), 1)]);
        let Detail::ScanWindow { window_start_ms, window_ms, .. } = evs[0].detail else { panic!() };
        assert_eq!((window_start_ms, window_ms), (t0, 60_000));
        assert_eq!(t.totals(), Totals { packets: 402, overflow_packets: 0, events: 3, packets_in_events: 402 });
        // The next window starts empty.
        assert!(t.flush(t0 + 120_000, 0).is_empty());
    }

    #[test]
    fn past_the_source_cap_packets_go_to_the_overflow_record_exactly() {
        let mut t = Tracker::new(LIMITS, 0);
        for i in 0..100u8 {
            for port in [22, 23, 80] {
                t.observe(&probe([203, 0, 113, i], port, ProbeKind::TcpSyn, None), 1);
            }
        }
        assert_eq!(t.sources(), 3);
        let evs = t.flush(60_000, 7);
        assert_eq!(evs.len(), 4);
        let over: Vec<_> = evs.iter().filter(|e| e.src_ip.is_unspecified()).collect();
        assert_eq!(over.len(), 1);
        assert_eq!(window(over[0]), (97 * 3, 3, true, vec![22, 23, 80], vec![], 7));
        let total: u64 = evs.iter().map(|e| window(e).0).sum();
        assert_eq!(total, 300);
        assert_eq!(t.totals().overflow_packets, 291);
        assert_eq!(t.totals().packets_in_events, t.totals().packets);
        // Kernel drops alone still produce a record.
        let evs = t.flush(120_000, 3);
        assert_eq!(evs.len(), 1);
        assert_eq!(window(&evs[0]).5, 3);
    }

    #[test]
    fn distinct_ports_stay_exact_until_the_bitmaps_run_out() {
        let mut t = Tracker::new(LIMITS, 0);
        // The first source gets the only bitmap; the second saturates with a lower bound.
        for port in 0..1000u16 {
            t.observe(&probe([10, 0, 0, 1], port, ProbeKind::TcpSyn, None), 1);
            t.observe(&probe([10, 0, 0, 2], port, ProbeKind::TcpSyn, None), 1);
            t.observe(&probe([10, 0, 0, 2], port, ProbeKind::TcpSyn, None), 1);
        }
        let mut evs = t.flush(60_000, 0);
        evs.sort_by_key(|e| e.src_ip);
        let (a, b) = (window(&evs[0]), window(&evs[1]));
        assert_eq!((a.0, a.1, a.2), (1000, 1000, true));
        assert_eq!((b.0, b.1, b.2), (2000, SMALL_PORTS as u32 + 1, false));
        assert_eq!(b.3, vec![0, 1, 2, 3, 4]);
        // The bitmap returns to the pool with the window.
        for port in 0..100u16 {
            t.observe(&probe([10, 0, 0, 2], port, ProbeKind::TcpSyn, None), 60_001);
        }
        let evs = t.flush(120_000, 0);
        assert_eq!(window(&evs[0]).1, 100);
        assert!(window(&evs[0]).2);
    }
}
