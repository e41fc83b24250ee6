//! EPMAP (135): the DCE/RPC endpoint mapper of a Windows host, so RPC scanners and DCOM exploits
//! show which interfaces they want.
//!
//! Everything on port 135 starts with a connection-oriented DCE/RPC `bind` naming the
//! interfaces (abstract syntaxes) the client wants to call: the endpoint mapper itself
//! (`rpcdump`, `nmap msrpc-enum`), DCOM activation (`IRemoteActivation`, `ISystemActivator`:
//! the MS03-026 / Blaster path), `IObjectExporter` (OXID resolver: network-interface
//! enumeration), or SAMR/LSARPC/SRVSVC asked for on the wrong port. We record every bind
//! (`Command`: each interface UUID with its well-known name and version), accept the interfaces
//! a Windows endpoint mapper accepts on 135 with NDR and reject the others as Windows does
//! (`abstract syntax not supported`), and answer requests: `ept_lookup` (opnum 2) with the endpoints a
//! Windows Server 2008 R2 file server lists ([`ENDPOINTS`]; the named pipe on the SMB service's
//! host name), all at once with a null handle, `ept_map` (opnum 3) with no tower and
//! `EPT_S_NOT_REGISTERED`, everything else with a `fault`
//! (`nca_op_rng_error`). Each request is recorded as a `Command` (interface and opnum); a
//! request on a DCOM activation interface is also an `Exploit` attempt (`dcom-activation`,
//! MS03-026 names CVE-2003-0352). Non-DCE/RPC bytes get the `bind_nak` Windows sends
//! (what `nmap -sV` recognises as "Microsoft Windows RPC").
//!
//! The PDU parser is pure and bounded by the `[epmap]` config section ([`EpmapSection`]): a
//! fragment is at most `max_fragment_bytes` (larger ends the session before anything is
//! allocated), at most `max_contexts` contexts of a bind are read (and kept bound), a session
//! handles at most `max_pdus` PDUs.

use crate::config::{EpmapSection, ServiceSection};
use crate::session::{Session, SessionResult};
use drosera_uplink::event::{CloseReason, Detail};

/// PDU types (C706 12.6.4).
pub mod ptype {
    pub const REQUEST: u8 = 0;
    pub const RESPONSE: u8 = 2;
    pub const FAULT: u8 = 3;
    pub const BIND: u8 = 11;
    pub const BIND_ACK: u8 = 12;
    pub const BIND_NAK: u8 = 13;
    pub const ALTER_CONTEXT: u8 = 14;
    pub const ALTER_CONTEXT_RESP: u8 = 15;
    pub const AUTH3: u8 = 16;
    pub const SHUTDOWN: u8 = 17;
    pub const CO_CANCEL: u8 = 18;
    pub const ORPHANED: u8 = 19;
}

/// The NDR transfer syntax 8a885d04-1ceb-11c9-9fe8-08002b104860 v2, as on the wire.
pub const NDR: [u8; 16] =
    [0x04, 0x5d, 0x88, 0x8a, 0xeb, 0x1c, 0xc9, 0x11, 0x9f, 0xe8, 0x08, 0x00, 0x2b, 0x10, 0x48, 0x60];
/// `EPT_S_NOT_REGISTERED`: no (more) entries.
pub const EPT_S_NOT_REGISTERED: u32 = 0x16c9_a0d6;
/// `nca_op_rng_error`: the opnum is out of range.
pub const NCA_OP_RNG_ERROR: u32 = 0x1c01_0002;

