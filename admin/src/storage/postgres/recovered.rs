//! Password recovery on PostgreSQL: `crack_gen` and `recovered` on the event's row (schema
//! version 5), see `storage::recovered`.

use super::super::recovered::{CrackResult, CrackTarget, RecoverStorage, RecoveredRow};
use super::super::{EventRange, StorageError};
use super::Postgres;

impl RecoverStorage for Postgres {
    fn crack_targets(&self, since_ms: i64, generation: &str, limit: i64) -> Result<Vec<CrackTarget>, StorageError> {
        // See the SQLite backend for why the LIKE cannot be fooled by attacker text.
        self.block_on(async {
            let c = self.client().await?;
            let stmt = c
                .prepare_cached(
                    "SELECT id, time_ms, protocol, fields FROM events
                     WHERE kind = 'login' AND time_ms >= $1 AND fields LIKE '%\"hash_format\":%'
                       AND recovered IS NULL AND crack_gen IS DISTINCT FROM $2
                       AND crack_gen IS DISTINCT FROM 'unsupported'
                     ORDER BY crack_gen IS NOT NULL, time_ms DESC, id DESC LIMIT $3",
                )
                .await?;
            let rows = c.query(&stmt, &[&since_ms, &generation, &limit]).await?;
            Ok(rows
                .iter()
                .map(|r| {
                    Ok(CrackTarget {
                        id: r.try_get(0)?,
                        time_ms: r.try_get(1)?,
                        protocol: r.try_get(2)?,
                        fields: r.try_get(3)?,
                    })
                })
                .collect::<Result<Vec<_>, tokio_postgres::Error>>()?)
        })
    }

    fn clear_passwords(&self, since_ms: i64, limit: i64) -> Result<Vec<String>, StorageError> {
        self.block_on(async {
            let c = self.client().await?;
            let stmt = c
                .prepare_cached(
                    "SELECT password FROM events
                     WHERE kind = 'login' AND time_ms >= $1 AND password IS NOT NULL AND fields LIKE '%\"password\":%'
                     GROUP BY password ORDER BY COUNT(*) DESC, password LIMIT $2",
                )
                .await?;
            let rows = c.query(&stmt, &[&since_ms, &limit]).await?;
            Ok(rows.iter().map(|r| r.try_get(0)).collect::<Result<Vec<String>, _>>()?)
        })
    }

    fn record_cracks(&self, generation: &str, results: &[CrackResult], _now_ms: i64) -> Result<(), StorageError> {
        if results.is_empty() {
            return Ok(());
        }
        let ids: Vec<i64> = results.iter().map(|r| r.id).collect();
        let times: Vec<i64> = results.iter().map(|r| r.time_ms).collect();
        let found: Vec<Option<&str>> = results.iter().map(|r| r.password.as_deref()).collect();
        self.block_on(async {
            let c = self.client().await?;
            // One statement: one transaction; `time_ms` picks the partition.
            c.execute(
                "UPDATE events e SET crack_gen = $1, recovered = COALESCE(e.recovered, u.p)
                 FROM unnest($2::bigint[], $3::bigint[], $4::text[]) AS u(id, t, p)
                 WHERE e.id = u.id AND e.time_ms = u.t",
                &[&generation, &ids, &times, &found],
            )
            .await?;
            Ok(())
        })
    }

    fn recovered_passwords(&self, range: &EventRange, limit: i64) -> Result<Vec<RecoveredRow>, StorageError> {
        self.block_on(async {
            let c = self.client().await?;
            let stmt = c
                .prepare_cached(
                    "SELECT COALESCE(username, ''), recovered, protocol, COUNT(*), MIN(time_ms), MAX(time_ms) FROM events
                     WHERE recovered IS NOT NULL AND time_ms >= $1 AND time_ms < $2
                       AND ($3::bigint IS NULL OR sensor_id = $3)
                     GROUP BY 1, 2, 3 ORDER BY 4 DESC, 1, 2, 3 LIMIT $4",
                )
                .await?;
            let rows = c.query(&stmt, &[&range.since_ms, &range.until_ms, &range.sensor_id, &limit]).await?;
            Ok(rows
                .iter()
                .map(|r| {
                    Ok(RecoveredRow {
                        username: r.try_get(0)?,
                        password: r.try_get(1)?,
                        protocol: r.try_get(2)?,
                        count: r.try_get(3)?,
                        first_seen_ms: r.try_get(4)?,
                        last_seen_ms: r.try_get(5)?,
                    })
                })
                .collect::<Result<Vec<_>, tokio_postgres::Error>>()?)
        })
    }

    fn sample_totals(&self) -> Result<(i64, i64), StorageError> {
        self.block_on(async {
            let c = self.client().await?;
            let r = c.query_one("SELECT COUNT(*), COALESCE(SUM(stored_bytes), 0)::bigint FROM samples", &[]).await?;
            Ok((r.try_get(0)?, r.try_get(1)?))
        })
    }
}
