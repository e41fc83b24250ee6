//! Analytics over PostgreSQL: folding new events into the aggregate tables (see the module docs
//! of `storage::postgres` for the `(txid, id)` cursor and the advisory lock), and the reads every
//! report is made of (the same queries as SQLite's, sums cast back to `bigint`).

use super::super::*;
use super::{lock, Postgres};
use futures_util::{pin_mut, TryStreamExt};
use std::collections::{HashMap, HashSet};
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

type Param<'a> = &'a (dyn ToSql + Sync);

/// `SELECT cols FROM table` restricted to the range's spans and sensor, as a UNION ALL over the
/// spans. Parameters: $1..$10 span bounds, $11 sensor id (0 = the all-sensors rows); callers
/// add their own from $12.
fn select(spans: &[Span; 5], table: &str, cols: &str) -> String {
    spans
        .iter()
        .enumerate()
        .map(|(i, s)| {
            format!(
                "SELECT {cols} FROM {table} WHERE res = {} AND sensor_id = $11 AND bucket >= ${} AND bucket < ${}",
                s.res.code(),
                2 * i + 1,
                2 * i + 2
            )
        })
        .collect::<Vec<_>>()
        .join(" UNION ALL ")
}

/// The values of [`select`]'s parameters.
fn span_values(spans: &[Span; 5], sensor_id: i64) -> Vec<i64> {
    let mut v = Vec::with_capacity(11);
    for s in spans {
        v.push(s.from);
        v.push(s.to);
    }
    v.push(sensor_id);
    v
}

pub(super) fn params(values: &[i64]) -> Vec<Param<'_>> {
    values.iter().map(|v| v as Param<'_>).collect()
}

