//! Q8_0 weight rows times Q8 activation rows, straight from GGML's block bytes (SmolLM2's tied
//! output projection is Q8_0: the largest matrix of a decode step).
//!
//! A Q8_0 block is 34 bytes: f16 `d`, then 32 `i8` values; element = `d·q`. With the
//! activation block `(d_a, q_a)`, one block contributes `d·d_a·Σ(q·q_a)`: an exact integer
//! dot product (|Σ| ≤ 32·128·127 < 2³¹) and one multiply. Block results are summed in f32.

use super::q8::{BlockQ8, QK};
use super::{f16_to_f32, Isa};

/// Bytes per block of 32 weights.
pub const BLOCK_BYTES: usize = 34;

row_kernel_dispatch!(BlockQ8);

/// The portable reference: exact integer block sums, f32 running sum.
fn dot_scalar(row: &[u8], x: &[BlockQ8]) -> f32 {
    let mut acc = 0f32;
    for (w, a) in row.chunks_exact(BLOCK_BYTES).zip(x) {
        let d = f16_to_f32(u16::from_le_bytes([w[0], w[1]]));
        let sumi: i32 = w[2..].iter().zip(&a.qs).map(|(&q, &qa)| q as i8 as i32 * qa as i32).sum();
        acc += d * a.d * sumi as f32;
    }
    acc
}

/// `d_w·d_a` broadcast to 8 lanes (`p` points at a block's f16 scale).
///
/// # Safety
/// AVX2 + F16C; `p` readable for 2 bytes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) unsafe fn scale(p: *const u8, d_a: f32) -> std::arch::x86_64::__m256 {
    use std::arch::x86_64::*;
    let dw = _mm_cvtph_ps(_mm_cvtsi32_si128((p as *const u16).read_unaligned() as i32));
    _mm256_broadcastss_ps(_mm_mul_ss(dw, _mm_set_ss(d_a)))
}

/// Sum of the 8 lanes.
///
/// # Safety
/// AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
pub(super) unsafe fn hsum_ps(v: std::arch::x86_64::__m256) -> f32 {
    use std::arch::x86_64::*;
    let s = _mm_add_ps(_mm256_extractf128_ps::<1>(v), _mm256_castps256_ps128(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
}

/// AVX2: the sign trick: `maddubs` wants an unsigned operand, so it multiplies `|w|` (a `u8`,
/// 128 for `w = −128`) by `q_a` carrying `w`'s sign (`q_a` is in −127..=127, so negating it
/// never overflows): pairs ≤ 2·128·127 < i16::MAX, no saturation. Eight f32 lanes accumulate
/// `d·d_a·partial` (each partial < 2²⁴, exact in f32); two accumulators, alternating blocks,
/// hide the FMA latency.
///
/// # Safety
/// AVX2 + FMA + F16C; `row.len() == 34 * x.len()`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_avx2(row: &[u8], x: &[BlockQ8]) -> f32 {
    use std::arch::x86_64::*;
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn block(p: *const u8, a: &BlockQ8, acc: __m256) -> __m256 {
        let w = _mm256_loadu_si256(p.add(2) as *const __m256i);
        let qa = _mm256_loadu_si256(a.qs.as_ptr() as *const __m256i);
        let prod = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(qa, w));
        let prod = _mm256_madd_epi16(prod, _mm256_set1_epi16(1));
        _mm256_fmadd_ps(scale(p, a.d), _mm256_cvtepi32_ps(prod), acc)
    }
    let mut acc = [_mm256_setzero_ps(); 2];
    let p = row.as_ptr();
    let pairs = x.len() / 2;
    for i in 0..pairs {
        // SAFETY (all block reads): block `k < x.len()` lies at `34k..34k+34` of `row`.
        acc[0] = block(p.add(2 * i * BLOCK_BYTES), &x[2 * i], acc[0]);
        acc[1] = block(p.add((2 * i + 1) * BLOCK_BYTES), &x[2 * i + 1], acc[1]);
    }
    if x.len() % 2 == 1 {
        acc[0] = block(p.add(2 * pairs * BLOCK_BYTES), &x[2 * pairs], acc[0]);
    }
    hsum_ps(_mm256_add_ps(acc[0], acc[1]))
}

