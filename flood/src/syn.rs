//! `drosera-flood syn`: a paced TCP SYN sender for the scan-detection benchmark
//! (`scripts/bench-scan.sh`, issue 16: the sensor's CPU at 50,000 SYN/s with exact accounting).
//!
//! WHY not hping3: on the 2-core benchmark machine two hping3 processes reached about 28,000
//! SYN/s (one `usleep` and one `sendto` per packet), and hping3's own "packets transmitted" is
//! not exact (68,117 "transmitted" of 70,000 received in one run), so the benchmark's
//! accounting could not be exact either. This sender writes whole IPv4+TCP packets on a raw
//! socket, one millisecond's worth at a time, and counts every send the kernel accepted.
//!
//! It is built so that it cannot be pointed at the world: it runs only inside a network
//! namespace made with `ip netns add` (what the benchmarks create), and every run is bounded by
//! a packet count AND a wall-clock limit.

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

/// What to send.
#[derive(Debug, Clone)]
pub struct SynPlan {
    pub target: Ipv4Addr,
    /// Source address; `None`: a pseudo-random one per packet (never the target's /24).
    pub source: Option<Ipv4Addr>,
    /// Destination ports rise from here (wrapping within 1..=65535).
    pub first_port: u16,
    pub count: u64,
    pub rate: u64,
    pub max_seconds: u64,
    /// Seed of the pseudo-random sources and source ports (runs are reproducible).
    pub seed: u64,
}

/// What was sent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SynReport {
    /// Packets the kernel accepted.
    pub sent: u64,
    /// Sends the kernel refused (e.g. a full queue); not counted in `sent`.
    pub failed: u64,
    pub seconds: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum SynError {
    #[error(
        "refusing to send raw packets outside a test network namespace: run inside one made with `ip netns add` (ip netns exec NAME drosera-flood syn ...)"
    )]
    NotATestNamespace,
    #[error("cannot tell which network namespace this is: {0}")]
    Namespace(std::io::Error),
    #[error("raw socket (needs root or CAP_NET_RAW): {0}")]
    Socket(std::io::Error),
    #[error("rate and count must be at least 1")]
    Zero,
}

/// True when this process's network namespace is one made with `ip netns add` (bind-mounted
/// under `/run/netns`): the namespaces the benchmarks create, never the machine's own.
fn in_named_namespace() -> Result<bool, SynError> {
    use std::os::unix::fs::MetadataExt;
    let mine = std::fs::metadata("/proc/self/ns/net").map_err(SynError::Namespace)?;
    let Ok(dir) = std::fs::read_dir("/run/netns") else { return Ok(false) };
    Ok(dir
        .flatten()
        .filter_map(|e| std::fs::metadata(e.path()).ok())
        .any(|m| m.dev() == mine.dev() && m.ino() == mine.ino()))
}

