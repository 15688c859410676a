//! A hierarchical navigable small world graph (Malkov & Yashunin, 2016) over vectors, for
//! approximate nearest-neighbour search by cosine similarity.
//!
//! Layout: the graph walks on compact copies of the vectors, one byte per dimension (8-bit
//! scalar quantisation per dimension over the range the vectors span, rows aligned to cache
//! lines): a 384-dimension vector is 6 cache lines instead of 24, so a walk through a graph
//! larger than the CPU's caches waits on memory a quarter as long. The query stays in f32
//! (asymmetric distance), and the best candidates are rescored exactly against the caller's
//! f32 vectors before the `k` best are returned, so scores are exact cosines and the order
//! among the results is the exact one. The graph keeps no f32 copy of the vectors.
//!
//! Each node's neighbours per layer are `u32` ids: layer 0 flat (`1 + 2m` slots a node, a
//! count then the neighbours), upper layers `m` in small vectors. Neighbours are chosen with
//! the paper's heuristic (a candidate is kept only if it is closer to the new node than to
//! every neighbour already kept), which keeps the graph navigable on clustered data.

use std::cell::RefCell;
use std::cmp::Ordering;
use std::collections::BinaryHeap;

use crate::index::dot;
use crate::simd::{dot_codes, prefetch};

/// Build and search settings.
#[derive(Debug, Clone, Copy)]
pub struct Params {
    /// Neighbours per node on upper layers (layer 0 keeps twice as many).
    pub m: usize,
    /// Candidate list size while inserting.
    pub ef_construction: usize,
    /// Candidate list size while searching (at least `k`).
    pub ef_search: usize,
    /// Candidates of a search rescored exactly (at least `k`, at most `ef_search`).
    pub rerank: usize,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            m: 16,
            ef_construction: 100,
            ef_search: 64,
            rerank: 40,
        }
    }
}

/// A scored node: ordered by similarity.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Scored {
    sim: f32,
    id: u32,
}

impl Eq for Scored {}

impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Scored {
    fn cmp(&self, other: &Self) -> Ordering {
        self.sim
            .total_cmp(&other.sim)
            .then_with(|| other.id.cmp(&self.id))
    }
}

/// Min-ordering wrapper (the worst result on top).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Worst(std::cmp::Reverse<Scored>);

thread_local! {
    /// Visit marks reused across searches: `marks[i] == stamp` means visited in this search.
    static VISITED: RefCell<(Vec<u32>, u32)> = const { RefCell::new((Vec::new(), 0)) };
}

/// 8-bit codes per dimension: `x ≈ lo + step · code`.
#[derive(Debug, Clone)]
struct Quantiser {
    lo: Vec<f32>,
    step: Vec<f32>,
}

/// A query against codes: `sim(x) = base + Σ wᵢ·codeᵢ` equals `q · decode(x)`.
struct Query {
    w: Vec<f32>,
    base: f32,
}

impl Query {
    fn empty() -> Self {
        Self {
            w: Vec::new(),
            base: 0.0,
        }
    }
}

impl Quantiser {
    /// Codes spanning `[-1, 1]` on every dimension (any unit vector fits).
    fn unit(dims: usize) -> Self {
        Self {
            lo: vec![-1.0; dims],
            step: vec![2.0 / 255.0; dims],
        }
    }

