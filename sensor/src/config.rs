//! The sensor's one TOML config file: parsed once, validated, then immutable.
//!
//! Every section and key has a default (documented in `sensor/drosera-sensor.example.toml`,
//! which a test parses and compares with these defaults), and unknown keys are an error, so a
//! typo never silently falls back to a default. Keys with a fixed set of values are enums
//! ([`ServiceKind`], [`LogFormat`], [`Synchronous`]), so serde refuses anything else and lists
//! what is valid. Every error names the offending key (serde's through `serde_path_to_error`,
//! the checks between keys in [`Config::validate`]) and says how to fix it. Relative paths are
//! taken relative to the directory of the config file, as the admin's config does.

pub use crate::protocols::ServiceKind;
pub use caps::{
    EpmapSection, MemcachedSection, MongodbSection, MqttSection, PptpSection, PrinterSection, SipSection, UpnpSection,
};
use serde::Deserialize;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod caps;

/// Errors from loading or validating a config; each names the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path} is not valid{}: {message}", at_key(key))]
    Parse { path: PathBuf, key: String, message: String },
    #[error("config key `{key}` is invalid: {problem}. Fix: {fix}")]
    Invalid { key: String, problem: String, fix: String },
}

fn invalid(key: &str, problem: impl Into<String>, fix: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key: key.to_string(), problem: problem.into(), fix: fix.into() }
}

/// ` at key `service[0].kind`` for a parse error inside a key, nothing for one about the file as
/// a whole (bad TOML syntax).
fn at_key(key: &str) -> String {
    if key.is_empty() || key == "." {
        String::new()
    } else {
        format!(" at key `{key}`")
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub sensor: SensorSection,
    pub store: StoreSection,
    pub memory: MemorySection,
    pub limits: LimitsSection,
    /// Emulated services; see [`ServiceSection`].
    #[serde(rename = "service")]
    pub services: Vec<ServiceSection>,
    pub blackhole: BlackholeSection,
    /// Malware samples: whole files attackers deliver, kept until the admin has them.
    pub samples: SamplesSection,
    /// Which logins succeed on the services that let attackers in (FTP, Telnet, SSH, ...).
    pub credentials: CredentialsSection,
    /// The SMTP service's mail policy (open relay or not, message size).
    pub smtp: SmtpSection,
    /// Scan detection: a packet socket counting SYNs and UDP to any port (needs CAP_NET_RAW).
    pub scan: ScanSection,
    /// Shipping to the admin; absent means the sensor only stores locally.
    pub uplink: Option<UplinkSection>,
    /// The UDP services' budgets: datagram size, per-source budgets, flows (TFTP transfers).
    pub udp: UdpSection,
    /// Signed updates from the admin (issue 22): public key, caps, trial time.
    pub update: crate::update::UpdateSection,
    /// Issue 16's per-protocol caps (see [`caps`]): message sizes and counts per connection.
    pub mqtt: MqttSection,
    pub mongodb: MongodbSection,
    pub epmap: EpmapSection,
    pub pptp: PptpSection,
    pub printer: PrinterSection,
    pub sip: SipSection,
    pub memcached: MemcachedSection,
    pub upnp: UpnpSection,
}

/// `[udp]`: what every UDP service (TFTP, SIP, memcached, UPnP/SSDP) may cost. A UDP source
/// address can be spoofed, so the sensor must never answer more than it was sent (the framework
/// refuses any reply larger than its request) and never let one source take it all: past its
/// budget per window a source's datagrams are shed and counted as rollups.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct UdpSection {
    /// Longest datagram read; longer ones are cut to this and handled as what arrived.
    pub max_datagram_bytes: usize,
    /// Length of a per-source budget window, seconds.
    pub window_s: u64,
    /// Datagrams one source address may send per window (outside flows).
    pub datagrams_per_source: u32,
    /// Bytes one source address may send per window (outside flows).
    pub bytes_per_source: u64,
    /// Source addresses tracked by the budgets; past it new sources are shed (rate_limited).
    pub max_tracked_sources: usize,
    /// Flows (TFTP uploads) open at once per UDP port; past it a new one is refused.
    pub max_flows: usize,
    /// Seconds without a datagram before a flow is ended (recorded as idle_timeout).
    pub flow_timeout_s: u64,
}

impl Default for UdpSection {
    fn default() -> Self {
        UdpSection {
            max_datagram_bytes: 4096,
            window_s: 10,
            datagrams_per_source: 100,
            bytes_per_source: 65_536,
            max_tracked_sources: 65_536,
            max_flows: 64,
            flow_timeout_s: 10,
        }
    }
}

/// `service.transport`: which transports serve a service's `ports`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TransportChoice {
    Tcp,
    Udp,
    Both,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SensorSection {
    /// Name reported with every event (the admin also checks it against the client certificate).
    pub name: String,
    /// Directory for the store, quarantined files and rejected batches.
    pub data_dir: PathBuf,
    /// If started as root: bind the ports, then switch to this user and drop all capabilities.
    /// Empty keeps root (throw-away test machines only).
    pub user: String,
    /// Log lines on stderr as text or JSON.
    pub log_format: LogFormat,
    /// Seconds between health events.
    pub health_interval_s: u64,
    /// The one story every service tells (products, versions, OS); see [`Persona`].
    pub persona: Persona,
}

