//! The Samples pages: the list (filters by file type, YARA rule, protocol, sensor; paged), one
//! sample (hashes, names, sources, sensors, protocols, YARA matches, a hex dump and the strings
//! of its first bytes) and its download as a ZIP with the password `infected`.
//!
//! WHY like this: everything shown comes from attackers (names, URLs, the bytes themselves), so
//! every value goes through [`esc`] and the preview is rendered here as text, never served as a
//! file. The sample itself leaves only inside the encrypted ZIP the CLI makes
//! ([`crate::samples::ops::zip_of`]); ZIPs are built in memory, so at most
//! [`MAX_CONCURRENT_DOWNLOADS`] are built at once (more get 503). The routes sit behind the same
//! guard (Host check, body and request caps) and session check as every other page; nothing
//! here changes state, so there is no form to protect.

use super::html::esc;
use super::{pages, session, App};
use crate::analytics::fmt_time;
use crate::samples::ops::{self, SHOW_SIGHTINGS};
use crate::samples::store::SampleStore;
use crate::storage::{FetchRow, SampleDetail, SampleFilter, SampleSummary};
use axum::extract::{Path as UrlPath, Query as UrlQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;
use std::collections::BTreeSet;
use std::fmt::Write;

/// Samples per page.
pub const PER_PAGE: usize = 50;
/// Last page reachable (the list reads at most `ops::LIST_LIMIT` rows).
const MAX_PAGE: usize = (ops::LIST_LIMIT as usize) / PER_PAGE - 1;
/// Fetches shown under the list.
const FETCH_ROWS: i64 = 50;
/// Bytes in the hex dump.
pub const HEX_BYTES: usize = 512;
/// Bytes searched for strings, strings shown, characters per string.
pub const STRINGS_BYTES: usize = 16 * 1024;
const MAX_STRINGS: usize = 200;
const STRING_CHARS: usize = 120;
/// ZIPs built at once (each holds a sample, up to `samples.max_sample_bytes`, in memory twice).
pub const MAX_CONCURRENT_DOWNLOADS: usize = 2;

/// The list's filters (query string).
#[derive(Debug, Default, Deserialize)]
pub struct SampleParams {
    #[serde(rename = "type")]
    pub file_type: Option<String>,
    pub rule: Option<String>,
    pub protocol: Option<String>,
    pub sensor: Option<String>,
    pub page: Option<usize>,
}

fn nonempty(v: &Option<String>) -> Option<String> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(str::to_string)
}

