//! diffusers' `UNet2DConditionModel` (the noise predictor of SD 1.x, 2.x, SD-Turbo, SDXL and
//! SDXL-Turbo) from a diffusers `unet/` folder: its config (with diffusers' quirk that
//! `attention_head_dim` is the number of heads when `num_attention_heads` is null), the
//! sinusoidal time embedding and SDXL's `text_time` added conditioning, and the down / mid / up
//! pass. Configs using anything else (other block types, class embeddings, ...) are refused
//! with the key and value.

use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use plinth_core::{Error, Result};
use plinth_io::safetensors::SafetensorsWeights;
use serde_json::json;

use super::nn::{Config, Conv2d, GroupNorm, Loader};
use super::unet_blocks::{AttnSpec, BlockSpec, DownBlock, MidBlock, UpBlock};
use crate::layers::{Linear, QLinear};
use crate::weights::Weights;

/// The config fields the UNet runs on.
#[derive(Debug, Clone, PartialEq)]
pub struct UNetConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub sample_size: usize,
    pub cross_attention_dim: usize,
    /// SDXL `text_time`: width of each sinusoidal embedding of the time ids.
    pub addition_time_embed_dim: Option<usize>,
    /// SDXL: input width of `add_embedding` (pooled text embedding + embedded time ids).
    pub projection_class_embeddings_input_dim: Option<usize>,
    pub block_out_channels: Vec<usize>,
    pub layers_per_block: Vec<usize>,
    /// `true` for a cross-attention block, per down block (up blocks mirror them as listed).
    pub down_attention: Vec<bool>,
    pub up_attention: Vec<bool>,
    pub mid_block: bool,
    /// Attention heads per down block (diffusers' `num_attention_heads or attention_head_dim`).
    pub heads: Vec<usize>,
    pub transformer_layers_per_block: Vec<usize>,
    pub use_linear_projection: bool,
    pub norm_num_groups: usize,
    pub norm_eps: f64,
    pub flip_sin_to_cos: bool,
    pub freq_shift: f64,
    pub downsample_padding: usize,
    pub mid_block_scale_factor: f64,
    pub resnet_out_scale_factor: f64,
    pub center_input_sample: bool,
    pub time_embed_dim: usize,
}

const MAX_CH: usize = 1 << 13;

