//! The pieces the UNet and the VAE share, with diffusers' tensor names: a parameter-counting
//! weight reader, a config reader that names the file and key in its errors, 2-d convolutions,
//! group norm (one fused pass, optionally with SiLU), `ResnetBlock2D`, `Downsample2D`,
//! `Upsample2D`, and multi-head attention with the query axis processed in chunks so that the
//! score matrix stays bounded at any latent size.

use std::cell::Cell;
use std::path::{Path, PathBuf};

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Shape, Tensor};
use plinth_core::{Error, Result};
use rayon::prelude::*;

use crate::layers::{fused, Linear, QLinear};
use crate::weights::Weights;

/// Most attention scores (floats) held at once: 64M floats, 256 MiB.
pub const MAX_SCORES: usize = 64 << 20;

/// Reads tensors by name, checking shapes, and counts the parameters it hands out.
pub struct Loader<'a> {
    pub w: &'a Weights,
    count: Cell<usize>,
}

impl<'a> Loader<'a> {
    pub fn new(w: &'a Weights) -> Self {
        Loader { w, count: Cell::new(0) }
    }
    pub fn tensor(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let t = self.w.tensor(name, shape)?;
        self.count.set(self.count.get() + t.elem_count());
        Ok(t)
    }
    pub fn contains(&self, name: &str) -> bool {
        self.w.contains(name)
    }
    /// `{p}.weight` `[out, inp]` and, when `bias`, `{p}.bias` (required then).
    pub fn linear(&self, p: &str, out: usize, inp: usize, bias: bool) -> Result<QLinear> {
        let w = self.tensor(&format!("{p}.weight"), &[out, inp])?;
        let b = if bias { Some(self.tensor(&format!("{p}.bias"), &[out])?) } else { None };
        Ok(QLinear::from_tensor(w, b))
    }
    pub fn conv(&self, p: &str, out: usize, inp: usize, k: usize, stride: usize, padding: usize) -> Result<Conv2d> {
        Ok(Conv2d {
            weight: self.tensor(&format!("{p}.weight"), &[out, inp, k, k])?.reshape((out, inp * k * k))?,
            bias: self.tensor(&format!("{p}.bias"), &[out])?.reshape((1, out, 1, 1))?,
            k,
            stride,
            padding,
        })
    }
    /// A 1x1 convolution as the equivalent `[out, inp]` linear layer.
    pub fn conv1x1_as_linear(&self, p: &str, out: usize, inp: usize) -> Result<QLinear> {
        let w = self.tensor(&format!("{p}.weight"), &[out, inp, 1, 1])?.reshape((out, inp))?;
        Ok(QLinear::from_tensor(w, Some(self.tensor(&format!("{p}.bias"), &[out])?)))
    }
    pub fn group_norm(&self, p: &str, channels: usize, groups: usize, eps: f64) -> Result<GroupNorm> {
        if groups == 0 || !channels.is_multiple_of(groups) {
            return Err(Error::invalid("group norm", format!("{p}: {groups} groups do not divide {channels} channels")));
        }
        let v = |n: &str| -> Result<Vec<f32>> { Ok(self.tensor(&format!("{p}.{n}"), &[channels])?.to_vec1::<f32>()?) };
        Ok(GroupNorm { weight: v("weight")?, bias: v("bias")?, groups, eps: eps as f32 })
    }
    pub fn layer_norm(&self, p: &str, dim: usize, eps: f64) -> Result<crate::layers::LayerNorm> {
        let t = |n: &str| self.tensor(&format!("{p}.{n}"), &[dim]);
        Ok(crate::layers::LayerNorm::new(t("weight")?, t("bias")?, eps))
    }
    pub fn parameters(&self) -> usize {
        self.count.get()
    }
}

/// `config.json` of a diffusers component, read key by key with errors naming file and key.
pub struct Config {
    pub json: serde_json::Value,
    pub path: PathBuf,
}

