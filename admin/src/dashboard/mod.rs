//! The dashboard: an axum server with login, server-rendered pages and a JSON API.
//!
//! WHY this shape: every page and every `/api/...` endpoint calls the same
//! [`crate::analytics`] functions with the same [`Query`], so the numbers cannot differ from the
//! CLI report. Pages carry no JavaScript and load nothing from elsewhere (CSS is embedded, charts
//! are SVG drawn here), so the dashboard works on an air-gapped admin.
//!
//! Security: nothing but `/login` answers without a session (pages redirect to `/login`, the
//! API answers 401). The session cookie is `HttpOnly`, `SameSite=Strict` and, unless
//! `[dashboard] cookie_secure = false`, `Secure` (browsers accept Secure cookies from
//! `http://127.0.0.1` and `http://localhost`, which is where the dashboard listens by default;
//! for remote use put it behind a TLS reverse proxy or an SSH tunnel). The login form carries a
//! per-visit nonce that must match a cookie (double submit) and the Origin header, when sent,
//! must match the Host. Every state change is a POST. In-flight requests are capped by a
//! semaphore, concurrent password checks (argon2, memory-hard) by another, bodies at 16 KiB.
//!
//! Hardening from a review (issue 19): a request's body is read (within `body_timeout_s`)
//! before it takes one of the request slots, so clients that announce a body and never send it
//! cannot make the dashboard answer 503 to everyone; wrong logins are throttled per address and
//! globally ([`throttle`]); and only requests whose `Host` is a loopback name, the listen
//! address or one of `[dashboard] allowed_hosts` are answered, so a DNS-rebinding page cannot
//! talk to the dashboard through a victim's browser.
//!
//! Issue 21: `/api/...` (and only it) also accepts a per-user API token
//! (`Authorization: Bearer TOKEN`, `crate::users`); wrong tokens count as wrong logins in the
//! throttle. Pages, the login and the logout form never look at that header, so a token cannot
//! stand in for a session in a browser. Every table has a CSV at `/api/csv/TABLE` ([`csv`]);
//! the overview draws a world map and the attackers page the field report's charts ([`world`]).

mod csv;
pub mod drill;
mod html;
pub mod pages;
pub mod samples;
pub mod svg;
pub mod throttle;
pub mod world;

pub use html::esc;

use crate::analytics::{self, now_ms, parse_time, Query};
use crate::enrich::Enricher;
use crate::labels::Include;
use crate::storage::{self, Storage};
use crate::users;
use axum::body::Body;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Form, Path as UrlPath, Query as UrlQuery, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

pub const SESSION_COOKIE: &str = "drosera_session";
const LOGIN_COOKIE: &str = "drosera_login";
const MAX_BODY: usize = 16 * 1024;
const MAX_CONCURRENT_LOGINS: usize = 2;
/// Rows per list on pages and in the API unless `limit` asks for fewer/more (capped).
const DEFAULT_ROWS: usize = 50;

/// `[dashboard]` config section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DashboardConfig {
    /// Address the dashboard listens on (plain HTTP; keep it on loopback, see module docs).
    pub listen: SocketAddr,
    /// Mark the session cookie `Secure`.
    pub cookie_secure: bool,
    /// Seconds between folds of newly ingested events into the analytics tables.
    pub refresh_interval_s: u64,
    /// Requests handled at once; more get 503.
    pub max_concurrent_requests: usize,
    /// Host names (or addresses) the dashboard answers to besides loopback and its listen
    /// address, for example the name of a reverse proxy in front of it.
    pub allowed_hosts: Vec<String>,
    /// Seconds a client may take to send a request body (before it holds a request slot).
    pub body_timeout_s: u64,
    /// Wrong logins an address may make before it has to wait (see `throttle`).
    pub login_free_failures: u32,
    /// Wrong logins from all addresses together per minute before every login waits.
    pub login_failures_per_minute: usize,
    /// Addresses the login throttle remembers at once.
    pub login_tracked_addresses: usize,
    /// Live API tokens one user may hold (`drosera-admin user token create`).
    pub api_tokens_per_user: u32,
}

impl Default for DashboardConfig {
    fn default() -> Self {
        DashboardConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 9080)),
            cookie_secure: true,
            refresh_interval_s: 10,
            max_concurrent_requests: 32,
            allowed_hosts: Vec::new(),
            body_timeout_s: 10,
            login_free_failures: 5,
            login_failures_per_minute: 60,
            login_tracked_addresses: 4096,
            api_tokens_per_user: 10,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    #[error("cannot listen on [dashboard] listen = {addr} (choose a free address): {error}")]
    Bind { addr: SocketAddr, error: std::io::Error },
    #[error("dashboard server")]
    Serve(#[from] std::io::Error),
}

