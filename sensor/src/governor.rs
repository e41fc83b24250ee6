//! The pressure governor: samples memory and tells the listeners how much to accept.
//!
//! WHY: a flood must never make the sensor grow until the kernel kills it (the failure the
//! field reports describe). The governor samples the process RSS (`/proc/self/statm`) and the
//! system's available memory (`/proc/meminfo`) every `sample_interval_ms` and publishes a
//! [`Pressure`] through a watch channel; listeners read it on every accept. State changes have
//! hysteresis so the sensor does not flap: `Hard` holds until RSS is back below the *soft* limit,
//! and `Soft` holds until RSS is 10% below it. Every change is logged and counted.

use crate::config::MemorySection;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Memory pressure as seen by the listeners.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Pressure {
    /// Accept up to the configured caps.
    Normal,
    /// Above the soft limit: accept half the usual concurrency, keep no payloads.
    Soft,
    /// Above the hard limit: accept nothing (shed and count) until below the soft limit.
    Hard,
}

impl Pressure {
    pub fn as_str(self) -> &'static str {
        match self {
            Pressure::Normal => "normal",
            Pressure::Soft => "soft",
            Pressure::Hard => "hard",
        }
    }
}

/// Cheap, cloneable view of the governor's current state.
#[derive(Clone, Debug)]
pub struct GovernorHandle {
    rx: watch::Receiver<Pressure>,
}

impl GovernorHandle {
    pub fn new(rx: watch::Receiver<Pressure>) -> Self {
        GovernorHandle { rx }
    }

    /// A handle stuck at `p` (tests, tools).
    pub fn fixed(p: Pressure) -> Self {
        let (tx, rx) = watch::channel(p);
        std::mem::forget(tx);
        GovernorHandle { rx }
    }

    pub fn pressure(&self) -> Pressure {
        *self.rx.borrow()
    }
}

/// One memory sample, bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemSample {
    pub rss: u64,
    /// System `MemAvailable` (u64::MAX if unknown).
    pub available: u64,
}

/// Counters the health reporter reads.
#[derive(Debug, Default)]
pub struct GovernorStats {
    /// State changes since start.
    pub transitions: AtomicU64,
    /// Changes into `Soft` / into `Hard`.
    pub to_soft: AtomicU64,
    pub to_hard: AtomicU64,
    pub last_rss: AtomicU64,
    pub last_available: AtomicU64,
    /// Samples taken since start.
    pub samples: AtomicU64,
}

/// The next state given the current one and a sample (pure, so the hysteresis is testable).
pub fn next_state(cur: Pressure, s: MemSample, cfg: &MemorySection) -> Pressure {
    let low_avail = s.available < cfg.min_available_bytes;
    if s.rss >= cfg.hard_limit_bytes {
        return Pressure::Hard;
    }
    match cur {
        // Hard holds until RSS is below the soft limit again.
        Pressure::Hard if s.rss >= cfg.soft_limit_bytes => Pressure::Hard,
        _ if s.rss >= cfg.soft_limit_bytes || low_avail => Pressure::Soft,
        // Soft (and Hard coming down) holds until RSS is 10% below the soft limit and memory is
        // back with a 10% margin.
        Pressure::Soft | Pressure::Hard
            if s.rss >= cfg.soft_limit_bytes / 10 * 9
                || s.available < cfg.min_available_bytes.saturating_add(cfg.min_available_bytes / 10) =>
        {
            Pressure::Soft
        }
        _ => Pressure::Normal,
    }
}

/// Reads RSS from `/proc/self/statm` and `MemAvailable` from `/proc/meminfo`.
pub fn sample() -> MemSample {
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE).ok().flatten().unwrap_or(4096).max(1) as u64;
    let rss = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()))
        .map(|p| p.saturating_mul(page))
        .unwrap_or(0);
    let available = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("MemAvailable:")).and_then(|l| {
                l.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()).map(|kb| kb.saturating_mul(1024))
            })
        })
        .unwrap_or(u64::MAX);
    MemSample { rss, available }
}

/// The sampler task.
pub struct Governor {
    cfg: MemorySection,
    tx: watch::Sender<Pressure>,
    stats: Arc<GovernorStats>,
}

impl Governor {
    pub fn new(cfg: MemorySection) -> (Governor, GovernorHandle) {
        let (tx, rx) = watch::channel(Pressure::Normal);
        (Governor { cfg, tx, stats: Arc::new(GovernorStats::default()) }, GovernorHandle::new(rx))
    }

    pub fn stats(&self) -> Arc<GovernorStats> {
        self.stats.clone()
    }

