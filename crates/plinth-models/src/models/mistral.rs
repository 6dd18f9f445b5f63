//! Mistral: the Llama block with sliding-window attention on every layer (when the config sets
//! `sliding_window`). llama.cpp converts Mistral checkpoints to the `llama` GGUF architecture.

use std::path::Path;

use plinth_core::Result;

use crate::models::llama::{load_family_hf, HfDefaults};
use crate::weights::Weights;
use crate::Decoder;

/// Transformers' `MistralConfig` defaults.
const DEFAULTS: HfDefaults =
    HfDefaults { max_position_embeddings: 4096 * 32, tie_word_embeddings: false, qk_norm: false, sliding_by_default: true };

pub fn load_hf(json: &serde_json::Value, path: &Path, w: &Weights, model_type: &str) -> Result<Box<dyn Decoder>> {
    load_family_hf(json, path, w, model_type, &DEFAULTS)
}
