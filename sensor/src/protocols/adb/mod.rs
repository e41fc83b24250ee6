//! ADB (5555): an Android device with its debug bridge open to the network, and no auth.
//!
//! TV boxes and phones with `adb tcpip 5555` left on are a main channel for miner and
//! Mirai-variant droppers: a bot connects (`CNXN`), opens `shell:cd /data/local/tmp; wget
//! http://.../x; chmod 777 x; ./x` and often pushes the binary itself (`adb push`, the sync
//! protocol). We answer the handshake with the persona's device identity (what `adb devices -l`
//! and nmap show), record the client's identity string (`Fingerprint` `adb-host`), every shell
//! command (`Command`, from `shell:`/`exec:` services and interactive shells) with the URLs it
//! would fetch (`DownloadOffered`), every other service opened (`Command`), and keep every pushed
//! file as a sample named by its device path (source `adb-push`). `AUTH` is answered as a
//! device with auth disabled does (it connects). Nothing runs: commands get canned output; port
//! forwards (`tcp:`, `localabstract:`) are refused, so the sensor never connects anywhere.
//!
//! Layout: [`wire`] (message headers), [`sync`] (the push/pull protocol), [`shell`] (the device,
//! its services and canned output); this file keeps the streams. Bounded: [`MAX_MESSAGES`] per
//! connection, [`MAX_STREAMS`] open at once, payloads by [`wire::MAX_PAYLOAD`] (handshake and
//! `OPEN` payloads by [`MAX_SMALL`]) and read in pieces, never whole; shell lines by the
//! session's `max_line`; pushed files by the sample area's cap and the session's byte cap.
//! The URL extraction is the small local one in `protocols::dropper`; it moves to the shared
//! shell module when that lands.

pub mod shell;
pub mod sync;
pub mod wire;

use crate::capture::PayloadCapture;
use crate::config::ServiceSection;
use crate::session::{Session, SessionResult};
use drosera_uplink::event::{CloseReason, Detail};
use shell::{Device, Service};
use sync::{SyncEvent, SyncParser};
use wire::{Header, A_AUTH, A_CLSE, A_CNXN, A_OKAY, A_OPEN, A_VERSION, A_WRTE, MAX_PAYLOAD};

/// Messages handled per connection.
pub const MAX_MESSAGES: usize = 4096;
/// Streams open at once.
pub const MAX_STREAMS: usize = 8;
/// Largest `CNXN`/`AUTH`/`OPEN` payload (identity strings, keys and service names are short).
pub const MAX_SMALL: u32 = 4096;
/// Bytes of a `WRTE` payload read at a time.
const PIECE: usize = 16 * 1024;
/// Directories a `STAT` finds (so `adb push FILE /data/local/tmp/` works as on a device).
const DIRS: &[&str] = &[
    "/",
    "/data",
    "/data/local",
    "/data/local/tmp",
    "/sdcard",
    "/system",
    "/system/bin",
    "/tmp",
    "/storage/emulated/0",
];

enum Kind {
    /// An interactive shell: input is collected into lines.
    Shell { v2: bool, pty: bool, line: Vec<u8>, stdin: Vec<u8> },
    /// A `sync:` stream and the file being pushed, if any.
    Sync { parser: SyncParser, upload: Option<(PayloadCapture, String)> },
}

struct Stream {
    ours: u32,
    kind: Kind,
}

/// The connection's state.
struct Link {
    version: u32,
    /// Largest payload the client accepts (from its `CNXN`).
    peer_max: u32,
    connected: bool,
    next_id: u32,
    streams: Vec<Stream>,
    buf: Vec<u8>,
}

pub(crate) async fn handle(session: &mut Session, svc: &ServiceSection) -> SessionResult<()> {
    let dev = shell::device(session.persona());
    let identity = if svc.banner.is_empty() { shell::connection_string(dev) } else { svc.banner.clone() };
    let mut link = Link {
        version: A_VERSION,
        peer_max: MAX_PAYLOAD,
        connected: false,
        next_id: 0x1c1,
        streams: Vec::new(),
        buf: Vec::new(),
    };
    let result = serve(session, dev, &identity, &mut link).await;
    // A push still arriving when the connection ended is recorded, marked as cut short.
    for s in link.streams.drain(..) {
        if let Kind::Sync { upload: Some((mut capture, name)), .. } = s.kind {
            capture.mark_truncated();
            session.emit_capture(capture, &name);
        }
    }
    result
}

