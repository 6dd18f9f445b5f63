//! Activation quantization to 16 bits: an f32 row to blocks of 32 `i16` with one f32 scale
//! (`d = max|x| / 32767`, `q = round(x / d)`), the block sum `s = d·Σq` and the exact `Σq`.
//!
//! Why 16 and not 8 bits (llama.cpp's `q8_1`): every linear layer's input is requantized, and
//! with 8 bits a tiny change anywhere (the order of two float additions) flips the rounding of
//! some activations by a whole step of `max|x| / 127`; over 30 layers and a 500-token passage
//! that moved SmolLM2's decode perplexity by -0.1 % to +1.0 % between equally valid summation
//! orders. At 16 bits the step is 258 times smaller and the kernels agree with the f32
//! reference instead. The products cost the same: `vpdpwssd` / `pmaddwd` take 16 pairs of i16
//! where `vpdpbusd` takes 32 pairs of i8, and a 4-bit weight is widened either way.
//!
//! Every path rounds ties to even and multiplies by the same reciprocal, so all paths produce
//! bit-identical blocks.

use super::{ActBlock, Isa};
use plinth_core::Result;

/// Values per block.
pub const QK: usize = 32;

/// One quantized block of 32 activations.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[repr(C)]
pub struct BlockQ16 {
    /// Scale: value ≈ `d * q`.
    pub d: f32,
    /// `d * Σ qs`.
    pub s: f32,
    /// `Σ qs`, exact (lets a kernel recentre 4-bit weights once per row of blocks).
    pub isum: i32,
    pub qs: [i16; QK],
}

impl ActBlock for BlockQ16 {
    const VALUES: usize = QK;
}

/// Quantizes `x` (length a multiple of 32) into `out` (`x.len() / 32` blocks) with `isa`.
pub fn quantize_into(isa: Isa, x: &[f32], out: &mut [BlockQ16]) -> Result<()> {
    super::check_quantize::<BlockQ16>("q16", isa, x.len(), out.len())?;
    match isa {
        Isa::Scalar => quantize_scalar(x, out),
        // SAFETY: `isa.supported()` checked above that the CPU has AVX2 (both SIMD paths
        // require it, see `Isa::available`).
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::Avx512Vnni => unsafe { quantize_avx2(x, out) },
        #[cfg(not(target_arch = "x86_64"))]
        _ => quantize_scalar(x, out),
    }
    Ok(())
}

/// Quantizes `x` with a forced path into new blocks.
pub fn quantize_row_with(isa: Isa, x: &[f32]) -> Result<Vec<BlockQ16>> {
    super::quantize_row(isa, x, quantize_into)
}

/// `d = amax / 32767` and the multiplier `32767 / amax` (0 for a zero block).
#[inline]
fn scales(amax: f32) -> (f32, f32) {
    let d = amax / 32767.0;
    let id = if amax != 0.0 { 32767.0 / amax } else { 0.0 };
    (d, id)
}

fn quantize_scalar(x: &[f32], out: &mut [BlockQ16]) {
    for (xb, b) in x.chunks_exact(QK).zip(out.iter_mut()) {
        let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
        let (d, id) = scales(amax);
        let mut sum = 0i32;
        for (q, &v) in b.qs.iter_mut().zip(xb) {
            // `as i16` saturates (and maps NaN to 0); |v * id| <= 32767 for finite input.
            *q = (v * id).round_ties_even() as i16;
            sum += *q as i32;
        }
        b.d = d;
        b.s = d * sum as f32;
        b.isum = sum;
    }
}

