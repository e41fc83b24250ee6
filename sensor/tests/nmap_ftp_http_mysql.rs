//! `nmap -sV` (Debian's nmap, with the NSE scripts a scanner runs on these ports) against FTP,
//! HTTP and MySQL under each `[sensor] persona` (issue 14, Believability): every port is named
//! with one product and version of the persona's story, nothing is left unrecognised (no
//! fingerprint to submit), the "Service Info: OS" agrees with the persona, `ftp-anon` does not
//! find anonymous FTP (the login policy refuses it), and the sensor records the scan's logins.
// Integration tests and benches may panic; the workspace denies unwrap/expect elsewhere.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use drosera_sensor::config::Persona;
use drosera_sensor::governor::Pressure;
use drosera_uplink::event::{Detail, Protocol};
use std::time::Duration;
use support::{config_for, require_client, run_client, Harness};

/// What nmap said about one port: (service name, version text).
fn port_line(output: &str, port: u16) -> (String, String) {
    let prefix = format!("{port}/tcp ");
    let line = output.lines().find(|l| l.starts_with(&prefix)).unwrap_or_else(|| panic!("no {port} in:\n{output}"));
    let mut parts = line.split_whitespace();
    let (_, state, service) = (parts.next(), parts.next(), parts.next().unwrap_or_default().to_string());
    assert_eq!(state, Some("open"), "{line}");
    (service, parts.collect::<Vec<_>>().join(" "))
}

/// Scans FTP, HTTP and MySQL of a sensor with `persona`; checks each port's product and the
/// OS line. `want` is (ftp, http, mysql) version texts as nmap prints them.
async fn scan(persona: Persona, want: [&str; 3], os: &str) {
    if !require_client("nmap") {
        return;
    }
    let mut cfg = config_for(&["ftp", "http", "mysql"]);
    cfg.sensor.persona = persona;
    let h = Harness::start_with(cfg, Pressure::Normal, 100_000).await;
    let ports = [h.port(Protocol::Ftp), h.port(Protocol::Http), h.port(Protocol::Mysql)];
    let list = ports.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(",");
    let mut cmd = tokio::process::Command::new("nmap");
    // -sT: a plain connect scan (no raw sockets); -Pn -n: loopback, no ping, no DNS.
    cmd.args(["-Pn", "-n", "-sT", "-sV", "--script", "ftp-anon,http-title,http-server-header,mysql-info", "-p"])
        .arg(&list)
        .arg("127.0.0.1");
    let out = run_client(cmd, Duration::from_secs(120)).await;
    let output = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("nmap, persona {persona:?}:\n{output}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{output}");
    for (port, (service, version)) in ports.iter().zip([("ftp", want[0]), ("http", want[1]), ("mysql", want[2])]) {
        assert_eq!(port_line(&output, *port), (service.to_string(), version.to_string()), "{output}");
    }
    assert!(!output.contains("SF-Port"), "every service is recognised:\n{output}");
    let info = output.lines().find(|l| l.starts_with("Service Info:")).unwrap_or_else(|| panic!("{output}"));
    assert!(info.starts_with(&format!("Service Info: OS: {os}")), "{info}");
    assert!(!output.contains("Anonymous FTP login allowed"), "{output}");
    // The scan itself is recorded: ftp-anon's refused anonymous login, mysql-info's connection,
    // and the HTTP requests of -sV and the scripts.
    h.wait_for(Duration::from_secs(20), |evs| {
        evs.iter().any(|e| {
            e.protocol == Protocol::Ftp
                && matches!(&e.detail, Detail::Login { username, success: false, .. } if username == "anonymous")
        }) && evs.iter().any(|e| e.protocol == Protocol::Mysql && matches!(e.detail, Detail::Connection { .. }))
            && evs.iter().any(|e| matches!(e.detail, Detail::HttpRequest { .. }))
    })
    .await;
    assert!(!h.events().iter().any(|e| matches!(e.detail, Detail::Login { success: true, .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nmap_names_one_story_for_the_mixed_persona() {
    scan(Persona::Mixed, ["vsftpd 3.0.3", "Apache httpd 2.4.62 ((Debian))", "MySQL 8.0.36"], "Unix").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nmap_names_debian_products_for_the_linux_server_persona() {
    let want = ["vsftpd 3.0.3", "Apache httpd 2.4.62 ((Debian))", "MySQL 5.5.5-10.11.6-MariaDB-0+deb12u1"];
    scan(Persona::LinuxServer, want, "Unix").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nmap_names_microsoft_products_for_the_windows_server_persona() {
    scan(Persona::WindowsServer, ["Microsoft ftpd", "Microsoft IIS httpd 10.0", "MySQL 8.0.36"], "Windows").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nmap_names_router_products_for_the_iot_router_persona() {
    scan(Persona::IotRouter, ["vsftpd 3.0.3", "lighttpd 1.4.59", "MySQL 5.5.5-10.11.6-MariaDB"], "Unix").await;
}
