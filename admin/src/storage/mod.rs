//! Storage: the one interface between the admin and its database.
//!
//! Ingest, enrollment and sensors, users and sessions, analytics (folding and every query),
//! exports and retention reach the database only through the [`Storage`] trait. Its methods speak
//! the admin's vocabulary (admit a sensor, commit a group of batches, fold new events, scan the
//! source aggregates of a range, delete events older than…), never SQL, so a backend is free to
//! implement each one the way its database does best. Two backends, chosen by `[database] url`
//! ([`open`]):
//! * SQLite ([`sqlite`]), the embedded default; its schema and migrations: [`sqlite::schema`].
//! * PostgreSQL ([`postgres`]), for fleets of admins sharing one database (`docs/fleet.md`); its
//!   schema and migrations: [`postgres::schema`].
//!
//! [`copy`] moves an install from SQLite to PostgreSQL (`drosera-admin migrate`).
//!
//! # Adding a method
//! 1. Declare it on [`Storage`] below with its contract in the doc comment (what is one
//!    transaction, what must hold with several admins writing).
//! 2. Implement it in `sqlite/<area>.rs` and `postgres/<area>.rs` (same area file names) and add
//!    the one-line delegation to each backend's `impl Storage` in its `mod.rs`. A table or column
//!    it needs is a new migration step in each backend's `schema.rs` (never an edit of a
//!    shipped step).
//! 3. Write its check once in `tests.rs` against `&dyn Storage`: it runs on both backends
//!    (PostgreSQL on a throwaway server, [`crate::testpg`]).
//!
//! # Why a trait object with blocking methods
//! * **A trait, not an enum of backends.** The backend is picked at run time from the config,
//!   once, and everything else holds a `Box<dyn Storage>` / `&dyn Storage`; an enum would make
//!   every method a `match` over backends in this file and put every backend's code behind one
//!   type. With a trait each backend is one `impl` in its own module, and a missing method is a
//!   compile error in that module. The trait is object safe (callbacks are `&mut dyn FnMut`).
//! * **Blocking, not `async`.** The callers that matter already run database work off the async
//!   workers: ingest has one writer thread that does group commit, the dashboard and the
//!   refresh/retention loop go through [`Shared::run`] (`spawn_blocking`), and the CLI is
//!   synchronous. Analytics streams hundreds of thousands of aggregate rows into Rust-side sums
//!   per query; a blocking row callback costs nothing there, while an `async` trait would not be
//!   object safe and would make every row a future. A PostgreSQL backend (tokio-postgres with
//!   deadpool-postgres) fits this shape: each method checks out a pooled client and drives its
//!   futures with a `tokio::runtime::Handle::block_on` kept by the backend (allowed on the
//!   writer thread and on `spawn_blocking` threads, not on async workers; the CLI has no runtime,
//!   so the backend brings a small one), or it uses the blocking `postgres` crate, the same
//!   driver. Bulk insert (COPY) fits [`Storage::commit_batches`], which gets a whole group.
//!   The PostgreSQL backend does exactly this: see [`postgres`].
//! * **`&self` methods.** A pooled backend checks a connection out per call; SQLite holds one
//!   connection (not shared between threads: `Storage: Send`, not `Sync`) and opens its
//!   transactions with `unchecked_transaction`. The two domain functions that write in many
//!   transactions, `analytics::refresh` and `retention::prune`, take `&mut dyn Storage` to say
//!   they want it to themselves.
//!
//! # What every backend must guarantee (see each method)
//! * [`Storage::commit_batches`] is one transaction for the whole group: a batch's events and its
//!   sensor's high-water mark move together, a batch at or below the mark is acknowledged again
//!   without storing anything, and `(sensor, seq)` is unique as a second guard. With several
//!   admins on one database, the sensor's row must be locked for the transaction
//!   (`SELECT … FOR UPDATE`), so two admins never both store the same batch.
//! * [`Storage::fold_events`] folds every stored event exactly once and moves its cursor in the
//!   same transaction as the aggregate rows it wrote. SQLite has one writer, so event ids are
//!   committed in order and the cursor is the last folded id. With several writers (admins on
//!   one PostgreSQL) ids from a sequence are NOT committed in order: a cursor on the id would skip
//!   an event whose transaction commits after a higher id was folded. Such a backend needs a
//!   cursor that is (for example, fold only below the oldest id still in flight, or maintain the
//!   aggregates in the ingest transaction itself), and folding must be serialized between
//!   admins (an advisory lock). The PostgreSQL backend orders by `(writing transaction, id)` and
//!   folds only transactions older than the oldest one still writing.
//! * Retention deletes only events the aggregates already include ([`Storage::delete_events_before`]).
//!
//! The conformance tests in `tests.rs` take a `&dyn Storage` and run against every backend.

pub mod copy;
pub mod postgres;
pub mod recovered;
pub mod row;
pub mod sqlite;
#[cfg(test)]
mod tests;

pub use crate::labels::LabelRecord;
use drosera_uplink::event::{Event, Health};
pub use recovered::{CrackResult, CrackTarget, RecoverStorage, RecoveredRow};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

pub const HOUR_MS: i64 = 3_600_000;
pub const DAY_MS: i64 = 86_400_000;
/// Week buckets (aligned to the epoch, so they start on Thursdays; internal only).
pub const WEEK_MS: i64 = 7 * DAY_MS;

/// `[database]` config section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// Which database: `sqlite:PATH` (the embedded default) or `postgres://USER:PASSWORD@HOST:PORT/DB`
    /// (`postgresql://` and libpq's `key=value` form are not accepted: use the URL). Empty means
    /// SQLite at [`DatabaseConfig::path`].
    pub url: String,
    /// The SQLite database file (WAL mode; created if missing) when `url` is empty.
    pub path: PathBuf,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig { url: String::new(), path: PathBuf::from("/var/lib/drosera-admin/admin.db") }
    }
}

