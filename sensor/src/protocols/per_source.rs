//! State an emulated server keeps between connections, remembered per source address.
//!
//! WHY: real Redis keeps its config and keys server-wide, and dockerd its containers, so an
//! attacker's step on one connection is visible on the next (campaign scripts run every step
//! as a new `redis-cli` or `docker` process). The sensor keeps that state per source address,
//! so one attacker never sees another's, and bounded: at most [`MAX_SOURCES`] addresses, the
//! oldest forgotten first; each service bounds its own `T`.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;

/// Source addresses remembered per service.
pub const MAX_SOURCES: usize = 256;

/// One service's state per source address.
#[derive(Debug)]
pub struct PerSource<T> {
    inner: Mutex<Sources<T>>,
}

#[derive(Debug)]
struct Sources<T> {
    data: HashMap<IpAddr, T>,
    order: VecDeque<IpAddr>,
}

impl<T> Default for PerSource<T> {
    fn default() -> Self {
        PerSource { inner: Mutex::new(Sources { data: HashMap::new(), order: VecDeque::new() }) }
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
        let mut s = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if !s.data.contains_key(&src) {
            while s.data.len() >= MAX_SOURCES {
                match s.order.pop_front() {
                    Some(old) => {
                        s.data.remove(&old);
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_forgets_the_oldest() {
        let m: PerSource<Option<u32>> = PerSource::default();
        for i in 0..(MAX_SOURCES as u32 + 50) {
            m.store(IpAddr::from(i.to_be_bytes()), Some(i));
        }
        assert_eq!(m.sources(), MAX_SOURCES);
        assert_eq!(m.load(IpAddr::from(0u32.to_be_bytes())), None);
        let last = MAX_SOURCES as u32 + 49;
        assert_eq!(m.load(IpAddr::from(last.to_be_bytes())), Some(last));
        // Storing again for a known source does not evict anyone.
        m.store(IpAddr::from(last.to_be_bytes()), Some(1));
        assert_eq!(m.sources(), MAX_SOURCES);
    }
}
