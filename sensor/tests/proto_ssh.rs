//! SSH emulation against OpenSSH (`ssh` driven by `sshpass`, and a public-key attempt).
// Integration tests and benches may panic; the workspace denies unwrap/expect elsewhere.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use drosera_uplink::event::{Detail, Protocol, Secret};
use std::time::Duration;
use support::{require_client, run_client, Harness};

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
