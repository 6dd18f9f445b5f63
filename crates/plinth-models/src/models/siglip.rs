//! SigLIP (`model_type` `siglip`, transformers' `SiglipModel`): a ViT image tower without class
//! token or pre-LN, `post_layernorm`, then a multi-head attention pooling head (a learned probe
//! attending over the patches through torch's `nn.MultiheadAttention`, then LayerNorm + MLP with
//! a residual); and a bidirectional text tower pooled at the LAST position through a linear
//! `head`. Scores are `sigmoid(exp(logit_scale) * cos + logit_bias)`.
//!
//! SigLIP was trained on texts padded to the full `max_position_embeddings` with the pad token
//! and no attention mask, so the pooled last position is a pad token that sees the whole text;
//! [`ImageTextModel::embed_texts`] pads that way itself.

use std::path::Path;

use candle_core::Tensor;
use plinth_core::{Error, Result};

use crate::layers::attention::general_attention;
use crate::layers::vit::{layer_norm, scalar, Encoder, PatchEmbedding, TowerConfig, TowerDefaults};
use crate::layers::{Activation, AttentionOptions, LayerNorm, Linear, QLinear};
use crate::models::clip::TextEmbeddings;
use crate::vision::{ImageTextInfo, ImageTextModel, ScoreKind};
use crate::weights::Weights;

pub(crate) const VISION_DEFAULTS: TowerDefaults = TowerDefaults {
    hidden_size: 768,
    intermediate_size: 3072,
    num_layers: 12,
    num_heads: 12,
    layer_norm_eps: 1e-6,
    act: "gelu_pytorch_tanh",
    image_size: 224,
    patch_size: 16,
    vocab_size: 0,
    max_positions: 0,
};

const TEXT_DEFAULTS: TowerDefaults = TowerDefaults {
    hidden_size: 768,
    intermediate_size: 3072,
    num_layers: 12,
    num_heads: 12,
    layer_norm_eps: 1e-6,
    act: "gelu_pytorch_tanh",
    image_size: 0,
    patch_size: 0,
    vocab_size: 32000,
    max_positions: 64,
};

/// `SiglipMultiheadAttentionPoolingHead`: one learned query over the patch states.
struct PoolingHead {
    probe: Tensor,
    q: QLinear,
    k: QLinear,
    v: QLinear,
    out_proj: QLinear,
    layernorm: LayerNorm,
    fc1: QLinear,
    fc2: QLinear,
    act: Activation,
    heads: usize,
}

impl PoolingHead {
    fn load(w: &Weights, p: &str, cfg: &TowerConfig) -> Result<Self> {
        let (h, m) = (cfg.hidden_size, cfg.intermediate_size);
        // nn.MultiheadAttention packs q, k and v row-wise in one projection.
        let in_w = w.tensor(&format!("{p}.attention.in_proj_weight"), &[3 * h, h])?;
        let in_b = w.tensor(&format!("{p}.attention.in_proj_bias"), &[3 * h])?;
        let part = |i: usize| -> Result<QLinear> { Ok(QLinear::from_tensor(in_w.narrow(0, i * h, h)?.contiguous()?, Some(in_b.narrow(0, i * h, h)?.contiguous()?))) };
        Ok(PoolingHead {
            probe: w.tensor(&format!("{p}.probe"), &[1, 1, h])?,
            q: part(0)?,
            k: part(1)?,
            v: part(2)?,
            out_proj: w.linear(&format!("{p}.attention.out_proj"), h, h)?,
            layernorm: layer_norm(w, &format!("{p}.layernorm"), h, cfg.layer_norm_eps)?,
            fc1: w.linear(&format!("{p}.mlp.fc1"), m, h)?,
            fc2: w.linear(&format!("{p}.mlp.fc2"), h, m)?,
            act: cfg.act,
            heads: cfg.num_heads,
        })
    }

    /// `[n, patches, hidden]` -> `[n, hidden]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (n, seq, h) = x.dims3()?;
        let d = h / self.heads;
        let split = |t: Tensor, len: usize| -> Result<Tensor> { Ok(t.reshape((n, len, self.heads, d))?.transpose(1, 2)?.contiguous()?) };
        let q = split(self.q.forward(&self.probe.broadcast_as((n, 1, h))?.contiguous()?)?, 1)?;
        let [k, v]: [Tensor; 2] = QLinear::forward_many(&[&self.k, &self.v], x)?.try_into().expect("two projections");
        let att = general_attention(&q, &split(k, seq)?, &split(v, seq)?, None, AttentionOptions::default())?;
        let att = self.out_proj.forward(&att.transpose(1, 2)?.reshape((n, 1, h))?)?;
        let mlp = self.fc2.forward(&self.act.apply(&self.fc1.forward(&self.layernorm.forward(&att)?)?)?)?;
        Ok((att + mlp)?.squeeze(1)?)
    }

    fn params(&self) -> usize {
        self.probe.elem_count()
            + self.layernorm.params()
            + [&self.q, &self.k, &self.v, &self.out_proj, &self.fc1, &self.fc2].iter().map(|l| l.params()).sum::<usize>()
    }
}

/// A SigLIP image tower: patch embedding + positions, encoder, `post_layernorm`. Shared with
/// Idefics3, whose vision model is this tower without the pooling head.
pub(crate) struct VisionTower {
    pub cfg: TowerConfig,
    patch_embedding: PatchEmbedding,
    positions: Tensor,
    encoder: Encoder,
    post_layernorm: LayerNorm,
}

