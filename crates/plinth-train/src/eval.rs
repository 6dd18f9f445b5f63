//! Evaluating a model (with or without an adapter attached): perplexity over a token stream,
//! computed the way llama.cpp's `llama-perplexity` computes it, and answer accuracy over
//! held-out examples (greedy generation compared with the reference, plus the reference's
//! teacher-forced negative log-likelihood).
//!
//! Both take a [`Decoder`] as it is: attach an adapter first
//! (`peft::load(dir, model)?.attach(model)?`) to evaluate the adapted model, and
//! [`LoraSet::detach`](crate::LoraSet::detach) to evaluate the base.

use candle_core::Tensor;
use plinth_core::{Error, Result};
use plinth_engine::{FinishReason, GenerateRequest, SamplingParams, Session};
use plinth_models::layers::linear::DEQUANT_MIN_ROWS;
use plinth_models::{Decoder, KvCache};
use plinth_tokenize::{Message, Tokenizer};
use serde::Serialize;

/// Tokens per forward call, bounding the attention scratch memory (as the engine's prefill).
const BATCH: usize = 512;

// ---------------------------------------------------------------------------------------------
// Perplexity
// ---------------------------------------------------------------------------------------------

/// Where a perplexity run is, reported after each chunk.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PerplexityProgress {
    /// Chunks done (1-based: 1 after the first chunk).
    pub chunk: usize,
    pub chunks: usize,
    pub tokens_scored: usize,
    /// Perplexity over the chunks done so far (what llama.cpp prints as `[i]ppl,`).
    pub ppl: f64,
}

/// The progress callback of [`perplexity`].
pub type PerplexityCallback<'a> = Box<dyn FnMut(&PerplexityProgress) + 'a>;

/// How [`perplexity`] runs.
pub struct PerplexityOptions<'a> {
    /// Tokens per chunk (llama.cpp's `-c`, default 512). At least 3, at most the model's
    /// context window.
    pub ctx: usize,
    /// The BOS id when the model's tokenizer adds BOS (llama.cpp's `llama_vocab_get_add_bos`),
    /// else `None`. When set, the first token of every chunk is *replaced* by BOS before it
    /// is run. [`PerplexityOptions::for_tokenizer`] fills this in.
    pub bos: Option<u32>,
    /// Evaluate at most this many chunks (llama.cpp's `--chunks`); `None` for all.
    pub max_chunks: Option<usize>,
    /// Called after each chunk.
    pub progress: Option<PerplexityCallback<'a>>,
}

impl Default for PerplexityOptions<'_> {
    fn default() -> Self {
        PerplexityOptions { ctx: 512, bos: None, max_chunks: None, progress: None }
    }
}

impl std::fmt::Debug for PerplexityOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PerplexityOptions")
            .field("ctx", &self.ctx)
            .field("bos", &self.bos)
            .field("max_chunks", &self.max_chunks)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

impl PerplexityOptions<'_> {
    /// Defaults, with [`bos`](Self::bos) set as llama.cpp sets it for this tokenizer.
    pub fn for_tokenizer(tokenizer: &Tokenizer) -> Self {
        PerplexityOptions { bos: if tokenizer.add_bos() { tokenizer.bos_id() } else { None }, ..Default::default() }
    }
}

/// The result of [`perplexity`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PerplexityReport {
    /// Tokens per chunk.
    pub ctx: usize,
    /// Tokens in the input stream (those past the last whole chunk are not used).
    pub tokens: usize,
    pub chunks: usize,
    /// Tokens whose log-likelihood was counted: `chunks * (ctx - 1 - ctx/2)`.
    pub tokens_scored: usize,
    /// Mean negative log-likelihood (nats) over the scored tokens.
    pub nll_mean: f64,
    /// `exp(nll_mean)`.
    pub ppl: f64,
    /// llama.cpp's "+/-" of its final estimate: `ppl * sqrt(var(nll) / (n - 1))`; `None`
    /// when fewer than two tokens were scored.
    pub ppl_stderr: Option<f64>,
}

