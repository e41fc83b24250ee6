//! Scan detection end to end (issue 16): the real `drosera-sensor run`, started as root in a
//! network namespace this test creates, opens its packet socket, drops root (and every
//! capability), and still sees what real scanners send over a veth pair from a second
//! namespace: `nmap -sS -p 1-200` and a scapy-built Mirai-style SYN burst (sequence number =
//! destination address), plus a few UDP datagrams. The stored events must say exactly that:
//! one `scan_window` per source and transport, the packet counts, the 200 distinct ports, the
//! `nmap` and `mirai` fingerprints.
//!
//! Needs root (namespaces, veth) and nmap, ip and python3-scapy: skipped with a message
//! otherwise, failed when DROSERA_REQUIRE_CLIENTS=1. Traffic stays inside the two namespaces;
//! every sender is bounded in packets and time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use drosera_sensor::config::StoreSection;
use drosera_sensor::store;
use drosera_uplink::event::{Detail, Event, Protocol, Transport};
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_drosera-sensor");
const SENSOR: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 1);
/// nmap's address, and the Mirai-style sender's.
const NMAP: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 2);
const MIRAI: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 3);
const MIRAI_SYNS: u64 = 60;
const UDP_PROBES: u64 = 5;

fn required() -> bool {
    let strict = std::env::var("DROSERA_REQUIRE_CLIENTS").as_deref() == Ok("1");
    if !nix::unistd::geteuid().is_root() {
        assert!(!strict, "scan_netns needs root (network namespaces) but DROSERA_REQUIRE_CLIENTS=1");
        eprintln!("SKIP: scan_netns needs root to create network namespaces");
        return false;
    }
    if !(support::require_client("ip") && support::require_client("nmap")) {
        return false;
    }
    let scapy = Command::new("/usr/bin/python3").args(["-c", "import scapy.all"]).output();
    if !scapy.is_ok_and(|o| o.status.success()) {
        assert!(!strict, "python3-scapy is required (DROSERA_REQUIRE_CLIENTS=1); run scripts/install-deps.sh");
        eprintln!("SKIP: python3-scapy not installed (run scripts/install-deps.sh)");
        return false;
    }
    true
}

fn sh(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Two namespaces joined by a veth pair; deleted (with the pair) when dropped.
struct NetnsPair {
    sensor: String,
    attacker: String,
    /// The attacker side's veth.
    attacker_dev: String,
}

impl NetnsPair {
    /// `tag` tells apart the pairs of tests running at the same time.
    fn new(tag: char) -> NetnsPair {
        let id = std::process::id() % 100_000;
        let (vs, va) = (format!("ds{tag}s{id}"), format!("ds{tag}a{id}"));
        let pair = NetnsPair {
            sensor: format!("drs-scan{tag}-s{id}"),
            attacker: format!("drs-scan{tag}-a{id}"),
            attacker_dev: va.clone(),
        };
        let (s, a) = (pair.sensor.as_str(), pair.attacker.as_str());
        sh(&["ip", "netns", "add", s]);
        sh(&["ip", "netns", "add", a]);
        sh(&["ip", "link", "add", &vs, "netns", s, "type", "veth", "peer", "name", &va, "netns", a]);
        sh(&["ip", "-n", s, "addr", "add", &format!("{SENSOR}/24"), "dev", &vs]);
        sh(&["ip", "-n", a, "addr", "add", &format!("{NMAP}/24"), "dev", &va]);
        sh(&["ip", "-n", a, "addr", "add", &format!("{MIRAI}/24"), "dev", &va]);
        for (ns, dev) in [(s, vs.as_str()), (a, va.as_str())] {
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
            sh(&["ip", "-n", ns, "link", "set", dev, "up"]);
        }
        pair
    }

    fn exec(&self, ns: &str, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns]).args(args);
        c
    }
}

