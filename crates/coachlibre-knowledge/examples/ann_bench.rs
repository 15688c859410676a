//! Approximate nearest neighbours: CoachLibre's HNSW against exact search, on vectors written
//! to a file so that FAISS (`bench/ann_faiss.py`) searches the very same ones.
//!
//! ```sh
//! cargo run --release -p coachlibre-knowledge --example ann_bench -- gen 100000 /tmp/ann
//! cargo run --release -p coachlibre-knowledge --example ann_bench -- run /tmp/ann 16 100 64,128
//! python bench/ann_faiss.py /tmp/ann 16 100 64,128
//! ```
//!
//! `gen N DIR` writes N base vectors and 1000 queries of 384 dimensions (`base.f32`,
//! `queries.f32`, little-endian, row after row) drawn around 1000 random centres (unit
//! vectors plus Gaussian noise, like sentence embeddings of many topics), then the exact top
//! 10 of every query (`truth.u32`). `run DIR M EF_CONSTRUCTION EF_SEARCH,...` builds the graph
//! (1 thread), then searches every query one at a time for each `ef_search` and prints build
//! time, recall@10 against the exact answer, and query latency p50/p99 (1 thread); a sixth
//! argument sets how many candidates are rescored exactly (40 by default).

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, bail};
use coachlibre_knowledge::hnsw::{Hnsw, Params};
use coachlibre_knowledge::index::{dot, normalised};

const DIMS: usize = 384;
const QUERIES: usize = 1000;
const K: usize = 10;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn uniform(&mut self) -> f32 {
        ((self.next() >> 40) as f32 + 0.5) / (1u64 << 24) as f32
    }
    /// Standard normal (Box–Muller).
    fn normal(&mut self) -> f32 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
    }
}

fn write_f32(path: &Path, rows: &[Vec<f32>]) -> anyhow::Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    for r in rows {
        for x in r {
            f.write_all(&x.to_le_bytes())?;
        }
    }
    f.flush()?;
    Ok(())
}

fn read_f32(path: &Path) -> anyhow::Result<Vec<Vec<f32>>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(bytes
        .chunks_exact(4 * DIMS)
        .map(|row| {
            row.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        })
        .collect())
}

fn generate(n: usize, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut rng = Rng(0x5EED_1234_ABCD_0001);
    let centres: Vec<Vec<f32>> = (0..1000)
        .map(|_| {
            let c: Vec<f32> = (0..DIMS).map(|_| rng.normal()).collect();
            normalised(&c)
        })
        .collect();
    let draw = |rng: &mut Rng| {
        let c = &centres[(rng.next() % centres.len() as u64) as usize];
        let v: Vec<f32> = c.iter().map(|x| x + 0.06 * rng.normal()).collect();
        normalised(&v)
    };
    let base: Vec<Vec<f32>> = (0..n).map(|_| draw(&mut rng)).collect();
    let queries: Vec<Vec<f32>> = (0..QUERIES).map(|_| draw(&mut rng)).collect();
    write_f32(&dir.join("base.f32"), &base)?;
    write_f32(&dir.join("queries.f32"), &queries)?;
    // Exact top 10, by brute force.
    let started = Instant::now();
    let mut truth = std::io::BufWriter::new(std::fs::File::create(dir.join("truth.u32"))?);
    for q in &queries {
        let mut s: Vec<(u32, f32)> = base
            .iter()
            .enumerate()
            .map(|(i, v)| (i as u32, dot(q, v)))
            .collect();
        s.select_nth_unstable_by(K - 1, |a, b| b.1.total_cmp(&a.1));
        s.truncate(K);
        s.sort_by(|a, b| b.1.total_cmp(&a.1));
        for (id, _) in s {
            truth.write_all(&id.to_le_bytes())?;
        }
    }
    truth.flush()?;
    let exact_ms = started.elapsed().as_secs_f64() * 1000.0 / QUERIES as f64;
    println!(
        "wrote {n} vectors and {QUERIES} queries ({DIMS} dims) to {}; exact search: {exact_ms:.2} ms per query",
        dir.display()
    );
    Ok(())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn run(dir: &Path, m: usize, ef_c: usize, efs: &[usize], rerank: usize) -> anyhow::Result<()> {
    let base = read_f32(&dir.join("base.f32"))?;
    let queries = read_f32(&dir.join("queries.f32"))?;
    let truth: Vec<u32> = std::fs::read(dir.join("truth.u32"))?
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    if truth.len() != queries.len() * K {
        bail!("truth.u32 does not match the queries: run `gen` again");
    }
    let started = Instant::now();
    let rows: Vec<&[f32]> = base.iter().map(Vec::as_slice).collect();
    let params = Params {
        m,
        ef_construction: ef_c,
        ef_search: 64,
        rerank,
    };
    let mut h = Hnsw::build(DIMS, params, &rows);
    let build = started.elapsed().as_secs_f64();
    println!(
        "CoachLibre HNSW: {} vectors, M={m}, efConstruction={ef_c}, {rerank} rescored: built in {build:.1} s",
        base.len()
    );
    println!("| engine | n | ef_search | recall@10 | p50 ms | p99 ms | build s |");
    println!("|---|---|---|---|---|---|---|");
    let vector = |id: u32| base[id as usize].as_slice();
    for &ef in efs {
        h.set_ef_search(ef);
        // Warm-up.
        for q in queries.iter().take(50) {
            h.search(q, K, |_| true, vector);
        }
        let mut lat = Vec::with_capacity(queries.len());
        let mut found = 0usize;
        for (i, q) in queries.iter().enumerate() {
            let t = Instant::now();
            let got = h.search(q, K, |_| true, vector);
            lat.push(t.elapsed().as_secs_f64() * 1000.0);
            let want = &truth[i * K..(i + 1) * K];
            found += got.iter().filter(|(id, _)| want.contains(id)).count();
        }
        lat.sort_by(f64::total_cmp);
        println!(
            "| CoachLibre HNSW | {} | {ef} | {:.4} | {:.3} | {:.3} | {build:.1} |",
            base.len(),
            found as f64 / (queries.len() * K) as f64,
            percentile(&lat, 50.0),
            percentile(&lat, 99.0),
        );
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("gen") => {
            let n: usize = args.get(1).context("gen N DIR")?.parse()?;
            generate(n, Path::new(args.get(2).context("gen N DIR")?))
        }
        Some("run") => {
            let dir = Path::new(args.get(1).context("run DIR M EF_C EF_S,...")?);
            let m = args.get(2).map(|a| a.parse()).transpose()?.unwrap_or(16);
            let ef_c = args.get(3).map(|a| a.parse()).transpose()?.unwrap_or(100);
            let efs: Vec<usize> = args
                .get(4)
                .map_or("32,64,128", String::as_str)
                .split(',')
                .map(str::parse)
                .collect::<Result<_, _>>()?;
            let rerank = args.get(5).map(|a| a.parse()).transpose()?.unwrap_or(40);
            run(dir, m, ef_c, &efs, rerank)
        }
        _ => bail!(
            "usage: ann_bench gen N DIR | ann_bench run DIR [M] [EF_CONSTRUCTION] [EF_SEARCH,...] [RESCORED]"
        ),
    }
}
