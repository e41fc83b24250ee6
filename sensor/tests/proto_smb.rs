//! SMB emulation against the real tools: Samba's `smbclient` (NTLMv2 logins, `put` over SMB2
//! and SMB1), nmap's `smb-vuln-ms17-010` and `smb-double-pulsar-backdoor` scripts, impacket (a
//! psexec-style drop to `ADMIN$` and a DoublePulsar upload client, `tests/clients/`), and
//! hand-made MS17-010 / DoublePulsar probes for the exact answers.
// Integration tests and benches may panic; the workspace denies unwrap/expect elsewhere.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use drosera_flood::probe::{smb1, smb2_negotiate};
use drosera_sensor::config::{Config, Persona};
use drosera_sensor::governor::Pressure;
use drosera_uplink::event::{Detail, Event, Protocol, SampleOutcome, Secret};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;
use support::{config_for, require_client, run_client, sha256_hex, Harness};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Key/value attributes of an event.
type Extra = Vec<(String, String)>;

/// (user, secret, success, extra) of every login event.
fn logins(evs: &[Event]) -> Vec<(String, Secret, bool, Extra)> {
    evs.iter()
        .filter_map(|e| match &e.detail {
            Detail::Login { username, secret, success, extra } => {
                Some((username.clone(), secret.clone(), *success, extra.clone()))
            }
            _ => None,
        })
        .collect()
}

/// (name, cve, extra) of every exploit event.
fn exploits(evs: &[Event]) -> Vec<(String, String, Extra)> {
    evs.iter()
        .filter_map(|e| match &e.detail {
            Detail::Exploit { name, cve, extra } => Some((name.clone(), cve.clone(), extra.clone())),
            _ => None,
        })
        .collect()
}

/// (sha256 hex, size, name, source, outcome) of every sample event.
fn samples(evs: &[Event]) -> Vec<(String, u64, String, String, SampleOutcome)> {
    evs.iter()
        .filter_map(|e| match &e.detail {
            Detail::Sample { sha256, size, name, source, outcome } => {
                Some((hex::encode(sha256), *size, name.clone(), source.clone(), *outcome))
            }
            _ => None,
        })
        .collect()
}

fn get<'a>(extra: &'a [(String, String)], key: &str) -> &'a str {
    extra.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str()).unwrap_or("")
}

/// The kept sample `sha` must hold exactly `data`, read-only.
fn assert_kept(h: &Harness, data: &[u8]) {
    let path = h.samples_dir().join(sha256_hex(data));
    let kept = std::fs::read(&path).unwrap_or_else(|e| panic!("sample {} not kept: {e}", path.display()));
    assert!(kept == data, "the kept sample differs from what was sent");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o400);
}

/// A file with a PE-like head and varied bytes (several SMB writes long).
fn payload(len: usize, seed: u32) -> Vec<u8> {
    let mut d = b"MZ\x90\0\x03\0\0\0".to_vec();
    d.extend((0..len as u32).map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed) >> 13) as u8));
    d
}

