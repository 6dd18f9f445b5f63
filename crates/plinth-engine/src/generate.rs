//! The generation loop. A [`Session`] owns one sequence's KV cache and the tokens already in
//! it, so a chat can append a turn without recomputing the whole conversation; when the new
//! prompt does not extend what is cached, the cache is rebuilt.

use std::time::{Duration, Instant};

use candle_core::Tensor;
use plinth_core::{Error, Result};
use plinth_models::{Decoder, KvCache};
use plinth_tokenize::Tokenizer;
use serde::Serialize;

use crate::images::{check_prompt_images, prefill};
use crate::sampler::SamplingParams;
use crate::sequence::{FinishReason, GenerationOptions, Sequence};

/// Prompt tokens are run in chunks of this size, bounding the attention scratch memory.
const PREFILL_CHUNK: usize = 512;

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenerateRequest {
    /// The whole prompt, already templated and tokenized.
    pub prompt_ids: Vec<u32>,
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    pub stop: Vec<String>,
}

/// The result of one generation.
#[derive(Debug, Clone, Serialize)]
pub struct GenerateOutput {
    pub text: String,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub token_ids: Vec<u32>,
    pub finish_reason: FinishReason,
    /// Prompt tokens actually run through the model (less than `prompt_tokens` on a cache hit).
    pub prefilled_tokens: usize,
    #[serde(skip)]
    pub prefill_time: Duration,
    #[serde(skip)]
    pub decode_time: Duration,
}

impl GenerateOutput {
    pub fn prefill_tok_s(&self) -> f64 {
        rate(self.prefilled_tokens, self.prefill_time)
    }
    /// Decode rate over the tokens sampled after the first (the first comes from prefill).
    pub fn decode_tok_s(&self) -> f64 {
        rate(self.completion_tokens.saturating_sub(1), self.decode_time)
    }
}

fn rate(n: usize, d: Duration) -> f64 {
    if n == 0 || d.is_zero() { 0.0 } else { n as f64 / d.as_secs_f64() }
}

/// One sequence: the model, its tokenizer, and the cache the engine keeps for it.
pub struct Session<'m> {
    model: &'m dyn Decoder,
    tokenizer: &'m Tokenizer,
    cache: KvCache,
    /// Exactly the tokens whose keys/values are in `cache`.
    cached: Vec<u32>,
    /// Fingerprints of the image tiles whose features are in `cache`, in prompt order.
    cached_tiles: Vec<u64>,
    /// Usable context window: the model's, or less when the user asks for less.
    context: usize,
}

impl<'m> Session<'m> {
    pub fn new(model: &'m dyn Decoder, tokenizer: &'m Tokenizer) -> Self {
        Session { model, tokenizer, cache: model.new_cache(), cached: Vec::new(), cached_tiles: Vec::new(), context: model.info().context_length }
    }

    /// Limits the context window below the model's (bounding KV-cache memory).
    pub fn with_context_limit(mut self, limit: Option<usize>) -> Self {
        if let Some(n) = limit {
            self.context = n.clamp(1, self.model.info().context_length);
        }
        self
    }

    pub fn context_length(&self) -> usize {
        self.context
    }

    /// Forgets the cached conversation.
    pub fn reset(&mut self) {
        self.cache.reset();
        self.cached.clear();
        self.cached_tiles.clear();
    }

    /// Runs `ids` through the model, returning last-position logits.
    fn feed(&mut self, ids: &[u32]) -> Result<Vec<f32>> {
        let mut last = None;
        for chunk in ids.chunks(PREFILL_CHUNK) {
            last = Some(self.model.forward(chunk, &mut self.cache, false)?);
            self.cached.extend_from_slice(chunk);
        }
        let logits = last.ok_or_else(|| Error::invalid("prompt", "is empty"))?;
        Ok(logits.squeeze(0)?.to_vec1::<f32>()?)
    }

    /// Generates a completion of `req.prompt_ids`, calling `on_text` with each piece of text as
    /// soon as it is safe to show (whole UTF-8 characters, never part of a stop string).
    /// `on_text` returns `false` to cancel.
    pub fn generate(&mut self, req: &GenerateRequest, on_text: &mut dyn FnMut(&str) -> bool) -> Result<GenerateOutput> {
        self.generate_with_images(req, None, on_text)
    }

    /// [`Session::generate`] for a prompt that carries images: `pixels` holds the tiles
    /// (`[tiles, 3, S, S]`) of the prompt's image tokens, in order (vision-language models only).
    pub fn generate_with_images(
        &mut self,
        req: &GenerateRequest,
        pixels: Option<&Tensor>,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<GenerateOutput> {
        let tiles = check_prompt_images(self.model, &req.prompt_ids, pixels)?;
        let context = self.context_length();
        let n_prompt = req.prompt_ids.len();
        if n_prompt == 0 {
            return Err(Error::invalid("prompt", "is empty (no tokens)"));
        }
        if n_prompt >= context {
            return Err(Error::ContextOverflow { prompt_tokens: n_prompt, context });
        }
        if req.max_tokens == 0 {
            return Err(Error::invalid("max_tokens", "must be at least 1"));
        }
        let opts = GenerationOptions::new(req.max_tokens, req.sampling.clone(), req.stop.clone());
        let mut seq = Sequence::new(self.tokenizer, &req.prompt_ids, opts, context - n_prompt)?;

        // Reuse the cache when the new prompt extends what it holds; at least the last prompt
        // token is always run so that its logits exist.
        // A cached prefix is only valid if it saw the same images.
        let reuse = self.cached.len() < n_prompt && req.prompt_ids.starts_with(&self.cached) && tiles.starts_with(&self.cached_tiles);
        if !reuse {
            self.reset();
        }
        let start = Instant::now();
        let todo = req.prompt_ids[self.cached.len()..].to_vec();
        let done_tiles = self.cached_tiles.len();
        let rest = match pixels {
            Some(p) if done_tiles < tiles.len() => Some(p.narrow(0, done_tiles, tiles.len() - done_tiles)?),
            _ => None,
        };
        let out = prefill(self.model, &todo, rest.as_ref(), &mut self.cache, PREFILL_CHUNK)?;
        self.cached.extend_from_slice(&todo);
        self.cached_tiles = tiles;
        let mut logits = out.squeeze(0)?.to_vec1::<f32>()?;
        let prefill_time = start.elapsed();

        let mut text = String::new();
        let decode_start = Instant::now();
        let finish = loop {
            let out = seq.step(&mut logits)?;
            text.push_str(&out.text);
            if !out.text.is_empty() && !on_text(&out.text) {
                break FinishReason::Cancelled;
            }
            match (out.finish, out.id) {
                (Some(f), _) => break f,
                (None, Some(id)) => logits = self.feed(&[id])?,
                (None, None) => unreachable!("a step without a token always finishes"),
            }
        };
        Ok(GenerateOutput {
            text,
            prompt_tokens: n_prompt,
            completion_tokens: seq.generated().len(),
            token_ids: seq.generated().to_vec(),
            finish_reason: finish,
            prefilled_tokens: todo.len(),
            prefill_time,
            decode_time: decode_start.elapsed(),
        })
    }
}
