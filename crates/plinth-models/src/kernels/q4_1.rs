//! Q4_1 weight rows times 16-bit activation rows ([`super::q16`]), straight from GGML's block
//! bytes.
//!
//! A Q4_1 block is 20 bytes: f16 `d`, f16 `m`, then 16 bytes of nibbles, the low nibble of
//! byte `j` being element `j` and the high nibble element `j + 16`; element = `d·q + m`. With
//! the activation block `(d_a, s_a = d_a·Σq16, q16)`, one block's contribution to the dot
//! product is `d·d_a·Σ((q4-8)·q16) + (m+8d)·s_a`: an exact integer dot product and two
//! multiplies (see `scales` for why recentred).

use super::q16::{BlockQ16, QK};
use super::{f16_to_f32, Isa};

/// Bytes per block of 32 weights.
pub const BLOCK_BYTES: usize = 20;

/// How far ahead of the current block the 4-row kernel prefetches each row (bytes).
#[cfg(target_arch = "x86_64")]
const PREFETCH: usize = 320;

/// Bytes of one weight row of `cols` values.
pub fn row_bytes(cols: usize) -> usize {
    cols / QK * BLOCK_BYTES
}

row_kernel_dispatch!(BlockQ16);

/// The block's scale and recentred offset: `value = d·(q - 8) + (m + 8d)`.
///
/// Why recentre: with `m ≈ -8d` (a block of weights centred on zero), `d·d_a·Σq·q8` and
/// `m·s_a` nearly cancel, and an f32 sum of such terms loses most of its digits (decode
/// perplexity moved by ±0.9 % with the order of additions). After recentring, the integer
/// part `Σ(q-8)·q8` is exact and the offset `m + 8d` is small, so f32 sums keep their digits.
/// `m + 8d` of two f16 values is exact in f32 unless their exponents are 13+ apart.
#[inline]
fn scales(d: f32, m: f32) -> (f32, f32) {
    (d, m + 8.0 * d)
}

/// The portable reference: blocks in order, one f32 multiply-add chain.
fn dot_scalar(row: &[u8], x: &[BlockQ16]) -> f32 {
    let mut acc = 0f32;
    for (w, a) in row.chunks_exact(BLOCK_BYTES).zip(x) {
        let (d, m) = scales(f16_to_f32(u16::from_le_bytes([w[0], w[1]])), f16_to_f32(u16::from_le_bytes([w[2], w[3]])));
        let mut sumi = 0i32;
        for j in 0..QK / 2 {
            let b = w[4 + j];
            sumi += ((b & 0x0f) as i32 - 8) * a.qs[j] as i32 + ((b >> 4) as i32 - 8) * a.qs[j + QK / 2] as i32;
        }
        acc += d * a.d * sumi as f32 + m * a.s;
    }
    acc
}

/// One block's exact `Σ(q-8)·x` as 8 i32 lanes: the nibbles widened to i16 and recentred
/// (`|q-8| <= 8`, so a lane holds at most 4·8·32767 < 2^21), then 16-bit multiply-adds
/// (`vpdpwssd` with `VNNI`, else `pmaddwd`).
///
/// # Safety
/// AVX2 (+ AVX-512 VL/VNNI with `VNNI`) in the caller; `p` points at a 20-byte block.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn block_sums<const VNNI: bool>(p: *const u8, a: &BlockQ16) -> std::arch::x86_64::__m256i {
    use std::arch::x86_64::*;
    let tmp = _mm_loadu_si128(p.add(4) as *const __m128i);
    let (m4, eight) = (_mm_set1_epi8(0x0f), _mm_set1_epi8(8));
    let lo = _mm256_cvtepi8_epi16(_mm_sub_epi8(_mm_and_si128(tmp, m4), eight));
    let hi = _mm256_cvtepi8_epi16(_mm_sub_epi8(_mm_and_si128(_mm_srli_epi16::<4>(tmp), m4), eight));
    let xlo = _mm256_loadu_si256(a.qs.as_ptr() as *const __m256i);
    let xhi = _mm256_loadu_si256(a.qs.as_ptr().add(16) as *const __m256i);
    if VNNI {
        _mm256_dpwssd_epi32(_mm256_dpwssd_epi32(_mm256_setzero_si256(), lo, xlo), hi, xhi)
    } else {
        _mm256_add_epi32(_mm256_madd_epi16(lo, xlo), _mm256_madd_epi16(hi, xhi))
    }
}

