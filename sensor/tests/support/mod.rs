//! In-process test harness for the emulated services: starts the real listener framework on
//! 127.0.0.1 with ephemeral ports, collects every event the services emit, and runs real
//! clients with a timeout. Shared by the `proto_*` tests.
#![allow(dead_code)]

pub mod clients;

use drosera_sensor::config::{Config, ServiceKind, ServiceSection};
use drosera_sensor::governor::{GovernorHandle, Pressure};
use drosera_sensor::listener::{ListenerContext, ListenerStats, Listeners};
use drosera_sensor::rollup::RollupTable;
use drosera_sensor::samples::{SampleArea, SAMPLES_DIR};
use drosera_sensor::sink::EventSink;
use drosera_sensor::SessionEnv;
use drosera_uplink::event::{Detail, Event, Protocol};
use serde::de::IntoDeserializer;
use serde::Deserialize;
use std::net::SocketAddr;
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub struct Harness {
    pub addrs: Vec<(Protocol, SocketAddr)>,
    /// The bound UDP addresses (see `udp_addr`).
    pub udp_addrs: Vec<(Protocol, SocketAddr)>,
    pub events: Arc<Mutex<Vec<Event>>>,
    pub rollups: Arc<RollupTable>,
    pub stats: Arc<ListenerStats>,
    pub sink: EventSink,
    shutdown: CancellationToken,
    /// The sensor's data directory (holds `samples/`), removed when the harness is dropped.
    data_dir: tempfile::TempDir,
}

/// A config with the given service kinds (config `kind` names) on 127.0.0.1, port 0 each.
pub fn config_for(kinds: &[&str]) -> Config {
    let services = kinds
        .iter()
        .map(|k| {
            let kind = ServiceKind::deserialize(IntoDeserializer::<serde::de::value::Error>::into_deserializer(*k))
                .expect("a service kind");
            let mut svc = ServiceSection::new(kind, "127.0.0.1".parse().unwrap(), vec![0]);
            // UPnP's description port too (its default, 49152, is shared by every test: two
            // UPnP tests running at once collided on it).
            if kind == ServiceKind::Upnp {
                svc.description_port = Some(0);
            }
            svc
        })
        .collect();
    let mut cfg = Config { services, ..Config::default() };
    cfg.limits.idle_timeout_s = 10;
    cfg.limits.session_timeout_s = 60;
    cfg
}

impl Harness {
    /// Starts the given services (config `kind` names) on ephemeral loopback ports.
    pub async fn start(kinds: &[&str]) -> Harness {
        Harness::start_with(config_for(kinds), Pressure::Normal, 100_000).await
    }

    /// Starts the listeners of `cfg` (services with port 0 get ephemeral ports).
    pub async fn start_with(cfg: Config, pressure: Pressure, channel: usize) -> Harness {
        let listeners = Listeners::bind(&cfg).expect("bind");
        let addrs = listeners.local_addrs();
        let udp_addrs = listeners.local_udp_addrs();
        let stats = listeners.stats();
        let rollups = Arc::new(RollupTable::new(cfg.memory.rollup_max_keys));
        let (sink, mut rx) = EventSink::new(channel, rollups.clone());
        let shutdown = CancellationToken::new();
        // The real login policy of `cfg` and a sample area in a temporary data directory.
        let data_dir = tempfile::tempdir().expect("temp data dir");
        let area = SampleArea::open(data_dir.path(), cfg.samples.clone(), Arc::new(|| u64::MAX / 4)).expect("samples");
        let env = SessionEnv::new(&cfg, sink.clone(), Arc::from("test-sensor"), Some(area)).expect("env");
        let ctx = ListenerContext { env, governor: GovernorHandle::fixed(pressure), shutdown: shutdown.clone() };
        tokio::spawn(listeners.serve(ctx));
        let events = Arc::new(Mutex::new(Vec::new()));
        let ev2 = events.clone();
        tokio::spawn(async move {
            while let Some(ev) = rx.recv().await {
                ev2.lock().unwrap().push(ev);
            }
        });
        Harness { addrs, udp_addrs, events, rollups, stats, sink, shutdown, data_dir }
    }

    /// The first bound address of `protocol`.
    pub fn addr(&self, protocol: Protocol) -> SocketAddr {
        self.addrs.iter().find(|(p, _)| *p == protocol).map(|(_, a)| *a).expect("service not started")
    }

    /// The first bound UDP address of `protocol`.
    pub fn udp_addr(&self, protocol: Protocol) -> SocketAddr {
        self.udp_addrs.iter().find(|(p, _)| *p == protocol).map(|(_, a)| *a).expect("UDP service not started")
    }

    /// Where kept samples are (`<sha256 hex>` files, mode 0400).
    pub fn samples_dir(&self) -> std::path::PathBuf {
        self.data_dir.path().join(SAMPLES_DIR)
    }

    pub fn port(&self, protocol: Protocol) -> u16 {
        self.addr(protocol).port()
    }

    pub fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }

    /// Waits until `pred` holds on the collected events; panics with a dump on timeout.
    pub async fn wait_for(&self, timeout: Duration, pred: impl Fn(&[Event]) -> bool) -> Vec<Event> {
        let end = tokio::time::Instant::now() + timeout;
        loop {
            let evs = self.events();
            if pred(&evs) {
                return evs;
            }
            if tokio::time::Instant::now() >= end {
                panic!("timed out waiting for events; got {} events:\n{:#?}", evs.len(), evs);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits for the connection event that ends at least `n` sessions.
    pub async fn wait_connections(&self, n: usize, timeout: Duration) -> Vec<Event> {
        self.wait_for(timeout, |evs| evs.iter().filter(|e| matches!(e.detail, Detail::Connection { .. })).count() >= n)
            .await
    }

    pub fn stop(&self) {
        self.shutdown.cancel();
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// True if `bin` is on PATH. If it is missing: fails the test when DROSERA_REQUIRE_CLIENTS=1
/// (CI), otherwise prints a skip message and returns false.
pub fn require_client(bin: &str) -> bool {
    let found =
        std::env::var_os("PATH").map(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file())).unwrap_or(false);
    if !found {
        if std::env::var("DROSERA_REQUIRE_CLIENTS").as_deref() == Ok("1") {
            panic!(
                "client `{bin}` is required (DROSERA_REQUIRE_CLIENTS=1) but not installed; run scripts/install-deps.sh"
            );
        }
        eprintln!("SKIP: client `{bin}` not installed (run scripts/install-deps.sh)");
    }
    found
}

/// True if `bin` is on PATH (no skip message, no failure).
pub fn require_client_quiet(bin: &str) -> bool {
    std::env::var_os("PATH").map(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file())).unwrap_or(false)
}

/// Runs a real client with a timeout (killed when it expires); returns its output.
pub async fn run_client(mut cmd: tokio::process::Command, timeout: Duration) -> Output {
    cmd.kill_on_drop(true).stdin(std::process::Stdio::null());
    let child = cmd.output();
    match tokio::time::timeout(timeout, child).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => panic!("cannot run client: {e}"),
        Err(_) => panic!("client timed out after {timeout:?}"),
    }
}

/// Lower-case hex SHA-256.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}