/// Well-known interfaces: (UUID as text, name, accepted by the endpoint mapper on 135).
pub const INTERFACES: &[(&str, &str, bool)] = &[
    ("e1af8308-5d1f-11c9-91a4-08002b14a0fa", "EPM (endpoint mapper)", true),
    ("4d9f4ab8-7d1c-11cf-861e-0020af6e7c57", "IActivation (DCOM IRemoteActivation)", true),
    ("000001a0-0000-0000-c000-000000000046", "ISystemActivator (DCOM IRemoteSCMActivator)", true),
    ("99fcfec4-5260-101b-bbcb-00aa0021347a", "IObjectExporter (OXID resolver)", true),
    ("00000131-0000-0000-c000-000000000046", "IRemUnknown", true),
    ("00000143-0000-0000-c000-000000000046", "IRemUnknown2", true),
    ("afa8bd80-7d8a-11c9-bef4-08002b102989", "MGMT (rpc management)", true),
    ("12345778-1234-abcd-ef00-0123456789ac", "SAMR", false),
    ("12345778-1234-abcd-ef00-0123456789ab", "LSARPC", false),
    ("c681d488-d850-11d0-8c52-00c04fd90f7e", "EFSRPC", false),
    ("4b324fc8-1670-01d3-1278-5a47bf6ee188", "SRVSVC", false),
    ("6bffd098-a112-3610-9833-46c3f87e345a", "WKSSVC", false),
    ("367abb81-9844-35f1-ad32-98f038001003", "SVCCTL", false),
    ("12345678-1234-abcd-ef00-0123456789ab", "SPOOLSS", false),
    ("12345678-1234-abcd-ef00-01234567cffb", "NETLOGON", false),
    ("338cd001-2244-31f1-aaaa-900038001003", "WINREG", false),
    ("86d35949-83c9-4044-b424-db363231fd0c", "ITaskSchedulerService", false),
    ("378e52b0-c0a9-11cf-822d-00aa0051e40f", "ATSVC (sasec)", false),
    ("1ff70682-0a51-30e8-076d-740be8cee98b", "ATSVC", false),
    ("e3514235-4b06-11d1-ab04-00c04fc2dcd2", "DRSUAPI", false),
    ("3919286a-b10c-11d0-9ba8-00c04fd92ef5", "DSSETUP", false),
    ("82273fdc-e32a-18c3-3f78-827929dc23ea", "EVENTLOG", false),
    ("4fc742e0-4a10-11cf-8273-00aa004ae673", "DFS (netdfs)", false),
    ("50abc2a4-574d-40b3-9d66-ee4fd5fba076", "DNSSERVER", false),
    ("8a885d04-1ceb-11c9-9fe8-08002b104860", "NDR transfer syntax", false),
];

/// Formats a UUID from its wire (little-endian first three fields) bytes.
pub fn uuid_text(b: &[u8; 16]) -> String {
    format!(
        "{:08x}-{:04x}-{:04x}-{:02x}{:02x}-{}",
        u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        u16::from_le_bytes([b[4], b[5]]),
        u16::from_le_bytes([b[6], b[7]]),
        b[8],
        b[9],
        hex::encode(&b[10..16])
    )
}

/// The well-known name of an interface UUID (text form) and whether 135 accepts it.
pub fn interface(uuid: &str) -> Option<(&'static str, bool)> {
    INTERFACES.iter().find(|(u, _, _)| *u == uuid).map(|(_, n, a)| (*n, *a))
}

/// The common 16-byte header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub version: u8,
    pub minor: u8,
    pub ptype: u8,
    pub flags: u8,
    pub little_endian: bool,
    pub frag_length: u16,
    pub auth_length: u16,
    pub call_id: u32,
}

/// Why a PDU was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RpcError {
    #[error("not DCE/RPC version 5")]
    NotDceRpc,
    #[error("fragment length outside 16..=max_fragment_bytes")]
    BadLength,
    #[error("malformed PDU")]
    Malformed,
}

/// Parses the 16-byte header; a fragment length outside `16..=max_fragment` is `BadLength`.
pub fn parse_header(b: &[u8], max_fragment: usize) -> Result<Header, RpcError> {
    if b.len() < 16 {
        return Err(RpcError::Malformed);
    }
    if b[0] != 5 {
        return Err(RpcError::NotDceRpc);
    }
    let le = b[4] & 0x10 != 0;
    let u16_at =
        |i: usize| if le { u16::from_le_bytes([b[i], b[i + 1]]) } else { u16::from_be_bytes([b[i], b[i + 1]]) };
    let call = [b[12], b[13], b[14], b[15]];
    let h = Header {
        version: b[0],
        minor: b[1],
        ptype: b[2],
        flags: b[3],
        little_endian: le,
        frag_length: u16_at(8),
        auth_length: u16_at(10),
        call_id: if le { u32::from_le_bytes(call) } else { u32::from_be_bytes(call) },
    };
    if !(16..=max_fragment).contains(&(h.frag_length as usize)) {
        return Err(RpcError::BadLength);
    }
    Ok(h)
}

