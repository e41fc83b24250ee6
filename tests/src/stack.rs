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

/// Where a service's probes go.
#[derive(Clone, Copy)]
enum Ports {
    Tcp(Probe),
    /// A UDP-only kind (TFTP).
    Udp(Probe),
    /// `transport = "both"` on one port number (SIP, memcached).
    Both {
        tcp: Probe,
        udp: Probe,
    },
    /// UPnP: SSDP on the service's UDP port, the description over HTTP on `description_port`.
    Upnp {
        ssdp: Probe,
        description: Probe,
    },
}

/// Every emulated service the sensor has (the blackhole and scan detection aside), with the
/// probe a client sends first on each of its transports.
const SERVICES: &[(&str, Ports)] = &[
    ("http", Ports::Tcp(Probe::Http)),
    ("ftp", Ports::Tcp(Probe::Banner)),
    ("telnet", Ports::Tcp(Probe::Banner)),
    ("ssh", Ports::Tcp(Probe::Banner)),
    ("mssql", Ports::Tcp(Probe::Mssql)),
    ("mysql", Ports::Tcp(Probe::Banner)),
    ("smb", Ports::Tcp(Probe::Smb)),
    ("redis", Ports::Tcp(Probe::Redis)),
    ("adb", Ports::Tcp(Probe::Adb)),
    ("docker", Ports::Tcp(Probe::Docker)),
    ("smtp", Ports::Tcp(Probe::Banner)),
    ("rdp", Ports::Tcp(Probe::Rdp)),
    ("vnc", Ports::Tcp(Probe::Banner)),
    ("mqtt", Ports::Tcp(Probe::Mqtt)),
    ("mongodb", Ports::Tcp(Probe::Mongodb)),
    ("epmap", Ports::Tcp(Probe::Epmap)),
    ("pptp", Ports::Tcp(Probe::Pptp)),
    ("printer", Ports::Tcp(Probe::Printer)),
    ("sip", Ports::Both { tcp: Probe::Sip, udp: Probe::SipUdp }),
    ("memcached", Ports::Both { tcp: Probe::Memcached, udp: Probe::MemcachedUdp }),
    ("upnp", Ports::Upnp { ssdp: Probe::Ssdp, description: Probe::UpnpDescription }),
    ("tftp", Ports::Udp(Probe::Tftp)),
];

/// One `[[service]]` section and the flood's targets for it, on the given free ports (`extra`
/// is only used by UPnP, for its description port).
fn service_section(kind: &'static str, ports: Ports, port: u16, extra: u16) -> (String, Vec<Target>) {
    let at = |p: u16, probe: Probe| Target { service: kind, addr: SocketAddr::from(([127, 0, 0, 1], p)), probe };
    let mut text = format!("\n[[service]]\nkind = \"{kind}\"\nports = [{port}]\nbind = \"127.0.0.1\"\n");
    let targets = match ports {
        Ports::Tcp(p) => vec![at(port, p)],
        Ports::Udp(p) => vec![at(port, p)],
        Ports::Both { tcp, udp } => {
            text.push_str("transport = \"both\"\n");
            vec![at(port, tcp), at(port, udp)]
        }
        Ports::Upnp { ssdp, description } => {
            let _ = writeln!(text, "description_port = {extra}");
            vec![at(port, ssdp), at(extra, description)]
        }
    };
    (text, targets)
}

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
        for (kind, ports) in SERVICES {
            let port = procs::free_port()?;
            let extra = if matches!(ports, Ports::Upnp { .. }) { procs::free_port()? } else { 0 };
            let (text, t) = service_section(kind, *ports, port, extra);
            services.push_str(&text);
            targets.extend(t);
        }
        eprintln!(
            "drosera-torture: {}: services {}",
            opts.name,
            targets
                .iter()
                .map(|t| format!("{}={}/{}", t.service, t.addr.port(), if t.probe.is_udp() { "udp" } else { "tcp" }))
                .collect::<Vec<_>>()
                .join(" ")
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

    /// The sensor's UDP ports (the flood's UDP targets).
    pub fn udp_ports(&self) -> Vec<u16> {
        self.targets.iter().filter(|t| t.probe.is_udp()).map(|t| t.addr.port()).collect()
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
    fn service_sections_put_each_probe_on_its_transport() {
        let (text, t) = service_section("sip", Ports::Both { tcp: Probe::Sip, udp: Probe::SipUdp }, 5060, 0);
        assert!(text.contains("kind = \"sip\"\nports = [5060]\nbind = \"127.0.0.1\"\ntransport = \"both\"\n"));
        assert_eq!(
            t.iter().map(|t| (t.addr.port(), t.probe.is_udp())).collect::<Vec<_>>(),
            [(5060, false), (5060, true)]
        );
        let (text, t) = service_section(
            "upnp",
            Ports::Upnp { ssdp: Probe::Ssdp, description: Probe::UpnpDescription },
            1900,
            49152,
        );
        assert!(
            text.contains("ports = [1900]")
                && text.contains("description_port = 49152\n")
                && !text.contains("transport")
        );
        assert_eq!(
            t.iter().map(|t| (t.addr.port(), t.probe.is_udp())).collect::<Vec<_>>(),
            [(1900, true), (49152, false)]
        );
        let (text, t) = service_section("tftp", Ports::Udp(Probe::Tftp), 69, 0);
        assert!(!text.contains("transport") && t.len() == 1 && t[0].probe.is_udp());
        // Every UDP service of the sensor is under load, and every kind appears once.
        let kinds: std::collections::BTreeSet<&str> = SERVICES.iter().map(|s| s.0).collect();
        assert_eq!(kinds.len(), SERVICES.len());
        for k in ["tftp", "sip", "memcached", "upnp", "mqtt", "mongodb", "epmap", "pptp", "printer"] {
            assert!(kinds.contains(k), "{k}");
        }
    }

    #[test]
    fn sensor_config_replaces_the_bundle_backoff() {
        let up = "[uplink]\nadmin = \"127.0.0.1:1\"\nbackoff_max_s = 300\n";
        let c = sensor_config(&SensorOpts::default(), Path::new("/d"), "", up);
        assert_eq!(c.matches("backoff_max_s").count(), 1);
        assert!(c.contains("backoff_max_s = 2"));
    }
}
