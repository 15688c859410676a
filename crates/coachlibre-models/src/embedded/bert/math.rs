//! Branch-free `exp` and GELU for the encoder: written so the compiler vectorises the loops
//! that call them (the standard library's `f32::exp` is a scalar call).

/// Lanes of the partial sums below: independent accumulators let the compiler use vector
/// registers (a plain `iter().sum()` of floats must add in order, one at a time), and the
/// lanes are then added pairwise ([`reduce`]), never one after the other.
const LANES: usize = 8;

/// The sum of the lanes, added as a tree (three vector steps, not seven dependent adds).
#[inline]
fn reduce(mut acc: [f32; LANES]) -> f32 {
    let mut width = LANES / 2;
    while width > 0 {
        for i in 0..width {
            acc[i] += acc[i + width];
        }
        width /= 2;
    }
    acc[0]
}

/// Σ aᵢ·bᵢ.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..LANES {
            acc[i] = x[i].mul_add(y[i], acc[i]);
        }
    }
    reduce(acc) + tail
}

/// Σ aᵢ.
#[inline]
pub fn sum(a: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let chunks = a.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().sum();
    for x in chunks {
        for i in 0..LANES {
            acc[i] += x[i];
        }
    }
    reduce(acc) + tail
}

/// Σ (aᵢ − mean)².
#[inline]
pub fn sum_sq_dev(a: &[f32], mean: f32) -> f32 {
    let mut acc = [0f32; LANES];
    let chunks = a.chunks_exact(LANES);
    let tail: f32 = chunks
        .remainder()
        .iter()
        .map(|v| (v - mean) * (v - mean))
        .sum();
    for x in chunks {
        for i in 0..LANES {
            acc[i] += (x[i] - mean) * (x[i] - mean);
        }
    }
    reduce(acc) + tail
}

/// max aᵢ (−∞ for an empty slice).
#[inline]
pub fn max(a: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = a.chunks_exact(LANES);
    let tail = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |m, v| m.max(*v));
    for x in chunks {
        for i in 0..LANES {
            acc[i] = acc[i].max(x[i]);
        }
    }
    acc.iter().fold(tail, |m, v| m.max(*v))
}

/// max |aᵢ| (0 for an empty slice; NaNs are skipped). Four vectors of lanes, compared with
/// a plain `>` (one `maxps`: `f32::max`'s NaN rule costs a compare and a blend per step).
#[inline]
pub fn max_abs(a: &[f32]) -> f32 {
    const WIDE: usize = 4 * LANES;
    let larger = |m: f32, v: f32| if v > m { v } else { m };
    let mut acc = [0f32; WIDE];
    let chunks = a.chunks_exact(WIDE);
    let tail = chunks
        .remainder()
        .iter()
        .fold(0f32, |m, v| larger(m, v.abs()));
    for x in chunks {
        for i in 0..WIDE {
            acc[i] = larger(acc[i], x[i].abs());
        }
    }
    acc.iter().fold(tail, |m, v| larger(m, *v))
}

/// e^x to about 2e-7 relative error over the range f32 can hold (inputs clamped to it).
#[inline]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    let x = x.clamp(-87.0, 88.0);
    let (n, ni) = round_to_int(x * LOG2E);
    let r = x - n * LN2_HI - n * LN2_LO;
    // Taylor series of e^r on |r| <= ln2/2, to degree 7.
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r / 5040.0))))));
    // 2^n through the exponent bits; n is in [-126, 127] after the clamp.
    p * f32::from_bits(((ni + 127) as u32) << 23)
}

/// `x` rounded to the nearest integer (ties to even), as a float and as an integer, for
/// |x| < 2²²: adding 1.5·2²³ leaves the rounded integer in the low mantissa bits. Unlike
/// `as i32` (a saturating conversion the compiler does one lane at a time), this vectorises.
#[inline]
pub fn round_to_int(x: f32) -> (f32, i32) {
    const MAGIC: f32 = 12_582_912.0;
    let t = x + MAGIC;
    (t - MAGIC, (t.to_bits() as i32).wrapping_sub(0x4B40_0000))
}

/// erf(x), Abramowitz & Stegun 7.1.26 (absolute error below 1.5e-7).
#[inline]
pub fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_74 + t * (1.421_413_7 + t * (-1.453_152 + t * 1.061_405_4))));
    (1.0 - poly * exp(-a * a)).copysign(x)
}

/// GELU as BERT defines it: x · Φ(x), with the exact (erf) normal CDF.
#[inline]
pub fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_the_standard_library() {
        let mut x = -80.0f32;
        while x < 80.0 {
            let (got, want) = (exp(x), x.exp());
            assert!(
                (got - want).abs() <= 4e-7 * want,
                "exp({x}) = {got}, want {want}"
            );
            x += 0.173;
        }
        assert_eq!(exp(-1000.0), exp(-87.0));
        assert!(exp(1000.0).is_finite());
    }

    #[test]
    fn rounding_to_integers() {
        for (x, want) in [
            (0.4f32, 0),
            (0.5, 0),
            (1.5, 2),
            (-2.5, -2),
            (-2.6, -3),
            (4095.2, 4095),
        ] {
            assert_eq!(round_to_int(x), (want as f32, want), "{x}");
        }
    }

    #[test]
    fn reductions_match_their_definitions() {
        let a: Vec<f32> = (0..37).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..37).map(|i| (i as f32 * 0.11).cos()).collect();
        let want_dot: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot(&a, &b) - want_dot).abs() < 1e-5);
        let want_sum: f32 = a.iter().sum();
        assert!((sum(&a) - want_sum).abs() < 1e-5);
        let mean = want_sum / 37.0;
        let want_dev: f32 = a.iter().map(|v| (v - mean) * (v - mean)).sum();
        assert!((sum_sq_dev(&a, mean) - want_dev).abs() < 1e-5);
        assert_eq!(max_abs(&a), a.iter().fold(0f32, |m, v| m.max(v.abs())));
        assert_eq!(max_abs(&[]), 0.0);
        assert_eq!(max(&a), a.iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v)));
        assert_eq!(max(&[]), f32::NEG_INFINITY);
        assert_eq!(dot(&[], &[]), 0.0);
    }

    #[test]
    fn gelu_matches_its_definition() {
        // Reference erf values (to 1e-9) at a few points.
        for (x, erf_x) in [
            (0.0f32, 0.0f64),
            (0.5, 0.520_499_878),
            (1.0, 0.842_700_793),
            (2.0, 0.995_322_265),
            (-1.5, -0.966_105_146),
        ] {
            assert!((f64::from(erf(x)) - erf_x).abs() < 3e-7, "erf({x})");
        }
        assert!((gelu(1.0) - 0.841_344_7).abs() < 1e-6);
        assert!((gelu(-3.0) - -0.004_049_7).abs() < 1e-6);
        assert_eq!(gelu(0.0), 0.0);
    }
}
