//! Activation quantization: an f32 row to Q8_1-style blocks of 32, as llama.cpp's `q8_1`
//! (scale `d = max|x| / 127`, `q = round(x / d)`, and the block sum `s = d·Σq` that lets a
//! Q4_1 dot product add the weight's offset `m` with one multiply per block).
//!
//! The scale and sum are kept in f32 (llama.cpp rounds them to f16; f32 costs 4 bytes a block
//! on a row that lives in L1 and removes one rounding). Every path rounds ties to even and
//! multiplies by the same reciprocal, so all paths produce bit-identical blocks.

use super::Isa;
use plinth_core::Result;

/// Values per block.
pub const QK: usize = 32;

/// One quantized block of 32 activations.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[repr(C)]
pub struct BlockQ8 {
    /// Scale: value ≈ `d * q`.
    pub d: f32,
    /// `d * Σ qs`, so `Σ m * value ≈ m * s`.
    pub s: f32,
    pub qs: [i8; QK],
}
// The Q4_1 SIMD kernels load `d` and `s` together as one 8-byte value.
const _: () = assert!(std::mem::offset_of!(BlockQ8, s) == 4);

/// Quantizes `x` (length a multiple of 32) with the best path for this CPU.
pub fn quantize_row(x: &[f32]) -> Result<Vec<BlockQ8>> {
    quantize_row_with(Isa::detect(), x)
}

/// Quantizes `x` with a forced path; errors if `x.len()` is not a multiple of 32 or the CPU
/// lacks `isa`.
pub fn quantize_row_with(isa: Isa, x: &[f32]) -> Result<Vec<BlockQ8>> {
    super::quantize_row(isa, x, quantize_into)
}

/// Quantizes `x` into `out` (`x.len() / 32` blocks).
pub fn quantize_into(isa: Isa, x: &[f32], out: &mut [BlockQ8]) -> Result<()> {
    super::check_quantize::<BlockQ8>("q8", isa, x.len(), out.len())?;
    match isa {
        Isa::Scalar => quantize_scalar(x, out),
        // SAFETY: `isa.supported()` checked above that the CPU has AVX2 (and AVX-512 VNNI for
        // the second arm, which implies AVX2 here: `Isa::available` requires both).
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::Avx512Vnni => unsafe { quantize_avx2(x, out) },
        #[cfg(not(target_arch = "x86_64"))]
        _ => quantize_scalar(x, out),
    }
    Ok(())
}

/// The shared scale rule: `d = amax / 127` and the multiplier `127 / amax` (0 for a zero block).
#[inline]
pub(super) fn scales(amax: f32) -> (f32, f32) {
    let d = amax / 127.0;
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    (d, id)
}

fn quantize_scalar(x: &[f32], out: &mut [BlockQ8]) {
    for (xb, b) in x.chunks_exact(QK).zip(out.iter_mut()) {
        let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
        let (d, id) = scales(amax);
        let mut sum = 0i32;
        for (q, &v) in b.qs.iter_mut().zip(xb) {
            // `as i8` saturates (and maps NaN to 0); |v * id| <= 127 for finite input.
            *q = (v * id).round_ties_even() as i8;
            sum += *q as i32;
        }
        b.d = d;
        b.s = d * sum as f32;
    }
}

