//! The Docker Engine API (2375): a daemon listening on TCP without TLS, the cryptominer
//! campaigns' way onto a host.
//!
//! Attackers probe `/_ping` and `/version`, list containers and images, then create a container
//! with the host's root mounted (`-v /:/host`), `--privileged` and `--net host`, whose command
//! drops a miner (or chroots into the host and adds a cron job); others `exec` into a running
//! container, or pull their own image. We answer as the persona's dockerd (JSON and headers as
//! dockerd sends them), record every request (`HttpRequest`), each container create with its
//! image, command, entrypoint, binds, privileged flag and network mode (`Exploit`
//! `docker-container-create`, the whole body kept as a `Payload`), each exec command
//! (`Command`), each pull (`DownloadOffered` `docker://image:tag`, never pulled), the URLs those
//! commands would fetch (`DownloadOffered`), and bodies larger than [`SAMPLE_MIN`] or carrying
//! files (`build`, `archive`, image import) as samples (source `docker-body`). Nothing runs and
//! nothing is pulled.
//!
//! Requests are read with the HTTP service's parsers (`http::parse_request_line`,
//! `http::parse_header_line`). Bounded: [`MAX_REQUESTS`] per connection, headers by
//! `http::MAX_HEADERS` and the session's `max_line`, bodies parsed as JSON only up to
//! [`JSON_MAX`] (larger and chunked ones are streamed into the sample area, never held), at most
//! [`MAX_OWN`] containers and execs remembered per source address (as dockerd remembers them
//! across connections: the CLI's exec start arrives on a new one).

pub mod api;

use super::http::{self, Request};
use crate::capture::{Captured, PayloadCapture};
use crate::config::ServiceSection;
use crate::session::{Session, SessionResult};
use api::{Container, Engine};
use drosera_uplink::event::{CloseReason, Detail};
use serde_json::{json, Value};

/// Requests served per connection.
pub const MAX_REQUESTS: usize = 100;
/// Largest body read into memory (and parsed as JSON); larger ones are streamed.
pub const JSON_MAX: u64 = 64 * 1024;
/// A body larger than this is also kept as a sample.
pub const SAMPLE_MIN: u64 = 4 * 1024;
/// Containers and execs remembered per source address (each list).
pub const MAX_OWN: usize = 16;
/// Bytes of an attacker's command line remembered per container or exec (the whole of it is in
/// the `Exploit`/`Command` event); names and images are kept to [`KEPT_NAME`].
pub const KEPT_COMMAND: usize = 1024;
/// Bytes of a container's name or image remembered.
pub const KEPT_NAME: usize = 256;

/// `s` cut to at most `max` bytes at a character boundary: what a source's remembered state
/// holds of attacker text, so [`Own`] stays small (the events carry the whole text).
fn clip(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut at = max;
        while !s.is_char_boundary(at) {
            at -= 1;
        }
        s.truncate(at);
    }
    s
}

/// What one source address created (containers, and execs as id, container, command).
#[derive(Debug, Clone, Default)]
pub struct Own {
    containers: Vec<Container>,
    execs: Vec<(String, String, String)>,
    counter: u64,
}

/// The containers and execs of the source addresses that talked to the emulated Docker.
pub type Memory = super::per_source::PerSource<Own>;

/// A response's framing.
struct Reply {
    status: u16,
    /// Routed answers carry dockerd's version headers; a 404 from the router does not.
    routed: bool,
    content_type: &'static str,
    extra: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn json(status: u16, v: &Value) -> Reply {
        let mut body = v.to_string().into_bytes();
        body.push(b'\n');
        Reply { status, routed: true, content_type: "application/json", extra: Vec::new(), body }
    }

    fn error(status: u16, message: &str) -> Reply {
        Reply::json(status, &json!({ "message": message }))
    }

    fn empty(status: u16) -> Reply {
        Reply { status, routed: true, content_type: "", extra: Vec::new(), body: Vec::new() }
    }
}

fn status_text(code: u16) -> &'static str {
    match code {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        304 => "Not Modified",
        400 => "Bad Request",
        404 => "Not Found",
        409 => "Conflict",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "OK",
    }
}