impl Default for SensorSection {
    fn default() -> Self {
        SensorSection {
            name: "sensor-1".into(),
            data_dir: PathBuf::from("/var/lib/drosera"),
            user: "drosera".into(),
            log_format: LogFormat::Text,
            persona: Persona::Mixed,
            health_interval_s: 60,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSection {
    /// Hard cap on the database including its WAL and SHM files, in bytes.
    pub cap_bytes: u64,
    /// Free disk space always left to others; the effective cap is
    /// `min(cap_bytes, store size + free disk - reserve_bytes)`.
    pub reserve_bytes: u64,
    /// Eviction starts when the store reaches this percentage of the effective cap...
    pub high_water_pct: u8,
    /// ...and evicts down to this percentage.
    pub low_water_pct: u8,
    /// Group commit: commit at least this often (milliseconds)...
    pub commit_interval_ms: u64,
    /// ...or after this many events, whichever comes first.
    pub commit_max_events: usize,
    /// Capacity of the bounded channel from producers to the store writer, in events.
    pub channel_capacity: usize,
    /// SQLite `synchronous` mode.
    pub synchronous: Synchronous,
    /// Seconds between re-checks of free disk space.
    pub disk_check_interval_s: u64,
    /// Most source addresses (with their counts) an eviction gap record lists, those with most
    /// evicted events first (at most 256).
    pub gap_top_sources: usize,
}

impl Default for StoreSection {
    fn default() -> Self {
        StoreSection {
            cap_bytes: 256 * 1024 * 1024,
            reserve_bytes: 64 * 1024 * 1024,
            high_water_pct: 90,
            low_water_pct: 80,
            commit_interval_ms: 200,
            commit_max_events: 5000,
            channel_capacity: 20_000,
            synchronous: Synchronous::Normal,
            disk_check_interval_s: 5,
            gap_top_sources: 16,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MemorySection {
    /// Above this RSS the governor halves accepted concurrency and stops keeping payloads.
    pub soft_limit_bytes: u64,
    /// Above this RSS the sensor stops accepting until it is below the soft limit again.
    pub hard_limit_bytes: u64,
    /// Also counts as pressure when the system's available memory falls below this.
    pub min_available_bytes: u64,
    /// How often RSS and free memory are sampled, in milliseconds.
    pub sample_interval_ms: u64,
    /// How often they are sampled while the sensor is idle (no connection open or accepted
    /// since the last sample), in milliseconds; at least `sample_interval_ms`.
    pub idle_sample_interval_ms: u64,
    /// Most distinct rollup counters held in memory (source IP × port × minute × reason).
    pub rollup_max_keys: usize,
    /// Source addresses whose emulated-server state (Redis keys and config, Docker containers)
    /// each such service remembers between connections; the oldest is forgotten past it.
    pub service_state_sources: usize,
}

/// Most source addresses `memory.service_state_sources` may name: each remembered source can
/// hold about 8 KiB of Redis state and 48 KiB of Docker state (at most 56 MiB at this cap).
pub const MAX_SERVICE_STATE_SOURCES: usize = 1024;

impl Default for MemorySection {
    fn default() -> Self {
        MemorySection {
            soft_limit_bytes: 48 * 1024 * 1024,
            hard_limit_bytes: 64 * 1024 * 1024,
            min_available_bytes: 32 * 1024 * 1024,
            sample_interval_ms: 250,
            idle_sample_interval_ms: 2000,
            rollup_max_keys: 10_000,
            service_state_sources: crate::protocols::per_source::DEFAULT_SOURCES,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    /// Concurrent connections over all services.
    pub max_connections: usize,
    /// Concurrent connections from one source address.
    pub max_per_source: usize,
    /// New connections per second allowed from one source address (sustained)...
    pub rate_per_source: u32,
    /// ...with this burst.
    pub rate_burst: u32,
    /// Most source addresses tracked by the rate limiter and per-source counters.
    pub max_tracked_sources: usize,
    /// Seconds without input before a session is closed.
    pub idle_timeout_s: u64,
    /// Longest a session may last, seconds.
    pub session_timeout_s: u64,
    /// Most bytes read from one session.
    pub max_bytes_in: u64,
    /// Longest line accepted by line-based protocols.
    pub max_line: usize,
    /// Payload bytes kept (and hashed) per upload or body.
    pub max_payload: usize,
    /// Bytes of the client's first input kept in each connection event.
    pub first_bytes: usize,
    /// Events of Critical priority (payloads, exploits, offered downloads) one session may
    /// record as Critical; later ones are stored one class lower (Interaction), so that an
    /// attacker cannot cheaply push credentials out of a full store. Sample events are exempt
    /// (the sample area bounds them).
    pub max_critical_per_session: u32,
}

impl Default for LimitsSection {
    fn default() -> Self {
        LimitsSection {
            max_connections: 2048,
            max_per_source: 64,
            rate_per_source: 200,
            rate_burst: 400,
            max_tracked_sources: 65_536,
            idle_timeout_s: 30,
            session_timeout_s: 300,
            max_bytes_in: 4 * 1024 * 1024,
            max_line: 4096,
            max_payload: 1024 * 1024,
            first_bytes: 256,
            max_critical_per_session: 32,
        }
    }
}

/// `sensor.log_format`: how log lines on stderr look.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (for log shippers).
    Json,
}

/// `sensor.persona`: which machine every emulated service pretends to be, so that banners,
/// versions, OS strings and pages agree with each other (a scanner that fingerprints several
/// ports of one address sees one believable host).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum Persona {
    /// Each service keeps its own most-attacked default (BusyBox telnet, Debian OpenSSH,
    /// MSSQL, a Windows file server, ...): the widest net, at the price of one story.
    #[default]
    Mixed,
    /// A Debian server: OpenSSH, Apache, MySQL/MariaDB, vsftpd, Redis, ...
    LinuxServer,
    /// A Windows Server: SMB, MSSQL, RDP, IIS, Microsoft FTP, ...
    WindowsServer,
    /// A home router or camera: BusyBox telnet, a router login page, dropbear SSH, ...
    IotRouter,
}

/// `store.synchronous`: SQLite's `synchronous` pragma for the store.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    /// Safe with WAL: a power loss loses at most the last commit.
    #[default]
    Normal,
    /// Every commit durable on its own (more SD card wear).
    Full,
}

/// One emulated service. `kind` picks the protocol module; `ports` may list several ports.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServiceSection {
    /// Which protocol module serves these ports.
    pub kind: ServiceKind,
    pub ports: Vec<u16>,
    /// Address to bind; default all IPv4 addresses.
    #[serde(default = "default_bind")]
    pub bind: IpAddr,
    /// Server banner or version string shown to clients; empty = the module's believable default.
    #[serde(default)]
    pub banner: String,
    /// Set false to keep the section but not start the service.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// SSH only: file holding the Ed25519 host key seed; the RSA and ECDSA host keys live in
    /// `FILE.rsa` and `FILE.ecdsa` (each created 0600 on first start, so the host keys survive
    /// restarts). Unset: new host keys each start. RDP: file holding the TLS certificate and its
    /// key (PEM, created 0600 on first use, so the certificate survives restarts).
    #[serde(default)]
    pub host_key: Option<PathBuf>,
    /// FTP only: the passive data ports `[first, last]` (inclusive). Each PASV/EPSV listens on
    /// the next free one; none free is `425`. The appliance firewall opens exactly this range.
    /// Unset: [`DEFAULT_PASSIVE_PORTS`].
    #[serde(default)]
    pub passive_ports: Option<PortRange>,
    /// FTP only: the address announced in PASV replies (the public address when the sensor is
    /// behind NAT). Unset: the address the client connected to.
    #[serde(default)]
    pub passive_address: Option<IpAddr>,
    /// Which transports serve `ports`: "tcp", "udp" or "both". Unset: the kind's own (tftp and
    /// upnp: udp; sip: both; every other kind: tcp). Only tftp, sip, memcached and upnp speak UDP.
    #[serde(default)]
    pub transport: Option<TransportChoice>,
    /// UPnP only: the TCP port of the device description and SOAP control (HTTP) that SSDP
    /// replies point at. Unset: [`DEFAULT_UPNP_DESCRIPTION_PORT`].
    #[serde(default)]
    pub description_port: Option<u16>,
}

/// UPnP's description (HTTP) port when the config names none (miniupnpd's usual choice).
pub const DEFAULT_UPNP_DESCRIPTION_PORT: u16 = 49152;

/// FTP's passive data ports when the config names none (a small range a firewall can open).
pub const DEFAULT_PASSIVE_PORTS: PortRange = PortRange { first: 50000, last: 50031 };

/// An inclusive port range, written `[first, last]` in the config (exactly two numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "Vec<u16>")]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl TryFrom<Vec<u16>> for PortRange {
    type Error = String;
    fn try_from(v: Vec<u16>) -> Result<Self, Self::Error> {
        match v[..] {
            [first, last] => Ok(PortRange { first, last }),
            _ => Err(format!("expected [first, last] (two port numbers), got {} numbers", v.len())),
        }
    }
}
/// Most ports a passive range may span (each PASV tries them in turn until one is free).
pub const MAX_PASSIVE_PORTS: u32 = 1024;

impl ServiceSection {
    /// A section with the given kind, bind address and ports, every other key at its default.
    pub fn new(kind: ServiceKind, bind: IpAddr, ports: Vec<u16>) -> ServiceSection {
        ServiceSection {
            kind,
            ports,
            bind,
            banner: String::new(),
            enabled: true,
            host_key: None,
            passive_ports: None,
            passive_address: None,
            transport: None,
            description_port: None,
        }
    }

    /// Whether `ports` are served over (TCP, UDP): the configured transport or the kind's own.
    pub fn transports(&self) -> (bool, bool) {
        match self.transport.unwrap_or(self.kind.default_transport()) {
            TransportChoice::Tcp => (true, false),
            TransportChoice::Udp => (false, true),
            TransportChoice::Both => (true, true),
        }
    }

    /// UPnP's description port (configured or default); `None` for every other kind.
    pub fn upnp_description_port(&self) -> Option<u16> {
        (self.kind == ServiceKind::Upnp).then(|| self.description_port.unwrap_or(DEFAULT_UPNP_DESCRIPTION_PORT))
    }

    /// FTP's passive port range (configured or default), `(first, last)` inclusive.
    pub fn passive_range(&self) -> (u16, u16) {
        let r = self.passive_ports.unwrap_or(DEFAULT_PASSIVE_PORTS);
        (r.first, r.last)
    }

    /// The configured banner, or the module's `default` when the config leaves it empty.
    pub fn banner_or<'a>(&'a self, default: &'a str) -> &'a str {
        if self.banner.is_empty() {
            default
        } else {
            &self.banner
        }
    }
}

fn default_bind() -> IpAddr {
    IpAddr::from([0, 0, 0, 0])
}

fn default_true() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BlackholeSection {
    /// Extra ports that accept, record the first bytes and never answer.
    pub ports: Vec<u16>,
    pub bind: IpAddr,
    /// Bytes recorded per connection (sha256 covers them, a prefix is kept).
    pub record_bytes: usize,
}

impl Default for BlackholeSection {
    fn default() -> Self {
        BlackholeSection { ports: Vec::new(), bind: default_bind(), record_bytes: 4096 }
    }
}

/// The login policy (see [`crate::credentials`]).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CredentialsSection {
    /// Logins refused from a source address before any may succeed.
    pub refuse_first: u32,
    /// `user:password` pairs that may then succeed; `*` matches anything, `!pw` anything but pw.
    pub accept: Vec<String>,
    /// Most source addresses whose refused attempts are counted (oldest dropped past it).
    pub max_sources: usize,
}

impl Default for CredentialsSection {
    fn default() -> Self {
        CredentialsSection {
            refuse_first: 2,
            accept: DEFAULT_ACCEPT.iter().map(|s| s.to_string()).collect(),
            max_sources: 65_536,
        }
    }
}

/// The default weak pairs: the factory logins IoT botnets (Mirai and its descendants) try first,
/// and the classic server ones. Anonymous FTP is not among them.
pub const DEFAULT_ACCEPT: &[&str] = &[
    "root:root",
    "root:admin",
    "root:123456",
    "root:12345",
    "root:password",
    "root:default",
    "root:vizxv",
    "root:xc3511",
    "root:888888",
    "root:xmhdipc",
    "root:juantech",
    "root:54321",
    "root:realtek",
    "root:1234",
    "admin:admin",
    "admin:password",
    "admin:1234",
    "admin:12345",
    "support:support",
    "user:user",
    "guest:guest",
    "ubnt:ubnt",
    "pi:raspberry",
];

/// `[smtp]`: what the SMTP service (`kind = "smtp"`) does with mail.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpSection {
    /// `open`: accept mail for any recipient, as an open relay does (spammers then send their
    /// test message, which is kept); `refuse`: answer "Relay access denied" for every recipient.
    pub relay: SmtpRelay,
    /// Largest message accepted (advertised as `SIZE`); the body kept as a sample is also bounded
    /// by `samples.max_sample_bytes` and the session's `limits.max_bytes_in`.
    pub max_message_bytes: u64,
}

/// `[scan]`: scan detection (see [`crate::scan`]).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ScanSection {
    /// Open the packet socket (needs root or CAP_NET_RAW at start). Off by default; the
    /// appliance turns it on.
    pub enabled: bool,
    /// Length of a window: one event per source and transport per window.
    pub window_s: u64,
    /// Most (source, transport) pairs tracked per window; packets of further sources are
    /// counted in one overflow record per window.
    pub max_sources: usize,
    /// Distinct ports listed per event, in order of arrival.
    pub first_ports: usize,
    /// Most 8 KiB port bitmaps (exact distinct-port counts past 64 ports) at once.
    pub max_port_bitmaps: usize,
    /// Packets read per recvmmsg call.
    pub batch: usize,
    /// The packet socket's receive buffer, bytes (the kernel caps it at net.core.rmem_max);
    /// packets arriving while it is full are dropped by the kernel and reported.
    pub rcvbuf_bytes: u64,
    /// Only this interface ("" = every interface).
    pub interface: String,
}

