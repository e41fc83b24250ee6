//! The event schema: one [`Event`] type for everything a sensor reports.
//!
//! Every attack, every shed connection, every eviction and every health sample travels as an
//! `Event`. Common fields (who, where, when, how much) live on the struct; what is specific to the
//! kind of observation lives in the typed [`Detail`] enum.
//!
//! # Encoding and evolution
//!
//! Events are encoded with [postcard], which is compact but not self-describing: a decoder must
//! know the exact shape. The shape is therefore versioned by [`SCHEMA_VERSION`], which the sensor
//! announces in its hello and which every batch carries. The rules for changing this file are:
//!
//! 1. **Never** change, reorder or remove an existing field of [`Event`] or of any struct or
//!    variant reachable from it, and never reorder or remove an enum variant. (postcard encodes
//!    enum variants by their index and struct fields by position.)
//! 2. New kinds of observation are **appended** as new [`Detail`] variants (likewise new
//!    [`Protocol`] variants), and [`SCHEMA_VERSION`] is bumped. [`Detail::since_version`] records
//!    the version in which each variant appeared.
//! 3. Extra attributes for an existing kind go in the `extra` key/value lists that the variants
//!    carry (for example `Login::extra`), which need no schema change at all.
//! 4. A sensor that talks to an admin announcing a lower schema version calls
//!    [`Event::downgrade_to`] before encoding: any variant newer than the admin is rewritten as a
//!    generic [`Detail::Extension`] (kind name plus key/value fields), which every admin since
//!    version 1 can store and show. Nothing is dropped.
//!
//! An admin therefore always decodes everything a sensor sends, and an older admin sees newer
//! observations as extensions instead of failing the whole batch.
//!
//! # Bounds
//!
//! The schema itself carries no unbounded data: sensors cap every attacker-supplied string and
//! payload prefix before building an event ([`MAX_TEXT`], [`MAX_PAYLOAD_PREFIX`]), and
//! [`Event::clamp`] enforces those caps on any event that comes from elsewhere.

use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr};

/// Version of the event schema defined in this file. Bump it when appending a variant.
pub const SCHEMA_VERSION: u16 = 3;

/// Longest attacker-supplied text kept in any single field, in bytes.
pub const MAX_TEXT: usize = 4096;
/// Longest payload prefix kept inline in an event, in bytes.
pub const MAX_PAYLOAD_PREFIX: usize = 4096;
/// Most key/value pairs in an `extra` list.
pub const MAX_EXTRA: usize = 32;

/// One observation made by a sensor.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Sequence number assigned by the sensor's store when the event is committed; strictly
    /// increasing per sensor, never reused (0 until stored).
    pub seq: u64,
    /// Wall-clock time of the observation, milliseconds since the Unix epoch (UTC).
    pub time_ms: i64,
    /// Name of the sensor that made the observation. May be left empty inside a sensor (the
    /// store fills it from its config); always set on the wire.
    pub sensor: String,
    pub transport: Transport,
    pub protocol: Protocol,
    /// The attacker's address (for sensor-internal events: unspecified).
    pub src_ip: IpAddr,
    pub src_port: u16,
    /// The sensor port that was hit.
    pub dst_port: u16,
    /// Identifies one connection (or UDP exchange) on this sensor; all events of a session share
    /// it, so sessions can be counted once. 0 for events that belong to no session.
    pub session_id: u64,
    /// Session duration so far, milliseconds.
    pub duration_ms: u32,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Eviction class; see [`Priority`].
    pub priority: Priority,
    pub detail: Detail,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Transport {
    Tcp,
    Udp,
    /// Produced by the sensor itself (health, gaps, recovery).
    Internal,
}

impl Transport {
    /// Lower-case stable name, used in databases and exports.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
            Transport::Internal => "internal",
        }
    }
}

/// The emulated service that saw the event.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Http,
    Ftp,
    Telnet,
    Ssh,
    Mssql,
    Mysql,
    Smb,
    Blackhole,
    Tftp,
    Sip,
    Redis,
    /// Sensor-internal records (health, eviction gaps, store recovery).
    Sensor,
    // --- schema version 2 (appended; see the module docs) ---
    /// Packets seen by scan detection (TCP SYNs and UDP datagrams to any port), not a service.
    Scan,
    Memcached,
    Mqtt,
    Mongodb,
    /// DCE/RPC endpoint mapper (MS-RPC, port 135).
    Epmap,
    Pptp,
    /// Raw printing (port 9100: PJL, PostScript).
    Printer,
    Upnp,
    Rdp,
    Vnc,
    Adb,
    /// The Docker Engine API.
    Docker,
    Smtp,
}

impl Protocol {
    pub const ALL: [Protocol; 25] = [
        Protocol::Http,
        Protocol::Ftp,
        Protocol::Telnet,
        Protocol::Ssh,
        Protocol::Mssql,
        Protocol::Mysql,
        Protocol::Smb,
        Protocol::Blackhole,
        Protocol::Tftp,
        Protocol::Sip,
        Protocol::Redis,
        Protocol::Sensor,
        Protocol::Scan,
        Protocol::Memcached,
        Protocol::Mqtt,
        Protocol::Mongodb,
        Protocol::Epmap,
        Protocol::Pptp,
        Protocol::Printer,
        Protocol::Upnp,
        Protocol::Rdp,
        Protocol::Vnc,
        Protocol::Adb,
        Protocol::Docker,
        Protocol::Smtp,
    ];

    /// The schema version in which this protocol first appeared (see [`Event::downgrade_to`]).
    pub fn since_version(self) -> u16 {
        if self as u8 > Protocol::Sensor as u8 {
            2
        } else {
            1
        }
    }