/// The database a [`DatabaseConfig`] names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    Sqlite(PathBuf),
    /// The `postgres://` URL as written (it may hold a password: print [`redact`]ed).
    Postgres(String),
}

impl DatabaseConfig {
    /// Which backend and where; the error says what is wrong with `url`.
    pub fn backend(&self) -> Result<Backend, String> {
        parse_url(&self.url).map(|b| b.unwrap_or_else(|| Backend::Sqlite(self.path.clone())))
    }
}

/// Parses a database URL: `sqlite:PATH`, `postgres://…`, or "" (`None`).
pub fn parse_url(url: &str) -> Result<Option<Backend>, String> {
    let url = url.trim();
    if url.is_empty() {
        return Ok(None);
    }
    if let Some(path) = url.strip_prefix("sqlite:") {
        let path = path.strip_prefix("//").unwrap_or(path);
        if path.is_empty() {
            return Err("sqlite: needs a file path, e.g. sqlite:/var/lib/drosera-admin/admin.db".into());
        }
        return Ok(Some(Backend::Sqlite(PathBuf::from(path))));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return url
            .parse::<tokio_postgres::Config>()
            .map(|_| Some(Backend::Postgres(url.to_string())))
            .map_err(|e| format!("{} is not a valid PostgreSQL URL: {e}", redact(url)));
    }
    Err(format!("{} names no known database (use sqlite:PATH or postgres://USER:PASSWORD@HOST:PORT/DB)", redact(url)))
}

/// The URL with any password replaced by `***` (for messages and logs).
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let (auth, host) = match rest.rsplit_once('@') {
        Some(x) => x,
        None => return url.to_string(),
    };
    match auth.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("cannot open database {path}: {error}")]
    Open { path: String, error: rusqlite::Error },
    #[error("cannot migrate database {path} to schema version {version}: {error}")]
    Migrate { path: String, version: i64, error: rusqlite::Error },
    #[error("database {path} has schema version {found}, newer than this admin ({supported}); upgrade drosera-admin")]
    TooNew { path: String, found: i64, supported: i64 },
    #[error("database error: {0}")]
    Postgres(String),
    #[error("cannot connect to PostgreSQL at {url}: {error}")]
    Connect { url: String, error: String },
    #[error("[database] url: {0}")]
    Url(String),
    #[error("internal error: database task failed: {0}")]
    Task(String),
}

/// Opens the database `cfg` names (creating and migrating it if needed).
pub fn open(cfg: &DatabaseConfig) -> Result<Box<dyn Storage>, StorageError> {
    open_backend(&cfg.backend().map_err(StorageError::Url)?)
}

/// Opens one backend (creating and migrating its schema if needed).
pub fn open_backend(b: &Backend) -> Result<Box<dyn Storage>, StorageError> {
    Ok(match b {
        Backend::Sqlite(path) => Box::new(sqlite::open(path)?),
        Backend::Postgres(url) => Box::new(postgres::Postgres::open(url)?),
    })
}

/// One storage handle shared by async code: each call runs on a blocking thread, one at a time.
#[derive(Clone)]
pub struct Shared {
    inner: Arc<Mutex<Box<dyn Storage>>>,
}

impl Shared {
    pub fn new(db: Box<dyn Storage>) -> Shared {
        Shared { inner: Arc::new(Mutex::new(db)) }
    }

    /// Runs `f` with the storage on a blocking thread.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut dyn Storage) -> T + Send + 'static,
    ) -> Result<T, StorageError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let mut db = inner.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut **db)
        })
        .await
        .map_err(|e| StorageError::Task(e.to_string()))
    }
}

// ---------------------------------------------------------------------------------------------
// Types crossing the interface.

/// A sensor's enrollment record, as admission needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrollment {
    pub sensor_id: i64,
    pub revoked: bool,
    /// SHA-256 of the certificate issued to it (empty for a row created by ingest or tests).
    pub cert_sha256: String,
    pub high_water_seq: i64,
}

/// What [`Storage::register_sensor`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registered {
    /// Enrolled (new, or a revoked/certificate-less sensor enrolled again).
    Enrolled,
    /// An active sensor with a certificate already has this name; nothing changed.
    AlreadyActive,
}

/// Every column of a sensor row, plus its stored event count.
#[derive(Debug, Clone, PartialEq)]
pub struct SensorRecord {
    pub name: String,
    pub revoked: bool,
    pub created_ms: i64,
    pub last_contact_ms: Option<i64>,
    pub high_water_seq: i64,
    pub schema_version: i64,
    pub evicted_total: i64,
    pub shed_total: i64,
    pub health: Option<Health>,
    /// Raw event rows stored for it.
    pub events: i64,
}

/// One batch of a group commit: the events of `first..=last_seq` of a sensor, checked and in
/// sequence order.
#[derive(Debug, Clone, Copy)]
pub struct BatchIn<'a> {
    pub sensor_id: i64,
    pub last_seq: u64,
    pub events: &'a [Event],
}

/// The answer for one batch of a committed group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchOutcome {
    /// Stored (or already stored) up to this sequence number.
    Ack(u64),
    /// Not stored, and never will be (for example: the sensor was revoked).
    Refused(String),
}

/// A dashboard login session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub user: String,
    pub csrf: String,
}

/// A new dashboard session (the token itself is never stored).
#[derive(Debug, Clone, Copy)]
pub struct NewSession<'a> {
    pub token_sha256: &'a str,
    pub user: &'a str,
    pub csrf: &'a str,
    pub expires_ms: i64,
}

/// A per-user API token as stored: the token itself never is, only its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ApiTokenRecord {
    /// Public id (random hex), what `user token list` shows and `revoke` takes.
    pub id: String,
    pub user: String,
    /// The owner's note on what the token is for.
    pub name: String,
    pub created_ms: i64,
    /// Last accepted use, to the minute (0: never used).
    pub last_used_ms: i64,
    /// When it was revoked (0: live).
    pub revoked_ms: i64,
}

