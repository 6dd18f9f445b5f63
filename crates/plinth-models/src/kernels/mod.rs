//! Hand-written CPU kernels for quantized decode (issue 8).
//!
//! This module owns the quantized matrix-vector products behind [`crate::layers::QLinear`]
//! for few input rows: the activation row is quantized once, to 16-bit blocks of 32 for Q4_1
//! ([`q16`], see there why), to 8-bit blocks ([`q8`], blocks of 32; [`q8k`], blocks of 256 for
//! the K-quants) for the others, then every weight row is dotted with it straight from GGML's
//! block bytes ([`q4_1`]; [`q4_0`], [`q8_0`]; [`q4_k`], [`q6_k`]). Weights that share an input
//! (q/k/v, gate/up) share one quantization and one hand-off to the workers
//! ([`quantized_matmul_many`]). Each kernel
//! has a portable scalar reference and x86 SIMD versions; [`Isa::detect`] picks the best one
//! once per process, and tests force every available path in turn against the scalar one.

/// Defines a weight format's `dot(isa, row, x)`, the row kernel the driver calls: `isa` picks
/// the module's `dot_scalar`, `dot_avx2` or `dot_vnni` (the last two x86 only). One definition
/// of the dispatch and of its safety argument for every format.
macro_rules! row_kernel_dispatch {
    ($act:ty) => {
        /// One weight row (`row.len() == BLOCK_BYTES * x.len()`) dotted with one quantized
        /// activation row. `isa` must be supported (checked by [`super::matmul_rows_many`]).
        #[inline]
        fn dot(isa: Isa, row: &[u8], x: &[$act]) -> f32 {
            debug_assert_eq!(row.len(), x.len() * BLOCK_BYTES);
            match isa {
                Isa::Scalar => dot_scalar(row, x),
                // SAFETY: the driver only passes an `isa` that `Isa::supported` accepted, so the
                // CPU has the features these functions enable; it also checked the lengths.
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2 => unsafe { dot_avx2(row, x) },
                #[cfg(target_arch = "x86_64")]
                Isa::Avx512Vnni => unsafe { dot_vnni(row, x) },
                #[cfg(not(target_arch = "x86_64"))]
                _ => dot_scalar(row, x),
            }
        }
    };
}

/// The checks every activation quantizer makes before it writes: `x` is whole blocks of
/// `A::VALUES`, `out` has one block per group, and the CPU has `isa`.
pub(crate) fn check_quantize<A: ActBlock>(what: &str, isa: Isa, values: usize, blocks: usize) -> Result<()> {
    let n = A::VALUES;
    if !values.is_multiple_of(n) || blocks != values / n {
        return Err(plinth_core::Error::Invalid {
            what: format!("{what} quantization"),
            why: format!("{values} values into {blocks} blocks of {n}: length must be a multiple of {n} and match"),
        });
    }
    if !isa.supported() {
        return Err(plinth_core::Error::Invalid { what: format!("{what} quantization"), why: format!("{isa:?} is not supported by this CPU") });
    }
    Ok(())
}

/// A fresh row of activation blocks for `x`, filled by `quantize` with `isa`.
pub(crate) fn quantize_row<A: ActBlock + Default>(isa: Isa, x: &[f32], quantize: fn(Isa, &[f32], &mut [A]) -> Result<()>) -> Result<Vec<A>> {
    let mut out = vec![A::default(); x.len() / A::VALUES];
    quantize(isa, x, &mut out)?;
    Ok(out)
}

pub mod q16;
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
    Ok(quantized_matmul_many(&[w], x)?.and_then(|mut v| v.pop()))
}

/// [`quantized_matmul`] for several weights sharing the input `x` (a layer's q/k/v, or
/// gate/up): `x` is quantized once and the workers are woken once. `None` unless every weight
/// has a kernel with the same activation format.
pub fn quantized_matmul_many(ws: &[&QTensor], x: &Tensor) -> Result<Option<Vec<Tensor>>> {
    let in_dim = x.dim(candle_core::D::Minus1)?;
    let mut kernels = Vec::with_capacity(ws.len());
    let mut parts = Vec::with_capacity(ws.len());
    for w in ws {
        let (out_dim, cols) = w.shape().dims2()?;
        let Some(k) = kernel(w.dtype()) else { return Ok(None) };
        if cols != in_dim || !cols.is_multiple_of(k.unit()) || std::mem::discriminant(&k) != std::mem::discriminant(&kernels.first().copied().unwrap_or(k)) {
            return Ok(None);
        }
        // On CPU `data()` borrows the tensor's own block bytes: no copy per call or at load.
        let Cow::Borrowed(b) = w.data()? else { return Ok(None) };
        kernels.push(k);
        parts.push((b, out_dim));
    }
    let xv = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let outs = match kernels.first() {
        None => return Ok(Some(Vec::new())),
        Some(Kernel::Q8(_)) => {
            let fs: Vec<_> = kernels.iter().filter_map(|k| if let Kernel::Q8(f) = k { Some(*f) } else { None }).collect();
            run_many(&fs, &parts, in_dim, &xv, q8::quantize_into)?
        }
        Some(Kernel::Q8K(_)) => {
            let fs: Vec<_> = kernels.iter().filter_map(|k| if let Kernel::Q8K(f) = k { Some(*f) } else { None }).collect();
            run_many(&fs, &parts, in_dim, &xv, q8k::quantize_into)?
        }
        Some(Kernel::Q16(_)) => {
            let fs: Vec<_> = kernels.iter().filter_map(|k| if let Kernel::Q16(f) = k { Some(*f) } else { None }).collect();
            run_many(&fs, &parts, in_dim, &xv, q16::quantize_into)?
        }
    };
    let mut ys = Vec::with_capacity(outs.len());
    for (out, (_, d)) in outs.into_iter().zip(parts) {
        let mut shape = x.dims().to_vec();
        let last = shape.len() - 1; // x.dim(D::Minus1) succeeded above, so there is one
        shape[last] = d;
        ys.push(Tensor::from_vec(out, shape, x.device())?.to_dtype(x.dtype())?);
    }
    Ok(Some(ys))
}

