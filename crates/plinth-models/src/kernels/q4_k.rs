//! Q4_K weight rows times Q8_K activation rows, straight from GGML's block bytes.
//!
//! A Q4_K super-block is 144 bytes for 256 values: f16 `d`, f16 `dmin`, 12 bytes packing
//! eight 6-bit scales `sc` and eight 6-bit mins `m` (one pair per sub-block of 32), then 128
//! bytes of nibbles: byte `32c + l` holds element `64c + l` (low nibble, sub-block `2c`) and
//! `64c + 32 + l` (high nibble, sub-block `2c + 1`). Element = `d·sc·q − dmin·m`.
//!
//! With the activation block `(d_a, q_a, bsums)` one super-block contributes
//! `d·d_a·Σ_j sc_j·Σ(q·q_a) − dmin·d_a·Σ_j m_j·(bsum_2j + bsum_2j+1)`: both sums are exact
//! integers, then two multiplies. Results are summed in f32.

use super::q8k::{BlockQ8K, QK_K};
use super::{f16_to_f32, Isa};

/// Bytes per super-block of 256 weights.
pub const BLOCK_BYTES: usize = 144;

/// The eight 6-bit scales and mins from the 12 packed bytes: scales 0..4 are the low 6 bits of
/// bytes 0..4 and mins 0..4 of bytes 4..8; scales 4..8 take their low 4 bits from the low
/// nibbles of bytes 8..12 and their top 2 from the top bits of bytes 0..4, mins 4..8 the high
/// nibbles of bytes 8..12 and the top bits of bytes 4..8. Done four bytes at a time; returned
/// as two little-endian words of eight bytes (scales, mins), ready for a vector register.
#[inline]
fn scales_mins(s: &[u8]) -> (u64, u64) {
    let w = |i: usize| u32::from_le_bytes([s[4 * i], s[4 * i + 1], s[4 * i + 2], s[4 * i + 3]]);
    let (w0, w1, w2) = (w(0), w(1), w(2));
    let sc_hi = (w2 & 0x0f0f_0f0f) | ((w0 >> 6) & 0x0303_0303) << 4;
    let m_hi = ((w2 >> 4) & 0x0f0f_0f0f) | ((w1 >> 6) & 0x0303_0303) << 4;
    ((w0 & 0x3f3f_3f3f) as u64 | (sc_hi as u64) << 32, (w1 & 0x3f3f_3f3f) as u64 | (m_hi as u64) << 32)
}

row_kernel_dispatch!(BlockQ8K);

/// The portable reference: exact integer sums per super-block, f32 running sum.
fn dot_scalar(row: &[u8], x: &[BlockQ8K]) -> f32 {
    let mut acc = 0f32;
    for (w, a) in row.chunks_exact(BLOCK_BYTES).zip(x) {
        let d = f16_to_f32(u16::from_le_bytes([w[0], w[1]])) * a.d;
        let dmin = f16_to_f32(u16::from_le_bytes([w[2], w[3]])) * a.d;
        let (sc, m) = scales_mins(&w[4..16]);
        let (sc, m) = (sc.to_le_bytes(), m.to_le_bytes());
        let mut sumi = 0i32;
        for c in 0..4 {
            let (mut lo, mut hi) = (0i32, 0i32);
            for l in 0..32 {
                let b = w[16 + 32 * c + l];
                lo += (b & 0x0f) as i32 * a.qs[64 * c + l] as i32;
                hi += (b >> 4) as i32 * a.qs[64 * c + 32 + l] as i32;
            }
            sumi += sc[2 * c] as i32 * lo + sc[2 * c + 1] as i32 * hi;
        }
        let summ: i32 = (0..8).map(|j| m[j] as i32 * (a.bsums[2 * j] as i32 + a.bsums[2 * j + 1] as i32)).sum();
        acc += d * sumi as f32 - dmin * summ as f32;
    }
    acc
}

/// `acc + madd(p, s)`: pairs of i16 products summed into i32 lanes.
///
/// # Safety
/// AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn madd_acc_avx2(acc: std::arch::x86_64::__m256i, p: std::arch::x86_64::__m256i, s: std::arch::x86_64::__m256i) -> std::arch::x86_64::__m256i {
    use std::arch::x86_64::*;
    _mm256_add_epi32(acc, _mm256_madd_epi16(p, s))
}