impl SampleParams {
    fn filter(&self) -> SampleFilter {
        SampleFilter {
            file_type: nonempty(&self.file_type),
            rule: nonempty(&self.rule),
            protocol: nonempty(&self.protocol),
            sensor: nonempty(&self.sensor),
        }
    }
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn filter_query(f: &SampleFilter) -> String {
    let mut parts = Vec::new();
    for (k, v) in [("type", &f.file_type), ("rule", &f.rule), ("protocol", &f.protocol), ("sensor", &f.sensor)] {
        if let Some(v) = v {
            parts.push(format!("{k}={}", url_encode(v)));
        }
    }
    parts.join("&")
}

/// The list page's body: the filter form, one page of samples (`rows` may hold one more than
/// a page, which says there is a next page) and the newest fetches.
pub fn list_page(f: &SampleFilter, page: usize, rows: &[SampleSummary], fetches: &[FetchRow]) -> String {
    let v = |o: &Option<String>| esc(o.as_deref().unwrap_or(""));
    let mut b = format!(
        r#"<form method="get" action="/samples" class="filter" id="sample-filter">
<label>type <input name="type" value="{}" placeholder="ELF, PE, script…" size="12"></label>
<label>YARA rule <input name="rule" value="{}" placeholder="any" size="14"></label>
<label>protocol <input name="protocol" value="{}" placeholder="any" size="8"></label>
<label>sensor <input name="sensor" value="{}" placeholder="any" size="10"></label>
<button type="submit">Filter</button></form>"#,
        v(&f.file_type),
        v(&f.rule),
        v(&f.protocol),
        v(&f.sensor)
    );
    let start = page * PER_PAGE;
    let shown: Vec<&SampleSummary> = rows.iter().skip(start).take(PER_PAGE).collect();
    let _ = write!(
        b,
        r#"<section class="card"><h2>Samples</h2><table id="samples"><thead><tr><th>sha256</th><th>type</th><th>size</th><th>YARA</th><th>sightings</th><th>first seen</th><th>last seen</th></tr></thead><tbody>"#
    );
    for s in &shown {
        let _ = write!(
            b,
            r#"<tr data-key="{sha}"><td class="mono"><a href="/samples/{sha}">{short}…</a></td><td class="type">{}</td><td class="n size">{}</td><td class="rules">{}</td><td class="n sightings">{}</td><td>{}</td><td>{}</td></tr>"#,
            esc(&s.file_type),
            s.size,
            esc(&s.rules.join(", ")),
            s.sightings,
            fmt_time(Some(s.first_seen_ms)),
            fmt_time(Some(s.last_seen_ms)),
            sha = esc(&s.sha256),
            short = esc(s.sha256.get(..16).unwrap_or(&s.sha256)),
        );
    }
    b += "</tbody></table>";
    if shown.is_empty() {
        b += r#"<p class="note" id="no-samples">No sample matches.</p>"#;
    }
    let q = filter_query(f);
    let sep = if q.is_empty() { "" } else { "&" };
    b += r#"<p class="pager">"#;
    if page > 0 {
        let _ = write!(b, r#"<a id="prev-page" href="/samples?{}{sep}page={}">← newer</a> "#, esc(&q), page - 1);
    }
    let _ = write!(b, r#"page {}"#, page + 1);
    if rows.len() > start + PER_PAGE && page < MAX_PAGE {
        let _ = write!(b, r#" <a id="next-page" href="/samples?{}{sep}page={}">older →</a>"#, esc(&q), page + 1);
    }
    b += "</p></section>";
    b += r#"<section class="card"><h2>Fetched URLs</h2><p class="note">URLs offered for download that the admin fetched (opt-in, <code>[fetcher]</code>), newest first.</p><table id="fetches"><thead><tr><th>URL</th><th>state</th><th>status</th><th>size</th><th>sample or error</th><th>offered by</th><th>when</th></tr></thead><tbody>"#;
    for x in fetches {
        let what = match (&x.sha256, x.state.as_str()) {
            (Some(sha), "fetched") => {
                format!(
                    r#"<a class="mono" href="/samples/{s}">{}…</a>"#,
                    esc(sha.get(..16).unwrap_or(sha)),
                    s = esc(sha)
                )
            }
            _ => esc(&x.error),
        };
        let _ = write!(
            b,
            r#"<tr data-key="{id}"><td class="mono clip" title="{url}">{url}</td><td class="state">{}</td><td class="n">{}</td><td class="n">{}</td><td>{what}</td><td>{} {} ({})</td><td>{}</td></tr>"#,
            esc(&x.state),
            x.status.map(|s| s.to_string()).unwrap_or_default(),
            x.size.map(|s| s.to_string()).unwrap_or_default(),
            esc(&x.sensor),
            esc(&x.src_ip),
            esc(&x.protocol),
            fmt_time(Some(x.done_ms.unwrap_or(x.offered_ms))),
            id = x.id,
            url = esc(&x.url),
        );
    }
    b + "</tbody></table></section>"
}

/// A classic hex dump: offset, 16 bytes in hex, the same as ASCII (`.` for the rest).
pub fn hex_dump(bytes: &[u8]) -> String {
    let mut s = String::new();
    for (i, line) in bytes.chunks(16).enumerate() {
        let _ = write!(s, "{:08x}  ", i * 16);
        for j in 0..16 {
            match line.get(j) {
                Some(b) => {
                    let _ = write!(s, "{b:02x} ");
                }
                None => s.push_str("   "),
            }
            if j == 7 {
                s.push(' ');
            }
        }
        s.push(' ');
        s.extend(line.iter().map(|&b| if (0x20..0x7f).contains(&b) { b as char } else { '.' }));
        s.push('\n');
    }
    s
}

/// Printable ASCII runs of at least 4 characters (like `strings`), at most [`MAX_STRINGS`],
/// each cut at [`STRING_CHARS`].
pub fn strings_of(bytes: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let mut run = String::new();
    for &b in bytes.iter().chain(std::iter::once(&0u8)) {
        if (0x20..0x7f).contains(&b) || b == b'\t' {
            if run.len() < STRING_CHARS {
                run.push(b as char);
            }
        } else {
            if run.len() >= 4 {
                out.push(std::mem::take(&mut run));
                if out.len() >= MAX_STRINGS {
                    break;
                }
            }
            run.clear();
        }
    }
    out
}

fn distinct<'a>(it: impl Iterator<Item = &'a str>) -> String {
    let set: BTreeSet<&str> = it.filter(|s| !s.is_empty()).collect();
    set.into_iter().map(esc).collect::<Vec<_>>().join(", ")
}

/// One sample's page body; `head` is its first bytes (or why they cannot be shown).
pub fn detail_page(d: &SampleDetail, head: Result<&[u8], String>) -> String {
    let x = &d.summary;
    let mut b = String::from(r#"<section class="card"><table id="sample"><tbody>"#);
    for (k, v) in [
        ("sha256", esc(&x.sha256)),
        ("sha1", esc(&x.sha1)),
        ("md5", esc(&x.md5)),
        ("size", format!("{} bytes ({} stored, zstd)", x.size, x.stored_bytes)),
        ("type", esc(&x.file_type)),
        ("first seen", fmt_time(Some(x.first_seen_ms))),
        ("last seen", fmt_time(Some(x.last_seen_ms))),
        ("sightings", x.sightings.to_string()),
        ("sensors", distinct(d.sightings.iter().map(|g| g.sensor.as_str()))),
        ("protocols", distinct(d.sightings.iter().map(|g| g.protocol.as_str()))),
        ("sources", distinct(d.sightings.iter().map(|g| g.source.as_str()))),
        ("YARA rules version", esc(&x.rules_version)),
    ] {
        let id = k.replace(' ', "-");
        let _ = write!(b, r#"<tr><th>{k}</th><td class="mono" id="s-{id}">{v}</td></tr>"#);
    }
    let _ = write!(
        b,
        r#"</tbody></table><p><a id="download" href="/samples/{sha}/zip">Download as ZIP</a> (password <code>infected</code>; the file inside is named by its sha256)</p></section>"#,
        sha = esc(&x.sha256)
    );
    b += r#"<div class="grid"><section class="card"><h2>YARA matches</h2><table id="matches"><thead><tr><th>namespace</th><th>rule</th><th>tags</th></tr></thead><tbody>"#;
    for m in &d.matches {
        let _ = write!(
            b,
            r#"<tr data-key="{r}"><td>{}</td><td>{r}</td><td>{}</td></tr>"#,
            esc(&m.namespace),
            esc(&m.tags),
            r = esc(&m.rule)
        );
    }
    b += r#"</tbody></table></section><section class="card"><h2>Names</h2><ul id="names">"#;
    for n in &d.names {
        let _ = write!(b, r#"<li class="mono">{}</li>"#, esc(n));
    }
    b += "</ul></section></div>";
    let _ = write!(
        b,
        r#"<section class="card"><h2>Sightings (newest {} of {})</h2><table id="sightings"><thead><tr><th>time</th><th>sensor</th><th>address</th><th>protocol</th><th>source</th><th>outcome</th><th>name</th></tr></thead><tbody>"#,
        d.sightings.len(),
        x.sightings
    );
    for g in &d.sightings {
        let _ = write!(
            b,
            r#"<tr><td>{}</td><td>{}</td><td class="mono">{}</td><td>{}</td><td>{}</td><td>{}</td><td class="mono clip">{}</td></tr>"#,
            fmt_time(Some(g.time_ms)),
            esc(&g.sensor),
            esc(&g.src_ip),
            esc(&g.protocol),
            esc(&g.source),
            esc(&g.outcome),
            esc(&g.name)
        );
    }
    b += "</tbody></table></section>";
    match head {
        Ok(bytes) => {
            let hex = &bytes[..bytes.len().min(HEX_BYTES)];
            let _ = write!(
                b,
                r#"<section class="card"><h2>First {} bytes</h2><pre id="hex">{}</pre></section>"#,
                hex.len(),
                esc(&hex_dump(hex))
            );
            let strings = strings_of(bytes);
            let _ = write!(
                b,
                r#"<section class="card"><h2>Strings in the first {} bytes ({} shown)</h2><pre id="strings">"#,
                bytes.len(),
                strings.len()
            );
            for s in &strings {
                b += &esc(s);
                b.push('\n');
            }
            b += "</pre></section>";
        }
        Err(e) => {
            let _ = write!(b, r#"<p class="note" id="no-preview">No preview: {}</p>"#, esc(&e));
        }
    }
    b
}

fn login() -> Response {
    Redirect::to("/login").into_response()
}

fn layout(title: &str, sess: &crate::users::Session, sensor: Option<String>, body: &str) -> Response {
    let f = pages::Filter { sensor: sensor.unwrap_or_default(), ..Default::default() };
    Html(pages::layout(title, "/samples", &sess.user, &sess.csrf, &f, body)).into_response()
}

pub(super) async fn list(State(app): State<App>, headers: HeaderMap, UrlQuery(p): UrlQuery<SampleParams>) -> Response {
    let Some(sess) = session(&app, &headers).await else { return login() };
    let filter = p.filter();
    let page = p.page.unwrap_or(0).min(MAX_PAGE);
    let want = ((page + 1) * PER_PAGE + 1) as i64;
    let f = filter.clone();
    let r = app
        .db(move |c, _| {
            let rows = c.list_samples(&f, want).map_err(|e| e.to_string())?;
            let fetches = c.list_fetches(FETCH_ROWS).map_err(|e| e.to_string())?;
            Ok((rows, fetches))
        })
        .await;
    match r {
        Ok((rows, fetches)) => {
            layout("Samples", &sess, filter.sensor.clone(), &list_page(&filter, page, &rows, &fetches))
        }
        Err(e) => super::html_error(StatusCode::INTERNAL_SERVER_ERROR, &e),
    }
}

pub(super) async fn detail(State(app): State<App>, headers: HeaderMap, UrlPath(sha): UrlPath<String>) -> Response {
    let Some(sess) = session(&app, &headers).await else { return login() };
    let Ok(sha) = ops::parse_sha256(&sha) else {
        return super::html_error(StatusCode::NOT_FOUND, "not a sha256");
    };
    let h = sha.clone();
    let d = match app.db(move |c, _| c.sample_detail(&h, SHOW_SIGHTINGS).map_err(|e| e.to_string())).await {
        Ok(Some(d)) => d,
        Ok(None) => return super::html_error(StatusCode::NOT_FOUND, "no such sample"),
        Err(e) => return super::html_error(StatusCode::INTERNAL_SERVER_ERROR, &e),
    };
    let head = match app.samples.clone() {
        None => Err("the sample store is not configured".to_string()),
        Some(cfg) => {
            let h = sha.clone();
            tokio::task::spawn_blocking(move || {
                SampleStore::reader(&cfg.dir).head(&h, STRINGS_BYTES.max(HEX_BYTES)).map_err(|e| e.to_string())
            })
            .await
            .unwrap_or_else(|e| Err(e.to_string()))
        }
    };
    let body = detail_page(&d, head.as_deref().map_err(Clone::clone));
    layout(&format!("Sample {}", &sha[..16]), &sess, None, &body)
}

pub(super) async fn zip(State(app): State<App>, headers: HeaderMap, UrlPath(sha): UrlPath<String>) -> Response {
    if session(&app, &headers).await.is_none() {
        return login();
    }
    let Ok(sha) = ops::parse_sha256(&sha) else {
        return super::html_error(StatusCode::NOT_FOUND, "not a sha256");
    };
    let Some(cfg) = app.samples.clone() else {
        return super::html_error(StatusCode::NOT_FOUND, "the sample store is not configured");
    };
    let Ok(_slot) = app.downloads.clone().try_acquire_owned() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "other downloads are being prepared; retry").into_response();
    };
    let h = sha.clone();
    let d = match app.db(move |c, _| c.sample_detail(&h, 1).map_err(|e| e.to_string())).await {
        Ok(Some(d)) => d,
        Ok(None) => return super::html_error(StatusCode::NOT_FOUND, "no such sample"),
        Err(e) => return super::html_error(StatusCode::INTERNAL_SERVER_ERROR, &e),
    };
    let z = tokio::task::spawn_blocking(move || ops::zip_of(&cfg, &d).map_err(|e| e.to_string()))
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
    match z {
        Ok(bytes) => (
            [
                (header::CONTENT_TYPE, "application/zip".to_string()),
                (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{sha}.zip\"")),
            ],
            bytes,
        )
            .into_response(),
        Err(e) => {
            tracing::warn!(sha256 = %sha, error = %e, "sample download failed");
            super::html_error(StatusCode::INTERNAL_SERVER_ERROR, &e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_dump_and_strings() {
        let d = hex_dump(b"\x7fELF\x02\x01\x01\x00abcdefgh<b>");
        assert_eq!(
            d,
            "00000000  7f 45 4c 46 02 01 01 00  61 62 63 64 65 66 67 68  .ELF....abcdefgh\n\
             00000010  3c 62 3e                                          <b>\n"
        );
        assert_eq!(
            strings_of(b"\x00ab\x00/bin/busybox\x01wget http://x\xffxyz"),
            vec!["/bin/busybox", "wget http://x"]
        );
        let many = b"abcd\x00".repeat(1000);
        assert_eq!(strings_of(&many).len(), MAX_STRINGS);
        assert!(strings_of(&[b'a'; 1000]).iter().all(|s| s.len() == STRING_CHARS));
    }
}
