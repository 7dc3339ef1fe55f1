//! The in-memory tables and the search executor.
//!
//! Each table keeps its rows by id (authoritative) plus two sorted vectors rebuilt lazily after a
//! mutation: `(ts, id)` and `id`. A search turns its predicate into key boxes ([`query::plan`]),
//! walks only the index ranges those boxes cover, tests each candidate with the full predicate, and
//! counts `total` by binary search when the boxes are exact and disjoint (the keyset and id-cursor
//! queries), so serving a page costs O(page + log n) rather than a table scan. A non-key filter
//! ANDed to the cursor (e.g. `status:o`) is answered from an index of the rows passing it, built by
//! one full scan per filter and table version, so a walk with an extra filter stays O(page + log n)
//! per request after the first. Other sort keys or non-key filters under an OR scan the candidates.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::{Map, Value};

use super::data::{self, RType};
use super::query::{self, Expr, KeyBox, Query, SortKey, Target};

/// Where a row's body comes from.
#[derive(Clone, Debug)]
pub enum Body {
    /// Rebuilt from the seed on demand.
    Gen,
    /// Stored JSON bytes (created, changed or inserted rows).
    Stored(Bytes),
}

#[derive(Clone, Debug)]
pub struct RowMeta {
    pub ts: Option<i64>,
    pub body: Body,
}

pub struct Table {
    pub rtype: RType,
    seed: u64,
    rows: BTreeMap<i64, RowMeta>,
    full: Arc<Index>,
    /// Indexes of the rows matching a non-key filter (e.g. `status:o`), keyed by the filter; dropped
    /// on every mutation. They let a keyset walk with an extra filter count `total` by binary search.
    filtered: HashMap<String, Arc<Index>>,
    dirty: bool,
}

/// Sorted keys of a set of rows.
#[derive(Default)]
struct Index {
    by_ts: Vec<(i64, i64)>,
    ids: Vec<i64>,
}

/// Whether an expression reads only the indexed id and timestamp.
fn key_only(e: &Expr) -> bool {
    match e {
        Expr::True | Expr::False => true,
        Expr::And(v) | Expr::Or(v) => v.iter().all(key_only),
        Expr::Not(e) => key_only(e),
        Expr::Atom(a) => matches!(a.target, Target::Id | Target::Ts),
    }
}

/// Splits `e` into the part on indexed keys and the rest (both must hold).
fn split(e: &Expr) -> (Expr, Option<Expr>) {
    if key_only(e) {
        return (e.clone(), None);
    }
    match e {
        Expr::And(v) => {
            let (k, r): (Vec<Expr>, Vec<Expr>) = v.iter().cloned().partition(key_only);
            let k = if k.is_empty() {
                Expr::True
            } else {
                Expr::And(k)
            };
            let r = if r.len() == 1 {
                r.into_iter().next()
            } else {
                Some(Expr::And(r))
            };
            (k, r)
        }
        other => (Expr::True, Some(other.clone())),
    }
}

/// NULL timestamps sort first.
fn ts_key(ts: Option<i64>) -> i64 {
    ts.unwrap_or(i64::MIN)
}

/// Reads an id or timestamp that may be an int or a numeric string.
pub fn json_int(v: Option<&Value>) -> Option<i64> {
    match v? {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

struct LazyRow<'a> {
    id: i64,
    meta: &'a RowMeta,
    table: &'a Table,
    parsed: Option<Map<String, Value>>,
}

impl query::Row for LazyRow<'_> {
    fn id(&self) -> i64 {
        self.id
    }
    fn ts(&self) -> Option<i64> {
        self.meta.ts
    }
    fn key(&mut self, key: &str) -> Option<Value> {
        if self.parsed.is_none() {
            let bytes = self.table.body_bytes(self.id, self.meta);
            self.parsed = Some(serde_json::from_slice(&bytes).unwrap_or_default());
        }
        self.parsed.as_ref().and_then(|m| m.get(key).cloned())
    }
}

