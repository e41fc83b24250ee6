//! One admin and one sensor on loopback, set up the way an operator would: `drosera-admin init`,
//! `drosera-admin sensor add`, the bundle's `[uplink]` section appended to the sensor's config.

use crate::account::{self, AdminTotals, SensorStatus};
use crate::flood::{Probe, Target};
use crate::procs::{self, Proc};
use anyhow::{bail, Context, Result};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where the binaries are and how to run the sensor.
#[derive(Clone, Debug)]
pub struct Bins {
    pub admin: PathBuf,
    pub sensor: PathBuf,
}

impl Bins {
    /// The binaries beside a test executable (`target/<profile>/deps/<test>` → `target/<profile>`),
    /// as `cargo build --workspace --bins` left them.
    pub fn beside_test_exe() -> Result<Bins> {
        let exe = std::env::current_exe()?;
        let dir = exe.parent().and_then(Path::parent).context("test executable has no target directory")?;
        let bins = Bins { admin: dir.join("drosera-admin"), sensor: dir.join("drosera-sensor") };
        for b in [&bins.admin, &bins.sensor] {
            if !b.is_file() {
                bail!("{} not built: run `cargo build --workspace --bins` first", b.display());
            }
        }
        Ok(bins)
    }
}

/// Sensor settings the suite varies between phases.
#[derive(Clone, Debug)]
pub struct SensorOpts {
    pub name: String,
    /// None: a directory inside the stack's work dir.
    pub data_dir: Option<PathBuf>,
    pub cap_bytes: u64,
    pub reserve_bytes: u64,
    pub soft_limit: u64,
    pub hard_limit: u64,
    pub max_connections: u64,
    pub max_per_source: u64,
    pub rate_per_source: u64,
    pub rate_burst: u64,
    /// Program prepended to the sensor command (qemu).
    pub wrapper: Vec<String>,
    /// Extra environment (faketime).
    pub env: Vec<(String, String)>,
    /// Seconds to wait for the sensor to listen (qemu starts slowly).
    pub start_timeout: Duration,
    /// `sensor add --label-self ADDR`: the enrolling machine's address labelled `self`.
    pub label_self: Option<String>,
}

impl Default for SensorOpts {
    fn default() -> Self {
        SensorOpts {
            name: "torture-1".into(),
            data_dir: None,
            cap_bytes: 128 << 20,
            reserve_bytes: 64 << 20,
            soft_limit: 48 << 20,
            hard_limit: 64 << 20,
            max_connections: 2048,
            max_per_source: 64,
            rate_per_source: 200,
            rate_burst: 400,
            wrapper: Vec::new(),
            env: Vec::new(),
            start_timeout: Duration::from_secs(30),
            label_self: None,
        }
    }
}

pub struct Stack {
    pub bins: Bins,
    /// The work directory (admin dir, bundle, logs).
    pub dir: PathBuf,
    pub admin_cfg: PathBuf,
    pub admin: Proc,
    pub admin_db: PathBuf,
    pub ingest: SocketAddr,
    pub sensor: Proc,
    pub sensor_cfg: PathBuf,
    pub data_dir: PathBuf,
    pub opts: SensorOpts,
    pub targets: Vec<Target>,
}

const SERVICES: &[(&str, Probe)] = &[
    ("http", Probe::Http),
    ("ftp", Probe::Banner),
    ("telnet", Probe::Banner),
    ("ssh", Probe::Banner),
    ("mssql", Probe::Mssql),
    ("mysql", Probe::Banner),
    ("smb", Probe::Smb),
    ("redis", Probe::Redis),
    ("adb", Probe::Adb),
    ("docker", Probe::Docker),
    ("smtp", Probe::Banner),
    ("rdp", Probe::Rdp),
    ("vnc", Probe::Banner),
    ("mqtt", Probe::Mqtt),
    ("mongodb", Probe::Mongodb),
    ("epmap", Probe::Epmap),
    ("pptp", Probe::Pptp),
    ("printer", Probe::Printer),
];

