//! SSH emulation against OpenSSH (`ssh`, `scp`, `sftp` driven by `sshpass`, and a public-key
//! attempt), hydra, and nmap's SSH scripts for each persona.
// Integration tests and benches may panic; the workspace denies unwrap/expect elsewhere.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use drosera_sensor::config::Persona;
use drosera_sensor::governor::Pressure;
use drosera_uplink::event::{Detail, Event, Protocol, SampleOutcome, Secret};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use support::clients::{echo_loader_lines, hydra_attempts, pairs_file, password_logins, ODD_PAIRS};
use support::{config_for, require_client, run_client, sha256_hex, Harness};

/// Options every OpenSSH client here gets (no host key checks, quiet, bounded).
const OPTS: &[&str] = &[
    "-o",
    "StrictHostKeyChecking=no",
    "-o",
    "UserKnownHostsFile=/dev/null",
    "-o",
    "ConnectTimeout=10",
    "-o",
    "LogLevel=ERROR",
];

/// A harness whose login policy lets weak pairs in at once (the policy itself, with its
/// refusals first, is what the Telnet and hydra tests go through).
async fn open_harness() -> Harness {
    let mut cfg = config_for(&["ssh"]);
    cfg.credentials.refuse_first = 0;
    Harness::start_with(cfg, Pressure::Normal, 100_000).await
}

/// `sshpass -p PASSWORD PROGRAM ARGS...`
fn sshpass(password: &str, program: &str, args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new("sshpass");
    cmd.args(["-p", password, program]);
    cmd.args(args);
    cmd
}

/// The kept samples: (sha256 hex, name, source, outcome).
fn samples(evs: &[Event]) -> Vec<(String, String, String, &'static str)> {
    evs.iter()
        .filter_map(|e| match &e.detail {
            Detail::Sample { sha256, name, source, outcome, .. } => {
                Some((hex::encode(sha256), name.clone(), source.clone(), outcome.as_str()))
            }
            _ => None,
        })
        .collect()
}

/// Bytes that look like a binary and differ per `seed`.
fn blob(seed: u32, len: usize) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed.wrapping_mul(40_503)) >> 11) as u8)
        .collect()
}

