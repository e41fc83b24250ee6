//! Login throttling: per-address back-off and a global failure budget.
//!
//! WHY: argon2 makes one guess expensive for the admin, not slow for the guesser: without a
//! limit a script tried 100 passwords in 10 s (issue 19). After `[dashboard]
//! login_free_failures` wrong logins an address waits 2, 4, 8, ... seconds (at most
//! [`MAX_BACKOFF`]) before its next attempt is even checked; past `login_failures_per_minute`
//! failures from everyone together, every login waits for the minute to roll over (a botnet
//! spreading its guesses over many addresses gains nothing). A success clears the address's
//! strikes. The table is bounded (`login_tracked_addresses`); when full, the entry idle longest
//! is forgotten first.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Longest wait imposed on one address.
pub const MAX_BACKOFF: Duration = Duration::from_secs(15 * 60);

/// The throttle's limits (`[dashboard] login_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Wrong logins an address may make before it has to wait.
    pub free_failures: u32,
    /// Wrong logins from all addresses together per minute before every login waits.
    pub failures_per_minute: usize,
    /// Addresses remembered at once.
    pub tracked_addresses: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { free_failures: 5, failures_per_minute: 60, tracked_addresses: 4096 }
    }
}
/// Strikes are forgotten after this long without a failure.
const FORGET_AFTER: Duration = Duration::from_secs(60 * 60);
const MINUTE: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy)]
struct Strikes {
    failures: u32,
    blocked_until: Instant,
    last: Instant,
}

#[derive(Debug, Default)]
struct Inner {
    per_address: HashMap<IpAddr, Strikes>,
    /// Times of the most recent failures from anyone (at most the global budget).
    recent: VecDeque<Instant>,
}

/// Shared by every login request of one dashboard.
#[derive(Debug, Default)]
pub struct LoginThrottle {
    limits: Limits,
    inner: Mutex<Inner>,
}

impl LoginThrottle {
    pub fn new(limits: Limits) -> LoginThrottle {
        LoginThrottle { limits, inner: Mutex::default() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `Ok` when `ip` may try a password now, else how long it must wait.
    pub fn check(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let inner = self.lock();
        if let Some(s) = inner.per_address.get(&ip) {
            if s.blocked_until > now {
                return Err(s.blocked_until - now);
            }
        }
        if inner.recent.len() >= self.limits.failures_per_minute {
            if let Some(oldest) = inner.recent.front() {
                let free_at = *oldest + MINUTE;
                if free_at > now {
                    return Err(free_at - now);
                }
            }
        }
        Ok(())
    }

    /// Records a wrong login from `ip`.
    pub fn failed(&self, ip: IpAddr, now: Instant) {
        let mut inner = self.lock();
        inner.recent.push_back(now);
        while inner.recent.len() > self.limits.failures_per_minute
            || inner.recent.front().is_some_and(|t| now.saturating_duration_since(*t) > MINUTE)
        {
            inner.recent.pop_front();
        }
        if !inner.per_address.contains_key(&ip) && inner.per_address.len() >= self.limits.tracked_addresses {
            inner.per_address.retain(|_, s| now.saturating_duration_since(s.last) < FORGET_AFTER);
            if inner.per_address.len() >= self.limits.tracked_addresses {
                let idle = inner.per_address.iter().min_by_key(|(_, s)| s.last).map(|(ip, _)| *ip);
                if let Some(idle) = idle {
                    inner.per_address.remove(&idle);
                }
            }
        }
        let s = inner.per_address.entry(ip).or_insert(Strikes { failures: 0, blocked_until: now, last: now });
        if now.saturating_duration_since(s.last) >= FORGET_AFTER {
            s.failures = 0;
        }
        s.failures = s.failures.saturating_add(1);
        s.last = now;
        let free = self.limits.free_failures;
        if s.failures >= free {
            let exp = (s.failures - free).min(20);
            s.blocked_until = now + Duration::from_secs(2u64 << exp).min(MAX_BACKOFF);
        }
    }

    /// A correct login from `ip` clears its strikes.
    pub fn succeeded(&self, ip: IpAddr) {
        self.lock().per_address.remove(&ip);
    }

    /// Addresses currently remembered (for tests).
    pub fn tracked(&self) -> usize {
        self.lock().per_address.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u32) -> IpAddr {
        IpAddr::from(n.to_be_bytes())
    }

    #[test]
    fn an_address_waits_longer_after_each_failure_past_the_free_ones() {
        let t = LoginThrottle::default();
        const FREE_FAILURES: u32 = 5;
        let now = Instant::now();
        for _ in 0..FREE_FAILURES - 1 {
            assert!(t.check(ip(1), now).is_ok());
            t.failed(ip(1), now);
        }
        assert!(t.check(ip(1), now).is_ok());
        t.failed(ip(1), now);
        assert_eq!(t.check(ip(1), now), Err(Duration::from_secs(2)));
        assert!(t.check(ip(2), now).is_ok(), "another address is not blocked");
        let later = now + Duration::from_secs(2);
        assert!(t.check(ip(1), later).is_ok());
        t.failed(ip(1), later);
        assert_eq!(t.check(ip(1), later), Err(Duration::from_secs(4)));
        for _ in 0..30 {
            t.failed(ip(1), later);
        }
        assert_eq!(t.check(ip(1), later), Err(MAX_BACKOFF));
        t.succeeded(ip(1));
        assert!(t.check(ip(1), later).is_ok());
    }

    #[test]
    fn many_addresses_share_one_failure_budget_and_the_table_stays_bounded() {
        let t = LoginThrottle::default();
        const GLOBAL_FAILURES_PER_MINUTE: usize = 60;
        const MAX_TRACKED: usize = 4096;
        let now = Instant::now();
        for i in 0..GLOBAL_FAILURES_PER_MINUTE as u32 {
            t.failed(ip(100 + i), now);
        }
        let wait = t.check(ip(7), now + Duration::from_secs(10)).unwrap_err();
        assert_eq!(wait, Duration::from_secs(50));
        assert!(t.check(ip(7), now + MINUTE + Duration::from_millis(1)).is_ok());
        for i in 0..(MAX_TRACKED as u32 + 100) {
            t.failed(ip(10_000 + i), now + Duration::from_millis(i as u64));
        }
        assert_eq!(t.tracked(), MAX_TRACKED);
    }
}