/// Tokenizes a text for [`perplexity`] as llama.cpp does (`common_tokenize(ctx, text, true)`):
/// BOS first when the tokenizer adds it, never EOS (llama.cpp refuses models that add EOS).
/// Unlike llama.cpp, special-token text inside `text` becomes the special token.
pub fn perplexity_tokens(tokenizer: &Tokenizer, text: &str) -> Result<Vec<u32>> {
    let mut ids = tokenizer.encode(text, false)?;
    if let (true, Some(bos)) = (tokenizer.add_bos(), tokenizer.bos_id()) {
        ids.insert(0, bos);
    }
    Ok(ids)
}

/// Perplexity of `model` over the token stream `ids`, computed as llama.cpp's
/// `llama-perplexity` computes it by default (`perplexity()` in `tools/perplexity/perplexity.cpp`,
/// no `--ppl-stride`, no KL-divergence mode). What is matched:
///
/// * **Input.** llama.cpp tokenizes the whole file once with `add_special = true` (a BOS in
///   front when the model adds one); [`perplexity_tokens`] does the same. It refuses input of
///   fewer than `2 * ctx` tokens; so does this function.
/// * **Chunks.** `n_chunk = tokens / ctx` (floor) non-overlapping chunks `[i*ctx, (i+1)*ctx)`,
///   each evaluated from an empty KV cache at positions `0..ctx`; the remainder after the
///   last whole chunk is ignored. `max_chunks` is `--chunks`.
/// * **BOS.** When the vocabulary adds BOS (`opts.bos` is `Some`), the first token of every
///   chunk is *replaced* by BOS for the forward pass (not shifted: that token is dropped
///   from the input). The token stream used for the targets keeps the original token, but
///   position 0 is never a target, so only the input changes. For chunk 0 of a stream that
///   starts with BOS this changes nothing.
/// * **Scored positions.** `first = ctx / 2`; the logits of positions `first ..= ctx - 2`
///   predict tokens `first + 1 ..= ctx - 1` of the chunk, i.e. `ctx - 1 - first` tokens per
///   chunk (255 for ctx 512). Position `ctx - 1` is not scored — its next token lies in the
///   next chunk — so this function does not even run it.
/// * **Aggregate.** NLL summed over every scored token of every chunk, `ppl = exp(sum / count)`;
///   `ppl_stderr` is the "+/-" of llama.cpp's "Final estimate".
///
/// The log-softmax of each scored row is computed in f64 (llama.cpp: f32 max, f64 sum of
/// f32 `expf`), from the model's f32 logits. A chunk runs as plinth's prompt path runs it
/// (weights dequantized for calls of 32 rows or more; llama.cpp instead quantizes activations
/// to 8 bits, ~1 % apart in perplexity on SmolLM2 Q4_1), in pieces of at most 512 tokens
/// through the KV cache, which is equivalent to llama.cpp's `n_batch` splitting. Logits are
/// computed for the scored positions only (plus, in chunks under 64 tokens, the few before
/// them that keep a forward call at 32 rows).
pub fn perplexity(model: &dyn Decoder, ids: &[u32], mut opts: PerplexityOptions) -> Result<PerplexityReport> {
    let ctx = opts.ctx;
    let window = model.info().context_length;
    if ctx < 3 {
        return Err(Error::invalid("perplexity context", format!("{ctx} tokens (need at least 3, so that a chunk scores a token)")));
    }
    if ctx > window {
        return Err(Error::invalid("perplexity context", format!("{ctx} tokens exceeds the model's context window of {window}")));
    }
    if ids.len() < 2 * ctx {
        return Err(Error::invalid(
            "perplexity input",
            format!("{} tokens; at least {} (2 x the context of {ctx}) are needed, as llama.cpp requires", ids.len(), 2 * ctx),
        ));
    }
    let mut chunks = ids.len() / ctx;
    if let Some(m) = opts.max_chunks {
        if m == 0 {
            return Err(Error::invalid("perplexity chunks", "must be at least 1"));
        }
        chunks = chunks.min(m);
    }
    let first = ctx / 2;
    let mut cache = scoring_cache(model);
    let (mut sum, mut sum2, mut count) = (0f64, 0f64, 0usize);
    for i in 0..chunks {
        let chunk = &ids[i * ctx..(i + 1) * ctx];
        let mut input = chunk[..ctx - 1].to_vec();
        if let Some(bos) = opts.bos {
            input[0] = bos;
        }
        cache.reset();
        for nll in scored_nlls(model, &mut cache, &input, first, &chunk[first + 1..])? {
            sum += nll;
            sum2 += nll * nll;
        }
        count += ctx - 1 - first;
        if let Some(cb) = opts.progress.as_mut() {
            cb(&PerplexityProgress { chunk: i + 1, chunks, tokens_scored: count, ppl: (sum / count as f64).exp() });
        }
    }
    let n = count as f64;
    let nll_mean = sum / n;
    let ppl = nll_mean.exp();
    let var = sum2 / n - nll_mean * nll_mean;
    let ppl_stderr = (count > 1 && var > 0.0).then(|| (var / (n - 1.0)).sqrt() * ppl);
    Ok(PerplexityReport { ctx, tokens: ids.len(), chunks, tokens_scored: count, nll_mean, ppl, ppl_stderr })
}

