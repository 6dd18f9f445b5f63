//! Fused CPU kernels for the encoder hot path (and the decoders' attention softmax and SwiGLU),
//! where a BERT-style layer on a batch of short
//! sentences is dominated not by its matrix products but by the many small operations between
//! them: bias + activation, bias + residual + LayerNorm, and attention over `batch x heads`
//! tiny matrices (which candle would run as hundreds of separate small GEMMs plus permute
//! copies, softmax and mask passes). Each kernel here makes one pass over its data, split
//! across the rayon pool that the GEMMs use, and runs the transcendental functions through
//! branch-free approximations that the compiler vectorizes ([`exp`]: ~1 ulp; [`erf`]:
//! |error| < 1e-6), instead of scalar libm calls.
//!
//! Every kernel is checked against the plain candle composition in this module's tests.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor};
use plinth_core::Result;
use rayon::prelude::*;

use crate::layers::Activation;

/// Rows handed to one rayon task: enough work to amortize the task, small enough to balance.
const MIN_ELEMS_PER_TASK: usize = 16 * 1024;

/// The f32 values of a contiguous CPU tensor, for custom ops.
pub(crate) fn contiguous<'a>(s: &'a CpuStorage, l: &Layout, op: &'static str) -> candle_core::Result<&'a [f32]> {
    match s {
        CpuStorage::F32(v) => match l.contiguous_offsets() {
            Some((a, b)) => Ok(&v[a..b]),
            None => Err(candle_core::Error::RequiresContiguous { op }),
        },
        other => Err(candle_core::Error::UnsupportedDTypeForOp(candle_core::backend::BackendStorage::dtype(other), op)),
    }
}

/// `e^x` for f32: Cody-Waite range reduction and Cephes' degree-6 polynomial; ~1 ulp on
/// [-87.3, 88.3], clamped outside (never 0 or infinite). Branch-free so loops over it vectorize.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.3, 88.3);
    let n = (x * std::f32::consts::LOG2_E + 0.5).floor();
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let e = p * r * r + r + 1.0;
    e * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// The error function: Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7 in exact arithmetic,
/// < 1e-6 in f32; GELU's result moves by less than |x| * 5e-7).
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t * (0.254_829_6 + t * (-0.284_496_74 + t * (1.421_413_7 + t * (-1.453_152_1 + t * 1.061_405_4))));
    let y = 1.0 - poly * exp(-a * a);
    y.copysign(x)
}

#[inline(always)]
fn tanh(x: f32) -> f32 {
    // 1 - 2 / (e^{2x} + 1): exact limits at both ends, no cancellation problem near 0
    // worth the cost here (the result feeds a GELU, not a long chain).
    1.0 - 2.0 / (exp(2.0 * x) + 1.0)
}

#[inline(always)]
fn activate(act: Activation, x: f32) -> f32 {
    match act {
        Activation::GeluErf => 0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2)),
        Activation::GeluTanh => 0.5 * x * (1.0 + tanh(0.797_884_6 * (x + 0.044_715 * x * x * x))),
        Activation::Relu => x.max(0.0),
        Activation::Silu => x / (1.0 + exp(-x)),
        Activation::QuickGelu => x / (1.0 + exp(-1.702 * x)),
        Activation::Tanh => tanh(x),
    }
}

fn rows_per_task(row_len: usize) -> usize {
    MIN_ELEMS_PER_TASK.div_ceil(row_len.max(1)).max(1)
}

/// `f(x + bias)` over rows of `bias.len()`, split across the pool.
fn bias_map(x: &[f32], bias: &[f32], f: impl Fn(f32) -> f32 + Sync) -> Vec<f32> {
    let n = bias.len();
    let mut out = vec![0f32; x.len()];
    let chunk = rows_per_task(n) * n;
    out.par_chunks_mut(chunk).zip(x.par_chunks(chunk)).for_each(|(o, x)| {
        for (o, x) in o.chunks_exact_mut(n).zip(x.chunks_exact(n)) {
            for ((o, &x), &b) in o.iter_mut().zip(x).zip(bias) {
                *o = f(x + b);
            }
        }
    });
    out
}

/// `act(x + bias)` row by row, `x` of shape `[rows, bias.len()]`.
struct BiasAct<'a> {
    bias: &'a [f32],
    act: Activation,
}

