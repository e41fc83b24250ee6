//! The field report's charts (issue 21): what the Dionaea field report (see
//! `docs/api.md`, "field") drew by hand from an export, answered from the aggregates:
//! * attackers with at least N attempts, counted per country;
//! * the attempts of those attackers, summed per country;
//! * attempts per protocol (drawn on a log scale, since one protocol usually dwarfs the rest).
//!
//! WHY protocols over every attacker: the aggregates keep attempts per protocol and per
//! address, not per (address, protocol), so the protocol numbers cannot be cut to the attackers
//! above N without reading raw events; they cover every attempt in the range (the report's
//! threshold only removed single-digit noise from its chart, which a log scale shows anyway).

use super::queries::{countries_in, protocols, top_sources_in, CountryRow, ProtocolRow, TopSources};
use super::range::{limit, resolve, Query, RangeInfo, Resolved};
use super::refresh::cc_label;
use super::scan::{scan_sources, SrcMap};
use super::AnalyticsError;
use crate::storage::Storage;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldCountry {
    /// ISO 3166-1 alpha-2 code, or private / reserved / unknown.
    pub country: String,
    /// Addresses of this country with at least `min_attempts` attempts.
    pub attackers: i64,
    /// Attempts of those addresses.
    pub attempts: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldCharts {
    pub range: RangeInfo,
    pub min_attempts: i64,
    /// Addresses with at least `min_attempts` attempts, all countries.
    pub attackers: i64,
    /// Per country, most attackers first (ties: most attempts, then code).
    pub attackers_by_country: Vec<FieldCountry>,
    /// The same rows, most attempts first (ties: most attackers, then code).
    pub attacks_by_country: Vec<FieldCountry>,
    /// Attempts per protocol, every attacker (see the module docs); scan detection counts its
    /// source windows, as on the overview.
    pub protocols: Vec<ProtocolRow>,
}

/// The field report's three charts over `q`, for attackers with at least `min_attempts`
/// attempts (at least 1), the top `n` countries of each.
pub fn field_charts(db: &dyn Storage, q: &Query, min_attempts: i64, n: usize) -> Result<FieldCharts, AnalyticsError> {
    let r = resolve(db, q)?;
    let src = scan_sources(db, &r, q)?;
    field_charts_in(db, q, &r, &src, min_attempts, n)
}

/// Everything the attackers page shows from the source aggregates (top sources, countries,
/// the field report's charts) in ONE pass over them: the pass is most of a page's time at ten
/// million events (`docs/benchmarks.md`).
pub fn attackers_page(
    db: &dyn Storage,
    q: &Query,
    min_attempts: i64,
    n: usize,
) -> Result<(TopSources, Vec<CountryRow>, FieldCharts), AnalyticsError> {
    let r = resolve(db, q)?;
    let src = scan_sources(db, &r, q)?;
    Ok((
        top_sources_in(db, q, &r, &src, min_attempts, n)?,
        countries_in(&src, n)?,
        field_charts_in(db, q, &r, &src, min_attempts, n)?,
    ))
}

fn field_charts_in(
    db: &dyn Storage,
    q: &Query,
    r: &Resolved,
    src: &SrcMap,
    min_attempts: i64,
    n: usize,
) -> Result<FieldCharts, AnalyticsError> {
    let min_attempts = min_attempts.max(1);
    let mut by: HashMap<i64, (i64, i64)> = HashMap::new();
    let mut attackers = 0;
    for (_, v) in src.iter().filter(|(_, v)| v.attempts >= min_attempts) {
        let e = by.entry(v.cc).or_default();
        e.0 += 1;
        e.1 += v.attempts;
        attackers += 1;
    }
    let mut rows: Vec<FieldCountry> = by
        .into_iter()
        .map(|(cc, (attackers, attempts))| FieldCountry { country: cc_label(cc), attackers, attempts })
        .collect();
    rows.sort_by(|a, b| {
        b.attackers.cmp(&a.attackers).then(b.attempts.cmp(&a.attempts)).then_with(|| a.country.cmp(&b.country))
    });
    let n = limit(n);
    let attackers_by_country: Vec<FieldCountry> = rows.iter().take(n).cloned().collect();
    rows.sort_by(|a, b| {
        b.attempts.cmp(&a.attempts).then(b.attackers.cmp(&a.attackers)).then_with(|| a.country.cmp(&b.country))
    });
    rows.truncate(n);
    let protocols = protocols(db, q)?
        .into_iter()
        .map(|p| if p.protocol == "scan" { ProtocolRow { attempts: p.events, ..p } } else { p })
        .filter(|p| p.attempts > 0)
        .collect();
    Ok(FieldCharts {
        range: r.info(q),
        min_attempts,
        attackers,
        attackers_by_country,
        attacks_by_country: rows,
        protocols,
    })
}