/// A new API token (the token itself is never stored).
#[derive(Debug, Clone, Copy)]
pub struct NewApiToken<'a> {
    pub id: &'a str,
    pub user: &'a str,
    pub name: &'a str,
    pub token_sha256: &'a str,
    pub created_ms: i64,
}

/// Aggregate resolution: rows per hour, day or week (the `res` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Resolution {
    Hour = 0,
    Day = 1,
    Week = 2,
}

impl Resolution {
    pub fn code(self) -> i64 {
        self as i64
    }

    /// Bucket width.
    pub fn width_ms(self) -> i64 {
        match self {
            Resolution::Hour => HOUR_MS,
            Resolution::Day => DAY_MS,
            Resolution::Week => WEEK_MS,
        }
    }
}

/// Buckets `[from, to)` of one resolution. An empty span has `from == to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub res: Resolution,
    pub from: i64,
    pub to: i64,
}

impl Span {
    pub const EMPTY: Span = Span { res: Resolution::Hour, from: 0, to: 0 };
}

/// The aggregate rows of a range: five spans that cover it without overlap (unused ones empty),
/// for one sensor (`sensor_id`) or all sensors together (`0`, the all-sensors rows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AggRange {
    pub spans: [Span; 5],
    pub sensor_id: i64,
}

/// Event rows and connections (`count`) per kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KindSum {
    pub kind: String,
    pub rows: i64,
    pub n: i64,
}

/// Per protocol (sensor-internal records excluded), most attempts first, then by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolSum {
    pub protocol: String,
    pub attempts: i64,
    pub logins: i64,
    pub events: i64,
}

/// Attempts per (protocol, destination port).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSum {
    pub protocol: String,
    pub port: i64,
    pub attempts: i64,
}

/// One source aggregate row (several per address: one per bucket).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SrcAgg {
    pub ip_id: i64,
    pub cc: i64,
    pub attempts: i64,
    pub logins: i64,
    pub events: i64,
    pub first_ms: i64,
    pub last_ms: i64,
}

/// One credential aggregate row (user and password as string ids).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CredAgg {
    pub user_id: i64,
    pub pass_id: i64,
    pub n: i64,
}

/// The stored enrichment of an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpRecord {
    pub ip: String,
    pub country: String,
    /// The packed country the aggregates store (`analytics::cc_code`).
    pub cc: i64,
    pub asn: Option<u32>,
    pub as_org: String,
}

/// Rows of the rare kinds the item lists read from raw events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemKind {
    /// key = sha256, detail = size.
    Payload,
    /// key = exploit name, detail = CVE.
    Exploit,
    /// key = URL, detail = tool.
    Download,
}

/// One raw row of an [`ItemKind`] (NULL text is "").
#[derive(Debug, Clone, Copy)]
pub struct ItemRef<'a> {
    pub key: &'a str,
    pub detail: &'a str,
    pub time_ms: i64,
    pub src_ip: &'a str,
}

/// One stored scan window (kind `scan_window`, protocol `scan`) as the scan report reads it:
/// its detail is in `fields` ([`drosera_uplink::event::Detail::to_fields`] as JSON).
#[derive(Debug, Clone, Copy)]
pub struct ScanRef<'a> {
    pub src_ip: &'a str,
    pub transport: &'a str,
    pub time_ms: i64,
    pub fields: &'a str,
}

/// Where a timeline reads `agg_kind`: hour rows of `[from, to)`, or the spans of a day-level
/// cover with every bucket floored to its day (a week row cannot be split into days).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimelineSource {
    Hours { from: i64, to: i64 },
    Days { spans: [Span; 5] },
}

/// Attempts and logins of one timeline bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketSum {
    pub bucket: i64,
    pub attempts: i64,
    pub logins: i64,
}

/// A sensor with its counters and its share of the aggregates, for reports.
#[derive(Debug, Clone, PartialEq)]
pub struct SensorHealthRecord {
    pub name: String,
    pub revoked: bool,
    pub last_contact_ms: Option<i64>,
    pub high_water_seq: i64,
    pub evicted_total: i64,
    pub shed_total: i64,
    /// Event rows folded into the aggregates for it (all time, from the day rows).
    pub events_folded: i64,
    pub health: Option<Health>,
}

/// One stored event as the aggregates see it.
#[derive(Debug, Clone, Copy)]
pub struct FoldEvent<'a> {
    pub sensor_id: i64,
    pub time_ms: i64,
    pub protocol: &'a str,
    pub kind: &'a str,
    pub src_ip: &'a str,
    pub dst_port: i64,
    pub count: i64,
    pub username: Option<&'a str>,
    pub password: Option<&'a str>,
    /// The detail's flat fields (JSON) of eviction gaps (kind `eviction_gap`), which say what
    /// was evicted; `None` for every other kind (the fold reads no more than it needs).
    pub gap_fields: Option<&'a str>,
}

/// Interning inside a fold transaction: ids of addresses and strings, created on first sight.
pub trait FoldTx {
    /// The id and packed country of `ip`; `new` gives the record for an address seen first.
    fn ip_id(&mut self, ip: &str, new: &mut dyn FnMut() -> IpRecord) -> Result<(i64, i64), StorageError>;
    /// The id of a user name or password.
    fn string_id(&mut self, s: &str) -> Result<i64, StorageError>;
}

/// (res, bucket, sensor, protocol, kind)
pub type KindKey = (i64, i64, i64, String, String);
/// (res, bucket, sensor, protocol, port)
pub type PortKey = (i64, i64, i64, String, i64);
/// (res, bucket, sensor, ip id)
pub type SrcKey = (i64, i64, i64, i64);
/// (cc, attempts, logins, events, first, last)
pub type SrcVal = (i64, i64, i64, i64, i64, i64);
/// (res, bucket, sensor, user id, password id)
pub type CredKey = (i64, i64, i64, i64, i64);