/// Encodes a reply as dockerd (Go's net/http) does: sorted headers, then `Date`, then
/// `Content-Length` (none for 204).
fn encode(e: &Engine, server: &str, version: &str, r: &Reply, head_only: bool, close: bool) -> Vec<u8> {
    let mut headers: Vec<(&str, String)> = r.extra.clone();
    if r.routed {
        headers.push(("Api-Version", e.api.to_string()));
        headers.push(("Docker-Experimental", "false".to_string()));
        headers.push(("Ostype", e.os.to_string()));
        headers.push(("Server", server.to_string()));
    }
    if !r.content_type.is_empty() {
        headers.push(("Content-Type", r.content_type.to_string()));
    }
    if close && version == "HTTP/1.1" {
        headers.push(("Connection", "close".to_string()));
    }
    headers.sort_by(|a, b| a.0.cmp(b.0));
    let proto = if version == "HTTP/1.0" { "HTTP/1.0" } else { "HTTP/1.1" };
    let mut out = format!("{proto} {} {}\r\n", r.status, status_text(r.status));
    for (k, v) in &headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str(&format!("Date: {}\r\n", http::http_date()));
    if r.status != 204 {
        out.push_str(&format!("Content-Length: {}\r\n", r.body.len()));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    if !head_only {
        bytes.extend_from_slice(&r.body);
    }
    bytes
}

pub(crate) async fn handle(session: &mut Session, svc: &ServiceSection) -> SessionResult<()> {
    let e = api::engine(session.persona());
    let server = if svc.banner.is_empty() { format!("Docker/{} ({})", e.version, e.os) } else { svc.banner.clone() };
    let src = session.peer.ip();
    for _ in 0..MAX_REQUESTS {
        let Some(req) = read_head(session).await? else { continue };
        let keep_alive = req.keep_alive();
        let body = read_body(session, &req).await?;
        let mut own = session.services().docker.load(src);
        let before = (own.containers.len(), own.execs.len(), own.counter);
        let (reply, hijack) = answer(session, e, &mut own, &req, &body);
        if before != (own.containers.len(), own.execs.len(), own.counter) || req.path.ends_with("/start") {
            session.services().docker.store(src, own);
        }
        match hijack {
            Some(stream) => {
                // The client takes the connection over (attach / exec start): the output, then EOF.
                let mut head = format!(
                    "HTTP/1.1 101 UPGRADED\r\nContent-Type: application/vnd.docker.multiplexed-stream\r\nConnection: Upgrade\r\nUpgrade: tcp\r\nApi-Version: {}\r\nDocker-Experimental: false\r\nOstype: {}\r\nServer: {server}\r\n\r\n",
                    e.api, e.os
                )
                .into_bytes();
                if !req.header("upgrade").is_some_and(|u| u.eq_ignore_ascii_case("tcp")) {
                    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.docker.raw-stream\r\n\r\n".to_vec();
                }
                session.write_all(&head).await?;
                session.write_all(&stream).await?;
                return Ok(());
            }
            None => {
                let bytes = encode(e, &server, &req.version, &reply, req.method == "HEAD", !keep_alive);
                session.write_all(&bytes).await?;
            }
        }
        if !keep_alive {
            return Ok(());
        }
    }
    Ok(())
}

/// Reads a request head. `None` for a blank line between requests; a request Go's server would
/// refuse is answered as it does and ends the session.
async fn read_head(session: &mut Session) -> SessionResult<Option<Request>> {
    let first = session.read_line().await?;
    if first.is_empty() {
        return Ok(None);
    }
    let bad = b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n400 Bad Request";
    let Ok(mut req) = http::parse_request_line(&first) else {
        session.emit(Detail::Command { line: String::from_utf8_lossy(&first).chars().take(512).collect() });
        session.write_all(bad).await?;
        return Err(CloseReason::ProtocolError);
    };
    loop {
        let line = session.read_line().await?;
        if line.is_empty() {
            break;
        }
        if req.headers.len() >= http::MAX_HEADERS {
            session.write_all(b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n431 Request Header Fields Too Large").await?;
            return Err(CloseReason::ProtocolError);
        }
        if let Ok(h) = http::parse_header_line(&line) {
            req.headers.push(h);
        }
    }
    if req.version == "HTTP/1.1" && req.header("host").is_none() {
        record_request(session, &req, None, 0);
        session.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n400 Bad Request: missing required Host header").await?;
        return Err(CloseReason::ProtocolError);
    }
    if req.content_length().is_err() {
        record_request(session, &req, None, 0);
        session.write_all(bad).await?;
        return Err(CloseReason::ProtocolError);
    }
    Ok(Some(req))
}

/// A request body: its bytes when small enough to parse, and its payload record.
struct Body {
    bytes: Option<Vec<u8>>,
    len: u64,
    captured: Option<Captured>,
}

/// Routes whose body is a file (a build context, an archive for `docker cp`, an image).
fn carries_file(route: &str) -> bool {
    route == "/build" || route.ends_with("/archive") || route == "/images/load" || route == "/images/create"
}

async fn read_body(session: &mut Session, req: &Request) -> SessionResult<Body> {
    let chunked = req.header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let len = req.content_length().unwrap_or(0);
    let (_, route) = api::strip_version(&req.path);
    let name = match api::parse_query(&req.query).iter().find(|(k, _)| k == "path" || k == "t" || k == "fromSrc") {
        Some((_, v)) if !v.is_empty() => v.clone(),
        _ => route.to_string(),
    };
    if !chunked && len == 0 {
        return Ok(Body { bytes: None, len: 0, captured: None });
    }
    if !chunked && len <= JSON_MAX {
        let mut bytes = vec![0u8; len as usize];
        session.read_exact(&mut bytes).await?;
        let mut capture = if len > SAMPLE_MIN || carries_file(route) {
            session.capture("docker-body")
        } else {
            PayloadCapture::new(session.limits.max_payload)
        };
        capture.update(&bytes);
        return Ok(Body { bytes: Some(bytes), len, captured: Some(capture.finish(name)) });
    }
    // Large or chunked: streamed into the sample area, never held.
    let mut capture = session.capture("docker-body");
    let r = if chunked { read_chunked(session, &mut capture).await } else { stream(session, len, &mut capture).await };
    if r.is_err() {
        capture.mark_truncated();
    }
    let size = capture.size();
    // A small chunked body (curl with `Transfer-Encoding: chunked`, Go clients of unknown body
    // length) is parsed like one with a length: it is all in the kept prefix.
    let bytes = (r.is_ok() && size <= JSON_MAX && capture.kept_all()).then(|| capture.kept().to_vec());
    let captured = capture.finish(name);
    if let Err(e) = r {
        record_request(session, req, Some(&captured), size);
        emit_captured(session, captured);
        return Err(e);
    }
    Ok(Body { bytes, len: size, captured: Some(captured) })
}

async fn stream(session: &mut Session, mut n: u64, capture: &mut PayloadCapture) -> SessionResult<()> {
    while n > 0 {
        let chunk = session.peek_some(n.min(64 * 1024) as usize).await?;
        let got = chunk.len();
        capture.update(chunk);
        session.consume(got);
        n -= got as u64;
    }
    Ok(())
}

async fn read_chunked(session: &mut Session, capture: &mut PayloadCapture) -> SessionResult<()> {
    loop {
        let line = session.read_line().await?;
        let text = String::from_utf8_lossy(&line);
        let size_text = text.split(';').next().unwrap_or("").trim();
        let Ok(size) = u64::from_str_radix(size_text, 16) else { return Err(CloseReason::ProtocolError) };
        if size == 0 {
            // Trailers, up to the blank line.
            for _ in 0..http::MAX_HEADERS {
                if session.read_line().await?.is_empty() {
                    return Ok(());
                }
            }
            return Err(CloseReason::ProtocolError);
        }
        stream(session, size, capture).await?;
        let _ = session.read_line().await?;
    }
}

fn body_sha(captured: Option<&Captured>) -> Option<[u8; 32]> {
    match captured {
        Some(Captured { payload: Detail::Payload { sha256, .. }, .. }) => Some(*sha256),
        _ => None,
    }
}

fn record_request(session: &Session, req: &Request, captured: Option<&Captured>, len: u64) {
    let extra: Vec<(String, String)> = ["content-type", "x-forwarded-for", "x-registry-auth", "upgrade"]
        .iter()
        .filter_map(|k| req.header(k).map(|v| (k.to_string(), v.chars().take(1024).collect())))
        .collect();
    session.emit(Detail::HttpRequest {
        method: req.method.clone(),
        path: req.path.clone(),
        query: req.query.clone(),
        host: req.header("host").unwrap_or("").to_string(),
        user_agent: req.header("user-agent").unwrap_or("").to_string(),
        body_sha256: body_sha(captured),
        body_len: len,
        extra,
    });
}

fn emit_captured(session: &Session, c: Captured) {
    session.emit(c.payload);
    if let Some(s) = c.sample {
        session.emit(s);
    }
}

fn emit_downloads(session: &Session, text: &str) {
    for (tool, url) in super::dropper::downloads(text) {
        session.emit(Detail::DownloadOffered { url, tool });
    }
}

/// A container id (64 hex digits) made from what the connection has sent so far.
fn new_id(session: &Session, own: &mut Own, salt: &[u8]) -> String {
    use sha2::Digest;
    own.counter += 1;
    let mut h = sha2::Sha256::new();
    h.update(session.id.to_le_bytes());
    h.update(own.counter.to_le_bytes());
    h.update(drosera_uplink::now_ms().to_le_bytes());
    h.update(salt);
    hex::encode(h.finalize())
}

fn find<'a>(all: &'a [Container], id: &str) -> Option<&'a Container> {
    if id.is_empty() {
        return None;
    }
    all.iter().find(|c| c.id.starts_with(id) || c.name == id || c.name == id.trim_start_matches('/'))
}

