//! The generation loop. A [`Session`] owns one sequence's KV cache and the tokens already in
//! it, so a chat can append a turn without recomputing the whole conversation; when the new
//! prompt does not extend what is cached, the cache is rebuilt.

use std::time::{Duration, Instant};

use plinth_core::{Error, Result};
use plinth_models::{Decoder, KvCache};
use plinth_tokenize::{Detokenizer, Tokenizer};
use serde::Serialize;

use crate::sampler::{LogitsProcessor, SamplingParams};
use crate::stop::{StopMatcher, StopOutcome};

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

/// Why generation ended, in OpenAI's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FinishReason {
    /// An end-of-sequence token or a stop string.
    Stop,
    /// `max_tokens` or the context window was reached.
    Length,
    /// The caller's callback asked to stop.
    Cancelled,
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
    /// Usable context window: the model's, or less when the user asks for less.
    context: usize,
}

impl<'m> Session<'m> {
    pub fn new(model: &'m dyn Decoder, tokenizer: &'m Tokenizer) -> Self {
        Session { model, tokenizer, cache: model.new_cache(), cached: Vec::new(), context: model.info().context_length }
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
        let mut sampler = LogitsProcessor::new(req.sampling.clone())?;
        let mut stops = StopMatcher::new(&req.stop)?;

        // Reuse the cache when the new prompt extends what it holds; at least the last prompt
        // token is always run so that its logits exist.
        let reuse = self.cached.len() < n_prompt && req.prompt_ids.starts_with(&self.cached);
        if !reuse {
            self.reset();
        }
        let start = Instant::now();
        let todo = req.prompt_ids[self.cached.len()..].to_vec();
        let mut logits = self.feed(&todo)?;
        let prefill_time = start.elapsed();

        let budget = req.max_tokens.min(context - n_prompt);
        let mut history = req.prompt_ids.clone();
        let mut out_ids = Vec::new();
        let mut text = String::new();
        let mut detok = Detokenizer::new(self.tokenizer, true);
        let mut finish = FinishReason::Length;
        let mut hit_stop_string = false;
        let decode_start = Instant::now();
        let mut emit = |piece: &str, text: &mut String| -> bool {
            if piece.is_empty() {
                return true;
            }
            text.push_str(piece);
            on_text(piece)
        };
        loop {
            let id = sampler.sample(&mut logits, &history);
            if self.tokenizer.is_eos(id) {
                finish = FinishReason::Stop;
                break;
            }
            out_ids.push(id);
            history.push(id);
            let piece = detok.push(id)?;
            match stops.push(&piece) {
                StopOutcome::Continue(s) => {
                    if !emit(&s, &mut text) {
                        finish = FinishReason::Cancelled;
                        break;
                    }
                }
                StopOutcome::Stop(s) => {
                    emit(&s, &mut text);
                    finish = FinishReason::Stop;
                    hit_stop_string = true;
                    break;
                }
            }
            if out_ids.len() >= budget {
                break;
            }
            logits = self.feed(&[id])?;
        }
        // Release what the detokenizer and the stop matcher held back, unless a stop string
        // ended generation (then everything after it is dropped by design).
        if !hit_stop_string {
            let tail = detok.finish()?;
            let rest = match stops.push(&tail) {
                StopOutcome::Continue(mut s) => {
                    s.push_str(&stops.flush());
                    s
                }
                StopOutcome::Stop(s) => {
                    finish = FinishReason::Stop;
                    s
                }
            };
            emit(&rest, &mut text);
        }
        Ok(GenerateOutput {
            text,
            prompt_tokens: n_prompt,
            completion_tokens: out_ids.len(),
            token_ids: out_ids,
            finish_reason: finish,
            prefilled_tokens: todo.len(),
            prefill_time,
            decode_time: decode_start.elapsed(),
        })
    }
}
