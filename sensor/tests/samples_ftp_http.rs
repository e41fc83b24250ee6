//! Samples (issue 15) delivered with the ordinary client, curl: an ELF binary uploaded over FTP
//! and sent as an HTTP POST and PUT body lands byte-identical in the sample area with a `Kept`
//! sample event; the same bytes again are `AlreadyKept` (one file); ten times the area's cap
//! uploaded leaves the area under its cap, and every upload that was not kept says why; bodies
//! that curl sends in chunks (`Transfer-Encoding: chunked`) are kept whole too.
// Integration tests and benches may panic; the workspace denies unwrap/expect elsewhere.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use drosera_sensor::config::Config;
use drosera_sensor::governor::Pressure;
use drosera_uplink::event::{Detail, Event, Protocol, SampleOutcome};
use std::path::{Path, PathBuf};
use std::time::Duration;
use support::{config_for, require_client, run_client, sha256_hex, Harness};

/// (sha256 hex, size, name, source, outcome) of every sample event, in order.
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

/// The kept sample files (not the `tmp/` folder of parts).
fn kept_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| e.path())
        .collect();
    v.sort();
    v
}

/// A config with FTP and HTTP where the listed weak pairs are accepted at once.
fn config() -> Config {
    let mut cfg = config_for(&["ftp", "http"]);
    cfg.credentials.refuse_first = 0;
    cfg
}

