//! Qwen2 / Qwen2.5: the Llama block with biases on the q/k/v projections (picked up from the
//! weights) and an optional sliding window above `max_window_layers`.

use std::path::Path;

use plinth_core::Result;

use crate::models::llama::{load_family_hf, HfDefaults};
use crate::weights::Weights;
use crate::Decoder;

/// Transformers' `Qwen2Config` defaults.
const DEFAULTS: HfDefaults =
    HfDefaults { max_position_embeddings: 32768, tie_word_embeddings: false, qk_norm: false, sliding_by_default: false };

pub fn load_hf(json: &serde_json::Value, path: &Path, w: &Weights, model_type: &str) -> Result<Box<dyn Decoder>> {
    load_family_hf(json, path, w, model_type, &DEFAULTS)
}