/// Runs a query and maps every row (for small results).
pub(super) fn query<T>(
    db: &Postgres,
    sql: &str,
    p: &[Param<'_>],
    f: impl Fn(&Row) -> Result<T, tokio_postgres::Error>,
) -> Result<Vec<T>, StorageError> {
    db.block_on(async {
        let c = db.client().await?;
        let stmt = c.prepare_cached(sql).await?;
        let rows = c.query(&stmt, p).await?;
        Ok(rows.iter().map(f).collect::<Result<Vec<T>, _>>()?)
    })
}

/// Rows [`stream`] asks the server for first; each next request asks for four times more, up to
/// [`STREAM_MAX_CHUNK`].
const STREAM_FIRST_CHUNK: i32 = 256;
const STREAM_MAX_CHUNK: i32 = 16_384;

/// Streams the rows of a query into `f` (for large results: constant memory), until `f`
/// breaks.
///
/// The rows come from a portal in growing chunks. A plain query makes the server produce
/// every row up to the query's `LIMIT` even after `f` breaks: the client can only drop what
/// arrives. A search that found its 200 hits in the first few hundred logins still waited about
/// 1 s at one million events for the other 100,000 rows of its scan cap. Now it stops after
/// the first chunk. A long scan (800,000 aggregate rows) costs about 50 round trips.
pub(crate) fn stream(
    db: &Postgres,
    sql: &str,
    p: &[Param<'_>],
    f: &mut dyn FnMut(&Row) -> Result<ControlFlow<()>, tokio_postgres::Error>,
) -> Result<(), StorageError> {
    db.block_on(async {
        let mut c = db.client().await?;
        let stmt = c.prepare_cached(sql).await?;
        // A portal lives in a transaction (read only here; ended either way below).
        let tx = c.build_transaction().read_only(true).start().await?;
        let portal = tx.bind(&stmt, p).await?;
        let mut chunk = STREAM_FIRST_CHUNK;
        'chunks: loop {
            let rows = tx.query_portal_raw(&portal, chunk).await?;
            pin_mut!(rows);
            let mut n = 0;
            while let Some(row) = rows.try_next().await? {
                n += 1;
                if f(&row)?.is_break() {
                    break 'chunks;
                }
            }
            if n < chunk {
                break;
            }
            chunk = chunk.saturating_mul(4).min(STREAM_MAX_CHUNK);
        }
        tx.commit().await?;
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------------
// Folding.

/// Interning inside the fold transaction. Addresses and strings of the batch were looked up in
/// one query each before folding, and ids for the new ones taken from their sequences in one
/// more, so the fold callback needs no round trip; the new rows are inserted with the delta.
struct PgFoldTx<'a> {
    ips: HashMap<String, (i64, i64)>,
    strings: HashMap<String, i64>,
    ip_ids: std::vec::IntoIter<i64>,
    string_ids: std::vec::IntoIter<i64>,
    new_ips: Vec<(i64, IpRecord)>,
    new_strings: Vec<(i64, String)>,
    tx: &'a tokio_postgres::Transaction<'a>,
    db: &'a Postgres,
}

impl PgFoldTx<'_> {
    /// An id from `seq` when the batch's pre-allocated ones ran out (not expected).
    fn next_id(&self, table: &str) -> Result<i64, StorageError> {
        let sql = format!("SELECT nextval(pg_get_serial_sequence('{table}', 'id'))");
        Ok(self.db.block_on(self.tx.query_one(&sql, &[]))?.get(0))
    }
}

impl FoldTx for PgFoldTx<'_> {
    fn ip_id(&mut self, ip: &str, new: &mut dyn FnMut() -> IpRecord) -> Result<(i64, i64), StorageError> {
        if let Some(v) = self.ips.get(ip) {
            return Ok(*v);
        }
        let id = match self.ip_ids.next() {
            Some(id) => id,
            None => self.next_id("ip_info")?,
        };
        let rec = new();
        let v = (id, rec.cc);
        self.ips.insert(ip.to_string(), v);
        self.new_ips.push((id, rec));
        Ok(v)
    }

    fn string_id(&mut self, s: &str) -> Result<i64, StorageError> {
        if let Some(v) = self.strings.get(s) {
            return Ok(*v);
        }
        let id = match self.string_ids.next() {
            Some(id) => id,
            None => self.next_id("strings")?,
        };
        self.strings.insert(s.to_string(), id);
        self.new_strings.push((id, s.to_string()));
        Ok(id)
    }
}

pub(crate) const FOLD_SQL: &str =
    "SELECT txid, id, sensor_id, time_ms, protocol, kind, src_ip, dst_port, count, username, password,
            CASE WHEN kind = 'eviction_gap' THEN fields END
     FROM events
     WHERE (txid, id) > ($1, $2) AND txid < pg_snapshot_xmin(pg_current_snapshot())::text::bigint
     ORDER BY txid, id LIMIT $3";

/// Most time one fold step waits for writing transactions older than itself.
const WAIT_FOR_WRITERS: std::time::Duration = std::time::Duration::from_secs(2);

/// Waits (a bounded time) until every transaction that was writing when the fold started has
/// ended, so that a refresh folds everything committed before it began: without this, an
/// unrelated write still in flight (another admin's group commit) would hold the fold back to
/// below its id until the next refresh. Correctness never depends on it, freshness does.
async fn wait_for_older_writers(tx: &tokio_postgres::Transaction<'_>) -> Result<(), tokio_postgres::Error> {
    let snap: String = tx.query_one("SELECT pg_current_snapshot()::text", &[]).await?.get(0);
    let until = std::time::Instant::now() + WAIT_FOR_WRITERS;
    loop {
        let done: bool = tx
            .query_one(
                "SELECT NOT EXISTS (SELECT 1 FROM pg_snapshot_xip($1::text::pg_snapshot) x
                                    WHERE pg_xact_status(x) = 'in progress')",
                &[&snap],
            )
            .await?
            .get(0);
        if done || std::time::Instant::now() > until {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

pub fn fold_events(db: &Postgres, limit: u64, fold: &mut FoldFn<'_>) -> Result<u64, StorageError> {
    let mut c = db.block_on(db.client())?;
    let tx = db.block_on(c.transaction())?;
    db.block_on(tx.execute("SELECT pg_advisory_xact_lock($1)", &[&lock::FOLD]))?;
    db.block_on(wait_for_older_writers(&tx))?;
    let cur = db.block_on(tx.query_one("SELECT fold_txid, fold_id FROM analytics_state WHERE id = 1", &[]))?;
    let (ctx, cid): (i64, i64) = (cur.get(0), cur.get(1));
    let limit = limit.min(i64::MAX as u64) as i64;
    let rows = db.block_on(tx.query(FOLD_SQL, &[&ctx, &cid, &limit]))?;
    let Some(last) = rows.last() else { return Ok(0) };
    let (last_txid, last_id): (i64, i64) = (last.get(0), last.get(1));
    let mut delta = AggDelta::default();
    let (new_ips, new_strings) = fold_rows(db, &tx, &rows, fold, &mut delta)?;
    db.block_on(async {
        write_new_ids(&tx, &new_ips, &new_strings).await?;
        write_delta(&tx, &delta).await?;
        tx.execute("UPDATE analytics_state SET fold_txid = $1, fold_id = $2 WHERE id = 1", &[&last_txid, &last_id])
            .await?;
        tx.commit().await
    })?;
    Ok(rows.len() as u64)
}

/// New addresses and strings a fold step interned (written with its delta).
type NewIds = (Vec<(i64, IpRecord)>, Vec<(i64, String)>);

/// Hands every row of `rows` ([`FOLD_SQL`]'s columns) to `fold`, with the rows' addresses and
/// strings looked up at once first and ids reserved for the new ones.
fn fold_rows(
    db: &Postgres,
    tx: &tokio_postgres::Transaction<'_>,
    rows: &[Row],
    fold: &mut FoldFn<'_>,
    delta: &mut AggDelta,
) -> Result<NewIds, StorageError> {
    // Look the batch's addresses and strings up at once; reserve ids for the new ones.
    let mut ips: HashSet<&str> = HashSet::new();
    let mut strs: HashSet<&str> = HashSet::new();
    // The addresses an eviction gap lists are folded too (analytics::refresh).
    let gap_ips: Vec<String> = rows
        .iter()
        .filter_map(|r| r.get::<_, Option<&str>>(11))
        .flat_map(|f| crate::analytics::evicted_sources(f).into_iter().map(|s| s.ip.to_string()))
        .collect();
    ips.extend(gap_ips.iter().map(String::as_str));
    for r in rows {
        if r.get::<_, &str>(4) == "sensor" {
            continue;
        }
        ips.insert(r.get(6));
        if let Some(u) = r.get::<_, Option<&str>>(9) {
            strs.insert(u);
            strs.insert(r.get::<_, Option<&str>>(10).unwrap_or(""));
        }
    }
    let (ips, strs): (Vec<&str>, Vec<&str>) = (ips.into_iter().collect(), strs.into_iter().collect());
    let known_ips: HashMap<String, (i64, i64)> = db
        .block_on(tx.query("SELECT ip, id, cc FROM ip_info WHERE ip = ANY($1)", &[&ips]))?
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect();
    let known_strs: HashMap<String, i64> = db
        .block_on(tx.query("SELECT s, id FROM strings WHERE s = ANY($1)", &[&strs]))?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let reserve = |table: &str, n: usize| -> Result<Vec<i64>, StorageError> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let sql =
            format!("SELECT nextval(pg_get_serial_sequence('{table}', 'id')) FROM generate_series(1, $1::bigint)");
        Ok(db.block_on(tx.query(&sql, &[&(n as i64)]))?.iter().map(|r| r.get(0)).collect())
    };
    let ip_ids = reserve("ip_info", ips.len() - known_ips.len())?;
    let string_ids = reserve("strings", strs.len() - known_strs.len())?;
    let mut ids = PgFoldTx {
        ips: known_ips,
        strings: known_strs,
        ip_ids: ip_ids.into_iter(),
        string_ids: string_ids.into_iter(),
        new_ips: Vec::new(),
        new_strings: Vec::new(),
        tx,
        db,
    };
    for r in rows {
        let ev = FoldEvent {
            sensor_id: r.get(2),
            time_ms: r.get(3),
            protocol: r.get(4),
            kind: r.get(5),
            src_ip: r.get(6),
            dst_port: i64::from(r.get::<_, i32>(7)),
            count: r.get(8),
            username: r.get(9),
            password: r.get(10),
            gap_fields: r.get(11),
        };
        fold(&ev, &mut ids, delta)?;
    }
    Ok((std::mem::take(&mut ids.new_ips), std::mem::take(&mut ids.new_strings)))
}

/// Events read per step of [`refold_classes`].
const REFOLD_CHUNK: i64 = 50_000;

const REFOLD_SQL: &str =
    "SELECT txid, id, sensor_id, time_ms, protocol, kind, src_ip, dst_port, count, username, password,
            CASE WHEN kind = 'eviction_gap' THEN fields END
     FROM events
     WHERE (txid, id) > ($1, $2) AND (txid, id) <= ($3, $4) AND time_ms >= $5
     ORDER BY txid, id LIMIT $6";

pub fn refold_classes(db: &Postgres, from: [i64; 3], fold: &mut FoldFn<'_>) -> Result<u64, StorageError> {
    let mut c = db.block_on(db.client())?;
    let tx = db.block_on(c.transaction())?;
    // The fold lock: no admin folds while the class rows are rebuilt, so each event the cursor
    // has passed is in them exactly once, and every later one is folded with the new labels.
    db.block_on(tx.execute("SELECT pg_advisory_xact_lock($1)", &[&lock::FOLD]))?;
    for (res, f) in from.iter().enumerate() {
        for t in ["agg_kind", "agg_port", "agg_src", "agg_cred"] {
            let sql = format!("DELETE FROM {t} WHERE res = $1 AND sensor_id < 0 AND bucket >= $2");
            db.block_on(tx.execute(&sql, &[&(res as i64), f]))?;
        }
    }
    let cur = db.block_on(tx.query_one("SELECT fold_txid, fold_id FROM analytics_state WHERE id = 1", &[]))?;
    let (ctx, cid): (i64, i64) = (cur.get(0), cur.get(1));
    let since = from.iter().copied().min().unwrap_or(i64::MIN);
    let (mut after_tx, mut after_id, mut total) = (i64::MIN, i64::MIN, 0u64);
    loop {
        let rows = db.block_on(tx.query(REFOLD_SQL, &[&after_tx, &after_id, &ctx, &cid, &since, &REFOLD_CHUNK]))?;
        let Some(last) = rows.last() else { break };
        (after_tx, after_id) = (last.get(0), last.get(1));
        let mut delta = AggDelta::default();
        let (new_ips, new_strings) = fold_rows(db, &tx, &rows, fold, &mut delta)?;
        db.block_on(async {
            write_new_ids(&tx, &new_ips, &new_strings).await?;
            write_delta(&tx, &delta).await
        })?;
        total += rows.len() as u64;
        if (rows.len() as i64) < REFOLD_CHUNK {
            break;
        }
    }
    db.block_on(tx.commit())?;
    Ok(total)
}

async fn write_new_ids(
    tx: &tokio_postgres::Transaction<'_>,
    ips: &[(i64, IpRecord)],
    strings: &[(i64, String)],
) -> Result<(), tokio_postgres::Error> {
    if !ips.is_empty() {
        let id: Vec<i64> = ips.iter().map(|x| x.0).collect();
        let ip: Vec<&str> = ips.iter().map(|x| x.1.ip.as_str()).collect();
        let country: Vec<&str> = ips.iter().map(|x| x.1.country.as_str()).collect();
        let cc: Vec<i64> = ips.iter().map(|x| x.1.cc).collect();
        let asn: Vec<Option<i64>> = ips.iter().map(|x| x.1.asn.map(i64::from)).collect();
        let org: Vec<&str> = ips.iter().map(|x| x.1.as_org.as_str()).collect();
        tx.execute(
            "INSERT INTO ip_info(id, ip, country, cc, asn, as_org)
             SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::text[])",
            &[&id, &ip, &country, &cc, &asn, &org],
        )
        .await?;
    }
    if !strings.is_empty() {
        let id: Vec<i64> = strings.iter().map(|x| x.0).collect();
        let s: Vec<&str> = strings.iter().map(|x| x.1.as_str()).collect();
        tx.execute("INSERT INTO strings(id, s) SELECT * FROM unnest($1::bigint[], $2::text[])", &[&id, &s]).await?;
    }
    Ok(())
}

async fn write_delta(tx: &tokio_postgres::Transaction<'_>, b: &AggDelta) -> Result<(), tokio_postgres::Error> {
    if !b.kind.is_empty() {
        let (mut res, mut bucket, mut s, mut p, mut k, mut rows, mut n) =
            (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
        for ((r, bk, sid, proto, kind), (ro, nn)) in &b.kind {
            res.push(*r);
            bucket.push(*bk);
            s.push(*sid);
            p.push(proto.as_str());
            k.push(kind.as_str());
            rows.push(*ro);
            n.push(*nn);
        }
        tx.execute(
            "INSERT INTO agg_kind(res, bucket, sensor_id, protocol, kind, rows, n)
             SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::text[], $5::text[], $6::bigint[], $7::bigint[])
             ON CONFLICT (res, sensor_id, bucket, protocol, kind)
             DO UPDATE SET rows = agg_kind.rows + excluded.rows, n = agg_kind.n + excluded.n",
            &[&res, &bucket, &s, &p, &k, &rows, &n],
        )
        .await?;
    }
    if !b.port.is_empty() {
        let (mut res, mut bucket, mut s, mut p, mut port, mut a) = (vec![], vec![], vec![], vec![], vec![], vec![]);
        for ((r, bk, sid, proto, pt), at) in &b.port {
            res.push(*r);
            bucket.push(*bk);
            s.push(*sid);
            p.push(proto.as_str());
            port.push(*pt);
            a.push(*at);
        }
        tx.execute(
            "INSERT INTO agg_port(res, bucket, sensor_id, protocol, dst_port, attempts)
             SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::text[], $5::bigint[], $6::bigint[])
             ON CONFLICT (res, sensor_id, bucket, protocol, dst_port)
             DO UPDATE SET attempts = agg_port.attempts + excluded.attempts",
            &[&res, &bucket, &s, &p, &port, &a],
        )
        .await?;
    }
    if !b.src.is_empty() {
        let mut src: Vec<_> = b.src.iter().collect();
        src.sort_unstable_by_key(|(k, _)| (k.0, k.2, k.1, k.3));
        let mut cols: [Vec<i64>; 10] = Default::default();
        for ((r, bk, sid, ip), (cc, a, l, e, f, la)) in src {
            for (i, v) in [*r, *bk, *sid, *ip, *cc, *a, *l, *e, *f, *la].into_iter().enumerate() {
                cols[i].push(v);
            }
        }
        let [c0, c1, c2, c3, c4, c5, c6, c7, c8, c9] = &cols;
        tx.execute(
            "INSERT INTO agg_src(res, bucket, sensor_id, ip_id, cc, attempts, logins, events, first_ms, last_ms)
             SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[],
                                  $7::bigint[], $8::bigint[], $9::bigint[], $10::bigint[])
             ON CONFLICT (res, sensor_id, bucket, ip_id) DO UPDATE SET
               attempts = agg_src.attempts + excluded.attempts, logins = agg_src.logins + excluded.logins,
               events = agg_src.events + excluded.events, first_ms = LEAST(agg_src.first_ms, excluded.first_ms),
               last_ms = GREATEST(agg_src.last_ms, excluded.last_ms)",
            &[c0, c1, c2, c3, c4, c5, c6, c7, c8, c9],
        )
        .await?;
    }
    if !b.cred.is_empty() {
        let mut cred: Vec<_> = b.cred.iter().collect();
        cred.sort_unstable_by_key(|(k, _)| (k.0, k.2, k.1, k.3, k.4));
        let mut cols: [Vec<i64>; 6] = Default::default();
        for ((r, bk, sid, u, p), n) in cred {
            for (i, v) in [*r, *bk, *sid, *u, *p, *n].into_iter().enumerate() {
                cols[i].push(v);
            }
        }
        let [c0, c1, c2, c3, c4, c5] = &cols;
        tx.execute(
            "INSERT INTO agg_cred(res, bucket, sensor_id, user_id, pass_id, n)
             SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[])
             ON CONFLICT (res, sensor_id, bucket, user_id, pass_id) DO UPDATE SET n = agg_cred.n + excluded.n",
            &[c0, c1, c2, c3, c4, c5],
        )
        .await?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Reads.