/// `-log p(targets[k] | ids[..=from + k])` for each position `from + k` of `ids`
/// (`targets.len() == ids.len() - from`), running `ids` from the empty `cache`.
///
/// Gives the numbers one forward pass over all of `ids` would give: the positions before the
/// scored ones run without logits, but every forward call gets at least
/// [`DEQUANT_MIN_ROWS`] rows where the input has them (a quantized model's matmuls switch to
/// 8-bit activations below that). Calls are equal pieces of at most [`BATCH`] rows, so at most
/// `BATCH` rows of logits exist at a time.
fn scored_nlls(model: &dyn Decoder, cache: &mut KvCache, ids: &[u32], from: usize, targets: &[u32]) -> Result<Vec<f64>> {
    let len = ids.len();
    if targets.len() != len - from {
        return Err(Error::invalid("scoring", format!("{} targets for {} positions", targets.len(), len - from)));
    }
    let mut split = from.min(len.saturating_sub(DEQUANT_MIN_ROWS));
    if split < DEQUANT_MIN_ROWS {
        split = 0;
    }
    for piece in pieces(&ids[..split]) {
        model.forward(piece, cache, false)?;
    }
    let mut out = Vec::with_capacity(targets.len());
    let mut pos = split;
    for piece in pieces(&ids[split..]) {
        let logits = model.forward(piece, cache, true)?;
        let (start, end) = (pos.max(from), pos + piece.len());
        if end > start {
            out.extend(token_nlls(&logits.narrow(0, start - pos, end - start)?, &targets[start - from..end - from])?);
        }
        pos = end;
    }
    Ok(out)
}

/// `ids` in equal pieces of at most [`BATCH`] tokens.
fn pieces(ids: &[u32]) -> std::slice::Chunks<'_, u32> {
    let n = ids.len().div_ceil(BATCH).max(1);
    ids.chunks(ids.len().div_ceil(n).max(1))
}

