//! Analytics over SQLite: folding new events into the aggregate tables, and the reads every
//! report is made of.
//!
//! A range is read as a `UNION ALL` of one index range scan per span (see [`select`]); the
//! item lists read the partial covering index of their kind (see `schema`).

use super::super::*;
use super::{opt_text, text};
use rusqlite::{params, Connection, OptionalExtension, ToSql, Transaction};

/// `SELECT cols FROM table` restricted to the range's spans and sensor, as a UNION ALL over the
/// spans. Parameters: ?1..?10 span bounds, ?11 sensor id (0 = the all-sensors rows); callers add
/// their own from ?12.
fn select(spans: &[Span; 5], table: &str, cols: &str) -> String {
    spans
        .iter()
        .enumerate()
        .map(|(i, s)| {
            format!(
                "SELECT {cols} FROM {table} WHERE res = {} AND sensor_id = ?11 AND bucket >= ?{} AND bucket < ?{}",
                s.res.code(),
                2 * i + 1,
                2 * i + 2
            )
        })
        .collect::<Vec<_>>()
        .join(" UNION ALL ")
}

/// The parameters of [`select`].
fn span_params(spans: &[Span; 5], sensor_id: i64) -> Vec<Box<dyn ToSql>> {
    let mut v: Vec<Box<dyn ToSql>> = Vec::with_capacity(13);
    for s in spans {
        v.push(Box::new(s.from));
        v.push(Box::new(s.to));
    }
    v.push(Box::new(sensor_id));
    v
}