/// Sends `plan.count` SYNs at `plan.rate` per second (or fewer if `max_seconds` runs out).
pub fn send(plan: &SynPlan) -> Result<SynReport, SynError> {
    if plan.rate == 0 || plan.count == 0 {
        return Err(SynError::Zero);
    }
    if !in_named_namespace()? {
        return Err(SynError::NotATestNamespace);
    }
    // IPPROTO_RAW implies IP_HDRINCL: we write the IP header; the kernel fills its checksum.
    let sock = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(255))).map_err(SynError::Socket)?;
    let dest = SockAddr::from(SocketAddrV4::new(plan.target, 0));
    let mut rng = plan.seed | 1;
    let mut next = || {
        // xorshift64: cheap, reproducible, good enough for spreading addresses and ports
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let start = Instant::now();
    let deadline = start + Duration::from_secs(plan.max_seconds);
    let (mut sent, mut failed, mut port) = (0u64, 0u64, plan.first_port.max(1));
    let mut pkt = [0u8; 40];
    while sent + failed < plan.count && Instant::now() < deadline {
        // Due by now at `rate` per second since the start.
        let due = ((start.elapsed().as_secs_f64() * plan.rate as f64) as u64 + 1).min(plan.count);
        while sent + failed < due {
            let r = next();
            let src = plan.source.unwrap_or_else(|| random_source(r as u32, plan.target));
            build_syn(&mut pkt, src, plan.target, 1024 + (r >> 32) as u16 % 60000, port, (r >> 16) as u32);
            match sock.send_to(&pkt, &dest) {
                Ok(_) => sent += 1,
                Err(_) => failed += 1,
            }
            port = if port == u16::MAX { 1 } else { port + 1 };
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    Ok(SynReport { sent, failed, seconds: start.elapsed().as_secs_f64() })
}

/// A unicast address outside the target's /24, loopback, multicast and 0/8.
fn random_source(r: u32, target: Ipv4Addr) -> Ipv4Addr {
    let mut a = Ipv4Addr::from(r);
    let o = a.octets();
    if o[0] == 0 || o[0] == 127 || o[0] >= 224 || o[..3] == target.octets()[..3] {
        a = Ipv4Addr::new(198, 18, o[2], o[3]); // the benchmarking range (RFC 2544)
    }
    a
}

/// Writes a 40-byte IPv4 + TCP SYN into `p`, with the TCP checksum.
pub fn build_syn(p: &mut [u8; 40], src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, seq: u32) {
    p.fill(0);
    p[0] = 0x45; // IPv4, 20-byte header
    p[2..4].copy_from_slice(&40u16.to_be_bytes());
    p[8] = 64; // TTL
    p[9] = 6; // TCP
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    let t = &mut p[20..];
    t[0..2].copy_from_slice(&sport.to_be_bytes());
    t[2..4].copy_from_slice(&dport.to_be_bytes());
    t[4..8].copy_from_slice(&seq.to_be_bytes());
    t[12] = 5 << 4; // 20-byte header
    t[13] = 0x02; // SYN
    t[14..16].copy_from_slice(&64240u16.to_be_bytes());
    let sum = tcp_checksum(src, dst, &p[20..40]);
    p[36..38].copy_from_slice(&sum.to_be_bytes());
}

fn tcp_checksum(src: Ipv4Addr, dst: Ipv4Addr, seg: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut add = |b: &[u8]| {
        for c in b.chunks(2) {
            sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
        }
    };
    add(&src.octets());
    add(&dst.octets());
    add(&[0, 6]);
    add(&(seg.len() as u16).to_be_bytes());
    add(seg);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_syn_checksums_to_zero_with_its_pseudo_header() {
        let (s, d) = (Ipv4Addr::new(10, 214, 0, 2), Ipv4Addr::new(10, 214, 0, 1));
        let mut p = [0u8; 40];
        build_syn(&mut p, s, d, 40000, 22, 7);
        // Summing a segment with its checksum in place gives 0 (one's complement).
        assert_eq!(tcp_checksum(s, d, &p[20..40]), 0);
        assert_eq!(p[33], 0x02);
        assert_eq!(u16::from_be_bytes([p[22], p[23]]), 22);
    }

    #[test]
    fn random_sources_avoid_the_targets_network_and_special_ranges() {
        let t = Ipv4Addr::new(10, 214, 0, 1);
        for r in [0u32, 0x7f00_0001, 0xe000_0001, 0x0ad6_0005, 0xffff_ffff] {
            let a = random_source(r, t);
            let o = a.octets();
            assert!(o[0] != 0 && o[0] != 127 && o[0] < 224 && o[..3] != t.octets()[..3], "{a}");
        }
        assert_eq!(random_source(0x0101_0101, t), Ipv4Addr::new(1, 1, 1, 1));
    }

    #[test]
    fn refuses_outside_a_test_namespace() {
        // Tests run in the machine's own namespace on CI and here.
        if !in_named_namespace().unwrap_or(true) {
            let plan = SynPlan {
                target: Ipv4Addr::LOCALHOST,
                source: None,
                first_port: 1,
                count: 1,
                rate: 1,
                max_seconds: 1,
                seed: 1,
            };
            assert!(matches!(send(&plan), Err(SynError::NotATestNamespace)));
        }
    }
}