async fn serve(session: &mut Session, dev: &Device, identity: &str, link: &mut Link) -> SessionResult<()> {
    for _ in 0..MAX_MESSAGES {
        let mut raw = [0u8; 24];
        session.read_exact(&mut raw).await?;
        let h = match wire::parse_header(&raw, MAX_PAYLOAD) {
            Ok(h) => h,
            Err(e) => {
                session.emit(Detail::Command { line: format!("(not adb: {e})") });
                return Err(CloseReason::ProtocolError);
            }
        };
        if h.command == A_WRTE {
            on_write(session, dev, link, h).await?;
            continue;
        }
        if h.data_length > MAX_SMALL {
            session.emit(Detail::Command {
                line: format!("({} with {} bytes)", wire::command_name(h.command), h.data_length),
            });
            return Err(CloseReason::ProtocolError);
        }
        let mut data = vec![0u8; h.data_length as usize];
        session.read_exact(&mut data).await?;
        match h.command {
            A_CNXN => {
                let client = wire::service_name(&data);
                session.emit(Detail::Fingerprint {
                    kind: "adb-host".into(),
                    value: client,
                    extra: vec![
                        ("version".into(), format!("{:#010x}", h.arg0)),
                        ("max_data".into(), h.arg1.to_string()),
                    ],
                });
                link.version = h.arg0.min(A_VERSION);
                link.peer_max = h.arg1.clamp(256, MAX_PAYLOAD);
                link.connected = true;
                session
                    .write_all(&wire::message(A_CNXN, link.version, link.peer_max, identity.as_bytes(), link.version))
                    .await?;
            }
            A_AUTH => {
                // A device with auth disabled never asks; a client that offers anyway is let in.
                session.emit(Detail::Command { line: format!("AUTH type {} ({} bytes)", h.arg0, data.len()) });
                link.connected = true;
                session
                    .write_all(&wire::message(A_CNXN, link.version, link.peer_max, identity.as_bytes(), link.version))
                    .await?;
            }
            A_OPEN if link.connected => open(session, dev, link, h.arg0, &wire::service_name(&data)).await?,
            A_CLSE => close_stream(session, link, h.arg1),
            // OKAY acknowledges our writes; SYNC is obsolete; STLS (TLS) is not offered.
            _ => {}
        }
    }
    Ok(())
}

/// Sends `data` on a stream as `WRTE`s no larger than the client accepts.
async fn send(session: &mut Session, link: &Link, ours: u32, theirs: u32, data: &[u8]) -> SessionResult<()> {
    for piece in data.chunks(link.peer_max.max(256) as usize) {
        session.write_all(&wire::message(A_WRTE, ours, theirs, piece, link.version)).await?;
    }
    Ok(())
}

