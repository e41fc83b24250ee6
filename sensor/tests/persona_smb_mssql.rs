//! Each persona's SMB and MSSQL, as nmap sees them: `nmap -sV --version-light` names one
//! product per port, and `smb-os-discovery`, `smb-vuln-ms17-010`, `smb2-time`, `ms-sql-info`
//! and `ms-sql-ntlm-info` tell the same story (Windows Server 2008 R2 with SQL Server 2012 SP4, or
//! Samba with SQL Server 2019 on Linux).
//!
//! nmap's SMB scripts only look at ports 445 and 139 (`smb-os-discovery` fails on any other
//! port: its version augmentation indexes a UDP port that does not exist), and `--version-light`
//! tries the SMB and MSSQL probes only on their own ports, so each persona gets 445 and 1433 on
//! its own loopback address (127.0.0.201-204). Binding them needs root: without it these tests
//! skip, like the other root-only tests.
//!
//! nmap 7.93 (Debian 12) has two bugs in `nselib/mssql.lua` that keep every `ms-sql-*` script
//! from printing against any server: `Helper.GetTargetInstances` returns nil instead of the
//! instances found on a port (the scripts then die on `ipairs(nil)`), and `InitScript` tests
//! `#output > 0` on a table keyed by strings (always 0, so the output is dropped). Later nmap
//! releases fixed both. The test runs the real scripts with a copy of `mssql.lua` with those
//! two lines fixed (`--datadir`); when the installed nmap has neither bug, it runs unchanged.
// Integration tests and benches may panic; the workspace denies unwrap/expect elsewhere.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use drosera_sensor::config::Persona;
use drosera_sensor::governor::Pressure;
use drosera_uplink::event::{Detail, Event};
use std::path::Path;
use std::time::Duration;
use support::{config_for, require_client, run_client, Harness};

/// A data directory with nmap 7.93's `mssql.lua`, its two output bugs fixed (see above).
/// None when the installed library has neither.
fn fixed_mssql_lua(dir: &Path) -> Option<()> {
    let lua = std::fs::read_to_string("/usr/share/nmap/nselib/mssql.lua").ok()?;
    let fixes = [
        (
            "local status, instances = Helper.GetDiscoveredInstances(host, port)\n      if status then",
            "local instances = Helper.GetDiscoveredInstances(host, port)\n      if instances then",
        ),
        (
            "if #output > 0 then\n        return outlib.sorted_by_key(output)",
            "if next(output) then\n        return outlib.sorted_by_key(output)",
        ),
    ];
    if !fixes.iter().any(|(bug, _)| lua.contains(bug)) {
        return None;
    }
    let fixed = fixes.iter().fold(lua, |l, (bug, fix)| l.replace(bug, fix));
    std::fs::create_dir_all(dir.join("nselib")).unwrap();
    std::fs::write(dir.join("nselib/mssql.lua"), fixed).unwrap();
    Some(())
}

/// Runs nmap against SMB (445) and MSSQL (1433) of `persona` on `addr`; returns its output and
/// the events the sensor recorded. None when not root.
async fn scan(persona: Persona, addr: &str) -> Option<(String, Vec<Event>)> {
    if !require_client("nmap") {
        return None;
    }
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIP: not running as root (cannot bind 445 and 1433)");
        return None;
    }
    let mut cfg = config_for(&["smb", "mssql"]);
    cfg.sensor.persona = persona;
    for (svc, port) in cfg.services.iter_mut().zip([445, 1433]) {
        svc.bind = addr.parse().unwrap();
        svc.ports = vec![port];
    }
    let h = Harness::start_with(cfg, Pressure::Normal, 100_000).await;
    let datadir = tempfile::tempdir().unwrap();
    let mut cmd = tokio::process::Command::new("nmap");
    cmd.args(["-Pn", "-n", "-sV", "--version-light", "-p", "445,1433"]);
    cmd.args(["--script", "smb-os-discovery,smb-vuln-ms17-010,smb2-time,ms-sql-info,ms-sql-ntlm-info"]);
    cmd.args(["--script-args", "vulns.showall,mssql.scanned-ports-only=true"]);
    if fixed_mssql_lua(datadir.path()).is_some() {
        cmd.arg("--datadir").arg(datadir.path());
    }
    cmd.arg(addr);
    let out = run_client(cmd, Duration::from_secs(120)).await;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    // Shown with --nocapture (and when an assertion fails, cargo prints it).
    eprintln!("nmap against {persona:?} on {addr}:\n{text}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    Some((text, h.events()))
}

fn assert_has(text: &str, wanted: &[&str]) {
    for w in wanted {
        assert!(text.contains(w), "nmap did not say {w:?}:\n{text}");
    }
}

/// nmap's guest login (basic security, no UNICODE flag) is recorded as `guest`.
fn assert_guest_recorded(evs: &[Event]) {
    assert!(
        evs.iter().any(|e| matches!(&e.detail, Detail::Login { username, success: false, .. } if username == "guest")),
        "nmap's guest login not recorded by its name"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_server_persona() {
    let Some((text, evs)) = scan(Persona::WindowsServer, "127.0.0.201").await else { return };
    assert_has(
        &text,
        &[
            "445/tcp  open  microsoft-ds Windows Server 2008 R2 Standard 7601 Service Pack 1 microsoft-ds",
            "1433/tcp open  ms-sql-s     Microsoft SQL Server 2012 11.00.7001",
            "OS: Windows Server 2008 R2 Standard 7601 Service Pack 1 (Windows Server 2008 R2 Standard 6.1)",
            "NetBIOS computer name: FILESRV01",
            "Workgroup: WORKGROUP",
            "State: VULNERABLE",
            "name: Microsoft SQL Server 2012 SP4",
            "NetBIOS_Computer_Name: FILESRV01",
            "Product_Version: 6.1.7601",
            "OS: Windows",
            // smb2-time: Windows names its boot time (Samba says N/A).
            "start_date: 20",
        ],
    );
    assert!(!text.contains("Samba"));
    assert_guest_recorded(&evs);
    assert!(evs.iter().any(|e| matches!(&e.detail, Detail::Exploit { cve, .. } if cve == "CVE-2017-0143")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_persona_is_the_windows_server() {
    let Some((text, _)) = scan(Persona::Mixed, "127.0.0.202").await else { return };
    assert_has(&text, &["Windows Server 2008 R2 Standard 7601", "Microsoft SQL Server 2012", "State: VULNERABLE"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linux_server_persona() {
    let Some((text, evs)) = scan(Persona::LinuxServer, "127.0.0.203").await else { return };
    assert_has(
        &text,
        &[
            "445/tcp  open  netbios-ssn Samba smbd 4.17.12-Debian",
            "1433/tcp open  ms-sql-s    Microsoft SQL Server 2019 15.00.4153",
            "OS: Windows 6.1 (Samba 4.17.12-Debian)",
            "State: NOT VULNERABLE",
            "NetBIOS_Domain_Name: WORKGROUP",
            "start_date: N/A",
        ],
    );
    assert!(!text.contains("Windows Server 2008"));
    assert_guest_recorded(&evs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iot_router_persona() {
    let Some((text, _)) = scan(Persona::IotRouter, "127.0.0.204").await else { return };
    assert_has(
        &text,
        &[
            "445/tcp  open  netbios-ssn Samba smbd",
            "OS: Unix (Samba 3.6.25)",
            "NetBIOS computer name: ROUTER",
            "State: NOT VULNERABLE",
        ],
    );
    assert!(!text.contains("Windows Server 2008"));
}
