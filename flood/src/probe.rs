//! The first bytes a client of each emulated service sends, built in one place.
//!
//! WHY here: the load generator (`drosera-flood run`), the end-to-end flood and reliability suite
//! (`drosera-e2e`) and the sensor's own integration tests all speak these probes. One builder
//! keeps their bytes and length fields right once, instead of three hand-assembled copies that
//! drift apart. Pure functions over bytes: no I/O, no allocation beyond the message itself.

/// `GET path` with a `Host` and `User-Agent`, asking the server to close afterwards.
pub fn http_get(path: &str, host: &str, user_agent: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {user_agent}\r\nConnection: close\r\n\r\n").into_bytes()
}

/// A TDS PRELOGIN packet (type 0x12, end of message) with the options VERSION (15.0.2000, what
/// SQL Server 2019 clients send) and ENCRYPTION (not supported), as FreeTDS and sqlcmd open.
pub fn mssql_prelogin() -> Vec<u8> {
    let body: [u8; 18] = [
        0x00, 0x00, 0x0b, 0x00, 0x06, // VERSION at 11, length 6
        0x01, 0x00, 0x11, 0x00, 0x01, // ENCRYPTION at 17, length 1
        0xff, // terminator
        0x0f, 0x00, 0x07, 0xd0, 0x00, 0x00, // version 15.0.2000.0
        0x02, // ENCRYPT_NOT_SUP
    ];
    let len = (8 + body.len()) as u16;
    let mut v = vec![0x12, 0x01];
    v.extend_from_slice(&len.to_be_bytes());
    v.extend_from_slice(&[0x00, 0x00, 0x01, 0x00]); // SPID, packet id 1, window
    v.extend_from_slice(&body);
    v
}

/// `msg` framed as a direct-TCP NetBIOS session message (type 0, 24-bit big-endian length).
pub fn netbios(msg: &[u8]) -> Vec<u8> {
    let mut v = (msg.len() as u32 & 0x00ff_ffff).to_be_bytes().to_vec();
    v.extend_from_slice(msg);
    v
}

/// An SMB1 request framed for the wire: `command` with multiplex id `mid`, parameter `words`
/// (an even number of bytes) and data `bytes`; flags as Windows sends them (canonical paths,
/// case-insensitive; Unicode, NT status, long names), tree and user id 0x0800.
pub fn smb1(command: u8, mid: u16, words: &[u8], bytes: &[u8]) -> Vec<u8> {
    let mut m = vec![0xff, b'S', b'M', b'B', command, 0, 0, 0, 0, 0x18, 0x01, 0x28];
    m.extend_from_slice(&[0; 12]); // pid high, signature, reserved
    m.extend_from_slice(&[0, 8, 0xff, 0xfe, 0, 8]); // tid, pid, uid
    m.extend_from_slice(&mid.to_le_bytes());
    m.push((words.len() / 2) as u8);
    m.extend_from_slice(words);
    m.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
    m.extend_from_slice(bytes);
    netbios(&m)
}

/// An SMB1 NEGOTIATE offering `dialects` (for example `NT LM 0.12`, `SMB 2.002`, `SMB 2.???`).
pub fn smb1_negotiate(dialects: &[&str]) -> Vec<u8> {
    let mut d = Vec::new();
    for x in dialects {
        d.push(0x02);
        d.extend_from_slice(x.as_bytes());
        d.push(0);
    }
    smb1(0x72, 0, &[], &d)
}

/// An SMB2 NEGOTIATE offering the dialect revisions `dialects` (for example 0x0202, 0x0210),
/// framed for the wire, asking for one credit.
pub fn smb2_negotiate(dialects: &[u16]) -> Vec<u8> {
    let mut m = vec![0xfe, b'S', b'M', b'B', 64, 0];
    m.resize(64, 0);
    m[14] = 1; // one credit
    m.extend_from_slice(&[36, 0]); // structure size
    m.extend_from_slice(&(dialects.len() as u16).to_le_bytes());
    m.extend_from_slice(&[1, 0]); // signing enabled
    m.resize(64 + 36, 0); // reserved, capabilities, client GUID, contexts
    for d in dialects {
        m.extend_from_slice(&d.to_le_bytes());
    }
    netbios(&m)
}