/// One row: per block, `d·d_a` times the 8 integer lanes into an 8-lane f32 accumulator, and
/// the offset term `(m+8d)·s_a` into a scalar one.
///
/// # Safety
/// As [`block_sums`], plus FMA + F16C; `row.len() == 20 * x.len()`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn dot_body<const VNNI: bool>(row: &[u8], x: &[BlockQ16]) -> f32 {
    use std::arch::x86_64::*;
    let mut acc = _mm256_setzero_ps();
    let mut offs = 0f32;
    for (i, a) in x.iter().enumerate() {
        let p = row.as_ptr().add(i * BLOCK_BYTES);
        let dm = _mm_cvtph_ps(_mm_cvtsi32_si128((p as *const i32).read_unaligned()));
        let (d, m) = scales(_mm_cvtss_f32(dm), _mm_cvtss_f32(_mm_movehdup_ps(dm)));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d * a.d), _mm256_cvtepi32_ps(block_sums::<VNNI>(p, a)), acc);
        offs += m * a.s;
    }
    hsum(acc) + offs
}

/// The 8 lanes' sum, in the one order both kernels use.
///
/// # Safety
/// AVX in the caller.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn hsum(v: std::arch::x86_64::__m256) -> f32 {
    use std::arch::x86_64::*;
    let s = _mm_add_ps(_mm256_extractf128_ps::<1>(v), _mm256_castps256_ps128(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
}

/// Four consecutive rows (`w.len() >= 4 · rb`) with one activation row: the activation
/// block's loads are shared and the four weight streams prefetched, but each row runs exactly
/// [`dot_body`]'s operations in its order, so a row's result is bit for bit what it would be
/// alone. (An earlier version reduced the four rows' integer sums together and used other
/// float operations; a sequence's logits then depended on how many others shared its decode
/// step, and a near-tie could flip a greedy token.)
///
/// # Safety
/// As [`dot_body`]; `rb == 20 * x.len()`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn dot4_body<const VNNI: bool>(w: &[u8], rb: usize, x: &[BlockQ16]) -> [f32; 4] {
    use std::arch::x86_64::*;
    let base = w.as_ptr();
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut offs = [0f32; 4];
    for (i, a) in x.iter().enumerate() {
        let p = base.add(i * BLOCK_BYTES);
        // Four rows are four memory streams; the hardware prefetcher alone left this kernel at
        // half the speed of the one-row kernel when the weights come from DRAM.
        for r in 0..4 {
            _mm_prefetch::<_MM_HINT_T0>(p.add(r * rb + PREFETCH) as *const i8);
        }
        for r in 0..4 {
            let pr = p.add(r * rb);
            let dm = _mm_cvtph_ps(_mm_cvtsi32_si128((pr as *const i32).read_unaligned()));
            let (d, m) = scales(_mm_cvtss_f32(dm), _mm_cvtss_f32(_mm_movehdup_ps(dm)));
            acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(d * a.d), _mm256_cvtepi32_ps(block_sums::<VNNI>(pr, a)), acc[r]);
            offs[r] += m * a.s;
        }
    }
    std::array::from_fn(|r| hsum(acc[r]) + offs[r])
}

/// # Safety
/// AVX2 + FMA + F16C; see [`dot_body`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_avx2(row: &[u8], x: &[BlockQ16]) -> f32 {
    dot_body::<false>(row, x)
}

/// # Safety
/// AVX2 + FMA + F16C + AVX-512 F/VL/VNNI; see [`dot_body`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512vnni")]
unsafe fn dot_vnni(row: &[u8], x: &[BlockQ16]) -> f32 {
    dot_body::<true>(row, x)
}

