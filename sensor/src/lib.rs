//! The Drosera sensor as a library; `main.rs` is a thin command line over it.
//!
//! Data flows one way: attacker → [`listener`] → [`protocols`] handler (through a
//! [`session::Session`] that enforces every per-connection cap) → [`event`](drosera_uplink::Event)
//! → [`sink::EventSink`] (bounded channel, rollups when full) → [`store`] (group commit into a
//! bounded SQLite ring buffer) → [`shipper`] (mutual TLS to the admin).
//! The [`governor`] watches memory and tells the listeners how much to accept.

pub mod admission;
pub mod app;
pub mod config;
pub mod credentials;
pub mod governor;
pub mod health;
pub mod listener;
pub mod privileges;
pub mod protocols;
pub mod rollup;
pub mod samples;
pub mod session;
pub mod shipper;
pub mod sink;
pub mod store;
pub mod systemd;