/// Redis `PING` then `QUIT`, as RESP arrays the way redis-cli encodes them (the server answers
/// `+PONG`, `+OK` and closes).
pub fn redis_ping_quit() -> Vec<u8> {
    b"*1\r\n$4\r\nPING\r\n*1\r\n$4\r\nQUIT\r\n".to_vec()
}

/// An ADB `CNXN` as the adb host server sends it: protocol version 0x01000001, 256 KiB maximum
/// payload, `host::features=...`, data checksum and magic set.
pub fn adb_connect() -> Vec<u8> {
    const CNXN: u32 = 0x4e58_4e43;
    let data = b"host::features=shell_v2,cmd,stat_v2,ls_v2,fixed_push_mkdir,apex,abb,fixed_push_symlink_timestamp,abb_exec,remount_shell,track_app,sendrecv_v2";
    let check = data.iter().fold(0u32, |s, &b| s.wrapping_add(u32::from(b)));
    let mut v = Vec::with_capacity(24 + data.len());
    for x in [CNXN, 0x0100_0001, 256 * 1024, data.len() as u32, check, !CNXN] {
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.extend_from_slice(data);
    v
}

/// The Docker CLI's first request, `GET /_ping` (HTTP/1.1, so with a `Host`), asking the
/// server to close afterwards.
pub fn docker_ping(host: &str) -> Vec<u8> {
    format!("GET /_ping HTTP/1.1\r\nHost: {host}\r\nUser-Agent: Docker-Client/20.10.24+dfsg1 (linux)\r\nConnection: close\r\n\r\n")
        .into_bytes()
}

/// SMTP `EHLO name` and `QUIT`, pipelined (the server answers both and closes).
pub fn smtp_ehlo_quit(name: &str) -> Vec<u8> {
    format!("EHLO {name}\r\nQUIT\r\n").into_bytes()
}

/// An RDP X.224 Connection Request as `mstsc` sends it: `Cookie: mstshash=user` and an RDP
/// negotiation request for TLS and CredSSP (PROTOCOL_SSL | PROTOCOL_HYBRID), TPKT framed.
pub fn rdp_connection_request(user: &str) -> Vec<u8> {
    let mut x224 = vec![0u8, 0xe0, 0, 0, 0, 0, 0];
    x224.extend_from_slice(format!("Cookie: mstshash={user}\r\n").as_bytes());
    x224.extend_from_slice(&[1, 0, 8, 0, 3, 0, 0, 0]);
    x224[0] = (x224.len() - 1) as u8;
    let mut v = vec![3, 0];
    v.extend_from_slice(&((x224.len() + 4) as u16).to_be_bytes());
    v.extend_from_slice(&x224);
    v
}

/// A VNC client's ProtocolVersion message (RFB 3.8).
pub const RFB_3_8: &[u8; 12] = b"RFB 003.008\n";

/// An anonymous MQTT 3.1.1 CONNECT (client id `client_id`, clean session) and a DISCONNECT.
pub fn mqtt_connect_disconnect(client_id: &str) -> Vec<u8> {
    let id = client_id.as_bytes();
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60];
    body.extend_from_slice(&(id.len() as u16).to_be_bytes());
    body.extend_from_slice(id);
    let mut v = vec![0x10, body.len() as u8];
    v.extend_from_slice(&body);
    v.extend_from_slice(&[0xe0, 0]);
    v
}

/// A legacy MongoDB `OP_QUERY` `{isMaster: 1}` on `admin.$cmd` (what old drivers and scanners
/// send first).
pub fn mongodb_is_master() -> Vec<u8> {
    let doc = b"\x13\0\0\0\x10isMaster\0\x01\0\0\0\0";
    let mut body = 0u32.to_le_bytes().to_vec();
    body.extend_from_slice(b"admin.$cmd\0");
    body.extend_from_slice(&0i32.to_le_bytes());
    body.extend_from_slice(&(-1i32).to_le_bytes());
    body.extend_from_slice(doc);
    let mut v = ((16 + body.len()) as i32).to_le_bytes().to_vec();
    v.extend_from_slice(&1i32.to_le_bytes());
    v.extend_from_slice(&0i32.to_le_bytes());
    v.extend_from_slice(&2004i32.to_le_bytes());
    v.extend_from_slice(&body);
    v
}

