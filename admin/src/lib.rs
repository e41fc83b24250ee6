//! The Drosera admin server as a library; `main.rs` is a thin command line over it.
//!
//! attacker data arrives only through [`ingest`] (mutual TLS, one transaction per batch) and is
//! kept in [`db`]; everything else reads from there.

pub mod db;
