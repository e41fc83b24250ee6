//! Scan detection (Dionaea's "pcap"): every TCP SYN and UDP datagram sent to the sensor's own
//! addresses, on any port, summed per source into [`Detail::ScanWindow`] events.
//!
//! WHY a packet socket and not the listeners: a scan mostly hits ports nothing listens on,
//! which the kernel answers with a RST that no user-space program sees. An `AF_PACKET` socket
//! sees them all. It needs `CAP_NET_RAW`, but only to be *opened*:
//! [`crate::app::bind_and_drop`] opens it while root (or while the systemd unit's ambient
//! `CAP_NET_RAW` is held), then root is dropped, or, when the unit started the sensor as its
//! user, the capability is given up ([`crate::privileges::drop_net_raw`]); the open socket
//! keeps receiving, and an exploited handler can neither sniff nor forge packets.
//!
//! The pieces, one concept each:
//! * [`bpf`]: the classic BPF program the kernel runs on every packet, so only inbound SYNs
//!   and UDP reach user space (a SYN flood's other packets cost nothing here);
//! * [`packet`]: the pure parser (IPv4, IPv6) and the scanner fingerprints (fuzzed);
//! * [`tracker`]: the bounded per-source, per-window aggregation;
//! * this file: the socket and its receive thread, which reads in `recvmmsg` batches of
//!   `scan.batch` packets into one fixed buffer (`SNAPLEN` bytes each), so the receive path
//!   allocates nothing per packet, and flushes the tracker into the [`EventSink`] once per
//!   window. Packets the kernel dropped because the socket buffer (`scan.rcvbuf_bytes`) was
//!   full are read from `PACKET_STATISTICS` and reported on the window's overflow record.
//!
//! Under a SYN flood the work per packet is one `recvmmsg` slot, a 40-byte parse and a hash
//! lookup; the events are one per source per window, whatever the rate.
#![allow(unsafe_code)]

pub mod bpf;
pub mod packet;
pub mod tracker;

use crate::config::ScanSection;
use crate::sink::EventSink;
use drosera_uplink::now_ms;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

// linux/if_packet.h and asm-generic/socket.h (the same on x86_64 and aarch64); not all are
// exported by the libc crate on every target.
const SO_ATTACH_FILTER: libc::c_int = 26;
const PACKET_STATISTICS: libc::c_int = 6;
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;

#[repr(C)]
#[derive(Default)]
struct TpacketStats {
    tp_packets: libc::c_uint,
    tp_drops: libc::c_uint,
}

#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("config key `scan.enabled`: cannot open the packet socket for scan detection ({step}): {source}. Fix: start the sensor as root or with CAP_NET_RAW (the appliance unit grants it), or set scan.enabled = false")]
    Open { step: &'static str, source: std::io::Error },
    #[error("config key `scan.interface`: no interface named {0:?}. Fix: name an interface of this host (ip link) or leave it \"\" for all")]
    NoInterface(String),
}

/// The open, filtered packet socket, made while privileged (see the module docs).
#[derive(Debug)]
pub struct ScanSocket {
    fd: OwnedFd,
}

fn last_error(step: &'static str) -> ScanError {
    ScanError::Open { step, source: std::io::Error::last_os_error() }
}

fn setsockopt<T>(fd: &OwnedFd, level: libc::c_int, name: libc::c_int, value: &T) -> libc::c_int {
    // SAFETY: `value` points to a live `T` of the given size for the duration of the call.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    }
}