/// A DCE/RPC bind to the endpoint mapper (e1af8308-5d1f-11c9-91a4-08002b14a0fa v3.0, NDR), as
/// rpcdump sends it.
pub fn epmap_bind() -> Vec<u8> {
    let mut v = vec![5, 0, 11, 3, 0x10, 0, 0, 0, 72, 0, 0, 0, 1, 0, 0, 0];
    v.extend_from_slice(&[0xb8, 0x10, 0xb8, 0x10, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1, 0]);
    v.extend_from_slice(&[
        0x08, 0x83, 0xaf, 0xe1, 0x1f, 0x5d, 0xc9, 0x11, 0x91, 0xa4, 0x08, 0x00, 0x2b, 0x14, 0xa0, 0xfa,
    ]);
    v.extend_from_slice(&[3, 0, 0, 0]);
    v.extend_from_slice(&[
        0x04, 0x5d, 0x88, 0x8a, 0xeb, 0x1c, 0xc9, 0x11, 0x9f, 0xe8, 0x08, 0x00, 0x2b, 0x10, 0x48, 0x60,
    ]);
    v.extend_from_slice(&[2, 0, 0, 0]);
    v
}

/// A PPTP Start-Control-Connection-Request (host name and vendor `name`) followed by a
/// Stop-Control-Connection-Request.
pub fn pptp_start_stop(name: &str) -> Vec<u8> {
    let head = |len: u16, ctrl: u16| {
        let mut h = len.to_be_bytes().to_vec();
        h.extend_from_slice(&[0, 1, 0x1a, 0x2b, 0x3c, 0x4d]);
        h.extend_from_slice(&ctrl.to_be_bytes());
        h.extend_from_slice(&[0, 0]);
        h
    };
    let mut v = head(156, 1);
    v.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1]);
    for _ in 0..2 {
        let mut f: Vec<u8> = name.bytes().take(63).collect();
        f.resize(64, 0);
        v.extend_from_slice(&f);
    }
    v.extend_from_slice(&head(16, 3));
    v.extend_from_slice(&[1, 0, 0, 0]);
    v
}

/// A PJL job asking for the printer's model (`@PJL INFO ID`) between two UELs.
pub const PJL_INFO_ID: &[u8] = b"\x1b%-12345X@PJL INFO ID\r\n\x1b%-12345X\r\n";

/// A SIP `OPTIONS` request over TCP (what SIPVicious' `svmap` and `sipsak` send first).
pub fn sip_options(user: &str) -> Vec<u8> {
    sip_options_over("TCP", user)
}

