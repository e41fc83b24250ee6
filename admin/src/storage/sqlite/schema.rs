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

/// Version 4: malware samples (issue 15). `samples` has one row per sample whose bytes the admin
/// holds (in the sample store on disk, by sha256); sightings and names come from the sensors'
/// Sample events at ingest, whether or not the bytes arrived.
const V4_SAMPLES: &str = r#"
CREATE TABLE IF NOT EXISTS samples (
    sha256        TEXT PRIMARY KEY,
    md5           TEXT NOT NULL,
    sha1          TEXT NOT NULL,
    size          INTEGER NOT NULL,
    stored_bytes  INTEGER NOT NULL,
    file_type     TEXT NOT NULL,
    rules_version TEXT NOT NULL,
    stored_ms     INTEGER NOT NULL,
    first_seen_ms INTEGER NOT NULL,
    last_seen_ms  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS samples_last_seen ON samples(last_seen_ms);
CREATE TABLE IF NOT EXISTS sample_names (
    sha256 TEXT NOT NULL,
    name   TEXT NOT NULL,
    PRIMARY KEY (sha256, name)
);
CREATE TABLE IF NOT EXISTS sample_sightings (
    sensor_id INTEGER NOT NULL,
    seq       INTEGER NOT NULL,
    sha256    TEXT NOT NULL,
    time_ms   INTEGER NOT NULL,
    src_ip    TEXT NOT NULL,
    protocol  TEXT NOT NULL,
    source    TEXT NOT NULL,
    outcome   TEXT NOT NULL,
    name      TEXT NOT NULL,
    PRIMARY KEY (sensor_id, seq)
);
CREATE INDEX IF NOT EXISTS sample_sightings_sha ON sample_sightings(sha256, time_ms);
CREATE TABLE IF NOT EXISTS sample_matches (
    sha256    TEXT NOT NULL,
    namespace TEXT NOT NULL,
    rule      TEXT NOT NULL,
    tags      TEXT NOT NULL,
    PRIMARY KEY (sha256, namespace, rule)
);
CREATE INDEX IF NOT EXISTS sample_matches_rule ON sample_matches(rule);
CREATE TABLE IF NOT EXISTS sample_rejections (
    id        INTEGER PRIMARY KEY,
    time_ms   INTEGER NOT NULL,
    sensor_id INTEGER NOT NULL,
    sha256    TEXT NOT NULL,
    reason    TEXT NOT NULL
);
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

/// Version 3: address labels (`drosera-admin label`, `crate::labels`) and where raw events
/// start after retention (what a relabel can rebuild).
const V3_LABELS: &str = r#"
CREATE TABLE IF NOT EXISTS labels (
    cidr       TEXT PRIMARY KEY,
    label      TEXT NOT NULL,
    note       TEXT NOT NULL DEFAULT '',
    created_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS label_state (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    -- raw events before this time were deleted by retention (0: none ever)
    raw_from_ms INTEGER NOT NULL DEFAULT 0
);
INSERT OR IGNORE INTO label_state(id) VALUES (1);
"#;

/// Version 5: what the exploit rules derive from an event (`crate::exploits`), beside it.
///
/// A table of its own (one row per event with something derived or an HTTP body kept, keyed by
/// the event's id) rather than columns of `events`: the step stays idempotent like the others
/// (SQLite has no `ADD COLUMN IF NOT EXISTS`), and the item lists read it through its own
/// partial index. A trigger deletes an event's row with the event (retention), looking only at
/// the kinds the rules read.
const V5_DERIVED: &str = r#"
CREATE TABLE IF NOT EXISTS event_derived (
    event_id  INTEGER PRIMARY KEY,
    sensor_id INTEGER NOT NULL,
    time_ms   INTEGER NOT NULL,
    src_ip    TEXT NOT NULL,
    -- JSON of exploits::Derived; NULL when nothing was derived
    derived   TEXT,
    -- an HTTP body's first bytes as text, for reclassify
    body_text TEXT
);
CREATE INDEX IF NOT EXISTS event_derived_time
    ON event_derived(time_ms, sensor_id, src_ip, derived) WHERE derived IS NOT NULL;
CREATE TRIGGER IF NOT EXISTS event_derived_gone AFTER DELETE ON events
    WHEN old.kind IN ('http_request', 'payload', 'form_body', 'command')
    BEGIN DELETE FROM event_derived WHERE event_id = old.id; END;
"#;

/// Version 6: the drill-down's indexes (issue 21): every event of one address (attacker page,
/// address search) and of one connection (session page) is one index range scan instead of a
/// scan of `events`. Each costs ingest one more B-tree insert per event (see
/// `docs/benchmarks.md`); built once (a scan of `events`) when a database reaches this version.
const V6_DRILL: &str = r#"
CREATE INDEX IF NOT EXISTS events_source ON events(src_ip, time_ms);
CREATE INDEX IF NOT EXISTS events_session ON events(sensor_id, session_id, seq);
"#;

/// Version 7: password recovery (`crate::recover`, `storage::recovered`): one row per login
/// event a run tried, with the candidate-list generation it was tried with and the password
/// once recovered. A table (as `event_derived`), deleted with its event by a trigger that looks
/// only at logins; the report reads recovered rows through their partial index.
const V7_RECOVERED: &str = r#"
CREATE TABLE IF NOT EXISTS event_crack (
    event_id     INTEGER PRIMARY KEY,
    sensor_id    INTEGER NOT NULL,
    time_ms      INTEGER NOT NULL,
    protocol     TEXT NOT NULL,
    username     TEXT NOT NULL,
    -- hash of the candidate list it was tried with
    generation   TEXT NOT NULL,
    -- the password, once recovered
    recovered    TEXT,
    recovered_ms INTEGER
);
CREATE INDEX IF NOT EXISTS event_crack_recovered ON event_crack(time_ms) WHERE recovered IS NOT NULL;
CREATE TRIGGER IF NOT EXISTS event_crack_gone AFTER DELETE ON events
    WHEN old.kind = 'login'
    BEGIN DELETE FROM event_crack WHERE event_id = old.id; END;
"#;

/// Version 8: per-user API tokens (issue 21, `drosera-admin user token`): only each token's
/// SHA-256 is kept, like sessions'.
const V8_API_TOKENS: &str = r#"
CREATE TABLE IF NOT EXISTS api_tokens (
    id           TEXT PRIMARY KEY,
    user         TEXT NOT NULL,
    name         TEXT NOT NULL,
    token_sha256 TEXT NOT NULL UNIQUE,
    created_ms   INTEGER NOT NULL,
    last_used_ms INTEGER NOT NULL DEFAULT 0,
    revoked_ms   INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS api_tokens_user ON api_tokens(user);
"#;

/// Version 9: URLs the opt-in fetcher took (issue 15), one row per URL so it is fetched once
/// across restarts, with what fetching it gave. Bounded by `[fetcher] remembered_urls`.
const V9_FETCHES: &str = r#"
CREATE TABLE IF NOT EXISTS sample_fetches (
    id         INTEGER PRIMARY KEY,
    url        TEXT NOT NULL UNIQUE,
    -- the event that offered it
    sensor_id  INTEGER NOT NULL,
    seq        INTEGER NOT NULL,
    offered_ms INTEGER NOT NULL,
    src_ip     TEXT NOT NULL,
    protocol   TEXT NOT NULL,
    -- queued, fetched, refused, failed, shed
    state      TEXT NOT NULL,
    done_ms    INTEGER,
    status     INTEGER,
    size       INTEGER,
    sha256     TEXT,
    error      TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS sample_fetches_state ON sample_fetches(state, id);
"#;

/// Every step, in order: (the version a database has after it, its SQL).
pub const MIGRATIONS: [(i64, &str); 9] = [
    (1, V1_EVENTS),
    (2, V2_ANALYTICS_USERS),
    (3, V3_LABELS),
    (4, V4_SAMPLES),
    (5, V5_DERIVED),
    (6, V6_DRILL),
    (7, V7_RECOVERED),
    (8, V8_API_TOKENS),
    (9, V9_FETCHES),
];

/// The schema version this admin writes (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = MIGRATIONS[MIGRATIONS.len() - 1].0;

fn user_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.pragma_query_value(None, "user_version", |r| r.get(0))
}

/// Brings the database to [`SCHEMA_VERSION`]; `path` only names it in errors. A database newer
/// than this admin is refused untouched.
pub fn migrate(conn: &Connection, path: &str) -> Result<(), StorageError> {
    let too_new = |found| StorageError::TooNew { path: path.to_string(), found, supported: SCHEMA_VERSION };
    let found = user_version(conn).map_err(|error| StorageError::Open { path: path.to_string(), error })?;
    if found > SCHEMA_VERSION {
        return Err(too_new(found));
    }
    for (version, sql) in MIGRATIONS {
        if version <= found {
            continue;
        }
        let err = |error| StorageError::Migrate { path: path.to_string(), version, error };
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

#[cfg(test)]
mod tests {
    //! Databases as the admin wrote them before this module existed, migrated.
    use super::*;
    use rusqlite::params;

    // The schema of drosera-admin at 73ba0b1, verbatim: `db::SCHEMA` (applied by every open,
    // with user_version 1), `analytics::SCHEMA` (report, dashboard) and `users::SCHEMA`
    // (`user add`, dashboard).
    const OLD_DB: &str = r#"
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
    const OLD_ANALYTICS: &str = r#"
    CREATE TABLE IF NOT EXISTS analytics_state (
        id             INTEGER PRIMARY KEY CHECK (id = 1),
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
    -- Covering indexes for the rare kinds `items` lists (payloads, exploits, downloads), one partial
    -- index per kind holding every column the list reads: a 30-day list is then one sequential
    -- index scan instead of one random read of the events table per row (~3 us each; 160 ms per
    -- list at 10 M events through events_kind). Ingest maintains them only for those ~1.5 % of
    -- events. Built once (a scan of `events`) the first time a database is opened by this version.
    CREATE INDEX IF NOT EXISTS events_payload
        ON events(kind, time_ms, sensor_id, src_ip, payload_sha256, fields) WHERE kind = 'payload';
    CREATE INDEX IF NOT EXISTS events_exploit
        ON events(kind, time_ms, sensor_id, src_ip, fields) WHERE kind = 'exploit';
    CREATE INDEX IF NOT EXISTS events_download
        ON events(kind, time_ms, sensor_id, src_ip, url, fields) WHERE kind = 'download_offered';
    "#;
    const OLD_USERS: &str = r#"
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

    /// Before e3b1455 the events table had two more indexes (also at version 1).
    const OLDER_INDEXES: &str = "CREATE INDEX IF NOT EXISTS events_src ON events(src_ip, time_ms);
        CREATE INDEX IF NOT EXISTS events_sensor_time ON events(sensor_id, time_ms);";

    fn names(conn: &Connection, kind: &str) -> Vec<String> {
        let mut s = conn.prepare("SELECT name FROM sqlite_master WHERE type = ?1 ORDER BY name").unwrap();
        s.query_map([kind], |r| r.get(0)).unwrap().collect::<Result<_, _>>().unwrap()
    }

    /// A database as the old admin left it: `sql` applied, version 1, one sensor with 3 events.
    fn old_database(path: &std::path::Path, sql: &[&str]) {
        let conn = Connection::open(path).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        for s in sql {
            conn.execute_batch(s).unwrap();
        }
        conn.pragma_update(None, "user_version", 1).unwrap();
        conn.execute(
            "INSERT INTO sensors(name, cert_sha256, created_ms, high_water_seq) VALUES ('pi', 'aa', 1, 3)",
            [],
        )
        .unwrap();
        for seq in 1..=3i64 {
            conn.execute(
                "INSERT INTO events (sensor_id, seq, time_ms, transport, protocol, kind, src_ip, src_port, dst_port,
                    session_id, duration_ms, bytes_in, bytes_out, priority, count, username, password, fields)
                 VALUES (1, ?1, ?2, 'tcp', 'telnet', ?3, '8.8.8.8', 4000, 23, 7, 0, 0, 0, 1, 1, ?4, ?5, '{}')",
                params![
                    seq,
                    1_714_521_600_000 + seq,
                    if seq == 3 { "connection" } else { "login" },
                    (seq < 3).then_some("root"),
                    (seq < 3).then_some("xc3511")
                ],
            )
            .unwrap();
        }
    }

    fn assert_current(conn: &Connection) {
        assert_eq!(user_version(conn).unwrap(), SCHEMA_VERSION);
        let tables = names(conn, "table");
        for t in [
            "agg_cred",
            "agg_kind",
            "agg_port",
            "agg_src",
            "analytics_state",
            "dashboard_sessions",
            "event_derived",
            "events",
            "ip_info",
            "label_state",
            "labels",
            "sensors",
            "strings",
            "users",
            "api_tokens",
        ] {
            assert!(tables.iter().any(|x| x == t), "{t} missing: {tables:?}");
        }
        let indexes = names(conn, "index");
        for i in ["events_download", "events_exploit", "events_kind", "events_payload", "events_time"] {
            assert!(indexes.iter().any(|x| x == i), "{i} missing: {indexes:?}");
        }
        for i in ["events_src", "events_sensor_time"] {
            assert!(!indexes.iter().any(|x| x == i), "{i} still there: {indexes:?}");
        }
        let n: i64 = conn.query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 3, "events kept");
    }

    #[test]
    fn old_databases_migrate_and_keep_their_data() {
        let dir = tempfile::tempdir().unwrap();
        let variants: [(&str, Vec<&str>); 3] = [
            // `serve` before its first report: only the event schema.
            ("events-only.db", vec![OLD_DB]),
            // Older still: the two dropped indexes.
            ("older.db", vec![OLD_DB, OLDER_INDEXES]),
            // Reports and users already created their tables.
            ("full.db", vec![OLD_DB, OLD_ANALYTICS, OLD_USERS]),
        ];
        for (name, sql) in variants {
            let path = dir.path().join(name);
            old_database(&path, &sql);
            let full = sql.len() == 3;
            if full {
                // Folded state and a user must survive the migration.
                let conn = Connection::open(&path).unwrap();
                conn.execute("UPDATE analytics_state SET last_event_id = 2, hourly_from_ms = 5 WHERE id = 1", [])
                    .unwrap();
                conn.execute("INSERT INTO users(name, phc, created_ms) VALUES ('alice', 'x', 1)", []).unwrap();
            }
            let conn = super::super::open(&path).unwrap();
            assert_current(&conn);
            let state: (i64, i64) = conn
                .query_row("SELECT last_event_id, hourly_from_ms FROM analytics_state", [], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .unwrap();
            assert_eq!(state, if full { (2, 5) } else { (0, 0) }, "{name}");
            let users: i64 = conn.query_row("SELECT COUNT(*) FROM users", [], |r| r.get(0)).unwrap();
            assert_eq!(users, i64::from(full), "{name}");
            drop(conn);
            // Opening again changes nothing.
            let mut conn = super::super::open(&path).unwrap();
            assert_current(&conn);
            // The migrated database works through the storage interface.
            let db: &mut dyn crate::storage::Storage = &mut conn;
            let en = crate::enrich::Enricher::new(&Default::default()).unwrap();
            let folded = crate::analytics::refresh(db, &en).unwrap();
            assert_eq!(folded, if full { 1 } else { 3 }, "{name}");
            if !full {
                let q = crate::analytics::Query {
                    since_ms: Some(0),
                    until_ms: Some(1_800_000_000_000),
                    sensor: None,
                    ..Default::default()
                };
                let t = crate::analytics::totals(&*db, &q).unwrap();
                assert_eq!((t.attempts, t.logins, t.attackers), (1, 2, 1), "{name}");
            }
            assert_eq!(db.enrollment("pi").unwrap().map(|e| e.high_water_seq), Some(3));
        }
    }

    #[test]
    fn a_new_database_gets_every_step_and_a_newer_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new.db");
        let conn = super::super::open(&path).unwrap();
        assert_eq!(user_version(&conn).unwrap(), SCHEMA_VERSION);
        assert_eq!(
            names(&conn, "table").len(),
            22,
            "11 tables, 2 of labels since version 3, 5 of samples since version 4, 1 derived since version 5, \
             1 of password recovery since version 7, 1 of API tokens since version 8, 1 of fetches since version 9"
        );
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1).unwrap();
        drop(conn);
        let e = super::super::open(&path).err().unwrap();
        assert!(matches!(e, StorageError::TooNew { found, .. } if found == SCHEMA_VERSION + 1), "{e}");
        assert!(e.to_string().contains("upgrade drosera-admin"), "{e}");
    }

    #[test]
    fn steps_are_idempotent() {
        // Each step applied twice (as on a database that had the tables before its version).
        let conn = Connection::open_in_memory().unwrap();
        for (_, sql) in MIGRATIONS {
            conn.execute_batch(sql).unwrap();
            conn.execute_batch(sql).unwrap();
        }
        let n: i64 = conn.query_row("SELECT COUNT(*) FROM analytics_state", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 1);
    }
}
