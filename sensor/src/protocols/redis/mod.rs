//! Redis (6379): an exposed, password-less Redis, the cryptominer campaigns' favourite door.
//!
//! Attackers on 6379 write a cron job or an SSH key to disk through Redis's own persistence
//! (`CONFIG SET dir /var/spool/cron`, `CONFIG SET dbfilename root`, `SET x "\n*/1 * * * *
//! curl ...|sh\n"`, `SAVE`), turn the server into a replica of a rogue master that sends a
//! malicious module (`SLAVEOF`/`REPLICAOF`, then `MODULE LOAD ./exp.so` and `system.exec`), or
//! escape the Lua sandbox (CVE-2022-0543). We speak RESP and inline commands, record every
//! command (`Command`), every `AUTH` password (`Login`, decided by the sensor's login policy),
//! each of those attack steps as an `Exploit` (what was written where, which master, which
//! module), every URL the planted shell text would fetch (`DownloadOffered`), and keep the values
//! that look like payloads (cron lines, SSH keys, scripts, web shells, binaries) as samples
//! (source `redis`). Nothing is written, loaded, run or fetched, and no master is ever dialled.
//!
//! Layout: [`resp`] parses and encodes the wire format, [`server`] answers commands (a pure
//! function over a small [`server::Dataset`]); this file moves bytes between them and the
//! session. Bounded: [`MAX_COMMANDS`] per connection; arguments up to the session's `max_line`
//! are buffered (at most [`MAX_BUFFERED`] per command), a longer one is streamed into the
//! sample area without being held; the dataset of each source address is capped
//! ([`server::MAX_KEYS`], [`server::MAX_DATA_BYTES`]) and at most `memory.service_state_sources`
//! of them are kept (see [`per_source`](super::per_source)).

pub mod resp;
pub mod server;

use crate::config::ServiceSection;
use crate::session::{Session, SessionResult};
use drosera_uplink::event::{CloseReason, Detail, Secret};
use resp::{RespError, Start};
use server::{Conn, Dataset};

/// Commands served per connection.
pub const MAX_COMMANDS: usize = 500;
/// Bytes of small arguments buffered per command; past it further arguments are read and
/// dropped (recorded as their size).
pub const MAX_BUFFERED: usize = 64 * 1024;
/// Bytes of each argument shown in a `Command` event.
const SHOWN_ARG: usize = 1024;

/// The datasets of the source addresses that talked to the emulated Redis.
pub type Memory = super::per_source::PerSource<Dataset>;

pub(crate) async fn handle(session: &mut Session, svc: &ServiceSection) -> SessionResult<()> {
    let flavor = server::flavor(session.persona());
    let version = svc.banner_or(flavor.version).to_string();
    let src = session.peer.ip();
    let mut data = session.services().redis.load(src);
    let run_id = {
        use sha2::Digest;
        let h = sha2::Sha256::digest(format!("{}{}", flavor.build_id, session.local.ip()).as_bytes());
        hex::encode(h)[..40].to_string()
    };
    let mut conn = Conn { id: 3 + session.id % 100_000, ..Conn::default() };
    for _ in 0..MAX_COMMANDS {
        let args = match read_command(session).await? {
            Ok(Some(args)) => args,
            Ok(None) => continue,
            Err(e) => {
                session.emit(Detail::Command { line: format!("(protocol error: {e})") });
                session.write_all(&resp::error(&format!("ERR {e}"))).await?;
                return Err(CloseReason::ProtocolError);
            }
        };
        let cmd = String::from_utf8_lossy(&args[0]).to_ascii_uppercase();
        let auth = match cmd.as_str() {
            "AUTH" => Some(1),
            "HELLO" => args.iter().position(|a| a.eq_ignore_ascii_case(b"AUTH")).filter(|&i| i >= 2).map(|i| i + 1),
            _ => None,
        };
        if let Some(at) = auth {
            session.emit(Detail::Command { line: resp::command_line(&args[..at], SHOWN_ARG) });
            if let Some(refusal) = login(session, flavor.major, &cmd, &args[at..]) {
                session.write_all(&refusal).await?;
                continue;
            }
            if cmd == "AUTH" {
                session.write_all(&resp::simple("OK")).await?;
                continue;
            }
        } else {
            session.emit(Detail::Command { line: resp::command_line(&args, SHOWN_ARG) });
        }
        let now_s = drosera_uplink::now_ms().max(0) as u64 / 1000;
        let out = server::execute(flavor, &version, &mut data, &mut conn, &args, now_s, &run_id);
        for exploit in out.exploits {
            session.emit(exploit);
        }
        for (name, kind, value) in out.payloads {
            tracing::debug!(session = session.id, kind, name = %name, "redis payload");
            let mut capture = session.capture("redis");
            capture.update(&value);
            session.emit_capture(capture, &name);
        }
        for text in out.shell_text {
            for (tool, url) in super::dropper::downloads(&text) {
                session.emit(Detail::DownloadOffered { url, tool });
            }
        }
        if out.changed {
            session.services().redis.store(src, data.clone());
        }
        session.write_all(&out.reply).await?;
        if out.close {
            return Ok(());
        }
    }
    Ok(())
}

