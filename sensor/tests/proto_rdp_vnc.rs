//! RDP and VNC (issue 17) against their ordinary clients and the attacker's tools: FreeRDP's
//! `xfreerdp /auth-only` through X.224, TLS and CredSSP/NLA (the NTLMv2 response must verify
//! against the password the client typed), `vncsnapshot` (an RFB 3.3 client) and hydra's `vnc`
//! module (RFB 3.7) through VNC authentication (each DES response must verify), and
//! `nmap -sV --script rdp-ntlm-info,vnc-info` naming a Windows host.
// Integration tests and benches may panic; the workspace denies unwrap/expect elsewhere.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use drosera_sensor::config::{Config, Persona, ServiceKind, ServiceSection};
use drosera_sensor::governor::Pressure;
use drosera_sensor::protocols::smb::{ntlmv2_proves, NtlmAuth};
use drosera_sensor::protocols::vnc::des_response;
use drosera_uplink::event::{Detail, Event, Protocol, Secret};
use std::time::Duration;
use support::{require_client, run_client, Harness};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

const CLIENT_TIMEOUT: Duration = Duration::from_secs(40);

/// (user, secret format, secret value, extra) of a login.
type Login = (String, String, String, Vec<(String, String)>);

/// Every login with a hashed secret.
fn logins(evs: &[Event]) -> Vec<Login> {
    evs.iter()
        .filter_map(|e| match &e.detail {
            Detail::Login { username, secret: Secret::Hash { format, value }, success, extra } => {
                assert!(!success, "RDP and VNC refuse every login");
                Some((username.clone(), format.clone(), value.clone(), extra.clone()))
            }
            _ => None,
        })
        .collect()
}

fn fingerprints(evs: &[Event], kind: &str) -> Vec<(String, Vec<(String, String)>)> {
    evs.iter()
        .filter_map(|e| match &e.detail {
            Detail::Fingerprint { kind: k, value, extra } if k == kind => Some((value.clone(), extra.clone())),
            _ => None,
        })
        .collect()
}

fn field<'a>(extra: &'a [(String, String)], key: &str) -> &'a str {
    extra.iter().find(|(k, _)| k == key).map_or("", |(_, v)| v.as_str())
}

