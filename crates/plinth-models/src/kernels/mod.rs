//! Hand-written CPU kernels for quantized decode (issue 8).
//!
//! This module owns the quantized matrix-vector products behind [`crate::layers::QLinear`]
//! for few input rows: the activation row is quantized once to 8-bit blocks ([`q8`], blocks of
//! 32; [`q8k`], blocks of 256 for the K-quants), then every weight row is dotted with it
//! straight from GGML's block bytes ([`q4_0`], [`q4_1`], [`q8_0`]; [`q4_k`], [`q6_k`]). Each kernel
//! has a portable scalar reference and x86 SIMD versions; [`Isa::detect`] picks the best one
//! once per process, and tests force every available path in turn against the scalar one.

pub mod q4_0;
pub mod q4_1;
pub mod q4_k;
pub mod q6_k;
pub mod q8;
pub mod q8_0;
pub mod q8k;
#[cfg(test)]
mod testutil;

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Tensor};
use plinth_core::Result;
use std::borrow::Cow;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::OnceLock;

/// 0: not decided yet; 1: on; 2: off.
static MODE: AtomicU8 = AtomicU8::new(0);

/// Whether the hand-written kernels serve quantized decode: yes unless `PLINTH_KERNELS=candle`
/// (the previous path, kept as a fallback and as the perplexity guard's reference), read once,
/// or [`set_enabled`] said otherwise.
pub fn enabled() -> bool {
    match MODE.load(Ordering::Relaxed) {
        1 => true,
        2 => false,
        _ => {
            let on = std::env::var("PLINTH_KERNELS").map_or(true, |v| v != "candle");
            // Only the first decision sticks, so a concurrent `set_enabled` is not overwritten.
            let _ = MODE.compare_exchange(0, if on { 1 } else { 2 }, Ordering::Relaxed, Ordering::Relaxed);
            MODE.load(Ordering::Relaxed) == 1
        }
    }
}

/// Switches the kernels on or off for the whole process (tests comparing both paths).
pub fn set_enabled(on: bool) {
    MODE.store(if on { 1 } else { 2 }, Ordering::Relaxed);
}

/// `x W^T` for a quantized `W` `[out, in]` and `x` `[..., in]` through these kernels, or `None`
/// where they do not apply (a weight type without a kernel, or weight bytes that are not
/// CPU-resident), so the caller keeps candle's path. Each input row is quantized once.
pub fn quantized_matmul(w: &QTensor, x: &Tensor) -> Result<Option<Tensor>> {
    let (out_dim, in_dim) = w.shape().dims2()?;
    if x.dim(candle_core::D::Minus1)? != in_dim {
        return Ok(None);
    }
    let isa = Isa::detect();
    // On CPU `data()` borrows the tensor's own block bytes: no copy per call or at load.
    let run = |xv: &[f32], out: &mut [f32]| -> Result<bool> {
        let Cow::Borrowed(bytes) = w.data()? else { return Ok(false) };
        match w.dtype() {
            GgmlDType::Q4_1 => with_q8(&q4_1::FORMAT, isa, bytes, out_dim, in_dim, xv, out),
            GgmlDType::Q4_0 => with_q8(&q4_0::FORMAT, isa, bytes, out_dim, in_dim, xv, out),
            GgmlDType::Q8_0 => with_q8(&q8_0::FORMAT, isa, bytes, out_dim, in_dim, xv, out),
            GgmlDType::Q4K => with_q8k(&q4_k::FORMAT, isa, bytes, out_dim, in_dim, xv, out),
            GgmlDType::Q6K => with_q8k(&q6_k::FORMAT, isa, bytes, out_dim, in_dim, xv, out),
            _ => Ok(false),
        }
    };
    let xv = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let mut out = vec![0f32; xv.len() / in_dim * out_dim];
    if !run(&xv, &mut out)? {
        return Ok(None);
    }
    let mut shape = x.dims().to_vec();
    let last = shape.len() - 1; // x.dim(D::Minus1) succeeded above, so there is one
    shape[last] = out_dim;
    Ok(Some(Tensor::from_vec(out, shape, x.device())?.to_dtype(x.dtype())?))
}