    /// Applies one sample: publishes, logs and counts a change of state.
    pub fn apply(&self, s: MemSample) -> Pressure {
        self.stats.samples.fetch_add(1, Ordering::Relaxed);
        self.stats.last_rss.store(s.rss, Ordering::Relaxed);
        self.stats.last_available.store(s.available, Ordering::Relaxed);
        let cur = *self.tx.borrow();
        let next = next_state(cur, s, &self.cfg);
        if next != cur {
            self.stats.transitions.fetch_add(1, Ordering::Relaxed);
            match next {
                Pressure::Soft => self.stats.to_soft.fetch_add(1, Ordering::Relaxed),
                Pressure::Hard => self.stats.to_hard.fetch_add(1, Ordering::Relaxed),
                Pressure::Normal => 0,
            };
            let level = if next == Pressure::Normal { "recovered" } else { "pressure" };
            tracing::warn!(
                from = cur.as_str(),
                to = next.as_str(),
                rss = s.rss,
                available = s.available,
                soft = self.cfg.soft_limit_bytes,
                hard = self.cfg.hard_limit_bytes,
                transitions = self.stats.transitions.load(Ordering::Relaxed),
                "memory governor {level}"
            );
            self.tx.send_replace(next);
        }
        next
    }

    /// Samples every `sample_interval_ms` until `shutdown` is cancelled, or every
    /// `idle_sample_interval_ms` while the sensor is idle: `busy` says whether anything happened
    /// since it was last asked (connections accepted or still open). Memory only grows with
    /// work, and an idle Pi should not wake four times a second to read /proc (issue 18); the
    /// first sample after work starts again is at most one idle interval late, and the
    /// connection caps bound what can be allocated meanwhile.
    pub async fn run(self, shutdown: CancellationToken, mut busy: impl FnMut() -> bool + Send) {
        let base = Duration::from_millis(self.cfg.sample_interval_ms.max(10));
        let idle = Duration::from_millis(self.cfg.idle_sample_interval_ms).max(base);
        loop {
            let next = self.apply(sample());
            let wait = if next == Pressure::Normal && !busy() { idle } else { base };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.cancelled() => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> MemorySection {
        MemorySection {
            soft_limit_bytes: 100,
            hard_limit_bytes: 200,
            min_available_bytes: 1000,
            ..MemorySection::default()
        }
    }

    fn s(rss: u64) -> MemSample {
        MemSample { rss, available: 1_000_000 }
    }

    #[test]
    fn hysteresis_hard_until_below_soft_and_soft_until_margin() {
        let c = cfg();
        let mut p = Pressure::Normal;
        p = next_state(p, s(50), &c);
        assert_eq!(p, Pressure::Normal);
        p = next_state(p, s(120), &c);
        assert_eq!(p, Pressure::Soft);
        p = next_state(p, s(95), &c);
        assert_eq!(p, Pressure::Soft, "soft holds within 10% below the soft limit");
        p = next_state(p, s(80), &c);
        assert_eq!(p, Pressure::Normal);
        p = next_state(p, s(250), &c);
        assert_eq!(p, Pressure::Hard);
        p = next_state(p, s(150), &c);
        assert_eq!(p, Pressure::Hard, "hard holds until below the soft limit");
        p = next_state(p, s(99), &c);
        assert_eq!(p, Pressure::Soft);
        p = next_state(p, s(10), &c);
        assert_eq!(p, Pressure::Normal);
        assert_eq!(next_state(Pressure::Normal, MemSample { rss: 10, available: 10 }, &c), Pressure::Soft);
    }

    #[tokio::test]
    async fn changes_are_published_and_counted() {
        let (g, h) = Governor::new(cfg());
        g.apply(s(150));
        assert_eq!(h.pressure(), Pressure::Soft);
        g.apply(s(300));
        assert_eq!(h.pressure(), Pressure::Hard);
        g.apply(s(300));
        g.apply(s(10));
        assert_eq!(h.pressure(), Pressure::Normal);
        assert_eq!(g.stats().transitions.load(Ordering::Relaxed), 3);
        assert_eq!(g.stats().to_hard.load(Ordering::Relaxed), 1);
    }

    /// Ten (virtual) seconds: every 250 ms while busy, every 2 s while idle.
    #[tokio::test(start_paused = true)]
    async fn samples_less_often_while_idle() {
        for (busy, want) in [(true, 40..=42), (false, 5..=6)] {
            // Limits no real process reaches (under qemu-user /proc describes the emulator, far
            // above the default soft limit): only the busy signal may choose the interval.
            let c = MemorySection {
                sample_interval_ms: 250,
                idle_sample_interval_ms: 2000,
                soft_limit_bytes: u64::MAX / 4,
                hard_limit_bytes: u64::MAX / 2,
                min_available_bytes: 0,
                ..MemorySection::default()
            };
            let (g, _h) = Governor::new(c);
            let stats = g.stats();
            let stop = CancellationToken::new();
            let task = tokio::spawn(g.run(stop.clone(), move || busy));
            tokio::time::sleep(Duration::from_millis(10_100)).await;
            stop.cancel();
            task.await.unwrap();
            let n = stats.samples.load(Ordering::Relaxed);
            assert!(want.contains(&n), "busy={busy}: {n} samples");
        }
    }

    #[test]
    fn sample_reads_proc() {
        let m = sample();
        assert!(m.rss > 0 && m.available > 0);
    }
}