/// Runs curl with `args`; it must succeed.
async fn curl(args: &[&str]) {
    let mut cmd = tokio::process::Command::new("curl");
    cmd.args(["-sS", "--max-time", "30", "-o", "/dev/null"]).args(args);
    let out = run_client(cmd, Duration::from_secs(40)).await;
    assert!(out.status.success(), "curl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// An ELF binary of this machine, copied (three different ones).
fn elf(name: &str) -> Vec<u8> {
    let bytes = std::fs::read(Path::new("/usr/bin").join(name)).unwrap();
    assert_eq!(&bytes[..4], b"\x7fELF", "/usr/bin/{name} is an ELF file");
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_ftp_upload_and_http_post_and_put_of_elf_files_are_kept_byte_identical() {
    if !require_client("curl") {
        return;
    }
    let h = Harness::start_with(config(), Pressure::Normal, 100_000).await;
    let dir = tempfile::tempdir().unwrap();
    let (ftp_elf, post_elf, put_elf) = (elf("ls"), elf("cat"), elf("true"));
    for (name, bytes) in [("ls", &ftp_elf), ("cat", &post_elf), ("true", &put_elf)] {
        std::fs::write(dir.path().join(name), bytes).unwrap();
    }
    let path = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    let ftp = format!("ftp://127.0.0.1:{}/", h.port(Protocol::Ftp));
    let http = format!("http://127.0.0.1:{}", h.port(Protocol::Http));
    curl(&["-T", &path("ls"), "--user", "root:root", &ftp]).await;
    // curl's default content type for --data-binary is the url-encoded form one: the bytes are
    // still a file, not a login form.
    curl(&["--data-binary", &format!("@{}", path("cat")), &format!("{http}/upload.php")]).await;
    curl(&["-T", &path("true"), &format!("{http}/dav/true")]).await;
    let evs = h.wait_for(Duration::from_secs(20), |evs| samples(evs).len() >= 3).await;
    let got = samples(&evs);
    assert_eq!(
        got,
        vec![
            (sha256_hex(&ftp_elf), ftp_elf.len() as u64, "ls".into(), "ftp-stor".into(), SampleOutcome::Kept),
            (
                sha256_hex(&post_elf),
                post_elf.len() as u64,
                "/upload.php".into(),
                "http-body".into(),
                SampleOutcome::Kept
            ),
            (sha256_hex(&put_elf), put_elf.len() as u64, "/dav/true".into(), "http-body".into(), SampleOutcome::Kept),
        ]
    );
    for bytes in [&ftp_elf, &post_elf, &put_elf] {
        let kept = h.samples_dir().join(sha256_hex(bytes));
        assert_eq!(&std::fs::read(&kept).unwrap(), bytes, "{} is byte-identical", kept.display());
    }
    // Each request names its body, and no body is a login.
    let puts =
        evs.iter().filter(|e| matches!(&e.detail, Detail::HttpRequest { method, .. } if method == "PUT")).count();
    assert_eq!(puts, 1);
    assert!(!evs.iter().any(|e| matches!(e.detail, Detail::Login { .. } if e.protocol == Protocol::Http)));
    // The same bytes again, over the other protocol: one more sighting, still one file.
    curl(&["-T", &path("ls"), &format!("{http}/again/ls")]).await;
    curl(&["-T", &path("cat"), "--user", "root:root", &ftp]).await;
    let evs = h.wait_for(Duration::from_secs(20), |evs| samples(evs).len() >= 5).await;
    let again = &samples(&evs)[3..];
    assert_eq!(again[0].0, sha256_hex(&ftp_elf));
    assert_eq!(again[0].4, SampleOutcome::AlreadyKept);
    assert_eq!(again[1].0, sha256_hex(&post_elf));
    assert_eq!(again[1].4, SampleOutcome::AlreadyKept);
    assert_eq!(kept_files(&h.samples_dir()).len(), 3, "one file per distinct sample");
}

/// `n` distinct bytes of `len` (the index in the first 8 bytes, then a pattern).
fn distinct(n: u64, len: usize) -> Vec<u8> {
    let mut v: Vec<u8> = (0..len).map(|i| ((i as u64).wrapping_mul(2654435761).wrapping_add(n) >> 7) as u8).collect();
    v[..8].copy_from_slice(&n.to_le_bytes());
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_times_the_area_cap_uploaded_keeps_the_area_under_its_cap_and_reports_every_drop() {
    if !require_client("curl") {
        return;
    }
    const MIB: u64 = 1024 * 1024;
    let mut cfg = config();
    cfg.samples.cap_bytes = 4 * MIB;
    cfg.samples.max_sample_bytes = MIB;
    let cap = cfg.samples.cap_bytes;
    let h = Harness::start_with(cfg, Pressure::Normal, 100_000).await;
    let dir = tempfile::tempdir().unwrap();
    let ftp = format!("ftp://127.0.0.1:{}/", h.port(Protocol::Ftp));
    let http = format!("http://127.0.0.1:{}", h.port(Protocol::Http));
    // 30 files of exactly the sample cap and 5 of twice it: 40 MiB, ten times the area's cap,
    // alternately over FTP and as HTTP PUT bodies.
    let mut sent = Vec::new();
    for i in 0..35u64 {
        let len = if i % 7 == 6 { 2 * MIB } else { MIB } as usize;
        let bytes = distinct(i, len);
        let file = dir.path().join(format!("f{i}"));
        std::fs::write(&file, &bytes).unwrap();
        let file = file.to_str().unwrap().to_string();
        if i % 2 == 0 {
            curl(&["-T", &file, "--user", "admin:admin", &ftp]).await;
        } else {
            curl(&["-T", &file, &format!("{http}/f{i}")]).await;
        }
        std::fs::remove_file(&file).unwrap();
        sent.push((sha256_hex(&bytes), bytes.len() as u64));
    }
    let sent_total: u64 = sent.iter().map(|s| s.1).sum();
    assert_eq!(sent_total, 10 * cap);
    let evs = h.wait_for(Duration::from_secs(30), |evs| samples(evs).len() >= sent.len()).await;
    let got = samples(&evs);
    assert_eq!(got.len(), sent.len(), "one sample event per upload");
    let files = kept_files(&h.samples_dir());
    let on_disk: u64 = files.iter().map(|f| std::fs::metadata(f).unwrap().len()).sum();
    assert!(on_disk <= cap, "the area holds {on_disk} bytes, over its cap of {cap}");
    let mut kept = 0;
    for ((sha, size, _, _, outcome), (want_sha, want_size)) in got.iter().zip(&sent) {
        match outcome {
            SampleOutcome::Kept => {
                kept += 1;
                assert_eq!((sha, size), (want_sha, want_size));
                assert!(files.contains(&h.samples_dir().join(sha)));
            }
            SampleOutcome::TooLarge => assert_eq!(*want_size, 2 * MIB, "only the oversized files are too large"),
            SampleOutcome::AreaFull => assert_eq!((sha, size), (want_sha, want_size), "hashed whole though not kept"),
            other => panic!("upload of {want_size} bytes ended {other:?}"),
        }
    }
    assert_eq!(kept, files.len(), "every kept event has its file, and no file is unannounced");
    assert_eq!(kept, 4, "a 4 MiB area holds four 1 MiB samples: {got:?}");
    let too_large = got.iter().filter(|s| s.4 == SampleOutcome::TooLarge).count();
    assert_eq!(too_large, 5);
    assert_eq!(got.iter().filter(|s| s.4 == SampleOutcome::AreaFull).count(), 35 - 5 - 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_chunked_http_post_and_put_of_elf_files_are_kept_byte_identical() {
    if !require_client("curl") {
        return;
    }
    // Small session byte cap: each body is larger, and arrives in curl's chunks.
    let mut cfg = config();
    cfg.limits.max_bytes_in = 4096;
    let h = Harness::start_with(cfg, Pressure::Normal, 100_000).await;
    let dir = tempfile::tempdir().unwrap();
    let (post_elf, put_elf) = (elf("ls"), elf("cat"));
    std::fs::write(dir.path().join("post"), &post_elf).unwrap();
    std::fs::write(dir.path().join("put"), &put_elf).unwrap();
    let path = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    let http = format!("http://127.0.0.1:{}", h.port(Protocol::Http));
    let chunked = "Transfer-Encoding: chunked";
    curl(&["-H", chunked, "--data-binary", &format!("@{}", path("post")), &format!("{http}/bins/post")]).await;
    curl(&["-H", chunked, "-T", &path("put"), &format!("{http}/bins/put")]).await;
    let evs = h.wait_for(Duration::from_secs(20), |evs| samples(evs).len() >= 2).await;
    assert_eq!(
        samples(&evs),
        vec![
            (
                sha256_hex(&post_elf),
                post_elf.len() as u64,
                "/bins/post".into(),
                "http-body".into(),
                SampleOutcome::Kept
            ),
            (sha256_hex(&put_elf), put_elf.len() as u64, "/bins/put".into(), "http-body".into(), SampleOutcome::Kept),
        ]
    );
    for bytes in [&post_elf, &put_elf] {
        assert_eq!(&std::fs::read(h.samples_dir().join(sha256_hex(bytes))).unwrap(), bytes);
    }
    // The requests say how long the bodies were, with no Content-Length to go by.
    let lens: Vec<u64> = evs
        .iter()
        .filter_map(|e| match &e.detail {
            Detail::HttpRequest { body_len, .. } => Some(*body_len),
            _ => None,
        })
        .collect();
    assert_eq!(lens, [post_elf.len() as u64, put_elf.len() as u64]);
}
