//! The Drosera sensor as a library; `main.rs` is a thin command line over it.
//!
//! # How an attacker's bytes become an event at the admin
//!
//! ```text
//!  attacker
//!     │ TCP
//!     ▼
//!  listener ──▶ admission ── refused ──▶ RollupTable (counted: source × port × minute × reason)
//!     │ admitted                               ▲                         │
//!     ▼                                        │ channel full            │ drained into
//!  protocols::<kind>::handle                   │                         │ rollup events
//!     │ through a Session (every per-connection cap)                     │
//!     ▼                                        │                         ▼
//!  Event ──▶ EventSink ── bounded channel ─────┴──▶ store writer (own thread): group commit
//!                                                   into a bounded SQLite ring buffer,
//!                                                   eviction reported as gap events
//!                                                                        │
//!  admin ◀── mutual TLS, acked batches ◀── shipper (own thread) ◀────────┘ read_batch / ack
//! ```
//!
//! One module per hop, in that order:
//! 1. [`config`]: the one TOML file, parsed once into typed, validated sections.
//! 2. [`listener`]: binds every port (then `privileges` drops root), and for each connection
//!    asks `admission` (global and per-source caps, rate limit, the [`governor`]'s memory
//!    pressure) whether it gets a session. A refused connection is closed at once and counted.
//! 3. [`protocols`]: one module per emulated service, pure parsers plus an async handler that
//!    speaks through a `session::Session`, the one enforcer of per-connection caps (idle, total
//!    time, bytes, line length) and builder of events. Uploads and bodies go through one
//!    `capture::PayloadCapture`.
//! 4. [`sink`]: the only way into the store. It never blocks a handler: when the bounded
//!    channel is full, the event becomes a [`rollup`] counter, so it is counted, never lost.
//! 5. [`store`]: one writer thread commits in groups into a SQLite ring buffer under a byte cap,
//!    evicts the lowest priority first (with an exact gap record) and writes the rollups.
//! 6. `shipper`: its own thread reads batches, ships them over [`drosera_uplink`]'s framed mutual
//!    TLS, and frees only what the admin acknowledged after its commit.
//!
//! Beside the flow: `health` reports the sensor's own state as events through the same sink,
//! the [`governor`] samples memory, `systemd` tells the service manager about readiness and
//! pings its watchdog, and [`app`] wires everything together and owns the shutdown order
//! (listeners, then health and governor, then the writer drains the channel and the rollups;
//! one `CancellationToken` whose child stops the services first), which is what makes a clean
//! stop lose nothing.

pub(crate) mod admission;
pub mod app;
pub(crate) mod capture;
pub mod config;
pub mod credentials;
pub mod governor;
pub(crate) mod health;
pub mod heap;
pub mod listener;
pub(crate) mod privileges;
pub mod protocols;
pub mod rollup;
pub mod samples;
pub mod scan;
pub(crate) mod session;
pub(crate) mod shipper;
pub mod sink;
pub mod store;
pub(crate) mod systemd;
pub mod udp;
pub mod update;

pub use session::SessionEnv;
