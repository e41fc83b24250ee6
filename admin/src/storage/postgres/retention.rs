//! Retention on PostgreSQL: raw events go a day partition at a time (a `DROP TABLE`, not a
//! delete storm), hour rows and old rollups by `DELETE` (they are small).
//!
//! A partition is dropped only when every row in it is folded. The check and the drop happen in
//! one transaction that holds the fold lock (no fold moves the cursor meanwhile) and an
//! `ACCESS EXCLUSIVE` lock on the partition (taken first, so an ingest transaction still writing
//! into it finishes before the check looks). The per-sensor stored counts are brought down by
//! what the partition held. `lock_timeout` keeps a busy partition from stalling ingest behind
//! the drop's lock: the next pass tries again.

use super::super::{StorageError, DAY_MS, WEEK_MS};
use super::{lock, schema, Postgres};

const AGG_TABLES: [&str; 4] = ["agg_kind", "agg_port", "agg_src", "agg_cred"];

/// Drops partition `name` if every row is folded; returns the rows it held (`None`: kept).
async fn drop_if_folded(c: &mut deadpool_postgres::Object, name: &str) -> Result<Option<u64>, StorageError> {
    let tx = c.transaction().await?;
    tx.batch_execute("SET LOCAL lock_timeout = '5s'").await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&lock::FOLD]).await?;
    if let Err(e) = tx.batch_execute(&format!("LOCK TABLE {name} IN ACCESS EXCLUSIVE MODE")).await {
        tracing::info!(partition = name, error = %e, "retention: partition busy, trying next pass");
        return Ok(None);
    }
    let unfolded: bool = tx
        .query_one(
            &format!(
                "SELECT EXISTS (SELECT 1 FROM {name} e, analytics_state a
                                WHERE a.id = 1 AND (e.txid, e.id) > (a.fold_txid, a.fold_id))"
            ),
            &[],
        )
        .await?
        .get(0);
    if unfolded {
        return Ok(None);
    }
    let per_sensor = tx.query(&format!("SELECT sensor_id, COUNT(*) FROM {name} GROUP BY sensor_id"), &[]).await?;
    let (ids, counts): (Vec<i64>, Vec<i64>) =
        per_sensor.iter().map(|r| (r.get::<_, i64>(0), r.get::<_, i64>(1))).unzip();
    tx.execute(
        "UPDATE sensors s SET events_stored = GREATEST(s.events_stored - u.n, 0)
         FROM unnest($1::bigint[], $2::bigint[]) AS u(id, n) WHERE s.id = u.id",
        &[&ids, &counts],
    )
    .await?;
    tx.batch_execute(&format!("DROP TABLE {name}")).await?;
    tx.commit().await?;
    Ok(Some(counts.iter().sum::<i64>().max(0) as u64))
}

/// Drops every fully folded partition that ends at or before `before_ms`.
pub fn delete_events_before(db: &Postgres, before_ms: i64, _chunk: i64) -> Result<u64, StorageError> {
    let n = db.block_on(async {
        let mut c = db.client().await?;
        let mut n = 0u64;
        for (day, name) in schema::list_days(&c).await? {
            if (day + 1).saturating_mul(DAY_MS) > before_ms {
                break;
            }
            n += drop_if_folded(&mut c, &name).await?.unwrap_or(0);
        }
        Ok::<_, StorageError>(n)
    })?;
    schema::forget_days(db);
    Ok(n)
}

/// Drops the oldest partition if it is fully folded and not the only (newest) one.
pub fn delete_oldest_events(db: &Postgres, _chunk: i64) -> Result<u64, StorageError> {
    let n = db.block_on(async {
        let mut c = db.client().await?;
        let days = schema::list_days(&c).await?;
        // Skip empty leading partitions (they free nothing but count as oldest).
        for (i, (_, name)) in days.iter().enumerate() {
            if i + 1 == days.len() {
                return Ok(0);
            }
            let empty: bool = c.query_one(&format!("SELECT NOT EXISTS (SELECT 1 FROM {name})"), &[]).await?.get(0);
            if empty {
                drop_if_folded(&mut c, name).await?;
                continue;
            }
            return Ok::<_, StorageError>(drop_if_folded(&mut c, name).await?.unwrap_or(0));
        }
        Ok(0)
    })?;
    schema::forget_days(db);
    Ok(n)
}

pub fn used_bytes(db: &Postgres) -> Result<u64, StorageError> {
    db.block_on(async {
        let c = db.client().await?;
        let n: i64 = c.query_one("SELECT pg_database_size(current_database())", &[]).await?.get(0);
        Ok(n.max(0) as u64)
    })
}

pub fn oldest_event_ms(db: &Postgres) -> Result<Option<i64>, StorageError> {
    db.block_on(async {
        let c = db.client().await?;
        Ok(c.query_one("SELECT MIN(time_ms) FROM events", &[]).await?.get(0))
    })
}

pub fn prune_hourly(db: &Postgres, before_ms: i64) -> Result<u64, StorageError> {
    db.block_on(async {
        let mut c = db.client().await?;
        let tx = c.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&lock::FOLD]).await?;
        let mut n = 0u64;
        for t in AGG_TABLES {
            n += tx.execute(&format!("DELETE FROM {t} WHERE res = 0 AND bucket < $1"), &[&before_ms]).await?;
        }
        tx.execute(
            "UPDATE analytics_state SET hourly_from_ms = GREATEST(hourly_from_ms, $1) WHERE id = 1",
            &[&before_ms],
        )
        .await?;
        tx.commit().await?;
        Ok(n)
    })
}

pub fn prune_rollups(db: &Postgres, before_ms: i64) -> Result<u64, StorageError> {
    db.block_on(async {
        let mut c = db.client().await?;
        let tx = c.transaction().await?;
        // Under the fold lock: a fold interning a new address must not see it deleted before its
        // aggregate rows commit.
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&lock::FOLD]).await?;
        let mut n = 0u64;
        for t in AGG_TABLES {
            n += tx
                .execute(
                    &format!("DELETE FROM {t} WHERE (res = 1 AND bucket < $1) OR (res = 2 AND bucket + $2 <= $1)"),
                    &[&before_ms, &WEEK_MS],
                )
                .await?;
        }
        if n > 0 {
            tx.execute("DELETE FROM ip_info i WHERE NOT EXISTS (SELECT 1 FROM agg_src a WHERE a.ip_id = i.id)", &[])
                .await?;
            tx.execute(
                "DELETE FROM strings s WHERE NOT EXISTS (SELECT 1 FROM agg_cred a WHERE a.user_id = s.id)
                   AND NOT EXISTS (SELECT 1 FROM agg_cred a WHERE a.pass_id = s.id)",
                &[],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(n)
    })
}
