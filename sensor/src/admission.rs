//! Admission control: who gets a session, and why the others do not.
//!
//! A connection must pass four gates, cheapest first, before a protocol handler runs:
//! 1. the pressure governor (hard memory limit: nobody; soft: half the usual concurrency),
//! 2. the global connection cap (a semaphore, as in mini-redis, but never waited on: an
//!    attacker's flood must not queue up inside the sensor),
//! 3. the per-source concurrent connection cap,
//! 4. the per-source rate limit (a keyed `governor` limiter).
//!
//! A refused connection is closed at once by the caller and counted with the returned
//! [`ShedReason`], so it still reaches the admin as a rollup. All per-source state is bounded by
//! `max_tracked_sources`; past that, new sources are refused as rate-limited (and counted) until
//! stale entries age out.

use crate::config::LimitsSection;
use crate::governor::Pressure;
use drosera_uplink::event::ShedReason;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Shared admission state for every listener of one sensor.
pub struct Admission {
    max_connections: usize,
    max_per_source: usize,
    max_tracked: usize,
    global: Arc<Semaphore>,
    per_source: Mutex<HashMap<IpAddr, usize>>,
    rate: DefaultKeyedRateLimiter<IpAddr>,
}

/// Proof of admission; releases its slots when dropped (when the session ends).
pub struct Permit {
    _global: OwnedSemaphorePermit,
    admission: Arc<Admission>,
    ip: IpAddr,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut map = self.admission.per_source.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

impl Admission {
    pub fn new(limits: &LimitsSection) -> Arc<Admission> {
        let rate = NonZeroU32::new(limits.rate_per_source).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(limits.rate_burst.max(limits.rate_per_source)).unwrap_or(rate);
        Arc::new(Admission {
            max_connections: limits.max_connections,
            max_per_source: limits.max_per_source,
            max_tracked: limits.max_tracked_sources,
            global: Arc::new(Semaphore::new(limits.max_connections)),
            per_source: Mutex::new(HashMap::new()),
            rate: RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)),
        })
    }

    /// Connections currently admitted.
    pub fn active(&self) -> usize {
        self.max_connections - self.global.available_permits()
    }

    /// Decides whether a new connection from `ip` may start a session.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, pressure: Pressure) -> Result<Permit, ShedReason> {
        let cap = match pressure {
            Pressure::Normal => self.max_connections,
            Pressure::Soft => (self.max_connections / 2).max(1),
            Pressure::Hard => return Err(ShedReason::MemoryPressure),
        };
        if self.active() >= cap {
            return Err(if pressure == Pressure::Soft {
                ShedReason::MemoryPressure
            } else {
                ShedReason::GlobalConnections
            });
        }
        let global = self.global.clone().try_acquire_owned().map_err(|_| ShedReason::GlobalConnections)?;
        {
            let mut map = self.per_source.lock().unwrap_or_else(|p| p.into_inner());
            let current = map.get(&ip).copied().unwrap_or(0);
            if current >= self.max_per_source {
                return Err(ShedReason::PerSourceConnections);
            }
            if current == 0 && map.len() >= self.max_tracked {
                return Err(ShedReason::RateLimited);
            }
            // The rate limiter's key table is bounded the same way.
            if self.rate.len() >= self.max_tracked {
                self.rate.retain_recent();
                if self.rate.len() >= self.max_tracked {
                    return Err(ShedReason::RateLimited);
                }
            }
            if self.rate.check_key(&ip).is_err() {
                return Err(ShedReason::RateLimited);
            }
            map.insert(ip, current + 1);
        }
        Ok(Permit { _global: global, admission: self.clone(), ip })
    }

    /// Drops rate-limiter state of sources that have been quiet long enough to be full again.
    pub fn housekeeping(&self) {
        self.rate.retain_recent();
        self.rate.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max: usize, per_source: usize, rate: u32) -> LimitsSection {
        LimitsSection {
            max_connections: max,
            max_per_source: per_source,
            rate_per_source: rate,
            rate_burst: rate,
            max_tracked_sources: 4,
            ..LimitsSection::default()
        }
    }

    #[test]
    fn global_and_per_source_caps() {
        let a = Admission::new(&limits(3, 2, 1000));
        let ip1: IpAddr = "198.51.100.1".parse().unwrap();
        let ip2: IpAddr = "198.51.100.2".parse().unwrap();
        let p1 = a.admit(ip1, Pressure::Normal).unwrap();
        let _p2 = a.admit(ip1, Pressure::Normal).unwrap();
        assert_eq!(a.admit(ip1, Pressure::Normal).err(), Some(ShedReason::PerSourceConnections));
        let _p3 = a.admit(ip2, Pressure::Normal).unwrap();
        assert_eq!(a.admit(ip2, Pressure::Normal).err(), Some(ShedReason::GlobalConnections));
        drop(p1);
        assert!(a.admit(ip1, Pressure::Normal).is_ok());
    }

    #[test]
    fn pressure_halves_or_stops() {
        let a = Admission::new(&limits(4, 10, 1000));
        let ip: IpAddr = "198.51.100.1".parse().unwrap();
        assert_eq!(a.admit(ip, Pressure::Hard).err(), Some(ShedReason::MemoryPressure));
        let _a = a.admit(ip, Pressure::Soft).unwrap();
        let _b = a.admit(ip, Pressure::Soft).unwrap();
        assert_eq!(a.admit(ip, Pressure::Soft).err(), Some(ShedReason::MemoryPressure));
        assert!(a.admit(ip, Pressure::Normal).is_ok());
    }

    #[test]
    fn rate_limit_per_source() {
        let a = Admission::new(&limits(100, 100, 5));
        let ip: IpAddr = "198.51.100.1".parse().unwrap();
        let mut ok = 0;
        let mut limited = 0;
        for _ in 0..50 {
            match a.admit(ip, Pressure::Normal) {
                Ok(_p) => ok += 1,
                Err(ShedReason::RateLimited) => limited += 1,
                Err(other) => panic!("unexpected {other:?}"),
            }
        }
        assert!((5..50).contains(&ok), "ok={ok}");
        assert_eq!(ok + limited, 50);
        // Another source is not affected.
        assert!(a.admit("198.51.100.2".parse().unwrap(), Pressure::Normal).is_ok());
    }

    #[test]
    fn tracked_sources_are_bounded() {
        let a = Admission::new(&limits(100, 100, 1000));
        let mut held = Vec::new();
        for i in 0..4u8 {
            held.push(a.admit(IpAddr::from([192, 0, 2, i]), Pressure::Normal).unwrap());
        }
        assert_eq!(a.admit(IpAddr::from([192, 0, 2, 99]), Pressure::Normal).err(), Some(ShedReason::RateLimited));
    }
}