    /// Lower-case stable name, used in configs, databases and exports.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Ftp => "ftp",
            Protocol::Telnet => "telnet",
            Protocol::Ssh => "ssh",
            Protocol::Mssql => "mssql",
            Protocol::Mysql => "mysql",
            Protocol::Smb => "smb",
            Protocol::Blackhole => "blackhole",
            Protocol::Tftp => "tftp",
            Protocol::Sip => "sip",
            Protocol::Redis => "redis",
            Protocol::Sensor => "sensor",
            Protocol::Scan => "scan",
            Protocol::Memcached => "memcached",
            Protocol::Mqtt => "mqtt",
            Protocol::Mongodb => "mongodb",
            Protocol::Epmap => "epmap",
            Protocol::Pptp => "pptp",
            Protocol::Printer => "printer",
            Protocol::Upnp => "upnp",
            Protocol::Rdp => "rdp",
            Protocol::Vnc => "vnc",
            Protocol::Adb => "adb",
            Protocol::Docker => "docker",
            Protocol::Smtp => "smtp",
        }
    }

    pub fn parse(name: &str) -> Option<Protocol> {
        Protocol::ALL.into_iter().find(|p| p.as_str() == name)
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Eviction class, lowest first. When the store is full it evicts the oldest events of the
/// lowest class present; `System` records (gaps, rollups, health) go last of all.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Priority {
    /// Plain connections, scans, blackhole bytes: the bulk of any flood.
    Noise = 0,
    /// Commands, HTTP requests, fingerprints.
    Interaction = 1,
    /// Login attempts with credentials.
    Credential = 2,
    /// Payloads, exploit attempts, download URLs.
    Critical = 3,
    /// Accounting the sensor keeps about itself: rollups, gaps, health, recovery.
    System = 4,
}

impl Priority {
    pub const ALL: [Priority; 5] =
        [Priority::Noise, Priority::Interaction, Priority::Credential, Priority::Critical, Priority::System];

    pub fn as_u8(self) -> u8 {
        self as u8
    }

    pub fn from_u8(v: u8) -> Option<Priority> {
        Priority::ALL.get(v as usize).copied()
    }
}

/// The secret offered with a login attempt.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum Secret {
    /// No secret offered (for example an SSH "none" attempt).
    None,
    /// A clear-text password (Telnet, FTP, HTTP basic, SSH password, decoded TDS password).
    Password(String),
    /// A public key offered for authentication.
    PublicKey { algorithm: String, fingerprint: String },
    /// A challenge response that cannot be reversed here, in a cracker-ready format
    /// (`format` is for example `hashcat-5600` for NTLMv2 or `mysql-native-hex`).
    Hash { format: String, value: String },
}

/// Why connections were shed instead of being recorded one by one.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ShedReason {
    /// The bounded channel into the store was full.
    ChannelFull,
    /// The global connection cap (accept semaphore) was reached.
    GlobalConnections,
    /// The per-source concurrent connection cap was reached.
    PerSourceConnections,
    /// The per-source rate limit was exceeded.
    RateLimited,
    /// The pressure governor refused new connections (hard memory limit).
    MemoryPressure,
    /// A per-session cap (idle, time, bytes, line length) closed the session.
    SessionCap,
}

impl ShedReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ShedReason::ChannelFull => "channel_full",
            ShedReason::GlobalConnections => "global_connections",
            ShedReason::PerSourceConnections => "per_source_connections",
            ShedReason::RateLimited => "rate_limited",
            ShedReason::MemoryPressure => "memory_pressure",
            ShedReason::SessionCap => "session_cap",
        }
    }
}

/// What was observed. Append new variants at the end only (see the module docs).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum Detail {
    /// A connection (or UDP exchange) was opened and has ended; `first_bytes` is a capped prefix
    /// of what the client sent, when it sent anything and no richer event captured it.
    Connection { first_bytes: Vec<u8>, closed_by: CloseReason },
    /// A login attempt.
    Login {
        username: String,
        secret: Secret,
        /// Always false on a honeypot that refuses everyone; kept for services that let
        /// attackers "in" to watch what they do next.
        success: bool,
        /// Protocol-specific attributes: `domain`, `workstation`, `client_host`, `app_name`,
        /// `library`, `database`, `auth_plugin`, `method`, ...
        extra: Vec<(String, String)>,
    },
    /// A command line or protocol command (Telnet shell line, FTP command, Redis command, ...).
    Command { line: String },
    /// One HTTP request.
    HttpRequest {
        method: String,
        path: String,
        query: String,
        host: String,
        user_agent: String,
        /// SHA-256 of the whole body as received (up to the session byte cap), if any body.
        body_sha256: Option<[u8; 32]>,
        body_len: u64,
        /// Other headers worth keeping (`content-type`, `x-forwarded-for`, `cookie`, ...).
        extra: Vec<(String, String)>,
    },
    /// A file or payload captured: an FTP upload, a body, a shellcode blob.
    Payload {
        sha256: [u8; 32],
        size: u64,
        /// File name given by the attacker, if any.
        name: String,
        /// Up to [`MAX_PAYLOAD_PREFIX`] bytes of it (empty when payload keeping is paused by the
        /// memory governor).
        prefix: Vec<u8>,
        /// True when `size` exceeded the session cap and the hash covers only the kept part.
        truncated: bool,
    },
    /// The attacker offered or asked for a download (wget/curl/tftp URL in a shell line).
    DownloadOffered { url: String, tool: String },
    /// A recognised exploit attempt (MS17-010 probe, DoublePulsar ping, ...).
    Exploit { name: String, cve: String, extra: Vec<(String, String)> },
    /// A scan or probe pattern (for example a port scan seen across blackhole ports).
    Scan { kind: String, ports: Vec<u16> },
    /// A client fingerprint: SSH client version and HASSH, TLS JA3, ...
    Fingerprint { kind: String, value: String, extra: Vec<(String, String)> },
    /// Connections that were not recorded one by one, folded into counters: all from `src_ip`
    /// to `dst_port` in the minute starting at `minute_ms`.
    Rollup { minute_ms: i64, reason: ShedReason, connections: u64 },
    /// Events the store evicted to stay under its byte cap. Counts are exact.
    EvictionGap {
        count: u64,
        first_seq: u64,
        last_seq: u64,
        first_time_ms: i64,
        last_time_ms: i64,
        /// Evicted events per protocol.
        per_protocol: Vec<(Protocol, u64)>,
        /// Evicted events per priority class.
        per_priority: Vec<(Priority, u64)>,
    },
    /// A periodic health sample of the sensor.
    Health(Health),
    /// The store found its database corrupt at start, moved it aside and started fresh.
    StoreRecovered { quarantined_path: String, reason: String, last_seq_before: u64 },
    /// A generic observation: used for variants newer than the receiving admin (see
    /// [`Event::downgrade_to`]) and for experimental services.
    Extension { kind: String, fields: Vec<(String, String)> },
    // --- schema version 2 (appended; see the module docs) ---
    /// A whole file the attacker delivered (upload, body, dropped file, decrypted implant
    /// payload), and what the sensor did with it. `Kept` means the bytes are in the sensor's
    /// sample area and will be shipped to the admin (unless the admin already has them);
    /// every other outcome says why they were not kept.
    Sample {
        sha256: [u8; 32],
        /// Bytes seen (for `TooLarge`: at least the cap plus one).
        size: u64,
        /// File name or path given by the attacker, if any.
        name: String,
        /// How it arrived: `ftp-stor`, `http-body`, `smb-doublepulsar`, `smb-write`,
        /// `telnet-echo`, `ssh-scp`, `sftp`, `tftp-wrq`, ...
        source: String,
        outcome: SampleOutcome,
    },
    /// Events the store evicted to stay under its byte cap, with what they were (the successor
    /// of [`Detail::EvictionGap`], which sensors no longer write; its `kind` is the same,
    /// `eviction_gap`). `count`, the seq and time range and `per_priority` mean what they mean
    /// there; `per_kind` says what the evicted events were, so reports can add them back into
    /// their totals, and `top_sources` who sent most of them. A version-1 admin gets it as an
    /// `EvictionGap` ([`Event::downgrade_to`]).
    EvictionSummary {
        /// Rows evicted (exact).
        count: u64,
        first_seq: u64,
        last_seq: u64,
        first_time_ms: i64,
        last_time_ms: i64,
        per_priority: Vec<(Priority, u64)>,
        /// Evicted events per (hour, protocol, port, kind); their `events` sum to `count`.
        per_kind: Vec<EvictedKind>,
        /// The sources with most evicted events, most first (at most the sensor's
        /// `store.gap_top_sources`).
        top_sources: Vec<EvictedSource>,
        /// Distinct source addresses among the evicted events (the top list shows some of them).
        sources: u64,
    },
    // --- schema version 3 (appended; see the module docs) ---
    /// Scan detection's summary of one source in one time window: the TCP SYNs (event
    /// transport `Tcp`) or UDP datagrams (`Udp`) it sent to the sensor's own addresses, seen on
    /// a packet socket, whether or not a service listens on the port. One per source, transport
    /// and window. Sent with [`Protocol::Scan`]; `dst_port` is the first port hit.
    ///
    /// The record with an unspecified `src_ip` is the window's overflow: packets of sources
    /// that did not fit in the sensor's tracking table (`scan.max_sources`), summed over all of
    /// them, so packet counts stay exact. A version-2 admin gets it as an extension.
    ScanWindow {
        /// Start of the window (ms since the epoch) and its length.
        window_start_ms: i64,
        window_ms: u32,
        /// Packets seen (exact).
        packets: u64,
        /// Distinct destination ports hit.
        distinct_ports: u32,
        /// False when `distinct_ports` is a lower bound (the sensor ran out of port bitmaps).
        distinct_exact: bool,
        /// The first distinct ports hit, in order (at most the sensor's `scan.first_ports`).
        ports: Vec<u16>,
        /// Scanner fingerprints matched (`mirai`, `zmap`, `masscan`, `nmap`), with how many of
        /// the packets matched each.
        fingerprints: Vec<(String, u64)>,
        /// Packets the kernel dropped before the sensor read them (socket buffer full) since
        /// the previous window; only on the overflow record, 0 elsewhere.
        kernel_drops: u64,
    },
}

