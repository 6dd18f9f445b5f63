//! Summarization with an instruct LLM, for any length of input: a document that does not fit
//! the model's context (with room for the instructions and the answer) is split on token
//! budgets at paragraph / sentence boundaries ([`crate::chunk`]), each part is summarized
//! ("map"), and the partial summaries are summarized together ("reduce"), recursively if
//! they still do not fit. Only the final summary is streamed. Encoder-decoder models
//! (BART-CNN, T5) summarize the same way within their encoder's limit
//! ([`summarize_seq2seq`]).
//!
//! ```no_run
//! # fn main() -> plinth_core::Result<()> {
//! use plinth_io::fetch::ModelLocation;
//! use plinth_tasks::summarize::{summarize, Style, SummarizeOptions};
//!
//! let llm = plinth_models::load_decoder(&ModelLocation::Gguf("smollm2.gguf".into()))?;
//! let tok = plinth_tokenize::Tokenizer::from_gguf(llm.gguf.as_ref().unwrap())?;
//! let text = std::fs::read_to_string("report.txt").unwrap();
//! let opts = SummarizeOptions { words: 60, style: Style::Bullets, context: Some(2048), ..Default::default() };
//! let report = summarize(llm.model.as_ref(), &tok, &text, &opts, &mut |i, n| eprintln!("part {i}/{n}"), &mut |t| print!("{t}"))?;
//! println!("\n{} input tokens in {} parts, {} rounds", report.tokens, report.parts.len(), report.rounds);
//! # Ok(())
//! # }
//! ```

use plinth_core::{Error, Result};
use plinth_engine::{GenerateRequest, SamplingParams, Session};
use plinth_models::Decoder;
use plinth_tokenize::{Message, Tokenizer};

use plinth_engine::Seq2SeqOverrides;

use crate::chunk::{split, Chunk};
use crate::seq2seq::Seq2SeqModel;

/// The shape of the summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Paragraph,
    Bullets,
}

impl Style {
    pub fn from_name(name: &str) -> Result<Self> {
        match name {
            "paragraph" => Ok(Style::Paragraph),
            "bullet" | "bullets" => Ok(Style::Bullets),
            other => Err(Error::invalid("--style", format!("'{other}' (choose paragraph or bullet)"))),
        }
    }
}

/// How to summarize.
#[derive(Debug, Clone)]
pub struct SummarizeOptions {
    /// Target length in words.
    pub words: usize,
    pub style: Style,
    /// Use at most this many tokens of context (default: the model's).
    pub context: Option<usize>,
    pub sampling: SamplingParams,
}

impl Default for SummarizeOptions {
    fn default() -> Self {
        // Greedy, with a mild repetition penalty: small models otherwise loop on a phrase.
        SummarizeOptions { words: 80, style: Style::Paragraph, context: None, sampling: SamplingParams { repeat_penalty: 1.2, ..SamplingParams::greedy() } }
    }
}

/// What happened, for `--json` and tests.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SummaryReport {
    pub summary: String,
    /// Input tokens.
    pub tokens: usize,
    /// Parts summarized in the first (map) round: byte ranges of the input.
    pub parts: Vec<(usize, usize)>,
    /// Rounds of summarizing (1 when the document fit at once).
    pub rounds: usize,
}

fn instruction(opts: &SummarizeOptions, partial: bool) -> String {
    let shape = match opts.style {
        Style::Paragraph => format!("in one short paragraph of at most {} words", opts.words),
        Style::Bullets => format!("as a bulleted list (at most {} words in all)", opts.words),
    };
    if partial {
        format!("Summarize the text above, a part of a longer document, {shape}. Do not copy it; keep only the key facts.")
    } else {
        format!("Summarize the text above {shape}. Do not copy it; keep only the key facts.")
    }
}

