//! The UDP services (issue 16) with their ordinary clients: TFTP with tftp-hpa's `tftp`, SIP
//! with `sipsak` and SIPVicious' `svmap`, memcached with `memcstat`/`memccat` and `nc`, UPnP
//! with a Python SSDP client and miniupnpc's `upnpc`; `nmap -sU -sV`; and the UDP framework's
//! rules: a flood from one source is shed and counted exactly, and no reply is ever larger than
//! the request that caused it.
// Integration tests and benches may panic; the workspace denies unwrap/expect elsewhere.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use drosera_sensor::config::TransportChoice;
use drosera_sensor::governor::Pressure;
use drosera_uplink::event::{Detail, Event, Protocol, SampleOutcome, Secret, ShedReason, Transport};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;
use support::{config_for, require_client, run_client, sha256_hex, Harness};

const T: Duration = Duration::from_secs(20);

fn commands(evs: &[Event], protocol: Protocol) -> Vec<String> {
    evs.iter()
        .filter(|e| e.protocol == protocol)
        .filter_map(|e| match &e.detail {
            Detail::Command { line } => Some(line.clone()),
            _ => None,
        })
        .collect()
}

fn output(out: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Sends `req` to `to` from a fresh socket and returns the reply, if one comes within 1 s.
async fn exchange(to: SocketAddr, req: &[u8]) -> Option<Vec<u8>> {
    let s = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    s.send_to(req, to).await.unwrap();
    let mut buf = vec![0u8; 65_536];
    match tokio::time::timeout(Duration::from_secs(1), s.recv_from(&mut buf)).await {
        Ok(Ok((n, _))) => Some(buf[..n].to_vec()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tftp_reads_are_refused_and_uploads_kept_as_samples() {
    if !require_client("tftp") {
        return;
    }
    let h = Harness::start(&["tftp"]).await;
    let port = h.udp_addr(Protocol::Tftp).port().to_string();
    let dir = tempfile::tempdir().unwrap();
    let mut get = tokio::process::Command::new("tftp");
    get.current_dir(dir.path()).args(["127.0.0.1", &port, "-m", "binary", "-c", "get", "bins/mips.bin"]);
    let out = run_client(get, T).await;
    assert!(output(&out).contains("File not found"), "{}", output(&out));
    // Three blocks: two full ones and a short last one.
    let data: Vec<u8> = (0..1300u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(dir.path().join("loot.bin"), &data).unwrap();
    let mut put = tokio::process::Command::new("tftp");
    put.current_dir(dir.path()).args(["127.0.0.1", &port, "-m", "binary", "-c", "put", "loot.bin", "upload.bin"]);
    let out = run_client(put, T).await;
    assert!(out.status.success(), "{}", output(&out));
    let evs = h
        .wait_for(T, |evs| {
            evs.iter().any(|e| matches!(&e.detail, Detail::Sample { source, .. } if source == "tftp-wrq"))
        })
        .await;
    let sample = evs.iter().find(|e| matches!(e.detail, Detail::Sample { .. })).unwrap();
    let Detail::Sample { sha256, size, name, outcome, .. } = &sample.detail else { unreachable!() };
    assert_eq!((*size, name.as_str(), *outcome), (1300, "upload.bin", SampleOutcome::Kept));
    assert_eq!(hex::encode(sha256), sha256_hex(&data));
    assert_eq!(std::fs::read(h.samples_dir().join(hex::encode(sha256))).unwrap(), data);
    assert_eq!(sample.transport, Transport::Udp);
    let cmds = commands(&evs, Protocol::Tftp);
    assert!(cmds.contains(&"RRQ bins/mips.bin octet".to_string()), "{cmds:?}");
    assert!(cmds.contains(&"WRQ upload.bin octet".to_string()), "{cmds:?}");
    // The read and the upload are one exchange each (the upload's blocks belong to its flow),
    // and so is every other datagram (tftp-hpa answers our error with a 4-byte packet): one
    // connection event per exchange.
    let evs = h.wait_connections(2, T).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let evs = if evs.len() > 100 { evs } else { h.events() };
    let conns: Vec<&Event> = evs.iter().filter(|e| matches!(e.detail, Detail::Connection { .. })).collect();
    let (read, in_flows) = (h.stats.datagrams.load(Ordering::Relaxed), h.stats.flow_datagrams.load(Ordering::Relaxed));
    assert_eq!(in_flows, 3, "the three blocks");
    assert_eq!(conns.len() as u64, read - in_flows, "{evs:#?}");
    assert!(conns.iter().all(|e| e.transport == Transport::Udp && e.protocol == Protocol::Tftp));
    let upload = conns.iter().find(|e| e.session_id == sample.session_id).expect("the upload's exchange");
    assert!(upload.bytes_in > 1300 && upload.bytes_out == 4 * 4, "{upload:?}");
}

/// `(fields of the hashcat 11400 line)` cracked with `password`: true when it matches.
fn cracks(line: &str, password: &str) -> bool {
    use md5::{Digest, Md5};
    let md5 = |s: String| hex::encode(Md5::digest(s.as_bytes()));
    let f: Vec<&str> = line.split('*').collect();
    assert_eq!((f.len(), f[0]), (15, "$sip$"), "{line}");
    let uri = if f[8].is_empty() { format!("{}:{}", f[6], f[7]) } else { format!("{}:{}:{}", f[6], f[7], f[8]) };
    let ha1 = md5(format!("{}:{}:{password}", f[3], f[4]));
    let ha2 = md5(format!("{}:{uri}", f[5]));
    let want = if f[12].is_empty() {
        md5(format!("{ha1}:{}:{ha2}", f[9]))
    } else {
        md5(format!("{ha1}:{}:{}:{}:{}:{ha2}", f[9], f[11], f[10], f[12]))
    };
    want == f[14]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sip_options_and_register_with_sipsak_over_udp_and_tcp() {
    if !require_client("sipsak") {
        return;
    }
    let h = Harness::start(&["sip"]).await;
    let udp = h.udp_addr(Protocol::Sip).port();
    let tcp = h.port(Protocol::Sip);
    let mut options = tokio::process::Command::new("sipsak");
    options.args(["-vv", "-s", &format!("sip:alice@127.0.0.1:{udp}")]);
    let out = run_client(options, T).await;
    assert!(output(&out).contains("200 OK"), "{}", output(&out));
    let mut register = tokio::process::Command::new("sipsak");
    register.args([
        "-U",
        "-C",
        "sip:alice@127.0.0.1:5999",
        "-u",
        "alice",
        "-a",
        "s3cret",
        "-s",
        &format!("sip:alice@127.0.0.1:{udp}"),
    ]);
    let out = run_client(register, T).await;
    eprintln!("{}", output(&out));
    let evs = h
        .wait_for(T, |evs| {
            evs.iter().any(|e| matches!(&e.detail, Detail::Login { username, .. } if username == "alice"))
        })
        .await;
    let login = evs.iter().find(|e| matches!(e.detail, Detail::Login { .. })).unwrap();
    assert_eq!(login.transport, Transport::Udp);
    let Detail::Login { secret: Secret::Hash { format, value }, success, .. } = &login.detail else {
        panic!("{login:?}")
    };
    assert_eq!((format.as_str(), *success), ("hashcat-11400", false));
    assert!(cracks(value, "s3cret"), "the recorded digest cracks with the password sipsak used: {value}");
    assert!(!cracks(value, "wrong"));
    let cmds = commands(&evs, Protocol::Sip);
    assert!(cmds.iter().any(|c| c.starts_with("OPTIONS sip:alice@127.0.0.1")), "{cmds:?}");
    assert!(cmds.iter().any(|c| c.starts_with("REGISTER ")), "{cmds:?}");
    assert!(evs.iter().any(|e| matches!(&e.detail, Detail::Fingerprint { kind, value, extra }
        if kind == "sip-client" && value.contains("sipsak") && extra.iter().any(|(k, v)| k == "from" && v.contains("alice")))));
    // The same over TCP.
    let mut over_tcp = tokio::process::Command::new("sipsak");
    over_tcp.args(["-vv", "-E", "tcp", "-s", &format!("sip:bob@127.0.0.1:{tcp}")]);
    let out = run_client(over_tcp, T).await;
    assert!(output(&out).contains("200 OK"), "{}", output(&out));
    h.wait_for(T, |evs| {
        evs.iter().any(|e| {
            e.transport == Transport::Tcp
                && matches!(&e.detail, Detail::Command { line } if line.starts_with("OPTIONS sip:bob@"))
        })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipvicious_svmap_is_recognised() {
    if !require_client("svmap") {
        return;
    }
    let h = Harness::start(&["sip"]).await;
    let udp = h.udp_addr(Protocol::Sip).port();
    let mut svmap = tokio::process::Command::new("svmap");
    svmap.args(["-p", &udp.to_string(), "127.0.0.1"]);
    let out = run_client(svmap, Duration::from_secs(60)).await;
    let text = output(&out);
    eprintln!("{text}");
    assert!(text.contains("Asterisk PBX"), "svmap lists the device as Asterisk: {text}");
    h.wait_for(T, |evs| {
        evs.iter().any(|e| matches!(&e.detail, Detail::Fingerprint { kind, value, .. } if kind == "scanner" && value == "sipvicious"))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memcached_with_memcstat_memccat_nc_and_udp() {
    for c in ["memcstat", "memccat", "nc"] {
        if !require_client(c) {
            return;
        }
    }
    let mut cfg = config_for(&["memcached"]);
    cfg.services[0].transport = Some(TransportChoice::Both);
    let h = Harness::start_with(cfg, Pressure::Normal, 100_000).await;
    let servers = format!("--servers=127.0.0.1:{}", h.port(Protocol::Memcached));
    let mut stat = tokio::process::Command::new("memcstat");
    stat.arg(&servers);
    let out = run_client(stat, T).await;
    assert!(output(&out).contains("1.6.18"), "{}", output(&out));
    let mut cat = tokio::process::Command::new("memccat");
    cat.args([&servers, "session:4242"]);
    let _ = run_client(cat, T).await;
    let mut nc = tokio::process::Command::new("sh");
    nc.arg("-c").arg(format!(
        "printf 'set evil 0 0 11\\r\\nhello world\\r\\nversion\\r\\nquit\\r\\n' | nc -N -w 5 127.0.0.1 {}",
        h.port(Protocol::Memcached)
    ));
    let out = run_client(nc, T).await;
    assert_eq!(String::from_utf8_lossy(&out.stdout), "STORED\r\nVERSION 1.6.18\r\n", "{}", output(&out));
    let evs = h
        .wait_for(T, |evs| {
            evs.iter().any(|e| matches!(&e.detail, Detail::Payload { name, size: 11, .. } if name == "evil"))
        })
        .await;
    let cmds = commands(&evs, Protocol::Memcached);
    assert!(cmds.iter().any(|c| c.trim() == "stats"), "{cmds:?}");
    assert!(cmds.iter().any(|c| c == "get session:4242"), "{cmds:?}");
    // UDP: the 8-byte frame, and a reply cut to the request's size.
    let req = b"\x00\x07\x00\x00\x00\x01\x00\x00stats\r\n";
    let reply = exchange(h.udp_addr(Protocol::Memcached), req).await.expect("a reply");
    assert!(reply.len() <= req.len(), "{reply:?}");
    assert!(reply.starts_with(b"\x00\x07\x00\x00\x00\x01\x00\x00STAT p"), "{reply:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upnp_ssdp_description_and_port_mappings_with_upnpc() {
    if !require_client("upnpc") || !require_client("python3") {
        return;
    }
    let h = Harness::start(&["upnp"]).await;
    let ssdp = h.udp_addr(Protocol::Upnp);
    let http = h.port(Protocol::Upnp);
    // A plain SSDP client, as scripts use: one M-SEARCH, print the reply.
    let script = format!(
        "import socket\n\
         s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         s.settimeout(5)\n\
         req = b'M-SEARCH * HTTP/1.1\\r\\nHOST: 239.255.255.250:1900\\r\\nMAN: \"ssdp:discover\"\\r\\nMX: 1\\r\\nST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\\r\\n\\r\\n'\n\
         s.sendto(req, ('127.0.0.1', {}))\n\
         data, _ = s.recvfrom(65535)\n\
         print(len(req), len(data))\n\
         print(data.decode())\n",
        ssdp.port()
    );
    let mut py = tokio::process::Command::new("python3");
    py.arg("-c").arg(script);
    let out = run_client(py, T).await;
    let text = output(&out);
    assert!(out.status.success(), "{text}");
    let sizes: Vec<usize> = text.lines().next().unwrap().split(' ').map(|n| n.parse().unwrap()).collect();
    assert!(sizes[1] <= sizes[0], "reply {} > request {}", sizes[1], sizes[0]);
    let location = format!("http://127.0.0.1:{http}/rootDesc.xml");
    assert!(text.contains(&format!("LOCATION: {location}\r\n")), "{text}");
    let upnpc = |args: &[&str]| {
        let mut c = tokio::process::Command::new("upnpc");
        c.args(["-u", &location]).args(args);
        c
    };
    let out = run_client(upnpc(&["-a", "10.0.0.5", "22", "2222", "TCP"]), T).await;
    eprintln!("{}", output(&out));
    let out = run_client(upnpc(&["-d", "2222", "TCP"]), T).await;
    eprintln!("{}", output(&out));
    let out = run_client(upnpc(&["-l"]), T).await;
    let text = output(&out);
    assert!(text.contains("ExternalIPAddress = 100.64.12.7"), "{text}");
    let evs = h
        .wait_for(T, |evs| {
            evs.iter().any(|e| matches!(&e.detail, Detail::Exploit { name, .. } if name == "upnp-deleteportmapping"))
        })
        .await;
    let add = evs
        .iter()
        .find_map(|e| match &e.detail {
            Detail::Exploit { name, extra, .. } if name == "upnp-addportmapping" => Some(extra.clone()),
            _ => None,
        })
        .expect("AddPortMapping recorded");
    let arg = |k: &str| add.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap_or_default();
    assert_eq!(
        (arg("NewExternalPort"), arg("NewInternalPort"), arg("NewInternalClient"), arg("NewProtocol")),
        ("2222".into(), "22".into(), "10.0.0.5".into(), "TCP".into())
    );
    assert!(evs.iter().any(|e| matches!(&e.detail, Detail::HttpRequest { path, .. } if path == "/rootDesc.xml")));
    assert!(commands(&evs, Protocol::Upnp)
        .contains(&"M-SEARCH urn:schemas-upnp-org:device:InternetGatewayDevice:1".to_string()));
}

/// Every UDP service, asked things whose honest answer is big (stats, a challenge, an error
/// message, a discovery reply) in requests as small as they come: no reply is larger than its
/// request (the rule that keeps the sensor from being an amplifier).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_udp_reply_is_larger_than_its_request() {
    let mut cfg = config_for(&["tftp", "sip", "memcached", "upnp"]);
    cfg.services[2].transport = Some(TransportChoice::Both);
    let h = Harness::start_with(cfg, Pressure::Normal, 100_000).await;
    let cases: Vec<(Protocol, &[u8])> = vec![
        (Protocol::Tftp, b"\0\x01a\0octet\0"),
        (Protocol::Tftp, b"\0\x01boot/kernel.img\0netascii\0"),
        (Protocol::Tftp, b"\0\x03\0\x01"),
        (Protocol::Tftp, b"help\r\n\r\n"),
        (Protocol::Memcached, b"\0\x01\0\0\0\x01\0\0stats\r\n"),
        (Protocol::Memcached, b"\0\x01\0\0\0\x01\0\0version\r\n"),
        (Protocol::Memcached, b"\0\x01\0\0\0\x01\0\0get a\r\n"),
        (Protocol::Sip, b"OPTIONS sip:a SIP/2.0\r\n\r\n"),
        (Protocol::Sip, b"REGISTER sip:a SIP/2.0\r\nCall-ID: 1\r\n\r\n"),
        (Protocol::Sip, b"INVITE sip:100@x SIP/2.0\r\nVia: SIP/2.0/UDP a\r\nFrom: <sip:a@b>\r\nTo: <sip:c@d>\r\nCall-ID: 9\r\nCSeq: 1 INVITE\r\n\r\n"),
        (Protocol::Upnp, b"M-SEARCH * HTTP/1.1\r\nST: ssdp:all\r\n\r\n"),
        (Protocol::Upnp, b"M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: \"ssdp:discover\"\r\nMX: 1\r\nST: ssdp:all\r\n\r\n"),
    ];
    let mut answered = 0;
    for (protocol, req) in &cases {
        if let Some(reply) = exchange(h.udp_addr(*protocol), req).await {
            answered += 1;
            assert!(
                reply.len() <= req.len(),
                "{protocol}: {} byte reply to {} bytes: {reply:?}",
                reply.len(),
                req.len()
            );
        }
    }
    assert!(answered >= 7, "most of these are answered (within their size): {answered}");
    // Each request was one exchange, recorded over UDP.
    let evs = h.wait_connections(cases.len(), T).await;
    let udp = evs.iter().filter(|e| e.transport == Transport::Udp && matches!(e.detail, Detail::Connection { .. }));
    assert_eq!(udp.count(), cases.len());
    assert_eq!(h.stats.datagrams.load(Ordering::Relaxed), cases.len() as u64);
}

/// A flood of SIP OPTIONS from one source: past the source's budget every datagram is shed
/// and counted, so `datagrams read = exchanges recorded + datagrams rolled up` exactly, the
/// recorded exchanges are exactly the budget, and no reply is larger than its request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_udp_flood_from_one_source_is_shed_and_counted_exactly() {
    const BUDGET: u32 = 50;
    const SENT: usize = 3000;
    let mut cfg = config_for(&["sip"]);
    cfg.services[0].transport = Some(TransportChoice::Udp);
    cfg.udp.datagrams_per_source = BUDGET;
    cfg.udp.window_s = 600;
    let h = Harness::start_with(cfg, Pressure::Normal, 100_000).await;
    let to = h.udp_addr(Protocol::Sip);
    let sock = std::sync::Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let req = b"OPTIONS sip:100@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-f\r\n\
        From: <sip:f@127.0.0.1>;tag=1\r\nTo: <sip:100@127.0.0.1>\r\nCall-ID: flood\r\nCSeq: 1 OPTIONS\r\n\
        Content-Length: 0\r\n\r\n";
    let reader = {
        let sock = sock.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65_536];
            let (mut replies, mut largest) = (0usize, 0usize);
            while let Ok(Ok((n, _))) = tokio::time::timeout(Duration::from_secs(3), sock.recv_from(&mut buf)).await {
                replies += 1;
                largest = largest.max(n);
            }
            (replies, largest)
        })
    };
    for i in 0..SENT {
        sock.send_to(req, to).await.unwrap();
        if i % 200 == 199 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let (replies, largest) = reader.await.unwrap();
    assert!(largest <= req.len(), "largest reply {largest} > request {}", req.len());
    assert_eq!(replies, BUDGET as usize, "only the budget's datagrams were answered");
    // What the sensor read (the kernel may drop some of a burst before the sensor sees them).
    let read = h.stats.datagrams.load(Ordering::Relaxed);
    let shed = h.stats.datagrams_shed.load(Ordering::Relaxed);
    assert!(read > BUDGET as u64 && read <= SENT as u64, "read {read}");
    assert_eq!(read, BUDGET as u64 + shed);
    let evs = h.wait_connections(BUDGET as usize, T).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let evs = if evs.len() < BUDGET as usize * 4 { h.events() } else { evs };
    let exchanges =
        evs.iter().filter(|e| e.transport == Transport::Udp && matches!(e.detail, Detail::Connection { .. }));
    assert_eq!(exchanges.count(), BUDGET as usize);
    let rolled = h.rollups.drain(usize::MAX, "t", 0);
    assert!(rolled.iter().all(|e| e.transport == Transport::Udp
        && e.protocol == Protocol::Sip
        && matches!(e.detail, Detail::Rollup { reason: ShedReason::RateLimited, .. })));
    assert_eq!(drosera_sensor::rollup::rolled_up(&rolled), shed);
    assert_eq!(h.sink.counters().shed.load(Ordering::Relaxed), shed, "health's shed total counts them too");
    assert_eq!(h.stats.replies_refused.load(Ordering::Relaxed), 0);
}

/// `nmap -sU -sV`: the SIP port is Asterisk, the memcached port memcached, from answers no
/// larger than nmap's probes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nmap_udp_version_scan_names_sip_and_memcached() {
    if !require_client("nmap") {
        return;
    }
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIP: nmap -sU needs root");
        return;
    }
    let mut cfg = config_for(&["sip", "memcached"]);
    cfg.services[0].transport = Some(TransportChoice::Udp);
    cfg.services[1].transport = Some(TransportChoice::Udp);
    let h = Harness::start_with(cfg, Pressure::Normal, 100_000).await;
    let (sip, mc) = (h.udp_addr(Protocol::Sip).port(), h.udp_addr(Protocol::Memcached).port());
    let mut cmd = tokio::process::Command::new("nmap");
    cmd.args(["-Pn", "-n", "-sU", "-sV", "--version-intensity", "8", "-p", &format!("{sip},{mc}"), "127.0.0.1"]);
    let out = run_client(cmd, Duration::from_secs(240)).await;
    let text = output(&out);
    eprintln!("{text}");
    let line =
        |port: u16| text.lines().find(|l| l.starts_with(&format!("{port}/udp "))).unwrap_or_default().to_string();
    assert!(line(sip).contains("open") && line(sip).contains("Asterisk"), "{text}");
    assert!(line(mc).contains("open") && line(mc).contains("memcached"), "{text}");
}

/// TFTP uploads are bounded flows: past `udp.max_flows` a new upload is refused (`Disk full`),
/// and an upload that goes quiet ends after `udp.flow_timeout_s`, its part reported as an
/// incomplete sample with an idle_timeout connection event; then the slot is free again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tftp_flows_are_capped_and_time_out() {
    use drosera_uplink::event::CloseReason;
    let mut cfg = config_for(&["tftp"]);
    cfg.udp.max_flows = 1;
    cfg.udp.flow_timeout_s = 1;
    let h = Harness::start_with(cfg, Pressure::Normal, 100_000).await;
    let to = h.udp_addr(Protocol::Tftp);
    let first = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let wrq = b"\0\x02a.bin\0octet\0";
    first.send_to(wrq, to).await.unwrap();
    let mut buf = [0u8; 600];
    let (n, _) = tokio::time::timeout(T, first.recv_from(&mut buf)).await.unwrap().unwrap();
    assert_eq!(&buf[..n], b"\0\x04\0\0", "ACK 0");
    let mut block = b"\0\x03\0\x01".to_vec();
    block.extend_from_slice(&[7u8; 512]);
    first.send_to(&block, to).await.unwrap();
    let (n, _) = tokio::time::timeout(T, first.recv_from(&mut buf)).await.unwrap().unwrap();
    assert_eq!(&buf[..n], b"\0\x04\0\x01", "ACK 1");
    // A second upload while the only flow slot is taken.
    let refused = exchange(to, b"\0\x02b.bin\0octet\0").await.expect("an error");
    assert_eq!(&refused[..4], b"\0\x05\0\x03", "{refused:?}");
    assert!(refused.len() <= 15);
    // The first goes quiet: ended after the timeout, reported incomplete.
    let evs = h
        .wait_for(T, |evs| {
            evs.iter().any(|e| matches!(&e.detail, Detail::Sample { outcome: SampleOutcome::Incomplete, name, size: 512, .. } if name == "a.bin"))
        })
        .await;
    let sample = evs.iter().find(|e| matches!(e.detail, Detail::Sample { .. })).unwrap();
    let evs = h
        .wait_for(T, |evs| {
            evs.iter().any(|e| {
                e.session_id == sample.session_id
                    && matches!(e.detail, Detail::Connection { closed_by: CloseReason::IdleTimeout, .. })
            })
        })
        .await;
    let conn = evs
        .iter()
        .find(|e| e.session_id == sample.session_id && matches!(e.detail, Detail::Connection { .. }))
        .unwrap();
    assert_eq!((conn.bytes_in, conn.bytes_out), ((wrq.len() + block.len()) as u64, 8));
    // The slot is free again.
    let again = exchange(to, b"\0\x02c.bin\0octet\0").await.expect("an ACK");
    assert_eq!(again, b"\0\x04\0\0");
}