impl CustomOp1 for BiasAct<'_> {
    fn name(&self) -> &'static str {
        "bias-act"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous(s, l, self.name())?;
        // One monomorphized loop per activation: a `match` inside the element loop would keep
        // the compiler from vectorizing it.
        let out = match self.act {
            Activation::GeluErf => bias_map(x, self.bias, |x| activate(Activation::GeluErf, x)),
            Activation::GeluTanh => bias_map(x, self.bias, |x| activate(Activation::GeluTanh, x)),
            Activation::Relu => bias_map(x, self.bias, |x| activate(Activation::Relu, x)),
            Activation::Silu => bias_map(x, self.bias, |x| activate(Activation::Silu, x)),
            Activation::QuickGelu => bias_map(x, self.bias, |x| activate(Activation::QuickGelu, x)),
            Activation::Tanh => bias_map(x, self.bias, |x| activate(Activation::Tanh, x)),
        };
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }
}

/// `act(x + bias)` for `x` of shape `[..., bias.len()]` (contiguous f32).
pub fn bias_act(x: &Tensor, bias: &[f32], act: Activation) -> Result<Tensor> {
    Ok(x.apply_op1_no_bwd(&BiasAct { bias, act })?)
}

/// `LayerNorm(x + bias + residual)` row by row.
struct ResidualNorm<'a> {
    bias: &'a [f32],
    gamma: &'a [f32],
    beta: &'a [f32],
    eps: f32,
}

impl CustomOp2 for ResidualNorm<'_> {
    fn name(&self) -> &'static str {
        "bias-residual-layernorm"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous(s1, l1, self.name())?;
        let res = contiguous(s2, l2, self.name())?;
        if x.len() != res.len() {
            candle_core::bail!("bias-residual-layernorm: {} vs {} elements", x.len(), res.len());
        }
        let n = self.gamma.len();
        let mut out = vec![0f32; x.len()];
        let chunk = rows_per_task(n) * n;
        out.par_chunks_mut(chunk).zip(x.par_chunks(chunk).zip(res.par_chunks(chunk))).for_each(|(o, (x, r))| {
            for (o, (x, r)) in o.chunks_exact_mut(n).zip(x.chunks_exact(n).zip(r.chunks_exact(n))) {
                for ((o, (&x, &r)), &b) in o.iter_mut().zip(x.iter().zip(r)).zip(self.bias) {
                    *o = x + r + b;
                }
                // Two passes (mean, then centred variance), as PyTorch computes it in f32.
                let mean = sum8(o) / n as f32;
                o.iter_mut().for_each(|v| *v -= mean);
                let var = dot8(o, o) / n as f32;
                let rstd = 1.0 / (var + self.eps).sqrt();
                for ((v, &g), &b) in o.iter_mut().zip(self.gamma).zip(self.beta) {
                    *v = *v * rstd * g + b;
                }
            }
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// `LayerNorm(x + bias + residual)` over the last dimension (`gamma.len()`).
pub fn bias_residual_layer_norm(x: &Tensor, residual: &Tensor, bias: &[f32], gamma: &[f32], beta: &[f32], eps: f64) -> Result<Tensor> {
    Ok(x.apply_op2_no_bwd(residual, &ResidualNorm { bias, gamma, beta, eps: eps as f32 })?)
}

/// `softmax(cap·tanh(x·scale / cap) + mask)` row by row (the soft-cap optional), for attention
/// scores `[.., seq, total]` whose mask `[seq, total]` repeats every `seq` rows.
struct ScaledMaskedSoftmax<'a> {
    scale: f32,
    softcap: Option<f32>,
    mask: Option<&'a [f32]>,
    seq: usize,
}

impl CustomOp1 for ScaledMaskedSoftmax<'_> {
    fn name(&self) -> &'static str {
        "scaled-masked-softmax"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous(s, l, self.name())?;
        let n = l.dims().last().copied().unwrap_or(1).max(1);
        if self.mask.is_some_and(|m| m.len() != self.seq * n) || x.len() % n != 0 {
            candle_core::bail!("scaled-masked-softmax: mask of {:?} values for rows of {n}", self.mask.map(|m| m.len()));
        }
        let mut out = vec![0f32; x.len()];
        let chunk = rows_per_task(n) * n;
        out.par_chunks_mut(chunk).zip(x.par_chunks(chunk)).enumerate().for_each(|(ci, (o, x))| {
            let row0 = ci * chunk / n;
            for (r, (o, x)) in o.chunks_exact_mut(n).zip(x.chunks_exact(n)).enumerate() {
                let (scale, cap) = (self.scale, self.softcap);
                match cap {
                    Some(c) => o.iter_mut().zip(x).for_each(|(o, &x)| *o = c * tanh(x * scale / c)),
                    None => o.iter_mut().zip(x).for_each(|(o, &x)| *o = x * scale),
                }
                if let Some(m) = self.mask {
                    let mr = (row0 + r) % self.seq;
                    o.iter_mut().zip(&m[mr * n..(mr + 1) * n]).for_each(|(o, &m)| *o += m);
                }
                let max = o.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
                // A fully masked row (max = -inf) gives zeros, not NaN.
                let max = if max.is_finite() { max } else { 0.0 };
                o.iter_mut().for_each(|v| *v = exp(*v - max));
                let sum = sum8(o);
                let inv = if sum > 0.0 { 1.0 / sum } else { 0.0 };
                o.iter_mut().for_each(|v| *v *= inv);
            }
        });
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }
}

