//! Runtime wiring of `drosera-admin serve`: the ingest server, the dashboard, and the
//! maintenance loop that folds new events into the analytics tables and runs retention.
//!
//! One [`CancellationToken`] is the shutdown signal for all of them. SIGINT/SIGTERM cancel it;
//! so does the first of them to fail (a port in use, say), so the process never keeps running
//! half of its job. On shutdown the ingest server stops accepting, lets open connections finish
//! the batches they have in flight, and its writer commits what it was given before the process
//! exits; nothing acknowledged is lost.
//!
//! Storage handles: the ingest writer owns one (on its own thread, group commit); the dashboard
//! and the maintenance loop share another ([`storage::Shared`]), as folding and queries must not
//! run at the same time on one SQLite connection anyway.

use crate::analytics::AnalyticsError;
use crate::clock::now_ms;
use crate::config::AdminConfig;
use crate::enrich::Enricher;
use crate::retention::{self, RetentionConfig};
use crate::{analytics, dashboard, ingest, storage};
use anyhow::Context;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Serves until SIGINT or SIGTERM.
pub async fn run(cfg: &AdminConfig) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down");
        on_signal.cancel();
    });
    serve(cfg, shutdown).await
}

/// Serves until `shutdown` is cancelled (or one part fails, which cancels it).
pub async fn serve(cfg: &AdminConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let enricher = Arc::new(Enricher::new(&cfg.enrichment)?);
    // The exploit rules ingest applies, fixed for the life of the process.
    let rules = crate::exploits::Matcher::load(&cfg.exploits, std::path::Path::new(""))?;
    tracing::info!(rules = rules.rules().len(), file = %cfg.exploits.rules_file.display(), "exploit rules loaded");
    if !crate::exploits::install(rules) {
        tracing::warn!("exploit rules were installed before; this process keeps the first ones");
    }
    let (ingest_db, shared_db) = {
        let db = cfg.database.clone();
        tokio::task::spawn_blocking(move || Ok::<_, storage::StorageError>((storage::open(&db)?, storage::open(&db)?)))
            .await
            .context("opening the database")??
    };
    let shared_db = storage::Shared::new(shared_db);
    let integrations = start_integrations(cfg, &shared_db, &shutdown)?;
    let maintenance = tokio::spawn(maintain(
        shared_db.clone(),
        enricher.clone(),
        Duration::from_secs(cfg.dashboard.refresh_interval_s),
        cfg.retention.clone(),
        cfg.samples.clone(),
        shutdown.clone(),
    ));
    let ingest = async {
        let r = ingest::serve(cfg, ingest_db, shutdown.clone()).await;
        shutdown.cancel();
        r.map_err(anyhow::Error::from)
    };
    let dashboard = async {
        let r = dashboard::serve(
            &cfg.dashboard,
            cfg.drill,
            shared_db,
            enricher,
            cfg.samples.enabled.then(|| cfg.samples.clone()),
            shutdown.clone().cancelled_owned(),
        )
        .await;
        shutdown.cancel();
        r.map_err(anyhow::Error::from)
    };
    let metrics = async {
        let r = crate::metrics::serve(
            &cfg.metrics,
            integrations.metrics.clone(),
            integrations.db.clone(),
            shutdown.clone().cancelled_owned(),
        )
        .await;
        if r.is_err() {
            shutdown.cancel();
        }
        r.map_err(anyhow::Error::from)
    };
    let (i, d, m) = tokio::join!(ingest, dashboard, metrics);
    let _ = maintenance.await;
    for t in integrations.tasks {
        let _ = t.await;
    }
    i.and(d).and(m)
}

/// The integrations `serve` runs beside ingest and the dashboard (issue 21).
struct Integrations {
    metrics: Arc<crate::metrics::Metrics>,
    db: storage::Shared,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Installs the committed-events tap with a queue per streaming integration and starts password
/// recovery, the webhooks and hpfeeds as configured. Their secrets are read now, so a missing
/// file stops `serve` before it listens.
fn start_integrations(
    cfg: &AdminConfig,
    db: &storage::Shared,
    shutdown: &CancellationToken,
) -> anyhow::Result<Integrations> {
    let metrics = Arc::new(crate::metrics::Metrics::new());
    crate::metrics::load_token(&cfg.metrics)?;
    let hp_secret = if cfg.hpfeeds.enabled() {
        Some(crate::hpfeeds::load_secret(&cfg.hpfeeds).map_err(anyhow::Error::msg)?)
    } else {
        None
    };
    let mut tap = crate::tap::Tap::default();
    let webhook_rx = cfg.webhooks.enabled().then(|| tap.subscribe("webhooks", cfg.webhooks.tap_queue));
    let hpfeeds_rx = hp_secret.is_some().then(|| tap.subscribe("hpfeeds", cfg.hpfeeds.queue));
    if !crate::tap::install(Arc::new(tap)) {
        tracing::warn!("the committed-events tap was installed before; this process keeps the first one");
    }
    let mut tasks = Vec::new();
    if cfg.recover.enabled {
        tasks.push(tokio::spawn(crate::recover::run(
            db.clone(),
            cfg.recover.clone(),
            Some(metrics.clone()),
            shutdown.clone(),
        )));
    }
    if let Some(rx) = webhook_rx {
        tracing::info!(urls = cfg.webhooks.urls.len(), "webhooks on");
        tasks.push(tokio::spawn(crate::webhooks::run(
            cfg.webhooks.clone(),
            db.clone(),
            rx,
            metrics.clone(),
            shutdown.clone(),
        )));
    }
    if let (Some(rx), Some(secret)) = (hpfeeds_rx, hp_secret) {
        tasks.push(tokio::spawn(crate::hpfeeds::run(
            cfg.hpfeeds.clone(),
            secret,
            rx,
            metrics.clone(),
            shutdown.clone(),
        )));
    }
    Ok(Integrations { metrics, db: db.clone(), tasks })
}

/// Folds new events into the analytics tables every `refresh` and runs retention every
/// `[retention] interval_s`, until `shutdown`.
async fn maintain(
    db: storage::Shared,
    enricher: Arc<Enricher>,
    refresh: Duration,
    retention: RetentionConfig,
    samples: crate::samples::SamplesConfig,
    shutdown: CancellationToken,
) {
    let mut refresh = tokio::time::interval(refresh);
    let mut prune = tokio::time::interval(Duration::from_secs(retention.interval_s));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = refresh.tick() => {
                let en = enricher.clone();
                let r = db.run(move |db| analytics::refresh(db, &en)).await;
                if let Err(e) = r.map_err(AnalyticsError::from).and_then(|r| r) {
                    tracing::warn!(error = %e, "analytics refresh failed");
                }
            }
            _ = prune.tick() => {
                let (en, cfg) = (enricher.clone(), retention.clone());
                let r = db.run(move |db| retention::prune(db, &cfg, &en, now_ms())).await;
                match r.map_err(AnalyticsError::from).and_then(|r| r) {
                    Ok(st) => tracing::info!(?st, "retention pass"),
                    Err(e) => tracing::warn!(error = %e, "retention failed"),
                }
                let sc = samples.clone();
                match db.run(move |db| crate::samples::ops::prune(db, &sc, now_ms())).await {
                    Ok(Ok(n)) => tracing::info!(deleted = n, "sample retention pass"),
                    Ok(Err(e)) => tracing::warn!(error = %e, "sample retention failed"),
                    Err(e) => tracing::warn!(error = %e, "sample retention failed"),
                }
            }
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
