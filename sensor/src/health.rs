//! Periodic health events: how the sensor itself is doing, reported to the admin like any event.
//!
//! Every `health_interval_s` the reporter emits a [`Detail::Health`] event (uptime, RSS, free
//! memory, CPU, free disk, store size and cap, backlog, evictions, shed connections, active
//! connections, governor state). It goes through the same [`EventSink`] as attack events, so a
//! sensor in trouble reports it through the normal, bounded path.

use crate::governor::{sample, GovernorHandle};
use crate::listener::ListenerStats;
use crate::sink::EventSink;
use crate::store::StoreHandle;
use drosera_uplink::event::{Detail, Event, Health};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// What the reporter reads.
#[derive(Clone)]
pub struct HealthContext {
    pub sink: EventSink,
    pub store: StoreHandle,
    pub governor: GovernorHandle,
    pub listeners: Arc<ListenerStats>,
    pub interval: Duration,
    /// When the first event goes out (default: after one interval).
    pub first_after: Option<Duration>,
}

/// CPU time (user + system) of this process, in clock ticks.
fn cpu_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the full line, 12 and 13 after the name.
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn ticks_per_second() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100).max(1) as u64
}

/// Builds one health sample; `cpu` carries the previous (ticks, instant) between calls.
pub fn snapshot(ctx: &HealthContext, started: Instant, cpu: &mut Option<(u64, Instant)>) -> Health {
    let mem = sample();
    let now_ticks = cpu_ticks();
    let now = Instant::now();
    let cpu_permille = match (now_ticks, cpu.as_ref()) {
        (Some(t), Some((t0, i0))) => {
            let secs = now.duration_since(*i0).as_secs_f64().max(0.001);
            (((t.saturating_sub(*t0)) as f64 / ticks_per_second() as f64) / secs * 1000.0).round().min(u32::MAX as f64)
                as u32
        }
        _ => 0,
    };
    if let Some(t) = now_ticks {
        *cpu = Some((t, now));
    }
    let st = ctx.store.status().unwrap_or_default();
    let c = ctx.sink.counters();
    Health {
        uptime_s: started.elapsed().as_secs(),
        rss_bytes: mem.rss,
        mem_available_bytes: if mem.available == u64::MAX { 0 } else { mem.available },
        cpu_permille,
        disk_free_bytes: ctx.store.disk_free_bytes(),
        store_bytes: st.store_bytes,
        cap_bytes: st.cap_bytes,
        backlog_events: st.backlog_events,
        evicted_total: st.evicted_events,
        shed_total: c.shed.load(Ordering::Relaxed) + c.folded.load(Ordering::Relaxed),
        active_connections: ctx.listeners.active_connections.load(Ordering::Relaxed),
        governor: ctx.governor.pressure().as_str().to_string(),
    }
}

/// Emits a health event every interval until `shutdown` is cancelled.
pub async fn run(ctx: HealthContext, shutdown: CancellationToken) {
    let started = Instant::now();
    let mut cpu = None;
    let mut tick = tokio::time::interval(ctx.interval.max(Duration::from_secs(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    // The first tick fires at once: it only primes the CPU counter.
    tick.tick().await;
    let _ = snapshot(&ctx, started, &mut cpu);
    let mut first = ctx.first_after;
    loop {
        match first.take() {
            Some(d) => tokio::select! {
                _ = tokio::time::sleep(d) => {}
                _ = shutdown.cancelled() => break,
            },
            None => tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.cancelled() => break,
            },
        }
        let c = ctx.clone();
        let mut prev = cpu;
        // Store status and statvfs touch the disk: keep them off the async workers.
        let Ok((h, p)) = tokio::task::spawn_blocking(move || {
            let h = snapshot(&c, started, &mut prev);
            (h, prev)
        })
        .await
        else {
            continue;
        };
        cpu = p;
        tracing::debug!(rss = h.rss_bytes, backlog = h.backlog_events, governor = %h.governor, "health");
        ctx.sink.emit(Event::internal(Detail::Health(h)));
    }
}
