//! SMB emulation against Samba's `smbclient` and hand-made MS17-010 / DoublePulsar probes.
// Integration tests and benches may panic; the workspace denies unwrap/expect elsewhere.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use drosera_flood::probe::smb1;
use drosera_uplink::event::{Detail, Protocol, Secret};
use std::time::Duration;
use support::{require_client, run_client, Harness};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smbclient_ntlmv2_login_is_recorded_as_hashcat_5600() {
    if !require_client("smbclient") {
        return;
    }
    let h = Harness::start(&["smb"]).await;
    let port = h.port(Protocol::Smb);
    let mut cmd = tokio::process::Command::new("smbclient");
    cmd.args([
        "-L",
        "//127.0.0.1",
        "-p",
        &port.to_string(),
        "-U",
        "CORP/alice%Spring2024",
        "--netbiosname",
        "WS-ATTACK",
    ]);
    let out = run_client(cmd, Duration::from_secs(30)).await;
    let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(all.contains("LOGON_FAILURE"), "smbclient said: {all}");
    let evs =
        h.wait_for(Duration::from_secs(10), |evs| evs.iter().any(|e| matches!(e.detail, Detail::Login { .. }))).await;
    let (user, secret, extra) = evs
        .iter()
        .find_map(|e| match &e.detail {
            Detail::Login { username, secret, extra, .. } => Some((username.clone(), secret.clone(), extra.clone())),
            _ => None,
        })
        .unwrap();
    assert_eq!(user, "alice");
    let get = |k: &str| extra.iter().find(|(kk, _)| kk == k).map(|(_, v)| v.clone()).unwrap_or_default();
    assert_eq!(get("domain"), "CORP");
    assert_eq!(get("workstation"), "WS-ATTACK");
    let Secret::Hash { format, value } = secret else { panic!("no hash") };
    assert_eq!(format, "hashcat-5600");
    let parts: Vec<&str> = value.split(':').collect();
    assert_eq!(parts.len(), 6, "{value}");
    assert_eq!((parts[0], parts[1], parts[2]), ("alice", "", "CORP"));
    assert_eq!(parts[3].len(), 16, "server challenge: 8 bytes hex");
    assert_eq!(parts[4].len(), 32, "NTProofStr: 16 bytes hex");
    assert!(parts[5].len() > 32 && parts[5].starts_with("0101"), "NTLMv2 blob: {}", parts[5]);
}

async fn reply(s: &mut tokio::net::TcpStream) -> Vec<u8> {
    let mut h = [0u8; 4];
    s.read_exact(&mut h).await.unwrap();
    let mut m = vec![0u8; u32::from_be_bytes(h) as usize];
    s.read_exact(&mut m).await.unwrap();
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ms17_010_scan_and_doublepulsar_ping_are_exploit_events() {
    let h = Harness::start(&["smb"]).await;
    let mut s = tokio::net::TcpStream::connect(h.addr(Protocol::Smb)).await.unwrap();
    // The sequence an EternalBlue scanner sends: negotiate NT LM 0.12, anonymous session setup,
    // tree connect to IPC$, TRANS PeekNamedPipe on FID 0, then the DoublePulsar ping.
    s.write_all(&smb1(0x72, 1, &[], b"\x02PC NETWORK PROGRAM 1.0\0\x02LANMAN1.0\0\x02NT LM 0.12\0")).await.unwrap();
    let r = reply(&mut s).await;
    assert_eq!(&r[..5], &[0xff, b'S', b'M', b'B', 0x72]);
    assert_eq!(u32::from_le_bytes([r[5], r[6], r[7], r[8]]), 0, "negotiate succeeds");
    let mut ss = vec![0xff, 0, 0, 0, 0xff, 0xff, 2, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x54, 0, 0, 0];
    ss.truncate(26);
    s.write_all(&smb1(0x73, 2, &ss, b"\0\0\0\0")).await.unwrap();
    let r = reply(&mut s).await;
    assert_eq!(u32::from_le_bytes([r[5], r[6], r[7], r[8]]), 0, "anonymous session setup succeeds");
    let tc_bytes: Vec<u8> = [
        vec![0u8],
        "\\\\192.0.2.1\\IPC$\0".encode_utf16().flat_map(|u| u.to_le_bytes()).collect(),
        b"?????\0".to_vec(),
    ]
    .concat();
    s.write_all(&smb1(0x75, 3, &[0xff, 0, 0, 0, 0, 0, 1, 0], &tc_bytes)).await.unwrap();
    let _ = reply(&mut s).await;
    let mut words = vec![0u8; 32];
    words[28] = 0x23; // PeekNamedPipe, FID 0
    s.write_all(&smb1(0x25, 4, &words, b"\0\\PIPE\\\0")).await.unwrap();
    let r = reply(&mut s).await;
    assert_eq!(u32::from_le_bytes([r[5], r[6], r[7], r[8]]), 0xC000_0205, "looks vulnerable");
    let mut w2 = vec![0u8; 30];
    w2[28] = 0x0e; // SESSION_SETUP
    s.write_all(&smb1(0x32, 0x41, &w2, &[0; 13])).await.unwrap();
    let _ = reply(&mut s).await;
    let evs = h
        .wait_for(Duration::from_secs(10), |evs| {
            evs.iter().filter(|e| matches!(e.detail, Detail::Exploit { .. })).count() >= 2
        })
        .await;
    let names: Vec<String> = evs
        .iter()
        .filter_map(|e| match &e.detail {
            Detail::Exploit { name, cve, .. } => {
                assert_eq!(cve, "CVE-2017-0144");
                Some(name.clone())
            }
            _ => None,
        })
        .collect();
    assert_eq!(names, vec!["ms17-010-probe".to_string(), "doublepulsar-ping".to_string()]);
}
