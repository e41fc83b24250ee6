//! HTTP (80, 8080): requests, basic-auth and form logins, bodies kept as payloads.
//!
//! Web scanners and IoT botnets probe for admin panels, exploit paths and default credentials.
//! Every request becomes an `HttpRequest` event (method, path, query, Host, User-Agent, body
//! hash); basic-auth headers and login forms become `Login` events; a non-empty body is also kept
//! as a `Payload` (capped). The answer is a small router login page behind a configurable
//! `Server` header. Keep-alive is honoured for at most [`MAX_REQUESTS`] requests per connection.

use crate::capture::{Captured, PayloadCapture};
use crate::config::ServiceSection;
use crate::session::{Session, SessionResult};
use base64::Engine;
use drosera_uplink::event::{CloseReason, Detail, Secret};

/// Default `Server` header.
pub const DEFAULT_BANNER: &str = "Apache/2.4.62 (Debian)";
/// Requests served per connection.
pub const MAX_REQUESTS: usize = 100;
/// Header lines accepted per request.
pub const MAX_HEADERS: usize = 64;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HttpError {
    #[error("malformed request line")]
    BadRequestLine,
    #[error("malformed header line")]
    BadHeader,
    #[error("too many headers")]
    TooManyHeaders,
    #[error("invalid Content-Length")]
    BadLength,
}

/// A parsed request head.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub query: String,
    pub version: String,
    pub headers: Vec<(String, String)>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn content_length(&self) -> Result<u64, HttpError> {
        match self.header("content-length") {
            None => Ok(0),
            Some(v) => v.trim().parse().map_err(|_| HttpError::BadLength),
        }
    }

    /// A URL-encoded form body (a login page's POST), as opposed to a file or script.
    pub fn is_form(&self) -> bool {
        self.header("content-type").is_some_and(|c| c.to_ascii_lowercase().contains("x-www-form-urlencoded"))
    }

    pub fn keep_alive(&self) -> bool {
        match self.header("connection").map(|v| v.to_ascii_lowercase()) {
            Some(v) if v.contains("close") => false,
            Some(v) if v.contains("keep-alive") => true,
            _ => self.version == "HTTP/1.1",
        }
    }
}

/// Parses the request line (`GET /path?q HTTP/1.1`).
pub fn parse_request_line(line: &[u8]) -> Result<Request, HttpError> {
    let line = std::str::from_utf8(line).map_err(|_| HttpError::BadRequestLine)?;
    let mut parts = line.split(' ').filter(|p| !p.is_empty());
    let (Some(method), Some(target), version) = (parts.next(), parts.next(), parts.next()) else {
        return Err(HttpError::BadRequestLine);
    };
    if method.is_empty() || method.len() > 32 || !method.bytes().all(|b| b.is_ascii_alphabetic() || b == b'-') {
        return Err(HttpError::BadRequestLine);
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    Ok(Request {
        method: method.to_string(),
        path: path.to_string(),
        query: query.to_string(),
        version: version.unwrap_or("HTTP/0.9").to_string(),
        headers: Vec::new(),
    })
}

/// Parses one header line (`Name: value`).
pub fn parse_header_line(line: &[u8]) -> Result<(String, String), HttpError> {
    let colon = line.iter().position(|&b| b == b':').ok_or(HttpError::BadHeader)?;
    let name = String::from_utf8_lossy(&line[..colon]).trim().to_string();
    if name.is_empty() || name.contains(' ') {
        return Err(HttpError::BadHeader);
    }
    Ok((name, String::from_utf8_lossy(&line[colon + 1..]).trim().to_string()))
}

/// Decodes `Authorization: Basic ...` into (user, password).
pub fn basic_auth(value: &str) -> Option<(String, String)> {
    let b64 = value.strip_prefix("Basic ").or_else(|| value.strip_prefix("basic "))?;
    let raw = base64::engine::general_purpose::STANDARD.decode(b64.trim()).ok()?;
    let text = String::from_utf8_lossy(&raw);
    let (u, p) = text.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

/// Decodes `%XX` and `+` in a URL component (invalid escapes stay as they are).
pub fn url_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Finds (user, password) in an `application/x-www-form-urlencoded` login form.
pub fn form_login(body: &[u8]) -> Option<(String, String)> {
    let text = String::from_utf8_lossy(body);
    let mut user = None;
    let mut pass = None;
    for pair in text.split('&').take(64) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = url_decode(k).to_ascii_lowercase();
        match k.as_str() {
            "user" | "username" | "login" | "email" | "uname" | "usr" | "log" => user = Some(url_decode(v)),
            "pass" | "password" | "pwd" | "passwd" | "pw" => pass = Some(url_decode(v)),
            _ => {}
        }
    }
    Some((user?, pass?))
}

const PAGE: &str = r#"<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Router Login</title>
<style>body{font-family:sans-serif;background:#eef1f5}form{margin:80px auto;width:300px;background:#fff;padding:24px;border-radius:6px}
input{width:100%;margin:6px 0;padding:6px}</style></head>
<body><form method="post" action="/login.cgi"><h2>Web Management</h2>
<input name="username" placeholder="Username"><input name="password" type="password" placeholder="Password">
<input type="submit" value="Login"></form></body></html>
"#;

/// The current time as an HTTP `Date` header value.
pub fn http_date() -> String {
    let now = time::OffsetDateTime::now_utc();
    let fmt = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    now.format(&fmt).unwrap_or_default()
}

fn response(status: &str, banner: &str, body: &str, extra: &str, keep_alive: bool) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\nDate: {}\r\nServer: {banner}\r\n{extra}Content-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: {}\r\n\r\n{body}",
        http_date(),
        body.len(),
        if keep_alive { "keep-alive" } else { "close" }
    )
    .into_bytes()
}