/// True if Debian's python3 has impacket. Missing: fails under DROSERA_REQUIRE_CLIENTS=1,
/// otherwise skips.
fn require_impacket() -> bool {
    let ok = std::process::Command::new("/usr/bin/python3")
        .args(["-c", "import impacket.smbconnection"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        if std::env::var("DROSERA_REQUIRE_CLIENTS").as_deref() == Ok("1") {
            panic!("python3-impacket is required (DROSERA_REQUIRE_CLIENTS=1); run scripts/install-deps.sh");
        }
        eprintln!("SKIP: python3-impacket not installed (run scripts/install-deps.sh)");
    }
    ok
}

fn client_script(name: &str) -> String {
    format!("{}/tests/clients/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// A config with SMB on an ephemeral port, `persona`, and a login policy that refuses the
/// first login of each source and then accepts the default weak pairs (admin:admin, ...).
fn smb_config(persona: Persona) -> Config {
    let mut cfg = config_for(&["smb"]);
    cfg.sensor.persona = persona;
    cfg.credentials.refuse_first = 1;
    cfg
}

async fn smbclient(port: u16, share: &str, auth: &[&str], command: &str, smb1: bool) -> String {
    let mut cmd = tokio::process::Command::new("smbclient");
    cmd.args([&format!("//127.0.0.1/{share}"), "-p", &port.to_string(), "-c", command]);
    cmd.args(auth);
    if smb1 {
        // Debian's smbclient speaks SMB2+ only unless told otherwise.
        cmd.args(["-m", "NT1", "--option=client min protocol=NT1"]);
    }
    let out = run_client(cmd, Duration::from_secs(30)).await;
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

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
    let evs = h.wait_for(Duration::from_secs(10), |evs| !logins(evs).is_empty()).await;
    let (user, secret, success, extra) = logins(&evs).remove(0);
    assert_eq!(user, "alice");
    assert!(!success);
    assert_eq!(get(&extra, "domain"), "CORP");
    assert_eq!(get(&extra, "workstation"), "WS-ATTACK");
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

fn status(r: &[u8]) -> u32 {
    u32::from_le_bytes([r[5], r[6], r[7], r[8]])
}

/// The sequence an EternalBlue scanner sends: negotiate NT LM 0.12, anonymous session setup,
/// tree connect to IPC$, TRANS PeekNamedPipe on FID 0, then the DoublePulsar ping (MID 0x41,
/// Timeout 0x00a4d9a6: opcode 0x23). Returns the probe's and the ping's answers.
async fn eternalblue_scan(h: &Harness) -> (Vec<u8>, Vec<u8>) {
    let mut s = tokio::net::TcpStream::connect(h.addr(Protocol::Smb)).await.unwrap();
    s.write_all(&smb1(0x72, 1, &[], b"\x02PC NETWORK PROGRAM 1.0\0\x02LANMAN1.0\0\x02NT LM 0.12\0")).await.unwrap();
    let r = reply(&mut s).await;
    assert_eq!(&r[..5], &[0xff, b'S', b'M', b'B', 0x72]);
    assert_eq!(status(&r), 0, "negotiate succeeds");
    let ss = [0xff, 0, 0, 0, 0xff, 0xff, 2, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x54, 0, 0, 0];
    s.write_all(&smb1(0x73, 2, &ss, b"\0\0\0\0")).await.unwrap();
    let r = reply(&mut s).await;
    assert_eq!(status(&r), 0, "anonymous session setup succeeds");
    s.write_all(&smb1(0x75, 3, &[0xff, 0, 0, 0, 0, 0, 1, 0], b"\0\\\\192.0.2.1\\IPC$\0?????\0")).await.unwrap();
    let r = reply(&mut s).await;
    assert_eq!(status(&r), 0, "IPC$ for the null session");
    let mut words = vec![0u8; 32];
    words[28] = 0x23; // PeekNamedPipe, FID 0
    s.write_all(&smb1(0x25, 4, &words, b"\0\\PIPE\\\0")).await.unwrap();
    let probe = reply(&mut s).await;
    let mut w2 = vec![0u8; 30];
    w2[12..16].copy_from_slice(&0x00a4_d9a6u32.to_le_bytes());
    w2[26] = 1;
    w2[28] = 0x0e; // SESSION_SETUP
    s.write_all(&smb1(0x32, 0x41, &w2, &[0; 13])).await.unwrap();
    let ping = reply(&mut s).await;
    (probe, ping)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ms17_010_scan_and_doublepulsar_ping_are_exploit_events() {
    let h = Harness::start(&["smb"]).await;
    let (probe, ping) = eternalblue_scan(&h).await;
    assert_eq!(status(&probe), 0xC000_0205, "STATUS_INSUFF_SERVER_RESOURCES: unpatched");
    assert_eq!(u16::from_le_bytes([ping[30], ping[31]]), 0x51, "an implanted host answers MID + 0x10");
    assert_ne!(&ping[14..18], &[0; 4], "the key's seed in the signature field");
    assert_ne!(&ping[18..22], &[0; 4], "x64");
    let evs = h.wait_for(Duration::from_secs(10), |evs| exploits(evs).len() >= 2).await;
    let found: Vec<(String, String)> = exploits(&evs).into_iter().map(|(n, c, _)| (n, c)).collect();
    assert_eq!(
        found,
        vec![
            ("ms17-010-probe".to_string(), "CVE-2017-0143".to_string()),
            ("doublepulsar-ping".to_string(), "CVE-2017-0144".to_string())
        ]
    );
}

/// The server GUID and the boot time of an SMB2 NEGOTIATE answer.
async fn smb2_identity(h: &Harness) -> ([u8; 16], u64) {
    let mut s = tokio::net::TcpStream::connect(h.addr(Protocol::Smb)).await.unwrap();
    s.write_all(&smb2_negotiate(&[0x0202, 0x0210])).await.unwrap();
    let r = reply(&mut s).await;
    assert_eq!(&r[..4], b"\xfeSMB");
    assert_eq!(u16::from_le_bytes([r[68], r[69]]), 0x0210, "SMB 2.1");
    let guid: [u8; 16] = r[72..88].try_into().unwrap();
    (guid, u64::from_le_bytes(r[112..120].try_into().unwrap()))
}

/// A real server keeps its GUID and boot time across connections; Windows names its boot time,
/// Samba sends none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_guid_and_boot_time_stay_the_same_across_connections() {
    let h = Harness::start_with(smb_config(Persona::WindowsServer), Pressure::Normal, 100_000).await;
    let (guid, boot) = smb2_identity(&h).await;
    assert_eq!(smb2_identity(&h).await, (guid, boot));
    assert_ne!(guid, [0; 16]);
    let now = (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() / 100) as u64
        + 116_444_736_000_000_000;
    let days = (now - boot) / 864_000_000_000;
    assert!((9..=40).contains(&days), "uptime of {days} days");
    let h = Harness::start_with(smb_config(Persona::LinuxServer), Pressure::Normal, 100_000).await;
    let (samba_guid, samba_boot) = smb2_identity(&h).await;
    assert_eq!((samba_guid, samba_boot), (guid, 0), "one machine per sensor; Samba sends no boot time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn samba_personas_are_patched_and_have_no_implant() {
    for persona in [Persona::LinuxServer, Persona::IotRouter] {
        let h = Harness::start_with(smb_config(persona), Pressure::Normal, 100_000).await;
        let (probe, ping) = eternalblue_scan(&h).await;
        assert_eq!(status(&probe), 0xC000_0008, "STATUS_INVALID_HANDLE: nmap says patched");
        assert_eq!(u16::from_le_bytes([ping[30], ping[31]]), 0x41, "no implant: MID unchanged");
        let evs = h.wait_for(Duration::from_secs(10), |evs| exploits(evs).len() >= 2).await;
        let ex = exploits(&evs);
        assert_eq!(get(&ex[0].2, "answered"), "patched");
        assert_eq!(get(&ex[1].2, "implant"), "absent");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nmap_smb_vuln_ms17_010_says_vulnerable_and_the_probe_is_recorded() {
    if !require_client("nmap") {
        return;
    }
    let h = Harness::start(&["smb"]).await;
    let port = h.port(Protocol::Smb).to_string();
    let mut cmd = tokio::process::Command::new("nmap");
    cmd.args(["-Pn", "-n", "-p", &port, "--script", "smb-vuln-ms17-010"]);
    cmd.args(["--script-args", &format!("smbport={port}"), "127.0.0.1"]);
    let out = run_client(cmd, Duration::from_secs(120)).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("State: VULNERABLE"), "nmap said: {text}");
    assert!(text.contains("CVE-2017-0143"), "nmap said: {text}");
    let evs = h.wait_for(Duration::from_secs(10), |evs| !exploits(evs).is_empty()).await;
    let (name, cve, extra) = exploits(&evs).remove(0);
    assert_eq!((name.as_str(), cve.as_str()), ("ms17-010-probe", "CVE-2017-0143"));
    assert_eq!(get(&extra, "answered"), "vulnerable");
    // nmap's anonymous session reached IPC$ (a tree connect recorded as a command).
    assert!(evs.iter().any(|e| matches!(&e.detail, Detail::Command { line } if line.contains("IPC$ ok"))));
}

/// nmap's own DoublePulsar check (Countercept's ping: TRANS2 SESSION_SETUP with MID 65 on
/// `IPC$`) finds the implant the Windows persona pretends to have, and the ping is recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nmap_smb_double_pulsar_backdoor_finds_the_implant_and_the_ping_is_recorded() {
    if !require_client("nmap") {
        return;
    }
    let h = Harness::start(&["smb"]).await;
    let port = h.port(Protocol::Smb).to_string();
    let mut cmd = tokio::process::Command::new("nmap");
    cmd.args(["-Pn", "-n", "-p", &port, "--script", "smb-double-pulsar-backdoor"]);
    cmd.args(["--script-args", &format!("smbport={port}"), "127.0.0.1"]);
    let out = run_client(cmd, Duration::from_secs(120)).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Double Pulsar SMB Backdoor"), "nmap said: {text}");
    assert!(text.contains("State: VULNERABLE"), "nmap said: {text}");
    let evs = h.wait_for(Duration::from_secs(10), |evs| !exploits(evs).is_empty()).await;
    let (name, cve, extra) = exploits(&evs).remove(0);
    assert_eq!((name.as_str(), cve.as_str()), ("doublepulsar-ping", "CVE-2017-0144"));
    assert_eq!(get(&extra, "implant"), "answered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smbclient_put_over_smb2_and_smb1_keeps_the_file_after_a_weak_login() {
    if !require_client("smbclient") {
        return;
    }
    let h = Harness::start_with(smb_config(Persona::WindowsServer), Pressure::Normal, 100_000).await;
    let port = h.port(Protocol::Smb);
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (payload(300_000, 1), payload(90_000, 2));
    std::fs::write(dir.path().join("a.exe"), &a).unwrap();
    std::fs::write(dir.path().join("b.exe"), &b).unwrap();
    let put = |f: &str| format!("put {} {f}", dir.path().join(f).display());

    // A wrong password is refused (and recorded)...
    let said = smbclient(port, "C$", &["-U", "admin%letmein"], &put("a.exe"), false).await;
    assert!(said.contains("NT_STATUS_LOGON_FAILURE"), "smbclient said: {said}");
    // ...the weak pair admin:admin of the accept list gets in, over SMB2 and SMB1.
    let said = smbclient(port, "C$", &["-U", "admin%admin"], &put("a.exe"), false).await;
    assert!(said.contains("putting file"), "smbclient said: {said}");
    let said = smbclient(port, "C$", &["-U", "admin%admin"], &put("b.exe"), true).await;
    assert!(said.contains("putting file"), "smbclient said: {said}");

    let evs = h.wait_for(Duration::from_secs(10), |evs| samples(evs).len() >= 2).await;
    let l = logins(&evs);
    assert_eq!(l.len(), 3, "{l:?}");
    assert_eq!((l[0].0.as_str(), l[0].2), ("admin", false));
    assert!(matches!(&l[0].1, Secret::Hash { format, .. } if format == "hashcat-5600"));
    assert_eq!((l[1].0.as_str(), l[1].2, get(&l[1].3, "dialect")), ("admin", true, "SMB 2.1"));
    assert_eq!((l[2].0.as_str(), l[2].2, get(&l[2].3, "dialect")), ("admin", true, "NT LM 0.12"));
    let s = samples(&evs);
    assert_eq!(s[0], (sha256_hex(&a), a.len() as u64, "C$\\a.exe".into(), "smb-write".into(), SampleOutcome::Kept));
    assert_eq!(s[1], (sha256_hex(&b), b.len() as u64, "C$\\b.exe".into(), "smb-write".into(), SampleOutcome::Kept));
    assert_kept(&h, &a);
    assert_kept(&h, &b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_sessions_reach_ipc_only() {
    if !require_client("smbclient") {
        return;
    }
    let h = Harness::start_with(smb_config(Persona::WindowsServer), Pressure::Normal, 100_000).await;
    let port = h.port(Protocol::Smb);
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), b"MZ anonymous").unwrap();
    // `-U%`: empty user and password, a null session (`-N` would log in as the Unix user first).
    let said = smbclient(port, "C$", &["-U%"], &format!("put {} x.exe", file.path().display()), false).await;
    assert!(said.contains("NT_STATUS_ACCESS_DENIED"), "smbclient said: {said}");
    let said = smbclient(port, "IPC$", &["-U%"], "", false).await;
    assert!(!said.contains("NT_STATUS"), "IPC$ is open to null sessions; smbclient said: {said}");
    let evs = h.wait_connections(2, Duration::from_secs(10)).await;
    assert!(samples(&evs).is_empty());
    assert!(logins(&evs).is_empty(), "a null session is not a login attempt: {:?}", logins(&evs));
    assert!(evs.iter().any(|e| matches!(&e.detail, Detail::Command { line } if line.ends_with("\\C$ refused"))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impacket_psexec_style_drop_to_admin_share_is_kept() {
    if !require_impacket() {
        return;
    }
    let h = Harness::start_with(smb_config(Persona::WindowsServer), Pressure::Normal, 100_000).await;
    let port = h.port(Protocol::Smb).to_string();
    let dir = tempfile::tempdir().unwrap();
    let bin = payload(150_000, 3);
    let local = dir.path().join("svc.exe");
    std::fs::write(&local, &bin).unwrap();
    let drop = |user: &'static str, pass: &'static str, dialect: &'static str| {
        let mut cmd = tokio::process::Command::new("/usr/bin/python3");
        cmd.arg(client_script("smb_drop.py"));
        cmd.args(["127.0.0.1", &port, user, pass, "ADMIN$", "PSEXESVC.exe"]);
        cmd.arg(&local).arg(dialect);
        run_client(cmd, Duration::from_secs(60))
    };
    let refused = drop("admin", "wrong", "smb2").await;
    assert!(!refused.status.success(), "a wrong password must not get in");
    for dialect in ["smb2", "smb1"] {
        let out = drop("admin", "admin", dialect).await;
        let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "impacket ({dialect}) said: {said}");
    }
    let evs = h.wait_for(Duration::from_secs(10), |evs| samples(evs).len() >= 2).await;
    let l = logins(&evs);
    assert_eq!(l.iter().map(|l| l.2).collect::<Vec<_>>(), vec![false, true, true]);
    let s: Vec<(String, String, SampleOutcome)> = samples(&evs).into_iter().map(|s| (s.0, s.2, s.4)).collect();
    let name = "ADMIN$\\PSEXESVC.exe".to_string();
    assert_eq!(
        s,
        vec![
            (sha256_hex(&bin), name.clone(), SampleOutcome::Kept),
            (sha256_hex(&bin), name, SampleOutcome::AlreadyKept),
        ],
        "the same binary twice: one sample"
    );
    assert_kept(&h, &bin);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doublepulsar_upload_with_impacket_is_decrypted_and_kept() {
    if !require_impacket() {
        return;
    }
    let h = Harness::start(&["smb"]).await;
    let port = h.port(Protocol::Smb).to_string();
    let dir = tempfile::tempdir().unwrap();
    // Three chunks: 4096 + 4096 + the rest.
    let shellcode = payload(10_000, 4);
    let local = dir.path().join("payload.bin");
    std::fs::write(&local, &shellcode).unwrap();
    let mut cmd = tokio::process::Command::new("/usr/bin/python3");
    cmd.arg(client_script("doublepulsar_upload.py")).args(["127.0.0.1", &port]).arg(&local);
    let out = run_client(cmd, Duration::from_secs(60)).await;
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "client said: {said}{}", String::from_utf8_lossy(&out.stderr));
    let answer: serde_json::Value = serde_json::from_str(said.trim()).unwrap();
    assert_eq!(answer["ping_mid"], 0x51);
    assert_eq!(answer["chunks"], serde_json::json!([0x10, 0x10, 0x10]), "every chunk answered 'success'");

    let evs = h.wait_for(Duration::from_secs(10), |evs| !samples(evs).is_empty()).await;
    let s = samples(&evs);
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].0, sha256_hex(&shellcode), "the decrypted payload is what was sent");
    assert_eq!((s[0].1, s[0].3.as_str(), s[0].4), (shellcode.len() as u64, "smb-doublepulsar", SampleOutcome::Kept));
    assert_kept(&h, &shellcode);
    let ex = exploits(&evs);
    let names: Vec<&str> = ex.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(names, vec!["doublepulsar-ping", "doublepulsar-exec"]);
    let key = answer["key"].as_u64().unwrap();
    assert_eq!(get(&ex[1].2, "xor_key"), format!("{key:#010x}"), "the key the client derived is ours");
    assert_eq!(get(&ex[1].2, "total"), shellcode.len().to_string());
}

#[test]
fn client_scripts_exist() {
    for s in ["smb_drop.py", "doublepulsar_upload.py"] {
        assert!(Path::new(&client_script(s)).is_file(), "{s}");
    }
}

/// 20 user/password pairs with what breaks naive parsers (quotes, colons, `%`, backslashes,
/// spaces, shell and SQL metacharacters, UTF-8 user names, an empty password), ending with the
/// weak pair admin:admin of the default accept list.
const HYDRA_PAIRS: [(&str, &str); 20] = [
    ("administrator", ""),
    ("administrator", "P@ssw0rd"),
    ("admin", "letmein"),
    ("o'brien", "quo\"te"),
    ("root", "a:b:c"),
    ("管理员", "password1"),
    ("user", "100%"),
    ("user", "%00%41%"),
    ("backup", "back\\slash"),
    ("backup", "\\\\double"),
    ("test", "trail  "),
    ("test", ";DROP TABLE users--"),
    ("guest", "$(id)`uname`"),
    ("guest", "<>&\"'"),
    ("svc", "{braces}[]"),
    ("svc", "tab\tinside"),
    ("ftp", "Summer2024!Summer2024!Summer2024!"),
    ("ftp", " lead"),
    ("Администратор", "qwerty"),
    ("admin", "admin"),
];

/// The (login, password) of each `[ATTEMPT]` line hydra -V prints.
fn hydra_attempts(out: &str) -> Vec<(String, String)> {
    out.lines()
        .filter(|l| l.starts_with("[ATTEMPT]"))
        .filter_map(|l| {
            let login_at = l.find(" - login \"")? + 10;
            let pass_sep = l[login_at..].find("\" - pass \"")? + login_at;
            let end = l.rfind("\" - ")?;
            Some((l[login_at..pass_sep].to_string(), l[pass_sep + 10..end].to_string()))
        })
        .collect()
}

/// The NTLMv1 response of a recorded hashcat 5500 line (`user::domain:lm:nt:challenge`).
fn ntlmv1_of(line: &str) -> (drosera_sensor::protocols::smb::NtlmAuth, [u8; 8]) {
    let f: Vec<&str> = line.rsplitn(4, ':').collect();
    let (challenge, nt, lm) = (hex::decode(f[0]).unwrap(), hex::decode(f[1]).unwrap(), hex::decode(f[2]).unwrap());
    let auth = drosera_sensor::protocols::smb::NtlmAuth { lm_response: lm, nt_response: nt, ..Default::default() };
    (auth, challenge.try_into().unwrap())
}

/// hydra's `smb` module (NTLMv1 in the basic SMB1 session setup): every pair is recorded, its
/// response proves the password hydra sent (so the hashcat 5500 line cracks to it), and the
/// weak pair gets in, so hydra reports it like on a badly run server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hydra_smb_logins_are_recorded_and_the_weak_pair_gets_in() {
    if !require_client("hydra") {
        return;
    }
    let h = Harness::start_with(smb_config(Persona::WindowsServer), Pressure::Normal, 100_000).await;
    let port = h.port(Protocol::Smb);
    let dir = tempfile::tempdir().unwrap();
    let list: String = HYDRA_PAIRS.iter().map(|(u, p)| format!("{u}:{p}\n")).collect();
    std::fs::write(dir.path().join("pairs"), list).unwrap();
    let mut cmd = tokio::process::Command::new("hydra");
    cmd.current_dir(dir.path());
    cmd.args(["-I", "-V", "-t", "1", "-C", "pairs", "-s", &port.to_string(), "smb://127.0.0.1"]);
    let out = run_client(cmd, Duration::from_secs(120)).await;
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(said.contains("1 valid password found"), "hydra said: {said}");
    assert!(said.contains("login: admin   password: admin"), "hydra said: {said}");
    let attempts = hydra_attempts(&said);
    let wanted: Vec<(String, String)> = HYDRA_PAIRS.iter().map(|(u, p)| (u.to_string(), p.to_string())).collect();
    assert_eq!(attempts, wanted, "hydra sent the list as written, in order; it said: {said}");

    let evs = h.wait_for(Duration::from_secs(20), |evs| logins(evs).len() >= 20).await;
    let l = logins(&evs);
    assert_eq!(l.len(), 20, "one login event per attempt: {l:?}");
    for ((user, secret, success, extra), (sent_user, sent_pass)) in l.iter().zip(&wanted) {
        assert_eq!(user, sent_user);
        assert_eq!(*success, (user.as_str(), sent_pass.as_str()) == ("admin", "admin"), "{user}:{sent_pass}");
        assert_eq!(get(extra, "method"), "smb1-basic");
        let Secret::Hash { format, value } = secret else { panic!("no hash for {user}") };
        assert_eq!(format, "hashcat-5500");
        assert!(value.starts_with(&format!("{user}::")), "{value}");
        let (auth, challenge) = ntlmv1_of(value);
        assert!(
            drosera_sensor::protocols::smb::ntlmv1_proves(&auth, &challenge, sent_pass),
            "the recorded response of {user} does not prove {sent_pass:?}"
        );
    }
}
