//! Matrix products for the embedded encoder: 16-bit integer weights times 16-bit integer
//! activations with the CPU's VNNI dot-product instruction (AVX-512 VNNI `vpdpwssd`), and a
//! portable f32 product for CPUs without it.
//!
//! Precision: weights are quantised per output to ±2047 (12 bits), activations per row to
//! ±2047, so each product is below 2²² and a pair below 2²³; the kernel moves its 32-bit sums
//! to f32 every 256 inputs (128 pairs: below 2³⁰), so nothing overflows whatever the data. That
//! keeps the embeddings within 1e-3 of the f32 model and every reference neighbour order the
//! same (docs/benchmarks.md), where int8 (±127) weights or activations changed near-ties;
//! ±4095 with 64-input blocks was 1.4× more precise and 10 % slower.
//!
//! This is the one module of the workspace that uses `unsafe`: the VNNI kernel is compiled for
//! AVX-512 (`#[target_feature]`) and may only be called once [`vnni_available`] has seen the
//! instructions on the running CPU, and it reads its operands through raw pointers whose bounds
//! are checked once, before the loops, by the safe entry point [`matmul_quant`]. Everything else
//! (quantisation, epilogues, the portable path) is safe Rust, and the tests compare the kernel
//! with a plain scalar product on every shape the encoder uses, including the ragged edges.
#![expect(
    unsafe_code,
    reason = "runtime-dispatched AVX-512 VNNI kernel; bounds checked by the safe entry point"
)]

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::{
    __m512i, _mm512_add_ps, _mm512_cvtepi32_ps, _mm512_fmadd_ps, _mm512_loadu_ps,
    _mm512_loadu_si512, _mm512_mul_ps, _mm512_set1_epi32, _mm512_set1_ps, _mm512_setzero_si512,
    _mm512_storeu_ps,
};

/// Largest quantised magnitude of a weight or an activation.
const QMAX: f32 = 2047.0;
/// Inputs summed in 32-bit integers before the sums move to f32 (see the module docs).
const K_BLOCK: usize = 256;

/// Output columns per panel: four 16-lane vectors.
pub const PANEL: usize = 64;
/// Rows per micro-kernel call (accumulators: `ROWS` × 4 vectors).
const ROWS: usize = 6;

/// Whether the running CPU has the instructions the integer kernel needs.
pub fn vnni_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// A weight matrix quantised to 16-bit integers (±2047), one scale per output (symmetric),
/// packed for the kernel: panels of 64 outputs; inside a panel, for every 2 consecutive inputs,
/// the 2 values of each of the 64 outputs side by side (what one `vpdpwssd` multiplies).
#[derive(Debug, Clone)]
pub struct QuantMatrix {
    inputs: usize,
    outputs: usize,
    packed: Vec<i16>,
    scale: Vec<f32>,
    bias: Vec<f32>,
}

impl QuantMatrix {
    /// Quantise `weight` (`outputs` rows of `inputs` values, PyTorch's `Linear` layout).
    /// `None` when the shape does not suit the kernel (inputs not even, outputs not a multiple
    /// of 64) or the slices do not match it.
    pub fn new(weight: &[f32], bias: &[f32], outputs: usize, inputs: usize) -> Option<Self> {
        if inputs == 0
            || !inputs.is_multiple_of(2)
            || outputs == 0
            || !outputs.is_multiple_of(PANEL)
            || weight.len() != outputs * inputs
            || bias.len() != outputs
        {
            return None;
        }
        let mut quantised = vec![0i16; outputs * inputs];
        let mut scale = vec![0f32; outputs];
        for ((row, q), s) in weight
            .chunks_exact(inputs)
            .zip(quantised.chunks_exact_mut(inputs))
            .zip(&mut scale)
        {
            let max = row.iter().fold(0f32, |m, v| m.max(v.abs()));
            *s = if max > 0.0 { max / QMAX } else { 1.0 };
            for (d, v) in q.iter_mut().zip(row) {
                *d = (v / *s).round().clamp(-QMAX, QMAX) as i16;
            }
        }
        let mut packed = Vec::with_capacity(outputs * inputs);
        for panel in 0..outputs / PANEL {
            for k2 in 0..inputs / 2 {
                for c in 0..PANEL {
                    let at = (panel * PANEL + c) * inputs + k2 * 2;
                    packed.extend_from_slice(&quantised[at..at + 2]);
                }
            }
        }
        Some(Self {
            inputs,
            outputs,
            packed,
            scale,
            bias: bias.to_vec(),
        })
    }

