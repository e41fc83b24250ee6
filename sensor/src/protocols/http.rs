//! HTTP (80, 8080): requests, basic-auth and form logins, bodies kept as samples.
//!
//! Web scanners and IoT botnets probe for admin panels, exploit paths and default credentials,
//! and droppers POST or PUT their binaries and scripts. Every request becomes an `HttpRequest`
//! event (method, path, query, Host, User-Agent, body hash); basic-auth headers and login forms
//! become `Login` events, always refused (the page answers 401 or "invalid"). A login form body
//! (url-encoded text) is a login, not a payload: it stays in the `HttpRequest` and the `Login`.
//! Any other body is a delivered file: it is streamed into the sample area through
//! `Session::capture` and ends in `Payload` + `Sample` events, whatever ends it (whole, larger
//! than the sample cap — then `413` and close — or cut short by the client, idle time or the
//! session's limits). A body may be as large as the sample cap even where that is more than the
//! session's byte cap (`Session::allow_bytes_in`, per body, like FTP's `Session::file_cap`).
//! A body sent in chunks (`Transfer-Encoding: chunked`: `curl -T -` and other streaming
//! uploaders) is a file like any other, decoded as it arrives.
//! The answer is a small router login page, or the default page of the persona's web server,
//! behind its `Server` header. Keep-alive is honoured for at most [`MAX_REQUESTS`] requests per
//! connection.

use crate::capture::{Captured, PayloadCapture};
use crate::config::{Persona, ServiceSection};
use crate::session::{Session, SessionResult};
use base64::Engine;
use drosera_uplink::event::{CloseReason, Detail, Secret};
use sha2::{Digest, Sha256};