impl Default for ScanSection {
    fn default() -> Self {
        ScanSection {
            enabled: false,
            window_s: 60,
            max_sources: 4096,
            first_ports: 32,
            max_port_bitmaps: 64,
            batch: 64,
            rcvbuf_bytes: 1024 * 1024,
            interface: String::new(),
        }
    }
}

impl ScanSection {
    fn validate(&self) -> Result<(), ConfigError> {
        let ranges: [(&str, u64, u64, u64, &str); 6] = [
            ("scan.window_s", self.window_s, 1, 3600, "use window_s = 60"),
            ("scan.max_sources", self.max_sources as u64, 1, 1_000_000, "use max_sources = 4096"),
            (
                "scan.first_ports",
                self.first_ports as u64,
                0,
                drosera_uplink::event::MAX_SCAN_PORTS as u64,
                "use first_ports = 32",
            ),
            ("scan.max_port_bitmaps", self.max_port_bitmaps as u64, 0, 4096, "use max_port_bitmaps = 64 (8 KiB each)"),
            ("scan.batch", self.batch as u64, 1, crate::scan::MAX_BATCH as u64, "use batch = 64"),
            ("scan.rcvbuf_bytes", self.rcvbuf_bytes, 4096, 64 * 1024 * 1024, "use rcvbuf_bytes = 1048576"),
        ];
        for (key, v, lo, hi, fix) in ranges {
            if v < lo || v > hi {
                return Err(invalid(key, format!("{v} is outside {lo}..={hi}"), fix));
            }
        }
        if self.interface.len() > 15 || self.interface.contains(['/', '\0', ' ']) {
            return Err(invalid(
                "scan.interface",
                format!("{:?} is not an interface name", self.interface),
                "name an interface such as \"eth0\", or \"\" for all",
            ));
        }
        Ok(())
    }
}