pub fn sensor_id_of(db: &Postgres, name: &str) -> Result<Option<i64>, StorageError> {
    Ok(query(db, "SELECT id FROM sensors WHERE name = $1", &[&name], |r| r.try_get(0))?.into_iter().next())
}

pub fn hourly_from(db: &Postgres) -> Result<i64, StorageError> {
    Ok(query(db, "SELECT hourly_from_ms FROM analytics_state WHERE id = 1", &[], |r| r.try_get(0))?
        .into_iter()
        .next()
        .unwrap_or(0))
}

pub fn kind_sums(db: &Postgres, r: &AggRange) -> Result<Vec<KindSum>, StorageError> {
    let sql = format!(
        "SELECT kind, SUM(rows)::bigint, SUM(n)::bigint FROM ({}) a GROUP BY kind",
        select(&r.spans, "agg_kind", "kind, rows, n")
    );
    let v = span_values(&r.spans, r.sensor_id);
    query(db, &sql, &params(&v), |row| Ok(KindSum { kind: row.try_get(0)?, rows: row.try_get(1)?, n: row.try_get(2)? }))
}

pub fn protocol_sums(db: &Postgres, r: &AggRange) -> Result<Vec<ProtocolSum>, StorageError> {
    let sql = format!(
        "SELECT protocol, SUM(CASE WHEN kind IN ('connection','rollup') THEN n ELSE 0 END)::bigint AS a,
                SUM(CASE WHEN kind = 'login' THEN rows ELSE 0 END)::bigint, SUM(rows)::bigint
         FROM ({}) x WHERE protocol <> 'sensor' GROUP BY protocol ORDER BY a DESC, protocol COLLATE \"C\"",
        select(&r.spans, "agg_kind", "protocol, kind, rows, n")
    );
    let v = span_values(&r.spans, r.sensor_id);
    query(db, &sql, &params(&v), |row| {
        Ok(ProtocolSum {
            protocol: row.try_get(0)?,
            attempts: row.try_get(1)?,
            logins: row.try_get(2)?,
            events: row.try_get(3)?,
        })
    })
}

