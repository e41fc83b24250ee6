//! The admin's one TOML config file (`drosera-admin.toml`): parsed once, validated, immutable.
//!
//! Every key has a default, documented in `admin/drosera-admin.example.toml` (a test parses it
//! and compares it with [`AdminConfig::default`]); unknown keys are an error so a typo never
//! silently falls back to a default. Relative paths are taken relative to the directory of the
//! config file, so a folder made by `drosera-admin init --dir DIR` can be moved as a whole.

pub use crate::analytics::DrillConfig;
pub use crate::dashboard::DashboardConfig;
pub use crate::enrich::EnrichmentConfig;
pub use crate::exploits::ExploitsConfig;
pub use crate::hpfeeds::HpfeedsConfig;
pub use crate::labels::LabelsConfig;
pub use crate::metrics::MetricsConfig;
pub use crate::recover::RecoverConfig;
pub use crate::releases::UpdatesConfig;
pub use crate::retention::RetentionConfig;
pub use crate::samples::classify::ClassifyConfig;
pub use crate::samples::fetch::FetcherConfig;
pub use crate::samples::SamplesConfig;
pub use crate::storage::DatabaseConfig;
pub use crate::webhooks::WebhooksConfig;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source} (create one with `drosera-admin init --dir DIR`)")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config key `{key}` is invalid: {problem}. Fix: {fix}")]
    Invalid { key: String, problem: String, fix: String },
}

fn invalid(key: &str, problem: impl Into<String>, fix: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key: key.to_string(), problem: problem.into(), fix: fix.into() }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    pub database: DatabaseConfig,
    pub tls: TlsConfig,
    pub ingest: IngestConfig,
    pub dashboard: DashboardConfig,
    pub drill: DrillConfig,
    pub enrichment: EnrichmentConfig,
    pub retention: RetentionConfig,
    pub labels: LabelsConfig,
    pub samples: SamplesConfig,
    pub classify: ClassifyConfig,
    pub fetcher: FetcherConfig,
    pub exploits: ExploitsConfig,
    pub recover: RecoverConfig,
    pub metrics: MetricsConfig,
    pub webhooks: WebhooksConfig,
    pub hpfeeds: HpfeedsConfig,
    pub updates: UpdatesConfig,
}

/// `[tls]`: the files `drosera-admin init` writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// The admin's certificate authority (sensors trust only this).
    pub ca_cert: PathBuf,
    /// The CA's private key (mode 0600); needed by `sensor add` only.
    pub ca_key: PathBuf,
    /// The ingest server's certificate and key (mode 0600).
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Default for TlsConfig {
    fn default() -> Self {
        let d = Path::new("/var/lib/drosera-admin");
        TlsConfig {
            ca_cert: d.join("ca.pem"),
            ca_key: d.join("ca.key"),
            cert: d.join("server.pem"),
            key: d.join("server.key"),
        }
    }
}

/// `[ingest]`: the mutual-TLS listener sensors ship to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Address the ingest server listens on.
    pub listen: SocketAddr,
    /// `host:port` sensors are told to connect to (written into sensor bundles); empty means
    /// `localhost` and the port of `listen`.
    pub public_address: String,
    /// Sensor connections served at once; more wait in the kernel backlog.
    pub max_connections: usize,
    /// Seconds a client has to finish the TLS handshake and send its hello.
    pub handshake_timeout_s: u64,
    /// Seconds without any frame before a sensor connection is closed (sensors ping every 30 s).
    pub idle_timeout_s: u64,
    /// Largest frame accepted (a batch frame holds the compressed payload), bytes.
    pub max_frame_bytes: usize,
    /// Most events in one batch.
    pub max_batch_events: u32,
    /// Most bytes a batch may decompress to.
    pub max_batch_bytes: u32,
    /// Batches queued for the database writer across all connections (group commit).
    pub commit_queue: usize,
    /// Batches one connection may have queued for commit before its reads pause.
    pub max_in_flight_per_connection: usize,
    /// Batches decompressed and decoded at once over all connections (each up to
    /// `max_batch_bytes`): the bound on decompression memory whatever the sensors send.
    pub max_concurrent_decodes: usize,
    /// Connections from one address that may be in the TLS handshake or before their hello at
    /// once; more are closed at accept (sensors retry with backoff).
    pub max_handshakes_per_source: usize,
    /// Seconds a new connection has to send its first TLS byte (a real sensor sends its
    /// ClientHello at once); idle connections are closed before they can hold a slot.
    pub client_hello_timeout_s: u64,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 7443)),
            public_address: String::new(),
            max_connections: 256,
            handshake_timeout_s: 10,
            idle_timeout_s: 300,
            max_frame_bytes: 16 * 1024 * 1024,
            max_batch_events: 20_000,
            max_batch_bytes: 8 * 1024 * 1024,
            commit_queue: 64,
            max_in_flight_per_connection: 8,
            max_concurrent_decodes: 2,
            max_handshakes_per_source: 8,
            client_hello_timeout_s: 3,
        }
    }
}