impl Drop for NetnsPair {
    fn drop(&mut self) {
        for ns in [&self.sensor, &self.attacker] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Runs `cmd` to completion within `limit`, killing it past that; panics on failure.
fn run_bounded(mut cmd: Command, limit: Duration, what: &str) -> String {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("{what} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{what} failed: {text}");
    text
}

fn write_config(dir: &Path, user: &str) -> std::path::PathBuf {
    let p = dir.join("sensor.toml");
    // One long window: the sensor's final flush at SIGTERM emits exactly one event per source
    // and transport, so the counts below are exact.
    std::fs::write(
        &p,
        format!(
            "[sensor]\nname = \"scan-test\"\ndata_dir = \"{}\"\nuser = \"{user}\"\nhealth_interval_s = 3600\n\n\
             [store]\ncap_bytes = 4194304\nreserve_bytes = 0\ncommit_interval_ms = 20\n\n\
             [scan]\nenabled = true\nwindow_s = 3600\nfirst_ports = 8\n",
            dir.join("data").display()
        ),
    )
    .unwrap();
    p
}

fn window(ev: &Event) -> (u64, u32, Vec<u16>, Vec<(String, u64)>) {
    match &ev.detail {
        Detail::ScanWindow { packets, distinct_ports, ports, fingerprints, distinct_exact, .. } => {
            assert!(distinct_exact);
            (*packets, *distinct_ports, ports.clone(), fingerprints.clone())
        }
        other => panic!("not a scan window: {other:?}"),
    }
}

/// Started as root: the sensor opens its socket, then drops root and every capability.
#[test]
fn nmap_and_a_mirai_burst_become_scan_events() {
    scan_end_to_end('r', false);
}

/// Started as the appliance unit starts it: an unprivileged user with `CAP_NET_RAW` as an
/// ambient capability (setpriv). The sensor opens its socket, gives the capability up (no root
/// to drop), and still sees the scans.
#[test]
fn with_only_ambient_cap_net_raw_the_capability_is_dropped_and_scans_still_arrive() {
    if required() && !support::require_client("setpriv") {
        return;
    }
    scan_end_to_end('u', true);
}

fn scan_end_to_end(tag: char, ambient: bool) {
    if !required() || nix::unistd::User::from_name("nobody").ok().flatten().is_none() {
        return;
    }
    let net = NetnsPair::new(tag);
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = if ambient {
        // The unit's shape: User=nobody, AmbientCapabilities=CAP_NET_RAW, no root at all.
        use std::os::unix::fs::PermissionsExt;
        let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::create_dir(dir.path().join("data")).unwrap();
        nix::unistd::chown(&dir.path().join("data"), Some(nobody.uid), Some(nobody.gid)).unwrap();
        let cfg_path = write_config(dir.path(), "");
        let mut c = net.exec(&net.sensor, &["setpriv"]);
        c.arg(format!("--reuid={}", nobody.uid)).arg(format!("--regid={}", nobody.gid));
        c.args(["--clear-groups", "--inh-caps=+net_raw", "--ambient-caps=+net_raw", BIN, "run", "--config"]);
        c.arg(cfg_path);
        c
    } else {
        let cfg_path = write_config(dir.path(), "nobody");
        let mut c = net.exec(&net.sensor, &[BIN, "run", "--config"]);
        c.arg(cfg_path);
        c
    };
    let mut sensor = cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let stdout = sensor.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let (mut ready, mut scanning) = (false, false);
    while Instant::now() < deadline && !ready {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) {
            scanning |= line.starts_with("scan detection ");
            ready = line.starts_with("ready ");
        }
    }
    if !ready {
        let _ = sensor.kill();
        panic!("sensor never printed its ready line");
    }
    assert!(scanning, "the sensor did not report scan detection");
    // Every thread holds no capability: the packet socket works without any (as root the
    // bounding set is emptied too; under setpriv it is the unit's business).
    let pid = sensor.id();
    let keys: &[&str] =
        if ambient { &["CapEff:", "CapPrm:", "CapAmb:", "CapInh:"] } else { &["CapEff:", "CapPrm:", "CapBnd:"] };
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let status = std::fs::read_to_string(t.unwrap().path().join("status")).unwrap();
        assert_ne!(status.lines().find_map(|l| l.strip_prefix("Uid:")).unwrap().split_whitespace().next(), Some("0"));
        for key in keys {
            let v = status.lines().find_map(|l| l.strip_prefix(key)).unwrap().trim().to_string();
            assert_eq!(v, "0000000000000000", "{key} {status}");
        }
    }

