//! `drosera-admin`: thin command line over the `drosera_admin` library.
//!
//! Each subcommand is one enum variant with its arguments and one `match` arm that calls the
//! library; adding a command touches nothing else.

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use drosera_admin::config::AdminConfig;
use drosera_admin::{enroll, ingest, sensors};
use std::path::PathBuf;
use std::process::ExitCode;

const DEFAULT_CONFIG: &str = "/etc/drosera/drosera-admin.toml";

#[derive(Parser)]
#[command(name = "drosera-admin", version, about = "Drosera admin: enrollment, ingest, reports, dashboard")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// `--config FILE`, shared by every command that works on an existing admin.
#[derive(Args, Clone)]
struct ConfigArg {
    /// The admin config file (written by `init`).
    #[arg(long, short = 'c', value_name = "FILE", default_value = DEFAULT_CONFIG)]
    config: PathBuf,
}

impl ConfigArg {
    fn load(&self) -> anyhow::Result<AdminConfig> {
        Ok(AdminConfig::load(&self.config)?)
    }
}

#[derive(Subcommand)]
enum Command {
    /// Create the certificate authority, the server certificate, the database and a config in DIR.
    Init {
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// host:port sensors will connect to (its host goes into the server certificate).
        #[arg(long, value_name = "HOST:PORT")]
        admin: Option<String>,
        /// Ingest listen address (default 0.0.0.0 and the port of --admin, or 7443).
        #[arg(long, value_name = "ADDR:PORT")]
        listen: Option<std::net::SocketAddr>,
        /// Dashboard listen address (default 127.0.0.1:9080).
        #[arg(long, value_name = "ADDR:PORT")]
        dashboard_listen: Option<std::net::SocketAddr>,
    },
    /// Enroll, revoke and list sensors.
    #[command(subcommand)]
    Sensor(SensorCommand),
    /// Print totals per protocol, top source addresses, credentials and sensor health.
    Report {
        #[command(flatten)]
        args: drosera_admin::analytics::ReportArgs,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Stream stored events as JSON lines or CSV (constant memory).
    Export {
        #[command(flatten)]
        args: drosera_admin::export::ExportArgs,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Manage dashboard users.
    #[command(subcommand)]
    User(UserCommand),
    /// Run the ingest server (mutual TLS) and the dashboard.
    Serve {
        #[command(flatten)]
        config: ConfigArg,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create user NAME or set a new password (read from standard input, or prompted for).
    Add {
        name: String,
        #[command(flatten)]
        config: ConfigArg,
    },
}

#[derive(Subcommand)]
enum SensorCommand {
    /// Issue a certificate for sensor NAME and write its bundle (keys, CA, [uplink] section) to DIR.
    Add {
        name: String,
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// host:port the sensor connects to (default: [ingest] public_address).
        #[arg(long, value_name = "HOST:PORT")]
        admin: Option<String>,
        /// Where the bundle will live on the sensor (default: the absolute --out).
        #[arg(long, value_name = "DIR")]
        install_dir: Option<PathBuf>,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Revoke sensor NAME: its next connection is refused.
    Revoke {
        name: String,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Show every sensor with its last contact and health.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        config: ConfigArg,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("drosera-admin: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Init { dir, admin, listen, dashboard_listen } => {
            let path = enroll::init(&enroll::InitOptions { dir, admin, listen, dashboard_listen })?;
            println!("created the CA, the server certificate and {}", path.display());
            println!("next: drosera-admin sensor add NAME --out DIR --config {}", path.display());
            Ok(())
        }
        Command::Sensor(SensorCommand::Add { name, out, admin, install_dir, config }) => {
            let cfg = config.load()?;
            let b = enroll::add_sensor(&cfg, &enroll::AddOptions { name: name.clone(), out, admin, install_dir })?;
            println!("sensor {name:?} enrolled; bundle in {} (connects to {})", b.dir.display(), b.admin);
            println!("copy the folder to the sensor and append {} to its drosera-sensor.toml", b.uplink_toml.display());
            Ok(())
        }
        Command::Sensor(SensorCommand::Revoke { name, config }) => {
            let cfg = config.load()?;
            let conn = drosera_admin::db::open(&cfg.database.path)?;
            sensors::revoke(&conn, &name)?;
            println!("sensor {name:?} revoked; its next connection is refused");
            Ok(())
        }
        Command::Sensor(SensorCommand::List { json, config }) => {
            let cfg = config.load()?;
            let conn = drosera_admin::db::open(&cfg.database.path)?;
            let list = sensors::list(&conn)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                print!("{}", sensors::render(&list, now_ms()));
            }
            Ok(())
        }
        Command::Report { args, config } => {
            let cfg = config.load()?;
            args.run(&cfg.database.path, &cfg.enrichment, &mut std::io::stdout().lock())
        }
        Command::Export { args, config } => {
            let cfg = config.load()?;
            let n = args.run(&cfg.database.path, &cfg.enrichment)?;
            eprintln!("exported {n} events");
            Ok(())
        }
        Command::User(UserCommand::Add { name, config }) => {
            let cfg = config.load()?;
            drosera_admin::users::add_command(&cfg.database.path, &name)
        }
        Command::Serve { config } => {
            let cfg = config.load()?;
            let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            rt.block_on(async {
                let (tx, rx) = tokio::sync::watch::channel(false);
                tokio::spawn(async move {
                    wait_for_signal().await;
                    tracing::info!("shutting down");
                    let _ = tx.send(true);
                });
                ingest::serve_all(&cfg, rx).await
            })
        }
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
