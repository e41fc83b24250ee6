//! One module per emulated service, like mini-redis's `cmd/` folder.
//!
//! Each module has pure parser functions over bytes (fuzzed in `fuzz/`), its believable
//! `DEFAULT_BANNER` (used when the config leaves `banner` empty), and an async
//! `handle(session, service)` that speaks the protocol through a `Session`, emits events, and
//! returns `Ok(())` when the server ended the conversation or the
//! [`CloseReason`](drosera_uplink::event::CloseReason) that ended it otherwise. The listener
//! records the connection itself (`Session::close`) whatever happens here.
//!
//! [`ServiceKind`] is the one list of services a config may name: serde reads `kind` into it
//! (an unknown kind is an error that lists the valid ones), and each kind is spelled like the
//! [`Protocol`] its events carry. The blackhole is not a service kind: it has its own config
//! section and the listener runs `blackhole::handle` for it directly.

use crate::config::{
    Config, EpmapSection, MemcachedSection, MongodbSection, MqttSection, PptpSection, PrinterSection, ServiceSection,
    SipSection, SmtpSection, UpnpSection,
};
use crate::session::{Session, SessionResult};
use drosera_uplink::event::Protocol;
use serde::Deserialize;

pub mod adb;
pub mod blackhole;
pub mod docker;
pub mod dropper;
pub mod epmap;
pub mod ftp;
#[cfg(test)]
pub(crate) mod hostile;
pub mod http;
pub mod memcached;
pub mod mongodb;
pub mod mqtt;
pub mod mssql;
pub mod mysql;
pub mod per_source;
pub mod pptp;
pub mod prefixed;
pub mod printer;
pub mod rdp;
pub mod redis;
pub mod shell;
pub mod sip;
pub mod smb;
pub mod smtp;
pub mod ssh;
pub mod telnet;
pub mod tftp;
pub mod upnp;
pub mod vnc;

/// The services a config's `[[service]] kind` can name. The serde name of each is its
/// protocol's name (`http`, `ftp`, ...), so the config, the events and the admin's reports use
/// one spelling (a unit test holds the two together).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceKind {
    Http,
    Ftp,
    Telnet,
    Ssh,
    Mssql,
    Mysql,
    Smb,
    Redis,
    Adb,
    Docker,
    Smtp,
    Rdp,
    Vnc,
    Mqtt,
    Mongodb,
    Epmap,
    Pptp,
    Printer,
    Tftp,
    Sip,
    Memcached,
    Upnp,
}

impl ServiceKind {
    /// Every service kind.
    pub const ALL: [ServiceKind; 22] = [
        ServiceKind::Http,
        ServiceKind::Ftp,
        ServiceKind::Telnet,
        ServiceKind::Ssh,
        ServiceKind::Mssql,
        ServiceKind::Mysql,
        ServiceKind::Smb,
        ServiceKind::Redis,
        ServiceKind::Adb,
        ServiceKind::Docker,
        ServiceKind::Smtp,
        ServiceKind::Rdp,
        ServiceKind::Vnc,
        ServiceKind::Mqtt,
        ServiceKind::Mongodb,
        ServiceKind::Epmap,
        ServiceKind::Pptp,
        ServiceKind::Printer,
        ServiceKind::Tftp,
        ServiceKind::Sip,
        ServiceKind::Memcached,
        ServiceKind::Upnp,
    ];

    /// The transports `ports` are served on when the config does not say (`transport`).
    pub fn default_transport(self) -> crate::config::TransportChoice {
        use crate::config::TransportChoice;
        match self {
            ServiceKind::Tftp | ServiceKind::Upnp => TransportChoice::Udp,
            ServiceKind::Sip => TransportChoice::Both,
            _ => TransportChoice::Tcp,
        }
    }

    /// True for the kinds with a UDP service (see `crate::udp`).
    pub fn speaks_udp(self) -> bool {
        matches!(self, ServiceKind::Tftp | ServiceKind::Sip | ServiceKind::Memcached | ServiceKind::Upnp)
    }

    /// True for the kinds whose `ports` may be TCP (UPnP's TCP side is its `description_port`).
    pub fn speaks_tcp(self) -> bool {
        !matches!(self, ServiceKind::Tftp | ServiceKind::Upnp)
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
            ServiceKind::Redis => Protocol::Redis,
            ServiceKind::Adb => Protocol::Adb,
            ServiceKind::Docker => Protocol::Docker,
            ServiceKind::Smtp => Protocol::Smtp,
            ServiceKind::Rdp => Protocol::Rdp,
            ServiceKind::Vnc => Protocol::Vnc,
            ServiceKind::Mqtt => Protocol::Mqtt,
            ServiceKind::Mongodb => Protocol::Mongodb,
            ServiceKind::Epmap => Protocol::Epmap,
            ServiceKind::Pptp => Protocol::Pptp,
            ServiceKind::Printer => Protocol::Printer,
            ServiceKind::Tftp => Protocol::Tftp,
            ServiceKind::Sip => Protocol::Sip,
            ServiceKind::Memcached => Protocol::Memcached,
            ServiceKind::Upnp => Protocol::Upnp,
        }
    }
}