/// Evicted events of one kind, from one protocol and destination port, in one hour
/// ([`Detail::EvictionSummary`]).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct EvictedKind {
    /// Start of the hour (UTC, ms since the epoch) of the evicted events' own time.
    pub hour_ms: i64,
    pub protocol: Protocol,
    pub dst_port: u16,
    /// [`Detail::kind`] of the evicted events.
    pub kind: String,
    /// Events evicted.
    pub events: u64,
    /// What they stood for: one per event, except rollups (their connections).
    pub count: u64,
}

/// One source address among the evicted events ([`Detail::EvictionSummary`]).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct EvictedSource {
    pub ip: IpAddr,
    /// Events of this address evicted.
    pub events: u64,
    /// Of them, connections (attempts): connection events plus rolled-up connections.
    pub attempts: u64,
}

/// What the sensor did with a delivered file ([`Detail::Sample`]).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SampleOutcome {
    /// Stored whole in the sample area, to be shipped.
    Kept,
    /// The same bytes (same sha256) are already in the sample area; this is one more sighting.
    AlreadyKept,
    /// Larger than the per-sample cap; `sha256` covers only the first cap bytes.
    TooLarge,
    /// The sample area (or the disk reserve) had no room left.
    AreaFull,
    /// The memory governor or the writer cap paused sample keeping.
    Paused,
    /// Sample keeping is turned off in the config.
    Disabled,
    /// The sample could not be written (I/O error).
    Failed,
    // --- appended after schema version 2 was cut; never reorder ---
    /// The delivery ended before the whole file arrived (the client left or went idle, a
    /// session limit was reached); `sha256` covers what arrived, which is not kept.
    Incomplete,
}

impl SampleOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            SampleOutcome::Kept => "kept",
            SampleOutcome::AlreadyKept => "already_kept",
            SampleOutcome::TooLarge => "too_large",
            SampleOutcome::AreaFull => "area_full",
            SampleOutcome::Paused => "paused",
            SampleOutcome::Disabled => "disabled",
            SampleOutcome::Failed => "failed",
            SampleOutcome::Incomplete => "incomplete",
        }
    }

    /// True when the bytes are (or already were) in the sample area.
    pub fn is_kept(self) -> bool {
        matches!(self, SampleOutcome::Kept | SampleOutcome::AlreadyKept)
    }
}

/// Why a session ended.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// The client closed the connection.
    ClientClosed,
    /// The service finished its script and closed.
    ServerClosed,
    IdleTimeout,
    SessionTimeout,
    ByteCap,
    LineTooLong,
    /// The client sent something the parser rejected.
    ProtocolError,
    /// The sensor is shutting down.
    Shutdown,
    /// An I/O error (reset and the like).
    IoError,
}

impl CloseReason {
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::ClientClosed => "client_closed",
            CloseReason::ServerClosed => "server_closed",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::SessionTimeout => "session_timeout",
            CloseReason::ByteCap => "byte_cap",
            CloseReason::LineTooLong => "line_too_long",
            CloseReason::ProtocolError => "protocol_error",
            CloseReason::Shutdown => "shutdown",
            CloseReason::IoError => "io_error",
        }
    }
}

/// A health sample. All sizes in bytes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct Health {
    pub uptime_s: u64,
    pub rss_bytes: u64,
    pub mem_available_bytes: u64,
    /// CPU use of the sensor process over the last interval, in per-mille of one core.
    pub cpu_permille: u32,
    pub disk_free_bytes: u64,
    pub store_bytes: u64,
    pub cap_bytes: u64,
    pub backlog_events: u64,
    pub evicted_total: u64,
    pub shed_total: u64,
    pub active_connections: u32,
    /// `normal`, `soft` or `hard` (the pressure governor's state).
    pub governor: String,
}