/// A little/big-endian cursor over a PDU.
struct Cur<'a> {
    b: &'a [u8],
    at: usize,
    le: bool,
}

impl<'a> Cur<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RpcError> {
        let s = self.b.get(self.at..self.at + n).ok_or(RpcError::Malformed)?;
        self.at += n;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, RpcError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, RpcError> {
        let s = self.take(2)?;
        Ok(if self.le { u16::from_le_bytes([s[0], s[1]]) } else { u16::from_be_bytes([s[0], s[1]]) })
    }
    fn u32(&mut self) -> Result<u32, RpcError> {
        let s = self.take(4)?;
        let a = [s[0], s[1], s[2], s[3]];
        Ok(if self.le { u32::from_le_bytes(a) } else { u32::from_be_bytes(a) })
    }
    fn uuid(&mut self) -> Result<[u8; 16], RpcError> {
        let s = self.take(16)?;
        let mut u = [0u8; 16];
        u.copy_from_slice(s);
        if !self.le {
            // Big-endian senders send the first three fields big-endian: store them as wire LE.
            u[0..4].reverse();
            u[4..6].reverse();
            u[6..8].reverse();
        }
        Ok(u)
    }
}

/// One presentation context of a bind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    pub id: u16,
    pub abstract_syntax: [u8; 16],
    pub version: (u16, u16),
    pub transfer: Vec<[u8; 16]>,
}

/// A bind or alter_context body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    pub max_xmit: u16,
    pub max_recv: u16,
    pub assoc_group: u32,
    pub contexts: Vec<Context>,
}

/// Parses a bind / alter_context PDU (header included): its first `max_contexts` contexts.
pub fn parse_bind(h: &Header, pdu: &[u8], max_contexts: usize) -> Result<Bind, RpcError> {
    let mut c = Cur { b: pdu, at: 16, le: h.little_endian };
    let max_xmit = c.u16()?;
    let max_recv = c.u16()?;
    let assoc_group = c.u32()?;
    let n = c.u8()? as usize;
    c.take(3)?;
    let mut contexts = Vec::new();
    for _ in 0..n.min(max_contexts) {
        let id = c.u16()?;
        let nt = c.u8()? as usize;
        c.u8()?;
        let abstract_syntax = c.uuid()?;
        let major = c.u16()?;
        let minor = c.u16()?;
        let mut transfer = Vec::new();
        for _ in 0..nt {
            let t = c.uuid()?;
            c.u32()?;
            if transfer.len() < 4 {
                transfer.push(t);
            }
        }
        contexts.push(Context { id, abstract_syntax, version: (major, minor), transfer });
    }
    Ok(Bind { max_xmit, max_recv, assoc_group, contexts })
}

/// A request's context id, opnum and stub length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    pub context_id: u16,
    pub opnum: u16,
    pub stub_len: usize,
}

/// Parses a request PDU (header included).
pub fn parse_request(h: &Header, pdu: &[u8]) -> Result<Request, RpcError> {
    let mut c = Cur { b: pdu, at: 16, le: h.little_endian };
    c.u32()?;
    let context_id = c.u16()?;
    let opnum = c.u16()?;
    if h.flags & 0x80 != 0 {
        c.take(16)?;
    }
    let end = pdu.len().saturating_sub(h.auth_length as usize + if h.auth_length > 0 { 8 } else { 0 });
    Ok(Request { context_id, opnum, stub_len: end.saturating_sub(c.at) })
}