#[derive(Clone)]
struct App {
    db: storage::Shared,
    enricher: Arc<Enricher>,
    cookie_secure: bool,
    requests: Arc<Semaphore>,
    logins: Arc<Semaphore>,
    throttle: Arc<throttle::LoginThrottle>,
    body_timeout: std::time::Duration,
    /// Lower-case host names (without port) requests may name in `Host`.
    hosts: Arc<Vec<String>>,
    /// The sample store (`None`: sample pages show no preview and offer no download).
    samples: Option<Arc<crate::samples::SamplesConfig>>,
    /// Sample ZIPs built at once ([`samples::MAX_CONCURRENT_DOWNLOADS`]).
    downloads: Arc<Semaphore>,
    /// The drill-down's caps (`[drill]`).
    drill: analytics::DrillConfig,
}

impl App {
    /// Runs `f` on the storage in a blocking thread.
    async fn db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut dyn Storage, &Enricher) -> Result<T, String> + Send + 'static,
    ) -> Result<T, String> {
        let enricher = self.enricher.clone();
        self.db.run(move |db| f(db, &enricher)).await.map_err(|e| e.to_string())?
    }

    fn cookie(&self, name: &str, value: &str, path: &str, max_age: i64) -> String {
        format!(
            "{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Strict{}",
            if self.cookie_secure { "; Secure" } else { "" }
        )
    }
}

/// Filter parameters of pages and API calls.
#[derive(Debug, Default, Deserialize)]
pub struct Params {
    pub since: Option<String>,
    pub until: Option<String>,
    pub sensor: Option<String>,
    pub min_attempts: Option<i64>,
    pub limit: Option<usize>,
    /// Labelled traffic taken back into the numbers: `self,research`, `self`, `research`.
    pub include: Option<String>,
    /// Drill-down (`/api/attacker`, `/api/session`, `/api/search`): the address, the
    /// connection id (with `sensor`), the search text, the sessions page.
    pub addr: Option<String>,
    pub conn: Option<i64>,
    pub q: Option<String>,
    pub page: Option<usize>,
    /// `csv` (with `table`): one table of a drill-down page as CSV.
    pub format: Option<String>,
    pub table: Option<String>,
}

impl Params {
    fn query(&self) -> Result<Query, String> {
        let now = now_ms();
        let t = |v: &Option<String>| -> Result<Option<i64>, String> {
            match v.as_deref().map(str::trim) {
                None | Some("") => Ok(None),
                Some(s) => parse_time(s, now).map(Some).map_err(|e| e.to_string()),
            }
        };
        Ok(Query {
            since_ms: t(&self.since)?,
            until_ms: t(&self.until)?,
            sensor: self.sensor.clone().filter(|s| !s.trim().is_empty()),
            include: Include::parse(self.include.as_deref().unwrap_or("")).map_err(|e| format!("include: {e}"))?,
        })
    }

    fn filter(&self) -> pages::Filter {
        pages::Filter {
            since: self.since.clone().unwrap_or_default(),
            until: self.until.clone().unwrap_or_default(),
            sensor: self.sensor.clone().unwrap_or_default(),
            min_attempts: self.min_attempts.unwrap_or(0),
            include: Include::parse(self.include.as_deref().unwrap_or("")).unwrap_or_default(),
        }
    }

    fn rows(&self) -> usize {
        self.limit.unwrap_or(DEFAULT_ROWS).clamp(1, analytics::MAX_LIMIT)
    }
}

fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

async fn session(app: &App, headers: &HeaderMap) -> Option<users::Session> {
    let token = cookie_value(headers, SESSION_COOKIE)?.to_string();
    app.db(move |c, _| users::session(c, &token).map_err(|e| e.to_string())).await.ok().flatten()
}

