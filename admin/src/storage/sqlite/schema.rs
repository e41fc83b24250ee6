//! The SQLite schema and its migrations: the only place that creates or changes a table.
//!
//! WHY versioned steps: an admin database outlives many admin versions, and several processes
//! open it (`serve`, `report`, `sensor add` …). `PRAGMA user_version` says which steps a database
//! has; [`migrate`] applies the missing ones in order, each in its own `BEGIN IMMEDIATE`
//! transaction together with the new version number, after reading the version again inside
//! that transaction, so two processes opening an old database at once migrate it once. Every
//! step is also idempotent (`IF NOT EXISTS`), because databases written before this module
//! existed have some of the later tables already (the analytics and user tables used to be
//! created on first use, at version 1).
//!
//! A new step is appended to [`MIGRATIONS`]; a shipped step is never edited.

use super::super::StorageError;
use rusqlite::{Connection, TransactionBehavior};

/// Version 1: sensors and raw events, with their two indexes.
///
/// The raw events keep their common fields as columns and their detail as a JSON object of flat
/// fields, with the fields reports need lifted into columns (see `storage::row`). `count` is 1
/// for ordinary events and the number of connections for rollups, so `SUM(count)` counts
/// connections.
const V1_EVENTS: &str = r#"
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
"#;

/// Version 2: the analytics aggregates and their covering indexes, dashboard users and
/// sessions (all created on first use before version 2), and two dropped event indexes.
const V2_ANALYTICS_USERS: &str = r#"
-- No query reads these two (reports use the analytics tables; export and retention use
-- events_time); each cost a random B-tree insert per event, halving the ingest rate. Databases
-- written before they were dropped still have them at version 1.
DROP INDEX IF EXISTS events_src;
DROP INDEX IF EXISTS events_sensor_time;

CREATE TABLE IF NOT EXISTS analytics_state (
    id             INTEGER PRIMARY KEY CHECK (id = 1),
    -- events with id up to this one are folded into the aggregates
    last_event_id  INTEGER NOT NULL,
    -- hour rows older than this were pruned by retention (day rows remain)
    hourly_from_ms INTEGER NOT NULL DEFAULT 0
);
INSERT OR IGNORE INTO analytics_state(id, last_event_id) VALUES (1, 0);
-- enrichment cache; `id` is what the aggregates store, `cc` the packed country (see cc_code)
CREATE TABLE IF NOT EXISTS ip_info (
    id      INTEGER PRIMARY KEY,
    ip      TEXT NOT NULL UNIQUE,
    country TEXT NOT NULL,
    cc      INTEGER NOT NULL,
    asn     INTEGER,
    as_org  TEXT NOT NULL DEFAULT ''
);
-- user names and passwords, interned so the credential aggregates hold integers
CREATE TABLE IF NOT EXISTS strings (
    id INTEGER PRIMARY KEY,
    s  TEXT NOT NULL UNIQUE
);
-- Aggregates at three resolutions (res 0 = hour, 1 = day, 2 = week; `bucket` = its start, ms),
-- once per sensor and once for all sensors together (sensor_id = 0), keyed so that every query
-- is one index range scan per span.
CREATE TABLE IF NOT EXISTS agg_kind (
    res INTEGER NOT NULL, bucket INTEGER NOT NULL, sensor_id INTEGER NOT NULL,
    protocol TEXT NOT NULL, kind TEXT NOT NULL,
    rows INTEGER NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (res, sensor_id, bucket, protocol, kind)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS agg_port (
    res INTEGER NOT NULL, bucket INTEGER NOT NULL, sensor_id INTEGER NOT NULL,
    protocol TEXT NOT NULL, dst_port INTEGER NOT NULL, attempts INTEGER NOT NULL,
    PRIMARY KEY (res, sensor_id, bucket, protocol, dst_port)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS agg_src (
    res INTEGER NOT NULL, sensor_id INTEGER NOT NULL, bucket INTEGER NOT NULL, ip_id INTEGER NOT NULL,
    cc INTEGER NOT NULL, attempts INTEGER NOT NULL, logins INTEGER NOT NULL, events INTEGER NOT NULL,
    first_ms INTEGER NOT NULL, last_ms INTEGER NOT NULL,
    PRIMARY KEY (res, sensor_id, bucket, ip_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS agg_cred (
    res INTEGER NOT NULL, sensor_id INTEGER NOT NULL, bucket INTEGER NOT NULL,
    user_id INTEGER NOT NULL, pass_id INTEGER NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (res, sensor_id, bucket, user_id, pass_id)
) WITHOUT ROWID;
-- Covering indexes for the rare kinds the item lists read (payloads, exploits, downloads), one
-- partial index per kind holding every column the list reads: a 30-day list is then one
-- sequential index scan instead of one random read of the events table per row (~3 us each;
-- 160 ms per list at 10 M events through events_kind). Ingest maintains them only for those
-- ~1.5 % of events. Built once (a scan of `events`) when a database reaches this version.
CREATE INDEX IF NOT EXISTS events_payload
    ON events(kind, time_ms, sensor_id, src_ip, payload_sha256, fields) WHERE kind = 'payload';
CREATE INDEX IF NOT EXISTS events_exploit
    ON events(kind, time_ms, sensor_id, src_ip, fields) WHERE kind = 'exploit';
CREATE INDEX IF NOT EXISTS events_download
    ON events(kind, time_ms, sensor_id, src_ip, url, fields) WHERE kind = 'download_offered';

-- Dashboard users (argon2id PHC strings) and login sessions (only the token's SHA-256).
CREATE TABLE IF NOT EXISTS users (
    name       TEXT PRIMARY KEY,
    phc        TEXT NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS dashboard_sessions (
    token_sha256 TEXT PRIMARY KEY,
    user         TEXT NOT NULL,
    -- random per-session value the login and logout forms must echo (CSRF)
    csrf         TEXT NOT NULL,
    expires_ms   INTEGER NOT NULL
);
"#;

/// Every step, in order: (the version a database has after it, its SQL).
pub const MIGRATIONS: [(i64, &str); 2] = [(1, V1_EVENTS), (2, V2_ANALYTICS_USERS)];

/// The schema version this admin writes (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = MIGRATIONS[MIGRATIONS.len() - 1].0;

fn user_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.pragma_query_value(None, "user_version", |r| r.get(0))
}

/// Brings the database to [`SCHEMA_VERSION`]; `path` only names it in errors. A database newer
/// than this admin is refused untouched.
pub fn migrate(conn: &Connection, path: &str) -> Result<(), StorageError> {
    let too_new = |found| StorageError::TooNew { path: path.to_string(), found, supported: SCHEMA_VERSION };
    let found = user_version(conn).map_err(|source| StorageError::Open { path: path.to_string(), source })?;
    if found > SCHEMA_VERSION {
        return Err(too_new(found));
    }
    for (version, sql) in MIGRATIONS {
        if version <= found {
            continue;
        }
        let err = |source| StorageError::Migrate { path: path.to_string(), version, source };
        let tx = rusqlite::Transaction::new_unchecked(conn, TransactionBehavior::Immediate).map_err(err)?;
        // Another process may have migrated since we looked.
        let now = user_version(&tx).map_err(err)?;
        if now > SCHEMA_VERSION {
            return Err(too_new(now));
        }
        if now >= version {
            continue;
        }
        tx.execute_batch(sql).map_err(err)?;
        tx.pragma_update(None, "user_version", version).map_err(err)?;
        tx.commit().map_err(err)?;
        tracing::debug!(path, version, "database migrated");
    }
    Ok(())
}