/// A little-endian PDU of `ptype` for `call_id` with `body` after the header.
pub fn pdu(ptype: u8, call_id: u32, body: &[u8]) -> Vec<u8> {
    let mut m = vec![5, 0, ptype, 0x03, 0x10, 0, 0, 0];
    m.extend_from_slice(&((16 + body.len()) as u16).to_le_bytes());
    m.extend_from_slice(&0u16.to_le_bytes());
    m.extend_from_slice(&call_id.to_le_bytes());
    m.extend_from_slice(body);
    m
}

/// The bind_nak Windows sends to what is not DCE/RPC 5.0 (reason 4, versions supported: 5.0).
/// `call_id` is the input's bytes 12..16, as Windows echoes them.
pub fn bind_nak(call_id: [u8; 4]) -> Vec<u8> {
    let mut m = pdu(ptype::BIND_NAK, u32::from_le_bytes(call_id), &[4, 0, 1, 5, 0, 0, 0, 0]);
    m.truncate(24);
    m[8..10].copy_from_slice(&24u16.to_le_bytes());
    m
}

/// The bind_ack (or alter_context_resp) body for `bind`: NDR accepted for the interfaces 135
/// serves, bind-time feature negotiation acknowledged, everything else rejected.
pub fn bind_ack(bind: &Bind, call_id: u32, assoc_group: u32, alter: bool) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&bind.max_xmit.clamp(1024, 5840).to_le_bytes());
    b.extend_from_slice(&bind.max_recv.clamp(1024, 5840).to_le_bytes());
    b.extend_from_slice(&assoc_group.to_le_bytes());
    if alter {
        b.extend_from_slice(&[0, 0]);
    } else {
        b.extend_from_slice(&4u16.to_le_bytes());
        b.extend_from_slice(b"135\0");
    }
    while b.len() % 4 != 0 {
        b.push(0);
    }
    b.push(bind.contexts.len() as u8);
    b.extend_from_slice(&[0, 0, 0]);
    for ctx in &bind.contexts {
        let accepted = interface(&uuid_text(&ctx.abstract_syntax)).is_some_and(|(_, a)| a);
        let ndr = ctx.transfer.contains(&NDR);
        let btfn = ctx.transfer.iter().find(|t| t[..8] == [0x2c, 0x1c, 0xb7, 0x6c, 0x12, 0x98, 0x40, 0x45]);
        let (result, reason, syntax, ver) = if let Some(t) = btfn {
            // Bind-time feature negotiation: acknowledged, no features.
            let _ = t;
            (3u16, 0u16, [0u8; 16], 0u32)
        } else if !ndr {
            (2, 2, [0u8; 16], 0)
        } else if !accepted {
            (2, 1, [0u8; 16], 0)
        } else {
            (0, 0, NDR, 2)
        };
        b.extend_from_slice(&result.to_le_bytes());
        b.extend_from_slice(&reason.to_le_bytes());
        b.extend_from_slice(&syntax);
        b.extend_from_slice(&ver.to_le_bytes());
    }
    pdu(if alter { ptype::ALTER_CONTEXT_RESP } else { ptype::BIND_ACK }, call_id, &b)
}

/// A response PDU with `stub`.
pub fn response(call_id: u32, context_id: u16, stub: &[u8]) -> Vec<u8> {
    let mut b = (stub.len() as u32).to_le_bytes().to_vec();
    b.extend_from_slice(&context_id.to_le_bytes());
    b.extend_from_slice(&[0, 0]);
    b.extend_from_slice(stub);
    pdu(ptype::RESPONSE, call_id, &b)
}

/// A fault PDU with `status`.
pub fn fault(call_id: u32, context_id: u16, status: u32) -> Vec<u8> {
    let mut b = 0u32.to_le_bytes().to_vec();
    b.extend_from_slice(&context_id.to_le_bytes());
    b.extend_from_slice(&[0, 0]);
    b.extend_from_slice(&status.to_le_bytes());
    b.extend_from_slice(&[0, 0, 0, 0]);
    pdu(ptype::FAULT, call_id, &b)
}

/// Where a registered interface listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding {
    /// `ncacn_ip_tcp` on this port.
    Tcp(u16),
    /// `ncacn_np` on this pipe (`\PIPE\lsass`).
    Pipe(&'static str),
}

