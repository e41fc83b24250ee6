//! Issue 21: screenshots of every dashboard page in headless Chromium (Debian's `chromium`),
//! on a database holding every protocol, addresses of many countries, credentials, payloads,
//! exploits, downloads, scans and a sensor health sample. Each screenshot must be a real
//! picture (a PNG well above the size of a blank page), the world map must be drawn with
//! countries filled, and the flags must be drawn with a colour emoji font (the field report's
//! operator saw no flags), which Chromium reports through DevTools.
//!
//! With `DROSERA_UPDATE_SCREENSHOTS=1` the PNGs are also written to `docs/screenshots/`
//! (referenced from README.md and docs/api.md); otherwise to the test's temporary directory.
//! Without `/usr/bin/chromium` the test is skipped, unless `DROSERA_REQUIRE_CLIENTS=1` (CI).
// Tests, benches and examples may panic; the workspace denies unwrap/expect elsewhere.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod analytics_support;
mod chromium_support;
use analytics_support::*;
use chromium_support::{logged_in, Launch, LoggedIn};
use drosera_uplink::event::{Detail, Event, Health, Protocol};
use serde_json::json;
use std::time::Duration;

const EMOJI_FONT: &str = "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf";
const RANGE: &str = "since=1714521600000&until=1715385600000";

/// Public addresses registered in different countries (the shipped country database is by
/// registrant), one per seeded protocol, cycling.
const ADDRESSES: [&str; 16] = [
    "8.8.8.8",
    "1.1.1.1",
    "77.88.8.8",
    "114.114.114.114",
    "91.198.174.192",
    "200.160.2.3",
    "202.12.27.33",
    "193.0.14.129",
    "194.0.1.1",
    "41.1.1.1",
    "101.0.0.1",
    "85.214.1.1",
    "62.210.1.1",
    "213.180.193.1",
    "177.1.1.1",
    "103.4.96.1",
];

const LAUNCH: Launch<'static> = Launch {
    window: (1280, 900),
    hide_scrollbars: true,
    needs: &[EMOJI_FONT],
    packages: "chromium fonts-noto-color-emoji",
    domains: &["DOM", "CSS"],
    timeout: Duration::from_secs(60),
};

/// Every protocol the sensor speaks, each from its own address, with a login on the ones that
/// have logins and a scan window for scan detection; plus the shared fixture (payloads,
/// exploits, downloads, rollups, health).
fn seed(c: &Db) {
    let mut events = Vec::new();
    let mut seq = 10_000;
    for (i, p) in Protocol::ALL.into_iter().filter(|p| *p != Protocol::Sensor).enumerate() {
        let ip = ADDRESSES[i % ADDRESSES.len()];
        let t = T0 + (i as i64 % 20) * HOUR + 5 * 60_000;
        // More attempts for some, so the map and the charts have several shades.
        for k in 0..(1 + (i % 5) * 3) {
            let session = 50_000 + (i * 100 + k) as u64;
            seq += 1;
            if p == Protocol::Scan {
                events.push(ev(
                    seq,
                    t,
                    p,
                    ip,
                    0,
                    0,
                    Detail::ScanWindow {
                        window_start_ms: t,
                        window_ms: 60_000,
                        packets: 500,
                        distinct_ports: 40,
                        distinct_exact: true,
                        ports: vec![22, 23, 80, 445, 3389],
                        fingerprints: vec![("mirai".into(), 300), ("zmap".into(), 200)],
                        kernel_drops: 0,
                    },
                ));
                break;
            }
            if k % 2 == 0 {
                events.push(ev(seq, t, p, ip, 1000 + i as u16, session, login("admin", &format!("pass{k}"))));
                seq += 1;
            }
            events.push(ev(seq, t + 1000, p, ip, 1000 + i as u16, session, conn()));
        }
    }
    let mut health = Event::internal(Detail::Health(Health {
        uptime_s: 3600,
        rss_bytes: 30 << 20,
        mem_available_bytes: 300 << 20,
        cpu_permille: 120,
        disk_free_bytes: 2 << 30,
        store_bytes: 5 << 20,
        cap_bytes: 100 << 20,
        backlog_events: 0,
        governor: "normal".into(),
        ..Default::default()
    }));
    seq += 1;
    health.seq = seq;
    health.time_ms = T0 + 21 * HOUR;
    events.push(health);
    insert(&**c, "pi-field", &events);
}

