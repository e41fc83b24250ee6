#![no_main]
use drosera_sensor::scan::{bpf, packet, tracker};
use libfuzzer_sys::fuzz_target;

// A captured packet (network header first) as the scan socket hands it over: the parser never
// panics; whatever the BPF program (run by the interpreter) passes or not, a parsed probe is a
// SYN or UDP whose fingerprint is consistent; the tracker counts it exactly.
fuzz_target!(|data: &[u8]| {
    let probe = packet::parse(data);
    for proto in [0x0800u16, 0x86dd] {
        let passed = bpf::run(&bpf::program(), data, bpf::PACKET_HOST, proto);
        assert!(passed <= bpf::SNAPLEN);
    }
    if let Some(p) = probe {
        if p.kind == packet::ProbeKind::Udp {
            assert!(p.fingerprint.is_none());
        }
        let limits = tracker::Limits { window_ms: 1000, max_sources: 1, first_ports: 4, max_port_bitmaps: 1 };
        let mut t = tracker::Tracker::new(limits, 0);
        t.observe(&p, 1);
        t.observe(&p, 2);
        let evs = t.flush(1000, 0);
        assert_eq!(evs.len(), 1);
        assert_eq!(t.totals().packets_in_events, 2);
    }
});