pub(super) fn run<T>(
    conn: &Connection,
    sql: &str,
    params: Vec<Box<dyn ToSql>>,
    f: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> Result<Vec<T>, StorageError> {
    let mut stmt = conn.prepare_cached(sql)?;
    let refs: Vec<&dyn ToSql> = params.iter().map(|b| b.as_ref()).collect();
    let rows = stmt.query_map(refs.as_slice(), f)?;
    Ok(rows.collect::<Result<Vec<T>, _>>()?)
}

// ---------------------------------------------------------------------------------------------
// Folding.

struct SqliteFoldTx<'c, 't> {
    tx: &'t Transaction<'c>,
}

impl FoldTx for SqliteFoldTx<'_, '_> {
    fn ip_id(&mut self, ip: &str, new: &mut dyn FnMut() -> IpRecord) -> Result<(i64, i64), StorageError> {
        let found = self
            .tx
            .prepare_cached("SELECT id, cc FROM ip_info WHERE ip = ?1")?
            .query_row(params![ip], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        if let Some(v) = found {
            return Ok(v);
        }
        let rec = new();
        self.tx
            .prepare_cached("INSERT INTO ip_info(ip, country, cc, asn, as_org) VALUES (?1, ?2, ?3, ?4, ?5)")?
            .execute(params![ip, rec.country, rec.cc, rec.asn, rec.as_org])?;
        Ok((self.tx.last_insert_rowid(), rec.cc))
    }

    fn string_id(&mut self, s: &str) -> Result<i64, StorageError> {
        let found: Option<i64> = self
            .tx
            .prepare_cached("SELECT id FROM strings WHERE s = ?1")?
            .query_row(params![s], |r| r.get(0))
            .optional()?;
        if let Some(id) = found {
            return Ok(id);
        }
        self.tx.prepare_cached("INSERT INTO strings(s) VALUES (?1)")?.execute(params![s])?;
        Ok(self.tx.last_insert_rowid())
    }
}

/// The columns a fold reads, in [`fold_rows`]' order.
const FOLD_COLS: &str = "id, sensor_id, time_ms, protocol, kind, src_ip, dst_port, count, username, password,
                    CASE WHEN kind = 'eviction_gap' THEN fields END";

/// Hands every row of `rows` ([`FOLD_COLS`]) to `fold`; returns (rows, last id).
fn fold_rows(
    tx: &Transaction<'_>,
    mut rows: rusqlite::Rows<'_>,
    fold: &mut FoldFn<'_>,
    delta: &mut AggDelta,
) -> Result<(u64, i64), StorageError> {
    let mut ids = SqliteFoldTx { tx };
    let (mut n, mut max_id) = (0u64, 0i64);
    while let Some(r) = rows.next()? {
        n += 1;
        max_id = r.get(0)?;
        let ev = FoldEvent {
            sensor_id: r.get(1)?,
            time_ms: r.get(2)?,
            protocol: text(r, 3)?,
            kind: text(r, 4)?,
            src_ip: text(r, 5)?,
            dst_port: r.get(6)?,
            count: r.get(7)?,
            username: opt_text(r, 8)?,
            password: opt_text(r, 9)?,
            gap_fields: opt_text(r, 10)?,
        };
        fold(&ev, &mut ids, delta)?;
    }
    Ok((n, max_id))
}

pub fn fold_events(conn: &Connection, limit: u64, fold: &mut FoldFn<'_>) -> Result<u64, StorageError> {
    // IMMEDIATE: reads the cursor, then writes; `report` folds while `serve` folds and ingests,
    // and a deferred transaction would fail with "database is locked" instead of waiting.
    let tx = Transaction::new_unchecked(conn, rusqlite::TransactionBehavior::Immediate)?;
    let last: i64 = tx.query_row("SELECT last_event_id FROM analytics_state WHERE id = 1", [], |r| r.get(0))?;
    let mut delta = AggDelta::default();
    let (n, max_id) = {
        let mut stmt =
            tx.prepare_cached(&format!("SELECT {FOLD_COLS} FROM events WHERE id > ?1 ORDER BY id LIMIT ?2"))?;
        let rows = stmt.query(params![last, limit.min(i64::MAX as u64) as i64])?;
        fold_rows(&tx, rows, fold, &mut delta)?
    };
    if n == 0 {
        return Ok(0);
    }
    write_delta(&tx, &delta)?;
    tx.execute("UPDATE analytics_state SET last_event_id = ?1 WHERE id = 1", params![max_id])?;
    tx.commit()?;
    Ok(n)
}

/// Events read per step of [`refold_classes`] (each step's delta is written before the next).
const REFOLD_CHUNK: i64 = 50_000;

pub fn refold_classes(conn: &Connection, from: [i64; 3], fold: &mut FoldFn<'_>) -> Result<u64, StorageError> {
    // One IMMEDIATE transaction: no fold (and no ingest) runs in between, so every event is in
    // the class rows exactly once when it commits.
    let tx = Transaction::new_unchecked(conn, rusqlite::TransactionBehavior::Immediate)?;
    for (res, f) in from.iter().enumerate() {
        for t in ["agg_kind", "agg_port", "agg_src", "agg_cred"] {
            tx.execute(
                &format!("DELETE FROM {t} WHERE res = ?1 AND sensor_id < 0 AND bucket >= ?2"),
                params![res as i64, f],
            )?;
        }
    }
    let last: i64 = tx.query_row("SELECT last_event_id FROM analytics_state WHERE id = 1", [], |r| r.get(0))?;
    let since = from.iter().copied().min().unwrap_or(i64::MIN);
    let (mut total, mut after) = (0u64, 0i64);
    loop {
        let mut delta = AggDelta::default();
        let (n, max_id) = {
            let mut stmt = tx.prepare_cached(&format!(
                "SELECT {FOLD_COLS} FROM events WHERE id > ?1 AND id <= ?2 AND time_ms >= ?3 ORDER BY id LIMIT ?4"
            ))?;
            let rows = stmt.query(params![after, last, since, REFOLD_CHUNK])?;
            fold_rows(&tx, rows, fold, &mut delta)?
        };
        write_delta(&tx, &delta)?;
        total += n;
        after = max_id;
        if (n as i64) < REFOLD_CHUNK {
            break;
        }
    }
    tx.commit()?;
    Ok(total)
}

fn write_delta(tx: &Transaction<'_>, b: &AggDelta) -> rusqlite::Result<()> {
    let mut st = tx.prepare_cached(
        "INSERT INTO agg_kind(res, bucket, sensor_id, protocol, kind, rows, n) VALUES (?1,?2,?3,?4,?5,?6,?7)
         ON CONFLICT DO UPDATE SET rows = rows + excluded.rows, n = n + excluded.n",
    )?;
    for ((res, bucket, s, p, k), (rows, n)) in &b.kind {
        st.execute(params![res, bucket, s, p, k, rows, n])?;
    }
    let mut st = tx.prepare_cached(
        "INSERT INTO agg_port(res, bucket, sensor_id, protocol, dst_port, attempts) VALUES (?1,?2,?3,?4,?5,?6)
         ON CONFLICT DO UPDATE SET attempts = attempts + excluded.attempts",
    )?;
    for ((res, bucket, s, p, port), a) in &b.port {
        st.execute(params![res, bucket, s, p, port, a])?;
    }
    // Sorted keys make the b-tree writes sequential.
    let mut src: Vec<_> = b.src.iter().collect();
    src.sort_unstable_by_key(|(k, _)| (k.0, k.2, k.1, k.3));
    let mut st = tx.prepare_cached(
        "INSERT INTO agg_src(res, bucket, sensor_id, ip_id, cc, attempts, logins, events, first_ms, last_ms)
         VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10)
         ON CONFLICT DO UPDATE SET attempts = attempts + excluded.attempts, logins = logins + excluded.logins,
           events = events + excluded.events, first_ms = min(first_ms, excluded.first_ms),
           last_ms = max(last_ms, excluded.last_ms)",
    )?;
    for ((res, bucket, s, ip), (cc, a, l, e, f, la)) in src {
        st.execute(params![res, bucket, s, ip, cc, a, l, e, f, la])?;
    }
    let mut cred: Vec<_> = b.cred.iter().collect();
    cred.sort_unstable_by_key(|(k, _)| (k.0, k.2, k.1, k.3, k.4));
    let mut st = tx.prepare_cached(
        "INSERT INTO agg_cred(res, bucket, sensor_id, user_id, pass_id, n) VALUES (?1,?2,?3,?4,?5,?6)
         ON CONFLICT DO UPDATE SET n = n + excluded.n",
    )?;
    for ((res, bucket, s, u, p), n) in cred {
        st.execute(params![res, bucket, s, u, p, n])?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Reads.

pub fn sensor_id_of(conn: &Connection, name: &str) -> Result<Option<i64>, StorageError> {
    Ok(conn.query_row("SELECT id FROM sensors WHERE name = ?1", params![name], |r| r.get::<_, i64>(0)).optional()?)
}

pub fn hourly_from(conn: &Connection) -> Result<i64, StorageError> {
    Ok(conn
        .query_row("SELECT hourly_from_ms FROM analytics_state WHERE id = 1", [], |r| r.get(0))
        .optional()?
        .unwrap_or(0))
}

pub fn kind_sums(conn: &Connection, r: &AggRange) -> Result<Vec<KindSum>, StorageError> {
    let sql = format!(
        "SELECT kind, SUM(rows), SUM(n) FROM ({}) GROUP BY kind",
        select(&r.spans, "agg_kind", "kind, rows, n")
    );
    run(conn, &sql, span_params(&r.spans, r.sensor_id), |row| {
        Ok(KindSum { kind: row.get(0)?, rows: row.get(1)?, n: row.get(2)? })
    })
}

pub fn protocol_sums(conn: &Connection, r: &AggRange) -> Result<Vec<ProtocolSum>, StorageError> {
    let sql = format!(
        "SELECT protocol, SUM(CASE WHEN kind IN ('connection','rollup') THEN n ELSE 0 END) AS a,
                SUM(CASE WHEN kind = 'login' THEN rows ELSE 0 END), SUM(rows)
         FROM ({}) WHERE protocol <> 'sensor' GROUP BY protocol ORDER BY a DESC, protocol",
        select(&r.spans, "agg_kind", "protocol, kind, rows, n")
    );
    run(conn, &sql, span_params(&r.spans, r.sensor_id), |row| {
        Ok(ProtocolSum { protocol: row.get(0)?, attempts: row.get(1)?, logins: row.get(2)?, events: row.get(3)? })
    })
}

pub fn port_sums(conn: &Connection, r: &AggRange, limit: i64) -> Result<Vec<PortSum>, StorageError> {
    let mut params = span_params(&r.spans, r.sensor_id);
    params.push(Box::new(limit));
    let sql = format!(
        "SELECT protocol, dst_port, SUM(attempts) AS a FROM ({}) GROUP BY protocol, dst_port
         ORDER BY a DESC, dst_port LIMIT ?12",
        select(&r.spans, "agg_port", "protocol, dst_port, attempts")
    );
    run(conn, &sql, params, |row| Ok(PortSum { protocol: row.get(0)?, port: row.get(1)?, attempts: row.get(2)? }))
}

pub fn scan_sources(conn: &Connection, r: &AggRange, f: &mut dyn FnMut(SrcAgg)) -> Result<(), StorageError> {
    let sql = select(&r.spans, "agg_src", "ip_id, cc, attempts, logins, events, first_ms, last_ms");
    let mut stmt = conn.prepare_cached(&sql)?;
    let params = span_params(&r.spans, r.sensor_id);
    let refs: Vec<&dyn ToSql> = params.iter().map(|b| b.as_ref()).collect();
    let mut rows = stmt.query(refs.as_slice())?;
    while let Some(row) = rows.next()? {
        f(SrcAgg {
            ip_id: row.get(0)?,
            cc: row.get(1)?,
            attempts: row.get(2)?,
            logins: row.get(3)?,
            events: row.get(4)?,
            first_ms: row.get(5)?,
            last_ms: row.get(6)?,
        });
    }
    Ok(())
}

pub fn scan_credentials(conn: &Connection, r: &AggRange, f: &mut dyn FnMut(CredAgg)) -> Result<(), StorageError> {
    let sql = select(&r.spans, "agg_cred", "user_id, pass_id, n");
    let mut stmt = conn.prepare_cached(&sql)?;
    let params = span_params(&r.spans, r.sensor_id);
    let refs: Vec<&dyn ToSql> = params.iter().map(|b| b.as_ref()).collect();
    let mut rows = stmt.query(refs.as_slice())?;
    while let Some(row) = rows.next()? {
        f(CredAgg { user_id: row.get(0)?, pass_id: row.get(1)?, n: row.get(2)? });
    }
    Ok(())
}

/// The timeline's row source as SQL with its parameters (?11 = sensor).
pub(super) fn timeline_source(src: &TimelineSource, sensor_id: i64) -> (String, Vec<Box<dyn ToSql>>) {
    match src {
        TimelineSource::Hours { from, to } => {
            let mut p = span_params(&[Span::EMPTY; 5], sensor_id);
            p[0] = Box::new(*from);
            p[1] = Box::new(*to);
            let sql = "SELECT bucket, sensor_id, protocol, kind, n FROM agg_kind WHERE res = 0 AND sensor_id = ?11 AND bucket >= ?1 AND bucket < ?2";
            (sql.to_string(), p)
        }
        TimelineSource::Days { spans } => {
            let f = select(spans, "agg_kind", "bucket, sensor_id, protocol, kind, n");
            (
                format!("SELECT (bucket / {DAY_MS}) * {DAY_MS} AS bucket, sensor_id, protocol, kind, n FROM ({f})"),
                span_params(spans, sensor_id),
            )
        }
    }
}

pub fn timeline_bounds(
    conn: &Connection,
    src: &TimelineSource,
    sensor_id: i64,
) -> Result<Option<(i64, i64)>, StorageError> {
    let (source, p) = timeline_source(src, sensor_id);
    let sql = format!("SELECT MIN(bucket), MAX(bucket) FROM ({source})");
    let bounds = run(conn, &sql, p, |row| Ok((row.get::<_, Option<i64>>(0)?, row.get::<_, Option<i64>>(1)?)))?;
    Ok(match bounds.first() {
        Some((Some(a), Some(b))) => Some((*a, *b)),
        _ => None,
    })
}

pub fn timeline_sums(
    conn: &Connection,
    src: &TimelineSource,
    sensor_id: i64,
    first: i64,
    last: i64,
) -> Result<Vec<BucketSum>, StorageError> {
    let (source, p) = timeline_source(src, sensor_id);
    let sql = format!(
        "SELECT bucket, SUM(CASE WHEN kind IN ('connection','rollup') THEN n ELSE 0 END),
                SUM(CASE WHEN kind = 'login' THEN n ELSE 0 END)
         FROM ({source}) WHERE bucket >= {first} AND bucket <= {last} GROUP BY bucket"
    );
    run(conn, &sql, p, |row| Ok(BucketSum { bucket: row.get(0)?, attempts: row.get(1)?, logins: row.get(2)? }))
}

pub fn sensor_names(conn: &Connection) -> Result<Vec<(i64, String)>, StorageError> {
    run(conn, "SELECT id, name FROM sensors ORDER BY name", Vec::new(), |row| Ok((row.get(0)?, row.get(1)?)))
}

pub fn scan_items(
    conn: &Connection,
    kind: ItemKind,
    range: &EventRange,
    f: &mut dyn FnMut(ItemRef<'_>) -> ControlFlow<()>,
) -> Result<(), StorageError> {
    let item_kind = kind;
    let (kind, index, key, detail) = match kind {
        ItemKind::Payload => ("payload", "events_payload", "payload_sha256", "json_extract(fields, '$.size')"),
        ItemKind::Exploit => {
            ("exploit", "events_exploit", "json_extract(fields, '$.name')", "json_extract(fields, '$.cve')")
        }
        ItemKind::Download => ("download_offered", "events_download", "url", "json_extract(fields, '$.tool')"),
    };
    // One pass over the kind's covering index (see the schema).
    let sql = format!(
        "SELECT {key}, {detail}, time_ms, src_ip FROM events INDEXED BY {index}
         WHERE kind = '{kind}' AND time_ms >= ?1 AND time_ms < ?2 AND (?3 IS NULL OR sensor_id = ?3)"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query(params![range.since_ms, range.until_ms, range.sensor_id])?;
    while let Some(row) = rows.next()? {
        let item = ItemRef { key: text(row, 0)?, detail: text(row, 1)?, time_ms: row.get(2)?, src_ip: text(row, 3)? };
        if f(item).is_break() {
            return Ok(());
        }
    }
    if item_kind == ItemKind::Payload {
        return Ok(());
    }
    // What the exploit rules derived from requests and command lines (its own partial index).
    let mut stmt = conn.prepare_cached(
        "SELECT derived, time_ms, src_ip FROM event_derived INDEXED BY event_derived_time
         WHERE derived IS NOT NULL AND time_ms >= ?1 AND time_ms < ?2 AND (?3 IS NULL OR sensor_id = ?3)",
    )?;
    let mut rows = stmt.query(params![range.since_ms, range.until_ms, range.sensor_id])?;
    while let Some(row) = rows.next()? {
        if derived_items(item_kind, text(row, 0)?, row.get(1)?, text(row, 2)?, f).is_break() {
            break;
        }
    }
    Ok(())
}

pub fn scan_windows(
    conn: &Connection,
    range: &EventRange,
    f: &mut dyn FnMut(ScanRef<'_>) -> ControlFlow<()>,
) -> Result<(), StorageError> {
    let sql = "SELECT src_ip, transport, time_ms, fields FROM events INDEXED BY events_kind
               WHERE kind = 'scan_window' AND time_ms >= ?1 AND time_ms < ?2 AND (?3 IS NULL OR sensor_id = ?3)";
    let mut stmt = conn.prepare_cached(sql)?;
    let mut rows = stmt.query(params![range.since_ms, range.until_ms, range.sensor_id])?;
    while let Some(row) = rows.next()? {
        let r =
            ScanRef { src_ip: text(row, 0)?, transport: text(row, 1)?, time_ms: row.get(2)?, fields: text(row, 3)? };
        if f(r).is_break() {
            break;
        }
    }
    Ok(())
}

pub fn string_of(conn: &Connection, id: i64) -> Result<String, StorageError> {
    Ok(conn
        .prepare_cached("SELECT s FROM strings WHERE id = ?1")?
        .query_row(params![id], |r| r.get(0))
        .optional()?
        .unwrap_or_default())
}

pub fn ip_of(conn: &Connection, id: i64) -> Result<Option<IpRecord>, StorageError> {
    Ok(conn
        .prepare_cached("SELECT ip, country, cc, asn, as_org FROM ip_info WHERE id = ?1")?
        .query_row(params![id], |r| {
            Ok(IpRecord { ip: r.get(0)?, country: r.get(1)?, cc: r.get(2)?, asn: r.get(3)?, as_org: r.get(4)? })
        })
        .optional()?)
}

pub fn sensor_health(conn: &Connection, name: Option<&str>) -> Result<Vec<SensorHealthRecord>, StorageError> {
    let sql = "SELECT s.name, s.revoked, s.last_contact_ms, s.high_water_seq, s.evicted_total, s.shed_total,
                      s.health_json,
                      (SELECT COALESCE(SUM(rows), 0) FROM agg_kind a WHERE a.res = 1 AND a.sensor_id = s.id)
               FROM sensors s WHERE (?1 IS NULL OR s.name = ?1) ORDER BY s.name";
    run(conn, sql, vec![Box::new(name.map(str::to_string))], |row| {
        let health: Option<String> = row.get(6)?;
        Ok(SensorHealthRecord {
            name: row.get(0)?,
            revoked: row.get::<_, i64>(1)? != 0,
            last_contact_ms: row.get(2)?,
            high_water_seq: row.get(3)?,
            evicted_total: row.get(4)?,
            shed_total: row.get(5)?,
            events_folded: row.get(7)?,
            health: health.and_then(|h| serde_json::from_str(&h).ok()),
        })
    })
}
