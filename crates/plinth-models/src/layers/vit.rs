//! The transformer pieces CLIP, SigLIP and Idefics3 share: the config of one tower, the patch
//! embedding (a stride-`patch` convolution), and the pre-LN encoder stack (`layer_norm1` ->
//! multi-head self-attention with biases -> residual -> `layer_norm2` -> `fc1`/act/`fc2` ->
//! residual). Tensor names are transformers' (`{prefix}.layers.{i}.self_attn.q_proj`, ...).

use std::path::Path;

use candle_core::{DType, Tensor};
use plinth_core::{Error, Result};

use crate::layers::attention::general_attention;
use crate::layers::fused;
use crate::layers::{Activation, AttentionOptions, LayerNorm, Linear, QLinear};
use crate::weights::Weights;

/// Hyper-parameters of one tower (`vision_config` or `text_config`).
#[derive(Debug, Clone, PartialEq)]
pub struct TowerConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub layer_norm_eps: f64,
    pub act: Activation,
    /// Vision: side of the square input and of a patch, in pixels (0 for text towers).
    pub image_size: usize,
    pub patch_size: usize,
    pub num_channels: usize,
    /// Text: vocabulary and longest input (0 for vision towers).
    pub vocab_size: usize,
    pub max_positions: usize,
}

/// Transformers' defaults for the fields a sub-config may leave out.
#[derive(Debug, Clone, Copy)]
pub struct TowerDefaults {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub layer_norm_eps: f64,
    pub act: &'static str,
    pub image_size: usize,
    pub patch_size: usize,
    pub vocab_size: usize,
    pub max_positions: usize,
}

impl TowerConfig {
    /// Reads `json[section]` (`vision_config` / `text_config`; an absent section means all
    /// defaults, as transformers does) and rejects sizes no real model has.
    pub fn from_hf(json: &serde_json::Value, section: &str, path: &Path, d: &TowerDefaults) -> Result<Self> {
        let empty = serde_json::Value::Object(Default::default());
        let s = json.get(section).filter(|v| v.is_object()).unwrap_or(&empty);
        let u = |k: &str, def: usize| s.get(k).and_then(|v| v.as_u64()).map_or(def, |v| v as usize);
        let act_name = s.get("hidden_act").and_then(|v| v.as_str()).unwrap_or(d.act);
        let cfg = TowerConfig {
            hidden_size: u("hidden_size", d.hidden_size),
            intermediate_size: u("intermediate_size", d.intermediate_size),
            num_layers: u("num_hidden_layers", d.num_layers),
            num_heads: u("num_attention_heads", d.num_heads),
            layer_norm_eps: s.get("layer_norm_eps").and_then(|v| v.as_f64()).unwrap_or(d.layer_norm_eps),
            act: Activation::from_hf(act_name, &format!("{section}.hidden_act"), path)?,
            image_size: u("image_size", d.image_size),
            patch_size: u("patch_size", d.patch_size),
            num_channels: u("num_channels", 3),
            vocab_size: u("vocab_size", d.vocab_size),
            max_positions: u("max_position_embeddings", d.max_positions),
        };
        cfg.validate(section, path)?;
        Ok(cfg)
    }

    fn validate(&self, section: &str, path: &Path) -> Result<()> {
        let bad = |what: String| Err(Error::format(path, format!("{section}: {what}")));
        if self.hidden_size == 0 || self.hidden_size > 1 << 16 || self.intermediate_size == 0 || self.intermediate_size > 1 << 18 {
            return bad(format!("sizes {}/{} are out of range", self.hidden_size, self.intermediate_size));
        }
        if self.num_heads == 0 || !self.hidden_size.is_multiple_of(self.num_heads) {
            return bad(format!("{} heads do not divide hidden size {}", self.num_heads, self.hidden_size));
        }
        if self.num_layers == 0 || self.num_layers > 1024 {
            return bad(format!("{} layers are out of range", self.num_layers));
        }
        if self.patch_size > 0 {
            if self.num_channels != 3 {
                return bad(format!("{} input channels (only RGB is supported)", self.num_channels));
            }
            if self.image_size == 0 || self.image_size > 8192 || !self.image_size.is_multiple_of(self.patch_size) {
                return bad(format!("image size {} is not a positive multiple of patch size {}", self.image_size, self.patch_size));
            }
        }
        if self.vocab_size > 1 << 22 || self.max_positions > 1 << 16 {
            return bad(format!("vocabulary {} / {} positions are out of range", self.vocab_size, self.max_positions));
        }
        Ok(())
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_heads
    }

