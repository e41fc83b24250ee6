//! Password recovery on SQLite: `event_crack` (schema version 6), see `storage::recovered`.

use super::super::recovered::{CrackResult, CrackTarget, RecoverStorage, RecoveredRow};
use super::super::{EventRange, StorageError};
use rusqlite::{params, Connection, Transaction};

impl RecoverStorage for Connection {
    fn crack_targets(&self, since_ms: i64, generation: &str, limit: i64) -> Result<Vec<CrackTarget>, StorageError> {
        // `"hash_format":` with its quotes can only be a key of the fields JSON (a value's
        // quotes are escaped), so attacker text cannot make an event look like a target.
        let mut stmt = self.prepare_cached(
            "SELECT e.id, e.time_ms, e.protocol, e.fields FROM events e
                 LEFT JOIN event_crack c ON c.event_id = e.id
             WHERE e.kind = 'login' AND e.time_ms >= ?1 AND e.fields LIKE '%\"hash_format\":%'
               AND (c.event_id IS NULL OR (c.recovered IS NULL AND c.generation <> ?2 AND c.generation <> 'unsupported'))
             ORDER BY c.event_id IS NOT NULL, e.time_ms DESC, e.id DESC LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![since_ms, generation, limit], |r| {
            Ok(CrackTarget { id: r.get(0)?, time_ms: r.get(1)?, protocol: r.get(2)?, fields: r.get(3)? })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn clear_passwords(&self, since_ms: i64, limit: i64) -> Result<Vec<String>, StorageError> {
        let mut stmt = self.prepare_cached(
            "SELECT password FROM events
             WHERE kind = 'login' AND time_ms >= ?1 AND password IS NOT NULL AND fields LIKE '%\"password\":%'
             GROUP BY password ORDER BY COUNT(*) DESC, password LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![since_ms, limit], |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn record_cracks(&self, generation: &str, results: &[CrackResult], now_ms: i64) -> Result<(), StorageError> {
        let tx = Transaction::new_unchecked(self, rusqlite::TransactionBehavior::Immediate)?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO event_crack (event_id, sensor_id, time_ms, protocol, username, generation, recovered, recovered_ms)
                 SELECT id, sensor_id, time_ms, protocol, COALESCE(username, ''), ?2, ?3, CASE WHEN ?3 IS NULL THEN NULL ELSE ?4 END
                 FROM events WHERE id = ?1
                 ON CONFLICT (event_id) DO UPDATE SET generation = excluded.generation,
                     recovered = COALESCE(event_crack.recovered, excluded.recovered),
                     recovered_ms = COALESCE(event_crack.recovered_ms, excluded.recovered_ms)",
            )?;
            for r in results {
                stmt.execute(params![r.id, generation, r.password, now_ms])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn recovered_passwords(&self, range: &EventRange, limit: i64) -> Result<Vec<RecoveredRow>, StorageError> {
        let mut stmt = self.prepare_cached(
            "SELECT username, recovered, protocol, COUNT(*), MIN(time_ms), MAX(time_ms) FROM event_crack
             WHERE recovered IS NOT NULL AND time_ms >= ?1 AND time_ms < ?2 AND (?3 IS NULL OR sensor_id = ?3)
             GROUP BY username, recovered, protocol ORDER BY 4 DESC, 1, 2, 3 LIMIT ?4",
        )?;
        let rows = stmt.query_map(params![range.since_ms, range.until_ms, range.sensor_id, limit], |r| {
            Ok(RecoveredRow {
                username: r.get(0)?,
                password: r.get(1)?,
                protocol: r.get(2)?,
                count: r.get(3)?,
                first_seen_ms: r.get(4)?,
                last_seen_ms: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn sample_totals(&self) -> Result<(i64, i64), StorageError> {
        Ok(self.query_row("SELECT COUNT(*), COALESCE(SUM(stored_bytes), 0) FROM samples", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?)
    }
}