/// Four consecutive weight rows (`rows4.len() == 4 · 20 · x.len()`) dotted with one activation
/// row ([`dot4_body`]); the scalar path runs [`dot_scalar`] per row.
#[inline]
fn dot4(isa: Isa, rows4: &[u8], x: &[BlockQ16]) -> [f32; 4] {
    let rb = x.len() * BLOCK_BYTES;
    debug_assert_eq!(rows4.len(), 4 * rb);
    match isa {
        // SAFETY: as in `dot`; `rows4` holds four rows of `rb` bytes (checked by the driver).
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { dot4_avx2(rows4, rb, x) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni => unsafe { dot4_vnni(rows4, rb, x) },
        _ => std::array::from_fn(|i| dot_scalar(&rows4[i * rb..(i + 1) * rb], x)),
    }
}

/// # Safety
/// AVX2 + FMA + F16C; see [`dot4_body`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot4_avx2(w: &[u8], rb: usize, x: &[BlockQ16]) -> [f32; 4] {
    dot4_body::<false>(w, rb, x)
}

/// # Safety
/// AVX2 + FMA + F16C + AVX-512 F/VL/VNNI; see [`dot4_body`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512vnni")]
unsafe fn dot4_vnni(w: &[u8], rb: usize, x: &[BlockQ16]) -> [f32; 4] {
    dot4_body::<true>(w, rb, x)
}