    /// Codes spanning the range of the given unit vectors on each dimension.
    fn fit<'a>(dims: usize, rows: impl Iterator<Item = &'a [f32]>) -> Self {
        let mut lo = vec![f32::INFINITY; dims];
        let mut hi = vec![f32::NEG_INFINITY; dims];
        let mut any = false;
        for row in rows.filter(|r| r.len() == dims) {
            any = true;
            let scale = inverse_norm(row);
            for ((l, h), x) in lo.iter_mut().zip(&mut hi).zip(row) {
                let x = x * scale;
                *l = l.min(x);
                *h = h.max(x);
            }
        }
        if !any {
            return Self::unit(dims);
        }
        let step = lo.iter().zip(&hi).map(|(l, h)| (h - l) / 255.0).collect();
        Self { lo, step }
    }

    /// The codes of `v` (a unit vector; values outside the range are clamped).
    fn encode(&self, v: &[f32], out: &mut [u8]) {
        for (((o, x), lo), step) in out.iter_mut().zip(v).zip(&self.lo).zip(&self.step) {
            *o = if *step > 0.0 {
                // In 0..=255 after the clamp, so the cast is exact.
                ((x - lo) / step).round().clamp(0.0, 255.0) as u8
            } else {
                0
            };
        }
    }

    #[cfg(test)]
    fn decode(&self, codes: &[u8]) -> Vec<f32> {
        codes
            .iter()
            .zip(&self.lo)
            .zip(&self.step)
            .map(|((c, lo), step)| lo + step * f32::from(*c))
            .collect()
    }

    fn query(&self, q: &[f32]) -> Query {
        Query {
            w: q.iter().zip(&self.step).map(|(x, s)| x * s).collect(),
            base: dot(q, &self.lo),
        }
    }
}

/// `1 / |v|` (zero for a zero vector).
fn inverse_norm(v: &[f32]) -> f32 {
    let norm = dot(v, v).sqrt();
    if norm > f32::EPSILON { 1.0 / norm } else { 0.0 }
}

/// Cache line size: code rows start on one.
const LINE: usize = 64;

/// The graph.
#[derive(Debug, Clone)]
pub struct Hnsw {
    dims: usize,
    params: Params,
    quantiser: Quantiser,
    /// Code rows of `row_bytes` each, the first at `codes_at` (a cache-line boundary).
    codes: Vec<u8>,
    codes_at: usize,
    row_bytes: usize,
    /// `1 / |v|` of each inserted vector (exact rescoring gives cosines).
    inverse_norms: Vec<f32>,
    /// Layer 0, flat for locality: per node `1 + 2m` slots, a count then the neighbours.
    level0: Vec<u32>,
    /// Layers above 0: `upper[node][layer - 1]`.
    upper: Vec<Vec<Vec<u32>>>,
    entry: Option<u32>,
    top: usize,
    /// xorshift state for the level draw (deterministic builds).
    rng: u64,
}

impl Hnsw {
    /// An empty graph whose codes span `[-1, 1]` on every dimension; [`Hnsw::build`] fits
    /// them to the vectors instead (finer codes, better recall).
    pub fn new(dims: usize, params: Params) -> Self {
        Self::with_quantiser(dims, params, Quantiser::unit(dims))
    }

    fn with_quantiser(dims: usize, params: Params, quantiser: Quantiser) -> Self {
        let m = params.m.max(2);
        Self {
            dims,
            params: Params {
                m,
                ef_construction: params.ef_construction.max(m),
                ef_search: params.ef_search.max(1),
                rerank: params.rerank.max(1),
            },
            quantiser,
            codes: Vec::new(),
            codes_at: 0,
            row_bytes: dims.div_ceil(LINE).max(1) * LINE,
            inverse_norms: Vec::new(),
            level0: Vec::new(),
            upper: Vec::new(),
            entry: None,
            top: 0,
            rng: 0x9E37_79B9_7F4A_7C15,
        }
    }

    /// A graph of `rows` (ids `0..rows.len()` in order), its codes fitted to their range.
    pub fn build(dims: usize, params: Params, rows: &[&[f32]]) -> Self {
        let quantiser = Quantiser::fit(dims, rows.iter().copied());
        let mut h = Self::with_quantiser(dims, params, quantiser);
        h.reserve(rows.len());
        for row in rows {
            h.insert(row);
        }
        h
    }

    pub fn len(&self) -> usize {
        self.upper.len()
    }

    pub fn is_empty(&self) -> bool {
        self.upper.is_empty()
    }