    /// Patches per side of the square input.
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }
}

/// `{name}.weight` and `{name}.bias` as a [`LayerNorm`].
pub fn layer_norm(w: &Weights, name: &str, dim: usize, eps: f64) -> Result<LayerNorm> {
    Ok(LayerNorm::new(w.tensor(&format!("{name}.weight"), &[dim])?, w.tensor(&format!("{name}.bias"), &[dim])?, eps))
}

/// The stride-`patch` convolution as one matmul over flattened patches: `[n, 3, S, S]` ->
/// `[n, (S/patch)^2, hidden]`, patches in row-major order as `conv(x).flatten(2).transpose(1, 2)`.
pub struct PatchEmbedding {
    proj: QLinear,
    patch: usize,
    image_size: usize,
}

impl PatchEmbedding {
    /// `{name}.weight` `[hidden, 3, patch, patch]` and, when present, `{name}.bias`.
    pub fn load(w: &Weights, name: &str, cfg: &TowerConfig) -> Result<Self> {
        let (h, p, c) = (cfg.hidden_size, cfg.patch_size, cfg.num_channels);
        let weight = w.tensor(&format!("{name}.weight"), &[h, c, p, p])?.reshape((h, c * p * p))?;
        let bias_name = format!("{name}.bias");
        let bias = if w.contains(&bias_name) { Some(w.tensor(&bias_name, &[h])?) } else { None };
        Ok(PatchEmbedding { proj: QLinear::from_tensor(weight, bias), patch: p, image_size: cfg.image_size })
    }

    pub fn forward(&self, pixels: &Tensor) -> Result<Tensor> {
        let (n, s, p) = (check_pixels(pixels, self.image_size)?, self.image_size, self.patch);
        let g = s / p;
        // [n, 3, g, p, g, p] -> [n, g, g, 3, p, p]: each row is one patch in the kernel's order.
        let patches = pixels.reshape((n, 3, g, p, g, p))?.permute((0, 2, 4, 1, 3, 5))?.contiguous()?.reshape((n * g * g, 3 * p * p))?;
        // One GEMM over every patch of the batch (a 3-d input would be one GEMM per image).
        let out = self.proj.forward(&patches)?;
        Ok(out.reshape((n, g * g, out.dim(1)?))?)
    }

    pub fn params(&self) -> usize {
        self.proj.params()
    }
}

/// Checks that `pixels` is `[n >= 1, 3, size, size]` f32 and returns `n`.
pub fn check_pixels(pixels: &Tensor, size: usize) -> Result<usize> {
    match pixels.dims() {
        &[n, 3, h, w] if n > 0 && h == size && w == size && pixels.dtype() == candle_core::DType::F32 => Ok(n),
        dims => Err(Error::invalid(
            "pixel values",
            format!("expected f32 [n, 3, {size}, {size}] with n >= 1, found {:?} {dims:?}", pixels.dtype()),
        )),
    }
}

struct SelfAttention {
    q_proj: QLinear,
    k_proj: QLinear,
    v_proj: QLinear,
    out_proj: QLinear,
}

/// One pre-LN encoder layer.
pub struct EncoderLayer {
    layer_norm1: LayerNorm,
    self_attn: SelfAttention,
    layer_norm2: LayerNorm,
    fc1: QLinear,
    fc2: QLinear,
    act: Activation,
    heads: usize,
    /// `intermediate_size` zeros: the fused activation kernel's bias (fc1 adds its own).
    zero_bias: Vec<f32>,
}

