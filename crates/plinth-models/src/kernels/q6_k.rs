//! Q6_K weight rows times Q8_K activation rows, straight from GGML's block bytes.
//!
//! A Q6_K super-block is 210 bytes for 256 values: `ql[128]` (low 4 bits), `qh[64]` (high 2
//! bits), sixteen `i8` scales (one per sub-block of 16), then f16 `d`; element = `d·sc·(q − 32)`
//! with `q` in 0..64. Each half `h` of 128 values uses `ql[64h..64h+64]` and `qh[32h..32h+32]`:
//! for `l < 32`, element `128h + l` is the low nibble of `ql[64h + l]` with bits 0–1 of
//! `qh[32h + l]`, `+32` the low nibble of `ql[64h + 32 + l]` with bits 2–3, `+64` the high
//! nibble of `ql[64h + l]` with bits 4–5, `+96` the high nibble of `ql[64h + 32 + l]` with
//! bits 6–7.
//!
//! With the activation block `(d_a, q_a, bsums)` one super-block contributes
//! `d·d_a·Σ_s sc_s·(Σ q·q_a − 32·bsum_s)`, one exact integer, then one multiply. Results are
//! summed in f32.

use super::q8k::{BlockQ8K, QK_K};
use super::{f16_to_f32, Isa};

/// Bytes per super-block of 256 weights.
pub const BLOCK_BYTES: usize = 210;

row_kernel_dispatch!(BlockQ8K);

