//! The classic BPF program attached to the packet socket (`SO_ATTACH_FILTER`), so the kernel
//! hands user space only what scan detection counts, and a SYN flood's other packets (its
//! ACKs, RSTs, the sensor's own outgoing traffic, the uplink's data) cost no copy and no wake-up.
//!
//! WHY classic BPF and not eBPF: attaching a classic program to one's own socket needs no
//! privilege beyond owning the socket (no `CAP_BPF`, no `bpf()` syscall, which the unit's
//! syscall filter forbids), and the kernel converts it to eBPF and JITs it anyway.
//!
//! # The program
//! The socket is `AF_PACKET`/`SOCK_DGRAM`/`ETH_P_ALL`: the packet starts at its network header
//! whatever the link (Ethernet, Wi-Fi, PPP), and the kernel's ancillary loads give the packet
//! type and the protocol (ethertype). A packet passes (truncated to [`SNAPLEN`] bytes) if
//! 1. its packet type is `PACKET_HOST`: addressed to this host's own link address (so never
//!    the sensor's own outgoing packets, broadcasts, multicasts, or other hosts' traffic on a
//!    promiscuous interface), and
//! 2. it is IPv4 (ethertype 0x0800) that is not a later fragment, or IPv6 (0x86dd) whose first
//!    next-header is TCP or UDP (extension headers are not followed), and
//! 3. it is TCP with SYN set and ACK clear, or UDP whose source port is not 53, 67, 123 or 547
//!    (replies to the sensor's own DNS, DHCP, NTP and DHCPv6 queries are not probes; a scanner
//!    that sends from those ports is not counted, a documented blind spot).
//!
//! ```text
//!  0 ld   [pkttype]          jeq #PACKET_HOST  else drop
//!  2 ld   [protocol]         jeq #0x0800 → v4;  jeq #0x86dd → v6;  else drop
//! v4: ldh [6]  jset #0x1fff → drop      ; a later fragment
//!     ldxb 4*([0]&0xf)                  ; X = IPv4 header length
//!     ldb [9]  jeq #6 → tcp;  jeq #17 → udp;  else drop
//! v6: ldb [6]  ldx #40  jeq #6 → tcp;  jeq #17 → udp;  else drop
//! tcp: ldb [x+13]  and #0x12  jeq #0x02 → accept  else drop
//! udp: ldh [x+0]   jeq #53/#67/#123/#547 → drop  else accept
//! accept: ret #SNAPLEN      drop: ret #0
//! ```
//!
//! The unit tests run it through [`run`], a small interpreter of exactly the instructions
//! used, with the kernel's semantics (a load past the end drops the packet).

/// Bytes of each passing packet copied to user space: the largest IPv4 header (60) plus the
/// 24 TCP bytes the fingerprints read, rounded up.
pub const SNAPLEN: u32 = 96;

/// One classic BPF instruction (`struct sock_filter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

// Instruction classes, sizes, modes and operations (linux/bpf_common.h, linux/filter.h).
const LD: u16 = 0x00;
const LDX: u16 = 0x01;
const ALU: u16 = 0x04;
const JMP: u16 = 0x05;
const RET: u16 = 0x06;
const W: u16 = 0x00;
const H: u16 = 0x08;
const B: u16 = 0x10;
const IMM: u16 = 0x00;
const ABS: u16 = 0x20;
const IND: u16 = 0x40;
const MSH: u16 = 0xa0;
const AND: u16 = 0x50;
const JEQ: u16 = 0x10;
const JSET: u16 = 0x40;
const K: u16 = 0x00;
/// Ancillary data: `SKF_AD_OFF` (-0x1000) plus `SKF_AD_PROTOCOL` (0) or `SKF_AD_PKTTYPE` (4).
const AD_PROTOCOL: u32 = 0xffff_f000;
const AD_PKTTYPE: u32 = 0xffff_f004;
/// `PACKET_HOST`: addressed to us.
pub const PACKET_HOST: u32 = 0;