    /// Room for `more` nodes without moving the codes again.
    fn reserve(&mut self, more: usize) {
        let needed = self.codes_at + (self.len() + more) * self.row_bytes;
        if needed <= self.codes.capacity() {
            return;
        }
        // A new buffer (at least doubled, so that inserting one by one stays linear), the rows
        // moved to its first cache-line boundary.
        let mut codes: Vec<u8> = Vec::with_capacity(needed.max(2 * self.codes.capacity()) + LINE);
        let at = codes.as_ptr().align_offset(LINE).min(LINE);
        codes.resize(at, 0);
        codes.extend_from_slice(&self.codes[self.codes_at..]);
        self.codes = codes;
        self.codes_at = at;
        self.level0.reserve(more * self.stride());
        self.inverse_norms.reserve(more);
        self.upper.reserve(more);
    }

    fn stride(&self) -> usize {
        1 + 2 * self.params.m
    }

    fn neighbours(&self, id: u32, layer: usize) -> &[u32] {
        if layer == 0 {
            let at = id as usize * self.stride();
            let n = self.level0[at] as usize;
            &self.level0[at + 1..at + 1 + n]
        } else {
            &self.upper[id as usize][layer - 1]
        }
    }

    fn set_neighbours(&mut self, id: u32, layer: usize, list: &[u32]) {
        if layer == 0 {
            let stride = self.stride();
            let at = id as usize * stride;
            let n = list.len().min(stride - 1);
            self.level0[at] = u32::try_from(n).unwrap_or(0);
            self.level0[at + 1..at + 1 + n].copy_from_slice(&list[..n]);
        } else {
            self.upper[id as usize][layer - 1] = list.to_vec();
        }
    }

    /// Change the search breadth (recall against speed).
    pub fn set_ef_search(&mut self, ef: usize) {
        self.params.ef_search = ef.max(1);
    }

    /// The code row of `id` (all `row_bytes`, padding included).
    fn row(&self, id: u32) -> &[u8] {
        let at = self.codes_at + id as usize * self.row_bytes;
        &self.codes[at..at + self.row_bytes]
    }

    fn sim(&self, q: &Query, id: u32) -> f32 {
        q.base + dot_codes(&q.w, self.row(id))
    }

    /// The query of a stored node's decoded vector (for the neighbour heuristic), written
    /// into `q` (no allocation: the build calls this for every candidate it weighs).
    fn node_query(&self, id: u32, q: &mut Query) {
        let codes = &self.row(id)[..self.dims];
        q.w.resize(self.dims, 0.0);
        let mut base = 0.0;
        for (((w, c), lo), step) in
            q.w.iter_mut()
                .zip(codes)
                .zip(&self.quantiser.lo)
                .zip(&self.quantiser.step)
        {
            let x = lo + step * f32::from(*c);
            *w = x * step;
            base += x * lo;
        }
        q.base = base;
    }

