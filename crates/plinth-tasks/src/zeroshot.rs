//! Zero-shot classification: labels chosen at run time, with no classification head trained
//! for them. Two ways, with one options type and one result type:
//!
//! - **An instruct LLM** ([`zero_shot_llm`]): the chat template renders a request that lists
//!   the labels and the text and opens the assistant's turn; each label is scored by the
//!   log-likelihood of its tokens as the assistant's answer (no free text is generated or
//!   parsed). The prompt is run once and each label is scored from a copy of its KV cache.
//!   Scores are a softmax over the labels' log-likelihoods, calibrated by the model's prior
//!   for each label (its log-likelihood for a content-free text); the raw log-likelihoods are
//!   kept.
//!   Multi-label classification is refused for LLMs (see [`zero_shot_llm`]).
//! - **An NLI encoder** ([`EncoderModel::zero_shot`]): a `*ForSequenceClassification`
//!   checkpoint trained on natural-language inference, used exactly as transformers'
//!   `ZeroShotClassificationPipeline` uses it: each label becomes the hypothesis
//!   `"This example is {label}."` for the text as premise, and the entailment logits become
//!   the scores.

use plinth_core::{Error, Result};
use plinth_models::{Decoder, EncoderHead, KvCache};
use plinth_tokenize::{ChatTemplate, Message, Tokenizer};
use tokenizers::{TruncationDirection, TruncationParams, TruncationStrategy};

use crate::classify::softmax;
use crate::model::EncoderModel;
use crate::text::{Encoded, Overflow};

/// Most labels one call takes.
pub const MAX_LABELS: usize = 64;
/// Longest label, in characters.
pub const MAX_LABEL_CHARS: usize = 100;
/// transformers' default hypothesis for NLI models.
pub const DEFAULT_HYPOTHESIS_TEMPLATE: &str = "This example is {}.";
/// Longest text, in bytes, before tokenizing (the model's limit applies after).
const MAX_TEXT_BYTES: usize = 1 << 20;
/// Longest hypothesis template, in characters.
const MAX_TEMPLATE_CHARS: usize = 1000;
/// Prompt tokens per forward pass, as the engine prefills: attention memory stays bounded.
const PREFILL_CHUNK: usize = 512;

/// How to classify.
#[derive(Debug, Clone)]
pub struct ZeroShotOptions {
    /// Score each label on its own (several may apply) instead of sharing one distribution.
    /// NLI models only.
    pub multi_label: bool,
    /// NLI models only: the hypothesis, with `{}` where the label goes (default
    /// [`DEFAULT_HYPOTHESIS_TEMPLATE`]). An LLM refuses it.
    pub hypothesis_template: Option<String>,
    /// NLI models only: cut an over-long text (never the hypothesis), or refuse it.
    pub overflow: Overflow,
    /// NLI models only: (text, hypothesis) pairs per forward pass.
    pub batch_size: usize,
    /// LLMs only: divide out the model's prior for each label, measured on a content-free
    /// text (see [`zero_shot_llm`]). On by default.
    pub calibrate: bool,
}

impl Default for ZeroShotOptions {
    fn default() -> Self {
        ZeroShotOptions { multi_label: false, hypothesis_template: None, overflow: Overflow::Truncate, batch_size: 32, calibrate: true }
    }
}

/// One label's result.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ZeroShotScore {
    pub label: String,
    /// Probability: shared over the labels (single-label) or of this label alone (multi-label).
    pub score: f32,
    /// LLMs only: log P(label as the assistant's whole answer), summed over its spellings
    /// (before calibration).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_likelihood: Option<f32>,
}

/// Splits a comma-separated label list (`"sports, cooking,politics"`) and checks it with
/// [`check_labels`].
pub fn parse_labels(list: &str) -> Result<Vec<String>> {
    let labels: Vec<String> = list.split(',').map(|l| l.trim().to_string()).collect();
    check_labels(&labels)?;
    Ok(labels)
}