/// The endpoints a Windows Server 2008 R2 file server registers with its mapper, reachable
/// from the network: (interface UUID, version, annotation, binding).
pub const ENDPOINTS: &[(&str, (u16, u16), &str, Binding)] = &[
    ("d95afe70-a6d5-4259-822e-2c84da1ddb0d", (1, 0), "", Binding::Tcp(49152)),
    ("f6beaff7-1e19-4fbb-9f8f-b89e2018337c", (1, 0), "Event log TCPIP", Binding::Tcp(49153)),
    ("3c4728c5-f0ab-448b-bda1-6ce01eb0a6d5", (1, 0), "DHCP Client LRPC Endpoint", Binding::Tcp(49153)),
    ("86d35949-83c9-4044-b424-db363231fd0c", (1, 0), "", Binding::Tcp(49154)),
    ("367abb81-9844-35f1-ad32-98f038001003", (2, 0), "", Binding::Tcp(49155)),
    ("12345778-1234-abcd-ef00-0123456789ac", (1, 0), "", Binding::Tcp(49156)),
    ("12345778-1234-abcd-ef00-0123456789ac", (1, 0), "", Binding::Pipe("\\PIPE\\lsass")),
    ("12345678-1234-abcd-ef00-0123456789ab", (1, 0), "IPSec Policy agent endpoint", Binding::Tcp(49157)),
];

/// A UUID's wire bytes from its text form (`None` if it is not one).
pub fn uuid_wire(text: &str) -> Option<[u8; 16]> {
    let h: String = text.chars().filter(|c| *c != '-').collect();
    let v = hex::decode(h).ok()?;
    let mut u: [u8; 16] = v.try_into().ok()?;
    u[0..4].reverse();
    u[4..6].reverse();
    u[6..8].reverse();
    Some(u)
}

/// The protocol tower of an endpoint (C706 appendix L): interface, NDR, connection-oriented
/// RPC, then TCP port and IP address, or named pipe and NetBIOS host name.
pub fn tower(uuid: &[u8; 16], version: (u16, u16), binding: Binding, host: &str) -> Vec<u8> {
    let mut t = Vec::new();
    let mut floor = |lhs: &[u8], rhs: &[u8]| {
        t.extend_from_slice(&(lhs.len() as u16).to_le_bytes());
        t.extend_from_slice(lhs);
        t.extend_from_slice(&(rhs.len() as u16).to_le_bytes());
        t.extend_from_slice(rhs);
    };
    let mut iface = vec![0x0d];
    iface.extend_from_slice(uuid);
    iface.extend_from_slice(&version.0.to_le_bytes());
    floor(&iface, &version.1.to_le_bytes());
    let mut ndr = vec![0x0d];
    ndr.extend_from_slice(&NDR);
    ndr.extend_from_slice(&2u16.to_le_bytes());
    floor(&ndr, &[0, 0]);
    floor(&[0x0b], &[0, 0]);
    match binding {
        Binding::Tcp(port) => {
            floor(&[0x07], &port.to_be_bytes());
            floor(&[0x09], &[0, 0, 0, 0]);
        }
        Binding::Pipe(pipe) => {
            let mut p = pipe.as_bytes().to_vec();
            p.push(0);
            floor(&[0x0f], &p);
            let mut h = format!("\\\\{host}").into_bytes();
            h.truncate(64);
            h.push(0);
            floor(&[0x11], &h);
        }
    }
    let mut out = 5u16.to_le_bytes().to_vec();
    out.extend_from_slice(&t);
    out
}

fn pad4(v: &mut Vec<u8>) {
    while v.len() % 4 != 0 {
        v.push(0);
    }
}