pub fn port_sums(db: &Postgres, r: &AggRange, limit: i64) -> Result<Vec<PortSum>, StorageError> {
    let sql = format!(
        "SELECT protocol, dst_port, SUM(attempts)::bigint AS a FROM ({}) x GROUP BY protocol, dst_port
         ORDER BY a DESC, dst_port LIMIT $12",
        select(&r.spans, "agg_port", "protocol, dst_port, attempts")
    );
    let mut v = span_values(&r.spans, r.sensor_id);
    v.push(limit);
    query(db, &sql, &params(&v), |row| {
        Ok(PortSum { protocol: row.try_get(0)?, port: row.try_get(1)?, attempts: row.try_get(2)? })
    })
}

pub fn scan_sources(db: &Postgres, r: &AggRange, f: &mut dyn FnMut(SrcAgg)) -> Result<(), StorageError> {
    let sql = select(&r.spans, "agg_src", "ip_id, cc, attempts, logins, events, first_ms, last_ms");
    let v = span_values(&r.spans, r.sensor_id);
    stream(db, &sql, &params(&v), &mut |row| {
        f(SrcAgg {
            ip_id: row.try_get(0)?,
            cc: row.try_get(1)?,
            attempts: row.try_get(2)?,
            logins: row.try_get(3)?,
            events: row.try_get(4)?,
            first_ms: row.try_get(5)?,
            last_ms: row.try_get(6)?,
        });
        Ok(ControlFlow::Continue(()))
    })
}

