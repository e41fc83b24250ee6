//! Summing aggregate rows in Rust: [`IdTable`] (values by interned id), the integer hasher for
//! pair keys, the source scan shared by totals, top sources and countries, and [`top_n`].
//!
//! WHY not `GROUP BY` in SQL: a 30-day range at ten million events reads ~600,000 source rows
//! and ~800,000 credential rows. Summing them in vectors indexed by the interned ids, and
//! selecting a top list's cut instead of sorting every candidate, is what keeps the full report
//! near half a second (`docs/benchmarks.md`).

use super::range::{Query, Resolved};
use super::AnalyticsError;
use crate::labels::Class;
use crate::storage::{AggRange, SrcAgg, Storage};
use std::collections::HashMap;

/// Per-address sums over a resolved range, read from the source aggregates in one pass.
#[derive(Clone, Copy)]
pub(super) struct SrcSum {
    pub cc: i64,
    pub attempts: i64,
    pub logins: i64,
    pub events: i64,
    pub first: i64,
    pub last: i64,
}

/// Largest id looked up through [`IdTable`]'s vector index; larger ids (not expected: ids are
/// address and string ids, one per address or string ever seen) go to a map. The index costs 4
/// bytes per id up to the largest id seen, so at most 16 MiB.
pub(super) const DENSE_IDS: i64 = 1 << 22;

/// Values by interned id (an address or string id). A 30-day query folds ~1 M aggregate rows
/// into ~50,000 addresses or ~200,000 strings; ids are small dense integers, so a vector index
/// (id → position) finds each without hashing, and the values themselves stay compact.
pub(super) struct IdTable<T> {
    /// Position + 1 in `entries` by id; 0 = not seen.
    index: Vec<u32>,
    sparse: HashMap<i64, usize, IdHash>,
    pub entries: Vec<(i64, T)>,
}

impl<T> Default for IdTable<T> {
    fn default() -> Self {
        IdTable { index: Vec::new(), sparse: HashMap::default(), entries: Vec::new() }
    }
}

impl<T> IdTable<T> {
    fn position(&self, id: i64) -> Option<usize> {
        if (0..DENSE_IDS).contains(&id) {
            self.index.get(id as usize).and_then(|&p| (p as usize).checked_sub(1))
        } else {
            self.sparse.get(&id).copied()
        }
    }

    /// The value for `id`, created by `new` if this is its first row.
    pub fn slot(&mut self, id: i64, new: impl FnOnce() -> T) -> &mut T {
        let pos = match self.position(id) {
            Some(p) => p,
            None => {
                let p = self.entries.len();
                self.entries.push((id, new()));
                if (0..DENSE_IDS).contains(&id) {
                    let i = id as usize;
                    if i >= self.index.len() {
                        self.index.resize((i + 1).max(self.index.len() * 2).min(DENSE_IDS as usize), 0);
                    }
                    // Positions fit: at most one entry per id below DENSE_IDS (2^22).
                    self.index[i] = (p + 1) as u32;
                } else {
                    self.sparse.insert(id, p);
                }
                p
            }
        };
        &mut self.entries[pos].1
    }

    pub fn get(&self, id: i64) -> Option<&T> {
        self.position(id).map(|p| &self.entries[p].1)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = (i64, &T)> {
        self.entries.iter().map(|(id, v)| (*id, v))
    }
}

/// [`SrcSum`]s by address id.
pub(super) type SrcMap = IdTable<SrcSum>;

/// Hasher for integer keys (the Fx multiply-rotate step): the credential scan folds ~1 M rows
/// into maps keyed by interned ids, where SipHash was a visible share of the time. Keys come
/// from the database's own ids, not from attackers, so flooding resistance is not needed.
#[derive(Default, Clone, Copy)]
pub(super) struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn write_i64(&mut self, n: i64) {
        self.write_u64(n as u64);
    }
}

pub(super) type IdHash = std::hash::BuildHasherDefault<IdHasher>;

/// Sums by string id (user names, passwords).
pub(super) type Counts = IdTable<i64>;

