//! FTP at the protocol level, with a scripted client over TCP: the login policy's answers
//! (vsftpd's wording, delay and `max_login_fails`), the configured passive range and announced
//! address, and an upload cut short. The ordinary clients (curl, hydra) are in `proto_text.rs`,
//! `samples_ftp_http.rs` and `hydra_ftp_http_mysql.rs`.
// Integration tests and benches may panic; the workspace denies unwrap/expect elsewhere.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use drosera_sensor::governor::Pressure;
use drosera_uplink::event::{CloseReason, Detail, Protocol, SampleOutcome, Secret};
use std::time::{Duration, Instant};
use support::{config_for, Harness};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// A minimal FTP client: one command, one (possibly multi-line) reply.
struct Ftp {
    io: BufReader<TcpStream>,
}

impl Ftp {
    async fn connect(addr: std::net::SocketAddr) -> (Ftp, String) {
        let mut f = Ftp { io: BufReader::new(TcpStream::connect(addr).await.unwrap()) };
        let greeting = f.reply().await.expect("a greeting");
        (f, greeting)
    }

    /// The next reply, or `None` when the server closed the connection.
    async fn reply(&mut self) -> Option<String> {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(Duration::from_secs(10), self.io.read_line(&mut line)).await.unwrap().ok()?;
            if n == 0 {
                return if all.is_empty() { None } else { Some(all) };
            }
            all.push_str(&line);
            // The last line of a reply is "NNN text"; "NNN-" starts a multi-line one.
            if line.len() >= 4 && line.as_bytes()[3] == b' ' && all.len() >= 4 && all[..3] == line[..3] {
                return Some(all.trim_end().to_string());
            }
        }
    }

    async fn cmd(&mut self, line: &str) -> Option<String> {
        self.io.get_mut().write_all(format!("{line}\r\n").as_bytes()).await.ok()?;
        self.reply().await
    }
}

