//! Qwen3: the Llama block with an RMSNorm over each head of q and k before the rotary
//! embedding, and an explicit `head_dim` that need not equal `hidden_size / heads`.

use std::path::Path;

use plinth_core::Result;

use crate::models::llama::{load_family_hf, HfDefaults};
use crate::weights::Weights;
use crate::Decoder;

/// Transformers' `Qwen3Config` defaults.
const DEFAULTS: HfDefaults =
    HfDefaults { max_position_embeddings: 32768, tie_word_embeddings: false, qk_norm: true, sliding_by_default: false };

pub fn load_hf(json: &serde_json::Value, path: &Path, w: &Weights, model_type: &str) -> Result<Box<dyn Decoder>> {
    load_family_hf(json, path, w, model_type, &DEFAULTS)
}
