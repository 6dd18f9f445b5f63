//! Model architectures. One file per architecture under [`models`], the building blocks they
//! share under [`layers`], the weight loader that serves GGUF and safetensors under Hugging
//! Face names ([`weights`]), and [`registry`], which maps an architecture name to a
//! constructor.
//!
//! Models never own their KV cache: the engine creates a [`KvCache`] with
//! [`Decoder::new_cache`] and passes it to every [`Decoder::forward`] call.

pub mod config;
pub mod diffusion;
pub mod encoder;
pub mod kernels;
pub mod kv;
pub mod layers;
pub mod models;
pub mod registry;
pub mod seq2seq;
pub mod vision;
pub mod weights;

pub use encoder::{Encoder, EncoderBatch, EncoderHead, EncoderInfo, EncoderOutput};
pub use kv::KvCache;
pub use vision::{ImageTextInfo, ImageTextModel, ScoreKind, VisionLanguage, VisionLanguageInfo};
pub use seq2seq::{is_seq2seq_type, load_seq2seq, Seq2Seq, Seq2SeqCache, Seq2SeqInfo};
pub use registry::{
    is_encoder_type, is_image_text_type, is_supported, load_decoder, load_decoder_with, load_encoder, load_image_text,
    parse_quantize, supported_architectures, supported_encoders, supported_image_text, LoadOptions, LoadedDecoder,
};

use candle_core::Tensor;
use plinth_core::Result;

/// Facts about a decoder that the engine and the CLI need.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DecoderInfo {
    pub architecture: String,
    pub vocab_size: usize,
    /// Context window in tokens.
    pub context_length: usize,
    pub num_layers: usize,
    pub hidden_size: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub parameters: usize,
}

/// A GPT-style decoder: token ids in, next-token logits out.
pub trait Decoder: Send + Sync {
    fn info(&self) -> &DecoderInfo;

    /// An empty cache shaped for this model.
    fn new_cache(&self) -> KvCache;

    /// Runs `ids` at positions `cache.len()..cache.len() + ids.len()`, appending their keys and
    /// values to `cache`. Returns f32 logits of shape `[ids.len(), vocab]` when `all_logits`,
    /// else `[1, vocab]` for the last position only (the generation hot path).
    fn forward(&self, ids: &[u32], cache: &mut KvCache, all_logits: bool) -> Result<Tensor>;

    /// The linear layers adapters can attach to, by Hugging Face module name
    /// (`model.layers.0.self_attn.q_proj`, ...), in layer order. Empty where an architecture
    /// does not expose them yet.
    fn linear_layers(&self) -> Vec<(String, &layers::QLinear)> {
        Vec::new()
    }

    /// The image half of a vision-language model (`None` for text-only decoders).
    fn vision(&self) -> Option<&dyn VisionLanguage> {
        None
    }

    /// One decode step for several sequences: `ids[i]` is the next token of the sequence
    /// whose cache is `caches[i]`. Returns f32 logits `[ids.len(), vocab]`. Architectures that
    /// batch the weight matmuls across sequences override this (the weights are then read once
    /// per step instead of once per sequence); the default runs them one by one.
    fn forward_batch(&self, ids: &[u32], caches: &mut [&mut KvCache]) -> Result<Tensor> {
        let rows = ids
            .iter()
            .zip(caches.iter_mut())
            .map(|(&id, cache)| self.forward(&[id], cache, false))
            .collect::<Result<Vec<_>>>()?;
        Ok(Tensor::cat(&rows, 0)?)
    }
}
