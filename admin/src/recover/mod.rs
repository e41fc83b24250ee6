//! Password recovery: the passwords behind challenge-response logins (MySQL native and
//! caching_sha2, NTLMv2 and NTLMv1 on SMB/RDP/MSSQL, VNC), found by trying a bundled list of
//! common passwords and every password seen in clear, in a bounded background job.
//!
//! WHY: those protocols never send the password, so their brute-force campaigns would show user
//! names only; the sensor records the server challenge and the client's proof, and a password a
//! campaign tries is almost always one that other campaigns send in clear or one of the most
//! common ones. Checking a candidate is recomputing the proof ([`algos`]).
//!
//! Bounds (`[recover]`): each run takes at most `batch` responses from the last `lookback_days`
//! and computes at most `max_attempts` proofs (the CPU budget; responses left over wait for the
//! next run), with at most `max_seen_passwords` clear passwords added to the bundled list. A run
//! reads and writes the database in two short steps; the hashing in between holds no lock.
//! Each tried response is marked with the candidate list's generation (a hash of the list), so a
//! list that changed (new clear passwords) tries unrecovered responses again, after the new ones.
//! A recovered password is stored on its event, marked `recovered` wherever it is shown (report,
//! dashboard, exports), and never replaced.

pub mod algos;

use crate::storage::{CrackResult, CrackTarget, Storage, StorageError};
use algos::{Candidate, Target};
use serde::{Deserialize, Serialize};
use sha2::Digest;

/// The bundled list (see its header for where it comes from and its licence).
pub const BUNDLED: &str = include_str!("../../data/passwords.txt");

/// The generation recorded for responses in a format no algorithm here reads: never tried again.
pub const UNSUPPORTED: &str = "unsupported";

/// Longest clear password taken as a candidate, bytes.
pub const MAX_WORD_BYTES: usize = 128;

/// `[recover]`: the password recovery job of `drosera-admin serve`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecoverConfig {
    /// Run the job in `serve` (`drosera-admin recover` runs one pass by hand either way).
    pub enabled: bool,
    /// Seconds between runs.
    pub interval_s: u64,
    /// Most responses taken per run.
    pub batch: u32,
    /// Most proofs computed per run (the CPU budget: about a microsecond each).
    pub max_attempts: u64,
    /// Only logins of the last this many days are tried.
    pub lookback_days: u32,
    /// Most distinct clear passwords (most used first) added to the bundled list.
    pub max_seen_passwords: u32,
}

impl Default for RecoverConfig {
    fn default() -> Self {
        RecoverConfig {
            enabled: true,
            interval_s: 300,
            batch: 200,
            max_attempts: 2_000_000,
            lookback_days: 7,
            max_seen_passwords: 5000,
        }
    }
}

impl RecoverConfig {
    /// (key, problem, fix) of the first bad value.
    pub fn validate(&self) -> Result<(), (String, String, String)> {
        let bad = |k: &str, p: &str, f: &str| Err((format!("recover.{k}"), p.to_string(), f.to_string()));
        if self.interval_s < 10 {
            return bad("interval_s", "must be at least 10 seconds", "use the default, 300");
        }
        if self.batch == 0 || self.batch > 100_000 {
            return bad("batch", "must be between 1 and 100000", "use the default, 200");
        }
        if self.max_attempts < 10_000 {
            return bad(
                "max_attempts",
                "must be at least 10000 (one response against the list)",
                "use the default, 2000000",
            );
        }
        if self.lookback_days == 0 {
            return bad("lookback_days", "must be at least 1", "use the default, 7");
        }
        if self.max_seen_passwords > 1_000_000 {
            return bad("max_seen_passwords", "must be at most 1000000", "use the default, 5000");
        }
        Ok(())
    }
}

/// What one run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RunStats {
    /// Candidate passwords (clear ones first, then the bundled list).
    pub candidates: usize,
    /// Responses checked against every candidate.
    pub tried: usize,
    /// Responses whose password was found.
    pub recovered: usize,
    /// Responses in a format no algorithm here reads (marked tried, never tried again).
    pub unsupported: usize,
    /// Responses left for the next run (the budget ran out).
    pub deferred: usize,
    /// Proofs computed.
    pub attempts: u64,
}

