//! `drosera-admin migrate --from sqlite:PATH --to postgres://…`: moves an install from the
//! embedded SQLite database to PostgreSQL, every table, in one PostgreSQL transaction.
//!
//! WHY a copy of the tables and not a replay through ingest: ids are kept (the aggregates refer
//! to address and string ids, sessions and users move as they are), what was already folded is
//! not folded again, and what was not is folded by the next refresh. The fold cursor maps over
//! like this: SQLite's cursor is an event id; rows it covers get `txid` 1, the others `txid` 2,
//! and the PostgreSQL cursor becomes `(1, i64::MAX)`, so exactly the unfolded rows are after it
//! (live ingest then writes real transaction ids, which are larger).
//!
//! The target must be empty (no sensors, events or users): a migration never merges. Row counts
//! of every table are compared after the copy, inside the transaction, so a mismatch commits
//! nothing.

use super::postgres::{self, Postgres};
use super::{sqlite, Backend, StorageError, DAY_MS};
use rusqlite::types::Value;
use std::collections::BTreeSet;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};

/// Rows copied, per table, in copy order.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct CopyStats {
    pub tables: Vec<(String, u64)>,
}

/// One table's copy: its columns (same names on both sides) and their PostgreSQL types.
struct Table {
    name: &'static str,
    cols: &'static [(&'static str, Type)],
}

const B: Type = Type::INT8;
const T: Type = Type::TEXT;

/// Everything but `events`, `analytics_state` and `label_state` (which need mapping), in dependency order.
const TABLES: &[Table] = &[
    Table {
        name: "sensors",
        cols: &[
            ("id", B),
            ("name", T),
            ("cert_sha256", T),
            ("created_ms", B),
            ("revoked", Type::BOOL),
            ("last_contact_ms", B),
            ("high_water_seq", B),
            ("schema_version", B),
            ("health_json", T),
            ("evicted_total", B),
            ("shed_total", B),
        ],
    },
    Table { name: "ip_info", cols: &[("id", B), ("ip", T), ("country", T), ("cc", B), ("asn", B), ("as_org", T)] },
    Table { name: "strings", cols: &[("id", B), ("s", T)] },
    Table {
        name: "agg_kind",
        cols: &[("res", B), ("bucket", B), ("sensor_id", B), ("protocol", T), ("kind", T), ("rows", B), ("n", B)],
    },
    Table {
        name: "agg_port",
        cols: &[("res", B), ("bucket", B), ("sensor_id", B), ("protocol", T), ("dst_port", B), ("attempts", B)],
    },
    Table {
        name: "agg_src",
        cols: &[
            ("res", B),
            ("sensor_id", B),
            ("bucket", B),
            ("ip_id", B),
            ("cc", B),
            ("attempts", B),
            ("logins", B),
            ("events", B),
            ("first_ms", B),
            ("last_ms", B),
        ],
    },
    Table {
        name: "agg_cred",
        cols: &[("res", B), ("sensor_id", B), ("bucket", B), ("user_id", B), ("pass_id", B), ("n", B)],
    },
    Table { name: "users", cols: &[("name", T), ("phc", T), ("created_ms", B)] },
    Table { name: "dashboard_sessions", cols: &[("token_sha256", T), ("user", T), ("csrf", T), ("expires_ms", B)] },
    Table { name: "labels", cols: &[("cidr", T), ("label", T), ("note", T), ("created_ms", B)] },
    // API tokens (SQLite schema version 6, PostgreSQL version 5).
    Table {
        name: "api_tokens",
        cols: &[
            ("id", T),
            ("user", T),
            ("name", T),
            ("token_sha256", T),
            ("created_ms", B),
            ("last_used_ms", B),
            ("revoked_ms", B),
        ],
    },
    // Samples (SQLite schema version 4, PostgreSQL version 3); the files stay in [samples] dir.
    Table {
        name: "samples",
        cols: &[
            ("sha256", T),
            ("md5", T),
            ("sha1", T),
            ("size", B),
            ("stored_bytes", B),
            ("file_type", T),
            ("rules_version", T),
            ("stored_ms", B),
            ("first_seen_ms", B),
            ("last_seen_ms", B),
        ],
    },
    Table { name: "sample_names", cols: &[("sha256", T), ("name", T)] },
    Table {
        name: "sample_sightings",
        cols: &[
            ("sensor_id", B),
            ("seq", B),
            ("sha256", T),
            ("time_ms", B),
            ("src_ip", T),
            ("protocol", T),
            ("source", T),
            ("outcome", T),
            ("name", T),
        ],
    },
    Table { name: "sample_matches", cols: &[("sha256", T), ("namespace", T), ("rule", T), ("tags", T)] },
    Table {
        name: "sample_rejections",
        cols: &[("id", B), ("time_ms", B), ("sensor_id", B), ("sha256", T), ("reason", T)],
    },
];