/// Attention probabilities from raw scores `x` (`[.., seq, total]`, contiguous f32): scaled,
/// soft-capped if `softcap`, plus `mask` (`[seq, total]`, repeated over the leading rows), then
/// a softmax over the last dimension; exponentials through [`exp`] rather than libm's. No
/// backward pass: callers use the composed ops under autodiff.
pub fn scaled_masked_softmax(x: &Tensor, mask: Option<&[f32]>, seq: usize, scale: f32, softcap: Option<f32>) -> Result<Tensor> {
    Ok(x.apply_op1_no_bwd(&ScaledMaskedSoftmax { scale, softcap, mask, seq })?)
}

/// `silu(gate) · up`, elementwise (the SwiGLU of Llama-family MLPs).
struct SiluMul;

impl CustomOp2 for SiluMul {
    fn name(&self) -> &'static str {
        "silu-mul"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = contiguous(s1, l1, self.name())?;
        let u = contiguous(s2, l2, self.name())?;
        if g.len() != u.len() {
            candle_core::bail!("silu-mul: {} vs {} elements", g.len(), u.len());
        }
        let mut out = vec![0f32; g.len()];
        let chunk = MIN_ELEMS_PER_TASK;
        let f = |o: &mut [f32], g: &[f32], u: &[f32]| {
            o.iter_mut().zip(g.iter().zip(u)).for_each(|(o, (&g, &u))| *o = activate(Activation::Silu, g) * u);
        };
        if g.len() <= chunk {
            // One decode row: not worth a hand-off to the pool.
            f(&mut out, g, u);
        } else {
            out.par_chunks_mut(chunk).zip(g.par_chunks(chunk).zip(u.par_chunks(chunk))).for_each(|(o, (g, u))| f(o, g, u));
        }
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// `silu(gate) · up` in one pass with the vectorized [`exp`] (contiguous f32 of equal shapes);
/// under autodiff, or for other dtypes, the composed candle ops.
pub fn silu_mul(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    if gate.track_op() || up.track_op() || gate.dtype() != candle_core::DType::F32 || up.dtype() != candle_core::DType::F32 || gate.dims() != up.dims() {
        return Ok((candle_nn::ops::silu(gate)? * up)?);
    }
    Ok(gate.contiguous()?.apply_op2_no_bwd(&up.contiguous()?, &SiluMul)?)
}

/// Sum with eight independent accumulators (vectorizes; the order differs from a serial
/// sum only by rounding).
#[inline(always)]
pub(crate) fn sum8(a: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let mut chunks = a.chunks_exact(8);
    for c in &mut chunks {
        for l in 0..8 {
            acc[l] += c[l];
        }
    }
    acc.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>()
}

#[inline(always)]
pub(crate) fn dot8(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (mut ca, mut cb) = (a.chunks_exact(8), b.chunks_exact(8));
    for (x, y) in (&mut ca).zip(&mut cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    acc.iter().sum::<f32>() + ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum::<f32>()
}

/// Multi-head self-attention straight from the fused projection: `qkv` is `[b * t, 3h]`
/// (q already scaled by 1/sqrt(head_dim)), `mask` `[b * t]` with 1 for real tokens. Returns
/// the context `[b * t, h]`. Padded keys get no weight; padded query rows are left zero
/// (nothing downstream reads them: every later step masks or drops padding).
struct Attention<'a> {
    mask: &'a [f32],
    b: usize,
    t: usize,
    heads: usize,
}

impl CustomOp1 for Attention<'_> {
    fn name(&self) -> &'static str {
        "fused-attention"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let qkv = contiguous(s, l, self.name())?;
        let (b, t, heads) = (self.b, self.t, self.heads);
        let h3 = qkv.len() / (b * t).max(1);
        let h = h3 / 3;
        if h3 * b * t != qkv.len() || h % heads != 0 || self.mask.len() != b * t {
            candle_core::bail!("fused-attention: qkv of {} values does not fit b={b}, t={t}, heads={heads}", qkv.len());
        }
        let d = h / heads;
        let mut out = vec![0f32; b * t * h];
        out.par_chunks_mut(t * h).enumerate().for_each(|(bi, out)| {
            let rows = &qkv[bi * t * h3..(bi + 1) * t * h3];
            let mask = &self.mask[bi * t..(bi + 1) * t];
            // Only real keys take part; padding keys are dropped up front instead of masked.
            let keys: Vec<usize> = (0..t).filter(|&j| mask[j] != 0.0).collect();
            let n = keys.len();
            // Per head: K transposed to [d, n] so that the scores of one query are a sum of
            // `n`-long axpys (no horizontal sums), V gathered to [n, d].
            let (mut kt, mut v, mut p) = (vec![0f32; d * n], vec![0f32; n * d], vec![0f32; n]);
            for head in 0..heads {
                let (qo, ko, vo) = (head * d, h + head * d, 2 * h + head * d);
                for (jj, &j) in keys.iter().enumerate() {
                    let row = &rows[j * h3..(j + 1) * h3];
                    for c in 0..d {
                        kt[c * n + jj] = row[ko + c];
                    }
                    v[jj * d..(jj + 1) * d].copy_from_slice(&row[vo..vo + d]);
                }
                for &i in &keys {
                    let q = &rows[i * h3 + qo..i * h3 + qo + d];
                    p.fill(0.0);
                    for (c, &qc) in q.iter().enumerate() {
                        p.iter_mut().zip(&kt[c * n..(c + 1) * n]).for_each(|(p, &k)| *p += qc * k);
                    }
                    let max = p.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
                    p.iter_mut().for_each(|x| *x = exp(*x - max));
                    let inv = 1.0 / sum8(&p);
                    let o = &mut out[i * h + qo..i * h + qo + d];
                    for (&pj, vj) in p.iter().zip(v.chunks_exact(d)) {
                        let w = pj * inv;
                        o.iter_mut().zip(vj).for_each(|(o, &v)| *o += w * v);
                    }
                }
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((b * t, h))))
    }
}

