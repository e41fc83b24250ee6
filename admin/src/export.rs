//! Streaming exports of raw events as JSON lines or CSV.
//!
//! WHY streamed: an export of months of data must not need memory in proportion to it. Rows are
//! read from one SQLite cursor and written one at a time through a buffered writer, so memory
//! stays constant whatever the range.
//!
//! The JSON lines carry the names MHN's old session export used (`timestamp`, `source_ip`,
//! `source_port`, `destination_port`, `protocol`, `sensor`) plus `country`/`asn`/`as_org` from
//! enrichment, the common event fields, and every detail field flattened to the top level (a
//! detail field whose name clashes with a common one is prefixed `detail_`). So
//! `pandas.read_json(f, lines=True)` followed by `df.source_ip.value_counts()` works unchanged.
//!
//! Time bounds are exact (milliseconds), unlike the hour-aligned analytics.

use crate::analytics::{now_ms, AnalyticsError, Query};
use rusqlite::{params, Connection};
use serde_json::{Map, Value};
use std::io::Write;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Jsonl,
    Csv,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "jsonl" | "json" => Ok(Format::Jsonl),
            "csv" => Ok(Format::Csv),
            _ => Err(format!("unknown export format {s:?}: use jsonl or csv")),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Analytics(#[from] AnalyticsError),
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("write error: {0}")]
    Io(#[from] std::io::Error),
}

/// CSV columns, in order.
pub const CSV_COLUMNS: [&str; 21] = [
    "timestamp",
    "source_ip",
    "source_port",
    "destination_port",
    "protocol",
    "transport",
    "sensor",
    "country",
    "asn",
    "as_org",
    "kind",
    "session_id",
    "duration_ms",
    "bytes_in",
    "bytes_out",
    "count",
    "username",
    "password",
    "payload_sha256",
    "url",
    "fields",
];

fn rfc3339(ms: i64) -> String {
    let nanos = (ms as i128) * 1_000_000;
    match time::OffsetDateTime::from_unix_timestamp_nanos(nanos) {
        Ok(t) => {
            let fmt = time::macros::format_description!(
                "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
            );
            t.format(&fmt).unwrap_or_else(|_| ms.to_string())
        }
        Err(_) => ms.to_string(),
    }
}

/// A CSV cell: quoted when needed; text that a spreadsheet would run as a formula gets a
/// leading `'` (attackers choose these strings).
fn csv_cell(s: &str, text: bool) -> String {
    let mut v = s.to_string();
    if text && v.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        v.insert(0, '\'');
    }
    if v.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", v.replace('"', "\"\""))
    } else {
        v
    }
}