impl Detail {
    /// Stable snake_case name of the variant (used as `kind` in databases and exports).
    pub fn kind(&self) -> &'static str {
        match self {
            Detail::Connection { .. } => "connection",
            Detail::Login { .. } => "login",
            Detail::Command { .. } => "command",
            Detail::HttpRequest { .. } => "http_request",
            Detail::Payload { .. } => "payload",
            Detail::DownloadOffered { .. } => "download_offered",
            Detail::Exploit { .. } => "exploit",
            Detail::Scan { .. } => "scan",
            Detail::Fingerprint { .. } => "fingerprint",
            Detail::Rollup { .. } => "rollup",
            Detail::EvictionGap { .. } => "eviction_gap",
            Detail::Health(_) => "health",
            Detail::StoreRecovered { .. } => "store_recovered",
            Detail::Extension { .. } => "extension",
            Detail::Sample { .. } => "sample",
            // The same record kind as `EvictionGap`, with more detail.
            Detail::EvictionSummary { .. } => "eviction_gap",
            Detail::ScanWindow { .. } => "scan_window",
        }
    }

    /// The schema version in which this variant first appeared.
    pub fn since_version(&self) -> u16 {
        // A variant appended later returns the version that introduced it, so
        // `Event::downgrade_to` can rewrite it for older admins.
        match self {
            Detail::Sample { .. } | Detail::EvictionSummary { .. } => 2,
            Detail::ScanWindow { .. } => 3,
            _ => 1,
        }
    }

    /// The default eviction class of this kind of observation.
    pub fn default_priority(&self) -> Priority {
        match self {
            Detail::Connection { .. } | Detail::Scan { .. } | Detail::ScanWindow { .. } => Priority::Noise,
            Detail::Command { .. }
            | Detail::HttpRequest { .. }
            | Detail::Fingerprint { .. }
            | Detail::Extension { .. } => Priority::Interaction,
            Detail::Login { .. } => Priority::Credential,
            Detail::Payload { .. }
            | Detail::DownloadOffered { .. }
            | Detail::Exploit { .. }
            | Detail::Sample { .. } => Priority::Critical,
            Detail::Rollup { .. }
            | Detail::EvictionGap { .. }
            | Detail::EvictionSummary { .. }
            | Detail::Health(_)
            | Detail::StoreRecovered { .. } => Priority::System,
        }
    }

    /// A flat key/value rendering of the variant's fields, used for [`Detail::Extension`]
    /// downgrades and for generic display.
    pub fn to_fields(&self) -> Vec<(String, String)> {
        fn kv(k: &str, v: impl ToString) -> (String, String) {
            (k.to_string(), v.to_string())
        }
        match self {
            Detail::Connection { first_bytes, closed_by } => {
                vec![kv("first_bytes_hex", to_hex(first_bytes)), kv("closed_by", closed_by.as_str())]
            }
            Detail::Login { username, secret, success, extra } => {
                let mut v = vec![kv("username", username), kv("success", success)];
                match secret {
                    Secret::None => {}
                    Secret::Password(p) => v.push(kv("password", p)),
                    Secret::PublicKey { algorithm, fingerprint } => {
                        v.push(kv("key_algorithm", algorithm));
                        v.push(kv("key_fingerprint", fingerprint));
                    }
                    Secret::Hash { format, value } => {
                        v.push(kv("hash_format", format));
                        v.push(kv("hash", value));
                    }
                }
                v.extend(extra.iter().cloned());
                v
            }
            Detail::Command { line } => vec![kv("line", line)],
            Detail::HttpRequest { method, path, query, host, user_agent, body_sha256, body_len, extra } => {
                let mut v = vec![
                    kv("method", method),
                    kv("path", path),
                    kv("query", query),
                    kv("host", host),
                    kv("user_agent", user_agent),
                    kv("body_len", body_len),
                ];
                if let Some(h) = body_sha256 {
                    v.push(kv("body_sha256", to_hex(h)));
                }
                v.extend(extra.iter().cloned());
                v
            }
            Detail::Payload { sha256, size, name, prefix: _, truncated } => {
                vec![kv("sha256", to_hex(sha256)), kv("size", size), kv("name", name), kv("truncated", truncated)]
            }
            Detail::DownloadOffered { url, tool } => vec![kv("url", url), kv("tool", tool)],
            Detail::Exploit { name, cve, extra } => {
                let mut v = vec![kv("name", name), kv("cve", cve)];
                v.extend(extra.iter().cloned());
                v
            }
            Detail::Scan { kind, ports } => {
                vec![kv("kind", kind), kv("ports", ports.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(","))]
            }
            Detail::Fingerprint { kind, value, extra } => {
                let mut v = vec![kv("kind", kind), kv("value", value)];
                v.extend(extra.iter().cloned());
                v
            }
            Detail::Rollup { minute_ms, reason, connections } => {
                vec![kv("minute_ms", minute_ms), kv("reason", reason.as_str()), kv("connections", connections)]
            }
            Detail::EvictionGap { count, first_seq, last_seq, first_time_ms, last_time_ms, .. } => vec![
                kv("count", count),
                kv("first_seq", first_seq),
                kv("last_seq", last_seq),
                kv("first_time_ms", first_time_ms),
                kv("last_time_ms", last_time_ms),
            ],
            Detail::Health(h) => vec![
                kv("rss_bytes", h.rss_bytes),
                kv("store_bytes", h.store_bytes),
                kv("backlog_events", h.backlog_events),
                kv("evicted_total", h.evicted_total),
                kv("shed_total", h.shed_total),
                kv("governor", &h.governor),
            ],
            Detail::StoreRecovered { quarantined_path, reason, last_seq_before } => vec![
                kv("quarantined_path", quarantined_path),
                kv("reason", reason),
                kv("last_seq_before", last_seq_before),
            ],
            Detail::Extension { fields, .. } => fields.clone(),
            Detail::Sample { sha256, size, name, source, outcome } => vec![
                kv("sha256", to_hex(sha256)),
                kv("size", size),
                kv("name", name),
                kv("source", source),
                kv("outcome", outcome.as_str()),
            ],
            Detail::EvictionSummary {
                count,
                first_seq,
                last_seq,
                first_time_ms,
                last_time_ms,
                per_kind,
                top_sources,
                sources,
                ..
            } => vec![
                kv("count", count),
                kv("first_seq", first_seq),
                kv("last_seq", last_seq),
                kv("first_time_ms", first_time_ms),
                kv("last_time_ms", last_time_ms),
                kv("evicted", EvictedKind::format_list(per_kind)),
                kv("top_sources", EvictedSource::format_list(top_sources)),
                kv("sources", sources),
            ],
            Detail::ScanWindow {
                window_start_ms,
                window_ms,
                packets,
                distinct_ports,
                distinct_exact,
                ports,
                fingerprints,
                kernel_drops,
            } => vec![
                kv("window_start_ms", window_start_ms),
                kv("window_ms", window_ms),
                kv("packets", packets),
                kv("distinct_ports", distinct_ports),
                kv("distinct_exact", distinct_exact),
                kv("ports", ports.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(",")),
                kv("fingerprints", fingerprints.iter().map(|(n, c)| format!("{n}:{c}")).collect::<Vec<_>>().join(",")),
                kv("kernel_drops", kernel_drops),
            ],
        }
    }
}

