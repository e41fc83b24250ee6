//! The Drosera admin server as a library; `main.rs` is a thin command line over it.
//!
//! attacker data arrives only through [`ingest`] (mutual TLS, one transaction per batch) and is
//! kept in [`db`]; everything else reads from there.

pub mod analytics;
pub mod config;
pub mod dashboard;
pub mod db;
pub mod enrich;
pub mod enroll;
pub mod export;
pub mod ingest;
pub mod retention;
pub mod sensors;
pub mod users;
