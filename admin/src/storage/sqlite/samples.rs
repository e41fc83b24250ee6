//! The sample tables on SQLite (see `SampleStorage`): samples, their names, sightings, YARA
//! matches and rejected transfers.

use super::super::{
    sighting_of, FetchDone, FetchRow, NewFetch, NewSample, SampleDetail, SampleFilter, SampleMatch, SampleSighting,
    SampleStorage, SampleStored, SampleSummary, StorageError,
};
use drosera_uplink::event::Event;
use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};

/// Records the sighting (and the name) of a Sample event, inside the ingest transaction; a
/// sighting already recorded for (sensor, seq) is skipped.
pub fn insert_sighting(tx: &Connection, sensor_id: i64, ev: &Event) -> rusqlite::Result<()> {
    let Some((sha, name, source, outcome)) = sighting_of(ev) else { return Ok(()) };
    let n = tx.prepare_cached(
        "INSERT OR IGNORE INTO sample_sightings (sensor_id, seq, sha256, time_ms, src_ip, protocol, source, outcome, name)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        sensor_id,
        ev.seq.min(i64::MAX as u64) as i64,
        sha,
        ev.time_ms,
        ev.src_ip.to_string(),
        ev.protocol.as_str(),
        source,
        outcome,
        name
    ])?;
    if n == 0 {
        return Ok(());
    }
    if !name.is_empty() {
        tx.prepare_cached("INSERT OR IGNORE INTO sample_names (sha256, name) VALUES (?1, ?2)")?
            .execute(params![sha, name])?;
    }
    tx.prepare_cached(
        "UPDATE samples SET first_seen_ms = MIN(first_seen_ms, ?2), last_seen_ms = MAX(last_seen_ms, ?2) WHERE sha256 = ?1",
    )?
    .execute(params![sha, ev.time_ms])?;
    Ok(())
}

const SUMMARY_COLS: &str = "s.sha256, s.md5, s.sha1, s.size, s.stored_bytes, s.file_type, s.rules_version, s.stored_ms,
    s.first_seen_ms, s.last_seen_ms, (SELECT COUNT(*) FROM sample_sightings g WHERE g.sha256 = s.sha256)";

fn summary(r: &rusqlite::Row<'_>) -> rusqlite::Result<SampleSummary> {
    Ok(SampleSummary {
        sha256: r.get(0)?,
        md5: r.get(1)?,
        sha1: r.get(2)?,
        size: r.get(3)?,
        stored_bytes: r.get(4)?,
        file_type: r.get(5)?,
        rules_version: r.get(6)?,
        stored_ms: r.get(7)?,
        first_seen_ms: r.get(8)?,
        last_seen_ms: r.get(9)?,
        sightings: r.get(10)?,
        rules: Vec::new(),
    })
}

fn rules_of(conn: &Connection, sha: &str) -> rusqlite::Result<Vec<String>> {
    let mut st = conn.prepare_cached("SELECT rule FROM sample_matches WHERE sha256 = ?1 ORDER BY rule")?;
    let rows = st.query_map(params![sha], |r| r.get(0))?;
    rows.collect()
}

fn put_matches(tx: &Connection, sha: &str, matches: &[SampleMatch]) -> rusqlite::Result<()> {
    tx.execute("DELETE FROM sample_matches WHERE sha256 = ?1", params![sha])?;
    let mut st = tx.prepare_cached(
        "INSERT OR IGNORE INTO sample_matches (sha256, namespace, rule, tags) VALUES (?1, ?2, ?3, ?4)",
    )?;
    for m in matches {
        st.execute(params![sha, m.namespace, m.rule, m.tags])?;
    }
    Ok(())
}

impl SampleStorage for Connection {
    fn samples_known(&self, sha256s: &[String]) -> Result<Vec<String>, StorageError> {
        let mut st = self.prepare_cached("SELECT 1 FROM samples WHERE sha256 = ?1")?;
        let mut known = Vec::new();
        for sha in sha256s {
            if st.exists(params![sha])? {
                known.push(sha.clone());
            }
        }
        Ok(known)
    }

    fn store_sample(&self, s: &NewSample, max_total_bytes: u64, now_ms: i64) -> Result<SampleStored, StorageError> {
        let tx = Transaction::new_unchecked(self, TransactionBehavior::Immediate)?;
        if tx.query_row("SELECT 1 FROM samples WHERE sha256 = ?1", params![s.sha256], |_| Ok(())).optional()?.is_some()
        {
            return Ok(SampleStored::AlreadyHad);
        }
        if max_total_bytes > 0 {
            let used: i64 = tx.query_row("SELECT COALESCE(SUM(stored_bytes), 0) FROM samples", [], |r| r.get(0))?;
            if used.max(0) as u64 + s.stored_bytes.max(0) as u64 > max_total_bytes {
                return Ok(SampleStored::Full);
            }
        }
        let (first, last): (Option<i64>, Option<i64>) = tx.query_row(
            "SELECT MIN(time_ms), MAX(time_ms) FROM sample_sightings WHERE sha256 = ?1",
            params![s.sha256],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        tx.execute(
            "INSERT INTO samples (sha256, md5, sha1, size, stored_bytes, file_type, rules_version, stored_ms,
                first_seen_ms, last_seen_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                s.sha256,
                s.md5,
                s.sha1,
                s.size,
                s.stored_bytes,
                s.file_type,
                s.rules_version,
                now_ms,
                first.unwrap_or(now_ms),
                last.unwrap_or(now_ms)
            ],
        )?;
        put_matches(&tx, &s.sha256, &s.matches)?;
        tx.commit()?;
        Ok(SampleStored::Stored)
    }