/// Refuses an empty list, more than [`MAX_LABELS`] labels, an empty (or blank) label, one
/// longer than [`MAX_LABEL_CHARS`] characters, and duplicates.
pub fn check_labels<S: AsRef<str>>(labels: &[S]) -> Result<()> {
    if labels.is_empty() {
        return Err(Error::invalid("labels", "none given (pass at least one, e.g. --labels positive,negative)"));
    }
    if labels.len() > MAX_LABELS {
        return Err(Error::invalid("labels", format!("{} given, at most {MAX_LABELS} are allowed", labels.len())));
    }
    let mut seen = std::collections::HashSet::new();
    for (i, l) in labels.iter().enumerate() {
        let l = l.as_ref();
        if l.trim().is_empty() {
            return Err(Error::invalid("labels", format!("label {} is empty", i + 1)));
        }
        let n = l.chars().count();
        if n > MAX_LABEL_CHARS {
            return Err(Error::invalid("labels", format!("label {} is {n} characters long, at most {MAX_LABEL_CHARS} are allowed", i + 1)));
        }
        if !seen.insert(l) {
            return Err(Error::invalid("labels", format!("'{l}' is given twice")));
        }
    }
    Ok(())
}

fn check_text(text: &str) -> Result<()> {
    if text.trim().is_empty() {
        return Err(Error::invalid("input", "the text to classify is empty"));
    }
    if text.len() > MAX_TEXT_BYTES {
        return Err(Error::invalid("input", format!("{} bytes of text, at most {MAX_TEXT_BYTES} are allowed", text.len())));
    }
    Ok(())
}

/// Best first; equal scores keep label order.
fn ranked(mut scores: Vec<ZeroShotScore>) -> Vec<ZeroShotScore> {
    scores.sort_by(|a, b| b.score.total_cmp(&a.score));
    scores
}

// ---------------------------------------------------------------------------------------
// Instruct LLMs.
// ---------------------------------------------------------------------------------------

// The request. Measured with SmolLM2-135M-Instruct on hand-made examples (right label first,
// raw log-likelihoods): this wording 8/10, eight other wordings 4-8/10; on 19 examples it
// gets 10/19 raw and 14/19 with both spellings and calibration.
const SYSTEM: &str = "You are a helpful assistant that classifies texts.";

fn request(text: &str, labels: &[&str]) -> Vec<Message> {
    vec![
        Message::new("system", SYSTEM),
        Message::new(
            "user",
            format!("Classify the text into one of these categories: {}.\n\nText: {text}\n\nAnswer with the category only.", labels.join(", ")),
        ),
    ]
}

/// The "content-free" text whose label log-likelihoods are the model's prior for the labels.
const CONTENT_FREE: &str = "N/A";

/// `ln softmax(row)[id]`, in f64: the sum runs over the whole vocabulary.
fn log_prob(row: &[f32], id: u32) -> Result<f64> {
    let x = *row.get(id as usize).ok_or_else(|| Error::invalid("token id", format!("{id} is outside the model's {} logits", row.len())))?;
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
    Ok(x as f64 - max - sum.ln())
}

/// `ln(e^a + e^b)`.
fn log_add(a: f64, b: f64) -> f64 {
    let m = a.max(b);
    m + ((a - m).exp() + (b - m).exp()).ln()
}

fn rows(t: &candle_core::Tensor) -> Result<Vec<Vec<f32>>> {
    Ok(t.to_dtype(candle_core::DType::F32)?.to_vec2::<f32>()?)
}

/// Runs `ids` into `cache` in chunks and returns the logits after the last one.
fn prefill(model: &dyn Decoder, ids: &[u32], cache: &mut KvCache) -> Result<Vec<f32>> {
    let mut last = Vec::new();
    for chunk in ids.chunks(PREFILL_CHUNK) {
        last = rows(&model.forward(chunk, cache, false)?)?.pop().unwrap_or_default();
    }
    Ok(last)
}