/// # Safety
/// The CPU must support AVX2 (callers check with [`Isa::supported`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn quantize_avx2(x: &[f32], out: &mut [BlockQ16]) {
    use std::arch::x86_64::*;
    let sign = _mm256_set1_ps(-0.0);
    for (xb, b) in x.chunks_exact(QK).zip(out.iter_mut()) {
        let p = xb.as_ptr();
        // SAFETY (all loads): `xb` has exactly 32 f32s, read as four unaligned groups of 8.
        let v = [_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8)), _mm256_loadu_ps(p.add(16)), _mm256_loadu_ps(p.add(24))];
        let mut m = _mm256_andnot_ps(sign, v[0]);
        for vi in &v[1..] {
            m = _mm256_max_ps(m, _mm256_andnot_ps(sign, *vi));
        }
        let mut m4 = _mm_max_ps(_mm256_extractf128_ps(m, 1), _mm256_castps256_ps128(m));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        let (d, id) = scales(_mm_cvtss_f32(m4));
        let mul = _mm256_set1_ps(id);
        const RN: i32 = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
        let i: [__m256i; 4] = std::array::from_fn(|k| _mm256_cvtps_epi32(_mm256_round_ps::<RN>(_mm256_mul_ps(v[k], mul))));
        let s = _mm256_add_epi32(_mm256_add_epi32(i[0], i[1]), _mm256_add_epi32(i[2], i[3]));
        let s4 = _mm_add_epi32(_mm256_extracti128_si256(s, 1), _mm256_castsi256_si128(s));
        let s4 = _mm_add_epi32(s4, _mm_unpackhi_epi64(s4, s4));
        let sum = _mm_cvtsi128_si32(_mm_add_epi32(s4, _mm_shuffle_epi32::<1>(s4)));
        // packs work within 128-bit lanes: [0..4, 8..12 | 4..8, 12..16]; the permute of
        // 64-bit quarters restores element order.
        let q01 = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packs_epi32(i[0], i[1]));
        let q23 = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packs_epi32(i[2], i[3]));
        // SAFETY: `b.qs` is 64 bytes; unaligned stores.
        _mm256_storeu_si256(b.qs.as_mut_ptr() as *mut __m256i, q01);
        _mm256_storeu_si256(b.qs.as_mut_ptr().add(16) as *mut __m256i, q23);
        b.d = d;
        b.s = d * sum as f32;
        b.isum = sum;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::q4_1::tests::Rng;

    /// Every available path gives bit-identical blocks to the scalar reference, on rows with
    /// zero blocks, exact ties and outliers.
    #[test]
    fn q16_paths_match_scalar_exactly() {
        let mut rng = Rng(7);
        for n in [32, 64, 576, 1536, 4128] {
            let mut x: Vec<f32> = (0..n).map(|_| rng.normal() * 3.0).collect();
            x[..32].fill(0.0);
            if n >= 96 {
                // amax 32767 → id 1: values k + 0.5 are exact ties.
                for (i, v) in x[64..96].iter_mut().enumerate() {
                    *v = i as f32 - 15.5;
                }
                x[95] = 32767.0;
            }
            let want = quantize_row_with(Isa::Scalar, &x).unwrap();
            for isa in Isa::available() {
                assert_eq!(quantize_row_with(isa, &x).unwrap(), want, "{isa:?} n={n}");
            }
        }
    }

    /// |x - d·q| <= d/2 (plus f32 slack), isum = Σq and s = d·Σq.
    #[test]
    fn q16_round_trip_bound() {
        let mut rng = Rng(11);
        let x: Vec<f32> = (0..1536).map(|_| rng.normal()).collect();
        let q = quantize_row_with(Isa::detect(), &x).unwrap();
        for (xb, b) in x.chunks_exact(QK).zip(&q) {
            let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
            for (&v, &qv) in xb.iter().zip(&b.qs) {
                assert!((v - b.d * qv as f32).abs() <= b.d / 2.0 + 1e-6 * amax);
            }
            let sum: i32 = b.qs.iter().map(|&q| q as i32).sum();
            assert_eq!((b.isum, b.s), (sum, b.d * sum as f32));
        }
    }

    #[test]
    fn q16_rejects_bad_length() {
        assert!(quantize_row_with(Isa::Scalar, &[0.0; 33]).is_err());
    }
}
