//! Runtime wiring of `drosera-sensor run`: store, writer, governor, listeners, shipper, health,
//! and graceful shutdown.
//!
//! Order matters. [`bind_and_drop`] runs first, while the process has one thread: it binds every
//! port, gives the data directory to the sensor user and drops root (a thread started earlier
//! would keep root's capability bounding set; see `privileges.rs`), and it checks that the
//! uplink can start, so a sensor never serves without being able to ship. Only then does
//! `main` build the tokio runtime and call [`run`]. On SIGINT/SIGTERM the listeners
//! stop first (so no new events appear), then the health reporter and governor, and only then the
//! store writer, which drains the channel and the rollup table and commits before the process
//! exits, so nothing accepted is lost on a clean stop.
//!
//! Shutdown is one primitive, tokio-util's `CancellationToken`, in two stages: `stop_services`
//! (listeners, health, governor, shipper, watchdog) is a child of `stop_store` (the writer), so
//! the services can be stopped and awaited first, and cancelling the store's token could never
//! leave a service running.

use crate::config::Config;
use crate::governor::Governor;
use crate::health::{self, HealthContext};
use crate::listener::{ListenerContext, Listeners};
use crate::rollup::RollupTable;
use crate::samples::{self, SampleArea};
use crate::session::SessionEnv;
use crate::sink::EventSink;
use crate::store::{StoreHandle, StoreWriter};
use crate::{shipper, store};
use anyhow::Context;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The sockets of a sensor that has bound its ports and dropped root, ready for [`run`].
pub struct Prepared {
    listeners: Listeners,
    /// Scan detection's packet socket, opened while privileged (`[scan] enabled`).
    scan: Option<crate::scan::ScanSocket>,
}

/// The privileged start, to be called before any thread exists (before the tokio runtime):
/// binds every port, hands the data directory to `sensor.user` without following links, drops
/// root, then checks that the uplink (if configured) can start as that user.
pub fn bind_and_drop(cfg: &Config) -> anyhow::Result<Prepared> {
    let listeners = Listeners::bind(cfg).context("cannot bind the service ports")?;
    for (protocol, addr) in listeners.local_addrs() {
        // Machine-readable line (tests and scripts parse it), plus the structured log.
        println!("listening protocol={protocol} addr={addr}");
        tracing::info!(%protocol, %addr, "listening");
    }
    for (protocol, addr) in listeners.local_udp_addrs() {
        println!("listening protocol={protocol} addr={addr} transport=udp");
        tracing::info!(%protocol, %addr, transport = "udp", "listening");
    }
    // Everything in the data directory becomes the sensor user's, so the store and the sample
    // area are opened as that user after the drop.
    // The packet socket needs CAP_NET_RAW only to be opened: open it now, drop it with the rest.
    let scan = if cfg.scan.enabled {
        let sock = crate::scan::ScanSocket::open(&cfg.scan).context("cannot start scan detection")?;
        println!(
            "scan detection interface={}",
            if cfg.scan.interface.is_empty() { "all" } else { &cfg.scan.interface }
        );
        Some(sock)
    } else {
        None
    };
    let handed = crate::privileges::hand_dir_to(&cfg.sensor.data_dir, &cfg.sensor.user)
        .context("cannot hand the data directory to the sensor user")?;
    // Every port is bound: drop root (if we are root) before a single attacker byte is read.
    let dropped = crate::privileges::drop_privileges(&cfg.sensor.user).context("cannot drop privileges")?;
    // Not root (a unit granting CAP_NET_RAW): give that capability up whether scan detection
    // opened its socket or is off.
    let net_raw_dropped = crate::privileges::drop_net_raw().context("cannot drop CAP_NET_RAW")?;
    tracing::info!(?dropped, net_raw_dropped, handed = handed.handed, left_alone = handed.skipped, "privileges");
    if let Some(uplink) = &cfg.uplink {
        shipper::check(uplink)
            .context("the uplink cannot start, so the sensor would store events it can never ship")?;
    }
    Ok(Prepared { listeners, scan })
}