/// Builds the router (exposed for tests that bind their own listener).
fn router(app: App) -> Router {
    let page = |path: &'static str| {
        get(move |State(app): State<App>, headers: HeaderMap, UrlQuery(p): UrlQuery<Params>| {
            page(app, headers, p, path)
        })
    };
    Router::new()
        .route("/", page("/"))
        .route("/attackers", page("/attackers"))
        .route("/credentials", page("/credentials"))
        .route("/payloads", page("/payloads"))
        .route("/scans", page("/scans"))
        .route("/sensors", page("/sensors"))
        .route("/samples", get(samples::list))
        .route("/samples/{sha256}", get(samples::detail))
        .route("/samples/{sha256}/zip", get(samples::zip))
        .route("/login", get(login_form).post(login_submit))
        .route("/attacker/{addr}", get(attacker_page))
        .route("/session/{sensor}/{conn}", get(session_page))
        .route("/search", get(search_page))
        .route("/logout", post(logout))
        .route("/api/{name}", get(api))
        .route("/api/csv/{table}", get(api_csv))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(app.clone(), guard))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(app)
}

/// The host part of a `Host` header value, lower-case, without the port.
fn host_name(host: &str) -> String {
    let host = host.trim().to_ascii_lowercase();
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("").to_string();
    }
    match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h.to_string(),
        _ => host,
    }
}

/// The host names the dashboard answers to: loopback, its listen address, `allowed_hosts`.
fn allowed_hosts(cfg: &DashboardConfig) -> Vec<String> {
    let mut v: Vec<String> = ["localhost", "127.0.0.1", "::1"].iter().map(|s| s.to_string()).collect();
    if !cfg.listen.ip().is_unspecified() {
        v.push(cfg.listen.ip().to_string());
    }
    v.extend(cfg.allowed_hosts.iter().map(|h| host_name(h)));
    v
}

async fn guard(State(app): State<App>, req: Request, next: Next) -> Response {
    let host = req.headers().get(header::HOST).and_then(|v| v.to_str().ok()).map(host_name);
    if !host.is_some_and(|h| app.hosts.contains(&h)) {
        return (
            StatusCode::MISDIRECTED_REQUEST,
            "unknown Host; add the name you reach the dashboard by to [dashboard] allowed_hosts",
        )
            .into_response();
    }
    // The body first, then a slot: a client that announces a body and sends nothing holds no
    // slot, and is cut off after body_timeout_s.
    let (parts, body) = req.into_parts();
    let body = match tokio::time::timeout(app.body_timeout, axum::body::to_bytes(body, MAX_BODY)).await {
        Err(_) => return (StatusCode::REQUEST_TIMEOUT, "request body not sent in time").into_response(),
        Ok(Err(_)) => return (StatusCode::PAYLOAD_TOO_LARGE, "request body too large").into_response(),
        Ok(Ok(b)) => b,
    };
    let req = Request::from_parts(parts, Body::from(body));
    let Ok(_permit) = app.requests.clone().try_acquire_owned() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "busy, retry").into_response();
    };
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    let set = [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "same-origin"),
        (header::CACHE_CONTROL, "no-store"),
    ];
    for (k, v) in set {
        h.insert(k, HeaderValue::from_static(v));
    }
    resp
}

async fn not_found(State(app): State<App>, headers: HeaderMap) -> Response {
    if session(&app, &headers).await.is_none() {
        return Redirect::to("/login").into_response();
    }
    (StatusCode::NOT_FOUND, "not found").into_response()
}

fn html_error(code: StatusCode, msg: &str) -> Response {
    (code, Html(format!("<!doctype html><title>error</title>{}", pages::error_page(msg)))).into_response()
}

async fn page(app: App, headers: HeaderMap, p: Params, path: &'static str) -> Response {
    let Some(sess) = session(&app, &headers).await else {
        return Redirect::to("/login").into_response();
    };
    let q = match p.query() {
        Ok(q) => q,
        Err(e) => return html_error(StatusCode::BAD_REQUEST, &e),
    };
    let rows = p.rows();
    let min_attempts = p.min_attempts.unwrap_or(0);
    let body = app
        .db(move |c, en| {
            analytics::refresh(c, en).map_err(|e| e.to_string())?;
            let r = page_body(c, &q, path, rows, min_attempts);
            Ok(r.unwrap_or_else(|e| pages::error_page(&e.to_string())))
        })
        .await;
    let title = match path {
        "/" => "Overview",
        "/attackers" => "Attackers",
        "/credentials" => "Credentials",
        "/payloads" => "Payloads, exploits, downloads",
        "/scans" => "Scans",
        _ => "Sensors",
    };
    match body {
        Ok(b) => {
            let b = pages::csv_links(&b, &p.filter().csv_query_string(), csv::has);
            Html(pages::layout(title, path, &sess.user, &sess.csrf, &p.filter(), &b)).into_response()
        }
        Err(e) => html_error(StatusCode::INTERNAL_SERVER_ERROR, &e),
    }
}

