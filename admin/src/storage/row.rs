//! How an event is stored, whatever the backend: its common fields as columns and its detail as
//! a JSON object of flat key/value fields ([`Detail::to_fields`]), with the fields every report
//! needs lifted into columns: `username`, `password`, `payload_sha256`, `url`.
//!
//! `count` is 1 for ordinary events and the number of connections for rollup events, so
//! `SUM(count)` counts connections; `session_id` lets reports count each session once. This is
//! the contract between ingest (which writes) and analytics, the dashboard and exports (which
//! read); a backend that bulk-loads (COPY) writes exactly these values.

use drosera_uplink::event::{Detail, Event, Secret};

/// The lifted columns of one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lifted {
    pub count: i64,
    pub username: Option<String>,
    pub password: Option<String>,
    pub payload_sha256: Option<String>,
    pub url: Option<String>,
    /// [`fields_json`] of the detail.
    pub fields: String,
}

impl Lifted {
    pub fn of(ev: &Event) -> Lifted {
        let mut l = Lifted {
            count: 1,
            username: None,
            password: None,
            payload_sha256: None,
            url: None,
            fields: fields_json(ev.detail.to_fields()),
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
            Detail::Payload { sha256, .. } => l.payload_sha256 = Some(hex::encode(sha256)),
            Detail::DownloadOffered { url: u, .. } => l.url = Some(u.clone()),
            Detail::Rollup { connections, .. } => l.count = (*connections).min(i64::MAX as u64) as i64,
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
            Detail::EvictionGap { count, .. } => self.evicted = self.evicted.saturating_add(*count as i64),
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
    fn fields_json_matches_a_serde_json_object() {
        let pairs = vec![
            ("path".to_string(), "/a\"b\\c\n\u{7f}\u{1}é".to_string()),
            ("dup".to_string(), "first".to_string()),
            ("agent".to_string(), String::new()),
            ("dup".to_string(), "last".to_string()),
        ];
        let mut m = serde_json::Map::new();
        for (k, v) in pairs.clone() {
            m.insert(k, serde_json::Value::String(v));
        }
        assert_eq!(fields_json(pairs), serde_json::Value::Object(m).to_string());
        assert_eq!(fields_json(vec![]), "{}");
    }
}
