//! `drosera-admin`: thin command line over the `drosera_admin` library.
//!
//! The argument types are in `drosera_admin::cli`; each subcommand is one `match` arm here that
//! turns them into typed values and calls the library; adding a command touches nothing else.

use anyhow::Context;
use clap::Parser;
use drosera_admin::cli::{Cli, Command, SensorCommand, UserCommand};
use drosera_admin::clock::now_ms;
use drosera_admin::enrich::Enricher;
use drosera_admin::{analytics, app, cli, enroll, export, sensors, storage, users};
use std::io::{IsTerminal, Write};
use std::process::ExitCode;

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
        Command::Init { dir, admin, listen, dashboard_listen, db_url, server_name, join } => {
            let path = enroll::init(&enroll::InitOptions {
                dir,
                admin,
                listen,
                dashboard_listen,
                db_url,
                server_names: server_name,
                join,
            })?;
            println!("created the CA, the server certificate and {}", path.display());
            println!("next: drosera-admin sensor add NAME --out DIR --config {}", path.display());
            Ok(())
        }
        Command::Sensor(SensorCommand::Add { name, out, admin, install_dir, config }) => {
            let cfg = config.load()?;
            let b =
                enroll::add_sensor(&cfg, &enroll::AddOptions { name: name.clone(), out, admins: admin, install_dir })?;
            println!("sensor {name:?} enrolled; bundle in {} (connects to {})", b.dir.display(), b.admin);
            println!("copy the folder to the sensor and append {} to its drosera-sensor.toml", b.uplink_toml.display());
            Ok(())
        }
        Command::Sensor(SensorCommand::Revoke { name, config }) => {
            let cfg = config.load()?;
            let db = storage::open(&cfg.database)?;
            sensors::revoke(&*db, &name)?;
            println!("sensor {name:?} revoked; its next connection is refused");
            Ok(())
        }
        Command::Sensor(SensorCommand::List { json, config }) => {
            let cfg = config.load()?;
            let db = storage::open(&cfg.database)?;
            let list = sensors::list(&*db)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                print!("{}", sensors::render(&list, now_ms()));
            }
            Ok(())
        }
        Command::Report { args, config } => {
            let cfg = config.load()?;
            let q = args.range.query(now_ms())?;
            let db = open_for_analytics(&cfg)?;
            let r = analytics::report(&*db, &q, args.min_attempts, args.limit)?;
            let mut out = std::io::stdout().lock();
            if args.json {
                serde_json::to_writer_pretty(&mut out, &r)?;
                writeln!(out)?;
            } else {
                out.write_all(r.to_text().as_bytes())?;
            }
            Ok(())
        }
        Command::Export { args, config } => {
            let cfg = config.load()?;
            let q = args.range.query(now_ms())?;
            let db = open_for_analytics(&cfg)?;
            let n = match &args.out {
                Some(path) => {
                    let mut f =
                        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
                    export::export(&*db, &q, args.format, &mut f)?
                }
                None => export::export(&*db, &q, args.format, &mut std::io::stdout().lock())?,
            };
            eprintln!("exported {n} rows");
            Ok(())
        }
        Command::User(UserCommand::Add { name, config }) => {
            let cfg = config.load()?;
            // A piped password is read before the name is checked, so whoever writes it never
            // meets a closed pipe; a terminal is prompted only for a valid name.
            let piped = if std::io::stdin().is_terminal() { None } else { Some(cli::read_password()?) };
            if !users::valid_name(&name) {
                return Err(users::UserError::BadName.into());
            }
            let password = match piped {
                Some(p) => p,
                None => cli::read_password()?,
            };
            let db = storage::open(&cfg.database)?;
            let new = users::add_user(&*db, &name, &password)?;
            eprintln!("{} dashboard user {name}", if new { "created" } else { "set a new password for" });
            Ok(())
        }
        Command::Migrate { from, to } => {
            let parse = |u: &str| -> anyhow::Result<storage::Backend> {
                storage::parse_url(u).map_err(anyhow::Error::msg)?.context("the database URL is empty")
            };
            let stats = storage::copy::migrate(&parse(&from)?, &parse(&to)?)?;
            for (table, n) in &stats.tables {
                println!("{table:<20} {n:>12} rows");
            }
            println!("migrated to {}; point [database] url at it", storage::redact(&to));
            Ok(())
        }
        Command::Reclassify { batch, config } => {
            let cfg = config.load()?;
            let rules = drosera_admin::exploits::Matcher::load(&cfg.exploits, std::path::Path::new(""))?;
            let db = storage::open(&cfg.database)?;
            let r = drosera_admin::exploits::reclassify::reclassify(&*db, &rules, batch)?;
            println!(
                "reclassified {} events with {} rules: {} changed ({} batches)",
                r.scanned,
                rules.rules().len(),
                r.changed,
                r.batches
            );
            Ok(())
        }
        Command::Serve { config } => {
            let cfg = config.load()?;
            let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            rt.block_on(app::run(&cfg))
        }
    }
}

/// Opens the database and folds new events into the analytics tables (enriching new addresses),
/// so reports and exports see everything stored so far.
fn open_for_analytics(cfg: &drosera_admin::config::AdminConfig) -> anyhow::Result<Box<dyn storage::Storage>> {
    let mut db = storage::open(&cfg.database)?;
    analytics::refresh(&mut *db, &Enricher::new(&cfg.enrichment)?)?;
    Ok(db)
}
