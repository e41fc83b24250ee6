//! The pure parser of what the kernel filter lets through: an IPv4 or IPv6 packet (network
//! header first; the socket is `SOCK_DGRAM`, so no link header) carrying a TCP SYN or a UDP
//! datagram, reduced to a [`Probe`]: who, which port, and which scanner built it.
//!
//! WHY its own pure function: every byte here is attacker-chosen (addresses, options, lengths),
//! so it is kept apart from the socket loop, never panics, never allocates and is fuzzed
//! (`fuzz/fuzz_targets/scan_packet.rs`). The kernel filter ([`super::bpf`]) already dropped
//! most other traffic, but this parser trusts nothing it checked: a filter bug, a short
//! capture or a truncated header simply yields `None`.
//!
//! # Fingerprints (first match wins, most specific first)
//! * **Mirai** (and its many forks): the TCP sequence number of every SYN is the destination
//!   IPv4 address (`seq = daddr` in its scanner), so a SYN to 192.0.2.7 has seq 0xC0000207.
//! * **ZMap**: the IPv4 identification field is the constant 54321.
//! * **Masscan**: the IPv4 identification is `dst_ip ^ dst_port ^ seq` truncated to 16 bits
//!   (its packet template sets `ip_id = ip_them ^ port_them ^ seqno`, "them" being us). A
//!   random packet matches by chance once in 65,536; it is counted per packet, so the admin
//!   sees a ratio. Masscan's SYN also has window 1024 and MSS 1460 only, like Nmap's: this
//!   check comes first.
//! * **Nmap** SYN scan (`-sS`, raw socket): window 1024, 2048, 3072 or 4096 and exactly one
//!   TCP option, MSS 1460 (`02 04 05 b4`). An ordinary connect() SYN carries SACK-permitted,
//!   timestamps and window scale, and a larger window.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A TCP SYN or UDP datagram addressed to the sensor, as the tracker needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub kind: ProbeKind,
    pub src_port: u16,
    pub dst_port: u16,
    pub fingerprint: Option<Fingerprint>,
}

/// What the packet was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    /// TCP with SYN set and ACK clear (a connection attempt or a SYN scan probe).
    TcpSyn,
    Udp,
}

/// A scanner recognised from its packet (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fingerprint {
    Mirai,
    Zmap,
    Masscan,
    Nmap,
}

impl Fingerprint {
    pub const ALL: [Fingerprint; 4] = [Fingerprint::Mirai, Fingerprint::Zmap, Fingerprint::Masscan, Fingerprint::Nmap];

    /// The stable name recorded in events.
    pub fn as_str(self) -> &'static str {
        match self {
            Fingerprint::Mirai => "mirai",
            Fingerprint::Zmap => "zmap",
            Fingerprint::Masscan => "masscan",
            Fingerprint::Nmap => "nmap",
        }
    }
}

const TCP: u8 = 6;
const UDP: u8 = 17;
/// ZMap's fixed IPv4 identification.
const ZMAP_IP_ID: u16 = 54321;
/// Nmap's raw SYN probe windows.
const NMAP_WINDOWS: [u16; 4] = [1024, 2048, 3072, 4096];
/// Nmap's (and Masscan's) only TCP option: MSS 1460.
const MSS_1460: [u8; 4] = [2, 4, 0x05, 0xb4];
const SYN: u8 = 0x02;
const ACK: u8 = 0x10;

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes([*b.get(at)?, *b.get(at + 1)?, *b.get(at + 2)?, *b.get(at + 3)?]))
}

/// Parses one captured packet (network header first). `None` for anything that is not an
/// unfragmented (or first-fragment) IPv4/IPv6 TCP SYN without ACK or UDP datagram with a
/// complete transport header.
pub fn parse(pkt: &[u8]) -> Option<Probe> {
    match pkt.first()? >> 4 {
        4 => parse_v4(pkt),
        6 => parse_v6(pkt),
        _ => None,
    }
}

fn parse_v4(pkt: &[u8]) -> Option<Probe> {
    let ihl = usize::from(pkt.first()? & 0x0f) * 4;
    if ihl < 20 || pkt.len() < ihl {
        return None;
    }
    let ip_id = be16(pkt, 4)?;
    // A non-first fragment has no transport header at its start.
    if be16(pkt, 6)? & 0x1fff != 0 {
        return None;
    }
    let proto = *pkt.get(9)?;
    let src = Ipv4Addr::from(be32(pkt, 12)?);
    let dst = Ipv4Addr::from(be32(pkt, 16)?);
    let l4 = pkt.get(ihl..)?;
    let mut probe = transport(proto, l4, IpAddr::V4(src), IpAddr::V4(dst))?;
    if probe.kind == ProbeKind::TcpSyn {
        let seq = be32(l4, 4)?;
        let daddr = u32::from(dst);
        probe.fingerprint = if seq == daddr {
            Some(Fingerprint::Mirai)
        } else if ip_id == ZMAP_IP_ID {
            Some(Fingerprint::Zmap)
        } else if ip_id == ((daddr ^ u32::from(probe.dst_port) ^ seq) & 0xffff) as u16 {
            Some(Fingerprint::Masscan)
        } else {
            nmap(l4)
        };
    }
    Some(probe)
}