#[test]
fn chromium_screenshots_every_page_with_the_map_and_flags() {
    let dir = tempfile::tempdir().unwrap();
    let c = fixture(&dir.path().join("a.db"));
    seed(&c);
    let Some(LoggedIn { served: _served, browser: _browser, cdp: mut b, base }) = logged_in(c, &LAUNCH) else {
        return;
    };

    let out_dir = if std::env::var("DROSERA_UPDATE_SCREENSHOTS").as_deref() == Ok("1") {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/screenshots")
    } else {
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots")
    };
    std::fs::create_dir_all(&out_dir).unwrap();
    // The size of a blank page's PNG at the same size, the measure of "non-trivial" below.
    b.call("Page.navigate", json!({ "url": "data:text/html,<body style='background:%23f3f4f6'></body>" }));
    std::thread::sleep(Duration::from_millis(500));
    let blank = b.call(
        "Page.captureScreenshot",
        json!({ "format": "png", "captureBeyondViewport": true,
                "clip": { "x": 0, "y": 0, "width": 1280, "height": 1400, "scale": 0.5 } }),
    );
    use base64::Engine;
    let blank = base64::engine::general_purpose::STANDARD.decode(blank["data"].as_str().unwrap()).unwrap();
    for (path, name) in [
        ("/", "overview"),
        ("/attackers", "attackers"),
        ("/credentials", "credentials"),
        ("/payloads", "payloads"),
        ("/scans", "scans"),
        ("/sensors", "sensors"),
    ] {
        let min = if path == "/attackers" { "&min_attempts=2" } else { "" };
        b.goto(&base, &format!("{path}?{RANGE}{min}"), path);
        let text = b.eval("document.querySelector('main').innerText");
        assert!(!text.as_str().unwrap().contains("error"), "{path}: {text}");
        // The whole page (up to 4000 CSS pixels down) at half scale: the map and the charts
        // are below the fold.
        let metrics = b.call("Page.getLayoutMetrics", json!({}));
        let height = metrics["cssContentSize"]["height"].as_f64().unwrap().min(4000.0);
        let shot = b.call(
            "Page.captureScreenshot",
            json!({ "format": "png", "captureBeyondViewport": true,
                    "clip": { "x": 0, "y": 0, "width": 1280, "height": height, "scale": 0.5 } }),
        );
        let png = base64::engine::general_purpose::STANDARD.decode(shot["data"].as_str().unwrap()).unwrap();
        assert!(png.starts_with(b"\x89PNG"), "{path}");
        // A blank page of the same size compresses to a few KiB; tables, charts and text do not.
        assert!(png.len() > 4 * blank.len(), "{path}: {} bytes, a blank page {}", png.len(), blank.len());
        std::fs::write(out_dir.join(format!("{name}.png")), &png).unwrap();

        // Tables: each with rows and a CSV link.
        let tables = b.eval("document.querySelectorAll('main table').length").as_i64().unwrap();
        let links = b.eval("document.querySelectorAll('main a.csv').length").as_i64().unwrap();
        assert!(tables > 0 && links == tables, "{path}: {tables} tables, {links} CSV links");
    }
    eprintln!("screenshots in {}", out_dir.display());

    // The overview's map: every country shape drawn at a real size, several filled.
    b.goto(&base, &format!("/?{RANGE}"), "/");
    let map = b.eval(
        "(() => { const m = document.getElementById('world-map'); const r = m.getBoundingClientRect();
          const ps = [...m.querySelectorAll('path')];
          return [r.width, r.height, ps.length, ps.filter(p => +p.dataset.attempts > 0).length,
                  ps.filter(p => p.getBBox().width > 0).length]; })()",
    );
    let m: Vec<f64> = serde_json::from_value(map).unwrap();
    assert!(m[0] > 500.0 && m[1] > 150.0, "map size {m:?}");
    assert!(m[2] > 150.0 && m[4] == m[2], "every country drawn: {m:?}");
    assert!(m[3] >= 6.0, "countries with attempts filled: {m:?}");
    // Flags: regional-indicator pairs drawn with the colour emoji font, code and name beside.
    let flag = b.eval("document.querySelector('#countries .flag').textContent");
    let flag = flag.as_str().unwrap();
    assert_eq!(flag.chars().count(), 2);
    assert!(flag.chars().all(|c| ('\u{1F1E6}'..='\u{1F1FF}').contains(&c)), "{flag:?}");
    let fonts = b.fonts_of("#countries .flag");
    assert!(fonts.iter().any(|f| f == "Noto Color Emoji"), "flag drawn with {fonts:?}");
    // The check tells fonts apart: the code beside the flag is plain text.
    let text_fonts = b.fonts_of("#countries .cc");
    assert!(!text_fonts.is_empty() && !text_fonts.iter().any(|f| f == "Noto Color Emoji"), "{text_fonts:?}");
    let row = b.eval("document.querySelector('#countries tr[data-key=\"US\"] td.country').innerText");
    assert!(row.as_str().unwrap().contains("US United States of America"), "{row}");

    // The attackers page draws the field report's three charts.
    b.goto(&base, &format!("/attackers?{RANGE}&min_attempts=2"), "/attackers");
    for id in ["chart-attackers-by-country", "chart-attacks-by-country", "chart-protocols-log"] {
        let cols = b.eval(&format!("document.querySelectorAll('#{id} rect.col').length")).as_i64().unwrap();
        assert!(cols >= 3, "{id}: {cols} columns");
    }
    let protocols = b.eval("document.querySelectorAll('#chart-protocols-log rect.col').length").as_i64().unwrap();
    assert!(protocols >= 24, "every protocol seeded is drawn: {protocols}");
}