/// The event columns copied as they are (after `id` and `txid`).
const EVENT_COLS: &[(&str, Type)] = &[
    ("sensor_id", B),
    ("seq", B),
    ("time_ms", B),
    ("transport", T),
    ("protocol", T),
    ("kind", T),
    ("src_ip", T),
    ("src_port", Type::INT4),
    ("dst_port", Type::INT4),
    ("session_id", B),
    ("duration_ms", B),
    ("bytes_in", B),
    ("bytes_out", B),
    ("priority", Type::INT2),
    ("count", B),
    ("username", T),
    ("password", T),
    ("payload_sha256", T),
    ("url", T),
    ("fields", T),
];

/// A SQLite value as the PostgreSQL type of its column.
enum Cell {
    /// NULL of a text column (each type has its own NULL in binary COPY).
    NullText,
    Null,
    I8(i64),
    I4(i32),
    I2(i16),
    Bool(bool),
    Text(String),
}

impl Cell {
    fn of(v: Value, ty: &Type, col: &str) -> Result<Cell, StorageError> {
        let bad = || StorageError::Postgres(format!("column {col}: unexpected SQLite value"));
        Ok(match v {
            Value::Null if *ty == Type::TEXT => Cell::NullText,
            Value::Null if *ty == Type::INT8 => Cell::Null,
            Value::Integer(i) if *ty == Type::BOOL => Cell::Bool(i != 0),
            Value::Integer(i) if *ty == Type::INT4 => Cell::I4(i32::try_from(i).map_err(|_| bad())?),
            Value::Integer(i) if *ty == Type::INT2 => Cell::I2(i16::try_from(i).map_err(|_| bad())?),
            Value::Integer(i) if *ty == Type::INT8 => Cell::I8(i),
            Value::Text(s) if *ty == Type::TEXT => Cell::Text(s),
            Value::Blob(b) if *ty == Type::TEXT => Cell::Text(String::from_utf8_lossy(&b).into_owned()),
            _ => return Err(bad()),
        })
    }

    fn sql(&self) -> &(dyn ToSql + Sync) {
        match self {
            Cell::NullText => &None::<&str>,
            Cell::Null => &None::<i64>,
            Cell::I8(v) => v,
            Cell::I4(v) => v,
            Cell::I2(v) => v,
            Cell::Bool(v) => v,
            Cell::Text(v) => v,
        }
    }
}

/// Copies the SQLite database of `from` into the empty PostgreSQL database of `to`.
pub fn migrate(from: &Backend, to: &Backend) -> Result<CopyStats, StorageError> {
    let (Backend::Sqlite(path), Backend::Postgres(url)) = (from, to) else {
        return Err(StorageError::Url(
            "migrate copies from sqlite:PATH to postgres://…; other directions are not supported".into(),
        ));
    };
    if !path.is_file() {
        return Err(StorageError::Url(format!("{} does not exist", path.display())));
    }
    // Opening migrates the SQLite file to the current schema first.
    let src = sqlite::open(path)?;
    let dst = Postgres::open(url)?;
    dst.block_on(copy_all(&src, &dst))
}