/// The bundled words, in order (comments and blank lines skipped).
pub fn bundled_words() -> impl Iterator<Item = &'static str> {
    BUNDLED.lines().map(str::trim_end).filter(|l| !l.is_empty() && !l.starts_with('#'))
}

/// The candidate list: the clear passwords (most used first), then the bundled words, without
/// repeats, capped at `max_attempts` (so one response always fits the budget).
pub fn candidate_words(clear: Vec<String>, max_attempts: u64) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    let cap = usize::try_from(max_attempts).unwrap_or(usize::MAX);
    for w in clear.into_iter().chain(bundled_words().map(str::to_string)) {
        if out.len() >= cap {
            break;
        }
        if !w.is_empty() && w.len() <= MAX_WORD_BYTES && seen.insert(w.clone()) {
            out.push(w);
        }
    }
    out
}

/// The generation of a candidate list: a short hash of it.
pub fn generation(words: &[String]) -> String {
    let mut h = sha2::Sha256::new();
    for w in words {
        h.update(w.as_bytes());
        h.update([0]);
    }
    hex::encode(&h.finalize()[..8])
}

/// The target a stored login's fields describe.
pub fn target_of(fields: &str) -> Option<Target> {
    let v: serde_json::Value = serde_json::from_str(fields).ok()?;
    let get = |k: &str| v.get(k).and_then(|x| x.as_str());
    Target::parse(get("hash_format")?, get("hash")?, get("salt"))
}

/// What [`crack`] found: the tried responses, those in formats not checked, the counts.
pub struct Cracked {
    pub tried: Vec<CrackResult>,
    pub unsupported: Vec<CrackResult>,
    pub stats: RunStats,
}

impl Cracked {
    /// Records both lists (tried with `generation`, unsupported as [`UNSUPPORTED`]).
    pub fn record(&self, db: &dyn Storage, generation: &str, now_ms: i64) -> Result<(), StorageError> {
        db.record_cracks(generation, &self.tried, now_ms)?;
        db.record_cracks(UNSUPPORTED, &self.unsupported, now_ms)
    }
}

/// Checks `targets` against `words` within `max_attempts` proofs: pure CPU work, no database.
pub fn crack(targets: &[CrackTarget], words: &[String], max_attempts: u64) -> Cracked {
    let candidates: Vec<Candidate> = words.iter().map(|w| Candidate::new(w)).collect();
    let mut stats = RunStats { candidates: candidates.len(), ..RunStats::default() };
    let mut out = Vec::new();
    let mut unsupported = Vec::new();
    for t in targets {
        let Some(target) = target_of(&t.fields) else {
            stats.unsupported += 1;
            unsupported.push(CrackResult { id: t.id, time_ms: t.time_ms, password: None });
            continue;
        };
        if stats.attempts.saturating_add(candidates.len() as u64) > max_attempts {
            stats.deferred += 1;
            continue;
        }
        let mut found = None;
        for c in &candidates {
            stats.attempts += 1;
            if target.check(c) {
                found = Some(c.word.clone());
                break;
            }
        }
        stats.tried += 1;
        stats.recovered += usize::from(found.is_some());
        out.push(CrackResult { id: t.id, time_ms: t.time_ms, password: found });
    }
    Cracked { tried: out, unsupported, stats }
}

/// What a run reads first: the candidate words, their generation and the targets.
pub struct Work {
    pub words: Vec<String>,
    pub generation: String,
    pub targets: Vec<CrackTarget>,
}

/// Step 1 of a run (database): the candidates and the targets.
pub fn load(db: &dyn Storage, cfg: &RecoverConfig, now_ms: i64) -> Result<Work, StorageError> {
    let since = now_ms.saturating_sub(i64::from(cfg.lookback_days) * crate::storage::DAY_MS);
    let clear = db.clear_passwords(since, i64::from(cfg.max_seen_passwords))?;
    let words = candidate_words(clear, cfg.max_attempts);
    let generation = generation(&words);
    let targets = db.crack_targets(since, &generation, i64::from(cfg.batch))?;
    Ok(Work { words, generation, targets })
}

