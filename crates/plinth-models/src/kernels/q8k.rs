//! Activation quantization for the K-quant weight formats (Q4_K, Q6_K): an f32 row to
//! Q8_K-style blocks of 256, as llama.cpp's `q8_K`: one scale per block and the sums of each
//! 16 quantized values (`bsums`), which let a K-quant dot product apply its per-sub-block
//! offsets (Q4_K's mins, Q6_K's −32) with one integer multiply per 16 values.
//!
//! The scale rule is [`super::q8`]'s (`d = max|x| / 127`, `q = round(x·127/max|x|)`, ties to
//! even), so every path produces bit-identical blocks.

use super::Isa;
use plinth_core::Result;

/// Values per block.
pub const QK_K: usize = 256;

/// One quantized block of 256 activations.
#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(C)]
pub struct BlockQ8K {
    /// Scale: value ≈ `d * q`.
    pub d: f32,
    pub qs: [i8; QK_K],
    /// `bsums[j] = Σ qs[16j..16j + 16]` (|sum| ≤ 16·127, exact in i16).
    pub bsums: [i16; QK_K / 16],
}

impl Default for BlockQ8K {
    fn default() -> Self {
        BlockQ8K { d: 0.0, qs: [0; QK_K], bsums: [0; QK_K / 16] }
    }
}

impl super::ActBlock for BlockQ8K {
    const VALUES: usize = QK_K;
}

/// Quantizes `x` (length a multiple of 256) with a forced path; errors if the length is not a
/// multiple of 256 or the CPU lacks `isa`.
pub fn quantize_row_with(isa: Isa, x: &[f32]) -> Result<Vec<BlockQ8K>> {
    super::quantize_row(isa, x, quantize_into)
}

/// Quantizes `x` into `out` (`x.len() / 256` blocks).
pub fn quantize_into(isa: Isa, x: &[f32], out: &mut [BlockQ8K]) -> Result<()> {
    super::check_quantize::<BlockQ8K>("q8_K", isa, x.len(), out.len())?;
    match isa {
        Isa::Scalar => quantize_scalar(x, out),
        // SAFETY: `isa.supported()` checked above that the CPU has AVX2 (the VNNI path implies
        // it: `Isa::available` requires both).
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::Avx512Vnni => unsafe { quantize_avx2(x, out) },
        #[cfg(not(target_arch = "x86_64"))]
        _ => quantize_scalar(x, out),
    }
    Ok(())
}

/// The 16-value sums, in plain integer code on every path: they are exact whatever the order,
/// and this runs once per activation row (a few blocks), not per weight row.
fn fill_bsums(b: &mut BlockQ8K) {
    for (s, q) in b.bsums.iter_mut().zip(b.qs.chunks_exact(16)) {
        *s = q.iter().map(|&v| v as i16).sum();
    }
}

fn quantize_scalar(x: &[f32], out: &mut [BlockQ8K]) {
    for (xb, b) in x.chunks_exact(QK_K).zip(out.iter_mut()) {
        let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
        let (d, id) = super::q8::scales(amax);
        for (q, &v) in b.qs.iter_mut().zip(xb) {
            // `as i8` saturates (and maps NaN to 0); |v * id| <= 127 for finite input.
            *q = (v * id).round_ties_even() as i8;
        }
        b.d = d;
        fill_bsums(b);
    }
}

/// # Safety
/// The CPU must support AVX2 (callers check with [`Isa::supported`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn quantize_avx2(x: &[f32], out: &mut [BlockQ8K]) {
    use std::arch::x86_64::*;
    let sign = _mm256_set1_ps(-0.0);
    let perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    const RN: i32 = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
    for (xb, b) in x.chunks_exact(QK_K).zip(out.iter_mut()) {
        let p = xb.as_ptr();
        // SAFETY (all loads): `xb` has exactly 256 f32s, read as 32 unaligned groups of 8.
        let mut m = _mm256_setzero_ps();
        for k in 0..QK_K / 8 {
            m = _mm256_max_ps(m, _mm256_andnot_ps(sign, _mm256_loadu_ps(p.add(8 * k))));
        }
        let mut m4 = _mm_max_ps(_mm256_extractf128_ps(m, 1), _mm256_castps256_ps128(m));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        let (d, id) = super::q8::scales(_mm_cvtss_f32(m4));
        let mul = _mm256_set1_ps(id);
        for g in 0..QK_K / 32 {
            let mut i = [_mm256_setzero_si256(); 4];
            for (k, v) in i.iter_mut().enumerate() {
                *v = _mm256_cvtps_epi32(_mm256_round_ps::<RN>(_mm256_mul_ps(_mm256_loadu_ps(p.add(32 * g + 8 * k)), mul)));
            }
            let [i0, i1, i2, i3] = i;
            // packs work within 128-bit lanes; the permute restores element order.
            let v = _mm256_packs_epi16(_mm256_packs_epi32(i0, i1), _mm256_packs_epi32(i2, i3));
            let v = _mm256_permutevar8x32_epi32(v, perm);
            // SAFETY: `b.qs` has 256 bytes, this stores bytes 32g..32g+32, unaligned.
            _mm256_storeu_si256(b.qs.as_mut_ptr().add(32 * g) as *mut __m256i, v);
        }
        b.d = d;
        fill_bsums(b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::q4_1::tests::Rng;

    /// Every available path gives bit-identical blocks to the scalar reference, on rows with a
    /// zero block, exact .5 ties and outliers.
    #[test]
    fn q8k_paths_match_scalar_exactly() {
        let mut rng = Rng(7);
        for n in [256, 512, 1536, 4096 + 256] {
            let mut x: Vec<f32> = (0..n).map(|_| rng.normal() * 3.0).collect();
            if n >= 512 {
                x[..256].fill(0.0); // d = 0, q = 0
                // amax 127 → multiplier 1: values k + 0.5 are exact ties.
                for (i, v) in x[256..512].iter_mut().enumerate() {
                    *v = (i % 200) as f32 - 99.5;
                }
                x[300] = 127.0;
            }
            let want = quantize_row_with(Isa::Scalar, &x).unwrap();
            for isa in Isa::available() {
                assert_eq!(quantize_row_with(isa, &x).unwrap(), want, "{isa:?} n={n}");
            }
        }
    }

    /// Round trip |x − d·q| ≤ d/2 (plus f32 slack), and the bsums are the 16-value sums.
    #[test]
    fn q8k_round_trip_and_bsums() {
        let mut rng = Rng(11);
        let x: Vec<f32> = (0..1536).map(|_| rng.normal()).collect();
        let q = quantize_row_with(Isa::detect(), &x).unwrap();
        let mut worst = 0f32;
        for (xb, b) in x.chunks_exact(QK_K).zip(&q) {
            let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
            for (&v, &qv) in xb.iter().zip(&b.qs) {
                let err = (v - b.d * qv as f32).abs();
                assert!(err <= b.d / 2.0 + 1e-6 * amax, "err {err} d {}", b.d);
                worst = worst.max(err / b.d);
            }
            for j in 0..16 {
                assert_eq!(b.bsums[j] as i32, b.qs[16 * j..16 * j + 16].iter().map(|&v| v as i32).sum::<i32>());
            }
        }
        println!("q8_K round trip: max |x - dq| / d = {worst:.4} (bound 0.5)");
    }

    #[test]
    fn q8k_rejects_bad_length() {
        assert!(quantize_row_with(Isa::Scalar, &[0.0; 255]).is_err());
        assert!(quantize_into(Isa::Scalar, &[0.0; 256], &mut []).is_err());
    }
}
