//! The one write path for events on PostgreSQL: group commit with the per-sensor high-water
//! mark under a row lock, events in by binary `COPY`.

use super::super::row::{Lifted, Tally};
use super::super::{BatchIn, BatchOutcome, StorageError, DAY_MS};
use super::{pg_err, schema, Postgres};
use drosera_uplink::event::Event;
use std::collections::{BTreeSet, HashMap};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};

/// The columns a `COPY` of events writes, in order (`id` comes from its sequence).
pub(crate) const COPY_SQL: &str = "COPY events (txid, sensor_id, seq, time_ms, transport, protocol, kind, src_ip,
    src_port, dst_port, session_id, duration_ms, bytes_in, bytes_out, priority, count, username, password,
    payload_sha256, url, fields, derived, body_text) FROM STDIN BINARY";

/// The types of [`COPY_SQL`]'s columns.
pub(crate) const COPY_TYPES: [Type; 23] = [
    Type::INT8,
    Type::INT8,
    Type::INT8,
    Type::INT8,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::INT4,
    Type::INT4,
    Type::INT8,
    Type::INT8,
    Type::INT8,
    Type::INT8,
    Type::INT2,
    Type::INT8,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
];

/// Writes one event row into a `COPY` started with [`COPY_SQL`].
pub(crate) async fn write_event(
    w: std::pin::Pin<&mut BinaryCopyInWriter>,
    txid: i64,
    sensor_id: i64,
    ev: &Event,
) -> Result<(), tokio_postgres::Error> {
    let l = Lifted::of(ev);
    let src_ip = ev.src_ip.to_string();
    let (seq, session) = (ev.seq.min(i64::MAX as u64) as i64, ev.session_id.min(i64::MAX as u64) as i64);
    let (bytes_in, bytes_out) = (ev.bytes_in.min(i64::MAX as u64) as i64, ev.bytes_out.min(i64::MAX as u64) as i64);
    let duration = ev.duration_ms as i64;
    let (src_port, dst_port, priority) =
        (i32::from(ev.src_port), i32::from(ev.dst_port), i16::from(ev.priority.as_u8()));
    let row: [&(dyn ToSql + Sync); 23] = [
        &txid,
        &sensor_id,
        &seq,
        &ev.time_ms,
        &ev.transport.as_str(),
        &ev.protocol.as_str(),
        &l.kind,
        &src_ip,
        &src_port,
        &dst_port,
        &session,
        &duration,
        &bytes_in,
        &bytes_out,
        &priority,
        &l.count,
        &l.username,
        &l.password,
        &l.payload_sha256,
        &l.url,
        &l.fields,
        &l.derived,
        &l.body_text,
    ];
    w.write(&row).await
}

/// What the group's newly stored events add to one sensor's row.
#[derive(Default)]
struct SensorUpdate {
    high_water: i64,
    tally: Tally,
    stored: i64,
}