/// The `ept_lookup` result listing [`ENDPOINTS`] (host `host` in named-pipe towers) at once:
/// a null context handle (the list is complete), the entries, status 0.
pub fn ept_lookup_list(host: &str) -> Vec<u8> {
    let n = ENDPOINTS.len() as u32;
    let mut s = vec![0u8; 20];
    s.extend_from_slice(&n.to_le_bytes()); // num_ents
    s.extend_from_slice(&n.to_le_bytes()); // max_count
    s.extend_from_slice(&0u32.to_le_bytes()); // offset
    s.extend_from_slice(&n.to_le_bytes()); // actual_count
    for (i, (_, _, annotation, _)) in ENDPOINTS.iter().enumerate() {
        s.extend_from_slice(&[0u8; 16]); // object
        s.extend_from_slice(&(0x0002_0000u32 + i as u32 * 4).to_le_bytes()); // tower referent
        let a = annotation.as_bytes();
        s.extend_from_slice(&0u32.to_le_bytes());
        s.extend_from_slice(&(a.len() as u32 + 1).to_le_bytes());
        s.extend_from_slice(a);
        s.push(0);
        pad4(&mut s);
    }
    for (uuid, version, _, binding) in ENDPOINTS {
        let t = tower(&uuid_wire(uuid).unwrap_or_default(), *version, *binding, host);
        s.extend_from_slice(&(t.len() as u32).to_le_bytes()); // max_count
        s.extend_from_slice(&(t.len() as u32).to_le_bytes()); // tower_length
        s.extend_from_slice(&t);
        pad4(&mut s);
    }
    s.extend_from_slice(&0u32.to_le_bytes());
    s
}

/// The `ept_map` result with no towers.
pub fn ept_map_empty() -> Vec<u8> {
    let mut s = vec![0u8; 20];
    s.extend_from_slice(&0u32.to_le_bytes()); // num_towers
    s.extend_from_slice(&0u32.to_le_bytes()); // max_count
    s.extend_from_slice(&0u32.to_le_bytes()); // offset
    s.extend_from_slice(&0u32.to_le_bytes()); // actual_count
    s.extend_from_slice(&EPT_S_NOT_REGISTERED.to_le_bytes());
    s
}

/// A context's interface as recorded: `uuid vMAJOR.MINOR (name)`.
pub fn describe(ctx: &Context) -> String {
    let uuid = uuid_text(&ctx.abstract_syntax);
    let name = interface(&uuid).map_or("unknown", |(n, _)| n);
    format!("{uuid} v{}.{} ({name})", ctx.version.0, ctx.version.1)
}

fn is_dcom_activation(uuid: &str) -> bool {
    matches!(uuid, "4d9f4ab8-7d1c-11cf-861e-0020af6e7c57" | "000001a0-0000-0000-c000-000000000046")
}