/// One whole run on one storage handle (the CLI's `drosera-admin recover`).
pub fn run_once(db: &dyn Storage, cfg: &RecoverConfig, now_ms: i64) -> Result<RunStats, StorageError> {
    let w = load(db, cfg, now_ms)?;
    let c = crack(&w.targets, &w.words, cfg.max_attempts);
    c.record(db, &w.generation, now_ms)?;
    Ok(c.stats)
}

/// The job of `serve`: a run every `interval_s` until `shutdown`; the hashing runs on a blocking
/// thread without the database handle.
pub async fn run(
    db: crate::storage::Shared,
    cfg: RecoverConfig,
    metrics: Option<std::sync::Arc<crate::metrics::Metrics>>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(cfg.interval_s));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let c = cfg.clone();
        let work = match db.run(move |db| load(db, &c, crate::clock::now_ms())).await {
            Ok(Ok(w)) => w,
            Ok(Err(e)) | Err(e) => {
                tracing::warn!(error = %e, "password recovery: reading targets failed");
                continue;
            }
        };
        if work.targets.is_empty() {
            continue;
        }
        let budget = cfg.max_attempts;
        let Ok((cracked, generation)) =
            tokio::task::spawn_blocking(move || (crack(&work.targets, &work.words, budget), work.generation)).await
        else {
            continue;
        };
        let stats = cracked.stats.clone();
        match db.run(move |db| cracked.record(db, &generation, crate::clock::now_ms())).await {
            Ok(Ok(())) => {
                tracing::info!(?stats, "password recovery run");
                if let Some(m) = &metrics {
                    m.recovery_run(&stats);
                }
            }
            Ok(Err(e)) | Err(e) => tracing::warn!(error = %e, "password recovery: recording results failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundled_list_has_a_few_thousand_common_passwords() {
        let words: Vec<&str> = bundled_words().collect();
        assert_eq!(words.len(), 5000);
        assert_eq!(words[0], "123456");
        assert!(words.contains(&"admin") && words.contains(&"password"));
    }

    #[test]
    fn clear_passwords_come_first_and_the_budget_caps_the_list() {
        let w = candidate_words(vec!["s3cret-only-here".into(), "password".into(), String::new()], 10_000);
        assert_eq!(&w[..3], ["s3cret-only-here", "password", "123456"]);
        assert_eq!(w.len(), 5001);
        assert_eq!(candidate_words(vec![], 10).len(), 10);
        assert_ne!(generation(&w), generation(&w[1..]));
    }

    #[test]
    fn crack_stays_in_its_budget_and_marks_what_it_cannot_read() {
        let challenge: [u8; 16] = *b"0123456789abcdef";
        let vnc = |pw: &[u8]| {
            format!(
                r#"{{"hash":"$vnc$*{}*{}","hash_format":"john-vnc","username":""}}"#,
                hex::encode_upper(challenge),
                hex::encode_upper(algos::vnc_response(&challenge, pw))
            )
        };
        let t = |id, fields: String| CrackTarget { id, time_ms: id, protocol: "vnc".into(), fields };
        let targets = vec![
            t(1, vnc(b"letmein")),
            t(2, r#"{"hash":"x","hash_format":"hashcat-11400"}"#.into()),
            t(3, vnc(b"zz-not-in-any-list")),
            t(4, vnc(b"admin")),
        ];
        let words = candidate_words(vec![], 1_000_000);
        let c = crack(&targets, &words, 1_000_000);
        let found: Vec<_> = c.tried.iter().map(|r| (r.id, r.password.as_deref())).collect();
        assert_eq!(found, [(1, Some("letmein")), (3, None), (4, Some("admin"))]);
        assert_eq!(c.unsupported.iter().map(|r| r.id).collect::<Vec<_>>(), [2]);
        let s = c.stats;
        assert_eq!((s.tried, s.recovered, s.unsupported, s.deferred), (3, 2, 1, 0));
        // A budget of one full pass over the list: the first response takes part of it, and
        // the next ones, which might need a full pass, wait for the next run.
        let c = crack(&targets, &words, 5000);
        let s = &c.stats;
        assert_eq!((s.tried, s.unsupported, s.deferred), (1, 1, 2), "{s:?}");
        assert!(s.attempts <= 5000);
        assert_eq!((c.tried.len(), c.unsupported.len()), (1, 1));
    }
}
