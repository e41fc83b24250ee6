//! `drosera-admin`: thin command line over the `drosera_admin` library.
//!
//! The argument types are in `drosera_admin::cli`; each subcommand is one `match` arm here that
//! turns them into typed values and calls the library; adding a command touches nothing else.

use anyhow::Context;
use clap::Parser;
use drosera_admin::cli::{
    Cli, Command, LabelCommand, ReleaseCommand, SampleCommand, SensorCommand, SensorConfigCommand, TokenCommand,
    UserCommand,
};
use drosera_admin::clock::now_ms;
use drosera_admin::enrich::Enricher;
use drosera_admin::samples::ops;
use drosera_admin::{analytics, app, cli, enroll, export, labels, releases, sensors, storage, users};
use std::io::{IsTerminal, Write};
use std::process::ExitCode;

fn main() -> ExitCode {
    let tuned = drosera_admin::malloc::tune();
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    if !tuned {
        tracing::debug!("malloc settings not applied (not glibc); large buffers may stay in the heap after use");
    }
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
        Command::Sensor(SensorCommand::Add { name, out, admin, install_dir, label_self, config }) => {
            let cfg = config.load()?;
            // The label first: a bad address stops before a certificate is issued.
            if let Some(addr) = &label_self {
                let note = format!("enrolled sensor {name} from here");
                let db = storage::open(&cfg.database)?;
                let rec = labels::add(&*db, addr, &labels::Label::SelfTest, &note, cfg.labels.max_labels, now_ms())?;
                drop(db);
                relabel(&cfg)?;
                println!("labelled {} self (your own tests are not counted as attacks)", rec.cidr);
            }
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
        Command::Sensor(SensorCommand::Config(SensorConfigCommand::Push { name, file, config })) => {
            let cfg = config.load()?;
            let db = storage::open(&cfg.database)?;
            if db.enrollment(&name)?.is_none() {
                anyhow::bail!("no sensor named {name:?} is enrolled (see `drosera-admin sensor list`)");
            }
            let c = releases::push_config(&cfg.updates, &name, &file)?;
            println!(
                "config {} for sensor {name:?} signed ({} bytes); the sensor takes it within [updates] check_interval_s",
                c.serial,
                c.toml.len()
            );
            Ok(())
        }
        Command::Sensor(SensorCommand::List { json, config }) => {
            let cfg = config.load()?;
            let db = storage::open(&cfg.database)?;
            let mut list = sensors::list(&*db)?;
            for s in &mut list {
                s.version = releases::running(&cfg.updates, &s.name);
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                print!("{}", sensors::render(&list, now_ms()));
            }
            Ok(())
        }
        Command::Attacker { addr, page, json, range, config } => {
            let cfg = config.load()?;
            let q = range.query(now_ms())?;
            let db = open_for_analytics(&cfg)?;
            let a = analytics::attacker(&*db, &q, &addr.to_string(), page as usize, &cfg.drill)?
                .ok_or_else(|| anyhow::anyhow!("no events of {addr} in this range"))?;
            let mut out = std::io::stdout().lock();
            if json {
                serde_json::to_writer_pretty(&mut out, &a)?;
                writeln!(out)?;
            } else {
                out.write_all(a.to_text().as_bytes())?;
            }
            Ok(())
        }
        Command::Session { sensor, conn, json, config } => {
            let cfg = config.load()?;
            let db = open_for_analytics(&cfg)?;
            let s = analytics::session(&*db, &sensor, conn, &cfg.drill)?.ok_or_else(|| {
                anyhow::anyhow!("no connection {conn} of sensor {sensor:?} (see `drosera-admin sensor list`)")
            })?;
            let mut out = std::io::stdout().lock();
            if json {
                serde_json::to_writer_pretty(&mut out, &s)?;
                writeln!(out)?;
            } else {
                out.write_all(s.to_text().as_bytes())?;
            }
            Ok(())
        }
        Command::Search { q: text, json, range, config } => {
            let cfg = config.load()?;
            let q = range.query(now_ms())?;
            let db = open_for_analytics(&cfg)?;
            let r = analytics::search(&*db, &q, &text, &cfg.drill)?;
            let mut out = std::io::stdout().lock();
            if json {
                serde_json::to_writer_pretty(&mut out, &r)?;
                writeln!(out)?;
            } else {
                out.write_all(r.to_text().as_bytes())?;
            }
            Ok(())
        }
        Command::Report { args, config } => {
            let cfg = config.load()?;
            let q = args.query(now_ms())?;
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
        Command::User(UserCommand::Token(TokenCommand::Create { user, note, config })) => {
            let cfg = config.load()?;
            let db = storage::open(&cfg.database)?;
            let max = i64::from(cfg.dashboard.api_tokens_per_user);
            let (id, token) = users::create_api_token(&*db, &user, &note, max)?;
            eprintln!("created API token {id} for {user}; it is shown only now:");
            println!("{token}");
            Ok(())
        }
        Command::User(UserCommand::Token(TokenCommand::List { user, json, config })) => {
            let cfg = config.load()?;
            let db = storage::open(&cfg.database)?;
            let list = users::api_tokens(&*db, &user)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
                return Ok(());
            }
            println!("{:<12}  {:<20}  {:<20}  {:<20}  note", "id", "created", "last used", "revoked");
            for t in list {
                let when = |ms: i64| if ms == 0 { "-".to_string() } else { analytics::fmt_time(Some(ms)) };
                println!(
                    "{:<12}  {:<20}  {:<20}  {:<20}  {}",
                    t.id,
                    when(t.created_ms),
                    when(t.last_used_ms),
                    when(t.revoked_ms),
                    analytics::printable(&t.name)
                );
            }
            Ok(())
        }
        Command::User(UserCommand::Token(TokenCommand::Revoke { user, id, config })) => {
            let cfg = config.load()?;
            let db = storage::open(&cfg.database)?;
            if !users::revoke_api_token(&*db, &user, &id)? {
                anyhow::bail!("user {user} has no live token {id} (see `drosera-admin user token list {user}`)");
            }
            eprintln!("revoked API token {id} of {user}");
            Ok(())
        }
        Command::Label(LabelCommand::Add { cidr, label, note, config }) => {
            let cfg = config.load()?;
            let db = storage::open(&cfg.database)?;
            let rec = labels::add(&*db, &cidr, &label, &note, cfg.labels.max_labels, now_ms())?;
            drop(db);
            println!("labelled {} {}", rec.cidr, rec.label);
            relabel(&cfg)
        }
        Command::Label(LabelCommand::List { json, config }) => {
            let cfg = config.load()?;
            let db = storage::open(&cfg.database)?;
            let list = db.labels()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                println!("{:<43} {:<12} {:<20} note", "network", "label", "added");
                for l in &list {
                    let added = analytics::fmt_time(Some(l.created_ms));
                    println!("{:<43} {:<12} {:<20} {}", l.cidr, l.label, added, analytics::printable(&l.note));
                }
                println!(
                    "({} labels; research scanners of the bundled list are labelled research as well)",
                    list.len()
                );
            }
            Ok(())
        }
        Command::Label(LabelCommand::Remove { cidr, config }) => {
            let cfg = config.load()?;
            let db = storage::open(&cfg.database)?;
            if !labels::remove(&*db, &cidr)? {
                anyhow::bail!("no label for {cidr} (see `drosera-admin label list`)");
            }
            drop(db);
            println!("removed the label of {cidr}");
            relabel(&cfg)
        }
        Command::Relabel { config } => relabel(&config.load()?),
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
        Command::Samples(c) => samples(c),
        Command::Release(c) => release(c),
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
        Command::Recover { passes, config } => {
            let cfg = config.load()?;
            let db = storage::open(&cfg.database)?;
            let mut total = drosera_admin::recover::RunStats::default();
            for _ in 0..passes {
                let s = drosera_admin::recover::run_once(&*db, &cfg.recover, now_ms())?;
                total.tried += s.tried;
                total.recovered += s.recovered;
                total.unsupported += s.unsupported;
                total.attempts += s.attempts;
                total.candidates = s.candidates;
                total.deferred = s.deferred;
                if s.tried + s.unsupported == 0 {
                    break;
                }
            }
            println!(
                "tried {} responses against {} candidates: {} passwords recovered ({} in formats not checked, {} left for the next pass, {} proofs)",
                total.tried, total.candidates, total.recovered, total.unsupported, total.deferred, total.attempts
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

/// Applies the labels to history (`analytics::relabel`) and says what it did.
fn relabel(cfg: &drosera_admin::config::AdminConfig) -> anyhow::Result<()> {
    let mut db = storage::open(&cfg.database)?;
    let r = analytics::relabel(&mut *db, &Enricher::new(&cfg.enrichment)?)?;
    match r.kept_before_ms {
        None => println!("relabelled: {} stored events read again; every total is up to date", r.events),
        Some(t) => println!(
            "relabelled: {} stored events read again; totals before {} keep their old labels (retention deleted their events)",
            r.events,
            analytics::fmt_time(Some(t))
        ),
    }
    Ok(())
}

/// Opens the database and folds new events into the analytics tables (enriching new addresses),
/// so reports and exports see everything stored so far.
fn open_for_analytics(cfg: &drosera_admin::config::AdminConfig) -> anyhow::Result<Box<dyn storage::Storage>> {
    let mut db = storage::open(&cfg.database)?;
    analytics::refresh(&mut *db, &Enricher::new(&cfg.enrichment)?)?;
    Ok(db)
}

fn release(command: ReleaseCommand) -> anyhow::Result<()> {
    match command {
        ReleaseCommand::Add { binary, version, arch, config } => {
            let cfg = config.load()?;
            let m = releases::add(&cfg.updates, &binary, &version, arch.as_deref())?;
            println!("release {} for {} signed and stored ({} bytes, sha256 {})", m.version, m.arch, m.size, m.sha256);
            println!("next: drosera-admin release rollout {} --sensors NAME,... (or --percent P)", m.version);
        }
        ReleaseCommand::Rollout { version, sensors, percent, config } => {
            let cfg = config.load()?;
            let r = releases::rollout(&cfg.updates, &version, sensors, percent)?;
            match r.percent {
                Some(p) => println!("rolling {} out to {p}% of the sensors", r.version),
                None => println!("rolling {} out to {}", r.version, r.sensors.join(", ")),
            }
        }
        ReleaseCommand::List { config } => {
            let cfg = config.load()?;
            println!("{:<24} {:<8} {:>12} sha256", "VERSION", "ARCH", "BYTES");
            for m in releases::list(&cfg.updates)? {
                println!("{:<24} {:<8} {:>12} {}", m.version, m.arch, m.size, m.sha256);
            }
            match releases::current_rollout(&cfg.updates) {
                Some(r) if r.percent.is_some() => {
                    println!("rollout: {} to {}% of the sensors", r.version, r.percent.unwrap_or(0))
                }
                Some(r) => println!("rollout: {} to {}", r.version, r.sensors.join(", ")),
                None => println!("rollout: none"),
            }
        }
        ReleaseCommand::Keygen { config } => {
            let cfg = config.load()?;
            releases::keygen(&cfg.updates.key, &cfg.updates.public_key)?;
            println!(
                "wrote {} (mode 0600) and {}; enroll sensors again or copy update.pub beside their ca.pem",
                cfg.updates.key.display(),
                cfg.updates.public_key.display()
            );
        }
    }
    Ok(())
}

fn samples(command: SampleCommand) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match command {
        SampleCommand::List { file_type, yara, protocol, sensor, json, config } => {
            let cfg = config.load()?;
            let db = storage::open(&cfg.database)?;
            let filter = storage::SampleFilter { file_type, rule: yara, protocol, sensor };
            let list = ops::list(&*db, &filter)?;
            if json {
                writeln!(out, "{}", drosera_admin::shown::json_line(&serde_json::to_string_pretty(&list)?))?;
            } else {
                out.write_all(ops::render_list(&list).as_bytes())?;
            }
        }
        SampleCommand::Show { sha256, json, config } => {
            let cfg = config.load()?;
            let db = storage::open(&cfg.database)?;
            let d = ops::show(&*db, &sha256)?;
            if json {
                writeln!(out, "{}", drosera_admin::shown::json_line(&serde_json::to_string_pretty(&d)?))?;
            } else {
                out.write_all(ops::render_detail(&d).as_bytes())?;
            }
        }
        SampleCommand::Get { sha256, out: path, config } => {
            use std::os::unix::fs::OpenOptionsExt;
            let cfg = config.load()?;
            let db = storage::open(&cfg.database)?;
            let zip = ops::zip(&*db, &cfg.samples, &sha256)?;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .with_context(|| format!("cannot create {} (it must not exist)", path.display()))?;
            f.write_all(&zip)?;
            f.sync_all()?;
            eprintln!(
                "wrote {} ({} bytes; password: {})",
                path.display(),
                zip.len(),
                drosera_admin::samples::zip::PASSWORD
            );
        }
        SampleCommand::Rescan { config } => {
            let cfg = config.load()?;
            let db = storage::open(&cfg.database)?;
            let n = ops::rescan(&*db, &cfg.samples, &cfg.classify)?;
            eprintln!("rescanned {n} samples");
        }
        SampleCommand::Fetches { limit, json, config } => {
            let cfg = config.load()?;
            let db = storage::open(&cfg.database)?;
            let rows = db.list_fetches(limit.clamp(1, ops::LIST_LIMIT))?;
            if json {
                writeln!(out, "{}", drosera_admin::shown::json_line(&serde_json::to_string_pretty(&rows)?))?;
            } else {
                out.write_all(ops::render_fetches(&rows).as_bytes())?;
            }
        }
    }
    Ok(())
}