/// Stores a group of batches in one transaction (see `Storage::commit_batches`). When a day
/// partition vanished under us (another admin's retention dropped it), the group is tried once
/// more after creating it again.
pub fn commit_batches(db: &Postgres, batches: &[BatchIn<'_>], now: i64) -> Result<Vec<BatchOutcome>, StorageError> {
    match db.block_on(commit_once(db, batches, now)) {
        Err(Retry::NoPartition) => {
            schema::forget_days(db);
            db.block_on(commit_once(db, batches, now)).map_err(Retry::into_error)
        }
        r => r.map_err(Retry::into_error),
    }
}

enum Retry {
    NoPartition,
    Failed(StorageError),
}

impl Retry {
    fn into_error(self) -> StorageError {
        match self {
            Retry::NoPartition => StorageError::Postgres("an events partition was dropped during the insert".into()),
            Retry::Failed(e) => e,
        }
    }
}

impl From<StorageError> for Retry {
    fn from(e: StorageError) -> Self {
        Retry::Failed(e)
    }
}

impl From<tokio_postgres::Error> for Retry {
    fn from(e: tokio_postgres::Error) -> Self {
        // "no partition of relation found for row"
        if e.code() == Some(&tokio_postgres::error::SqlState::CHECK_VIOLATION)
            && e.as_db_error().is_some_and(|d| d.message().contains("no partition"))
        {
            return Retry::NoPartition;
        }
        Retry::Failed(pg_err(e))
    }
}

async fn commit_once(db: &Postgres, batches: &[BatchIn<'_>], now: i64) -> Result<Vec<BatchOutcome>, Retry> {
    let mut c = db.client().await?;
    let days: BTreeSet<i64> =
        batches.iter().flat_map(|b| b.events.iter().map(|e| e.time_ms.div_euclid(DAY_MS))).collect();
    schema::ensure_days(db, &c, &days.into_iter().collect::<Vec<_>>()).await?;

    let tx = c.transaction().await?;
    // Lock every sensor row of the group, in id order (two admins locking overlapping sets in
    // the same order cannot deadlock), before reading the high-water marks.
    let mut ids: Vec<i64> = batches.iter().map(|b| b.sensor_id).collect();
    ids.sort_unstable();
    ids.dedup();
    let rows = tx
        .query("SELECT id, revoked, high_water_seq FROM sensors WHERE id = ANY($1) ORDER BY id FOR UPDATE", &[&ids])
        .await?;
    if rows.len() != ids.len() {
        return Err(Retry::Failed(StorageError::Postgres(format!(
            "a batch names a sensor id the database does not have (of {ids:?})"
        ))));
    }
    let mut state: HashMap<i64, (bool, i64)> = rows.iter().map(|r| (r.get(0), (r.get(1), r.get(2)))).collect();
    let txid: i64 = tx.query_one("SELECT pg_current_xact_id()::text::bigint", &[]).await?.get(0);

    let mut outcomes = Vec::with_capacity(batches.len());
    let mut updates: HashMap<i64, SensorUpdate> = HashMap::new();
    let mut touched: Vec<i64> = Vec::new();
    let mut writer = None;
    // Sightings of Sample events newly stored: written after the COPY (one statement each; rare).
    let mut sightings: Vec<(i64, &Event)> = Vec::new();
    for b in batches {
        let Some((revoked, hw)) = state.get_mut(&b.sensor_id) else {
            return Err(Retry::Failed(StorageError::Postgres("sensor row vanished".into())));
        };
        if *revoked {
            outcomes.push(BatchOutcome::Refused("sensor is revoked".into()));
            continue;
        }
        let mark = (*hw).max(0) as u64;
        if b.last_seq <= mark {
            // Already stored (a resend after a lost ack): acknowledge again, store nothing.
            touched.push(b.sensor_id);
            outcomes.push(BatchOutcome::Ack(mark));
            continue;
        }
        let u = updates.entry(b.sensor_id).or_default();
        for ev in b.events.iter().filter(|e| e.seq > mark) {
            if writer.is_none() {
                let sink = tx.copy_in(COPY_SQL).await?;
                writer = Some(Box::pin(BinaryCopyInWriter::new(sink, &COPY_TYPES)));
            }
            if let Some(w) = writer.as_mut() {
                write_event(w.as_mut(), txid, b.sensor_id, ev).await?;
            }
            u.tally.add(ev);
            u.stored += 1;
            if super::super::sighting_of(ev).is_some() {
                sightings.push((b.sensor_id, ev));
            }
        }
        *hw = b.last_seq.min(i64::MAX as u64) as i64;
        u.high_water = *hw;
        outcomes.push(BatchOutcome::Ack(b.last_seq));
    }
    if let Some(mut w) = writer {
        w.as_mut().finish().await?;
    }
    for (sensor_id, ev) in sightings {
        super::samples::insert_sighting(&tx, sensor_id, ev).await?;
    }
    if !updates.is_empty() {
        let mut id = Vec::new();
        let (mut hw, mut ev, mut sh, mut health, mut stored) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (sid, u) in updates {
            id.push(sid);
            hw.push(u.high_water);
            ev.push(u.tally.evicted);
            sh.push(u.tally.shed);
            health.push(u.tally.health);
            stored.push(u.stored);
        }
        tx.execute(
            "UPDATE sensors s SET high_water_seq = u.hw, last_contact_ms = $7, evicted_total = s.evicted_total + u.ev,
                    shed_total = s.shed_total + u.sh, health_json = COALESCE(u.health, s.health_json),
                    events_stored = s.events_stored + u.stored
             FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], $5::text[], $6::bigint[])
                  AS u(id, hw, ev, sh, health, stored)
             WHERE s.id = u.id",
            &[&id, &hw, &ev, &sh, &health, &stored, &now],
        )
        .await?;
    }
    if !touched.is_empty() {
        tx.execute("UPDATE sensors SET last_contact_ms = $2 WHERE id = ANY($1)", &[&touched, &now]).await?;
    }
    tx.commit().await?;
    Ok(outcomes)
}