fn parse_v6(pkt: &[u8]) -> Option<Probe> {
    // Extension headers are not followed (the kernel filter passes only TCP or UDP as the
    // first next-header): scanners do not send them.
    let next = *pkt.get(6)?;
    let src: [u8; 16] = pkt.get(8..24)?.try_into().ok()?;
    let dst: [u8; 16] = pkt.get(24..40)?.try_into().ok()?;
    let l4 = pkt.get(40..)?;
    let mut probe = transport(next, l4, IpAddr::V6(Ipv6Addr::from(src)), IpAddr::V6(Ipv6Addr::from(dst)))?;
    if probe.kind == ProbeKind::TcpSyn {
        probe.fingerprint = nmap(l4);
    }
    Some(probe)
}

/// The TCP SYN or UDP header at the start of `l4`.
fn transport(proto: u8, l4: &[u8], src: IpAddr, dst: IpAddr) -> Option<Probe> {
    let (src_port, dst_port) = (be16(l4, 0)?, be16(l4, 2)?);
    let kind = match proto {
        TCP => {
            let flags = *l4.get(13)?;
            let data_offset = usize::from(l4.get(12)? >> 4) * 4;
            if flags & (SYN | ACK) != SYN || data_offset < 20 {
                return None;
            }
            ProbeKind::TcpSyn
        }
        UDP if l4.len() >= 8 => ProbeKind::Udp,
        _ => return None,
    };
    Some(Probe { src, dst, kind, src_port, dst_port, fingerprint: None })
}

/// Nmap's SYN probe: a scan window and MSS 1460 as the only option (data offset 6 words).
fn nmap(tcp: &[u8]) -> Option<Fingerprint> {
    let window = be16(tcp, 14)?;
    let offset = usize::from(tcp.get(12)? >> 4) * 4;
    (NMAP_WINDOWS.contains(&window) && offset == 24 && tcp.get(20..24)? == MSS_1460).then_some(Fingerprint::Nmap)
}

/// Test and benchmark helpers: build the packets the parser reads.
pub mod build {
    use std::net::{Ipv4Addr, Ipv6Addr};

    /// A TCP header (no checksum; the parser does not check it).
    pub fn tcp(sport: u16, dport: u16, seq: u32, flags: u8, window: u16, options: &[u8]) -> Vec<u8> {
        let words = 5 + options.len().div_ceil(4);
        let mut h = Vec::with_capacity(words * 4);
        h.extend_from_slice(&sport.to_be_bytes());
        h.extend_from_slice(&dport.to_be_bytes());
        h.extend_from_slice(&seq.to_be_bytes());
        h.extend_from_slice(&0u32.to_be_bytes());
        h.push((words as u8) << 4);
        h.push(flags);
        h.extend_from_slice(&window.to_be_bytes());
        h.extend_from_slice(&[0, 0, 0, 0]);
        h.extend_from_slice(options);
        h.resize(words * 4, 0);
        h
    }

    /// A UDP header and payload.
    pub fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        let mut h = Vec::new();
        h.extend_from_slice(&sport.to_be_bytes());
        h.extend_from_slice(&dport.to_be_bytes());
        h.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        h.extend_from_slice(&[0, 0]);
        h.extend_from_slice(payload);
        h
    }

    /// An IPv4 packet around `l4`.
    pub fn v4(src: Ipv4Addr, dst: Ipv4Addr, id: u16, proto: u8, l4: &[u8]) -> Vec<u8> {
        let mut p = vec![0x45, 0];
        p.extend_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
        p.extend_from_slice(&id.to_be_bytes());
        p.extend_from_slice(&[0x40, 0, 64, proto, 0, 0]);
        p.extend_from_slice(&src.octets());
        p.extend_from_slice(&dst.octets());
        p.extend_from_slice(l4);
        p
    }

    /// An IPv6 packet around `l4`.
    pub fn v6(src: Ipv6Addr, dst: Ipv6Addr, next: u8, l4: &[u8]) -> Vec<u8> {
        let mut p = vec![0x60, 0, 0, 0];
        p.extend_from_slice(&(l4.len() as u16).to_be_bytes());
        p.extend_from_slice(&[next, 64]);
        p.extend_from_slice(&src.octets());
        p.extend_from_slice(&dst.octets());
        p.extend_from_slice(l4);
        p
    }
}

