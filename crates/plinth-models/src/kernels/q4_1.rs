//! Q4_1 weight rows times Q8 activation rows, straight from GGML's block bytes.
//!
//! A Q4_1 block is 20 bytes: f16 `d`, f16 `m`, then 16 bytes of nibbles, the low nibble of
//! byte `j` being element `j` and the high nibble element `j + 16`; element = `d·q + m`. With
//! the activation block `(d_a, s_a = d_a·Σq8, q8)`, one block's contribution to the dot product
//! is `d·d_a·Σ((q4-8)·q8) + (m+8d)·s_a`: an exact integer dot product and two multiplies
//! (see [`scales`] for why recentred).

use super::q8::{BlockQ8, QK};
use super::{f16_to_f32, Isa};
use plinth_core::Result;

/// Bytes per block of 32 weights.
pub const BLOCK_BYTES: usize = 20;

/// Bytes of one weight row of `cols` values.
pub fn row_bytes(cols: usize) -> usize {
    cols / QK * BLOCK_BYTES
}

/// One weight row (`row.len() == 20 * x.len()`) dotted with one quantized activation row.
/// `isa` must be supported (checked by [`matmul_with`]; this is the inner loop).
#[inline]
fn dot(isa: Isa, row: &[u8], x: &[BlockQ8]) -> f32 {
    debug_assert_eq!(row.len(), x.len() * BLOCK_BYTES);
    match isa {
        Isa::Scalar => dot_scalar(row, x),
        // SAFETY: callers only pass an `isa` that `Isa::supported` accepted, so the CPU has
        // the features these functions enable; the slices' lengths are checked by the caller.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { dot_avx2(row, x) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni => unsafe { dot_vnni(row, x) },
        #[cfg(not(target_arch = "x86_64"))]
        _ => dot_scalar(row, x),
    }
}

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
fn dot_scalar(row: &[u8], x: &[BlockQ8]) -> f32 {
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

/// One block's exact `Σ(q-8)·q8` as 8 i32 lanes, by the sign trick: `maddubs` multiplies
/// unsigned by signed bytes, so `|q-8|` is multiplied by `q8` carrying `q-8`'s sign.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn block_products_avx2(p: *const u8, qy: std::arch::x86_64::__m256i) -> std::arch::x86_64::__m256i {
    use std::arch::x86_64::*;
    let tmp = _mm_loadu_si128(p.add(4) as *const __m128i);
    let qx = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16::<4>(tmp), tmp), _mm256_set1_epi8(0x0f));
    let bx = _mm256_sub_epi8(qx, _mm256_set1_epi8(8));
    // |q-8| <= 8 and |q8| <= 127: pair sums <= 2032, no i16 saturation.
    let prod = _mm256_maddubs_epi16(_mm256_sign_epi8(bx, bx), _mm256_sign_epi8(qy, bx));
    _mm256_madd_epi16(prod, _mm256_set1_epi16(1))
}

/// `(d·d_a, (m+8d)·s_a)` for one block: the factor of its integer sum and its offset term.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "f16c")]
#[inline]
unsafe fn block_factors(p: *const u8, a: &BlockQ8) -> (f32, f32) {
    use std::arch::x86_64::*;
    let dm = _mm_cvtph_ps(_mm_cvtsi32_si128((p as *const i32).read_unaligned()));
    let (d, m) = scales(_mm_cvtss_f32(dm), _mm_cvtss_f32(_mm_movehdup_ps(dm)));
    (d * a.d, m * a.s)
}

/// # Safety
/// AVX2 + FMA + F16C; `row.len() == 20 * x.len()`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_avx2(row: &[u8], x: &[BlockQ8]) -> f32 {
    use std::arch::x86_64::*;
    let mut acc = _mm256_setzero_ps();
    let mut offs = 0f32;
    for (i, a) in x.iter().enumerate() {
        let p = row.as_ptr().add(i * BLOCK_BYTES);
        let prod = block_products_avx2(p, _mm256_loadu_si256(a.qs.as_ptr() as *const __m256i));
        let (f, o) = block_factors(p, a);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(f), _mm256_cvtepi32_ps(prod), acc);
        offs += o;
    }
    hsum_ps(acc) + offs
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn hsum_ps(v: std::arch::x86_64::__m256) -> f32 {
    use std::arch::x86_64::*;
    let s = _mm_add_ps(_mm256_extractf128_ps::<1>(v), _mm256_castps256_ps128(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
}

/// As [`dot_avx2`], with one `vpdpbusd` for the products (256-bit: on Zen 4 the 512-bit form,
/// two blocks a step, measured slower for this format).
///
/// # Safety
/// AVX2 + FMA + F16C + AVX-512 F/VL/VNNI; `row.len() == 20 * x.len()`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512vnni")]
unsafe fn dot_vnni(row: &[u8], x: &[BlockQ8]) -> f32 {
    use std::arch::x86_64::*;
    let mut acc = _mm256_setzero_ps();
    let mut offs = 0f32;
    for (i, a) in x.iter().enumerate() {
        let p = row.as_ptr().add(i * BLOCK_BYTES);
        let tmp = _mm_loadu_si128(p.add(4) as *const __m128i);
        let qx = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16::<4>(tmp), tmp), _mm256_set1_epi8(0x0f));
        let bx = _mm256_sub_epi8(qx, _mm256_set1_epi8(8));
        let qy = _mm256_loadu_si256(a.qs.as_ptr() as *const __m256i);
        let prod = _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_abs_epi8(bx), _mm256_sign_epi8(qy, bx));
        let (f, o) = block_factors(p, a);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(f), _mm256_cvtepi32_ps(prod), acc);
        offs += o;
    }
    hsum_ps(acc) + offs
}