    fn draw_level(&mut self) -> usize {
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let r = self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D);
        let u = ((r >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        let ml = 1.0 / (self.params.m as f64).ln();
        ((-u.ln() * ml).floor() as usize).min(16)
    }

    /// Add a vector; returns its id (ids are consecutive from 0). Vectors of the wrong length
    /// are stored as zeros and never found.
    pub fn insert(&mut self, v: &[f32]) -> u32 {
        let id = u32::try_from(self.upper.len()).unwrap_or(u32::MAX);
        self.reserve(1);
        let unit: Vec<f32> = if v.len() == self.dims {
            let scale = inverse_norm(v);
            self.inverse_norms.push(scale);
            v.iter().map(|x| x * scale).collect()
        } else {
            self.inverse_norms.push(0.0);
            vec![0.0; self.dims]
        };
        let mut row = vec![0u8; self.row_bytes];
        self.quantiser.encode(&unit, &mut row);
        self.codes.extend_from_slice(&row);
        let level = self.draw_level();
        self.upper.push(vec![Vec::new(); level]);
        let stride = self.stride();
        self.level0.extend(std::iter::repeat_n(0, stride));
        let Some(mut ep) = self.entry else {
            self.entry = Some(id);
            self.top = level;
            return id;
        };
        let q = self.quantiser.query(&unit);
        // Greedy descent through the layers above the new node's.
        let mut layer = self.top;
        while layer > level {
            ep = self.greedy(&q, ep, layer);
            layer -= 1;
        }
        let mut eps = vec![Scored {
            sim: self.sim(&q, ep),
            id: ep,
        }];
        for layer in (0..=level.min(self.top)).rev() {
            let found = self.search_layer(&q, &eps, self.params.ef_construction, layer);
            let max = if layer == 0 {
                2 * self.params.m
            } else {
                self.params.m
            };
            let chosen = self.select(&found, max);
            let ids: Vec<u32> = chosen.iter().map(|s| s.id).collect();
            self.set_neighbours(id, layer, &ids);
            for s in &chosen {
                self.connect(s.id, id, layer, max);
            }
            eps = found;
        }
        if level > self.top {
            self.top = level;
            self.entry = Some(id);
        }
        id
    }

    /// Add `new` to `node`'s neighbours at `layer`, pruning with the heuristic past `max`.
    fn connect(&mut self, node: u32, new: u32, layer: usize, max: usize) {
        let mut list = self.neighbours(node, layer).to_vec();
        if list.contains(&new) {
            return;
        }
        list.push(new);
        if list.len() <= max {
            self.set_neighbours(node, layer, &list);
            return;
        }
        let mut base = Query::empty();
        self.node_query(node, &mut base);
        let mut cands: Vec<Scored> = list
            .iter()
            .map(|&n| Scored {
                sim: self.sim(&base, n),
                id: n,
            })
            .collect();
        cands.sort_by(|a, b| b.cmp(a));
        let kept: Vec<u32> = self.select(&cands, max).iter().map(|s| s.id).collect();
        self.set_neighbours(node, layer, &kept);
    }

    /// The heuristic: from candidates (best first), keep those closer to the base than to any
    /// kept one; fill up with the best of the rest.
    fn select(&self, cands: &[Scored], max: usize) -> Vec<Scored> {
        let mut kept: Vec<Scored> = Vec::with_capacity(max);
        let mut skipped = Vec::new();
        let mut cq = Query::empty();
        for &c in cands {
            if kept.len() >= max {
                break;
            }
            self.node_query(c.id, &mut cq);
            if kept.iter().all(|k| self.sim(&cq, k.id) < c.sim) {
                kept.push(c);
            } else {
                skipped.push(c);
            }
        }
        for c in skipped {
            if kept.len() >= max {
                break;
            }
            kept.push(c);
        }
        kept
    }

    fn greedy(&self, q: &Query, mut ep: u32, layer: usize) -> u32 {
        let mut best = self.sim(q, ep);
        loop {
            let mut moved = false;
            for &n in self.neighbours(ep, layer) {
                let s = self.sim(q, n);
                if s > best {
                    best = s;
                    ep = n;
                    moved = true;
                }
            }
            if !moved {
                return ep;
            }
        }
    }

    /// Beam search on one layer from `eps`; the `ef` best found, best first.
    fn search_layer(&self, q: &Query, eps: &[Scored], ef: usize, layer: usize) -> Vec<Scored> {
        VISITED.with(|cell| {
            let mut guard = cell.borrow_mut();
            let (marks, stamp) = &mut *guard;
            if marks.len() < self.len() {
                marks.resize(self.len(), 0);
            }
            *stamp = stamp.wrapping_add(1);
            if *stamp == 0 {
                marks.iter_mut().for_each(|m| *m = 0);
                *stamp = 1;
            }
            let stamp = *stamp;
            let mut candidates: BinaryHeap<Scored> = BinaryHeap::new();
            let mut results: BinaryHeap<Worst> = BinaryHeap::new();
            for &e in eps {
                marks[e.id as usize] = stamp;
                candidates.push(e);
                results.push(Worst(std::cmp::Reverse(e)));
            }
            while results.len() > ef {
                results.pop();
            }
            let mut fresh: Vec<u32> = Vec::with_capacity(2 * self.params.m);
            while let Some(c) = candidates.pop() {
                let worst = results.peek().map_or(f32::MIN, |w| w.0.0.sim);
                if c.sim < worst && results.len() >= ef {
                    break;
                }
                // The unvisited neighbours first, their codes fetched while the first ones
                // are scored.
                fresh.clear();
                for &n in self.neighbours(c.id, layer) {
                    let slot = &mut marks[n as usize];
                    if *slot != stamp {
                        *slot = stamp;
                        fresh.push(n);
                        prefetch(&self.row(n)[..self.dims]);
                    }
                }
                for &n in &fresh {
                    let s = Scored {
                        sim: self.sim(q, n),
                        id: n,
                    };
                    let worst = results.peek().map_or(f32::MIN, |w| w.0.0.sim);
                    if results.len() < ef || s.sim > worst {
                        candidates.push(s);
                        results.push(Worst(std::cmp::Reverse(s)));
                        if results.len() > ef {
                            results.pop();
                        }
                    }
                }
            }
            let mut out: Vec<Scored> = results.into_iter().map(|w| w.0.0).collect();
            out.sort_by(|a, b| b.cmp(a));
            out
        })
    }

    /// The `k` nearest ids to `query` with their cosine, best first. `vector(id)` gives the
    /// f32 vector inserted as `id` (the best candidates are rescored with it); `keep` filters
    /// ids (the search widens its beam until `k` pass or the graph is exhausted).
    pub fn search<'v>(
        &self,
        query: &[f32],
        k: usize,
        keep: impl Fn(u32) -> bool,
        vector: impl Fn(u32) -> &'v [f32],
    ) -> Vec<(u32, f32)> {
        let Some(mut ep) = self.entry else {
            return Vec::new();
        };
        if query.len() != self.dims || k == 0 {
            return Vec::new();
        }
        let scale = inverse_norm(query);
        let unit: Vec<f32> = query.iter().map(|x| x * scale).collect();
        let q = self.quantiser.query(&unit);
        for layer in (1..=self.top).rev() {
            ep = self.greedy(&q, ep, layer);
        }
        let start = [Scored {
            sim: self.sim(&q, ep),
            id: ep,
        }];
        let mut ef = self.params.ef_search.max(k);
        loop {
            let found = self.search_layer(&q, &start, ef, 0);
            let exhausted = found.len() < ef;
            let rescored = self.params.rerank.max(k).min(ef.max(k));
            let mut hits: Vec<(u32, f32)> = found
                .into_iter()
                .filter(|s| keep(s.id))
                .take(rescored)
                .map(|s| {
                    let norm = self
                        .inverse_norms
                        .get(s.id as usize)
                        .copied()
                        .unwrap_or(0.0);
                    (s.id, dot(&unit, vector(s.id)) * norm)
                })
                .collect();
            hits.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            hits.truncate(k);
            if hits.len() >= k || exhausted || ef >= self.len() {
                return hits;
            }
            ef = (ef * 4).min(self.len());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic pseudo-random unit vectors.
    fn vectors(n: usize, dims: usize, seed: u64) -> Vec<Vec<f32>> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                (0..dims)
                    .map(|_| {
                        s ^= s << 13;
                        s ^= s >> 7;
                        s ^= s << 17;
                        (s % 2000) as f32 / 1000.0 - 1.0
                    })
                    .collect()
            })
            .collect()
    }

    fn exact(data: &[Vec<f32>], q: &[f32], k: usize) -> Vec<u32> {
        let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
        let mut s: Vec<(u32, f32)> = data
            .iter()
            .enumerate()
            .map(|(i, v)| (i as u32, dot(v, q) / (norm(v) * norm(q))))
            .collect();
        s.sort_by(|a, b| b.1.total_cmp(&a.1));
        s.into_iter().take(k).map(|x| x.0).collect()
    }

    fn rows(data: &[Vec<f32>]) -> Vec<&[f32]> {
        data.iter().map(Vec::as_slice).collect()
    }

    fn recall(h: &Hnsw, data: &[Vec<f32>], queries: &[Vec<f32>]) -> f64 {
        let mut found = 0;
        for q in queries {
            let truth = exact(data, q, 10);
            let got = h.search(q, 10, |_| true, |id| &data[id as usize]);
            found += got.iter().filter(|(id, _)| truth.contains(id)).count();
        }
        found as f64 / (queries.len() * 10) as f64
    }

    #[test]
    fn recall_at_10_is_high_on_random_vectors() {
        let data = vectors(1500, 32, 7);
        let queries = vectors(50, 32, 99);
        let fitted = Hnsw::build(32, Params::default(), &rows(&data));
        let r = recall(&fitted, &data, &queries);
        assert!(r >= 0.95, "fitted codes: recall@10 = {r}");
        // Codes over [-1, 1], vectors inserted one by one.
        let mut h = Hnsw::new(32, Params::default());
        for v in &data {
            h.insert(v);
        }
        let r = recall(&h, &data, &queries);
        assert!(r >= 0.95, "unit codes: recall@10 = {r}");
    }

    #[test]
    fn scores_are_exact_cosines_best_first() {
        let data = vectors(800, 24, 5);
        let h = Hnsw::build(24, Params::default(), &rows(&data));
        let q = &vectors(1, 24, 42)[0];
        let got = h.search(q, 10, |_| true, |id| &data[id as usize]);
        assert_eq!(got.len(), 10);
        let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
        for (id, score) in &got {
            let v = &data[*id as usize];
            let cosine = dot(v, q) / (norm(v) * norm(q));
            assert!((score - cosine).abs() < 1e-5, "{score} vs {cosine}");
        }
        assert!(got.windows(2).all(|w| w[0].1 >= w[1].1));
    }

    #[test]
    fn codes_decode_within_half_a_step() {
        let data = vectors(200, 16, 11);
        let unit: Vec<Vec<f32>> = data
            .iter()
            .map(|v| v.iter().map(|x| x * inverse_norm(v)).collect())
            .collect();
        let quantiser = Quantiser::fit(16, rows(&data).into_iter());
        let mut codes = vec![0u8; 16];
        for v in &unit {
            quantiser.encode(v, &mut codes);
            let back = quantiser.decode(&codes);
            for ((x, y), step) in v.iter().zip(&back).zip(&quantiser.step) {
                assert!((x - y).abs() <= step / 2.0 + 1e-6, "{x} decoded as {y}");
            }
        }
        // A constant dimension codes to zero and decodes exactly.
        let flat = Quantiser::fit(2, [[1.0f32, 0.0].as_slice(), &[2.0, 0.0]].into_iter());
        flat.encode(&[1.0, 0.0], &mut codes[..2]);
        assert_eq!(flat.decode(&codes[..2]), vec![1.0, 0.0]);
    }

    #[test]
    fn a_vector_finds_itself_and_filters_hold() {
        let data = vectors(500, 16, 3);
        let h = Hnsw::build(16, Params::default(), &rows(&data));
        let all = |id: u32| data[id as usize].as_slice();
        for (i, v) in data.iter().enumerate().step_by(50) {
            assert_eq!(h.search(v, 1, |_| true, all)[0].0, i as u32);
        }
        // Only even ids: every result passes, and there are k of them.
        let got = h.search(&data[1], 10, |id| id % 2 == 0, all);
        assert_eq!(got.len(), 10);
        assert!(got.iter().all(|(id, _)| id % 2 == 0));
        // A filter almost nothing passes still finds it.
        let got = h.search(&data[1], 3, |id| id == 333, all);
        assert_eq!(got.iter().map(|x| x.0).collect::<Vec<_>>(), vec![333]);
    }

    #[test]
    fn empty_and_wrong_sized_queries_find_nothing() {
        let data: Vec<Vec<f32>> = vec![vec![1.0, 0.0, 0.0, 0.0]];
        let all = |id: u32| data[id as usize].as_slice();
        let mut h = Hnsw::new(4, Params::default());
        assert!(h.search(&[1.0, 0.0, 0.0, 0.0], 3, |_| true, all).is_empty());
        h.insert(&data[0]);
        assert!(h.search(&[1.0, 0.0], 3, |_| true, all).is_empty());
        let got = h.search(&[2.0, 0.0, 0.0, 0.0], 3, |_| true, all);
        assert_eq!(got.len(), 1);
        assert!((got[0].1 - 1.0).abs() < 1e-6);
    }
}
