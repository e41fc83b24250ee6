//! `drosera-uplink`: everything a sensor and an admin must agree on, and nothing else.
//!
//! * [`event`] — the one [`Event`] type for everything a sensor reports, with an
//!   explicit schema version and the rules for evolving it.
//! * [`codec`] — batches on the wire: postcard-encoded events compressed with zstd, decoded with
//!   hard caps so hostile bytes can neither panic nor balloon memory.
//! * [`frame`] — the small framed protocol (hello, batch, ack) spoken over one TLS connection.
//! * [`release`] — signed sensor releases: the signed message, signing and verification.
//! * [`tls`] — rustls configurations for both ends (TLS 1.3 only, mutual authentication).
//!
//! There is no business logic here: no storage, no retry policy, no enrichment. Besides the
//! types, only constructors both ends share ([`Event::internal`](event::Event::internal)) and the
//! clock they stamp events with ([`now_ms`]).

pub mod codec;
pub mod event;
pub mod frame;
pub mod release;
pub mod tls;

pub use event::{now_ms, Detail, Event, Priority, Protocol, Transport, SCHEMA_VERSION};