impl Config {
    pub fn read(dir: &Path) -> Result<Self> {
        let json = plinth_io::safetensors::read_config(dir)?;
        if !json.is_object() {
            return Err(Error::format(dir.join("config.json"), "not a JSON object"));
        }
        Ok(Config { json, path: dir.join("config.json") })
    }
    fn get(&self, key: &str) -> Option<&serde_json::Value> {
        self.json.get(key).filter(|v| !v.is_null())
    }
    fn bad(&self, key: &str, want: &str) -> Error {
        Error::format(&self.path, format!("'{key}' is not {want}: {}", self.json[key]))
    }
    pub fn require(&self, key: &str) -> Result<()> {
        self.get(key).map(|_| ()).ok_or_else(|| Error::missing(&self.path, format!("config key '{key}'")))
    }
    /// An integer in `1..=max` (sizes; `max` keeps hostile configs from sizing huge buffers).
    pub fn usize(&self, key: &str, default: usize, max: usize) -> Result<usize> {
        Ok(self.opt_usize(key, max)?.unwrap_or(default))
    }
    pub fn opt_usize(&self, key: &str, max: usize) -> Result<Option<usize>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => match v.as_u64() {
                Some(n) if n >= 1 && n as usize <= max => Ok(Some(n as usize)),
                _ => Err(self.bad(key, &format!("an integer in 1..={max}"))),
            },
        }
    }
    pub fn f64(&self, key: &str, default: f64) -> Result<f64> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v.as_f64().filter(|x| x.is_finite()).ok_or_else(|| self.bad(key, "a number")),
        }
    }
    pub fn bool(&self, key: &str, default: bool) -> Result<bool> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v.as_bool().ok_or_else(|| self.bad(key, "true or false")),
        }
    }
    pub fn opt_str(&self, key: &str) -> Result<Option<&str>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_str().map(Some).ok_or_else(|| self.bad(key, "a string")),
        }
    }
    pub fn strs(&self, key: &str) -> Result<Vec<String>> {
        self.require(key)?;
        let v = self.get(key).and_then(|v| v.as_array()).ok_or_else(|| self.bad(key, "a list of strings"))?;
        let out: Option<Vec<String>> = v.iter().map(|s| s.as_str().map(str::to_string)).collect();
        match out {
            Some(o) if !o.is_empty() && o.len() <= 16 => Ok(o),
            _ => Err(self.bad(key, "a list of 1 to 16 strings")),
        }
    }
    /// A list of sizes, or one size repeated `n` times (`default` when absent).
    pub fn usizes(&self, key: &str, n: usize, default: Option<usize>, max: usize) -> Result<Vec<usize>> {
        let ok = |x: &serde_json::Value| x.as_u64().filter(|&v| v >= 1 && v as usize <= max).map(|v| v as usize);
        match self.get(key) {
            None => default.map(|d| vec![d; n]).ok_or_else(|| Error::missing(&self.path, format!("config key '{key}'"))),
            Some(serde_json::Value::Array(a)) => {
                let v: Option<Vec<usize>> = a.iter().map(ok).collect();
                match v {
                    Some(v) if v.len() == n => Ok(v),
                    _ => Err(self.bad(key, &format!("{n} integers in 1..={max}"))),
                }
            }
            Some(x) => ok(x).map(|v| vec![v; n]).ok_or_else(|| self.bad(key, &format!("an integer in 1..={max}"))),
        }
    }
    /// Refuses a key whose value is set to anything but `allowed` (null counts as absent).
    pub fn only(&self, key: &str, allowed: &[serde_json::Value]) -> Result<()> {
        match self.get(key) {
            Some(v) if !allowed.contains(v) => Err(Error::unsupported(&self.path, format!("{key} = {v}"))),
            _ => Ok(()),
        }
    }
}

/// A 2-d convolution with bias, as im2col + one GEMM per image: `W [out, in*k*k]` times the
/// patch matrix `[in*k*k, pixels]` gives the output directly in NCHW order. (candle 0.11's own
/// tiled conv2d ran a 320->320 3x3 convolution at 64x64 in ~2.3x the time of the bare GEMM.)
/// The patch matrix is built a band of output rows at a time so it stays under
/// [`MAX_PATCH_FLOATS`] at any image size.
pub struct Conv2d {
    /// `[out, in * k * k]`.
    weight: Tensor,
    bias: Tensor,
    k: usize,
    stride: usize,
    padding: usize,
}

/// Largest patch matrix built at once (floats): 4M, 16 MiB, under glibc's largest mmap
/// threshold, so that the buffer is recycled from the heap instead of page-faulted in anew
/// for every band.
const MAX_PATCH_FLOATS: usize = 4 << 20;