/// Runs the protocol of `kind` on `session`.
pub(crate) async fn handle(kind: ServiceKind, session: &mut Session, svc: &ServiceSection) -> SessionResult<()> {
    match kind {
        ServiceKind::Http => boxed(http::handle(session, svc)).await,
        ServiceKind::Ftp => boxed(ftp::handle(session, svc)).await,
        ServiceKind::Telnet => boxed(telnet::handle(session, svc)).await,
        ServiceKind::Ssh => boxed_ssh(session, svc).await,
        ServiceKind::Mssql => boxed(mssql::handle(session, svc)).await,
        ServiceKind::Mysql => boxed(mysql::handle(session, svc)).await,
        ServiceKind::Smb => boxed(smb::handle(session, svc)).await,
        ServiceKind::Redis => boxed(redis::handle(session, svc)).await,
        ServiceKind::Adb => boxed(adb::handle(session, svc)).await,
        ServiceKind::Docker => boxed(docker::handle(session, svc)).await,
        ServiceKind::Smtp => boxed(smtp::handle(session, svc)).await,
        ServiceKind::Rdp => boxed(rdp::handle(session, svc)).await,
        ServiceKind::Vnc => boxed(vnc::handle(session, svc)).await,
        ServiceKind::Mqtt => boxed(mqtt::handle(session, svc)).await,
        ServiceKind::Mongodb => boxed(mongodb::handle(session, svc)).await,
        ServiceKind::Epmap => boxed(epmap::handle(session, svc)).await,
        ServiceKind::Pptp => boxed(pptp::handle(session, svc)).await,
        ServiceKind::Printer => boxed(printer::handle(session, svc)).await,
        // UDP only: config validation never puts it on a TCP port.
        ServiceKind::Tftp => Ok(()),
        ServiceKind::Sip => boxed(sip::handle(session, svc)).await,
        ServiceKind::Memcached => boxed(memcached::handle(session, svc)).await,
        // Its TCP side: the device description and SOAP control (`description_port`).
        ServiceKind::Upnp => boxed(upnp::handle(session, svc)).await,
    }
}

/// Handles one UDP datagram of `kind` that belongs to no open flow (see `crate::udp`): records
/// it and returns the reply, which the framework sends only if it is no larger than `data`.
pub(crate) fn datagram(
    kind: ServiceKind,
    x: &mut crate::udp::Exchange,
    svc: &ServiceSection,
    data: &[u8],
) -> Option<Vec<u8>> {
    match kind {
        ServiceKind::Tftp => tftp::datagram(x, data),
        ServiceKind::Sip => sip::datagram(x, svc, data),
        ServiceKind::Memcached => memcached::datagram(x, svc, data),
        ServiceKind::Upnp => upnp::datagram(x, svc, data),
        // Config validation never puts another kind on UDP.
        _ => None,
    }
}

/// Boxes a handler's future, so a service whose state is larger than the others' does not size
/// every session's task for it (see `boxed_ssh`); one allocation per session.
fn boxed<'a>(
    fut: impl std::future::Future<Output = SessionResult<()>> + Send + 'a,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = SessionResult<()>> + Send + 'a>> {
    Box::pin(fut)
}

/// What sessions of one service share across connections, sensor-wide: settings from the
/// config that only that service reads, and state a real server keeps between connections
/// (so a step an attacker takes on one connection is seen by the next). Lives in the
/// [`SessionEnv`](crate::SessionEnv); every part is bounded.
#[derive(Debug, Default)]
pub struct Shared {
    /// What each source address configured and stored on the emulated Redis.
    pub redis: redis::Memory,
    /// The containers and execs each source address created on the emulated Docker.
    pub docker: docker::Memory,
    /// The `[smtp]` section.
    pub smtp: SmtpSection,
    /// Issue 16's per-protocol caps: the `[mqtt]` ... `[upnp]` sections.
    pub mqtt: MqttSection,
    pub mongodb: MongodbSection,
    pub epmap: EpmapSection,
    pub pptp: PptpSection,
    pub printer: PrinterSection,
    pub sip: SipSection,
    pub memcached: MemcachedSection,
    pub upnp: UpnpSection,
}

impl Shared {
    pub fn new(cfg: &Config) -> Shared {
        let sources = cfg.memory.service_state_sources;
        Shared {
            redis: redis::Memory::new(sources),
            docker: docker::Memory::new(sources),
            smtp: cfg.smtp.clone(),
            mqtt: cfg.mqtt,
            mongodb: cfg.mongodb,
            epmap: cfg.epmap,
            pptp: cfg.pptp,
            printer: cfg.printer,
            sip: cfg.sip,
            memcached: cfg.memcached,
            upnp: cfg.upnp,
        }
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

    fn kind(name: &str) -> Result<ServiceKind, serde::de::value::Error> {
        ServiceKind::deserialize(serde::de::IntoDeserializer::<serde::de::value::Error>::into_deserializer(name))
    }

    #[test]
    fn every_config_kind_is_spelled_like_the_protocol_of_its_events() {
        for k in ServiceKind::ALL {
            assert_eq!(kind(k.protocol().as_str()), Ok(k));
        }
        // Everything else a protocol is called is not a service a config can start.
        let services: Vec<Protocol> = ServiceKind::ALL.iter().map(|k| k.protocol()).collect();
        for p in Protocol::ALL.into_iter().filter(|p| !services.contains(p)) {
            assert!(kind(p.as_str()).is_err(), "{p} parses as a service kind");
        }
        let err = kind("HTTP").unwrap_err().to_string();
        assert!(err.contains("`http`, `ftp`, `telnet`, `ssh`, `mssql`, `mysql`, `smb`"), "{err}");
    }
}