    /// Outputs per row.
    pub fn outputs(&self) -> usize {
        self.outputs
    }

    /// The quantised weight of output `o`, input `i` (the scalar reference).
    fn weight(&self, o: usize, i: usize) -> i32 {
        let (panel, c) = (o / PANEL, o % PANEL);
        let at = panel * PANEL * self.inputs + (i / 2) * PANEL * 2 + c * 2 + i % 2;
        i32::from(self.packed[at])
    }
}

/// Activations quantised to 16-bit integers (±2047), one scale per row (symmetric).
#[derive(Debug, Clone, Default)]
pub struct QuantRows {
    cols: usize,
    data: Vec<i16>,
    scale: Vec<f32>,
}

impl QuantRows {
    /// Quantise `x` (rows of `cols` values) into this buffer, reusing its storage.
    pub fn quantise(&mut self, x: &[f32], cols: usize) {
        let rows = x.len() / cols.max(1);
        self.cols = cols;
        self.data.clear();
        self.data.resize(rows * cols, 0);
        self.scale.clear();
        for (row, out) in x.chunks_exact(cols).zip(self.data.chunks_exact_mut(cols)) {
            let max = super::math::max_abs(row);
            let s = if max > 0.0 { max / QMAX } else { 1.0 };
            let inv = 1.0 / s;
            for (d, &v) in out.iter_mut().zip(row) {
                // |v · inv| <= 2047: the integer fits an i16.
                *d = super::math::round_to_int(v * inv).1 as i16;
            }
            self.scale.push(s);
        }
    }

    /// Rows held.
    pub fn rows(&self) -> usize {
        self.scale.len()
    }
}

/// `out = a · wᵀ + bias` (rows of `a` times the matrix, dequantised), `out` holding
/// `a.rows() × w.outputs()` values. Uses the VNNI kernel when the CPU has it, the scalar
/// reference otherwise (by default the encoder uses f32 matrices on such CPUs).
pub fn matmul_quant(a: &QuantRows, w: &QuantMatrix, out: &mut [f32]) {
    let rows = a.rows();
    assert_eq!(a.cols, w.inputs, "activation width must match the matrix");
    assert_eq!(a.data.len(), rows * w.inputs, "activation buffer size");
    assert_eq!(out.len(), rows * w.outputs, "output buffer size");
    #[cfg(target_arch = "x86_64")]
    if vnni_available() {
        // SAFETY: the CPU has AVX-512 F/BW/VNNI (checked just above), and every pointer the
        // kernel forms stays inside the slices whose sizes were asserted above: rows of
        // `a.data` are `inputs` values, the packed matrix is `inputs × outputs` values, `out`
        // is `rows × outputs` floats, and `scale`/`bias` hold `outputs` values (built together
        // by `QuantMatrix::new`, which also makes `outputs` a multiple of 64 and `inputs` even).
        unsafe { vnni::matmul(a, w, out) };
        return;
    }
    matmul_quant_scalar(a, w, out);
}