/// The body of a report page (`/`, `/attackers`, `/credentials`, `/payloads`, `/scans`,
/// `/sensors`) over the folded analytics: what the handler serves and what
/// `examples/bench_admin.rs` times.
pub fn page_body(
    c: &dyn Storage,
    q: &Query,
    path: &str,
    rows: usize,
    min_attempts: i64,
) -> Result<String, analytics::AnalyticsError> {
    Ok(match path {
        "/" => {
            // Every country for the map (fewer than MAX_LIMIT exist), the top rows
            // of the same list for the table, and the totals: one pass over the sources.
            let (totals, countries) = analytics::overview(c, q, analytics::MAX_LIMIT)?;
            pages::overview(
                &totals,
                &analytics::timeline(c, q)?,
                &analytics::protocols(c, q)?,
                &countries[..countries.len().min(rows)],
            ) + &pages::labelled(&analytics::labelled(c, q, 10)?)
                + &pages::world_map(&countries)
        }
        "/attackers" => {
            // One pass over the source aggregates for the three (see attackers_page).
            let (sources, countries, field) = analytics::attackers_page(c, q, min_attempts, rows)?;
            pages::attackers(&sources, &countries, &analytics::ports(c, q, rows)?) + &pages::field_charts(&field)
        }
        "/credentials" => pages::credentials(&analytics::credentials(c, q, rows)?),
        "/payloads" => pages::payloads(
            &analytics::payloads(c, q, rows)?,
            &analytics::exploits(c, q, rows)?,
            &analytics::downloads(c, q, rows)?,
        ),
        "/scans" => pages::scans(&analytics::scans(c, q, rows)?),
        _ => pages::sensors(&analytics::sensors(c, q)?, now_ms()),
    })
}

fn api_error(code: StatusCode, msg: &str) -> Response {
    (code, Json(serde_json::json!({ "error": msg }))).into_response()
}

/// Who may read `/api/...`: the user of a live API token in `Authorization: Bearer`, else the
/// user of a session cookie. A request that sends an Authorization header is judged by it alone
/// (a bad token is refused even next to a good cookie), and a bad token counts as a wrong login
/// for `peer` in the throttle, which is checked first.
async fn api_user(app: &App, peer: std::net::IpAddr, headers: &HeaderMap) -> Result<String, Response> {
    let Some(auth) = headers.get(header::AUTHORIZATION) else {
        return match session(app, headers).await {
            Some(s) => Ok(s.user),
            None => Err(api_error(StatusCode::UNAUTHORIZED, "login required (session cookie or Bearer token)")),
        };
    };
    let now = std::time::Instant::now();
    if let Err(wait) = app.throttle.check(peer, now) {
        let secs = wait.as_secs().max(1);
        tracing::warn!(addr = %peer, wait_s = secs, "dashboard API token throttled");
        let mut resp =
            api_error(StatusCode::TOO_MANY_REQUESTS, &format!("too many wrong logins; try again in {secs} s"));
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return Err(resp);
    }
    let token = users::bearer_token(auth.as_bytes()).unwrap_or_default().to_string();
    let user = app.db(move |c, _| users::api_token_user(c, &token).map_err(|e| e.to_string())).await;
    match user {
        Ok(Some(u)) => Ok(u),
        Ok(None) => {
            app.throttle.failed(peer, now);
            tracing::warn!(addr = %peer, "dashboard API token refused");
            let mut resp = api_error(StatusCode::UNAUTHORIZED, "bad, revoked or malformed API token");
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            Err(resp)
        }
        Err(e) => Err(api_error(StatusCode::INTERNAL_SERVER_ERROR, &e)),
    }
}

/// `/api/csv/TABLE`: one dashboard table as CSV ([`csv`]).
async fn api_csv(
    State(app): State<App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    UrlPath(table): UrlPath<String>,
    UrlQuery(p): UrlQuery<Params>,
) -> Response {
    if let Err(resp) = api_user(&app, peer.ip(), &headers).await {
        return resp;
    }
    if !csv::has(&table) {
        return api_error(StatusCode::NOT_FOUND, "no such table");
    }
    let q = match p.query() {
        Ok(q) => q,
        Err(e) => return api_error(StatusCode::BAD_REQUEST, &e),
    };
    let rows = p.rows();
    let min_attempts = p.min_attempts.unwrap_or(0);
    let name = table.clone();
    let r = app
        .db(move |c, en| {
            analytics::refresh(c, en).map_err(|e| e.to_string())?;
            csv::table(c, &q, &name, rows, min_attempts).map_err(|e| e.to_string())
        })
        .await;
    match r {
        Ok(Some(text)) => {
            let disposition = format!("attachment; filename=\"{table}.csv\"");
            let mut resp = ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], text).into_response();
            if let Ok(v) = HeaderValue::from_str(&disposition) {
                resp.headers_mut().insert(header::CONTENT_DISPOSITION, v);
            }
            resp
        }
        Ok(None) => api_error(StatusCode::NOT_FOUND, "no such table"),
        Err(e) => api_error(StatusCode::BAD_REQUEST, &e),
    }
}

