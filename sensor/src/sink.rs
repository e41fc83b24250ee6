//! The one way an event enters the store: a bounded channel that never blocks a producer.
//!
//! Protocol handlers run on attackers' connections; they must never wait on the disk. `emit`
//! therefore uses `try_send`: when the channel is full, the event is folded into the shared
//! [`RollupTable`] (counted, not lost), and the store writer turns the counters into rollup
//! events as soon as it catches up.

use crate::rollup::RollupTable;
use drosera_uplink::event::{Event, Protocol, ShedReason, Transport};
use drosera_uplink::now_ms;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;

/// Cloneable handle used by every producer.
#[derive(Clone, Debug)]
pub struct EventSink {
    tx: mpsc::Sender<Event>,
    rollups: Arc<RollupTable>,
    counters: Arc<SinkCounters>,
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
    /// Creates the sink and the receiving end for the store writer.
    pub fn new(capacity: usize, rollups: Arc<RollupTable>) -> (EventSink, mpsc::Receiver<Event>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (EventSink { tx, rollups, counters: Arc::new(SinkCounters::default()) }, rx)
    }

    /// Hands an event to the store without ever blocking. Returns false when it was folded into
    /// a rollup counter instead (channel full or store gone).
    pub fn emit(&self, mut ev: Event) -> bool {
        ev.clamp();
        match self.tx.try_send(ev) {
            Ok(()) => {
                self.counters.queued.fetch_add(1, Ordering::Relaxed);
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
                    1,
                );
                self.counters.folded.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Like [`EventSink::emit`] for an event that stands for `n` observations (a scan window's
    /// packets): if it is folded into a rollup, the rollup counts all `n`, so totals stay exact.
    pub fn emit_weighted(&self, mut ev: Event, n: u64) -> bool {
        ev.clamp();
        match self.tx.try_send(ev) {
            Ok(()) => {
                self.counters.queued.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(mpsc::error::TrySendError::Full(ev)) | Err(mpsc::error::TrySendError::Closed(ev)) => {
                self.rollups.add(ev.src_ip, ev.dst_port, ev.protocol, ev.time_ms, ShedReason::ChannelFull, n.max(1));
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
}
