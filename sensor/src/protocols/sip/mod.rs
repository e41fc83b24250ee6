//! SIP (5060, udp and tcp): a PBX that asks every REGISTER and INVITE for Digest credentials,
//! so VoIP scanners and toll-fraud bots show what they try.
//!
//! Recorded: each request (`Command`: method and URI), the client (`Fingerprint` `sip-client`:
//! User-Agent, From, To, Contact, Call-ID), every Digest answer as a login whose secret is a
//! hashcat mode 11400 line (crackable offline, like the NTLM and MySQL hashes), and SIPVicious
//! (`Fingerprint` `scanner` = `sipvicious`: its `friendly-scanner` User-Agent or its From tags).
//! Answers are Asterisk's: `401 Unauthorized` with a fresh nonce to an unauthenticated REGISTER
//! or INVITE, `403 Forbidden` to every Digest answer (nobody registers), `200 OK` to OPTIONS.
//!
//! Over UDP every reply is built to fit the request it answers (optional headers are dropped
//! first; the UDP framework sends nothing larger): a SIP server is otherwise a classic reflector.
//! Over TCP a connection handles at most `sip.max_messages` requests with heads of at most
//! [`parse::MAX_HEAD`] bytes and bodies of at most `sip.max_body_bytes` (the `[sip]` config
//! section, [`SipSection`]).

pub mod parse;

use crate::config::{ServiceSection, SipSection};
use crate::session::{Session, SessionResult};
use crate::udp::Exchange;
use drosera_uplink::event::{CloseReason, Detail, Secret};
use parse::Request;

/// The realm of the challenge (Asterisk's default).
pub const REALM: &str = "asterisk";
/// The server's product, as Asterisk announces itself.
pub const SERVER: &str = "Asterisk PBX 18.20.0";

/// What handling one request produced: its events and its reply (if any).
pub struct Handled {
    pub events: Vec<Detail>,
    pub reply: Option<Vec<u8>>,
}

/// Records `r` and builds the reply (at most `max` bytes; `None` when nothing fits or nothing
/// is due). `server` and `client` are the addresses for the hashcat line. Pure but for the
/// random nonce and tag.
pub fn handle_request(r: &Request<'_>, server: &str, client: &str, max: usize) -> Handled {
    let mut events = vec![Detail::Command { line: format!("{} {}", r.method, r.uri) }];
    let h = |n: &str| r.header(n).unwrap_or_default().to_string();
    let ua = h("user-agent");
    events.push(Detail::Fingerprint {
        kind: "sip-client".into(),
        value: ua.clone(),
        extra: vec![
            ("method".into(), r.method.to_string()),
            ("from".into(), h("from")),
            ("to".into(), h("to")),
            ("contact".into(), h("contact")),
            ("call_id".into(), h("call-id")),
        ],
    });
    if let Some(why) = parse::sipvicious(r) {
        events.push(Detail::Fingerprint {
            kind: "scanner".into(),
            value: "sipvicious".into(),
            extra: vec![("matched".into(), why.into()), ("user_agent".into(), ua.clone())],
        });
    }
    let auth = r.header("authorization").or_else(|| r.header("proxy-authorization"));
    let digest = auth.and_then(parse::parse_digest);
    if let Some(d) = &digest {
        let secret = match parse::hashcat_11400(d, r.method, server, client) {
            Some(line) => Secret::Hash { format: "hashcat-11400".into(), value: line },
            None => Secret::Hash { format: "sip-digest-response".into(), value: d.response.clone() },
        };
        events.push(Detail::Login {
            username: d.username.clone(),
            secret,
            success: false,
            extra: vec![
                ("realm".into(), d.realm.clone()),
                ("method".into(), r.method.to_string()),
                ("uri".into(), d.uri.clone()),
                ("user_agent".into(), ua),
            ],
        });
    }
    let reply = match r.method.to_ascii_uppercase().as_str() {
        "ACK" => None,
        "OPTIONS" => build(
            r,
            "200 OK",
            &[],
            &["Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, REFER, SUBSCRIBE, NOTIFY, INFO, PUBLISH"],
            max,
        ),
        "BYE" | "CANCEL" => build(r, "481 Call/Transaction Does Not Exist", &[], &[], max),
        "REGISTER" | "INVITE" | "SUBSCRIBE" | "MESSAGE" | "NOTIFY" | "PUBLISH" | "REFER" | "INFO" => {
            if auth.is_some() {
                build(r, "403 Forbidden", &[], &[], max)
            } else {
                let nonce = format!("{:08x}", rand::random::<u32>());
                let challenge = format!("WWW-Authenticate: Digest algorithm=MD5, realm=\"{REALM}\", nonce=\"{nonce}\"");
                build(r, "401 Unauthorized", &[&challenge], &[], max)
            }
        }
        _ => build(r, "501 Not Implemented", &[], &[], max),
    };
    Handled { events, reply }
}

