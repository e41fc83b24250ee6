//! A throwaway PostgreSQL server for tests and benchmarks: Debian's `postgresql` binaries
//! (`initdb`, `postgres`) on a temporary directory, listening on a free loopback port only.
//!
//! WHY here (in the library, not under `tests/`): the storage conformance tests, the admin's
//! integration tests, the end-to-end tests and the fleet benchmark all need the same server, and
//! they live in three crates.
//!
//! PostgreSQL refuses to run as root, and CI runs as root: the server then runs as `nobody`
//! (its directory is handed to it). It stops when the [`TestPg`] is dropped, and also when the
//! process that started it dies in any way: the server runs under a small shell that waits on a
//! pipe from this process and shuts the server down (fast shutdown) when the pipe closes, then
//! deletes the server's directory (the [`shared`] server is a static, never dropped). Data is
//! not synced to disk (`fsync = off`): a test server is thrown away.
//!
//! [`shared`] gives one server per test process; each test creates its own database on it
//! ([`TestPg::create_database`]).

use std::io;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// `nobody`/`nogroup` on Debian.
const NOBODY: u32 = 65534;

/// A running test server. Dropping it stops the server and deletes its directory.
pub struct TestPg {
    port: u16,
    /// Closing it stops the server (see the module docs).
    stdin: Option<ChildStdin>,
    child: Child,
    dir: tempfile::TempDir,
}

/// The directory of `initdb` and `postgres`: `$DROSERA_PG_BIN`, or the newest
/// `/usr/lib/postgresql/*/bin`. `None` if PostgreSQL is not installed.
pub fn bin_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("DROSERA_PG_BIN") {
        return Some(PathBuf::from(d));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, p): &(u32, PathBuf)| p.join("initdb").is_file())
        .collect();
    versions.sort();
    versions.pop().map(|(_, p)| p)
}

/// True when a test must fail (not skip) without PostgreSQL (`DROSERA_REQUIRE_CLIENTS=1`,
/// as for every other client the tests need).
pub fn required() -> bool {
    std::env::var("DROSERA_REQUIRE_CLIENTS").as_deref() == Ok("1")
}

/// The server shared by every test of this process, started on first use; `None` when
/// PostgreSQL is not installed (and not [`required`]).
pub fn shared() -> Option<&'static TestPg> {
    static SERVER: OnceLock<Option<TestPg>> = OnceLock::new();
    SERVER
        .get_or_init(|| match bin_dir() {
            Some(bin) => {
                Some(TestPg::start_with(&bin).unwrap_or_else(|e| panic!("cannot start a test PostgreSQL: {e}")))
            }
            None if required() => {
                panic!("PostgreSQL is required (DROSERA_REQUIRE_CLIENTS=1): apt-get install postgresql")
            }
            None => {
                eprintln!("SKIP: PostgreSQL not installed (apt-get install postgresql); PostgreSQL tests skipped");
                None
            }
        })
        .as_ref()
}

