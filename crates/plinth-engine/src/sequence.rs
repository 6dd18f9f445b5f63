//! One sequence's generation state, shared by the single-sequence [`crate::Session`] and the
//! continuous-batching [`crate::scheduler`]: logit adjustments (bias, presence and frequency
//! penalties), sampling, log-probabilities, incremental detokenization, stop strings and the
//! finish rules. Given the logits of its next position, [`Sequence::step`] says what to emit
//! and whether the sequence is done.

use std::collections::HashMap;

use plinth_core::Result;
use plinth_tokenize::{Detokenizer, Tokenizer};
use serde::Serialize;

use crate::sampler::{LogitsProcessor, SamplingParams};
use crate::stop::{StopMatcher, StopOutcome};

/// Why generation ended, in OpenAI's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FinishReason {
    /// An end-of-sequence token or a stop string.
    Stop,
    /// `max_tokens` or the context window was reached.
    Length,
    /// The caller cancelled (callback returned false, or the client went away).
    Cancelled,
}

/// What to generate, beyond the prompt.
#[derive(Debug, Clone)]
pub struct GenerationOptions {
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    pub stop: Vec<String>,
    /// Return the chosen token's log-probability and this many alternatives (OpenAI `logprobs`
    /// / `top_logprobs`); `None` computes nothing.
    pub logprobs: Option<usize>,
    /// Added to the logits of these tokens before sampling (OpenAI `logit_bias`).
    pub logit_bias: Vec<(u32, f32)>,
    /// OpenAI's penalties: subtract `presence` once and `frequency` per occurrence for every
    /// token already generated.
    pub presence_penalty: f32,
    pub frequency_penalty: f32,
    /// The model's adapter slot to generate with (`None`: the base model).
    pub adapter: Option<usize>,
}

impl GenerationOptions {
    pub fn new(max_tokens: usize, sampling: SamplingParams, stop: Vec<String>) -> Self {
        GenerationOptions { max_tokens, sampling, stop, logprobs: None, logit_bias: Vec::new(), presence_penalty: 0.0, frequency_penalty: 0.0, adapter: None }
    }
}

/// Log-probability of a chosen token and its strongest alternatives.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TokenLogprob {
    pub token: String,
    pub logprob: f32,
    pub top: Vec<(String, f32)>,
}

/// The outcome of one step.
#[derive(Debug, Clone)]
pub struct StepOutput {
    /// The sampled token, `None` when it was an end-of-sequence token (never fed back).
    pub id: Option<u32>,
    /// Text that is now safe to show (may be empty).
    pub text: String,
    pub logprob: Option<TokenLogprob>,
    /// `Some` when the sequence is finished.
    pub finish: Option<FinishReason>,
}

pub struct Sequence<'t> {
    tokenizer: &'t Tokenizer,
    opts: GenerationOptions,
    sampler: LogitsProcessor,
    stops: StopMatcher,
    detok: Detokenizer<'t>,
    history: Vec<u32>,
    generated: Vec<u32>,
    counts: HashMap<u32, u32>,
    budget: usize,
}

impl<'t> Sequence<'t> {
    /// `budget` is `max_tokens` clipped to what fits in the context after the prompt.
    pub fn new(tokenizer: &'t Tokenizer, prompt: &[u32], opts: GenerationOptions, budget: usize) -> Result<Self> {
        Ok(Sequence {
            tokenizer,
            sampler: LogitsProcessor::new(opts.sampling.clone())?,
            stops: StopMatcher::new(&opts.stop)?,
            detok: Detokenizer::new(tokenizer, true),
            history: prompt.to_vec(),
            generated: Vec::new(),
            counts: HashMap::new(),
            budget: budget.min(opts.max_tokens),
            opts,
        })
    }

    pub fn generated(&self) -> &[u32] {
        &self.generated
    }

    fn adjust(&self, logits: &mut [f32]) {
        // Models whose embedding table is padded past the tokenizer (Qwen2, random-weight
        // test models) must never sample an id the tokenizer cannot decode.
        if let Some(pad) = logits.get_mut(self.tokenizer.vocab_size()..) {
            pad.fill(f32::NEG_INFINITY);
        }
        for &(id, bias) in &self.opts.logit_bias {
            if let Some(l) = logits.get_mut(id as usize) {
                *l += bias;
            }
        }
        if self.opts.presence_penalty != 0.0 || self.opts.frequency_penalty != 0.0 {
            for (&id, &n) in &self.counts {
                if let Some(l) = logits.get_mut(id as usize) {
                    *l -= self.opts.presence_penalty + self.opts.frequency_penalty * n as f32;
                }
            }
        }
    }

    fn logprob(&self, logits: &[f32], id: u32, top: usize) -> TokenLogprob {
        let max = logits.iter().copied().filter(|x| x.is_finite()).fold(f32::NEG_INFINITY, f32::max);
        let lse = max + logits.iter().filter(|x| x.is_finite()).map(|&x| (x - max).exp()).sum::<f32>().ln();
        let text = |i: u32| self.tokenizer.decode(&[i], false).unwrap_or_default();
        let mut best: Vec<(u32, f32)> = Vec::with_capacity(top);
        if top > 0 {
            let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
            let k = top.min(idx.len());
            idx.select_nth_unstable_by(k - 1, |&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
            idx.truncate(k);
            idx.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
            best = idx.into_iter().map(|i| (i, logits[i as usize] - lse)).collect();
        }
        TokenLogprob { token: text(id), logprob: logits[id as usize] - lse, top: best.into_iter().map(|(i, l)| (text(i), l)).collect() }
    }

    /// Samples from the logits of the next position and advances the text state.
    pub fn step(&mut self, logits: &mut [f32]) -> Result<StepOutput> {
        self.adjust(logits);
        let raw = self.opts.logprobs.map(|_| logits.to_vec());
        let id = self.sampler.sample(logits, &self.history);
        let logprob = raw.map(|l| self.logprob(&l, id, self.opts.logprobs.unwrap_or(0)));
        if self.tokenizer.is_eos(id) {
            let text = self.finish_text()?;
            return Ok(StepOutput { id: None, text, logprob, finish: Some(FinishReason::Stop) });
        }
        self.generated.push(id);
        self.history.push(id);
        *self.counts.entry(id).or_default() += 1;
        let piece = self.detok.push(id)?;
        let (mut text, mut finish) = match self.stops.push(&piece) {
            StopOutcome::Continue(s) => (s, None),
            StopOutcome::Stop(s) => (s, Some(FinishReason::Stop)),
        };
        if finish.is_none() && self.generated.len() >= self.budget {
            text.push_str(&self.finish_text()?);
            finish = Some(if self.stops.is_finished() { FinishReason::Stop } else { FinishReason::Length });
        }
        Ok(StepOutput { id: Some(id), text, logprob, finish })
    }

    /// Releases what the detokenizer and the stop matcher held back (a stop string appearing
    /// in that tail still ends the text before it).
    fn finish_text(&mut self) -> Result<String> {
        let tail = self.detok.finish()?;
        Ok(match self.stops.push(&tail) {
            StopOutcome::Continue(mut s) => {
                s.push_str(&self.stops.flush());
                s
            }
            StopOutcome::Stop(s) => s,
        })
    }
}