/// Summarizes `text` with a chat model, calling `on_text` with the final summary as it is
/// generated (`on_part(i, n)` after each part of a map round).
pub fn summarize(
    model: &dyn Decoder,
    tok: &Tokenizer,
    text: &str,
    opts: &SummarizeOptions,
    on_part: &mut dyn FnMut(usize, usize),
    on_text: &mut dyn FnMut(&str),
) -> Result<SummaryReport> {
    let template = tok.chat().map_err(|e| Error::invalid("model", format!("summarizing needs an instruct model with a chat template ({e})")))?;
    if text.trim().is_empty() {
        return Err(Error::invalid("input", "the text to summarize is empty"));
    }
    if opts.words == 0 {
        return Err(Error::invalid("--words", "must be at least 1"));
    }
    let context = opts.context.unwrap_or(model.info().context_length).min(model.info().context_length);
    let answer_budget = (opts.words * 2 + 32).min(context / 4);
    let overhead = {
        let m = [Message::new("user", format!("Text:\n\n\n{}", instruction(opts, true)))];
        tok.encode(&template.render(&m, true)?, false)?.len()
    };
    // A margin for tokens that merge differently at chunk boundaries.
    let budget = context.checked_sub(answer_budget + overhead + 16).filter(|&b| b >= 32).ok_or_else(|| {
        Error::invalid("--context", format!("{context} tokens leave no room for the text once the instructions and a {}-word answer are counted", opts.words))
    })?;
    // Partial summaries are kept to a third of a part, so that each reduce round fits about
    // three of them per part and the rounds converge.
    let partial_budget = answer_budget.min(budget / 3).max(16);
    let count = |s: &str| tok.encode(s, false).map(|t| t.len()).unwrap_or(usize::MAX / 4);
    let tokens = count(text);
    let mut session = Session::new(model, tok).with_context_limit(Some(context));
    let mut run = |body: &str, partial: bool, stream: &mut dyn FnMut(&str)| -> Result<String> {
        // The instruction after the text: small models follow the last thing they read.
        let messages = [Message::new("user", format!("Text:\n{body}\n\n{}", instruction(opts, partial)))];
        let prompt_ids = tok.encode(&template.render(&messages, true)?, false)?;
        let out = session.generate(
            &GenerateRequest { prompt_ids, max_tokens: if partial { partial_budget } else { answer_budget }, sampling: opts.sampling.clone(), stop: Vec::new() },
            &mut |t| {
                stream(t);
                true
            },
        )?;
        Ok(out.text.trim().to_string())
    };
    let mut current = text.to_string();
    let mut rounds = 0;
    let mut first_parts: Vec<Chunk> = Vec::new();
    loop {
        rounds += 1;
        let parts = split(&current, budget, &count);
        if rounds == 1 {
            first_parts = parts.clone();
        }
        if parts.len() <= 1 {
            let summary = run(&current, false, on_text)?;
            return Ok(SummaryReport { summary, tokens, parts: first_parts.iter().map(|c| (c.start, c.end)).collect(), rounds });
        }
        if rounds > 8 {
            return Err(Error::invalid("--words", "the partial summaries do not get shorter; ask for fewer --words"));
        }
        let n = parts.len();
        let mut partials = Vec::with_capacity(n);
        for (i, p) in parts.iter().enumerate() {
            partials.push(run(&p.text, true, &mut |_| {})?);
            on_part(i + 1, n);
        }
        current = partials.join("\n\n");
    }
}

/// Summarizes `text` with an encoder-decoder model (BART-CNN, T5 with its `summarize: `
/// prefix), map-reduce style like [`summarize`]: parts that fit the encoder are summarized in
/// one batch, then their summaries together, until one remains. `opts.words` bounds the
/// output (about 1.5 tokens a word); the style and sampling fields are LLM-only and ignored.
pub fn summarize_seq2seq(model: &Seq2SeqModel, text: &str, opts: &SummarizeOptions, overrides: &Seq2SeqOverrides, on_part: &mut dyn FnMut(usize, usize)) -> Result<SummaryReport> {
    if text.trim().is_empty() {
        return Err(Error::invalid("input", "the text to summarize is empty"));
    }
    if opts.words == 0 {
        return Err(Error::invalid("--words", "must be at least 1"));
    }
    let prefix = if model.info().architecture == "t5" { model.task_prefix("summarization").unwrap_or("summarize: ").to_string() } else { String::new() };
    let count = |s: &str| model.count_tokens(&format!("{prefix}{s}")).unwrap_or(usize::MAX / 4);
    let budget = model.max_source_tokens().min(1024).saturating_sub(8).max(16);
    let mut o = overrides.clone();
    if o.max_new_tokens.is_none() && o.max_length.is_none() {
        o.max_new_tokens = Some(opts.words * 3 / 2 + 8);
    }
    let tokens = count(text);
    let mut current = text.to_string();
    let mut first_parts: Vec<Chunk> = Vec::new();
    for rounds in 1..=8 {
        let parts = split(&current, budget, &count);
        if rounds == 1 {
            first_parts = parts.clone();
        }
        let rows: Vec<String> = parts.iter().map(|p| format!("{prefix}{}", p.text.trim())).collect();
        let refs: Vec<&str> = rows.iter().map(String::as_str).collect();
        let summaries = model.generate_texts(&refs, &o)?;
        on_part(parts.len(), parts.len());
        if parts.len() <= 1 {
            let summary = summaries.into_iter().next().unwrap_or_default().trim().to_string();
            return Ok(SummaryReport { summary, tokens, parts: first_parts.iter().map(|c| (c.start, c.end)).collect(), rounds });
        }
        current = summaries.join("\n\n");
    }
    Err(Error::invalid("--words", "the partial summaries do not get shorter; ask for fewer --words"))
}