impl EncoderLayer {
    pub fn load(w: &Weights, p: &str, cfg: &TowerConfig) -> Result<Self> {
        let (h, m, eps) = (cfg.hidden_size, cfg.intermediate_size, cfg.layer_norm_eps);
        let lin = |n: &str, o: usize, i: usize| w.linear(&format!("{p}.{n}"), o, i);
        Ok(EncoderLayer {
            layer_norm1: layer_norm(w, &format!("{p}.layer_norm1"), h, eps)?,
            self_attn: SelfAttention {
                q_proj: lin("self_attn.q_proj", h, h)?,
                k_proj: lin("self_attn.k_proj", h, h)?,
                v_proj: lin("self_attn.v_proj", h, h)?,
                out_proj: lin("self_attn.out_proj", h, h)?,
            },
            layer_norm2: layer_norm(w, &format!("{p}.layer_norm2"), h, eps)?,
            fc1: lin("mlp.fc1", m, h)?,
            fc2: lin("mlp.fc2", h, m)?,
            act: cfg.act,
            heads: cfg.num_heads,
            zero_bias: vec![0.0; m],
        })
    }

    /// `x`: `[b, seq, hidden]`; `mask`: an additive `[seq, seq]` mask shared by the batch.
    pub fn forward(&self, x: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let (b, seq, hidden) = x.dims3()?;
        // The whole batch as one `[b * seq, hidden]` matrix: each projection is then a single
        // GEMM; on `[b, seq, hidden]` candle runs one small GEMM per item, each with its own
        // thread hand-off.
        let x = x.reshape((b * seq, hidden))?;
        let fast = !x.track_op() && x.dtype() == DType::F32;
        let h = self.layer_norm1.forward(&x)?;
        let a = &self.self_attn;
        let [q, k, v]: [Tensor; 3] =
            QLinear::forward_many(&[&a.q_proj, &a.k_proj, &a.v_proj], &h)?.try_into().expect("three projections");
        let fused = mask.is_none() && fast && seq <= FUSED_ATTENTION_MAX_SEQ;
        let att = attention(q, k, v, (b, seq, self.heads), mask, fused)?;
        let x = (x + a.out_proj.forward(&att)?)?;
        let h = self.fc1.forward(&self.layer_norm2.forward(&x)?)?;
        // One vectorized pass for the activation (quick_gelu is three candle passes with a
        // scalar exp); fc1's bias is already added.
        let h = if fast { fused::bias_act(&h, &self.zero_bias, self.act)? } else { self.act.apply(&h)? };
        Ok((x + self.fc2.forward(&h)?)?.reshape((b, seq, hidden))?)
    }

    pub fn params(&self) -> usize {
        let a = &self.self_attn;
        self.layer_norm1.params()
            + self.layer_norm2.params()
            + [&a.q_proj, &a.k_proj, &a.v_proj, &a.out_proj, &self.fc1, &self.fc2].iter().map(|l| l.params()).sum::<usize>()
    }
}

/// Longest sequence the fused attention kernel handles; longer ones use GEMMs. On SmolVLM-256M
/// geometry (5 tiles of 1024 patches, 2 threads, 6 alternating runs) the GEMMs took the prompt
/// from 10.8 s to 9.4 s (medians); CLIP's 50 tokens stay fused.
const FUSED_ATTENTION_MAX_SEQ: usize = 256;

/// Multi-head attention over `[b * seq, hidden]` projections, returned in the same layout.
/// With `fused` (no mask, f32, untracked), the fused kernel reads the heads straight from the
/// projections' rows instead of `b * heads` small GEMM pairs plus permute copies; it wants q
/// pre-scaled. Past a few hundred positions (Idefics3's 1024-patch tiles) the GEMMs win: the
/// kernel's score and output loops are axpys, well below GEMM speed once they dominate.
fn attention(q: Tensor, k: Tensor, v: Tensor, (b, seq, heads): (usize, usize, usize), mask: Option<&Tensor>, fused: bool) -> Result<Tensor> {
    let hidden = q.dim(1)?;
    let d = hidden / heads;
    if fused {
        let q = (q * (1.0 / (d as f64).sqrt()))?;
        return fused::self_attention(&Tensor::cat(&[q, k, v], 1)?, &vec![1.0; b * seq], b, seq, heads);
    }
    let split = |t: Tensor| -> Result<Tensor> { Ok(t.reshape((b, seq, heads, d))?.transpose(1, 2)?.contiguous()?) };
    let att = general_attention(&split(q)?, &split(k)?, &split(v)?, mask, AttentionOptions::default())?;
    Ok(att.transpose(1, 2)?.reshape((b * seq, hidden))?)
}

