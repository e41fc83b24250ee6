//! SMTP (25, 587): a mail server that looks like an open relay, so spammers show their hand.
//!
//! Open-relay probes never stop: a bot connects, says EHLO, tries `AUTH` with stolen or guessed
//! credentials, sends `MAIL FROM`/`RCPT TO` to a foreign domain and, when that is accepted, a
//! test message (often carrying the relay's address back to the spammer). We record the EHLO,
//! every command (`Command`), every AUTH PLAIN/LOGIN user and password (`Login`, decided by the
//! sensor's login policy), the first recipient of each transaction with the sender and whether
//! relaying was allowed (`Exploit` `smtp-relay-attempt`), and keep each message body, exactly as
//! sent between `DATA` and the final `.` (dot-unstuffed), as a sample (source `smtp-body`).
//! Nothing is delivered. `[smtp] relay` chooses between accepting every recipient (default, so
//! the test mail arrives) and refusing relaying. STARTTLS is not offered (no certificate), so
//! everything stays in clear.
//!
//! The server answers as the persona's mail server ([`Dialect`]): Postfix on Debian (mixed,
//! linux-server), Exim on the iot-router, the IIS SMTP service on windows-server.
//!
//! Bounded: [`MAX_COMMANDS`] per connection, lines by the session's `max_line`, a message by
//! `[smtp] max_message_bytes` (past it the rest is read, not kept, and refused with 552), the
//! sample by the sample area's own cap; protocol errors past [`MAX_ERRORS`] end the session.

use crate::config::{Persona, ServiceSection, SmtpRelay};
use crate::session::{Session, SessionResult};
use base64::Engine;
use drosera_uplink::event::{Detail, Secret};

/// Commands accepted per connection (DATA lines are not commands).
pub const MAX_COMMANDS: usize = 200;
/// Errors before the server hangs up (Postfix's `smtpd_hard_error_limit`).
pub const MAX_ERRORS: usize = 20;
/// Most bytes of one body line handled at once (a longer line is handled in pieces).
const DATA_PIECE: usize = 8 * 1024;

/// The replies that tell one mail server from another.
#[derive(Debug)]
pub struct Dialect {
    pub product: &'static str,
    pub host: &'static str,
    pub ehlo_keywords: &'static [&'static str],
    pub data_go_ahead: &'static str,
    pub queued: &'static str,
    pub bye: &'static str,
    pub auth_ok: &'static str,
    pub auth_failed: &'static str,
    pub unknown: &'static str,
    pub no_tls: &'static str,
}

const POSTFIX: Dialect = Dialect {
    product: "postfix",
    host: "mail",
    ehlo_keywords: &[
        "PIPELINING",
        "SIZE {size}",
        "VRFY",
        "ETRN",
        "AUTH PLAIN LOGIN",
        "ENHANCEDSTATUSCODES",
        "8BITMIME",
        "DSN",
        "SMTPUTF8",
    ],
    data_go_ahead: "354 End data with <CR><LF>.<CR><LF>",
    queued: "250 2.0.0 Ok: queued as {id}",
    bye: "221 2.0.0 Bye",
    auth_ok: "235 2.7.0 Authentication successful",
    auth_failed: "535 5.7.8 Error: authentication failed: authentication failure",
    unknown: "502 5.5.2 Error: command not recognized",
    no_tls: "502 5.5.1 Error: command not implemented",
};

const EXIM: Dialect = Dialect {
    product: "exim",
    host: "gateway",
    ehlo_keywords: &["SIZE {size}", "8BITMIME", "PIPELINING", "AUTH PLAIN LOGIN", "HELP"],
    data_go_ahead: "354 Enter message, ending with \".\" on a line by itself",
    queued: "250 OK id={id}",
    bye: "221 {host} closing connection",
    auth_ok: "235 Authentication succeeded",
    auth_failed: "535 Incorrect authentication data",
    unknown: "500 unrecognized command",
    no_tls: "503 STARTTLS command used when not advertised",
};