/// A SIP `OPTIONS` request with `transport` in its Via header.
fn sip_options_over(transport: &str, user: &str) -> Vec<u8> {
    format!(
        "OPTIONS sip:100@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/{transport} 127.0.0.1:5061;branch=z9hG4bK-{user}\r\n\
         From: <sip:{user}@127.0.0.1>;tag=1\r\nTo: <sip:100@127.0.0.1>\r\nCall-ID: {user}\r\n\
         CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// memcached's `stats` probe, then `quit` (the server closes).
pub const MEMCACHED_STATS_QUIT: &[u8] = b"stats\r\nquit\r\n";

/// A UPnP description fetch (`GET /rootDesc.xml`), what `upnpc` does after SSDP points it there.
pub fn upnp_description_get(host: &str) -> Vec<u8> {
    http_get("/rootDesc.xml", host, "Linux/6.1 UPnP/1.1 MiniUPnPc/2.2.4")
}

/// A TFTP read request (RRQ) for `file` in octet mode, as tftp-hpa's `get` sends it: one
/// datagram that starts an exchange, like the three UDP probes below.
pub fn tftp_rrq(file: &str) -> Vec<u8> {
    let mut d = vec![0, 1];
    d.extend_from_slice(file.as_bytes());
    d.push(0);
    d.extend_from_slice(b"octet\0");
    d
}

/// A SIP `OPTIONS` request over UDP (SIPVicious' `svmap` ping, `sipsak`'s default).
pub fn sip_options_udp(user: &str) -> Vec<u8> {
    sip_options_over("UDP", user)
}

/// memcached's `stats` over UDP: the 8-byte frame header (request id, sequence 0, 1 datagram,
/// reserved) and the command, what `nmap -sU` and reflection scanners send.
pub fn memcached_udp_stats(request_id: u16) -> Vec<u8> {
    let mut d = request_id.to_be_bytes().to_vec();
    d.extend_from_slice(&[0, 0, 0, 1, 0, 0]);
    d.extend_from_slice(b"stats\r\n");
    d
}

/// An SSDP `M-SEARCH` for every device (`ssdp:all`), as UPnP clients multicast it.
pub fn ssdp_msearch(user_agent: &str) -> Vec<u8> {
    format!(
        "M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: \"ssdp:discover\"\r\nMX: 1\r\nST: ssdp:all\r\n\
         USER-AGENT: {user_agent}\r\n\r\n"
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_fields_match_the_bytes() {
        let m = mssql_prelogin();
        assert_eq!(u16::from_be_bytes([m[2], m[3]]) as usize, m.len());
        for s in [smb1_negotiate(&["NT LM 0.12", "SMB 2.002"]), smb2_negotiate(&[0x0202, 0x0210])] {
            assert_eq!(u32::from_be_bytes([s[0], s[1], s[2], s[3]]) as usize + 4, s.len());
        }
        let n = smb2_negotiate(&[0x0202, 0x0210, 0x0300]);
        assert_eq!((&n[4..8], n[4 + 64 + 2]), (&b"\xfeSMB"[..], 3), "SMB2 header, dialect count");
        assert_eq!(&n[n.len() - 2..], &[0x00, 0x03]);
        let one = smb1(0x25, 7, &[1, 0, 2, 0], b"xyz");
        assert_eq!((one[4 + 4], one[4 + 30], one[4 + 32]), (0x25, 7, 2), "command, mid, word count");
        assert!(http_get("/a", "h", "ua").ends_with(b"\r\n\r\n"));
        let a = adb_connect();
        assert_eq!(u32::from_le_bytes([a[12], a[13], a[14], a[15]]) as usize + 24, a.len());
        assert_eq!((&a[..4], &a[20..24]), (&b"CNXN"[..], &b"\xbc\xb1\xa7\xb1"[..]));
        assert!(docker_ping("h").ends_with(b"\r\n\r\n") && redis_ping_quit().ends_with(b"QUIT\r\n"));
        assert!(smtp_ehlo_quit("x").starts_with(b"EHLO x\r\n"));
        let r = rdp_connection_request("nmap");
        assert_eq!(r, b"\x03\0\0*%\xe0\0\0\0\0\0Cookie: mstshash=nmap\r\n\x01\0\x08\0\x03\0\0\0", "nmap's probe");
        let m = mqtt_connect_disconnect("bench");
        assert_eq!((m[1] as usize + 2 + 2, &m[m.len() - 2..]), (m.len(), &[0xe0, 0][..]));
        let q = mongodb_is_master();
        assert_eq!(i32::from_le_bytes([q[0], q[1], q[2], q[3]]) as usize, q.len());
        let b = epmap_bind();
        assert_eq!(b[8] as usize, b.len());
        let p = pptp_start_stop("x");
        assert_eq!(p.len(), 156 + 16);
        assert_eq!(tftp_rrq("x86.sh"), b"\0\x01x86.sh\0octet\0");
        let m = memcached_udp_stats(7);
        assert_eq!((&m[..8], &m[8..]), (&[0, 7, 0, 0, 0, 1, 0, 0][..], &b"stats\r\n"[..]));
        assert!(sip_options_udp("x").starts_with(b"OPTIONS sip:") && sip_options_udp("x").ends_with(b"\r\n\r\n"));
        assert!(ssdp_msearch("x").starts_with(b"M-SEARCH * HTTP/1.1\r\n") && ssdp_msearch("x").ends_with(b"\r\n\r\n"));
        assert!(upnp_description_get("h").starts_with(b"GET /rootDesc.xml HTTP/1.1\r\n"));
    }
}