async fn api(
    State(app): State<App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    UrlPath(name): UrlPath<String>,
    UrlQuery(p): UrlQuery<Params>,
) -> Response {
    if let Err(resp) = api_user(&app, peer.ip(), &headers).await {
        return resp;
    }
    if matches!(name.as_str(), "attacker" | "session" | "search") {
        return drill_api(app, name, p).await;
    }
    let q = match p.query() {
        Ok(q) => q,
        Err(e) => return (StatusCode::BAD_REQUEST, Json(serde_json::json!({ "error": e }))).into_response(),
    };
    let rows = p.rows();
    let min_attempts = p.min_attempts.unwrap_or(0);
    let r = app
        .db(move |c, en| {
            analytics::refresh(c, en).map_err(|e| e.to_string())?;
            let v = (|| -> Result<Option<serde_json::Value>, analytics::AnalyticsError> {
                use serde_json::to_value as j;
                let v = match name.as_str() {
                    "totals" => j(analytics::totals(c, &q)?),
                    "timeline" => j(analytics::timeline(c, &q)?),
                    "sources" => j(analytics::top_sources(c, &q, min_attempts, rows)?),
                    "countries" => j(analytics::countries(c, &q, rows)?),
                    "protocols" => j(analytics::protocols(c, &q)?),
                    "ports" => j(analytics::ports(c, &q, rows)?),
                    "credentials" => j(analytics::credentials(c, &q, rows)?),
                    "payloads" => j(analytics::payloads(c, &q, rows)?),
                    "exploits" => j(analytics::exploits(c, &q, rows)?),
                    "downloads" => j(analytics::downloads(c, &q, rows)?),
                    "sensors" => j(analytics::sensors(c, &q)?),
                    "scans" => j(analytics::scans(c, &q, rows)?),
                    "report" => j(analytics::report(c, &q, min_attempts, rows)?),
                    "field" => j(analytics::field_charts(c, &q, min_attempts, rows)?),
                    _ => return Ok(None),
                };
                Ok(v.ok())
            })();
            v.map_err(|e| e.to_string())
        })
        .await;
    match r {
        Ok(Some(v)) => Json(v).into_response(),
        Ok(None) => (StatusCode::NOT_FOUND, Json(serde_json::json!({"error": "no such endpoint"}))).into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, Json(serde_json::json!({ "error": e }))).into_response(),
    }
}

async fn login_form(State(app): State<App>, headers: HeaderMap) -> Response {
    // Keep a nonce the browser already has (a favicon fetch redirected here, a second tab), so
    // an open login form stays valid.
    let nonce = match cookie_value(&headers, LOGIN_COOKIE) {
        Some(n) if n.len() == 64 && n.bytes().all(|b| b.is_ascii_hexdigit()) => n.to_string(),
        _ => users::new_nonce(),
    };
    ([(header::SET_COOKIE, app.cookie(LOGIN_COOKIE, &nonce, "/login", 1800))], Html(pages::login(&nonce, None)))
        .into_response()
}

#[derive(Deserialize)]
struct LoginForm {
    csrf: String,
    username: String,
    password: String,
}

/// True when an Origin header is absent or names the same host the request was sent to.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else { return true };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
    let origin_host = origin.split_once("://").map(|(_, h)| h).unwrap_or("");
    !host.is_empty() && origin_host == host
}