impl Event {
    /// An event the sensor reports about itself (health, eviction gap, store recovery, rollup,
    /// rejected batch): `Internal` transport, `Sensor` protocol, no source address, no session,
    /// `System` priority, stamped with the current time. `seq` stays 0 and `sensor` empty: the
    /// store assigns the one and fills in the other.
    pub fn internal(detail: Detail) -> Event {
        Event {
            seq: 0,
            time_ms: now_ms(),
            sensor: String::new(),
            transport: Transport::Internal,
            protocol: Protocol::Sensor,
            src_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            src_port: 0,
            dst_port: 0,
            session_id: 0,
            duration_ms: 0,
            bytes_in: 0,
            bytes_out: 0,
            priority: Priority::System,
            detail,
        }
    }

    /// Rewrites this event so that an admin speaking schema `version` can decode it: a detail
    /// variant newer than `version` becomes a [`Detail::Extension`] carrying the same data.
    ///
    /// A protocol newer than `version` cannot be named on the event itself: the event is then
    /// sent as [`Protocol::Blackhole`] (the "other port" of a version-1 admin) with its detail
    /// as an extension whose `protocol` field names the real one.
    pub fn downgrade_to(&mut self, version: u16) {
        if version == 1 {
            // A version-1 admin knows eviction gaps by their first shape: keep its totals.
            if let Detail::EvictionSummary {
                count,
                first_seq,
                last_seq,
                first_time_ms,
                last_time_ms,
                per_priority,
                per_kind,
                ..
            } = &self.detail
            {
                let mut per_protocol: Vec<(Protocol, u64)> = Vec::new();
                for k in per_kind {
                    let p = if k.protocol.since_version() > version { Protocol::Blackhole } else { k.protocol };
                    match per_protocol.iter_mut().find(|(q, _)| *q == p) {
                        Some(e) => e.1 += k.events,
                        None => per_protocol.push((p, k.events)),
                    }
                }
                self.detail = Detail::EvictionGap {
                    count: *count,
                    first_seq: *first_seq,
                    last_seq: *last_seq,
                    first_time_ms: *first_time_ms,
                    last_time_ms: *last_time_ms,
                    per_protocol,
                    per_priority: per_priority.clone(),
                };
            }
        }
        let new_protocol = self.protocol.since_version() > version;
        if self.detail.since_version() > version || new_protocol {
            let kind = self.detail.kind().to_string();
            let mut fields = self.detail.to_fields();
            if new_protocol {
                fields.push(("protocol".to_string(), self.protocol.as_str().to_string()));
                self.protocol = Protocol::Blackhole;
            }
            self.detail = Detail::Extension { kind, fields };
        }
    }

    /// Enforces the schema's size caps on every attacker-supplied field (truncating on a UTF-8
    /// boundary). Sensors call this before storing; it is idempotent.
    pub fn clamp(&mut self) {
        fn s(v: &mut String) {
            truncate_utf8(v, MAX_TEXT);
        }
        fn kvs(v: &mut Vec<(String, String)>) {
            truncate_vec(v, MAX_EXTRA);
            for (k, val) in v.iter_mut() {
                truncate_utf8(k, 256);
                truncate_utf8(val, MAX_TEXT);
            }
        }
        truncate_utf8(&mut self.sensor, 256);
        match &mut self.detail {
            Detail::Connection { first_bytes, .. } => truncate_vec(first_bytes, MAX_PAYLOAD_PREFIX),
            Detail::Login { username, secret, extra, .. } => {
                s(username);
                match secret {
                    Secret::None => {}
                    Secret::Password(p) => s(p),
                    Secret::PublicKey { algorithm, fingerprint } => {
                        s(algorithm);
                        s(fingerprint)
                    }
                    Secret::Hash { format, value } => {
                        s(format);
                        s(value)
                    }
                }
                kvs(extra);
            }
            Detail::Command { line } => s(line),
            Detail::HttpRequest { method, path, query, host, user_agent, extra, .. } => {
                for v in [method, path, query, host, user_agent] {
                    s(v);
                }
                kvs(extra);
            }
            Detail::Payload { name, prefix, .. } => {
                s(name);
                truncate_vec(prefix, MAX_PAYLOAD_PREFIX);
            }
            Detail::DownloadOffered { url, tool } => {
                s(url);
                s(tool)
            }
            Detail::Exploit { name, cve, extra } => {
                s(name);
                s(cve);
                kvs(extra);
            }
            Detail::Scan { kind, ports } => {
                s(kind);
                truncate_vec(ports, 1024);
            }
            Detail::Fingerprint { kind, value, extra } => {
                s(kind);
                s(value);
                kvs(extra);
            }
            Detail::Extension { kind, fields } => {
                s(kind);
                kvs(fields);
            }
            Detail::Sample { name, source, .. } => {
                s(name);
                truncate_utf8(source, 64);
            }
            // Internal events come from the sensor, which a compromised one controls as much
            // as an attacker controls a payload: clamp and validate them the same way.
            Detail::EvictionGap { per_protocol, per_priority, .. } => {
                per_protocol.truncate(Protocol::ALL.len());
                per_priority.truncate(Priority::ALL.len());
                per_protocol.shrink_to_fit();
                per_priority.shrink_to_fit();
            }
            Detail::Health(h) => {
                if !matches!(h.governor.as_str(), "normal" | "soft" | "hard") {
                    h.governor = "invalid".to_string();
                }
            }
            Detail::StoreRecovered { quarantined_path, reason, .. } => {
                s(quarantined_path);
                s(reason);
            }
            Detail::Rollup { .. } => {}
            Detail::EvictionSummary { per_kind, top_sources, per_priority, .. } => {
                truncate_vec(per_kind, MAX_EVICTED_KINDS);
                for k in per_kind.iter_mut() {
                    truncate_utf8(&mut k.kind, 64);
                }
                truncate_vec(top_sources, MAX_EVICTED_SOURCES);
                truncate_vec(per_priority, Priority::ALL.len());
            }
            Detail::ScanWindow { ports, fingerprints, .. } => {
                truncate_vec(ports, MAX_SCAN_PORTS);
                truncate_vec(fingerprints, MAX_EXTRA);
                for (name, _) in fingerprints.iter_mut() {
                    truncate_utf8(name, 64);
                }
            }
        }
    }
}