/// Quantizes `x` to [`q8::BlockQ8`] rows and runs format `f`; `false` when `cols` does not
/// fit the format's blocks (the caller falls back).
fn with_q8(f: &Format<q8::BlockQ8>, isa: Isa, w: &[u8], rows: usize, cols: usize, x: &[f32], out: &mut [f32]) -> Result<bool> {
    if !cols.is_multiple_of(f.block_values.max(q8::QK)) {
        return Ok(false);
    }
    let mut xs = vec![q8::BlockQ8::default(); x.len() / q8::QK];
    q8::quantize_into(isa, x, &mut xs)?;
    matmul_rows(f, isa, w, rows, cols, &xs, out)?;
    Ok(true)
}

/// As [`with_q8`] for the K-quant formats, with [`q8k::BlockQ8K`] activation blocks of 256.
fn with_q8k(f: &Format<q8k::BlockQ8K>, isa: Isa, w: &[u8], rows: usize, cols: usize, x: &[f32], out: &mut [f32]) -> Result<bool> {
    if !cols.is_multiple_of(f.block_values.max(q8k::QK_K)) {
        return Ok(false);
    }
    let mut xs = vec![q8k::BlockQ8K::default(); x.len() / q8k::QK_K];
    q8k::quantize_into(isa, x, &mut xs)?;
    matmul_rows(f, isa, w, rows, cols, &xs, out)?;
    Ok(true)
}

/// An activation block type: how many values one block quantizes.
pub trait ActBlock: Copy + Sync {
    const VALUES: usize;
}

impl ActBlock for q8::BlockQ8 {
    const VALUES: usize = q8::QK;
}

/// What the shared driver needs to know about a weight format: its block geometry and its
/// row kernel, `dot(isa, one weight row's bytes, one activation row) -> f32` (the `isa` is
/// always one [`Isa::supported`] accepted).
pub(crate) struct Format<A> {
    pub name: &'static str,
    /// Weight values per block.
    pub block_values: usize,
    /// Bytes per weight block.
    pub block_bytes: usize,
    pub dot: fn(Isa, &[u8], &[A]) -> f32,
}

/// Weight rows per unit of parallel work (a thread takes whole groups).
const GROUP: usize = 16;

/// The output buffer shared by the workers, each writing its own rows.
struct SharedOut(*mut f32);
// SAFETY: workers write disjoint row ranges only (see `matmul_rows`).
unsafe impl Sync for SharedOut {}

/// `out[i][r] = W[r] · x[i]` for a `[rows, cols]` weight in format `f` (`w`, GGML block bytes)
/// and `n_x` quantized activation rows (`xs`, `n_x * cols / A::VALUES` blocks); `out` is
/// `[n_x, rows]`, row-major. Weight rows are split across candle's worker pool in groups of
/// 16; each weight row is read once for all activation rows.
pub(crate) fn matmul_rows<A: ActBlock>(f: &Format<A>, isa: Isa, w: &[u8], rows: usize, cols: usize, xs: &[A], out: &mut [f32]) -> Result<()> {
    let bad = |why: String| plinth_core::Error::Invalid { what: format!("{} matmul", f.name), why };
    let unit = f.block_values.max(A::VALUES);
    if cols == 0 || !cols.is_multiple_of(unit) {
        return Err(bad(format!("{cols} columns is not a positive multiple of {unit}")));
    }
    let rb = cols / f.block_values * f.block_bytes;
    if rows.checked_mul(rb) != Some(w.len()) {
        return Err(bad(format!("{} weight bytes for [{rows}, {cols}] (expected {})", w.len(), rows * rb)));
    }
    let nb = cols / A::VALUES;
    if !xs.len().is_multiple_of(nb) || xs.is_empty() {
        return Err(bad(format!("{} activation blocks is not a positive multiple of {nb}", xs.len())));
    }
    let n_x = xs.len() / nb;
    if out.len() != n_x * rows {
        return Err(bad(format!("output holds {} values, expected {n_x} x {rows}", out.len())));
    }
    if !isa.supported() {
        return Err(bad(format!("{isa:?} is not supported by this CPU")));
    }
    let dot = f.dot;
    // Several activation rows are computed as [rows, n_x] so each weight row is read once,
    // then transposed into `out`.
    let mut t = if n_x == 1 { Vec::new() } else { vec![0f32; rows * n_x] };
    let dst = SharedOut(if n_x == 1 { out.as_mut_ptr() } else { t.as_mut_ptr() });
    let dst = &dst;
    // candle's own worker pool (the one its ops use, the calling thread taking part): a
    // second pool (rayon's) would spin against it for the same cores between ops.
    candle_core::utils::barrier_pool().execute_chunked(rows.div_ceil(GROUP), |groups| {
        let r0 = groups.start * GROUP;
        let r1 = (groups.end * GROUP).min(rows);
        // SAFETY: `execute_chunked` hands out disjoint group ranges, so rows r0..r1 (and their
        // n_x outputs each) are written by this closure call alone; the buffer outlives the
        // call, which returns only after every worker has finished.
        let ys = unsafe { std::slice::from_raw_parts_mut(dst.0.add(r0 * n_x), (r1 - r0) * n_x) };
        let ws = &w[r0 * rb..r1 * rb];
        for (yr, wr) in ys.chunks_exact_mut(n_x).zip(ws.chunks_exact(rb)) {
            for (y, xr) in yr.iter_mut().zip(xs.chunks_exact(nb)) {
                *y = dot(isa, wr, xr);
            }
        }
    });
    if n_x > 1 {
        for (r, ys) in t.chunks_exact(n_x).enumerate() {
            for (i, &y) in ys.iter().enumerate() {
                out[i * rows + r] = y;
            }
        }
    }
    Ok(())
}

