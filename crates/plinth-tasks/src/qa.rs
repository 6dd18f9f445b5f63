//! Extractive question answering on a checkpoint whose head is `*ForQuestionAnswering`,
//! matching transformers 4.x' `QuestionAnsweringPipeline` with a fast tokenizer: the question
//! first and the context split into overlapping windows (`max_seq_len`, `doc_stride`), every
//! non-context token but CLS masked out, start/end softmax per window, the best `2 top_k + 10`
//! spans from the outer product (`decode_spans`), answers snapped to whole words
//! (`align_to_words`), answers with the same text merged (scores added) within and across
//! windows, and the best `top_k` overall. Checked against transformers 4.57.6 in
//! `tests/pipelines.rs`.
//!
//! Offsets are in characters, as Python indexes strings.

use plinth_core::{Error, Result};
use plinth_models::EncoderHead;

use crate::classify::softmax;
use crate::model::EncoderModel;
use crate::ner::{configured_special_token, CharText};
use crate::text::Encoded;

/// How to answer; `Default` gives the pipeline's defaults.
#[derive(Debug, Clone, Copy)]
pub struct QaOptions {
    /// Answers to return (fewer when there are fewer candidate spans).
    pub top_k: usize,
    /// Window length in tokens, special tokens included; `None`: min(model limit, 384).
    pub max_seq_len: Option<usize>,
    /// Tokens of overlap between windows; `None`: min(max_seq_len / 2, 128).
    pub doc_stride: Option<usize>,
    /// Longest answer in tokens.
    pub max_answer_len: usize,
    /// Kept for parity with the pipeline's parameter; like the pipeline with a fast tokenizer,
    /// the question is never cut (a question too long for the window is an error instead).
    pub max_question_len: usize,
    /// Also offer the empty answer ("no answer in the context", start = end = 0), scored by
    /// the lowest CLS start × end probability over the windows.
    pub handle_impossible_answer: bool,
    /// Widen answers to whole words (the pipeline's default); otherwise token offsets.
    pub align_to_words: bool,
    /// Windows per forward pass.
    pub batch_size: usize,
}

impl Default for QaOptions {
    fn default() -> Self {
        QaOptions {
            top_k: 1,
            max_seq_len: None,
            doc_stride: None,
            max_answer_len: 15,
            max_question_len: 64,
            handle_impossible_answer: false,
            align_to_words: true,
            batch_size: 32,
        }
    }
}

/// One answer: a span of the context (character offsets, end exclusive) and its score.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Answer {
    pub score: f32,
    pub start: usize,
    pub end: usize,
    pub answer: String,
}

/// The pipeline's `decode_spans` on one window: `start` and `end` are probabilities, `allowed`
/// marks the tokens an answer may start or end on (context and CLS). Returns up to `top_k`
/// `(start token, end token, score)`, best first, after dropping spans on disallowed tokens.
///
/// Candidates are `start[s] * end[e]` for `s <= e < s + max_answer_len`, zero elsewhere, over
/// the whole `n × n` matrix as numpy lays it out. Ties are broken by flat index (numpy's
/// `argmax` for `top_k = 1`; for larger `top_k` numpy's `argpartition` order among equal
/// scores is unspecified, so only tied scores could differ).
pub fn decode_spans(start: &[f32], end: &[f32], top_k: usize, max_answer_len: usize, allowed: &[bool]) -> Vec<(usize, usize, f32)> {
    let n = start.len().min(end.len()).min(allowed.len());
    if n == 0 || top_k == 0 {
        return Vec::new();
    }
    let mut picked: Vec<(usize, usize, f32)> = Vec::new();
    for (s, &p_start) in start[..n].iter().enumerate() {
        let last = n.min(s.saturating_add(max_answer_len));
        for (e, &p_end) in end[..last].iter().enumerate().skip(s) {
            let score = p_start * p_end;
            if score > 0.0 {
                picked.push((s, e, score));
            }
        }
    }
    picked.sort_by(|a, b| b.2.total_cmp(&a.2).then((a.0 * n + a.1).cmp(&(b.0 * n + b.1))));
    picked.truncate(top_k);
    if picked.len() < top_k {
        // Fewer positive candidates than asked for: numpy then also takes zero-score cells,
        // in flat order here (`argmax` of an all-zero matrix is cell 0).
        let positive: std::collections::HashSet<(usize, usize)> = picked.iter().map(|p| (p.0, p.1)).collect();
        let need = top_k - picked.len();
        let zeros = (0..n * n).map(|i| (i / n, i % n)).filter(|c| !positive.contains(c)).take(need);
        picked.extend(zeros.map(|(s, e)| (s, e, 0.0)).collect::<Vec<_>>());
    }
    // `np.isin(starts, undesired_tokens.nonzero())` tests against the *tuple* (row indices,
    // column indices) of a `[1, n]` array, so index 0 passes whenever any token is allowed.
    let any = allowed.iter().any(|&a| a);
    let ok = |i: usize| allowed[i] || (i == 0 && any);
    picked.into_iter().filter(|&(s, e, _)| ok(s) && ok(e)).collect()
}

