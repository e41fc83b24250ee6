//! One module per emulated service, like mini-redis's `cmd/` folder.
//!
//! Each module has pure parser functions over bytes (fuzzed in `fuzz/`) and an async
//! `handle(session, service)` that speaks the protocol through a [`Session`], emits events, and
//! returns `Ok(())` when the server ended the conversation or the
//! [`CloseReason`](drosera_uplink::event::CloseReason) that ended it otherwise. The listener
//! records the connection itself (`Session::finish`) whatever happens here.

use crate::config::ServiceSection;
use crate::session::{Session, SessionResult};
use drosera_uplink::event::Protocol;

pub mod blackhole;
pub mod ftp;
#[cfg(test)]
pub(crate) mod hostile;
pub mod http;
pub mod mssql;
pub mod mysql;
pub mod smb;
pub mod ssh;
pub mod telnet;

/// The services a listener can run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ServiceKind {
    Http,
    Ftp,
    Telnet,
    Ssh,
    Mssql,
    Mysql,
    Smb,
    Blackhole,
}

impl ServiceKind {
    /// Parses a config `kind` (see `config::SERVICE_KINDS`).
    pub fn parse(kind: &str) -> Option<ServiceKind> {
        Some(match kind {
            "http" => ServiceKind::Http,
            "ftp" => ServiceKind::Ftp,
            "telnet" => ServiceKind::Telnet,
            "ssh" => ServiceKind::Ssh,
            "mssql" => ServiceKind::Mssql,
            "mysql" => ServiceKind::Mysql,
            "smb" => ServiceKind::Smb,
            "blackhole" => ServiceKind::Blackhole,
            _ => return None,
        })
    }

    pub fn protocol(self) -> Protocol {
        match self {
            ServiceKind::Http => Protocol::Http,
            ServiceKind::Ftp => Protocol::Ftp,
            ServiceKind::Telnet => Protocol::Telnet,
            ServiceKind::Ssh => Protocol::Ssh,
            ServiceKind::Mssql => Protocol::Mssql,
            ServiceKind::Mysql => Protocol::Mysql,
            ServiceKind::Smb => Protocol::Smb,
            ServiceKind::Blackhole => Protocol::Blackhole,
        }
    }
}

/// Runs the protocol of `kind` on `session`.
pub async fn handle(kind: ServiceKind, session: &mut Session, svc: &ServiceSection) -> SessionResult<()> {
    match kind {
        ServiceKind::Http => http::handle(session, svc).await,
        ServiceKind::Ftp => ftp::handle(session, svc).await,
        ServiceKind::Telnet => telnet::handle(session, svc).await,
        ServiceKind::Ssh => ssh::handle(session, svc).await,
        ServiceKind::Mssql => mssql::handle(session, svc).await,
        ServiceKind::Mysql => mysql::handle(session, svc).await,
        ServiceKind::Smb => smb::handle(session, svc).await,
        ServiceKind::Blackhole => blackhole::handle(session, svc).await,
    }
}
