//! The committed-events tap: every event the ingest writer has just committed, fanned out to
//! the integrations that stream (hpfeeds, webhooks, the metrics' ingest counters), each through
//! its own bounded queue.
//!
//! WHY a tap and not a database poll: a poll needs a cursor over events committed in order,
//! which PostgreSQL with several admins does not give (see `storage`'s fold cursor); the writer
//! knows exactly what it committed. WHY bounded and lossy: ingest must never wait for an
//! integration. A full subscriber queue sheds the event, and counts it (`dropped`, exported as
//! `drosera_admin_tap_dropped_total`): the event itself is safe in the database and reaches every
//! report and export; only that subscriber's copy is lost, and the count says how many.
//!
//! Delivery is at least once for events the writer committed: after a restart of the admin a
//! batch the sensor re-sends (its ack was lost) can be published again.
//!
//! Like the exploit rules (`crate::exploits::install`), the tap is installed once per process
//! by `serve`; without it [`publish`] does nothing.

use drosera_uplink::event::Event;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use tokio::sync::mpsc;

/// One subscriber's queue.
pub struct Subscriber {
    pub name: &'static str,
    tx: mpsc::Sender<Arc<Event>>,
    /// Events shed because its queue was full.
    pub dropped: AtomicU64,
    /// Events handed over.
    pub sent: AtomicU64,
}

/// Every subscriber, fixed when installed.
#[derive(Default)]
pub struct Tap {
    pub subscribers: Vec<Subscriber>,
    /// Events committed (whether or not anyone subscribed), per sensor name.
    pub committed: std::sync::Mutex<HashMap<String, u64>>,
}

impl Tap {
    /// Adds a subscriber with a queue of `capacity` events; returns its receiving end.
    pub fn subscribe(&mut self, name: &'static str, capacity: usize) -> mpsc::Receiver<Arc<Event>> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        self.subscribers.push(Subscriber { name, tx, dropped: AtomicU64::new(0), sent: AtomicU64::new(0) });
        rx
    }

    /// Hands `events` (newly committed) to every subscriber without waiting.
    pub fn publish(&self, events: &[Event]) {
        if events.is_empty() {
            return;
        }
        if let Ok(mut c) = self.committed.lock() {
            // Bounded by the number of enrolled sensors (names come from admitted certificates).
            for ev in events {
                match c.get_mut(ev.sensor.as_str()) {
                    Some(n) => *n += 1,
                    None => {
                        c.insert(ev.sensor.clone(), 1);
                    }
                }
            }
        }
        for s in &self.subscribers {
            for ev in events {
                match s.tx.try_send(Arc::new(ev.clone())) {
                    Ok(()) => {
                        s.sent.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        s.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    }
}

static TAP: OnceLock<Arc<Tap>> = OnceLock::new();

/// Installs the process's tap; false if one was installed before (the first stays).
pub fn install(tap: Arc<Tap>) -> bool {
    TAP.set(tap).is_ok()
}

/// The installed tap, if any.
pub fn get() -> Option<&'static Arc<Tap>> {
    TAP.get()
}

/// What the ingest writer calls after a commit: the events of each acknowledged batch above
/// what this process already published for its sensor (`published`: the writer's own memory of
/// the highest sequence number it handed over per sensor id).
pub fn publish_committed(published: &mut HashMap<i64, u64>, sensor_id: i64, events: &[Event]) {
    let Some(tap) = get() else { return };
    let last = published.entry(sensor_id).or_insert(0);
    let from = events.partition_point(|e| e.seq <= *last);
    if let Some(e) = events.last() {
        *last = (*last).max(e.seq);
    }
    tap.publish(&events[from..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use drosera_uplink::event::Detail;

    fn ev(seq: u64) -> Event {
        let mut e = Event::internal(Detail::Health(Default::default()));
        e.seq = seq;
        e.sensor = "pi".into();
        e
    }

    #[test]
    fn a_full_subscriber_sheds_and_counts_without_blocking() {
        let mut tap = Tap::default();
        let mut rx = tap.subscribe("test", 2);
        tap.publish(&[ev(1), ev(2), ev(3)]);
        let s = &tap.subscribers[0];
        assert_eq!((s.sent.load(Ordering::Relaxed), s.dropped.load(Ordering::Relaxed)), (2, 1));
        assert_eq!(rx.try_recv().unwrap().seq, 1);
        assert_eq!(tap.committed.lock().unwrap()["pi"], 3);
    }
}