/// Most ports listed in [`Detail::ScanWindow::ports`].
pub const MAX_SCAN_PORTS: usize = 1024;
/// Most entries in [`Detail::EvictionSummary::per_kind`].
pub const MAX_EVICTED_KINDS: usize = 4096;
/// Most entries in [`Detail::EvictionSummary::top_sources`].
pub const MAX_EVICTED_SOURCES: usize = 256;

impl EvictedKind {
    /// The flat-field form: `hour_ms protocol port kind events count` per entry, `;` between
    /// entries (names are `[a-z_]`, so nothing needs quoting). [`EvictedKind::parse_list`] reads it.
    pub fn format_list(v: &[EvictedKind]) -> String {
        v.iter()
            .map(|k| {
                format!("{} {} {} {} {} {}", k.hour_ms, k.protocol.as_str(), k.dst_port, k.kind, k.events, k.count)
            })
            .collect::<Vec<_>>()
            .join(";")
    }

    /// Reads [`EvictedKind::format_list`]'s form; malformed entries (or unknown protocols) are
    /// skipped.
    pub fn parse_list(s: &str) -> Vec<EvictedKind> {
        s.split(';')
            .filter_map(|e| {
                let mut it = e.split(' ');
                Some(EvictedKind {
                    hour_ms: it.next()?.parse().ok()?,
                    protocol: Protocol::parse(it.next()?)?,
                    dst_port: it.next()?.parse().ok()?,
                    kind: it.next()?.to_string(),
                    events: it.next()?.parse().ok()?,
                    count: it.next()?.parse().ok()?,
                })
            })
            .collect()
    }
}

impl EvictedSource {
    /// The flat-field form: `ip events attempts` per entry, `;` between entries.
    pub fn format_list(v: &[EvictedSource]) -> String {
        v.iter().map(|s| format!("{} {} {}", s.ip, s.events, s.attempts)).collect::<Vec<_>>().join(";")
    }

    /// Reads [`EvictedSource::format_list`]'s form; malformed entries are skipped.
    pub fn parse_list(s: &str) -> Vec<EvictedSource> {
        s.split(';')
            .filter_map(|e| {
                let mut it = e.split(' ');
                Some(EvictedSource {
                    ip: it.next()?.parse().ok()?,
                    events: it.next()?.parse().ok()?,
                    attempts: it.next()?.parse().ok()?,
                })
            })
            .collect()
    }
}

/// Wall-clock milliseconds since the Unix epoch (UTC), the unit of [`Event::time_ms`]; 0 if the
/// clock is before 1970.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Truncates `s` to at most `max` bytes without splitting a character, and gives back the
/// memory it no longer needs (a 60 MB string clamped to 4 KiB must not keep its 60 MB).
pub fn truncate_utf8(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.shrink_to_fit();
    }
}

/// Truncates `v` to at most `max` items and releases the memory beyond them.
fn truncate_vec<T>(v: &mut Vec<T>, max: usize) {
    if v.len() > max {
        v.truncate(max);
        v.shrink_to_fit();
    }
}