impl ScanSocket {
    /// Opens the packet socket, attaches the kernel filter *before* binding it to an interface
    /// (so no unfiltered packet is ever queued), and binds it to `scan.interface` (all: "").
    pub fn open(cfg: &ScanSection) -> Result<ScanSocket, ScanError> {
        let ifindex = if cfg.interface.is_empty() {
            0
        } else {
            let name = std::ffi::CString::new(cfg.interface.as_str())
                .map_err(|_| ScanError::NoInterface(cfg.interface.clone()))?;
            // SAFETY: `name` is a valid NUL-terminated string.
            match unsafe { libc::if_nametoindex(name.as_ptr()) } {
                0 => return Err(ScanError::NoInterface(cfg.interface.clone())),
                i => i as libc::c_int,
            }
        };
        // Protocol 0: the socket receives nothing until it is bound below.
        // SAFETY: plain socket(2) call; the descriptor is owned right after.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(last_error("socket(AF_PACKET)"));
        }
        // SAFETY: `socket` just returned this descriptor and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut insns: Vec<libc::sock_filter> = bpf::program()
            .into_iter()
            .map(|i| libc::sock_filter { code: i.code, jt: i.jt, jf: i.jf, k: i.k })
            .collect();
        let prog = libc::sock_fprog { len: insns.len() as libc::c_ushort, filter: insns.as_mut_ptr() };
        if setsockopt(&fd, libc::SOL_SOCKET, SO_ATTACH_FILTER, &prog) != 0 {
            return Err(last_error("attach the BPF filter"));
        }
        // Outgoing packets would be dropped by the filter anyway; skipping them saves running it
        // (kernel 4.20+; older kernels refuse the option, which is harmless).
        let _ = setsockopt(&fd, libc::SOL_PACKET, PACKET_IGNORE_OUTGOING, &1 as &libc::c_int);
        let rcvbuf = libc::c_int::try_from(cfg.rcvbuf_bytes).unwrap_or(libc::c_int::MAX);
        if setsockopt(&fd, libc::SOL_SOCKET, libc::SO_RCVBUF, &rcvbuf) != 0 {
            return Err(last_error("set the receive buffer"));
        }
        // The receive thread wakes at least this often to end windows and notice the stop.
        let tv = libc::timeval { tv_sec: 0, tv_usec: 200_000 };
        if setsockopt(&fd, libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tv) != 0 {
            return Err(last_error("set the receive timeout"));
        }
        // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as libc::c_ushort;
        sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        sll.sll_ifindex = ifindex;
        // SAFETY: `sll` is a valid sockaddr_ll of the given length.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(last_error("bind"));
        }
        Ok(ScanSocket { fd })
    }

    /// Packets the kernel dropped (socket buffer full) since the last call.
    fn take_drops(&self) -> u64 {
        let mut st = TpacketStats::default();
        let mut len = std::mem::size_of::<TpacketStats>() as libc::socklen_t;
        // SAFETY: `st` and `len` are valid for writes of the sizes given.
        let rc = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                PACKET_STATISTICS,
                (&mut st as *mut TpacketStats).cast(),
                &mut len,
            )
        };
        if rc == 0 {
            u64::from(st.tp_drops)
        } else {
            0
        }
    }
}

/// What the receive thread has done, shared for the log and tests.
#[derive(Debug, Default)]
pub struct ScanCounters {
    /// Packets read from the socket.
    pub received: AtomicU64,
    /// Of them, packets the parser rejected (the filter let through something that is no probe).
    pub unparsed: AtomicU64,
    /// Packets the kernel dropped (socket buffer full).
    pub kernel_drops: AtomicU64,
    /// Scan window events handed to the sink.
    pub events: AtomicU64,
}

/// Starts the receive thread on `sock`; it ends (flushing the current window, so nothing counted
/// is lost) when `stop` is cancelled.
pub fn spawn(
    sock: ScanSocket,
    cfg: &ScanSection,
    sink: EventSink,
    stop: CancellationToken,
) -> std::io::Result<(std::thread::JoinHandle<()>, Arc<ScanCounters>)> {
    let limits = tracker::Limits {
        window_ms: u32::try_from(cfg.window_s.saturating_mul(1000)).unwrap_or(u32::MAX),
        max_sources: cfg.max_sources,
        first_ports: cfg.first_ports,
        max_port_bitmaps: cfg.max_port_bitmaps,
    };
    let batch = cfg.batch.clamp(1, MAX_BATCH);
    let counters = Arc::new(ScanCounters::default());
    let c = counters.clone();
    let t = std::thread::Builder::new()
        .name("scan".into())
        .spawn(move || receive_loop(&sock, limits, batch, &sink, &stop, &c))?;
    Ok((t, counters))
}