/// The pipeline's `select_starts_ends` on one window's raw logits: masks disallowed tokens with
/// -10000, softmaxes, takes the CLS (token 0) start × end probability for the empty answer,
/// zeroes CLS and decodes spans. Returns the spans and the empty-answer score.
pub fn select_spans(start_logits: &[f32], end_logits: &[f32], allowed: &[bool], top_k: usize, max_answer_len: usize) -> (Vec<(usize, usize, f32)>, f32) {
    let mask = |l: &[f32]| -> Vec<f32> { l.iter().zip(allowed).map(|(&x, &a)| if a { x } else { -10000.0 }).collect() };
    let mut start = softmax(&mask(start_logits));
    let mut end = softmax(&mask(end_logits));
    let null = match (start.first_mut(), end.first_mut()) {
        (Some(s), Some(e)) => {
            let null = *s * *e;
            *s = 0.0;
            *e = 0.0;
            null
        }
        _ => f32::INFINITY,
    };
    (decode_spans(&start, &end, top_k, max_answer_len, allowed), null)
}

/// Character span of tokens `s..=e` of the context: whole words (`word_to_chars` on the
/// context sequence) when aligning and both tokens belong to words, else the tokens' own
/// offsets (what the pipeline falls back to when `token_to_word` gives `None`).
fn char_span(enc: &Encoded, s: usize, e: usize, align_to_words: bool) -> (usize, usize) {
    if align_to_words {
        let words = enc.token_to_word(s).zip(enc.token_to_word(e));
        let chars = words.and_then(|((_, ws), (_, we))| enc.word_to_chars(ws, 1).zip(enc.word_to_chars(we, 1)));
        if let Some((a, b)) = chars {
            return (a.0, b.1);
        }
    }
    let offsets = enc.get_offsets();
    (offsets.get(s).map_or(0, |o| o.0), offsets.get(e).map_or(0, |o| o.1))
}