const IIS: Dialect = Dialect {
    product: "iis",
    host: "MAIL",
    ehlo_keywords: &[
        "TURN",
        "SIZE {size}",
        "ETRN",
        "PIPELINING",
        "DSN",
        "ENHANCEDSTATUSCODES",
        "8bitmime",
        "VRFY",
        "AUTH LOGIN PLAIN",
    ],
    data_go_ahead: "354 Start mail input; end with <CRLF>.<CRLF>",
    queued: "250 2.6.0 <{id}@MAIL> Queued mail for delivery",
    bye: "221 2.0.0 {host} Service closing transmission channel",
    auth_ok: "235 2.7.0 Authentication successful.",
    auth_failed: "535 5.7.3 Authentication unsuccessful.",
    unknown: "500 5.3.3 Unrecognized command",
    no_tls: "454 4.7.0 TLS not available due to temporary reason",
};

/// The mail server of `persona`.
pub fn dialect(persona: Persona) -> &'static Dialect {
    match persona {
        Persona::Mixed | Persona::LinuxServer => &POSTFIX,
        Persona::IotRouter => &EXIM,
        Persona::WindowsServer => &IIS,
    }
}

/// The greeting (without its line ending) when the config's `banner` is empty.
pub fn default_banner(d: &Dialect, now: time::OffsetDateTime) -> String {
    match d.product {
        "exim" => format!("220 {} ESMTP Exim 4.96 {}", d.host, rfc2822(now)),
        "iis" => {
            format!("220 {} Microsoft ESMTP MAIL Service, Version: 10.0.17763.1 ready at  {}", d.host, rfc2822(now))
        }
        _ => format!("220 {} ESMTP Postfix (Debian/GNU)", d.host),
    }
}

fn rfc2822(now: time::OffsetDateTime) -> String {
    let fmt = time::macros::format_description!(
        "[weekday repr:short], [day padding:none] [month repr:short] [year] [hour]:[minute]:[second] +0000"
    );
    now.format(&fmt).unwrap_or_default()
}

/// A command line split into its upper-cased verb and the rest.
pub fn parse_command(line: &[u8]) -> (String, String) {
    let text = String::from_utf8_lossy(line);
    let text = text.trim();
    let (verb, arg) = text.split_once([' ', '\t']).unwrap_or((text, ""));
    (verb.chars().take(16).collect::<String>().to_ascii_uppercase(), arg.trim().to_string())
}

/// The address of `FROM:<a@b> SIZE=...` or `TO:<a@b>` (`keyword` is `FROM` or `TO`); `None` for
/// a syntax error. The null sender `<>` is `Some("")`.
pub fn parse_path(arg: &str, keyword: &str) -> Option<String> {
    let (k, rest) = arg.split_once(':')?;
    if !k.trim().eq_ignore_ascii_case(keyword) {
        return None;
    }
    let rest = rest.trim_start();
    let addr = if let Some(inner) = rest.strip_prefix('<') {
        inner.split_once('>')?.0
    } else {
        rest.split_whitespace().next().unwrap_or("")
    };
    if addr.len() > 512 || addr.contains(['\r', '\n']) {
        return None;
    }
    Some(addr.to_string())
}

/// Decodes base64 the way a SASL exchange carries it (padding optional).
pub fn b64(data: &str) -> Option<Vec<u8>> {
    let s = data.trim();
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(s.trim_end_matches('=')))
        .ok()
}

/// `AUTH PLAIN`'s `authzid \0 authcid \0 password`.
pub fn decode_plain(data: &str) -> Option<(String, String, String)> {
    let raw = b64(data)?;
    let mut parts = raw.splitn(3, |&b| b == 0);
    let authz = parts.next()?;
    let user = parts.next()?;
    let pass = parts.next()?;
    let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    Some((s(authz), s(user), s(pass)))
}