/// Default `Server` header.
pub const DEFAULT_BANNER: &str = "Apache/2.4.62 (Debian)";
/// Requests served per connection.
pub const MAX_REQUESTS: usize = 100;
/// Header lines accepted per request.
pub const MAX_HEADERS: usize = 64;
/// Largest url-encoded POST body read as a login form (held in memory); a larger one is a file.
pub const MAX_FORM: u64 = 64 * 1024;

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
    #[error("invalid chunk size line")]
    BadChunk,
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

    /// The body comes in chunks (`Transfer-Encoding: chunked`, which wins over any
    /// Content-Length): what `curl -T -`, and most clients that stream a file of unknown length,
    /// send.
    pub fn is_chunked(&self) -> bool {
        self.header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    }

    /// A URL-encoded form body (a login page's POST), as opposed to a file or script.
    pub fn is_form(&self) -> bool {
        self.header("content-type").is_some_and(|c| c.to_ascii_lowercase().contains("x-www-form-urlencoded"))
    }

    /// The client waits for `100 Continue` before it sends the body (curl does for large ones).
    pub fn expects_continue(&self) -> bool {
        self.header("expect").is_some_and(|v| v.trim().eq_ignore_ascii_case("100-continue"))
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

/// Longest chunk size accepted, in hex digits (16 is all of `u64`).
const MAX_CHUNK_DIGITS: usize = 16;

/// Parses a chunk size line of a chunked body (`1a2b`, `1a2b;name=value`, spaces around):
/// the size in bytes. The size is only a number here; the caller reads at most what the file
/// may still take, so a huge size allocates nothing.
pub fn parse_chunk_size(line: &[u8]) -> Result<u64, HttpError> {
    let digits = line.split(|&b| b == b';').next().unwrap_or_default();
    let digits = digits.trim_ascii();
    if digits.is_empty() || digits.len() > MAX_CHUNK_DIGITS || !digits.iter().all(u8::is_ascii_hexdigit) {
        return Err(HttpError::BadChunk);
    }
    let text = std::str::from_utf8(digits).map_err(|_| HttpError::BadChunk)?;
    u64::from_str_radix(text, 16).map_err(|_| HttpError::BadChunk)
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

/// True when a body declared url-encoded really is form text (UTF-8 without control characters,
/// a line end at the very end allowed), so a binary or a script posted with curl's default
/// content type is still treated as the file it is.
pub fn looks_like_form(body: &[u8]) -> bool {
    match std::str::from_utf8(body) {
        Ok(text) => text.trim_end_matches(['\r', '\n']).chars().all(|c| !c.is_control()),
        Err(_) => false,
    }
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

/// The router login page (the `mixed` and `iot-router` personas); `{error}` is empty or says
/// that the last login failed.
const ROUTER_PAGE: &str = r#"<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Router Login</title>
<style>body{font-family:sans-serif;background:#eef1f5}form{margin:80px auto;width:300px;background:#fff;padding:24px;border-radius:6px}
input{width:100%;margin:6px 0;padding:6px}.err{color:#c00}</style></head>
<body><form method="post" action="/login.cgi"><h2>Web Management</h2>{error}
<input name="username" placeholder="Username"><input name="password" type="password" placeholder="Password">
<input type="submit" value="Login"></form></body></html>
"#;

/// What the router page says after a refused form login.
const LOGIN_FAILED: &str = "\n<p class=\"err\">Invalid username or password.</p>";

/// Debian's Apache default page (`linux-server`), shortened.
const APACHE_PAGE: &str = r#"<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Transitional//EN" "http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd">
<html xmlns="http://www.w3.org/1999/xhtml"><head><meta http-equiv="Content-Type" content="text/html; charset=UTF-8" />
<title>Apache2 Debian Default Page: It works</title></head>
<body><div class="main_page"><div class="page_header floating_element"><span class="floating_element">Apache2 Debian Default Page</span></div>
<div class="content_section floating_element"><div class="section_header section_header_red"><div id="about"></div>It works!</div>
<div class="content_section_text"><p>This is the default welcome page used to test the correct operation of the Apache2 server after
installation on Debian systems.</p></div></div></div></body></html>
"#;

/// IIS 10's default page (`windows-server`).
const IIS_PAGE: &str = r#"<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Strict//EN" "http://www.w3.org/TR/xhtml1/DTD/xhtml1-strict.dtd">
<html xmlns="http://www.w3.org/1999/xhtml"><head><meta http-equiv="Content-Type" content="text/html; charset=iso-8859-1" />
<title>IIS Windows Server</title></head>
<body><div id="container"><a href="http://go.microsoft.com/fwlink/?linkid=66138&amp;clcid=0x409"><img src="iisstart.png" alt="IIS" width="960" height="600" /></a></div></body></html>
"#;

/// What the web server of a persona says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Site {
    /// The `Server` header (the config's `banner` replaces it).
    pub server: &'static str,
    /// The page at `/`; the router page has a login form.
    pub home: &'static str,
    /// True when `/login*` serves the router's login form.
    pub router: bool,
}

/// The web server of a persona.
pub fn site(persona: Persona) -> Site {
    match persona {
        Persona::Mixed => Site { server: DEFAULT_BANNER, home: ROUTER_PAGE, router: true },
        Persona::IotRouter => Site { server: "lighttpd/1.4.59", home: ROUTER_PAGE, router: true },
        Persona::LinuxServer => Site { server: DEFAULT_BANNER, home: APACHE_PAGE, router: false },
        Persona::WindowsServer => Site { server: "Microsoft-IIS/10.0", home: IIS_PAGE, router: false },
    }
}

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
    let site = site(session.persona());
    let banner = svc.banner_or(site.server);
    for _ in 0..MAX_REQUESTS {
        let Some((req, len)) = read_head(session, banner).await? else { continue };
        if (len > 0 || req.is_chunked()) && req.expects_continue() {
            session.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
            session.flush().await?;
        }
        let (body, end) =
            if req.is_chunked() { read_chunked(session).await } else { read_body(session, &req, len).await };
        let len = match &body {
            Body::File(file) if req.is_chunked() => file.size(),
            _ => len,
        };
        let seen = record(session, &req, len, body);
        match end {
            BodyEnd::Whole => {}
            BodyEnd::TooLarge => {
                let page = "<html><body><h1>Request Entity Too Large</h1></body></html>\n";
                session.write_all(&response("413 Request Entity Too Large", banner, page, "", false)).await?;
                return Ok(());
            }
            BodyEnd::Cut(reason) => return Err(reason),
        }
        let keep_alive = req.keep_alive();
        session.write_all(&answer(&req, &site, banner, seen, keep_alive)).await?;
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
    if req.is_chunked() {
        // The chunks say how long the body is; a Content-Length beside them is ignored.
        return Ok(Some((req, 0)));
    }
    let Ok(len) = req.content_length() else {
        return refuse(session, banner, "400 Bad Request").await;
    };
    Ok(Some((req, len)))
}

/// Answers `status` and ends the session as a protocol error.
async fn refuse<T>(session: &mut Session, banner: &str, status: &str) -> SessionResult<T> {
    session.write_all(&response(status, banner, "", "", false)).await?;
    Err(CloseReason::ProtocolError)
}

/// A request body as received.
enum Body {
    Empty,
    /// A login form (url-encoded text, at most [`MAX_FORM`] bytes, held whole).
    Form(Vec<u8>),
    /// A delivered file, streamed into the sample area.
    File(PayloadCapture),
}

/// How reading a body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyEnd {
    /// Every byte the request announced arrived.
    Whole,
    /// The body was larger than a file may be: the first `file_cap` bytes were read.
    TooLarge,
    /// The connection ended (or went idle, or reached a limit) before the body did.
    Cut(CloseReason),
}

/// Reads a body of `len` bytes. A url-encoded POST body of at most [`MAX_FORM`] bytes that is
/// form text is a login form; anything else is a file, streamed into a sample capture that may
/// take up to `Session::file_cap` bytes beyond the session's byte cap.
async fn read_body(session: &mut Session, req: &Request, len: u64) -> (Body, BodyEnd) {
    if len == 0 {
        return (Body::Empty, BodyEnd::Whole);
    }
    if req.method == "POST" && req.is_form() && len <= MAX_FORM {
        // `len` is at most MAX_FORM, so this allocation is bounded whatever the client claims.
        let mut form = Vec::with_capacity(len as usize);
        let end = read_into(session, len, |chunk| form.extend_from_slice(chunk)).await;
        if end != BodyEnd::Whole || looks_like_form(&form) {
            return (Body::Form(form), end);
        }
        // Not form text after all (a binary posted with curl's default content type): a file.
        let mut file = session.capture("http-body");
        file.update(&form);
        return (Body::File(file), end);
    }
    let allowed = len.min(session.file_cap());
    session.allow_bytes_in(allowed);
    let mut file = session.capture("http-body");
    let mut end = read_into(session, allowed, |chunk| file.update(chunk)).await;
    if end == BodyEnd::Whole && allowed < len {
        end = BodyEnd::TooLarge;
    }
    if end != BodyEnd::Whole {
        // A cut body is not a whole file; a too large one already says so in its outcome.
        file.mark_incomplete();
    }
    (Body::File(file), end)
}

/// Reads a chunked body: always a file (a login form is never sent in chunks by the tools
/// that post them), streamed into a sample capture like a body with a length. Each chunk's
/// bytes get their own allowance beyond the session's byte cap, up to `Session::file_cap` in
/// all; the size lines, line ends and trailers count against the cap as usual, so a client
/// cannot send endless empty framing.
async fn read_chunked(session: &mut Session) -> (Body, BodyEnd) {
    let cap = session.file_cap();
    let mut file = session.capture("http-body");
    let end = loop {
        let size = match session.read_line().await.map(|l| parse_chunk_size(&l)) {
            Ok(Ok(size)) => size,
            Ok(Err(_)) => break BodyEnd::Cut(CloseReason::ProtocolError),
            Err(reason) => break BodyEnd::Cut(reason),
        };
        if size == 0 {
            break read_trailers(session).await;
        }
        let take = size.min(cap - file.size().min(cap));
        session.allow_bytes_in(take);
        let got = read_into(session, take, |chunk| file.update(chunk)).await;
        if got != BodyEnd::Whole {
            break got;
        }
        if file.size() >= cap {
            break BodyEnd::TooLarge;
        }
        match session.read_line().await {
            Ok(line) if line.is_empty() => {}
            Ok(_) => break BodyEnd::Cut(CloseReason::ProtocolError),
            Err(reason) => break BodyEnd::Cut(reason),
        }
    };
    if end != BodyEnd::Whole {
        file.mark_incomplete();
    }
    (Body::File(file), end)
}

/// Reads the trailer lines after the last chunk, up to the empty line that ends the request.
async fn read_trailers(session: &mut Session) -> BodyEnd {
    for _ in 0..=MAX_HEADERS {
        match session.read_line().await {
            Ok(line) if line.is_empty() => return BodyEnd::Whole,
            Ok(_) => {}
            Err(reason) => return BodyEnd::Cut(reason),
        }
    }
    BodyEnd::Cut(CloseReason::ProtocolError)
}

/// Reads exactly `len` bytes, handing each piece to `sink`; says how it ended.
async fn read_into(session: &mut Session, len: u64, mut sink: impl FnMut(&[u8])) -> BodyEnd {
    let mut remaining = len;
    while remaining > 0 {
        match session.peek_some(usize::try_from(remaining).unwrap_or(usize::MAX)).await {
            Ok(chunk) => {
                let n = chunk.len();
                sink(chunk);
                session.consume(n);
                remaining -= n as u64;
            }
            Err(reason) => return BodyEnd::Cut(reason),
        }
    }
    BodyEnd::Whole
}

/// What a request carried that shapes the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Seen {
    /// Basic-auth credentials.
    basic: bool,
    /// A login form.
    form_login: bool,
}

/// Emits the request, its body as a payload and sample (a file) and any basic-auth or form login
/// (a form), in that order.
fn record(session: &Session, req: &Request, len: u64, body: Body) -> Seen {
    let (body_sha, captured, form) = match body {
        Body::Empty => (None, None, None),
        Body::Form(bytes) => {
            let sha: [u8; 32] = Sha256::digest(&bytes).into();
            let login = (bytes.len() as u64 == len).then(|| form_login(&bytes)).flatten();
            (Some(sha), None, login)
        }
        Body::File(capture) => {
            let done = capture.finish(req.path.clone());
            let sha = match &done {
                Captured { payload: Detail::Payload { sha256, .. }, .. } => Some(*sha256),
                _ => None,
            };
            (sha, Some(done), None)
        }
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
    let seen = Seen { basic: basic.is_some(), form_login: form.is_some() };
    for (method, login) in [("basic", basic), ("form", form)] {
        let Some((user, pass)) = login else { continue };
        session.emit(Detail::Login {
            username: user,
            secret: Secret::Password(pass),
            success: false,
            extra: vec![("method".into(), method.into()), ("path".into(), req.path.clone())],
        });
    }
    seen
}

/// The answer: 401 behind a login (or to anyone who sent credentials), the home or login page
/// (saying that a posted login failed), or 404.
fn answer(req: &Request, site: &Site, banner: &str, seen: Seen, keep_alive: bool) -> Vec<u8> {
    let protected = ["/admin", "/manager", "/cgi-bin", "/setup", "/phpmyadmin"].iter().any(|p| req.path.starts_with(p));
    let login_page = site.router && (req.path.starts_with("/login") || req.path.starts_with("/index"));
    if protected || seen.basic {
        let realm = if site.router { "Web Management" } else { "Restricted" };
        response(
            "401 Unauthorized",
            banner,
            "<html><body><h1>401 Unauthorized</h1></body></html>\n",
            &format!("WWW-Authenticate: Basic realm=\"{realm}\"\r\n"),
            keep_alive,
        )
    } else if req.path == "/" || login_page {
        let page = if site.router {
            site.home.replace("{error}", if seen.form_login { LOGIN_FAILED } else { "" })
        } else {
            site.home.to_string()
        };
        response("200 OK", banner, &page, "", keep_alive)
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

    /// What one connection through the handler produced.
    struct Served {
        events: Vec<drosera_uplink::Event>,
        reply: String,
        end: SessionResult<()>,
        area: Option<std::sync::Arc<crate::samples::SampleArea>>,
        _dir: tempfile::TempDir,
    }

    impl Served {
        fn details(&self) -> Vec<&Detail> {
            self.events.iter().map(|e| &e.detail).collect()
        }
        fn sample(&self) -> Option<(u64, drosera_uplink::event::SampleOutcome, [u8; 32])> {
            self.events.iter().find_map(|e| match &e.detail {
                Detail::Sample { size, outcome, sha256, .. } => Some((*size, *outcome, *sha256)),
                _ => None,
            })
        }
    }

    /// Sends `request` (then end of input) through the handler over an in-memory stream, with
    /// a sample area of `samples` when given.
    async fn serve(
        request: Vec<u8>,
        limits: crate::session::SessionLimits,
        samples: Option<crate::config::SamplesSection>,
    ) -> Served {
        use crate::rollup::RollupTable;
        use crate::sink::EventSink;
        use std::sync::Arc;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (a, peer) = tokio::io::duplex(64 * 1024);
        let (sink, mut rx) = EventSink::new(64, Arc::new(RollupTable::new(16)));
        let dir = tempfile::tempdir().unwrap();
        let area =
            samples.map(|cfg| crate::samples::SampleArea::open(dir.path(), cfg, Arc::new(|| u64::MAX / 4)).unwrap());
        let env = Arc::new(crate::session::SessionEnv {
            sink,
            sensor: Arc::from("t"),
            persona: Persona::Mixed,
            credentials: crate::credentials::CredentialPolicy::refuse_all(),
            samples: area.clone(),
            services: crate::protocols::Shared::default(),
        });
        let (peer_addr, local) = ("192.0.2.9:4444".parse().unwrap(), "127.0.0.1:80".parse().unwrap());
        let mut s = Session::new(Box::new(a), 1, peer_addr, local, drosera_uplink::Protocol::Http, limits, env);
        let (mut rd, mut wr) = tokio::io::split(peer);
        tokio::spawn(async move {
            let _ = wr.write_all(&request).await;
            let _ = wr.shutdown().await;
        });
        let reader = tokio::spawn(async move {
            let mut v = Vec::new();
            let _ = rd.read_to_end(&mut v).await;
            v
        });
        let svc = ServiceSection::new(crate::protocols::ServiceKind::Http, "127.0.0.1".parse().unwrap(), vec![80]);
        let end = handle(&mut s, &svc).await;
        let _ = s.flush().await;
        drop(s);
        let reply = String::from_utf8_lossy(&reader.await.unwrap()).into_owned();
        let mut events = Vec::new();
        while let Ok(ev) = rx.try_recv() {
            events.push(ev);
        }
        Served { events, reply, end, area, _dir: dir }
    }

    fn limits(max_payload: usize, max_bytes_in: u64) -> crate::session::SessionLimits {
        crate::session::SessionLimits { max_payload, max_bytes_in, ..crate::session::SessionLimits::default() }
    }

    fn samples(max_sample_bytes: u64) -> Option<crate::config::SamplesSection> {
        Some(crate::config::SamplesSection { max_sample_bytes, ..crate::config::SamplesSection::default() })
    }

    fn post(content_type: &str, body: &[u8]) -> Vec<u8> {
        let mut r = format!(
            "POST /login.cgi HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        r.extend_from_slice(body);
        r
    }

    fn sha(b: &[u8]) -> [u8; 32] {
        Sha256::digest(b).into()
    }

    #[tokio::test]
    async fn a_form_post_is_a_request_and_a_refused_login_not_a_payload() {
        let body = "username=root&password=hunter2";
        let got = serve(
            post("application/x-www-form-urlencoded", body.as_bytes()),
            limits(1 << 20, 1 << 20),
            samples(1 << 20),
        )
        .await;
        let [Detail::HttpRequest { body_sha256: Some(req_sha), body_len, .. }, Detail::Login { username, secret, success, extra }] =
            got.details()[..]
        else {
            panic!("unexpected events {:?}", got.details());
        };
        assert_eq!((*req_sha, *body_len), (sha(body.as_bytes()), 30), "the request keeps the form's hash");
        assert_eq!((username.as_str(), secret, *success), ("root", &Secret::Password("hunter2".into()), false));
        assert!(extra.contains(&("method".into(), "form".into())));
        assert!(
            got.reply.starts_with("HTTP/1.1 200 OK") && got.reply.contains("Invalid username or password"),
            "{}",
            got.reply
        );
        assert_eq!(got.area.unwrap().usage(), (0, 0), "a login form is not a sample");
    }

    #[tokio::test]
    async fn a_binary_posted_with_the_form_content_type_is_a_file() {
        // curl --data-binary @file sends application/x-www-form-urlencoded by default.
        let body = b"\x7fELF\x02\x01\x01\x00\x00\x00username=x&password=y\x00\x00".to_vec();
        let got =
            serve(post("application/x-www-form-urlencoded", &body), limits(1 << 20, 1 << 20), samples(1 << 20)).await;
        assert!(!got.events.iter().any(|e| matches!(e.detail, Detail::Login { .. })), "{:?}", got.details());
        let (size, outcome, hash) = got.sample().expect("a sample event");
        assert_eq!((size, outcome, hash), (body.len() as u64, drosera_uplink::event::SampleOutcome::Kept, sha(&body)));
        let area = got.area.unwrap();
        assert_eq!(std::fs::read(area.path_of(&hash).unwrap()).unwrap(), body);
    }

    #[tokio::test]
    async fn a_body_past_the_payload_cap_is_hashed_and_kept_whole() {
        let body: Vec<u8> = (0..30_000u32).map(|i| (i % 251) as u8).collect();
        let got = serve(post("application/octet-stream", &body), limits(8, 1 << 20), samples(1 << 20)).await;
        let Some(Detail::Payload { sha256, size, prefix, truncated, name }) =
            got.details().into_iter().find(|d| matches!(d, Detail::Payload { .. }))
        else {
            panic!("no payload in {:?}", got.details());
        };
        assert_eq!((*sha256, *size, name.as_str()), (sha(&body), 30_000, "/login.cgi"));
        assert_eq!(prefix.as_slice(), &body[..8], "the event carries at most the payload cap");
        assert!(!*truncated, "the hash covers the whole body");
        assert_eq!(got.sample().unwrap().1, drosera_uplink::event::SampleOutcome::Kept);
    }

    #[tokio::test]
    async fn a_body_beyond_the_session_byte_cap_is_received_whole() {
        // The session may read 2,000 bytes, the sample cap is 100,000: the body gets its own
        // allowance and the session goes on afterwards.
        let body = vec![0x5au8; 50_000];
        let mut req = post("application/octet-stream", &body);
        let text = String::from_utf8(req.clone()).unwrap().replace("Connection: close", "Connection: keep-alive");
        req = text.into_bytes();
        req.extend_from_slice(b"GET /next HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let got = serve(req, limits(1 << 20, 2_000), samples(100_000)).await;
        assert_eq!(got.sample().unwrap(), (50_000, drosera_uplink::event::SampleOutcome::Kept, sha(&body)));
        assert!(got.end.is_ok(), "{:?}", got.end);
        assert!(
            got.events.iter().any(|e| matches!(&e.detail, Detail::HttpRequest { path, .. } if path == "/next")),
            "the next request on the connection is served"
        );
    }

    #[tokio::test]
    async fn a_body_larger_than_the_sample_cap_is_too_large_and_answered_413() {
        let body = vec![0x41u8; 5_000];
        let got = serve(post("application/octet-stream", &body), limits(1 << 20, 500), samples(1_000)).await;
        let (size, outcome, hash) = got.sample().unwrap();
        assert_eq!((size, outcome), (1_001, drosera_uplink::event::SampleOutcome::TooLarge));
        assert_eq!(hash, sha(&body[..1_000]), "hashed up to the cap");
        let Some(Detail::Payload { truncated, .. }) =
            got.details().into_iter().find(|d| matches!(d, Detail::Payload { .. }))
        else {
            panic!("no payload");
        };
        assert!(*truncated);
        assert!(got.reply.starts_with("HTTP/1.1 413 "), "{}", got.reply);
        assert_eq!(got.area.unwrap().usage(), (0, 0));
    }

    #[tokio::test]
    async fn a_body_cut_short_still_ends_in_its_payload_and_an_incomplete_sample() {
        let mut req = post("application/octet-stream", &[7u8; 100]);
        req.truncate(req.len() - 60);
        let got = serve(req, limits(1 << 20, 1 << 20), samples(1 << 20)).await;
        assert_eq!(got.end, Err(CloseReason::ClientClosed));
        let kinds: Vec<&str> = got.details().iter().map(|d| d.kind()).collect();
        assert_eq!(kinds, ["http_request", "payload", "sample"]);
        let Some(Detail::Payload { size, truncated, .. }) =
            got.details().into_iter().find(|d| matches!(d, Detail::Payload { .. }))
        else {
            panic!("no payload");
        };
        assert_eq!((*size, *truncated), (40, true));
        assert_eq!(got.sample().unwrap(), (40, drosera_uplink::event::SampleOutcome::Incomplete, sha(&[7u8; 40])));
        assert_eq!(got.area.unwrap().usage(), (0, 0), "a partial file is not kept");
    }

    #[tokio::test]
    async fn expect_100_continue_is_answered_before_the_body() {
        let body = vec![1u8; 10];
        let mut req = post("application/octet-stream", &body);
        let text =
            String::from_utf8(req.clone()).unwrap().replace("Host: x\r\n", "Host: x\r\nExpect: 100-continue\r\n");
        req = text.into_bytes();
        let got = serve(req, limits(1 << 20, 1 << 20), samples(1 << 20)).await;
        assert!(got.reply.starts_with("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK"), "{}", got.reply);
    }

    #[test]
    fn chunk_sizes() {
        assert_eq!(parse_chunk_size(b"1a2B"), Ok(0x1a2b));
        assert_eq!(parse_chunk_size(b" 10 ;ext=1"), Ok(16));
        assert_eq!(parse_chunk_size(b"0"), Ok(0));
        assert_eq!(parse_chunk_size(b"ffffffffffffffff"), Ok(u64::MAX));
        for bad in [&b""[..], b"x", b"-1", b"+1", b"1 2", b"10000000000000000", b";a", b"0x10"] {
            assert_eq!(parse_chunk_size(bad), Err(HttpError::BadChunk), "{bad:?}");
        }
    }

    /// A chunked request for `path` carrying `body` in chunks of `piece` bytes, then a trailer.
    fn chunked(body: &[u8], piece: usize, extra_headers: &str) -> Vec<u8> {
        let mut r = format!(
            "PUT /up.bin HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n{extra_headers}Connection: close\r\n\r\n"
        )
        .into_bytes();
        for c in body.chunks(piece) {
            r.extend_from_slice(format!("{:x};x=y\r\n", c.len()).as_bytes());
            r.extend_from_slice(c);
            r.extend_from_slice(b"\r\n");
        }
        r.extend_from_slice(b"0\r\nX-Trailer: 1\r\n\r\n");
        r
    }

    #[tokio::test]
    async fn a_chunked_body_is_kept_whole_beyond_the_session_byte_cap() {
        let body: Vec<u8> = (0..40_000u32).map(|i| (i % 253) as u8).collect();
        let req = chunked(&body, 7_000, "Expect: 100-continue\r\n");
        let got = serve(req, limits(1 << 20, 2_000), samples(100_000)).await;
        assert!(got.end.is_ok(), "{:?}", got.end);
        assert_eq!(got.sample().unwrap(), (40_000, drosera_uplink::event::SampleOutcome::Kept, sha(&body)));
        let area = got.area.as_ref().unwrap();
        assert_eq!(std::fs::read(area.path_of(&sha(&body)).unwrap()).unwrap(), body);
        assert!(got
            .events
            .iter()
            .any(|e| matches!(&e.detail, Detail::HttpRequest { method, body_len: 40_000, body_sha256: Some(h), .. }
                if method == "PUT" && *h == sha(&body))));
        assert!(got.reply.starts_with("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 404 "), "{}", got.reply);
    }

    #[tokio::test]
    async fn a_chunked_body_larger_than_the_sample_cap_is_too_large() {
        let body = vec![0x42u8; 5_000];
        let got = serve(chunked(&body, 300, ""), limits(1 << 20, 500), samples(1_000)).await;
        let (size, outcome, hash) = got.sample().unwrap();
        assert_eq!((size, outcome, hash), (1_001, drosera_uplink::event::SampleOutcome::TooLarge, sha(&body[..1_000])));
        assert!(got.reply.starts_with("HTTP/1.1 413 "), "{}", got.reply);
    }

    #[tokio::test]
    async fn a_chunked_body_cut_short_or_malformed_is_incomplete() {
        let body = vec![9u8; 1_000];
        let mut cut = chunked(&body, 400, "");
        cut.truncate(cut.len() - 500);
        let got = serve(cut, limits(1 << 20, 1 << 20), samples(1 << 20)).await;
        assert_eq!(got.end, Err(CloseReason::ClientClosed));
        assert_eq!(got.sample().unwrap().1, drosera_uplink::event::SampleOutcome::Incomplete);
        let mut bad = chunked(&body, 400, "");
        let at = bad.windows(3).position(|w| w == b"190").unwrap();
        bad[at] = b'g';
        let got = serve(bad, limits(1 << 20, 1 << 20), samples(1 << 20)).await;
        assert_eq!(got.end, Err(CloseReason::ProtocolError));
        assert_eq!(got.sample().unwrap(), (0, drosera_uplink::event::SampleOutcome::Incomplete, sha(b"")));
        assert_eq!(got.area.unwrap().usage(), (0, 0));
    }

    #[test]
    fn form_text_and_personas() {
        assert!(looks_like_form(b"username=a b&password=p\xc3\xa4ss\r\n"));
        assert!(!looks_like_form(b"#!/bin/sh\nwget http://x/y\n"));
        assert!(!looks_like_form(b"\x7fELF"));
        assert_eq!(site(Persona::WindowsServer).server, "Microsoft-IIS/10.0");
        assert!(site(Persona::Mixed).router && site(Persona::IotRouter).router);
        assert!(site(Persona::LinuxServer).home.contains("Apache2 Debian Default Page"));
    }

    #[test]
    fn hostile_input_never_panics() {
        for b in crate::protocols::hostile::random_inputs(0x0123_4567_89ab_cdef, 20_000, 120, true) {
            let _ = parse_request_line(&b);
            let _ = parse_header_line(&b);
            let _ = form_login(&b);
            let _ = basic_auth(&String::from_utf8_lossy(&b));
            let _ = url_decode(&String::from_utf8_lossy(&b));
            let _ = looks_like_form(&b);
            let _ = parse_chunk_size(&b);
        }
    }
}
