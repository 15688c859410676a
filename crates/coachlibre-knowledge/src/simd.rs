//! The vector kernels of similarity search, written with the CPU's vector instructions: the
//! one module of this crate with `unsafe` code.
//!
//! - [`dot`]: four independent vector sums (AVX-512 where the CPU has it, AVX2 + FMA
//!   otherwise). Written by hand because the compiler, given a plain loop with several
//!   accumulators, shuffles them through 2-lane registers (measured 2× slower than one
//!   8-lane accumulator, itself bound by its chain of dependent additions).
//! - [`dot_codes`]: Σ wᵢ·cᵢ of f32 weights and 8-bit codes (the graph's compact vectors),
//!   codes widened to f32 sixteen (AVX-512) or eight (AVX2) at a time.
//! - [`prefetch`]: ask the CPU to bring the cache lines of a slice in ahead of use.
//!
//! Each vector function is entered only after the running CPU was seen to have its
//! instructions, and reads only inside the slices it is given (lengths checked first).
#![expect(unsafe_code, reason = "runtime-dispatched AVX-512 / AVX2 kernels")]

/// Σ aᵢ·bᵢ over the common length of `a` and `b`.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512 F (checked just above); `a` and `b` have the same
            // length, and the kernel reads inside it.
            return unsafe { x86::dot_avx512(a, b) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU has AVX2 and FMA (checked just above); same lengths as above.
            return unsafe { x86::dot_avx2(a, b) };
        }
    }
    dot_portable(a, b)
}

/// [`dot`] in plain Rust: 8 lanes (the compiler vectorises it), the reference of the tests.
pub fn dot_portable(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ca, ra) = a.as_chunks::<8>();
    let (cb, rb) = b.as_chunks::<8>();
    for (x, y) in ca.iter().zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

/// Σ wᵢ·cᵢ over the common length of `w` and `codes` (each code taken as 0..=255).
#[inline]
pub fn dot_codes(w: &[f32], codes: &[u8]) -> f32 {
    let n = w.len().min(codes.len());
    let (w, codes) = (&w[..n], &codes[..n]);
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512 F (checked just above); `w` and `codes` have the
            // same length, and the kernel reads inside it.
            return unsafe { x86::dot_codes_avx512(w, codes) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU has AVX2 and FMA (checked just above); same lengths as above.
            return unsafe { x86::dot_codes_avx2(w, codes) };
        }
    }
    dot_codes_portable(w, codes)
}

/// [`dot_codes`] in plain Rust, the reference of the tests.
pub fn dot_codes_portable(w: &[f32], codes: &[u8]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (cw, rw) = w.as_chunks::<8>();
    let (cc, rc) = codes.as_chunks::<8>();
    for (x, y) in cw.iter().zip(cc) {
        for i in 0..8 {
            acc[i] += x[i] * f32::from(y[i]);
        }
    }
    let tail: f32 = rw.iter().zip(rc).map(|(x, y)| x * f32::from(*y)).sum();
    acc.iter().sum::<f32>() + tail
}