/// What an exec prints (nothing runs): a few recon answers, `echo`, else nothing.
fn exec_output(e: &Engine, cmd: &str) -> String {
    let mut out = String::new();
    for part in cmd.split([';', '\n']).flat_map(|c| c.split("&&")).take(16) {
        let words: Vec<&str> = part.split_whitespace().collect();
        let words: &[&str] = match words.as_slice() {
            ["sh" | "bash" | "/bin/sh" | "/bin/bash", "-c", rest @ ..] => rest,
            w => w,
        };
        match words.first().map(|w| w.trim_matches(['"', '\''])) {
            Some("echo") => {
                let shown: Vec<&str> = words[1..].iter().map(|w| w.trim_matches(['"', '\''])).collect();
                out.push_str(&format!("{}\n", shown.join(" ")));
            }
            Some("id") => out.push_str("uid=0(root) gid=0(root) groups=0(root),1(bin),2(daemon),3(sys),4(adm),6(disk),10(wheel),11(floppy),20(dialout),26(tape),27(video)\n"),
            Some("whoami") => out.push_str("root\n"),
            Some("uname") => {
                let machine = if e.arch == "arm64" { "aarch64" } else { "x86_64" };
                out.push_str(&format!("Linux {} {} {machine} Linux\n", &e.hostname, e.kernel));
            }
            Some("hostname") => out.push_str("3f9a2c7d1e5b\n"),
            _ => {}
        }
    }
    out
}