/// The token ids of `answer` as the assistant's reply after `prompt` (the text the template
/// rendered up to the opened assistant turn): the tokens that `prompt + answer` adds, so that
/// a merge across the boundary is tokenized as the model saw it in training.
fn answer_ids(tok: &Tokenizer, prompt: &str, prompt_ids: &[u32], answer: &str) -> Result<Vec<u32>> {
    let full = tok.encode(&format!("{prompt}{answer}"), false)?;
    let ids = match full.strip_prefix(prompt_ids) {
        Some(rest) => rest.to_vec(),
        None => tok.encode(answer, false)?,
    };
    if ids.is_empty() {
        return Err(Error::invalid("labels", format!("'{answer}' has no tokens")));
    }
    Ok(ids)
}

/// The token that ends the assistant's turn (`<|im_end|>` for ChatML): the first token the
/// template writes after a complete answer, else the tokenizer's first end-of-sequence id.
fn end_of_turn(tok: &Tokenizer, template: &ChatTemplate, messages: &[Message], prompt_ids: &[u32], answer: &str, answer_ids: &[u32]) -> Result<Option<u32>> {
    let mut m = messages.to_vec();
    m.push(Message::new("assistant", answer));
    let full = tok.encode(&template.render(&m, false)?, false)?;
    let n = prompt_ids.len() + answer_ids.len();
    let from_template = full
        .get(n)
        .copied()
        .filter(|_| full.starts_with(prompt_ids) && full[prompt_ids.len()..n] == *answer_ids)
        .filter(|id| tok.special_tokens().iter().any(|(_, s)| s == id));
    Ok(from_template.or_else(|| tok.eos_ids().first().copied()))
}

/// The chat template, or the error that says why this model cannot do the task.
fn template(tok: &Tokenizer) -> Result<ChatTemplate> {
    tok.chat().map_err(|e| {
        Error::invalid("model", format!("zero-shot classification with an LLM needs an instruct model with a chat template ({e})"))
    })
}

/// The spellings a label is scored under: as given and with its first letter's case flipped
/// ("sports" / "Sports"), unless the flip is another label.
fn spellings(label: &str, labels: &[&str]) -> Vec<String> {
    let mut chars = label.chars();
    let first = chars.next().map(|c| if c.is_uppercase() { c.to_lowercase().collect::<String>() } else { c.to_uppercase().collect() });
    let flipped = first.unwrap_or_default() + chars.as_str();
    if flipped == label || labels.contains(&flipped.as_str()) {
        vec![label.to_string()]
    } else {
        vec![label.to_string(), flipped]
    }
}

/// log P(label as the whole answer | the request about `text`) for each label, summed over its
/// spellings.
fn label_log_likelihoods(model: &dyn Decoder, tok: &Tokenizer, template: &ChatTemplate, text: &str, labels: &[&str]) -> Result<Vec<f64>> {
    let messages = request(text, labels);
    let prompt = template.render(&messages, true)?;
    let prompt_ids = tok.encode(&prompt, false)?;
    let eot = end_of_turn(tok, template, &messages, &prompt_ids, labels[0], &answer_ids(tok, &prompt, &prompt_ids, labels[0])?)?;
    let mut answers: Vec<Vec<Vec<u32>>> = Vec::with_capacity(labels.len());
    for l in labels {
        let mut forms = Vec::new();
        for s in spellings(l, labels) {
            // The end-of-turn token makes the label the *whole* answer. Without it a label is
            // also credited for answers it merely begins ("English" for "English is ..."); on 10
            // examples it took this wording from 6/10 to 8/10 (French -0.9 -> +1.8 nats).
            let mut ids = answer_ids(tok, &prompt, &prompt_ids, &s)?;
            ids.extend(eot);
            forms.push(ids);
        }
        answers.push(forms);
    }
    let longest = answers.iter().flatten().map(Vec::len).max().unwrap_or(0);
    let context = model.info().context_length;
    if prompt_ids.len() + longest > context {
        return Err(Error::invalid(
            "input",
            format!("the request with the text and the longest label is {} tokens, more than the model's context of {context}", prompt_ids.len() + longest),
        ));
    }
    let mut cache = model.new_cache();
    let first = prefill(model, &prompt_ids, &mut cache)?;
    let mut out = Vec::with_capacity(labels.len());
    for forms in &answers {
        let mut total = f64::NEG_INFINITY;
        for ids in forms {
            let mut ll = log_prob(&first, ids[0])?;
            if ids.len() > 1 {
                // Each answer continues its own copy of the prompt's cache. Copies share
                // storage, but each one only writes past the prompt and reads what it wrote,
                // one copy at a time (the test compares with a fresh full pass).
                let mut c = cache.clone();
                let logits = rows(&model.forward(&ids[..ids.len() - 1], &mut c, true)?)?;
                for (row, &next) in logits.iter().zip(&ids[1..]) {
                    ll += log_prob(row, next)?;
                }
            }
            total = log_add(total, ll);
        }
        out.push(total);
    }
    Ok(out)
}

