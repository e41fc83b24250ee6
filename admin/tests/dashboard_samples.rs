//! The dashboard's Samples pages over HTTP: login required, the list's filters and paging, a
//! sample's page (hashes, names, sightings, YARA matches, hex and strings preview) with a
//! hostile file name escaped, and the download: a ZIP that `unzip -P infected` (and `7z`, when
//! installed) opens to the exact bytes, fetched with curl.
// Tests may panic; the workspace denies unwrap/expect elsewhere.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod analytics_support;
use analytics_support::*;
use drosera_admin::samples::classify::Classifier;
use drosera_admin::samples::store::{Digests, SampleStore};
use drosera_admin::samples::SamplesConfig;
use drosera_admin::storage::{open_backend, Backend, FetchDone, NewFetch, NewSample, SampleMatch};
use drosera_uplink::event::{Detail, Protocol, SampleOutcome};
use std::process::{Command, Stdio};

/// True if `tool` runs; under `DROSERA_REQUIRE_CLIENTS=1` a missing tool fails the test.
fn have(tool: &str, arg: &str) -> bool {
    if Command::new(tool).arg(arg).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok() {
        return true;
    }
    assert!(std::env::var("DROSERA_REQUIRE_CLIENTS").as_deref() != Ok("1"), "{tool} is required");
    eprintln!("SKIP: {tool} not installed");
    false
}

/// A dashboard served from a background thread; stops when dropped.
struct Dash {
    addr: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Dash {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The dashboard with a sample store (see `analytics_support::serve_dashboard`).
fn serve(loc: &Backend, samples: SamplesConfig) -> Dash {
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    std_listener.set_nonblocking(true).unwrap();
    let addr = std_listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let loc = loc.clone();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let store = drosera_admin::storage::Shared::new(open_backend(&loc).unwrap());
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
            let cfg = drosera_admin::dashboard::DashboardConfig { cookie_secure: false, ..Default::default() };
            drosera_admin::dashboard::serve_listener_samples(
                listener,
                &cfg,
                Default::default(),
                store,
                std::sync::Arc::new(enricher()),
                Some(samples),
                async move {
                    let _ = rx.await;
                },
            )
            .await
            .unwrap();
        });
    });
    Dash { addr, stop: Some(tx), thread: Some(thread) }
}

/// Stores `bytes` as a sample (file and row, as ingest does) with a sighting named `name`.
fn put(
    db: &dyn drosera_admin::storage::Storage,
    store: &SampleStore,
    sensor: &str,
    seq: u64,
    name: &str,
    bytes: &[u8],
) -> String {
    let d = Digests::of(bytes);
    let c = Classifier::load(None).unwrap().classify(bytes);
    let stored = store.put(&d.sha256, bytes).unwrap();
    db.store_sample(
        &NewSample {
            sha256: d.sha256.clone(),
            md5: d.md5,
            sha1: d.sha1,
            size: bytes.len() as i64,
            stored_bytes: stored as i64,
            file_type: c.file_type,
            rules_version: "test".into(),
            matches: c
                .matches
                .into_iter()
                .map(|m| SampleMatch { namespace: m.namespace, rule: m.rule, tags: m.tags.join(" ") })
                .collect(),
        },
        0,
        T0,
    )
    .unwrap();
    let mut sha = [0u8; 32];
    hex::decode_to_slice(&d.sha256, &mut sha).unwrap();
    let detail = Detail::Sample {
        sha256: sha,
        size: bytes.len() as u64,
        name: name.into(),
        source: "ftp-stor".into(),
        outcome: SampleOutcome::Kept,
    };
    insert(db, sensor, &[ev(seq, T0 + seq as i64, Protocol::Ftp, "198.51.100.4", 21, seq, detail)]);
    d.sha256
}

fn login_session(a: std::net::SocketAddr) -> String {
    let r = http(a, "GET", "/login", &[], "");
    let c = r.cookies().into_iter().find(|c| c.starts_with("drosera_login=")).unwrap().to_string();
    let nonce = c.trim_start_matches("drosera_login=").split(';').next().unwrap().to_string();
    let cookie = format!("drosera_login={nonce}");
    let r = http(
        a,
        "POST",
        "/login",
        &[("Content-Type", "application/x-www-form-urlencoded"), ("Cookie", &cookie)],
        &format!("csrf={nonce}&username=admin&password=correct+horse"),
    );
    assert_eq!(r.status, 303);
    let sc = r.cookies().into_iter().find(|c| c.starts_with("drosera_session=")).unwrap().to_string();
    sc.split(';').next().unwrap().to_string()
}

