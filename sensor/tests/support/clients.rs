//! Helpers for tests that drive the shells: a scripted TCP client that keeps reading in the
//! background (so echo and prompts never block the writer), a brute-force list with odd
//! characters, and hydra's own account of what it sent.
#![allow(dead_code)]

use drosera_uplink::event::{Detail, Event, Secret};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A TCP client whose received bytes are collected by a background task.
pub struct Scripted {
    write: tokio::net::tcp::OwnedWriteHalf,
    seen: Arc<Mutex<Vec<u8>>>,
    /// How far `until` has matched (each needle is searched after the previous one).
    mark: usize,
    closed: Arc<Mutex<bool>>,
}

impl Scripted {
    pub async fn connect(addr: std::net::SocketAddr) -> Scripted {
        let s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut r, write) = s.into_split();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let closed = Arc::new(Mutex::new(false));
        let (s2, c2) = (seen.clone(), closed.clone());
        tokio::spawn(async move {
            let mut buf = [0u8; 8192];
            loop {
                match r.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => s2.lock().unwrap().extend_from_slice(&buf[..n]),
                }
            }
            *c2.lock().unwrap() = true;
        });
        Scripted { write, seen, mark: 0, closed }
    }

    pub async fn send(&mut self, data: &[u8]) {
        self.write.write_all(data).await.unwrap();
    }

    /// Waits (at most 15 s) until `needle` arrives after what earlier calls matched.
    pub async fn until(&mut self, needle: &str) {
        let end = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            {
                let seen = self.seen.lock().unwrap();
                let rest = &seen[self.mark.min(seen.len())..];
                if let Some(at) = rest.windows(needle.len()).position(|w| w == needle.as_bytes()) {
                    self.mark += at + needle.len();
                    return;
                }
            }
            assert!(
                tokio::time::Instant::now() < end,
                "timed out waiting for {needle:?}; received {:?}",
                String::from_utf8_lossy(&self.seen.lock().unwrap()[self.mark..])
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits (at most 15 s) until the server has closed the connection.
    pub async fn until_closed(&mut self) {
        let end = tokio::time::Instant::now() + Duration::from_secs(15);
        while !*self.closed.lock().unwrap() {
            assert!(tokio::time::Instant::now() < end, "the server did not close the connection");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<u8> {
        self.seen.lock().unwrap().clone()
    }
}

/// 20 `login:password` pairs for hydra's `-C`, with spaces, quotes, colons, `%`, backslashes
/// and UTF-8; the last two are weak pairs of the default accept list.
pub const ODD_PAIRS: &[(&str, &str)] = &[
    ("root", "hunter2"),
    ("admin", "pass word"),
    ("spaced user", "x"),
    ("o'brien", "it's"),
    ("\"quoted\"", "\"pw\""),
    ("guest", "a:b:c"),
    ("test", "100%"),
    ("percent%20", "%s%n%x"),
    ("back\\slash", "c:\\temp\\"),
    ("ünïcødé", "pässwörd"),
    ("日本", "パスワード"),
    ("ubnt", "ubnt1"),
    ("support", "supp0rt!"),
    ("oracle", "or@cle#1"),
    ("pi", "raspberry pi"),
    ("user", "$(id)"),
    ("daemon", "`uname`"),
    ("ftp", "semi;colon"),
    ("root", "xc3511"),
    ("admin", "admin"),
];

/// The pairs as hydra's `-C` file.
pub fn pairs_file(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("pairs.txt");
    let text: String = ODD_PAIRS.iter().map(|(u, p)| format!("{u}:{p}\n")).collect();
    std::fs::write(&path, text).unwrap();
    path
}

/// The (login, password) pairs hydra says it tried (`-V` output: `[ATTEMPT] … login "L" - pass
/// "P" - N of M …`, and `[RE-ATTEMPT]` lines), in order.
pub fn hydra_attempts(stdout: &str) -> Vec<(String, String)> {
    stdout
        .lines()
        .filter(|l| l.starts_with("[ATTEMPT]") || l.starts_with("[RE-ATTEMPT]"))
        .filter_map(|l| {
            let start = l.find(" - login \"")? + " - login \"".len();
            let rest = &l[start..];
            let mid = rest.rfind("\" - pass \"")?;
            let login = &rest[..mid];
            let after = &rest[mid + "\" - pass \"".len()..];
            let end = after.rfind("\" - ")?;
            Some((login.to_string(), after[..end].to_string()))
        })
        .collect()
}

/// (user, password, success) of every password login event.
pub fn password_logins(evs: &[Event]) -> Vec<(String, String, bool)> {
    evs.iter()
        .filter_map(|e| match &e.detail {
            Detail::Login { username, secret: Secret::Password(p), success, .. } => {
                Some((username.clone(), p.clone(), *success))
            }
            _ => None,
        })
        .collect()
}

/// `data` as Mirai's loader pastes it: `echo -ne '\xHH…' >> FILE` lines of `per_line` bytes.
pub fn echo_loader_lines(data: &[u8], file: &str, per_line: usize) -> Vec<String> {
    data.chunks(per_line)
        .map(|c| {
            let esc: String = c.iter().map(|b| format!("\\x{b:02x}")).collect();
            format!("echo -ne '{esc}' >> {file}")
        })
        .collect()
}

/// What each connection's client sent, one buffer per connection, in accept order.
pub type Sent = Arc<Mutex<Vec<Arc<Mutex<Vec<u8>>>>>>;

/// A transparent TCP relay in front of a service that keeps what each client sent, so a test
/// can compare what a tool really put on the wire with what the sensor recorded (hydra's own
/// `[ATTEMPT]` lines are not that: its telnet module counts some pairs it never sends).
pub struct Tap {
    pub addr: std::net::SocketAddr,
    /// Client-to-server bytes, one buffer per connection, in accept order.
    pub sent: Sent,
}

impl Tap {
    pub async fn start(target: std::net::SocketAddr) -> Tap {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let sent: Sent = Arc::new(Mutex::new(Vec::new()));
        let all = sent.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(target).await else { continue };
                let buf = Arc::new(Mutex::new(Vec::new()));
                all.lock().unwrap().push(buf.clone());
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                // Set when the server has hung up: what the client sends after that never reached it.
                let gone = Arc::new(std::sync::atomic::AtomicBool::new(false));
                let gone2 = gone.clone();
                tokio::spawn(async move {
                    let mut b = [0u8; 4096];
                    while let Ok(n) = cr.read(&mut b).await {
                        if n == 0
                            || gone.load(std::sync::atomic::Ordering::SeqCst)
                            || sw.write_all(&b[..n]).await.is_err()
                        {
                            break;
                        }
                        buf.lock().unwrap().extend_from_slice(&b[..n]);
                    }
                    let _ = sw.shutdown().await;
                });
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut sr, &mut cw).await;
                    gone2.store(true, std::sync::atomic::Ordering::SeqCst);
                    let _ = cw.shutdown().await;
                });
            }
        });
        Tap { addr, sent }
    }

    /// The (login, password) pairs clients sent to a login prompt: Telnet commands removed,
    /// lines split at `\r\0`, `\r\n`, `\n` or `\r`, an empty line answered by a new prompt, and
    /// a login without a password (sent after the server hung up) not a pair.
    pub fn telnet_pairs(&self) -> Vec<(String, String)> {
        let mut pairs = Vec::new();
        for conn in self.sent.lock().unwrap().iter() {
            let raw = conn.lock().unwrap().clone();
            let mut data = Vec::new();
            let mut i = 0;
            while i < raw.len() {
                if raw[i] == 0xff {
                    i += if raw.get(i + 1).is_some_and(|v| (251..=254).contains(v)) { 3 } else { 2 };
                    continue;
                }
                data.push(raw[i]);
                i += 1;
            }
            let text = String::from_utf8_lossy(&data).replace("\r\0", "\n").replace("\r\n", "\n").replace('\r', "\n");
            let mut login: Option<String> = None;
            for line in text.split('\n') {
                match login.take() {
                    None if line.is_empty() => {}
                    None => login = Some(line.to_string()),
                    Some(l) => pairs.push((l, line.to_string())),
                }
            }
        }
        pairs
    }
}