/// `out[i][r] = W[r] · x[i]` for a `[rows, cols]` Q4_1 weight (`w`, GGML block bytes) and
/// `n_x` quantized activation rows (`xs`, `n_x * cols / 32` blocks), with the best path.
/// `out` is `[n_x, rows]`, row-major.
pub fn matmul(w: &[u8], rows: usize, cols: usize, xs: &[BlockQ8], out: &mut [f32]) -> Result<()> {
    matmul_with(Isa::detect(), w, rows, cols, xs, out)
}

/// Four consecutive weight rows (`rows4.len() == 4 · 20 · x.len()`) dotted with one activation
/// row: the activation block, its scales and the conversions of the four rows' `d`/`m` are
/// shared, and the four integer sums are reduced together, about half the instructions per
/// block of four [`dot`] calls. Scalar falls back to [`dot_scalar`] per row.
#[inline]
fn dot4(isa: Isa, rows4: &[u8], x: &[BlockQ8]) -> [f32; 4] {
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

/// The body of the 4-row kernels; `VNNI` picks `vpdpbusd` over `maddubs` + `madd` for the
/// products. Per block: four exact `Σ(q-8)·q8` in i32 (8 lanes each), reduced to one lane per
/// row with three `hadd`s; the four `[d, m]` pairs converted by one `vcvtph2ps`; then one FMA
/// for `d·d_a·Σ` and one for `(m+8d)·s_a`, four rows at a time.
///
/// # Safety
/// AVX2 + FMA + F16C (+ AVX-512 VL/VNNI with `VNNI`) in the caller; `w.len() >= 4 · rb`,
/// `rb == 20 · x.len()`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn dot4_body<const VNNI: bool>(w: &[u8], rb: usize, x: &[BlockQ8]) -> [f32; 4] {
    use std::arch::x86_64::*;
    let base = w.as_ptr();
    let (m4, eight) = (_mm256_set1_epi8(0x0f), _mm256_set1_epi8(8));
    let deint = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
    let mut acc = _mm_setzero_ps();
    let mut acc_m = _mm_setzero_ps();
    for (i, a) in x.iter().enumerate() {
        let qy = _mm256_loadu_si256(a.qs.as_ptr() as *const __m256i);
        let mut sums = [_mm256_setzero_si256(); 4];
        for (r, sum) in sums.iter_mut().enumerate() {
            let p = base.add(r * rb + i * BLOCK_BYTES);
            let tmp = _mm_loadu_si128(p.add(4) as *const __m128i);
            let bx = _mm256_sub_epi8(_mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16::<4>(tmp), tmp), m4), eight);
            let (ax, sy) = (_mm256_sign_epi8(bx, bx), _mm256_sign_epi8(qy, bx));
            *sum = if VNNI {
                _mm256_dpbusd_epi32(_mm256_setzero_si256(), ax, sy)
            } else {
                // |q-8| <= 8 and |q8| <= 127: pair sums <= 2032, no i16 saturation.
                _mm256_madd_epi16(_mm256_maddubs_epi16(ax, sy), _mm256_set1_epi16(1))
            };
        }
        // [r0 r0 r1 r1 | r0 r0 r1 r1] ... down to one i32 per row: hadd pairs within 128-bit
        // lanes, then add the two lanes.
        let h01 = _mm256_hadd_epi32(sums[0], sums[1]);
        let h23 = _mm256_hadd_epi32(sums[2], sums[3]);
        let h = _mm256_hadd_epi32(h01, h23);
        let isum = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256::<1>(h));
        // The four rows' [d, m] (f16 pairs) in one conversion, then split into d's and m's.
        let dm16 = _mm_setr_epi32(
            (base.add(i * BLOCK_BYTES) as *const i32).read_unaligned(),
            (base.add(rb + i * BLOCK_BYTES) as *const i32).read_unaligned(),
            (base.add(2 * rb + i * BLOCK_BYTES) as *const i32).read_unaligned(),
            (base.add(3 * rb + i * BLOCK_BYTES) as *const i32).read_unaligned(),
        );
        let dm = _mm256_permutevar8x32_ps(_mm256_cvtph_ps(dm16), deint);
        let d = _mm256_castps256_ps128(dm);
        let m = _mm_fmadd_ps(d, _mm_set1_ps(8.0), _mm256_extractf128_ps::<1>(dm));
        acc = _mm_fmadd_ps(_mm_mul_ps(d, _mm_set1_ps(a.d)), _mm_cvtepi32_ps(isum), acc);
        acc_m = _mm_fmadd_ps(m, _mm_set1_ps(a.s), acc_m);
    }
    let mut out = [0f32; 4];
    _mm_storeu_ps(out.as_mut_ptr(), _mm_add_ps(acc, acc_m));
    out
}