/// What a piece of the message body is (`at_start`: the piece begins a line).
#[derive(Debug, PartialEq, Eq)]
pub enum BodyPiece<'a> {
    /// The final `.` line: the message is complete.
    End,
    /// Message bytes (a leading stuffed dot removed).
    Content(&'a [u8]),
}

/// Classifies one piece of the body as read from the wire.
pub fn body_piece(piece: &[u8], at_start: bool) -> BodyPiece<'_> {
    if at_start && (piece == b".\r\n" || piece == b".\n" || piece == b".") {
        return BodyPiece::End;
    }
    match piece.strip_prefix(b".") {
        Some(rest) if at_start => BodyPiece::Content(rest),
        _ => BodyPiece::Content(piece),
    }
}

/// The `Subject:` of a message head, if it is in `head`.
pub fn subject(head: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(head);
    for line in text.split('\n').take(200) {
        let line = line.trim_end_matches('\r');
        if line.is_empty() {
            break;
        }
        if let (Some(name), Some(value)) = (line.get(..8), line.get(8..)) {
            if name.eq_ignore_ascii_case("subject:") {
                return Some(value.trim().chars().take(200).collect());
            }
        }
    }
    None
}

/// One mail transaction.
#[derive(Default)]
struct Transaction {
    from: Option<String>,
    rcpts: Vec<String>,
}

/// The AUTH exchange a client is in the middle of.
enum Auth {
    Plain,
    LoginUser,
    LoginPassword(String),
}