impl Stack {
    /// Creates the admin (CA, config, database), enrolls the sensor and writes its config.
    /// Nothing is started.
    pub fn create(bins: &Bins, dir: &Path, opts: SensorOpts) -> Result<Stack> {
        std::fs::create_dir_all(dir)?;
        let admin_dir = dir.join("admin");
        let ingest = SocketAddr::from(([127, 0, 0, 1], procs::free_port()?));
        let dashboard = SocketAddr::from(([127, 0, 0, 1], procs::free_port()?));
        procs::run(&bins.admin, &["init", "--dir", &admin_dir.display().to_string()])?;
        let admin_cfg = admin_dir.join("drosera-admin.toml");
        let text = std::fs::read_to_string(&admin_cfg)
            .with_context(|| format!("`drosera-admin init` wrote no {}", admin_cfg.display()))?;
        std::fs::write(&admin_cfg, rewrite_admin_config(&text, ingest, dashboard))?;
        let bundle = dir.join("bundle");
        let (bundle_arg, cfg_arg) = (bundle.display().to_string(), admin_cfg.display().to_string());
        let mut add = vec!["sensor", "add", &opts.name, "--out", &bundle_arg, "--config", &cfg_arg];
        if let Some(addr) = &opts.label_self {
            add.extend(["--label-self", addr]);
        }
        procs::run(&bins.admin, &add)?;
        let uplink =
            std::fs::read_to_string(bundle.join("uplink.toml")).context("the sensor bundle has no uplink.toml")?;
        let data_dir = opts.data_dir.clone().unwrap_or_else(|| dir.join("sensor-data"));
        std::fs::create_dir_all(&data_dir)?;
        let mut targets = Vec::new();
        let mut services = String::new();
        for (kind, probe) in SERVICES {
            let port = procs::free_port()?;
            let _ = write!(services, "\n[[service]]\nkind = \"{kind}\"\nports = [{port}]\nbind = \"127.0.0.1\"\n");
            targets.push(Target { service: kind, addr: SocketAddr::from(([127, 0, 0, 1], port)), probe: *probe });
        }
        eprintln!(
            "drosera-torture: {}: services {}",
            opts.name,
            targets.iter().map(|t| format!("{}={}", t.service, t.addr.port())).collect::<Vec<_>>().join(" ")
        );
        let sensor_cfg = dir.join("drosera-sensor.toml");
        std::fs::write(&sensor_cfg, sensor_config(&opts, &data_dir, &services, &uplink))?;
        let log = |n: &str| dir.join(format!("{n}.log"));
        let admin =
            Proc::new("admin", &bins.admin, &["serve", "--config", &admin_cfg.display().to_string()], log("admin"))
                .env("RUST_LOG", "info");
        let mut sensor =
            Proc::new("sensor", &bins.sensor, &["run", "--config", &sensor_cfg.display().to_string()], log("sensor"))
                .env("RUST_LOG", "info")
                .wrapper(&opts.wrapper.iter().map(String::as_str).collect::<Vec<_>>());
        for (k, v) in &opts.env {
            sensor = sensor.env(k, v);
        }
        Ok(Stack {
            bins: bins.clone(),
            dir: dir.to_path_buf(),
            admin_cfg,
            admin,
            admin_db: admin_dir.join("admin.db"),
            ingest,
            sensor,
            sensor_cfg,
            data_dir,
            opts,
            targets,
        })
    }

    pub fn start_admin(&mut self) -> Result<()> {
        self.admin.start()?;
        procs::wait_listening(&mut self.admin, self.ingest, Duration::from_secs(30))
    }

    /// Starts the sensor and waits for its `ready` line (printed once every service is bound).
    /// No test connection is made: the accounting expects only the flood's connections.
    pub fn start_sensor(&mut self) -> Result<()> {
        let before = procs::count_log_lines(&self.sensor, "ready ");
        self.sensor.start()?;
        procs::wait_log_line(&mut self.sensor, "ready ", before, self.opts.start_timeout)
    }

    /// `drosera-sensor status --config FILE --json` (works while the sensor runs).
    pub fn status(&self) -> Result<SensorStatus> {
        let mut args: Vec<String> = Vec::new();
        let program = if self.opts.wrapper.is_empty() {
            self.bins.sensor.clone()
        } else {
            args.extend(self.opts.wrapper[1..].iter().cloned());
            args.push(self.bins.sensor.display().to_string());
            PathBuf::from(&self.opts.wrapper[0])
        };
        args.extend(["status".into(), "--config".into(), self.sensor_cfg.display().to_string(), "--json".into()]);
        let out = procs::run(&program, &args.iter().map(String::as_str).collect::<Vec<_>>())?;
        SensorStatus::parse(&out)
    }