/// Lower-case hex of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(HEX[(b >> 4) as usize] as char);
        out.push(HEX[(b & 0xf) as usize] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_internal_event_is_the_sensors_own_system_record_stamped_now() {
        let before = now_ms();
        let ev = Event::internal(Detail::Scan { kind: "k".into(), ports: vec![] });
        assert!(ev.time_ms >= before && ev.time_ms <= now_ms());
        assert!(before > 1_600_000_000_000, "the clock helper counts milliseconds since 1970");
        assert_eq!((ev.transport, ev.protocol, ev.priority), (Transport::Internal, Protocol::Sensor, Priority::System));
        assert_eq!((ev.seq, ev.sensor.as_str(), ev.session_id), (0, "", 0));
        assert!(ev.src_ip.is_unspecified());
    }

    #[test]
    fn transport_names_are_the_lower_case_variants() {
        for t in [Transport::Tcp, Transport::Udp, Transport::Internal] {
            assert_eq!(t.as_str(), format!("{t:?}").to_lowercase());
        }
    }

    use super::*;
    use std::net::Ipv4Addr;

    pub(crate) fn sample(detail: Detail) -> Event {
        Event {
            seq: 42,
            time_ms: 1_700_000_000_000,
            sensor: "pi-1".into(),
            transport: Transport::Tcp,
            protocol: Protocol::Ssh,
            src_ip: IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7)),
            src_port: 51234,
            dst_port: 22,
            session_id: 9,
            duration_ms: 1200,
            bytes_in: 300,
            bytes_out: 800,
            priority: detail.default_priority(),
            detail,
        }
    }

    fn all_details() -> Vec<Detail> {
        vec![
            Detail::Connection { first_bytes: b"GET /".to_vec(), closed_by: CloseReason::IdleTimeout },
            Detail::Login {
                username: "root".into(),
                secret: Secret::Password("admin".into()),
                success: false,
                extra: vec![("method".into(), "password".into())],
            },
            Detail::Command { line: "uname -a".into() },
            Detail::HttpRequest {
                method: "GET".into(),
                path: "/".into(),
                query: "a=1".into(),
                host: "x".into(),
                user_agent: "curl".into(),
                body_sha256: Some([7; 32]),
                body_len: 3,
                extra: vec![],
            },
            Detail::Payload {
                sha256: [1; 32],
                size: 10,
                name: "x.sh".into(),
                prefix: b"#!".to_vec(),
                truncated: false,
            },
            Detail::DownloadOffered { url: "http://198.51.100.1/x".into(), tool: "wget".into() },
            Detail::Exploit { name: "ms17-010".into(), cve: "CVE-2017-0144".into(), extra: vec![] },
            Detail::Scan { kind: "syn".into(), ports: vec![1, 2] },
            Detail::Fingerprint { kind: "hassh".into(), value: "abc".into(), extra: vec![] },
            Detail::Rollup { minute_ms: 60_000, reason: ShedReason::ChannelFull, connections: 5 },
            Detail::EvictionGap {
                count: 3,
                first_seq: 1,
                last_seq: 3,
                first_time_ms: 1,
                last_time_ms: 2,
                per_protocol: vec![(Protocol::Http, 3)],
                per_priority: vec![(Priority::Noise, 3)],
            },
            Detail::Health(Health { governor: "normal".into(), ..Health::default() }),
            Detail::StoreRecovered { quarantined_path: "/x".into(), reason: "bad".into(), last_seq_before: 0 },
            Detail::Extension { kind: "future".into(), fields: vec![("a".into(), "b".into())] },
            Detail::Sample {
                sha256: [3; 32],
                size: 1234,
                name: "x86".into(),
                source: "ftp-stor".into(),
                outcome: SampleOutcome::Kept,
            },
            summary(),
            scan_window(),
        ]
    }

    fn scan_window() -> Detail {
        Detail::ScanWindow {
            window_start_ms: 1_700_000_040_000,
            window_ms: 60_000,
            packets: 200,
            distinct_ports: 200,
            distinct_exact: true,
            ports: vec![22, 23, 80],
            fingerprints: vec![("nmap".into(), 199)],
            kernel_drops: 0,
        }
    }

    /// A version-2 admin gets a scan window as an extension with every field; a version-1 admin
    /// the same, on the blackhole protocol (scan is a version-2 protocol).
    #[test]
    fn version_3_scan_window_downgrades_keeping_every_field() {
        let mut ev = sample(scan_window());
        ev.protocol = Protocol::Scan;
        let mut v3 = ev.clone();
        v3.downgrade_to(3);
        assert_eq!(v3, ev, "nothing changes for a version-3 admin");
        assert_eq!(ev.priority, Priority::Noise);
        for version in [2, 1] {
            let mut old = ev.clone();
            old.downgrade_to(version);
            let Detail::Extension { kind, fields } = &old.detail else { panic!("not downgraded: {old:?}") };
            assert_eq!(kind, "scan_window");
            for want in
                [("packets", "200"), ("ports", "22,23,80"), ("fingerprints", "nmap:199"), ("window_ms", "60000")]
            {
                assert!(
                    fields.contains(&(want.0.to_string(), want.1.to_string())),
                    "{version}: {want:?} in {fields:?}"
                );
            }
            let protocol = if version == 1 { Protocol::Blackhole } else { Protocol::Scan };
            assert_eq!(old.protocol, protocol);
        }
    }

    fn summary() -> Detail {
        Detail::EvictionSummary {
            count: 5,
            first_seq: 1,
            last_seq: 7,
            first_time_ms: 1_700_000_000_000,
            last_time_ms: 1_700_000_100_000,
            per_priority: vec![(Priority::Noise, 4), (Priority::Credential, 1)],
            per_kind: vec![
                EvictedKind {
                    hour_ms: 1_699_999_200_000,
                    protocol: Protocol::Ssh,
                    dst_port: 22,
                    kind: "connection".into(),
                    events: 3,
                    count: 3,
                },
                EvictedKind {
                    hour_ms: 1_699_999_200_000,
                    protocol: Protocol::Rdp,
                    dst_port: 3389,
                    kind: "connection".into(),
                    events: 1,
                    count: 1,
                },
                EvictedKind {
                    hour_ms: 1_699_999_200_000,
                    protocol: Protocol::Ssh,
                    dst_port: 22,
                    kind: "login".into(),
                    events: 1,
                    count: 1,
                },
            ],
            top_sources: vec![
                EvictedSource { ip: IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7)), events: 4, attempts: 3 },
                EvictedSource { ip: "2001:db8::1".parse().unwrap(), events: 1, attempts: 1 },
            ],
            sources: 2,
        }
    }

    #[test]
    fn an_eviction_summary_is_an_eviction_gap_for_a_version_1_admin() {
        let mut ev = Event::internal(summary());
        assert_eq!(ev.detail.kind(), "eviction_gap");
        ev.downgrade_to(1);
        match &ev.detail {
            Detail::EvictionGap { count, first_seq, last_seq, per_protocol, per_priority, .. } => {
                assert_eq!((*count, *first_seq, *last_seq), (5, 1, 7));
                // RDP is newer than version 1: counted as blackhole, like its events.
                assert_eq!(per_protocol, &vec![(Protocol::Ssh, 4), (Protocol::Blackhole, 1)]);
                assert_eq!(per_priority, &vec![(Priority::Noise, 4), (Priority::Credential, 1)]);
            }
            other => panic!("not downgraded: {other:?}"),
        }
        // Its flat fields name everything and read back.
        let d = summary();
        let f = d.to_fields();
        let get = |k: &str| f.iter().find(|(a, _)| a == k).map(|(_, v)| v.clone()).unwrap();
        assert_eq!(get("count"), "5");
        let Detail::EvictionSummary { per_kind, top_sources, .. } = &d else { unreachable!() };
        assert_eq!(&EvictedKind::parse_list(&get("evicted")), per_kind);
        assert_eq!(&EvictedSource::parse_list(&get("top_sources")), top_sources);
        assert!(EvictedKind::parse_list("").is_empty() && EvictedSource::parse_list("x y").is_empty());
        // Version 0 (no admin knows it): an extension, as for every other variant.
        let mut ev = Event::internal(summary());
        ev.downgrade_to(0);
        assert!(matches!(&ev.detail, Detail::Extension { kind, .. } if kind == "eviction_gap"));
    }

    #[test]
    fn version_2_variants_downgrade_for_a_version_1_admin() {
        let mut ev = sample(all_details().into_iter().find(|d| matches!(d, Detail::Sample { .. })).unwrap());
        ev.downgrade_to(1);
        match &ev.detail {
            Detail::Extension { kind, fields } => {
                assert_eq!(kind, "sample");
                assert!(fields.contains(&("outcome".to_string(), "kept".to_string())));
            }
            other => panic!("not downgraded: {other:?}"),
        }
        // A version-1 detail on a version-2 protocol: named in the extension, sent as blackhole.
        let mut ev = sample(all_details().remove(1));
        ev.protocol = Protocol::Rdp;
        ev.downgrade_to(1);
        assert_eq!(ev.protocol, Protocol::Blackhole);
        match &ev.detail {
            Detail::Extension { kind, fields } => {
                assert_eq!(kind, "login");
                assert!(fields.contains(&("protocol".to_string(), "rdp".to_string())));
            }
            other => panic!("not downgraded: {other:?}"),
        }
        // Nothing changes for a version-2 admin, and version-1 protocols keep their name.
        let mut ev = sample(all_details().remove(1));
        ev.protocol = Protocol::Rdp;
        ev.downgrade_to(2);
        assert_eq!((ev.protocol, ev.detail.kind()), (Protocol::Rdp, "login"));
        for p in Protocol::ALL {
            assert_eq!(p.since_version() == 1, p as u8 <= Protocol::Sensor as u8, "{p}");
        }
    }

    #[test]
    fn sample_outcomes_keep_their_postcard_index_and_name() {
        // Appending is the only allowed change: each outcome's wire index is fixed forever.
        let all = [
            (SampleOutcome::Kept, "kept"),
            (SampleOutcome::AlreadyKept, "already_kept"),
            (SampleOutcome::TooLarge, "too_large"),
            (SampleOutcome::AreaFull, "area_full"),
            (SampleOutcome::Paused, "paused"),
            (SampleOutcome::Disabled, "disabled"),
            (SampleOutcome::Failed, "failed"),
            (SampleOutcome::Incomplete, "incomplete"),
        ];
        for (i, (o, name)) in all.into_iter().enumerate() {
            let bytes = postcard::to_allocvec(&o).unwrap();
            assert_eq!(bytes, vec![i as u8], "{name}");
            assert_eq!(postcard::from_bytes::<SampleOutcome>(&bytes).unwrap(), o);
            assert_eq!(o.as_str(), name);
        }
        assert!(!SampleOutcome::Incomplete.is_kept());
    }

    #[test]
    fn every_variant_round_trips_through_postcard() {
        for d in all_details() {
            let ev = sample(d);
            let bytes = postcard::to_stdvec(&ev).unwrap();
            let back: Event = postcard::from_bytes(&bytes).unwrap();
            assert_eq!(back, ev);
        }
    }

    #[test]
    fn hostile_bytes_never_panic() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let good = postcard::to_stdvec(&sample(all_details().remove(3))).unwrap();
        for i in 0..20_000 {
            let mut buf = if i % 2 == 0 {
                let n = rng.gen_range(0..200);
                (0..n).map(|_| rng.gen()).collect::<Vec<u8>>()
            } else {
                good.clone()
            };
            if !buf.is_empty() {
                let n = rng.gen_range(1..4);
                for _ in 0..n {
                    let at = rng.gen_range(0..buf.len());
                    buf[at] = rng.gen();
                }
                buf.truncate(rng.gen_range(0..=buf.len()));
            }
            let _ = postcard::from_bytes::<Event>(&buf);
        }
    }

    #[test]
    fn huge_declared_length_is_an_error_not_an_allocation() {
        // A login whose username claims to be 2^62 bytes long.
        let mut bytes = postcard::to_stdvec(&sample(all_details().remove(1))).unwrap();
        // Find the username length byte (4 = "root") followed by "root" and replace the length.
        let pos = bytes.windows(5).position(|w| w == [4, b'r', b'o', b'o', b't']).unwrap();
        let huge = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x3f];
        bytes.splice(pos..pos + 1, huge);
        assert!(postcard::from_bytes::<Event>(&bytes).is_err());
    }

    #[test]
    fn downgrade_keeps_data_as_extension() {
        let mut ev = sample(all_details().remove(1));
        ev.downgrade_to(0);
        match &ev.detail {
            Detail::Extension { kind, fields } => {
                assert_eq!(kind, "login");
                assert!(fields.contains(&("password".to_string(), "admin".to_string())));
            }
            other => panic!("not downgraded: {other:?}"),
        }
        let mut same = sample(all_details().remove(1));
        same.downgrade_to(SCHEMA_VERSION);
        assert_eq!(same.detail.kind(), "login");
    }

    #[test]
    fn clamp_caps_attacker_text_on_char_boundary() {
        let mut ev = sample(Detail::Command { line: "é".repeat(MAX_TEXT) });
        ev.clamp();
        match &ev.detail {
            Detail::Command { line } => assert!(line.len() <= MAX_TEXT && line.len() >= MAX_TEXT - 1),
            _ => unreachable!(),
        }
    }

    /// What a compromised sensor sends is clamped like attacker input: a huge string gives its
    /// memory back, the health event's governor is one of its three states, internal strings
    /// are capped.
    #[test]
    fn clamp_releases_memory_and_validates_internal_events() {
        let mut ev = sample(Detail::Command { line: "x".repeat(8 << 20) });
        ev.clamp();
        match &ev.detail {
            Detail::Command { line } => assert!(line.capacity() <= MAX_TEXT, "{}", line.capacity()),
            _ => unreachable!(),
        }
        let mut ev = sample(Detail::Connection { first_bytes: vec![0; 1 << 20], closed_by: CloseReason::ClientClosed });
        ev.clamp();
        match &ev.detail {
            Detail::Connection { first_bytes, .. } => assert!(first_bytes.capacity() <= MAX_PAYLOAD_PREFIX),
            _ => unreachable!(),
        }
        let health = |governor: &str| Health {
            uptime_s: 1,
            rss_bytes: 1,
            mem_available_bytes: 1,
            cpu_permille: 1,
            disk_free_bytes: 1,
            store_bytes: 1,
            cap_bytes: 1,
            backlog_events: 1,
            evicted_total: 0,
            shed_total: 0,
            active_connections: 0,
            governor: governor.to_string(),
        };
        for (sent, kept) in [("normal", "normal"), ("hard", "hard"), ("normal\u{1b}]0;pwned\u{7}", "invalid")] {
            let mut ev = sample(Detail::Health(health(sent)));
            ev.clamp();
            assert_eq!(ev.detail, Detail::Health(health(kept)));
        }
        let mut ev = sample(Detail::StoreRecovered {
            quarantined_path: "p".repeat(1 << 20),
            reason: "r".repeat(1 << 20),
            last_seq_before: 1,
        });
        ev.clamp();
        match &ev.detail {
            Detail::StoreRecovered { quarantined_path, reason, .. } => {
                assert!(quarantined_path.len() <= MAX_TEXT && reason.len() <= MAX_TEXT)
            }
            _ => unreachable!(),
        }
    }

    #[test]
    fn protocol_names_round_trip() {
        for p in Protocol::ALL {
            assert_eq!(Protocol::parse(p.as_str()), Some(p));
        }
        for p in Priority::ALL {
            assert_eq!(Priority::from_u8(p.as_u8()), Some(p));
        }
    }
}