/// The same in one `vpdpwssd` (256-bit).
///
/// # Safety
/// AVX-512 F/VL/VNNI.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,avx512f,avx512vl,avx512vnni")]
#[inline]
unsafe fn madd_acc_vnni(acc: std::arch::x86_64::__m256i, p: std::arch::x86_64::__m256i, s: std::arch::x86_64::__m256i) -> std::arch::x86_64::__m256i {
    use std::arch::x86_64::*;
    _mm256_dpwssd_epi32(acc, p, s)
}

/// The SIMD kernels, one body for two instruction sets (they differ only in how scaled i16
/// pairs are accumulated, `$madd_acc`). Per super-block: nibbles × `q_a` by `maddubs` (u8 ≤ 15
/// times i8: pairs ≤ 2·15·127, no saturation), each sub-block's i16 pairs times its scale
/// (≤ 63; the eight scales widened to i16 once, each broadcast by a byte shuffle) into eight
/// i32 lanes (each ≤ 8·2·3810·63 < 2²⁴, so exact in f32 too); the mins by
/// one `madd` of the 16 bsums with the mins repeated pairwise (m₀ m₀ m₁ m₁ …), which yields
/// `m_j·(bsum_2j + bsum_2j+1)` per lane. Eight f32 lanes then take `d·d_a·sumi` and
/// `−dmin·d_a·summ` by FMA.
macro_rules! q4k_simd {
    ($(#[$doc:meta])* $name:ident, $features:literal, $madd_acc:ident) => {
        $(#[$doc])*
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $features)]
        unsafe fn $name(row: &[u8], x: &[BlockQ8K]) -> f32 {
            use std::arch::x86_64::*;
            let nib = _mm256_set1_epi8(0x0f);
            let mut acc = _mm256_setzero_ps();
            for (i, a) in x.iter().enumerate() {
                // SAFETY (all reads): super-block `i < x.len()` lies at `144i..144i+144` of
                // `row`; `a.qs` (256 bytes) and `a.bsums` (32 bytes) are read within bounds.
                let p = row.as_ptr().add(i * BLOCK_BYTES);
                let dm = _mm_mul_ps(_mm_cvtph_ps(_mm_cvtsi32_si128((p as *const i32).read_unaligned())), _mm_set1_ps(a.d));
                let d = _mm256_broadcastss_ps(dm);
                let dmin = _mm256_broadcastss_ps(_mm_movehdup_ps(dm));
                let (sc, m) = scales_mins(std::slice::from_raw_parts(p.add(4), 12));
                let sc16 = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(_mm_cvtsi64_si128(sc as i64)));
                let mv = _mm_cvtsi64_si128(m as i64);
                let mv = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(mv, mv));
                let summ = _mm256_madd_epi16(_mm256_loadu_si256(a.bsums.as_ptr() as *const __m256i), mv);
                let mut sumi = _mm256_setzero_si256();
                for c in 0..4 {
                    let qb = _mm256_loadu_si256(p.add(16 + 32 * c) as *const __m256i);
                    let lo = _mm256_and_si256(qb, nib);
                    let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(qb), nib);
                    let a_lo = _mm256_loadu_si256(a.qs.as_ptr().add(64 * c) as *const __m256i);
                    let a_hi = _mm256_loadu_si256(a.qs.as_ptr().add(64 * c + 32) as *const __m256i);
                    // i16 scale `j` is bytes 2j, 2j+1 of `sc16`: sub-blocks 2c and 2c + 1.
                    let s_lo = _mm256_shuffle_epi8(sc16, _mm256_set1_epi16(((4 * c + 1) << 8 | 4 * c) as i16));
                    let s_hi = _mm256_shuffle_epi8(sc16, _mm256_set1_epi16(((4 * c + 3) << 8 | (4 * c + 2)) as i16));
                    sumi = $madd_acc(sumi, _mm256_maddubs_epi16(lo, a_lo), s_lo);
                    sumi = $madd_acc(sumi, _mm256_maddubs_epi16(hi, a_hi), s_hi);
                }
                acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sumi), acc);
                acc = _mm256_fnmadd_ps(dmin, _mm256_cvtepi32_ps(summ), acc);
            }
            super::q8_0::hsum_ps(acc)
        }
    };
}

