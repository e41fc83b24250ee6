//! The sample tables on PostgreSQL (see `SampleStorage`); the same tables and meaning as SQLite's.
//! With several admins on one database, `store_sample` serializes on a transaction-level
//! advisory lock so the byte cap holds however many admins store at once.

use super::super::{
    sighting_of, FetchDone, FetchRow, NewFetch, NewSample, SampleDetail, SampleFilter, SampleMatch, SampleSighting,
    SampleStorage, SampleStored, SampleSummary, StorageError,
};
use super::Postgres;
use drosera_uplink::event::Event;

/// Advisory lock key of `store_sample` (the store's byte cap).
const SAMPLE_LOCK: i64 = 0x4452_4f53_0000_0015;

/// Records the sighting (and the name) of a Sample event inside the ingest transaction.
pub(crate) async fn insert_sighting(
    tx: &tokio_postgres::Transaction<'_>,
    sensor_id: i64,
    ev: &Event,
) -> Result<(), tokio_postgres::Error> {
    let Some((sha, name, source, outcome)) = sighting_of(ev) else { return Ok(()) };
    let seq = ev.seq.min(i64::MAX as u64) as i64;
    let n = tx
        .execute(
            "INSERT INTO sample_sightings (sensor_id, seq, sha256, time_ms, src_ip, protocol, source, outcome, name)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING",
            &[
                &sensor_id,
                &seq,
                &sha,
                &ev.time_ms,
                &ev.src_ip.to_string(),
                &ev.protocol.as_str(),
                &source,
                &outcome,
                &name,
            ],
        )
        .await?;
    if n == 0 {
        return Ok(());
    }
    if !name.is_empty() {
        tx.execute("INSERT INTO sample_names (sha256, name) VALUES ($1, $2) ON CONFLICT DO NOTHING", &[&sha, &name])
            .await?;
    }
    tx.execute(
        "UPDATE samples SET first_seen_ms = LEAST(first_seen_ms, $2), last_seen_ms = GREATEST(last_seen_ms, $2)
         WHERE sha256 = $1",
        &[&sha, &ev.time_ms],
    )
    .await?;
    Ok(())
}

const SUMMARY_COLS: &str = "s.sha256, s.md5, s.sha1, s.size, s.stored_bytes, s.file_type, s.rules_version, s.stored_ms,
    s.first_seen_ms, s.last_seen_ms, (SELECT COUNT(*) FROM sample_sightings g WHERE g.sha256 = s.sha256)";

fn summary(r: &tokio_postgres::Row) -> SampleSummary {
    SampleSummary {
        sha256: r.get(0),
        md5: r.get(1),
        sha1: r.get(2),
        size: r.get(3),
        stored_bytes: r.get(4),
        file_type: r.get(5),
        rules_version: r.get(6),
        stored_ms: r.get(7),
        first_seen_ms: r.get(8),
        last_seen_ms: r.get(9),
        sightings: r.get(10),
        rules: Vec::new(),
    }
}

