//! The UNet's blocks with diffusers' names: `Transformer2DModel` (group norm, `proj_in`,
//! `BasicTransformerBlock`s of self-attention, cross-attention and a GEGLU feed-forward,
//! `proj_out`, residual), and the down (`CrossAttnDownBlock2D`, `DownBlock2D`), mid
//! (`UNetMidBlock2DCrossAttn`) and up (`CrossAttnUpBlock2D`, `UpBlock2D`) blocks.

use candle_core::Tensor;
use plinth_core::Result;

use super::nn::{attention, geglu, Downsample, GroupNorm, Loader, ResnetBlock, ResnetSpec, Upsample, MAX_SCORES};
use crate::layers::{LayerNorm, Linear, QLinear};

/// What every attention of one UNet shares.
#[derive(Clone, Copy)]
pub struct AttnSpec {
    pub heads: usize,
    pub layers: usize,
    pub cross_dim: usize,
    pub linear_proj: bool,
    pub groups: usize,
}

struct Attention {
    to_q: QLinear,
    to_k: QLinear,
    to_v: QLinear,
    to_out: QLinear,
    heads: usize,
}

impl Attention {
    fn load(ld: &Loader, p: &str, dim: usize, kv_dim: usize, heads: usize) -> Result<Self> {
        Ok(Attention {
            to_q: ld.linear(&format!("{p}.to_q"), dim, dim, false)?,
            to_k: ld.linear(&format!("{p}.to_k"), dim, kv_dim, false)?,
            to_v: ld.linear(&format!("{p}.to_v"), dim, kv_dim, false)?,
            to_out: ld.linear(&format!("{p}.to_out.0"), dim, dim, true)?,
            heads,
        })
    }

    /// `x` `[b * n, dim]`, `ctx` `[b * m, kv_dim]` -> `[b * n, dim]`.
    fn forward(&self, x: &Tensor, ctx: &Tensor, b: usize) -> Result<Tensor> {
        let (q, k, v) = (self.to_q.forward(x)?, self.to_k.forward(ctx)?, self.to_v.forward(ctx)?);
        let three = |t: Tensor| -> Result<Tensor> { Ok(t.reshape((b, (), t.dim(1)?))?) };
        let o = attention(&three(q)?, &three(k)?, &three(v)?, self.heads, MAX_SCORES)?;
        self.to_out.forward(&o.flatten_to(1)?)
    }
}

struct TransformerBlock {
    norm1: LayerNorm,
    attn1: Attention,
    norm2: LayerNorm,
    attn2: Attention,
    norm3: LayerNorm,
    ff_proj: QLinear,
    ff_out: QLinear,
}

impl TransformerBlock {
    fn load(ld: &Loader, p: &str, dim: usize, s: &AttnSpec) -> Result<Self> {
        let inner = dim * 4;
        Ok(TransformerBlock {
            norm1: ld.layer_norm(&format!("{p}.norm1"), dim, 1e-5)?,
            attn1: Attention::load(ld, &format!("{p}.attn1"), dim, dim, s.heads)?,
            norm2: ld.layer_norm(&format!("{p}.norm2"), dim, 1e-5)?,
            attn2: Attention::load(ld, &format!("{p}.attn2"), dim, s.cross_dim, s.heads)?,
            norm3: ld.layer_norm(&format!("{p}.norm3"), dim, 1e-5)?,
            ff_proj: ld.linear(&format!("{p}.ff.net.0.proj"), 2 * inner, dim, true)?,
            ff_out: ld.linear(&format!("{p}.ff.net.2"), dim, inner, true)?,
        })
    }

    /// `x` `[b * n, dim]`, `ctx` `[b * m, cross_dim]`.
    fn forward(&self, x: &Tensor, ctx: &Tensor, b: usize) -> Result<Tensor> {
        let h = self.norm1.forward(x)?;
        let x = (x + self.attn1.forward(&h, &h, b)?)?;
        let x = (&x + self.attn2.forward(&self.norm2.forward(&x)?, ctx, b)?)?;
        // GEGLU: the projection's first half times gelu (erf) of its second half.
        let h = self.ff_proj.forward(&self.norm3.forward(&x)?)?;
        let gated = geglu(&h)?;
        Ok((x + self.ff_out.forward(&gated)?)?)
    }
}

/// `Transformer2DModel` over a `[b, c, h, w]` feature map.
pub struct Transformer2D {
    norm: GroupNorm,
    // A 1x1 convolution (`use_linear_projection` false) is the same linear map per pixel.
    proj_in: QLinear,
    blocks: Vec<TransformerBlock>,
    proj_out: QLinear,
}

impl Transformer2D {
    pub fn load(ld: &Loader, p: &str, ch: usize, s: &AttnSpec) -> Result<Self> {
        let proj = |n: &str| {
            let name = format!("{p}.{n}");
            if s.linear_proj { ld.linear(&name, ch, ch, true) } else { ld.conv1x1_as_linear(&name, ch, ch) }
        };
        Ok(Transformer2D {
            norm: ld.group_norm(&format!("{p}.norm"), ch, s.groups, 1e-6)?,
            proj_in: proj("proj_in")?,
            blocks: (0..s.layers).map(|i| TransformerBlock::load(ld, &format!("{p}.transformer_blocks.{i}"), ch, s)).collect::<Result<_>>()?,
            proj_out: proj("proj_out")?,
        })
    }

    /// `x` `[b, c, h, w]`, `ctx` `[b * m, cross_dim]`.
    pub fn forward(&self, x: &Tensor, ctx: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let t = self.norm.forward(x, false)?.permute((0, 2, 3, 1))?.contiguous()?.reshape((b * h * w, c))?;
        let mut t = self.proj_in.forward(&t)?;
        for blk in &self.blocks {
            t = blk.forward(&t, ctx, b)?;
        }
        let t = self.proj_out.forward(&t)?.reshape((b, h, w, c))?.permute((0, 3, 1, 2))?;
        Ok((t + x)?)
    }
}