impl UNetConfig {
    pub fn from_config(c: &Config) -> Result<Self> {
        use serde_json::Value as V;
        c.only("_class_name", &[json!("UNet2DConditionModel")])?;
        c.only("act_fn", &[json!("silu")])?;
        c.only("time_embedding_type", &[json!("positional")])?;
        c.only("resnet_time_scale_shift", &[json!("default")])?;
        c.only("attention_type", &[json!("default")])?;
        c.only("mid_block_type", &[json!("UNetMidBlock2DCrossAttn")])?;
        c.only("addition_embed_type", &[json!("text_time")])?;
        c.only("conv_in_kernel", &[json!(3)])?;
        c.only("conv_out_kernel", &[json!(3)])?;
        for key in ["dual_cross_attention", "only_cross_attention", "resnet_skip_time_act", "class_embeddings_concat", "mid_block_only_cross_attention"] {
            c.only(key, &[V::Bool(false)])?;
        }
        for key in [
            "class_embed_type", "num_class_embeds", "encoder_hid_dim", "encoder_hid_dim_type", "time_embedding_act_fn",
            "timestep_post_act", "time_cond_proj_dim", "cross_attention_norm", "reverse_transformer_layers_per_block",
        ] {
            c.only(key, &[])?;
        }
        if c.json.get("norm_num_groups").is_some_and(|v| v.is_null()) {
            return Err(Error::unsupported(&c.path, "norm_num_groups = null"));
        }
        let down_types = c.strs("down_block_types")?;
        let up_types = c.strs("up_block_types")?;
        let n = down_types.len();
        let block_out_channels = c.usizes("block_out_channels", n, None, MAX_CH)?;
        if up_types.len() != n {
            return Err(Error::format(&c.path, format!("{} down blocks but {} up blocks", n, up_types.len())));
        }
        let kind = |t: &str, attn: &str, plain: &str| -> Result<bool> {
            if t == attn {
                Ok(true)
            } else if t == plain {
                Ok(false)
            } else {
                Err(Error::unsupported(&c.path, format!("block type '{t}'")))
            }
        };
        let down_attention = down_types.iter().map(|t| kind(t, "CrossAttnDownBlock2D", "DownBlock2D")).collect::<Result<Vec<_>>>()?;
        let up_attention = up_types.iter().map(|t| kind(t, "CrossAttnUpBlock2D", "UpBlock2D")).collect::<Result<Vec<_>>>()?;
        if c.json.get("cross_attention_dim").is_some_and(|v| v.is_array()) {
            return Err(Error::unsupported(&c.path, "per-block cross_attention_dim"));
        }
        let heads = match c.json.get("num_attention_heads").filter(|v| !v.is_null()) {
            Some(_) => c.usizes("num_attention_heads", n, None, 1024)?,
            None => c.usizes("attention_head_dim", n, Some(8), 1024)?,
        };
        let groups = c.usize("norm_num_groups", 32, MAX_CH)?;
        for (i, &ch) in block_out_channels.iter().enumerate() {
            if !ch.is_multiple_of(heads[i]) || !ch.is_multiple_of(groups) {
                return Err(Error::format(&c.path, format!("block {i}: {ch} channels are not divisible by {} heads and {groups} groups", heads[i])));
            }
        }
        let text_time = c.opt_str("addition_embed_type")?.is_some();
        let addition_time_embed_dim = c.opt_usize("addition_time_embed_dim", MAX_CH)?;
        let projection_class_embeddings_input_dim = c.opt_usize("projection_class_embeddings_input_dim", 1 << 16)?;
        if text_time && (addition_time_embed_dim.is_none() || projection_class_embeddings_input_dim.is_none()) {
            return Err(Error::missing(&c.path, "addition_time_embed_dim / projection_class_embeddings_input_dim (addition_embed_type text_time)"));
        }
        let padding = c.json.get("downsample_padding").and_then(|v| v.as_u64()).unwrap_or(1);
        if padding > 1 {
            return Err(Error::unsupported(&c.path, format!("downsample_padding = {padding}")));
        }
        let cfg = UNetConfig {
            in_channels: c.usize("in_channels", 4, 64)?,
            out_channels: c.usize("out_channels", 4, 64)?,
            sample_size: c.usize("sample_size", 64, 1 << 12)?,
            cross_attention_dim: c.usize("cross_attention_dim", 1280, 1 << 14)?,
            addition_time_embed_dim: if text_time { addition_time_embed_dim } else { None },
            projection_class_embeddings_input_dim: if text_time { projection_class_embeddings_input_dim } else { None },
            layers_per_block: c.usizes("layers_per_block", n, Some(2), 64)?,
            down_attention,
            up_attention,
            mid_block: c.json.get("mid_block_type").is_none_or(|v| !v.is_null()),
            heads,
            transformer_layers_per_block: c.usizes("transformer_layers_per_block", n, Some(1), 64)?,
            use_linear_projection: c.bool("use_linear_projection", false)?,
            norm_num_groups: groups,
            norm_eps: c.f64("norm_eps", 1e-5)?,
            flip_sin_to_cos: c.bool("flip_sin_to_cos", true)?,
            freq_shift: c.f64("freq_shift", 0.0)?,
            downsample_padding: padding as usize,
            mid_block_scale_factor: c.f64("mid_block_scale_factor", 1.0)?,
            resnet_out_scale_factor: c.f64("resnet_out_scale_factor", 1.0)?,
            center_input_sample: c.bool("center_input_sample", false)?,
            time_embed_dim: c.usize("time_embedding_dim", block_out_channels[0] * 4, 1 << 15)?,
            block_out_channels,
        };
        if cfg.mid_block_scale_factor == 0.0 || cfg.resnet_out_scale_factor == 0.0 {
            return Err(Error::format(&c.path, "an output scale factor is 0"));
        }
        Ok(cfg)
    }
}

/// SDXL's added conditioning (`added_cond_kwargs`).
pub struct AddedCond {
    /// `[b, proj]`: the pooled, projected output of `text_encoder_2`.
    pub text_embeds: Tensor,
    /// `[b, 6]`: original size, crop top-left, target size.
    pub time_ids: Tensor,
}

struct TimeEmbedding {
    linear_1: QLinear,
    linear_2: QLinear,
}

impl TimeEmbedding {
    fn load(ld: &Loader, p: &str, inp: usize, out: usize) -> Result<Self> {
        Ok(TimeEmbedding { linear_1: ld.linear(&format!("{p}.linear_1"), out, inp, true)?, linear_2: ld.linear(&format!("{p}.linear_2"), out, out, true)? })
    }
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.linear_2.forward(&self.linear_1.forward(x)?.silu()?)
    }
}

