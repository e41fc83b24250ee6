//! What the CLI (and the maintenance loop) does with stored samples: list, show, get as an
//! encrypted ZIP, rescan under new rules, and retention.

use super::classify::{Classifier, ClassifyConfig};
use super::config::SamplesConfig;
use super::store::{is_sha256_hex, SampleStore, StoreError};
use crate::storage::{SampleDetail, SampleFilter, SampleMatch, SampleSummary, Storage, StorageError};
use std::fmt::Write as _;

/// Rows `samples list` prints at most.
pub const LIST_LIMIT: i64 = 10_000;
/// Sightings `samples show` prints at most.
pub const SHOW_SIGHTINGS: i64 = 200;
/// Samples deleted per retention step.
const PRUNE_CHUNK: i64 = 1000;

#[derive(Debug, thiserror::Error)]
pub enum SampleOpError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0:?} is not a sha256: give 64 hex digits")]
    BadHash(String),
    #[error("no sample {0} in the database")]
    Unknown(String),
    #[error("stored sample {sha256} does not hash to its name (got {got}); the store file is damaged")]
    Damaged { sha256: String, got: String },
    #[error("cannot build the ZIP: {0}")]
    Zip(#[from] zip::result::ZipError),
    #[error("YARA rules: {0}")]
    Rules(#[from] super::classify::ClassifyError),
}

/// Normalizes a hash the user typed (case, spaces).
pub fn parse_sha256(s: &str) -> Result<String, SampleOpError> {
    let h = s.trim().to_ascii_lowercase();
    if is_sha256_hex(&h) {
        Ok(h)
    } else {
        Err(SampleOpError::BadHash(s.to_string()))
    }
}

pub fn list(db: &dyn Storage, filter: &SampleFilter) -> Result<Vec<SampleSummary>, SampleOpError> {
    Ok(db.list_samples(filter, LIST_LIMIT)?)
}

pub fn show(db: &dyn Storage, sha256: &str) -> Result<SampleDetail, SampleOpError> {
    let h = parse_sha256(sha256)?;
    db.sample_detail(&h, SHOW_SIGHTINGS)?.ok_or(SampleOpError::Unknown(h))
}

/// The sample's bytes, checked against its name.
pub fn bytes(db: &dyn Storage, cfg: &SamplesConfig, sha256: &str) -> Result<(SampleDetail, Vec<u8>), SampleOpError> {
    let d = show(db, sha256)?;
    let b = bytes_of(cfg, &d)?;
    Ok((d, b))
}

/// The stored bytes of the sample `d` describes, checked against its name. Reads the store
/// without opening it for writing (a running admin's `tmp/` is left alone).
pub fn bytes_of(cfg: &SamplesConfig, d: &SampleDetail) -> Result<Vec<u8>, SampleOpError> {
    let store = SampleStore::reader(&cfg.dir);
    let b = store.get(&d.summary.sha256, cfg.max_sample_bytes.max(d.summary.size.max(0) as u64))?;
    let got = super::store::Digests::of(&b).sha256;
    if got != d.summary.sha256 {
        return Err(SampleOpError::Damaged { sha256: d.summary.sha256.clone(), got });
    }
    Ok(b)
}

/// [`zip`] for a sample already looked up.
pub fn zip_of(cfg: &SamplesConfig, d: &SampleDetail) -> Result<Vec<u8>, SampleOpError> {
    let b = bytes_of(cfg, d)?;
    Ok(super::zip::encrypted_zip(&d.summary.sha256, &b)?)
}

/// The sample as a ZIP with password `infected`; the file inside is named by its sha256.
pub fn zip(db: &dyn Storage, cfg: &SamplesConfig, sha256: &str) -> Result<Vec<u8>, SampleOpError> {
    let (d, b) = bytes(db, cfg, sha256)?;
    Ok(super::zip::encrypted_zip(&d.summary.sha256, &b)?)
}

/// Reclassifies every sample whose rules version differs from the loaded rules'; returns how
/// many were rescanned.
pub fn rescan(db: &dyn Storage, cfg: &SamplesConfig, classify: &ClassifyConfig) -> Result<u64, SampleOpError> {
    let classifier = Classifier::from_config(classify)?;
    let version = classifier.rules_version();
    let store = SampleStore::reader(&cfg.dir);
    let mut n = 0u64;
    let mut skipped = std::collections::HashSet::new();
    loop {
        let todo: Vec<String> = db
            .samples_to_rescan(&version, 100 + skipped.len() as i64)?
            .into_iter()
            .filter(|h| !skipped.contains(h))
            .collect();
        if todo.is_empty() {
            return Ok(n);
        }
        for h in todo {
            let b = match store.get(&h, cfg.max_sample_bytes) {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(sha256 = %h, error = %e, "cannot rescan a sample");
                    skipped.insert(h);
                    continue;
                }
            };
            let c = classifier.classify(&b);
            let matches: Vec<SampleMatch> = c
                .matches
                .into_iter()
                .map(|m| SampleMatch { namespace: m.namespace, rule: m.rule, tags: m.tags.join(" ") })
                .collect();
            db.set_sample_classification(&h, &c.file_type, &version, &matches)?;
            n += 1;
        }
    }
}