impl EncoderModel {
    /// Answers `question` from `context`: the best `top_k` spans, best first.
    pub fn answer(&self, question: &str, context: &str, opts: &QaOptions) -> Result<Vec<Answer>> {
        self.require_head(EncoderHead::QuestionAnswering, "question answering")?;
        if question.is_empty() {
            return Err(Error::invalid("question", "it is empty"));
        }
        if context.is_empty() {
            return Err(Error::invalid("context", "it is empty"));
        }
        if opts.top_k == 0 {
            return Err(Error::invalid("top_k", "0 (ask for at least one answer)"));
        }
        if opts.max_answer_len == 0 {
            return Err(Error::invalid("max_answer_len", "0 (an answer is at least one token)"));
        }
        let windows = self.qa_windows(question, context, opts)?;

        let mut logits = vec![Vec::new(); windows.len()];
        self.run(&windows, opts.batch_size, |i, _, l| logits[i] = l.map(<[f32]>::to_vec).unwrap_or_default())?;

        let cls = self.cls_id();
        let text = CharText::new(context);
        let mut answers: Vec<(f64, usize, usize, String)> = Vec::new();
        let mut null_score = 1_000_000f32;
        for (enc, l) in windows.iter().zip(&logits) {
            let n = enc.len();
            if l.len() != 2 * n {
                return Err(Error::invalid("model output", format!("{} logits for {n} tokens (want start and end per token)", l.len())));
            }
            let start: Vec<f32> = l.iter().step_by(2).copied().collect();
            let end: Vec<f32> = l.iter().skip(1).step_by(2).copied().collect();
            // p_mask: only context tokens (sequence 1) may be answers, plus CLS, which some
            // models use to say "no answer".
            let allowed: Vec<bool> = enc
                .get_sequence_ids()
                .iter()
                .zip(enc.get_ids())
                .map(|(&seq, &id)| seq == Some(1) || Some(id) == cls)
                .collect();
            // Several spans often widen to the same words and merge; transformers 4.57 therefore
            // decodes `2 top_k + 10` spans per window when aligning, so that `top_k` remain.
            let pre_top_k = if opts.align_to_words { opts.top_k.saturating_mul(2).saturating_add(10) } else { opts.top_k };
            let (spans, null) = select_spans(&start, &end, &allowed, pre_top_k, opts.max_answer_len);
            if opts.handle_impossible_answer {
                null_score = null_score.min(null);
            }
            for (s, e, score) in spans {
                let (a, b) = char_span(enc, s, e, opts.align_to_words);
                let target = text.slice(a, b);
                // The pipeline merges answers with the same text (case-insensitively), adding
                // their scores, so that overlapping windows do not repeat an answer.
                let lower = target.to_lowercase();
                match answers.iter_mut().find(|x| x.3.to_lowercase() == lower) {
                    Some(x) => x.0 += score as f64,
                    None => answers.push((score as f64, a, b, target.to_string())),
                }
            }
        }
        if opts.handle_impossible_answer {
            answers.push((null_score as f64, 0, 0, String::new()));
        }
        // Stable: equal scores keep window order, as Python's `sorted`.
        answers.sort_by(|x, y| y.0.total_cmp(&x.0));
        answers.truncate(opts.top_k);
        Ok(answers.into_iter().map(|(score, start, end, answer)| Answer { score: score as f32, start, end, answer }).collect())
    }

    /// The CLS token's id: the configured `cls_token`, else the first token the post-processor
    /// adds (`[CLS]`, `<s>`).
    fn cls_id(&self) -> Option<u32> {
        let tok = self.tokenizer.inner();
        if let Some(id) = configured_special_token(&self.dir, "cls_token").and_then(|t| tok.token_to_id(&t)) {
            return Some(id);
        }
        let enc = tok.encode_fast("", true).ok()?;
        (enc.get_special_tokens_mask().first() == Some(&1)).then(|| enc.get_ids()[0])
    }