/// To be called first in `main`: the threads that exist before the program starts any (see
/// `privileges.rs`), so that [`bind_and_drop`] can tell that none of ours runs yet.
pub fn record_startup_threads() {
    crate::privileges::record_startup_threads();
}

/// What `run` checks before serving, for `check-config`: the uplink's CA, certificate, key (mode
/// 0600 or stricter) and admin names load, so the sensor can ship.
pub fn check_uplink(uplink: &crate::config::UplinkSection) -> Result<(), shipper::ShipperError> {
    shipper::check(uplink)
}

/// How a sensor that stopped cleanly ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// SIGINT or SIGTERM.
    Signal,
    /// A release was installed: the process should exit with
    /// [`HANDOVER_EXIT`](crate::update::HANDOVER_EXIT) so the launcher starts it.
    Handover,
}

/// Runs the sensor until SIGINT or SIGTERM (or a staged update), on the sockets
/// [`bind_and_drop`] prepared.
pub async fn run(cfg: Config, prepared: Prepared) -> anyhow::Result<Stopped> {
    let sensor: Arc<str> = Arc::from(cfg.sensor.name.as_str());
    let (store, writer) = open_store(&cfg, &sensor).await?;
    let rollups = Arc::new(RollupTable::new(cfg.memory.rollup_max_keys));
    let (sink, rx) = EventSink::with_group(cfg.store.channel_capacity, cfg.store.commit_max_events, rollups.clone());
    let stop_store = CancellationToken::new();
    let writer_done = CancellationToken::new();
    let writer_thread = writer
        .spawn_notifying(rx, rollups, stop_store.clone(), writer_done.clone())
        .context("cannot start the store writer thread")?;
    let stop_services = stop_store.child_token();
    let handover = CancellationToken::new();
    let trial = trial_watch(&cfg, &sensor, &sink, &stop_services);
    let services = Services::start(&cfg, prepared, &sensor, &store, &sink, &stop_services, &handover, trial).await?;
    println!("ready sensor={sensor} last_seq={} version={}", store.last_seq(), crate::update::running_version());
    tracing::info!(sensor = %sensor, version = %crate::update::running_version(), "sensor running");
    // systemd (the appliance unit is Type=notify with WatchdogSec): no-ops outside systemd.
    crate::systemd::notify_ready();
    let watchdog = crate::systemd::spawn_watchdog(stop_services.clone());

    let (writer_died, handed_over) = tokio::select! {
        died = wait_for_stop(&writer_done) => (died, false),
        _ = handover.cancelled() => (false, true),
    };
    if writer_died {
        tracing::error!("store writer stopped unexpectedly; shutting down so the sensor is restarted");
    }
    tracing::info!("shutting down: stopping listeners, flushing the store");
    if !handed_over {
        // Not on a handover: the unit keeps running under the launcher, with the new release.
        crate::systemd::notify_stopping();
    }
    stop_services.cancel();
    if let Some(w) = watchdog {
        let _ = w.await;
    }
    // First everything that produces events, then the writer drains what they produced.
    let shipper_thread = services.join().await;
    drop(sink);
    stop_store.cancel();
    let _ = tokio::task::spawn_blocking(move || writer_thread.join()).await;
    if let Some(t) = shipper_thread {
        let join = tokio::task::spawn_blocking(move || t.join());
        if tokio::time::timeout(Duration::from_secs(5), join).await.is_err() {
            tracing::warn!("shipper did not stop within 5 s; exiting anyway");
        }
    }
    let st = store.status().unwrap_or_default();
    tracing::info!(last_seq = st.last_seq, backlog = st.backlog_events, "sensor stopped");
    if writer_died {
        anyhow::bail!("the store writer stopped unexpectedly");
    }
    Ok(if handed_over { Stopped::Handover } else { Stopped::Signal })
}

