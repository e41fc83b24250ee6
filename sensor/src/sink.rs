//! The one way an event enters the store: a bounded channel that never blocks a producer.
//!
//! Protocol handlers run on attackers' connections; they must never wait on the disk. `emit`
//! therefore uses `try_send`: when the channel is full, the event is folded into the shared
//! [`RollupTable`] (counted, not lost), and the store writer turns the counters into rollup
//! events as soon as it catches up.
//!
//! The writer's end is an [`EventQueue`]: the channel plus a signal that a commit group's worth
//! of events is waiting. While a group forms, the writer sleeps until the group's deadline or
//! that signal instead of polling the channel (issue 18: polling every few milliseconds made the
//! writer half of a connection's CPU at 100 connections/s), and it still wakes early enough
//! under a flood that the channel does not fill while it sleeps.

use crate::rollup::RollupTable;
use drosera_uplink::event::{Event, Protocol, ShedReason, Transport};
use drosera_uplink::now_ms;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, Notify};

/// Cloneable handle used by every producer.
#[derive(Clone, Debug)]
pub struct EventSink {
    tx: mpsc::Sender<Event>,
    rollups: Arc<RollupTable>,
    counters: Arc<SinkCounters>,
    filled: Arc<Filled>,
}

/// "A group is waiting": raised by a producer whose event left at most `room` free slots.
#[derive(Debug)]
struct Filled {
    notify: Notify,
    room: usize,
}

impl Filled {
    fn new(capacity: usize, group: usize) -> Arc<Filled> {
        Arc::new(Filled { notify: Notify::new(), room: capacity - group.clamp(1, capacity.div_ceil(2)) })
    }

    /// Called after each successful send on `tx`.
    fn sent(&self, tx: &mpsc::Sender<Event>) {
        if tx.capacity() <= self.room {
            self.notify.notify_one();
        }
    }
}

/// A producer that waits when the channel is full, for tools, benchmarks and tests that must
/// hand every event to the writer (the sensor's own producers use [`EventSink`], which never
/// waits). It signals the writer like the sink does.
#[derive(Clone, Debug)]
pub struct BlockingFeed {
    tx: mpsc::Sender<Event>,
    filled: Arc<Filled>,
}

/// The writer is gone (its queue was closed or dropped); the event was not taken.
#[derive(Debug, thiserror::Error)]
#[error("the store writer no longer takes events")]
pub struct WriterGone;

impl BlockingFeed {
    pub async fn send(&self, ev: Event) -> Result<(), WriterGone> {
        self.tx.send(ev).await.map_err(|_| WriterGone)?;
        self.filled.sent(&self.tx);
        Ok(())
    }

    /// [`BlockingFeed::send`] from outside an async runtime.
    pub fn blocking_send(&self, ev: Event) -> Result<(), WriterGone> {
        self.tx.blocking_send(ev).map_err(|_| WriterGone)?;
        self.filled.sent(&self.tx);
        Ok(())
    }
}

/// The store writer's end of the sink (see the module docs).
#[derive(Debug)]
pub struct EventQueue {
    rx: mpsc::Receiver<Event>,
    filled: Arc<Filled>,
}

impl EventQueue {
    /// A queue fed by a [`BlockingFeed`], with a group of a quarter of the channel.
    pub fn blocking(capacity: usize) -> (BlockingFeed, EventQueue) {
        let capacity = capacity.max(1);
        let (tx, rx) = mpsc::channel(capacity);
        let filled = Filled::new(capacity, capacity / 4);
        (BlockingFeed { tx, filled: filled.clone() }, EventQueue { rx, filled })
    }

    /// The next event; `None` once every sink is gone and the channel is empty.
    pub async fn recv(&mut self) -> Option<Event> {
        self.rx.recv().await
    }

    pub fn try_recv(&mut self) -> Result<Event, mpsc::error::TryRecvError> {
        self.rx.try_recv()
    }

    /// Refuses further events (producers fold them into rollups); queued ones stay readable.
    pub fn close(&mut self) {
        self.rx.close()
    }

    /// Returns once at least a group's worth of events has been queued since the last time it
    /// returned (possibly at once, when that happened while nobody waited).
    pub async fn group_waiting(&self) {
        self.filled.notify.notified().await
    }
}

/// Monotonic counters of what went through the sink.
#[derive(Debug, Default)]
pub struct SinkCounters {
    /// Events handed to the channel.
    pub queued: AtomicU64,
    /// Events folded into rollups because the channel was full.
    pub folded: AtomicU64,
    /// Connections shed by listeners (caps, limits, pressure) and counted in rollups.
    pub shed: AtomicU64,
}

impl EventSink {
    /// Creates the sink and the receiving end for the store writer, with a group of a quarter
    /// of the channel.
    pub fn new(capacity: usize, rollups: Arc<RollupTable>) -> (EventSink, EventQueue) {
        Self::with_group(capacity, capacity / 4, rollups)
    }