fn logins(evs: &[drosera_uplink::Event]) -> Vec<(String, Secret, bool)> {
    evs.iter()
        .filter_map(|e| match &e.detail {
            Detail::Login { username, secret, success, .. } => Some((username.clone(), secret.clone(), *success)),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_logins_get_vsftpd_answers_and_the_third_closes_the_connection() {
    let h = Harness::start(&["ftp"]).await;
    let (mut f, greeting) = Ftp::connect(h.addr(Protocol::Ftp)).await;
    assert_eq!(greeting, "220 (vsFTPd 3.0.3)");
    assert_eq!(f.cmd("PASS nobody").await.unwrap(), "503 Login with USER first.");
    assert_eq!(f.cmd("SYST").await.unwrap(), "530 Please login with USER and PASS.");
    let started = Instant::now();
    // Anonymous is an ordinary pair: refused unless listed. Passwords are taken as sent.
    for (user, pass) in [("anonymous", "guest@example.com"), ("root", "  two  spaces "), ("admin", "admin123")] {
        assert_eq!(f.cmd(&format!("USER {user}")).await.unwrap(), "331 Please specify the password.");
        assert_eq!(f.cmd(&format!("PASS {pass}")).await.unwrap(), "530 Login incorrect.");
    }
    assert!(started.elapsed() >= Duration::from_millis(2900), "each refusal waits a second, as vsftpd does");
    assert_eq!(f.reply().await, None, "the third refusal closes the connection (max_login_fails = 3)");
    let evs = h.wait_connections(1, Duration::from_secs(10)).await;
    assert_eq!(
        logins(&evs),
        vec![
            ("anonymous".into(), Secret::Password("guest@example.com".into()), false),
            ("root".into(), Secret::Password("  two  spaces ".into()), false),
            ("admin".into(), Secret::Password("admin123".into()), false),
        ]
    );
    let closed = evs.iter().find_map(|e| match e.detail {
        Detail::Connection { closed_by, .. } => Some(closed_by),
        _ => None,
    });
    assert_eq!(closed, Some(CloseReason::ServerClosed));
    // A new connection from the same address, which has been refused twice already: a pair on
    // the accept list now gets in.
    let (mut f, _) = Ftp::connect(h.addr(Protocol::Ftp)).await;
    f.cmd("USER admin").await.unwrap();
    assert_eq!(f.cmd("PASS admin").await.unwrap(), "230 Login successful.");
    assert_eq!(f.cmd("SYST").await.unwrap(), "215 UNIX Type: L8");
    assert_eq!(f.cmd("USER root").await.unwrap(), "530 Can't change to another user.");
    let evs = h.wait_for(Duration::from_secs(10), |evs| logins(evs).len() == 4).await;
    assert_eq!(logins(&evs)[3], ("admin".into(), Secret::Password("admin".into()), true));
}

/// Two adjacent free loopback ports (`first`, `first + 1`).
fn free_pair() -> u16 {
    loop {
        let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        if a < 65000 && std::net::TcpListener::bind(("127.0.0.1", a + 1)).is_ok() {
            return a;
        }
    }
}

/// The port of a `227 ... (h1,h2,h3,h4,p1,p2).` reply and its address.
fn pasv_target(reply: &str) -> (String, u16) {
    let inner = reply.split('(').nth(1).unwrap().split(')').next().unwrap();
    let n: Vec<u16> = inner.split(',').map(|x| x.trim().parse().unwrap()).collect();
    (format!("{}.{}.{}.{}", n[0], n[1], n[2], n[3]), n[4] * 256 + n[5])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passive_ports_come_from_the_range_and_pasv_announces_the_configured_address() {
    let first = free_pair();
    let mut cfg = config_for(&["ftp"]);
    cfg.services[0].passive_ports = Some(drosera_sensor::config::PortRange { first, last: first + 1 });
    cfg.services[0].passive_address = Some("203.0.113.7".parse().unwrap());
    cfg.credentials.refuse_first = 0;
    let h = Harness::start_with(cfg, Pressure::Normal, 100_000).await;
    let (mut f, _) = Ftp::connect(h.addr(Protocol::Ftp)).await;
    f.cmd("USER admin").await.unwrap();
    assert_eq!(f.cmd("PASS admin").await.unwrap(), "230 Login successful.");
    // A port of the range held by another program is skipped.
    let held = std::net::TcpListener::bind(("127.0.0.1", first)).unwrap();
    let reply = f.cmd("PASV").await.unwrap();
    let (addr, port) = pasv_target(&reply);
    assert_eq!((addr.as_str(), port), ("203.0.113.7", first + 1), "{reply}");
    // A new PASV/EPSV replaces the previous listener (its port is free again).
    let epsv = f.cmd("EPSV").await.unwrap();
    assert_eq!(epsv, format!("229 Entering Extended Passive Mode (|||{}|)", first + 1), "the PASV port was released");
    let other = std::net::TcpListener::bind(("127.0.0.1", first + 1));
    assert!(other.is_err(), "the sensor listens on the EPSV port");
    // Upload through the announced port (on loopback here; behind NAT it is the public address).
    assert_eq!(f.cmd("TYPE I").await.unwrap(), "200 Switching to Binary mode.");
    let mut data = TcpStream::connect(("127.0.0.1", first + 1)).await.unwrap();
    assert_eq!(f.cmd("STOR drop.sh").await.unwrap(), "150 Ok to send data.");
    data.write_all(b"#!/bin/sh\necho pwned\n").await.unwrap();
    drop(data);
    assert_eq!(f.reply().await.unwrap(), "226 Transfer complete.");
    drop(held);
    // Every port of the range in use: 425, and the session goes on.
    let busy = std::net::TcpListener::bind(("127.0.0.1", first)).unwrap();
    let busy2 = std::net::TcpListener::bind(("127.0.0.1", first + 1)).unwrap();
    assert_eq!(f.cmd("PASV").await.unwrap(), "425 Could not open a passive port.");
    assert_eq!(f.cmd("STOR x").await.unwrap(), "425 Use PORT or PASV first.");
    assert_eq!(f.cmd("NOOP").await.unwrap(), "200 NOOP ok.");
    drop((busy, busy2));
    let evs =
        h.wait_for(Duration::from_secs(10), |evs| evs.iter().any(|e| matches!(e.detail, Detail::Sample { .. }))).await;
    let sample = evs
        .iter()
        .find_map(|e| match &e.detail {
            Detail::Sample { name, outcome, size, .. } => Some((name.clone(), *outcome, *size)),
            _ => None,
        })
        .unwrap();
    assert_eq!(sample, ("drop.sh".into(), SampleOutcome::Kept, 21));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_cut_short_is_reported_incomplete_and_not_kept() {
    let mut cfg = config_for(&["ftp"]);
    cfg.credentials.refuse_first = 0;
    cfg.limits.idle_timeout_s = 1;
    let h = Harness::start_with(cfg, Pressure::Normal, 100_000).await;
    let (mut f, _) = Ftp::connect(h.addr(Protocol::Ftp)).await;
    f.cmd("USER root").await.unwrap();
    assert_eq!(f.cmd("PASS root").await.unwrap(), "230 Login successful.");
    let reply = f.cmd("PASV").await.unwrap();
    let (_, port) = pasv_target(&reply);
    let mut data = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    assert_eq!(f.cmd("STOR half.bin").await.unwrap(), "150 Ok to send data.");
    data.write_all(&[0x7f; 1000]).await.unwrap();
    // The client stalls with the data connection open: the idle timeout ends the transfer.
    assert_eq!(f.reply().await.unwrap(), "426 Failure reading network stream.");
    let mut rest = Vec::new();
    let _ = data.read_to_end(&mut rest).await;
    let evs =
        h.wait_for(Duration::from_secs(10), |evs| evs.iter().any(|e| matches!(e.detail, Detail::Sample { .. }))).await;
    let payload = evs
        .iter()
        .find_map(|e| match &e.detail {
            Detail::Payload { size, truncated, .. } => Some((*size, *truncated)),
            _ => None,
        })
        .unwrap();
    assert_eq!(payload, (1000, true));
    let outcome = evs.iter().find_map(|e| match &e.detail {
        Detail::Sample { outcome, .. } => Some(*outcome),
        _ => None,
    });
    assert_eq!(outcome, Some(SampleOutcome::Incomplete));
    let files: Vec<_> =
        std::fs::read_dir(h.samples_dir()).unwrap().flatten().filter(|e| e.file_type().unwrap().is_file()).collect();
    assert!(files.is_empty(), "a partial upload is not kept: {files:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_windows_persona_speaks_microsoft_ftp() {
    let mut cfg = config_for(&["ftp"]);
    cfg.sensor.persona = drosera_sensor::config::Persona::WindowsServer;
    let h = Harness::start_with(cfg, Pressure::Normal, 100_000).await;
    let (mut f, greeting) = Ftp::connect(h.addr(Protocol::Ftp)).await;
    assert_eq!(greeting, "220 Microsoft FTP Service");
    assert_eq!(f.cmd("USER administrator").await.unwrap(), "331 Password required");
    assert_eq!(f.cmd("PASS P@ssw0rd").await.unwrap(), "530 User cannot log in.");
}
