//! Ranges: the [`Query`] every front end builds, its parsing from `--since`/`--until` text, and
//! its resolution against the database into aligned bounds and the aggregate spans that cover
//! them.

use super::AnalyticsError;
use crate::labels::{class_sensor, Class};
use crate::storage::{AggRange, Resolution, Span, Storage};
use serde::{Deserialize, Serialize};

pub use crate::clock::now_ms;
pub use crate::storage::{DAY_MS, HOUR_MS, WEEK_MS};

/// Most rows any "top" list returns, whatever the caller asks.
pub const MAX_LIMIT: usize = 1000;

/// The time range and sensor every query takes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Query {
    /// Start, ms since the epoch (inclusive, rounded down to the hour); `None` = everything.
    pub since_ms: Option<i64>,
    /// End, ms since the epoch (exclusive, rounded up to the hour); `None` = now.
    pub until_ms: Option<i64>,
    /// Sensor name; `None` = all sensors.
    pub sensor: Option<String>,
    /// Labelled traffic taken back into the numbers (by default `self` and `research` are left
    /// out of every number and shown apart; see `crate::labels`).
    #[serde(default)]
    pub include: crate::labels::Include,
}

/// Parses a `--since` / `--until` value relative to `now_ms`.
pub fn parse_time(s: &str, now_ms: i64) -> Result<i64, AnalyticsError> {
    let bad = || AnalyticsError::BadTime(s.to_string());
    let t = s.trim();
    if t.is_empty() {
        return Err(bad());
    }
    if let Ok(ms) = t.parse::<i64>() {
        return Ok(ms);
    }
    if let Some(unit) = t.chars().last().filter(|c| "smhdw".contains(*c)) {
        if let Ok(n) = t[..t.len() - 1].parse::<i64>() {
            let mul = match unit {
                's' => 1000,
                'm' => 60_000,
                'h' => HOUR_MS,
                'd' => DAY_MS,
                _ => 7 * DAY_MS,
            };
            return n.checked_mul(mul).map(|d| now_ms.saturating_sub(d)).ok_or_else(bad);
        }
    }
    use time::format_description::well_known::Rfc3339;
    if let Ok(dt) = time::OffsetDateTime::parse(t, &Rfc3339) {
        return Ok((dt.unix_timestamp_nanos() / 1_000_000) as i64);
    }
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    if let Ok(d) = time::Date::parse(t, &fmt) {
        return Ok(d.midnight().assume_utc().unix_timestamp() * 1000);
    }
    Err(bad())
}

pub(super) fn floor_to(t: i64, unit: i64) -> i64 {
    t.div_euclid(unit) * unit
}

fn ceil_to(t: i64, unit: i64) -> i64 {
    floor_to(t.saturating_add(unit - 1), unit)
}

/// The range a query resolves to, shown with every answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeInfo {
    pub since_ms: i64,
    pub until_ms: i64,
    pub sensor: Option<String>,
}

/// Spans covering `[since, until)` (hour-aligned) without overlap: hours at the partial-day
/// edges, days at the partial-week edges, weeks in the middle (`weeks = false`: days in the
/// middle).
pub(super) fn spans(since: i64, until: i64, weeks: bool) -> [Span; 5] {
    use Resolution::{Day, Hour, Week};
    let d0 = ceil_to(since, DAY_MS);
    let d1 = floor_to(until, DAY_MS);
    let w0 = ceil_to(d0, WEEK_MS);
    let w1 = floor_to(d1, WEEK_MS);
    let s = |res, from, to| Span { res, from, to };
    let none = Span::EMPTY;
    if d0 >= d1 {
        [s(Hour, since, until), none, none, none, none]
    } else if !weeks || w0 >= w1 {
        [s(Hour, since, d0), s(Day, d0, d1), s(Hour, d1, until), none, none]
    } else {
        [s(Hour, since, d0), s(Day, d0, w0), s(Week, w0, w1), s(Day, w1, d1), s(Hour, d1, until)]
    }
}

/// A query resolved against the database: aligned bounds, sensor id, and the spans that cover
/// the range without overlap.
#[derive(Debug, Clone)]
pub(super) struct Resolved {
    pub since: i64,
    pub until: i64,
    pub sensor_id: Option<i64>,
    pub spans: [Span; 5],
    pub hourly_from: i64,
}

pub(super) fn resolve(db: &dyn Storage, q: &Query) -> Result<Resolved, AnalyticsError> {
    let sensor_id = match &q.sensor {
        None => None,
        Some(name) => Some(db.sensor_id(name)?.ok_or_else(|| AnalyticsError::UnknownSensor(name.clone()))?),
    };
    let hourly_from = db.hourly_from()?;
    let mut since = floor_to(q.since_ms.unwrap_or(0).max(0), HOUR_MS);
    let mut until = ceil_to(q.until_ms.unwrap_or_else(|| now_ms() + 1).max(since), HOUR_MS);
    // Hour rows before `hourly_from` are gone: widen edges there to whole days.
    if since < hourly_from {
        since = floor_to(since, DAY_MS);
    }
    if until < hourly_from {
        until = ceil_to(until, DAY_MS);
    }
    let spans = spans(since, until, true);
    Ok(Resolved { since, until, sensor_id, spans, hourly_from })
}

impl Resolved {
    pub fn info(&self, q: &Query) -> RangeInfo {
        RangeInfo { since_ms: self.since, until_ms: self.until, sensor: q.sensor.clone() }
    }

    /// The aggregate rows of this range (the all-sensors rows when no sensor is selected).
    pub fn agg(&self) -> AggRange {
        AggRange { spans: self.spans, sensor_id: self.sensor_id.unwrap_or(0) }
    }

    /// The rows of label class `c`'s share of [`Resolved::agg`].
    pub fn class_agg(&self, c: Class) -> AggRange {
        AggRange { spans: self.spans, sensor_id: class_sensor(self.sensor_id.unwrap_or(0), c) }
    }
}

/// A caller's row count, within 1..=[`MAX_LIMIT`].
pub(super) fn limit(n: usize) -> usize {
    n.clamp(1, MAX_LIMIT)
}
