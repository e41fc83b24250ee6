//! The opt-in sample fetcher against servers on loopback: what it fetches, what it refuses
//! (loopback, metadata and other non-public addresses, also behind redirects and DNS), and its
//! caps. HTTP is served by an in-test server (to script redirects and stalls) and by Python's
//! http.server; FTP by pyftpdlib; TFTP by tftpd-hpa.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use drosera_admin::samples::fetch::{FetchError, Fetcher, FetcherConfig};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// The test servers listen on 127.0.0.2, and only that address is allowed, so 127.0.0.1 stays
/// a forbidden loopback target for the redirect tests.
const TEST_IP: &str = "127.0.0.2";

fn cfg(allow: &[&str]) -> FetcherConfig {
    FetcherConfig {
        enabled: true,
        allow: allow.iter().map(|s| s.to_string()).collect(),
        max_bytes: 64 * 1024,
        timeout_s: 2,
        connect_timeout_s: 2,
        max_redirects: 3,
        ..FetcherConfig::default()
    }
}

fn sample() -> Vec<u8> {
    let mut b = std::fs::read("/bin/true").unwrap();
    b.truncate(20_000);
    b
}

/// A tiny scripted HTTP server: `/sample`, `/big` (no Content-Length), `/huge` (declared),
/// `/slow` (never finishes), `/to?URL` (302 to URL), `/loop` (302 to itself).
async fn http_server() -> SocketAddr {
    let listener = TcpListener::bind((TEST_IP, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head).to_string();
                let target = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                let (path, query) = target.split_once('?').unwrap_or((&target, ""));
                let reply = |status: &str, extra: &str, body: &[u8]| {
                    let mut r = format!(
                        "HTTP/1.1 {status}\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n",
                        body.len()
                    )
                    .into_bytes();
                    r.extend_from_slice(body);
                    r
                };
                let out = match path {
                    "/sample" | "/sample2" => reply("200 OK", "", &sample()),
                    "/ua" => {
                        reply("200 OK", "", head.lines().find(|l| l.starts_with("User-Agent")).unwrap_or("").as_bytes())
                    }
                    "/to" => reply("302 Found", &format!("Location: {query}\r\n"), b""),
                    "/loop" => reply("302 Found", "Location: /loop\r\n", b""),
                    "/huge" => b"HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\n\r\n".to_vec(),
                    "/big" => {
                        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n").await;
                        for _ in 0..200 {
                            if s.write_all(&[b'A'; 1024]).await.is_err() {
                                return;
                            }
                        }
                        return;
                    }
                    "/slow" => {
                        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc").await;
                        tokio::time::sleep(Duration::from_secs(10)).await;
                        return;
                    }
                    _ => reply("404 Not Found", "", b"no"),
                };
                let _ = s.write_all(&out).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn http_fetch_in_an_allowed_range() {
    let a = http_server().await;
    let f = Fetcher::new(cfg(&["127.0.0.2/32"])).unwrap();
    let url = format!("http://{a}/sample");
    let got = f.fetch(&url).await.unwrap();
    assert_eq!(got.bytes, sample());
    assert_eq!((got.status, got.peer, got.url.as_str(), got.final_url.as_str()), (200, a, url.as_str(), url.as_str()));
    assert!(matches!(f.fetch(&url).await, Err(FetchError::AlreadyFetched)), "each URL once");
    let ua = f.fetch(&format!("http://{a}/ua")).await.unwrap();
    assert_eq!(ua.bytes, b"User-Agent: Wget/1.21.3");
    // A redirect inside the allowed range is followed, and the final URL is reported.
    let via = format!("http://{a}/to?http://{a}/sample2");
    let got = f.fetch(&via).await.unwrap();
    assert_eq!(got.final_url, format!("http://{a}/sample2"));
    assert!(matches!(f.fetch(&format!("http://{a}/nothing")).await, Err(FetchError::HttpStatus { status: 404, .. })));
}

#[tokio::test]
async fn loopback_and_private_targets_are_refused() {
    let a = http_server().await;
    let port = a.port();
    let f = Fetcher::new(cfg(&[])).unwrap();
    for (i, url) in [
        format!("http://{a}/sample"),
        format!("http://127.0.0.1:{port}/sample"),
        format!("http://localhost:{port}/sample"),
        format!("http://2130706434:{port}/sample"),
        format!("http://0x7f.0.0.2:{port}/sample"),
        format!("http://[::ffff:127.0.0.2]:{port}/sample"),
        format!("http://[::1]:{port}/sample"),
        "http://169.254.169.254/latest/meta-data/".to_string(),
        "http://10.0.0.1/x".to_string(),
        "http://100.64.0.1/x".to_string(),
        "http://[fd00::1]/x".to_string(),
        "ftp://192.168.1.1/x".to_string(),
        "tftp://172.16.0.1/x".to_string(),
    ]
    .into_iter()
    .enumerate()
    {
        // Distinct URLs (2130706434 is 127.0.0.2: the same URL would be "already fetched").
        let url = if url.ends_with("/sample") { format!("{url}?{i}") } else { url };
        match f.fetch(&url).await {
            Err(FetchError::Forbidden { reason, .. }) => eprintln!("{url}: refused ({reason})"),
            other => panic!("{url} must be refused, got {other:?}"),
        }
    }
    let e = Fetcher::new(cfg(&[])).unwrap().fetch(&format!("http://127.0.0.1:{port}/")).await.unwrap_err();
    assert!(e.to_string().contains("loopback"), "{e}");
    for bad in ["file:///etc/passwd", "gopher://x/", "http://", "not a url"] {
        assert!(matches!(f.fetch(bad).await, Err(FetchError::BadUrl(_))), "{bad}");
    }
    let off = Fetcher::new(FetcherConfig { allow: vec!["127.0.0.2/32".into()], ..FetcherConfig::default() }).unwrap();
    assert!(matches!(off.fetch(&format!("http://{a}/sample")).await, Err(FetchError::Disabled)), "off by default");
}

#[tokio::test]
async fn redirects_are_checked_at_every_hop() {
    let a = http_server().await;
    let f = Fetcher::new(cfg(&["127.0.0.2/32"])).unwrap();
    for target in [
        format!("http://127.0.0.1:{}/sample", a.port()),
        "http://169.254.169.254/latest/meta-data/iam/".to_string(),
        format!("http://localhost:{}/sample", a.port()),
    ] {
        match f.fetch(&format!("http://{a}/to?{target}")).await {
            Err(FetchError::Forbidden { .. }) => {}
            other => panic!("redirect to {target} must be refused, got {other:?}"),
        }
    }
    assert!(matches!(f.fetch(&format!("http://{a}/to?file:///etc/passwd")).await, Err(FetchError::BadUrl(_))));
    assert!(matches!(f.fetch(&format!("http://{a}/loop")).await, Err(FetchError::TooManyRedirects { cap: 3 })));
}

#[tokio::test]
async fn size_and_time_caps() {
    let a = http_server().await;
    let f = Fetcher::new(cfg(&["127.0.0.2/32"])).unwrap();
    assert!(matches!(f.fetch(&format!("http://{a}/huge")).await, Err(FetchError::TooLarge { cap: 65536 })));
    assert!(matches!(f.fetch(&format!("http://{a}/big")).await, Err(FetchError::TooLarge { cap: 65536 })));
    let started = std::time::Instant::now();
    assert!(matches!(f.fetch(&format!("http://{a}/slow")).await, Err(FetchError::Timeout(_))));
    assert!(started.elapsed() < Duration::from_secs(8), "the total time cap stops the transfer");
    let long = format!("http://{a}/{}", "x".repeat(3000));
    assert!(matches!(f.fetch(&long).await, Err(FetchError::BadUrl(_))));
}

#[tokio::test]
async fn queue_hands_every_outcome_to_the_callback_and_counts_shed_urls() {
    let a = http_server().await;
    let f = Arc::new(Fetcher::new(FetcherConfig { queue: 2, max_concurrent: 1, ..cfg(&["127.0.0.2/32"]) }).unwrap());
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let q = f.clone().spawn(move |o| {
        let _ = tx.send(o);
    });
    let offered = 8;
    let mut accepted = 0;
    for i in 0..offered {
        if q.offer(format!("http://{a}/slow?{i}")) {
            accepted += 1;
        }
    }
    assert!(q.shed() >= 1, "a full queue sheds");
    assert_eq!(accepted + q.shed(), offered);
    drop(q);
    let mut outcomes = 0;
    while let Some(o) = tokio::time::timeout(Duration::from_secs(15), rx.recv()).await.unwrap() {
        assert!(matches!(o.result, Err(FetchError::Timeout(_))), "{o:?}");
        outcomes += 1;
    }
    assert_eq!(outcomes, accepted, "every accepted URL has an outcome");
}

/// A server process killed when the test ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn have(bin: &str, check: &[&str]) -> bool {
    let ok = Command::new(bin)
        .args(check)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        assert!(
            std::env::var("DROSERA_REQUIRE_CLIENTS").as_deref() != Ok("1"),
            "`{bin} {check:?}` is required (DROSERA_REQUIRE_CLIENTS=1); run scripts/install-deps.sh"
        );
        eprintln!("skipping: `{bin}` not usable");
    }
    ok
}

