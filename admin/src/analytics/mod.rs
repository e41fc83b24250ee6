//! Analytics: every number the CLI `report`, the JSON API and the dashboard show.
//!
//! WHY one module: the three front ends call the same functions with the same [`Query`], so they
//! can never disagree. Every function takes the storage, a time range and an optional sensor and
//! returns a serializable struct.
//!
//! # Definitions (see also `docs/enrichment.md`)
//! * An **attempt** (an "attack") is one connection: one session, counted once through the
//!   `connection` event the sensor records when the session ends, or one connection folded into
//!   a `rollup` event (which counts its `count`). Logins, commands, requests inside a session are
//!   not further attempts, so a session is never counted once per message.
//! * A **login** is one `login` event (one credential pair tried).
//! * An **attacker** is a distinct source address with at least one event in the range.
//! * **Labelled traffic** (`crate::labels`: `self`, your own tests; `research`, research
//!   scanners) is left out of every number unless the [`Query`]'s `include` takes it back, and is
//!   shown on its own ([`labelled`]). Folding keeps each label's share in rows of its own (a
//!   negative sensor id), so leaving it out is a subtraction, exact and without raw events;
//!   [`relabel`] rebuilds those rows when labels change.
//!
//! # Speed: aggregate tables
//! Reports over ten million events must answer in well under a second, so they never scan the raw
//! events except for the rare kinds (payloads, exploits, downloads), which the SQLite backend
//! reads from a covering partial index each. [`refresh()`] folds new events (by event id, which
//! only grows) into small aggregate tables at three resolutions: hours, days and weeks, each once
//! per sensor and once for all sensors together, keyed so that every query is one index range
//! scan per span. A query over a range uses week rows for the whole weeks inside it, day rows for
//! the whole days at the edges of those, and hour rows for the partial days at its ends, so
//! ranges are exact to the hour: `since` is rounded down and `until` up to a whole hour.
//! Retention prunes raw events and hour rows but keeps day rows, so old ranges still answer
//! (at day granularity).
//!
//! A 30-day range at ten million events still reads ~600,000 source rows and ~800,000
//! credential rows (the week rows cover at most the middle; edge days and hours add the rest).
//! They are summed in Rust rather than grouped in SQL (`scan.rs`). `docs/benchmarks.md` has the
//! times.
//!
//! Refreshing happens before every query from the CLI and the dashboard (cheap when nothing is
//! new) and periodically in `serve`; ingest itself is not slowed down by it.
//!
//! # Layout
//! `range.rs`: the [`Query`] and how it resolves to aggregate spans; `refresh.rs`: enrichment and
//! folding; `scan.rs`: summing rows by id and top-n selection; `queries.rs`: the report's parts;
//! `text.rs`: the plain-text report; `drill.rs`: the attacker and session pages and search, within
//! the caps of `drill_config.rs` (`[drill]`). What callers use is re-exported here.

mod drill;
mod drill_config;
mod field;
mod queries;
mod range;
mod refresh;
mod scan;
mod scans;
mod text;

pub use drill::{
    attacker, fields_of, parse_search, search, session, Attacker, ListCut, SearchHit, SearchKind, SearchResults, Seen,
    Session, SessionEvent, SessionRow,
};
pub use drill_config::DrillConfig;
pub use field::{attackers_page, field_charts, FieldCharts, FieldCountry};
pub use queries::{
    countries, credentials, downloads, exploits, labelled, overview, payloads, ports, protocols, report, sensors,
    timeline, top_sources, totals, Counted, CountryRow, Credentials, ItemRow, LabelledTotals, PairRow, PortRow,
    ProtocolRow, ProtocolSeries, Report, SensorHealth, Series, SourceRow, Timeline, TopSources, Totals,
};
pub use range::{now_ms, parse_time, Query, RangeInfo, DAY_MS, HOUR_MS, MAX_LIMIT, WEEK_MS};
pub use refresh::{
    cc_code, cc_label, evicted_kinds, evicted_sources, refresh, relabel, Relabelled, EVICTED_ATTEMPTS_KIND,
    EVICTED_EVENTS_KIND,
};
pub use scans::{scans, ScanPortRow, ScannerRow, Scans, MAX_SCAN_ROWS};
pub use text::{bucket_label, fmt_time, printable};

use crate::storage::StorageError;

#[derive(Debug, thiserror::Error)]
pub enum AnalyticsError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("unknown sensor {0:?} (see `drosera-admin sensor list`)")]
    UnknownSensor(String),
    #[error("bad time {0:?}: use RFC 3339 (2024-05-01T00:00:00Z), a date (2024-05-01), milliseconds since the epoch, or an age like 24h / 7d / 30m")]
    BadTime(String),
    #[error("search text of {chars} characters is longer than drill.search_chars ({max}); shorten it or raise the cap in the admin config")]
    SearchTooLong { chars: usize, max: u32 },
}