/// A hint that `bytes` will be read soon: each of its cache lines is prefetched into every
/// cache level (a no-op on CPUs other than x86-64). Never faults, whatever the address.
#[inline]
pub fn prefetch(bytes: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        for line in bytes.chunks(64) {
            // SAFETY: a prefetch is a hint that never faults; SSE is part of x86-64.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(line.as_ptr().cast()) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = bytes;
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::{
        __m128i, _mm_add_ps, _mm_cvtss_f32, _mm_hadd_ps, _mm_loadl_epi64, _mm_loadu_si128,
        _mm256_add_ps, _mm256_castps256_ps128, _mm256_cvtepi32_ps, _mm256_cvtepu8_epi32,
        _mm256_extractf128_ps, _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_setzero_ps, _mm512_add_ps,
        _mm512_cvtepi32_ps, _mm512_cvtepu8_epi32, _mm512_fmadd_ps, _mm512_loadu_ps,
        _mm512_reduce_add_ps, _mm512_setzero_ps,
    };

    /// # Safety
    /// The CPU must have AVX-512 F; `w` and `codes` the same length.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn dot_codes_avx512(w: &[f32], codes: &[u8]) -> f32 {
        let n = w.len();
        let (pw, pc) = (w.as_ptr(), codes.as_ptr());
        let mut i = 0;
        // SAFETY: every load reads 16 floats and 16 bytes at `i < i + 16 <= n` of the slices.
        unsafe {
            let widen = |at: usize| {
                _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128(
                    pc.add(at).cast::<__m128i>(),
                )))
            };
            let (mut s0, mut s1, mut s2, mut s3) = (
                _mm512_setzero_ps(),
                _mm512_setzero_ps(),
                _mm512_setzero_ps(),
                _mm512_setzero_ps(),
            );
            while i + 64 <= n {
                s0 = _mm512_fmadd_ps(_mm512_loadu_ps(pw.add(i)), widen(i), s0);
                s1 = _mm512_fmadd_ps(_mm512_loadu_ps(pw.add(i + 16)), widen(i + 16), s1);
                s2 = _mm512_fmadd_ps(_mm512_loadu_ps(pw.add(i + 32)), widen(i + 32), s2);
                s3 = _mm512_fmadd_ps(_mm512_loadu_ps(pw.add(i + 48)), widen(i + 48), s3);
                i += 64;
            }
            while i + 16 <= n {
                s0 = _mm512_fmadd_ps(_mm512_loadu_ps(pw.add(i)), widen(i), s0);
                i += 16;
            }
            let sum =
                _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
            sum + super::dot_codes_portable(&w[i..], &codes[i..])
        }
    }

    /// # Safety
    /// The CPU must have AVX2 and FMA; `w` and `codes` the same length.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dot_codes_avx2(w: &[f32], codes: &[u8]) -> f32 {
        let n = w.len();
        let (pw, pc) = (w.as_ptr(), codes.as_ptr());
        let mut i = 0;
        // SAFETY: every load reads 8 floats and 8 bytes at `i < i + 8 <= n` of the slices.
        unsafe {
            let widen = |at: usize| {
                _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(
                    pc.add(at).cast::<__m128i>(),
                )))
            };
            let (mut s0, mut s1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
            while i + 16 <= n {
                s0 = _mm256_fmadd_ps(_mm256_loadu_ps(pw.add(i)), widen(i), s0);
                s1 = _mm256_fmadd_ps(_mm256_loadu_ps(pw.add(i + 8)), widen(i + 8), s1);
                i += 16;
            }
            while i + 8 <= n {
                s0 = _mm256_fmadd_ps(_mm256_loadu_ps(pw.add(i)), widen(i), s0);
                i += 8;
            }
            let s = _mm256_add_ps(s0, s1);
            let q = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps::<1>(s));
            let q = _mm_hadd_ps(q, q);
            let q = _mm_hadd_ps(q, q);
            _mm_cvtss_f32(q) + super::dot_codes_portable(&w[i..], &codes[i..])
        }
    }

    /// # Safety
    /// The CPU must have AVX-512 F; `a` and `b` the same length.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn dot_avx512(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len();
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut i = 0;
        // SAFETY: every load reads 16 floats at `i < i + 16 <= n` of both slices.
        unsafe {
            let (mut s0, mut s1, mut s2, mut s3) = (
                _mm512_setzero_ps(),
                _mm512_setzero_ps(),
                _mm512_setzero_ps(),
                _mm512_setzero_ps(),
            );
            while i + 64 <= n {
                s0 = _mm512_fmadd_ps(_mm512_loadu_ps(pa.add(i)), _mm512_loadu_ps(pb.add(i)), s0);
                s1 = _mm512_fmadd_ps(
                    _mm512_loadu_ps(pa.add(i + 16)),
                    _mm512_loadu_ps(pb.add(i + 16)),
                    s1,
                );
                s2 = _mm512_fmadd_ps(
                    _mm512_loadu_ps(pa.add(i + 32)),
                    _mm512_loadu_ps(pb.add(i + 32)),
                    s2,
                );
                s3 = _mm512_fmadd_ps(
                    _mm512_loadu_ps(pa.add(i + 48)),
                    _mm512_loadu_ps(pb.add(i + 48)),
                    s3,
                );
                i += 64;
            }
            while i + 16 <= n {
                s0 = _mm512_fmadd_ps(_mm512_loadu_ps(pa.add(i)), _mm512_loadu_ps(pb.add(i)), s0);
                i += 16;
            }
            let sum =
                _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
            sum + tail(&a[i..], &b[i..])
        }
    }

    /// # Safety
    /// The CPU must have AVX2 and FMA; `a` and `b` the same length.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len();
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut i = 0;
        // SAFETY: every load reads 8 floats at `i < i + 8 <= n` of both slices.
        unsafe {
            let (mut s0, mut s1, mut s2, mut s3) = (
                _mm256_setzero_ps(),
                _mm256_setzero_ps(),
                _mm256_setzero_ps(),
                _mm256_setzero_ps(),
            );
            while i + 32 <= n {
                s0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), s0);
                s1 = _mm256_fmadd_ps(
                    _mm256_loadu_ps(pa.add(i + 8)),
                    _mm256_loadu_ps(pb.add(i + 8)),
                    s1,
                );
                s2 = _mm256_fmadd_ps(
                    _mm256_loadu_ps(pa.add(i + 16)),
                    _mm256_loadu_ps(pb.add(i + 16)),
                    s2,
                );
                s3 = _mm256_fmadd_ps(
                    _mm256_loadu_ps(pa.add(i + 24)),
                    _mm256_loadu_ps(pb.add(i + 24)),
                    s3,
                );
                i += 32;
            }
            while i + 8 <= n {
                s0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), s0);
                i += 8;
            }
            let s = _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3));
            let q = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps::<1>(s));
            let q = _mm_hadd_ps(q, q);
            let q = _mm_hadd_ps(q, q);
            _mm_cvtss_f32(q) + tail(&a[i..], &b[i..])
        }
    }

    fn tail(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_matches_the_portable_sum_on_every_length() {
        for n in [0, 1, 7, 8, 15, 16, 17, 31, 33, 63, 64, 65, 100, 384, 385] {
            let a: Vec<f32> = (0..n)
                .map(|i| ((i * 37) % 11) as f32 / 11.0 - 0.4)
                .collect();
            let b: Vec<f32> = (0..n)
                .map(|i| ((i * 53) % 13) as f32 / 13.0 - 0.6)
                .collect();
            let (fast, slow) = (dot(&a, &b), dot_portable(&a, &b));
            assert!((fast - slow).abs() < 1e-4, "length {n}: {fast} vs {slow}");
        }
        // Different lengths: the common prefix.
        assert!((dot(&[1.0, 2.0, 3.0], &[4.0, 5.0]) - 14.0).abs() < 1e-6);
    }

    #[test]
    fn dot_codes_matches_the_portable_sum_on_every_length() {
        for n in [0, 1, 7, 8, 15, 16, 17, 31, 33, 63, 64, 65, 100, 384, 385] {
            let w: Vec<f32> = (0..n)
                .map(|i| ((i * 37) % 11) as f32 / 11.0 - 0.4)
                .collect();
            // Every code value, the extremes included.
            let c: Vec<u8> = (0..n).map(|i| ((i * 97) % 256) as u8).collect();
            let (fast, slow) = (dot_codes(&w, &c), dot_codes_portable(&w, &c));
            let exact: f64 = w
                .iter()
                .zip(&c)
                .map(|(a, b)| f64::from(*a) * f64::from(*b))
                .sum();
            assert!((fast - slow).abs() < 1e-2, "length {n}: {fast} vs {slow}");
            assert!(
                (f64::from(fast) - exact).abs() < 1e-2,
                "length {n}: {fast} vs {exact}"
            );
        }
        assert_eq!(dot_codes(&[0.5, 2.0, 3.0], &[255, 1]), 129.5);
        // Prefetching any slice is harmless.
        prefetch(&[0u8; 200]);
        prefetch(&[]);
    }
}