/// A weight type's kernel, by the activation blocks it consumes.
#[derive(Clone, Copy)]
enum Kernel {
    Q8(&'static Format<q8::BlockQ8>),
    Q8K(&'static Format<q8k::BlockQ8K>),
    Q16(&'static Format<q16::BlockQ16>),
}

impl Kernel {
    /// Columns must be a multiple of this.
    fn unit(self) -> usize {
        match self {
            Kernel::Q8(f) => f.block_values.max(q8::QK),
            Kernel::Q8K(f) => f.block_values.max(q8k::QK_K),
            Kernel::Q16(f) => f.block_values.max(q16::QK),
        }
    }
}

fn kernel(dt: GgmlDType) -> Option<Kernel> {
    match dt {
        GgmlDType::Q4_1 => Some(Kernel::Q16(&q4_1::FORMAT)),
        GgmlDType::Q4_0 => Some(Kernel::Q8(&q4_0::FORMAT)),
        GgmlDType::Q8_0 => Some(Kernel::Q8(&q8_0::FORMAT)),
        GgmlDType::Q4K => Some(Kernel::Q8K(&q4_k::FORMAT)),
        GgmlDType::Q6K => Some(Kernel::Q8K(&q6_k::FORMAT)),
        _ => None,
    }
}

/// Quantizes the rows of `x` once with `quantize`, then runs every `(weight bytes, rows)` part
/// with its format in one [`matmul_rows_many`]; returns each part's `[n, rows]` output.
fn run_many<A: ActBlock + Default>(
    formats: &[&Format<A>],
    parts: &[(&[u8], usize)],
    cols: usize,
    x: &[f32],
    quantize: fn(Isa, &[f32], &mut [A]) -> Result<()>,
) -> Result<Vec<Vec<f32>>> {
    let isa = Isa::detect();
    let n = x.len() / cols.max(1);
    let xs = quantize_row(isa, x, quantize)?;
    let mut outs: Vec<Vec<f32>> = parts.iter().map(|&(_, d)| vec![0f32; n * d]).collect();
    let mut ps: Vec<Part<'_, A>> = formats
        .iter()
        .zip(parts)
        .zip(outs.iter_mut())
        .map(|((f, &(w, rows)), out)| Part { format: *f, w, rows, out: out.as_mut_slice() })
        .collect();
    matmul_rows_many(&mut ps, isa, cols, &xs)?;
    drop(ps);
    Ok(outs)
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
    /// Optionally, four consecutive rows (`4 · row bytes`) at once, sharing the activation's
    /// loads: `[dot(row 0), .., dot(row 3)]`, within float rounding (used for batches).
    pub dot4: Option<Dot4<A>>,
}

/// A format's 4-row kernel (see [`Format::dot4`]).
pub(crate) type Dot4<A> = fn(Isa, &[u8], &[A]) -> [f32; 4];

/// Weight rows per unit of parallel work (a thread takes whole groups).
const GROUP: usize = 16;

/// The output buffer shared by the workers, each writing its own rows.
struct SharedOut(*mut f32);
// SAFETY: workers write disjoint row ranges only (see `matmul_rows`).
unsafe impl Sync for SharedOut {}

/// `out[i][r] = W[r] · x[i]` for a `[rows, cols]` weight in format `f` (`w`, GGML block bytes)
/// and `n_x` quantized activation rows (`xs`, `n_x * cols / A::VALUES` blocks); `out` is
/// `[n_x, rows]`, row-major. See [`matmul_rows_many`].
#[cfg(test)]
pub(crate) fn matmul_rows<A: ActBlock>(f: &Format<A>, isa: Isa, w: &[u8], rows: usize, cols: usize, xs: &[A], out: &mut [f32]) -> Result<()> {
    matmul_rows_many(&mut [Part { format: f, w, rows, out }], isa, cols, xs)
}

/// One weight of a [`matmul_rows_many`] call and its output `[n_x, rows]`.
pub(crate) struct Part<'a, A> {
    pub format: &'a Format<A>,
    pub w: &'a [u8],
    pub rows: usize,
    pub out: &'a mut [f32],
}

/// Several weights with the same input (q/k/v, or gate/up) against the same quantized
/// activation rows, in one hand-off to the worker pool: the activations are quantized once by
/// the caller and the threads are woken once. Weight rows are split across candle's worker
/// pool in groups of 16; each weight row is read once for all activation rows.
pub(crate) fn matmul_rows_many<A: ActBlock>(parts: &mut [Part<'_, A>], isa: Isa, cols: usize, xs: &[A]) -> Result<()> {
    let nb = cols / A::VALUES;
    let n_x = xs.len().checked_div(nb).unwrap_or(0);
    let mut work = Vec::with_capacity(parts.len());
    for p in parts.iter_mut() {
        let f = p.format;
        let bad = |why: String| plinth_core::Error::Invalid { what: format!("{} matmul", f.name), why };
        let unit = f.block_values.max(A::VALUES);
        if cols == 0 || !cols.is_multiple_of(unit) {
            return Err(bad(format!("{cols} columns is not a positive multiple of {unit}")));
        }
        let rb = cols / f.block_values * f.block_bytes;
        if p.rows.checked_mul(rb) != Some(p.w.len()) {
            return Err(bad(format!("{} weight bytes for [{}, {cols}] (expected {})", p.w.len(), p.rows, p.rows * rb)));
        }
        if !xs.len().is_multiple_of(nb) || xs.is_empty() {
            return Err(bad(format!("{} activation blocks is not a positive multiple of {nb}", xs.len())));
        }
        if p.out.len() != n_x * p.rows {
            return Err(bad(format!("output holds {} values, expected {n_x} x {}", p.out.len(), p.rows)));
        }
        if !isa.supported() {
            return Err(bad(format!("{isa:?} is not supported by this CPU")));
        }
        // Several activation rows are computed as [rows, n_x] so each weight row is read once,
        // then transposed into `out`.
        let t = if n_x == 1 { Vec::new() } else { vec![0f32; p.rows * n_x] };
        work.push((f.dot, f.dot4, p.w, p.rows, rb, t));
    }
    let dsts: Vec<SharedOut> = work
        .iter_mut()
        .zip(parts.iter_mut())
        .map(|(wk, p)| SharedOut(if n_x == 1 { p.out.as_mut_ptr() } else { wk.5.as_mut_ptr() }))
        .collect();
    // Group index ranges of each part, back to back.
    let mut first = Vec::with_capacity(work.len() + 1);
    first.push(0usize);
    for wk in &work {
        first.push(first.last().copied().unwrap_or(0) + wk.3.div_ceil(GROUP));
    }
    let (work_ref, dsts, first_ref) = (&work, &dsts, &first);
    // candle's own worker pool (the one its ops use, the calling thread taking part): a
    // second pool (rayon's) would spin against it for the same cores between ops.
    candle_core::utils::barrier_pool().execute_chunked(first.last().copied().unwrap_or(0), |groups| {
        for g in groups {
            let pi = first_ref.partition_point(|&f| f <= g) - 1;
            let (dot, dot4, w, rows, rb, _) = &work_ref[pi];
            let r0 = (g - first_ref[pi]) * GROUP;
            let r1 = (r0 + GROUP).min(*rows);
            // SAFETY: `execute_chunked` hands out disjoint group indices, and each maps to its
            // own rows r0..r1 of one part, so those n_x-value rows are written by this call
            // alone; the buffers outlive the call, which returns only after every worker is done.
            let ys = unsafe { std::slice::from_raw_parts_mut(dsts[pi].0.add(r0 * n_x), (r1 - r0) * n_x) };
            let mut r = r0;
            // Four rows at a time only for several activation rows (batched decode), where it
            // wins by 9 % at 16 sequences; for one row, the one-row kernel's single memory
            // stream decodes ~10 % faster end to end even though the 4-row kernel is faster
            // with its weights in cache.
            if let Some(dot4) = dot4.filter(|_| n_x > 1) {
                while r + 4 <= r1 {
                    let w4 = &w[r * rb..(r + 4) * rb];
                    for (i, xr) in xs.chunks_exact(nb).enumerate() {
                        let y4 = dot4(isa, w4, xr);
                        for (k, y) in y4.into_iter().enumerate() {
                            ys[(r - r0 + k) * n_x + i] = y;
                        }
                    }
                    r += 4;
                }
            }
            for (yr, wr) in ys[(r - r0) * n_x..].chunks_exact_mut(n_x).zip(w[r * rb..r1 * rb].chunks_exact(*rb)) {
                for (y, xr) in yr.iter_mut().zip(xs.chunks_exact(nb)) {
                    *y = dot(isa, wr, xr);
                }
            }
        }
    });
    if n_x > 1 {
        for (wk, p) in work.iter().zip(parts.iter_mut()) {
            for (r, ys) in wk.5.chunks_exact(n_x).enumerate() {
                for (i, &y) in ys.iter().enumerate() {
                    p.out[i * wk.3 + r] = y;
                }
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