/// Which instruction set a kernel runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// Portable Rust: the reference every SIMD path is tested against.
    Scalar,
    /// AVX2 + FMA + F16C (`_mm256_maddubs_epi16` products).
    Avx2,
    /// AVX2 plus AVX-512 VNNI/VL (`_mm256_dpbusd_epi32` products).
    Avx512Vnni,
}

impl Isa {
    /// The best path this CPU supports, detected once. AMX is never used (it faults on the
    /// VMs this runs on).
    pub fn detect() -> Isa {
        static ISA: OnceLock<Isa> = OnceLock::new();
        *ISA.get_or_init(|| {
            let avail = Isa::available();
            // `PLINTH_KERNELS=scalar|avx2|avx512` forces a path (when this CPU has it).
            let forced = match std::env::var("PLINTH_KERNELS").as_deref() {
                Ok("scalar") => Some(Isa::Scalar),
                Ok("avx2") => Some(Isa::Avx2),
                Ok("avx512") => Some(Isa::Avx512Vnni),
                _ => None,
            };
            forced.filter(|i| avail.contains(i)).unwrap_or(*avail.last().unwrap_or(&Isa::Scalar))
        })
    }

    /// Every path this CPU can run, scalar first, best last.
    pub fn available() -> Vec<Isa> {
        let mut v = vec![Isa::Scalar];
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c");
            if avx2 {
                v.push(Isa::Avx2);
                if is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512vl")
                    && is_x86_feature_detected!("avx512bw")
                    && is_x86_feature_detected!("avx512vnni")
                {
                    v.push(Isa::Avx512Vnni);
                }
            }
        }
        v
    }

    /// Whether this CPU can run `self` (a forced path must be checked before use: the SIMD
    /// functions are unsafe to call without their features).
    pub fn supported(self) -> bool {
        Isa::available().contains(&self)
    }
}

/// IEEE half-precision bits to f32 (GGML stores block scales as f16). Exact for every input,
/// subnormals, infinities and NaN included.
#[inline]
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h as u32) & 0x8000) << 16;
    let exp = ((h >> 10) & 0x1f) as u32;
    let man = (h & 0x3ff) as u32;
    let bits = match (exp, man) {
        (0, 0) => sign,
        // Subnormal: value = man * 2^-24, exact in f32.
        (0, _) => {
            let v = man as f32 * f32::from_bits(0x3380_0000); // 2^-24
            return if sign != 0 { -v } else { v };
        }
        (0x1f, _) => sign | 0x7f80_0000 | (man << 13),
        _ => sign | ((exp + 112) << 23) | (man << 13),
    };
    f32::from_bits(bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every f16 bit pattern converts as the F16C instruction does (NaNs compared as NaN).
    #[test]
    fn f16_conversion_matches_hardware() {
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("f16c") {
            for h in 0..=u16::MAX {
                // SAFETY: f16c was detected just above.
                let hw = unsafe { hw_f16(h) };
                let sw = f16_to_f32(h);
                assert!(hw.to_bits() == sw.to_bits() || (hw.is_nan() && sw.is_nan()), "{h:#06x}: {hw} vs {sw}");
            }
            return;
        }
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "f16c")]
    unsafe fn hw_f16(h: u16) -> f32 {
        use std::arch::x86_64::*;
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h as i32)))
    }

    #[test]
    fn detect_is_available() {
        assert!(Isa::available().contains(&Isa::detect()));
        assert_eq!(Isa::available()[0], Isa::Scalar);
    }
}