    /// Waits until the sensor's store has nothing left to ship and the admin acknowledged it
    /// all; returns that status.
    pub fn drain(&mut self, timeout: Duration) -> Result<SensorStatus> {
        let until = Instant::now() + timeout;
        let mut last = None;
        loop {
            match self.status() {
                Ok(s) if s.backlog_events == 0 && s.acked_seq >= s.last_seq => return Ok(s),
                Ok(s) => last = Some(s),
                Err(e) if Instant::now() > until => return Err(e),
                Err(_) => {}
            }
            if !self.sensor.running() {
                bail!("sensor died while draining; log tail:\n{}", self.sensor.log_tail(20));
            }
            if Instant::now() > until {
                bail!("sensor did not drain to the admin in {timeout:?}: last status {last:?}");
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Stops the sensor gracefully (it flushes rollup counters into the store), starts it again
    /// so the shipper sends what is left, and drains. Returns the drained status and the
    /// admin's totals up to its `last_seq`.
    pub fn settle(&mut self, timeout: Duration) -> Result<(SensorStatus, AdminTotals)> {
        let how = self.sensor.stop(Duration::from_secs(30));
        if !how.contains("exit status: 0") && !how.contains("exit code: 0") && how != "not running" {
            bail!("sensor did not stop cleanly on SIGTERM: {how}; log tail:\n{}", self.sensor.log_tail(20));
        }
        self.start_sensor()?;
        let s = self.drain(timeout)?;
        let t = account::admin_totals(
            &drosera_admin::storage::Backend::Sqlite(self.admin_db.clone()),
            &self.opts.name,
            s.last_seq,
        )?;
        Ok((s, t))
    }

    pub fn admin_totals(&self, last_seq: u64) -> Result<AdminTotals> {
        account::admin_totals(
            &drosera_admin::storage::Backend::Sqlite(self.admin_db.clone()),
            &self.opts.name,
            last_seq,
        )
    }
}

/// Puts the admin's ingest and dashboard on the given loopback ports and makes bundles point at
/// the ingest address.
pub fn rewrite_admin_config(text: &str, ingest: SocketAddr, dashboard: SocketAddr) -> String {
    let mut section = String::new();
    let mut out = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            section = t.to_string();
        }
        let key = t.split('=').next().unwrap_or("").trim();
        let replaced = match (section.as_str(), key) {
            ("[ingest]", "listen") => Some(format!("listen = \"{ingest}\"")),
            ("[ingest]", "public_address") => Some(format!("public_address = \"{ingest}\"")),
            ("[dashboard]", "listen") => Some(format!("listen = \"{dashboard}\"")),
            _ => None,
        };
        out.push_str(replaced.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

/// The sensor's config: every service on 127.0.0.1, the limits under test, the bundle's uplink
/// with a short reconnect backoff (faults restart the admin; waiting 5 minutes proves nothing).
pub fn sensor_config(o: &SensorOpts, data_dir: &Path, services: &str, uplink: &str) -> String {
    let uplink: String =
        uplink.lines().filter(|l| !l.trim_start().starts_with("backoff_max_s")).map(|l| format!("{l}\n")).collect();
    format!(
        "# Written by drosera-torture.\n\
         [sensor]\nname = \"{name}\"\ndata_dir = \"{data}\"\nuser = \"\"\nhealth_interval_s = 10\n\n\
         [store]\ncap_bytes = {cap}\nreserve_bytes = {reserve}\ndisk_check_interval_s = 1\n\n\
         [memory]\nsoft_limit_bytes = {soft}\nhard_limit_bytes = {hard}\n\n\
         [limits]\nmax_connections = {maxc}\nmax_per_source = {mps}\nrate_per_source = {rate}\nrate_burst = {burst}\n\
         idle_timeout_s = 10\nsession_timeout_s = 60\n\
         {services}\n{uplink}backoff_max_s = 2\n",
        name = o.name,
        data = data_dir.display(),
        cap = o.cap_bytes,
        reserve = o.reserve_bytes,
        soft = o.soft_limit,
        hard = o.hard_limit,
        maxc = o.max_connections,
        mps = o.max_per_source,
        rate = o.rate_per_source,
        burst = o.rate_burst,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_config_rewrite_touches_only_the_listeners() {
        let text = "[database]\npath = \"admin.db\"\n\n[ingest]\nlisten = \"0.0.0.0:7443\"\npublic_address = \"\"\n\n[dashboard]\nlisten = \"127.0.0.1:9080\"\n";
        let out = rewrite_admin_config(text, "127.0.0.1:1000".parse().unwrap(), "127.0.0.1:2000".parse().unwrap());
        assert!(out.contains("[ingest]\nlisten = \"127.0.0.1:1000\"\npublic_address = \"127.0.0.1:1000\""));
        assert!(out.contains("[dashboard]\nlisten = \"127.0.0.1:2000\""));
        assert!(out.contains("path = \"admin.db\""));
    }

    #[test]
    fn sensor_config_replaces_the_bundle_backoff() {
        let up = "[uplink]\nadmin = \"127.0.0.1:1\"\nbackoff_max_s = 300\n";
        let c = sensor_config(&SensorOpts::default(), Path::new("/d"), "", up);
        assert_eq!(c.matches("backoff_max_s").count(), 1);
        assert!(c.contains("backoff_max_s = 2"));
    }
}