impl Default for SmtpSection {
    fn default() -> Self {
        SmtpSection { relay: SmtpRelay::Open, max_message_bytes: 10_240_000 }
    }
}

/// `smtp.relay`: whether mail to any recipient is accepted.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum SmtpRelay {
    /// Accept every recipient (what open-relay probes look for).
    #[default]
    Open,
    /// Refuse every recipient with 554 "Relay access denied".
    Refuse,
}

/// The sample area (`data_dir/samples`, see [`crate::samples`]).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SamplesSection {
    /// Keep delivered files whole. Off: each one is still hashed and reported, not kept.
    pub enabled: bool,
    /// Largest file kept, in bytes; a larger one is reported as too large (hash of its start).
    pub max_sample_bytes: u64,
    /// Most bytes of samples on disk not yet shipped to the admin. Never more than the free disk
    /// left after the store's reserve and the store's own room up to its cap.
    pub cap_bytes: u64,
    /// Most samples on disk not yet shipped.
    pub max_files: usize,
    /// Most samples being received at the same time (each holds a 64 KiB write buffer).
    pub max_writers: usize,
}

impl Default for SamplesSection {
    fn default() -> Self {
        SamplesSection {
            enabled: true,
            max_sample_bytes: 16 * 1024 * 1024,
            cap_bytes: 256 * 1024 * 1024,
            max_files: 10_000,
            max_writers: 64,
        }
    }
}

/// Most admin addresses `[uplink] admin` may list.
pub const MAX_ADMINS: usize = 16;

/// `[uplink] admin`: one `host:port`, or a list of them (the admins of a fleet sharing one
/// database). The shipper keeps to the admin that works and moves to the next one in the list
/// when a session fails; the admins' shared high-water mark makes a resend to another admin
/// store nothing twice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminAddrs(pub Vec<String>);

impl<'de> Deserialize<'de> for AdminAddrs {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(String),
            Many(Vec<String>),
        }
        match OneOrMany::deserialize(d)
            .map_err(|_| serde::de::Error::custom("expected \"host:port\" or a list [\"host:port\", \"host:port\"]"))?
        {
            OneOrMany::One(a) => Ok(AdminAddrs(vec![a])),
            OneOrMany::Many(v) => Ok(AdminAddrs(v)),
        }
    }
}

impl From<String> for AdminAddrs {
    fn from(a: String) -> Self {
        AdminAddrs(vec![a])
    }
}

impl std::fmt::Display for AdminAddrs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join(", "))
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UplinkSection {
    /// The admin's ingest address, `host:port`, or a list of them (see [`AdminAddrs`]).
    pub admin: AdminAddrs,
    /// Name the admin's certificate is issued for (default: the host part of each `admin`).
    #[serde(default)]
    pub server_name: String,
    /// PEM files: the admin's CA, this sensor's certificate and private key (mode 0600).
    pub ca_cert: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Most events in one batch.
    #[serde(default = "default_batch_events")]
    pub batch_max_events: usize,
    /// Most encoded bytes (before compression) in one batch.
    #[serde(default = "default_batch_bytes")]
    pub batch_max_bytes: usize,
    /// Longest wait between reconnect attempts, seconds (jittered exponential backoff).
    #[serde(default = "default_backoff_max")]
    pub backoff_max_s: u64,
}

fn default_batch_events() -> usize {
    5000
}
fn default_batch_bytes() -> usize {
    4 * 1024 * 1024
}
fn default_backoff_max() -> u64 {
    300
}

