//! CLIP (`model_type` `clip`, transformers' `CLIPModel`): a ViT image tower (class token,
//! `pre_layrnorm`, pre-LN encoder, `post_layernorm` on the class token, `visual_projection`)
//! and a causal text tower (token + learned positions, `final_layer_norm`, pooled at the
//! end-of-text token, `text_projection`), scored with `softmax(exp(logit_scale) * cos)`.

use std::path::Path;

use candle_core::{Device, Tensor};
use plinth_core::{Error, Result};

use crate::layers::vit::{layer_norm, scalar, Encoder, PatchEmbedding, TowerConfig, TowerDefaults};
use crate::layers::{causal_mask, LayerNorm, Linear, QLinear};
use crate::vision::{ImageTextInfo, ImageTextModel, ScoreKind};
use crate::weights::Weights;

const VISION_DEFAULTS: TowerDefaults = TowerDefaults {
    hidden_size: 768,
    intermediate_size: 3072,
    num_layers: 12,
    num_heads: 12,
    layer_norm_eps: 1e-5,
    act: "quick_gelu",
    image_size: 224,
    patch_size: 32,
    vocab_size: 0,
    max_positions: 0,
};

pub(crate) const TEXT_DEFAULTS: TowerDefaults = TowerDefaults {
    hidden_size: 512,
    intermediate_size: 2048,
    num_layers: 12,
    num_heads: 8,
    layer_norm_eps: 1e-5,
    act: "quick_gelu",
    image_size: 0,
    patch_size: 0,
    vocab_size: 49408,
    max_positions: 77,
};

/// The learned token and position tables of a text tower, looked up for one batch of ids.
pub(crate) struct TextEmbeddings {
    pub token: Tensor,
    pub position: Tensor,
    pub vocab: usize,
    pub max_positions: usize,
}

impl TextEmbeddings {
    pub fn load(w: &Weights, prefix: &str, cfg: &TowerConfig) -> Result<Self> {
        let h = cfg.hidden_size;
        Ok(TextEmbeddings {
            token: w.tensor(&format!("{prefix}.token_embedding.weight"), &[cfg.vocab_size, h])?,
            position: w.tensor(&format!("{prefix}.position_embedding.weight"), &[cfg.max_positions, h])?,
            vocab: cfg.vocab_size,
            max_positions: cfg.max_positions,
        })
    }

    /// `[n, len, hidden]` for rows of equal length `len`.
    pub fn forward(&self, rows: &[Vec<u32>], len: usize) -> Result<Tensor> {
        let flat: Vec<u32> = rows.iter().flatten().copied().collect();
        let ids = Tensor::from_vec(flat, (rows.len(), len), &Device::Cpu)?;
        let tok = self.token.embedding(&ids.flatten_all()?)?.reshape((rows.len(), len, ()))?;
        Ok(tok.broadcast_add(&self.position.narrow(0, 0, len)?)?)
    }

    /// Refuses empty texts, texts longer than the position table and ids outside the vocabulary.
    pub fn check(&self, ids: &[Vec<u32>]) -> Result<()> {
        if ids.is_empty() {
            return Err(Error::invalid("texts", "no texts to embed"));
        }
        for (i, t) in ids.iter().enumerate() {
            if t.is_empty() || t.len() > self.max_positions {
                return Err(Error::invalid(
                    "text",
                    format!("text {i} has {} tokens; this model reads 1 to {} (special tokens included)", t.len(), self.max_positions),
                ));
            }
            if let Some(&bad) = t.iter().find(|&&id| id as usize >= self.vocab) {
                return Err(Error::invalid("text", format!("text {i} has token id {bad}, outside the vocabulary of {}", self.vocab)));
            }
        }
        Ok(())
    }

    pub fn params(&self) -> usize {
        self.token.elem_count() + self.position.elem_count()
    }
}

/// Where transformers' `CLIPTextModel` pools: with the pre-#24773 `eos_token_id == 2` the
/// position of the largest id (the end-of-text token is the last of the vocabulary), else the
/// first position of `eos_token_id` (0 when there is none, as `argmax` of all zeros).
pub fn eos_position(ids: &[u32], eos_token_id: u32) -> usize {
    if eos_token_id == 2 {
        // torch's argmax returns the first maximum.
        let max = ids.iter().copied().max().unwrap_or(0);
        ids.iter().position(|&x| x == max).unwrap_or(0)
    } else {
        ids.iter().position(|&x| x == eos_token_id).unwrap_or(0)
    }
}

/// A loaded CLIP model.
pub struct Clip {
    info: ImageTextInfo,
    patch_embedding: PatchEmbedding,
    class_embedding: Tensor,
    vision_positions: Tensor,
    pre_layrnorm: LayerNorm,
    vision_encoder: Encoder,
    post_layernorm: LayerNorm,
    visual_projection: QLinear,
    text_embeddings: TextEmbeddings,
    text_encoder: Encoder,
    final_layer_norm: LayerNorm,
    text_projection: QLinear,
    eos_token_id: u32,
}

