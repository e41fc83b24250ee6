//! The command line: every clap argument type of `drosera-admin`, and reading a password from
//! standard input.
//!
//! WHY here and not next to the code they drive: domain modules take typed values (a [`Query`],
//! a [`Format`], a name) and know nothing of flags, defaults or terminals, so the dashboard, the
//! tests and the CLI call the same functions. `main.rs` turns these types into those values.

use crate::analytics::{parse_time, AnalyticsError, Query};
use crate::config::{AdminConfig, ConfigError};
use crate::export::Format;
use crate::labels::{Include, Label};
use crate::users::MAX_PASSWORD;
use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

pub const DEFAULT_CONFIG: &str = "/etc/drosera/drosera-admin.toml";

#[derive(Parser)]
#[command(name = "drosera-admin", version, about = "Drosera admin: enrollment, ingest, reports, dashboard")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// `--config FILE`, shared by every command that works on an existing admin.
#[derive(Debug, Args, Clone)]
pub struct ConfigArg {
    /// The admin config file (written by `init`).
    #[arg(long, short = 'c', value_name = "FILE", default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
}

impl ConfigArg {
    pub fn load(&self) -> Result<AdminConfig, ConfigError> {
        AdminConfig::load(&self.config)
    }
}

/// `--since`, `--until`, `--sensor`: the range of `report` and `export`.
#[derive(Debug, Args, Clone, Default)]
pub struct RangeArgs {
    /// Start of the range: RFC 3339, YYYY-MM-DD, ms since the epoch, or an age like 7d / 24h;
    /// inclusive (report: rounded down to the hour; export: exact).
    #[arg(long)]
    pub since: Option<String>,
    /// End of the range (same forms); exclusive (report: rounded up to the hour; export: exact);
    /// default now.
    #[arg(long)]
    pub until: Option<String>,
    /// Only this sensor.
    #[arg(long)]
    pub sensor: Option<String>,
}

impl RangeArgs {
    /// The [`Query`] these arguments name, ages taken relative to `now_ms`.
    pub fn query(&self, now_ms: i64) -> Result<Query, AnalyticsError> {
        Ok(Query {
            since_ms: self.since.as_deref().map(|s| parse_time(s, now_ms)).transpose()?,
            until_ms: self.until.as_deref().map(|s| parse_time(s, now_ms)).transpose()?,
            sensor: self.sensor.clone(),
            include: Include::default(),
        })
    }
}

/// `drosera-admin report`. The report rounds `--since` down and `--until` up to whole hours.
#[derive(Debug, Clone, Args)]
pub struct ReportArgs {
    /// Print the report as JSON (the same structure as the dashboard's /api/report).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub range: RangeArgs,
    /// Only list source addresses with at least this many attempts.
    #[arg(long, default_value_t = 0)]
    pub min_attempts: i64,
    /// Rows per list.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    /// Labelled traffic to count as attacks too: self, research or self,research (by default
    /// both are left out of the numbers and shown apart).
    #[arg(long, value_name = "LABELS", default_value = "", value_parser = clap::builder::ValueParser::new(|s: &str| Include::parse(s)))]
    pub include: Include,
}

impl ReportArgs {
    pub fn query(&self, now_ms: i64) -> Result<Query, AnalyticsError> {
        Ok(Query { include: self.include, ..self.range.query(now_ms)? })
    }
}