pub(crate) async fn handle(session: &mut Session, svc: &ServiceSection) -> SessionResult<()> {
    // The SMB service's host name: one story per host.
    let smb = crate::protocols::smb::SmbPersona::of(session.persona());
    let host = if svc.banner.is_empty() { smb.default_host } else { svc.banner.as_str() };
    let lookup = ept_lookup_list(host);
    let assoc_group = 0x0001_0000 | u32::from(rand::random::<u16>());
    let caps: EpmapSection = session.services().epmap;
    // Context id -> abstract syntax, for the bound contexts (at most `max_contexts`).
    let mut bound: Vec<(u16, String)> = Vec::new();
    let mut exploit_seen = false;
    for _ in 0..caps.max_pdus {
        let mut head = [0u8; 16];
        session.read_exact(&mut head).await?;
        let h = match parse_header(&head, caps.max_fragment_bytes) {
            Ok(h) => h,
            Err(e) => {
                tracing::debug!(error = %e, "epmap: not DCE/RPC");
                session.write_all(&bind_nak([head[12], head[13], head[14], head[15]])).await?;
                session.flush().await?;
                return Err(CloseReason::ProtocolError);
            }
        };
        let mut p = vec![0u8; h.frag_length as usize];
        p[..16].copy_from_slice(&head);
        session.read_exact(&mut p[16..]).await?;
        match h.ptype {
            ptype::BIND | ptype::ALTER_CONTEXT => {
                let alter = h.ptype == ptype::ALTER_CONTEXT;
                let Ok(b) = parse_bind(&h, &p, caps.max_contexts) else {
                    return Err(CloseReason::ProtocolError);
                };
                let list: Vec<String> = b.contexts.iter().map(describe).collect();
                session.emit(Detail::Command {
                    line: format!("{} {}", if alter { "alter_context" } else { "bind" }, list.join(", ")),
                });
                for ctx in &b.contexts {
                    if bound.len() < caps.max_contexts && !bound.iter().any(|(id, _)| *id == ctx.id) {
                        bound.push((ctx.id, uuid_text(&ctx.abstract_syntax)));
                    }
                }
                session.write_all(&bind_ack(&b, h.call_id, assoc_group, alter)).await?;
            }
            ptype::REQUEST => {
                let Ok(r) = parse_request(&h, &p) else {
                    return Err(CloseReason::ProtocolError);
                };
                let uuid = bound.iter().find(|(id, _)| *id == r.context_id).map(|(_, u)| u.clone()).unwrap_or_default();
                let name = interface(&uuid).map_or("unknown", |(n, _)| n);
                session.emit(Detail::Command {
                    line: format!("request {name} opnum {} ({} stub bytes)", r.opnum, r.stub_len),
                });
                if is_dcom_activation(&uuid) && !exploit_seen {
                    exploit_seen = true;
                    session.emit(Detail::Exploit {
                        name: "dcom-activation".into(),
                        cve: if uuid.starts_with("4d9f4ab8") { "CVE-2003-0352".into() } else { String::new() },
                        extra: vec![
                            ("interface".into(), name.into()),
                            ("opnum".into(), r.opnum.to_string()),
                            ("stub_len".into(), r.stub_len.to_string()),
                        ],
                    });
                }
                let reply = match (uuid.as_str(), r.opnum) {
                    ("e1af8308-5d1f-11c9-91a4-08002b14a0fa", 2) => response(h.call_id, r.context_id, &lookup),
                    ("e1af8308-5d1f-11c9-91a4-08002b14a0fa", 3) => response(h.call_id, r.context_id, &ept_map_empty()),
                    _ => fault(h.call_id, r.context_id, NCA_OP_RNG_ERROR),
                };
                // A multi-fragment request is answered once, at its last fragment.
                if h.flags & 0x02 != 0 {
                    session.write_all(&reply).await?;
                }
            }
            ptype::AUTH3 | ptype::CO_CANCEL | ptype::ORPHANED => {}
            ptype::SHUTDOWN => return Ok(()),
            other => {
                session.emit(Detail::Command { line: format!("pdu type {other}") });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(text: &str) -> [u8; 16] {
        uuid_wire(text).unwrap()
    }

    fn bind_pdu(ifaces: &[&str]) -> Vec<u8> {
        let mut b = vec![0xb8, 0x10, 0xb8, 0x10, 0, 0, 0, 0, ifaces.len() as u8, 0, 0, 0];
        for (i, u) in ifaces.iter().enumerate() {
            b.extend_from_slice(&(i as u16).to_le_bytes());
            b.extend_from_slice(&[1, 0]);
            b.extend_from_slice(&wire(u));
            b.extend_from_slice(&[3, 0, 0, 0]);
            b.extend_from_slice(&NDR);
            b.extend_from_slice(&2u32.to_le_bytes());
        }
        pdu(ptype::BIND, 7, &b)
    }

    #[test]
    fn uuids_round_trip_and_are_named() {
        let epm = "e1af8308-5d1f-11c9-91a4-08002b14a0fa";
        assert_eq!(uuid_text(&wire(epm)), epm);
        for (u, _, _, _) in ENDPOINTS {
            assert_eq!(uuid_wire(u).map(|w| uuid_text(&w)).as_deref(), Some(*u));
        }
        assert_eq!(tower(&wire(epm), (3, 0), Binding::Tcp(135), "H")[..2], [5, 0]);
        assert_eq!(uuid_text(&NDR), "8a885d04-1ceb-11c9-9fe8-08002b104860");
        assert_eq!(interface(epm), Some(("EPM (endpoint mapper)", true)));
    }

    #[test]
    fn bind_is_parsed_and_acked_like_windows() {
        let p = bind_pdu(&["e1af8308-5d1f-11c9-91a4-08002b14a0fa", "12345778-1234-abcd-ef00-0123456789ac"]);
        let h = parse_header(&p, 5840).unwrap();
        assert_eq!((h.ptype, h.call_id, h.frag_length as usize), (ptype::BIND, 7, p.len()));
        let b = parse_bind(&h, &p, 32).unwrap();
        assert_eq!(b.contexts.len(), 2);
        // The configured caps, not constants: one context read, a fragment one byte too long.
        assert_eq!(parse_bind(&h, &p, 1).unwrap().contexts.len(), 1);
        assert_eq!(parse_header(&p, p.len() - 1), Err(RpcError::BadLength));
        assert!(describe(&b.contexts[1]).contains("SAMR"));
        let ack = bind_ack(&b, 7, 0x1234, false);
        let ah = parse_header(&ack, 5840).unwrap();
        assert_eq!((ah.ptype, ah.frag_length as usize), (ptype::BIND_ACK, ack.len()));
        // sec addr "135\0", 2 results: accepted (NDR), rejected (abstract syntax not supported).
        assert_eq!(&ack[26..30], b"135\0");
        assert_eq!(ack[32], 2);
        assert_eq!(&ack[36..40], &[0, 0, 0, 0]);
        assert_eq!(&ack[40..56], &NDR);
        assert_eq!(&ack[60..64], &[2, 0, 1, 0]);
    }

    #[test]
    fn non_dcerpc_gets_the_bind_nak_nmap_knows() {
        let probe = b"\0\0\0\xa4\xffSMBr\0\0\0\0\x08\x01\x40\0\0";
        assert_eq!(parse_header(probe, 5840), Err(RpcError::NotDceRpc));
        let nak = bind_nak([probe[12], probe[13], probe[14], probe[15]]);
        assert_eq!(nak.len(), 24);
        assert_eq!(&nak[..12], b"\x05\0\x0d\x03\x10\0\0\0\x18\0\0\0");
        assert_eq!(&nak[16..21], b"\x04\0\x01\x05\0");
    }

    #[test]
    fn requests_and_replies() {
        let mut body = 100u32.to_le_bytes().to_vec();
        body.extend_from_slice(&[0, 0, 2, 0]);
        body.extend_from_slice(&[0u8; 40]);
        let p = pdu(ptype::REQUEST, 9, &body);
        let h = parse_header(&p, 5840).unwrap();
        assert_eq!(parse_request(&h, &p).unwrap(), Request { context_id: 0, opnum: 2, stub_len: 40 });
        let r = response(9, 0, &ept_lookup_list("FILESRV01"));
        assert_eq!(&r[r.len() - 4..], &[0, 0, 0, 0]);
        assert_eq!(parse_header(&r, 5840).unwrap().frag_length as usize, r.len());
        assert!(r.windows(11).any(|w| w == b"\\\\FILESRV01"));
        assert_eq!(parse_header(&fault(9, 0, NCA_OP_RNG_ERROR), 5840).unwrap().ptype, ptype::FAULT);
    }

    #[test]
    fn hostile_input_never_panics() {
        for b in crate::protocols::hostile::random_inputs(0x0135_0000_0001, 20_000, 200, false) {
            let mut p = vec![5, 0, (b.first().copied().unwrap_or(0)) % 20, 3, 0x10, 0, 0, 0];
            p.extend_from_slice(&((16 + b.len()) as u16).to_le_bytes());
            p.extend_from_slice(&[0, 0, 1, 0, 0, 0]);
            p.extend_from_slice(&b);
            let _ = parse_header(&b, 5840);
            if let Ok(h) = parse_header(&p, 5840) {
                if let Ok(bind) = parse_bind(&h, &p, 32) {
                    let _ = bind_ack(&bind, 1, 1, false);
                    let _ = bind.contexts.iter().map(describe).count();
                }
                let _ = parse_request(&h, &p);
            }
        }
        let good = bind_pdu(&["e1af8308-5d1f-11c9-91a4-08002b14a0fa"]);
        for t in crate::protocols::hostile::truncations(&good) {
            if let Ok(h) = parse_header(t, 5840) {
                let _ = parse_bind(&h, t, 32);
            }
        }
    }
}
