//! The encoder's integer matrix products alone: 12-bit products per second on AMX tiles and
//! with AVX-512 VNNI (the layouts this CPU runs), for the four products of a MiniLM layer at a
//! given number of token rows, one thread.
//!
//!   cargo run --release -p coachlibre-models --example matmul_bench -- [ROWS] [REPEATS]

use std::time::Instant;

use coachlibre_models::embedded::bert::kernels::{
    Layout, QuantMatrix, QuantRows, amx_available, matmul_quant, vnni_available,
};

fn pseudo(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        })
        .collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let rows: usize = args.get(1).map_or(Ok(192), |s| s.parse())?;
    let repeats: usize = args.get(2).map_or(Ok(50), |s| s.parse())?;
    let shapes = [
        ("qkv", 1152, 384),
        ("out", 384, 384),
        ("up", 1536, 384),
        ("down", 384, 1536),
    ];
    let mut layouts = Vec::new();
    if amx_available() {
        layouts.push(Layout::Tiles);
    }
    if vnni_available() {
        layouts.push(Layout::Pairs);
    }
    println!("rows {rows}, {repeats} repeats, one thread");
    for layout in layouts {
        let mut line = format!("{layout:?}:");
        let (mut ops, mut secs) = (0f64, 0f64);
        for (name, outputs, inputs) in shapes {
            let w = pseudo(outputs * inputs, 1);
            let b = pseudo(outputs, 2);
            let m = QuantMatrix::new(&w, &b, outputs, inputs, layout).ok_or("shape")?;
            let x = pseudo(rows * inputs, 3);
            let mut q = QuantRows::default();
            let mut out = vec![0f32; rows * outputs];
            q.quantise(&x, &m);
            matmul_quant(&q, &m, &mut out);
            let t = Instant::now();
            for _ in 0..repeats {
                matmul_quant(&q, &m, &mut out);
            }
            let s = t.elapsed().as_secs_f64();
            let n = (rows * outputs * inputs * repeats) as f64;
            line += &format!(" {name} {:.0} G/s", n / s / 1e9);
            ops += n;
            secs += s;
        }
        println!("{line} | all {:.0} G products/s", ops / secs / 1e9);
    }
    Ok(())
}
