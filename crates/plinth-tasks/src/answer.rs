//! Generative question answering with an instruct LLM: the prompt (numbered passages, the
//! question, an instruction to answer briefly from them and cite like `[1]`), rendered
//! through the model's chat template within its context budget, greedy decoding, and the
//! citations the model wrote. [`answer`] takes its passages from a retrieval index
//! ([`crate::rag`]); [`answer_context`] answers over one text, whole when it fits the prompt,
//! else from its best passages.

use plinth_core::{Error, Result};
use plinth_engine::{GenerateRequest, SamplingParams, Session};
use plinth_models::Decoder;
use plinth_tokenize::{ChatTemplate, Message, Tokenizer};

use crate::model::EncoderModel;
use crate::rag::{Passage, PassageIndex};

/// How to answer.
#[derive(Debug, Clone)]
pub struct AnswerOptions {
    /// Passages to retrieve (those that do not fit the context are dropped, lowest first).
    pub top_k: usize,
    /// Longest answer, in tokens.
    pub max_tokens: usize,
    /// Use at most this many tokens of context (default: the model's).
    pub context: Option<usize>,
    pub sampling: SamplingParams,
}

impl Default for AnswerOptions {
    fn default() -> Self {
        // Greedy: answers (and the citations tests check) are reproducible.
        AnswerOptions { top_k: 4, max_tokens: 128, context: None, sampling: SamplingParams::greedy() }
    }
}

/// A passage given to the model, as `[id]` in the prompt.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Citation {
    /// 1-based number in the prompt (rank order).
    pub id: usize,
    pub file: String,
    pub start_line: usize,
    pub end_line: usize,
    /// Retrieval cosine (1.0 for a whole context given as is).
    pub score: f32,
}

/// An answer and where it came from.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RagAnswer {
    pub answer: String,
    /// The passages in the prompt, best first.
    pub sources: Vec<Citation>,
    /// The `[n]` markers the model wrote that name a source, in order of first use.
    pub cited: Vec<usize>,
    /// Retrieved passages left out because they did not fit the context.
    pub dropped: usize,
    /// Whether passages were retrieved (false: a whole context was given as is).
    pub retrieved: bool,
    pub prompt_tokens: usize,
    /// The context the prompt and answer had to fit.
    pub context_tokens: usize,
}

/// In the system turn, asking for the passage's own words: over the 20 corpus questions
/// SmolLM2-135M-Instruct's answer held the reference in 12 this way, 10 with "a short
/// answer", 6 with the instruction after the passages in the user turn.
const INSTRUCTION: &str = "You answer questions using only the numbered passages you are given. Reply with only the words from the passages that answer the question (a name, a number or a date), followed by the number of the passage in brackets, like: Paris [2]";

fn template(tok: &Tokenizer) -> Result<ChatTemplate> {
    if tok.chat_template().is_none() {
        return Err(Error::invalid(
            "model",
            "answering questions needs an instruct (chat) model, and this one has no chat template (a base model?); use an instruct model such as SmolLM2-135M-Instruct",
        ));
    }
    tok.chat()
}

fn prompt(passages: &[&str], question: &str) -> [Message; 2] {
    let mut s = String::new();
    for (i, p) in passages.iter().enumerate() {
        s += &format!("[{}] {}\n\n", i + 1, p.trim());
    }
    [Message::new("system", INSTRUCTION), Message::new("user", format!("{s}Question: {question}"))]
}

/// `[n]`, `[n, m]` and `[n][m]` markers with `1 <= n <= sources`, deduplicated in order of
/// first appearance.
pub fn parse_citations(text: &str, sources: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('[') {
        rest = &rest[open + 1..];
        let Some(close) = rest.find(']') else { break };
        let inner = &rest[..close];
        let nums: Option<Vec<usize>> = inner.split([',', ' ']).filter(|s| !s.is_empty()).map(|s| s.parse().ok()).collect();
        if let Some(nums) = nums {
            for n in nums {
                if (1..=sources).contains(&n) && !out.contains(&n) {
                    out.push(n);
                }
            }
        }
    }
    out
}

struct Budget {
    context: usize,
}

fn budget(model: &dyn Decoder, opts: &AnswerOptions) -> Result<Budget> {
    if opts.max_tokens == 0 {
        return Err(Error::invalid("--max-tokens", "must be at least 1"));
    }
    let context = opts.context.unwrap_or(model.info().context_length).min(model.info().context_length);
    Ok(Budget { context })
}

