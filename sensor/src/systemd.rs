//! systemd integration: readiness and the watchdog.
//!
//! The appliance unit is `Type=notify` with `WatchdogSec=`. Telling systemd READY=1 only after
//! every service port is bound means `systemctl start` (and units ordered after the sensor) see a
//! sensor that really accepts connections, and a bind failure is a failed start, not a "running"
//! sensor that listens nowhere. The watchdog ping runs as a task on the same runtime as the
//! listeners: if the runtime wedges, the pings stop and systemd restarts the sensor.
//!
//! Everything here is a no-op when the sensor is not started by systemd (no `NOTIFY_SOCKET`,
//! no `WATCHDOG_USEC`), so tests and hand-started sensors behave exactly as before.

use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Shortest ping interval accepted: a misconfigured tiny `WatchdogSec=` must not busy-loop.
const MIN_PING: Duration = Duration::from_millis(100);

/// Tells systemd the sensor is ready (all ports bound). Returns whether a notification was sent.
pub fn notify_ready() -> bool {
    notify(&[sd_notify::NotifyState::Ready], "READY=1")
}

/// Tells systemd the sensor is stopping (graceful shutdown started).
pub fn notify_stopping() -> bool {
    notify(&[sd_notify::NotifyState::Stopping], "STOPPING=1")
}

fn notify(state: &[sd_notify::NotifyState], what: &str) -> bool {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return false;
    }
    match sd_notify::notify(false, state) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, state = what, "cannot notify systemd");
            false
        }
    }
}

/// The interval at which to ping the watchdog: half of `WATCHDOG_USEC`, when the watchdog is
/// enabled for this process (`WATCHDOG_PID` unset or equal to our pid).
pub fn watchdog_interval() -> Option<Duration> {
    ping_interval(
        std::env::var("WATCHDOG_USEC").ok().as_deref(),
        std::env::var("WATCHDOG_PID").ok().as_deref(),
        std::process::id(),
    )
}

/// Pure part of [`watchdog_interval`], testable without touching the environment.
pub fn ping_interval(usec: Option<&str>, pid: Option<&str>, my_pid: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok()?;
    if usec == 0 {
        return None;
    }
    if let Some(pid) = pid {
        if pid.trim().parse::<u32>().ok()? != my_pid {
            return None;
        }
    }
    Some((Duration::from_micros(usec) / 2).max(MIN_PING))
}

/// Starts the watchdog ping task if systemd's watchdog is enabled for this process; it stops
/// when `shutdown` is cancelled. Returns `None` (and does nothing) otherwise.
pub fn spawn_watchdog(shutdown: CancellationToken) -> Option<JoinHandle<()>> {
    let every = watchdog_interval()?;
    tracing::info!(interval_ms = every.as_millis() as u64, "systemd watchdog enabled");
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    notify(&[sd_notify::NotifyState::Watchdog], "WATCHDOG=1");
                }
                _ = shutdown.cancelled() => return,
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_interval_is_half_the_watchdog_timeout() {
        assert_eq!(ping_interval(Some("60000000"), None, 7), Some(Duration::from_secs(30)));
        assert_eq!(ping_interval(Some("60000000"), Some("7"), 7), Some(Duration::from_secs(30)));
    }

    #[test]
    fn ping_interval_absent_for_other_pid_or_bad_values() {
        assert_eq!(ping_interval(None, None, 7), None);
        assert_eq!(ping_interval(Some("0"), None, 7), None);
        assert_eq!(ping_interval(Some("60000000"), Some("8"), 7), None);
        assert_eq!(ping_interval(Some("sixty"), None, 7), None);
        assert_eq!(ping_interval(Some("60000000"), Some("x"), 7), None);
        assert_eq!(ping_interval(Some("-5"), None, 7), None);
    }

    #[test]
    fn tiny_watchdog_is_clamped() {
        assert_eq!(ping_interval(Some("10"), None, 7), Some(MIN_PING));
    }

    /// The only test in this crate that touches NOTIFY_SOCKET: a real datagram socket standing in
    /// for systemd receives READY=1, then watchdog pings, then nothing after shutdown.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ready_and_watchdog_reach_the_notify_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let sock = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        std::env::set_var("NOTIFY_SOCKET", &path);
        std::env::set_var("WATCHDOG_USEC", "400000");
        std::env::set_var("WATCHDOG_PID", std::process::id().to_string());
        let mut buf = [0u8; 256];

        assert!(notify_ready());
        let n = sock.recv(&mut buf).unwrap();
        assert_eq!(std::str::from_utf8(&buf[..n]).unwrap().trim(), "READY=1");

        let stop = CancellationToken::new();
        let task = spawn_watchdog(stop.clone()).expect("watchdog enabled");
        for _ in 0..2 {
            let n = tokio::task::block_in_place(|| sock.recv(&mut buf)).unwrap();
            assert_eq!(std::str::from_utf8(&buf[..n]).unwrap().trim(), "WATCHDOG=1");
        }
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), task).await.unwrap().unwrap();
        std::env::remove_var("NOTIFY_SOCKET");
        std::env::remove_var("WATCHDOG_USEC");
        std::env::remove_var("WATCHDOG_PID");
        assert!(!notify_ready(), "no socket, no notification");
        assert!(watchdog_interval().is_none());
    }
}