pub fn scan_credentials(db: &Postgres, r: &AggRange, f: &mut dyn FnMut(CredAgg)) -> Result<(), StorageError> {
    let sql = select(&r.spans, "agg_cred", "user_id, pass_id, n");
    let v = span_values(&r.spans, r.sensor_id);
    stream(db, &sql, &params(&v), &mut |row| {
        f(CredAgg { user_id: row.try_get(0)?, pass_id: row.try_get(1)?, n: row.try_get(2)? });
        Ok(ControlFlow::Continue(()))
    })
}

/// The timeline's row source as SQL with its parameter values.
pub(super) fn timeline_source(src: &TimelineSource, sensor_id: i64) -> (String, Vec<i64>) {
    match src {
        TimelineSource::Hours { from, to } => (
            "SELECT bucket, sensor_id, protocol, kind, n FROM agg_kind WHERE res = 0 AND sensor_id = $3 AND bucket >= $1 AND bucket < $2"
                .to_string(),
            vec![*from, *to, sensor_id],
        ),
        TimelineSource::Days { spans } => {
            let f = select(spans, "agg_kind", "bucket, sensor_id, protocol, kind, n");
            (format!("SELECT (bucket / {DAY_MS}) * {DAY_MS} AS bucket, sensor_id, protocol, kind, n FROM ({f}) d"), span_values(spans, sensor_id))
        }
    }
}

