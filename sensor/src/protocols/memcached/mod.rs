//! memcached (11211 tcp, and udp when `transport` says so): the text protocol of a memcached
//! 1.6 left open to the internet. Every command is recorded with its keys (`Command`), stored
//! values as payloads (hashed, prefix kept, bounded by `memcached.max_value_bytes`), and `stats`, `version`
//! and the other probes are answered as Debian's memcached 1.6.18 would, with an empty cache.
//!
//! WHY: an open memcached is probed by scanners (`stats`, `version`), raided for cached
//! sessions (`get`), and abused as a DDoS amplifier over UDP (a tiny `stats` or `get` for a big
//! value, with a forged source). The UDP side therefore speaks the 8-byte frame header but
//! answers, like every UDP service here, with at most as many bytes as it was sent: a reply is
//! cut to whole lines that fit (the UDP framework refuses anything larger anyway). Real
//! memcached turned UDP off by default for that reason; so does this one (`transport`).
//!
//! Bounded by the `[memcached]` config section ([`MemcachedSection`]): `max_commands` per
//! connection, a value by `max_value_bytes` (a larger one is refused as memcached does and its
//! bytes read and dropped, within the session's byte cap); lines by the session's `max_line`.
//! Over UDP a value is what fits in the datagram.

pub mod parse;

use crate::capture::PayloadCapture;
use crate::config::{MemcachedSection, ServiceSection};
use crate::session::{Session, SessionResult};
use crate::udp::Exchange;
use drosera_uplink::event::Detail;
use parse::Command;
use std::sync::OnceLock;
use std::time::Instant;

/// The version every reply announces (Debian 12's memcached).
pub const VERSION: &str = "1.6.18";
/// Unknown or malformed commands before the server hangs up.
const MAX_ERRORS: usize = 20;

/// When the emulated server "started" (the sensor's first memcached exchange), for `uptime`.
fn started() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

/// The reply to one command (empty: none, as for `noreply`). Pure but for the clock.
pub fn response(cmd: &Command<'_>) -> Vec<u8> {
    if cmd.noreply {
        return Vec::new();
    }
    let text: String = match cmd.name.as_str() {
        "get" | "gets" | "gat" | "gats" => "END\r\n".into(),
        n if parse::is_storage(n) => "STORED\r\n".into(),
        "delete" | "incr" | "decr" | "touch" => "NOT_FOUND\r\n".into(),
        "version" => format!("VERSION {VERSION}\r\n"),
        "flush_all" | "verbosity" => "OK\r\n".into(),
        "stats" => match cmd.args.first() {
            None => stats(),
            Some(&"settings") => settings(),
            Some(&"items" | &"slabs" | &"sizes" | &"conns") => "END\r\n".into(),
            Some(_) => "ERROR\r\n".into(),
        },
        "quit" => String::new(),
        _ => "ERROR\r\n".into(),
    };
    text.into_bytes()
}

/// `stats` as memcached 1.6 starts it (pid, uptime, time, version first: what nmap matches).
fn stats() -> String {
    let uptime = started().elapsed().as_secs() + 3_412_887;
    let now = drosera_uplink::now_ms() / 1000;
    let mut s = format!(
        "STAT pid 732\r\nSTAT uptime {uptime}\r\nSTAT time {now}\r\nSTAT version {VERSION}\r\n\
         STAT libevent 2.1.12-stable\r\nSTAT pointer_size 64\r\nSTAT rusage_user 412.118204\r\n\
         STAT rusage_system 733.480112\r\nSTAT max_connections 1024\r\nSTAT curr_connections 2\r\n\
         STAT total_connections 18234\r\n"
    );
    for (k, v) in [
        ("cmd_get", "92117"),
        ("cmd_set", "4410"),
        ("get_hits", "88013"),
        ("get_misses", "4104"),
        ("bytes", "0"),
        ("curr_items", "0"),
        ("total_items", "4410"),
        ("evictions", "0"),
        ("limit_maxbytes", "67108864"),
        ("threads", "4"),
    ] {
        s.push_str(&format!("STAT {k} {v}\r\n"));
    }
    s.push_str("END\r\n");
    s
}

fn settings() -> String {
    "STAT maxbytes 67108864\r\nSTAT maxconns 1024\r\nSTAT tcpport 11211\r\nSTAT udpport 0\r\n\
     STAT verbosity 0\r\nSTAT item_size_max 1048576\r\nEND\r\n"
        .into()
}