/// `ssh` with `extra` options (they must come before the destination).
fn ssh_cmd(port: u16, user: &str, extra: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new("ssh");
    cmd.args(extra);
    cmd.args([
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "ConnectTimeout=10",
        "-o",
        "NumberOfPasswordPrompts=1",
        "-p",
        &port.to_string(),
        &format!("{user}@127.0.0.1"),
        "true",
    ]);
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssh_password_attempt_is_recorded_with_hassh() {
    if !require_client("ssh") || !require_client("sshpass") {
        return;
    }
    let h = Harness::start(&["ssh"]).await;
    let port = h.port(Protocol::Ssh);
    let mut cmd = tokio::process::Command::new("sshpass");
    cmd.args(["-p", "toor123"]);
    let inner = ssh_cmd(port, "root", &["-o", "PreferredAuthentications=password", "-o", "PubkeyAuthentication=no"]);
    cmd.arg(inner.as_std().get_program());
    cmd.args(inner.as_std().get_args());
    let out = run_client(cmd, Duration::from_secs(30)).await;
    assert!(!out.status.success(), "authentication must fail");
    let evs = h
        .wait_for(Duration::from_secs(15), |evs| {
            evs.iter().any(|e| matches!(e.detail, Detail::Login { .. }))
                && evs.iter().any(|e| matches!(e.detail, Detail::Fingerprint { .. }))
        })
        .await;
    let (user, secret) = evs
        .iter()
        .find_map(|e| match &e.detail {
            Detail::Login { username, secret, .. } => Some((username.clone(), secret.clone())),
            _ => None,
        })
        .unwrap();
    assert_eq!(user, "root");
    assert_eq!(secret, Secret::Password("toor123".into()));
    let (version, extra) = evs
        .iter()
        .find_map(|e| match &e.detail {
            Detail::Fingerprint { kind, value, extra } if kind == "ssh_client" => Some((value.clone(), extra.clone())),
            _ => None,
        })
        .unwrap();
    assert!(version.starts_with("SSH-2.0-OpenSSH_"), "{version}");
    let hassh = extra.iter().find(|(k, _)| k == "hassh").map(|(_, v)| v.clone()).unwrap();
    assert_eq!(hassh.len(), 32);
    assert!(hassh.chars().all(|c| c.is_ascii_hexdigit()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssh_public_key_attempt_is_recorded_with_its_fingerprint() {
    if !require_client("ssh") || !require_client("ssh-keygen") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("id_ed25519");
    let gen = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(gen.success());
    let fp = std::process::Command::new("ssh-keygen").args(["-l", "-E", "sha256", "-f"]).arg(&key).output().unwrap();
    let fp = String::from_utf8_lossy(&fp.stdout).split_whitespace().nth(1).unwrap().to_string();
    let h = Harness::start(&["ssh"]).await;
    let key_arg = key.display().to_string();
    let cmd = ssh_cmd(
        h.port(Protocol::Ssh),
        "deploy",
        &[
            "-o",
            "BatchMode=yes",
            "-o",
            "PreferredAuthentications=publickey",
            "-o",
            "IdentitiesOnly=yes",
            "-i",
            &key_arg,
        ],
    );
    let out = run_client(cmd, Duration::from_secs(30)).await;
    assert!(!out.status.success());
    let evs =
        h.wait_for(Duration::from_secs(15), |evs| evs.iter().any(|e| matches!(e.detail, Detail::Login { .. }))).await;
    let secret = evs
        .iter()
        .find_map(|e| match &e.detail {
            Detail::Login { username, secret, .. } if username == "deploy" => Some(secret.clone()),
            _ => None,
        })
        .unwrap();
    match secret {
        Secret::PublicKey { algorithm, fingerprint } => {
            assert_eq!(algorithm, "ssh-ed25519");
            assert_eq!(fingerprint, fp);
        }
        other => panic!("unexpected {other:?}; events {evs:#?}; client: {}", String::from_utf8_lossy(&out.stderr)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssh_sees_sshd_auth_methods_again_and_max_auth_tries() {
    if !require_client("ssh") {
        return;
    }
    let h = Harness::start(&["ssh"]).await;
    let dir = tempfile::tempdir().unwrap();
    // An askpass program answers every password prompt (sshpass stops at the second one).
    let askpass = dir.path().join("askpass.sh");
    std::fs::write(&askpass, "#!/bin/sh\necho wrong-pw\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&askpass, std::fs::Permissions::from_mode(0o700)).unwrap();
    let mut cmd = tokio::process::Command::new("ssh");
    cmd.env("SSH_ASKPASS", &askpass).env("SSH_ASKPASS_REQUIRE", "force").env("DISPLAY", ":0");
    cmd.args(OPTS).args([
        "-v",
        "-o",
        "NumberOfPasswordPrompts=10",
        "-o",
        "PreferredAuthentications=password",
        "-o",
        "PubkeyAuthentication=no",
        "-p",
        &h.port(Protocol::Ssh).to_string(),
        "admin@127.0.0.1",
        "true",
    ]);
    let out = run_client(cmd, Duration::from_secs(60)).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    // After `none` and after each of the six refused passwords (sshd sends its disconnect in
    // place of the sixth failure message; russh has no hook for that, so it sends both).
    assert_eq!(err.matches("Authentications that can continue: publickey,password").count(), 7, "{err}");
    assert!(err.contains("Too many authentication failures"), "{err}");
    assert!(
        err.contains("Remote protocol version 2.0, remote software version OpenSSH_9.2p1 Debian-2+deb12u3"),
        "{err}"
    );
    let evs = h.wait_connections(1, Duration::from_secs(15)).await;
    assert_eq!(password_logins(&evs).len(), 6, "MaxAuthTries 6, every try recorded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hydra_ssh_every_pair_it_sends_is_recorded() {
    if !require_client("hydra") {
        return;
    }
    let h = Harness::start(&["ssh"]).await;
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
        &h.port(Protocol::Ssh).to_string(),
        "127.0.0.1",
        "ssh",
    ]);
    let out = run_client(cmd, Duration::from_secs(150)).await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let tried = hydra_attempts(&stdout);
    let want: BTreeSet<(String, String)> = ODD_PAIRS.iter().map(|(u, p)| (u.to_string(), p.to_string())).collect();
    assert_eq!(tried.iter().cloned().collect::<BTreeSet<_>>(), want, "hydra tried every pair: {stdout}");
    let evs = h
        .wait_for(Duration::from_secs(20), |evs| {
            password_logins(evs).iter().map(|(u, p, _)| (u.clone(), p.clone())).collect::<BTreeSet<_>>() == want
        })
        .await;
    let recorded = password_logins(&evs);
    assert_eq!(recorded.len(), tried.len(), "hydra: {stdout}\nrecorded: {recorded:?}");
    for (u, p) in [("root", "xc3511"), ("admin", "admin")] {
        assert!(recorded.iter().any(|l| l.0 == u && l.1 == p && l.2), "{u}:{p} accepted");
        assert!(stdout.contains(&format!("login: {u}   password: {p}")), "{stdout}");
    }
    assert_eq!(recorded.iter().filter(|l| l.2).count(), 2);
}

/// nmap's script output as section name -> values (`kex_algorithms` -> [...]).
fn nmap_sections(text: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut current = None;
    for line in text.lines() {
        // Script lines start with `| ` or `|_`; what follows is indented by level.
        let Some(body) = line.strip_prefix('|').and_then(|b| b.get(1..)) else {
            current = None;
            continue;
        };
        let indent = body.len() - body.trim_start().len();
        let t = body.trim();
        if indent == 2 && t.ends_with(')') && t.contains(": (") {
            let name = t.split(':').next().unwrap().to_string();
            out.insert(name.clone(), Vec::new());
            current = Some(name);
        } else if indent == 2 && t == "Supported authentication methods:" {
            out.insert("auth".into(), Vec::new());
            current = Some("auth".into());
        } else if indent >= 4 {
            if let Some(c) = &current {
                out.get_mut(c).unwrap().push(t.to_string());
            }
        } else {
            current = None;
        }
    }
    out
}

fn list(s: &str) -> Vec<String> {
    s.split(',').map(str::to_string).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nmap_names_each_persona_and_sees_its_algorithms() {
    if !require_client("nmap") {
        return;
    }
    // What the real servers offer (Debian 12's sshd 9.2p1-2+deb12u3 and dropbear 2022.83 were
    // run on loopback; see docs/ssh-personas.md), minus what russh does not implement.
    let debian_real = [
        ("kex_algorithms", "sntrup761x25519-sha512@openssh.com,curve25519-sha256,curve25519-sha256@libssh.org,ecdh-sha2-nistp256,ecdh-sha2-nistp384,ecdh-sha2-nistp521,diffie-hellman-group-exchange-sha256,diffie-hellman-group16-sha512,diffie-hellman-group18-sha512,diffie-hellman-group14-sha256,kex-strict-s-v00@openssh.com"),
        ("server_host_key_algorithms", "rsa-sha2-512,rsa-sha2-256,ecdsa-sha2-nistp256,ssh-ed25519"),
        ("encryption_algorithms", "chacha20-poly1305@openssh.com,aes128-ctr,aes192-ctr,aes256-ctr,aes128-gcm@openssh.com,aes256-gcm@openssh.com"),
        ("mac_algorithms", "umac-64-etm@openssh.com,umac-128-etm@openssh.com,hmac-sha2-256-etm@openssh.com,hmac-sha2-512-etm@openssh.com,hmac-sha1-etm@openssh.com,umac-64@openssh.com,umac-128@openssh.com,hmac-sha2-256,hmac-sha2-512,hmac-sha1"),
        ("compression_algorithms", "none,zlib@openssh.com"),
        ("auth", "publickey,password"),
    ];
    let dropbear_real = [
        ("kex_algorithms", "curve25519-sha256,curve25519-sha256@libssh.org,ecdh-sha2-nistp521,ecdh-sha2-nistp384,ecdh-sha2-nistp256,diffie-hellman-group14-sha256,diffie-hellman-group14-sha1,kexguess2@matt.ucc.asn.au,kex-strict-s-v00@openssh.com"),
        ("server_host_key_algorithms", "ssh-ed25519,ecdsa-sha2-nistp256,rsa-sha2-256,ssh-rsa"),
        ("encryption_algorithms", "chacha20-poly1305@openssh.com,aes128-ctr,aes256-ctr"),
        ("mac_algorithms", "hmac-sha1,hmac-sha2-256"),
        ("compression_algorithms", "zlib@openssh.com,none"),
        ("auth", "publickey,password"),
    ];
    let windows = [
        ("kex_algorithms", "curve25519-sha256,curve25519-sha256@libssh.org,ecdh-sha2-nistp256,ecdh-sha2-nistp384,ecdh-sha2-nistp521,diffie-hellman-group-exchange-sha256,diffie-hellman-group16-sha512,diffie-hellman-group18-sha512,diffie-hellman-group14-sha256,diffie-hellman-group14-sha1"),
        ("server_host_key_algorithms", "rsa-sha2-512,rsa-sha2-256,ssh-rsa,ecdsa-sha2-nistp256,ssh-ed25519"),
        ("encryption_algorithms", "chacha20-poly1305@openssh.com,aes128-ctr,aes192-ctr,aes256-ctr,aes128-gcm@openssh.com,aes256-gcm@openssh.com"),
        ("mac_algorithms", "umac-64-etm@openssh.com,umac-128-etm@openssh.com,hmac-sha2-256-etm@openssh.com,hmac-sha2-512-etm@openssh.com,hmac-sha1-etm@openssh.com,umac-64@openssh.com,umac-128@openssh.com,hmac-sha2-256,hmac-sha2-512,hmac-sha1"),
        ("compression_algorithms", "none"),
        ("auth", "publickey,password,keyboard-interactive"),
    ];
    let missing = [
        "sntrup761x25519-sha512@openssh.com",
        "kexguess2@matt.ucc.asn.au",
        "umac-64-etm@openssh.com",
        "umac-128-etm@openssh.com",
        "umac-64@openssh.com",
        "umac-128@openssh.com",
    ];
    for (persona, product, real) in [
        (Persona::LinuxServer, "OpenSSH 9.2p1 Debian 2+deb12u3 (protocol 2.0)", &debian_real),
        (Persona::Mixed, "OpenSSH 9.2p1 Debian 2+deb12u3 (protocol 2.0)", &debian_real),
        (Persona::IotRouter, "Dropbear sshd 2022.83 (protocol 2.0)", &dropbear_real),
        (Persona::WindowsServer, "OpenSSH for_Windows_8.1 (protocol 2.0)", &windows),
    ] {
        let mut cfg = config_for(&["ssh"]);
        cfg.sensor.persona = persona;
        let h = Harness::start_with(cfg, Pressure::Normal, 100_000).await;
        let port = h.port(Protocol::Ssh).to_string();
        let mut cmd = tokio::process::Command::new("nmap");
        cmd.args([
            "-Pn",
            "-n",
            "-sV",
            "--version-light",
            "--script",
            "ssh2-enum-algos,ssh-auth-methods",
            "-p",
            &port,
            "127.0.0.1",
        ]);
        let out = run_client(cmd, Duration::from_secs(90)).await;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(text.contains(product), "{persona:?}: {text}");
        if persona != Persona::WindowsServer {
            assert!(text.contains("Service Info: OS: Linux"), "{persona:?}: {text}");
        }
        let got = nmap_sections(&text);
        for (section, want) in real.iter() {
            let want: Vec<String> = list(want).into_iter().filter(|a| !missing.contains(&a.as_str())).collect();
            assert_eq!(got.get(*section), Some(&want), "{persona:?} {section}: {text}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_keys_are_rsa_3072_ecdsa_p256_and_ed25519_and_survive_a_restart() {
    if !require_client("ssh-keyscan") || !require_client("ssh-keygen") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut fingerprints = Vec::new();
    for _ in 0..2 {
        let mut cfg = config_for(&["ssh"]);
        cfg.services[0].host_key = Some(dir.path().join("ssh_host_key.seed"));
        let h = Harness::start_with(cfg, Pressure::Normal, 100_000).await;
        let mut cmd = tokio::process::Command::new("ssh-keyscan");
        cmd.args(["-T", "10", "-t", "rsa,ecdsa,ed25519", "-p", &h.port(Protocol::Ssh).to_string(), "127.0.0.1"]);
        let out = run_client(cmd, Duration::from_secs(30)).await;
        let keys = dir.path().join("scanned");
        std::fs::write(&keys, &out.stdout).unwrap();
        let fp = std::process::Command::new("ssh-keygen").arg("-l").arg("-f").arg(&keys).output().unwrap();
        let mut lines: Vec<String> = String::from_utf8_lossy(&fp.stdout)
            .lines()
            .map(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                format!("{} {} {}", w[0], w[1], w[w.len() - 1])
            })
            .collect();
        lines.sort();
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(lines.iter().any(|l| l.starts_with("3072 ") && l.ends_with("(RSA)")), "{lines:?}");
        assert!(lines.iter().any(|l| l.starts_with("256 ") && l.ends_with("(ECDSA)")), "{lines:?}");
        assert!(lines.iter().any(|l| l.starts_with("256 ") && l.ends_with("(ED25519)")), "{lines:?}");
        fingerprints.push(lines);
    }
    assert_eq!(fingerprints[0], fingerprints[1], "the same three keys after a restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_and_an_echo_loader_on_stdin_keep_the_binary() {
    if !require_client("ssh") || !require_client("sshpass") {
        return;
    }
    let original = std::fs::read("/usr/bin/true").unwrap();
    let h = open_harness().await;
    let port = h.port(Protocol::Ssh).to_string();
    // A plain exec: recon commands answered as Debian's bash would.
    let mut args: Vec<&str> = OPTS.to_vec();
    args.extend([
        "-p",
        &port,
        "root@127.0.0.1",
        "uname -a; id; cd /tmp && printf '\\x7fELF\\x01' > small && chmod +x small",
    ]);
    let out = run_client(sshpass("root", "ssh", &args), Duration::from_secs(30)).await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout, "Linux web01 6.1.0-18-amd64 #1 SMP PREEMPT_DYNAMIC Debian 6.1.76-1 (2024-02-01) x86_64 GNU/Linux\nuid=0(root) gid=0(root) groups=0(root)\n");
    // An echo-loader fed to `sh -s` on stdin, 128 bytes a line.
    let dir = tempfile::tempdir().unwrap();
    let mut script = String::from("cd /tmp\n>.x\n");
    for l in echo_loader_lines(&original, ".x", 128) {
        script.push_str(&l);
        script.push('\n');
    }
    script.push_str("chmod +x .x\n./.x\n");
    let script_path = dir.path().join("loader.sh");
    std::fs::write(&script_path, &script).unwrap();
    let mut args: Vec<&str> = OPTS.to_vec();
    args.extend(["-p", &port, "root@127.0.0.1", "sh -s"]);
    let mut cmd = sshpass("root", "ssh", &args);
    cmd.stdin(std::fs::File::open(&script_path).unwrap());
    let child = cmd.kill_on_drop(true).output();
    let out = tokio::time::timeout(Duration::from_secs(60), child).await.unwrap().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let sha = sha256_hex(&original);
    let evs = h.wait_for(Duration::from_secs(15), |evs| samples(evs).len() >= 2).await;
    let got = samples(&evs);
    assert_eq!(
        got[0],
        (sha256_hex(b"\x7fELF\x01"), "/tmp/small".into(), "ssh-echo".into(), SampleOutcome::Kept.as_str())
    );
    assert_eq!(got[1], (sha.clone(), "/tmp/.x".into(), "ssh-echo".into(), SampleOutcome::Kept.as_str()));
    assert_eq!(std::fs::read(h.samples_dir().join(&sha)).unwrap(), original);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scp_legacy_scp_and_sftp_uploads_are_kept_byte_for_byte() {
    if !require_client("scp") || !require_client("sftp") || !require_client("sshpass") {
        return;
    }
    let h = open_harness().await;
    let port = h.port(Protocol::Ssh).to_string();
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<(String, Vec<u8>)> =
        (0..3).map(|n| (format!("up{n}.bin"), blob(n, 150_000 + n as usize * 7_777))).collect();
    for (name, data) in &files {
        std::fs::write(dir.path().join(name), data).unwrap();
    }
    let local = |n: usize| dir.path().join(&files[n].0).display().to_string();
    // scp (SFTP protocol, the default since OpenSSH 9), then legacy scp (-O).
    for (n, legacy) in [(0, false), (1, true)] {
        let mut args: Vec<String> = OPTS.iter().map(|s| s.to_string()).collect();
        if legacy {
            args.push("-O".into());
        }
        args.extend(["-P".into(), port.clone(), local(n), "root@127.0.0.1:/tmp/".into()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run_client(sshpass("root", "scp", &args), Duration::from_secs(60)).await;
        assert!(out.status.success(), "scp legacy={legacy}: {}", String::from_utf8_lossy(&out.stderr));
    }
    // A legacy scp download is refused.
    let mut args: Vec<&str> = OPTS.to_vec();
    let got_path = dir.path().join("got").display().to_string();
    args.extend(["-O", "-P", &port, "root@127.0.0.1:/etc/shadow", &got_path]);
    let out = run_client(sshpass("root", "scp", &args), Duration::from_secs(60)).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("scp: /etc/shadow: Permission denied"));
    assert!(!dir.path().join("got").exists());
    // sftp with a batch file.
    let batch = dir.path().join("batch");
    std::fs::write(
        &batch,
        format!("cd /var/tmp\nput {} x.bin\nget /etc/passwd {}\n", local(2), dir.path().join("pw").display()),
    )
    .unwrap();
    let batch_arg = batch.display().to_string();
    let mut args: Vec<&str> = OPTS.to_vec();
    args.extend(["-o", "BatchMode=no", "-b", &batch_arg, "-P", &port, "root@127.0.0.1"]);
    let out = run_client(sshpass("root", "sftp", &args), Duration::from_secs(60)).await;
    assert!(!out.status.success(), "the download fails (batch mode stops there)");
    assert!(!dir.path().join("pw").exists(), "nothing is ever downloaded");
    let evs = h.wait_for(Duration::from_secs(15), |evs| samples(evs).len() >= 3).await;
    let got: BTreeSet<_> = samples(&evs).into_iter().collect();
    let want: BTreeSet<_> = [
        (sha256_hex(&files[0].1), "/tmp/up0.bin".to_string(), "sftp".to_string(), SampleOutcome::Kept.as_str()),
        (sha256_hex(&files[1].1), "/tmp/up1.bin".into(), "ssh-scp".into(), SampleOutcome::Kept.as_str()),
        (sha256_hex(&files[2].1), "/var/tmp/x.bin".into(), "sftp".into(), SampleOutcome::Kept.as_str()),
    ]
    .into_iter()
    .collect();
    assert_eq!(got, want);
    for (_, data) in &files {
        assert_eq!(&std::fs::read(h.samples_dir().join(sha256_hex(data))).unwrap(), data);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn banner_grabs_get_no_handshake_and_a_waiting_client_gets_one() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let h = Harness::start(&["ssh"]).await;
    let banner = b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n";
    // A grabber that sends its version and leaves: it gets the version line and nothing else.
    let mut s = tokio::net::TcpStream::connect(h.addr(Protocol::Ssh)).await.unwrap();
    s.write_all(b"SSH-2.0-Go\r\n").await.unwrap();
    s.shutdown().await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got)).await.unwrap().unwrap();
    assert_eq!(got, banner, "no KEXINIT: russh never started");
    // nmap -sV's way: read the banner, say nothing, leave.
    let mut s = tokio::net::TcpStream::connect(h.addr(Protocol::Ssh)).await.unwrap();
    let mut first = vec![0u8; banner.len()];
    s.read_exact(&mut first).await.unwrap();
    assert_eq!(first, banner);
    drop(s);
    let evs = h.wait_connections(2, Duration::from_secs(10)).await;
    let fps: Vec<(String, usize)> = evs
        .iter()
        .filter_map(|e| match &e.detail {
            Detail::Fingerprint { kind, value, extra } if kind == "ssh_client" => Some((value.clone(), extra.len())),
            _ => None,
        })
        .collect();
    assert_eq!(fps, vec![("SSH-2.0-Go".to_string(), 0)], "the grabber's version, without HASSH");
    // An SSH 1 client (nmap's sshv1 script) and a client speaking something else get sshd's
    // answers, and their first lines are recorded.
    for (hello, answer) in [
        (&b"SSH-1.5-Nmap-SSH1-Hostkey\r\n"[..], &b"Protocol major versions differ.\r\n"[..]),
        (b"GET / HTTP/1.0\r\n\r\n", b"Invalid SSH identification string.\r\n"),
    ] {
        let mut s = tokio::net::TcpStream::connect(h.addr(Protocol::Ssh)).await.unwrap();
        s.write_all(hello).await.unwrap();
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got)).await.unwrap().unwrap();
        assert_eq!(got, [&banner[..], answer].concat());
    }
    let evs = h.wait_connections(4, Duration::from_secs(10)).await;
    let firsts: Vec<String> = evs
        .iter()
        .filter_map(|e| match &e.detail {
            Detail::Fingerprint { kind, value, .. } if kind == "ssh_client" => Some(value.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(firsts, ["SSH-2.0-Go", "SSH-1.5-Nmap-SSH1-Hostkey", "GET / HTTP/1.0"]);
    // A client that waits for the server's KEXINIT before sending its own gets it.
    let mut s = tokio::net::TcpStream::connect(h.addr(Protocol::Ssh)).await.unwrap();
    s.write_all(b"SSH-2.0-waiter\r\n").await.unwrap();
    let mut head = vec![0u8; banner.len() + 6];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut head)).await.unwrap().unwrap();
    assert_eq!(&head[..banner.len()], banner, "the version line once (russh's own is swallowed)");
    assert_eq!(head[banner.len() + 5], 20, "then a KEXINIT packet");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_past_the_connection_cap_are_reported_not_kept() {
    if !require_client("scp") || !require_client("sshpass") {
        return;
    }
    let h = open_harness().await;
    let port = h.port(Protocol::Ssh).to_string();
    let dir = tempfile::tempdir().unwrap();
    // Six files in one legacy scp run (one connection, one channel): four are kept.
    let mut paths = Vec::new();
    for n in 0..6u32 {
        let p = dir.path().join(format!("f{n}"));
        std::fs::write(&p, blob(100 + n, 2_000 + n as usize)).unwrap();
        paths.push(p.display().to_string());
    }
    let mut args: Vec<&str> = OPTS.to_vec();
    args.extend(["-O", "-P", &port]);
    args.extend(paths.iter().map(String::as_str));
    args.push("root@127.0.0.1:/tmp/");
    let out = run_client(sshpass("root", "scp", &args), Duration::from_secs(60)).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let evs = h.wait_connections(1, Duration::from_secs(15)).await;
    let kept: Vec<String> = samples(&evs).into_iter().map(|s| s.1).collect();
    assert_eq!(kept, ["/tmp/f0", "/tmp/f1", "/tmp/f2", "/tmp/f3"]);
    let dropped: Vec<Vec<(String, String)>> = evs
        .iter()
        .filter_map(|e| match &e.detail {
            Detail::Extension { kind, fields } if kind == "upload_not_kept" => Some(fields.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(dropped.len(), 2, "{dropped:?}");
    assert_eq!(
        dropped[0][..3],
        [("source".into(), "ssh-scp".into()), ("name".into(), "/tmp/f4".into()), ("size".into(), "2004".into())]
    );
    assert_eq!(dropped[1][1], ("name".into(), "/tmp/f5".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interactive_login_gets_debians_motd_last_login_and_prompt() {
    if !require_client("ssh") || !require_client("sshpass") {
        return;
    }
    let mut cfg = config_for(&["ssh"]);
    cfg.sensor.persona = Persona::LinuxServer;
    cfg.credentials.refuse_first = 0;
    let h = Harness::start_with(cfg, Pressure::Normal, 100_000).await;
    let port = h.port(Protocol::Ssh).to_string();
    let dir = tempfile::tempdir().unwrap();
    let typed = dir.path().join("typed");
    std::fs::write(&typed, "cd /tmp\nid\nexit\n").unwrap();
    // `-tt`: a pty although stdin is a file, as an interactive client has.
    let mut args: Vec<&str> = OPTS.to_vec();
    args.extend(["-tt", "-p", &port, "root@127.0.0.1"]);
    let mut cmd = sshpass("root", "ssh", &args);
    cmd.stdin(std::fs::File::open(&typed).unwrap());
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.kill_on_drop(true).output()).await.unwrap().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        text.starts_with("Linux web01 6.1.0-18-amd64 #1 SMP PREEMPT_DYNAMIC Debian 6.1.76-1 (2024-02-01) x86_64\r\n"),
        "{text:?}"
    );
    // sshd's lastlog line after the motd: `Last login: Tue Dec  1 05:17:02 2026 from 10.0.0.5`.
    let last = text.lines().find(|l| l.starts_with("Last login: ")).unwrap_or_else(|| panic!("{text:?}"));
    let words: Vec<&str> = last.split_whitespace().collect();
    assert_eq!(words.len(), 9, "{last:?}");
    assert_eq!(&words[7..], ["from", "10.0.0.5"], "{last:?}");
    assert!(text.contains("root@web01:~# "), "{text:?}");
    assert!(text.contains("root@web01:/tmp# "), "{text:?}");
    assert!(text.contains("uid=0(root) gid=0(root) groups=0(root)\r\n"), "{text:?}");
    let evs = h.wait_connections(1, Duration::from_secs(15)).await;
    let cmds: Vec<String> = evs
        .iter()
        .filter_map(|e| match &e.detail {
            Detail::Command { line } => Some(line.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(cmds, ["cd /tmp", "id", "exit"]);
}