/// On trial under the launcher ([`ENV_TRIAL_FILE`](crate::update::ENV_TRIAL_FILE) set): a token
/// the shipper cancels once the admin acknowledged the first health event, and a task that then
/// creates the trial file (the launcher's proof of health) and reports the update as applied.
/// Also ships the launcher's reports (rollbacks) as events.
fn trial_watch(
    cfg: &Config,
    sensor: &Arc<str>,
    sink: &EventSink,
    stop: &CancellationToken,
) -> Option<CancellationToken> {
    let paths = crate::update::Paths::new(&cfg.sensor.data_dir);
    crate::update::ship_reports(&paths, sensor, sink);
    let file = std::env::var_os(crate::update::ENV_TRIAL_FILE)?;
    let shipped = CancellationToken::new();
    let (token, stop, sink, sensor) = (shipped.clone(), stop.clone(), sink.clone(), sensor.clone());
    tokio::spawn(async move {
        tokio::select! {
            _ = token.cancelled() => {}
            _ = stop.cancelled() => return,
        }
        let kind = std::env::var(crate::update::ENV_TRIAL_KIND).unwrap_or_else(|_| "update".into());
        let what = std::env::var(crate::update::ENV_TRIAL_WHAT).unwrap_or_else(|_| crate::update::running_version());
        match std::fs::write(&file, what.as_bytes()) {
            Ok(()) => {
                tracing::warn!(%kind, %what, "first health event acknowledged: healthy");
                let kind = if kind == "config" { "config_applied" } else { "update_applied" };
                sink.emit(crate::update::event(&sensor, kind, &what, ""));
            }
            Err(e) => tracing::error!(error = %e, "cannot write the trial file; the launcher will roll back"),
        }
    });
    Some(shipped)
}

/// Opens (creating, checking, recovering) the store off the async workers.
async fn open_store(cfg: &Config, sensor: &Arc<str>) -> anyhow::Result<(StoreHandle, StoreWriter)> {
    let (store_cfg, data_dir, name) = (cfg.store.clone(), cfg.sensor.data_dir.clone(), sensor.clone());
    tokio::task::spawn_blocking(move || store::open(&store_cfg, &data_dir, &name))
        .await
        .context("store open task failed")?
        .with_context(|| format!("cannot open the event store in {}", cfg.sensor.data_dir.display()))
}

/// Waits for SIGINT/SIGTERM, or for the store writer to stop by itself (a bug; returns true):
/// then the sensor exits non-zero after the orderly shutdown, so the service manager restarts it
/// instead of it running on without storing anything.
async fn wait_for_stop(writer_done: &CancellationToken) -> bool {
    tokio::select! {
        _ = wait_for_signal() => false,
        _ = writer_done.cancelled() => true,
    }
}

/// Everything that runs on top of the store and stops before it: the governor, the listeners,
/// the health reporter and the shipper, all on one `stop_services` token.
struct Services {
    governor: JoinHandle<()>,
    serve: JoinHandle<()>,
    health: JoinHandle<()>,
    shipper: Option<std::thread::JoinHandle<()>>,
    /// Scan detection's receive thread; it flushes its last window when `stop` is cancelled.
    scan: Option<std::thread::JoinHandle<()>>,
}