async fn copy_all(src: &rusqlite::Connection, dst: &Postgres) -> Result<CopyStats, StorageError> {
    let mut c = dst.client().await?;
    let tx = c.transaction().await?;
    let used: i64 = tx
        .query_one(
            "SELECT (SELECT COUNT(*) FROM sensors) + (SELECT COUNT(*) FROM users) + (SELECT COUNT(*) FROM events)",
            &[],
        )
        .await?
        .get(0);
    if used > 0 {
        return Err(StorageError::Postgres(format!(
            "{} is not empty (sensors, users or events exist); migrate only into a new database",
            dst.url()
        )));
    }
    let mut stats = CopyStats::default();
    for t in TABLES {
        let cols: Vec<&str> = t.cols.iter().map(|c| c.0).collect();
        let quoted: Vec<String> = cols.iter().map(|c| format!("\"{c}\"")).collect();
        let select = format!("SELECT {} FROM {}", quoted.join(", "), t.name);
        let copy = format!("COPY {} ({}) FROM STDIN BINARY", t.name, quoted.join(", "));
        let types: Vec<Type> = t.cols.iter().map(|c| c.1.clone()).collect();
        let n = copy_rows(src, &tx, &select, &copy, &types, &cols).await?;
        stats.tables.push((t.name.to_string(), n));
    }

    // Events: partitions for every day first, then the rows with their fold state as `txid`.
    let last_folded: i64 = src.query_row("SELECT last_event_id FROM analytics_state WHERE id = 1", [], |r| r.get(0))?;
    let hourly_from: i64 =
        src.query_row("SELECT hourly_from_ms FROM analytics_state WHERE id = 1", [], |r| r.get(0))?;
    let mut days = BTreeSet::new();
    {
        let mut st = src.prepare("SELECT DISTINCT time_ms / ?1 FROM events")?;
        let rows = st.query_map([DAY_MS], |r| r.get::<_, i64>(0))?;
        for d in rows {
            let d = d?;
            // SQLite divides towards zero: a negative time may belong to the day before.
            days.insert(d);
            if d <= 0 {
                days.insert(d - 1);
            }
        }
    }
    for d in &days {
        tx.batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {} PARTITION OF events FOR VALUES FROM ({}) TO ({})",
            postgres::schema::partition_name(*d),
            d.saturating_mul(DAY_MS),
            d.saturating_add(1).saturating_mul(DAY_MS)
        ))
        .await?;
    }
    let mut cols: Vec<&str> = vec!["id", "txid"];
    cols.extend(EVENT_COLS.iter().map(|c| c.0));
    // What the exploit rules derived, kept beside the event on SQLite, on its row here.
    cols.extend(["derived", "body_text"]);
    // Password recovery's state, likewise (`storage::recovered`).
    cols.extend(["crack_gen", "recovered"]);
    let mut types = vec![B, B];
    types.extend(EVENT_COLS.iter().map(|c| c.1.clone()));
    types.extend([T, T, T, T]);
    let select = format!(
        "SELECT id, CASE WHEN id <= {last_folded} THEN 1 ELSE 2 END, {},
                (SELECT d.derived FROM event_derived d WHERE d.event_id = events.id),
                (SELECT d.body_text FROM event_derived d WHERE d.event_id = events.id),
                (SELECT c.generation FROM event_crack c WHERE c.event_id = events.id),
                (SELECT c.recovered FROM event_crack c WHERE c.event_id = events.id)
         FROM events ORDER BY id",
        EVENT_COLS.iter().map(|c| c.0).collect::<Vec<_>>().join(", ")
    );
    let copy = format!("COPY events ({}) FROM STDIN BINARY", cols.join(", "));
    let n = copy_rows(src, &tx, &select, &copy, &types, &cols).await?;
    stats.tables.push(("events".to_string(), n));
    tx.execute(
        "UPDATE analytics_state SET fold_txid = 1, fold_id = $1, hourly_from_ms = $2 WHERE id = 1",
        &[&i64::MAX, &hourly_from],
    )
    .await?;
    let raw_from: i64 = src.query_row("SELECT raw_from_ms FROM label_state WHERE id = 1", [], |r| r.get(0))?;
    tx.execute("UPDATE label_state SET raw_from_ms = $1 WHERE id = 1", &[&raw_from]).await?;
    // Derived and sequence state.
    tx.batch_execute(
        "UPDATE sensors s SET events_stored = (SELECT COUNT(*) FROM events e WHERE e.sensor_id = s.id);
         SELECT setval('events_id_seq', GREATEST((SELECT MAX(id) FROM events), 1));
         SELECT setval(pg_get_serial_sequence('sensors', 'id'), GREATEST((SELECT MAX(id) FROM sensors), 1));
         SELECT setval(pg_get_serial_sequence('ip_info', 'id'), GREATEST((SELECT MAX(id) FROM ip_info), 1));
         SELECT setval(pg_get_serial_sequence('strings', 'id'), GREATEST((SELECT MAX(id) FROM strings), 1));
         SELECT setval(pg_get_serial_sequence('sample_rejections', 'id'),
                       GREATEST((SELECT MAX(id) FROM sample_rejections), 1));",
    )
    .await?;
    // Every table holds as many rows as its source.
    for (table, n) in &stats.tables {
        let have: i64 = tx.query_one(&format!("SELECT COUNT(*) FROM {table}"), &[]).await?.get(0);
        let had: i64 = src.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))?;
        if have != had || had as u64 != *n {
            return Err(StorageError::Postgres(format!(
                "table {table}: {had} rows in SQLite, {n} copied, {have} in PostgreSQL; nothing was committed"
            )));
        }
    }
    tx.commit().await?;
    // Planner statistics for what was just bulk-loaded, as after a restore. Autovacuum would
    // analyze each table later, but until it does the planner assumes empty tables: a search
    // for `user:root` then sorted all 300,000 logins of a 1 M-event database (1 s) instead of
    // reading the newest through their index (13 ms). Autovacuum never analyzes the
    // partitioned `events` parent itself.
    c.batch_execute("ANALYZE").await?;
    tracing::info!(tables = ?stats.tables, "migrated");
    Ok(stats)
}

/// Streams the rows of `select` (SQLite) into `copy` (PostgreSQL binary COPY); returns rows.
async fn copy_rows(
    src: &rusqlite::Connection,
    tx: &tokio_postgres::Transaction<'_>,
    select: &str,
    copy: &str,
    types: &[Type],
    cols: &[&str],
) -> Result<u64, StorageError> {
    let sink = tx.copy_in(copy).await?;
    let writer = BinaryCopyInWriter::new(sink, types);
    let mut writer = Box::pin(writer);
    let mut st = src.prepare(select)?;
    let mut rows = st.query([])?;
    let mut n = 0u64;
    while let Some(r) = rows.next()? {
        let mut cells = Vec::with_capacity(types.len());
        for (i, ty) in types.iter().enumerate() {
            cells.push(Cell::of(r.get::<_, Value>(i)?, ty, cols[i])?);
        }
        let refs: Vec<&(dyn ToSql + Sync)> = cells.iter().map(Cell::sql).collect();
        writer.as_mut().write(&refs).await?;
        n += 1;
    }
    writer.as_mut().finish().await?;
    Ok(n)
}