/// Classifies `text` into `labels` with an instruct LLM, best label first.
///
/// The request lists the labels and the text; a label's log-likelihood is log P(label as the
/// assistant's whole answer), end-of-turn token included, summed over its two spellings
/// ("sports" / "Sports"). With [`ZeroShotOptions::calibrate`] (the default) the scores are a
/// softmax over the labels of log-likelihood minus the label's log-likelihood for the
/// content-free text "N/A" (Zhao et al. 2021, "Calibrate Before Use"): small models prefer
/// some labels whatever the text, and this takes that prior out. Without it, a softmax of the
/// raw log-likelihoods. `multi_label` is refused (see the comment in the code).
///
/// ```no_run
/// # fn main() -> plinth_core::Result<()> {
/// use plinth_io::fetch::ModelLocation;
/// use plinth_tasks::zeroshot::{zero_shot_llm, ZeroShotOptions};
///
/// let loaded = plinth_models::load_decoder(&ModelLocation::Gguf("SmolLM2-135M-Instruct-Q4_1.gguf".into()))?;
/// let tok = plinth_tokenize::Tokenizer::from_gguf(loaded.gguf.as_ref().expect("a GGUF file"))?;
/// let scores = zero_shot_llm(loaded.model.as_ref(), &tok, "What a great match!", &["sports", "cooking"], &ZeroShotOptions::default())?;
/// println!("{} {:.3} (log-likelihood {:?})", scores[0].label, scores[0].score, scores[0].log_likelihood);
/// # Ok(())
/// # }
/// ```
pub fn zero_shot_llm<S: AsRef<str>>(model: &dyn Decoder, tok: &Tokenizer, text: &str, labels: &[S], opts: &ZeroShotOptions) -> Result<Vec<ZeroShotScore>> {
    check_labels(labels)?;
    check_text(text)?;
    if opts.multi_label {
        // Tried: one "Does this text belong to the category <label>? Answer yes or no." per
        // label, scored P(yes) / (P(yes) + P(no)) from the first answer token. SmolLM2-135M
        // answers "no" to nearly everything (P(yes) 0.1-0.3 for right and wrong labels alike)
        // and ranked the right label first on 6 of 19 hand-made examples, so it is refused
        // rather than offered with scores that mean nothing.
        return Err(Error::invalid(
            "multi-label",
            "zero-shot multi-label classification needs an NLI encoder (--model <NLI checkpoint>); with an LLM the labels share one distribution",
        ));
    }
    if opts.hypothesis_template.is_some() {
        return Err(Error::invalid("hypothesis template", "only NLI encoders use one; an LLM is asked with its chat template"));
    }
    let template = template(tok)?;
    let labels: Vec<&str> = labels.iter().map(AsRef::as_ref).collect();
    let lls = label_log_likelihoods(model, tok, &template, text, &labels)?;
    let adjusted: Vec<f32> = if opts.calibrate {
        let prior = label_log_likelihoods(model, tok, &template, CONTENT_FREE, &labels)?;
        lls.iter().zip(&prior).map(|(l, p)| (l - p) as f32).collect()
    } else {
        lls.iter().map(|&l| l as f32).collect()
    };
    let probs = softmax(&adjusted);
    Ok(ranked(
        labels
            .iter()
            .zip(probs.iter().zip(&lls))
            .map(|(l, (&score, &ll))| ZeroShotScore { label: l.to_string(), score, log_likelihood: Some(ll as f32) })
            .collect(),
    ))
}

