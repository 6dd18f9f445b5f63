//! Idefics3 and SmolVLM (`model_type` `idefics3` / `smolvlm`, transformers'
//! `Idefics3ForConditionalGeneration` / `SmolVLMForConditionalGeneration`, the same tensors and
//! forward pass): a SigLIP-style vision transformer (`model.vision_model`) reads each square
//! tile, the connector pixel-shuffles its patch states by `scale_factor` and projects them
//! (`model.connector.modality_projection.proj`), and the features replace the `<image>` tokens
//! of the prompt before the Llama decoder (`model.text_model`, `lm_head`) runs on the merged
//! embeddings.
//!
//! Tiles are full `image_size` squares (what the image processor produces for split images and
//! the global image), so every patch is real: position ids are `0..patches` and no patch mask is
//! needed. Partial tiles (transformers' bucketed position ids) are refused by the pixel shape
//! check.

use std::path::Path;

use candle_core::Tensor;
use plinth_core::{Error, Result};

use crate::layers::vit::{check_pixels, TowerConfig, TowerDefaults};
use crate::layers::{Linear, QLinear, RopeStyle};
use crate::models::llama::{Llama, LlamaConfig, LLAMA_DEFAULTS};
use crate::models::siglip::VisionTower;
use crate::vision::{VisionLanguage, VisionLanguageInfo};
use crate::weights::Weights;
use crate::{Decoder, DecoderInfo, KvCache};

const VISION_DEFAULTS: TowerDefaults = TowerDefaults {
    hidden_size: 1152,
    intermediate_size: 3072,
    num_layers: 12,
    num_heads: 16,
    layer_norm_eps: 1e-6,
    act: "gelu_pytorch_tanh",
    image_size: 224,
    patch_size: 32,
    vocab_size: 0,
    max_positions: 0,
};

/// The placeholder the processor writes once per image feature.
pub const IMAGE_TOKEN: &str = "<image>";

/// A loaded Idefics3 / SmolVLM model.
pub struct Idefics3 {
    text: Llama,
    info: DecoderInfo,
    vision: VisionTower,
    proj: QLinear,
    scale: usize,
    vinfo: VisionLanguageInfo,
}

/// transformers' `Idefics3Connector.pixel_shuffle`: `[n, seq, e]` (a `g x g` grid of patches)
/// -> `[n, seq / s^2, e * s^2]`, each output row holding an `s x s` block of patches.
pub fn pixel_shuffle(x: &Tensor, s: usize) -> Result<Tensor> {
    let (n, seq, e) = x.dims3()?;
    let g = (seq as f64).sqrt() as usize;
    if g * g != seq || !g.is_multiple_of(s) {
        return Err(Error::invalid("pixel shuffle", format!("{seq} patches are not a square grid divisible by {s}")));
    }
    let x = x.reshape((n, g, g / s, e * s))?.permute((0, 2, 1, 3))?.contiguous()?;
    let x = x.reshape((n, g / s, g / s, e * s * s))?.permute((0, 2, 1, 3))?.contiguous()?;
    Ok(x.reshape((n, seq / (s * s), e * s * s))?)
}

impl Idefics3 {
    pub fn load(json: &serde_json::Value, path: &Path, w: &Weights, model_type: &str) -> Result<Self> {
        let v = TowerConfig::from_hf(json, "vision_config", path, &VISION_DEFAULTS)?;
        let mut text_json = json.get("text_config").cloned().ok_or_else(|| Error::missing(path, "config field 'text_config'"))?;
        let t = text_json.as_object_mut().ok_or_else(|| Error::format(path, "text_config is not an object"))?;
        // Idefics3Config builds its Llama text config with rms_norm_eps 1e-5, and the tie
        // decision is the top-level field's.
        t.entry("rms_norm_eps").or_insert(serde_json::json!(1e-5));
        let tie = json.get("tie_word_embeddings").and_then(|x| x.as_bool()).unwrap_or(false);
        t.insert("tie_word_embeddings".into(), serde_json::json!(tie));
        let cfg = LlamaConfig::from_hf(&text_json, path, &LLAMA_DEFAULTS)?;
        let scale = json.get("scale_factor").and_then(|x| x.as_u64()).map_or(2, |x| x as usize);
        if scale == 0 || !v.grid().is_multiple_of(scale) {
            return Err(Error::format(path, format!("scale_factor {scale} does not divide the {} patches per side", v.grid())));
        }
        let image_token_id = json.get("image_token_id").and_then(|x| x.as_u64()).map_or(128257, |x| x as u32);
        if image_token_id as usize >= cfg.vocab_size {
            return Err(Error::format(path, format!("image_token_id {image_token_id} is outside the vocabulary of {}", cfg.vocab_size)));
        }
        let text_hidden = cfg.hidden_size;
        let text = Llama::load_prefixed(cfg, w, model_type, RopeStyle::Half, "model.text_model")?;
        let proj = w.linear("model.connector.modality_projection.proj", text_hidden, v.hidden_size * scale * scale)?;
        let vision = VisionTower::load(w, "model.vision_model", v)?;
        let vision_parameters = vision.params() + proj.params();
        let mut info = text.info().clone();
        info.parameters += vision_parameters;
        let vinfo = VisionLanguageInfo {
            image_token: IMAGE_TOKEN.to_string(),
            image_token_id,
            image_seq_len: vision.cfg.grid() * vision.cfg.grid() / (scale * scale),
            image_size: vision.cfg.image_size,
            vision_parameters,
        };
        Ok(Idefics3 { text, info, vision, proj, scale, vinfo })
    }

