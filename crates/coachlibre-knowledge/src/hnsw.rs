//! A hierarchical navigable small world graph (Malkov & Yashunin, 2016) over normalised
//! vectors, for approximate nearest-neighbour search by cosine similarity (inner product of
//! unit vectors).
//!
//! Layout: the vectors in one contiguous `Vec<f32>`; each node's neighbours per layer in
//! `Vec<u32>`; layer 0 keeps up to `2 * m` neighbours, upper layers `m`. Neighbours are chosen
//! with the paper's heuristic (a candidate is kept only if it is closer to the new node than
//! to every neighbour already kept), which keeps the graph navigable on clustered data.

use std::cell::RefCell;
use std::cmp::Ordering;
use std::collections::BinaryHeap;

use crate::index::{dot, normalised};

/// Build and search settings.
#[derive(Debug, Clone, Copy)]
pub struct Params {
    /// Neighbours per node on upper layers (layer 0 keeps twice as many).
    pub m: usize,
    /// Candidate list size while inserting.
    pub ef_construction: usize,
    /// Candidate list size while searching (at least `k`).
    pub ef_search: usize,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            m: 16,
            ef_construction: 100,
            ef_search: 64,
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

/// The graph.
#[derive(Debug, Clone)]
pub struct Hnsw {
    dims: usize,
    params: Params,
    vectors: Vec<f32>,
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
    pub fn new(dims: usize, params: Params) -> Self {
        Self {
            dims,
            params: Params {
                m: params.m.max(2),
                ef_construction: params.ef_construction.max(params.m),
                ef_search: params.ef_search.max(1),
            },
            vectors: Vec::new(),
            level0: Vec::new(),
            upper: Vec::new(),
            entry: None,
            top: 0,
            rng: 0x9E37_79B9_7F4A_7C15,
        }
    }

    pub fn len(&self) -> usize {
        self.upper.len()
    }

    pub fn is_empty(&self) -> bool {
        self.upper.is_empty()
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

    fn vector(&self, id: u32) -> &[f32] {
        let i = id as usize * self.dims;
        &self.vectors[i..i + self.dims]
    }

    fn sim(&self, q: &[f32], id: u32) -> f32 {
        dot(q, self.vector(id))
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

    /// Add a vector (normalised here); returns its id (ids are consecutive from 0). Vectors of
    /// the wrong length are stored as zeros and never found.
    pub fn insert(&mut self, v: &[f32]) -> u32 {
        let id = u32::try_from(self.upper.len()).unwrap_or(u32::MAX);
        if v.len() == self.dims {
            self.vectors.extend(normalised(v));
        } else {
            self.vectors.extend(std::iter::repeat_n(0.0, self.dims));
        }
        let level = self.draw_level();
        self.upper.push(vec![Vec::new(); level]);
        let stride = self.stride();
        self.level0.extend(std::iter::repeat_n(0, stride));
        let Some(mut ep) = self.entry else {
            self.entry = Some(id);
            self.top = level;
            return id;
        };
        let q: Vec<f32> = self.vector(id).to_vec();
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
        let base: Vec<f32> = self.vector(node).to_vec();
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
        for &c in cands {
            if kept.len() >= max {
                break;
            }
            let cv = self.vector(c.id);
            if kept.iter().all(|k| dot(cv, self.vector(k.id)) < c.sim) {
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

    fn greedy(&self, q: &[f32], mut ep: u32, layer: usize) -> u32 {
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
    fn search_layer(&self, q: &[f32], eps: &[Scored], ef: usize, layer: usize) -> Vec<Scored> {
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
            while let Some(c) = candidates.pop() {
                let worst = results.peek().map_or(f32::MIN, |w| w.0.0.sim);
                if c.sim < worst && results.len() >= ef {
                    break;
                }
                for &n in self.neighbours(c.id, layer) {
                    let slot = &mut marks[n as usize];
                    if *slot == stamp {
                        continue;
                    }
                    *slot = stamp;
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

    /// The `k` nearest ids to `query` (normalised here) with their cosine, best first; `keep`
    /// filters ids (the search widens its beam until `k` pass or the graph is exhausted).
    pub fn search(&self, query: &[f32], k: usize, keep: impl Fn(u32) -> bool) -> Vec<(u32, f32)> {
        let Some(mut ep) = self.entry else {
            return Vec::new();
        };
        if query.len() != self.dims || k == 0 {
            return Vec::new();
        }
        let q = normalised(query);
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
            let hits: Vec<(u32, f32)> = found
                .into_iter()
                .filter(|s| keep(s.id))
                .take(k)
                .map(|s| (s.id, s.sim))
                .collect();
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

    #[test]
    fn recall_at_10_is_high_on_random_vectors() {
        let data = vectors(1500, 32, 7);
        let mut h = Hnsw::new(32, Params::default());
        for v in &data {
            h.insert(v);
        }
        let queries = vectors(50, 32, 99);
        let mut found = 0;
        for q in &queries {
            let truth = exact(&data, q, 10);
            let got: Vec<u32> = h.search(q, 10, |_| true).into_iter().map(|x| x.0).collect();
            found += got.iter().filter(|id| truth.contains(id)).count();
        }
        let recall = found as f64 / (queries.len() * 10) as f64;
        assert!(recall >= 0.95, "recall@10 = {recall}");
    }

    #[test]
    fn a_vector_finds_itself_and_filters_hold() {
        let data = vectors(500, 16, 3);
        let mut h = Hnsw::new(16, Params::default());
        for v in &data {
            h.insert(v);
        }
        for (i, v) in data.iter().enumerate().step_by(50) {
            assert_eq!(h.search(v, 1, |_| true)[0].0, i as u32);
        }
        // Only even ids: every result passes, and there are k of them.
        let got = h.search(&data[1], 10, |id| id % 2 == 0);
        assert_eq!(got.len(), 10);
        assert!(got.iter().all(|(id, _)| id % 2 == 0));
        // A filter almost nothing passes still finds it.
        let got = h.search(&data[1], 3, |id| id == 333);
        assert_eq!(got.iter().map(|x| x.0).collect::<Vec<_>>(), vec![333]);
    }

    #[test]
    fn empty_and_wrong_sized_queries_find_nothing() {
        let mut h = Hnsw::new(4, Params::default());
        assert!(h.search(&[1.0, 0.0, 0.0, 0.0], 3, |_| true).is_empty());
        h.insert(&[1.0, 0.0, 0.0, 0.0]);
        assert!(h.search(&[1.0, 0.0], 3, |_| true).is_empty());
        assert_eq!(h.search(&[2.0, 0.0, 0.0, 0.0], 3, |_| true).len(), 1);
    }
}
