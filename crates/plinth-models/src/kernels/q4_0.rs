//! Q4_0 weight rows times Q8 activation rows, straight from GGML's block bytes.
//!
//! A Q4_0 block is 18 bytes: f16 `d`, then 16 bytes of nibbles, the low nibble of byte `j`
//! being element `j` and the high nibble element `j + 16`; element = `d·(q − 8)`. With the
//! activation block `(d_a, q_a)`, one block contributes `d·d_a·Σ((q − 8)·q_a)`, the sum taken
//! exactly in integers with the offset inside it: splitting it into `d·d_a·Σq·q_a − 8·d·s_a`
//! would subtract two floats that nearly cancel. Block results are summed in f32.

use super::q8::{BlockQ8, QK};
#[cfg(target_arch = "x86_64")]
use super::q8_0::{hsum_ps, scale};
use super::{f16_to_f32, Isa};

/// Bytes per block of 32 weights.
pub const BLOCK_BYTES: usize = 18;

row_kernel_dispatch!(BlockQ8);

/// The portable reference: exact integer block sums, f32 running sum.
fn dot_scalar(row: &[u8], x: &[BlockQ8]) -> f32 {
    let mut acc = 0f32;
    for (w, a) in row.chunks_exact(BLOCK_BYTES).zip(x) {
        let d = f16_to_f32(u16::from_le_bytes([w[0], w[1]]));
        let mut sumi = 0i32;
        for j in 0..QK / 2 {
            let b = w[2 + j];
            sumi += ((b & 0x0f) as i32 - 8) * a.qs[j] as i32 + ((b >> 4) as i32 - 8) * a.qs[j + QK / 2] as i32;
        }
        acc += d * a.d * sumi as f32;
    }
    acc
}

/// The 32 weights of the block at `p` as signed bytes `q − 8` (−8..=7), in element order.
///
/// # Safety
/// AVX2; `p` readable for 18 bytes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn weights(p: *const u8) -> std::arch::x86_64::__m256i {
    use std::arch::x86_64::*;
    let tmp = _mm_loadu_si128(p.add(2) as *const __m128i);
    let q = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16::<4>(tmp), tmp), _mm256_set1_epi8(0x0f));
    _mm256_sub_epi8(q, _mm256_set1_epi8(8))
}

/// AVX2: the sign trick on `w = q − 8`: `maddubs` wants an unsigned operand, so it multiplies
/// `|w|` (≤ 8) by `q_a` carrying `w`'s sign (`q_a` is in −127..=127, so negating it never
/// overflows): pairs ≤ 2·8·127, no saturation. Eight f32 lanes accumulate `d·d_a·partial`
/// (each partial exact in f32); two accumulators, alternating blocks, hide the FMA latency.
///
/// # Safety
/// AVX2 + FMA + F16C; `row.len() == 18 * x.len()`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_avx2(row: &[u8], x: &[BlockQ8]) -> f32 {
    use std::arch::x86_64::*;
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn block(p: *const u8, a: &BlockQ8, acc: __m256) -> __m256 {
        let w = weights(p);
        let qa = _mm256_loadu_si256(a.qs.as_ptr() as *const __m256i);
        let prod = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(qa, w));
        let prod = _mm256_madd_epi16(prod, _mm256_set1_epi16(1));
        _mm256_fmadd_ps(scale(p, a.d), _mm256_cvtepi32_ps(prod), acc)
    }
    let mut acc = [_mm256_setzero_ps(); 2];
    let p = row.as_ptr();
    let pairs = x.len() / 2;
    for i in 0..pairs {
        // SAFETY (all block reads): block `k < x.len()` lies at `18k..18k+18` of `row`.
        acc[0] = block(p.add(2 * i * BLOCK_BYTES), &x[2 * i], acc[0]);
        acc[1] = block(p.add((2 * i + 1) * BLOCK_BYTES), &x[2 * i + 1], acc[1]);
    }
    if x.len() % 2 == 1 {
        acc[0] = block(p.add(2 * pairs * BLOCK_BYTES), &x[2 * pairs], acc[0]);
    }
    hsum_ps(_mm256_add_ps(acc[0], acc[1]))
}