/// `-log softmax(logits[i])[targets[i]]` in f64, for each row `i` of `logits` (`[n, vocab]`).
fn token_nlls(logits: &Tensor, targets: &[u32]) -> Result<Vec<f64>> {
    let rows = logits.to_dtype(candle_core::DType::F32)?.to_vec2::<f32>()?;
    if rows.len() != targets.len() {
        return Err(Error::invalid("logits", format!("{} rows for {} targets", rows.len(), targets.len())));
    }
    rows.iter()
        .zip(targets)
        .map(|(row, &t)| {
            let x = *row.get(t as usize).ok_or_else(|| {
                Error::invalid("token id", format!("{t} is outside the model's vocabulary of {}", row.len()))
            })? as f64;
            let max = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
            let lse = max + row.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln();
            Ok(lse - x)
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Accuracy
// ---------------------------------------------------------------------------------------------

/// A held-out example with a reference answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Example {
    /// A conversation whose last message is the assistant's reference answer; the messages
    /// before it are the prompt.
    Chat(Vec<Message>),
    /// A raw prompt (no chat template) and its reference completion.
    Prompt { prompt: String, completion: String },
}

/// The progress callback of [`evaluate_examples`]: (examples done, total, the latest result).
pub type EvalCallback<'a> = Box<dyn FnMut(usize, usize, &ExampleResult) + 'a>;

/// How [`evaluate_examples`] runs.
#[derive(Default)]
pub struct EvalOptions<'a> {
    /// Generation limit per example; `None` for the example's reference tokens + 16.
    pub max_tokens: Option<usize>,
    /// Stop strings ending generation besides EOS (none by default).
    pub stop: Vec<String>,
    /// Called after each example.
    pub progress: Option<EvalCallback<'a>>,
}

impl std::fmt::Debug for EvalOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EvalOptions")
            .field("max_tokens", &self.max_tokens)
            .field("stop", &self.stop)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

/// One example's outcome.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExampleResult {
    /// Position in the input.
    pub index: usize,
    pub prompt_tokens: usize,
    /// The reference answer text.
    pub reference: String,
    /// What greedy generation produced.
    pub generated: String,
    pub finish_reason: FinishReason,
    /// `generated.trim() == reference.trim()`.
    pub exact_match: bool,
    /// Equal after [`normalize_answer`].
    pub normalized_match: bool,
    /// Tokens of the reference answer.
    pub reference_tokens: usize,
    /// Mean NLL (nats per token) of the reference answer's tokens given the prompt,
    /// teacher-forced.
    pub nll_mean: f64,
    /// Tokens scored when the end marker is included (the answer, then the template's
    /// end-of-turn text for a chat or EOS for a pair): what training learns for this record.
    pub tokens_with_end: usize,
    /// Mean NLL over those tokens: the training loss on this example.
    pub nll_mean_with_end: f64,
}

/// The result of [`evaluate_examples`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AccuracyReport {
    pub examples: usize,
    /// Examples whose generation equals the reference after trimming whitespace.
    pub exact_match: usize,
    /// Examples equal after [`normalize_answer`] (a superset of the exact matches).
    pub normalized_match: usize,
    /// `exact_match / examples`, a fraction in `[0, 1]`.
    pub accuracy: f64,
    /// `normalized_match / examples`.
    pub normalized_accuracy: f64,
    /// Mean NLL per reference-answer token over all examples (token-weighted, nats).
    pub mean_nll_of_reference: f64,
    /// Reference-answer tokens scored in total.
    pub reference_tokens: usize,
    /// Mean NLL per token including each answer's end marker (token-weighted): the training
    /// loss over these examples (see [`ExampleResult::nll_mean_with_end`]).
    pub mean_nll_with_end: f64,
    pub tokens_with_end: usize,
    pub per_example: Vec<ExampleResult>,
}