/// Largest `scan.batch`.
pub const MAX_BATCH: usize = 1024;
const SLOT: usize = bpf::SNAPLEN as usize;

fn receive_loop(
    sock: &ScanSocket,
    limits: tracker::Limits,
    batch: usize,
    sink: &EventSink,
    stop: &CancellationToken,
    counters: &ScanCounters,
) {
    let mut tracker = tracker::Tracker::new(limits, now_ms());
    // One fixed buffer for the whole life of the thread: `batch` slots of SNAPLEN bytes.
    let mut buf = vec![0u8; batch * SLOT];
    // SAFETY: iovec and mmsghdr are plain old data; all-zero is valid, pointers are set below.
    let mut iov: Vec<libc::iovec> = vec![unsafe { std::mem::zeroed() }; batch];
    let mut msgs: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; batch];
    tracing::info!(window_ms = limits.window_ms, max_sources = limits.max_sources, batch, "scan detection running");
    loop {
        for (i, (v, m)) in iov.iter_mut().zip(msgs.iter_mut()).enumerate() {
            v.iov_base = buf[i * SLOT..].as_mut_ptr().cast();
            v.iov_len = SLOT;
            m.msg_hdr.msg_iov = v;
            m.msg_hdr.msg_iovlen = 1;
            m.msg_len = 0;
        }
        // SAFETY: `msgs` holds `batch` headers whose iovecs point into `buf`, all alive for the
        // call; MSG_WAITFORONE blocks (up to SO_RCVTIMEO) for the first packet only.
        let n = unsafe {
            libc::recvmmsg(
                sock.fd.as_raw_fd(),
                msgs.as_mut_ptr(),
                batch as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        let now = now_ms();
        if n > 0 {
            let n = n as usize;
            counters.received.fetch_add(n as u64, Ordering::Relaxed);
            for (i, m) in msgs.iter().take(n).enumerate() {
                let len = (m.msg_len as usize).min(SLOT);
                match packet::parse(&buf[i * SLOT..i * SLOT + len]) {
                    Some(p) => tracker.observe(&p, now),
                    None => {
                        counters.unparsed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        } else if n < 0 {
            let e = std::io::Error::last_os_error();
            if !matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EINTR)) {
                tracing::warn!(error = %e, "scan socket read failed");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        let stopping = stop.is_cancelled();
        if now >= tracker.window_end_ms() || stopping {
            let drops = sock.take_drops();
            counters.kernel_drops.fetch_add(drops, Ordering::Relaxed);
            for ev in tracker.flush(now, drops) {
                let packets = match &ev.detail {
                    drosera_uplink::event::Detail::ScanWindow { packets, .. } => *packets,
                    _ => 1,
                };
                sink.emit_weighted(ev, packets);
                counters.events.fetch_add(1, Ordering::Relaxed);
            }
            let t = tracker.totals();
            tracing::debug!(
                packets = t.packets,
                overflow = t.overflow_packets,
                events = t.events,
                drops,
                "scan window flushed"
            );
        }
        if stopping {
            break;
        }
    }
    let t = tracker.totals();
    // Machine-readable (scripts/bench-scan.sh checks the accounting with it), and the log.
    println!(
        "scan totals received={} probes={} unparsed={} in_events={} overflow={} kernel_drops={} events={}",
        counters.received.load(Ordering::Relaxed),
        t.packets,
        counters.unparsed.load(Ordering::Relaxed),
        t.packets_in_events,
        t.overflow_packets,
        counters.kernel_drops.load(Ordering::Relaxed),
        counters.events.load(Ordering::Relaxed),
    );
    tracing::info!(
        probes = t.packets,
        in_events = t.packets_in_events,
        overflow = t.overflow_packets,
        kernel_drops = counters.kernel_drops.load(Ordering::Relaxed),
        "scan detection stopped"
    );
}