pub fn timeline_bounds(
    db: &Postgres,
    src: &TimelineSource,
    sensor_id: i64,
) -> Result<Option<(i64, i64)>, StorageError> {
    let (source, v) = timeline_source(src, sensor_id);
    let sql = format!("SELECT MIN(bucket), MAX(bucket) FROM ({source}) t");
    let b =
        query(db, &sql, &params(&v), |row| Ok((row.try_get::<_, Option<i64>>(0)?, row.try_get::<_, Option<i64>>(1)?)))?;
    Ok(match b.first() {
        Some((Some(a), Some(b))) => Some((*a, *b)),
        _ => None,
    })
}

pub fn timeline_sums(
    db: &Postgres,
    src: &TimelineSource,
    sensor_id: i64,
    first: i64,
    last: i64,
) -> Result<Vec<BucketSum>, StorageError> {
    let (source, v) = timeline_source(src, sensor_id);
    let sql = format!(
        "SELECT bucket, SUM(CASE WHEN kind IN ('connection','rollup') THEN n ELSE 0 END)::bigint,
                SUM(CASE WHEN kind = 'login' THEN n ELSE 0 END)::bigint
         FROM ({source}) t WHERE bucket >= {first} AND bucket <= {last} GROUP BY bucket"
    );
    query(db, &sql, &params(&v), |row| {
        Ok(BucketSum { bucket: row.try_get(0)?, attempts: row.try_get(1)?, logins: row.try_get(2)? })
    })
}