/// The command line as recorded: the line itself, lossy UTF-8.
fn command_event(line: &[u8]) -> Detail {
    Detail::Command { line: String::from_utf8_lossy(line).into_owned() }
}

/// One TCP connection.
pub(crate) async fn handle(session: &mut Session, _svc: &ServiceSection) -> SessionResult<()> {
    let caps: MemcachedSection = session.services().memcached;
    let mut errors = 0;
    for _ in 0..caps.max_commands {
        let line = session.read_line().await?;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        session.emit(command_event(&line));
        let cmd = match parse::parse_line(&line) {
            Ok(c) => c,
            Err(e) => {
                errors += 1;
                let reply: &[u8] = match e {
                    parse::ParseError::BadLength => b"CLIENT_ERROR bad command line format\r\n",
                    _ => b"ERROR\r\n",
                };
                session.write_all(reply).await?;
                if errors >= MAX_ERRORS {
                    return Ok(());
                }
                continue;
            }
        };
        if let Some(len) = cmd.value_len {
            if len > caps.max_value_bytes {
                // memcached swallows the value and refuses it; the session's byte cap bounds this.
                skip(session, len.saturating_add(2)).await?;
                session.write_all(b"SERVER_ERROR object too large for cache\r\n").await?;
                continue;
            }
            let mut capture = PayloadCapture::new(session.limits.max_payload);
            read_value(session, len, &mut capture).await?;
            let key = cmd.keys.first().copied().unwrap_or_default();
            session.emit(capture.finish(key).payload);
        }
        if cmd.name == "quit" {
            return Ok(());
        }
        let reply = response(&cmd);
        if !reply.is_empty() {
            session.write_all(&reply).await?;
        }
    }
    Ok(())
}

/// Reads a value of `len` bytes and its CRLF into `capture`.
async fn read_value(session: &mut Session, len: u64, capture: &mut PayloadCapture) -> SessionResult<()> {
    let mut left = len;
    while left > 0 {
        let chunk = session.peek_some(left.min(8192) as usize).await?;
        let n = chunk.len();
        capture.update(chunk);
        session.consume(n);
        left -= n as u64;
    }
    skip(session, 2).await
}

/// Reads and drops `n` bytes.
async fn skip(session: &mut Session, n: u64) -> SessionResult<()> {
    let mut left = n;
    while left > 0 {
        let got = session.peek_some(left.min(8192) as usize).await?.len();
        session.consume(got);
        left -= got as u64;
    }
    Ok(())
}

/// One UDP datagram: the frame header, one command (and its value), the reply cut to fit.
pub(crate) fn datagram(x: &mut Exchange, _svc: &ServiceSection, data: &[u8]) -> Option<Vec<u8>> {
    let (header, text) = parse::udp_frame(data)?;
    let (line, rest) = parse::split_line(text).unwrap_or((text, &[]));
    x.emit(command_event(line));
    let cmd = parse::parse_line(line).ok()?;
    if let Some(len) = cmd.value_len {
        let value = &rest[..rest.len().min(usize::try_from(len).unwrap_or(usize::MAX))];
        let mut capture = PayloadCapture::new(4096);
        capture.update(value);
        if (value.len() as u64) < len {
            capture.mark_truncated();
        }
        let key = cmd.keys.first().copied().unwrap_or_default();
        x.emit(capture.finish(key).payload);
    }
    parse::udp_reply(header.request_id, &response(&cmd), data.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_starts_as_nmap_expects_and_probes_are_answered() {
        let s = String::from_utf8(response(&parse::parse_line(b"stats").unwrap())).unwrap();
        assert!(s.starts_with("STAT pid 732\r\nSTAT uptime "), "{s}");
        assert!(s.contains("STAT version 1.6.18\r\n") && s.ends_with("END\r\n"));
        assert_eq!(response(&parse::parse_line(b"version").unwrap()), b"VERSION 1.6.18\r\n");
        assert_eq!(response(&parse::parse_line(b"get a b").unwrap()), b"END\r\n");
        assert_eq!(response(&parse::parse_line(b"set a 0 0 1").unwrap()), b"STORED\r\n");
        assert!(response(&parse::parse_line(b"set a 0 0 1 noreply").unwrap()).is_empty());
        assert_eq!(response(&parse::parse_line(b"bogus").unwrap()), b"ERROR\r\n");
    }
}