pub(crate) async fn handle(session: &mut Session, svc: &ServiceSection) -> SessionResult<()> {
    let banner = svc.banner_or(DEFAULT_BANNER);
    for _ in 0..MAX_REQUESTS {
        let Some((req, len)) = read_head(session, banner).await? else { continue };
        let body = read_body(session, &req, len).await?;
        let authed = record(session, &req, len, body);
        let keep_alive = req.keep_alive();
        session.write_all(&answer(&req, banner, authed, keep_alive)).await?;
        if !keep_alive {
            return Ok(());
        }
    }
    Ok(())
}

/// Reads a request head (request line, headers) and its body length, refusing what a server
/// would refuse, with the status it would send. `None` for an empty line between requests.
async fn read_head(session: &mut Session, banner: &str) -> SessionResult<Option<(Request, u64)>> {
    let first = session.read_line().await?;
    if first.is_empty() {
        return Ok(None);
    }
    let Ok(mut req) = parse_request_line(&first) else {
        return refuse(session, banner, "400 Bad Request").await;
    };
    loop {
        let line = session.read_line().await?;
        if line.is_empty() {
            break;
        }
        if req.headers.len() >= MAX_HEADERS {
            return refuse(session, banner, "431 Request Header Fields Too Large").await;
        }
        if let Ok(h) = parse_header_line(&line) {
            req.headers.push(h);
        }
    }
    let Ok(len) = req.content_length() else {
        return refuse(session, banner, "400 Bad Request").await;
    };
    if req.header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
        return refuse(session, banner, "411 Length Required").await;
    }
    Ok(Some((req, len)))
}

/// Answers `status` and ends the session as a protocol error.
async fn refuse<T>(session: &mut Session, banner: &str, status: &str) -> SessionResult<T> {
    session.write_all(&response(status, banner, "", "", false)).await?;
    Err(CloseReason::ProtocolError)
}

/// Reads a body of `len` bytes: hashes all of it (up to the session byte cap), keeps up to the
/// session's payload cap. A body that is not a login form is a delivered file (an uploaded
/// script or binary): it also goes to the sample area.
async fn read_body(session: &mut Session, req: &Request, len: u64) -> SessionResult<PayloadCapture> {
    let mut body = if len == 0 || req.is_form() {
        PayloadCapture::new(session.limits.max_payload)
    } else {
        session.capture("http-body")
    };
    let mut remaining = len;
    while remaining > 0 {
        let chunk = session.peek_some(usize::try_from(remaining).unwrap_or(usize::MAX)).await?;
        let n = chunk.len();
        body.update(chunk);
        session.consume(n);
        remaining -= n as u64;
    }
    Ok(body)
}

