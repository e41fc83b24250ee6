//! Issue 16 on the admin side: the services added for Dionaea (MQTT, MongoDB, EPMAP, PPTP,
//! printer over TCP; TFTP, SIP, memcached, UPnP over UDP) and scan detection reach the report,
//! the dashboard and the export: a row and a bar per protocol (the chart's `scan` bar counts
//! source windows), the scans page's top scanned ports and top scanners with fingerprints, and
//! one exported line per event with its protocol and transport.
// Tests, benches and examples may panic; the workspace denies unwrap/expect elsewhere.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod analytics_support;
use analytics_support::*;
use drosera_admin::analytics::{self, Query};
use drosera_uplink::event::{Detail, Event, Protocol, Transport};

const RANGE: &str = "since=1714521600000&until=1715385600000";

fn all() -> Query {
    Query { since_ms: Some(T0), until_ms: Some(T0 + 10 * DAY), sensor: None, ..Default::default() }
}

/// The new services: protocol, port, transport.
const SERVICES: [(Protocol, u16, Transport); 9] = [
    (Protocol::Mqtt, 1883, Transport::Tcp),
    (Protocol::Mongodb, 27017, Transport::Tcp),
    (Protocol::Epmap, 135, Transport::Tcp),
    (Protocol::Pptp, 1723, Transport::Tcp),
    (Protocol::Printer, 9100, Transport::Tcp),
    (Protocol::Tftp, 69, Transport::Udp),
    (Protocol::Sip, 5060, Transport::Udp),
    (Protocol::Memcached, 11211, Transport::Tcp),
    (Protocol::Upnp, 1900, Transport::Udp),
];

fn scan(seq: u64, t: i64, ip: &str, ports: Vec<u16>, packets: u64, fp: Option<(&str, u64)>) -> Event {
    let mut e = ev(seq, t, Protocol::Scan, ip, ports.first().copied().unwrap_or(0), 0, conn());
    e.detail = Detail::ScanWindow {
        window_start_ms: t - t % 60_000,
        window_ms: 60_000,
        packets,
        distinct_ports: ports.len() as u32,
        distinct_exact: true,
        ports,
        fingerprints: fp.iter().map(|(n, c)| (n.to_string(), *c)).collect(),
        kernel_drops: 0,
    };
    e.priority = e.detail.default_priority();
    e
}