impl Conv2d {
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_banded(x, MAX_PATCH_FLOATS)
    }

    fn forward_banded(&self, x: &Tensor, max_patch: usize) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let (o, kk) = self.weight.dims2()?;
        let (k, s, p) = (self.k, self.stride, self.padding);
        if kk != c * k * k || h + 2 * p < k || w + 2 * p < k {
            return Err(Error::invalid("convolution input", format!("{:?} for a {o}x{c}x{k}x{k} kernel with padding {p}", x.dims())));
        }
        let (ho, wo) = ((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1);
        let x = x.contiguous()?;
        let band = (max_patch / (kk * wo).max(1)).clamp(1, ho);
        let mut images = Vec::with_capacity(b);
        for i in 0..b {
            let img = x.get(i)?;
            let y = if k == 1 && s == 1 && p == 0 {
                self.weight.matmul(&img.reshape((c, h * w))?)?
            } else {
                let mut bands = Vec::with_capacity(ho.div_ceil(band));
                for r0 in (0..ho).step_by(band) {
                    let op = Im2Col { k, stride: s, padding: p, rows: r0..(r0 + band).min(ho), wo };
                    bands.push(self.weight.matmul(&img.apply_op1_no_bwd(&op)?)?);
                }
                if bands.len() == 1 { bands.pop().expect("one band") } else { Tensor::cat(&bands, 1)? }
            };
            images.push(y.reshape((1, o, ho, wo))?);
        }
        let y = if b == 1 { images.pop().expect("one image") } else { Tensor::cat(&images, 0)? };
        Ok(y.broadcast_add(&self.bias)?)
    }
}

/// The patch matrix of one `[c, h, w]` image for output rows `rows`: `[c * k * k, rows * wo]`,
/// row `(ci, ky, kx)` holding the input pixel each output pixel's kernel tap reads (0 in the
/// padding).
struct Im2Col {
    k: usize,
    stride: usize,
    padding: usize,
    rows: std::ops::Range<usize>,
    wo: usize,
}

impl CustomOp1 for Im2Col {
    fn name(&self) -> &'static str {
        "im2col"
    }
    fn cpu_fwd(&self, st: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = fused::contiguous(st, l, "im2col")?;
        let &[c, h, w] = l.dims() else { candle_core::bail!("im2col: [c, h, w] input expected") };
        let (k, s, p, wo) = (self.k, self.stride, self.padding, self.wo);
        let n = self.rows.len() * wo;
        let mut out = vec![0f32; c * k * k * n];
        out.par_chunks_mut(n).enumerate().for_each(|(row, o)| {
            let (ci, ky, kx) = (row / (k * k), row / k % k, row % k);
            let plane = &x[ci * h * w..(ci + 1) * h * w];
            for (j, oy) in self.rows.clone().enumerate() {
                let iy = (oy * s + ky) as isize - p as isize;
                if iy < 0 || iy >= h as isize {
                    continue;
                }
                let src = &plane[iy as usize * w..(iy as usize + 1) * w];
                let dst = &mut o[j * wo..(j + 1) * wo];
                // Output columns whose tap lands inside the row: ox * s + kx - p in [0, w).
                let lo = (p.saturating_sub(kx)).div_ceil(s).min(wo);
                let hi = if w + p > kx { ((w + p - kx - 1) / s + 1).min(wo) } else { 0 };
                if lo >= hi {
                    continue;
                }
                let first = lo * s + kx - p;
                if s == 1 {
                    dst[lo..hi].copy_from_slice(&src[first..first + (hi - lo)]);
                } else {
                    dst[lo..hi].iter_mut().zip(src[first..].iter().step_by(s)).for_each(|(d, &x)| *d = x);
                }
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((c * k * k, n))))
    }
}

/// Group norm over `[b, c, ...]` with per-channel affine, optionally followed by SiLU.
pub struct GroupNorm {
    weight: Vec<f32>,
    bias: Vec<f32>,
    groups: usize,
    eps: f32,
}

impl GroupNorm {
    pub fn forward(&self, x: &Tensor, silu: bool) -> Result<Tensor> {
        let c = x.dim(1)?;
        if c != self.weight.len() || x.dtype() != DType::F32 {
            return Err(Error::invalid("group norm input", format!("expected f32 with {} channels, found {:?} {:?}", self.weight.len(), x.dtype(), x.dims())));
        }
        Ok(x.contiguous()?.apply_op1_no_bwd(&GroupNormOp { gn: self, silu })?)
    }
}

struct GroupNormOp<'a> {
    gn: &'a GroupNorm,
    silu: bool,
}