async fn open(session: &mut Session, dev: &Device, link: &mut Link, theirs: u32, name: &str) -> SessionResult<()> {
    let service = shell::parse_service(name);
    let ours = link.next_id;
    link.next_id = link.next_id.wrapping_add(1).max(1);
    if link.streams.len() >= MAX_STREAMS || service == Service::Refused {
        session.emit(Detail::Command { line: name.to_string() });
        return session.write_all(&wire::message(A_CLSE, 0, theirs, &[], link.version)).await;
    }
    session.write_all(&wire::message(A_OKAY, ours, theirs, &[], link.version)).await?;
    match service {
        Service::Shell { v2, pty, command } if !command.is_empty() => {
            let (text, status) = run(session, dev, &command);
            if v2 {
                let mut out = shell::v2_packet(shell::ID_STDOUT, text.as_bytes());
                out.extend(shell::v2_packet(shell::ID_EXIT, &[status]));
                send(session, link, ours, theirs, &out).await?;
            } else {
                let text = if pty { text.replace('\n', "\r\n") } else { text };
                send(session, link, ours, theirs, text.as_bytes()).await?;
            }
            session.write_all(&wire::message(A_CLSE, ours, theirs, &[], link.version)).await
        }
        Service::Shell { v2, pty, .. } => {
            session.emit(Detail::Command { line: name.to_string() });
            let p = shell::prompt(dev);
            let out = if v2 { shell::v2_packet(shell::ID_STDOUT, p.as_bytes()) } else { p.into_bytes() };
            send(session, link, ours, theirs, &out).await?;
            link.streams.push(Stream { ours, kind: Kind::Shell { v2, pty, line: Vec::new(), stdin: Vec::new() } });
            Ok(())
        }
        Service::Sync => {
            session.emit(Detail::Command { line: name.to_string() });
            link.streams.push(Stream { ours, kind: Kind::Sync { parser: SyncParser::default(), upload: None } });
            Ok(())
        }
        Service::Oneshot(message) => {
            session.emit(Detail::Command { line: name.to_string() });
            send(session, link, ours, theirs, message.as_bytes()).await?;
            session.write_all(&wire::message(A_CLSE, ours, theirs, &[], link.version)).await
        }
        Service::Refused => Ok(()),
    }
}

/// Records a shell command line and returns what the device prints.
fn run(session: &Session, dev: &Device, command: &str) -> (String, u8) {
    session.emit(Detail::Command { line: command.to_string() });
    for (tool, url) in super::dropper::downloads(command) {
        session.emit(Detail::DownloadOffered { url, tool });
    }
    shell::output(dev, command)
}

fn close_stream(session: &Session, link: &mut Link, ours: u32) {
    if let Some(pos) = link.streams.iter().position(|s| s.ours == ours) {
        let s = link.streams.swap_remove(pos);
        if let Kind::Sync { upload: Some((mut capture, name)), .. } = s.kind {
            capture.mark_truncated();
            session.emit_capture(capture, &name);
        }
    }
}

