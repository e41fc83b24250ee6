//! Streaming exports of raw events as JSON lines or CSV.
//!
//! WHY streamed: an export of months of data must not need memory in proportion to it. Rows come
//! one at a time from the storage's cursor ([`Storage::export_events`]) and are written through a
//! buffered writer, so memory stays constant whatever the range.
//!
//! The JSON lines carry the names MHN's old session export used (`timestamp`, `source_ip`,
//! `source_port`, `destination_port`, `protocol`, `sensor`) plus `country`/`asn`/`as_org` from
//! enrichment, the common event fields, and every detail field flattened to the top level (a
//! detail field whose name clashes with a common one is prefixed `detail_`). So
//! `pandas.read_json(f, lines=True)` followed by `df.source_ip.value_counts()` works unchanged.
//!
//! Time bounds are exact (milliseconds), unlike the hour-aligned analytics.

use crate::analytics::{now_ms, AnalyticsError, Query};
use crate::storage::{EventRange, ExportRow, Storage, StorageError};
use serde_json::{Map, Value};
use std::io::Write;
use std::ops::ControlFlow;

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
    #[error(transparent)]
    Storage(#[from] StorageError),
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
/// The caller should [`crate::analytics::refresh()`] first so `country` is filled in.
pub fn export(db: &dyn Storage, q: &Query, format: Format, out: &mut dyn Write) -> Result<u64, ExportError> {
    let sensor_id = match &q.sensor {
        None => None,
        Some(name) => Some(db.sensor_id(name)?.ok_or_else(|| AnalyticsError::UnknownSensor(name.clone()))?),
    };
    let range = EventRange {
        since_ms: q.since_ms.unwrap_or(i64::MIN),
        until_ms: q.until_ms.unwrap_or_else(|| now_ms() + 1),
        sensor_id,
    };
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    if format == Format::Csv {
        writeln!(out, "{}", CSV_COLUMNS.join(","))?;
    }
    let mut n = 0u64;
    let mut failed = None;
    db.export_events(&range, &mut |r| match write_row(&mut out, format, r) {
        Ok(()) => {
            n += 1;
            ControlFlow::Continue(())
        }
        Err(e) => {
            failed = Some(e);
            ControlFlow::Break(())
        }
    })?;
    if let Some(e) = failed {
        return Err(e.into());
    }
    out.flush()?;
    Ok(n)
}

fn write_row(out: &mut impl Write, format: Format, r: &ExportRow<'_>) -> std::io::Result<()> {
    match format {
        Format::Jsonl => {
            let mut m = Map::new();
            m.insert("timestamp".into(), rfc3339(r.time_ms).into());
            m.insert("time_ms".into(), r.time_ms.into());
            m.insert("source_ip".into(), r.src_ip.into());
            m.insert("source_port".into(), r.src_port.into());
            m.insert("destination_port".into(), r.dst_port.into());
            m.insert("protocol".into(), r.protocol.into());
            m.insert("transport".into(), r.transport.into());
            m.insert("sensor".into(), r.sensor.into());
            m.insert("seq".into(), r.seq.into());
            m.insert("country".into(), r.country.into());
            m.insert("asn".into(), r.asn.map(Value::from).unwrap_or(Value::Null));
            m.insert("as_org".into(), r.as_org.into());
            m.insert("kind".into(), r.kind.into());
            m.insert("session_id".into(), r.session_id.into());
            m.insert("duration_ms".into(), r.duration_ms.into());
            m.insert("bytes_in".into(), r.bytes_in.into());
            m.insert("bytes_out".into(), r.bytes_out.into());
            m.insert("count".into(), r.count.into());
            if let Ok(Value::Object(detail)) = serde_json::from_str::<Value>(r.fields) {
                for (k, v) in detail {
                    let k = if m.contains_key(&k) { format!("detail_{k}") } else { k };
                    m.insert(k, v);
                }
            }
            serde_json::to_writer(&mut *out, &Value::Object(m)).map_err(std::io::Error::from)?;
            out.write_all(b"\n")
        }
        Format::Csv => {
            let cells = [
                csv_cell(&rfc3339(r.time_ms), false),
                csv_cell(r.src_ip, false),
                r.src_port.to_string(),
                r.dst_port.to_string(),
                csv_cell(r.protocol, false),
                csv_cell(r.transport, false),
                csv_cell(r.sensor, true),
                csv_cell(r.country, false),
                r.asn.map(|a| a.to_string()).unwrap_or_default(),
                csv_cell(r.as_org, true),
                csv_cell(r.kind, false),
                r.session_id.to_string(),
                r.duration_ms.to_string(),
                r.bytes_in.to_string(),
                r.bytes_out.to_string(),
                r.count.to_string(),
                csv_cell(r.username.unwrap_or(""), true),
                csv_cell(r.password.unwrap_or(""), true),
                csv_cell(r.payload_sha256.unwrap_or(""), false),
                csv_cell(r.url.unwrap_or(""), true),
                csv_cell(r.fields, true),
            ];
            writeln!(out, "{}", cells.join(","))
        }
    }
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