impl Config {
    /// Reads, parses and validates a config file, and resolves its relative paths against the
    /// file's directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        let mut cfg = Config::parse(&text, path)?;
        cfg.resolve_paths(path.parent().unwrap_or(Path::new("")));
        Ok(cfg)
    }

    /// Parses and validates config text (`path` is only used in messages; relative paths stay
    /// as written).
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let cfg: Config = serde_path_to_error::deserialize(toml::Deserializer::new(text)).map_err(|e| {
            ConfigError::Parse { path: path.to_path_buf(), key: e.path().to_string(), message: e.inner().to_string() }
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Makes every relative path in the config relative to `base` (the config file's directory),
    /// so a sensor's folder can move as a whole and the working directory does not matter.
    fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() && !p.as_os_str().is_empty() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.sensor.data_dir);
        for s in &mut self.services {
            if let Some(k) = s.host_key.as_mut() {
                fix(k);
            }
        }
        fix(&mut self.update.public_key);
        if let Some(u) = self.uplink.as_mut() {
            fix(&mut u.ca_cert);
            fix(&mut u.cert);
            fix(&mut u.key);
        }
    }

    /// Checks the relations between keys that serde cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.sensor.name.is_empty() || self.sensor.name.len() > 64 {
            return Err(invalid(
                "sensor.name",
                "must be 1 to 64 characters",
                "set a short name such as \"pi-livingroom\"",
            ));
        }
        let st = &self.store;
        if st.cap_bytes < 1024 * 1024 {
            return Err(invalid("store.cap_bytes", "below 1 MiB", "give the store at least 1048576 bytes"));
        }
        if !(st.low_water_pct < st.high_water_pct && st.high_water_pct <= 95 && st.low_water_pct >= 10) {
            return Err(invalid(
                "store.high_water_pct",
                format!(
                    "needs 10 <= low_water_pct ({}) < high_water_pct ({}) <= 95",
                    st.low_water_pct, st.high_water_pct
                ),
                "for example high_water_pct = 90 and low_water_pct = 80",
            ));
        }
        if st.gap_top_sources > drosera_uplink::event::MAX_EVICTED_SOURCES {
            return Err(invalid(
                "store.gap_top_sources",
                format!("is {}, more than {}", st.gap_top_sources, drosera_uplink::event::MAX_EVICTED_SOURCES),
                "use a small number such as 16",
            ));
        }
        if st.commit_interval_ms == 0 || st.commit_max_events == 0 {
            return Err(invalid(
                "store.commit_interval_ms",
                "group commit needs a non-zero interval and batch size",
                "use commit_interval_ms = 200, commit_max_events = 5000",
            ));
        }
        if st.channel_capacity == 0 || st.channel_capacity > 10_000_000 {
            return Err(invalid("store.channel_capacity", "must be between 1 and 10000000", "use 20000"));
        }
        self.scan.validate()?;
        if let Err((key, problem, fix)) = self.update.validate() {
            return Err(invalid(&key, problem, fix));
        }
        caps::validate(self)?;
        let m = &self.memory;
        if m.soft_limit_bytes >= m.hard_limit_bytes {
            return Err(invalid(
                "memory.soft_limit_bytes",
                format!("must be below memory.hard_limit_bytes ({} >= {})", m.soft_limit_bytes, m.hard_limit_bytes),
                "lower soft_limit_bytes or raise hard_limit_bytes",
            ));
        }
        if m.service_state_sources > MAX_SERVICE_STATE_SOURCES {
            return Err(invalid(
                "memory.service_state_sources",
                format!("{} is above {MAX_SERVICE_STATE_SOURCES}", m.service_state_sources),
                "remove the key to use the default (256), or lower it",
            ));
        }
        if m.idle_sample_interval_ms < m.sample_interval_ms {
            return Err(invalid(
                "memory.idle_sample_interval_ms",
                "must be at least memory.sample_interval_ms",
                "use idle_sample_interval_ms = 2000, or remove the key",
            ));
        }
        if m.rollup_max_keys == 0 || m.sample_interval_ms == 0 {
            return Err(invalid(
                "memory.rollup_max_keys",
                "must be non-zero (as must sample_interval_ms)",
                "use rollup_max_keys = 10000",
            ));
        }
        let l = &self.limits;
        for (key, v) in [
            ("limits.max_connections", l.max_connections as u64),
            ("limits.max_per_source", l.max_per_source as u64),
            ("limits.rate_per_source", l.rate_per_source as u64),
            ("limits.rate_burst", l.rate_burst as u64),
            ("limits.max_tracked_sources", l.max_tracked_sources as u64),
            ("limits.idle_timeout_s", l.idle_timeout_s),
            ("limits.session_timeout_s", l.session_timeout_s),
            ("limits.max_bytes_in", l.max_bytes_in),
            ("limits.max_line", l.max_line as u64),
            ("limits.max_critical_per_session", l.max_critical_per_session as u64),
        ] {
            if v == 0 {
                return Err(invalid(key, "must be greater than zero", "remove the key to use the default"));
            }
        }
        let mut seen = std::collections::HashSet::new();
        for (i, s) in self.services.iter().enumerate() {
            if s.ports.is_empty() {
                return Err(invalid(
                    &format!("service[{i}].ports"),
                    "no port listed",
                    "list at least one port, e.g. ports = [80]",
                ));
            }
            for p in &s.ports {
                if *p == 0 || !seen.insert((s.bind, *p)) {
                    return Err(invalid(
                        &format!("service[{i}].ports"),
                        format!("port {p} is zero or used twice"),
                        "give every service its own ports",
                    ));
                }
            }
        }
        for p in &self.blackhole.ports {
            if *p == 0 || !seen.insert((self.blackhole.bind, *p)) {
                return Err(invalid(
                    "blackhole.ports",
                    format!("port {p} is zero or already used by a service"),
                    "remove it from blackhole.ports",
                ));
            }
        }
        for (i, s) in self.services.iter().enumerate() {
            self.validate_passive(i, s)?;
            validate_transport(i, s)?;
            if let Some(p) = s.upnp_description_port() {
                if p == 0 || !seen.insert((s.bind, p)) {
                    return Err(invalid(
                        &format!("service[{i}].description_port"),
                        format!("port {p} is zero or already used by a TCP service"),
                        "pick a free TCP port, e.g. description_port = 49152",
                    ));
                }
            }
        }
        let u = &self.udp;
        for (key, v) in [
            ("udp.max_datagram_bytes", u.max_datagram_bytes as u64),
            ("udp.window_s", u.window_s),
            ("udp.datagrams_per_source", u.datagrams_per_source as u64),
            ("udp.bytes_per_source", u.bytes_per_source),
            ("udp.max_tracked_sources", u.max_tracked_sources as u64),
            ("udp.flow_timeout_s", u.flow_timeout_s),
        ] {
            if v == 0 {
                return Err(invalid(key, "must be greater than zero", "remove the key to use the default"));
            }
        }
        if u.max_datagram_bytes > MAX_UDP_DATAGRAM {
            return Err(invalid(
                "udp.max_datagram_bytes",
                format!("{} is above {MAX_UDP_DATAGRAM}", u.max_datagram_bytes),
                "remove the key to use the default (4096)",
            ));
        }
        if let Err(e) = crate::credentials::validate_accept(&self.credentials.accept) {
            return Err(invalid(
                &format!("credentials.accept[{}]", e.index),
                format!("{:?} is not user:password", e.entry),
                "write pairs like \"root:admin\" (\"*\" matches any, \"root:!root\" any but root)",
            ));
        }
        let sm = &self.samples;
        if sm.max_sample_bytes == 0 || sm.max_sample_bytes > sm.cap_bytes {
            return Err(invalid(
                "samples.max_sample_bytes",
                format!("must be between 1 and samples.cap_bytes ({})", sm.cap_bytes),
                "use max_sample_bytes = 16777216 with cap_bytes = 268435456",
            ));
        }
        if sm.max_files == 0 || sm.max_writers == 0 {
            return Err(invalid(
                "samples.max_writers",
                "max_writers and max_files must be greater than zero",
                "remove the keys to use the defaults (64 writers, 10000 files)",
            ));
        }
        if self.smtp.max_message_bytes == 0 {
            return Err(invalid(
                "smtp.max_message_bytes",
                "must be greater than zero",
                "remove the key to use the default (10240000, Postfix's)",
            ));
        }
        if let Some(u) = &self.uplink {
            if u.admin.0.is_empty() || u.admin.0.len() > MAX_ADMINS {
                return Err(invalid(
                    "uplink.admin",
                    format!("lists {} addresses", u.admin.0.len()),
                    format!("list 1 to {MAX_ADMINS} admins as \"host:port\""),
                ));
            }
            if let Some(a) = u.admin.0.iter().find(|a| !a.contains(':')) {
                return Err(invalid(
                    "uplink.admin",
                    format!("{a:?} has no port"),
                    "write host:port, e.g. \"admin.example.net:7443\"",
                ));
            }
            if u.batch_max_events == 0 || u.batch_max_bytes < 1024 {
                return Err(invalid(
                    "uplink.batch_max_events",
                    "batches need at least 1 event and 1024 bytes",
                    "use the defaults",
                ));
            }
        }
        Ok(())
    }

    /// FTP's passive keys: only on FTP, a sane range, and no port that a listener already uses.
    fn validate_passive(&self, i: usize, s: &ServiceSection) -> Result<(), ConfigError> {
        if s.kind != ServiceKind::Ftp {
            for (key, set) in
                [("passive_ports", s.passive_ports.is_some()), ("passive_address", s.passive_address.is_some())]
            {
                if set {
                    return Err(invalid(
                        &format!("service[{i}].{key}"),
                        format!(
                            "only FTP services have passive data connections (this one is kind = \"{}\")",
                            s.kind.protocol()
                        ),
                        "remove the key, or move it to the [[service]] with kind = \"ftp\"",
                    ));
                }
            }
            return Ok(());
        }
        let key = format!("service[{i}].passive_ports");
        let (first, last) = s.passive_range();
        if first == 0 || first > last || u32::from(last - first) >= MAX_PASSIVE_PORTS {
            return Err(invalid(
                &key,
                format!("[{first}, {last}] is not a range of 1 to {MAX_PASSIVE_PORTS} ports [first, last] without port 0"),
                "use for example passive_ports = [50000, 50031] (and open the same range in any firewall or NAT in front)",
            ));
        }
        let listening = self.services.iter().flat_map(|o| o.ports.iter()).chain(self.blackhole.ports.iter());
        if let Some(p) = listening.copied().find(|p| (first..=last).contains(p)) {
            return Err(invalid(
                &key,
                format!("[{first}, {last}] contains port {p}, which a service or the blackhole listens on"),
                "move the passive range or that port so they do not overlap",
            ));
        }
        if let Some(a) = s.passive_address {
            if a.is_unspecified() || a.is_multicast() || !a.is_ipv4() {
                return Err(invalid(
                    &format!("service[{i}].passive_address"),
                    format!("{a} cannot be announced in a PASV reply (it needs one IPv4 unicast address)"),
                    "give the public IPv4 address clients reach the sensor at, or remove the key to announce the address each client connected to",
                ));
            }
        }
        Ok(())
    }

    /// The passive data port ranges of the enabled FTP services, `(first, last)`, without
    /// repeats: what a firewall in front of the sensor must open besides `ports`.
    pub fn passive_port_ranges(&self) -> Vec<(u16, u16)> {
        let mut v: Vec<(u16, u16)> = self
            .services
            .iter()
            .filter(|s| s.enabled && s.kind == ServiceKind::Ftp)
            .map(|s| s.passive_range())
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// The ports the sensor listens on, `(tcp, udp)`, each sorted without duplicates: every
    /// enabled service's `ports` on the transports it serves, UPnP's description ports (TCP) and
    /// the blackhole's ports (TCP). The appliance firewall opens exactly these (the FTP passive
    /// ranges come from [`Config::passive_port_ranges`]).
    pub fn listen_ports(&self) -> (Vec<u16>, Vec<u16>) {
        let (mut tcp, mut udp) = (self.blackhole.ports.clone(), Vec::new());
        for s in self.services.iter().filter(|s| s.enabled) {
            let (t, u) = s.transports();
            if t {
                tcp.extend_from_slice(&s.ports);
            }
            if u {
                udp.extend_from_slice(&s.ports);
            }
            tcp.extend(s.upnp_description_port());
        }
        for v in [&mut tcp, &mut udp] {
            v.sort_unstable();
            v.dedup();
        }
        (tcp, udp)
    }

    /// Whether any enabled service listens on UDP.
    pub fn has_udp(&self) -> bool {
        self.services.iter().any(|s| s.enabled && s.transports().1)
    }

    pub fn health_interval(&self) -> Duration {
        Duration::from_secs(self.sensor.health_interval_s.max(1))
    }
}