/// A response to `r`: the status line, its Via, From, To (with our tag), Call-ID and CSeq,
/// the `must` headers, then `Server` and the `optional` ones, each if it still fits in `max`.
fn build(r: &Request<'_>, status: &str, must: &[&str], optional: &[&str], max: usize) -> Option<Vec<u8>> {
    let mut head = format!("SIP/2.0 {status}\r\n");
    for via in r.all("via") {
        head.push_str(&format!("Via: {via}\r\n"));
    }
    if let Some(f) = r.header("from") {
        head.push_str(&format!("From: {f}\r\n"));
    }
    if let Some(t) = r.header("to") {
        if parse::tag(t).is_some() {
            head.push_str(&format!("To: {t}\r\n"));
        } else {
            head.push_str(&format!("To: {t};tag=as{:08x}\r\n", rand::random::<u32>()));
        }
    }
    for name in ["call-id", "cseq"] {
        if let Some(v) = r.header(name) {
            let shown = if name == "cseq" { "CSeq" } else { "Call-ID" };
            head.push_str(&format!("{shown}: {v}\r\n"));
        }
    }
    for m in must {
        head.push_str(m);
        head.push_str("\r\n");
    }
    const END: &str = "Content-Length: 0\r\n\r\n";
    let server = format!("Server: {SERVER}\r\n");
    for o in std::iter::once(server).chain(optional.iter().map(|o| format!("{o}\r\n"))) {
        if head.len() + o.len() + END.len() <= max {
            head.push_str(&o);
        }
    }
    head.push_str(END);
    (head.len() <= max).then(|| head.into_bytes())
}

/// One UDP datagram: one request, its reply no larger than it.
pub(crate) fn datagram(x: &mut Exchange, _svc: &ServiceSection, data: &[u8]) -> Option<Vec<u8>> {
    // Keep-alives (a bare CRLF) and replies to nobody's request are not requests.
    let r = parse::parse_request(data).ok()?;
    let done = handle_request(&r, &x.local.ip().to_string(), &x.peer.ip().to_string(), data.len());
    for e in done.events {
        x.emit(e);
    }
    done.reply
}

