//! diffusers' `AutoencoderKL` decoder (latents -> pixels) from a diffusers `vae/` folder:
//! `post_quant_conv`, `decoder.conv_in`, the mid block (resnet, single-head self-attention over
//! the channels, resnet), `UpDecoderBlock2D`s, then group norm, SiLU and `conv_out`. The encoder
//! is not loaded. Configs with latent statistics (`shift_factor`, `latents_mean` / `latents_std`,
//! used by non-SD models) are refused.

use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Tensor};
use plinth_core::{Error, Result};
use plinth_io::safetensors::SafetensorsWeights;
use serde_json::json;

use super::nn::{attention, Config, Conv2d, GroupNorm, Loader, ResnetBlock, ResnetSpec, Upsample, MAX_SCORES};
use crate::layers::{Linear, QLinear};
use crate::weights::Weights;

const EPS: f64 = 1e-6;

/// The mid block's attention (`_from_deprecated_attn_block`): group norm, one head over all
/// channels, biased projections, residual.
struct MidAttention {
    group_norm: GroupNorm,
    to_q: QLinear,
    to_k: QLinear,
    to_v: QLinear,
    to_out: QLinear,
}

impl MidAttention {
    fn load(ld: &Loader, p: &str, ch: usize, groups: usize) -> Result<Self> {
        Ok(MidAttention {
            group_norm: ld.group_norm(&format!("{p}.group_norm"), ch, groups, EPS)?,
            to_q: ld.linear(&format!("{p}.to_q"), ch, ch, true)?,
            to_k: ld.linear(&format!("{p}.to_k"), ch, ch, true)?,
            to_v: ld.linear(&format!("{p}.to_v"), ch, ch, true)?,
            to_out: ld.linear(&format!("{p}.to_out.0"), ch, ch, true)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let t = self.group_norm.forward(x, false)?.reshape((b, c, h * w))?.transpose(1, 2)?.contiguous()?.reshape((b * h * w, c))?;
        let three = |l: &QLinear| -> Result<Tensor> { Ok(l.forward(&t)?.reshape((b, h * w, c))?) };
        let o = attention(&three(&self.to_q)?, &three(&self.to_k)?, &three(&self.to_v)?, 1, MAX_SCORES)?;
        let o = self.to_out.forward(&o.reshape((b * h * w, c))?)?.reshape((b, h * w, c))?.transpose(1, 2)?.reshape((b, c, h, w))?;
        Ok((o + x)?)
    }
}

struct UpDecoderBlock {
    resnets: Vec<ResnetBlock>,
    up: Option<Upsample>,
}

/// A loaded `AutoencoderKL` (decoder half).
pub struct AutoencoderKL {
    scaling_factor: f64,
    latent_channels: usize,
    scale: usize,
    post_quant_conv: Option<Conv2d>,
    conv_in: Conv2d,
    mid_resnets: Vec<ResnetBlock>,
    mid_attention: Option<MidAttention>,
    up: Vec<UpDecoderBlock>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
    parameters: usize,
}

impl AutoencoderKL {
    /// `dir`: a diffusers `vae/` folder (`config.json` and `diffusion_pytorch_model*.safetensors`).
    pub fn load(dir: &Path) -> Result<Self> {
        let c = Config::read(dir)?;
        let w = Weights::Safetensors(Arc::new(SafetensorsWeights::open_stem(dir, &["diffusion_pytorch_model"])?));
        Self::from_weights(&c, &w)
    }

    pub fn from_weights(c: &Config, w: &Weights) -> Result<Self> {
        c.only("_class_name", &[json!("AutoencoderKL")])?;
        c.only("act_fn", &[json!("silu")])?;
        for key in ["shift_factor", "latents_mean", "latents_std"] {
            c.only(key, &[])?;
        }
        let up_types = c.strs("up_block_types")?;
        if let Some(t) = up_types.iter().find(|t| *t != "UpDecoderBlock2D") {
            return Err(Error::unsupported(&c.path, format!("block type '{t}'")));
        }
        let n = up_types.len();
        let ch = c.usizes("block_out_channels", n, None, 1 << 12)?;
        let layers = c.usize("layers_per_block", 1, 64)?;
        let groups = c.usize("norm_num_groups", 32, 1 << 12)?;
        let latent = c.usize("latent_channels", 4, 64)?;
        let out_ch = c.usize("out_channels", 3, 64)?;
        let scaling_factor = c.f64("scaling_factor", 0.18215)?;
        if scaling_factor <= 0.0 {
            return Err(Error::format(&c.path, format!("scaling_factor {scaling_factor} is not positive")));
        }
        let ld = Loader::new(w);
        let post_quant_conv = if c.bool("use_post_quant_conv", true)? { Some(ld.conv("post_quant_conv", latent, latent, 1, 1, 0)?) } else { None };
        let top = ch[n - 1];
        let rs = |inp: usize, out: usize| ResnetSpec { inp, out, temb: None, groups, eps: EPS, out_scale: 1.0 };
        let conv_in = ld.conv("decoder.conv_in", top, latent, 3, 1, 1)?;
        let mid_resnets = (0..2).map(|i| ResnetBlock::load(&ld, &format!("decoder.mid_block.resnets.{i}"), &rs(top, top))).collect::<Result<Vec<_>>>()?;
        let mid_attention = if c.bool("mid_block_add_attention", true)? {
            Some(MidAttention::load(&ld, "decoder.mid_block.attentions.0", top, groups)?)
        } else {
            None
        };
        let mut up = Vec::with_capacity(n);
        let mut out = top;
        for i in 0..n {
            let prev = out;
            out = ch[n - 1 - i];
            let p = format!("decoder.up_blocks.{i}");
            let resnets = (0..layers + 1)
                .map(|j| ResnetBlock::load(&ld, &format!("{p}.resnets.{j}"), &rs(if j == 0 { prev } else { out }, out)))
                .collect::<Result<Vec<_>>>()?;
            let upsample = if i + 1 < n { Some(Upsample::load(&ld, &format!("{p}.upsamplers.0"), out)?) } else { None };
            up.push(UpDecoderBlock { resnets, up: upsample });
        }
        let conv_norm_out = ld.group_norm("decoder.conv_norm_out", ch[0], groups, EPS)?;
        let conv_out = ld.conv("decoder.conv_out", out_ch, ch[0], 3, 1, 1)?;
        Ok(AutoencoderKL {
            scaling_factor,
            latent_channels: latent,
            scale: 1 << (n - 1),
            post_quant_conv,
            conv_in,
            mid_resnets,
            mid_attention,
            up,
            conv_norm_out,
            conv_out,
            parameters: ld.parameters(),
        })
    }

    /// The factor latents were multiplied by at training time (divide before [`Self::decode`]).
    pub fn scaling_factor(&self) -> f64 {
        self.scaling_factor
    }

    pub fn latent_channels(&self) -> usize {
        self.latent_channels
    }

    /// Pixels per latent along each side.
    pub fn scale(&self) -> usize {
        self.scale
    }

    pub fn parameters(&self) -> usize {
        self.parameters
    }

    /// `latents` `[b, latent_channels, h, w]`, already divided by the scaling factor ->
    /// `[b, out_channels, h * scale, w * scale]`, roughly in `[-1, 1]`.
    pub fn decode(&self, latents: &Tensor) -> Result<Tensor> {
        match latents.dims() {
            &[b, c, h, w] if b > 0 && c == self.latent_channels && (1..=1024).contains(&h) && (1..=1024).contains(&w) && latents.dtype() == DType::F32 => {}
            d => {
                return Err(Error::invalid("latents", format!("expected f32 [b, {}, h, w] (sides 1..=1024), found {:?} {d:?}", self.latent_channels, latents.dtype())))
            }
        }
        let mut x = match &self.post_quant_conv {
            Some(p) => p.forward(latents)?,
            None => latents.clone(),
        };
        x = self.conv_in.forward(&x)?;
        x = self.mid_resnets[0].forward(&x, None)?;
        if let Some(a) = &self.mid_attention {
            x = a.forward(&x)?;
        }
        x = self.mid_resnets[1].forward(&x, None)?;
        for blk in &self.up {
            for r in &blk.resnets {
                x = r.forward(&x, None)?;
            }
            if let Some(u) = &blk.up {
                x = u.forward(&x, None)?;
            }
        }
        self.conv_out.forward(&self.conv_norm_out.forward(&x, true)?)
    }
}
