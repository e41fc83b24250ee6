//! One module per emulated service, like mini-redis's `cmd/` folder.
//!
//! Each module has pure parser functions over bytes (fuzzed in `fuzz/`) and an async
//! `handle(session, service)` that speaks the protocol through a [`Session`], emits events, and
//! returns `Ok(())` when the server ended the conversation or the
//! [`CloseReason`](drosera_uplink::event::CloseReason) that ended it otherwise. The listener
//! records the connection itself (`Session::close`) whatever happens here.

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
    /// Every service a listener can run.
    pub const ALL: [ServiceKind; 8] = [
        ServiceKind::Http,
        ServiceKind::Ftp,
        ServiceKind::Telnet,
        ServiceKind::Ssh,
        ServiceKind::Mssql,
        ServiceKind::Mysql,
        ServiceKind::Smb,
        ServiceKind::Blackhole,
    ];

    /// Parses a config `kind` (see `config::SERVICE_KINDS`): the service's protocol name, so the
    /// config, the events and the admin's reports all use one spelling.
    pub fn parse(kind: &str) -> Option<ServiceKind> {
        ServiceKind::ALL.into_iter().find(|k| k.protocol().as_str() == kind)
    }

    /// The protocol recorded in this service's events.
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
        ServiceKind::Ssh => boxed_ssh(session, svc).await,
        ServiceKind::Mssql => mssql::handle(session, svc).await,
        ServiceKind::Mysql => mysql::handle(session, svc).await,
        ServiceKind::Smb => smb::handle(session, svc).await,
        ServiceKind::Blackhole => blackhole::handle(session, svc).await,
    }
}

/// russh's state makes the SSH future several times larger than the others; boxed (in a plain
/// function, so the unboxed future never lives in `handle`'s own state) every other session's
/// task is not sized for it.
fn boxed_ssh<'a>(
    session: &'a mut Session,
    svc: &'a ServiceSection,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = SessionResult<()>> + Send + 'a>> {
    Box::pin(ssh::handle(session, svc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_config_kind_parses_to_the_service_of_that_protocol() {
        for k in ServiceKind::ALL {
            assert_eq!(ServiceKind::parse(k.protocol().as_str()), Some(k));
        }
        for name in crate::config::SERVICE_KINDS {
            assert!(ServiceKind::parse(name).is_some(), "config kind {name} has no service");
        }
        assert_eq!(ServiceKind::parse("sensor"), None);
        assert_eq!(ServiceKind::parse("HTTP"), None);
    }
}