/// One TCP connection: requests one after the other.
pub(crate) async fn handle(session: &mut Session, _svc: &ServiceSection) -> SessionResult<()> {
    let caps: SipSection = session.services().sip;
    let server = session.local.ip().to_string();
    let client = session.peer.ip().to_string();
    for _ in 0..caps.max_messages {
        let mut head = Vec::new();
        loop {
            let line = session.read_line().await?;
            if line.is_empty() {
                if head.is_empty() {
                    continue; // keep-alive CRLFs between messages
                }
                break;
            }
            head.extend_from_slice(&line);
            head.extend_from_slice(b"\r\n");
            if head.len() > parse::MAX_HEAD {
                return Err(CloseReason::LineTooLong);
            }
        }
        head.extend_from_slice(b"\r\n");
        let Ok(r) = parse::parse_request(&head) else {
            session.emit(Detail::Command {
                line: String::from_utf8_lossy(&head).lines().next().unwrap_or_default().into(),
            });
            return Err(CloseReason::ProtocolError);
        };
        let body = r.content_length();
        if body > caps.max_body_bytes {
            return Err(CloseReason::ProtocolError);
        }
        let mut left = body;
        while left > 0 {
            let n = session.peek_some(left).await?.len();
            session.consume(n);
            left -= n;
        }
        let done = handle_request(&r, &server, &client, usize::MAX);
        for e in done.events {
            session.emit(e);
        }
        if let Some(reply) = done.reply {
            session.write_all(&reply).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPTIONS: &[u8] = b"OPTIONS sip:100@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-1\r\n\
        From: \"sipvicious\"<sip:100@1.1.1.1>;tag=3132330131393238\r\nTo: \"sipvicious\"<sip:100@1.1.1.1>\r\n\
        Call-ID: 11\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nUser-Agent: friendly-scanner\r\nAccept: application/sdp\r\n\
        Content-Length: 0\r\n\r\n";

    #[test]
    fn options_is_answered_within_the_request_size_and_sipvicious_is_named() {
        let r = parse::parse_request(OPTIONS).unwrap();
        let done = handle_request(&r, "127.0.0.1", "127.0.0.1", OPTIONS.len());
        let reply = done.reply.unwrap();
        assert!(reply.len() <= OPTIONS.len());
        let text = String::from_utf8(reply).unwrap();
        assert!(text.starts_with("SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-1\r\n"), "{text}");
        assert!(text.contains("Call-ID: 11\r\nCSeq: 1 OPTIONS\r\n"));
        assert!(done.events.iter().any(
            |e| matches!(e, Detail::Fingerprint { kind, value, .. } if kind == "scanner" && value == "sipvicious")
        ));
        // With less room the reply drops its optional headers, then gives up.
        let r = parse::parse_request(OPTIONS).unwrap();
        let small = handle_request(&r, "s", "c", 300).reply.unwrap();
        assert!(small.len() <= 300 && !String::from_utf8_lossy(&small).contains("Allow:"));
        assert!(handle_request(&r, "s", "c", 20).reply.is_none());
    }

    /// nmap's SIPOptions probe gets a reply no larger than it that still names Asterisk
    /// (nmap's `sip-proxy` match on the Server header).
    #[test]
    fn nmaps_probe_is_answered_as_asterisk() {
        let probe = b"OPTIONS sip:nm SIP/2.0\r\nVia: SIP/2.0/UDP nm;branch=foo;rport\r\nFrom: <sip:nm@nm>;tag=root\r\n\
            To: <sip:nm2@nm2>\r\nCall-ID: 50000\r\nCSeq: 42 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\
            Contact: <sip:nm@nm>\r\nAccept: application/sdp\r\n\r\n";
        let r = parse::parse_request(probe).unwrap();
        let reply = handle_request(&r, "s", "c", probe.len()).reply.unwrap();
        assert!(reply.len() <= probe.len());
        assert!(String::from_utf8_lossy(&reply).contains("\r\nServer: Asterisk PBX 18.20.0\r\n"));
    }

    #[test]
    fn register_is_challenged_then_refused_with_the_digest_kept() {
        let first =
            b"REGISTER sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060\r\nFrom: <sip:alice@x>;tag=1\r\n\
            To: <sip:alice@x>\r\nCall-ID: a\r\nCSeq: 1 REGISTER\r\nContact: <sip:alice@10.0.0.1>\r\nExpires: 3600\r\n\
            User-Agent: softphone\r\nContent-Length: 0\r\n\r\n";
        let r = parse::parse_request(first).unwrap();
        let text = String::from_utf8(handle_request(&r, "s", "c", usize::MAX).reply.unwrap()).unwrap();
        assert!(text.starts_with("SIP/2.0 401 Unauthorized\r\n"), "{text}");
        assert!(text.contains("WWW-Authenticate: Digest algorithm=MD5, realm=\"asterisk\", nonce=\""));
        let second = String::from_utf8_lossy(first).replace(
            "Content-Length: 0",
            "Authorization: Digest username=\"alice\",realm=\"asterisk\",nonce=\"1a2b\",uri=\"sip:127.0.0.1\",\
             response=\"00112233445566778899aabbccddeeff\",algorithm=MD5\r\nContent-Length: 0",
        );
        let r = parse::parse_request(second.as_bytes()).unwrap();
        let done = handle_request(&r, "127.0.0.1", "10.0.0.1", usize::MAX);
        assert!(String::from_utf8_lossy(&done.reply.unwrap()).starts_with("SIP/2.0 403 Forbidden\r\n"));
        let login = done.events.iter().find_map(|e| match e {
            Detail::Login { username, secret: Secret::Hash { format, value }, .. } => Some((username, format, value)),
            _ => None,
        });
        let (user, format, line) = login.expect("a login");
        assert_eq!((user.as_str(), format.as_str()), ("alice", "hashcat-11400"));
        assert!(line.starts_with("$sip$*127.0.0.1*10.0.0.1*alice*asterisk*REGISTER*sip*127.0.0.1**1a2b*"), "{line}");
    }
}
