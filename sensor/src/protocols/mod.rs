//! One module per emulated service, like mini-redis's `cmd/` folder.
//!
//! Each module has pure parser functions over bytes (fuzzed in `fuzz/`) and an async
//! `handle(session, service)` that speaks the protocol through a [`Session`](crate::session::Session),
//! emits events, and returns the [`CloseReason`](drosera_uplink::event::CloseReason) that ended it.

pub mod blackhole;
pub mod ftp;
pub mod http;
pub mod mssql;
pub mod mysql;
pub mod smb;
pub mod ssh;
pub mod telnet;