impl Services {
    /// Starts serving on the bound `listeners`, reporting health and shipping.
    #[allow(clippy::too_many_arguments)]
    async fn start(
        cfg: &Config,
        prepared: Prepared,
        sensor: &Arc<str>,
        store: &StoreHandle,
        sink: &EventSink,
        stop: &CancellationToken,
        handover: &CancellationToken,
        trial: Option<CancellationToken>,
    ) -> anyhow::Result<Services> {
        let Prepared { listeners, scan } = prepared;
        let (gov, governor) = Governor::new(cfg.memory.clone());
        let stats = listeners.stats();
        let busy = {
            let stats = stats.clone();
            let mut last_accepted = 0;
            move || {
                let accepted = stats.accepted.load(std::sync::atomic::Ordering::Relaxed);
                let busy = accepted != last_accepted
                    || stats.active_connections.load(std::sync::atomic::Ordering::Relaxed) > 0;
                last_accepted = accepted;
                busy
            }
        };
        let governor_task = tokio::spawn(gov.run(stop.clone(), busy));
        // Opened as the sensor user, so every sample file belongs to it (and the shipper can
        // read them); it leaves the event store its disk room (its cap and its reserve).
        let claim = store.clone();
        let room = samples::disk_room(cfg.sensor.data_dir.clone(), move || claim.disk_claim());
        let area = SampleArea::open(&cfg.sensor.data_dir, cfg.samples.clone(), room)
            .context("cannot open the sample area (samples/ in the data directory)")?;
        let env = SessionEnv::new(cfg, sink.clone(), sensor.clone(), Some(area.clone()))
            .context("the login policy in [credentials] is invalid")?;
        let ctx = ListenerContext { env, governor: governor.clone(), shutdown: stop.clone() };
        let serve = tokio::spawn(listeners.serve(ctx));
        // Rejected batches are kept in the data directory and reported as events.
        let shipper = match cfg.uplink.clone() {
            Some(uplink) => {
                let ctx = shipper::ShipperContext {
                    data_dir: cfg.sensor.data_dir.clone(),
                    sink: sink.clone(),
                    samples: Some(area.clone()),
                    updates: updater(cfg, &uplink, sensor, sink),
                    handover: handover.clone(),
                    health_shipped: trial.clone(),
                };
                let t = shipper::spawn(uplink, sensor.clone(), store.clone(), ctx, stop.clone())
                    .context("cannot start the shipper thread")?;
                Some(t)
            }
            None => None,
        };
        let health_ctx = HealthContext {
            sink: sink.clone(),
            store: store.clone(),
            governor,
            listeners: stats,
            interval: cfg.health_interval(),
            // On trial the first health event goes out at once: it is the proof of health.
            first_after: trial.as_ref().map(|_| Duration::from_secs(1)),
        };
        let health = tokio::spawn(health::run(health_ctx, stop.clone()));
        let scan = match scan {
            Some(sock) => {
                let (t, _counters) = crate::scan::spawn(sock, &cfg.scan, sink.clone(), stop.clone())
                    .context("cannot start the scan detection thread")?;
                Some(t)
            }
            None => None,
        };
        Ok(Services { governor: governor_task, serve, health, shipper, scan })
    }

    /// After `stop` is cancelled: waits for the listeners (and their sessions' last events),
    /// then the health reporter and the governor. Returns the shipper's thread, which may still
    /// be waiting for the admin's last acknowledgements and is joined after the store.
    async fn join(self) -> Option<std::thread::JoinHandle<()>> {
        let _ = self.serve.await;
        if let Some(t) = self.scan {
            // It wakes at least every 200 ms (its socket's receive timeout) and then flushes.
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
        let _ = self.health.await;
        let _ = self.governor.await;
        self.shipper
    }
}

/// The update side of the shipper: only under the launcher (someone must start what is
/// installed) and with the update public key.
fn updater(
    cfg: &Config,
    uplink: &crate::config::UplinkSection,
    sensor: &Arc<str>,
    sink: &EventSink,
) -> Option<crate::update::fetch::Updater> {
    let key = match cfg.update.load_key(Some(&uplink.ca_cert)) {
        Ok(Some(k)) => k,
        Ok(None) => {
            tracing::info!("signed updates off (no update public key or [update] enabled = false)");
            return None;
        }
        Err(e) => {
            tracing::error!(error = %e, "signed updates off");
            return None;
        }
    };
    if std::env::var_os(crate::update::ENV_LAUNCHER).is_none() {
        tracing::info!("signed updates off: not started by `drosera-sensor launch`");
        return None;
    }
    Some(crate::update::fetch::Updater {
        paths: crate::update::Paths::new(&cfg.sensor.data_dir),
        key,
        max_bytes: cfg.update.max_bytes,
        chunk_bytes: cfg.update.chunk_bytes,
        sensor: sensor.clone(),
        sink: sink.clone(),
    })
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; stopping on SIGINT only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
