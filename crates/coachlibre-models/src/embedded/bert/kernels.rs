//! Matrix products for the embedded encoder: 12-bit integer weights times 12-bit integer
//! activations, on the CPU's AMX tiles where it has them (Sapphire Rapids and later) or with
//! AVX-512 VNNI's dot-product instruction (`vpdpwssd`), and a portable f32 product for CPUs
//! with neither.
//!
//! Precision: weights are quantised per output to ±2047 (12 bits), activations per row to
//! ±2047, so each product is below 2²² and a sum of 512 of them below 2³¹. That keeps the
//! embeddings within 1e-3 of the f32 model and every reference neighbour order the same
//! (docs/benchmarks.md), where int8 (±127) weights or activations changed near-ties.
//!
//! - **VNNI** (layout [`Layout::Pairs`]): 16-bit integers multiplied by pairs, 32-bit sums
//!   moved to f32 every 256 inputs.
//! - **AMX** (layout [`Layout::Tiles`]): the tile unit multiplies 8-bit integers only, so each
//!   12-bit value is split into a signed high part and an unsigned 4-bit low part
//!   (`q = 16·hi + lo`) and one 12-bit product is four 8-bit ones:
//!   `a·w = 256·aₕwₕ + 16·(aₕwₗ + aₗwₕ) + aₗwₗ`, each summed exactly in the tiles' 32-bit
//!   accumulators. Over at most 512 inputs the true sum fits 32 bits, so combining the three
//!   accumulators with wrapping arithmetic gives it exactly (moved to f32 every 512 inputs):
//!   the scalar definition's numbers, at up to 1,024 8-bit products per cycle. Tiles are
//!   1 KiB blocks aligned to cache lines, activations included (misaligned: 2.5× slower).
//!
//! The two kernels sum in f32 at different points (every 256 or 512 inputs), so their
//! results differ in the last bits; the encoder re-quantises every layer's input, and a
//! last-bit difference that moves a value across a rounding boundary cascades through the
//! six layers: their embeddings are as far from each other as from the f32 model (7.7e-4
//! and 8.4e-4 there, same neighbour orders). With the same summation points they are
//! bit-identical (checked while writing them), but 512-input blocks cost the VNNI kernel 10 %.
//!
//! This module and `coachlibre-knowledge`'s `simd` are the workspace's `unsafe` code: the kernels are compiled for
//! AVX-512 (`#[target_feature]`) or issue AMX instructions, may only be called once
//! [`vnni_available`] / [`amx_available`] have seen the instructions on the running CPU (and,
//! for AMX, the kernel granted the process its tile state), and read their operands through
//! raw pointers whose bounds are checked once, before the loops, by the safe entry point
//! [`matmul_quant`]. Everything else (quantisation, packing, the portable path) is safe Rust,
//! and the tests compare each kernel with a plain scalar product on every shape the encoder
//! uses, including ragged row counts.
#![expect(
    unsafe_code,
    reason = "runtime-dispatched AVX-512 VNNI and AMX kernels; bounds checked by the safe entry point"
)]

use std::sync::OnceLock;

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::{
    __m512i, _mm512_add_ps, _mm512_cvtepi32_ps, _mm512_fmadd_ps, _mm512_loadu_ps,
    _mm512_loadu_si512, _mm512_mul_ps, _mm512_set1_epi32, _mm512_set1_ps, _mm512_setzero_si512,
    _mm512_storeu_ps,
};

/// Largest quantised magnitude of a weight or an activation.
const QMAX: f32 = 2047.0;
/// Inputs summed in 32-bit integers by the VNNI kernel before the sums move to f32.
const K_BLOCK: usize = 256;

/// Output columns per panel of the VNNI layout: four 16-lane vectors.
pub const PANEL: usize = 64;
/// Rows per VNNI micro-kernel call (accumulators: `ROWS` × 4 vectors).
const ROWS: usize = 6;

/// Rows of a tile (activation rows or outputs) in the AMX layout.
const TILE: usize = 16;
/// Inputs per tile: 64 bytes of 8-bit integers.
const TILE_K: usize = 64;
/// Inputs whose exact 32-bit sums the AMX kernel combines at once (see the module docs).
const AMX_CHUNK: usize = 512;