/// See [`Attention`]: `qkv` `[b * t, 3h]`, `mask` `[b * t]` (1 = token, 0 = padding).
pub fn self_attention(qkv: &Tensor, mask: &[f32], b: usize, t: usize, heads: usize) -> Result<Tensor> {
    Ok(qkv.apply_op1_no_bwd(&Attention { mask, b, t, heads })?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, D};

    fn rand(shape: &[usize], seed: u64) -> Tensor {
        // A small LCG: deterministic, no dependency.
        let n: usize = shape.iter().product();
        let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let v: Vec<f32> = (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 6.0
            })
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
    }

    #[test]
    fn exp_and_erf_are_accurate() {
        let mut worst_exp = 0f32;
        let mut worst_erf = 0f32;
        for i in -80_000..80_000 {
            let x = i as f32 / 1000.0;
            worst_exp = worst_exp.max(((exp(x) - x.exp()) / x.exp()).abs());
            let xe = x / 10.0;
            worst_erf = worst_erf.max((erf(xe) - libm_erf(xe)).abs());
        }
        assert!(worst_exp < 3e-7, "exp relative error {worst_exp}");
        assert!(worst_erf < 1e-6, "erf absolute error {worst_erf}");
        assert!(exp(-1000.0) < 1e-37 && exp(-1000.0) > 0.0 && exp(1000.0).is_finite());
    }

    /// erf in f64 through candle's exact GELU: gelu_erf(x) = x/2 (1 + erf(x / sqrt 2)).
    fn libm_erf(x: f32) -> f32 {
        let t = Tensor::new(&[(x as f64) * std::f64::consts::SQRT_2], &Device::Cpu).unwrap();
        let g = t.gelu_erf().unwrap().to_vec1::<f64>().unwrap()[0];
        if x == 0.0 { 0.0 } else { (2.0 * g / (x as f64 * std::f64::consts::SQRT_2) - 1.0) as f32 }
    }

    #[test]
    fn bias_act_matches_candle() {
        let x = rand(&[37, 24], 1);
        let bias = rand(&[24], 2);
        let bv = bias.to_vec1::<f32>().unwrap();
        for act in [Activation::GeluErf, Activation::GeluTanh, Activation::Relu, Activation::Silu, Activation::QuickGelu, Activation::Tanh] {
            let want = act.apply(&x.broadcast_add(&bias).unwrap()).unwrap();
            let got = bias_act(&x, &bv, act).unwrap();
            assert!(max_diff(&got, &want) < 2e-6, "{act:?}: {}", max_diff(&got, &want));
        }
    }

    /// Against the composed candle ops: scores [2 heads · 3 queries, 7 keys], a causal mask
    /// over the 3 queries repeated per head, with and without soft-capping.
    #[test]
    fn scaled_masked_softmax_matches_candle() {
        let (seq, total) = (3, 7);
        let x = rand(&[1, 2, seq, total], 9);
        let mask = crate::layers::causal_mask(seq, total - seq, None, &Device::Cpu).unwrap();
        let mv = mask.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for cap in [None, Some(2.0f32)] {
            let mut att = (&x * 0.37).unwrap();
            if let Some(c) = cap {
                att = ((att / c as f64).unwrap().tanh().unwrap() * c as f64).unwrap();
            }
            let want = candle_nn::ops::softmax(&att.broadcast_add(&mask).unwrap(), D::Minus1).unwrap();
            let got = scaled_masked_softmax(&x, Some(&mv), seq, 0.37, cap).unwrap();
            assert!(max_diff(&got, &want) < 1e-6, "cap {cap:?}: {}", max_diff(&got, &want));
        }
    }

    #[test]
    fn silu_mul_matches_candle() {
        let (g, u) = (rand(&[5, 6000], 10), rand(&[5, 6000], 11));
        let want = (candle_nn::ops::silu(&g).unwrap() * &u).unwrap();
        assert!(max_diff(&silu_mul(&g, &u).unwrap(), &want) < 2e-6);
    }

    #[test]
    fn residual_layer_norm_matches_candle() {
        let (x, r) = (rand(&[19, 40], 3), rand(&[19, 40], 4));
        let (bias, g, beta) = (rand(&[40], 5), rand(&[40], 6), rand(&[40], 7));
        let want = candle_nn::ops::layer_norm(&(x.broadcast_add(&bias).unwrap() + &r).unwrap(), &g, &beta, 1e-12).unwrap();
        let v = |t: &Tensor| t.to_vec1::<f32>().unwrap();
        let got = bias_residual_layer_norm(&x, &r, &v(&bias), &v(&g), &v(&beta), 1e-12).unwrap();
        assert!(max_diff(&got, &want) < 1e-5, "{}", max_diff(&got, &want));
    }

    #[test]
    fn attention_matches_candle_with_padding() {
        let (b, t, heads, d) = (3, 7, 4, 12);
        let h = heads * d;
        let qkv = rand(&[b * t, 3 * h], 8);
        let lens = [7usize, 3, 5];
        let mask: Vec<f32> = lens.iter().flat_map(|&n| (0..t).map(move |i| if i < n { 1.0 } else { 0.0 })).collect();
        let got = self_attention(&qkv, &mask, b, t, heads).unwrap();
        let parts = qkv.reshape((b, t, 3, heads, d)).unwrap().permute((2, 0, 3, 1, 4)).unwrap().contiguous().unwrap();
        let (q, k, v) = (parts.get(0).unwrap(), parts.get(1).unwrap(), parts.get(2).unwrap());
        let add = Tensor::from_vec(mask.iter().map(|&m| if m == 0.0 { f32::MIN } else { 0.0 }).collect::<Vec<_>>(), (b, 1, 1, t), &Device::Cpu).unwrap();
        let scores = q.matmul(&k.t().unwrap()).unwrap().broadcast_add(&add).unwrap();
        let probs = candle_nn::ops::softmax(&scores, D::Minus1).unwrap();
        let want = probs.matmul(&v).unwrap().transpose(1, 2).unwrap().reshape((b * t, h)).unwrap();
        for (bi, &n) in lens.iter().enumerate() {
            let g = got.narrow(0, bi * t, n).unwrap();
            let w = want.narrow(0, bi * t, n).unwrap();
            assert!(max_diff(&g, &w) < 1e-5, "row {bi}: {}", max_diff(&g, &w));
        }
    }
}