impl CustomOp1 for GroupNormOp<'_> {
    fn name(&self) -> &'static str {
        "group-norm"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = fused::contiguous(s, l, "group-norm")?;
        let dims = l.dims();
        let (c, groups) = (dims[1], self.gn.groups);
        let hw: usize = dims[2..].iter().product();
        let per = c / groups * hw;
        let mut out = vec![0f32; x.len()];
        if per == 0 {
            return Ok((CpuStorage::F32(out), l.shape().clone()));
        }
        out.par_chunks_mut(per).zip(x.par_chunks(per)).enumerate().for_each(|(i, (o, xi))| {
            let g = i % groups;
            // Two passes in f64: the mean and variance of up to millions of values.
            let mean = xi.iter().map(|&v| v as f64).sum::<f64>() / per as f64;
            let var = xi.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / per as f64;
            let rstd = 1.0 / (var + self.gn.eps as f64).sqrt();
            for (j, (oc, xc)) in o.chunks_mut(hw).zip(xi.chunks(hw)).enumerate() {
                let ch = g * (c / groups) + j;
                let a = (self.gn.weight[ch] as f64 * rstd) as f32;
                let b = (self.gn.bias[ch] as f64 - mean * self.gn.weight[ch] as f64 * rstd) as f32;
                if self.silu {
                    oc.iter_mut().zip(xc).for_each(|(o, &x)| {
                        let v = x * a + b;
                        *o = v / (1.0 + fused::exp(-v));
                    });
                } else {
                    oc.iter_mut().zip(xc).for_each(|(o, &x)| *o = x * a + b);
                }
            }
        });
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }
}

/// diffusers `ResnetBlock2D` (`resnet_time_scale_shift` "default", SiLU, no up/down sampling).
pub struct ResnetBlock {
    norm1: GroupNorm,
    conv1: Conv2d,
    time_emb_proj: Option<QLinear>,
    norm2: GroupNorm,
    conv2: Conv2d,
    shortcut: Option<Conv2d>,
    out_scale: f64,
}

pub struct ResnetSpec {
    pub inp: usize,
    pub out: usize,
    /// Channels of the time embedding, `None` for the VAE (no `time_emb_proj`).
    pub temb: Option<usize>,
    pub groups: usize,
    pub eps: f64,
    pub out_scale: f64,
}

impl ResnetBlock {
    pub fn load(ld: &Loader, p: &str, s: &ResnetSpec) -> Result<Self> {
        Ok(ResnetBlock {
            norm1: ld.group_norm(&format!("{p}.norm1"), s.inp, s.groups, s.eps)?,
            conv1: ld.conv(&format!("{p}.conv1"), s.out, s.inp, 3, 1, 1)?,
            time_emb_proj: s.temb.map(|t| ld.linear(&format!("{p}.time_emb_proj"), s.out, t, true)).transpose()?,
            norm2: ld.group_norm(&format!("{p}.norm2"), s.out, s.groups, s.eps)?,
            conv2: ld.conv(&format!("{p}.conv2"), s.out, s.out, 3, 1, 1)?,
            shortcut: if s.inp != s.out { Some(ld.conv(&format!("{p}.conv_shortcut"), s.out, s.inp, 1, 1, 0)?) } else { None },
            out_scale: s.out_scale,
        })
    }

    /// `x` `[b, c, h, w]`; `temb_act`: SiLU of the time embedding, `[b, temb]`.
    pub fn forward(&self, x: &Tensor, temb_act: Option<&Tensor>) -> Result<Tensor> {
        let mut h = self.conv1.forward(&self.norm1.forward(x, true)?)?;
        if let (Some(proj), Some(t)) = (&self.time_emb_proj, temb_act) {
            let t = proj.forward(t)?;
            h = h.broadcast_add(&t.reshape((t.dim(0)?, t.dim(1)?, 1, 1))?)?;
        }
        let h = self.conv2.forward(&self.norm2.forward(&h, true)?)?;
        let x = match &self.shortcut {
            Some(s) => s.forward(x)?,
            None => x.clone(),
        };
        let y = (x + h)?;
        Ok(if self.out_scale == 1.0 { y } else { (y / self.out_scale)? })
    }
}

/// `Downsample2D` with a convolution: stride 2, `padding` (0 pads right and bottom first).
pub struct Downsample {
    conv: Conv2d,
    pad_first: bool,
}

impl Downsample {
    pub fn load(ld: &Loader, p: &str, ch: usize, padding: usize) -> Result<Self> {
        Ok(Downsample { conv: ld.conv(&format!("{p}.conv"), ch, ch, 3, 2, padding)?, pad_first: padding == 0 })
    }
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if self.pad_first {
            return self.conv.forward(&x.pad_with_zeros(3, 0, 1)?.pad_with_zeros(2, 0, 1)?);
        }
        self.conv.forward(x)
    }
}