/// The plain definition of [`matmul_quant`]: the reference the kernel is tested against.
pub fn matmul_quant_scalar(a: &QuantRows, w: &QuantMatrix, out: &mut [f32]) {
    for r in 0..a.rows() {
        let x = &a.data[r * w.inputs..(r + 1) * w.inputs];
        for o in 0..w.outputs {
            let acc: i64 = x
                .iter()
                .enumerate()
                .map(|(i, &v)| i64::from(i32::from(v) * w.weight(o, i)))
                .sum();
            out[r * w.outputs + o] = acc as f32 * (a.scale[r] * w.scale[o]) + w.bias[o];
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod vnni {
    use super::*;

    /// `acc += x · w` by pairs of 16-bit integers (`vpdpwssd`). Written as assembly because
    /// LLVM otherwise splits the instruction into `vpmaddwd` + `vpaddd` (shortening the
    /// accumulator's dependency chain at twice the instructions), which measured 3× slower here.
    macro_rules! dpwssd {
        ($acc:expr, $x:expr, $w:expr) => {
            std::arch::asm!(
                "vpdpwssd {acc}, {x}, {w}",
                acc = inout(zmm_reg) $acc,
                x = in(zmm_reg) $x,
                w = in(zmm_reg) $w,
                options(pure, nomem, nostack, preserves_flags),
            )
        };
    }

    /// # Safety
    /// The CPU must have AVX-512 F, BW and VNNI, and the buffers the sizes
    /// [`matmul_quant`](super::matmul_quant) asserts.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn matmul(a: &QuantRows, w: &QuantMatrix, out: &mut [f32]) {
        let (rows, k, n) = (a.rows(), w.inputs, w.outputs);
        for panel in 0..n / PANEL {
            // Blocks of 256 inputs (32 KiB of the panel's weights) stay in L1 while every row
            // goes through them; the f32 sums wait in `out` between blocks.
            let mut k0 = 0;
            while k0 < k {
                let k1 = (k0 + K_BLOCK).min(k);
                let mut r0 = 0;
                while r0 < rows {
                    let m = ROWS.min(rows - r0);
                    // SAFETY: forwarded from this function's contract; `r0 + m <= rows`,
                    // `k0 < k1 <= k`, both even.
                    unsafe {
                        match m {
                            1 => block::<1>(a, w, out, panel, r0, k0, k1),
                            2 => block::<2>(a, w, out, panel, r0, k0, k1),
                            3 => block::<3>(a, w, out, panel, r0, k0, k1),
                            4 => block::<4>(a, w, out, panel, r0, k0, k1),
                            5 => block::<5>(a, w, out, panel, r0, k0, k1),
                            _ => block::<ROWS>(a, w, out, panel, r0, k0, k1),
                        }
                    }
                    r0 += m;
                }
                k0 = k1;
            }
            let col = panel * PANEL;
            // SAFETY: `scale` and `bias` hold `n` values and `col + 64 <= n`; row `r` of the
            // panel lies inside `out` (`rows × n`).
            unsafe {
                for v in 0..4 {
                    let ws = _mm512_loadu_ps(w.scale.as_ptr().add(col + v * 16));
                    let bias = _mm512_loadu_ps(w.bias.as_ptr().add(col + v * 16));
                    for (r, &sx) in a.scale.iter().enumerate() {
                        let dst = out.as_mut_ptr().add(r * n + col + v * 16);
                        let scale = _mm512_mul_ps(_mm512_set1_ps(sx), ws);
                        _mm512_storeu_ps(dst, _mm512_fmadd_ps(_mm512_loadu_ps(dst), scale, bias));
                    }
                }
            }
        }
    }

    /// `R` rows starting at `r0` times the 64 outputs of `panel`, over inputs `k0..k1`: integer
    /// sums, then added (in f32) into the output tile (stored there when `k0` is 0).
    ///
    /// # Safety
    /// As [`matmul`], with `r0 + R <= a.rows()`, `panel < w.outputs / 64`, and
    /// `k0 < k1 <= w.inputs`, both even.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    #[inline]
    unsafe fn block<const R: usize>(
        a: &QuantRows,
        w: &QuantMatrix,
        out: &mut [f32],
        panel: usize,
        r0: usize,
        k0: usize,
        k1: usize,
    ) {
        let (k, n) = (w.inputs, w.outputs);
        // SAFETY: the panel starts at `panel * 64 * k` and spans `64 * k` values of `packed`
        // (`outputs * inputs` long); row `r0 + r` spans `k` values of `a.data`; output row
        // `r0 + r`, columns `panel * 64 .. + 64`, lies inside `out` (`rows × outputs`).
        unsafe {
            let wp = w.packed.as_ptr().add(panel * PANEL * k);
            let ap = a.data.as_ptr().add(r0 * k);
            let op = out.as_mut_ptr().add(r0 * n + panel * PANEL);
            let mut acc: [[__m512i; 4]; R] = [[_mm512_setzero_si512(); 4]; R];
            for k2 in k0 / 2..k1 / 2 {
                let base = wp.add(k2 * PANEL * 2);
                let w0 = _mm512_loadu_si512(base.cast());
                let w1 = _mm512_loadu_si512(base.add(32).cast());
                let w2 = _mm512_loadu_si512(base.add(64).cast());
                let w3 = _mm512_loadu_si512(base.add(96).cast());
                for (r, acc) in acc.iter_mut().enumerate() {
                    let x =
                        _mm512_set1_epi32(ap.add(r * k + k2 * 2).cast::<i32>().read_unaligned());
                    dpwssd!(acc[0], x, w0);
                    dpwssd!(acc[1], x, w1);
                    dpwssd!(acc[2], x, w2);
                    dpwssd!(acc[3], x, w3);
                }
            }
            for (r, acc) in acc.iter().enumerate() {
                for (v, s) in acc.iter().enumerate() {
                    let dst = op.add(r * n + v * 16);
                    let sum = _mm512_cvtepi32_ps(*s);
                    let sum = if k0 == 0 {
                        sum
                    } else {
                        _mm512_add_ps(_mm512_loadu_ps(dst), sum)
                    };
                    _mm512_storeu_ps(dst, sum);
                }
            }
        }
    }
}

/// Outputs per panel of the f32 product (two 8-lane vectors with AVX2).
const F32_PANEL: usize = 16;
/// Rows per block of the f32 product (12 vector accumulators).
const F32_ROWS: usize = 6;

/// Rows of `width` values regrouped by blocks of `group` rows: for every column, the block's
/// `group` values side by side (rows past the end are zero).
fn interleave(rows: &[f32], width: usize, group: usize) -> Vec<f32> {
    let blocks = (rows.len() / width).div_ceil(group);
    let mut out = vec![0f32; blocks * group * width];
    for (r, row) in rows.chunks_exact(width).enumerate() {
        let (block, lane) = (r / group, r % group);
        for (i, &v) in row.iter().enumerate() {
            out[(block * width + i) * group + lane] = v;
        }
    }
    out
}

/// An f32 weight matrix, packed in panels of 16 outputs (for every input, the panel's 16
/// weights side by side), for CPUs without VNNI and as the exact reference of the encoder.
/// Safe Rust: the compiler vectorises the fixed-size inner loops.
#[derive(Debug, Clone)]
pub struct F32Matrix {
    inputs: usize,
    outputs: usize,
    packed: Vec<f32>,
    bias: Vec<f32>,
}

impl F32Matrix {
    /// From PyTorch's `Linear` layout (`outputs` rows of `inputs` values).
    pub fn new(weight: &[f32], bias: &[f32], outputs: usize, inputs: usize) -> Option<Self> {
        if weight.len() != outputs * inputs || bias.len() != outputs || inputs == 0 {
            return None;
        }
        Some(Self {
            inputs,
            outputs,
            packed: interleave(weight, inputs, F32_PANEL),
            bias: bias.to_vec(),
        })
    }

    /// Outputs per row.
    pub fn outputs(&self) -> usize {
        self.outputs
    }

    /// `out = x · wᵀ + bias` for rows of `x` (`inputs` wide).
    pub fn matmul(&self, x: &[f32], out: &mut [f32]) {
        let (k, n) = (self.inputs, self.outputs);
        let rows = x.len() / k;
        // Rows interleaved by blocks of 6, so the inner loop walks both operands without index
        // arithmetic.
        let interleaved = interleave(x, k, F32_ROWS);
        for (p, panel) in self.packed.chunks_exact(F32_PANEL * k).enumerate() {
            let cols = F32_PANEL.min(n - p * F32_PANEL);
            for (block, a) in interleaved.chunks_exact(F32_ROWS * k).enumerate() {
                let mut acc = [[0f32; F32_PANEL]; F32_ROWS];
                let (ws, _) = panel.as_chunks::<F32_PANEL>();
                let (xs, _) = a.as_chunks::<F32_ROWS>();
                for (w, xs) in ws.iter().zip(xs) {
                    for r in 0..F32_ROWS {
                        for c in 0..F32_PANEL {
                            acc[r][c] = xs[r].mul_add(w[c], acc[r][c]);
                        }
                    }
                }
                for (lane, acc) in acc.iter().enumerate() {
                    let r = block * F32_ROWS + lane;
                    if r >= rows {
                        break;
                    }
                    let dst = &mut out[r * n + p * F32_PANEL..r * n + p * F32_PANEL + cols];
                    for ((d, v), b) in dst.iter_mut().zip(acc).zip(&self.bias[p * F32_PANEL..]) {
                        *d = v + b;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn kernel_matches_the_scalar_reference_on_every_row_count() {
        for (outputs, inputs) in [(64, 2), (128, 384), (64, 1536), (64, 70)] {
            let w = pseudo(outputs * inputs, 1);
            let b = pseudo(outputs, 2);
            let m = QuantMatrix::new(&w, &b, outputs, inputs).unwrap();
            for rows in [1, 2, 5, 6, 7, 13] {
                let x = pseudo(rows * inputs, 3 + rows as u64);
                let mut q = QuantRows::default();
                q.quantise(&x, inputs);
                let mut fast = vec![0f32; rows * outputs];
                let mut slow = vec![0f32; rows * outputs];
                matmul_quant(&q, &m, &mut fast);
                matmul_quant_scalar(&q, &m, &mut slow);
                for (f, s) in fast.iter().zip(&slow) {
                    assert!((f - s).abs() <= 1e-4 * s.abs().max(1.0), "{f} vs {s}");
                }
            }
        }
    }

    #[test]
    fn quantised_product_is_close_to_the_f32_product() {
        let (outputs, inputs, rows) = (128, 384, 9);
        let w = pseudo(outputs * inputs, 7);
        let b = pseudo(outputs, 8);
        let x = pseudo(rows * inputs, 9);
        let exact = F32Matrix::new(&w, &b, outputs, inputs).unwrap();
        let mut want = vec![0f32; rows * outputs];
        exact.matmul(&x, &mut want);
        let m = QuantMatrix::new(&w, &b, outputs, inputs).unwrap();
        let mut q = QuantRows::default();
        q.quantise(&x, inputs);
        let mut got = vec![0f32; rows * outputs];
        matmul_quant(&q, &m, &mut got);
        let err = want
            .iter()
            .zip(&got)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        // Sums of 384 products of values in ±0.5: the f32 results are around ±3; 12-bit
        // weights and activations keep every one within about 1e-3 of it.
        assert!(err < 2e-3, "largest error {err}");
    }

    #[test]
    fn f32_product_matches_its_definition_on_ragged_shapes() {
        for (outputs, inputs, rows) in [(1, 1, 1), (17, 5, 7), (64, 384, 13), (40, 3, 6)] {
            let w = pseudo(outputs * inputs, 11);
            let b = pseudo(outputs, 12);
            let x = pseudo(rows * inputs, 13);
            let m = F32Matrix::new(&w, &b, outputs, inputs).unwrap();
            let mut got = vec![0f32; rows * outputs];
            m.matmul(&x, &mut got);
            for r in 0..rows {
                for o in 0..outputs {
                    let want: f32 = b[o]
                        + (0..inputs)
                            .map(|i| x[r * inputs + i] * w[o * inputs + i])
                            .sum::<f32>();
                    assert!(
                        (got[r * outputs + o] - want).abs() < 1e-4,
                        "{rows}×{inputs}×{outputs}"
                    );
                }
            }
        }
    }

    #[test]
    fn shapes_the_kernel_cannot_take_are_refused() {
        assert!(QuantMatrix::new(&[0.0; 5 * 64], &[0.0; 64], 64, 5).is_none());
        assert!(QuantMatrix::new(&[0.0; 4 * 10], &[0.0; 10], 10, 4).is_none());
        assert!(QuantMatrix::new(&[0.0; 4 * 64], &[0.0; 63], 64, 4).is_none());
        assert!(F32Matrix::new(&[0.0; 3], &[0.0; 1], 1, 4).is_none());
    }

    #[test]
    fn extreme_values_do_not_overflow_the_integer_sums() {
        // Every product at its largest magnitude, same sign: the worst case for the sums.
        let (outputs, inputs) = (64, 1536);
        let w = vec![1.0f32; outputs * inputs];
        let b = vec![0.0f32; outputs];
        let m = QuantMatrix::new(&w, &b, outputs, inputs).unwrap();
        let mut q = QuantRows::default();
        q.quantise(&vec![-1.0f32; 3 * inputs], inputs);
        let mut got = vec![0f32; 3 * outputs];
        matmul_quant(&q, &m, &mut got);
        assert!(
            got.iter().all(|v| (v + 1536.0).abs() < 1e-2),
            "{:?}",
            &got[..4]
        );
    }

    #[test]
    fn constant_rows_quantise_without_dividing_by_zero() {
        let mut q = QuantRows::default();
        q.quantise(&[0.0; 8], 4);
        assert_eq!(q.rows(), 2);
        assert!(q.scale.iter().all(|s| s.is_finite() && *s > 0.0));
    }
}