    fn list_samples(&self, f: &SampleFilter, limit: i64) -> Result<Vec<SampleSummary>, StorageError> {
        let sql = format!(
            "SELECT {SUMMARY_COLS} FROM samples s
             WHERE (?1 IS NULL OR instr(lower(s.file_type), lower(?1)) > 0)
               AND (?2 IS NULL OR EXISTS (SELECT 1 FROM sample_matches m WHERE m.sha256 = s.sha256 AND m.rule = ?2))
               AND (?3 IS NULL OR EXISTS (SELECT 1 FROM sample_sightings g WHERE g.sha256 = s.sha256 AND g.protocol = ?3))
               AND (?4 IS NULL OR EXISTS (SELECT 1 FROM sample_sightings g JOIN sensors n ON n.id = g.sensor_id
                                          WHERE g.sha256 = s.sha256 AND n.name = ?4))
             ORDER BY s.last_seen_ms DESC, s.sha256 LIMIT ?5"
        );
        let mut st = self.prepare(&sql)?;
        let rows = st.query_map(params![f.file_type, f.rule, f.protocol, f.sensor, limit], summary)?;
        let mut out: Vec<SampleSummary> = rows.collect::<rusqlite::Result<_>>()?;
        for s in &mut out {
            s.rules = rules_of(self, &s.sha256)?;
        }
        Ok(out)
    }