async fn rules_of(c: &tokio_postgres::Client, sha: &str) -> Result<Vec<String>, StorageError> {
    let rows = c.query("SELECT rule FROM sample_matches WHERE sha256 = $1 ORDER BY rule", &[&sha]).await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

async fn put_matches(
    tx: &tokio_postgres::Transaction<'_>,
    sha: &str,
    matches: &[SampleMatch],
) -> Result<(), StorageError> {
    tx.execute("DELETE FROM sample_matches WHERE sha256 = $1", &[&sha]).await?;
    for m in matches {
        tx.execute(
            "INSERT INTO sample_matches (sha256, namespace, rule, tags) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            &[&sha, &m.namespace, &m.rule, &m.tags],
        )
        .await?;
    }
    Ok(())
}

impl SampleStorage for Postgres {
    fn samples_known(&self, sha256s: &[String]) -> Result<Vec<String>, StorageError> {
        self.block_on(async {
            let c = self.client().await?;
            let rows = c.query("SELECT sha256 FROM samples WHERE sha256 = ANY($1)", &[&sha256s]).await?;
            Ok(rows.iter().map(|r| r.get(0)).collect())
        })
    }

    fn store_sample(&self, s: &NewSample, max_total_bytes: u64, now_ms: i64) -> Result<SampleStored, StorageError> {
        self.block_on(async {
            let mut c = self.client().await?;
            let tx = c.transaction().await?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SAMPLE_LOCK]).await?;
            if tx.query_opt("SELECT 1 FROM samples WHERE sha256 = $1", &[&s.sha256]).await?.is_some() {
                return Ok(SampleStored::AlreadyHad);
            }
            if max_total_bytes > 0 {
                let used: i64 =
                    tx.query_one("SELECT COALESCE(SUM(stored_bytes), 0)::bigint FROM samples", &[]).await?.get(0);
                if used.max(0) as u64 + s.stored_bytes.max(0) as u64 > max_total_bytes {
                    return Ok(SampleStored::Full);
                }
            }
            let r = tx
                .query_one("SELECT MIN(time_ms), MAX(time_ms) FROM sample_sightings WHERE sha256 = $1", &[&s.sha256])
                .await?;
            let (first, last): (Option<i64>, Option<i64>) = (r.get(0), r.get(1));
            tx.execute(
                "INSERT INTO samples (sha256, md5, sha1, size, stored_bytes, file_type, rules_version, stored_ms,
                    first_seen_ms, last_seen_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                &[
                    &s.sha256,
                    &s.md5,
                    &s.sha1,
                    &s.size,
                    &s.stored_bytes,
                    &s.file_type,
                    &s.rules_version,
                    &now_ms,
                    &first.unwrap_or(now_ms),
                    &last.unwrap_or(now_ms),
                ],
            )
            .await?;
            put_matches(&tx, &s.sha256, &s.matches).await?;
            tx.commit().await?;
            Ok(SampleStored::Stored)
        })
    }

    fn list_samples(&self, f: &SampleFilter, limit: i64) -> Result<Vec<SampleSummary>, StorageError> {
        self.block_on(async {
            let c = self.client().await?;
            let sql = format!(
                "SELECT {SUMMARY_COLS} FROM samples s
                 WHERE ($1::text IS NULL OR strpos(lower(s.file_type), lower($1)) > 0)
                   AND ($2::text IS NULL OR EXISTS (SELECT 1 FROM sample_matches m WHERE m.sha256 = s.sha256 AND m.rule = $2))
                   AND ($3::text IS NULL OR EXISTS (SELECT 1 FROM sample_sightings g WHERE g.sha256 = s.sha256 AND g.protocol = $3))
                   AND ($4::text IS NULL OR EXISTS (SELECT 1 FROM sample_sightings g JOIN sensors n ON n.id = g.sensor_id
                                              WHERE g.sha256 = s.sha256 AND n.name = $4))
                 ORDER BY s.last_seen_ms DESC, s.sha256 COLLATE \"C\" LIMIT $5"
            );
            let rows = c.query(&sql, &[&f.file_type, &f.rule, &f.protocol, &f.sensor, &limit]).await?;
            let mut out: Vec<SampleSummary> = rows.iter().map(summary).collect();
            for s in &mut out {
                s.rules = rules_of(&c, &s.sha256).await?;
            }
            Ok(out)
        })
    }

    fn sample_detail(&self, sha256: &str, sightings: i64) -> Result<Option<SampleDetail>, StorageError> {
        self.block_on(async {
            let c = self.client().await?;
            let sql = format!("SELECT {SUMMARY_COLS} FROM samples s WHERE s.sha256 = $1");
            let Some(row) = c.query_opt(&sql, &[&sha256]).await? else { return Ok(None) };
            let mut summary = summary(&row);
            summary.rules = rules_of(&c, sha256).await?;
            let names = c
                .query("SELECT name FROM sample_names WHERE sha256 = $1 ORDER BY name COLLATE \"C\"", &[&sha256])
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect();
            let sightings = c
                .query(
                    "SELECT g.time_ms, COALESCE(n.name, ''), g.src_ip, g.protocol, g.source, g.outcome, g.name
                     FROM sample_sightings g LEFT JOIN sensors n ON n.id = g.sensor_id
                     WHERE g.sha256 = $1 ORDER BY g.time_ms DESC LIMIT $2",
                    &[&sha256, &sightings],
                )
                .await?
                .iter()
                .map(|r| SampleSighting {
                    time_ms: r.get(0),
                    sensor: r.get(1),
                    src_ip: r.get(2),
                    protocol: r.get(3),
                    source: r.get(4),
                    outcome: r.get(5),
                    name: r.get(6),
                })
                .collect();
            let matches = c
                .query(
                    "SELECT namespace, rule, tags FROM sample_matches WHERE sha256 = $1
                     ORDER BY namespace COLLATE \"C\", rule COLLATE \"C\"",
                    &[&sha256],
                )
                .await?
                .iter()
                .map(|r| SampleMatch { namespace: r.get(0), rule: r.get(1), tags: r.get(2) })
                .collect();
            Ok(Some(SampleDetail { summary, names, sightings, matches }))
        })
    }

    fn samples_to_rescan(&self, rules_version: &str, limit: i64) -> Result<Vec<String>, StorageError> {
        self.block_on(async {
            let c = self.client().await?;
            let rows = c
                .query(
                    "SELECT sha256 FROM samples WHERE rules_version <> $1 ORDER BY sha256 COLLATE \"C\" LIMIT $2",
                    &[&rules_version, &limit],
                )
                .await?;
            Ok(rows.iter().map(|r| r.get(0)).collect())
        })
    }

    fn set_sample_classification(
        &self,
        sha256: &str,
        file_type: &str,
        rules_version: &str,
        matches: &[SampleMatch],
    ) -> Result<(), StorageError> {
        self.block_on(async {
            let mut c = self.client().await?;
            let tx = c.transaction().await?;
            tx.execute(
                "UPDATE samples SET file_type = $2, rules_version = $3 WHERE sha256 = $1",
                &[&sha256, &file_type, &rules_version],
            )
            .await?;
            put_matches(&tx, sha256, matches).await?;
            tx.commit().await?;
            Ok(())
        })
    }

    fn delete_samples_seen_before(&self, before_ms: i64, limit: i64) -> Result<Vec<String>, StorageError> {
        self.block_on(async {
            let mut c = self.client().await?;
            let tx = c.transaction().await?;
            let gone: Vec<String> = tx
                .query(
                    "DELETE FROM samples WHERE sha256 IN
                       (SELECT sha256 FROM samples WHERE last_seen_ms < $1 ORDER BY last_seen_ms LIMIT $2)
                     RETURNING sha256",
                    &[&before_ms, &limit],
                )
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect();
            tx.execute("DELETE FROM sample_matches WHERE sha256 = ANY($1)", &[&gone]).await?;
            tx.commit().await?;
            Ok(gone)
        })
    }

    fn record_sample_rejection(
        &self,
        sensor_id: i64,
        sha256: &str,
        reason: &str,
        now_ms: i64,
        keep: i64,
    ) -> Result<(), StorageError> {
        self.block_on(async {
            let mut c = self.client().await?;
            let tx = c.transaction().await?;
            tx.execute(
                "INSERT INTO sample_rejections (time_ms, sensor_id, sha256, reason) VALUES ($1, $2, $3, $4)",
                &[&now_ms, &sensor_id, &sha256, &reason],
            )
            .await?;
            tx.execute(
                "DELETE FROM sample_rejections WHERE id <= (SELECT MAX(id) FROM sample_rejections) - $1",
                &[&keep.max(1)],
            )
            .await?;
            tx.commit().await?;
            Ok(())
        })
    }

    fn sample_rejections(&self, limit: i64) -> Result<Vec<(i64, String, String, String)>, StorageError> {
        self.block_on(async {
            let c = self.client().await?;
            let rows = c
                .query(
                    "SELECT r.time_ms, COALESCE(n.name, ''), r.sha256, r.reason FROM sample_rejections r
                     LEFT JOIN sensors n ON n.id = r.sensor_id ORDER BY r.id DESC LIMIT $1",
                    &[&limit],
                )
                .await?;
            Ok(rows.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3))).collect())
        })
    }

    fn claim_fetch(&self, f: &NewFetch, keep: i64) -> Result<Option<i64>, StorageError> {
        self.block_on(async {
            let mut c = self.client().await?;
            let tx = c.transaction().await?;
            let row = tx
                .query_opt(
                    "INSERT INTO sample_fetches (url, sensor_id, seq, offered_ms, src_ip, protocol, state)
                     VALUES ($1, $2, $3, $4, $5, $6, 'queued') ON CONFLICT (url) DO NOTHING RETURNING id",
                    &[&f.url, &f.sensor_id, &f.seq, &f.offered_ms, &f.src_ip, &f.protocol],
                )
                .await?;
            let Some(row) = row else { return Ok(None) };
            let id: i64 = row.get(0);
            tx.execute(
                "DELETE FROM sample_fetches WHERE id <= (SELECT MAX(id) FROM sample_fetches) - $1",
                &[&keep.max(1)],
            )
            .await?;
            tx.commit().await?;
            Ok(Some(id))
        })
    }

    fn finish_fetch(&self, id: i64, d: &FetchDone, now_ms: i64) -> Result<(), StorageError> {
        self.block_on(async {
            let mut c = self.client().await?;
            let tx = c.transaction().await?;
            tx.execute(
                "UPDATE sample_fetches SET state = $2, done_ms = $3, status = $4, size = $5, sha256 = $6, error = $7
                 WHERE id = $1",
                &[&id, &d.state, &now_ms, &d.status, &d.size, &d.sha256, &d.error],
            )
            .await?;
            if let (Some(sha), "fetched") = (&d.sha256, d.state) {
                let row = tx.query_opt("SELECT sensor_id, src_ip, url FROM sample_fetches WHERE id = $1", &[&id]).await?;
                if let Some(row) = row {
                    let (sensor_id, src_ip, url): (i64, String, String) = (row.get(0), row.get(1), row.get(2));
                    let n = tx
                        .execute(
                            "INSERT INTO sample_sightings (sensor_id, seq, sha256, time_ms, src_ip, protocol, source, outcome, name)
                             VALUES ($1, $2, $3, $4, $5, 'fetch', $6, 'fetched', $7) ON CONFLICT DO NOTHING",
                            &[&sensor_id, &-id, sha, &now_ms, &src_ip, &d.host, &url],
                        )
                        .await?;
                    if n > 0 {
                        tx.execute(
                            "INSERT INTO sample_names (sha256, name) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                            &[sha, &url],
                        )
                        .await?;
                        tx.execute(
                            "UPDATE samples SET first_seen_ms = LEAST(first_seen_ms, $2),
                                 last_seen_ms = GREATEST(last_seen_ms, $2) WHERE sha256 = $1",
                            &[sha, &now_ms],
                        )
                        .await?;
                    }
                }
            }
            tx.commit().await?;
            Ok(())
        })
    }

    fn list_fetches(&self, limit: i64) -> Result<Vec<FetchRow>, StorageError> {
        self.block_on(async {
            let c = self.client().await?;
            let rows = c
                .query(
                    "SELECT f.id, f.url, COALESCE(n.name, ''), f.seq, f.offered_ms, f.src_ip, f.protocol, f.state,
                            f.done_ms, f.status, f.size, f.sha256, f.error
                     FROM sample_fetches f LEFT JOIN sensors n ON n.id = f.sensor_id ORDER BY f.id DESC LIMIT $1",
                    &[&limit],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|r| FetchRow {
                    id: r.get(0),
                    url: r.get(1),
                    sensor: r.get(2),
                    seq: r.get(3),
                    offered_ms: r.get(4),
                    src_ip: r.get(5),
                    protocol: r.get(6),
                    state: r.get(7),
                    done_ms: r.get(8),
                    status: r.get(9),
                    size: r.get(10),
                    sha256: r.get(11),
                    error: r.get(12),
                })
                .collect())
        })
    }

    fn queued_fetches(&self, limit: i64) -> Result<Vec<(i64, String)>, StorageError> {
        self.block_on(async {
            let c = self.client().await?;
            let rows = c
                .query("SELECT id, url FROM sample_fetches WHERE state = 'queued' ORDER BY id LIMIT $1", &[&limit])
                .await?;
            Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
        })
    }
}