/// # Safety
/// The CPU must support AVX2 (callers check with [`Isa::supported`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn quantize_avx2(x: &[f32], out: &mut [BlockQ8]) {
    use std::arch::x86_64::*;
    let sign = _mm256_set1_ps(-0.0);
    let perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (xb, b) in x.chunks_exact(QK).zip(out.iter_mut()) {
        let p = xb.as_ptr();
        // SAFETY (all loads): `xb` has exactly 32 f32s, read as four unaligned groups of 8.
        let v0 = _mm256_loadu_ps(p);
        let v1 = _mm256_loadu_ps(p.add(8));
        let v2 = _mm256_loadu_ps(p.add(16));
        let v3 = _mm256_loadu_ps(p.add(24));
        let mut m = _mm256_andnot_ps(sign, v0);
        m = _mm256_max_ps(m, _mm256_andnot_ps(sign, v1));
        m = _mm256_max_ps(m, _mm256_andnot_ps(sign, v2));
        m = _mm256_max_ps(m, _mm256_andnot_ps(sign, v3));
        let mut m4 = _mm_max_ps(_mm256_extractf128_ps(m, 1), _mm256_castps256_ps128(m));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        let (d, id) = scales(_mm_cvtss_f32(m4));
        let mul = _mm256_set1_ps(id);
        const RN: i32 = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
        let i0 = _mm256_cvtps_epi32(_mm256_round_ps::<RN>(_mm256_mul_ps(v0, mul)));
        let i1 = _mm256_cvtps_epi32(_mm256_round_ps::<RN>(_mm256_mul_ps(v1, mul)));
        let i2 = _mm256_cvtps_epi32(_mm256_round_ps::<RN>(_mm256_mul_ps(v2, mul)));
        let i3 = _mm256_cvtps_epi32(_mm256_round_ps::<RN>(_mm256_mul_ps(v3, mul)));
        let s = _mm256_add_epi32(_mm256_add_epi32(i0, i1), _mm256_add_epi32(i2, i3));
        let s4 = _mm_add_epi32(_mm256_extracti128_si256(s, 1), _mm256_castsi256_si128(s));
        let s4 = _mm_add_epi32(s4, _mm_unpackhi_epi64(s4, s4));
        let s4 = _mm_add_epi32(s4, _mm_shuffle_epi32::<1>(s4));
        let sum = _mm_cvtsi128_si32(s4);
        // packs work within 128-bit lanes; the permute restores element order.
        let q = _mm256_packs_epi16(_mm256_packs_epi32(i0, i1), _mm256_packs_epi32(i2, i3));
        let q = _mm256_permutevar8x32_epi32(q, perm);
        // SAFETY: `b.qs` is 32 bytes; unaligned store.
        _mm256_storeu_si256(b.qs.as_mut_ptr() as *mut __m256i, q);
        b.d = d;
        b.s = d * sum as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::q4_1::tests::Rng;

    /// Every available path gives bit-identical blocks to the scalar reference, on rows with
    /// zero blocks, ties (x = k + 0.5 after scaling) and outliers.
    #[test]
    fn q8_paths_match_scalar_exactly() {
        let mut rng = Rng(7);
        for n in [32, 64, 576, 1536, 4128] {
            let mut x: Vec<f32> = (0..n).map(|_| rng.normal() * 3.0).collect();
            x[..32].fill(0.0); // an all-zero block: d = 0, q = 0
            if n >= 96 {
                // A block whose scaled values hit exact .5 ties: amax 127 → id 1.
                for (i, v) in x[64..96].iter_mut().enumerate() {
                    *v = i as f32 - 15.5;
                }
                x[95] = 127.0;
            }
            let want = quantize_row_with(Isa::Scalar, &x).unwrap();
            for isa in Isa::available() {
                assert_eq!(quantize_row_with(isa, &x).unwrap(), want, "{isa:?} n={n}");
            }
        }
    }

    /// Round trip: |x - d·q| <= d/2 per value (plus f32 slack of 1e-6·amax), and
    /// s == d·Σq exactly.
    #[test]
    fn q8_round_trip_bound() {
        let mut rng = Rng(11);
        let x: Vec<f32> = (0..1536).map(|_| rng.normal()).collect();
        let q = quantize_row(&x).unwrap();
        let mut worst = 0f32;
        for (xb, b) in x.chunks_exact(QK).zip(&q) {
            let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
            for (&v, &qv) in xb.iter().zip(&b.qs) {
                let err = (v - b.d * qv as f32).abs();
                assert!(err <= b.d / 2.0 + 1e-6 * amax, "err {err} d {}", b.d);
                worst = worst.max(err / b.d);
            }
            assert_eq!(b.s, b.d * b.qs.iter().map(|&q| q as i32).sum::<i32>() as f32);
        }
        println!("q8 round trip: max |x - dq| / d = {worst:.4} (bound 0.5)");
    }

    #[test]
    fn q8_rejects_bad_length() {
        assert!(quantize_row(&[0.0; 33]).is_err());
    }
}