pub(crate) async fn handle(session: &mut Session, svc: &ServiceSection) -> SessionResult<()> {
    let d = dialect(session.persona());
    let now = time::OffsetDateTime::now_utc();
    let banner = if svc.banner.is_empty() { default_banner(d, now) } else { svc.banner.clone() };
    let relay = session.services().smtp.relay;
    let max_message = session.services().smtp.max_message_bytes;
    session.write_all(format!("{banner}\r\n").as_bytes()).await?;
    let mut helo = String::new();
    let mut authed: Option<String> = None;
    let mut tx = Transaction::default();
    let mut errors = 0usize;
    let mut messages = 0u64;
    for _ in 0..MAX_COMMANDS {
        if errors >= MAX_ERRORS {
            session.write_all(format!("421 4.7.0 {} Error: too many errors\r\n", d.host).as_bytes()).await?;
            return Ok(());
        }
        let line = session.read_line().await?;
        let (verb, arg) = parse_command(&line);
        if verb == "AUTH" {
            let mech = arg.split_whitespace().next().unwrap_or("").to_string();
            session.emit(Detail::Command { line: format!("AUTH {mech}") });
        } else {
            session.emit(Detail::Command { line: String::from_utf8_lossy(&line).into_owned() });
        }
        let reply: String = match verb.as_str() {
            "EHLO" | "HELO" if arg.is_empty() => {
                errors += 1;
                format!("501 Syntax: {verb} hostname")
            }
            "EHLO" => {
                helo = arg.chars().take(256).collect();
                tx = Transaction::default();
                let first = match d.product {
                    "postfix" => d.host.to_string(),
                    _ => format!("{} Hello {} [{}]", d.host, helo, session.peer.ip()),
                };
                let mut lines = vec![first];
                lines.extend(d.ehlo_keywords.iter().map(|k| k.replace("{size}", &max_message.to_string())));
                if d.product == "iis" {
                    lines.push("OK".into());
                }
                let n = lines.len();
                lines
                    .iter()
                    .enumerate()
                    .map(|(i, l)| format!("250{}{l}", if i + 1 == n { ' ' } else { '-' }))
                    .collect::<Vec<_>>()
                    .join("\r\n")
            }
            "HELO" => {
                helo = arg.chars().take(256).collect();
                tx = Transaction::default();
                match d.product {
                    "postfix" => format!("250 {}", d.host),
                    _ => format!("250 {} Hello {} [{}]", d.host, helo, session.peer.ip()),
                }
            }
            "AUTH" if authed.is_some() => "503 5.5.1 Error: already authenticated".into(),
            "AUTH" => {
                let mut words = arg.split_whitespace();
                let mech = words.next().unwrap_or("").to_ascii_uppercase();
                let initial = words.next().map(str::to_string);
                let step = match mech.as_str() {
                    "PLAIN" => Auth::Plain,
                    "LOGIN" => Auth::LoginUser,
                    _ => {
                        errors += 1;
                        session
                            .write_all(b"535 5.7.8 Error: authentication failed: Invalid authentication mechanism\r\n")
                            .await?;
                        continue;
                    }
                };
                match sasl(session, step, initial).await? {
                    Some((user, pass, authz)) => {
                        let ok = session.check_login(&user, &pass);
                        let mut extra = vec![("method".to_string(), format!("smtp-{}", mech.to_ascii_lowercase()))];
                        if !authz.is_empty() {
                            extra.push(("authzid".into(), authz));
                        }
                        if !helo.is_empty() {
                            extra.push(("helo".into(), helo.clone()));
                        }
                        session.emit(Detail::Login {
                            username: user.clone(),
                            secret: Secret::Password(pass),
                            success: ok,
                            extra,
                        });
                        if ok {
                            authed = Some(user);
                            d.auth_ok.into()
                        } else {
                            errors += 1;
                            d.auth_failed.into()
                        }
                    }
                    None => {
                        errors += 1;
                        "501 5.7.0 Authentication aborted".into()
                    }
                }
            }
            "MAIL" if tx.from.is_some() => {
                errors += 1;
                "503 5.5.1 Error: nested MAIL command".into()
            }
            "MAIL" => match parse_path(&arg, "FROM") {
                Some(from) => {
                    tx.from = Some(from);
                    "250 2.1.0 Ok".into()
                }
                None => {
                    errors += 1;
                    "501 5.1.7 Bad sender address syntax".into()
                }
            },
            "RCPT" if tx.from.is_none() => {
                errors += 1;
                "503 5.5.1 Error: need MAIL command".into()
            }
            "RCPT" => match parse_path(&arg, "TO") {
                Some(rcpt) if !rcpt.is_empty() => {
                    let open = relay == SmtpRelay::Open;
                    if tx.rcpts.is_empty() {
                        let mut extra = vec![
                            ("from".to_string(), tx.from.clone().unwrap_or_default()),
                            ("rcpt".to_string(), rcpt.clone()),
                            ("relay".to_string(), if open { "accepted".into() } else { "refused".into() }),
                        ];
                        if !helo.is_empty() {
                            extra.push(("helo".into(), helo.clone()));
                        }
                        if let Some(u) = &authed {
                            extra.push(("auth_user".into(), u.clone()));
                        }
                        session.emit(Detail::Exploit { name: "smtp-relay-attempt".into(), cve: String::new(), extra });
                    }
                    if open {
                        if tx.rcpts.len() < 100 {
                            tx.rcpts.push(rcpt);
                            "250 2.1.5 Ok".into()
                        } else {
                            "452 4.5.3 Error: too many recipients".into()
                        }
                    } else {
                        errors += 1;
                        format!("554 5.7.1 <{rcpt}>: Relay access denied")
                    }
                }
                _ => {
                    errors += 1;
                    "501 5.1.3 Bad recipient address syntax".into()
                }
            },
            "DATA" if tx.from.is_none() => {
                errors += 1;
                "503 5.5.1 Error: need RCPT command".into()
            }
            "DATA" if tx.rcpts.is_empty() => {
                errors += 1;
                "554 5.5.1 Error: no valid recipients".into()
            }
            "DATA" => {
                session.write_all(format!("{}\r\n", d.data_go_ahead).as_bytes()).await?;
                let complete = receive_body(session, max_message).await?;
                tx = Transaction::default();
                messages += 1;
                if complete {
                    let id = format!("{:010X}", (session.id.wrapping_mul(0x9E37_79B9) ^ messages) & 0xff_ffff_ffff);
                    d.queued.replace("{id}", &id)
                } else {
                    "552 5.3.4 Error: message file too big".into()
                }
            }
            "BDAT" => d.unknown.into(),
            "RSET" => {
                tx = Transaction::default();
                "250 2.0.0 Ok".into()
            }
            "NOOP" => "250 2.0.0 Ok".into(),
            "VRFY" => format!("252 2.0.0 {}", arg.chars().take(256).collect::<String>()),
            "STARTTLS" => d.no_tls.into(),
            "QUIT" => {
                session.write_all(format!("{}\r\n", d.bye.replace("{host}", d.host)).as_bytes()).await?;
                return Ok(());
            }
            // Postfix hangs up on HTTP and proxy requests sent to a mail port.
            "GET" | "POST" | "CONNECT" | "HEAD" | "PUT" if d.product == "postfix" => {
                session.write_all(b"221 2.7.0 Error: I can break rules, too. Goodbye.\r\n").await?;
                return Ok(());
            }
            _ => {
                errors += 1;
                d.unknown.into()
            }
        };
        session.write_all(format!("{reply}\r\n").as_bytes()).await?;
    }
    Ok(())
}