/// Emits the request, its body as a payload, and any basic-auth or form login, in that order.
/// Returns whether the request carried basic-auth credentials.
fn record(session: &Session, req: &Request, len: u64, mut body: PayloadCapture) -> bool {
    let form = if req.method == "POST" && req.is_form() { form_login(body.kept()) } else { None };
    // For a body, "truncated" means the event does not carry all of it.
    if !body.kept_all() {
        body.mark_truncated();
    }
    let captured = (len > 0).then(|| body.finish(req.path.clone()));
    let body_sha = match &captured {
        Some(Captured { payload: Detail::Payload { sha256, .. }, .. }) => Some(*sha256),
        _ => None,
    };
    let extra: Vec<(String, String)> = ["content-type", "x-forwarded-for", "cookie", "referer", "accept"]
        .iter()
        .filter_map(|k| req.header(k).map(|v| (k.to_string(), v.to_string())))
        .collect();
    session.emit(Detail::HttpRequest {
        method: req.method.clone(),
        path: req.path.clone(),
        query: req.query.clone(),
        host: req.header("host").unwrap_or("").to_string(),
        user_agent: req.header("user-agent").unwrap_or("").to_string(),
        body_sha256: body_sha,
        body_len: len,
        extra,
    });
    if let Some(c) = captured {
        session.emit(c.payload);
        if let Some(sample) = c.sample {
            session.emit(sample);
        }
    }
    let basic = req.header("authorization").and_then(basic_auth);
    let authed = basic.is_some();
    for (method, login) in [("basic", basic), ("form", form)] {
        let Some((user, pass)) = login else { continue };
        session.emit(Detail::Login {
            username: user,
            secret: Secret::Password(pass),
            success: false,
            extra: vec![("method".into(), method.into()), ("path".into(), req.path.clone())],
        });
    }
    authed
}