#[test]
fn sample_pages_need_a_login_escape_what_attackers_chose_and_serve_an_encrypted_zip() {
    let dir = tempfile::tempdir().unwrap();
    let loc = location(&dir.path().join("a.db"));
    let db = open_backend(&loc).unwrap();
    drosera_admin::users::add_user(&*db, "admin", "correct horse").unwrap();
    let samples = SamplesConfig { dir: dir.path().join("samples"), ..Default::default() };
    let store = SampleStore::open(&samples.dir).unwrap();

    let mut elf = std::fs::read("/bin/true").unwrap();
    elf.extend_from_slice(b"\x00/bin/busybox MIRAI <script>alert(1)</script>\x00");
    let hostile = "<script>alert(1)</script>\u{202e}fle.sh";
    let sha_elf = put(&*db, &store, "pi-1", 1, hostile, &elf);
    let eicar = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*".to_vec();
    let sha_eicar = put(&*db, &store, "pi-2", 2, "eicar.com", &eicar);
    // Enough others for a second page.
    for i in 0..60u64 {
        put(&*db, &store, "pi-3", 10 + i, &format!("s{i}.sh"), format!("#!/bin/sh\necho {i}\n").as_bytes());
    }
    // Two fetches: one refused (its URL hostile), one that gave the ELF (a `fetch` sighting).
    let sensor_id = db.enrollment("pi-1").unwrap().unwrap().sensor_id;
    let fetch = |url: &str, seq: i64| NewFetch {
        url: url.into(),
        sensor_id,
        seq,
        offered_ms: T0,
        src_ip: "198.51.100.4".into(),
        protocol: "telnet".into(),
    };
    let bad_url = "http://10.0.0.1/<b>x</b>.elf";
    let id = db.claim_fetch(&fetch(bad_url, 1), 100).unwrap().unwrap();
    assert_eq!(db.claim_fetch(&fetch(bad_url, 2), 100).unwrap(), None, "each URL once");
    let done = |state, sha256: Option<String>, error: &str| FetchDone {
        state,
        status: sha256.as_ref().map(|_| 200),
        size: sha256.as_ref().map(|_| elf.len() as i64),
        sha256,
        error: error.into(),
        host: "198.51.100.9".into(),
    };
    db.finish_fetch(id, &done("refused", None, "refused to connect to 10.0.0.1 (<i>private</i>)"), T0 + 5).unwrap();
    let good_url = "http://198.51.100.9/x.elf";
    let id = db.claim_fetch(&fetch(good_url, 3), 100).unwrap().unwrap();
    db.finish_fetch(id, &done("fetched", Some(sha_elf.clone()), ""), T0 + 6).unwrap();
    let rows = db.list_fetches(10).unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!((rows[0].url.as_str(), rows[0].state.as_str(), rows[0].sensor.as_str()), (good_url, "fetched", "pi-1"));
    assert_eq!(db.queued_fetches(10).unwrap(), vec![]);

    let served = serve(&loc, samples);
    let a = served.addr;

    // Nothing without a session: pages redirect, the download too.
    for p in ["/samples".to_string(), format!("/samples/{sha_elf}"), format!("/samples/{sha_elf}/zip")] {
        let r = http(a, "GET", &p, &[], "");
        assert_eq!((r.status, r.header("location")), (303, Some("/login")), "{p}");
        assert!(!r.body.contains("ELF"), "{p}");
    }
    let session = login_session(a);
    let auth = [("Cookie", session.as_str())];

    // The list: filters by type, YARA rule, protocol and sensor; paging.
    let r = http(a, "GET", "/samples", &auth, "");
    assert_eq!(r.status, 200);
    assert!(r.body.contains(r#"<a href="/samples" class="active">Samples</a>"#), "nav entry");
    assert!(r.body.contains(r#"id="next-page" href="/samples?page=1""#), "{}", r.body);
    assert_eq!(r.body.matches("<tr data-key=\"").count(), 52, "one page of samples and the two fetches");
    assert!(r.body.contains("http://10.0.0.1/&lt;b&gt;x&lt;/b&gt;.elf"), "fetches escaped: {}", r.body);
    assert!(r.body.contains("(&lt;i&gt;private&lt;/i&gt;)") && !r.body.contains("<i>private"));
    assert!(r.body.contains(r#"<td class="state">refused</td>"#));
    let r = http(a, "GET", "/samples?page=1", &auth, "");
    assert_eq!(r.body.matches("<tr data-key=\"").count(), 12 + 2);
    assert!(r.body.contains(r#"id="prev-page""#) && !r.body.contains(r#"id="next-page""#));
    // The list's table only (the fetches table below links the fetched ELF too).
    let listed = |q: &str| {
        let r = http(a, "GET", &format!("/samples?{q}"), &auth, "");
        assert_eq!(r.status, 200);
        r.body.split(r#"id="fetches""#).next().unwrap().to_string()
    };
    let l = listed("type=ELF");
    assert!(l.contains(&sha_elf) && !l.contains(&sha_eicar), "{l}");
    let l = listed("rule=EICAR_Test_File");
    assert!(l.contains(&sha_eicar) && !l.contains(&sha_elf), "YARA filter: {l}");
    let l = listed("sensor=pi-2");
    assert!(l.contains(&sha_eicar) && !l.contains(&sha_elf));
    let r = http(a, "GET", "/samples?sensor=pi-2", &auth, "");
    assert_eq!(r.body.matches("<tr data-key=\"").count(), 1 + 2);
    let r = http(a, "GET", "/samples?protocol=http", &auth, "");
    assert!(r.body.contains(r#"id="no-samples""#));
    let r = http(a, "GET", "/samples?protocol=ftp&type=%3Cb%3E", &auth, "");
    assert!(r.body.contains(r#"value="&lt;b&gt;""#) && !r.body.contains("<b>"), "filters are echoed escaped");

    // One sample: hashes, type, names escaped, sightings, preview.
    let r = http(a, "GET", &format!("/samples/{sha_elf}"), &auth, "");
    assert_eq!(r.status, 200);
    let d = Digests::of(&elf);
    for h in [&d.sha256, &d.sha1, &d.md5] {
        assert!(r.body.contains(h.as_str()), "{h}");
    }
    assert!(r.body.contains(r#"<td class="mono" id="s-type">ELF 64-bit"#), "{}", r.body);
    assert!(r.body.contains(&format!(r#"id="s-size">{} bytes"#, elf.len())));
    assert!(r.body.contains(r#"id="s-sensors">pi-1<"#) && r.body.contains(r#"id="s-protocols">fetch, ftp<"#));
    assert!(r.body.contains(r#"id="s-sources">198.51.100.9, ftp-stor<"#), "{}", r.body);
    assert!(r.body.contains(r#"<li class="mono">http://198.51.100.9/x.elf</li>"#), "the URL is a name");
    assert!(!r.body.contains("<script"), "nothing the attacker chose is markup");
    assert!(r.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;\\u{202e}fle.sh"), "{}", r.body);
    assert!(r.body.contains("00000000  7f 45 4c 46"), "hex dump");
    assert!(r.body.contains("/bin/busybox MIRAI &lt;script&gt;") || elf.len() > 16 * 1024, "strings");
    assert!(r.body.contains(&format!(r#"href="/samples/{sha_elf}/zip""#)));
    let r = http(a, "GET", &format!("/samples/{sha_eicar}"), &auth, "");
    assert!(r.body.contains(r#"<tr data-key="EICAR_Test_File">"#), "{}", r.body);
    assert!(r.body.contains("EICAR-STANDARD-ANTIVIRUS-TEST-FILE"), "strings preview");
    assert_eq!(http(a, "GET", "/samples/not-a-hash", &auth, "").status, 404);
    assert_eq!(http(a, "GET", &format!("/samples/{}", "0".repeat(64)), &auth, "").status, 404);

    // The download, with curl: an encrypted ZIP holding the exact bytes.
    if !have("curl", "--version") || !have("unzip", "-v") {
        return;
    }
    let zip = dir.path().join("elf.zip");
    let out = Command::new("curl")
        .args(["-s", "-S", "-f", "-H", &format!("Cookie: {session}"), "-o"])
        .arg(&zip)
        .arg(format!("http://{a}/samples/{sha_elf}/zip"))
        .output()
        .unwrap();
    assert!(out.status.success(), "curl: {}", String::from_utf8_lossy(&out.stderr));
    let out = Command::new("unzip").args(["-P", "infected", "-p"]).arg(&zip).output().unwrap();
    assert!(out.status.success(), "unzip: {}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stdout == elf, "unzip -P infected gives other bytes");
    let wrong = Command::new("unzip").args(["-P", "wrong", "-p"]).arg(&zip).output().unwrap();
    assert!(wrong.stdout != elf, "the ZIP opens without the password");
    if have("7z", "i") {
        let x = dir.path().join("7z");
        let out =
            Command::new("7z").arg("x").arg("-pinfected").arg(format!("-o{}", x.display())).arg(&zip).output().unwrap();
        assert!(out.status.success(), "7z: {}", String::from_utf8_lossy(&out.stdout));
        assert!(std::fs::read(x.join(&sha_elf)).unwrap() == elf, "7z gives other bytes");
    }
    let no_auth = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("http://{a}/samples/{sha_elf}/zip"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&no_auth.stdout), "303");
}
