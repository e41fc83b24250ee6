//! The SQLite backend: one [`rusqlite::Connection`] per user (the ingest writer, the dashboard,
//! each CLI command), in WAL mode so readers never block the writer.
//!
//! The connection itself implements [`Storage`]; the SQL lives in one file per area (`ingest`,
//! `sensors`, `users`, `analytics`, `export`, `retention`) and the schema in [`schema`].
//! Multi-statement writes run in `unchecked_transaction`s (the trait takes `&self`; one
//! connection is used by one thread at a time).

mod analytics;
mod drill;
mod exploits;
mod export;
mod ingest;
mod labels;
mod recovered;
mod retention;
mod samples;
pub mod schema;
mod sensors;
mod users;

pub use ingest::{insert_event, sensor_id};

use super::*;
use rusqlite::types::ValueRef;
use rusqlite::Connection;
use std::path::Path;

/// Opens (creating if needed) the database at `path` with WAL and the schema migrated. The file
/// is private to the admin's user (mode 0600; SQLite gives its -wal and -shm files the same
/// mode): it holds every credential attackers tried and the dashboard's password hashes.
pub fn open(path: &Path) -> Result<Connection, StorageError> {
    let name = path.display().to_string();
    let err = |error| StorageError::Open { path: name.clone(), error };
    make_private(path).map_err(|e| StorageError::Open {
        path: name.clone(),
        error: rusqlite::Error::ToSqlConversionFailure(Box::new(e)),
    })?;
    let conn = Connection::open(path).map_err(err)?;
    conn.pragma_update(None, "journal_mode", "WAL").map_err(err)?;
    configure(&conn).map_err(err)?;
    schema::migrate(&conn, &name)?;
    Ok(conn)
}

/// Creates `path` empty with mode 0600 if it does not exist (an empty file is an empty SQLite
/// database), or takes group and other permissions away from an existing one.
fn make_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let mode = std::fs::metadata(path)?.permissions().mode();
            if mode & 0o077 != 0 {
                tracing::warn!(path = %path.display(), mode = format!("{:o}", mode & 0o777), "database readable by others; setting mode 0600");
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o7700))?;
            }
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// A private in-memory database with the schema (for tests).
pub fn open_in_memory() -> Result<Connection, StorageError> {
    let conn = Connection::open_in_memory()?;
    configure(&conn)?;
    schema::migrate(&conn, ":memory:")?;
    Ok(conn)
}

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.busy_timeout(std::time::Duration::from_secs(10))
}

/// Column `i` as text borrowed from the row, NULL as "" (what `Option<String>` then
/// `unwrap_or_default` gives); other types are an error, as for `String`.
fn text<'a>(row: &'a rusqlite::Row<'_>, i: usize) -> rusqlite::Result<&'a str> {
    Ok(opt_text(row, i)?.unwrap_or(""))
}

/// Column `i` as optional text borrowed from the row.
fn opt_text<'a>(row: &'a rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Option<&'a str>> {
    match row.get_ref(i)? {
        ValueRef::Null => Ok(None),
        ValueRef::Text(b) => std::str::from_utf8(b).map(Some).map_err(rusqlite::Error::Utf8Error),
        other => Err(rusqlite::Error::InvalidColumnType(i, String::new(), other.data_type())),
    }
}