async fn login_submit(
    State(app): State<App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Response {
    let cookie_nonce = cookie_value(&headers, LOGIN_COOKIE).unwrap_or("");
    if !same_origin(&headers) || cookie_nonce.is_empty() || cookie_nonce != f.csrf {
        return html_error(
            StatusCode::FORBIDDEN,
            "login form expired or sent from another site; reload the login page",
        );
    }
    if let Err(wait) = app.throttle.check(peer.ip(), std::time::Instant::now()) {
        let secs = wait.as_secs().max(1);
        tracing::warn!(addr = %peer.ip(), wait_s = secs, "dashboard login throttled");
        let msg = format!("too many wrong logins; try again in {secs} s");
        let mut resp = html_error(StatusCode::TOO_MANY_REQUESTS, &msg);
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return resp;
    }
    let Ok(_permit) = app.logins.clone().acquire_owned().await else {
        return html_error(StatusCode::SERVICE_UNAVAILABLE, "shutting down");
    };
    let user = f.username.clone();
    let r = app
        .db(move |c, _| {
            if users::verify(c, &f.username, &f.password).map_err(|e| e.to_string())? {
                users::create_session(c, &f.username).map(Some).map_err(|e| e.to_string())
            } else {
                Ok(None)
            }
        })
        .await;
    match r {
        Ok(Some(token)) => {
            app.throttle.succeeded(peer.ip());
            tracing::info!(user = %user, "dashboard login");
            let mut resp = Redirect::to("/").into_response();
            let h = resp.headers_mut();
            if let Ok(v) = HeaderValue::from_str(&app.cookie(SESSION_COOKIE, &token, "/", users::SESSION_TTL_MS / 1000))
            {
                h.append(header::SET_COOKIE, v);
            }
            if let Ok(v) = HeaderValue::from_str(&app.cookie(LOGIN_COOKIE, "", "/login", 0)) {
                h.append(header::SET_COOKIE, v);
            }
            resp
        }
        Ok(None) => {
            app.throttle.failed(peer.ip(), std::time::Instant::now());
            tracing::warn!(user = %esc(&user), addr = %peer.ip(), "dashboard login failed");
            let nonce = users::new_nonce();
            (
                StatusCode::UNAUTHORIZED,
                [(header::SET_COOKIE, app.cookie(LOGIN_COOKIE, &nonce, "/login", 1800))],
                Html(pages::login(&nonce, Some("wrong user name or password"))),
            )
                .into_response()
        }
        Err(e) => html_error(StatusCode::INTERNAL_SERVER_ERROR, &e),
    }
}

#[derive(Deserialize)]
struct LogoutForm {
    csrf: String,
}

async fn logout(State(app): State<App>, headers: HeaderMap, Form(f): Form<LogoutForm>) -> Response {
    let Some(sess) = session(&app, &headers).await else {
        return Redirect::to("/login").into_response();
    };
    if sess.csrf != f.csrf || !same_origin(&headers) {
        return html_error(StatusCode::FORBIDDEN, "bad logout request");
    }
    if let Some(token) = cookie_value(&headers, SESSION_COOKIE).map(str::to_string) {
        let _ = app.db(move |c, _| users::end_session(c, &token).map_err(|e| e.to_string())).await;
    }
    ([(header::SET_COOKIE, app.cookie(SESSION_COOKIE, "", "/", 0))], Redirect::to("/login")).into_response()
}

/// Binds `[dashboard] listen` and serves until `shutdown` completes. Every page and API call
/// first folds newly ingested events into the analytics tables; the periodic refresh and
/// retention run in `crate::app`.
pub async fn serve(
    cfg: &DashboardConfig,
    drill: analytics::DrillConfig,
    db: storage::Shared,
    enricher: Arc<Enricher>,
    samples: Option<crate::samples::SamplesConfig>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), DashboardError> {
    let listener =
        TcpListener::bind(cfg.listen).await.map_err(|error| DashboardError::Bind { addr: cfg.listen, error })?;
    serve_listener_samples(listener, cfg, drill, db, enricher, samples, shutdown).await
}

/// Like [`serve`] on an already bound listener (tests bind port 0), without a sample store.
pub async fn serve_listener(
    listener: TcpListener,
    cfg: &DashboardConfig,
    drill: analytics::DrillConfig,
    db: storage::Shared,
    enricher: Arc<Enricher>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), DashboardError> {
    serve_listener_samples(listener, cfg, drill, db, enricher, None, shutdown).await
}

/// Like [`serve`] on an already bound listener.
pub async fn serve_listener_samples(
    listener: TcpListener,
    cfg: &DashboardConfig,
    drill: analytics::DrillConfig,
    db: storage::Shared,
    enricher: Arc<Enricher>,
    samples: Option<crate::samples::SamplesConfig>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), DashboardError> {
    let app = App {
        db,
        enricher,
        cookie_secure: cfg.cookie_secure,
        requests: Arc::new(Semaphore::new(cfg.max_concurrent_requests)),
        logins: Arc::new(Semaphore::new(MAX_CONCURRENT_LOGINS)),
        throttle: Arc::new(throttle::LoginThrottle::new(throttle::Limits {
            free_failures: cfg.login_free_failures,
            failures_per_minute: cfg.login_failures_per_minute,
            tracked_addresses: cfg.login_tracked_addresses,
        })),
        body_timeout: std::time::Duration::from_secs(cfg.body_timeout_s),
        hosts: Arc::new(allowed_hosts(cfg)),
        samples: samples.map(Arc::new),
        downloads: Arc::new(Semaphore::new(samples::MAX_CONCURRENT_DOWNLOADS)),
        drill,
    };
    tracing::info!(addr = %listener.local_addr()?, "dashboard listening");
    axum::serve(listener, router(app).into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Drill-down (issue 21): attacker, session and search pages, their JSON and CSV.

/// What a drill-down request asks for (checked before any database work).
#[derive(Debug, Clone)]
enum Drill {
    Attacker { addr: String, page: usize },
    Session { sensor: String, conn: i64 },
    Search(String),
}

/// What a drill-down found (`None`: nothing there).
enum Found {
    /// Boxed: the attacker page is the largest by far.
    Attacker(Option<Box<analytics::Attacker>>),
    Session(Option<analytics::Session>),
    Search(Option<analytics::SearchResults>),
}

/// The page is clamped by `analytics::attacker` (`[drill]` caps).
fn drill_attacker(addr: &str, page: Option<usize>) -> Result<Drill, String> {
    let ip: std::net::IpAddr = addr.trim().parse().map_err(|_| format!("{:?} is not an IP address", esc(addr)))?;
    Ok(Drill::Attacker { addr: ip.to_string(), page: page.unwrap_or(1) })
}

/// Refused before any database work past `drill.search_chars` (`analytics::search` checks the
/// same cap for the CLI).
fn drill_search(q: &str, caps: &analytics::DrillConfig) -> Result<Drill, String> {
    if q.chars().count() > caps.search_chars as usize {
        return Err(format!("search text longer than {} characters (drill.search_chars)", caps.search_chars));
    }
    Ok(Drill::Search(q.trim().to_string()))
}

async fn drill_find(app: &App, q: Query, d: Drill) -> Result<Found, String> {
    let caps = app.drill;
    app.db(move |c, en| {
        analytics::refresh(c, en).map_err(|e| e.to_string())?;
        let r = match d {
            Drill::Attacker { addr, page } => Found::Attacker(
                analytics::attacker(c, &q, &addr, page, &caps).map_err(|e| e.to_string())?.map(Box::new),
            ),
            Drill::Session { sensor, conn } => {
                Found::Session(analytics::session(c, &sensor, conn, &caps).map_err(|e| e.to_string())?)
            }
            Drill::Search(text) if text.is_empty() => Found::Search(None),
            Drill::Search(text) => {
                Found::Search(Some(analytics::search(c, &q, &text, &caps).map_err(|e| e.to_string())?))
            }
        };
        Ok(r)
    })
    .await
}

/// Runs a drill-down page: session check, filter, lookup, layout.
async fn drill_page(app: App, headers: HeaderMap, p: Params, d: Result<Drill, String>, path: String) -> Response {
    let Some(sess) = session(&app, &headers).await else {
        return Redirect::to("/login").into_response();
    };
    let d = match d {
        Ok(d) => d,
        Err(e) => return html_error(StatusCode::BAD_REQUEST, &e),
    };
    // A session page is one connection whatever the range; its sensor is in the path.
    let q = match p.query() {
        Ok(q) => q,
        Err(e) => return html_error(StatusCode::BAD_REQUEST, &e),
    };
    let qs = pages::filter_query(&p.filter());
    let search_text = match &d {
        Drill::Search(t) => t.clone(),
        _ => String::new(),
    };
    let (title, body, status) = match drill_find(&app, q, d).await {
        Err(e) => return html_error(StatusCode::BAD_REQUEST, &e),
        Ok(Found::Attacker(Some(a))) => (format!("Attacker {}", a.ip), drill::attacker_page(&a, &qs), StatusCode::OK),
        Ok(Found::Attacker(None)) => (
            "Attacker".to_string(),
            pages::error_page("no events of this address in this range"),
            StatusCode::NOT_FOUND,
        ),
        Ok(Found::Session(Some(s))) => {
            (format!("Session {}/{}", s.sensor, s.session_id), drill::session_page(&s), StatusCode::OK)
        }
        Ok(Found::Session(None)) => {
            ("Session".to_string(), pages::error_page("no such sensor or connection"), StatusCode::NOT_FOUND)
        }
        Ok(Found::Search(r)) => {
            ("Search".to_string(), drill::search_page(&search_text, r.as_ref(), &p.filter()), StatusCode::OK)
        }
    };
    (status, Html(pages::layout(&title, &path, &sess.user, &sess.csrf, &p.filter(), &body))).into_response()
}

async fn attacker_page(
    State(app): State<App>,
    headers: HeaderMap,
    UrlPath(addr): UrlPath<String>,
    UrlQuery(p): UrlQuery<Params>,
) -> Response {
    let d = drill_attacker(&addr, p.page);
    let path = format!("/attacker/{}", drill::url_encode(&addr));
    drill_page(app, headers, p, d, path).await
}

async fn session_page(
    State(app): State<App>,
    headers: HeaderMap,
    UrlPath((sensor, conn)): UrlPath<(String, String)>,
    UrlQuery(mut p): UrlQuery<Params>,
) -> Response {
    let d = conn
        .parse::<i64>()
        .map(|conn| Drill::Session { sensor: sensor.clone(), conn })
        .map_err(|_| "the connection id is a number".to_string());
    // The sensor of the path is no range filter.
    p.sensor = None;
    let path = format!("/session/{}/{}", drill::url_encode(&sensor), drill::url_encode(&conn));
    drill_page(app, headers, p, d, path).await
}

async fn search_page(State(app): State<App>, headers: HeaderMap, UrlQuery(p): UrlQuery<Params>) -> Response {
    let d = drill_search(p.q.as_deref().unwrap_or(""), &app.drill);
    drill_page(app, headers, p, d, "/search".to_string()).await
}

/// `/api/attacker?addr=`, `/api/session?sensor=&conn=`, `/api/search?q=`: JSON, or one
/// table as CSV with `format=csv&table=ID`. The caller checked the session.
async fn drill_api(app: App, name: String, mut p: Params) -> Response {
    let bad = |code: StatusCode, e: String| (code, Json(serde_json::json!({ "error": e }))).into_response();
    let d = match name.as_str() {
        "attacker" => drill_attacker(p.addr.as_deref().unwrap_or(""), p.page),
        "session" => {
            let sensor = p.sensor.take().unwrap_or_default();
            match p.conn {
                Some(conn) => Ok(Drill::Session { sensor, conn }),
                None => Err("conn (the connection id) is required".to_string()),
            }
        }
        _ => drill_search(p.q.as_deref().unwrap_or(""), &app.drill),
    };
    let d = match d {
        Ok(d) => d,
        Err(e) => return bad(StatusCode::BAD_REQUEST, e),
    };
    let q = match p.query() {
        Ok(q) => q,
        Err(e) => return bad(StatusCode::BAD_REQUEST, e),
    };
    let found = match drill_find(&app, q, d).await {
        Ok(f) => f,
        Err(e) => return bad(StatusCode::BAD_REQUEST, e),
    };
    let (json, tables) = match found {
        Found::Attacker(Some(a)) => (serde_json::to_value(&a), drill::attacker_tables(&a)),
        Found::Session(Some(s)) => (serde_json::to_value(&s), drill::session_tables(&s)),
        Found::Search(Some(r)) => (serde_json::to_value(&r), drill::search_tables(&r)),
        Found::Search(None) => return bad(StatusCode::BAD_REQUEST, "q (the search text) is required".into()),
        Found::Attacker(None) | Found::Session(None) => return bad(StatusCode::NOT_FOUND, "nothing found".into()),
    };
    if p.format.as_deref() == Some("csv") {
        let want = p.table.as_deref().unwrap_or("");
        let Some(t) = tables.iter().find(|t| t.id == want) else {
            let ids: Vec<&str> = tables.iter().map(|t| t.id).collect();
            return bad(StatusCode::NOT_FOUND, format!("no table {:?}; tables: {}", esc(want), ids.join(", ")));
        };
        let disposition = format!("attachment; filename=\"{name}-{}.csv\"", t.id);
        let mut resp = ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], t.csv()).into_response();
        if let Ok(v) = HeaderValue::from_str(&disposition) {
            resp.headers_mut().insert(header::CONTENT_DISPOSITION, v);
        }
        return resp;
    }
    match json {
        Ok(v) => Json(v).into_response(),
        Err(e) => bad(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}
