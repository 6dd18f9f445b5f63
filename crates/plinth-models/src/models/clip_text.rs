//! transformers' `CLIPTextModel` / `CLIPTextModelWithProjection` on their own (`model_type`
//! `clip_text_model`, a flat config), as Stable Diffusion pipelines ship them in
//! `text_encoder/` and `text_encoder_2/`: the causal text tower of [`super::clip`], returning
//! what the pipelines condition on (last hidden state, the penultimate layer's output, the
//! pooled end-of-text state and its projection).

use std::path::Path;
use std::sync::Arc;

use candle_core::{Device, Tensor};
use plinth_core::{Error, Result};
use plinth_io::safetensors::{read_config, SafetensorsWeights};

use super::clip::{eos_position, TextEmbeddings, TEXT_DEFAULTS};
use crate::layers::vit::{layer_norm, Encoder, TowerConfig};
use crate::layers::{causal_mask, LayerNorm, Linear, QLinear};
use crate::weights::Weights;

/// What one forward pass returns.
pub struct ClipTextOutput {
    /// `[b, seq, hidden]`, after `final_layer_norm`.
    pub last_hidden_state: Tensor,
    /// `[b, seq, hidden]`: `hidden_states[-2]`, the second-to-last layer's output (no final norm).
    pub penultimate: Tensor,
    /// `[b, hidden]`: the final-norm output at each row's end-of-text position.
    pub pooled: Tensor,
    /// `[b, projection_dim]`: `text_projection(pooled)` (`CLIPTextModelWithProjection` only).
    pub text_embeds: Option<Tensor>,
}

/// A loaded CLIP text encoder.
pub struct ClipTextModel {
    cfg: TowerConfig,
    embeddings: TextEmbeddings,
    encoder: Encoder,
    final_layer_norm: LayerNorm,
    text_projection: Option<QLinear>,
    eos_token_id: u32,
    parameters: usize,
}

impl ClipTextModel {
    /// `dir`: a `text_encoder/` folder (`config.json`, `model*.safetensors`).
    pub fn load(dir: &Path) -> Result<Self> {
        let json = read_config(dir)?;
        let w = Weights::Safetensors(Arc::new(SafetensorsWeights::open_stem(dir, &["model"])?));
        Self::from_weights(&json, &dir.join("config.json"), &w)
    }

    pub fn from_weights(json: &serde_json::Value, path: &Path, w: &Weights) -> Result<Self> {
        match json.get("model_type").and_then(|v| v.as_str()) {
            Some("clip_text_model") => {}
            Some(other) => return Err(Error::unsupported(path, format!("model_type '{other}' (expected clip_text_model)"))),
            None => return Err(Error::missing(path, "config key 'model_type'")),
        }
        // The flat config is the `text_config` section of a full CLIP config.
        let wrapped = serde_json::json!({ "text_config": json });
        let cfg = TowerConfig::from_hf(&wrapped, "text_config", path, &TEXT_DEFAULTS)?;
        if cfg.vocab_size == 0 || cfg.max_positions == 0 {
            return Err(Error::format(path, "vocab_size and max_position_embeddings must be positive"));
        }
        let eos_token_id = json.get("eos_token_id").and_then(|x| x.as_u64()).map_or(49407, |x| x as u32);
        let h = cfg.hidden_size;
        // transformers 5 saves a bare `CLIPTextModel` without the `text_model.` prefix that
        // published checkpoints (and `CLIPTextModelWithProjection`) carry; it loads both.
        let p = if !w.contains("text_model.embeddings.token_embedding.weight") && w.contains("embeddings.token_embedding.weight") { "" } else { "text_model." };
        let embeddings = TextEmbeddings::load(w, &format!("{p}embeddings"), &cfg)?;
        let encoder = Encoder::load(w, &format!("{p}encoder"), &cfg)?;
        let final_layer_norm = layer_norm(w, &format!("{p}final_layer_norm"), h, cfg.layer_norm_eps)?;
        let with_projection = json
            .get("architectures")
            .and_then(|a| a.as_array())
            .is_some_and(|a| a.iter().any(|x| x.as_str() == Some("CLIPTextModelWithProjection")))
            || w.contains("text_projection.weight");
        let text_projection = if with_projection {
            let proj = json.get("projection_dim").and_then(|x| x.as_u64()).map_or(512, |x| x as usize);
            if proj == 0 || proj > 1 << 16 {
                return Err(Error::format(path, format!("projection_dim {proj} is out of range")));
            }
            Some(w.linear("text_projection", proj, h)?)
        } else {
            None
        };
        let parameters = embeddings.params() + encoder.params() + final_layer_norm.params() + text_projection.as_ref().map_or(0, |p| p.params());
        Ok(ClipTextModel { cfg, embeddings, encoder, final_layer_norm, text_projection, eos_token_id, parameters })
    }

    pub fn max_positions(&self) -> usize {
        self.cfg.max_positions
    }

    pub fn hidden_size(&self) -> usize {
        self.cfg.hidden_size
    }

    pub fn vocab_size(&self) -> usize {
        self.cfg.vocab_size
    }

    /// `projection_dim` for `CLIPTextModelWithProjection`.
    pub fn projection_dim(&self) -> Option<usize> {
        self.text_projection.as_ref().map(|p| p.dims().0)
    }

    pub fn parameters(&self) -> usize {
        self.parameters
    }

    /// Runs rows of token ids, all of the same length (pipelines pad to 77), with the causal
    /// mask only (Stable Diffusion pipelines pass no attention mask).
    pub fn forward(&self, ids: &[Vec<u32>]) -> Result<ClipTextOutput> {
        self.embeddings.check(ids)?;
        let len = ids[0].len();
        if let Some(i) = ids.iter().position(|r| r.len() != len) {
            return Err(Error::invalid("text", format!("row {i} has {} tokens, row 0 has {len}: pad every row to the same length", ids[i].len())));
        }
        let x = self.embeddings.forward(ids, len)?;
        let mask = if len > 1 { Some(causal_mask(len, 0, None, &Device::Cpu)?) } else { None };
        let (x, penultimate) = self.encoder.forward_with_penultimate(x, mask.as_ref())?;
        let last_hidden_state = self.final_layer_norm.forward(&x)?;
        let pooled = ids
            .iter()
            .enumerate()
            .map(|(i, row)| last_hidden_state.get(i)?.get(eos_position(row, self.eos_token_id)))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let pooled = Tensor::stack(&pooled, 0)?;
        let text_embeds = self.text_projection.as_ref().map(|p| p.forward(&pooled)).transpose()?;
        Ok(ClipTextOutput { last_hidden_state, penultimate, pooled, text_embeds })
    }
}