q4k_simd!(
    /// AVX2 + FMA + F16C (`maddubs` + `madd`).
    ///
    /// # Safety
    /// AVX2 + FMA + F16C; `row.len() == 144 * x.len()`.
    dot_avx2,
    "avx2,fma,f16c",
    madd_acc_avx2
);
q4k_simd!(
    /// As [`dot_avx2`], the scaled pairs accumulated by `vpdpwssd` (256-bit).
    ///
    /// # Safety
    /// AVX2 + FMA + F16C + AVX-512 F/VL/VNNI; `row.len() == 144 * x.len()`.
    dot_vnni,
    "avx2,fma,f16c,avx512f,avx512vl,avx512vnni",
    madd_acc_vnni
);

/// Q4_K for the shared matmul driver.
pub(crate) const FORMAT: super::Format<BlockQ8K> = super::Format { name: "q4_K", block_values: QK_K, block_bytes: BLOCK_BYTES, dot, dot4: None };

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::kernels::q8k::quantize_row_with;
    use crate::kernels::testutil::{self, Case};
    use candle_core::quantized::GgmlDType;

    /// Scale and min `j` of the 12 packed bytes, one at a time (written apart from
    /// [`scales_mins`], which this checks).
    fn scale_min(j: usize, s: &[u8]) -> (u8, u8) {
        if j < 4 {
            (s[j] & 63, s[j + 4] & 63)
        } else {
            ((s[j + 4] & 0x0f) | ((s[j - 4] >> 6) << 4), (s[j + 4] >> 4) | ((s[j] >> 6) << 4))
        }
    }

    /// Elements of one super-block as `(d·sc, q, dmin·m)`.
    fn unpack(b: &[u8]) -> Vec<(f32, i32, f32)> {
        let d = f16_to_f32(u16::from_le_bytes([b[0], b[1]]));
        let dmin = f16_to_f32(u16::from_le_bytes([b[2], b[3]]));
        let mut v = Vec::with_capacity(QK_K);
        for c in 0..4 {
            for (j, shift) in [(2 * c, 0), (2 * c + 1, 4)] {
                let (sc, m) = scale_min(j, &b[4..16]);
                for l in 0..32 {
                    v.push((d * sc as f32, ((b[16 + 32 * c + l] >> shift) & 0x0f) as i32, dmin * m as f32));
                }
            }
        }
        v
    }

    pub(crate) fn act(xs: &[BlockQ8K]) -> Vec<f64> {
        xs.iter().flat_map(|b| b.qs.iter().map(move |&q| b.d as f64 * q as f64)).collect()
    }

    fn case() -> Case<BlockQ8K> {
        Case { dtype: GgmlDType::Q4K, format: &FORMAT, quantize: |isa, x| quantize_row_with(isa, x).unwrap(), act, unpack }
    }

    #[test]
    fn q4_k_scales_unpack_every_bit() {
        let mut rng = crate::kernels::q4_1::tests::Rng(2);
        for _ in 0..1000 {
            let s: Vec<u8> = (0..12).map(|_| rng.next() as u8).collect();
            let (sc, m) = scales_mins(&s);
            let (sc, m) = (sc.to_le_bytes(), m.to_le_bytes());
            for j in 0..8 {
                assert_eq!((sc[j], m[j]), scale_min(j, &s), "{s:?} j {j}");
            }
        }
    }

    #[test]
    fn q4_k_layout_matches_candle_dequantize() {
        testutil::check_layout(&case(), 17, 512);
    }

    /// f32 rounding only: `d·d_a` and `dmin·d_a`, the two lane products (whose parts can
    /// cancel: the tolerance is relative to Σ(|d·sc·q| + |dmin·m|)·|a|), and a sum over at most
    /// 17 super-blocks: tolerance 1e-5·Σ|terms|.
    #[test]
    fn q4_k_matmul_paths_match_reference() {
        testutil::check_paths(&case(), &[256, 512, 1536, 4096 + 256], 1e-5);
    }

    #[test]
    fn q4_k_matmul_close_to_f32() {
        testutil::check_close_to_f32(&case(), 100, 1536);
    }

    #[test]
    fn q4_k_matmul_rejects_bad_shapes() {
        testutil::check_rejects(&case());
    }

    /// SmolLM2's MLP down projection, `[576, 1536]` (its 576-wide inputs are not a multiple of
    /// 256, so K-quant files store those matrices in other formats).
    #[test]
    #[ignore]
    fn q4_k_kernel_speed() {
        testutil::speed(&case(), 576, 1536);
        testutil::speed(&case(), 1536, 1536);
    }
}
