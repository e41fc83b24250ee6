//! State an emulated server keeps between connections, remembered per source address.
//!
//! WHY: real Redis keeps its config and keys server-wide, and dockerd its containers, so an
//! attacker's step on one connection is visible on the next (campaign scripts run every step
//! as a new `redis-cli` or `docker` process). The sensor keeps that state per source address,
//! so one attacker never sees another's, and bounded: at most `memory.service_state_sources`
//! addresses per service (config), the oldest forgotten first, and counted ([`PerSource::forgotten`]);
//! each service bounds its own `T`. Forgetting loses no record: every step was an event already.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Source addresses remembered per service when the config does not say
/// (`memory.service_state_sources`).
pub const DEFAULT_SOURCES: usize = 256;

/// One service's state per source address.
#[derive(Debug)]
pub struct PerSource<T> {
    inner: Mutex<Sources<T>>,
    cap: usize,
    forgotten: AtomicU64,
}

#[derive(Debug)]
struct Sources<T> {
    data: HashMap<IpAddr, T>,
    order: VecDeque<IpAddr>,
}

impl<T> Default for PerSource<T> {
    fn default() -> Self {
        PerSource::new(DEFAULT_SOURCES)
    }
}

impl<T> PerSource<T> {
    /// Remembers at most `cap` source addresses (0: nothing is remembered).
    pub fn new(cap: usize) -> Self {
        PerSource {
            inner: Mutex::new(Sources { data: HashMap::new(), order: VecDeque::new() }),
            cap,
            forgotten: AtomicU64::new(0),
        }
    }
}

impl<T: Clone + Default> PerSource<T> {
    /// What `src` left behind (the default for a new source).
    pub fn load(&self, src: IpAddr) -> T {
        let s = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        s.data.get(&src).cloned().unwrap_or_default()
    }

    /// Remembers `src`'s state, forgetting the oldest source when full.
    pub fn store(&self, src: IpAddr, value: T) {
        if self.cap == 0 {
            self.forgotten.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let mut s = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if !s.data.contains_key(&src) {
            while s.data.len() >= self.cap {
                match s.order.pop_front() {
                    Some(old) => {
                        s.data.remove(&old);
                        let n = self.forgotten.fetch_add(1, Ordering::Relaxed) + 1;
                        tracing::debug!(source = %old, forgotten = n, "emulated server state forgotten (cap)");
                    }
                    None => break,
                }
            }
            s.order.push_back(src);
        }
        s.data.insert(src, value);
    }

    /// Source addresses remembered.
    pub fn sources(&self) -> usize {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).data.len()
    }

    /// Source states dropped because of the cap, since start.
    pub fn forgotten(&self) -> u64 {
        self.forgotten.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_forgets_the_oldest() {
        let m: PerSource<Option<u32>> = PerSource::new(16);
        for i in 0..(16 + 50u32) {
            m.store(IpAddr::from(i.to_be_bytes()), Some(i));
        }
        assert_eq!((m.sources(), m.forgotten()), (16, 50));
        assert_eq!(m.load(IpAddr::from(0u32.to_be_bytes())), None);
        let last = 16 + 49u32;
        assert_eq!(m.load(IpAddr::from(last.to_be_bytes())), Some(last));
        // Storing again for a known source does not evict anyone.
        m.store(IpAddr::from(last.to_be_bytes()), Some(1));
        assert_eq!((m.sources(), m.forgotten()), (16, 50));
        assert_eq!(PerSource::<u8>::default().cap, DEFAULT_SOURCES);
    }

    #[test]
    fn a_zero_cap_remembers_nothing() {
        let m: PerSource<Option<u32>> = PerSource::new(0);
        m.store(IpAddr::from([192, 0, 2, 1]), Some(1));
        assert_eq!((m.sources(), m.forgotten(), m.load(IpAddr::from([192, 0, 2, 1]))), (0, 1, None));
    }
}