#[cfg(test)]
mod tests {
    use super::build::*;
    use super::*;

    const SRC: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 9);
    const DST: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 7);
    /// What Linux's connect() puts in a SYN: MSS, SACK-permitted, timestamps, NOP, wscale.
    const LINUX_OPTS: [u8; 20] = [2, 4, 5, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7];

    fn syn_v4(id: u16, seq: u32, window: u16, opts: &[u8]) -> Vec<u8> {
        v4(SRC, DST, id, TCP, &tcp(40000, 23, seq, SYN, window, opts))
    }

    #[test]
    fn each_scanner_is_told_apart_by_its_packet() {
        let fp = |pkt: Vec<u8>| parse(&pkt).unwrap().fingerprint;
        assert_eq!(fp(syn_v4(7, u32::from(DST), 14600, &[])), Some(Fingerprint::Mirai));
        assert_eq!(fp(syn_v4(54321, 99, 65535, &[])), Some(Fingerprint::Zmap));
        let seq = 0x1234_5678;
        let masscan_id = ((u32::from(DST) ^ 23 ^ seq) & 0xffff) as u16;
        assert_eq!(fp(syn_v4(masscan_id, seq, 1024, &MSS_1460)), Some(Fingerprint::Masscan));
        for w in NMAP_WINDOWS {
            assert_eq!(fp(syn_v4(1, seq, w, &MSS_1460)), Some(Fingerprint::Nmap), "window {w}");
        }
        // An ordinary client's SYN is none of them.
        assert_eq!(fp(syn_v4(1, seq, 64240, &LINUX_OPTS)), None);
        assert_eq!(fp(syn_v4(1, seq, 1024, &LINUX_OPTS)), None);
        assert_eq!(fp(syn_v4(1, seq, 1000, &MSS_1460)), None);
    }

    #[test]
    fn syn_and_udp_in_both_families_are_probes_and_nothing_else_is() {
        let p = parse(&syn_v4(1, 5, 1024, &MSS_1460)).unwrap();
        assert_eq!(
            (p.src, p.dst, p.kind, p.src_port, p.dst_port),
            (SRC.into(), DST.into(), ProbeKind::TcpSyn, 40000, 23)
        );
        let u = parse(&v4(SRC, DST, 1, UDP, &udp(5000, 161, b"x"))).unwrap();
        assert_eq!((u.kind, u.dst_port, u.fingerprint), (ProbeKind::Udp, 161, None));
        let (s6, d6): (Ipv6Addr, Ipv6Addr) = ("2001:db8::9".parse().unwrap(), "2001:db8::1".parse().unwrap());
        let p6 = parse(&v6(s6, d6, TCP, &tcp(1, 445, 9, SYN, 1024, &MSS_1460))).unwrap();
        assert_eq!((p6.src, p6.dst_port, p6.fingerprint), (s6.into(), 445, Some(Fingerprint::Nmap)));
        assert_eq!(parse(&v6(s6, d6, UDP, &udp(1, 53, b""))).unwrap().kind, ProbeKind::Udp);
        // SYN-ACK, plain ACK, RST, ICMP, a later fragment, truncations: not probes.
        assert_eq!(parse(&v4(SRC, DST, 1, TCP, &tcp(1, 2, 3, SYN | ACK, 1024, &[]))), None);
        assert_eq!(parse(&v4(SRC, DST, 1, TCP, &tcp(1, 2, 3, ACK, 1024, &[]))), None);
        assert_eq!(parse(&v4(SRC, DST, 1, TCP, &tcp(1, 2, 3, 0x04, 1024, &[]))), None);
        assert_eq!(parse(&v4(SRC, DST, 1, 1, &[8, 0, 0, 0, 0, 0, 0, 0])), None);
        let mut frag = syn_v4(1, 5, 1024, &[]);
        frag[7] = 1;
        assert_eq!(parse(&frag), None);
        let whole = syn_v4(1, 5, 1024, &MSS_1460);
        for cut in 0..34 {
            assert_eq!(parse(&whole[..cut]), None, "cut at {cut}");
        }
        assert_eq!(parse(&[]), None);
        assert_eq!(parse(&[0x4f; 64]), None, "IHL 60 with no TCP SYN");
    }

    #[test]
    fn hostile_bytes_never_panic() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(16);
        let base = syn_v4(1, 5, 1024, &MSS_1460);
        for _ in 0..20_000 {
            let mut p = base.clone();
            for _ in 0..rng.gen_range(1..6) {
                let i = rng.gen_range(0..p.len());
                p[i] = rng.gen();
            }
            p.truncate(rng.gen_range(0..=p.len()));
            let _ = parse(&p);
        }
    }
}