    /// [`EventSink::new`] that signals the writer when `group` events are queued (the store's
    /// `commit_max_events`; at most half the channel, so a flood finds the writer awake with
    /// half the channel still free).
    pub fn with_group(capacity: usize, group: usize, rollups: Arc<RollupTable>) -> (EventSink, EventQueue) {
        let capacity = capacity.max(1);
        let (tx, rx) = mpsc::channel(capacity);
        let filled = Filled::new(capacity, group);
        let sink = EventSink { tx, rollups, counters: Arc::new(SinkCounters::default()), filled: filled.clone() };
        (sink, EventQueue { rx, filled })
    }

    /// After a successful send: wakes the writer when a group's worth is queued.
    fn queued(&self) {
        self.counters.queued.fetch_add(1, Ordering::Relaxed);
        self.filled.sent(&self.tx);
    }

    /// Hands an event to the store without ever blocking. Returns false when it was folded into
    /// a rollup counter instead (channel full or store gone).
    pub fn emit(&self, ev: Event) -> bool {
        self.emit_weighted(ev, 1)
    }

    /// Like [`EventSink::emit`] for an event that stands for `n` observations (a scan window's
    /// packets): if it is folded into a rollup, the rollup counts all `n`, so totals stay exact.
    pub fn emit_weighted(&self, mut ev: Event, n: u64) -> bool {
        ev.clamp();
        match self.tx.try_send(ev) {
            Ok(()) => {
                self.queued();
                true
            }
            Err(mpsc::error::TrySendError::Full(ev)) | Err(mpsc::error::TrySendError::Closed(ev)) => {
                self.rollups.add_on(
                    ev.transport,
                    ev.src_ip,
                    ev.dst_port,
                    ev.protocol,
                    ev.time_ms,
                    ShedReason::ChannelFull,
                    n.max(1),
                );
                self.counters.folded.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Counts a connection that was closed or refused without being recorded one by one.
    pub fn shed(&self, src_ip: IpAddr, dst_port: u16, protocol: Protocol, reason: ShedReason) {
        self.rollups.add(src_ip, dst_port, protocol, now_ms(), reason, 1);
        self.counters.shed.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a UDP datagram that was dropped (budget, pressure) without being recorded.
    pub fn shed_datagram(&self, src_ip: IpAddr, dst_port: u16, protocol: Protocol, reason: ShedReason) {
        self.rollups.add_on(Transport::Udp, src_ip, dst_port, protocol, now_ms(), reason, 1);
        self.counters.shed.fetch_add(1, Ordering::Relaxed);
    }

    pub fn counters(&self) -> &SinkCounters {
        &self.counters
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use drosera_uplink::event::{CloseReason, Detail, Priority};

    fn ev() -> Event {
        Event {
            seq: 0,
            time_ms: now_ms(),
            sensor: String::new(),
            transport: Transport::Tcp,
            protocol: Protocol::Http,
            src_ip: "192.0.2.1".parse().unwrap(),
            src_port: 1,
            dst_port: 80,
            session_id: 1,
            duration_ms: 0,
            bytes_in: 0,
            bytes_out: 0,
            priority: Priority::Noise,
            detail: Detail::Connection { first_bytes: vec![], closed_by: CloseReason::ClientClosed },
        }
    }

    #[tokio::test]
    async fn full_channel_folds_into_rollups_without_blocking() {
        let rollups = Arc::new(RollupTable::new(100));
        let (sink, mut rx) = EventSink::new(4, rollups.clone());
        let mut accepted = 0;
        for _ in 0..100 {
            if sink.emit(ev()) {
                accepted += 1;
            }
        }
        assert_eq!(accepted, 4);
        assert_eq!(rollups.total(), 96);
        let mut got = 0;
        while rx.try_recv().is_ok() {
            got += 1;
        }
        assert_eq!(got + rollups.total(), 100);
    }

    #[tokio::test(start_paused = true)]
    async fn the_writer_is_signalled_once_a_group_is_queued() {
        let (sink, mut rx) = EventSink::with_group(16, 3, Arc::new(RollupTable::new(10)));
        async fn waiting(rx: &EventQueue) -> bool {
            tokio::time::timeout(std::time::Duration::from_millis(10), rx.group_waiting()).await.is_ok()
        }
        assert!(sink.emit(ev()) && sink.emit(ev()));
        assert!(!waiting(&rx).await, "two events are not a group of three");
        assert!(sink.emit(ev()));
        assert!(waiting(&rx).await, "the third event makes a group");
        assert!(!waiting(&rx).await, "one signal per group, not one per wait");
        while rx.try_recv().is_ok() {}
        assert!(sink.emit(ev()));
        assert!(!waiting(&rx).await, "a drained queue starts counting again");
        // the group is capped at half the channel
        let (sink, rx) = EventSink::with_group(4, 100, Arc::new(RollupTable::new(10)));
        assert!(sink.emit(ev()));
        assert!(!waiting(&rx).await);
        assert!(sink.emit(ev()));
        assert!(waiting(&rx).await);
    }
}