/// What one fold step adds to the aggregate tables (sensor 0 = the all-sensors rows).
#[derive(Debug, Default)]
pub struct AggDelta {
    /// → (rows, n)
    pub kind: HashMap<KindKey, (i64, i64)>,
    /// → attempts
    pub port: HashMap<PortKey, i64>,
    pub src: HashMap<SrcKey, SrcVal>,
    /// → n
    pub cred: HashMap<CredKey, i64>,
}

/// The callback that folds one event: interns through the [`FoldTx`], adds to the delta.
pub type FoldFn<'a> = dyn FnMut(&FoldEvent<'_>, &mut dyn FoldTx, &mut AggDelta) -> Result<(), StorageError> + 'a;

/// Raw events of `[since, until)` (exact milliseconds), of one sensor or all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventRange {
    pub since_ms: i64,
    pub until_ms: i64,
    pub sensor_id: Option<i64>,
}

/// One exported event with its sensor's name and its address's enrichment.
#[derive(Debug, Clone, Copy)]
pub struct ExportRow<'a> {
    pub time_ms: i64,
    pub src_ip: &'a str,
    pub src_port: i64,
    pub dst_port: i64,
    pub protocol: &'a str,
    pub transport: &'a str,
    pub sensor: &'a str,
    /// "" when the address is not enriched yet.
    pub country: &'a str,
    pub asn: Option<i64>,
    pub as_org: &'a str,
    pub kind: &'a str,
    pub session_id: i64,
    pub duration_ms: i64,
    pub bytes_in: i64,
    pub bytes_out: i64,
    pub count: i64,
    pub username: Option<&'a str>,
    pub password: Option<&'a str>,
    pub payload_sha256: Option<&'a str>,
    pub url: Option<&'a str>,
    /// The detail's flat fields as a JSON object.
    pub fields: &'a str,
    pub seq: i64,
    /// What the exploit rules derived from it (JSON of `crate::exploits::Derived`), if anything.
    pub derived: Option<&'a str>,
    /// The password recovered from its challenge-response (`crate::recover`), if any.
    pub recovered: Option<&'a str>,
}

/// One stored event of a kind the exploit rules read ([`MATCHABLE_KINDS`]), for `reclassify`.
#[derive(Debug, Clone, Copy)]
pub struct MatchRow<'a> {
    pub id: i64,
    pub time_ms: i64,
    pub protocol: &'a str,
    pub kind: &'a str,
    /// The detail's flat fields as a JSON object.
    pub fields: &'a str,
    pub body_text: Option<&'a str>,
    pub derived: Option<&'a str>,
}

/// The `kind`s of the events the exploit rules read (`crate::exploits::subject`).
pub const MATCHABLE_KINDS: [&str; 4] = ["http_request", "payload", "form_body", "command"];

/// A new `derived` value for one event (`reclassify`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DerivedUpdate {
    pub id: i64,
    pub time_ms: i64,
    pub derived: Option<String>,
}