/// Answers from `candidates` (passage, score), best first: as many as fit the context with
/// the answer's `max_tokens`, the rest dropped from the lowest rank.
fn answer_from(
    model: &dyn Decoder,
    tok: &Tokenizer,
    question: &str,
    candidates: &[(&Passage, f32)],
    retrieved: bool,
    opts: &AnswerOptions,
    on_text: &mut dyn FnMut(&str),
) -> Result<RagAnswer> {
    let template = template(tok)?;
    let Budget { context } = budget(model, opts)?;
    let encode = |texts: &[&str]| -> Result<Vec<u32>> { tok.encode(&template.render(&prompt(texts, question), true)?, false) };
    // Grow the prompt a passage at a time; the first that does not fit stops it (a lower-ranked
    // shorter one would fit but would reorder the evidence the model reads first).
    let mut kept = 0;
    let mut prompt_ids = encode(&[])?;
    if prompt_ids.len() + opts.max_tokens > context {
        return Err(Error::ContextOverflow { prompt_tokens: prompt_ids.len() + opts.max_tokens, context });
    }
    for n in 1..=candidates.len() {
        let texts: Vec<&str> = candidates[..n].iter().map(|(p, _)| p.text.as_str()).collect();
        let ids = encode(&texts)?;
        if ids.len() + opts.max_tokens > context {
            break;
        }
        prompt_ids = ids;
        kept = n;
    }
    if kept == 0 && !candidates.is_empty() {
        return Err(Error::invalid(
            "--context",
            format!("{context} tokens leave no room for even one passage once the question and a {}-token answer are counted", opts.max_tokens),
        ));
    }
    let sources: Vec<Citation> = candidates[..kept]
        .iter()
        .enumerate()
        .map(|(i, (p, s))| Citation { id: i + 1, file: p.file.clone(), start_line: p.start_line, end_line: p.end_line, score: *s })
        .collect();
    let prompt_tokens = prompt_ids.len();
    let mut session = Session::new(model, tok).with_context_limit(Some(context));
    let out = session.generate(
        &GenerateRequest { prompt_ids, max_tokens: opts.max_tokens, sampling: opts.sampling.clone(), stop: Vec::new() },
        &mut |t| {
            on_text(t);
            true
        },
    )?;
    let answer = out.text.trim().to_string();
    let cited = parse_citations(&answer, sources.len());
    Ok(RagAnswer { answer, sources, cited, dropped: candidates.len() - kept, retrieved, prompt_tokens, context_tokens: context })
}

/// Answers `question` from the `opts.top_k` passages of `index` closest to it, streaming the
/// answer through `on_text`.
pub fn answer(
    model: &dyn Decoder,
    tok: &Tokenizer,
    embedder: &EncoderModel,
    index: &PassageIndex,
    question: &str,
    opts: &AnswerOptions,
    on_text: &mut dyn FnMut(&str),
) -> Result<RagAnswer> {
    template(tok)?;
    if opts.top_k == 0 {
        return Err(Error::invalid("--top-k", "must be at least 1"));
    }
    let hits = index.retrieve(embedder, question, opts.top_k)?;
    let candidates: Vec<(&Passage, f32)> = hits.iter().map(|h| (&index.passages[h.index], h.score)).collect();
    answer_from(model, tok, question, &candidates, true, opts, on_text)
}

fn whole(label: &str, text: &str) -> Passage {
    let lines = text.trim_end().split('\n').count().max(1);
    Passage { file: label.to_string(), start_line: 1, end_line: lines, text: text.trim_end().to_string(), title: None }
}

/// Whether `text` fits the prompt whole, with the question and a `max_tokens` answer (so
/// that [`answer_context`] needs no embedder).
pub fn context_fits(model: &dyn Decoder, tok: &Tokenizer, question: &str, text: &str, opts: &AnswerOptions) -> Result<bool> {
    let template = template(tok)?;
    let Budget { context } = budget(model, opts)?;
    let ids = tok.encode(&template.render(&prompt(&[text], question), true)?, false)?;
    Ok(ids.len() + opts.max_tokens <= context)
}

/// Answers `question` over one text (called `label` in the sources): given whole when it fits
/// the context, else cut into passages and answered from the `opts.top_k` best, which needs
/// `embedder` (`RagAnswer::retrieved` says which happened).
#[allow(clippy::too_many_arguments)]
pub fn answer_context(
    model: &dyn Decoder,
    tok: &Tokenizer,
    embedder: Option<&EncoderModel>,
    question: &str,
    label: &str,
    text: &str,
    opts: &AnswerOptions,
    on_text: &mut dyn FnMut(&str),
) -> Result<RagAnswer> {
    if text.trim().is_empty() {
        return Err(Error::invalid(label, "the context is empty"));
    }
    if question.trim().is_empty() {
        return Err(Error::invalid("question", "is empty"));
    }
    if context_fits(model, tok, question, text, opts)? {
        let p = whole(label, text);
        return answer_from(model, tok, question, &[(&p, 1.0)], false, opts, on_text);
    }
    let embedder = embedder.ok_or_else(|| Error::invalid(label, "the context does not fit the model's context window; an embedder is needed to pick its passages"))?;
    let index = PassageIndex::from_text(embedder, label, text)?;
    answer(model, tok, embedder, &index, question, opts, on_text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn citations_are_valid_deduplicated_and_in_order() {
        assert_eq!(parse_citations("It opened in 1873 [2]. See also [1][2] and [3, 1].", 3), vec![2, 1, 3]);
        assert_eq!(parse_citations("[0] [4] [x] [12] [", 3), Vec::<usize>::new());
        assert_eq!(parse_citations("no markers", 3), Vec::<usize>::new());
        assert_eq!(parse_citations("[1,2]", 1), vec![1]);
    }
}
