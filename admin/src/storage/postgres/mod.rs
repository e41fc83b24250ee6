//! The PostgreSQL backend: for fleets, where several `drosera-admin serve` processes share one
//! database server built for it (see `docs/fleet.md`).
//!
//! # How a blocking trait drives an async driver
//! The driver is tokio-postgres with a deadpool pool (reconnects after a server restart). Each
//! [`Postgres`] owns a small tokio runtime (one worker thread, `drosera-pg`) on which its
//! connections run; every [`Storage`] method checks a client out and drives its futures with
//! that runtime's `Handle::block_on`. The trait's callers run on the ingest writer thread, on
//! `spawn_blocking` threads or in the CLI, where blocking is allowed; calling from an async
//! worker would panic, as the trait's docs say. Row callbacks (`scan_sources`, `export_events`)
//! run inside `block_on` on the calling thread as the rows stream in; the fold callback runs
//! outside it, so its interning may query again.
//!
//! # What differs from SQLite (see the storage module docs)
//! * **Ingest**: one transaction per group; the group's sensor rows are locked
//!   (`SELECT … FOR UPDATE`, in id order so two admins never deadlock) before their high-water
//!   marks are read, so two admins ingesting for one sensor store each batch once. Events go in
//!   with one binary `COPY` per group ([`ingest`]).
//! * **Fold cursor**: event ids come from a sequence, so with several writers they do not commit
//!   in id order. Every event row carries the id of the transaction that wrote it (`txid`), and
//!   folding reads, in `(txid, id)` order after its cursor, only rows of transactions older than
//!   the oldest one still running (`pg_snapshot_xmin`): every such transaction has committed or
//!   rolled back, so no row can appear behind the cursor later. Folding holds an advisory lock,
//!   so admins fold one at a time ([`analytics`]).
//! * **Retention**: `events` is partitioned by day of `time_ms`; age and size retention drop
//!   whole day partitions (after checking, under an exclusive lock, that every row in them is
//!   folded), never a delete storm ([`retention`]). `(sensor, seq)` cannot be unique across
//!   partitions; the locked high-water mark is the guard.
//! * **Per-sensor event counts** are kept in `sensors.events_stored` (counting 100 M rows per
//!   `sensor list` would be a full scan), added at ingest and subtracted when a partition goes.

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

use super::*;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use std::cell::RefCell;
use std::collections::HashSet;
use std::future::Future;
use tokio_postgres::NoTls;

/// Advisory lock keys (`pg_advisory_xact_lock`): one per kind of work admins must not do at the
/// same time.
pub(crate) mod lock {
    /// Schema migrations.
    pub const MIGRATE: i64 = 0x4452_4f53_0000_0001;
    /// Folding, and everything that deletes what folding reads or writes (retention).
    pub const FOLD: i64 = 0x4452_4f53_0000_0002;
}

/// Connections kept per handle: a handle is used by one thread at a time (the trait is `Send`,
/// not `Sync`), so one is in use and one is spare while a broken one is replaced.
const POOL_SIZE: usize = 2;

/// The runtime the connections live on; shut down without waiting when the handle goes (a
/// runtime may not be dropped normally from inside another one's async context).
struct Rt(Option<tokio::runtime::Runtime>);

impl Drop for Rt {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// A handle on one PostgreSQL database. See the module docs.
pub struct Postgres {
    pool: Pool,
    rt: Rt,
    /// The URL with its password hidden, for messages.
    url: String,
    /// Day numbers (`time_ms / DAY_MS`) whose `events` partition is known to exist.
    days: RefCell<HashSet<i64>>,
}

/// A driver error as text (the server's message, detail and hint when it sent them).
pub(crate) fn pg_err(e: tokio_postgres::Error) -> StorageError {
    StorageError::Postgres(describe(&e))
}

fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = format!("{}: {} ({})", db.severity(), db.message(), db.code().code());
            if let Some(d) = db.detail() {
                s.push_str(&format!("; {d}"));
            }
            if let Some(h) = db.hint() {
                s.push_str(&format!("; hint: {h}"));
            }
            s
        }
        None => e.to_string(),
    }
}

impl From<tokio_postgres::Error> for StorageError {
    fn from(e: tokio_postgres::Error) -> Self {
        pg_err(e)
    }
}

impl Postgres {
    /// Connects to `url`, creates or migrates the schema, and checks the connection works.
    pub fn open(url: &str) -> Result<Postgres, StorageError> {
        let shown = redact(url);
        let connect = |error: String| StorageError::Connect { url: shown.clone(), error };
        let mut cfg: tokio_postgres::Config = url.parse().map_err(|e: tokio_postgres::Error| connect(e.to_string()))?;
        // No JIT compilation: the admin's queries are short, and compiling their plans cost
        // more than it saved (the 24-hour report at 10 M events: 326 ms with JIT, 202 without;
        // `docs/benchmarks.md`). First, so that `options` in the URL can turn it back on.
        let options = match cfg.get_options() {
            Some(o) => format!("-c jit=off {o}"),
            None => "-c jit=off".to_string(),
        };
        cfg.options(&options);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("drosera-pg")
            .enable_all()
            .build()
            .map_err(|e| connect(format!("cannot start its runtime: {e}")))?;
        let mgr = Manager::from_config(cfg, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(mgr)
            .max_size(POOL_SIZE)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| connect(e.to_string()))?;
        let db = Postgres { pool, rt: Rt(Some(rt)), url: shown.clone(), days: RefCell::new(HashSet::new()) };
        // The first connection: its error is the one a user needs to see.
        db.block_on(async { db.pool.get().await.map(drop) }).map_err(|e| connect(pool_error(e)))?;
        schema::migrate(&db)?;
        Ok(db)
    }

    /// Runs `f` to completion on the backend's runtime (see the module docs).
    pub(crate) fn block_on<F: Future>(&self, f: F) -> F::Output {
        match &self.rt.0 {
            Some(rt) => rt.handle().block_on(f),
            None => unreachable!("the runtime lives as long as the handle"),
        }
    }

    /// The value of setting `name` in the admin's sessions (tests).
    #[cfg(test)]
    pub(crate) fn setting(&self, name: &str) -> Result<String, StorageError> {
        self.block_on(async {
            let c = self.client().await?;
            Ok(c.query_one("SELECT current_setting($1)", &[&name]).await?.get(0))
        })
    }

    /// A pooled client.
    pub(crate) async fn client(&self) -> Result<deadpool_postgres::Object, StorageError> {
        self.pool.get().await.map_err(|e| StorageError::Connect { url: self.url.clone(), error: pool_error(e) })
    }

    /// Runs one batch of SQL statements (no parameters, no rows) in its own transaction.
    pub fn batch(&self, sql: &str) -> Result<(), StorageError> {
        self.block_on(async {
            let mut c = self.client().await?;
            let tx = c.transaction().await?;
            tx.batch_execute(sql).await?;
            tx.commit().await?;
            Ok(())
        })
    }

    /// The URL with its password hidden.
    pub fn url(&self) -> &str {
        &self.url
    }
}

fn pool_error(e: deadpool_postgres::PoolError) -> String {
    match e {
        deadpool_postgres::PoolError::Backend(e) => describe(&e),
        other => other.to_string(),
    }
}

impl Storage for Postgres {
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