/// The items of `kind` in one stored `derived` value (exploits: name and CVE; downloads: URL
/// and tool), until `f` breaks. Both backends' item lists read derived records through this.
pub fn derived_items(
    kind: ItemKind,
    derived: &str,
    time_ms: i64,
    src_ip: &str,
    f: &mut dyn FnMut(ItemRef<'_>) -> ControlFlow<()>,
) -> ControlFlow<()> {
    let d = crate::exploits::Derived::from_column(Some(derived));
    match kind {
        ItemKind::Exploit => {
            for e in &d.exploits {
                f(ItemRef { key: &e.name, detail: &e.cve, time_ms, src_ip })?;
            }
        }
        ItemKind::Download => {
            for u in &d.downloads {
                f(ItemRef { key: &u.url, detail: &u.tool, time_ms, src_ip })?;
            }
        }
        ItemKind::Payload => {}
    }
    ControlFlow::Continue(())
}

// ---------------------------------------------------------------------------------------------
// The interface.

/// Everything the admin asks of its database. See the module docs for the guarantees.
pub trait Storage: Send + SampleStorage + DrillStorage + RecoverStorage {
    // --- Sensors and ingest -------------------------------------------------------------------

    /// The enrollment record of sensor `name`, if any.
    fn enrollment(&self, name: &str) -> Result<Option<Enrollment>, StorageError>;

    /// Enrolls `name` with the certificate `cert_sha256`, unless an active sensor with a
    /// certificate has that name. A revoked sensor is enrolled again (un-revoked, new
    /// certificate, counters kept).
    fn register_sensor(&self, name: &str, cert_sha256: &str, now_ms: i64) -> Result<Registered, StorageError>;

    /// Marks `name` revoked; false if no such sensor.
    fn revoke_sensor(&self, name: &str) -> Result<bool, StorageError>;

    /// Every sensor, by name.
    fn list_sensors(&self) -> Result<Vec<SensorRecord>, StorageError>;

    /// Records an admitted sensor's hello: contact time and the event schema it speaks.
    fn record_hello(&self, sensor_id: i64, schema_version: u16, now_ms: i64) -> Result<(), StorageError>;

    /// Records that these sensors were heard from (pings).
    fn touch_sensors(&self, sensor_ids: &[i64], now_ms: i64) -> Result<(), StorageError>;

    /// Stores a group of batches in ONE transaction and answers each, in order. Per batch: a
    /// revoked sensor is refused; a batch whose `last_seq` is at or below the sensor's
    /// high-water mark is acknowledged with the mark and stores nothing (a resend after a lost
    /// ack); otherwise the events above the mark are stored (a duplicate `(sensor, seq)` is
    /// skipped), and the mark moves to `last_seq` together with the contact time, the evicted
    /// and shed totals and the last health sample of the events newly stored
    /// ([`row::Tally`]). On error nothing of the group is stored.
    fn commit_batches(&self, batches: &[BatchIn<'_>], now_ms: i64) -> Result<Vec<BatchOutcome>, StorageError>;

    // --- Users and dashboard sessions ---------------------------------------------------------

    /// Creates user `name` or replaces its password hash (`phc`), and ends its sessions.
    /// Returns true if the user is new.
    fn upsert_user(&self, name: &str, phc: &str, now_ms: i64) -> Result<bool, StorageError>;

    /// The password hash of user `name`.
    fn user_phc(&self, name: &str) -> Result<Option<String>, StorageError>;

    /// Stores a session, after deleting expired ones and the oldest beyond `max_sessions - 1`.
    fn create_session(&self, s: &NewSession<'_>, now_ms: i64, max_sessions: i64) -> Result<(), StorageError>;

    /// The unexpired session with this token hash.
    fn session(&self, token_sha256: &str, now_ms: i64) -> Result<Option<SessionRecord>, StorageError>;

    fn end_session(&self, token_sha256: &str) -> Result<(), StorageError>;

    // --- Per-user API tokens (`crate::users`) -------------------------------------------------

    /// Stores a token unless its user already has `max_live` live (unrevoked) tokens; the
    /// count and the insert are one transaction. Returns false when refused.
    fn create_api_token(&self, t: &NewApiToken<'_>, max_live: i64) -> Result<bool, StorageError>;

    /// Every token of `user` (live and revoked), newest first.
    fn api_tokens(&self, user: &str) -> Result<Vec<ApiTokenRecord>, StorageError>;

    /// Revokes token `id` of `user`; false if no such live token.
    fn revoke_api_token(&self, user: &str, id: &str, now_ms: i64) -> Result<bool, StorageError>;

    /// The user of the live token with this hash, noting the use (at most one write a minute
    /// per token).
    fn api_token_user(&self, token_sha256: &str, now_ms: i64) -> Result<Option<String>, StorageError>;

    // --- Analytics: folding -------------------------------------------------------------------

    /// In one transaction: reads up to `limit` events after the fold cursor (in id order),
    /// hands each to `fold`, writes the resulting delta into the aggregate tables and moves the
    /// cursor past them. Returns the number of events folded (0: nothing new).
    fn fold_events(&self, limit: u64, fold: &mut FoldFn<'_>) -> Result<u64, StorageError>;

    // --- Analytics: reading -------------------------------------------------------------------

    /// The id of sensor `name`.
    fn sensor_id(&self, name: &str) -> Result<Option<i64>, StorageError>;

    /// Hour rows before this time were pruned by retention (day rows remain).
    fn hourly_from(&self) -> Result<i64, StorageError>;

    /// Event rows and connections per kind (every kind present in the range).
    fn kind_sums(&self, r: &AggRange) -> Result<Vec<KindSum>, StorageError>;

    /// Per protocol, see [`ProtocolSum`].
    fn protocol_sums(&self, r: &AggRange) -> Result<Vec<ProtocolSum>, StorageError>;

    /// The `limit` (protocol, port) pairs with most attempts (ties: lower port first).
    fn port_sums(&self, r: &AggRange, limit: i64) -> Result<Vec<PortSum>, StorageError>;

    /// Every source aggregate row of the range (an address may come several times).
    fn scan_sources(&self, r: &AggRange, f: &mut dyn FnMut(SrcAgg)) -> Result<(), StorageError>;

    /// Every credential aggregate row of the range (a pair may come several times).
    fn scan_credentials(&self, r: &AggRange, f: &mut dyn FnMut(CredAgg)) -> Result<(), StorageError>;

    /// The first and last bucket of the source's rows for `sensor_id` (0 = all sensors).
    fn timeline_bounds(&self, src: &TimelineSource, sensor_id: i64) -> Result<Option<(i64, i64)>, StorageError>;

    /// Attempts and logins per bucket in `first..=last` for `sensor_id` (0 = all sensors).
    fn timeline_sums(
        &self,
        src: &TimelineSource,
        sensor_id: i64,
        first: i64,
        last: i64,
    ) -> Result<Vec<BucketSum>, StorageError>;

    /// (id, name) of every sensor, by name.
    fn sensor_names(&self) -> Result<Vec<(i64, String)>, StorageError>;

    /// Raw rows of one rare kind in `range`, until `f` breaks. Exploits and downloads include
    /// those the exploit rules derived from other events ([`derived_items`]).
    fn scan_items(
        &self,
        kind: ItemKind,
        range: &EventRange,
        f: &mut dyn FnMut(ItemRef<'_>) -> ControlFlow<()>,
    ) -> Result<(), StorageError>;

    /// Raw `scan_window` rows in `range`, until `f` breaks (through the `(kind, time_ms)` index).
    fn scan_windows(
        &self,
        range: &EventRange,
        f: &mut dyn FnMut(ScanRef<'_>) -> ControlFlow<()>,
    ) -> Result<(), StorageError>;

    /// A user name or password by id ("" if unknown).
    fn string_of(&self, id: i64) -> Result<String, StorageError>;

    /// An address by id (`None` if unknown).
    fn ip_of(&self, id: i64) -> Result<Option<IpRecord>, StorageError>;

    /// Sensors (one, or all by name) with their counters and folded event counts.
    fn sensor_health(&self, name: Option<&str>) -> Result<Vec<SensorHealthRecord>, StorageError>;

    // --- Exploit rules (reclassify) -----------------------------------------------------------

    /// Up to `limit` events of the [`MATCHABLE_KINDS`] after position `after` (`(time_ms, id)`,
    /// in that order), each with its stored derived value and body text; returns the position
    /// of the last one (`None`: no more).
    fn scan_matchable(
        &self,
        after: (i64, i64),
        limit: i64,
        f: &mut dyn FnMut(&MatchRow<'_>),
    ) -> Result<Option<(i64, i64)>, StorageError>;

    /// Sets the derived value of these events, in one transaction; an event whose value is
    /// already that is left alone. Returns how many events changed.
    fn set_derived(&self, rows: &[DerivedUpdate]) -> Result<u64, StorageError>;

    // --- Export -------------------------------------------------------------------------------

    /// Every raw event of `range`, ordered by time, sensor and sequence number, until `f`
    /// breaks; constant memory.
    fn export_events(
        &self,
        range: &EventRange,
        f: &mut dyn FnMut(&ExportRow<'_>) -> ControlFlow<()>,
    ) -> Result<(), StorageError>;

    // --- Retention ----------------------------------------------------------------------------

    /// Deletes events older than `before_ms` that the aggregates already include, oldest
    /// first, about `chunk` at a time; returns how many (less than `chunk`: nothing left to do
    /// now). A backend may delete in coarser units (PostgreSQL drops whole day partitions, so
    /// it keeps up to one day more than asked) but never an event not yet folded.
    fn delete_events_before(&self, before_ms: i64, chunk: i64) -> Result<u64, StorageError>;

    /// Deletes about `chunk` of the oldest events the aggregates already include, never the
    /// newest one (PostgreSQL: the oldest day partition, never the newest); returns how many.
    fn delete_oldest_events(&self, chunk: i64) -> Result<u64, StorageError>;

    /// Bytes the database uses (not counting free space it will reuse).
    fn used_bytes(&self) -> Result<u64, StorageError>;

    /// The time of the oldest raw event.
    fn oldest_event_ms(&self) -> Result<Option<i64>, StorageError>;

    /// Deletes hour rows of buckets before `before_ms` and records that hour rows start there
    /// (never moving that mark back), in one transaction; returns rows deleted.
    fn prune_hourly(&self, before_ms: i64) -> Result<u64, StorageError>;

    /// Deletes day rows of buckets before `before_ms` and week rows ending at or before it, and
    /// then addresses and strings no aggregate refers to, in one transaction; returns
    /// aggregate rows deleted.
    fn prune_rollups(&self, before_ms: i64) -> Result<u64, StorageError>;

    // --- Labels (`crate::labels`) ---------------------------------------------------------------

    /// Every address label, by network.
    fn labels(&self) -> Result<Vec<LabelRecord>, StorageError>;

    /// Adds the label of `rec.cidr`, or replaces it; refuses (false, nothing written) a new
    /// network when `max` labels exist already. One transaction.
    fn put_label(&self, rec: &LabelRecord, max: u32) -> Result<bool, StorageError>;

    /// Removes the label of `cidr` (as stored); false if there was none.
    fn remove_label(&self, cidr: &str) -> Result<bool, StorageError>;

    /// Raw events before this time were deleted by retention (0: none ever), so the label
    /// class rows of older buckets cannot be rebuilt.
    fn raw_from(&self) -> Result<i64, StorageError>;

    /// Records [`Storage::raw_from`] (never moving it back).
    fn set_raw_from(&self, ms: i64) -> Result<(), StorageError>;

    /// Rebuilds the label class rows (aggregate rows with `sensor_id < 0`, see
    /// `crate::labels::class_sensor`) in ONE transaction, serialized with
    /// [`Storage::fold_events`]: deletes those of resolution `r` whose bucket is at or after
    /// `from[r]` (indexed by [`Resolution::code`]), hands every event the fold cursor has
    /// passed with a time at or after the least of `from` to `fold` (in id order, in chunks),
    /// and writes what it adds. Returns the events read.
    fn refold_classes(&self, from: [i64; 3], fold: &mut FoldFn<'_>) -> Result<u64, StorageError>;
}

// ---------------------------------------------------------------------------------------------
// Samples (issue 15). Kept apart from the trait above so the additions read as one block.

/// A verified sample to record ([`SampleStorage::store_sample`]); its bytes are already on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSample {
    /// Lowercase hex digests.
    pub sha256: String,
    pub md5: String,
    pub sha1: String,
    pub size: i64,
    /// Bytes of its compressed file in the sample store (what the store's cap counts).
    pub stored_bytes: i64,
    pub file_type: String,
    pub rules_version: String,
    pub matches: Vec<SampleMatch>,
}

/// One YARA rule a sample matched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SampleMatch {
    pub namespace: String,
    pub rule: String,
    /// Space-separated tags.
    pub tags: String,
}

/// What [`SampleStorage::store_sample`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SampleStored {
    /// Recorded now.
    Stored,
    /// Another delivery (this or another sensor's, through this or another admin) was first.
    AlreadyHad,
    /// Recording it would take the store past its byte cap: nothing recorded.
    Full,
}

/// Filters of `samples list` and the dashboard's list (all optional, AND-ed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SampleFilter {
    /// Substring of the file type (case-insensitive).
    pub file_type: Option<String>,
    /// A YARA rule name that matched.
    pub rule: Option<String>,
    /// A protocol it arrived by (`ftp`, `http`, ...).
    pub protocol: Option<String>,
    /// A sensor that saw it.
    pub sensor: Option<String>,
}

/// One row of the sample list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SampleSummary {
    pub sha256: String,
    pub md5: String,
    pub sha1: String,
    pub size: i64,
    pub stored_bytes: i64,
    pub file_type: String,
    pub rules_version: String,
    pub stored_ms: i64,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    /// Sightings (Sample events) recorded for it.
    pub sightings: i64,
    /// Names of the rules it matched.
    pub rules: Vec<String>,
}

/// One time a sensor reported this sample ([`drosera_uplink::Detail::Sample`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SampleSighting {
    pub time_ms: i64,
    pub sensor: String,
    pub src_ip: String,
    pub protocol: String,
    /// How it arrived (`ftp-stor`, `http-body`, ...).
    pub source: String,
    /// What the sensor did with it (`kept`, `already_kept`, ...).
    pub outcome: String,
    pub name: String,
}

/// Everything known about one sample.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SampleDetail {
    pub summary: SampleSummary,
    /// Every name it arrived under, sorted.
    pub names: Vec<String>,
    /// Newest first, at most the asked limit.
    pub sightings: Vec<SampleSighting>,
    pub matches: Vec<SampleMatch>,
}

/// The sample tables, on both backends. Every method is one transaction.
pub trait SampleStorage {
    /// Which of `sha256s` (lowercase hex) the database already has.
    fn samples_known(&self, sha256s: &[String]) -> Result<Vec<String>, StorageError>;
    /// Records a verified sample with its YARA matches, unless it is already recorded or the
    /// stored bytes of all samples plus this one would exceed `max_total_bytes` (0: no cap).
    /// First and last seen come from its sightings (or now, without any).
    fn store_sample(&self, s: &NewSample, max_total_bytes: u64, now_ms: i64) -> Result<SampleStored, StorageError>;
    /// Samples matching `filter`, newest last sighting first, at most `limit`.
    fn list_samples(&self, filter: &SampleFilter, limit: i64) -> Result<Vec<SampleSummary>, StorageError>;
    /// One sample with its names, its newest `sightings` sightings and its matches.
    fn sample_detail(&self, sha256: &str, sightings: i64) -> Result<Option<SampleDetail>, StorageError>;
    /// Up to `limit` samples classified under another rules version than `rules_version`.
    fn samples_to_rescan(&self, rules_version: &str, limit: i64) -> Result<Vec<String>, StorageError>;
    /// Replaces a sample's file type, rules version and matches.
    fn set_sample_classification(
        &self,
        sha256: &str,
        file_type: &str,
        rules_version: &str,
        matches: &[SampleMatch],
    ) -> Result<(), StorageError>;
    /// Forgets up to `limit` samples last seen before `before_ms` (their matches too; names and
    /// sightings stay, they are history); returns their sha256s so their files can go.
    fn delete_samples_seen_before(&self, before_ms: i64, limit: i64) -> Result<Vec<String>, StorageError>;
    /// Records a transfer the admin rejected (hash mismatch, bad chunk, over a cap), keeping
    /// the newest `keep` rows.
    fn record_sample_rejection(
        &self,
        sensor_id: i64,
        sha256: &str,
        reason: &str,
        now_ms: i64,
        keep: i64,
    ) -> Result<(), StorageError>;
    /// The newest rejections: (time, sensor, sha256, reason).
    fn sample_rejections(&self, limit: i64) -> Result<Vec<(i64, String, String, String)>, StorageError>;
    /// Records that the fetcher takes `f.url` (state `queued`), keeping the newest `keep` rows;
    /// `None` when the URL was taken before (each URL is fetched once, across restarts).
    fn claim_fetch(&self, f: &NewFetch, keep: i64) -> Result<Option<i64>, StorageError>;
    /// Records how fetch `id` ended. A `fetched` one with a sha256 (its sample already stored)
    /// also becomes a sighting of that sample: protocol `fetch`, source the URL's host, name
    /// the URL, from the sensor and address of the offering event, sighting seq `-id`.
    fn finish_fetch(&self, id: i64, done: &FetchDone, now_ms: i64) -> Result<(), StorageError>;
    /// The newest fetches first, at most `limit`.
    fn list_fetches(&self, limit: i64) -> Result<Vec<FetchRow>, StorageError>;
    /// Fetches still `queued` (the admin stopped before they ran), oldest first: (id, url).
    fn queued_fetches(&self, limit: i64) -> Result<Vec<(i64, String)>, StorageError>;
}

/// A URL the fetcher is about to take ([`SampleStorage::claim_fetch`]), with the event that
/// offered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewFetch {
    pub url: String,
    pub sensor_id: i64,
    pub seq: i64,
    pub offered_ms: i64,
    pub src_ip: String,
    /// The offering event's protocol (`telnet`, `http`, ...).
    pub protocol: String,
}

/// How a fetch ended ([`SampleStorage::finish_fetch`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchDone {
    /// `fetched`, `refused` (address or URL not allowed), `failed` or `shed` (queue full).
    pub state: &'static str,
    /// HTTP status, FTP reply code, 0 for TFTP.
    pub status: Option<i64>,
    pub size: Option<i64>,
    pub sha256: Option<String>,
    /// Why it failed or why the sample was not kept; empty when all went well.
    pub error: String,
    /// The URL's host (the sighting's source).
    pub host: String,
}

/// One fetch as the analyst sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FetchRow {
    pub id: i64,
    pub url: String,
    /// The sensor whose event offered it.
    pub sensor: String,
    pub seq: i64,
    pub offered_ms: i64,
    pub src_ip: String,
    pub protocol: String,
    pub state: String,
    pub done_ms: Option<i64>,
    pub status: Option<i64>,
    pub size: Option<i64>,
    pub sha256: Option<String>,
    pub error: String,
}

/// The sighting an event stands for, if it is a [`drosera_uplink::Detail::Sample`]:
/// (sha256 hex, name, source, outcome).
pub fn sighting_of(ev: &Event) -> Option<(String, &str, &str, &'static str)> {
    match &ev.detail {
        drosera_uplink::Detail::Sample { sha256, name, source, outcome, .. } => {
            Some((hex::encode(sha256), name.as_str(), source.as_str(), outcome.as_str()))
        }
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Drill-down (issue 21: attacker, session and search pages). Kept apart like the samples.

/// Which raw events [`DrillStorage::drill_events`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrillFilter<'a> {
    /// Every event of one source address in the range, newest first (index `events_source`).
    Source(&'a str),
    /// Every event of one connection of one sensor, in sequence order, whatever the range
    /// (index `events_session`).
    Session { sensor_id: i64, session_id: i64 },
    /// Events of one kind in the range, newest first (SQLite: `events_kind`).
    Kind(&'a str),
}

/// Attempts of one protocol in one timeline bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolBucket {
    pub bucket: i64,
    pub protocol: String,
    pub attempts: i64,
}

/// Attempts and logins of one minute, sensor and protocol (the minute time chart).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MinuteCount {
    /// Start of the minute (ms).
    pub minute: i64,
    pub sensor: String,
    pub protocol: String,
    /// Connections stood for (`count` of connection and rollup rows).
    pub attempts: i64,
    /// Login rows.
    pub logins: i64,
}

/// The kinds the minute time chart counts.
pub const MINUTE_KINDS: [&str; 3] = ["connection", "rollup", "login"];

/// [`DrillStorage::minute_counts`] row by row, counting the rows `keep` accepts: the trait's
/// default, and the minute chart's path when the label classes it leaves out hold too many
/// addresses to subtract (then it classifies each row's address). `None` past `max_rows` rows
/// of one kind.
pub fn minute_counts_by_rows<D: DrillStorage + ?Sized>(
    db: &D,
    range: &EventRange,
    max_rows: i64,
    keep: &mut dyn FnMut(&ExportRow<'_>) -> bool,
) -> Result<Option<Vec<MinuteCount>>, StorageError> {
    const MINUTE_MS: i64 = 60_000;
    let mut m: HashMap<(i64, String, String), (i64, i64)> = HashMap::new();
    for kind in MINUTE_KINDS {
        let mut read = 0i64;
        db.drill_events(&DrillFilter::Kind(kind), range, max_rows + 1, &mut |row| {
            read += 1;
            if read > max_rows {
                return ControlFlow::Break(());
            }
            if keep(row) {
                let minute = row.time_ms.div_euclid(MINUTE_MS) * MINUTE_MS;
                let e = m.entry((minute, row.sensor.to_string(), row.protocol.to_string())).or_default();
                if kind == "login" {
                    e.1 += 1;
                } else {
                    e.0 += row.count;
                }
            }
            ControlFlow::Continue(())
        })?;
        if read > max_rows {
            return Ok(None);
        }
    }
    Ok(Some(minute_counts_from(m)))
}

/// One GROUP BY group of a backend's own minute count: (minute, sensor, protocol, sum of
/// `count`, rows).
pub type MinuteGroup = (i64, String, String, i64, i64);

/// A backend's minute GROUP BY: `(kind, row limit)` to that kind's groups.
pub type MinuteGroups<'a> = dyn FnMut(&str, i64) -> Result<Vec<MinuteGroup>, StorageError> + 'a;

/// [`DrillStorage::minute_counts`] from a backend's groups: `groups(kind, max_rows + 1)` gives
/// the groups of at most that many rows of `kind` in the range. `None` when the rows of a kind
/// pass `max_rows`.
pub fn minute_counts_by_groups(
    max_rows: i64,
    groups: &mut MinuteGroups<'_>,
) -> Result<Option<Vec<MinuteCount>>, StorageError> {
    // (minute, sensor, protocol) -> (attempts, logins): one entry per key over the kinds
    let mut by: std::collections::BTreeMap<(i64, String, String), (i64, i64)> = Default::default();
    for kind in MINUTE_KINDS {
        let g = groups(kind, max_rows + 1)?;
        if g.iter().map(|g| g.4).sum::<i64>() > max_rows {
            return Ok(None);
        }
        for (minute, sensor, protocol, sum, rows) in g {
            let e = by.entry((minute, sensor, protocol)).or_default();
            if kind == "login" {
                e.1 += rows;
            } else {
                e.0 += sum;
            }
        }
    }
    Ok(Some(minute_counts_from(by)))
}

/// [`MinuteCount`]s from a map of (minute, sensor, protocol) to (attempts, logins).
pub fn minute_counts_from(m: impl IntoIterator<Item = ((i64, String, String), (i64, i64))>) -> Vec<MinuteCount> {
    m.into_iter()
        .map(|((minute, sensor, protocol), (attempts, logins))| MinuteCount {
            minute,
            sensor,
            protocol,
            attempts,
            logins,
        })
        .collect()
}

/// The reads behind the drill-down pages, on both backends. Each is bounded by its `limit`.
pub trait DrillStorage {
    /// Per minute, sensor and protocol (one entry each), the attempts and logins of the raw
    /// events in `range`; `None` when more than `max_rows` rows of one of [`MINUTE_KINDS`] fall
    /// in it (the caller then reads hours). This default reads every row through
    /// [`DrillStorage::drill_events`]; a backend may count in the database instead (SQLite and
    /// PostgreSQL do: one GROUP BY instead of an export row with four joins per event). The
    /// minute chart subtracts the rows of the label classes it leaves out from these counts.
    fn minute_counts(&self, range: &EventRange, max_rows: i64) -> Result<Option<Vec<MinuteCount>>, StorageError> {
        minute_counts_by_rows(self, range, max_rows, &mut |_| true)
    }

    /// Up to `limit` raw events matching `filter` in `range` (a session ignores the range),
    /// in the filter's order, until `f` breaks.
    fn drill_events(
        &self,
        filter: &DrillFilter<'_>,
        range: &EventRange,
        limit: i64,
        f: &mut dyn FnMut(&ExportRow<'_>) -> ControlFlow<()>,
    ) -> Result<(), StorageError>;

    /// Up to `limit` enriched addresses whose text is in `[from, to)`, in text order (the
    /// search's address prefixes; `ip_info` has a unique index on the text).
    fn find_addresses(&self, from: &str, to: &str, limit: i64) -> Result<Vec<IpRecord>, StorageError>;

    /// Attempts per bucket and protocol in `first..=last` for `sensor_id` (0 = all sensors;
    /// the same rows [`Storage::timeline_sums`] reads).
    fn timeline_protocols(
        &self,
        src: &TimelineSource,
        sensor_id: i64,
        first: i64,
        last: i64,
    ) -> Result<Vec<ProtocolBucket>, StorageError>;
}