/// Runs a SASL exchange: `(user, password, authzid)`, or `None` when the client aborted with `*`
/// or sent something that is not base64.
async fn sasl(
    session: &mut Session,
    mut step: Auth,
    mut initial: Option<String>,
) -> SessionResult<Option<(String, String, String)>> {
    loop {
        let data = match initial.take() {
            Some(i) => i,
            None => {
                let prompt: &[u8] = match step {
                    Auth::Plain => b"334 \r\n",
                    Auth::LoginUser => b"334 VXNlcm5hbWU6\r\n",
                    Auth::LoginPassword(_) => b"334 UGFzc3dvcmQ6\r\n",
                };
                session.write_all(prompt).await?;
                String::from_utf8_lossy(&session.read_line().await?).into_owned()
            }
        };
        if data.trim() == "*" {
            return Ok(None);
        }
        step = match step {
            Auth::Plain => return Ok(decode_plain(&data).map(|(a, u, p)| (u, p, a))),
            Auth::LoginUser => match b64(&data) {
                Some(u) => Auth::LoginPassword(String::from_utf8_lossy(&u).into_owned()),
                None => return Ok(None),
            },
            Auth::LoginPassword(user) => {
                return Ok(b64(&data).map(|p| (user, String::from_utf8_lossy(&p).into_owned(), String::new())))
            }
        };
    }
}

/// Reads a message body up to the final `.` line into a `smtp-body` sample; false when it was
/// larger than `max_message` (the rest was read and dropped).
async fn receive_body(session: &mut Session, max_message: u64) -> SessionResult<bool> {
    let mut capture = session.capture("smtp-body");
    let mut at_start = true;
    let mut too_big = false;
    let result: SessionResult<()> = async {
        loop {
            let chunk = session.peek_some(DATA_PIECE).await?;
            let piece_len = chunk.iter().position(|&b| b == b'\n').map_or(chunk.len(), |p| p + 1);
            // A lone "." (or ".\r") at a line start may be the end mark still arriving: wait for
            // its line ending before deciding.
            if at_start && piece_len == chunk.len() && chunk.len() < 3 && chunk.first() == Some(&b'.') {
                let mut rest = Vec::with_capacity(3);
                rest.extend_from_slice(chunk);
                session.consume(rest.len());
                while !rest.ends_with(b"\n") && rest.len() < 3 {
                    let more = session.peek_some(1).await?;
                    rest.push(more[0]);
                    session.consume(1);
                }
                match body_piece(&rest, true) {
                    BodyPiece::End => return Ok(()),
                    BodyPiece::Content(c) => add(&mut capture, c, max_message, &mut too_big),
                }
                at_start = rest.ends_with(b"\n");
                continue;
            }
            let piece = &chunk[..piece_len];
            match body_piece(piece, at_start) {
                BodyPiece::End => {
                    session.consume(piece_len);
                    return Ok(());
                }
                BodyPiece::Content(c) => add(&mut capture, c, max_message, &mut too_big),
            }
            at_start = piece.ends_with(b"\n");
            session.consume(piece_len);
        }
    }
    .await;
    if result.is_err() || too_big {
        capture.mark_truncated();
    }
    let name = subject(capture.kept()).unwrap_or_default();
    session.emit_capture(capture, &name);
    result.map(|()| !too_big)
}