#[test]
fn dionaea_protocols_and_scans_in_report_dashboard_and_export() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = fixture(&dir.path().join("a.db"));
    drosera_admin::users::add_user(&*c, "admin", "correct horse").unwrap();
    let t = T0 + HOUR;
    let mut evs = Vec::new();
    let mut seq = 0;
    // Service i gets i + 1 connections from its own address (so every count is distinct).
    for (i, (p, port, transport)) in SERVICES.iter().enumerate() {
        for _ in 0..=i {
            seq += 1;
            let mut e = ev(seq, t + seq as i64, *p, &format!("203.0.113.{}", i + 1), *port, 1000 + seq, conn());
            e.transport = *transport;
            evs.push(e);
        }
    }
    // Two scanners: an nmap SYN scan of 40 ports, a Mirai-style scanner on 23 and 2323 in two
    // windows.
    for (ip, ports, packets, fp, dt) in [
        ("198.51.100.7", (1..=40).collect::<Vec<u16>>(), 40, ("nmap", 40), 0),
        ("198.51.100.99", vec![23, 2323], 60, ("mirai", 60), 0),
        ("198.51.100.99", vec![23], 7, ("mirai", 7), 60_000),
    ] {
        seq += 1;
        evs.push(scan(seq, t + 5_000 + dt, ip, ports, packets, Some(fp)));
    }
    insert(&*c, "s3", &evs);
    analytics::refresh(&mut *c, &enricher()).unwrap();

    // The report: a row per new protocol with its attempts, and the scan row (windows, no
    // attempts).
    let report = analytics::report(&*c, &all(), 0, 50).unwrap();
    for (i, (p, _, _)) in SERVICES.iter().enumerate() {
        let row = report.protocols.iter().find(|r| r.protocol == p.as_str()).unwrap_or_else(|| panic!("{p} row"));
        assert_eq!(row.attempts, i as i64 + 1, "{p}");
    }
    let scan_row = report.protocols.iter().find(|r| r.protocol == "scan").expect("scan row");
    assert_eq!((scan_row.attempts, scan_row.events), (0, 3));
    assert_eq!((report.scans.packets, report.scans.scanners, report.scans.windows), (107, 2, 3));

    let served = serve_dashboard(&c.loc, false);
    let a = served.addr;
    let r = http(a, "GET", "/login", &[], "");
    let cookie = r.cookies().into_iter().find(|c| c.starts_with("drosera_login=")).unwrap().to_string();
    let nonce = cookie.trim_start_matches("drosera_login=").split(';').next().unwrap().to_string();
    let r = http(
        a,
        "POST",
        "/login",
        &[("Content-Type", "application/x-www-form-urlencoded"), ("Cookie", &format!("drosera_login={nonce}"))],
        &format!("csrf={nonce}&username=admin&password=correct+horse"),
    );
    assert_eq!(r.status, 303);
    let sc = r.cookies().into_iter().find(|c| c.starts_with("drosera_session=")).unwrap().to_string();
    let session = sc.split(';').next().unwrap().to_string();
    let auth = [("Cookie", session.as_str())];

    // The overview's protocol chart: a bar per new protocol (its attempts) and the scan bar
    // (its source windows), and the protocol table.
    let r = http(a, "GET", &format!("/?{RANGE}"), &auth, "");
    assert_eq!(r.status, 200);
    let chart = r.body.split(r#"aria-label="attempts per protocol (scan: source windows)""#).nth(1).unwrap();
    let chart = chart.split("</svg>").next().unwrap();
    let bar = |label: &str, v: i64| {
        chart.contains(&format!(r##"fill="#111827">{label}</text>"##))
            && chart
                .split(&format!(r#">{label}</text>"#))
                .nth(1)
                .unwrap()
                .contains(&format!(r##"fill="#374151">{v}</text>"##))
    };
    for (i, (p, _, _)) in SERVICES.iter().enumerate() {
        assert!(bar(p.as_str(), i as i64 + 1), "no {p} bar of {} in {chart}", i + 1);
    }
    assert!(bar("scan", 3), "no scan bar of 3 windows in {chart}");

    // The API's protocol list is the library's.
    let r = http(a, "GET", &format!("/api/protocols?{RANGE}"), &auth, "");
    assert_eq!(r.status, 200, "{}", r.body);
    let got: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(got, serde_json::to_value(analytics::protocols(&*c, &all()).unwrap()).unwrap());

    // The scans page: totals, fingerprints, top scanned ports, top scanners.
    let r = http(a, "GET", &format!("/scans?{RANGE}"), &auth, "");
    assert_eq!(r.status, 200);
    assert!(r.body.contains(r#"id="scan-packets">107<"#), "{}", r.body);
    let ports = r.body.split(r#"<table id="scan-ports">"#).nth(1).unwrap().split("</table>").next().unwrap();
    // 23 is in the nmap window (1-40) and both Mirai windows.
    assert!(ports.contains("<tbody><tr><td>23</td><td>tcp</td><td>3</td></tr>"), "{ports}");
    let scanners = r.body.split(r#"<table id="scanners">"#).nth(1).unwrap().split("</table>").next().unwrap();
    assert!(
        scanners.contains("<tr><td><a class=\"ip mono\" href=\"/attacker/198.51.100.99\">198.51.100.99</a></td><td>67</td><td>2</td><td>2</td><td>mirai 67</td>"),
        "{scanners}"
    );
    assert!(
        scanners.contains("<tr><td><a class=\"ip mono\" href=\"/attacker/198.51.100.7\">198.51.100.7</a></td><td>40</td><td>1</td><td>40</td><td>nmap 40</td>"),
        "{scanners}"
    );

    // The export: one line per event with its protocol and transport.
    let mut out = Vec::new();
    drosera_admin::export::export(&*c, &all(), drosera_admin::export::Format::EventsJsonl, &mut out).unwrap();
    let lines: Vec<serde_json::Value> =
        String::from_utf8(out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    for (i, (p, port, transport)) in SERVICES.iter().enumerate() {
        let mine: Vec<&serde_json::Value> = lines.iter().filter(|l| l["protocol"] == p.as_str()).collect();
        assert_eq!(mine.len(), i + 1, "{p}");
        assert!(
            mine.iter().all(|l| l["transport"] == transport.as_str() && l["destination_port"] == *port),
            "{p}: {mine:?}"
        );
    }
    let scans: Vec<&serde_json::Value> = lines.iter().filter(|l| l["kind"] == "scan_window").collect();
    assert_eq!(scans.len(), 3);
    assert!(scans.iter().any(|l| l["source_ip"] == "198.51.100.7" && l["fingerprints"] == "nmap:40"), "{scans:?}");
}