// ---------------------------------------------------------------------------------------
// NLI encoders.
// ---------------------------------------------------------------------------------------

/// The hypothesis for `label`: the template's `{}` replaced, as Python's `str.format` does.
fn hypothesis(template: &str, label: &str) -> String {
    template.replacen("{}", label, 1)
}

fn check_template(template: &str) -> Result<()> {
    if template.chars().count() > MAX_TEMPLATE_CHARS {
        return Err(Error::invalid("hypothesis template", format!("longer than {MAX_TEMPLATE_CHARS} characters")));
    }
    match template.matches("{}").count() {
        1 => Ok(()),
        0 => Err(Error::invalid("hypothesis template", format!("'{template}' has no {{}} where the label goes"))),
        _ => Err(Error::invalid("hypothesis template", format!("'{template}' has more than one {{}}; the label goes in one place"))),
    }
}

impl EncoderModel {
    /// The (entailment, contradiction) label indices of an NLI checkpoint, as transformers'
    /// zero-shot pipeline picks them: entailment is the first label starting with `entail`
    /// (any case); "contradiction" is label 0, or the last label when entailment is label 0.
    pub fn nli_labels(&self) -> Result<(usize, usize)> {
        self.require_head(EncoderHead::SequenceClassification, "zero-shot classification with an encoder")?;
        let labels = &self.info().labels;
        let entail = labels.iter().position(|l| l.to_lowercase().starts_with("entail")).filter(|_| labels.len() >= 2).ok_or_else(|| {
            Error::invalid(
                "model",
                format!(
                    "{} is not an NLI model: its labels are [{}]; zero-shot classification needs an 'entailment' label (and a 'contradiction' one)",
                    self.dir.display(),
                    labels.join(", ")
                ),
            )
        })?;
        let contradiction = if entail == 0 { labels.len() - 1 } else { 0 };
        Ok((entail, contradiction))
    }