/// Where a conditional jump goes.
#[derive(Clone, Copy)]
enum To {
    Next,
    L(&'static str),
}

enum Step {
    Op(u16, u32),
    Jump(u16, u32, To, To),
    Label(&'static str),
}

/// The filter program (see the module docs).
pub fn program() -> Vec<Insn> {
    use Step::{Jump, Label, Op};
    use To::{Next, L};
    let steps = [
        Op(LD | W | ABS, AD_PKTTYPE),
        Jump(JMP | JEQ | K, PACKET_HOST, Next, L("drop")),
        Op(LD | W | ABS, AD_PROTOCOL),
        Jump(JMP | JEQ | K, 0x0800, L("v4"), Next),
        Jump(JMP | JEQ | K, 0x86dd, L("v6"), L("drop")),
        Label("v4"),
        Op(LD | H | ABS, 6),
        Jump(JMP | JSET | K, 0x1fff, L("drop"), Next),
        Op(LDX | B | MSH, 0),
        Op(LD | B | ABS, 9),
        Jump(JMP | JEQ | K, 6, L("tcp"), Next),
        Jump(JMP | JEQ | K, 17, L("udp"), L("drop")),
        Label("v6"),
        Op(LD | B | ABS, 6),
        Op(LDX | W | IMM, 40),
        Jump(JMP | JEQ | K, 6, L("tcp"), Next),
        Jump(JMP | JEQ | K, 17, L("udp"), L("drop")),
        Label("tcp"),
        Op(LD | B | IND, 13),
        Op(ALU | AND | K, 0x12),
        Jump(JMP | JEQ | K, 0x02, L("accept"), L("drop")),
        Label("udp"),
        Op(LD | H | IND, 0),
        Jump(JMP | JEQ | K, 53, L("drop"), Next),
        Jump(JMP | JEQ | K, 67, L("drop"), Next),
        Jump(JMP | JEQ | K, 123, L("drop"), Next),
        Jump(JMP | JEQ | K, 547, L("drop"), L("accept")),
        Label("accept"),
        Op(RET | K, SNAPLEN),
        Label("drop"),
        Op(RET | K, 0),
    ];
    // Resolve labels to instruction indexes, then to the relative offsets BPF jumps use.
    let mut at = Vec::new();
    let mut n = 0usize;
    for s in &steps {
        match s {
            Label(name) => at.push((*name, n)),
            _ => n += 1,
        }
    }
    let target = |to: To, pc: usize| -> u8 {
        match to {
            To::Next => 0,
            To::L(name) => {
                let dest = at.iter().find(|(l, _)| *l == name).map(|(_, i)| *i).unwrap_or(pc + 1);
                // Every jump goes forward, by less than 256 (the program is 27 instructions).
                u8::try_from(dest.saturating_sub(pc + 1)).unwrap_or(0)
            }
        }
    };
    let mut out = Vec::with_capacity(n);
    for s in &steps {
        match *s {
            Label(_) => {}
            Op(code, k) => out.push(Insn { code, jt: 0, jf: 0, k }),
            Jump(code, k, jt, jf) => {
                let pc = out.len();
                out.push(Insn { code, jt: target(jt, pc), jf: target(jf, pc), k });
            }
        }
    }
    out
}

/// Runs `prog` on `pkt` as the kernel would, with the given packet type and ethertype for the
/// ancillary loads. Returns how many bytes pass (0: dropped). For tests and the benchmark's
/// accounting check; not on the receive path (the kernel runs the real one).
pub fn run(prog: &[Insn], pkt: &[u8], pkttype: u32, protocol: u16) -> u32 {
    let (mut a, mut x, mut pc) = (0u32, 0u32, 0usize);
    let load = |off: u32, size: u16| -> Option<u32> {
        let off = off as usize;
        let b = pkt.get(
            off..off.checked_add(match size {
                W => 4,
                H => 2,
                _ => 1,
            })?,
        )?;
        Some(b.iter().fold(0u32, |v, &byte| (v << 8) | u32::from(byte)))
    };
    while let Some(i) = prog.get(pc) {
        pc += 1;
        let size = i.code & 0x18;
        match i.code & 0x07 {
            LD => {
                a = match i.code & 0xe0 {
                    ABS if i.k == AD_PKTTYPE => pkttype,
                    ABS if i.k == AD_PROTOCOL => u32::from(protocol),
                    ABS => match load(i.k, size) {
                        Some(v) => v,
                        None => return 0,
                    },
                    IND => match load(x.wrapping_add(i.k), size) {
                        Some(v) => v,
                        None => return 0,
                    },
                    _ => return 0,
                }
            }
            LDX => {
                x = match i.code & 0xe0 {
                    IMM => i.k,
                    MSH => match load(i.k, B) {
                        Some(v) => (v & 0xf) * 4,
                        None => return 0,
                    },
                    _ => return 0,
                }
            }
            ALU if i.code & 0xf0 == AND => a &= i.k,
            JMP => {
                let taken = match i.code & 0xf0 {
                    JEQ => a == i.k,
                    JSET => a & i.k != 0,
                    _ => return 0,
                };
                pc += usize::from(if taken { i.jt } else { i.jf });
            }
            RET => return i.k.min(pkt.len() as u32),
            _ => return 0,
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::packet::build::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const S: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 9);
    const D: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 7);
    const PACKET_OUTGOING: u32 = 4;
    const PACKET_BROADCAST: u32 = 1;

    fn pass(pkt: &[u8], pkttype: u32) -> u32 {
        let proto = if pkt.first().is_some_and(|b| b >> 4 == 6) { 0x86dd } else { 0x0800 };
        run(&program(), pkt, pkttype, proto)
    }

    #[test]
    fn the_program_is_valid_classic_bpf() {
        let p = program();
        assert!(p.len() <= 4096 && !p.is_empty());
        // Every jump stays inside the program, and it ends with a return.
        for (pc, i) in p.iter().enumerate() {
            if i.code & 0x07 == JMP {
                assert!(pc + 1 + usize::from(i.jt.max(i.jf)) < p.len(), "jump out at {pc}");
            }
        }
        assert_eq!(p.last().map(|i| i.code), Some(RET | K));
    }

    #[test]
    fn only_inbound_syns_and_udp_pass() {
        let syn = v4(S, D, 1, 6, &tcp(40000, 22, 5, 0x02, 1024, &[2, 4, 5, 0xb4]));
        assert_eq!(pass(&syn, PACKET_HOST), syn.len() as u32);
        // The sensor's own outgoing SYN, and one for another host or a broadcast: dropped.
        assert_eq!(pass(&syn, PACKET_OUTGOING), 0);
        assert_eq!(pass(&syn, PACKET_BROADCAST), 0);
        for flags in [0x12, 0x10, 0x04, 0x11, 0x18, 0x00] {
            let p = v4(S, D, 1, 6, &tcp(40000, 22, 5, flags, 1024, &[]));
            assert_eq!(pass(&p, PACKET_HOST), 0, "flags {flags:#x}");
        }
        // SYN with extra flags set (ECN, FIN) but no ACK still counts.
        assert!(pass(&v4(S, D, 1, 6, &tcp(1, 2, 3, 0x02 | 0x40 | 0x80, 1, &[])), PACKET_HOST) > 0);
        let u = v4(S, D, 1, 17, &udp(5000, 161, b"public"));
        assert!(pass(&u, PACKET_HOST) > 0);
        for sport in [53, 67, 123, 547] {
            assert_eq!(pass(&v4(S, D, 1, 17, &udp(sport, 40000, b"")), PACKET_HOST), 0, "sport {sport}");
        }
        // ICMP, a later fragment, and a non-IP ethertype: dropped.
        assert_eq!(pass(&v4(S, D, 1, 1, &[8, 0, 0, 0, 0, 0, 0, 0]), PACKET_HOST), 0);
        let mut frag = syn.clone();
        frag[7] = 8;
        assert_eq!(pass(&frag, PACKET_HOST), 0);
        assert_eq!(run(&program(), &syn, PACKET_HOST, 0x0806), 0);
        // IPv4 with options: the TCP flags are found after the longer header.
        let mut opt = vec![0x46, 0, 0, 0, 0, 1, 0x40, 0, 64, 6, 0, 0];
        opt.extend_from_slice(&S.octets());
        opt.extend_from_slice(&D.octets());
        opt.extend_from_slice(&[1, 1, 1, 0]);
        opt.extend_from_slice(&tcp(1, 80, 3, 0x10, 1024, &[]));
        assert_eq!(pass(&opt, PACKET_HOST), 0, "an ACK behind IP options");
        let at = opt.len() - 20 + 13;
        opt[at] = 0x02;
        assert!(pass(&opt, PACKET_HOST) > 0, "a SYN behind IP options");
    }

    #[test]
    fn ipv6_syns_and_udp_pass_and_the_capture_is_truncated() {
        let (s, d): (Ipv6Addr, Ipv6Addr) = ("2001:db8::9".parse().unwrap(), "2001:db8::1".parse().unwrap());
        let syn = v6(s, d, 6, &tcp(1, 443, 3, 0x02, 1024, &[2, 4, 5, 0xb4]));
        assert_eq!(pass(&syn, PACKET_HOST), syn.len() as u32);
        assert_eq!(pass(&v6(s, d, 6, &tcp(1, 443, 3, 0x12, 1024, &[])), PACKET_HOST), 0);
        assert!(pass(&v6(s, d, 17, &udp(1, 1900, b"M-SEARCH")), PACKET_HOST) > 0);
        assert_eq!(pass(&v6(s, d, 17, &udp(547, 546, b"")), PACKET_HOST), 0);
        assert_eq!(pass(&v6(s, d, 58, &[128, 0, 0, 0]), PACKET_HOST), 0, "ICMPv6");
        let big = v4(S, D, 1, 17, &udp(9, 9, &[0; 1400]));
        assert_eq!(pass(&big, PACKET_HOST), SNAPLEN);
        // A truncated header: the load fails, the packet is dropped (never a panic).
        assert_eq!(pass(&syn[..50], PACKET_HOST), 0);
        assert_eq!(pass(&[], PACKET_HOST), 0);
    }
}