/// A fresh database on the [`shared`] server, as a `postgres://` URL; `None` if skipped.
pub fn fresh_database() -> Option<String> {
    static N: AtomicU32 = AtomicU32::new(0);
    let pg = shared()?;
    let name = format!("t{}_{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
    Some(pg.create_database(&name).unwrap_or_else(|e| panic!("cannot create test database {name}: {e}")))
}

fn other(msg: String) -> io::Error {
    io::Error::other(msg)
}

impl TestPg {
    /// Starts a server with the installed binaries.
    pub fn start() -> io::Result<TestPg> {
        let bin = bin_dir().ok_or_else(|| other("PostgreSQL is not installed (apt-get install postgresql)".into()))?;
        Self::start_with(&bin)
    }

    /// Starts a server with the binaries in `bin` (not durable: `fsync = off`).
    pub fn start_with(bin: &Path) -> io::Result<TestPg> {
        Self::start_opts(bin, false)
    }

    /// Starts a server with the binaries in `bin`; `durable` keeps PostgreSQL's defaults for
    /// `fsync`, `synchronous_commit` and `full_page_writes` (benchmarks), otherwise they are off
    /// (tests).
    pub fn start_opts(bin: &Path, durable: bool) -> io::Result<TestPg> {
        let dir = tempfile::Builder::new().prefix("drosera-pg-").tempdir()?;
        let data = dir.path().join("data");
        let root = std::fs::metadata("/proc/self")?.uid() == 0;
        let as_user = |c: &mut Command| {
            if root {
                c.uid(NOBODY).gid(NOBODY);
            }
        };
        if root {
            std::os::unix::fs::chown(dir.path(), Some(NOBODY), Some(NOBODY))?;
        }
        let mut init = Command::new(bin.join("initdb"));
        init.arg("-D")
            .arg(&data)
            .args(["-U", "drosera", "--auth=trust", "--no-locale", "-E", "UTF8", "--no-sync"])
            .current_dir(dir.path())
            .stdin(Stdio::null());
        as_user(&mut init);
        let out = init.output()?;
        if !out.status.success() {
            return Err(other(format!(
                "initdb failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        let port = free_test_port()?;
        let log = dir.path().join("postgres.log");
        let sync = if durable { "" } else { "-c fsync=off -c synchronous_commit=off -c full_page_writes=off" };
        let script = format!(
            "\"$0\" -D \"$1\" -p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories= \
             {sync} -c max_connections=200 -c shared_buffers=256MB -c max_wal_size=4GB \
             >\"$2\" 2>&1 & pid=$!; read _ ; kill -INT $pid; wait $pid; rm -rf \"$3\""
        );
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(script)
            .arg(bin.join("postgres"))
            .arg(&data)
            .arg(&log)
            .arg(dir.path())
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        as_user(&mut cmd);
        let mut child = cmd.spawn()?;
        let stdin = child.stdin.take();
        let pg = TestPg { port, stdin, child, dir };
        pg.wait_ready(Duration::from_secs(60))?;
        Ok(pg)
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of database `db` on this server.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://drosera@127.0.0.1:{}/{db}", self.port)
    }

    /// The server's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The server's log so far (for error messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }

    fn psql(&self, sql: &str) -> Result<(), String> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
        rt.block_on(async {
            let (c, conn) = tokio_postgres::connect(&self.url("postgres"), tokio_postgres::NoTls)
                .await
                .map_err(|e| e.to_string())?;
            let task = tokio::spawn(conn);
            let r = c.batch_execute(sql).await.map_err(|e| e.to_string());
            drop(c);
            let _ = task.await;
            r
        })
    }

    fn wait_ready(&self, timeout: Duration) -> io::Result<()> {
        let until = Instant::now() + timeout;
        loop {
            match self.psql("SELECT 1") {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() > until => {
                    return Err(other(format!("PostgreSQL did not start: {e}; log:\n{}", self.log())))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// Creates database `name` (letters, digits, `_`) and returns its URL.
    pub fn create_database(&self, name: &str) -> io::Result<String> {
        if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(other(format!("bad database name {name:?}")));
        }
        self.psql(&format!("CREATE DATABASE {name}")).map_err(other)?;
        Ok(self.url(name))
    }
}

impl Drop for TestPg {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

/// A free port on 127.0.0.1 for a service under test, below the kernel's ephemeral range.
///
/// WHY not `bind(0)`: that hands out an ephemeral port, and between releasing it here and the
/// service binding it, any outgoing connection on the machine (a load thread of a test running
/// in parallel opens thousands) may take it as its source port; the service then fails with
/// "address in use" (seen in CI). Ports below `ip_local_port_range` are never picked for
/// outgoing connections. A port is handed out once per process and checked free for TCP and UDP.
pub fn free_test_port() -> std::io::Result<u16> {
    use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| t.split_whitespace().next().and_then(|w| w.parse::<u32>().ok()))
        .unwrap_or(32768);
    // Test ports come from [low, ephemeral_low); each process starts at an offset of its own so
    // that two test binaries running at once rarely probe the same ports first.
    let low = 20_000u32.min(ephemeral_low.saturating_sub(2_000)).max(1_024);
    let span = ephemeral_low.saturating_sub(low).max(1);
    let start = std::process::id().wrapping_mul(7919) % span;
    // Bounded: at most one pass over the range.
    for _ in 0..span {
        let offset = (start + NEXT.fetch_add(1, Relaxed)) % span;
        let Ok(port) = u16::try_from(low + offset) else { continue };
        let tcp = std::net::TcpListener::bind(("127.0.0.1", port));
        let udp = std::net::UdpSocket::bind(("127.0.0.1", port));
        if tcp.is_ok() && udp.is_ok() {
            return Ok(port);
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        format!("no free port below the ephemeral range {ephemeral_low}"),
    ))
}