    /// Zero-shot classification of each text into `labels` with an NLI model, matching
    /// transformers' `ZeroShotClassificationPipeline`: (text, hypothesis) pairs, the text cut
    /// first when too long (`truncation="only_first"`); single-label: softmax of the
    /// entailment logits over the labels; multi-label (or a single label): per label, softmax
    /// of [contradiction, entailment]. Best label first.
    ///
    /// ```no_run
    /// # fn main() -> plinth_core::Result<()> {
    /// use plinth_tasks::{EncoderModel, ZeroShotOptions};
    ///
    /// let nli = EncoderModel::load(std::path::Path::new("models/nli-deberta"))?;
    /// let opts = ZeroShotOptions { hypothesis_template: Some("This text is about {}.".into()), ..Default::default() };
    /// let results = nli.zero_shot(&["The striker scored twice."], &["sports", "politics"], &opts)?;
    /// println!("{} {:.3}", results[0][0].label, results[0][0].score);
    /// # Ok(())
    /// # }
    /// ```
    pub fn zero_shot<S: AsRef<str>>(&self, texts: &[&str], labels: &[S], opts: &ZeroShotOptions) -> Result<Vec<Vec<ZeroShotScore>>> {
        check_labels(labels)?;
        let (entail, contradiction) = self.nli_labels()?;
        let template = opts.hypothesis_template.as_deref().unwrap_or(DEFAULT_HYPOTHESIS_TEMPLATE);
        check_template(template)?;
        for t in texts {
            check_text(t)?;
        }
        let labels: Vec<&str> = labels.iter().map(AsRef::as_ref).collect();
        let hypotheses: Vec<String> = labels.iter().map(|l| hypothesis(template, l)).collect();
        let mut cutting = self.tokenizer.inner().clone();
        let params = TruncationParams {
            max_length: self.tokenizer.max_len(),
            strategy: TruncationStrategy::OnlyFirst,
            stride: 0,
            direction: TruncationDirection::Right,
        };
        cutting.with_truncation(Some(params)).map_err(|e| Error::Tokenizer(e.to_string()))?;
        let mut pairs: Vec<Encoded> = Vec::with_capacity(texts.len() * labels.len());
        for (ti, t) in texts.iter().enumerate() {
            for (li, h) in hypotheses.iter().enumerate() {
                pairs.push(self.nli_pair(&cutting, t, h, opts.overflow, &|| format!("input[{ti}] with label '{}'", labels[li]))?);
            }
        }
        let n_labels = self.info().labels.len();
        let mut logits = vec![Vec::new(); pairs.len()];
        self.run(&pairs, opts.batch_size, |i, _, row| logits[i] = row.map(<[f32]>::to_vec).unwrap_or_default())?;
        if let Some(row) = logits.iter().find(|r| r.len() != n_labels) {
            return Err(Error::invalid("model output", format!("{} logits per input but {n_labels} labels in the config", row.len())));
        }
        let per_label = opts.multi_label || labels.len() == 1;
        Ok(logits
            .chunks(labels.len())
            .map(|rows| {
                let scores: Vec<f32> = if per_label {
                    rows.iter().map(|r| softmax(&[r[contradiction], r[entail]])[1]).collect()
                } else {
                    softmax(&rows.iter().map(|r| r[entail]).collect::<Vec<_>>())
                };
                let mut out: Vec<(usize, ZeroShotScore)> = labels
                    .iter()
                    .zip(scores)
                    .map(|(l, score)| ZeroShotScore { label: l.to_string(), score, log_likelihood: None })
                    .enumerate()
                    .collect();
                // The pipeline ranks with `reversed(scores.argsort())`: numpy's argsort is stable
                // at these sizes, so among equal scores the later label comes first.
                out.sort_by(|(i, a), (j, b)| b.score.total_cmp(&a.score).then(j.cmp(i)));
                out.into_iter().map(|(_, s)| s).collect()
            })
            .collect())
    }

