//! The Drosera admin server as a library; `main.rs` is a thin command line over it.
//!
//! Attacker data arrives only through [`ingest`] (mutual TLS, one transaction per group of
//! batches) and is kept through [`storage`], the one interface to the database; everything else
//! reads from there. [`app`] wires `drosera-admin serve` together, [`cli`] holds the command
//! line's argument types.

pub mod analytics;
pub mod app;
pub mod cli;
pub mod clock;
pub mod config;
pub mod dashboard;
pub mod ecs;
pub mod enrich;
pub mod enroll;
pub mod exploits;
pub mod export;
pub mod hpfeeds;
pub mod ingest;
pub mod labels;
pub mod malloc;
pub mod metrics;
pub mod recover;
pub mod releases;
pub mod retention;
pub mod samples;
pub mod sensors;
pub mod shown;
pub mod storage;
pub mod tap;
pub mod testpg;
pub mod users;
pub mod webhooks;