/// diffusers' `get_timestep_embedding` (f32, as it computes): `[ts.len(), dim]`.
pub fn timestep_embedding(ts: &[f32], dim: usize, flip_sin_to_cos: bool, shift: f64) -> Result<Tensor> {
    let half = dim / 2;
    let freqs: Vec<f32> = (0..half).map(|i| ((-(10000f64.ln() as f32) * i as f32) / (half as f32 - shift as f32)).exp()).collect();
    let mut out = Vec::with_capacity(ts.len() * dim);
    for &t in ts {
        let args: Vec<f32> = freqs.iter().map(|f| t * f).collect();
        let (sin, cos) = (args.iter().map(|a| a.sin()), args.iter().map(|a| a.cos()));
        if flip_sin_to_cos {
            out.extend(cos.chain(sin));
        } else {
            out.extend(sin.chain(cos));
        }
        if dim % 2 == 1 {
            out.push(0.0);
        }
    }
    Ok(Tensor::from_vec(out, (ts.len(), dim), &Device::Cpu)?)
}

/// A loaded `UNet2DConditionModel`.
pub struct UNet2DCondition {
    cfg: UNetConfig,
    conv_in: Conv2d,
    time_embedding: TimeEmbedding,
    add_embedding: Option<TimeEmbedding>,
    down: Vec<DownBlock>,
    mid: Option<MidBlock>,
    up: Vec<UpBlock>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
    parameters: usize,
}

impl UNet2DCondition {
    /// `dir`: a diffusers `unet/` folder (`config.json` and `diffusion_pytorch_model*.safetensors`).
    pub fn load(dir: &Path) -> Result<Self> {
        let cfg = UNetConfig::from_config(&Config::read(dir)?)?;
        let w = Weights::Safetensors(Arc::new(SafetensorsWeights::open_stem(dir, &["diffusion_pytorch_model"])?));
        Self::from_weights(cfg, &w)
    }

    pub fn from_weights(cfg: UNetConfig, w: &Weights) -> Result<Self> {
        let ld = Loader::new(w);
        let ch = &cfg.block_out_channels;
        let n = ch.len();
        let temb = cfg.time_embed_dim;
        let spec = |inp: usize, out: usize, layers: usize, attn: Option<AttnSpec>, out_scale: f64| BlockSpec {
            inp,
            out,
            layers,
            attn,
            temb,
            groups: cfg.norm_num_groups,
            eps: cfg.norm_eps,
            out_scale,
        };
        let attn = |i: usize, layers: usize| AttnSpec {
            heads: cfg.heads[i],
            layers,
            cross_dim: cfg.cross_attention_dim,
            linear_proj: cfg.use_linear_projection,
            groups: cfg.norm_num_groups,
        };
        let conv_in = ld.conv("conv_in", ch[0], cfg.in_channels, 3, 1, 1)?;
        let time_embedding = TimeEmbedding::load(&ld, "time_embedding", ch[0], temb)?;
        let add_embedding = match cfg.projection_class_embeddings_input_dim {
            Some(p) => Some(TimeEmbedding::load(&ld, "add_embedding", p, temb)?),
            None => None,
        };
        let mut down = Vec::with_capacity(n);
        let mut out = ch[0];
        for (i, &o) in ch.iter().enumerate() {
            let inp = out;
            out = o;
            let a = cfg.down_attention[i].then(|| attn(i, cfg.transformer_layers_per_block[i]));
            let s = spec(inp, o, cfg.layers_per_block[i], a, cfg.resnet_out_scale_factor);
            down.push(DownBlock::load(&ld, &format!("down_blocks.{i}"), &s, (i + 1 < n).then_some(cfg.downsample_padding))?);
        }
        let mid = if cfg.mid_block {
            let s = spec(ch[n - 1], ch[n - 1], 1, None, cfg.mid_block_scale_factor);
            Some(MidBlock::load(&ld, "mid_block", &s, &attn(n - 1, cfg.transformer_layers_per_block[n - 1]))?)
        } else {
            None
        };
        let mut up = Vec::with_capacity(n);
        let mut out = ch[n - 1];
        for i in 0..n {
            let r = n - 1 - i;
            let prev = out;
            out = ch[r];
            let skip_in = ch[r.saturating_sub(1)];
            let a = cfg.up_attention[i].then(|| attn(r, cfg.transformer_layers_per_block[r]));
            let s = spec(0, out, cfg.layers_per_block[r] + 1, a, cfg.resnet_out_scale_factor);
            up.push(UpBlock::load(&ld, &format!("up_blocks.{i}"), &s, prev, skip_in, i + 1 < n)?);
        }
        let conv_norm_out = ld.group_norm("conv_norm_out", ch[0], cfg.norm_num_groups, cfg.norm_eps)?;
        let conv_out = ld.conv("conv_out", cfg.out_channels, ch[0], 3, 1, 1)?;
        let parameters = ld.parameters();
        Ok(UNet2DCondition { cfg, conv_in, time_embedding, add_embedding, down, mid, up, conv_norm_out, conv_out, parameters })
    }

    pub fn config(&self) -> &UNetConfig {
        &self.cfg
    }

    pub fn parameters(&self) -> usize {
        self.parameters
    }