/// Decides an `AUTH` (or `HELLO ... AUTH`) with the login policy and records it. `creds` is
/// `[password]` or `[user, password]`. `None`: let the client in; otherwise the error to send.
fn login(session: &Session, major: u8, cmd: &str, creds: &[Vec<u8>]) -> Option<Vec<u8>> {
    let (user, password) = match creds {
        [p] if cmd == "AUTH" => ("default".to_string(), String::from_utf8_lossy(p).into_owned()),
        [u, p] if major >= 6 => (String::from_utf8_lossy(u).into_owned(), String::from_utf8_lossy(p).into_owned()),
        [u, p, ..] if cmd == "HELLO" => {
            (String::from_utf8_lossy(u).into_owned(), String::from_utf8_lossy(p).into_owned())
        }
        _ => {
            return Some(resp::error(&format!(
                "ERR wrong number of arguments for '{}' command",
                cmd.to_ascii_lowercase()
            )))
        }
    };
    let success = session.check_login(&user, &password);
    session.emit(Detail::Login {
        username: user,
        secret: Secret::Password(password),
        success,
        extra: vec![("method".into(), if cmd == "AUTH" { "auth".into() } else { "hello-auth".into() })],
    });
    match (success, major) {
        (true, _) => None,
        (false, 6..) => Some(resp::error("WRONGPASS invalid username-password pair or user is disabled.")),
        (false, _) => Some(resp::error("ERR invalid password")),
    }
}

/// Reads one command: `Ok(None)` for an empty line, `Err` for a protocol error (answered, then
/// the connection closes, as Redis does).
async fn read_command(session: &mut Session) -> SessionResult<Result<Option<Vec<Vec<u8>>>, RespError>> {
    let line = session.read_line().await?;
    let count = match resp::parse_start(&line) {
        Ok(Start::Empty) => return Ok(Ok(None)),
        Ok(Start::Inline(args)) => return Ok(Ok(Some(args))),
        Ok(Start::Multibulk(n)) => n,
        Err(e) => return Ok(Err(e)),
    };
    let mut args: Vec<Vec<u8>> = Vec::with_capacity(count.min(16));
    let mut buffered = 0usize;
    for _ in 0..count {
        let header = session.read_line().await?;
        let len = match resp::parse_bulk_len(&header) {
            Ok(len) => len,
            Err(e) => return Ok(Err(e)),
        };
        if len as usize <= session.limits.max_line && buffered + len as usize <= MAX_BUFFERED {
            let mut arg = vec![0u8; len as usize];
            session.read_exact(&mut arg).await?;
            skip_crlf(session).await?;
            buffered += arg.len();
            args.push(arg);
        } else if len as usize > session.limits.max_line {
            args.push(stream_arg(session, &args, len).await?);
        } else {
            skip(session, len + 2, None).await?;
            args.push(format!("({len} bytes not kept)").into_bytes());
        }
    }
    Ok(Ok(Some(args)))
}

/// Streams one long argument into a sample (named after the command's key) without holding it,
/// and returns what stands for it in the command line.
async fn stream_arg(session: &mut Session, before: &[Vec<u8>], len: u64) -> SessionResult<Vec<u8>> {
    let name = match before {
        [_, key, ..] => String::from_utf8_lossy(&key[..key.len().min(256)]).into_owned(),
        [cmd] => String::from_utf8_lossy(&cmd[..cmd.len().min(64)]).into_owned(),
        [] => String::new(),
    };
    let mut capture = session.capture("redis");
    let r = skip(session, len, Some(&mut capture)).await;
    if r.is_err() {
        capture.mark_truncated();
    }
    session.emit_capture(capture, &name);
    r?;
    skip_crlf(session).await?;
    Ok(format!("({len} bytes, kept as a sample)").into_bytes())
}

/// Reads and drops `n` bytes (into `capture` when given).
async fn skip(
    session: &mut Session,
    mut n: u64,
    mut capture: Option<&mut crate::capture::PayloadCapture>,
) -> SessionResult<()> {
    while n > 0 {
        let chunk = session.peek_some(n.min(64 * 1024) as usize).await?;
        let got = chunk.len();
        if let Some(c) = capture.as_deref_mut() {
            c.update(chunk);
        }
        session.consume(got);
        n -= got as u64;
    }
    Ok(())
}

/// The `\r\n` after a bulk string (Redis does not check the two bytes either).
async fn skip_crlf(session: &mut Session) -> SessionResult<()> {
    let mut crlf = [0u8; 2];
    session.read_exact(&mut crlf).await
}
