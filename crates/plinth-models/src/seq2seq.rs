//! Encoder-decoder (seq2seq) models — Marian, T5, BART: the trait the engine drives and the
//! decoder cache it owns.
//!
//! The engine encodes the source once, creates a [`Seq2SeqCache`] with
//! [`Seq2Seq::new_cache`] and calls [`Seq2Seq::decode`] step by step. The cache holds the
//! decoder's self-attention keys/values (growing by one position per step) and the
//! cross-attention keys/values over the encoder output (computed on the first step, then
//! reused). Beam search reorders every cached tensor along the batch axis with
//! [`Seq2SeqCache::reorder`].
//!
//! [`load_seq2seq`] reads a Hugging Face directory and dispatches on `model_type`
//! (`bart` / `mbart` in `models/bart.rs`, `marian` in `models/marian.rs` on BART's block, `t5`
//! in `models/t5.rs`); the attention they share is `layers/cross_attention.rs`.

use std::path::Path;
use std::sync::Arc;

use candle_core::{Device, Tensor};
use plinth_core::{Error, Result};
use plinth_io::safetensors::SafetensorsWeights;

use crate::models;
use crate::weights::Weights;

/// Facts about an encoder-decoder model that the engine and the CLI need.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Seq2SeqInfo {
    /// `model_type` from config.json (`marian`, `t5`, `bart`).
    pub architecture: String,
    pub vocab_size: usize,
    pub d_model: usize,
    pub encoder_layers: usize,
    pub decoder_layers: usize,
    /// Longest source / target the position scheme allows (`None`: relative positions,
    /// no hard limit).
    pub max_source_positions: Option<usize>,
    pub max_target_positions: Option<usize>,
    pub parameters: usize,
    /// Special ids from config.json (generation_config.json may override them in the engine).
    pub pad_token_id: u32,
    pub eos_token_id: u32,
    pub decoder_start_token_id: u32,
}

/// Per-layer decoder cache for a batch of `b` rows (beams count as rows).
/// Tensors are `[b, heads, positions, head_dim]`.
#[derive(Debug, Clone)]
pub struct Seq2SeqCache {
    /// Self-attention keys/values per decoder layer; `None` before the first step.
    pub self_kv: Vec<Option<(Tensor, Tensor)>>,
    /// Cross-attention keys/values per decoder layer over the encoder output; computed on the
    /// first step and reused after.
    pub cross_kv: Vec<Option<(Tensor, Tensor)>>,
    len: usize,
}

impl Seq2SeqCache {
    pub fn new(decoder_layers: usize) -> Self {
        Seq2SeqCache { self_kv: vec![None; decoder_layers], cross_kv: vec![None; decoder_layers], len: 0 }
    }

    /// Decoder positions cached (the next token's position).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Marks `n` new decoder positions as cached; models call it once per `decode` after all
    /// layers.
    pub fn advance(&mut self, n: usize) {
        self.len += n;
    }

    /// Keeps rows `rows` (in that order, repeats allowed) of every cached tensor: beam search
    /// calls it after choosing which hypotheses continue.
    pub fn reorder(&mut self, rows: &[u32]) -> Result<()> {
        let Some(device) = self.device() else { return Ok(()) };
        let idx = Tensor::new(rows, &device)?;
        for kv in self.self_kv.iter_mut().chain(self.cross_kv.iter_mut()).flatten() {
            *kv = (kv.0.index_select(&idx, 0)?, kv.1.index_select(&idx, 0)?);
        }
        Ok(())
    }

    fn device(&self) -> Option<Device> {
        self.self_kv.iter().chain(self.cross_kv.iter()).flatten().next().map(|kv| kv.0.device().clone())
    }
}

/// An encoder-decoder model: source ids in, target-token logits out.
pub trait Seq2Seq: Send + Sync {
    fn info(&self) -> &Seq2SeqInfo;