impl IngestConfig {
    /// The address written into sensor bundles.
    pub fn public_address(&self) -> String {
        if self.public_address.is_empty() {
            format!("localhost:{}", self.listen.port())
        } else {
            self.public_address.clone()
        }
    }
}

impl AdminConfig {
    /// Reads, parses, resolves relative paths and validates a config file.
    pub fn load(path: &Path) -> Result<AdminConfig, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        let mut cfg = AdminConfig::parse(&text, path)?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        cfg.resolve_paths(&base);
        // The exploit rules (shipped and the operator's) are compiled now, so a bad rule is a
        // config error naming the file, the rule and the field, before anything starts.
        crate::exploits::Matcher::load(&cfg.exploits, Path::new("")).map_err(|e| {
            invalid("exploits.rules_file", e.to_string(), "fix that rule, or leave exploits.rules_file empty")
        })?;
        Ok(cfg)
    }

    /// Parses and validates config text (`path` only names the file in messages).
    pub fn parse(text: &str, path: &Path) -> Result<AdminConfig, ConfigError> {
        let cfg: AdminConfig = toml::from_str(text)
            .map_err(|e| ConfigError::Parse { path: path.to_path_buf(), message: e.to_string() })?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() && !p.as_os_str().is_empty() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.database.path);
        if let Some(rest) = self.database.url.strip_prefix("sqlite:") {
            let p = Path::new(rest.strip_prefix("//").unwrap_or(rest));
            if p.is_relative() && !p.as_os_str().is_empty() {
                self.database.url = format!("sqlite:{}", base.join(p).display());
            }
        }
        fix(&mut self.tls.ca_cert);
        fix(&mut self.tls.ca_key);
        fix(&mut self.tls.cert);
        fix(&mut self.tls.key);
        fix(&mut self.enrichment.country_mmdb);
        fix(&mut self.enrichment.asn_mmdb);
        fix(&mut self.samples.dir);
        if let Some(dir) = &mut self.classify.rules_dir {
            fix(dir);
        }
        fix(&mut self.exploits.rules_file);
        fix(&mut self.metrics.bearer_token_file);
        fix(&mut self.hpfeeds.secret_file);
        fix(&mut self.updates.key);
        fix(&mut self.updates.public_key);
        fix(&mut self.updates.dir);
    }

    /// Checks relations serde cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Err((key, problem, fix)) = self.exploits.validate() {
            return Err(invalid(&key, problem, fix));
        }
        for check in [
            self.drill.validate(),
            self.recover.validate(),
            self.metrics.validate(),
            self.webhooks.validate(),
            self.hpfeeds.validate(),
        ] {
            if let Err((key, problem, fix)) = check {
                return Err(invalid(&key, problem, fix));
            }
        }
        if let Err(problem) = self.database.backend() {
            return Err(invalid(
                "database.url",
                problem,
                "write sqlite:PATH, postgres://USER:PASSWORD@HOST:PORT/DB, or leave it empty for SQLite at database.path",
            ));
        }
        let i = &self.ingest;
        if i.max_connections == 0 {
            return Err(invalid("ingest.max_connections", "must be at least 1", "use the default, 256"));
        }
        if i.handshake_timeout_s == 0 || i.idle_timeout_s == 0 {
            return Err(invalid(
                "ingest.handshake_timeout_s / ingest.idle_timeout_s",
                "timeouts must be at least 1 second",
                "use the defaults, 10 and 300",
            ));
        }
        if i.max_concurrent_decodes == 0 || i.max_handshakes_per_source == 0 || i.client_hello_timeout_s == 0 {
            return Err(invalid(
                "ingest.max_concurrent_decodes / ingest.max_handshakes_per_source / ingest.client_hello_timeout_s",
                "must be at least 1",
                "use the defaults, 2, 8 and 3",
            ));
        }
        if i.client_hello_timeout_s > i.handshake_timeout_s {
            return Err(invalid(
                "ingest.client_hello_timeout_s",
                "must not be longer than ingest.handshake_timeout_s",
                "use the default, 3",
            ));
        }
        if i.idle_timeout_s < 60 {
            return Err(invalid(
                "ingest.idle_timeout_s",
                "sensors ping every 30 s; less than 60 s would drop idle sensors",
                "use at least 60",
            ));
        }
        if i.max_frame_bytes < 64 * 1024 || i.max_frame_bytes > 1 << 30 {
            return Err(invalid(
                "ingest.max_frame_bytes",
                "must be between 64 KiB and 1 GiB",
                "use the default, 16777216",
            ));
        }
        if i.max_batch_events == 0 || i.max_batch_bytes < 64 * 1024 {
            return Err(invalid(
                "ingest.max_batch_events / ingest.max_batch_bytes",
                "batches need at least 1 event and 64 KiB",
                "use the defaults, 20000 and 8388608",
            ));
        }
        if i.commit_queue == 0 || i.max_in_flight_per_connection == 0 {
            return Err(invalid(
                "ingest.commit_queue / ingest.max_in_flight_per_connection",
                "must be at least 1",
                "use the defaults, 64 and 8",
            ));
        }
        let d = &self.dashboard;
        if d.refresh_interval_s == 0 {
            return Err(invalid("dashboard.refresh_interval_s", "must be at least 1 second", "use the default, 10"));
        }
        if d.max_concurrent_requests == 0 {
            return Err(invalid(
                "dashboard.max_concurrent_requests",
                "must be at least 1 (0 would answer every request with 503)",
                "use the default, 32",
            ));
        }
        for (key, v, default) in [
            ("dashboard.body_timeout_s", d.body_timeout_s, 10),
            ("dashboard.login_free_failures", d.login_free_failures as u64, 5),
            ("dashboard.login_failures_per_minute", d.login_failures_per_minute as u64, 60),
            ("dashboard.login_tracked_addresses", d.login_tracked_addresses as u64, 4096),
            ("dashboard.api_tokens_per_user", d.api_tokens_per_user as u64, 10),
        ] {
            if v == 0 {
                return Err(invalid(key, "must be at least 1", format!("use the default, {default}")));
            }
        }
        if self.labels.max_labels == 0 || self.labels.max_labels > 1_000_000 {
            return Err(invalid(
                "labels.max_labels",
                "must be between 1 and 1000000 (every report reads them all)",
                "use the default, 4096",
            ));
        }
        let r = &self.retention;
        if r.interval_s < 60 {
            return Err(invalid(
                "retention.interval_s",
                "must be at least 60 seconds (each run scans the database)",
                "use the default, 3600",
            ));
        }
        if r.max_bytes != 0 && r.max_bytes < 16 << 20 {
            return Err(invalid(
                "retention.max_bytes",
                "below 16 MiB would delete events as fast as they arrive",
                "use 0 (no cap) or at least 16777216; the default is 8589934592",
            ));
        }
        let u = &self.updates;
        if u.chunk_bytes < 1024 || u.chunk_bytes > crate::releases::MAX_CHUNK {
            return Err(invalid("updates.chunk_bytes", "must be between 1 KiB and 1 MiB", "use the default, 262144"));
        }
        if u.check_interval_s == 0 || u.check_interval_s > 86_400 {
            return Err(invalid("updates.check_interval_s", "must be between 1 and 86400", "use the default, 300"));
        }
        if u.max_release_bytes == 0 || u.max_release_bytes > 1 << 30 {
            return Err(invalid(
                "updates.max_release_bytes",
                "must be between 1 and 1 GiB",
                "use the default, 268435456",
            ));
        }
        let s = &self.samples;
        if s.dir.as_os_str().is_empty() {
            return Err(invalid("samples.dir", "is empty", "name a folder, e.g. \"samples\" (next to this file)"));
        }
        if s.max_sample_bytes == 0 || s.max_sample_bytes > 1 << 30 {
            return Err(invalid(
                "samples.max_sample_bytes",
                "must be between 1 and 1 GiB",
                "use the default, 67108864",
            ));
        }
        if s.max_bytes != 0 && s.max_bytes < s.max_sample_bytes {
            return Err(invalid(
                "samples.max_bytes",
                "is smaller than samples.max_sample_bytes, so large samples could never be kept",
                "use 0 (no cap) or at least samples.max_sample_bytes; the default is 10737418240",
            ));
        }
        if s.chunk_bytes < 1024 || s.chunk_bytes > 16 << 20 {
            return Err(invalid("samples.chunk_bytes", "must be between 1 KiB and 16 MiB", "use the default, 262144"));
        }
        for (key, v, default) in [
            ("samples.max_offer", s.max_offer as u64, 64),
            ("samples.max_parts", s.max_parts as u64, 64),
            ("samples.max_concurrent_verifies", s.max_concurrent_verifies as u64, 2),
            ("samples.max_rejections_kept", s.max_rejections_kept as u64, 10000),
        ] {
            if v == 0 {
                return Err(invalid(key, "must be at least 1", format!("use the default, {default}")));
            }
        }
        if s.max_offer > 1024 {
            return Err(invalid(
                "samples.max_offer",
                "must be at most 1024 (an offer is one control frame)",
                "use the default, 64",
            ));
        }
        let c = &self.classify;
        let fe = &self.fetcher;
        for (key, v, default) in [
            ("classify.max_rule_files", c.max_rule_files as u64, 1024),
            ("classify.max_rule_file_bytes", c.max_rule_file_bytes, 4 << 20),
            ("classify.scan_timeout_s", c.scan_timeout_s, 10),
            ("fetcher.max_bytes", fe.max_bytes, 16 << 20),
            ("fetcher.timeout_s", fe.timeout_s, 60),
            ("fetcher.connect_timeout_s", fe.connect_timeout_s, 10),
            ("fetcher.max_concurrent", fe.max_concurrent as u64, 4),
            ("fetcher.queue", fe.queue as u64, 256),
            ("fetcher.remembered_urls", fe.remembered_urls as u64, 65_536),
            ("fetcher.max_url_bytes", fe.max_url_bytes as u64, 2048),
        ] {
            if v == 0 {
                return Err(invalid(key, "must be at least 1", format!("use the default, {default}")));
            }
        }
        if fe.enabled && !s.enabled {
            return Err(invalid(
                "fetcher.enabled",
                "is true but samples.enabled is false, so fetched files could not be kept",
                "set [samples] enabled = true, or [fetcher] enabled = false",
            ));
        }
        if let Err(bad) = fe.allow_nets() {
            return Err(invalid(
                "fetcher.allow",
                format!("{bad:?} is not a CIDR range"),
                "write ranges like \"127.0.0.0/8\" or \"2001:db8::/32\"; the default is [] (public addresses only)",
            ));
        }
        if c.rules_dir.as_ref().is_some_and(|d| d.as_os_str().is_empty()) {
            return Err(invalid(
                "classify.rules_dir",
                "is empty",
                "name a folder of *.yar files, or remove the key to use the built-in rules only",
            ));
        }
        if !i.public_address.is_empty() && !i.public_address.contains(':') {
            return Err(invalid(
                "ingest.public_address",
                format!("{:?} has no port", i.public_address),
                "write host:port, e.g. \"admin.example.net:7443\"",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_equals_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("drosera-admin.example.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let cfg = AdminConfig::parse(&text, &path).unwrap();
        assert_eq!(cfg, AdminConfig::default());
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let e = AdminConfig::parse("[ingest]\nlisten_addr = \"1.2.3.4:5\"\n", Path::new("x")).unwrap_err();
        assert!(e.to_string().contains("listen_addr"), "{e}");
        let e = AdminConfig::parse("[ingest]\nmax_connections = 0\n", Path::new("x")).unwrap_err();
        assert!(e.to_string().contains("ingest.max_connections"), "{e}");
        let e = AdminConfig::parse("[ingest]\npublic_address = \"host\"\n", Path::new("x")).unwrap_err();
        assert!(e.to_string().contains("public_address"), "{e}");
        for (text, key) in [
            ("[dashboard]\nrefresh_interval_s = 0\n", "dashboard.refresh_interval_s"),
            ("[dashboard]\nmax_concurrent_requests = 0\n", "dashboard.max_concurrent_requests"),
            ("[dashboard]\nbody_timeout_s = 0\n", "dashboard.body_timeout_s"),
            ("[dashboard]\nlogin_tracked_addresses = 0\n", "dashboard.login_tracked_addresses"),
            ("[dashboard]\napi_tokens_per_user = 0\n", "dashboard.api_tokens_per_user"),
            ("[retention]\ninterval_s = 0\n", "retention.interval_s"),
            ("[retention]\nmax_bytes = 1000\n", "retention.max_bytes"),
            ("[labels]\nmax_labels = 0\n", "labels.max_labels"),
            ("[samples]\nmax_offer = 0\n", "samples.max_offer"),
            ("[samples]\nchunk_bytes = 10\n", "samples.chunk_bytes"),
            ("[samples]\nmax_sample_bytes = 0\n", "samples.max_sample_bytes"),
            ("[samples]\nmax_bytes = 1000\n", "samples.max_bytes"),
            ("[classify]\nscan_timeout_s = 0\n", "classify.scan_timeout_s"),
            ("[fetcher]\nmax_bytes = 0\n", "fetcher.max_bytes"),
            ("[fetcher]\nallow = [\"127.0.0.1/99\"]\n", "fetcher.allow"),
            ("[fetcher]\nallow = [\"localhost\"]\n", "fetcher.allow"),
            ("[drill]\nattacker_events = 0\n", "drill.attacker_events"),
            ("[drill]\nsession_events = 1000000\n", "drill.session_events"),
            ("[drill]\nsearch_scan = 0\n", "drill.search_scan"),
            ("[drill]\nsearch_hits = 20000\n", "drill.search_hits"),
            ("[drill]\nsessions_per_page = 0\n", "drill.sessions_per_page"),
            ("[drill]\nlist_rows = 0\n", "drill.list_rows"),
        ] {
            let e = AdminConfig::parse(text, Path::new("x")).unwrap_err().to_string();
            assert!(e.contains(key) && e.contains("default"), "{text}: {e}");
        }
        assert!(AdminConfig::parse("[retention]\nmax_bytes = 0\n", Path::new("x")).is_ok());
        let e = AdminConfig::parse("[drill]\nmax_hits = 5\n", Path::new("x")).unwrap_err();
        assert!(e.to_string().contains("max_hits"), "{e}");
        let cfg = AdminConfig::parse("[drill]\nsearch_hits = 3\nlist_rows = 2\n", Path::new("x")).unwrap();
        assert_eq!((cfg.drill.search_hits, cfg.drill.list_rows, cfg.drill.session_events), (3, 2, 5000));
        let e = AdminConfig::parse("[samples]\nsize_cap = 1\n", Path::new("x")).unwrap_err();
        assert!(e.to_string().contains("size_cap"), "{e}");
        for bad in ["mysql://x", "sqlite:", "postgres://a:b@h:notaport/db"] {
            let e = AdminConfig::parse(&format!("[database]\nurl = \"{bad}\"\n"), Path::new("x")).unwrap_err();
            assert!(e.to_string().contains("database.url"), "{bad}: {e}");
        }
        let e = AdminConfig::parse("[classify]\nrule_dir = \"x\"\n", Path::new("x")).unwrap_err();
        assert!(e.to_string().contains("rule_dir"), "{e}");
        let e =
            AdminConfig::parse("[samples]\nenabled = false\n[fetcher]\nenabled = true\n", Path::new("x")).unwrap_err();
        assert!(e.to_string().contains("fetcher.enabled") && e.to_string().contains("samples.enabled"), "{e}");
        let e = AdminConfig::parse("[fetcher]\nenable = true\n", Path::new("x")).unwrap_err();
        assert!(e.to_string().contains("enable"), "{e}");
        let cfg = AdminConfig::parse("[fetcher]\nenabled = true\nallow = [\"127.0.0.0/8\", \"::1\"]\n", Path::new("x"))
            .unwrap();
        assert_eq!(cfg.fetcher.allow_nets().unwrap().len(), 2);
        let e = AdminConfig::parse("[database]\nurl = \"mysql://u:secret@h/db\"\n", Path::new("x")).unwrap_err();
        assert!(!e.to_string().contains("secret"), "passwords are not printed: {e}");
    }

    #[test]
    fn exploit_rules_file_is_checked_at_load_and_follows_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.toml");
        std::fs::write(
            dir.path().join("mine.toml"),
            "[[rule]]\nname = \"Acme\"\nprotocols = [\"http\"]\n[[rule.when]]\nfield = \"path\"\ncontains = \"/acme\"\n",
        )
        .unwrap();
        std::fs::write(&p, "[exploits]\nrules_file = \"mine.toml\"\n").unwrap();
        let cfg = AdminConfig::load(&p).unwrap();
        assert_eq!(cfg.exploits.rules_file, dir.path().join("mine.toml"));
        std::fs::write(
            dir.path().join("mine.toml"),
            "[[rule]]\nname = \"Acme\"\nprotocols = [\"http\"]\n[[rule.when]]\nfield = \"path\"\ncontains = \"\"\n",
        )
        .unwrap();
        let e = AdminConfig::load(&p).unwrap_err().to_string();
        assert!(
            e.contains("exploits.rules_file") && e.contains("rule 1 (\"Acme\")") && e.contains("when[1].contains"),
            "{e}"
        );
        std::fs::write(&p, "[exploits]\nrules_file = \"missing.toml\"\n").unwrap();
        let e = AdminConfig::load(&p).unwrap_err().to_string();
        assert!(e.contains("exploits.rules_file") && e.contains("missing.toml"), "{e}");
        for (text, key) in [
            ("[exploits]\nmax_scan_bytes = 10\n", "exploits.max_scan_bytes"),
            ("[exploits]\nmax_exploits_per_event = 0\n", "exploits.max_exploits_per_event"),
            ("[exploits]\nmax_downloads_per_event = 1000\n", "exploits.max_downloads_per_event"),
            ("[exploits]\nrule_file = \"x\"\n", "rule_file"),
        ] {
            let e = AdminConfig::parse(text, Path::new("x")).unwrap_err().to_string();
            assert!(e.contains(key), "{text}: {e}");
        }
    }

    #[test]
    fn integration_keys_are_checked_and_named() {
        for (text, key) in [
            ("[recover]\nbatch = 0\n", "recover.batch"),
            ("[recover]\nmax_attempts = 5\n", "recover.max_attempts"),
            ("[recover]\nbudget = 5\n", "budget"),
            ("[metrics]\nlisten = \"0.0.0.0:9473\"\n", "metrics.bearer_token_file"),
            ("[metrics]\nlisten = \"localhost\"\n", "metrics.listen"),
            ("[webhooks]\nurls = [\"file:///etc/passwd\"]\n", "webhooks.urls"),
            ("[webhooks]\nevents = [\"new_sample\", \"sensor_down\"]\n", "sensor_down"),
            ("[webhooks]\nmax_per_minute = 0\n", "webhooks.max_per_minute"),
            ("[hpfeeds]\nhost = \"broker\"\n", "hpfeeds.ident"),
            ("[hpfeeds]\nhost = \"broker\"\nident = \"a\"\n", "hpfeeds.secret_file"),
            ("[hpfeeds]\nsecret = \"x\"\n", "secret"),
        ] {
            let e = AdminConfig::parse(text, Path::new("x")).unwrap_err().to_string();
            assert!(e.contains(key), "{text}: {e}");
        }
        let ok = "[metrics]\nlisten = \"127.0.0.1:9473\"\n[webhooks]\nurls = [\"https://h.example/x\"]\nevents = [\"evictions\"]\n";
        let cfg = AdminConfig::parse(ok, Path::new("x")).unwrap();
        assert_eq!(cfg.webhooks.events, [crate::webhooks::AlertKind::Evictions]);
        assert!(cfg.webhooks.enabled());
    }

    #[test]
    fn relative_paths_follow_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.toml");
        std::fs::write(&p, "[database]\npath = \"x.db\"\n[tls]\nca_cert = \"/abs/ca.pem\"\n").unwrap();
        let cfg = AdminConfig::load(&p).unwrap();
        assert_eq!(cfg.database.path, dir.path().join("x.db"));
        assert_eq!(cfg.tls.ca_cert, Path::new("/abs/ca.pem"));
        std::fs::write(&p, "[classify]\nrules_dir = \"rules\"\n").unwrap();
        assert_eq!(AdminConfig::load(&p).unwrap().classify.rules_dir, Some(dir.path().join("rules")));
        std::fs::write(&p, "[database]\nurl = \"sqlite:y.db\"\n").unwrap();
        let cfg = AdminConfig::load(&p).unwrap();
        assert_eq!(cfg.database.backend().unwrap(), crate::storage::Backend::Sqlite(dir.path().join("y.db")));
        std::fs::write(&p, "[database]\nurl = \"postgres://drosera@db.example:5432/drosera\"\n").unwrap();
        let cfg = AdminConfig::load(&p).unwrap();
        assert!(matches!(cfg.database.backend().unwrap(), crate::storage::Backend::Postgres(_)));
    }
}