fn add(capture: &mut crate::capture::PayloadCapture, piece: &[u8], max: u64, too_big: &mut bool) {
    if capture.size() + piece.len() as u64 > max {
        *too_big = true;
    }
    if !*too_big {
        capture.update(piece);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_paths_and_sasl() {
        assert_eq!(
            parse_command(b"mail FROM:<a@b.example> SIZE=10"),
            ("MAIL".into(), "FROM:<a@b.example> SIZE=10".into())
        );
        assert_eq!(parse_path("FROM:<a@b.example> SIZE=10", "FROM"), Some("a@b.example".into()));
        assert_eq!(parse_path("FROM: <>", "FROM"), Some(String::new()));
        assert_eq!(parse_path("To:x@y.example", "TO"), Some("x@y.example".into()));
        assert_eq!(parse_path("TO:<x@y", "TO"), None);
        assert_eq!(parse_path("FROM:<a>", "TO"), None);
        assert_eq!(decode_plain("AGFkbWluAGh1bnRlcjI="), Some((String::new(), "admin".into(), "hunter2".into())));
        assert_eq!(decode_plain("AGFkbWluAGh1bnRlcjI"), Some((String::new(), "admin".into(), "hunter2".into())));
        assert_eq!(decode_plain("!!"), None);
        assert_eq!(b64("dXNlcg==").as_deref(), Some(&b"user"[..]));
    }

    #[test]
    fn body_pieces_unstuff_and_end() {
        assert_eq!(body_piece(b".\r\n", true), BodyPiece::End);
        assert_eq!(body_piece(b".\r\n", false), BodyPiece::Content(b".\r\n"));
        assert_eq!(body_piece(b"..x\r\n", true), BodyPiece::Content(b".x\r\n"));
        assert_eq!(body_piece(b"a.\r\n", true), BodyPiece::Content(b"a.\r\n"));
        assert_eq!(
            subject(b"From: a\r\nSubject: test relay 1.2.3.4\r\n\r\nSubject: no"),
            Some("test relay 1.2.3.4".into())
        );
        assert_eq!(subject(b"From: a\r\n\r\nSubject: body"), None);
    }

    #[test]
    fn banners_per_persona() {
        let t = time::macros::datetime!(2024-03-04 05:06:07 UTC);
        assert_eq!(default_banner(dialect(Persona::Mixed), t), "220 mail ESMTP Postfix (Debian/GNU)");
        assert_eq!(
            default_banner(dialect(Persona::IotRouter), t),
            "220 gateway ESMTP Exim 4.96 Mon, 4 Mar 2024 05:06:07 +0000"
        );
        assert!(default_banner(dialect(Persona::WindowsServer), t)
            .starts_with("220 MAIL Microsoft ESMTP MAIL Service, Version: 10.0.17763.1 ready at  Mon"));
    }

    #[test]
    fn hostile_input_never_panics() {
        for b in crate::protocols::hostile::random_inputs(0x25_0587_5317_0001, 20_000, 120, true) {
            let (verb, arg) = parse_command(&b);
            let _ = parse_path(&arg, "FROM");
            let _ = parse_path(&arg, &verb);
            let _ = decode_plain(&arg);
            let _ = b64(&arg);
            let _ = subject(&b);
        }
        for b in crate::protocols::hostile::random_inputs(0x25_0587_5317_0002, 20_000, 64, false) {
            let _ = body_piece(&b, true);
            let _ = body_piece(&b, false);
            let _ = parse_command(&b);
            let _ = subject(&b);
        }
    }
}