/// Whether the running CPU has the instructions the VNNI kernel needs.
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

/// Whether the AMX kernel can run: the CPU has AMX-TILE and AMX-INT8 (and the AVX-512 the
/// kernel's epilogue uses), and Linux granted this process the tile state (a process must ask
/// for it once, `arch_prctl(ARCH_REQ_XCOMP_PERM)`; kernels before 5.16 refuse). Asked once.
pub fn amx_available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
        {
            // Leaf 7 exists: AVX-512 F, which `vnni_available` checked, is reported there.
            if !vnni_available() {
                return false;
            }
            let leaf7 = std::arch::x86_64::__cpuid_count(7, 0);
            let (tile, int8) = (leaf7.edx & (1 << 24) != 0, leaf7.edx & (1 << 25) != 0);
            if !(tile && int8) {
                return false;
            }
            const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
            const XFEATURE_XTILEDATA: libc::c_long = 18;
            // SAFETY: `arch_prctl` with this request only changes which extended states the
            // process may use; it reads and writes no memory of ours.
            let granted = unsafe {
                libc::syscall(
                    libc::SYS_arch_prctl,
                    ARCH_REQ_XCOMP_PERM,
                    XFEATURE_XTILEDATA,
                )
            };
            granted == 0
        }
        #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
        {
            false
        }
    })
}

/// How a quantised matrix (and the activations multiplied by it) is laid out, which decides
/// the kernel that multiplies them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// 16-bit integers, pairs of inputs side by side: the VNNI kernel (or the scalar
    /// reference where the CPU lacks VNNI).
    Pairs,
    /// 8-bit high and low parts in AMX tiles: the AMX kernel.
    Tiles,
}

impl Layout {
    /// The fastest layout the running CPU can multiply.
    pub fn best_available() -> Self {
        if amx_available() {
            Self::Tiles
        } else {
            Self::Pairs
        }
    }
}

/// The 12-bit integer `q` as a signed high part and an unsigned low part, `q = 16·hi + lo`.
fn split(q: i32) -> (i8, u8) {
    ((q >> 4) as i8, (q & 15) as u8)
}

/// One AMX tile of bytes (16 rows of 64), aligned to a cache line: a misaligned tile row
/// spans two lines, which measured 2.5× slower.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(64))]
struct Tile([[u8; TILE_K]; TILE]);

/// Bytes in whole aligned tiles, addressed as one flat array.
#[derive(Debug, Clone, Default)]
struct TileBytes(Vec<Tile>);

impl TileBytes {
    /// `bytes` zeros (a multiple of a tile), reusing the storage.
    fn reset(&mut self, bytes: usize) {
        self.0.clear();
        self.0
            .resize(bytes / (TILE * TILE_K), Tile([[0; TILE_K]; TILE]));
    }

    fn len(&self) -> usize {
        self.0.len() * TILE * TILE_K
    }

    fn get(&self, at: usize) -> u8 {
        self.0[at / (TILE * TILE_K)].0[(at / TILE_K) % TILE][at % TILE_K]
    }

    /// The 64-byte tile row starting at byte `at` (a multiple of 64).
    fn row_mut(&mut self, at: usize) -> &mut [u8; TILE_K] {
        &mut self.0[at / (TILE * TILE_K)].0[(at / TILE_K) % TILE]
    }

    fn set(&mut self, at: usize, v: u8) {
        self.row_mut(at - at % TILE_K)[at % TILE_K] = v;
    }

    fn as_ptr(&self) -> *const u8 {
        self.0.as_ptr().cast()
    }
}

/// The value a high and a low byte stand for (the high byte is signed).
fn join(hi: u8, lo: u8) -> i32 {
    16 * i32::from(hi as i8) + i32::from(lo)
}

#[derive(Debug, Clone)]
enum PackedWeights {
    /// Panels of 64 outputs; inside a panel, for every 2 consecutive inputs, the 2 values of
    /// each of the 64 outputs side by side (what one `vpdpwssd` multiplies).
    Pairs(Vec<i16>),
    /// For every block of 16 outputs and every block of 64 inputs, one 1 KiB tile: row `r`
    /// holds, for each of the 16 outputs, its 4 inputs `4r..4r + 4` (what AMX's B operand
    /// reads). High (signed) and low parts in two arrays of the same shape.
    Tiles { hi: TileBytes, lo: TileBytes },
}