/// Deletes samples not seen for `retention_days` (rows, then files); returns how many.
pub fn prune(db: &dyn Storage, cfg: &SamplesConfig, now_ms: i64) -> Result<u64, SampleOpError> {
    if cfg.retention_days == 0 {
        return Ok(0);
    }
    let store = SampleStore::reader(&cfg.dir);
    let before = now_ms.saturating_sub(i64::from(cfg.retention_days) * 86_400_000);
    let mut n = 0;
    loop {
        let gone = db.delete_samples_seen_before(before, PRUNE_CHUNK)?;
        for h in &gone {
            store.remove(h);
        }
        n += gone.len() as u64;
        if (gone.len() as i64) < PRUNE_CHUNK {
            return Ok(n);
        }
    }
}

fn time(ms: i64) -> String {
    crate::analytics::fmt_time(Some(ms))
}

/// The list as text, one sample a line.
pub fn render_list(list: &[SampleSummary]) -> String {
    let mut s = String::new();
    let _ =
        writeln!(s, "{:<64}  {:>10}  {:<20}  {:>9}  {:<30}  rules", "sha256", "size", "last seen", "sightings", "type");
    for x in list {
        let _ = writeln!(
            s,
            "{:<64}  {:>10}  {:<20}  {:>9}  {:<30}  {}",
            x.sha256,
            x.size,
            time(x.last_seen_ms),
            x.sightings,
            crate::shown::escaped(&x.file_type),
            crate::shown::escaped(&x.rules.join(","))
        );
    }
    s
}

/// Fetches as text, one a line.
pub fn render_fetches(rows: &[crate::storage::FetchRow]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<20}  {:<8}  {:>6}  {:>10}  {:<16}  url / sample or error",
        "when", "state", "status", "size", "sensor"
    );
    for x in rows {
        let _ = writeln!(
            s,
            "{:<20}  {:<8}  {:>6}  {:>10}  {:<16}  {}",
            time(x.done_ms.unwrap_or(x.offered_ms)),
            x.state,
            x.status.map(|v| v.to_string()).unwrap_or_default(),
            x.size.map(|v| v.to_string()).unwrap_or_default(),
            crate::shown::escaped(&x.sensor),
            crate::shown::escaped(&x.url)
        );
        let what = match &x.sha256 {
            Some(h) if x.state == "fetched" => h.clone(),
            _ => crate::shown::escaped(&x.error),
        };
        let _ = writeln!(s, "{:<20}  {}", "", what);
    }
    s
}

/// One sample as text.
pub fn render_detail(d: &SampleDetail) -> String {
    let x = &d.summary;
    let mut s = String::new();
    let _ = writeln!(s, "sha256      {}", x.sha256);
    let _ = writeln!(s, "sha1        {}", x.sha1);
    let _ = writeln!(s, "md5         {}", x.md5);
    let _ = writeln!(s, "size        {} bytes ({} stored, zstd)", x.size, x.stored_bytes);
    let _ = writeln!(s, "type        {}", crate::shown::escaped(&x.file_type));
    let _ = writeln!(s, "first seen  {}", time(x.first_seen_ms));
    let _ = writeln!(s, "last seen   {}", time(x.last_seen_ms));
    let _ = writeln!(s, "rules       version {:?}", x.rules_version);
    for m in &d.matches {
        let _ = writeln!(s, "  match     {}:{} [{}]", m.namespace, m.rule, crate::shown::escaped(&m.tags));
    }
    let _ = writeln!(s, "names ({})", d.names.len());
    for n in &d.names {
        let _ = writeln!(s, "  {}", crate::shown::escaped(n));
    }
    let _ = writeln!(s, "sightings ({} recorded, newest {} shown)", x.sightings, d.sightings.len());
    for g in &d.sightings {
        let _ = writeln!(
            s,
            "  {}  {:<16} {:<39} {:<8} {:<14} {:<12} {}",
            time(g.time_ms),
            crate::shown::escaped(&g.sensor),
            g.src_ip,
            g.protocol,
            crate::shown::escaped(&g.source),
            g.outcome,
            crate::shown::escaped(&g.name)
        );
    }
    s
}