impl Storage for Connection {
    fn enrollment(&self, name: &str) -> Result<Option<Enrollment>, StorageError> {
        sensors::enrollment(self, name)
    }
    fn register_sensor(&self, name: &str, cert_sha256: &str, now_ms: i64) -> Result<Registered, StorageError> {
        sensors::register(self, name, cert_sha256, now_ms)
    }
    fn revoke_sensor(&self, name: &str) -> Result<bool, StorageError> {
        sensors::revoke(self, name)
    }
    fn list_sensors(&self) -> Result<Vec<SensorRecord>, StorageError> {
        sensors::list(self)
    }
    fn record_hello(&self, sensor_id: i64, schema_version: u16, now_ms: i64) -> Result<(), StorageError> {
        sensors::record_hello(self, sensor_id, schema_version, now_ms)
    }
    fn touch_sensors(&self, sensor_ids: &[i64], now_ms: i64) -> Result<(), StorageError> {
        sensors::touch(self, sensor_ids, now_ms)
    }
    fn commit_batches(&self, batches: &[BatchIn<'_>], now_ms: i64) -> Result<Vec<BatchOutcome>, StorageError> {
        ingest::commit_batches(self, batches, now_ms)
    }

    fn upsert_user(&self, name: &str, phc: &str, now_ms: i64) -> Result<bool, StorageError> {
        users::upsert(self, name, phc, now_ms)
    }
    fn user_phc(&self, name: &str) -> Result<Option<String>, StorageError> {
        users::phc(self, name)
    }
    fn create_session(&self, s: &NewSession<'_>, now_ms: i64, max_sessions: i64) -> Result<(), StorageError> {
        users::create_session(self, s, now_ms, max_sessions)
    }
    fn session(&self, token_sha256: &str, now_ms: i64) -> Result<Option<SessionRecord>, StorageError> {
        users::session(self, token_sha256, now_ms)
    }
    fn end_session(&self, token_sha256: &str) -> Result<(), StorageError> {
        users::end_session(self, token_sha256)
    }

    fn create_api_token(&self, t: &NewApiToken<'_>, max_live: i64) -> Result<bool, StorageError> {
        users::create_api_token(self, t, max_live)
    }

    fn api_tokens(&self, user: &str) -> Result<Vec<ApiTokenRecord>, StorageError> {
        users::api_tokens(self, user)
    }

    fn revoke_api_token(&self, user: &str, id: &str, now_ms: i64) -> Result<bool, StorageError> {
        users::revoke_api_token(self, user, id, now_ms)
    }

    fn api_token_user(&self, token_sha256: &str, now_ms: i64) -> Result<Option<String>, StorageError> {
        users::api_token_user(self, token_sha256, now_ms)
    }

    fn fold_events(&self, limit: u64, fold: &mut FoldFn<'_>) -> Result<u64, StorageError> {
        analytics::fold_events(self, limit, fold)
    }
    fn sensor_id(&self, name: &str) -> Result<Option<i64>, StorageError> {
        analytics::sensor_id_of(self, name)
    }
    fn hourly_from(&self) -> Result<i64, StorageError> {
        analytics::hourly_from(self)
    }
    fn kind_sums(&self, r: &AggRange) -> Result<Vec<KindSum>, StorageError> {
        analytics::kind_sums(self, r)
    }
    fn protocol_sums(&self, r: &AggRange) -> Result<Vec<ProtocolSum>, StorageError> {
        analytics::protocol_sums(self, r)
    }
    fn port_sums(&self, r: &AggRange, limit: i64) -> Result<Vec<PortSum>, StorageError> {
        analytics::port_sums(self, r, limit)
    }
    fn scan_sources(&self, r: &AggRange, f: &mut dyn FnMut(SrcAgg)) -> Result<(), StorageError> {
        analytics::scan_sources(self, r, f)
    }
    fn scan_credentials(&self, r: &AggRange, f: &mut dyn FnMut(CredAgg)) -> Result<(), StorageError> {
        analytics::scan_credentials(self, r, f)
    }
    fn timeline_bounds(&self, src: &TimelineSource, sensor_id: i64) -> Result<Option<(i64, i64)>, StorageError> {
        analytics::timeline_bounds(self, src, sensor_id)
    }
    fn timeline_sums(
        &self,
        src: &TimelineSource,
        sensor_id: i64,
        first: i64,
        last: i64,
    ) -> Result<Vec<BucketSum>, StorageError> {
        analytics::timeline_sums(self, src, sensor_id, first, last)
    }
    fn sensor_names(&self) -> Result<Vec<(i64, String)>, StorageError> {
        analytics::sensor_names(self)
    }
    fn scan_items(
        &self,
        kind: ItemKind,
        range: &EventRange,
        f: &mut dyn FnMut(ItemRef<'_>) -> ControlFlow<()>,
    ) -> Result<(), StorageError> {
        analytics::scan_items(self, kind, range, f)
    }
    fn scan_windows(
        &self,
        range: &EventRange,
        f: &mut dyn FnMut(ScanRef<'_>) -> ControlFlow<()>,
    ) -> Result<(), StorageError> {
        analytics::scan_windows(self, range, f)
    }
    fn string_of(&self, id: i64) -> Result<String, StorageError> {
        analytics::string_of(self, id)
    }
    fn ip_of(&self, id: i64) -> Result<Option<IpRecord>, StorageError> {
        analytics::ip_of(self, id)
    }
    fn sensor_health(&self, name: Option<&str>) -> Result<Vec<SensorHealthRecord>, StorageError> {
        analytics::sensor_health(self, name)
    }

    fn scan_matchable(
        &self,
        after: (i64, i64),
        limit: i64,
        f: &mut dyn FnMut(&MatchRow<'_>),
    ) -> Result<Option<(i64, i64)>, StorageError> {
        exploits::scan_matchable(self, after, limit, f)
    }

    fn set_derived(&self, rows: &[DerivedUpdate]) -> Result<u64, StorageError> {
        exploits::set_derived(self, rows)
    }

    fn export_events(
        &self,
        range: &EventRange,
        f: &mut dyn FnMut(&ExportRow<'_>) -> ControlFlow<()>,
    ) -> Result<(), StorageError> {
        export::export_events(self, range, f)
    }

    fn delete_events_before(&self, before_ms: i64, chunk: i64) -> Result<u64, StorageError> {
        retention::delete_events_before(self, before_ms, chunk)
    }
    fn delete_oldest_events(&self, chunk: i64) -> Result<u64, StorageError> {
        retention::delete_oldest_events(self, chunk)
    }
    fn used_bytes(&self) -> Result<u64, StorageError> {
        retention::used_bytes(self)
    }
    fn oldest_event_ms(&self) -> Result<Option<i64>, StorageError> {
        retention::oldest_event_ms(self)
    }
    fn prune_hourly(&self, before_ms: i64) -> Result<u64, StorageError> {
        retention::prune_hourly(self, before_ms)
    }
    fn prune_rollups(&self, before_ms: i64) -> Result<u64, StorageError> {
        retention::prune_rollups(self, before_ms)
    }

    fn labels(&self) -> Result<Vec<LabelRecord>, StorageError> {
        labels::labels(self)
    }
    fn put_label(&self, rec: &LabelRecord, max: u32) -> Result<bool, StorageError> {
        labels::put_label(self, rec, max)
    }
    fn remove_label(&self, cidr: &str) -> Result<bool, StorageError> {
        labels::remove_label(self, cidr)
    }
    fn raw_from(&self) -> Result<i64, StorageError> {
        labels::raw_from(self)
    }
    fn set_raw_from(&self, ms: i64) -> Result<(), StorageError> {
        labels::set_raw_from(self, ms)
    }
    fn refold_classes(&self, from: [i64; 3], fold: &mut FoldFn<'_>) -> Result<u64, StorageError> {
        analytics::refold_classes(self, from, fold)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    /// The database, its WAL and shared-memory files are private to the admin's user, and a
    /// world-readable database left by an older admin is made private when opened.
    #[test]
    fn the_database_files_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.db");
        let conn = super::open(&path).unwrap();
        conn.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);").unwrap();
        for f in ["admin.db", "admin.db-wal", "admin.db-shm"] {
            let mode = std::fs::metadata(dir.path().join(f)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{f}");
        }
        drop(conn);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        drop(super::open(&path).unwrap());
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }
}
