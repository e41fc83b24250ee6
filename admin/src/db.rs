//! The admin's SQLite database: schema, opening, and the one write path for events.
//!
//! The schema is the contract between ingest (which writes) and analytics, the dashboard and
//! exports (which read). Events keep their common fields as columns (so reports are plain SQL
//! over indexes) and their detail as a JSON object of flat key/value fields
//! ([`Detail::to_fields`]), with the fields every report needs lifted into columns: `username`,
//! `password`, `payload_sha256`, `url`.
//!
//! `count` is 1 for ordinary events and the number of connections for rollup events, so
//! `SUM(count)` counts connections; `session_id` lets reports count each session once.

use drosera_uplink::event::{Detail, Event, Secret};
use rusqlite::{params, Connection, Transaction};
use std::path::Path;

/// Schema version of the admin database (`PRAGMA user_version`).
pub const DB_VERSION: i64 = 1;

pub const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS sensors (
    id              INTEGER PRIMARY KEY,
    name            TEXT NOT NULL UNIQUE,
    cert_sha256     TEXT NOT NULL DEFAULT '',
    created_ms      INTEGER NOT NULL DEFAULT 0,
    revoked         INTEGER NOT NULL DEFAULT 0,
    last_contact_ms INTEGER,
    -- highest sequence number stored for this sensor (batches at or below it are re-acked only)
    high_water_seq  INTEGER NOT NULL DEFAULT 0,
    schema_version  INTEGER NOT NULL DEFAULT 0,
    -- last health sample, as JSON of drosera_uplink::event::Health
    health_json     TEXT,
    evicted_total   INTEGER NOT NULL DEFAULT 0,
    shed_total      INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE IF NOT EXISTS events (
    id             INTEGER PRIMARY KEY,
    sensor_id      INTEGER NOT NULL REFERENCES sensors(id),
    seq            INTEGER NOT NULL,
    time_ms        INTEGER NOT NULL,
    transport      TEXT NOT NULL,
    protocol       TEXT NOT NULL,
    kind           TEXT NOT NULL,
    src_ip         TEXT NOT NULL,
    src_port       INTEGER NOT NULL,
    dst_port       INTEGER NOT NULL,
    session_id     INTEGER NOT NULL,
    duration_ms    INTEGER NOT NULL,
    bytes_in       INTEGER NOT NULL,
    bytes_out      INTEGER NOT NULL,
    priority       INTEGER NOT NULL,
    -- connections this row stands for (rollups: many; everything else: 1)
    count          INTEGER NOT NULL DEFAULT 1,
    username       TEXT,
    password       TEXT,
    payload_sha256 TEXT,
    url            TEXT,
    -- JSON object of the detail's flat fields
    fields         TEXT NOT NULL,
    UNIQUE (sensor_id, seq)
);
CREATE INDEX IF NOT EXISTS events_time ON events(time_ms);
CREATE INDEX IF NOT EXISTS events_kind ON events(kind, time_ms);
-- No query reads these two (reports use the analytics tables; export and retention use
-- events_time); each cost a random B-tree insert per event, halving the ingest rate.
DROP INDEX IF EXISTS events_src;
DROP INDEX IF EXISTS events_sensor_time;
"#;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("database {path} has schema version {found}, newer than this admin ({DB_VERSION}); upgrade drosera-admin")]
    TooNew { path: String, found: i64 },
}

/// Opens (creating if needed) the admin database with WAL and the schema applied.
pub fn open(path: &Path) -> Result<Connection, DbError> {
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    let found: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if found > DB_VERSION {
        return Err(DbError::TooNew { path: path.display().to_string(), found });
    }
    conn.execute_batch(SCHEMA)?;
    conn.pragma_update(None, "user_version", DB_VERSION)?;
    Ok(conn)
}

/// Returns the id of sensor `name`, creating its row if needed.
pub fn sensor_id(tx: &Transaction<'_>, name: &str) -> rusqlite::Result<i64> {
    tx.execute("INSERT OR IGNORE INTO sensors(name) VALUES (?1)", params![name])?;
    tx.query_row("SELECT id FROM sensors WHERE name = ?1", params![name], |r| r.get(0))
}

/// Inserts one event for `sensor_id`; returns false if (sensor, seq) was already stored.
pub fn insert_event(tx: &Transaction<'_>, sensor_id: i64, ev: &Event) -> rusqlite::Result<bool> {
    let mut username = None;
    let mut password = None;
    let mut payload_sha256 = None;
    let mut url = None;
    let mut count: i64 = 1;
    match &ev.detail {
        Detail::Login { username: u, secret, .. } => {
            username = Some(u.clone());
            password = match secret {
                Secret::Password(p) => Some(p.clone()),
                Secret::Hash { value, .. } => Some(value.clone()),
                Secret::PublicKey { fingerprint, .. } => Some(fingerprint.clone()),
                Secret::None => None,
            };
        }
        Detail::Payload { sha256, .. } => payload_sha256 = Some(hex::encode(sha256)),
        Detail::DownloadOffered { url: u, .. } => url = Some(u.clone()),
        Detail::Rollup { connections, .. } => count = (*connections).min(i64::MAX as u64) as i64,
        _ => {}
    }
    let fields = fields_json(ev.detail.to_fields());
    let mut stmt = tx.prepare_cached(
        "INSERT OR IGNORE INTO events (sensor_id, seq, time_ms, transport, protocol, kind, src_ip, src_port,
            dst_port, session_id, duration_ms, bytes_in, bytes_out, priority, count, username, password,
            payload_sha256, url, fields)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20)",
    )?;
    let n = stmt.execute(params![
        sensor_id,
        ev.seq as i64,
        ev.time_ms,
        ev.transport.as_str(),
        ev.protocol.as_str(),
        ev.detail.kind(),
        ev.src_ip.to_string(),
        ev.src_port,
        ev.dst_port,
        ev.session_id as i64,
        ev.duration_ms,
        ev.bytes_in as i64,
        ev.bytes_out as i64,
        ev.priority.as_u8(),
        count,
        username,
        password,
        payload_sha256,
        url,
        fields,
    ])?;
    Ok(n == 1)
}

/// The detail's flat fields as a JSON object of strings, keys sorted (the last of a repeated key
/// wins), written straight into one string: this runs once per ingested event.
fn fields_json(mut pairs: Vec<(String, String)>) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;
    use drosera_uplink::event::{Priority, Protocol, Transport};

    #[test]
    fn insert_is_idempotent_per_sensor_and_seq() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = open(&dir.path().join("a.db")).unwrap();
        let ev = Event {
            seq: 7,
            time_ms: 1,
            sensor: "s".into(),
            transport: Transport::Tcp,
            protocol: Protocol::Telnet,
            src_ip: "203.0.113.1".parse().unwrap(),
            src_port: 1,
            dst_port: 23,
            session_id: 3,
            duration_ms: 0,
            bytes_in: 0,
            bytes_out: 0,
            priority: Priority::Credential,
            detail: Detail::Login {
                username: "root".into(),
                secret: Secret::Password("xc3511".into()),
                success: false,
                extra: vec![],
            },
        };
        let tx = conn.transaction().unwrap();
        let id = sensor_id(&tx, "s").unwrap();
        assert!(insert_event(&tx, id, &ev).unwrap());
        assert!(!insert_event(&tx, id, &ev).unwrap());
        tx.commit().unwrap();
        let (u, p): (String, String) =
            conn.query_row("SELECT username, password FROM events", [], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
        assert_eq!((u.as_str(), p.as_str()), ("root", "xc3511"));
    }

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