fn free_port(udp: bool) -> u16 {
    if udp {
        std::net::UdpSocket::bind((TEST_IP, 0)).unwrap().local_addr().unwrap().port()
    } else {
        std::net::TcpListener::bind((TEST_IP, 0)).unwrap().local_addr().unwrap().port()
    }
}

async fn wait_tcp(port: u16) {
    for _ in 0..100 {
        if tokio::net::TcpStream::connect((TEST_IP, port)).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("server on port {port} did not start");
}

#[tokio::test]
async fn python_http_server() {
    if !have("/usr/bin/python3", &["-c", "import http.server"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("x.bin"), sample()).unwrap();
    let port = free_port(false);
    let _s = Server(
        Command::new("/usr/bin/python3")
            .args(["-m", "http.server", "--bind", TEST_IP, &port.to_string(), "--directory"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_tcp(port).await;
    let got =
        Fetcher::new(cfg(&["127.0.0.2/32"])).unwrap().fetch(&format!("http://{TEST_IP}:{port}/x.bin")).await.unwrap();
    assert_eq!(got.bytes, sample());
}

#[tokio::test]
async fn ftp_from_pyftpdlib() {
    if !have("/usr/bin/python3", &["-c", "import pyftpdlib"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bot.mips"), sample()).unwrap();
    std::fs::write(dir.path().join("big.bin"), vec![7u8; 100_000]).unwrap();
    let port = free_port(false);
    let _s = Server(
        Command::new("/usr/bin/python3")
            .args(["-m", "pyftpdlib", "-i", TEST_IP, "-p", &port.to_string(), "-d"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_tcp(port).await;
    let f = Fetcher::new(cfg(&["127.0.0.2/32"])).unwrap();
    let got = f.fetch(&format!("ftp://{TEST_IP}:{port}/bot.mips")).await.unwrap();
    assert_eq!((got.bytes.as_slice(), got.status), (sample().as_slice(), 226));
    assert!(matches!(f.fetch(&format!("ftp://{TEST_IP}:{port}/big.bin")).await, Err(FetchError::TooLarge { .. })));
    let e = f.fetch(&format!("ftp://{TEST_IP}:{port}/missing")).await.unwrap_err();
    assert!(e.to_string().contains("RETR"), "{e}");
    // A path cannot smuggle a second command onto the control connection.
    let e = f.fetch(&format!("ftp://{TEST_IP}:{port}/x%0d%0aDELE%20bot.mips")).await.unwrap_err();
    assert!(e.to_string().contains("CR/LF"), "{e}");
    let refused = Fetcher::new(cfg(&[])).unwrap().fetch(&format!("ftp://{TEST_IP}:{port}/bot.mips")).await;
    assert!(matches!(refused, Err(FetchError::Forbidden { .. })));
}

#[tokio::test]
async fn tftp_from_tftpd_hpa() {
    let bin = "/usr/sbin/in.tftpd";
    if !std::path::Path::new(bin).exists() {
        assert!(
            std::env::var("DROSERA_REQUIRE_CLIENTS").as_deref() != Ok("1"),
            "tftpd-hpa is required (DROSERA_REQUIRE_CLIENTS=1); run scripts/install-deps.sh"
        );
        eprintln!("skipping: tftpd-hpa not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bot.arm7"), sample()).unwrap();
    std::fs::write(dir.path().join("even.bin"), vec![9u8; 1024]).unwrap();
    std::fs::write(dir.path().join("big.bin"), vec![7u8; 100_000]).unwrap();
    let port = free_port(true);
    let user = if nix_is_root() { "root" } else { "nobody" };
    let _s = Server(
        Command::new(bin)
            .args(["-L", "-a", &format!("{TEST_IP}:{port}"), "-u", user, "-s"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let f = Fetcher::new(cfg(&["127.0.0.2/32"])).unwrap();
    let got = f.fetch(&format!("tftp://{TEST_IP}:{port}/bot.arm7")).await.unwrap();
    assert_eq!(got.bytes, sample());
    let got = f.fetch(&format!("tftp://{TEST_IP}:{port}/even.bin")).await.unwrap();
    assert_eq!(got.bytes, vec![9u8; 1024], "a file of whole blocks ends with an empty block");
    assert!(matches!(f.fetch(&format!("tftp://{TEST_IP}:{port}/big.bin")).await, Err(FetchError::TooLarge { .. })));
    let e = f.fetch(&format!("tftp://{TEST_IP}:{port}/missing")).await.unwrap_err();
    assert!(e.to_string().contains("server error"), "{e}");
}

fn nix_is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0")).unwrap_or(false)
}