/// A weight matrix quantised to 12-bit integers (±2047), one scale per output (symmetric),
/// packed for one of the kernels (see [`Layout`]).
#[derive(Debug, Clone)]
pub struct QuantMatrix {
    inputs: usize,
    outputs: usize,
    packed: PackedWeights,
    scale: Vec<f32>,
    bias: Vec<f32>,
}

impl QuantMatrix {
    /// Quantise `weight` (`outputs` rows of `inputs` values, PyTorch's `Linear` layout) for
    /// `layout`. `None` when the shape does not suit that layout's kernel (pairs: inputs even,
    /// outputs a multiple of 64; tiles: inputs a multiple of 64, outputs of 16) or the slices
    /// do not match it.
    pub fn new(
        weight: &[f32],
        bias: &[f32],
        outputs: usize,
        inputs: usize,
        layout: Layout,
    ) -> Option<Self> {
        let fits = match layout {
            Layout::Pairs => inputs.is_multiple_of(2) && outputs.is_multiple_of(PANEL),
            Layout::Tiles => inputs.is_multiple_of(TILE_K) && outputs.is_multiple_of(TILE),
        };
        if inputs == 0
            || outputs == 0
            || !fits
            || weight.len() != outputs * inputs
            || bias.len() != outputs
        {
            return None;
        }
        let mut quantised = vec![0i32; outputs * inputs];
        let mut scale = vec![0f32; outputs];
        for ((row, q), s) in weight
            .chunks_exact(inputs)
            .zip(quantised.chunks_exact_mut(inputs))
            .zip(&mut scale)
        {
            let max = row.iter().fold(0f32, |m, v| m.max(v.abs()));
            *s = if max > 0.0 { max / QMAX } else { 1.0 };
            for (d, v) in q.iter_mut().zip(row) {
                *d = (v / *s).round().clamp(-QMAX, QMAX) as i32;
            }
        }
        let packed = match layout {
            Layout::Pairs => {
                let mut packed = Vec::with_capacity(outputs * inputs);
                for panel in 0..outputs / PANEL {
                    for k2 in 0..inputs / 2 {
                        for c in 0..PANEL {
                            let at = (panel * PANEL + c) * inputs + k2 * 2;
                            packed.extend(quantised[at..at + 2].iter().map(|&q| q as i16));
                        }
                    }
                }
                PackedWeights::Pairs(packed)
            }
            Layout::Tiles => {
                let (mut hi, mut lo) = (TileBytes::default(), TileBytes::default());
                hi.reset(outputs * inputs);
                lo.reset(outputs * inputs);
                for (o, row) in quantised.chunks_exact(inputs).enumerate() {
                    for (i, &q) in row.iter().enumerate() {
                        let at = tile_index(o, i, inputs);
                        let (h, l) = split(q);
                        hi.set(at, h as u8);
                        lo.set(at, l);
                    }
                }
                PackedWeights::Tiles { hi, lo }
            }
        };
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

    /// The layout (and so the kernel) this matrix was packed for.
    pub fn layout(&self) -> Layout {
        match self.packed {
            PackedWeights::Pairs(_) => Layout::Pairs,
            PackedWeights::Tiles { .. } => Layout::Tiles,
        }
    }

    /// The quantised weight of output `o`, input `i` (the scalar reference).
    fn weight(&self, o: usize, i: usize) -> i32 {
        match &self.packed {
            PackedWeights::Pairs(packed) => {
                let (panel, c) = (o / PANEL, o % PANEL);
                let at = panel * PANEL * self.inputs + (i / 2) * PANEL * 2 + c * 2 + i % 2;
                i32::from(packed[at])
            }
            PackedWeights::Tiles { hi, lo } => {
                let at = tile_index(o, i, self.inputs);
                join(hi.get(at), lo.get(at))
            }
        }
    }
}

/// Where weight (`o`, `i`) of a matrix with `inputs` inputs lies in the tile layout.
fn tile_index(o: usize, i: usize, inputs: usize) -> usize {
    let tile = (o / TILE) * (inputs / TILE_K) + i / TILE_K;
    tile * TILE * TILE_K + ((i % TILE_K) / 4) * TILE_K + (o % TILE) * 4 + i % 4
}

/// Where activation (`r`, `i`) of rows `cols` wide lies in the tile layout.
fn row_tile_index(r: usize, i: usize, cols: usize) -> usize {
    let tile = (r / TILE) * (cols / TILE_K) + i / TILE_K;
    tile * TILE * TILE_K + (r % TILE) * TILE_K + i % TILE_K
}

/// Activations quantised to 12-bit integers (±2047), one scale per row (symmetric), in the
/// layout of the matrix they are multiplied by: 16-bit integers for [`Layout::Pairs`]; high
/// and low 8-bit parts for [`Layout::Tiles`], in whole tiles (16 rows × 64 inputs, 1 KiB,
/// contiguous: a tile load reads consecutive memory), the rows padded with zeros to a
/// multiple of 16.
#[derive(Debug, Clone, Default)]
pub struct QuantRows {
    cols: usize,
    layout: Option<Layout>,
    pairs: Vec<i16>,
    hi: TileBytes,
    lo: TileBytes,
    scale: Vec<f32>,
}

impl QuantRows {
    /// Quantise `x` (rows of `w`'s input width) for multiplying by `w`, reusing this
    /// buffer's storage.
    pub fn quantise(&mut self, x: &[f32], w: &QuantMatrix) {
        let cols = w.inputs;
        let rows = x.len() / cols;
        let layout = w.layout();
        self.cols = cols;
        self.layout = Some(layout);
        self.scale.clear();
        let padded = match layout {
            Layout::Pairs => rows,
            Layout::Tiles => rows.next_multiple_of(TILE),
        };
        match layout {
            Layout::Pairs => {
                self.pairs.clear();
                self.pairs.resize(rows * cols, 0);
            }
            Layout::Tiles => {
                self.hi.reset(padded * cols);
                self.lo.reset(padded * cols);
            }
        }
        for (r, row) in x.chunks_exact(cols).enumerate() {
            let max = super::math::max_abs(row);
            let s = if max > 0.0 { max / QMAX } else { 1.0 };
            let inv = 1.0 / s;
            // |v · inv| <= 2047: the integer fits 12 bits.
            let q = |v: f32| super::math::round_to_int(v * inv).1;
            match layout {
                Layout::Pairs => {
                    for (d, &v) in self.pairs[r * cols..(r + 1) * cols].iter_mut().zip(row) {
                        *d = q(v) as i16;
                    }
                }
                Layout::Tiles => {
                    // One 64-byte tile row per 64 inputs.
                    for (t, part) in row.chunks_exact(TILE_K).enumerate() {
                        let at = row_tile_index(r, t * TILE_K, cols);
                        let (hi, lo) = (self.hi.row_mut(at), self.lo.row_mut(at));
                        for ((h, l), &v) in hi.iter_mut().zip(lo.iter_mut()).zip(part) {
                            let (qh, ql) = split(q(v));
                            (*h, *l) = (qh as u8, ql);
                        }
                    }
                }
            }
            self.scale.push(s);
        }
    }