/// The answer: 401 behind a login (or to anyone who sent credentials), the login page, or 404.
fn answer(req: &Request, banner: &str, authed: bool, keep_alive: bool) -> Vec<u8> {
    let protected = ["/admin", "/manager", "/cgi-bin", "/setup", "/phpmyadmin"].iter().any(|p| req.path.starts_with(p));
    if protected || authed {
        response(
            "401 Unauthorized",
            banner,
            "<html><body><h1>401 Unauthorized</h1></body></html>\n",
            "WWW-Authenticate: Basic realm=\"Web Management\"\r\n",
            keep_alive,
        )
    } else if req.path == "/" || req.path.starts_with("/index") || req.path.starts_with("/login") {
        response("200 OK", banner, PAGE, "", keep_alive)
    } else {
        response("404 Not Found", banner, "<html><body><h1>Not Found</h1></body></html>\n", "", keep_alive)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_line_and_headers() {
        let r = parse_request_line(b"GET /cgi-bin/luci?x=1&y=2 HTTP/1.1").unwrap();
        assert_eq!((r.method.as_str(), r.path.as_str(), r.query.as_str()), ("GET", "/cgi-bin/luci", "x=1&y=2"));
        assert_eq!(parse_header_line(b"User-Agent: curl/8"), Ok(("User-Agent".into(), "curl/8".into())));
        assert!(parse_request_line(b"").is_err());
        assert!(parse_request_line(b"\x16\x03\x01 x").is_err());
    }

    #[test]
    fn credentials() {
        assert_eq!(basic_auth("Basic YWRtaW46aHVudGVyMg=="), Some(("admin".into(), "hunter2".into())));
        assert_eq!(form_login(b"username=root&password=p%40ss+1&submit=x"), Some(("root".into(), "p@ss 1".into())));
        assert_eq!(form_login(b"q=1"), None);
        assert_eq!(url_decode("%zz%4"), "%zz%4");
    }

    /// Runs one request through the handler over an in-memory stream; returns its events.
    async fn serve_one(request: &[u8], max_payload: usize) -> Vec<drosera_uplink::Event> {
        use crate::rollup::RollupTable;
        use crate::session::SessionLimits;
        use crate::sink::EventSink;
        use std::sync::Arc;
        use tokio::io::AsyncWriteExt;
        let (a, mut peer) = tokio::io::duplex(64 * 1024);
        let (sink, mut rx) = EventSink::new(16, Arc::new(RollupTable::new(16)));
        let limits = SessionLimits { max_payload, ..SessionLimits::default() };
        let (peer_addr, local) = ("192.0.2.9:4444".parse().unwrap(), "127.0.0.1:80".parse().unwrap());
        let proto = drosera_uplink::Protocol::Http;
        let env = crate::session::SessionEnv::basic(sink, Arc::from("t"));
        let mut s = Session::new(Box::new(a), 1, peer_addr, local, proto, limits, env);
        peer.write_all(request).await.unwrap();
        let svc = ServiceSection {
            kind: crate::protocols::ServiceKind::Http,
            ports: vec![80],
            bind: "127.0.0.1".parse().unwrap(),
            banner: String::new(),
            enabled: true,
            host_key: None,
        };
        handle(&mut s, &svc).await.unwrap();
        drop(s);
        let mut evs = Vec::new();
        while let Ok(ev) = rx.try_recv() {
            evs.push(ev);
        }
        evs
    }

    fn form_post(body: &str) -> Vec<u8> {
        format!(
            "POST /login.cgi HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    #[tokio::test]
    async fn a_form_post_is_a_request_a_payload_and_a_login() {
        let body = "username=root&password=hunter2";
        let evs = serve_one(&form_post(body), 1 << 20).await;
        let details: Vec<&Detail> = evs.iter().map(|e| &e.detail).collect();
        let [Detail::HttpRequest { body_sha256: Some(req_sha), body_len, .. }, Detail::Payload { sha256, size, name, prefix, truncated }, Detail::Login { username, secret, .. }] =
            details[..]
        else {
            panic!("unexpected events {details:?}");
        };
        assert_eq!(req_sha, sha256, "the request names the payload it carried");
        assert_eq!(*sha256, <[u8; 32]>::from(<sha2::Sha256 as sha2::Digest>::digest(body.as_bytes())));
        assert_eq!((*body_len, *size, name.as_str(), *truncated), (30, 30, "/login.cgi", false));
        assert_eq!(prefix, body.as_bytes());
        assert_eq!((username.as_str(), secret), ("root", &Secret::Password("hunter2".into())));
    }

    #[tokio::test]
    async fn a_body_past_the_payload_cap_is_hashed_whole_and_marked_truncated() {
        let body = "username=root&password=hunter2";
        let evs = serve_one(&form_post(body), 8).await;
        let Some(Detail::Payload { sha256, size, prefix, truncated, .. }) =
            evs.iter().map(|e| &e.detail).find(|d| matches!(d, Detail::Payload { .. }))
        else {
            panic!("no payload in {evs:?}");
        };
        assert_eq!(*sha256, <[u8; 32]>::from(<sha2::Sha256 as sha2::Digest>::digest(body.as_bytes())));
        assert_eq!((*size, prefix.as_slice(), *truncated), (30, &b"username"[..], true));
        assert!(!evs.iter().any(|e| matches!(e.detail, Detail::Login { .. })), "no login from a cut form");
    }

    #[test]
    fn hostile_input_never_panics() {
        for b in crate::protocols::hostile::random_inputs(0x0123_4567_89ab_cdef, 20_000, 120, true) {
            let _ = parse_request_line(&b);
            let _ = parse_header_line(&b);
            let _ = form_login(&b);
            let _ = basic_auth(&String::from_utf8_lossy(&b));
            let _ = url_decode(&String::from_utf8_lossy(&b));
        }
    }
}