/// A `WRTE` to one of our streams: its payload is read in pieces and handed to the stream; the
/// client gets its `OKAY` (flow control) and the stream's answers.
async fn on_write(session: &mut Session, dev: &Device, link: &mut Link, h: Header) -> SessionResult<()> {
    let (theirs, ours) = (h.arg0, h.arg1);
    let known = link.streams.iter().position(|s| s.ours == ours);
    let mut remaining = h.data_length as usize;
    let mut buf = std::mem::take(&mut link.buf);
    let mut replies: Vec<u8> = Vec::new();
    let mut close = false;
    while remaining > 0 {
        let n = remaining.min(PIECE);
        buf.resize(n, 0);
        session.read_exact(&mut buf[..n]).await?;
        remaining -= n;
        // After a close, the rest of the payload is read and dropped.
        let (Some(i), false) = (known, close) else { continue };
        let stream = &mut link.streams[i];
        match &mut stream.kind {
            Kind::Sync { parser, upload } => {
                let mut at = 0;
                while at < n && !close {
                    let mut events = Vec::new();
                    let used = parser.feed(&buf[at..n], &mut events);
                    for e in events {
                        close |= on_sync(session, upload, e, &buf[at..n], &mut replies);
                    }
                    at += used;
                }
            }
            Kind::Shell { v2, pty, line, stdin } => {
                let input: Vec<u8> = if *v2 {
                    stdin.extend_from_slice(&buf[..n]);
                    match shell::take_v2_packets(stdin, session.limits.max_line) {
                        Some(packets) => {
                            packets.into_iter().filter(|(id, _)| *id == shell::ID_STDIN).flat_map(|(_, d)| d).collect()
                        }
                        None => {
                            close = true;
                            Vec::new()
                        }
                    }
                } else {
                    buf[..n].to_vec()
                };
                let mut out = Vec::new();
                for &b in &input {
                    if *pty && b != b'\n' {
                        out.push(b);
                    }
                    if b == b'\r' || b == b'\n' || line.len() >= session.limits.max_line {
                        if *pty && b == b'\r' {
                            out.push(b'\n');
                        }
                        let text = String::from_utf8_lossy(line).trim().to_string();
                        line.clear();
                        if text.is_empty() {
                            if b == b'\r' || !*pty {
                                out.extend_from_slice(shell::prompt(dev).as_bytes());
                            }
                            continue;
                        }
                        let (mut shown, _) = run(session, dev, &text);
                        if text == "exit" || text.starts_with("exit ") {
                            if *v2 {
                                replies.extend(shell::v2_packet(shell::ID_STDOUT, &out));
                                replies.extend(shell::v2_packet(shell::ID_EXIT, &[0]));
                            } else {
                                replies.extend_from_slice(&out);
                            }
                            out.clear();
                            close = true;
                            break;
                        }
                        if *pty {
                            shown = shown.replace('\n', "\r\n");
                        }
                        out.extend_from_slice(shown.as_bytes());
                        out.extend_from_slice(shell::prompt(dev).as_bytes());
                    } else if b != b'\n' {
                        line.push(b);
                    }
                }
                if !out.is_empty() {
                    if *v2 {
                        replies.extend(shell::v2_packet(shell::ID_STDOUT, &out));
                    } else {
                        replies.extend_from_slice(&out);
                    }
                }
            }
        }
    }
    link.buf = if buf.capacity() > PIECE { Vec::new() } else { buf };
    let Some(i) = known else {
        // adbd drops writes to a stream it does not have.
        return Ok(());
    };
    session.write_all(&wire::message(A_OKAY, ours, theirs, &[], link.version)).await?;
    if !replies.is_empty() {
        send(session, link, ours, theirs, &replies).await?;
    }
    if close {
        let s = link.streams.swap_remove(i);
        if let Kind::Sync { upload: Some((mut capture, name)), .. } = s.kind {
            capture.mark_truncated();
            session.emit_capture(capture, &name);
        }
        session.write_all(&wire::message(A_CLSE, ours, theirs, &[], link.version)).await?;
    }
    Ok(())
}

/// Handles one sync request; true when the stream ends.
fn on_sync(
    session: &Session,
    upload: &mut Option<(PayloadCapture, String)>,
    e: SyncEvent,
    input: &[u8],
    replies: &mut Vec<u8>,
) -> bool {
    match e {
        SyncEvent::Stat(path) => {
            let trimmed = path.trim_end_matches('/');
            let dir = path.ends_with('/') || DIRS.contains(&if trimmed.is_empty() { "/" } else { trimmed });
            let now = (drosera_uplink::now_ms() / 1000) as u32;
            replies.extend(if dir {
                sync::stat_reply(0o40771, 4096, now.saturating_sub(86_400))
            } else {
                sync::stat_reply(0, 0, 0)
            });
            false
        }
        SyncEvent::List(_) => {
            replies.extend(sync::list_done());
            false
        }
        SyncEvent::Recv(path) => {
            session.emit(Detail::Command { line: format!("pull {path}") });
            replies.extend(sync::status(false, "open failed: No such file or directory"));
            false
        }
        SyncEvent::Send(path_mode) => {
            let path = path_mode.rsplit_once(',').map_or(path_mode.as_str(), |(p, _)| p).to_string();
            if let Some((mut old, name)) = upload.take() {
                old.mark_truncated();
                session.emit_capture(old, &name);
            }
            *upload = Some((session.capture("adb-push"), path));
            false
        }
        SyncEvent::Data { start, end } => {
            if let Some((capture, _)) = upload.as_mut() {
                capture.update(&input[start..end]);
            }
            false
        }
        SyncEvent::Done(_) => {
            match upload.take() {
                Some((capture, name)) => {
                    session.emit_capture(capture, &name);
                    replies.extend(sync::status(true, ""));
                }
                None => replies.extend(sync::status(false, "DONE without SEND")),
            }
            false
        }
        SyncEvent::Quit => true,
        SyncEvent::Error(why) => {
            replies.extend(sync::status(false, &why));
            true
        }
    }
}