/// Routes one request: the reply, or the stream for a hijacked connection. Records what the
/// request means.
fn answer(session: &Session, e: &Engine, own: &mut Own, req: &Request, body: &Body) -> (Reply, Option<Vec<u8>>) {
    record_request(session, req, body.captured.as_ref(), body.len);
    if let Some(c) = &body.captured {
        emit_captured(session, Captured { payload: c.payload.clone(), sample: c.sample.clone() });
    }
    let (asked, route) = api::strip_version(&req.path);
    if let Some(v) = asked {
        let max = api::api_version(e.api);
        if v > max {
            let msg = format!("client version {}.{} is too new. Maximum supported API version is {}", v.0, v.1, e.api);
            return (Reply::error(400, &msg), None);
        }
    }
    let q = api::parse_query(&req.query);
    let now_s = drosera_uplink::now_ms() / 1000;
    let parts: Vec<&str> = route.trim_start_matches('/').split('/').collect();
    let method = req.method.as_str();
    let mut all = api::resident(e, now_s);
    all.extend(own.containers.iter().cloned());
    let json_body = body.bytes.as_deref().unwrap_or(b"");
    let reply = match (method, parts.as_slice()) {
        ("GET" | "HEAD", ["_ping"]) => {
            let mut r = Reply {
                status: 200,
                routed: true,
                content_type: "text/plain; charset=utf-8",
                extra: vec![
                    ("Builder-Version", "2".into()),
                    ("Cache-Control", "no-cache, no-store, must-revalidate".into()),
                    ("Pragma", "no-cache".into()),
                ],
                body: b"OK".to_vec(),
            };
            if method == "HEAD" {
                r.body.clear();
            }
            r
        }
        ("OPTIONS", _) => Reply::empty(200),
        ("GET", ["version"]) => Reply::json(200, &api::version(e)),
        ("GET", ["info"]) => {
            let now = time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
            let running = all.iter().filter(|c| c.running).count();
            Reply::json(200, &api::info(e, all.len(), running, &now))
        }
        ("GET", ["containers", "json"]) => {
            let every = api::query(&q, "all").is_some_and(|v| v == "1" || v == "true");
            let shown: Vec<Container> = all.iter().filter(|c| every || c.running).cloned().collect();
            Reply::json(200, &api::list(&shown, now_s))
        }
        ("POST", ["containers", "create"]) => match api::parse_create(json_body) {
            Some(c) if !c.image.is_empty() => {
                let id = new_id(session, own, json_body);
                let name = api::query(&q, "name").filter(|n| !n.is_empty()).map(str::to_string).unwrap_or_else(|| api::container_name(&id));
                let mut extra = vec![
                    ("image".to_string(), c.image.clone()),
                    ("cmd".to_string(), c.cmd.clone()),
                    ("entrypoint".to_string(), c.entrypoint.clone()),
                    ("binds".to_string(), c.binds.join(",")),
                    ("privileged".to_string(), c.privileged.to_string()),
                    ("network_mode".to_string(), c.network_mode.clone()),
                    ("name".to_string(), name.clone()),
                    ("id".to_string(), id.clone()),
                ];
                if !c.pid_mode.is_empty() {
                    extra.push(("pid_mode".into(), c.pid_mode.clone()));
                }
                if !c.cap_add.is_empty() {
                    extra.push(("cap_add".into(), c.cap_add.join(",")));
                }
                if !c.env.is_empty() {
                    extra.push(("env".into(), c.env.join(" ")));
                }
                let mut escape = Vec::new();
                if c.privileged {
                    escape.push("privileged");
                }
                if c.mounts_host_root() {
                    escape.push("host-root-mount");
                }
                if c.pid_mode == "host" {
                    escape.push("host-pid");
                }
                if c.network_mode == "host" {
                    escape.push("host-network");
                }
                if !escape.is_empty() {
                    extra.push(("escape".into(), escape.join(",")));
                }
                session.emit(Detail::Exploit { name: "docker-container-create".into(), cve: String::new(), extra });
                emit_downloads(session, &c.command_line());
                emit_downloads(session, &c.env.join("\n"));
                if own.containers.len() >= MAX_OWN {
                    own.containers.remove(0);
                }
                {
                    own.containers.push(Container {
                        id: id.clone(),
                        name: clip(name, KEPT_NAME),
                        command: clip(c.command_line(), KEPT_COMMAND),
                        image: clip(c.image, KEPT_NAME),
                        created: now_s,
                        running: false,
                    });
                }
                Reply::json(201, &json!({"Id": id, "Warnings": []}))
            }
            Some(_) => Reply::error(400, "Config cannot be empty in order to create a container"),
            None => Reply::error(400, "invalid JSON: unexpected end of JSON input"),
        },
        (_, ["containers", id, action]) if find(&all, id).is_none() && !matches!(*action, "json" | "exec") => {
            Reply::error(404, &format!("No such container: {id}"))
        }
        ("GET", ["containers", id, "json"]) => match find(&all, id) {
            Some(c) => Reply::json(200, &api::inspect(c)),
            None => Reply::error(404, &format!("No such container: {id}")),
        },
        ("POST", ["containers", id, "start"]) => {
            session.emit(Detail::Command { line: format!("start {id}") });
            if let Some(c) = own.containers.iter_mut().find(|c| c.id.starts_with(id) || c.name == *id) {
                c.running = true;
            }
            Reply::empty(204)
        }
        ("POST", ["containers", _, "stop" | "kill" | "restart" | "pause" | "unpause" | "resize"]) => Reply::empty(204),
        ("POST", ["containers", _, "wait"]) => Reply::json(200, &json!({"Error": null, "StatusCode": 0})),
        ("POST", ["containers", _, "attach"]) => return (Reply::empty(200), Some(Vec::new())),
        ("GET", ["containers", _, "logs"]) => {
            Reply { status: 200, routed: true, content_type: "application/vnd.docker.multiplexed-stream", extra: Vec::new(), body: Vec::new() }
        }
        ("PUT", ["containers", _, "archive"]) => Reply::empty(200),
        ("GET" | "HEAD", ["containers", id, "archive"]) => {
            let path = api::query(&q, "path").unwrap_or("");
            Reply::error(404, &format!("Could not find the file {path} in container {id}"))
        }
        ("DELETE", ["containers", _]) => Reply::empty(204),
        ("POST", ["containers", id, "exec"]) => match api::parse_exec(json_body) {
            Some((cmd, _)) => {
                session.emit(Detail::Command { line: cmd.clone() });
                emit_downloads(session, &cmd);
                let exec_id = new_id(session, own, json_body);
                if own.execs.len() >= MAX_OWN {
                    own.execs.remove(0);
                }
                own.execs.push((exec_id.clone(), clip(id.to_string(), KEPT_NAME), clip(cmd, KEPT_COMMAND)));
                Reply::json(201, &json!({"Id": exec_id}))
            }
            None => Reply::error(400, "No exec command specified"),
        },
        ("POST", ["exec", id, "start"]) => {
            let detach = body
                .bytes
                .as_deref()
                .and_then(|b| serde_json::from_slice::<Value>(b).ok())
                .and_then(|v| v.get("Detach").and_then(Value::as_bool))
                .unwrap_or(false);
            let cmd = own.execs.iter().find(|(x, _, _)| x == id).map(|(_, _, c)| c.clone()).unwrap_or_default();
            if detach {
                Reply::empty(200)
            } else {
                let out = exec_output(e, &cmd);
                let stream = if out.is_empty() { Vec::new() } else { api::stdout_frame(out.as_bytes()) };
                return (Reply::empty(200), Some(stream));
            }
        }
        ("POST", ["exec", _, "resize"]) => Reply::empty(201),
        ("GET", ["exec", id, "json"]) => {
            let (container, cmd) =
                own.execs.iter().find(|(x, _, _)| x == id).map(|(_, c, m)| (c.clone(), m.clone())).unwrap_or_default();
            Reply::json(200, &api::exec_inspect(id, &container, &cmd))
        }
        ("POST", ["images", "create"]) => {
            let image = api::query(&q, "fromImage").unwrap_or("").to_string();
            if image.is_empty() {
                // `docker import` (fromSrc=-): the body is the image, kept above.
                Reply::json(200, &json!({"status": format!("sha256:{}", new_id(session, own, b"import"))}))
            } else {
                let (image, tag) = match (image.rsplit_once(':'), api::query(&q, "tag")) {
                    (_, Some(t)) if !t.is_empty() => (image.clone(), t.to_string()),
                    (Some((i, t)), _) if !t.contains('/') => (i.to_string(), t.to_string()),
                    _ => (image.clone(), "latest".to_string()),
                };
                session.emit(Detail::DownloadOffered {
                    url: format!("docker://{}:{tag}", api::full_image(&image)),
                    tool: "docker-pull".into(),
                });
                let digest = new_id(session, own, image.as_bytes());
                Reply {
                    status: 200,
                    routed: true,
                    content_type: "application/json",
                    extra: Vec::new(),
                    body: api::pull_progress(&image, &tag, &digest).into_bytes(),
                }
            }
        }
        ("GET", ["images", "json"]) => Reply::json(200, &api::images(e, now_s)),
        ("POST", ["build"]) => {
            let id = new_id(session, own, b"build");
            Reply::json(200, &json!({"stream": format!("Successfully built {}\n", &id[..12])}))
        }
        ("GET", ["networks"]) => Reply::json(
            200,
            &json!([{"Name": "bridge", "Id": "f2de39df4171b0dc801e8002d1d999b77256983dfc63041c0f34030aa3977566", "Scope": "local", "Driver": "bridge"},
                    {"Name": "host", "Id": "6d1a5a2e6fbd7b1a1c7c3e0a4f3b2d8e9c1f0a7b6d5e4c3b2a1f0e9d8c7b6a5f", "Scope": "local", "Driver": "host"},
                    {"Name": "none", "Id": "1f8c2e7d6b5a4938271605f4e3d2c1b0a9f8e7d6c5b4a3928170f6e5d4c3b2a1", "Scope": "local", "Driver": "null"}]),
        ),
        ("GET", ["volumes"]) => Reply::json(200, &json!({"Volumes": [], "Warnings": null})),
        ("GET", ["swarm" | "nodes" | "services" | "tasks" | "secrets" | "configs"]) => Reply::error(
            503,
            "This node is not a swarm manager. Use \"docker swarm init\" or \"docker swarm join\" to connect this node to swarm and try again.",
        ),
        ("POST", ["containers" | "images" | "volumes" | "networks", "prune"]) => {
            Reply::json(200, &json!({"ContainersDeleted": null, "SpaceReclaimed": 0}))
        }
        ("GET", ["system", "df"]) => Reply::json(200, &json!({"LayersSize": 304_625_640, "Images": api::images(e, now_s), "Containers": api::list(&all, now_s), "Volumes": [], "BuildCache": []})),
        ("GET", ["events"]) => Reply::json(200, &json!({})),
        _ => Reply { status: 404, routed: false, content_type: "application/json", extra: Vec::new(), body: b"{\"message\":\"page not found\"}\n".to_vec() },
    };
    (reply, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_framed_like_go() {
        let e = api::engine(crate::config::Persona::Mixed);
        let r = encode(e, "Docker/26.1.4 (linux)", "HTTP/1.0", &Reply::empty(200), false, true);
        let text = String::from_utf8(r).unwrap();
        assert!(text.starts_with("HTTP/1.0 200 OK\r\nApi-Version: 1.45\r\nDocker-Experimental: false\r\nOstype: linux\r\nServer: Docker/26.1.4 (linux)\r\nDate: "), "{text}");
        assert!(text.ends_with("\r\nContent-Length: 0\r\n\r\n"), "{text}");
        let nf = Reply {
            status: 404,
            routed: false,
            content_type: "application/json",
            extra: Vec::new(),
            body: b"{\"message\":\"page not found\"}\n".to_vec(),
        };
        let text = String::from_utf8(encode(e, "x", "HTTP/1.0", &nf, false, true)).unwrap();
        assert!(text.starts_with("HTTP/1.0 404 Not Found\r\nContent-Type: application/json\r\nDate: "), "{text}");
        assert!(text.ends_with("\r\nContent-Length: 29\r\n\r\n{\"message\":\"page not found\"}\n"), "{text}");
        let text = String::from_utf8(encode(e, "x", "HTTP/1.1", &Reply::empty(204), false, false)).unwrap();
        assert!(!text.contains("Content-Length"));
    }

    #[test]
    fn exec_output_answers_recon_only() {
        assert!(exec_output(api::engine(crate::config::Persona::IotRouter), "uname -a").ends_with(" aarch64 Linux\n"));
        assert_eq!(clip("ab\u{e9}cd".into(), 3), "ab");
        assert_eq!(clip("abc".into(), 3), "abc");
        let e = api::engine(crate::config::Persona::Mixed);
        assert_eq!(exec_output(e, "sh -c echo ok"), "ok\n");
        assert_eq!(exec_output(e, "id").lines().next().map(|l| l.starts_with("uid=0(root)")), Some(true));
        assert_eq!(exec_output(e, "wget http://x/y"), "");
    }
}