/// # Safety
/// AVX2 + FMA + F16C; see [`dot4_body`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot4_avx2(w: &[u8], rb: usize, x: &[BlockQ8]) -> [f32; 4] {
    dot4_body::<false>(w, rb, x)
}

/// # Safety
/// AVX2 + FMA + F16C + AVX-512 F/VL/VNNI; see [`dot4_body`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512vnni")]
unsafe fn dot4_vnni(w: &[u8], rb: usize, x: &[BlockQ8]) -> [f32; 4] {
    dot4_body::<true>(w, rb, x)
}

/// [`matmul`] with a forced path (see [`super::matmul_rows`] for the work split).
pub fn matmul_with(isa: Isa, w: &[u8], rows: usize, cols: usize, xs: &[BlockQ8], out: &mut [f32]) -> Result<()> {
    super::matmul_rows(&FORMAT, isa, w, rows, cols, xs, out)
}

/// Q4_1 for the shared matmul driver.
pub(crate) const FORMAT: super::Format<BlockQ8> = super::Format { name: "q4_1", block_values: QK, block_bytes: BLOCK_BYTES, dot, dot4: Some(dot4) };

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::kernels::q8::quantize_row_with;
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
                        matmul_with(isa, &w, rows, cols, &xs, &mut out).unwrap();
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

    /// `(value, Σ|products|)` per output in `[n_x, rows]` order, in f64.
    fn reference(w: &[u8], rows: usize, nb: usize, xs: &[BlockQ8]) -> (Vec<f64>, Vec<f64>) {
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
        let xs = crate::kernels::q8::quantize_row(&x).unwrap();
        let mut out = vec![0f32; rows];
        matmul(&w, rows, cols, &xs, &mut out).unwrap();
        let mut worst = 0f32;
        for r in 0..rows {
            let wr = &wf[r * cols..(r + 1) * cols];
            let exact: f32 = wr.iter().zip(&x).map(|(a, b)| a * b).sum();
            let mag: f32 = wr.iter().zip(&x).map(|(a, b)| (a * b).abs()).sum();
            worst = worst.max((out[r] - exact).abs() / mag);
            assert!((out[r] - exact).abs() <= 0.01 * mag, "row {r}: {} vs {exact}", out[r]);
        }
        println!("q4_1 vs f32: max |Δ| / Σ|w·x| = {worst:.2e} (tolerance 1e-2)");
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
                matmul_with(isa, &w, rows, cols, &xs, &mut out).unwrap();
            }
            let dt = t.elapsed().as_secs_f64() / n as f64;
            println!("{isa:?}: {:.1} us per [{rows}x{cols}] matvec, {:.2} GB/s of weights", dt * 1e6, w.len() as f64 / dt / 1e9);
        }
    }

    #[test]
    fn q4_1_matmul_rejects_bad_shapes() {
        let xs = vec![BlockQ8::default(); 2];
        let mut out = vec![0f32; 2];
        assert!(matmul(&[0u8; 80], 2, 64, &xs, &mut out).is_ok());
        assert!(matmul(&[0u8; 79], 2, 64, &xs, &mut out).is_err());
        assert!(matmul(&[0u8; 80], 2, 63, &xs, &mut out).is_err());
        assert!(matmul(&[0u8; 80], 2, 64, &xs[..1], &mut out).is_err());
        assert!(matmul(&[0u8; 80], 2, 64, &xs, &mut out[..1]).is_err());
    }
}