/// `drosera-admin export`. Its bounds are exact to the millisecond.
#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    /// jsonl or csv: one row per attack (connection), MHN session-shaped, with its logins,
    /// commands, payloads and samples folded in; events-jsonl or events-csv: one row per stored
    /// event; ecs: one Elastic Common Schema document per stored event (JSON lines, for SIEMs).
    /// JSON values are typed (numbers, booleans); CSV cells are text.
    #[arg(long, value_parser = clap::builder::ValueParser::new(|s: &str| s.parse::<Format>()))]
    pub format: Format,
    #[command(flatten)]
    pub range: RangeArgs,
    /// Write to this file instead of standard output.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum Command {
    /// Create the certificate authority, the server certificate, the database and a config in DIR.
    Init {
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// host:port sensors will connect to (its host goes into the server certificate).
        #[arg(long, value_name = "HOST:PORT")]
        admin: Option<String>,
        /// Ingest listen address (default 0.0.0.0 and the port of --admin, or 7443).
        #[arg(long, value_name = "ADDR:PORT")]
        listen: Option<SocketAddr>,
        /// Dashboard listen address (default 127.0.0.1:9080).
        #[arg(long, value_name = "ADDR:PORT")]
        dashboard_listen: Option<SocketAddr>,
        /// The database: sqlite:PATH or postgres://USER:PASSWORD@HOST:PORT/DB (default: SQLite
        /// admin.db in DIR).
        #[arg(long, value_name = "URL")]
        db_url: Option<String>,
        /// Another name or address of this admin for the server certificate (repeatable): every
        /// name sensors may reach any admin of a fleet by.
        #[arg(long, value_name = "NAME")]
        server_name: Vec<String>,
        /// Join a fleet: take the CA and the server certificate from the folder of the fleet's
        /// first admin (made by `init`) instead of creating new ones, so sensors enrolled by any
        /// admin are accepted by all of them. Use with the same --db-url.
        #[arg(long, value_name = "DIR")]
        join: Option<PathBuf>,
    },
    /// Enroll, revoke and list sensors.
    #[command(subcommand)]
    Sensor(SensorCommand),
    /// Print totals per protocol, top source addresses, credentials and sensor health.
    Report {
        #[command(flatten)]
        args: ReportArgs,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Stream stored events as JSON lines or CSV (constant memory).
    Export {
        #[command(flatten)]
        args: ExportArgs,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Manage dashboard users.
    #[command(subcommand)]
    User(UserCommand),
    /// Labels on source addresses: your own tests (self), research scanners (research) or a
    /// name of your own; self and research are left out of the report's numbers.
    #[command(subcommand)]
    Label(LabelCommand),
    /// Apply the current labels and the bundled research-scanner list to every stored event
    /// again (`label add` and `label remove` do it themselves; run it after an upgrade).
    Relabel {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Copy an existing install's database into a new one (every table): sqlite:PATH to
    /// postgres://…
    Migrate {
        /// The database to copy (sqlite:PATH).
        #[arg(long, value_name = "URL")]
        from: String,
        /// The new, empty database (postgres://USER:PASSWORD@HOST:PORT/DB).
        #[arg(long, value_name = "URL")]
        to: String,
    },
    /// Apply the exploit rules (shipped and [exploits] rules_file) again to every stored HTTP
    /// request, body and command line; run it after changing the rules (idempotent).
    Reclassify {
        /// Events read per batch (each batch's changes are one transaction).
        #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(i64).range(1..=100_000))]
        batch: i64,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Try the bundled common passwords and every password seen in clear against the stored
    /// challenge-responses (MySQL, NTLM, VNC) once, within the [recover] budget; `serve` runs
    /// the same pass every [recover] interval_s.
    Recover {
        /// Passes to run (each takes at most [recover] batch responses).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        passes: u32,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Run the ingest server (mutual TLS) and the dashboard.
    Serve {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Malware samples the sensors shipped: list, show, get (encrypted ZIP), rescan.
    #[command(subcommand)]
    Samples(SampleCommand),
    /// Everything about one source address: country, AS, sensors, credentials, downloads,
    /// exploits, scans and its sessions (the dashboard's /attacker/ADDR).
    Attacker {
        /// The address (IPv4 or IPv6).
        addr: std::net::IpAddr,
        /// Sessions page (`[drill] sessions_per_page` per page, 50 by default; newest first).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        page: u32,
        /// Print JSON (the structure of /api/attacker).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        range: RangeArgs,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Every event of one connection in order (the dashboard's /session/SENSOR/CONN).
    Session {
        /// The sensor's name.
        sensor: String,
        /// The connection id the sensor's events carry.
        conn: i64,
        /// Print JSON (the structure of /api/session).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Search by address or network (1.2.3.0/24), user name, password, URL, sha256, CVE,
    /// protocol or sensor; `kind:value` (ip:, user:, pass:, url:, sha256:, cve:, protocol:,
    /// sensor:) says which.
    Search {
        /// What to look for.
        #[arg(value_parser = clap::builder::ValueParser::new(|s: &str| if s.chars().count() > 512 { Err("longer than 512 characters".to_string()) } else { Ok(s.to_string()) }))]
        q: String,
        /// Print JSON (the structure of /api/search).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        range: RangeArgs,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Signed sensor releases: add (sign and store), rollout (to sensors or a share), list.
    #[command(subcommand)]
    Release(ReleaseCommand),
}

/// `drosera-admin release ...` (the work is in `drosera_admin::releases`).
#[derive(Subcommand)]
pub enum ReleaseCommand {
    /// Sign BINARY (sha256, size, version, architecture) with the update key and store it.
    Add {
        binary: PathBuf,
        #[arg(long, value_name = "V")]
        version: String,
        /// aarch64 or x86_64 (default: read from the ELF header).
        #[arg(long, value_parser = ["aarch64", "x86_64"])]
        arch: Option<String>,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Offer release V to the named sensors or a stable share of all sensors (replaces the
    /// previous rollout); they take it at their next connection.
    Rollout {
        version: String,
        /// Comma-separated sensor names.
        #[arg(long, value_delimiter = ',', conflicts_with = "percent", required_unless_present = "percent")]
        sensors: Vec<String>,
        /// Share of sensors, 0 to 100 (the same sensors every time for a version).
        #[arg(long, value_parser = clap::value_parser!(u8).range(0..=100))]
        percent: Option<u8>,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Stored releases and the current rollout.
    List {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Make the update key pair for an admin made before signed updates ([updates] key, public_key).
    Keygen {
        #[command(flatten)]
        config: ConfigArg,
    },
}

/// `drosera-admin samples ...` (the work is in `drosera_admin::samples::ops`).
#[derive(Subcommand)]
pub enum SampleCommand {
    /// List stored samples, newest sighting first (filters combine).
    List {
        /// Only samples whose file type contains this text (e.g. ELF, PE32, script).
        #[arg(long = "type", value_name = "T")]
        file_type: Option<String>,
        /// Only samples that matched this YARA rule.
        #[arg(long, value_name = "RULE")]
        yara: Option<String>,
        /// Only samples that arrived by this protocol (ftp, http, smb, telnet, ssh, ...).
        #[arg(long, value_name = "P")]
        protocol: Option<String>,
        /// Only samples this sensor saw.
        #[arg(long, value_name = "NAME")]
        sensor: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Hashes, size, type, names, sightings and YARA matches of one sample.
    Show {
        sha256: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Write the sample into a ZIP protected with the password `infected`.
    Get {
        sha256: String,
        /// The ZIP file to write (must not exist).
        #[arg(long, value_name = "FILE.zip")]
        out: PathBuf,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Classify again every sample whose rules version differs from the loaded rules.
    Rescan {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// URLs the opt-in fetcher took ([fetcher]), newest first, with what fetching gave.
    Fetches {
        /// Rows printed at most.
        #[arg(long, default_value_t = 100)]
        limit: i64,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        config: ConfigArg,
    },
}

#[derive(Subcommand)]
pub enum LabelCommand {
    /// Label an address or network (CIDR), then apply it to history.
    Add {
        /// An address (203.0.113.7) or a network (203.0.113.0/24, 2001:db8::/32).
        cidr: String,
        /// self (your own machines), research (scanners) or a name of your own (a-z, 0-9, - _).
        #[arg(long = "as", value_name = "LABEL", value_parser = clap::builder::ValueParser::new(|s: &str| s.parse::<Label>()))]
        label: Label,
        /// Why (shown by `label list`).
        #[arg(long, default_value = "")]
        note: String,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Every label.
    List {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Remove the label of an address or network (as it was added), then apply that to history.
    Remove {
        cidr: String,
        #[command(flatten)]
        config: ConfigArg,
    },
}

#[derive(Subcommand)]
pub enum UserCommand {
    /// Create user NAME or set a new password (read from standard input, or prompted for).
    Add {
        name: String,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Per-user API tokens for `/api/...` (`Authorization: Bearer TOKEN`; see docs/api.md).
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Create an API token for USER and print it (once: only its hash is stored).
    Create {
        user: String,
        /// What the token is for (shown by `list`).
        #[arg(long, default_value = "")]
        note: String,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// USER's tokens: id, note, created, last used, revoked.
    List {
        user: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Revoke token ID (from `list`) of USER: it is refused from then on.
    Revoke {
        user: String,
        id: String,
        #[command(flatten)]
        config: ConfigArg,
    },
}

#[derive(Subcommand)]
pub enum SensorCommand {
    // (`about`/`help` instead of doc comments: rustdoc would read the brackets as links.)
    #[command(about = "Issue a certificate for sensor NAME and write its bundle (keys, CA, [uplink] section) to DIR")]
    Add {
        name: String,
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        #[arg(
            long,
            value_name = "HOST:PORT",
            help = "host:port the sensor connects to (default: [ingest] public_address); repeat it for the admins of a fleet, which the sensor fails over between in this order"
        )]
        admin: Vec<String>,
        /// Where the bundle will live on the sensor (default: the absolute --out).
        #[arg(long, value_name = "DIR")]
        install_dir: Option<PathBuf>,
        /// Label this address (the machine you set the sensor up from, or its network) `self`
        /// in the same step, so your own tests are never counted as attacks.
        #[arg(long, value_name = "ADDR")]
        label_self: Option<String>,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Revoke sensor NAME: its next connection is refused.
    Revoke {
        name: String,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Signed configs for a sensor: `sensor config push NAME FILE`.
    #[command(subcommand)]
    Config(SensorConfigCommand),
    /// Show every sensor with its last contact and health.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        config: ConfigArg,
    },
}

#[derive(Subcommand)]
pub enum SensorConfigCommand {
    /// Sign FILE as sensor NAME's next config; the sensor validates it like check-config, runs
    /// it on trial and rolls back to its last good config if it does not become healthy.
    Push {
        name: String,
        file: PathBuf,
        #[command(flatten)]
        config: ConfigArg,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("cannot read the password")]
    Io(#[from] std::io::Error),
    #[error("the passwords differ")]
    Mismatch,
}

/// The first line of standard input (at most [`MAX_PASSWORD`] + 2 bytes read).
fn read_line_capped() -> Result<String, PasswordError> {
    use std::io::{BufRead, Read};
    let mut line = String::new();
    std::io::stdin().lock().take(MAX_PASSWORD as u64 + 2).read_line(&mut line)?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

/// A new password: the first line of standard input, or, on a terminal, prompted for twice
/// without echo.
pub fn read_password() -> Result<String, PasswordError> {
    use std::io::{IsTerminal, Write};
    if !std::io::stdin().is_terminal() {
        return read_line_capped();
    }
    let stty = |arg: &str| {
        std::process::Command::new("stty").arg(arg).stdin(std::process::Stdio::inherit()).status().ok();
    };
    stty("-echo");
    let result = (|| -> Result<String, PasswordError> {
        eprint!("Password: ");
        std::io::stderr().flush()?;
        let a = read_line_capped()?;
        eprint!("\nRepeat password: ");
        std::io::stderr().flush()?;
        let b = read_line_capped()?;
        eprintln!();
        if a != b {
            return Err(PasswordError::Mismatch);
        }
        Ok(a)
    })();
    stty("echo");
    result
}