pub fn sensor_names(db: &Postgres) -> Result<Vec<(i64, String)>, StorageError> {
    query(db, "SELECT id, name FROM sensors ORDER BY name COLLATE \"C\"", &[], |row| {
        Ok((row.try_get(0)?, row.try_get(1)?))
    })
}

pub fn scan_items(
    db: &Postgres,
    kind: ItemKind,
    range: &EventRange,
    f: &mut dyn FnMut(ItemRef<'_>) -> ControlFlow<()>,
) -> Result<(), StorageError> {
    let item_kind = kind;
    let (kind, key, detail) = match kind {
        ItemKind::Payload => ("payload", "payload_sha256", "fields::jsonb ->> 'size'"),
        ItemKind::Exploit => ("exploit", "fields::jsonb ->> 'name'", "fields::jsonb ->> 'cve'"),
        ItemKind::Download => ("download_offered", "url", "fields::jsonb ->> 'tool'"),
    };
    // The partial index of the kind (see the schema) finds the rows.
    let sql = format!(
        "SELECT {key}, {detail}, time_ms, src_ip FROM events
         WHERE kind = '{kind}' AND time_ms >= $1 AND time_ms < $2 AND ($3::bigint IS NULL OR sensor_id = $3)"
    );
    let mut stopped = false;
    stream(db, &sql, &[&range.since_ms, &range.until_ms, &range.sensor_id], &mut |row| {
        let key: Option<&str> = row.try_get(0)?;
        let detail: Option<&str> = row.try_get(1)?;
        let flow = f(ItemRef {
            key: key.unwrap_or(""),
            detail: detail.unwrap_or(""),
            time_ms: row.try_get(2)?,
            src_ip: row.try_get(3)?,
        });
        stopped = flow.is_break();
        Ok(flow)
    })?;
    if stopped || item_kind == ItemKind::Payload {
        return Ok(());
    }
    // What the exploit rules derived from requests and command lines (partial index
    // `events_derived`).
    let sql = "SELECT derived, time_ms, src_ip FROM events
         WHERE derived IS NOT NULL AND time_ms >= $1 AND time_ms < $2 AND ($3::bigint IS NULL OR sensor_id = $3)";
    stream(db, sql, &[&range.since_ms, &range.until_ms, &range.sensor_id], &mut |row| {
        Ok(derived_items(item_kind, row.try_get(0)?, row.try_get(1)?, row.try_get(2)?, f))
    })
}

pub fn scan_windows(
    db: &Postgres,
    range: &EventRange,
    f: &mut dyn FnMut(ScanRef<'_>) -> ControlFlow<()>,
) -> Result<(), StorageError> {
    let sql = "SELECT src_ip, transport, time_ms, fields FROM events
               WHERE kind = 'scan_window' AND time_ms >= $1 AND time_ms < $2 AND ($3::bigint IS NULL OR sensor_id = $3)";
    stream(db, sql, &[&range.since_ms, &range.until_ms, &range.sensor_id], &mut |row| {
        Ok(f(ScanRef {
            src_ip: row.try_get(0)?,
            transport: row.try_get(1)?,
            time_ms: row.try_get(2)?,
            fields: row.try_get(3)?,
        }))
    })
}

pub fn string_of(db: &Postgres, id: i64) -> Result<String, StorageError> {
    Ok(query(db, "SELECT s FROM strings WHERE id = $1", &[&id], |r| r.try_get(0))?
        .into_iter()
        .next()
        .unwrap_or_default())
}

pub fn ip_of(db: &Postgres, id: i64) -> Result<Option<IpRecord>, StorageError> {
    Ok(query(db, "SELECT ip, country, cc, asn, as_org FROM ip_info WHERE id = $1", &[&id], |r| {
        let asn: Option<i64> = r.try_get(3)?;
        Ok(IpRecord {
            ip: r.try_get(0)?,
            country: r.try_get(1)?,
            cc: r.try_get(2)?,
            asn: asn.and_then(|a| u32::try_from(a).ok()),
            as_org: r.try_get(4)?,
        })
    })?
    .into_iter()
    .next())
}

pub fn sensor_health(db: &Postgres, name: Option<&str>) -> Result<Vec<SensorHealthRecord>, StorageError> {
    let sql = "SELECT s.name, s.revoked, s.last_contact_ms, s.high_water_seq, s.evicted_total, s.shed_total,
                      s.health_json,
                      (SELECT COALESCE(SUM(rows), 0)::bigint FROM agg_kind a WHERE a.res = 1 AND a.sensor_id = s.id)
               FROM sensors s WHERE ($1::text IS NULL OR s.name = $1) ORDER BY s.name COLLATE \"C\"";
    query(db, sql, &[&name], |row| {
        let health: Option<String> = row.try_get(6)?;
        Ok(SensorHealthRecord {
            name: row.try_get(0)?,
            revoked: row.try_get(1)?,
            last_contact_ms: row.try_get(2)?,
            high_water_seq: row.try_get(3)?,
            evicted_total: row.try_get(4)?,
            shed_total: row.try_get(5)?,
            events_folded: row.try_get(7)?,
            health: health.and_then(|h| serde_json::from_str(&h).ok()),
        })
    })
}
