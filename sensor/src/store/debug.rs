//! `drosera-sensor debug-store-writer`: a test helper that writes synthetic events as fast as the
//! store takes them and prints `committed SEQ` whenever a commit becomes durable. The kill -9 test
//! runs it as a child process and kills it at random moments.

use super::StoreSection;
use crate::rollup::RollupTable;
use drosera_uplink::event::{CloseReason, Detail, Event, Priority, Protocol, Secret, Transport};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A synthetic event: mostly connection noise, some logins (every 10th), some payloads (every 50th).
pub fn synthetic_event(i: u64) -> Event {
    let (priority, detail) = if i % 50 == 0 {
        (
            Priority::Critical,
            Detail::Payload {
                sha256: [7; 32],
                size: 64,
                name: "x.sh".into(),
                prefix: vec![b'#'; 64],
                truncated: false,
            },
        )
    } else if i % 10 == 0 {
        (
            Priority::Credential,
            Detail::Login {
                username: "root".into(),
                secret: Secret::Password(format!("pw{i}")),
                success: false,
                extra: vec![],
            },
        )
    } else {
        (
            Priority::Noise,
            Detail::Connection {
                first_bytes: b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
                closed_by: CloseReason::ClientClosed,
            },
        )
    };
    Event {
        transport: Transport::Tcp,
        protocol: if priority == Priority::Noise { Protocol::Http } else { Protocol::Telnet },
        src_ip: std::net::IpAddr::from([203, 0, 113, (i % 250) as u8]),
        src_port: 40_000 + (i % 20_000) as u16,
        dst_port: 23,
        session_id: i,
        duration_ms: 10,
        bytes_in: 30,
        bytes_out: 10,
        priority,
        ..Event::internal(detail)
    }
}

/// Runs the helper (blocking) until `events` were written (0 = forever).
pub fn debug_writer(data_dir: &Path, cap_bytes: u64, events: u64) -> anyhow::Result<()> {
    let cfg = StoreSection {
        cap_bytes,
        reserve_bytes: 0,
        commit_interval_ms: 10,
        commit_max_events: 500,
        channel_capacity: 2000,
        disk_check_interval_s: 1,
        ..StoreSection::default()
    };
    let (handle, writer) = super::open(&cfg, data_dir, "debug")?;
    let (tx, rx) = crate::sink::EventQueue::blocking(cfg.channel_capacity);
    let stop = tokio_util::sync::CancellationToken::new();
    let wh = writer.spawn(rx, Arc::new(RollupTable::new(100)), stop.clone())?;
    let done = Arc::new(AtomicBool::new(false));
    let reporter = {
        let (handle, done) = (handle.clone(), done.clone());
        std::thread::spawn(move || {
            let mut last = handle.last_seq();
            let out = std::io::stdout();
            let _ = writeln!(out.lock(), "start {last}");
            loop {
                let finished = done.load(Ordering::Acquire);
                let s = handle.last_seq();
                if s != last {
                    last = s;
                    let mut o = out.lock();
                    let _ = writeln!(o, "committed {s}");
                    let _ = o.flush();
                }
                if finished {
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let mut i = 0u64;
    while events == 0 || i < events {
        if tx.blocking_send(synthetic_event(i)).is_err() {
            break;
        }
        i += 1;
    }
    stop.cancel();
    let _ = wh.join();
    done.store(true, Ordering::Release);
    let _ = reporter.join();
    Ok(())
}
