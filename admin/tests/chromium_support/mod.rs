//! Shared by the headless-Chromium tests (`dashboard_chromium.rs`, `dashboard_screenshots.rs`):
//! starts Debian's `chromium` with a throw-away profile and speaks the Chrome DevTools protocol
//! to it over its WebSocket (one page target, flattened session).
//!
//! WHY one module: both tests drive a real browser the same way; a fix to the client (a
//! timeout, a read error) must reach both.
#![allow(dead_code)]
// Test fixtures may panic; the workspace denies unwrap/expect elsewhere.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::analytics_support::{serve_dashboard, Db, Served};
use serde_json::{json, Value};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

pub const CHROMIUM: &str = "/usr/bin/chromium";

/// The browser process; killed when dropped.
pub struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How a test wants the browser.
pub struct Launch<'a> {
    /// `--window-size`.
    pub window: (u32, u32),
    /// `--hide-scrollbars` (screenshots).
    pub hide_scrollbars: bool,
    /// Files the test needs besides [`CHROMIUM`] (fonts), and the Debian packages that have them.
    pub needs: &'a [&'a str],
    pub packages: &'a str,
    /// DevTools domains to enable (`Page` always).
    pub domains: &'a [&'a str],
    /// How long one DevTools call or one page load may take.
    pub timeout: Duration,
}

/// A DevTools connection attached to one page.
pub struct Cdp {
    ws: WebSocket<MaybeTlsStream<TcpStream>>,
    next: u64,
    session: Option<String>,
    timeout: Duration,
}