/// As [`dot_avx2`], with one `vpdpbusd` (256-bit) for the `|q − 8|·±q_a` products, which sums
/// groups of four straight into i32 lanes.
///
/// # Safety
/// AVX2 + FMA + F16C + AVX-512 F/VL/VNNI; `row.len() == 18 * x.len()`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512vnni")]
unsafe fn dot_vnni(row: &[u8], x: &[BlockQ8]) -> f32 {
    use std::arch::x86_64::*;
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512vnni")]
    #[inline]
    unsafe fn block(p: *const u8, a: &BlockQ8, acc: __m256) -> __m256 {
        let w = weights(p);
        let qa = _mm256_loadu_si256(a.qs.as_ptr() as *const __m256i);
        let prod = _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_sign_epi8(w, w), _mm256_sign_epi8(qa, w));
        _mm256_fmadd_ps(scale(p, a.d), _mm256_cvtepi32_ps(prod), acc)
    }
    let mut acc = [_mm256_setzero_ps(); 2];
    let p = row.as_ptr();
    let pairs = x.len() / 2;
    for i in 0..pairs {
        // SAFETY (all block reads): block `k < x.len()` lies at `18k..18k+18` of `row`.
        acc[0] = block(p.add(2 * i * BLOCK_BYTES), &x[2 * i], acc[0]);
        acc[1] = block(p.add((2 * i + 1) * BLOCK_BYTES), &x[2 * i + 1], acc[1]);
    }
    if x.len() % 2 == 1 {
        acc[0] = block(p.add(2 * pairs * BLOCK_BYTES), &x[2 * pairs], acc[0]);
    }
    hsum_ps(_mm256_add_ps(acc[0], acc[1]))
}

/// Q4_0 for the shared matmul driver.
pub(crate) const FORMAT: super::Format<BlockQ8> = super::Format { name: "q4_0", block_values: QK, block_bytes: BLOCK_BYTES, dot, dot4: None };

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::q8::quantize_row_with;
    use crate::kernels::q8_0::tests::act;
    use crate::kernels::testutil::{self, Case};
    use candle_core::quantized::GgmlDType;

    /// Elements of one block as `(d, q − 8, 0)`.
    fn unpack(b: &[u8]) -> Vec<(f32, i32, f32)> {
        let d = f16_to_f32(u16::from_le_bytes([b[0], b[1]]));
        let lo = b[2..].iter().map(|&q| (q & 0x0f) as i32 - 8);
        let hi = b[2..].iter().map(|&q| (q >> 4) as i32 - 8);
        lo.chain(hi).map(|q| (d, q, 0.0)).collect()
    }

    fn case() -> Case<BlockQ8> {
        Case { dtype: GgmlDType::Q4_0, format: &FORMAT, quantize: |isa, x| quantize_row_with(isa, x).unwrap(), act, unpack }
    }

    #[test]
    fn q4_0_layout_matches_candle_dequantize() {
        testutil::check_layout(&case(), 17, 576);
    }

    /// f32 rounding only, as for Q8_0 (at most 129 blocks here): tolerance 1e-5·Σ|terms|.
    #[test]
    fn q4_0_matmul_paths_match_reference() {
        testutil::check_paths(&case(), &[32, 64, 96, 576, 1536, 4096 + 32], 1e-5);
    }

    #[test]
    fn q4_0_matmul_close_to_f32() {
        testutil::check_close_to_f32(&case(), 100, 576);
    }

    #[test]
    fn q4_0_matmul_rejects_bad_shapes() {
        testutil::check_rejects(&case());
    }

    #[test]
    #[ignore]
    fn q4_0_kernel_speed() {
        testutil::speed(&case(), 1536, 576);
    }
}