/// Largest UDP datagram a sensor reads (the IPv4 UDP payload limit).
pub const MAX_UDP_DATAGRAM: usize = 65_507;

/// `transport` and `description_port` only where the kind speaks them.
fn validate_transport(i: usize, s: &ServiceSection) -> Result<(), ConfigError> {
    let name = s.kind.protocol();
    if let Some(t) = s.transport {
        let (tcp, udp) = s.transports();
        if udp && !s.kind.speaks_udp() {
            return Err(invalid(
                &format!("service[{i}].transport"),
                format!("kind = \"{name}\" has no UDP service"),
                "remove the key (only tftp, sip, memcached and upnp speak UDP)",
            ));
        }
        if tcp && !s.kind.speaks_tcp() {
            return Err(invalid(
                &format!("service[{i}].transport"),
                format!("kind = \"{name}\" is UDP only (transport = \"{t:?}\")"),
                "use transport = \"udp\" or remove the key",
            ));
        }
    }
    if s.description_port.is_some() && s.kind != ServiceKind::Upnp {
        return Err(invalid(
            &format!("service[{i}].description_port"),
            format!("only UPnP services have a description port (this one is kind = \"{name}\")"),
            "remove the key, or move it to the [[service]] with kind = \"upnp\"",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> String {
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/drosera-sensor.example.toml")).unwrap()
    }

    #[test]
    fn example_config_parses_and_its_defaults_are_the_code_defaults() {
        let cfg = Config::parse(&example(), Path::new("example")).unwrap();
        assert_eq!(cfg.sensor, SensorSection::default());
        assert_eq!(cfg.store, StoreSection::default());
        assert_eq!(cfg.memory, MemorySection::default());
        assert_eq!(cfg.limits, LimitsSection::default());
        assert_eq!(cfg.samples, SamplesSection::default());
        assert_eq!(cfg.credentials, CredentialsSection::default());
        assert_eq!(cfg.smtp, SmtpSection::default());
        assert_eq!(cfg.scan, ScanSection::default());
        assert_eq!(cfg.udp, UdpSection::default());
        assert_eq!(cfg.update, crate::update::UpdateSection::default());
        assert_eq!(cfg.mqtt, MqttSection::default());
        assert_eq!(cfg.mongodb, MongodbSection::default());
        assert_eq!(cfg.epmap, EpmapSection::default());
        assert_eq!(cfg.pptp, PptpSection::default());
        assert_eq!(cfg.printer, PrinterSection::default());
        assert_eq!(cfg.sip, SipSection::default());
        assert_eq!(cfg.memcached, MemcachedSection::default());
        assert_eq!(cfg.upnp, UpnpSection::default());
        assert_eq!(cfg.blackhole.record_bytes, BlackholeSection::default().record_bytes);
        assert!(!cfg.services.is_empty());
    }

    #[test]
    fn transports_and_the_description_port_only_where_the_kind_speaks_them() {
        let cfg = Config::parse(
            "[[service]]\nkind = \"sip\"\nports = [5060]\n[[service]]\nkind = \"tftp\"\nports = [69]\n\
             [[service]]\nkind = \"memcached\"\nports = [11211]\n[[service]]\nkind = \"upnp\"\nports = [1900]\n",
            Path::new("x"),
        )
        .unwrap();
        let t: Vec<(bool, bool)> = cfg.services.iter().map(|s| s.transports()).collect();
        assert_eq!(t, vec![(true, true), (false, true), (true, false), (false, true)]);
        assert_eq!(cfg.services[3].upnp_description_port(), Some(DEFAULT_UPNP_DESCRIPTION_PORT));
        // What the appliance firewall opens: SIP on both, memcached TCP only (its default),
        // TFTP and SSDP UDP only, UPnP's description port TCP.
        assert_eq!(cfg.listen_ports(), (vec![5060, 11211, DEFAULT_UPNP_DESCRIPTION_PORT], vec![69, 1900, 5060]));
        assert_eq!(cfg.services[0].upnp_description_port(), None);
        assert!(cfg.has_udp());
        for (body, key, hint) in [
            ("kind = \"http\"\nports = [80]\ntransport = \"udp\"", "service[0].transport", "only tftp, sip"),
            ("kind = \"tftp\"\nports = [69]\ntransport = \"both\"", "service[0].transport", "UDP only"),
            ("kind = \"sip\"\nports = [5060]\ndescription_port = 5061", "service[0].description_port", "only UPnP"),
            (
                "kind = \"upnp\"\nports = [1900]\ndescription_port = 80\n[[service]]\nkind = \"http\"\nports = [80]",
                "service[0].description_port",
                "already used",
            ),
        ] {
            let err = Config::parse(&format!("[[service]]\n{body}\n"), Path::new("x")).unwrap_err().to_string();
            assert!(err.contains(key) && err.contains(hint), "{body}: {err}");
        }
        let err = Config::parse("[[service]]\nkind = \"sip\"\nports = [5060]\ntransport = \"udpp\"\n", Path::new("x"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("service[0].transport") && err.contains("`both`"), "{err}");
        let err = Config::parse("[udp]\nwindow_s = 0\n", Path::new("x")).unwrap_err().to_string();
        assert!(err.contains("udp.window_s") && err.contains("Fix"), "{err}");
        let err = Config::parse("[udp]\nmax_datagram_bytes = 70000\n", Path::new("x")).unwrap_err().to_string();
        assert!(err.contains("udp.max_datagram_bytes"), "{err}");
    }

    #[test]
    fn protocol_caps_are_read_checked_and_named() {
        let cfg = Config::parse(
            "[mqtt]\nmax_topics = 8\n[epmap]\nmax_pdus = 5\n[pptp]\nmax_messages = 3\n\
             [printer]\nmax_commands = 0\n[memcached]\nmax_value_bytes = 1024\n",
            Path::new("x"),
        )
        .unwrap();
        assert_eq!(cfg.mqtt, MqttSection { max_topics: 8, ..MqttSection::default() });
        assert_eq!((cfg.epmap.max_pdus, cfg.pptp.max_messages, cfg.printer.max_commands), (5, 3, 0));
        assert_eq!(cfg.memcached.max_value_bytes, 1024);
        assert_eq!(cfg.mongodb, MongodbSection::default());
        for (body, key, fix) in [
            ("[mqtt]\nmax_packet_bytes = 0", "mqtt.max_packet_bytes", "use max_packet_bytes = 262144"),
            ("[mqtt]\nmax_packets = 0", "mqtt.max_packets", "use max_packets = 10000"),
            (
                "[mongodb]\nmax_message_bytes = 100000000",
                "mongodb.max_message_bytes",
                "use max_message_bytes = 1048576",
            ),
            ("[mongodb]\nmax_messages = 0", "mongodb.max_messages", "use max_messages = 10000"),
            ("[epmap]\nmax_fragment_bytes = 70000", "epmap.max_fragment_bytes", "use max_fragment_bytes = 5840"),
            ("[epmap]\nmax_contexts = 256", "epmap.max_contexts", "use max_contexts = 32"),
            ("[pptp]\nmax_message_bytes = 100", "pptp.max_message_bytes", "use max_message_bytes = 512"),
            ("[printer]\nmax_line_bytes = 1", "printer.max_line_bytes", "use max_line_bytes = 1024"),
            ("[sip]\nmax_messages = 0", "sip.max_messages", "use max_messages = 100"),
            ("[memcached]\nmax_commands = 0", "memcached.max_commands", "use max_commands = 1000"),
            ("[upnp]\nmax_body_bytes = 2000000", "upnp.max_body_bytes", "use max_body_bytes = 16384"),
        ] {
            let err = Config::parse(&format!("{body}\n"), Path::new("x")).unwrap_err().to_string();
            assert!(err.contains(key) && err.contains(fix), "{body}: {err}");
        }
        let err = Config::parse("[mqtt]\nmax_topic = 8\n", Path::new("x")).unwrap_err().to_string();
        assert!(err.contains("max_topic") && err.contains("max_topics"), "{err}");
    }

    #[test]
    fn unknown_key_is_named() {
        let err = Config::parse("[store]\ncap_byte = 5\n", Path::new("x")).unwrap_err().to_string();
        assert!(err.contains("cap_byte"), "{err}");
    }

    #[test]
    fn bad_relation_names_key_and_fix() {
        let err = Config::parse("[memory]\nsoft_limit_bytes = 100000000\nhard_limit_bytes = 1000\n", Path::new("x"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("memory.soft_limit_bytes") && err.contains("Fix"), "{err}");
        let err =
            Config::parse("[[service]]\nkind = \"gopher\"\nports = [70]\n", Path::new("x")).unwrap_err().to_string();
        assert!(err.contains("service[0].kind"), "{err}");
    }

    #[test]
    fn a_value_outside_an_enum_names_the_key_and_lists_the_valid_values() {
        for (text, key, valid) in [
            (
                "[[service]]\nkind = \"http\"\nports = [80]\n[[service]]\nkind = \"gopher\"\nports = [70]\n",
                "`service[1].kind`",
                "`http`, `ftp`, `telnet`, `ssh`, `mssql`, `mysql`, `smb`",
            ),
            ("[[service]]\nkind = \"blackhole\"\nports = [9]\n", "`service[0].kind`", "`smb`"),
            ("[sensor]\nlog_format = \"xml\"\n", "`sensor.log_format`", "`text` or `json`"),
            ("[store]\nsynchronous = \"off\"\n", "`store.synchronous`", "`normal` or `full`"),
            ("[smtp]\nrelay = \"closed\"\n", "`smtp.relay`", "`open` or `refuse`"),
        ] {
            let err = Config::parse(text, Path::new("x.toml")).unwrap_err().to_string();
            assert!(err.contains(key) && err.contains(valid), "{err}");
        }
        let cfg = Config::parse("[sensor]\nlog_format = \"json\"\n[store]\nsynchronous = \"full\"\n", Path::new("x"));
        let cfg = cfg.unwrap();
        assert_eq!((cfg.sensor.log_format, cfg.store.synchronous), (LogFormat::Json, Synchronous::Full));
    }

    #[test]
    fn ftp_passive_keys_are_checked_and_named() {
        let ok = Config::parse(
            "[[service]]\nkind = \"ftp\"\nports = [21]\npassive_ports = [40000, 40009]\npassive_address = \"203.0.113.7\"\n",
            Path::new("x"),
        )
        .unwrap();
        assert_eq!(ok.services[0].passive_range(), (40000, 40009));
        assert_eq!(ok.services[0].passive_address, Some("203.0.113.7".parse().unwrap()));
        let default = Config::parse("[[service]]\nkind = \"ftp\"\nports = [21]\n", Path::new("x")).unwrap();
        assert_eq!(default.services[0].passive_range(), (50000, 50031));
        // What the appliance firewall opens: each enabled FTP service's range, once.
        let two = Config::parse(
            "[[service]]\nkind = \"ftp\"\nports = [21]\n[[service]]\nkind = \"ftp\"\nports = [2121]\n\
             [[service]]\nkind = \"ftp\"\nports = [21021]\npassive_ports = [40000, 40001]\nenabled = false\n\
             [[service]]\nkind = \"http\"\nports = [80]\n",
            Path::new("x"),
        )
        .unwrap();
        assert_eq!(two.passive_port_ranges(), vec![(50000, 50031)]);
        assert_eq!(Config::default().passive_port_ranges(), vec![]);
        for (text, key, says) in [
            ("kind = \"http\"\nports = [80]\npassive_ports = [1, 2]", "service[0].passive_ports", "only FTP"),
            ("kind = \"ssh\"\nports = [22]\npassive_address = \"1.2.3.4\"", "service[0].passive_address", "only FTP"),
            (
                "kind = \"ftp\"\nports = [21]\npassive_ports = [50031, 50000]",
                "service[0].passive_ports",
                "[50031, 50000]",
            ),
            ("kind = \"ftp\"\nports = [21]\npassive_ports = [0, 10]", "service[0].passive_ports", "without port 0"),
            (
                "kind = \"ftp\"\nports = [21]\npassive_ports = [1000, 3000]",
                "service[0].passive_ports",
                "1 to 1024 ports",
            ),
            ("kind = \"ftp\"\nports = [21, 50010]", "service[0].passive_ports", "contains port 50010"),
            ("kind = \"ftp\"\nports = [21]\npassive_address = \"::1\"", "service[0].passive_address", "IPv4"),
            (
                "kind = \"ftp\"\nports = [21]\npassive_address = \"0.0.0.0\"",
                "service[0].passive_address",
                "IPv4 unicast",
            ),
        ] {
            let err = Config::parse(&format!("[[service]]\n{text}\n"), Path::new("x")).unwrap_err().to_string();
            assert!(err.contains(key) && err.contains(says) && err.contains("Fix"), "{text}: {err}");
        }
        let err =
            Config::parse("[[service]]\nkind = \"ftp\"\nports = [21]\npassive_ports = [1, 2, 3]\n", Path::new("x"))
                .unwrap_err()
                .to_string();
        assert!(err.contains("service[0].passive_ports") && err.contains("[first, last]"), "{err}");
        let err =
            Config::parse("[[service]]\nkind = \"ftp\"\nports = [21]\n[blackhole]\nports = [50000]\n", Path::new("x"))
                .unwrap_err()
                .to_string();
        assert!(err.contains("contains port 50000"), "{err}");
    }

    #[test]
    fn scan_keys_are_checked_by_name() {
        for (toml, key) in [
            ("[scan]\nwindow_s = 0\n", "scan.window_s"),
            ("[scan]\nmax_sources = 0\n", "scan.max_sources"),
            ("[scan]\nfirst_ports = 5000\n", "scan.first_ports"),
            ("[scan]\nbatch = 0\n", "scan.batch"),
            ("[scan]\nrcvbuf_bytes = 10\n", "scan.rcvbuf_bytes"),
            ("[scan]\ninterface = \"a/b\"\n", "scan.interface"),
            ("[scan]\nenable = true\n", "enable"),
            ("[scan]\nenabled = \"yes\"\n", "scan.enabled"),
        ] {
            let err = Config::parse(toml, Path::new("x")).unwrap_err().to_string();
            assert!(err.contains(key), "{toml}: {err}");
        }
        let cfg = Config::parse("[scan]\nenabled = true\nwindow_s = 5\n", Path::new("x")).unwrap();
        assert!(cfg.scan.enabled && cfg.scan.window_s == 5);
    }

    #[test]
    fn smtp_message_cap_must_be_positive() {
        let err = Config::parse("[smtp]\nmax_message_bytes = 0\n", Path::new("x")).unwrap_err().to_string();
        assert!(err.contains("smtp.max_message_bytes") && err.contains("Fix"), "{err}");
        let cfg = Config::parse("[smtp]\nrelay = \"refuse\"\n", Path::new("x")).unwrap();
        assert_eq!(cfg.smtp.relay, SmtpRelay::Refuse);
    }

    #[test]
    fn service_state_sources_is_capped() {
        let err = Config::parse("[memory]\nservice_state_sources = 1000000\n", Path::new("x")).unwrap_err().to_string();
        assert!(err.contains("memory.service_state_sources") && err.contains("Fix"), "{err}");
        let cfg = Config::parse("[memory]\nservice_state_sources = 0\n", Path::new("x")).unwrap();
        assert_eq!(cfg.memory.service_state_sources, 0);
    }

    #[test]
    fn relative_paths_are_relative_to_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("drosera-sensor.toml");
        let text = "[sensor]\ndata_dir = \"data\"\n\n[[service]]\nkind = \"ssh\"\nports = [2222]\nhost_key = \"keys/seed\"\n\n\
                    [uplink]\nadmin = \"a:1\"\nca_cert = \"up/ca.pem\"\ncert = \"/etc/s.pem\"\nkey = \"up/s.key\"\n";
        std::fs::write(&file, text).unwrap();
        let cfg = Config::load(&file).unwrap();
        assert_eq!(cfg.sensor.data_dir, dir.path().join("data"));
        assert_eq!(cfg.services[0].host_key.as_deref(), Some(dir.path().join("keys/seed").as_path()));
        let up = cfg.uplink.unwrap();
        assert_eq!(up.ca_cert, dir.path().join("up/ca.pem"));
        assert_eq!(up.cert, PathBuf::from("/etc/s.pem"), "absolute paths stay as written");
        assert_eq!(up.key, dir.path().join("up/s.key"));
    }
}
