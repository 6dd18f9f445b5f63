//! Hand-written CPU kernels for quantized decode (issue 8).
//!
//! This module owns the quantized matrix-vector products behind [`crate::layers::QLinear`]
//! for few input rows: the activation row is quantized once to 8-bit blocks ([`q8`]), then
//! every weight row is dotted with it straight from GGML's block bytes ([`q4_1`]). Each kernel
//! has a portable scalar reference and x86 SIMD versions; [`Isa::detect`] picks the best one
//! once per process, and tests force every available path in turn against the scalar one.

pub mod q4_1;
pub mod q8;

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
    if w.dtype() != GgmlDType::Q4_1 {
        return Ok(None);
    }
    let (out_dim, in_dim) = w.shape().dims2()?;
    if in_dim % q8::QK != 0 || x.dim(candle_core::D::Minus1)? != in_dim {
        return Ok(None);
    }
    // On CPU `data()` borrows the tensor's own block bytes: no copy per call or at load.
    let Cow::Borrowed(bytes) = w.data()? else { return Ok(None) };
    let xv = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let n = xv.len() / in_dim;
    let xs = q8::quantize_row(&xv)?;
    let mut out = vec![0f32; n * out_dim];
    q4_1::matmul(bytes, out_dim, in_dim, &xs, &mut out)?;
    let mut shape = x.dims().to_vec();
    let last = shape.len() - 1; // x.dim(D::Minus1) succeeded above, so there is one
    shape[last] = out_dim;
    Ok(Some(Tensor::from_vec(out, shape, x.device())?.to_dtype(x.dtype())?))
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