    /// Encodes (question, context) into the pipeline's windows, refusing settings that the
    /// tokenizer cannot honour (it would fail or abort on them).
    fn qa_windows(&self, question: &str, context: &str, opts: &QaOptions) -> Result<Vec<Encoded>> {
        let limit = self.tokenizer.max_len();
        let max_seq_len = opts.max_seq_len.unwrap_or(limit.min(384));
        let doc_stride = opts.doc_stride.unwrap_or((max_seq_len / 2).min(128));
        if max_seq_len > limit {
            return Err(Error::invalid("max_seq_len", format!("{max_seq_len} is more than the model's limit of {limit} tokens")));
        }
        if doc_stride > max_seq_len {
            return Err(Error::invalid("doc_stride", format!("{doc_stride} is larger than max_seq_len ({max_seq_len})")));
        }
        let tok = self.tokenizer.inner();
        let err = |e: tokenizers::Error| Error::Tokenizer(e.to_string());
        // Lengths without truncation: the question's tokens, the context's, the added ones.
        let full = tok.encode_fast((question, context), true).map_err(err)?;
        let seq = full.get_sequence_ids();
        let n_question = seq.iter().filter(|s| **s == Some(0)).count();
        let n_context = seq.iter().filter(|s| **s == Some(1)).count();
        let added_pair = full.len() - n_question - n_context;
        let added_single = tok.encode_fast("", true).map_err(err)?.len();
        if max_seq_len <= (added_pair + n_question).max(added_single) {
            return Err(Error::invalid(
                "question",
                format!(
                    "{n_question} tokens leave no room for the context in a window of {max_seq_len} tokens ({added_pair} special tokens)"
                ),
            ));
        }
        // The tokenizer refuses a stride that does not fit a single-sequence window, and aborts
        // on one that does not fit the room the question leaves for the context.
        let room = max_seq_len - added_pair - n_question;
        if doc_stride > max_seq_len.saturating_sub(added_single) || (full.len() > max_seq_len && doc_stride >= room) {
            return Err(Error::invalid(
                "doc_stride",
                format!("{doc_stride} is too large: the question leaves {room} context tokens per window of {max_seq_len}"),
            ));
        }
        let windowed = self.tokenizer.windowed(max_seq_len, doc_stride)?;
        let mut first = windowed.encode_char_offsets((question, context), true).map_err(err)?;
        let rest = std::mem::take(first.get_overflowing_mut());
        let mut windows = vec![first];
        windows.extend(rest);
        Ok(windows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_spans_on_a_hand_made_matrix() {
        // Token 0 is CLS (allowed, probability zeroed), 1 is a question token (disallowed).
        let start = [0.0, 0.0, 0.5, 0.3, 0.2];
        let end = [0.0, 0.0, 0.1, 0.6, 0.3];
        let allowed = [true, false, true, true, true];
        let spans = decode_spans(&start, &end, 3, 15, &allowed);
        let want = [(2, 3, 0.30f32), (2, 4, 0.15), (3, 3, 0.18)];
        let mut sorted = want;
        sorted.sort_by(|a, b| b.2.total_cmp(&a.2));
        assert_eq!(spans.len(), 3);
        for (got, want) in spans.iter().zip(sorted) {
            assert_eq!((got.0, got.1), (want.0, want.1));
            assert!((got.2 - want.2).abs() < 1e-6);
        }
        // max_answer_len 1: only single-token spans.
        let spans = decode_spans(&start, &end, 2, 1, &allowed);
        assert_eq!(spans.iter().map(|s| (s.0, s.1)).collect::<Vec<_>>(), vec![(3, 3), (4, 4)]);
        // end < start is never a candidate.
        assert!(decode_spans(&[0.0, 1.0], &[1.0, 0.0], 1, 15, &[true, true]).iter().all(|s| s.2 == 0.0));
    }

    #[test]
    fn decode_spans_filters_after_selecting() {
        // The best span touches a disallowed token: it is selected, then dropped, so top_k = 1
        // yields nothing (as the pipeline does).
        let start = [0.0, 0.9, 0.1];
        let end = [0.0, 0.9, 0.1];
        let spans = decode_spans(&start, &end, 1, 15, &[true, false, true]);
        assert!(spans.is_empty());
        // All-zero matrix: cell 0 (CLS, CLS) with score 0, like numpy's argmax.
        let spans = decode_spans(&[0.0, 0.0], &[0.0, 0.0], 1, 15, &[true, false]);
        assert_eq!(spans, vec![(0, 0, 0.0)]);
        // Index 0 passes the filter whenever any token is allowed (numpy isin on the nonzero tuple).
        let spans = decode_spans(&[0.5, 0.5], &[0.5, 0.5], 1, 15, &[false, true]);
        assert_eq!(spans.len(), 1);
        assert!(decode_spans(&[0.5], &[0.5], 1, 15, &[false]).is_empty());
        assert!(decode_spans(&[], &[], 1, 15, &[]).is_empty());
    }

    #[test]
    fn select_spans_masks_and_zeroes_cls() {
        let start = [5.0, 9.0, 1.0, 2.0];
        let end = [5.0, 9.0, 2.0, 1.0];
        let allowed = [true, false, true, true];
        let (spans, null) = select_spans(&start, &end, &allowed, 1, 15);
        // Softmax over {5, 1, 2} (token 1 masked): CLS gets e^5 / (e^5 + e + e^2).
        let p_cls = 5f32.exp() / (5f32.exp() + 1f32.exp() + 2f32.exp());
        assert!((null - p_cls * p_cls).abs() < 1e-6);
        assert_eq!((spans[0].0, spans[0].1), (2, 2));
        let p2 = 1f32.exp() / (5f32.exp() + 1f32.exp() + 2f32.exp());
        let p3 = 2f32.exp() / (5f32.exp() + 1f32.exp() + 2f32.exp());
        // (2, 2): p(start 1) * p(end 2) vs (2, 3): p(1) * p(1) vs (3, 3): p(2) * p(1).
        assert!((spans[0].2 - p2 * p3).abs() < 1e-6 || (spans[0].2 - p3 * p2).abs() < 1e-6);
    }
}