impl Cdp {
    /// Calls `method` and returns its result (panics on a DevTools error or no answer).
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        self.next += 1;
        let id = self.next;
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = &self.session {
            msg["sessionId"] = json!(s);
        }
        self.ws.send(Message::text(msg.to_string())).unwrap();
        let deadline = Instant::now() + self.timeout;
        loop {
            assert!(Instant::now() < deadline, "no answer to {method}");
            let m = match self.ws.read() {
                Ok(m) => m,
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
                {
                    continue
                }
                Err(e) => panic!("devtools connection: {e}"),
            };
            let Message::Text(t) = m else { continue };
            let v: Value = serde_json::from_str(t.as_str()).unwrap();
            if v["id"] == json!(id) {
                assert!(v.get("error").is_none(), "{method} failed: {v}");
                return v["result"].clone();
            }
        }
    }

    /// Evaluates JavaScript in the page and returns its (JSON) value.
    pub fn eval(&mut self, expr: &str) -> Value {
        let r =
            self.call("Runtime.evaluate", json!({ "expression": expr, "returnByValue": true, "awaitPromise": true }));
        assert!(r.get("exceptionDetails").is_none(), "{expr}: {r}");
        r["result"]["value"].clone()
    }

    /// Waits until the page at `path` has loaded.
    pub fn wait_for(&mut self, path: &str) {
        let deadline = Instant::now() + self.timeout;
        loop {
            let v = self.eval("[location.pathname, document.readyState]");
            if v == json!([path, "complete"]) {
                return;
            }
            if Instant::now() > deadline {
                let text = self.eval("document.body ? document.body.innerText : ''");
                panic!("page {path} did not load: {v}: {text}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn goto(&mut self, base: &str, url: &str, expect_path: &str) {
        self.call("Page.navigate", json!({ "url": format!("{base}{url}") }));
        self.wait_for(expect_path);
    }

    /// Logs in through the dashboard's real form and waits for the overview.
    pub fn login(&mut self, base: &str, user: &str, password: &str) {
        self.goto(base, "/", "/login");
        self.eval(&format!(
            "document.getElementById('username').value = {};
             document.getElementById('password').value = {};
             document.getElementById('login-form').submit(); true",
            json!(user),
            json!(password)
        ));
        self.wait_for("/");
    }

    /// Opens an API URL as a document and parses what the browser shows.
    pub fn api(&mut self, base: &str, url: &str) -> Value {
        let path = url.split('?').next().unwrap().to_string();
        self.goto(base, url, &path);
        let text = self.eval("(document.querySelector('pre') || document.body).innerText");
        serde_json::from_str(text.as_str().unwrap()).unwrap_or_else(|e| panic!("{url}: {e}: {text}"))
    }

    /// Rows of table `#id`: data-key plus the text of the cells with the given classes.
    pub fn table(&mut self, id: &str, classes: &[&str]) -> Vec<Vec<String>> {
        let expr = format!(
            "[...document.querySelectorAll('#{id} tbody tr[data-key]')].map(tr => [tr.dataset.key, ...{cls}.map(c => tr.querySelector('.' + c).textContent)])",
            cls = json!(classes)
        );
        serde_json::from_value(self.eval(&expr)).unwrap()
    }

    /// The font families Chromium drew the first element matching `selector` with (needs the
    /// `DOM` and `CSS` domains).
    pub fn fonts_of(&mut self, selector: &str) -> Vec<String> {
        let doc = self.call("DOM.getDocument", json!({ "depth": 0 }));
        let node = self.call("DOM.querySelector", json!({ "nodeId": doc["root"]["nodeId"], "selector": selector }));
        let id = node["nodeId"].as_i64().unwrap();
        assert!(id > 0, "no {selector} on the page");
        let fonts = self.call("CSS.getPlatformFontsForNode", json!({ "nodeId": id }));
        fonts["fonts"].as_array().unwrap().iter().map(|f| f["familyName"].as_str().unwrap().to_string()).collect()
    }
}

/// Starts the browser and attaches to a new page. `None` (the test is skipped) when Chromium or
/// a needed file is missing, unless `DROSERA_REQUIRE_CLIENTS=1` (CI), which panics instead.
pub fn launch(opts: &Launch<'_>) -> Option<(Browser, Cdp)> {
    let missing: Vec<&str> = std::iter::once(CHROMIUM)
        .chain(opts.needs.iter().copied())
        .filter(|p| !std::path::Path::new(p).exists())
        .collect();
    if !missing.is_empty() {
        if std::env::var("DROSERA_REQUIRE_CLIENTS").as_deref() == Ok("1") {
            panic!("{} required (apt-get install {})", missing.join(" and "), opts.packages);
        }
        eprintln!("skipping: {} not installed", missing.join(" and "));
        return None;
    }
    let profile = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(CHROMIUM);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--disable-dev-shm-usage",
    ]);
    if opts.hide_scrollbars {
        cmd.arg("--hide-scrollbars");
    }
    let child = cmd
        .arg(format!("--window-size={},{}", opts.window.0, opts.window.1))
        .arg("--remote-debugging-port=0")
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("about:blank")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let browser = Browser { child, _profile: profile };
    let port_file = browser._profile.path().join("DevToolsActivePort");
    let deadline = Instant::now() + Duration::from_secs(60);
    let contents = loop {
        if let Ok(s) = std::fs::read_to_string(&port_file) {
            if s.lines().count() >= 2 {
                break s;
            }
        }
        assert!(Instant::now() < deadline, "chromium did not open its DevTools port");
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut lines = contents.lines();
    let port = lines.next().unwrap().trim();
    let path = lines.next().unwrap().trim();
    let (ws, _) = tungstenite::connect(format!("ws://127.0.0.1:{port}{path}")).unwrap();
    if let MaybeTlsStream::Plain(s) = ws.get_ref() {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    }
    let mut cdp = Cdp { ws, next: 0, session: None, timeout: opts.timeout };
    let target = cdp.call("Target.createTarget", json!({ "url": "about:blank" }));
    let attached =
        cdp.call("Target.attachToTarget", json!({ "targetId": target["targetId"].clone(), "flatten": true }));
    cdp.session = Some(attached["sessionId"].as_str().unwrap().to_string());
    cdp.call("Page.enable", json!({}));
    for d in opts.domains {
        cdp.call(&format!("{d}.enable"), json!({}));
    }
    Some((browser, cdp))
}

/// What [`logged_in`] gives: the dashboard, the browser, its DevTools client and the base URL.
pub struct LoggedIn {
    pub served: Served,
    pub browser: Browser,
    pub cdp: Cdp,
    pub base: String,
}

/// Adds dashboard user `admin` to `c`, serves the dashboard on its database (session cookies
/// `Secure`), starts the browser and logs in through the form. `None`: skipped (see [`launch`]).
pub fn logged_in(c: Db, opts: &Launch<'_>) -> Option<LoggedIn> {
    drosera_admin::users::add_user(&*c, "admin", "correct horse").unwrap();
    let loc = c.loc.clone();
    drop(c);
    let served = serve_dashboard(&loc, true);
    let (browser, mut cdp) = launch(opts)?;
    let base = format!("http://{}", served.addr);
    // Not logged in: the overview sends the browser to the login form (`login` starts there).
    cdp.login(&base, "admin", "correct horse");
    Some(LoggedIn { served, browser, cdp, base })
}