/// Lowercases, drops every character that is neither alphanumeric nor whitespace
/// (punctuation and symbols), and collapses whitespace runs to one space, trimmed.
pub fn normalize_answer(s: &str) -> String {
    let kept: String = s.chars().filter(|c| c.is_alphanumeric() || c.is_whitespace()).flat_map(char::to_lowercase).collect();
    kept.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// An example tokenized: the prompt, the reference text and the tokens scored for its NLL,
/// of which the first `answer` are the reference answer and the rest its end marker.
struct Prepared {
    prompt: Vec<u32>,
    reference: String,
    target: Vec<u32>,
    answer: usize,
}

/// Tokenizes an example exactly as `data::tokenize` tokenizes the same record for training,
/// so that the NLL with the end marker is the training loss on that example's answer:
///
/// * chat: the prompt is the template over all but the last message with the generation
///   prompt, encoded without special tokens (templates write BOS); the scored tokens are the
///   text the full conversation adds after that prompt — the answer and the template's
///   end-of-turn marker (`Paris<|im_end|>\n` for ChatML). A template that does not render
///   incrementally falls back to scoring the answer's tokens alone.
/// * prompt/completion: BOS when the tokenizer adds it, then the prompt; the scored tokens are
///   the completion, encoded on its own, then EOS.
///
/// The answer alone is the leading tokens that encode the reference text by itself (for a
/// chat, when the rendered answer tokenizes with a different split at its end, the whole
/// rendered answer counts as the answer).
fn prepare(tok: &Tokenizer, template: &mut Option<plinth_tokenize::ChatTemplate>, index: usize, ex: &Example) -> Result<Prepared> {
    match ex {
        Example::Chat(messages) => {
            let what = || format!("eval example {}", index + 1);
            let Some((last, context)) = messages.split_last() else {
                return Err(Error::invalid(what(), "the conversation is empty"));
            };
            if last.role != "assistant" {
                return Err(Error::invalid(what(), format!("the last message is from '{}'; it must be the assistant's reference answer", last.role)));
            }
            if context.is_empty() {
                return Err(Error::invalid(what(), "the conversation has only the answer, no prompt before it"));
            }
            if template.is_none() {
                *template = Some(tok.chat()?);
            }
            let tpl = template.as_ref().expect("set above");
            let before = tpl.render(context, true)?;
            let through = tpl.render(messages, false)?;
            let content = tok.encode(&last.content, false)?;
            let target = match through.strip_prefix(before.as_str()) {
                Some(answer) if !answer.is_empty() => tok.encode(answer, false)?,
                _ => content.clone(),
            };
            let answer = if target.starts_with(&content) { content.len() } else { target.len() };
            Ok(Prepared { prompt: tok.encode(&before, false)?, reference: last.content.clone(), target, answer })
        }
        Example::Prompt { prompt, completion } => {
            let mut ids = Vec::new();
            if let (true, Some(bos)) = (tok.add_bos(), tok.bos_id()) {
                ids.push(bos);
            }
            ids.extend(tok.encode(prompt, false)?);
            let mut target = tok.encode(completion, false)?;
            let answer = target.len();
            target.extend(tok.eos_ids().first());
            Ok(Prepared { prompt: ids, reference: completion.clone(), target, answer })
        }
    }
}

/// Per-token NLL of `target` following `prompt`, teacher-forced, from an empty cache.
fn continuation_nll(model: &dyn Decoder, prompt: &[u32], target: &[u32]) -> Result<Vec<f64>> {
    let mut ids = prompt.to_vec();
    ids.extend_from_slice(&target[..target.len() - 1]);
    scored_nlls(model, &mut scoring_cache(model), &ids, prompt.len() - 1, target)
}

/// Scoring runs with an f32 KV cache even where the model's default is f16 (quantized models):
/// an evaluation measures the model, and the f16 cache's rounding (≈ 4e-4 in mean NLL on the
/// SmolLM2 passage) is a serving speed trade, not part of it.
pub(crate) fn scoring_cache(model: &dyn Decoder) -> KvCache {
    KvCache::new(model.info().num_layers)
}

/// Answers `examples` greedily and scores them against their references.
///
/// For each example the prompt is rendered (chat: the model's template over all messages
/// but the last, with the generation prompt; prompt/completion: the prompt as is, with BOS
/// when the tokenizer adds it), a completion is generated greedily (argmax, no filters)
/// until EOS, a stop string or `max_tokens` (default: the reference's tokens + 16),
/// and compared with the reference: exact match after trimming whitespace, and normalized
/// match after [`normalize_answer`].
///
/// Independently of what was generated, the reference is teacher-forced after the prompt
/// and the mean NLL of its tokens taken (`mean_nll_of_reference`); it falls as an adapter
/// learns even while exact match stays at 0. The same pass also scores the answer's end
/// marker (the template's end-of-turn text for a chat, EOS for a pair), and the NLL over
/// answer and marker (`mean_nll_with_end`) is over exactly the tokens training learns for the
/// same record, so it is directly comparable with the training loss. (A base model that does
/// not know to stop after a short answer shows a much larger NLL with the marker.)
pub fn evaluate_examples(model: &dyn Decoder, tokenizer: &Tokenizer, examples: &[Example], mut opts: EvalOptions) -> Result<AccuracyReport> {
    if examples.is_empty() {
        return Err(Error::invalid("eval examples", "none were given"));
    }
    if opts.max_tokens == Some(0) {
        return Err(Error::invalid("max_tokens", "must be at least 1"));
    }
    let window = model.info().context_length;
    let mut template = None;
    let mut session = Session::new(model, tokenizer);
    let mut per_example = Vec::with_capacity(examples.len());
    let (mut nll_sum, mut nll_count, mut end_sum, mut end_count) = (0f64, 0usize, 0f64, 0usize);
    for (index, ex) in examples.iter().enumerate() {
        let p = prepare(tokenizer, &mut template, index, ex)?;
        let what = || format!("eval example {}", index + 1);
        if p.prompt.is_empty() {
            return Err(Error::invalid(what(), "the prompt is empty (no tokens)"));
        }
        if p.answer == 0 {
            return Err(Error::invalid(what(), "the reference answer is empty (no tokens)"));
        }
        if p.prompt.len() + p.target.len() > window {
            return Err(Error::invalid(
                what(),
                format!("prompt ({}) and reference ({}) tokens exceed the model's context window of {window}", p.prompt.len(), p.target.len()),
            ));
        }
        let req = GenerateRequest {
            prompt_ids: p.prompt.clone(),
            max_tokens: opts.max_tokens.unwrap_or(p.answer + 16),
            sampling: SamplingParams::greedy(),
            stop: opts.stop.clone(),
        };
        let out = session.generate(&req, &mut |_| true)?;
        let nlls = continuation_nll(model, &p.prompt, &p.target)?;
        let answer_sum: f64 = nlls[..p.answer].iter().sum();
        let sum: f64 = nlls.iter().sum();
        nll_sum += answer_sum;
        nll_count += p.answer;
        end_sum += sum;
        end_count += nlls.len();
        let result = ExampleResult {
            index,
            prompt_tokens: p.prompt.len(),
            exact_match: out.text.trim() == p.reference.trim(),
            normalized_match: normalize_answer(&out.text) == normalize_answer(&p.reference),
            reference: p.reference,
            generated: out.text,
            finish_reason: out.finish_reason,
            reference_tokens: p.answer,
            nll_mean: answer_sum / p.answer as f64,
            tokens_with_end: nlls.len(),
            nll_mean_with_end: sum / nlls.len() as f64,
        };
        if let Some(cb) = opts.progress.as_mut() {
            cb(index + 1, examples.len(), &result);
        }
        per_example.push(result);
    }
    let n = per_example.len();
    let exact = per_example.iter().filter(|r| r.exact_match).count();
    let normalized = per_example.iter().filter(|r| r.normalized_match).count();
    Ok(AccuracyReport {
        examples: n,
        exact_match: exact,
        normalized_match: normalized,
        accuracy: exact as f64 / n as f64,
        normalized_accuracy: normalized as f64 / n as f64,
        mean_nll_of_reference: nll_sum / nll_count as f64,
        reference_tokens: nll_count,
        mean_nll_with_end: end_sum / end_count as f64,
        tokens_with_end: end_count,
        per_example,
    })
}

#[cfg(test)]
mod tests {
    use super::{normalize_answer, pieces};

    #[test]
    fn pieces_are_equal_and_at_most_a_batch() {
        let len = |n: usize| pieces(&vec![0; n]).map(<[u32]>::len).collect::<Vec<_>>();
        assert_eq!(len(0), Vec::<usize>::new());
        assert_eq!(len(5), [5]);
        assert_eq!(len(512), [512]);
        assert_eq!(len(530), [265, 265]);
        assert_eq!(len(1025), [342, 342, 341]);
    }

    #[test]
    fn normalization_drops_case_punctuation_and_extra_space() {
        assert_eq!(normalize_answer("  The capital is PARIS.\n"), "the capital is paris");
        assert_eq!(normalize_answer("Paris!"), normalize_answer("paris"));
        assert_eq!(normalize_answer("a,  b;\tc"), "a b c");
        assert_ne!(normalize_answer("Paris"), normalize_answer("Lyon"));
    }
}