/// A down block: resnets (each followed by a transformer in `CrossAttnDownBlock2D`), then an
/// optional downsampler. Returns every intermediate output for the skip connections.
pub struct DownBlock {
    resnets: Vec<ResnetBlock>,
    attentions: Vec<Transformer2D>,
    down: Option<Downsample>,
}

/// Geometry of one block.
pub struct BlockSpec {
    pub inp: usize,
    pub out: usize,
    pub layers: usize,
    pub attn: Option<AttnSpec>,
    pub temb: usize,
    pub groups: usize,
    pub eps: f64,
    pub out_scale: f64,
}

impl BlockSpec {
    fn resnet(&self, inp: usize) -> ResnetSpec {
        ResnetSpec { inp, out: self.out, temb: Some(self.temb), groups: self.groups, eps: self.eps, out_scale: self.out_scale }
    }
}

impl DownBlock {
    pub fn load(ld: &Loader, p: &str, s: &BlockSpec, downsample: Option<usize>) -> Result<Self> {
        let mut resnets = Vec::new();
        let mut attentions = Vec::new();
        for i in 0..s.layers {
            resnets.push(ResnetBlock::load(ld, &format!("{p}.resnets.{i}"), &s.resnet(if i == 0 { s.inp } else { s.out }))?);
            if let Some(a) = &s.attn {
                attentions.push(Transformer2D::load(ld, &format!("{p}.attentions.{i}"), s.out, a)?);
            }
        }
        let down = downsample.map(|pad| Downsample::load(ld, &format!("{p}.downsamplers.0"), s.out, pad)).transpose()?;
        Ok(DownBlock { resnets, attentions, down })
    }

    pub fn forward(&self, mut x: Tensor, temb: &Tensor, ctx: &Tensor, skips: &mut Vec<Tensor>) -> Result<Tensor> {
        for (i, r) in self.resnets.iter().enumerate() {
            x = r.forward(&x, Some(temb))?;
            if let Some(a) = self.attentions.get(i) {
                x = a.forward(&x, ctx)?;
            }
            skips.push(x.clone());
        }
        if let Some(d) = &self.down {
            x = d.forward(&x)?;
            skips.push(x.clone());
        }
        Ok(x)
    }
}

/// `UNetMidBlock2DCrossAttn`: resnet, then (transformer, resnet) pairs.
pub struct MidBlock {
    resnets: Vec<ResnetBlock>,
    attentions: Vec<Transformer2D>,
}

impl MidBlock {
    pub fn load(ld: &Loader, p: &str, s: &BlockSpec, attn: &AttnSpec) -> Result<Self> {
        let resnets = (0..2).map(|i| ResnetBlock::load(ld, &format!("{p}.resnets.{i}"), &s.resnet(s.out))).collect::<Result<_>>()?;
        let attentions = vec![Transformer2D::load(ld, &format!("{p}.attentions.0"), s.out, attn)?];
        Ok(MidBlock { resnets, attentions })
    }

    pub fn forward(&self, x: &Tensor, temb: &Tensor, ctx: &Tensor) -> Result<Tensor> {
        let mut x = self.resnets[0].forward(x, Some(temb))?;
        for (a, r) in self.attentions.iter().zip(&self.resnets[1..]) {
            x = r.forward(&a.forward(&x, ctx)?, Some(temb))?;
        }
        Ok(x)
    }
}

/// An up block: each resnet takes the previous output concatenated with one skip connection
/// (a transformer follows in `CrossAttnUpBlock2D`), then an optional upsampler.
pub struct UpBlock {
    resnets: Vec<ResnetBlock>,
    attentions: Vec<Transformer2D>,
    up: Option<Upsample>,
}

impl UpBlock {
    /// `prev`: channels coming from below; `skip_in`: channels of the down block's input (the
    /// last resnet's skip).
    pub fn load(ld: &Loader, p: &str, s: &BlockSpec, prev: usize, skip_in: usize, upsample: bool) -> Result<Self> {
        let mut resnets = Vec::new();
        let mut attentions = Vec::new();
        for i in 0..s.layers {
            let skip = if i == s.layers - 1 { skip_in } else { s.out };
            let inp = if i == 0 { prev } else { s.out };
            resnets.push(ResnetBlock::load(ld, &format!("{p}.resnets.{i}"), &s.resnet(inp + skip))?);
            if let Some(a) = &s.attn {
                attentions.push(Transformer2D::load(ld, &format!("{p}.attentions.{i}"), s.out, a)?);
            }
        }
        let up = if upsample { Some(Upsample::load(ld, &format!("{p}.upsamplers.0"), s.out)?) } else { None };
        Ok(UpBlock { resnets, attentions, up })
    }

    pub fn layers(&self) -> usize {
        self.resnets.len()
    }

    pub fn forward(&self, mut x: Tensor, temb: &Tensor, ctx: &Tensor, mut skips: Vec<Tensor>, size: Option<(usize, usize)>) -> Result<Tensor> {
        for (i, r) in self.resnets.iter().enumerate() {
            let skip = skips.pop().ok_or_else(|| plinth_core::Error::invalid("unet", "skip connections exhausted"))?;
            x = r.forward(&Tensor::cat(&[&x, &skip], 1)?, Some(temb))?;
            if let Some(a) = self.attentions.get(i) {
                x = a.forward(&x, ctx)?;
            }
        }
        if let Some(u) = &self.up {
            x = u.forward(&x, size)?;
        }
        Ok(x)
    }
}