/// The portable reference: one exact integer per super-block (|Σ| ≤ 256·32·127·128 < 2³¹),
/// f32 running sum.
fn dot_scalar(row: &[u8], x: &[BlockQ8K]) -> f32 {
    let mut acc = 0f32;
    for (w, a) in row.chunks_exact(BLOCK_BYTES).zip(x) {
        let (ql, qh, sc) = (&w[..128], &w[128..192], &w[192..208]);
        let d = f16_to_f32(u16::from_le_bytes([w[208], w[209]])) * a.d;
        let mut sumi = 0i32;
        // Sub-block `s` (16 values) of group `k` (32 values) of half `h`; one sub-block per
        // inner loop, so the compiler can vectorize it.
        for (s, &scale) in sc.iter().enumerate() {
            let (h, k, l0) = (s / 8, s / 2 % 4, 16 * (s % 2));
            let mut isum = 0i32;
            for l in l0..l0 + 16 {
                let lq = ql[64 * h + 32 * (k % 2) + l] >> (4 * (k / 2)) & 0x0f;
                let hq = qh[32 * h + l] >> (2 * k) & 3;
                isum += (lq | hq << 4) as i32 * a.qs[128 * h + 32 * k + l] as i32;
            }
            sumi += scale as i8 as i32 * (isum - 32 * a.bsums[s] as i32);
        }
        acc += d * sumi as f32;
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
/// pairs are accumulated, `$madd_acc`). Per 32 values: the 6-bit `q` (0..64, unsigned) ×
/// `q_a` by `maddubs` (pairs ≤ 2·63·127, no saturation), then the i16 pairs times their
/// sub-block's scale (first 16 values one scale, last 16 the next; the scales widened to i16
/// once per super-block and spread by byte shuffles) into eight i32 lanes. The
/// −32 offset is `32·Σ_s sc_s·bsum_s`, one `madd` of the 16 bsums with the 16 scales,
/// subtracted lane-wise: every lane stays an exact integer (|lane| < 2³¹), converted once per
/// super-block and scaled by `d·d_a` with one FMA into eight f32 lanes.
macro_rules! q6k_simd {
    ($(#[$doc:meta])* $name:ident, $features:literal, $madd_acc:ident) => {
        $(#[$doc])*
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $features)]
        unsafe fn $name(row: &[u8], x: &[BlockQ8K]) -> f32 {
            use std::arch::x86_64::*;
            let m4 = _mm256_set1_epi8(0x0f);
            let m2 = _mm256_set1_epi8(0x30);
            let mut acc = _mm256_setzero_ps();
            for (i, a) in x.iter().enumerate() {
                // SAFETY (all reads): super-block `i < x.len()` lies at `210i..210i+210` of
                // `row`; `a.qs` (256 bytes) and `a.bsums` (32 bytes) are read within bounds.
                let p = row.as_ptr().add(i * BLOCK_BYTES);
                let sc = p.add(192) as *const i8;
                let dw = _mm_cvtph_ps(_mm_cvtsi32_si128((p.add(208) as *const u16).read_unaligned() as i32));
                let d = _mm256_broadcastss_ps(_mm_mul_ss(dw, _mm_set_ss(a.d)));
                let scv = _mm256_cvtepi8_epi16(_mm_loadu_si128(sc as *const __m128i));
                let corr = _mm256_madd_epi16(_mm256_loadu_si256(a.bsums.as_ptr() as *const __m256i), scv);
                let mut sumi = _mm256_setzero_si256();
                for h in 0..2 {
                    let ql0 = _mm256_loadu_si256(p.add(64 * h) as *const __m256i);
                    let ql1 = _mm256_loadu_si256(p.add(64 * h + 32) as *const __m256i);
                    let qh = _mm256_loadu_si256(p.add(128 + 32 * h) as *const __m256i);
                    // Byte-wise shifts done as 16-bit shifts: the masks drop what crosses bytes.
                    let q = [
                        _mm256_or_si256(_mm256_and_si256(ql0, m4), _mm256_and_si256(_mm256_slli_epi16::<4>(qh), m2)),
                        _mm256_or_si256(_mm256_and_si256(ql1, m4), _mm256_and_si256(_mm256_slli_epi16::<2>(qh), m2)),
                        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(ql0), m4), _mm256_and_si256(qh, m2)),
                        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(ql1), m4), _mm256_and_si256(_mm256_srli_epi16::<2>(qh), m2)),
                    ];
                    // This half's eight i16 scales in both 128-bit lanes; value group `k` takes
                    // scale 2k in the low lane, 2k + 1 in the high lane (i16 `j` is bytes 2j, 2j+1).
                    let sch = if h == 0 { _mm256_permute2x128_si256::<0x00>(scv, scv) } else { _mm256_permute2x128_si256::<0x11>(scv, scv) };
                    for (k, &qk) in q.iter().enumerate() {
                        let qa = _mm256_loadu_si256(a.qs.as_ptr().add(128 * h + 32 * k) as *const __m256i);
                        let (b0, b1) = ((4 * k + 1) << 8 | 4 * k, (4 * k + 3) << 8 | (4 * k + 2));
                        let s = _mm256_shuffle_epi8(sch, _mm256_setr_epi64x((b0 * 0x0001_0001_0001_0001) as i64, (b0 * 0x0001_0001_0001_0001) as i64, (b1 * 0x0001_0001_0001_0001) as i64, (b1 * 0x0001_0001_0001_0001) as i64));
                        sumi = $madd_acc(sumi, _mm256_maddubs_epi16(qk, qa), s);
                    }
                }
                sumi = _mm256_sub_epi32(sumi, _mm256_slli_epi32::<5>(corr));
                acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sumi), acc);
            }
            super::q8_0::hsum_ps(acc)
        }
    };
}

q6k_simd!(
    /// AVX2 + FMA + F16C (`maddubs` + `madd`).
    ///
    /// # Safety
    /// AVX2 + FMA + F16C; `row.len() == 210 * x.len()`.
    dot_avx2,
    "avx2,fma,f16c",
    madd_acc_avx2
);
q6k_simd!(
    /// As [`dot_avx2`], the scaled pairs accumulated by `vpdpwssd` (256-bit).
    ///
    /// # Safety
    /// AVX2 + FMA + F16C + AVX-512 F/VL/VNNI; `row.len() == 210 * x.len()`.
    dot_vnni,
    "avx2,fma,f16c,avx512f,avx512vl,avx512vnni",
    madd_acc_vnni
);