impl Clip {
    pub fn load(json: &serde_json::Value, path: &Path, w: &Weights, model_type: &str) -> Result<Self> {
        let v = TowerConfig::from_hf(json, "vision_config", path, &VISION_DEFAULTS)?;
        let t = TowerConfig::from_hf(json, "text_config", path, &TEXT_DEFAULTS)?;
        let proj = json.get("projection_dim").and_then(|x| x.as_u64()).map_or(512, |x| x as usize);
        let eos = json
            .get("text_config")
            .and_then(|c| c.get("eos_token_id"))
            .and_then(|x| x.as_u64())
            .map_or(49407, |x| x as u32);
        let (vh, th) = (v.hidden_size, t.hidden_size);
        let patches = v.grid() * v.grid();
        let patch_embedding = PatchEmbedding::load(w, "vision_model.embeddings.patch_embedding", &v)?;
        let class_embedding = w.tensor("vision_model.embeddings.class_embedding", &[vh])?;
        let vision_positions = w.tensor("vision_model.embeddings.position_embedding.weight", &[patches + 1, vh])?;
        let pre_layrnorm = layer_norm(w, "vision_model.pre_layrnorm", vh, v.layer_norm_eps)?;
        let vision_encoder = Encoder::load(w, "vision_model.encoder", &v)?;
        let post_layernorm = layer_norm(w, "vision_model.post_layernorm", vh, v.layer_norm_eps)?;
        let visual_projection = w.linear("visual_projection", proj, vh)?;
        let text_embeddings = TextEmbeddings::load(w, "text_model.embeddings", &t)?;
        let text_encoder = Encoder::load(w, "text_model.encoder", &t)?;
        let final_layer_norm = layer_norm(w, "text_model.final_layer_norm", th, t.layer_norm_eps)?;
        let text_projection = w.linear("text_projection", proj, th)?;
        let logit_scale = scalar(w, "logit_scale")?;
        let parameters = patch_embedding.params()
            + class_embedding.elem_count()
            + vision_positions.elem_count()
            + pre_layrnorm.params()
            + vision_encoder.params()
            + post_layernorm.params()
            + visual_projection.params()
            + text_embeddings.params()
            + text_encoder.params()
            + final_layer_norm.params()
            + text_projection.params()
            + 1;
        let info = ImageTextInfo {
            architecture: model_type.to_string(),
            embedding_dim: proj,
            image_size: v.image_size,
            text_max_positions: t.max_positions,
            score: ScoreKind::Softmax,
            logit_scale: logit_scale.exp(),
            logit_bias: 0.0,
            parameters,
        };
        Ok(Clip {
            info,
            patch_embedding,
            class_embedding,
            vision_positions,
            pre_layrnorm,
            vision_encoder,
            post_layernorm,
            visual_projection,
            text_embeddings,
            text_encoder,
            final_layer_norm,
            text_projection,
            eos_token_id: eos,
        })
    }
}

impl ImageTextModel for Clip {
    fn info(&self) -> &ImageTextInfo {
        &self.info
    }

    fn embed_images(&self, pixel_values: &Tensor) -> Result<Tensor> {
        let patches = self.patch_embedding.forward(pixel_values)?;
        let (n, _, h) = patches.dims3()?;
        let cls = self.class_embedding.reshape((1, 1, h))?.broadcast_as((n, 1, h))?;
        let x = Tensor::cat(&[&cls, &patches], 1)?.broadcast_add(&self.vision_positions)?;
        let x = self.vision_encoder.forward(self.pre_layrnorm.forward(&x)?, None)?;
        let pooled = self.post_layernorm.forward(&x.narrow(1, 0, 1)?.squeeze(1)?)?;
        self.visual_projection.forward(&pooled)
    }

    fn embed_texts(&self, ids: &[Vec<u32>]) -> Result<Tensor> {
        self.text_embeddings.check(ids)?;
        let len = ids.iter().map(|t| t.len()).max().unwrap_or(1);
        // Causal attention: what follows a text's own tokens never reaches them, so any
        // padding works; pooling positions come from the unpadded ids.
        let pool: Vec<usize> = ids.iter().map(|t| eos_position(t, self.eos_token_id)).collect();
        let rows: Vec<Vec<u32>> = ids.iter().map(|t| t.iter().copied().chain(std::iter::repeat(0)).take(len).collect()).collect();
        let x = self.text_embeddings.forward(&rows, len)?;
        let mask = if len > 1 { Some(causal_mask(len, 0, None, &Device::Cpu)?) } else { None };
        let x = self.final_layer_norm.forward(&self.text_encoder.forward(x, mask.as_ref())?)?;
        let pooled = pool.iter().enumerate().map(|(i, &p)| x.get(i)?.get(p)).collect::<candle_core::Result<Vec<_>>>()?;
        self.text_projection.forward(&Tensor::stack(&pooled, 0)?)
    }
}

pub fn load_hf(json: &serde_json::Value, path: &Path, w: &Weights, model_type: &str) -> Result<Box<dyn ImageTextModel>> {
    Ok(Box::new(Clip::load(json, path, w, model_type)?))
}

#[cfg(test)]
mod tests {
    use super::eos_position;

    #[test]
    fn pools_where_transformers_does() {
        // eos_token_id 2 (old configs): the largest id, first occurrence.
        assert_eq!(eos_position(&[49406, 320, 49407, 49407], 2), 2);
        // Otherwise: the first eos, even when the pad token is the same id.
        assert_eq!(eos_position(&[49406, 320, 7, 49407, 49407], 49407), 3);
        assert_eq!(eos_position(&[5, 6], 9), 0);
    }
}