/// How rows are ordered for a search.
enum Order {
    Id,
    Ts,
    Other(Vec<SortKey>),
}

/// One search's matching rows (ids, in order) and the full match count.
pub struct Found {
    pub total: i64,
    pub ids: Vec<i64>,
}

impl Table {
    pub fn new(rtype: RType, seed: u64, n: usize, anchor: i64) -> Table {
        let rows = data::generate_index(seed, rtype, n, anchor)
            .into_iter()
            .map(|(id, ts)| {
                (
                    id,
                    RowMeta {
                        ts: Some(ts),
                        body: Body::Gen,
                    },
                )
            })
            .collect();
        let mut t = Table {
            rtype,
            seed,
            rows,
            full: Arc::default(),
            filtered: HashMap::new(),
            dirty: true,
        };
        t.reindex();
        t
    }

    fn reindex(&mut self) {
        if !self.dirty {
            return;
        }
        self.filtered.clear();
        let ids = self.rows.keys().copied().collect();
        let mut by_ts: Vec<(i64, i64)> = self
            .rows
            .iter()
            .map(|(id, m)| (ts_key(m.ts), *id))
            .collect();
        by_ts.sort_unstable();
        self.full = Arc::new(Index { by_ts, ids });
        self.dirty = false;
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn max_id(&self) -> i64 {
        self.rows.keys().next_back().copied().unwrap_or(0)
    }

    pub fn contains(&self, id: i64) -> bool {
        self.rows.contains_key(&id)
    }

    fn body_bytes(&self, id: i64, m: &RowMeta) -> Bytes {
        match &m.body {
            Body::Stored(b) => b.clone(),
            Body::Gen => Bytes::from(data::gen_body(self.seed, self.rtype, id, m.ts.unwrap_or(0))),
        }
    }

    /// The served JSON bytes of a row.
    pub fn bytes(&self, id: i64) -> Option<Bytes> {
        self.rows.get(&id).map(|m| self.body_bytes(id, m))
    }

    pub fn value(&self, id: i64) -> Option<Value> {
        self.bytes(id).and_then(|b| serde_json::from_slice(&b).ok())
    }

    pub fn all_ids(&self) -> Vec<i64> {
        self.rows.keys().copied().collect()
    }

    /// Stores `v` as the row `id`, taking the indexed timestamp from the type's timestamp key.
    pub fn put(&mut self, id: i64, v: &Value) {
        let ts = json_int(v.get(self.rtype.ts_key()));
        let bytes = Bytes::from(serde_json::to_vec(v).unwrap_or_default());
        self.rows.insert(
            id,
            RowMeta {
                ts,
                body: Body::Stored(bytes),
            },
        );
        self.dirty = true;
    }

    /// Stores `bytes` verbatim as row `id` with indexed timestamp `ts` (a row whose body Cerb
    /// would never send: no `id`, a lone surrogate, not an object).
    pub fn put_bytes(&mut self, id: i64, ts: Option<i64>, bytes: Bytes) {
        self.rows.insert(
            id,
            RowMeta {
                ts,
                body: Body::Stored(bytes),
            },
        );
        self.dirty = true;
    }

    pub fn remove(&mut self, id: i64) -> bool {
        let gone = self.rows.remove(&id).is_some();
        self.dirty |= gone;
        gone
    }

    /// The highest id below the maximum that no row uses (a gap left by generation or a purge).
    pub fn free_id_below_max(&self) -> Option<i64> {
        let max = self.max_id();
        let mut prev = max;
        for id in self.rows.keys().rev().skip(1) {
            if *id < prev - 1 {
                return Some(prev - 1);
            }
            prev = *id;
        }
        (prev > 1).then_some(prev - 1)
    }

    /// A fresh generated body for `id` at `ts`, as a JSON object (the base of created rows).
    pub fn template(&self, id: i64, ts: i64) -> Map<String, Value> {
        serde_json::from_slice(&data::gen_body(self.seed ^ 0x5EED, self.rtype, id, ts))
            .unwrap_or_default()
    }

    /// Runs a parsed query. `page` is 0-based; `limit` already resolved.
    pub fn search(&mut self, q: &Query, expr: &Expr, limit: usize, page: usize) -> Found {
        self.reindex();
        let order = match q.sort.as_slice() {
            [] => Order::Id,
            [
                SortKey {
                    target: Target::Id,
                    desc: false,
                },
            ] => Order::Id,
            [
                SortKey {
                    target: Target::Ts,
                    desc: false,
                },
            ]
            | [
                SortKey {
                    target: Target::Ts,
                    desc: false,
                },
                SortKey {
                    target: Target::Id,
                    desc: false,
                },
            ] => Order::Ts,
            other => Order::Other(other.to_vec()),
        };
        let by_ts = !matches!(order, Order::Id);
        if let Order::Other(keys) = order {
            let full = self.full.clone();
            let (ranges, _) = ranges(&full, &query::plan(expr), true);
            return self.search_sorted(&full, expr, &ranges, &keys, limit, page);
        }
        // Walk an index of the rows passing the non-key filters, testing only the key part.
        let (key_expr, residual) = split(expr);
        let index = match residual {
            None => self.full.clone(),
            Some(r) => self.filtered_index(&r),
        };
        let expr = &key_expr;
        let (ranges, exact_total) = ranges(&index, &query::plan(expr), by_ts);
        let key_at = |i: usize| {
            if by_ts {
                index.by_ts[i].1
            } else {
                index.ids[i]
            }
        };
        let walk = |offset: usize, need_total: bool| -> (Vec<i64>, usize) {
            let mut out = Vec::with_capacity(limit.min(1024));
            let mut matched = 0usize;
            for r in &ranges {
                for i in r.clone() {
                    let id = key_at(i);
                    let Some(meta) = self.rows.get(&id) else {
                        continue;
                    };
                    let mut row = LazyRow {
                        id,
                        meta,
                        table: self,
                        parsed: None,
                    };
                    if !expr.eval(&mut row) {
                        continue;
                    }
                    if matched >= offset && out.len() < limit {
                        out.push(id);
                    }
                    matched += 1;
                    if !need_total && out.len() >= limit {
                        return (out, matched);
                    }
                }
            }
            (out, matched)
        };
        let offset = page.saturating_mul(limit);
        let (mut ids, counted) = walk(offset, exact_total.is_none());
        let total = exact_total.unwrap_or(counted);
        if ids.is_empty() && total > 0 {
            // Cerb's page-beyond-end quirk: re-run at page max(floor(total/limit)-1, 0).
            let p = (total / limit).saturating_sub(1);
            ids = walk(p * limit, false).0;
        }
        Found {
            total: total as i64,
            ids,
        }
    }

    /// The index of rows matching a non-key filter, built once per filter and table version.
    fn filtered_index(&mut self, residual: &Expr) -> Arc<Index> {
        let key = format!("{residual:?}");
        if let Some(ix) = self.filtered.get(&key) {
            return ix.clone();
        }
        let mut by_ts = Vec::new();
        for (id, meta) in &self.rows {
            let mut row = LazyRow {
                id: *id,
                meta,
                table: self,
                parsed: None,
            };
            if residual.eval(&mut row) {
                by_ts.push((ts_key(meta.ts), *id));
            }
        }
        let ids = by_ts.iter().map(|k| k.1).collect();
        by_ts.sort_unstable();
        if self.filtered.len() >= 16 {
            self.filtered.clear();
        }
        let ix = Arc::new(Index { by_ts, ids });
        self.filtered.insert(key, ix.clone());
        ix
    }

    /// The general path: collect every match, sort by the requested keys (ties by id), then page.
    fn search_sorted(
        &self,
        index: &Index,
        expr: &Expr,
        ranges: &[Range<usize>],
        keys: &[SortKey],
        limit: usize,
        page: usize,
    ) -> Found {
        let mut hits: Vec<(Vec<Value>, i64)> = Vec::new();
        for r in ranges {
            for i in r.clone() {
                let id = index.by_ts[i].1;
                let Some(meta) = self.rows.get(&id) else {
                    continue;
                };
                let mut row = LazyRow {
                    id,
                    meta,
                    table: self,
                    parsed: None,
                };
                if !expr.eval(&mut row) {
                    continue;
                }
                let vals = keys
                    .iter()
                    .map(|k| match k.target {
                        Target::Id => Value::from(id),
                        Target::Ts => meta.ts.map(Value::from).unwrap_or(Value::Null),
                        Target::Key(name) => query::Row::key(&mut row, name).unwrap_or(Value::Null),
                    })
                    .collect();
                hits.push((vals, id));
            }
        }
        hits.sort_by(|a, b| {
            for (i, k) in keys.iter().enumerate() {
                let o = cmp_json(&a.0[i], &b.0[i]);
                let o = if k.desc { o.reverse() } else { o };
                if o.is_ne() {
                    return o;
                }
            }
            a.1.cmp(&b.1)
        });
        let total = hits.len();
        let mut start = page.saturating_mul(limit);
        if start >= total && total > 0 {
            start = (total / limit).saturating_sub(1) * limit;
        }
        let ids = hits.iter().skip(start).take(limit).map(|h| h.1).collect();
        Found {
            total: total as i64,
            ids,
        }
    }
}

/// Index ranges covering the boxes (sorted, merged) and, when every box is an exact contiguous
/// range and no two overlap, the exact match count.
fn ranges(index: &Index, boxes: &[KeyBox], by_ts: bool) -> (Vec<Range<usize>>, Option<usize>) {
    let mut rs: Vec<(Range<usize>, bool)> = boxes
        .iter()
        .map(|b| {
            if by_ts {
                let lo = index.by_ts.partition_point(|k| *k < (b.ts.0, b.id.0));
                let hi = index.by_ts.partition_point(|k| *k <= (b.ts.1, b.id.1));
                (lo..hi.max(lo), b.exact && (b.ts.0 == b.ts.1 || b.id_full()))
            } else {
                let lo = index.ids.partition_point(|k| *k < b.id.0);
                let hi = index.ids.partition_point(|k| *k <= b.id.1);
                (lo..hi.max(lo), b.exact && b.ts_full())
            }
        })
        .filter(|(r, _)| !r.is_empty())
        .collect();
    rs.sort_by_key(|(r, _)| r.start);
    let disjoint = rs.windows(2).all(|w| w[0].0.end <= w[1].0.start);
    let exact = rs.iter().all(|(_, e)| *e) && disjoint;
    let total = exact.then(|| rs.iter().map(|(r, _)| r.len()).sum());
    let mut merged: Vec<Range<usize>> = Vec::new();
    for (r, _) in rs {
        match merged.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => merged.push(r),
        }
    }
    (merged, total)
}

/// SQL-like ordering: NULL first, numbers (and numeric strings) numerically, then text.
fn cmp_json(a: &Value, b: &Value) -> std::cmp::Ordering {
    fn num(v: &Value) -> Option<f64> {
        match v {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim().parse().ok(),
            Value::Bool(b) => Some(f64::from(u8::from(*b))),
            _ => None,
        }
    }
    match (a, b) {
        (Value::Null, Value::Null) => std::cmp::Ordering::Equal,
        (Value::Null, _) => std::cmp::Ordering::Less,
        (_, Value::Null) => std::cmp::Ordering::Greater,
        _ => match (num(a), num(b)) {
            (Some(x), Some(y)) => x.total_cmp(&y),
            _ => a.to_string().cmp(&b.to_string()),
        },
    }
}
