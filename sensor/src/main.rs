//! `drosera-sensor`: thin command line over the `drosera_sensor` library.

use anyhow::Context;
use clap::{Parser, Subcommand};
use drosera_sensor::config::{Config, LogFormat};
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "drosera-sensor", version, about = "Drosera honeypot sensor")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the sensor (bind the services, record events, ship them to the admin).
    Run {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Start `run` from the active update slot and supervise it: start a staged release on
    /// trial, roll back to the previous binary if it is not healthy in time (the appliance
    /// unit's ExecStart).
    Launch {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Print the event store's state (safe while the sensor runs; opens the store read-only).
    Status {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Validate a config file; exits non-zero with a message naming the bad key.
    CheckConfig {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Print the FTP passive data port ranges of a config (`first-last`, comma-separated;
    /// nothing without an enabled FTP service), for the appliance firewall, which must open
    /// exactly these besides every `ports` entry.
    PassivePorts {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Print the ports the services listen on, for the appliance firewall: a line
    /// `tcp PORT,PORT,...` (every TCP service, UPnP description ports, the blackhole) and a
    /// line `udp PORT,...` (every UDP service); a line is left out when it has no port.
    ListenPorts {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Print the config file the launcher runs (the last pushed config that proved healthy,
    /// `update/config-active.toml`, else FILE), for the appliance firewall, which opens the
    /// ports of that file.
    ActiveConfig {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Test helper: writes synthetic events into a store and prints `committed SEQ` after each
    /// commit (used by the kill -9 test).
    #[command(hide = true)]
    DebugStoreWriter {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long, default_value_t = 1024 * 1024)]
        cap_bytes: u64,
        /// Stop after this many events (0 = never).
        #[arg(long, default_value_t = 0)]
        events: u64,
    },
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Json => b.json().init(),
        LogFormat::Text => b.init(),
    }
}

fn main() -> anyhow::Result<()> {
    drosera_sensor::heap::limit_arenas();
    drosera_sensor::app::record_startup_threads();
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Run { config } => {
            let cfg = Config::load(&config)?;
            init_logging(cfg.sensor.log_format);
            // Before any thread exists: bind, hand over the data directory, drop root.
            let prepared = drosera_sensor::app::bind_and_drop(&cfg)?;
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("tokio runtime")?;
            let stopped = rt.block_on(drosera_sensor::app::run(cfg, prepared))?;
            if stopped == drosera_sensor::app::Stopped::Handover {
                drop(rt);
                std::process::exit(drosera_sensor::update::HANDOVER_EXIT);
            }
            Ok(())
        }
        Cmd::Launch { config } => {
            let cfg = Config::load(&config)?;
            init_logging(cfg.sensor.log_format);
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("tokio runtime")?;
            let code = rt.block_on(drosera_sensor::update::launcher::launch(&config))?;
            drop(rt);
            std::process::exit(code);
        }
        Cmd::Status { config, json } => {
            let cfg = Config::load(&config)?;
            let st = drosera_sensor::store::read_status(&cfg.store, &cfg.sensor.data_dir)
                .with_context(|| format!("cannot read the store in {}", cfg.sensor.data_dir.display()))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&st)?);
            } else {
                println!("backlog_events   {}", st.backlog_events);
                println!("store_bytes      {}", st.store_bytes);
                println!("cap_bytes        {} (configured {})", st.cap_bytes, st.configured_cap_bytes);
                println!("evicted_events   {}", st.evicted_events);
                println!("shed_connections {}", st.shed_connections);
                println!("last_seq         {}", st.last_seq);
                println!("acked_seq        {}", st.acked_seq);
            }
            Ok(())
        }
        Cmd::CheckConfig { file } => {
            let cfg = Config::load(&file)?;
            // The same check `run` makes: a key readable by others, a missing certificate or a
            // bad server name would leave a running sensor that never ships.
            if let Some(uplink) = &cfg.uplink {
                drosera_sensor::app::check_uplink(uplink)
                    .with_context(|| format!("{}: [uplink] cannot start", file.display()))?;
            }
            cfg.update
                .load_key(cfg.uplink.as_ref().map(|u| u.ca_cert.as_path()))
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            println!(
                "{}: ok (sensor {}, {} services, store cap {} bytes)",
                file.display(),
                cfg.sensor.name,
                cfg.services.len(),
                cfg.store.cap_bytes
            );
            Ok(())
        }
        Cmd::PassivePorts { file } => {
            let cfg = Config::load(&file)?;
            let ranges: Vec<String> = cfg.passive_port_ranges().iter().map(|(a, b)| format!("{a}-{b}")).collect();
            if !ranges.is_empty() {
                println!("{}", ranges.join(","));
            }
            Ok(())
        }
        Cmd::ListenPorts { file } => {
            let cfg = Config::load(&file)?;
            let (tcp, udp) = cfg.listen_ports();
            for (name, ports) in [("tcp", tcp), ("udp", udp)] {
                if !ports.is_empty() {
                    let list: Vec<String> = ports.iter().map(u16::to_string).collect();
                    println!("{name} {}", list.join(","));
                }
            }
            Ok(())
        }
        Cmd::ActiveConfig { file } => {
            use drosera_sensor::update::{read_json, running_config, Paths, State};
            let cfg = Config::load(&file)?;
            let paths = Paths::new(&cfg.sensor.data_dir);
            let state: State = read_json(&paths.state());
            println!("{}", running_config(&paths, &state, &file).display());
            Ok(())
        }
        Cmd::DebugStoreWriter { data_dir, cap_bytes, events } => {
            init_logging(LogFormat::Text);
            drosera_sensor::store::debug_writer(&data_dir, cap_bytes, events)
        }
    }
}