impl VisionTower {
    pub fn load(w: &Weights, prefix: &str, cfg: TowerConfig) -> Result<Self> {
        let patches = cfg.grid() * cfg.grid();
        Ok(VisionTower {
            patch_embedding: PatchEmbedding::load(w, &format!("{prefix}.embeddings.patch_embedding"), &cfg)?,
            positions: w.tensor(&format!("{prefix}.embeddings.position_embedding.weight"), &[patches, cfg.hidden_size])?,
            encoder: Encoder::load(w, &format!("{prefix}.encoder"), &cfg)?,
            post_layernorm: layer_norm(w, &format!("{prefix}.post_layernorm"), cfg.hidden_size, cfg.layer_norm_eps)?,
            cfg,
        })
    }

    /// `[n, 3, S, S]` -> last hidden states `[n, patches, hidden]` (after `post_layernorm`).
    /// Every patch is real, so position ids are `0..patches` and no mask is needed.
    pub fn forward(&self, pixels: &Tensor) -> Result<Tensor> {
        let x = self.patch_embedding.forward(pixels)?.broadcast_add(&self.positions)?;
        self.post_layernorm.forward(&self.encoder.forward(x, None)?)
    }

    pub fn params(&self) -> usize {
        self.patch_embedding.params() + self.positions.elem_count() + self.encoder.params() + self.post_layernorm.params()
    }
}

/// A loaded SigLIP model.
pub struct Siglip {
    info: ImageTextInfo,
    vision: VisionTower,
    head: PoolingHead,
    text_embeddings: TextEmbeddings,
    text_encoder: Encoder,
    final_layer_norm: LayerNorm,
    text_head: QLinear,
    pad_token_id: u32,
}

impl Siglip {
    pub fn load(json: &serde_json::Value, path: &Path, w: &Weights, model_type: &str) -> Result<Self> {
        let v = TowerConfig::from_hf(json, "vision_config", path, &VISION_DEFAULTS)?;
        let t = TowerConfig::from_hf(json, "text_config", path, &TEXT_DEFAULTS)?;
        let text_cfg = json.get("text_config");
        let tu = |k: &str| text_cfg.and_then(|c| c.get(k)).and_then(|x| x.as_u64());
        let projection = tu("projection_size").map_or(t.hidden_size, |x| x as usize);
        let pad_token_id = tu("pad_token_id").map_or(1, |x| x as u32);
        if pad_token_id as usize >= t.vocab_size {
            return Err(Error::format(path, format!("text_config.pad_token_id {pad_token_id} is outside the vocabulary of {}", t.vocab_size)));
        }
        if json.get("vision_config").and_then(|c| c.get("vision_use_head")).and_then(|x| x.as_bool()) == Some(false) {
            return Err(Error::unsupported(path, "vision_config.vision_use_head = false (no pooled image embedding)"));
        }
        if projection != v.hidden_size {
            return Err(Error::format(path, format!("text projection_size {projection} differs from the vision hidden size {}", v.hidden_size)));
        }
        let vision = VisionTower::load(w, "vision_model", v)?;
        let head = PoolingHead::load(w, "vision_model.head", &vision.cfg)?;
        let text_embeddings = TextEmbeddings::load(w, "text_model.embeddings", &t)?;
        let text_encoder = Encoder::load(w, "text_model.encoder", &t)?;
        let final_layer_norm = layer_norm(w, "text_model.final_layer_norm", t.hidden_size, t.layer_norm_eps)?;
        let text_head = w.linear("text_model.head", projection, t.hidden_size)?;
        let (logit_scale, logit_bias) = (scalar(w, "logit_scale")?, scalar(w, "logit_bias")?);
        let parameters = vision.params()
            + head.params()
            + text_embeddings.params()
            + text_encoder.params()
            + final_layer_norm.params()
            + text_head.params()
            + 2;
        let info = ImageTextInfo {
            architecture: model_type.to_string(),
            embedding_dim: projection,
            image_size: vision.cfg.image_size,
            text_max_positions: t.max_positions,
            score: ScoreKind::Sigmoid,
            logit_scale: logit_scale.exp(),
            logit_bias,
            parameters,
        };
        Ok(Siglip { info, vision, head, text_embeddings, text_encoder, final_layer_norm, text_head, pad_token_id })
    }
}

impl ImageTextModel for Siglip {
    fn info(&self) -> &ImageTextInfo {
        &self.info
    }

    fn embed_images(&self, pixel_values: &Tensor) -> Result<Tensor> {
        self.head.forward(&self.vision.forward(pixel_values)?)
    }

    fn embed_texts(&self, ids: &[Vec<u32>]) -> Result<Tensor> {
        self.text_embeddings.check(ids)?;
        let len = self.text_embeddings.max_positions;
        let rows: Vec<Vec<u32>> =
            ids.iter().map(|t| t.iter().copied().chain(std::iter::repeat(self.pad_token_id)).take(len).collect()).collect();
        let x = self.text_embeddings.forward(&rows, len)?;
        let x = self.final_layer_norm.forward(&self.text_encoder.forward(x, None)?)?;
        self.text_head.forward(&x.narrow(1, len - 1, 1)?.squeeze(1)?)
    }
}

pub fn load_hf(json: &serde_json::Value, path: &Path, w: &Weights, model_type: &str) -> Result<Box<dyn ImageTextModel>> {
    Ok(Box::new(Siglip::load(json, path, w, model_type)?))
}