/// As [`dot_avx2`], with one `vpdpbusd` (256-bit) for the `|w|·±q_a` products, which sums
/// groups of four straight into i32 lanes (no i16 stage, nothing saturates).
///
/// # Safety
/// AVX2 + FMA + F16C + AVX-512 F/VL/VNNI; `row.len() == 34 * x.len()`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512vnni")]
unsafe fn dot_vnni(row: &[u8], x: &[BlockQ8]) -> f32 {
    use std::arch::x86_64::*;
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512vnni")]
    #[inline]
    unsafe fn block(p: *const u8, a: &BlockQ8, acc: __m256) -> __m256 {
        let w = _mm256_loadu_si256(p.add(2) as *const __m256i);
        let qa = _mm256_loadu_si256(a.qs.as_ptr() as *const __m256i);
        let prod = _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_sign_epi8(w, w), _mm256_sign_epi8(qa, w));
        _mm256_fmadd_ps(scale(p, a.d), _mm256_cvtepi32_ps(prod), acc)
    }
    let mut acc = [_mm256_setzero_ps(); 2];
    let p = row.as_ptr();
    let pairs = x.len() / 2;
    for i in 0..pairs {
        // SAFETY (all block reads): block `k < x.len()` lies at `34k..34k+34` of `row`.
        acc[0] = block(p.add(2 * i * BLOCK_BYTES), &x[2 * i], acc[0]);
        acc[1] = block(p.add((2 * i + 1) * BLOCK_BYTES), &x[2 * i + 1], acc[1]);
    }
    if x.len() % 2 == 1 {
        acc[0] = block(p.add(2 * pairs * BLOCK_BYTES), &x[2 * pairs], acc[0]);
    }
    hsum_ps(_mm256_add_ps(acc[0], acc[1]))
}

/// Q8_0 for the shared matmul driver.
pub(crate) const FORMAT: super::Format<BlockQ8> = super::Format { name: "q8_0", block_values: QK, block_bytes: BLOCK_BYTES, dot, dot4: None };

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::kernels::q8::quantize_row_with;
    use crate::kernels::testutil::{self, Case};
    use candle_core::quantized::GgmlDType;

    /// Elements of one block as `(d, q, 0)`.
    fn unpack(b: &[u8]) -> Vec<(f32, i32, f32)> {
        let d = f16_to_f32(u16::from_le_bytes([b[0], b[1]]));
        b[2..BLOCK_BYTES].iter().map(|&q| (d, q as i8 as i32, 0.0)).collect()
    }

    pub(crate) fn act(xs: &[BlockQ8]) -> Vec<f64> {
        xs.iter().flat_map(|b| b.qs.iter().map(move |&q| b.d as f64 * q as f64)).collect()
    }

    fn case() -> Case<BlockQ8> {
        Case { dtype: GgmlDType::Q8_0, format: &FORMAT, quantize: |isa, x| quantize_row_with(isa, x).unwrap(), act, unpack }
    }

    #[test]
    fn q8_0_layout_matches_candle_dequantize() {
        testutil::check_layout(&case(), 17, 576);
    }

    /// f32 rounding only: `d·d_a` (1 rounding), the lane products, and a running sum over at
    /// most 129 blocks here (≤ 8 lanes' worth each, then 3 lane additions): well under
    /// 1e-5·Σ|terms| (≈ 168 roundings of 2⁻²⁴ would be needed to reach it).
    #[test]
    fn q8_0_matmul_paths_match_reference() {
        testutil::check_paths(&case(), &[32, 64, 96, 576, 1536, 4096 + 32], 1e-5);
    }

    #[test]
    fn q8_0_matmul_close_to_f32() {
        testutil::check_close_to_f32(&case(), 100, 576);
    }

    #[test]
    fn q8_0_matmul_rejects_bad_shapes() {
        testutil::check_rejects(&case());
    }

    /// A -128 weight (legal in GGUF files, though candle's quantizer never writes one) takes
    /// the sign trick's edge: |−128| is 128 as an unsigned byte.
    #[test]
    fn q8_0_handles_minus_128() {
        let mut row = vec![0u8; 2 * BLOCK_BYTES];
        for (k, b) in row.chunks_exact_mut(BLOCK_BYTES).enumerate() {
            b[..2].copy_from_slice(&[0x00, 0x3c]); // d = 1.0
            for (j, q) in b[2..].iter_mut().enumerate() {
                *q = if (j + k) % 3 == 0 { 0x80 } else { (j as i8 - 16) as u8 };
            }
        }
        let x: Vec<f32> = (0..64).map(|i| ((i * 37) % 255) as f32 - 127.0).collect();
        let xs = quantize_row_with(Isa::Scalar, &x).unwrap();
        let (mut want, mut mag) = (0f64, 0f64);
        for ((s, q, _), a) in row.chunks_exact(BLOCK_BYTES).flat_map(unpack).zip(act(&xs)) {
            want += s as f64 * q as f64 * a;
            mag += (s as f64 * q as f64 * a).abs();
        }
        for isa in Isa::available() {
            let mut out = [0f32];
            crate::kernels::matmul_rows(&FORMAT, isa, &row, 1, 64, &xs, &mut out).unwrap();
            assert!((out[0] as f64 - want).abs() <= 1e-6 * mag, "{isa:?}: {} vs {want}", out[0]);
        }
    }

    #[test]
    #[ignore]
    fn q8_0_kernel_speed() {
        testutil::speed(&case(), 1536, 576);
        testutil::speed(&case(), 49152, 576);
    }
}
