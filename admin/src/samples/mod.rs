//! Malware samples at the admin (issue 15).
//!
//! * [`classify`] says what a sample is from its bytes (file type from [`filetype`], YARA
//!   matches); [`fetch`] is the opt-in fetcher of "download offered" URLs, [`fetching`] wires
//!   it into ingest.
//! * [`config`] is the `[samples]` section.
//! * [`store`] keeps samples on disk: content-addressed, zstd-compressed, mode 0600.
//! * [`receiver`] takes samples from a sensor connection (offers, chunks, verification);
//!   [`crate::ingest`] drives it and records the verified ones through its writer.
//! * [`zip`] packs a sample for download (password `infected`).
//! * [`ops`] are the CLI's commands (list, show, get, rescan) and retention.

pub mod classify;
pub mod config;
pub mod fetch;
pub mod fetching;
pub mod filetype;
pub mod ops;
pub mod receiver;
pub mod store;
pub mod zip;

pub use config::SamplesConfig;