/// Q4_1 for the shared matmul driver.
pub(crate) const FORMAT: super::Format<BlockQ16> = super::Format { name: "q4_1", block_values: QK, block_bytes: BLOCK_BYTES, dot, dot4: Some(dot4) };

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::kernels::q16::quantize_row_with;
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::{Device, Tensor};

    /// SplitMix64 with a Box-Muller normal: deterministic test data without a dependency.
    pub(crate) struct Rng(pub u64);
    impl Rng {
        pub(crate) fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
        pub(crate) fn uniform(&mut self) -> f32 {
            ((self.next() >> 40) as f32 + 0.5) / (1u64 << 24) as f32
        }
        pub(crate) fn normal(&mut self) -> f32 {
            let (u, v) = (self.uniform(), self.uniform());
            (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
        }
    }

    /// A random `[rows, cols]` weight quantized to Q4_1 by candle, with its bytes.
    fn weight(rng: &mut Rng, rows: usize, cols: usize) -> (QTensor, Vec<u8>) {
        let v: Vec<f32> = (0..rows * cols).map(|_| rng.normal() * 0.05 + 0.01).collect();
        let t = Tensor::from_vec(v, (rows, cols), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&t, GgmlDType::Q4_1).unwrap();
        let bytes = q.data().unwrap().into_owned();
        (q, bytes)
    }

    /// The layout this module assumes (d, m, low nibbles = elements 0..16, high = 16..32)
    /// decodes to exactly candle's own `dequantize` of the same bytes.
    #[test]
    fn q4_1_layout_matches_candle_dequantize() {
        let mut rng = Rng(1);
        let (rows, cols) = (17, 576);
        let (q, bytes) = weight(&mut rng, rows, cols);
        let want = q.dequantize(&Device::Cpu).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let mut got = Vec::with_capacity(rows * cols);
        for blk in bytes.chunks_exact(BLOCK_BYTES) {
            let d = f16_to_f32(u16::from_le_bytes([blk[0], blk[1]]));
            let m = f16_to_f32(u16::from_le_bytes([blk[2], blk[3]]));
            let mut vals = [0f32; QK];
            for j in 0..QK / 2 {
                vals[j] = (blk[4 + j] & 0x0f) as f32 * d + m;
                vals[j + QK / 2] = (blk[4 + j] >> 4) as f32 * d + m;
            }
            got.extend_from_slice(&vals);
        }
        assert_eq!(got, want, "bit-exact dequantization expected");
    }

    /// Every available path against an f64 evaluation of the same quantized data, on awkward
    /// sizes and batches. The integer parts are exact on every path; the f32 products and sums
    /// round, each by at most 2^-24 of a partial sum, so the tolerance is 2e-6·Σ|terms|, with
    /// Σ|terms| the sum of every product's magnitude (SIMD lanes hold partial sums that may
    /// cancel later; at most 129 blocks here).
    #[test]
    fn q4_1_matmul_paths_match_reference() {
        let mut rng = Rng(3);
        let mut worst = 0f64;
        for cols in [32, 64, 576, 1536, 4096 + 32] {
            for rows in [1, 3, 17, 100] {
                let (_, w) = weight(&mut rng, rows, cols);
                for n_x in [1, 3] {
                    let x: Vec<f32> = (0..n_x * cols).map(|_| rng.normal()).collect();
                    let xs = quantize_row_with(Isa::Scalar, &x).unwrap();
                    let nb = cols / QK;
                    let (want, scale) = reference(&w, rows, nb, &xs);
                    for isa in Isa::available() {
                        let mut out = vec![f32::NAN; n_x * rows];
                        crate::kernels::matmul_rows(&FORMAT, isa, &w, rows, cols, &xs, &mut out).unwrap();
                        for k in 0..out.len() {
                            let err = (out[k] as f64 - want[k]).abs();
                            worst = worst.max(err / scale[k]);
                            assert!(err <= 2e-6 * scale[k], "{isa:?} rows {rows} cols {cols} n_x {n_x} [{k}]: {} vs {} (Σ|terms| {})", out[k], want[k], scale[k]);
                        }
                    }
                }
            }
        }
        println!("q4_1 matmul: max |Δ| / Σ|terms| = {worst:.2e} (tolerance 2e-6)");
    }

    /// A row's result must not depend on the batch it is computed in: the one-row kernel
    /// (one activation row) and the 4-row kernel (several) give the same bits. Regression test
    /// for greedy tokens that changed with the number of sequences in a decode step.
    #[test]
    fn a_row_gives_the_same_bits_alone_and_in_a_batch() {
        let mut rng = Rng(11);
        for (rows, cols) in [(8, 576), (13, 1536), (4, 32)] {
            let (_, w) = weight(&mut rng, rows, cols);
            let x: Vec<f32> = (0..3 * cols).map(|_| rng.normal()).collect();
            for isa in Isa::available() {
                let xs = quantize_row_with(isa, &x).unwrap();
                let mut batch = vec![0f32; 3 * rows];
                crate::kernels::matmul_rows(&FORMAT, isa, &w, rows, cols, &xs, &mut batch).unwrap();
                for (k, one) in xs.chunks_exact(cols / QK).enumerate() {
                    let mut alone = vec![0f32; rows];
                    crate::kernels::matmul_rows(&FORMAT, isa, &w, rows, cols, one, &mut alone).unwrap();
                    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&alone), bits(&batch[k * rows..(k + 1) * rows]), "{isa:?} rows {rows} cols {cols} activation row {k}");
                }
            }
        }
    }

    /// `(value, Σ|products|)` per output in `[n_x, rows]` order, in f64.
    fn reference(w: &[u8], rows: usize, nb: usize, xs: &[BlockQ16]) -> (Vec<f64>, Vec<f64>) {
        let (mut val, mut mag) = (Vec::new(), Vec::new());
        for xr in xs.chunks_exact(nb) {
            for wr in w.chunks_exact(nb * BLOCK_BYTES).take(rows) {
                let (mut v, mut s) = (0f64, 1e-30f64);
                for (blk, a) in wr.chunks_exact(BLOCK_BYTES).zip(xr) {
                    let d = f16_to_f32(u16::from_le_bytes([blk[0], blk[1]])) as f64;
                    let m = f16_to_f32(u16::from_le_bytes([blk[2], blk[3]])) as f64;
                    let (mut sumi, mut sumabs) = (0i64, 0i64);
                    for j in 0..QK / 2 {
                        let (lo, hi) = ((blk[4 + j] & 0x0f) as i64 - 8, (blk[4 + j] >> 4) as i64 - 8);
                        sumi += lo * a.qs[j] as i64 + hi * a.qs[j + QK / 2] as i64;
                        sumabs += (lo * a.qs[j] as i64).abs() + (hi * a.qs[j + QK / 2] as i64).abs();
                    }
                    let f = d * a.d as f64;
                    let t2 = (m + 8.0 * d) * a.s as f64;
                    v += f * sumi as f64 + t2;
                    s += f.abs() * sumabs as f64 + t2.abs();
                }
                val.push(v);
                mag.push(s);
            }
        }
        (val, mag)
    }

    /// The kernel's result is close to candle's f32 matmul of the dequantized weight: the only
    /// difference is the 8-bit activation rounding (≤ d/2 per value). Tolerance 1% of
    /// Σ|w·x|, printed.
    #[test]
    fn q4_1_matmul_close_to_f32() {
        let mut rng = Rng(5);
        let (rows, cols) = (100, 576);
        let (q, w) = weight(&mut rng, rows, cols);
        let x: Vec<f32> = (0..cols).map(|_| rng.normal()).collect();
        let wf = q.dequantize(&Device::Cpu).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let xs = quantize_row_with(Isa::detect(), &x).unwrap();
        let mut out = vec![0f32; rows];
        crate::kernels::matmul_rows(&FORMAT, Isa::detect(), &w, rows, cols, &xs, &mut out).unwrap();
        let mut worst = 0f32;
        for r in 0..rows {
            let wr = &wf[r * cols..(r + 1) * cols];
            let exact: f32 = wr.iter().zip(&x).map(|(a, b)| a * b).sum();
            let mag: f32 = wr.iter().zip(&x).map(|(a, b)| (a * b).abs()).sum();
            worst = worst.max((out[r] - exact).abs() / mag);
            assert!((out[r] - exact).abs() <= 1e-4 * mag, "row {r}: {} vs {exact}", out[r]);
        }
        println!("q4_1 vs f32: max |Δ| / Σ|w·x| = {worst:.2e} (tolerance 1e-4)");
    }

    /// Throughput of each path on SmolLM2's MLP shape (run by hand with `--ignored
    /// --nocapture`; timing is not asserted, the machine is shared).
    #[test]
    #[ignore]
    fn q4_1_kernel_speed() {
        let mut rng = Rng(9);
        let (rows, cols) = (1536, 576);
        let (_, w) = weight(&mut rng, rows, cols);
        let x: Vec<f32> = (0..cols).map(|_| rng.normal()).collect();
        let xs = quantize_row_with(Isa::Scalar, &x).unwrap();
        let mut out = vec![0f32; rows];
        for isa in Isa::available() {
            let n = 2000;
            let t = std::time::Instant::now();
            for _ in 0..n {
                crate::kernels::matmul_rows(&FORMAT, isa, &w, rows, cols, &xs, &mut out).unwrap();
            }
            let dt = t.elapsed().as_secs_f64() / n as f64;
            println!("{isa:?}: {:.1} us per [{rows}x{cols}] matvec, {:.2} GB/s of weights", dt * 1e6, w.len() as f64 / dt / 1e9);
        }
    }

    /// As [`q4_1_kernel_speed`] with the weights streamed from memory: 96 distinct matrices
    /// (53 MB, past the 32 MB L3) cycled, as decode reads them.
    #[test]
    #[ignore]
    fn q4_1_kernel_speed_from_memory() {
        let mut rng = Rng(9);
        let (rows, cols, n_w) = (1536, 576, 96);
        let ws: Vec<Vec<u8>> = (0..n_w).map(|_| weight(&mut rng, rows, cols).1).collect();
        let x: Vec<f32> = (0..cols).map(|_| rng.normal()).collect();
        let xs = quantize_row_with(Isa::Scalar, &x).unwrap();
        let mut out = vec![0f32; rows];
        for isa in Isa::available() {
            let n = 10 * n_w;
            let t = std::time::Instant::now();
            for i in 0..n {
                crate::kernels::matmul_rows(&FORMAT, isa, &ws[i % n_w], rows, cols, &xs, &mut out).unwrap();
            }
            let dt = t.elapsed().as_secs_f64() / n as f64;
            println!("{isa:?} from memory: {:.1} us per [{rows}x{cols}] matvec, {:.2} GB/s of weights", dt * 1e6, ws[0].len() as f64 / dt / 1e9);
        }
    }

    #[test]
    fn q4_1_matmul_rejects_bad_shapes() {
        let xs = vec![BlockQ16::default(); 2];
        let mut out = vec![0f32; 2];
        assert!(crate::kernels::matmul_rows(&FORMAT, Isa::detect(), &[0u8; 80], 2, 64, &xs, &mut out).is_ok());
        assert!(crate::kernels::matmul_rows(&FORMAT, Isa::detect(), &[0u8; 79], 2, 64, &xs, &mut out).is_err());
        assert!(crate::kernels::matmul_rows(&FORMAT, Isa::detect(), &[0u8; 80], 2, 63, &xs, &mut out).is_err());
        assert!(crate::kernels::matmul_rows(&FORMAT, Isa::detect(), &[0u8; 80], 2, 64, &xs[..1], &mut out).is_err());
        assert!(crate::kernels::matmul_rows(&FORMAT, Isa::detect(), &[0u8; 80], 2, 64, &xs, &mut out[..1]).is_err());
    }
}