    /// Runs the encoder. `input_ids` and `attention_mask` are u32 `[b, s]` (mask 1 = token,
    /// 0 = padding; right padding). Returns the last hidden state f32 `[b, s, d_model]`.
    fn encode(&self, input_ids: &Tensor, attention_mask: &Tensor) -> Result<Tensor>;

    /// An empty decoder cache shaped for this model.
    fn new_cache(&self) -> Seq2SeqCache {
        Seq2SeqCache::new(self.info().decoder_layers)
    }

    /// Runs `decoder_ids` (u32 `[b, t]`) at decoder positions `cache.len()..cache.len() + t`
    /// against `encoder_hidden` (`[b, s, d]`, from [`Seq2Seq::encode`], rows matching the
    /// cache's rows) masked by `attention_mask` (u32 `[b, s]`), appending to `cache`.
    /// Returns f32 logits `[b, t, vocab]`.
    fn decode(&self, decoder_ids: &Tensor, encoder_hidden: &Tensor, attention_mask: &Tensor, cache: &mut Seq2SeqCache) -> Result<Tensor>;
}

/// Loads an encoder-decoder model (`model_type` from `config.json`).
type Seq2SeqLoader = fn(&serde_json::Value, &Path, &Weights, &str) -> Result<Box<dyn Seq2Seq>>;

/// The supported encoder-decoder `model_type`s and their loaders.
const SEQ2SEQ: &[(&[&str], Seq2SeqLoader)] = &[
    (&["bart", "mbart"], models::bart::load_hf),
    (&["marian"], models::marian::load_hf),
    (&["t5"], models::t5::load_hf),
    // New encoder-decoders: one line above this comment.
];

fn find_seq2seq(model_type: &str) -> Option<Seq2SeqLoader> {
    SEQ2SEQ.iter().find(|(names, _)| names.contains(&model_type)).map(|(_, l)| *l)
}

/// The encoder-decoder `model_type`s, comma-separated.
pub fn supported_seq2seq() -> String {
    SEQ2SEQ.iter().flat_map(|(names, _)| names.iter().copied()).collect::<Vec<_>>().join(", ")
}

/// Whether `model_type` names an encoder-decoder model (load it with [`load_seq2seq`]).
pub fn is_seq2seq_type(model_type: &str) -> bool {
    find_seq2seq(model_type).is_some()
}

/// Loads an encoder-decoder model from a Hugging Face directory (`config.json` +
/// safetensors), dispatching on `model_type`.
pub fn load_seq2seq(dir: &Path) -> Result<Box<dyn Seq2Seq>> {
    let (json, config_path, model_type) = crate::registry::read_model_type(dir)?;
    let loader = find_seq2seq(&model_type)
        .ok_or_else(|| Error::UnknownArchitecture { name: model_type.clone(), supported: supported_seq2seq() })?;
    let w = Weights::Safetensors(Arc::new(SafetensorsWeights::open_dir(dir)?));
    loader(&json, &config_path, &w, &model_type)
}

/// A boolean config field; absent or null gives `default`.
pub(crate) fn config_bool(json: &serde_json::Value, path: &Path, key: &str, default: bool) -> Result<bool> {
    match json.get(key).filter(|v| !v.is_null()) {
        None => Ok(default),
        Some(v) => v.as_bool().ok_or_else(|| Error::format(path, format!("config field '{key}' is not a boolean"))),
    }
}

/// A token id config field (an integer, or a list whose first entry counts); `None` when
/// absent or null.
pub(crate) fn config_id(json: &serde_json::Value, path: &Path, key: &str) -> Result<Option<u32>> {
    let v = match json.get(key).filter(|v| !v.is_null()) {
        None => return Ok(None),
        Some(serde_json::Value::Array(a)) => match a.first() {
            None => return Ok(None),
            Some(v) => v,
        },
        Some(v) => v,
    };
    v.as_u64()
        .and_then(|x| u32::try_from(x).ok())
        .map(Some)
        .ok_or_else(|| Error::format(path, format!("config field '{key}' is not a token id")))
}