/// `Upsample2D` with a convolution: nearest 2x (or to `size`), then a 3x3 convolution.
pub struct Upsample {
    conv: Conv2d,
}

impl Upsample {
    pub fn load(ld: &Loader, p: &str, ch: usize) -> Result<Self> {
        Ok(Upsample { conv: ld.conv(&format!("{p}.conv"), ch, ch, 3, 1, 1)? })
    }
    pub fn forward(&self, x: &Tensor, size: Option<(usize, usize)>) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let (th, tw) = size.unwrap_or((2 * h, 2 * w));
        self.conv.forward(&x.upsample_nearest2d(th, tw)?)
    }
}

/// Scores per block of queries in [`attention`]: 2M floats (8 MiB) stay in cache between the
/// two GEMMs and the softmax, and under the allocator's mmap threshold (a fresh 256 MiB score
/// matrix per call costs page faults on every use).
const BLOCK_SCORES: usize = 2 << 20;

/// Multi-head scaled-dot-product attention, `q` `[b, n, heads * d]`, `k`/`v` `[b, m, heads * d]`
/// -> `[b, n, heads * d]`. Queries are processed in blocks so that at most
/// `min(max_scores, 2M)` scores exist at once (a 128x128 latent has 16384 queries and keys).
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize, max_scores: usize) -> Result<Tensor> {
    let (b, n, c) = q.dims3()?;
    let m = k.dim(1)?;
    let d = c / heads;
    let split = |t: &Tensor, len: usize| -> Result<Tensor> {
        if heads == 1 {
            return Ok(t.contiguous()?);
        }
        Ok(t.reshape((b, len, heads, d))?.transpose(1, 2)?.contiguous()?.reshape((b * heads, len, d))?)
    };
    let q = split(q, n)?;
    let kt = split(k, m)?.transpose(1, 2)?.contiguous()?;
    let v = split(v, m)?;
    let scale = 1.0 / (d as f32).sqrt();
    let rows = (max_scores.min(BLOCK_SCORES) / (b * heads * m).max(1)).max(1);
    let mut outs = Vec::with_capacity(n.div_ceil(rows));
    for start in (0..n).step_by(rows) {
        let len = rows.min(n - start);
        let qc = if len == n { q.clone() } else { q.narrow(1, start, len)?.contiguous()? };
        let p = fused::scaled_masked_softmax(&qc.matmul(&kt)?, None, 1, scale, None)?;
        outs.push(p.matmul(&v)?);
    }
    let o = if outs.len() == 1 { outs.pop().expect("one chunk") } else { Tensor::cat(&outs, 1)? };
    if heads == 1 {
        return Ok(o);
    }
    Ok(o.reshape((b, heads, n, d))?.transpose(1, 2)?.reshape((b, n, c))?)
}

/// GEGLU: `x[:, :h] * gelu(x[:, h:])` (erf form) for `x` `[rows, 2h]`, in one pass.
pub fn geglu(x: &Tensor) -> Result<Tensor> {
    Ok(x.contiguous()?.apply_op1_no_bwd(&Geglu)?)
}

struct Geglu;