    /// One (text, hypothesis) pair; an over-long pair loses tokens from the text only.
    fn nli_pair(&self, cutting: &tokenizers::Tokenizer, text: &str, hyp: &str, overflow: Overflow, what: &dyn Fn() -> String) -> Result<Encoded> {
        let max = self.tokenizer.max_len();
        let whole = self.tokenizer.encode(text, Some(hyp), Overflow::Error, false, what);
        match (whole, overflow) {
            (Ok(e), _) => Ok(e),
            (Err(e), Overflow::Error) => Err(e),
            (Err(_), Overflow::Truncate) => {
                let mut enc = cutting.encode_fast((text, hyp), true).map_err(|_| {
                    Error::invalid(what(), format!("the hypothesis alone does not fit the model's {max} tokens; shorten the label or the template"))
                })?;
                enc.get_overflowing_mut().clear();
                Ok(enc)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_checked() {
        assert_eq!(parse_labels(" sports, cooking ,politics").unwrap(), ["sports", "cooking", "politics"]);
        for (bad, why) in [("", "empty"), ("a,,b", "label 2 is empty"), ("a,b,a", "'a' is given twice"), ("a, ", "label 2 is empty")] {
            let e = parse_labels(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
        let many: Vec<String> = (0..=MAX_LABELS).map(|i| format!("l{i}")).collect();
        assert!(check_labels(&many).unwrap_err().to_string().contains("at most 64"));
        assert!(check_labels(&many[..MAX_LABELS]).is_ok());
        let long = "x".repeat(MAX_LABEL_CHARS + 1);
        assert!(check_labels(&[long]).unwrap_err().to_string().contains("characters"));
        assert!(check_labels::<&str>(&[]).unwrap_err().to_string().contains("none given"));
    }

    #[test]
    fn hypothesis_templates() {
        assert_eq!(hypothesis(DEFAULT_HYPOTHESIS_TEMPLATE, "sports"), "This example is sports.");
        assert!(check_template("About {}.").is_ok());
        assert!(check_template("no slot").unwrap_err().to_string().contains("no {}"));
        assert!(check_template("{} and {}").unwrap_err().to_string().contains("more than one"));
        assert!(check_template(&format!("{{}}{}", "x".repeat(MAX_TEMPLATE_CHARS))).unwrap_err().to_string().contains("longer than"));
    }

    #[test]
    fn log_prob_is_a_log_softmax() {
        let row = [1.0f32, 2.0, 3.0];
        let total: f64 = (0..3).map(|i| log_prob(&row, i).unwrap().exp()).sum();
        assert!((total - 1.0).abs() < 1e-12, "{total}");
        // numpy: log_softmax([1, 2, 3])[2] = -0.40760596
        assert!((log_prob(&row, 2).unwrap() + 0.407_605_96).abs() < 1e-7);
        assert!(log_prob(&row, 3).is_err());
    }

    /// Scoring every label from copies of one prompt cache gives what a fresh cache per label
    /// gives (the copies share storage; none may see another's tokens).
    #[test]
    fn cache_copies_score_like_fresh_caches() {
        let loaded = plinth_models::load_decoder(&plinth_io::fetch::ModelLocation::Gguf(plinth_testutil::smollm2_gguf())).unwrap();
        let tok = Tokenizer::from_gguf(loaded.gguf.as_ref().unwrap()).unwrap();
        let model = loaded.model.as_ref();
        let labels = ["sports", "cooking", "politics and government", "technology"];
        let text = "The senate passed the new tax bill.";
        let shared = label_log_likelihoods(model, &tok, &template(&tok).unwrap(), text, &labels).unwrap();
        let messages = request(text, &labels);
        let prompt = template(&tok).unwrap().render(&messages, true).unwrap();
        let prompt_ids = tok.encode(&prompt, false).unwrap();
        let eot = Some(2); // <|im_end|>
        assert_eq!(tok.token_text(2).as_deref(), Some("<|im_end|>"));
        for (l, want) in labels.iter().zip(&shared) {
            let mut total = f64::NEG_INFINITY;
            for s in spellings(l, &labels) {
                let mut ids = answer_ids(&tok, &prompt, &prompt_ids, &s).unwrap();
                ids.extend(eot);
                let mut cache = model.new_cache();
                let first = prefill(model, &prompt_ids, &mut cache).unwrap();
                let mut ll = log_prob(&first, ids[0]).unwrap();
                let logits = rows(&model.forward(&ids[..ids.len() - 1], &mut cache, true).unwrap()).unwrap();
                for (row, &next) in logits.iter().zip(&ids[1..]) {
                    ll += log_prob(row, next).unwrap();
                }
                total = log_add(total, ll);
            }
            assert!((total - want).abs() < 1e-6, "{l}: fresh {total} vs shared {want}");
        }
        assert_eq!(spellings("Sports", &["Sports", "cooking"]), ["Sports", "sports"]);
        assert_eq!(spellings("a", &["a", "A"]), ["a"], "a flip that is another label is not a spelling");
        assert_eq!(spellings("42", &["42"]), ["42"]);
    }
}