    /// The connector's output for `[tiles, 3, S, S]` pixels: `[tiles * image_seq_len, hidden]`,
    /// tile by tile (transformers' `get_image_features` pooler output, concatenated).
    pub fn image_features(&self, pixel_values: &Tensor) -> Result<Tensor> {
        check_pixels(pixel_values, self.vinfo.image_size)?;
        let states = self.vision.forward(pixel_values)?;
        let feats = self.proj.forward(&pixel_shuffle(&states, self.scale)?)?;
        let (n, l, h) = feats.dims3()?;
        Ok(feats.reshape((n * l, h))?)
    }
}

impl VisionLanguage for Idefics3 {
    fn vision_info(&self) -> &VisionLanguageInfo {
        &self.vinfo
    }

    fn prompt_embeddings(&self, ids: &[u32], pixel_values: &Tensor) -> Result<Tensor> {
        let tiles = check_pixels(pixel_values, self.vinfo.image_size)?;
        let want = tiles * self.vinfo.image_seq_len;
        let found = ids.iter().filter(|&&id| id == self.vinfo.image_token_id).count();
        if found != want {
            return Err(Error::invalid(
                "prompt",
                format!(
                    "{found} {} tokens for {tiles} image tiles; each tile needs {} (expected {want})",
                    self.vinfo.image_token, self.vinfo.image_seq_len
                ),
            ));
        }
        let embeds = self.text.embed_ids(ids)?;
        let feats = self.image_features(pixel_values)?;
        // masked_scatter: the k-th image token takes feature row k. Gather from the token
        // embeddings stacked over the features.
        let mut next = ids.len() as u32;
        let idx: Vec<u32> = ids
            .iter()
            .enumerate()
            .map(|(i, &id)| {
                if id == self.vinfo.image_token_id {
                    next += 1;
                    next - 1
                } else {
                    i as u32
                }
            })
            .collect();
        let table = Tensor::cat(&[&embeds, &feats], 0)?;
        Ok(table.index_select(&Tensor::new(idx, table.device())?, 0)?)
    }

    fn forward_embeds(&self, embeds: &Tensor, cache: &mut KvCache, all_logits: bool) -> Result<Tensor> {
        self.text.forward_embeds(embeds, cache, all_logits)
    }
}

impl Decoder for Idefics3 {
    fn info(&self) -> &DecoderInfo {
        &self.info
    }

    fn new_cache(&self) -> KvCache {
        self.text.new_cache()
    }

    fn forward(&self, ids: &[u32], cache: &mut KvCache, all_logits: bool) -> Result<Tensor> {
        self.text.forward(ids, cache, all_logits)
    }

    fn linear_layers(&self) -> Vec<(String, &QLinear)> {
        self.text.linear_layers()
    }

    fn vision(&self) -> Option<&dyn VisionLanguage> {
        Some(self)
    }

    fn forward_batch(&self, ids: &[u32], caches: &mut [&mut KvCache]) -> Result<Tensor> {
        self.text.forward_batch(ids, caches)
    }
}

pub fn load_hf(json: &serde_json::Value, path: &Path, w: &Weights, model_type: &str) -> Result<Box<dyn Decoder>> {
    Ok(Box::new(Idefics3::load(json, path, w, model_type)?))
}

#[cfg(test)]
mod tests {
    use super::pixel_shuffle;
    use candle_core::{Device, Tensor};

    #[test]
    fn pixel_shuffle_groups_blocks_as_transformers() {
        // A 4x4 grid of 1-d patches numbered row-major, scale 2. transformers' reshapes give,
        // for output row (r, c), the patches (2r, 2c), (2r, 2c+1), (2r+1, 2c), (2r+1, 2c+1).
        let x = Tensor::arange(0f32, 16., &Device::Cpu).unwrap().reshape((1, 16, 1)).unwrap();
        let y = pixel_shuffle(&x, 2).unwrap().to_vec3::<f32>().unwrap();
        assert_eq!(y[0], vec![vec![0., 1., 4., 5.], vec![2., 3., 6., 7.], vec![8., 9., 12., 13.], vec![10., 11., 14., 15.]]);
        assert!(pixel_shuffle(&Tensor::zeros((1, 12, 1), candle_core::DType::F32, &Device::Cpu).unwrap(), 2).is_err());
    }
}