impl CustomOp1 for Geglu {
    fn name(&self) -> &'static str {
        "geglu"
    }
    fn cpu_fwd(&self, st: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = fused::contiguous(st, l, "geglu")?;
        let &[rows, two_h] = l.dims() else { candle_core::bail!("geglu: [rows, 2h] input expected") };
        let h = two_h / 2;
        let mut out = vec![0f32; rows * h];
        if h == 0 {
            return Ok((CpuStorage::F32(out), Shape::from((rows, h))));
        }
        out.par_chunks_mut(h).zip(x.par_chunks(two_h)).for_each(|(o, x)| {
            let (a, g) = x.split_at(h);
            o.iter_mut().zip(a.iter().zip(g)).for_each(|(o, (&a, &g))| *o = a * 0.5 * g * (1.0 + fused::erf(g * std::f32::consts::FRAC_1_SQRT_2)));
        });
        Ok((CpuStorage::F32(out), Shape::from((rows, h))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
    }

    /// Chunked attention equals the one-shot computation (and a plain softmax(QK^T)V).
    #[test]
    fn chunked_attention_equals_unchunked() {
        let (b, n, m, heads, d) = (2, 37, 29, 3, 8);
        let r = |s: (usize, usize, usize)| Tensor::randn(0f32, 1.0, s, &Device::Cpu).unwrap();
        let (q, k, v) = (r((b, n, heads * d)), r((b, m, heads * d)), r((b, m, heads * d)));
        let full = attention(&q, &k, &v, heads, MAX_SCORES).unwrap();
        // 5 query rows per chunk: 8 chunks, the last one short.
        let chunked = attention(&q, &k, &v, heads, b * heads * m * 5).unwrap();
        let one_row = attention(&q, &k, &v, heads, 1).unwrap();
        assert!(max_diff(&full, &chunked) <= 1e-5, "{}", max_diff(&full, &chunked));
        assert!(max_diff(&full, &one_row) <= 1e-5);
        // Reference for head 1 of batch 1.
        let h = |t: &Tensor| t.get(1).unwrap().narrow(1, d, d).unwrap();
        let s = (h(&q).matmul(&h(&k).t().unwrap()).unwrap() / (d as f64).sqrt()).unwrap();
        let want = candle_nn::ops::softmax_last_dim(&s).unwrap().matmul(&h(&v)).unwrap();
        assert!(max_diff(&h(&full), &want) <= 1e-5);
    }

    #[test]
    fn geglu_matches_the_formula() {
        let x = Tensor::randn(0f32, 2.0, (5, 12), &Device::Cpu).unwrap();
        let want = (x.narrow(1, 0, 6).unwrap() * x.narrow(1, 6, 6).unwrap().gelu_erf().unwrap()).unwrap();
        assert!(max_diff(&geglu(&x).unwrap(), &want) <= 1e-5);
    }

    /// The im2col convolution equals candle's, with padding, stride 2, odd sizes and banding.
    #[test]
    fn convolution_matches_candle() {
        let x = Tensor::randn(0f32, 1.0, (2, 3, 9, 7), &Device::Cpu).unwrap();
        let w = Tensor::randn(0f32, 1.0, (5, 3, 3, 3), &Device::Cpu).unwrap();
        let bias = Tensor::randn(0f32, 1.0, 5, &Device::Cpu).unwrap();
        for (k, stride, pad) in [(3, 1, 1), (3, 2, 1), (3, 2, 0), (1, 1, 0)] {
            let w = w.narrow(2, 0, k).unwrap().narrow(3, 0, k).unwrap().contiguous().unwrap();
            let conv = Conv2d { weight: w.reshape((5, 3 * k * k)).unwrap(), bias: bias.reshape((1, 5, 1, 1)).unwrap(), k, stride, padding: pad };
            let want = x.conv2d(&w, pad, stride, 1, 1).unwrap().broadcast_add(&bias.reshape((1, 5, 1, 1)).unwrap()).unwrap();
            for got in [conv.forward(&x).unwrap(), conv.forward_banded(&x, 2 * 3 * k * k * 7).unwrap()] {
                assert_eq!(got.dims(), want.dims());
                assert!(max_diff(&got, &want) <= 1e-5, "k{k} s{stride} p{pad}: {}", max_diff(&got, &want));
            }
        }
    }

    #[test]
    fn group_norm_matches_the_formula() {
        let x = Tensor::randn(0f32, 2.0, (2, 6, 3, 5), &Device::Cpu).unwrap();
        let gn = GroupNorm { weight: (0..6).map(|i| 0.5 + i as f32 * 0.1).collect(), bias: (0..6).map(|i| i as f32 * -0.2).collect(), groups: 3, eps: 1e-5 };
        let got = gn.forward(&x, true).unwrap();
        let xs = x.reshape((2, 3, 30)).unwrap();
        let mean = xs.mean_keepdim(2).unwrap();
        let c = xs.broadcast_sub(&mean).unwrap();
        let var = c.sqr().unwrap().mean_keepdim(2).unwrap();
        let n = c.broadcast_div(&(var + 1e-5).unwrap().sqrt().unwrap()).unwrap().reshape((2, 6, 3, 5)).unwrap();
        let w = Tensor::new(gn.weight.as_slice(), &Device::Cpu).unwrap().reshape((1, 6, 1, 1)).unwrap();
        let bias = Tensor::new(gn.bias.as_slice(), &Device::Cpu).unwrap().reshape((1, 6, 1, 1)).unwrap();
        let want = n.broadcast_mul(&w).unwrap().broadcast_add(&bias).unwrap().silu().unwrap();
        assert!(max_diff(&got, &want) <= 1e-5, "{}", max_diff(&got, &want));
    }
}