/// One pass over the source aggregates of `r`, summed per address, without the addresses of
/// the label classes `q` leaves out (an address is one of them if the class rows of the range
/// have it).
pub(super) fn scan_sources(db: &dyn Storage, r: &Resolved, q: &Query) -> Result<SrcMap, AnalyticsError> {
    let all = scan_agg(db, &r.agg())?;
    let mut out: Option<IdTable<()>> = None;
    for c in q.include.excluded() {
        db.scan_sources(&r.class_agg(c), &mut |row: SrcAgg| {
            out.get_or_insert_with(IdTable::default).slot(row.ip_id, || ());
        })?;
    }
    let Some(out) = out else { return Ok(all) };
    let mut m = SrcMap::default();
    for (id, v) in all.iter() {
        if out.get(id).is_none() {
            *m.slot(id, || *v) = *v;
        }
    }
    Ok(m)
}

/// The addresses of one label class in `r`, summed per address.
pub(super) fn scan_class(db: &dyn Storage, r: &Resolved, c: Class) -> Result<SrcMap, AnalyticsError> {
    scan_agg(db, &r.class_agg(c))
}

/// One pass over the source aggregate rows of `a`, summed per address.
fn scan_agg(db: &dyn Storage, a: &AggRange) -> Result<SrcMap, AnalyticsError> {
    let mut m = SrcMap::default();
    db.scan_sources(a, &mut |row: SrcAgg| {
        let cc = row.cc;
        let e = m.slot(row.ip_id, || SrcSum { cc, attempts: 0, logins: 0, events: 0, first: i64::MAX, last: i64::MIN });
        e.attempts += row.attempts;
        e.logins += row.logins;
        e.events += row.events;
        e.first = e.first.min(row.first_ms);
        e.last = e.last.max(row.last_ms);
    })?;
    Ok(m)
}

/// The `n` best items by `score` (higher first), ties broken by `name` — names are resolved
/// only for the candidates that can make the cut.
pub(super) fn top_n<K: Copy, S: Ord + Copy>(
    mut items: Vec<(K, S)>,
    n: usize,
    mut name: impl FnMut(K) -> Result<String, AnalyticsError>,
) -> Result<Vec<(K, S, String)>, AnalyticsError> {
    // The n-th best score is the cut (a selection, not a sort: the credential pairs of 30 days
    // are ~200,000 items); everything scoring at least the cut is a candidate.
    if n > 0 && items.len() > n {
        let cut = items.select_nth_unstable_by_key(n - 1, |x| std::cmp::Reverse(x.1)).1 .1;
        items.retain(|x| x.1 >= cut);
    } else if n == 0 && !items.is_empty() {
        let best = items.iter().map(|x| x.1).max();
        items.retain(|x| Some(x.1) >= best);
    }
    let mut v = items.into_iter().map(|(k, s)| Ok((k, s, name(k)?))).collect::<Result<Vec<_>, AnalyticsError>>()?;
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.2.cmp(&b.2)));
    v.truncate(n);
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_table_sums_dense_and_sparse_ids_alike() {
        let mut t: IdTable<i64> = IdTable::default();
        for (id, n) in [(3, 1), (-1, 2), (DENSE_IDS, 4), (3, 8), (0, 16), (DENSE_IDS, 32), (1 << 40, 64)] {
            *t.slot(id, || 0) += n;
        }
        assert_eq!(t.len(), 5);
        assert_eq!(t.get(3), Some(&9));
        assert_eq!(t.get(-1), Some(&2));
        assert_eq!(t.get(DENSE_IDS), Some(&36));
        assert_eq!(t.get(0), Some(&16));
        assert_eq!(t.get(1 << 40), Some(&64));
        assert_eq!(t.get(1), None);
        assert_eq!(t.get(5_000_000), None);
        let mut all: Vec<(i64, i64)> = t.iter().map(|(k, v)| (k, *v)).collect();
        all.sort_unstable();
        assert_eq!(all, vec![(-1, 2), (0, 16), (3, 9), (DENSE_IDS, 36), (1 << 40, 64)]);
    }
}