    fn sample_detail(&self, sha256: &str, sightings: i64) -> Result<Option<SampleDetail>, StorageError> {
        let sql = format!("SELECT {SUMMARY_COLS} FROM samples s WHERE s.sha256 = ?1");
        let Some(mut summary) = self.query_row(&sql, params![sha256], summary).optional()? else {
            return Ok(None);
        };
        summary.rules = rules_of(self, sha256)?;
        let mut st = self.prepare("SELECT name FROM sample_names WHERE sha256 = ?1 ORDER BY name")?;
        let names = st.query_map(params![sha256], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?;
        let mut st = self.prepare(
            "SELECT g.time_ms, COALESCE(n.name, ''), g.src_ip, g.protocol, g.source, g.outcome, g.name
             FROM sample_sightings g LEFT JOIN sensors n ON n.id = g.sensor_id
             WHERE g.sha256 = ?1 ORDER BY g.time_ms DESC LIMIT ?2",
        )?;
        let sightings = st
            .query_map(params![sha256, sightings], |r| {
                Ok(SampleSighting {
                    time_ms: r.get(0)?,
                    sensor: r.get(1)?,
                    src_ip: r.get(2)?,
                    protocol: r.get(3)?,
                    source: r.get(4)?,
                    outcome: r.get(5)?,
                    name: r.get(6)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        let mut st = self
            .prepare("SELECT namespace, rule, tags FROM sample_matches WHERE sha256 = ?1 ORDER BY namespace, rule")?;
        let matches = st
            .query_map(params![sha256], |r| Ok(SampleMatch { namespace: r.get(0)?, rule: r.get(1)?, tags: r.get(2)? }))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(Some(SampleDetail { summary, names, sightings, matches }))
    }

    fn samples_to_rescan(&self, rules_version: &str, limit: i64) -> Result<Vec<String>, StorageError> {
        let mut st = self.prepare("SELECT sha256 FROM samples WHERE rules_version <> ?1 ORDER BY sha256 LIMIT ?2")?;
        let rows = st.query_map(params![rules_version, limit], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn set_sample_classification(
        &self,
        sha256: &str,
        file_type: &str,
        rules_version: &str,
        matches: &[SampleMatch],
    ) -> Result<(), StorageError> {
        let tx = Transaction::new_unchecked(self, TransactionBehavior::Immediate)?;
        tx.execute(
            "UPDATE samples SET file_type = ?2, rules_version = ?3 WHERE sha256 = ?1",
            params![sha256, file_type, rules_version],
        )?;
        put_matches(&tx, sha256, matches)?;
        tx.commit()?;
        Ok(())
    }

    fn delete_samples_seen_before(&self, before_ms: i64, limit: i64) -> Result<Vec<String>, StorageError> {
        let tx = Transaction::new_unchecked(self, TransactionBehavior::Immediate)?;
        let gone: Vec<String> = {
            let mut st =
                tx.prepare("SELECT sha256 FROM samples WHERE last_seen_ms < ?1 ORDER BY last_seen_ms LIMIT ?2")?;
            let rows = st.query_map(params![before_ms, limit], |r| r.get(0))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        for sha in &gone {
            tx.execute("DELETE FROM samples WHERE sha256 = ?1", params![sha])?;
            tx.execute("DELETE FROM sample_matches WHERE sha256 = ?1", params![sha])?;
        }
        tx.commit()?;
        Ok(gone)
    }

    fn record_sample_rejection(
        &self,
        sensor_id: i64,
        sha256: &str,
        reason: &str,
        now_ms: i64,
        keep: i64,
    ) -> Result<(), StorageError> {
        let tx = Transaction::new_unchecked(self, TransactionBehavior::Immediate)?;
        tx.execute(
            "INSERT INTO sample_rejections (time_ms, sensor_id, sha256, reason) VALUES (?1, ?2, ?3, ?4)",
            params![now_ms, sensor_id, sha256, reason],
        )?;
        tx.execute(
            "DELETE FROM sample_rejections WHERE id <= (SELECT MAX(id) FROM sample_rejections) - ?1",
            params![keep.max(1)],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn sample_rejections(&self, limit: i64) -> Result<Vec<(i64, String, String, String)>, StorageError> {
        let mut st = self.prepare(
            "SELECT r.time_ms, COALESCE(n.name, ''), r.sha256, r.reason FROM sample_rejections r
             LEFT JOIN sensors n ON n.id = r.sensor_id ORDER BY r.id DESC LIMIT ?1",
        )?;
        let rows = st.query_map(params![limit], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn claim_fetch(&self, f: &NewFetch, keep: i64) -> Result<Option<i64>, StorageError> {
        let tx = Transaction::new_unchecked(self, TransactionBehavior::Immediate)?;
        let n = tx.execute(
            "INSERT OR IGNORE INTO sample_fetches (url, sensor_id, seq, offered_ms, src_ip, protocol, state)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'queued')",
            params![f.url, f.sensor_id, f.seq, f.offered_ms, f.src_ip, f.protocol],
        )?;
        if n == 0 {
            return Ok(None);
        }
        let id = tx.last_insert_rowid();
        tx.execute(
            "DELETE FROM sample_fetches WHERE id <= (SELECT MAX(id) FROM sample_fetches) - ?1",
            params![keep.max(1)],
        )?;
        tx.commit()?;
        Ok(Some(id))
    }

    fn finish_fetch(&self, id: i64, d: &FetchDone, now_ms: i64) -> Result<(), StorageError> {
        let tx = Transaction::new_unchecked(self, TransactionBehavior::Immediate)?;
        tx.execute(
            "UPDATE sample_fetches SET state = ?2, done_ms = ?3, status = ?4, size = ?5, sha256 = ?6, error = ?7
             WHERE id = ?1",
            params![id, d.state, now_ms, d.status, d.size, d.sha256, d.error],
        )?;
        if let (Some(sha), "fetched") = (&d.sha256, d.state) {
            let row: Option<(i64, String, String)> = tx
                .query_row("SELECT sensor_id, src_ip, url FROM sample_fetches WHERE id = ?1", params![id], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })
                .optional()?;
            if let Some((sensor_id, src_ip, url)) = row {
                let n = tx.execute(
                    "INSERT OR IGNORE INTO sample_sightings (sensor_id, seq, sha256, time_ms, src_ip, protocol, source, outcome, name)
                     VALUES (?1, ?2, ?3, ?4, ?5, 'fetch', ?6, 'fetched', ?7)",
                    params![sensor_id, -id, sha, now_ms, src_ip, d.host, url],
                )?;
                if n > 0 {
                    tx.execute("INSERT OR IGNORE INTO sample_names (sha256, name) VALUES (?1, ?2)", params![sha, url])?;
                    tx.execute(
                        "UPDATE samples SET first_seen_ms = MIN(first_seen_ms, ?2), last_seen_ms = MAX(last_seen_ms, ?2)
                         WHERE sha256 = ?1",
                        params![sha, now_ms],
                    )?;
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn list_fetches(&self, limit: i64) -> Result<Vec<FetchRow>, StorageError> {
        let mut st = self.prepare(
            "SELECT f.id, f.url, COALESCE(n.name, ''), f.seq, f.offered_ms, f.src_ip, f.protocol, f.state, f.done_ms,
                    f.status, f.size, f.sha256, f.error
             FROM sample_fetches f LEFT JOIN sensors n ON n.id = f.sensor_id ORDER BY f.id DESC LIMIT ?1",
        )?;
        let rows = st.query_map(params![limit], |r| {
            Ok(FetchRow {
                id: r.get(0)?,
                url: r.get(1)?,
                sensor: r.get(2)?,
                seq: r.get(3)?,
                offered_ms: r.get(4)?,
                src_ip: r.get(5)?,
                protocol: r.get(6)?,
                state: r.get(7)?,
                done_ms: r.get(8)?,
                status: r.get(9)?,
                size: r.get(10)?,
                sha256: r.get(11)?,
                error: r.get(12)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn queued_fetches(&self, limit: i64) -> Result<Vec<(i64, String)>, StorageError> {
        let mut st = self.prepare("SELECT id, url FROM sample_fetches WHERE state = 'queued' ORDER BY id LIMIT ?1")?;
        let rows = st.query_map(params![limit], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}