    fn check_inputs(&self, sample: &Tensor, ehs: &Tensor, added: Option<&AddedCond>) -> Result<usize> {
        let c = &self.cfg;
        let b = match sample.dims() {
            &[b, ch, h, w] if b > 0 && ch == c.in_channels && (1..=1024).contains(&h) && (1..=1024).contains(&w) && sample.dtype() == DType::F32 => b,
            d => return Err(Error::invalid("unet sample", format!("expected f32 [b, {}, h, w] (sides 1..=1024), found {:?} {d:?}", c.in_channels, sample.dtype()))),
        };
        match ehs.dims() {
            &[eb, s, d] if eb == b && s > 0 && d == c.cross_attention_dim && ehs.dtype() == DType::F32 => {}
            d => return Err(Error::invalid("encoder hidden states", format!("expected f32 [{b}, seq, {}], found {d:?}", c.cross_attention_dim))),
        }
        match (&self.add_embedding, added, c.addition_time_embed_dim, c.projection_class_embeddings_input_dim) {
            (None, None, ..) => Ok(b),
            (None, Some(_), ..) => Err(Error::invalid("unet added conditioning", "this UNet takes none (no addition_embed_type)")),
            (Some(_), None, ..) => Err(Error::invalid("unet added conditioning", "this UNet (addition_embed_type text_time) requires text_embeds and time_ids")),
            (Some(_), Some(a), Some(t), Some(p)) => match (a.text_embeds.dims(), a.time_ids.dims()) {
                (&[tb, te], &[ib, ti]) if tb == b && ib == b && te + ti * t == p => Ok(b),
                (x, y) => Err(Error::invalid(
                    "unet added conditioning",
                    format!("text_embeds {x:?} and time_ids {y:?} do not fit batch {b} and projection input {p} (= text + {t} per time id)"),
                )),
            },
            _ => Err(Error::invalid("unet added conditioning", "inconsistent config")),
        }
    }

    /// The noise prediction `[b, out_channels, h, w]` for `sample` `[b, in_channels, h, w]` at
    /// `timestep` (shared by the batch), conditioned on `encoder_hidden_states`
    /// `[b, seq, cross_attention_dim]` and, for SDXL, `added`.
    pub fn forward(&self, sample: &Tensor, timestep: f64, encoder_hidden_states: &Tensor, added: Option<&AddedCond>) -> Result<Tensor> {
        let b = self.check_inputs(sample, encoder_hidden_states, added)?;
        let c = &self.cfg;
        let t = timestep_embedding(&[timestep as f32], c.block_out_channels[0], c.flip_sin_to_cos, c.freq_shift)?;
        let mut emb = self.time_embedding.forward(&t)?.broadcast_as((b, c.time_embed_dim))?.contiguous()?;
        if let (Some(add), Some(a), Some(dim)) = (&self.add_embedding, added, c.addition_time_embed_dim) {
            let ids = a.time_ids.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
            let time_embeds = timestep_embedding(&ids, dim, c.flip_sin_to_cos, c.freq_shift)?.reshape((b, ()))?;
            let x = Tensor::cat(&[&a.text_embeds.to_dtype(DType::F32)?, &time_embeds], 1)?;
            emb = (emb + add.forward(&x)?)?;
        }
        // Every resnet applies SiLU to the embedding before its projection: do it once.
        let temb = emb.silu()?;
        let (_, _, h, w) = sample.dims4()?;
        let ctx = encoder_hidden_states.contiguous()?.flatten_to(1)?;
        let mut x = if c.center_input_sample { ((sample * 2.0)? - 1.0)? } else { sample.clone() };
        x = self.conv_in.forward(&x)?;
        let mut skips = vec![x.clone()];
        for d in &self.down {
            x = d.forward(x, &temb, &ctx, &mut skips)?;
        }
        if let Some(m) = &self.mid {
            x = m.forward(&x, &temb, &ctx)?;
        }
        // diffusers passes explicit sizes to the upsamplers when the latent is not a multiple
        // of the overall downscale factor (e.g. 9x9 -> 5x5 -> back to 9x9).
        let factor = 1usize << (self.up.len() - 1);
        let explicit = !h.is_multiple_of(factor) || !w.is_multiple_of(factor);
        for (i, u) in self.up.iter().enumerate() {
            let n = u.layers();
            if skips.len() < n {
                return Err(Error::invalid("unet", "skip connections exhausted"));
            }
            let block_skips = skips.split_off(skips.len() - n);
            let size = match skips.last() {
                Some(s) if explicit && i + 1 < self.up.len() => Some((s.dim(2)?, s.dim(3)?)),
                _ => None,
            };
            x = u.forward(x, &temb, &ctx, block_skips, size)?;
        }
        self.conv_out.forward(&self.conv_norm_out.forward(&x, true)?)
    }
}