/// `{prefix}.layers.{i}` for every layer of the tower.
pub struct Encoder {
    layers: Vec<EncoderLayer>,
}

impl Encoder {
    pub fn load(w: &Weights, prefix: &str, cfg: &TowerConfig) -> Result<Self> {
        let layers = (0..cfg.num_layers).map(|i| EncoderLayer::load(w, &format!("{prefix}.layers.{i}"), cfg)).collect::<Result<_>>()?;
        Ok(Encoder { layers })
    }

    pub fn forward(&self, mut x: Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        for l in &self.layers {
            x = l.forward(&x, mask)?;
        }
        Ok(x)
    }

    /// Like [`Self::forward`], also returning the input of the last layer (transformers'
    /// `hidden_states[-2]`, which Stable Diffusion XL conditions on).
    pub fn forward_with_penultimate(&self, mut x: Tensor, mask: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        let mut penultimate = x.clone();
        for l in &self.layers {
            penultimate = x.clone();
            x = l.forward(&x, mask)?;
        }
        Ok((x, penultimate))
    }

    pub fn params(&self) -> usize {
        self.layers.iter().map(|l| l.params()).sum()
    }
}

/// A stored scalar (`logit_scale`, `logit_bias`), saved as `[]` or `[1]`.
pub fn scalar(w: &Weights, name: &str) -> Result<f32> {
    let t = w.tensor(name, &[]).or_else(|_| w.tensor(name, &[1]))?;
    Ok(t.flatten_all()?.to_vec1::<f32>()?[0])
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// The two attention paths agree, at a length past the fused kernel's limit.
    #[test]
    fn fused_and_gemm_attention_agree() {
        let (b, seq, heads, d) = (2, FUSED_ATTENTION_MAX_SEQ + 7, 3, 8);
        let r = |i: u64| Tensor::randn(0f32, 1.0, (b * seq, heads * d), &Device::Cpu).unwrap() * (1.0 + i as f64 * 0.1);
        let (q, k, v) = (r(0).unwrap(), r(1).unwrap(), r(2).unwrap());
        let fused = attention(q.clone(), k.clone(), v.clone(), (b, seq, heads), None, true).unwrap();
        let gemm = attention(q, k, v, (b, seq, heads), None, false).unwrap();
        let diff = (fused - gemm).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
        assert!(diff < 1e-5, "max |Δ| {diff}");
    }

    #[test]
    fn patches_follow_the_convolution_order() {
        // A 1-channel-per-output "convolution" that picks pixel (0, 0, 1, 0) of each patch:
        // its output must be that pixel of each patch, patches row-major.
        let (s, p) = (4usize, 2usize);
        let mut kernel = vec![0f32; 3 * p * p];
        kernel[p] = 1.0; // channel 0, row 1, column 0
        let proj = QLinear::from_tensor(Tensor::from_vec(kernel, (1, 3 * p * p), &Device::Cpu).unwrap(), None);
        let pe = PatchEmbedding { proj, patch: p, image_size: s };
        let px: Vec<f32> = (0..3 * s * s).map(|i| i as f32).collect();
        let px = Tensor::from_vec(px, (1, 3, s, s), &Device::Cpu).unwrap();
        let out = pe.forward(&px).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        // Patch (r, c) starts at row 2r, column 2c; its row 1 column 0 is pixel (2r + 1) * 4 + 2c.
        assert_eq!(out, vec![4.0, 6.0, 12.0, 14.0]);
    }

    #[test]
    fn wrong_pixel_shapes_are_refused() {
        let t = Tensor::zeros((1, 3, 8, 4), candle_core::DType::F32, &Device::Cpu).unwrap();
        let e = check_pixels(&t, 8).unwrap_err().to_string();
        assert!(e.contains("[n, 3, 8, 8]"), "{e}");
        let t = Tensor::zeros((0, 3, 8, 8), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert!(check_pixels(&t, 8).is_err());
        let t = Tensor::zeros((2, 3, 8, 8), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert_eq!(check_pixels(&t, 8).unwrap(), 2);
    }
}