    /// Rows held.
    pub fn rows(&self) -> usize {
        self.scale.len()
    }

    /// The quantised value of row `r`, column `i` (the scalar reference).
    fn value(&self, r: usize, i: usize) -> i32 {
        match self.layout {
            Some(Layout::Tiles) => {
                let at = row_tile_index(r, i, self.cols);
                join(self.hi.get(at), self.lo.get(at))
            }
            _ => i32::from(self.pairs[r * self.cols + i]),
        }
    }
}

/// `out = a · wᵀ + bias` (rows of `a` times the matrix, dequantised), `out` holding
/// `a.rows() × w.outputs()` values, `a` quantised for `w`. Uses the kernel of `w`'s layout
/// when the CPU has it, the scalar reference otherwise.
pub fn matmul_quant(a: &QuantRows, w: &QuantMatrix, out: &mut [f32]) {
    let rows = a.rows();
    assert_eq!(a.cols, w.inputs, "activation width must match the matrix");
    assert_eq!(
        a.layout,
        Some(w.layout()),
        "activations quantised for another layout"
    );
    assert_eq!(out.len(), rows * w.outputs, "output buffer size");
    match &w.packed {
        PackedWeights::Pairs(packed) => {
            assert_eq!(a.pairs.len(), rows * w.inputs, "activation buffer size");
            #[cfg(target_arch = "x86_64")]
            if vnni_available() {
                // SAFETY: the CPU has AVX-512 F/BW/VNNI (checked just above), and every
                // pointer the kernel forms stays inside the slices whose sizes were asserted
                // above: rows of `a.pairs` are `inputs` values, the packed matrix is
                // `inputs × outputs` values, `out` is `rows × outputs` floats, and
                // `scale`/`bias` hold `outputs` values (built together by `QuantMatrix::new`,
                // which also makes `outputs` a multiple of 64 and `inputs` even).
                unsafe { vnni::matmul(a, w, packed, out) };
                return;
            }
        }
        PackedWeights::Tiles { hi, lo } => {
            let padded = rows.next_multiple_of(TILE);
            assert_eq!(a.hi.len(), padded * w.inputs, "activation buffer size");
            assert_eq!(a.lo.len(), padded * w.inputs, "activation buffer size");
            assert_eq!(hi.len(), w.outputs * w.inputs, "weight buffer size");
            assert_eq!(lo.len(), w.outputs * w.inputs, "weight buffer size");
            #[cfg(target_arch = "x86_64")]
            if amx_available() {
                // SAFETY: the CPU has AMX-TILE/INT8 and AVX-512 F/BW and the process holds the
                // tile state (checked just above); the buffers have the sizes asserted above,
                // `inputs` is a multiple of 64 and `outputs` of 16 (`QuantMatrix::new`), so
                // every tile the kernel loads or stores lies inside them.
                unsafe { amx::matmul(a, w, (hi, lo), out) };
                return;
            }
        }
    }
    matmul_quant_scalar(a, w, out);
}

/// The plain definition of [`matmul_quant`]: the reference the kernels are tested against.
pub fn matmul_quant_scalar(a: &QuantRows, w: &QuantMatrix, out: &mut [f32]) {
    for r in 0..a.rows() {
        for o in 0..w.outputs {
            let acc: i64 = (0..w.inputs)
                .map(|i| i64::from(a.value(r, i) * w.weight(o, i)))
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
    /// [`matmul_quant`](super::matmul_quant) asserts; `packed` is `w`'s pairs.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn matmul(a: &QuantRows, w: &QuantMatrix, packed: &[i16], out: &mut [f32]) {
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
                    let at = Block { panel, r0, k0, k1 };
                    // SAFETY: forwarded from this function's contract; `r0 + m <= rows`,
                    // `k0 < k1 <= k`, both even.
                    unsafe {
                        match m {
                            1 => block::<1>(a, w, packed, out, at),
                            2 => block::<2>(a, w, packed, out, at),
                            3 => block::<3>(a, w, packed, out, at),
                            4 => block::<4>(a, w, packed, out, at),
                            5 => block::<5>(a, w, packed, out, at),
                            _ => block::<ROWS>(a, w, packed, out, at),
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

    /// Where a micro-kernel call works: the 64 outputs of `panel`, rows from `r0`, inputs
    /// `k0..k1`.
    #[derive(Clone, Copy)]
    struct Block {
        panel: usize,
        r0: usize,
        k0: usize,
        k1: usize,
    }

    /// `R` rows times one panel over some inputs: integer sums, then added (in f32) into the
    /// output tile (stored there when `k0` is 0).
    ///
    /// # Safety
    /// As [`matmul`], with `r0 + R <= a.rows()`, `panel < w.outputs / 64`, and
    /// `k0 < k1 <= w.inputs`, both even.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    #[inline]
    unsafe fn block<const R: usize>(
        a: &QuantRows,
        w: &QuantMatrix,
        packed: &[i16],
        out: &mut [f32],
        Block { panel, r0, k0, k1 }: Block,
    ) {
        let (k, n) = (w.inputs, w.outputs);
        // SAFETY: the panel starts at `panel * 64 * k` and spans `64 * k` values of `packed`
        // (`outputs * inputs` long); row `r0 + r` spans `k` values of `a.pairs`; output row
        // `r0 + r`, columns `panel * 64 .. + 64`, lies inside `out` (`rows × outputs`).
        unsafe {
            let wp = packed.as_ptr().add(panel * PANEL * k);
            let ap = a.pairs.as_ptr().add(r0 * k);
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

#[cfg(target_arch = "x86_64")]
mod amx {
    use super::*;

    /// The tile configuration (`ldtilecfg`'s 64-byte operand): palette 1, the eight tiles
    /// all 16 rows of 64 bytes.
    #[repr(C, align(64))]
    struct TileConfig {
        palette: u8,
        start_row: u8,
        reserved: [u8; 14],
        bytes_per_row: [u16; 16],
        rows: [u8; 16],
        reserved_end: [u8; 16],
    }

    /// A 16 × 16 tile of 32-bit sums, aligned for the tile store.
    #[repr(C, align(64))]
    struct Sums([[i32; TILE]; TILE]);

    /// # Safety
    /// [`amx_available`] must have returned true (which also means AVX-512 F/BW), and the
    /// buffers must have the sizes [`matmul_quant`](super::matmul_quant) asserts; `hi`/`lo`
    /// are `w`'s tiles.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn matmul(
        a: &QuantRows,
        w: &QuantMatrix,
        (hi, lo): (&TileBytes, &TileBytes),
        out: &mut [f32],
    ) {
        let (rows, k, n) = (a.rows(), w.inputs, w.outputs);
        let k_tiles = k / TILE_K;
        let mut config = TileConfig {
            palette: 1,
            start_row: 0,
            reserved: [0; 14],
            bytes_per_row: [0; 16],
            rows: [0; 16],
            reserved_end: [0; 16],
        };
        config.bytes_per_row[..8].fill(TILE_K as u16);
        config.rows[..8].fill(TILE as u8);
        // SAFETY: `ldtilecfg` reads the 64-byte configuration; this thread's tiles are
        // configured until `tilerelease` below. No other code of this program uses the tile
        // registers, so their state is ours between the assembly blocks of this function.
        unsafe {
            std::arch::asm!("ldtilecfg [{}]", in(reg) &config, options(nostack, readonly));
        }
        let (mut hh, mut mix, mut ll) = (
            Sums([[0; TILE]; TILE]),
            Sums([[0; TILE]; TILE]),
            Sums([[0; TILE]; TILE]),
        );
        let mut acc = [[0f32; TILE]; TILE];
        // A block of 16 activation rows (all its inputs: at most 48 KiB, in L1) goes through
        // every 16 outputs of the matrix, whose tiles stream in order from L2.
        for r0 in (0..rows).step_by(TILE) {
            let row_tiles = (r0 / TILE) * k_tiles;
            for nb in 0..n / TILE {
                let col = nb * TILE;
                let mut kt = 0;
                while kt < k_tiles {
                    let steps = (AMX_CHUNK / TILE_K).min(k_tiles - kt);
                    // SAFETY: the activation tiles of rows `r0..r0 + 16` (padded), inputs
                    // `kt * 64 .. (kt + steps) * 64 <= k`, are `steps` consecutive KiB from
                    // `(r0 / 16 * k_tiles + kt) * 1024` in `a.hi`/`a.lo` (`padded × k` bytes);
                    // the weight tiles of outputs `col..col + 16`, same inputs, are `steps`
                    // consecutive KiB from `(nb * k_tiles + kt) * 1024` in the
                    // `outputs × inputs` arrays. The sums go to three 1 KiB local tiles.
                    unsafe {
                        std::arch::asm!(
                            "tilezero tmm0",
                            "tilezero tmm1",
                            "tilezero tmm2",
                            "2:",
                            "tileloadd tmm4, [{ahi} + {stride} * 1]",
                            "tileloadd tmm5, [{alo} + {stride} * 1]",
                            "tileloadd tmm6, [{bhi} + {stride} * 1]",
                            "tileloadd tmm7, [{blo} + {stride} * 1]",
                            "tdpbssd tmm0, tmm4, tmm6",
                            "tdpbsud tmm1, tmm4, tmm7",
                            "tdpbusd tmm1, tmm5, tmm6",
                            "tdpbuud tmm2, tmm5, tmm7",
                            "add {ahi}, 1024",
                            "add {alo}, 1024",
                            "add {bhi}, 1024",
                            "add {blo}, 1024",
                            "dec {steps}",
                            "jnz 2b",
                            "tilestored [{hh} + {stride} * 1], tmm0",
                            "tilestored [{mix} + {stride} * 1], tmm1",
                            "tilestored [{ll} + {stride} * 1], tmm2",
                            ahi = inout(reg) a.hi.as_ptr().add((row_tiles + kt) * TILE * TILE_K) => _,
                            alo = inout(reg) a.lo.as_ptr().add((row_tiles + kt) * TILE * TILE_K) => _,
                            bhi = inout(reg) hi.as_ptr().add((nb * k_tiles + kt) * TILE * TILE_K) => _,
                            blo = inout(reg) lo.as_ptr().add((nb * k_tiles + kt) * TILE * TILE_K) => _,
                            steps = inout(reg) steps => _,
                            stride = in(reg) TILE_K,
                            hh = in(reg) hh.0.as_mut_ptr(),
                            mix = in(reg) mix.0.as_mut_ptr(),
                            ll = in(reg) ll.0.as_mut_ptr(),
                            options(nostack),
                        );
                    }
                    // The exact sum over this chunk (it fits 32 bits; the parts may wrap).
                    for (((acc, hh), mix), ll) in acc.iter_mut().zip(&hh.0).zip(&mix.0).zip(&ll.0) {
                        for c in 0..TILE {
                            let sum = (hh[c] << 8).wrapping_add(mix[c] << 4).wrapping_add(ll[c]);
                            acc[c] = if kt == 0 {
                                sum as f32
                            } else {
                                acc[c] + sum as f32
                            };
                        }
                    }
                    kt += steps;
                }
                let scale = &w.scale[col..col + TILE];
                let bias = &w.bias[col..col + TILE];
                for (r, acc) in acc.iter().enumerate().take(rows - r0) {
                    let sx = a.scale[r0 + r];
                    let dst = &mut out[(r0 + r) * n + col..(r0 + r) * n + col + TILE];
                    for c in 0..TILE {
                        dst[c] = acc[c].mul_add(sx * scale[c], bias[c]);
                    }
                }
            }
        }
        // SAFETY: releases this thread's tile state configured above.
        unsafe {
            std::arch::asm!("tilerelease", options(nostack, nomem));
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

    /// The layouts whose kernel this CPU runs (the scalar reference otherwise: still tested).
    const LAYOUTS: [Layout; 2] = [Layout::Pairs, Layout::Tiles];

    #[test]
    fn kernels_match_the_scalar_reference_on_every_row_count() {
        for layout in LAYOUTS {
            for (outputs, inputs) in [(64, 64), (128, 384), (64, 1536), (16, 640), (64, 70)] {
                let w = pseudo(outputs * inputs, 1);
                let b = pseudo(outputs, 2);
                let Some(m) = QuantMatrix::new(&w, &b, outputs, inputs, layout) else {
                    assert!(!inputs.is_multiple_of(64) || !outputs.is_multiple_of(64));
                    continue;
                };
                for rows in [1, 2, 5, 6, 7, 13, 16, 17, 40] {
                    let x = pseudo(rows * inputs, 3 + rows as u64);
                    let mut q = QuantRows::default();
                    q.quantise(&x, &m);
                    let mut fast = vec![0f32; rows * outputs];
                    let mut slow = vec![0f32; rows * outputs];
                    matmul_quant(&q, &m, &mut fast);
                    matmul_quant_scalar(&q, &m, &mut slow);
                    for (f, s) in fast.iter().zip(&slow) {
                        assert!(
                            (f - s).abs() <= 1e-4 * s.abs().max(1.0),
                            "{layout:?} {rows}×{inputs}×{outputs}: {f} vs {s}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn both_layouts_hold_the_same_integers() {
        let (outputs, inputs) = (64, 128);
        let w = pseudo(outputs * inputs, 21);
        let b = pseudo(outputs, 22);
        let pairs = QuantMatrix::new(&w, &b, outputs, inputs, Layout::Pairs).unwrap();
        let tiles = QuantMatrix::new(&w, &b, outputs, inputs, Layout::Tiles).unwrap();
        for o in 0..outputs {
            for i in 0..inputs {
                assert_eq!(pairs.weight(o, i), tiles.weight(o, i), "weight {o}, {i}");
            }
        }
        let x = pseudo(3 * inputs, 23);
        let (mut qp, mut qt) = (QuantRows::default(), QuantRows::default());
        qp.quantise(&x, &pairs);
        qt.quantise(&x, &tiles);
        for r in 0..3 {
            for i in 0..inputs {
                assert_eq!(qp.value(r, i), qt.value(r, i), "activation {r}, {i}");
            }
        }
        // The split of every 12-bit integer is exact, extremes included.
        for q in -2047..=2047 {
            let (hi, lo) = split(q);
            assert_eq!(16 * i32::from(hi) + i32::from(lo), q);
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
        for layout in LAYOUTS {
            let m = QuantMatrix::new(&w, &b, outputs, inputs, layout).unwrap();
            let mut q = QuantRows::default();
            q.quantise(&x, &m);
            let mut got = vec![0f32; rows * outputs];
            matmul_quant(&q, &m, &mut got);
            let err = want
                .iter()
                .zip(&got)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            // Sums of 384 products of values in ±0.5: the f32 results are around ±3; 12-bit
            // weights and activations keep every one within about 1e-3 of it.
            assert!(err < 2e-3, "{layout:?}: largest error {err}");
        }
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
    fn shapes_the_kernels_cannot_take_are_refused() {
        let pairs = |w: &[f32], b: &[f32], o, i| QuantMatrix::new(w, b, o, i, Layout::Pairs);
        assert!(pairs(&[0.0; 5 * 64], &[0.0; 64], 64, 5).is_none());
        assert!(pairs(&[0.0; 4 * 10], &[0.0; 10], 10, 4).is_none());
        assert!(pairs(&[0.0; 4 * 64], &[0.0; 63], 64, 4).is_none());
        let tiles = |w: &[f32], b: &[f32], o, i| QuantMatrix::new(w, b, o, i, Layout::Tiles);
        assert!(tiles(&[0.0; 32 * 64], &[0.0; 64], 64, 32).is_none());
        assert!(tiles(&[0.0; 64 * 8], &[0.0; 8], 8, 64).is_none());
        assert!(tiles(&[0.0; 64 * 16], &[0.0; 16], 16, 64).is_some());
        assert!(F32Matrix::new(&[0.0; 3], &[0.0; 1], 1, 4).is_none());
    }

    #[test]
    fn extreme_values_do_not_overflow_the_integer_sums() {
        // Every product at its largest magnitude, same sign: the worst case for the sums.
        let (outputs, inputs) = (64, 1536);
        let w = vec![1.0f32; outputs * inputs];
        let b = vec![0.0f32; outputs];
        for layout in LAYOUTS {
            let m = QuantMatrix::new(&w, &b, outputs, inputs, layout).unwrap();
            for sign in [-1.0f32, 1.0] {
                let mut q = QuantRows::default();
                q.quantise(&vec![sign; 3 * inputs], &m);
                let mut got = vec![0f32; 3 * outputs];
                matmul_quant(&q, &m, &mut got);
                assert!(
                    got.iter().all(|v| (v - sign * 1536.0).abs() < 1e-2),
                    "{layout:?}: {:?}",
                    &got[..4]
                );
            }
        }
    }

    #[test]
    fn constant_rows_quantise_without_dividing_by_zero() {
        let m = QuantMatrix::new(&[0.5; 64 * 64], &[0.0; 64], 64, 64, Layout::Pairs).unwrap();
        let mut q = QuantRows::default();
        q.quantise(&[0.0; 128], &m);
        assert_eq!(q.rows(), 2);
        assert!(q.scale.iter().all(|s| s.is_finite() && *s > 0.0));
    }
}