/// Writes the events of `q` (exact bounds; `None` = unbounded) to `out`; returns rows written.
/// The caller should [`crate::analytics::refresh`] first so `country` is filled in.
pub fn export(conn: &Connection, q: &Query, format: Format, out: &mut dyn Write) -> Result<u64, ExportError> {
    let sensor_id: Option<i64> = match &q.sensor {
        None => None,
        Some(name) => Some(
            conn.query_row("SELECT id FROM sensors WHERE name = ?1", params![name], |r| r.get(0))
                .map_err(|_| AnalyticsError::UnknownSensor(name.clone()))?,
        ),
    };
    let mut stmt = conn.prepare(
        "SELECT e.time_ms, e.src_ip, e.src_port, e.dst_port, e.protocol, e.transport, s.name,
                COALESCE(i.country, ''), i.asn, COALESCE(i.as_org, ''), e.kind, e.session_id, e.duration_ms,
                e.bytes_in, e.bytes_out, e.count, e.username, e.password, e.payload_sha256, e.url, e.fields, e.seq
         FROM events e JOIN sensors s ON s.id = e.sensor_id LEFT JOIN ip_info i ON i.ip = e.src_ip
         WHERE e.time_ms >= ?1 AND e.time_ms < ?2 AND (?3 IS NULL OR e.sensor_id = ?3)
         ORDER BY e.time_ms, e.sensor_id, e.seq",
    )?;
    let since = q.since_ms.unwrap_or(i64::MIN);
    let until = q.until_ms.unwrap_or_else(|| now_ms() + 1);
    let mut rows = stmt.query(params![since, until, sensor_id])?;
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    if format == Format::Csv {
        writeln!(out, "{}", CSV_COLUMNS.join(","))?;
    }
    let mut n = 0u64;
    while let Some(r) = rows.next()? {
        let time_ms: i64 = r.get(0)?;
        let src_ip: String = r.get(1)?;
        let src_port: i64 = r.get(2)?;
        let dst_port: i64 = r.get(3)?;
        let protocol: String = r.get(4)?;
        let transport: String = r.get(5)?;
        let sensor: String = r.get(6)?;
        let country: String = r.get(7)?;
        let asn: Option<i64> = r.get(8)?;
        let as_org: String = r.get(9)?;
        let kind: String = r.get(10)?;
        let session_id: i64 = r.get(11)?;
        let duration_ms: i64 = r.get(12)?;
        let bytes_in: i64 = r.get(13)?;
        let bytes_out: i64 = r.get(14)?;
        let count: i64 = r.get(15)?;
        let username: Option<String> = r.get(16)?;
        let password: Option<String> = r.get(17)?;
        let payload_sha256: Option<String> = r.get(18)?;
        let url: Option<String> = r.get(19)?;
        let fields: String = r.get(20)?;
        let seq: i64 = r.get(21)?;
        match format {
            Format::Jsonl => {
                let mut m = Map::new();
                m.insert("timestamp".into(), rfc3339(time_ms).into());
                m.insert("time_ms".into(), time_ms.into());
                m.insert("source_ip".into(), src_ip.into());
                m.insert("source_port".into(), src_port.into());
                m.insert("destination_port".into(), dst_port.into());
                m.insert("protocol".into(), protocol.into());
                m.insert("transport".into(), transport.into());
                m.insert("sensor".into(), sensor.into());
                m.insert("seq".into(), seq.into());
                m.insert("country".into(), country.into());
                m.insert("asn".into(), asn.map(Value::from).unwrap_or(Value::Null));
                m.insert("as_org".into(), as_org.into());
                m.insert("kind".into(), kind.into());
                m.insert("session_id".into(), session_id.into());
                m.insert("duration_ms".into(), duration_ms.into());
                m.insert("bytes_in".into(), bytes_in.into());
                m.insert("bytes_out".into(), bytes_out.into());
                m.insert("count".into(), count.into());
                if let Ok(Value::Object(detail)) = serde_json::from_str::<Value>(&fields) {
                    for (k, v) in detail {
                        let k = if m.contains_key(&k) { format!("detail_{k}") } else { k };
                        m.insert(k, v);
                    }
                }
                serde_json::to_writer(&mut out, &Value::Object(m)).map_err(std::io::Error::from)?;
                out.write_all(b"\n")?;
            }
            Format::Csv => {
                let cells = [
                    csv_cell(&rfc3339(time_ms), false),
                    csv_cell(&src_ip, false),
                    src_port.to_string(),
                    dst_port.to_string(),
                    csv_cell(&protocol, false),
                    csv_cell(&transport, false),
                    csv_cell(&sensor, true),
                    csv_cell(&country, false),
                    asn.map(|a| a.to_string()).unwrap_or_default(),
                    csv_cell(&as_org, true),
                    csv_cell(&kind, false),
                    session_id.to_string(),
                    duration_ms.to_string(),
                    bytes_in.to_string(),
                    bytes_out.to_string(),
                    count.to_string(),
                    csv_cell(username.as_deref().unwrap_or(""), true),
                    csv_cell(password.as_deref().unwrap_or(""), true),
                    csv_cell(payload_sha256.as_deref().unwrap_or(""), false),
                    csv_cell(url.as_deref().unwrap_or(""), true),
                    csv_cell(&fields, true),
                ];
                writeln!(out, "{}", cells.join(","))?;
            }
        }
        n += 1;
    }
    out.flush()?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_cells_are_quoted_and_defused() {
        assert_eq!(csv_cell("a,b", true), "\"a,b\"");
        assert_eq!(csv_cell("say \"hi\"", true), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_cell("=cmd()", true), "'=cmd()");
        assert_eq!(csv_cell("plain", true), "plain");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
    }
}

/// `drosera-admin export`: arguments and command.
#[derive(Debug, Clone, clap::Args)]
pub struct ExportArgs {
    /// jsonl (one JSON object per event) or csv.
    #[arg(long, value_parser = clap::builder::ValueParser::new(|s: &str| s.parse::<Format>()))]
    pub format: Format,
    /// Start (RFC 3339, YYYY-MM-DD, ms since the epoch, or an age like 7d); exact, inclusive.
    #[arg(long)]
    pub since: Option<String>,
    /// End (same forms); exact, exclusive; default now.
    #[arg(long)]
    pub until: Option<String>,
    /// Only this sensor.
    #[arg(long)]
    pub sensor: Option<String>,
    /// Write to this file instead of standard output.
    #[arg(long)]
    pub out: Option<std::path::PathBuf>,
}

impl ExportArgs {
    /// Enriches new events, then streams the export; returns the number of events written.
    pub fn run(&self, db_path: &std::path::Path, enrichment: &crate::enrich::EnrichmentConfig) -> anyhow::Result<u64> {
        use anyhow::Context;
        let q = crate::analytics::query_from_args(
            self.since.as_deref(),
            self.until.as_deref(),
            self.sensor.as_deref(),
            now_ms(),
        )?;
        let mut conn = crate::dashboard::open_db(db_path)?;
        crate::analytics::refresh(&mut conn, &crate::enrich::Enricher::new(enrichment)?)?;
        let n = match &self.out {
            Some(path) => {
                let mut f = std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
                export(&conn, &q, self.format, &mut f)?
            }
            None => export(&conn, &q, self.format, &mut std::io::stdout().lock())?,
        };
        Ok(n)
    }
}