    // nmap: a raw SYN scan of ports 1-200, each probed once (no retries, no host discovery).
    let mut nmap = net.exec(&net.attacker, &["nmap", "-sS", "-n", "-Pn", "--disable-arp-ping", "--max-retries", "0"]);
    nmap.args(["-p", "1-200", "-S", &NMAP.to_string(), "-e", &net.attacker_dev]);
    nmap.arg(SENSOR.to_string());
    let out = run_bounded(nmap, Duration::from_secs(60), "nmap");
    assert!(out.contains("Nmap done"), "{out}");

    // Mirai-style: SYNs to 23 and 2323 whose sequence number is the destination address, and
    // a few UDP datagrams, from a second address.
    let script = format!(
        "from scapy.all import IP, TCP, UDP, send, conf\n\
         conf.verb = 0\n\
         dst = '{SENSOR}'\n\
         seq = int.from_bytes(bytes(map(int, dst.split('.'))), 'big')\n\
         pkts = [IP(src='{MIRAI}', dst=dst, id=i + 7) / TCP(sport=40000 + i, dport=(23 if i % 2 else 2323), flags='S', seq=seq, window=14600) for i in range({MIRAI_SYNS})]\n\
         pkts += [IP(src='{MIRAI}', dst=dst) / UDP(sport=41000, dport=161) / b'public' for _ in range({UDP_PROBES})]\n\
         send(pkts, inter=0.002)\n"
    );
    let mut py = net.exec(&net.attacker, &["/usr/bin/python3", "-c", &script]);
    py.env("PYTHONDONTWRITEBYTECODE", "1");
    run_bounded(py, Duration::from_secs(60), "scapy sender");

    // Let the last packets arrive, then stop: the final flush writes the window.
    std::thread::sleep(Duration::from_millis(500));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    let t = Instant::now();
    let status = loop {
        if let Some(s) = sensor.try_wait().unwrap() {
            break s;
        }
        if t.elapsed() > Duration::from_secs(15) {
            let _ = sensor.kill();
            panic!("sensor did not stop after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "sensor exited with {status}");

    let cfg = StoreSection { cap_bytes: 4 << 20, reserve_bytes: 0, ..Default::default() };
    let (handle, _writer) = store::open(&cfg, &dir.path().join("data"), "scan-test").unwrap();
    let evs: Vec<Event> =
        handle.read_batch(0, 1000, 4 << 20).unwrap().into_iter().filter(|e| e.protocol == Protocol::Scan).collect();
    let find = |src: Ipv4Addr, transport: Transport| {
        let v: Vec<&Event> = evs.iter().filter(|e| e.src_ip == IpAddr::V4(src) && e.transport == transport).collect();
        assert_eq!(v.len(), 1, "one window for {src} {transport:?}: {evs:#?}");
        v[0].clone()
    };
    // nmap: every probe counted, the 200 ports exactly, all with nmap's fingerprint.
    let (packets, distinct, first, fps) = window(&find(NMAP, Transport::Tcp));
    assert!(packets >= 200, "nmap sent at least one SYN per port: {packets}");
    assert_eq!(distinct, 200);
    assert_eq!(first.len(), 8);
    assert!(first.iter().all(|p| (1..=200).contains(p)), "{first:?}");
    assert_eq!(fps, vec![("nmap".to_string(), packets)], "every nmap probe is recognised");
    // Mirai: exactly the burst, two ports, every packet fingerprinted.
    let mirai = find(MIRAI, Transport::Tcp);
    let (packets, distinct, first, fps) = window(&mirai);
    assert_eq!((packets, distinct), (MIRAI_SYNS, 2));
    assert_eq!(first, vec![2323, 23]);
    assert_eq!(fps, vec![("mirai".to_string(), MIRAI_SYNS)]);
    assert_eq!(mirai.detail.kind(), "scan_window");
    // UDP: its own window.
    let (packets, distinct, first, fps) = window(&find(MIRAI, Transport::Udp));
    assert_eq!((packets, distinct, first, fps), (UDP_PROBES, 1, vec![161], vec![]));
    // Nothing else: no overflow record, no kernel drops, no event for the sensor's own packets.
    assert_eq!(evs.len(), 3, "{evs:#?}");
    assert!(evs.iter().all(|e| e.sensor == "scan-test"));
    drop(net);
}