/// Q6_K for the shared matmul driver.
pub(crate) const FORMAT: super::Format<BlockQ8K> = super::Format { name: "q6_K", block_values: QK_K, block_bytes: BLOCK_BYTES, dot, dot4: None };

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::q4_k::tests::act;
    use crate::kernels::q8k::quantize_row_with;
    use crate::kernels::testutil::{self, Case};
    use candle_core::quantized::GgmlDType;

    /// Elements of one super-block as `(d·sc, q − 32, 0)`, following candle's `to_float` loop
    /// structure.
    fn unpack(b: &[u8]) -> Vec<(f32, i32, f32)> {
        let d = f16_to_f32(u16::from_le_bytes([b[208], b[209]]));
        let mut v = vec![(0f32, 0i32, 0f32); QK_K];
        for h in 0..2 {
            let (ql, qh, sc) = (&b[64 * h..], &b[128 + 32 * h..], &b[192 + 8 * h..]);
            for l in 0..32 {
                let is = l / 16;
                let q = [
                    (ql[l] & 0xf) | ((qh[l] & 3) << 4),
                    (ql[l + 32] & 0xf) | (((qh[l] >> 2) & 3) << 4),
                    (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4),
                    (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4),
                ];
                for k in 0..4 {
                    v[128 * h + 32 * k + l] = (d * sc[is + 2 * k] as i8 as f32, q[k] as i32 - 32, 0.0);
                }
            }
        }
        v
    }

    fn case() -> Case<BlockQ8K> {
        Case { dtype: GgmlDType::Q6K, format: &FORMAT, quantize: |isa, x| quantize_row_with(isa, x).unwrap(), act, unpack }
    }

    #[test]
    fn q6_k_layout_matches_candle_dequantize() {
        testutil::check_layout(&case(), 17, 512);
    }

    /// f32 rounding only: `d·d_a`, the lane products (each lane an exact integer), and a sum
    /// over at most 17 super-blocks: tolerance 1e-5·Σ|terms|.
    #[test]
    fn q6_k_matmul_paths_match_reference() {
        testutil::check_paths(&case(), &[256, 512, 1536, 4096 + 256], 1e-5);
    }

    #[test]
    fn q6_k_matmul_close_to_f32() {
        testutil::check_close_to_f32(&case(), 100, 1536);
    }

    #[test]
    fn q6_k_matmul_rejects_bad_shapes() {
        testutil::check_rejects(&case());
    }

    /// Extreme values: every `q` 0 or 63 and scales ±127/−128, against the scalar path (the
    /// lanes' headroom: |lane| stays below 2³¹).
    #[test]
    fn q6_k_extremes() {
        let mut rng = crate::kernels::q4_1::tests::Rng(4);
        let mut row = vec![0u8; 2 * BLOCK_BYTES];
        for b in row.chunks_exact_mut(BLOCK_BYTES) {
            for v in &mut b[..192] {
                *v = if rng.next().is_multiple_of(2) { 0x00 } else { 0xff };
            }
            for v in &mut b[192..208] {
                *v = [0x7f, 0x80, 0x81][(rng.next() % 3) as usize];
            }
            b[208..].copy_from_slice(&[0x00, 0x3c]); // d = 1
        }
        let x: Vec<f32> = (0..512usize).map(|i| if (i * 7).is_multiple_of(3) { -1.0 } else { 1.0 }).collect();
        let xs = quantize_row_with(Isa::Scalar, &x).unwrap();
        let want = dot_scalar(&row, &xs);
        for isa in Isa::available() {
            let mut out = [0f32];
            crate::kernels::matmul_rows(&FORMAT, isa, &row, 1, 512, &xs, &mut out).unwrap();
            assert!((out[0] - want).abs() <= 1e-6 * want.abs().max(1.0), "{isa:?}: {} vs {want}", out[0]);
        }
    }

    /// SmolLM2's MLP down projection, `[576, 1536]` (see the Q4_K probe).
    #[test]
    #[ignore]
    fn q6_k_kernel_speed() {
        testutil::speed(&case(), 576, 1536);
        testutil::speed(&case(), 1536, 1536);
    }
}