/// The challenge and response of a `$vnc$*CHALLENGE*RESPONSE` line.
fn vnc_line(line: &str) -> ([u8; 16], [u8; 16]) {
    let parts: Vec<&str> = line.split('*').collect();
    assert_eq!((parts.len(), parts[0]), (3, "$vnc$"), "{line}");
    let c = hex::decode(parts[1]).unwrap().try_into().unwrap();
    let r = hex::decode(parts[2]).unwrap().try_into().unwrap();
    (c, r)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vncsnapshot_vnc_auth_is_recorded_as_a_crackable_line() {
    if !require_client("vncsnapshot") {
        return;
    }
    let h = Harness::start(&["vnc"]).await;
    let dir = tempfile::tempdir().unwrap();
    // vncpasswd's file: the password DES-encrypted under RFB's fixed key (vncsnapshot
    // decrypts it with its own d3des, so a wrong bit order here would give a wrong password).
    let fixed = [23u8, 82, 107, 6, 35, 78, 88, 7];
    let mut block = [0u8; 16];
    block[..8].copy_from_slice(b"winter\0\0");
    let obfuscated = des_response(&block, &fixed);
    let passwd = dir.path().join("passwd");
    std::fs::write(&passwd, &obfuscated[..8]).unwrap();
    let mut c = Command::new("vncsnapshot");
    c.arg("-passwd").arg(&passwd).arg(format!("127.0.0.1::{}", h.port(Protocol::Vnc))).arg(dir.path().join("o.jpg"));
    let out = run_client(c, CLIENT_TIMEOUT).await;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success() && text.contains("uthentication failed"), "{text}");
    let evs = h.wait_for(Duration::from_secs(10), |e| !logins(e).is_empty()).await;
    let client = fingerprints(&evs, "rfb-client");
    assert_eq!(client[0].0, "RFB 003.003", "{client:?}");
    let l = &logins(&evs)[0];
    assert_eq!((l.0.as_str(), l.1.as_str()), ("", "john-vnc"));
    assert_eq!((field(&l.3, "rfb_version"), field(&l.3, "security_type")), ("RFB 003.003", "2"));
    let (challenge, response) = vnc_line(&l.2);
    assert_eq!(des_response(&challenge, b"winter"), response, "the client's response verifies offline");
    assert_ne!(des_response(&challenge, b"summer"), response);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hydra_vnc_brute_force_over_rfb_3_7_leaves_one_verifiable_line_per_password() {
    if !require_client("hydra") {
        return;
    }
    let h = Harness::start(&["vnc"]).await;
    let dir = tempfile::tempdir().unwrap();
    let words = ["123456", "password", "vnc", "winter"];
    let list = dir.path().join("pw.txt");
    std::fs::write(&list, words.join("\n") + "\n").unwrap();
    let mut c = Command::new("hydra");
    c.args(["-t", "1", "-I", "-P"]).arg(&list).args(["-s", &h.port(Protocol::Vnc).to_string(), "127.0.0.1", "vnc"]);
    let out = run_client(c, CLIENT_TIMEOUT).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("0 valid password"), "{text}");
    let evs = h.wait_for(Duration::from_secs(10), |e| logins(e).len() >= words.len()).await;
    let mut proven: Vec<&str> = Vec::new();
    for (_, format, line, extra) in logins(&evs) {
        assert_eq!((format.as_str(), field(&extra, "rfb_version")), ("john-vnc", "RFB 003.007"));
        let (challenge, response) = vnc_line(&line);
        proven.extend(words.iter().copied().filter(|w| des_response(&challenge, w.as_bytes()) == response));
    }
    proven.sort();
    assert_eq!(proven, ["123456", "password", "vnc", "winter"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xfreerdp_auth_only_gives_cookie_ja3_and_a_verifiable_ntlmv2_line() {
    // xfreerdp opens its X display before it connects, even for /auth-only: a virtual one.
    if !require_client("xfreerdp") || !require_client("xvfb-run") {
        return;
    }
    let h = Harness::start(&["rdp"]).await;
    let mut c = Command::new("xvfb-run");
    c.args([
        "-a",
        "xfreerdp",
        "/auth-only",
        "/cert-ignore",
        "/u:alice",
        "/d:CORP",
        "/p:Winter2024!",
        &format!("/v:127.0.0.1:{}", h.port(Protocol::Rdp)),
    ]);
    let out = run_client(c, CLIENT_TIMEOUT).await;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    // What a Windows host answers to a wrong password under NLA.
    assert!(!out.status.success() && text.contains("STATUS_LOGON_FAILURE"), "the login is refused: {text}");
    let evs = h.wait_for(Duration::from_secs(10), |e| !logins(e).is_empty()).await;
    let req = fingerprints(&evs, "rdp-connection-request");
    assert_eq!(req[0].0, "alice", "{req:?}");
    assert!(field(&req[0].1, "requested_protocols").contains("hybrid"), "{req:?}");
    let ja3 = fingerprints(&evs, "ja3");
    assert_eq!(ja3[0].0.len(), 32, "{ja3:?}");
    assert!(field(&ja3[0].1, "ja3").starts_with("771,"), "{ja3:?}");
    let (user, format, line, extra) = &logins(&evs)[0];
    assert_eq!((user.as_str(), format.as_str()), ("alice", "hashcat-5600"));
    assert_eq!(field(extra, "domain"), "CORP");
    assert_eq!(field(extra, "method"), "rdp-nla");
    // user::domain:challenge:ntproofstr:blob, and the proof verifies with the typed password.
    let parts: Vec<&str> = line.split(':').collect();
    assert_eq!((parts[0], parts[2]), ("alice", "CORP"), "{line}");
    let challenge: [u8; 8] = hex::decode(parts[3]).unwrap().try_into().unwrap();
    let nt = [hex::decode(parts[4]).unwrap(), hex::decode(parts[5]).unwrap()].concat();
    let auth = NtlmAuth { user: "alice".into(), domain: "CORP".into(), nt_response: nt, ..NtlmAuth::default() };
    assert!(ntlmv2_proves(&auth, &challenge, "Winter2024!"));
    assert!(!ntlmv2_proves(&auth, &challenge, "winter2024!"));
}

/// On a Linux server or a router RDP is not a thing: the request is recorded, nothing answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rdp_on_a_linux_persona_records_the_request_and_stays_silent() {
    let mut cfg = support::config_for(&["rdp"]);
    cfg.sensor.persona = Persona::LinuxServer;
    let h = Harness::start_with(cfg, Pressure::Normal, 1000).await;
    let mut s = tokio::net::TcpStream::connect(h.addr(Protocol::Rdp)).await.unwrap();
    s.write_all(b"\x03\0\0*%\xe0\0\0\0\0\0Cookie: mstshash=nmap\r\n\x01\0\x08\0\x03\0\0\0").await.unwrap();
    let mut buf = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await.unwrap().unwrap();
    assert_eq!(n, 0);
    let evs = h.wait_connections(1, Duration::from_secs(5)).await;
    let req = fingerprints(&evs, "rdp-connection-request");
    assert_eq!((req[0].0.as_str(), field(&req[0].1, "requested_protocols")), ("nmap", "ssl,hybrid"));
}

/// RDP and VNC on their standard ports of a free loopback address other than 127.0.0.1.
fn standard_ports_config(persona: Persona) -> (Config, std::net::IpAddr) {
    for attempt in 0..50u32 {
        let n = std::process::id().wrapping_mul(2_654_435_761).wrapping_add(attempt * 7919 + 13);
        let ip = std::net::IpAddr::from([127, 17 + (n % 200) as u8, (n >> 8) as u8, 2 + (n >> 16) as u8 % 250]);
        let ports = [(ServiceKind::Rdp, 3389u16), (ServiceKind::Vnc, 5900)];
        if ports.iter().any(|(_, p)| std::net::TcpListener::bind((ip, *p)).is_err()) {
            continue;
        }
        let mut cfg = support::config_for(&[]);
        cfg.sensor.persona = persona;
        cfg.services = ports.iter().map(|(k, p)| ServiceSection::new(*k, ip, vec![*p])).collect();
        return (cfg, ip);
    }
    panic!("no free loopback address for the standard ports");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nmap_rdp_ntlm_info_and_vnc_info_name_a_windows_host() {
    if !require_client("nmap") {
        return;
    }
    let (cfg, ip) = standard_ports_config(Persona::WindowsServer);
    let h = Harness::start_with(cfg, Pressure::Normal, 100_000).await;
    let mut c = Command::new("nmap");
    c.args(["-sV", "-Pn", "-n", "--host-timeout", "150s", "-p", "3389,5900"]).args([
        "--script",
        "rdp-ntlm-info,vnc-info",
        &ip.to_string(),
    ]);
    let out = run_client(c, Duration::from_secs(180)).await;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("{text}");
    for (port, service, product) in
        [("3389/tcp", "ms-wbt-server", "Microsoft Terminal Services"), ("5900/tcp", "vnc", "VNC (protocol 3.8)")]
    {
        let line = text.lines().find(|l| l.starts_with(port)).unwrap_or("");
        assert!(line.contains(" open ") && line.contains(service) && line.contains(product), "{port} in\n{text}");
    }
    for want in [
        "Target_Name: FILESRV01",
        "NetBIOS_Computer_Name: FILESRV01",
        "Product_Version: 6.1.7601",
        "VNC Authentication (2)",
        "Protocol version: 3.8",
        "OS: Windows",
    ] {
        assert!(text.contains(want), "{want:?} in\n{text}");
    }
    let evs = h.wait_connections(2, Duration::from_secs(10)).await;
    assert!(fingerprints(&evs, "rdp-connection-request").iter().any(|(u, _)| u == "nmap"));
}
