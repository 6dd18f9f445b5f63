//! Sequence classification and cross-encoder reranking on a checkpoint whose head is
//! `*ForSequenceClassification`.
//!
//! [`EncoderModel::classify`] / [`EncoderModel::classify_pairs`] match transformers'
//! `TextClassificationPipeline` called with `top_k=None` (every label, best first), including its
//! `function_to_apply` rules ([`ScoreFunction::Auto`]). [`EncoderModel::rerank`] matches
//! sentence-transformers' `CrossEncoder.predict` / `CrossEncoder.rank` for one-label models
//! (sigmoid of the logit); for models with two or more labels it scores with the *last*
//! label's softmax probability (the "relevant"/"entailment" column of binary rerankers), where
//! `CrossEncoder.predict` would return the raw logit vector. The raw logits are always kept in
//! [`Ranked::raw`].
//!
//! The small numeric helpers ([`softmax`], [`sigmoid`]) live here and are shared by the token
//! classification and question-answering modules, so that every task rounds the same way.

use plinth_core::{Error, Result};
use plinth_models::EncoderHead;

use crate::model::EncoderModel;
use crate::text::{Encoded, Overflow};

/// Softmax of one row, computed as numpy does in the pipelines (`exp(x - max) / sum`), in f32.
/// An empty row gives an empty row.
pub fn softmax(row: &[f32]) -> Vec<f32> {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = row.iter().map(|&x| (x - max).exp()).collect();
    let sum: f32 = exp.iter().sum();
    exp.into_iter().map(|e| e / sum).collect()
}

/// The logistic function `1 / (1 + exp(-x))`, as the pipelines and sentence-transformers apply it.
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// Index of the first largest value (numpy's `argmax`); 0 for an empty row.
pub(crate) fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}

/// How logits become scores (transformers' `function_to_apply`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ScoreFunction {
    /// The pipeline's default: none for `problem_type` `regression`; sigmoid for
    /// `multi_label_classification` or a single label; softmax otherwise.
    #[default]
    Auto,
    Softmax,
    Sigmoid,
    /// Raw logits.
    None,
}

impl ScoreFunction {
    /// Parses `auto`, `softmax`, `sigmoid` or `none` (any case).
    pub fn from_name(name: &str) -> Result<Self> {
        match name.to_ascii_lowercase().as_str() {
            "auto" => Ok(ScoreFunction::Auto),
            "softmax" => Ok(ScoreFunction::Softmax),
            "sigmoid" => Ok(ScoreFunction::Sigmoid),
            "none" => Ok(ScoreFunction::None),
            other => Err(Error::invalid("score function", format!("'{other}' (choose auto, softmax, sigmoid or none)"))),
        }
    }

    /// Resolves [`ScoreFunction::Auto`] for a model with `num_labels` labels and this
    /// `problem_type`, in the order `TextClassificationPipeline.postprocess` checks them.
    pub fn resolve(self, problem_type: Option<&str>, num_labels: usize) -> Self {
        if self != ScoreFunction::Auto {
            return self;
        }
        match problem_type {
            Some("regression") => ScoreFunction::None,
            Some("multi_label_classification") => ScoreFunction::Sigmoid,
            _ if num_labels == 1 => ScoreFunction::Sigmoid,
            _ => ScoreFunction::Softmax,
        }
    }

    /// Applies the (resolved) function to one logits row.
    pub fn apply(self, logits: &[f32]) -> Vec<f32> {
        match self {
            ScoreFunction::Softmax => softmax(logits),
            ScoreFunction::Sigmoid => logits.iter().map(|&x| sigmoid(x)).collect(),
            ScoreFunction::None | ScoreFunction::Auto => logits.to_vec(),
        }
    }
}

/// How to classify.
#[derive(Debug, Clone, Copy)]
pub struct ClassifyOptions {
    /// Keep the best `top_k` labels; `None` keeps them all (the pipeline's `top_k=None`).
    pub top_k: Option<usize>,
    pub function: ScoreFunction,
    /// Cut over-long inputs (longest first for pairs) or refuse them.
    pub overflow: Overflow,
    /// Rows per forward pass.
    pub batch_size: usize,
}

impl Default for ClassifyOptions {
    fn default() -> Self {
        ClassifyOptions { top_k: None, function: ScoreFunction::Auto, overflow: Overflow::Truncate, batch_size: 32 }
    }
}

/// One label and its score.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LabelScore {
    pub label: String,
    pub score: f32,
}

/// How to rerank.
#[derive(Debug, Clone, Copy)]
pub struct RerankOptions {
    /// Keep the best `top_n` documents; `None` keeps them all.
    pub top_n: Option<usize>,
    /// Rank by the raw logit (the last label's for multi-label heads) instead of the
    /// sigmoid / softmax probability.
    pub raw_scores: bool,
    /// Cut over-long (query, document) pairs, longest first, or refuse them.
    pub overflow: Overflow,
    /// Pairs per forward pass.
    pub batch_size: usize,
}

impl Default for RerankOptions {
    fn default() -> Self {
        RerankOptions { top_n: None, raw_scores: false, overflow: Overflow::Truncate, batch_size: 32 }
    }
}

/// One reranked document.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Ranked {
    /// Position of the document in the input list.
    pub index: usize,
    /// Relevance: sigmoid of the logit for one-label models, the last label's softmax
    /// probability otherwise (or the raw logit with [`RerankOptions::raw_scores`]).
    pub score: f32,
    /// The head's logits for this pair.
    pub raw: Vec<f32>,
}

/// Human name of a head, for error messages.
pub(crate) fn head_name(head: EncoderHead) -> &'static str {
    match head {
        EncoderHead::None => "no task head (a bare encoder)",
        EncoderHead::SequenceClassification => "a sequence-classification head",
        EncoderHead::TokenClassification => "a token-classification head",
        EncoderHead::QuestionAnswering => "a question-answering head",
    }
}

impl EncoderModel {
    /// Refuses a model whose head is not `want`, naming the head it has.
    pub(crate) fn require_head(&self, want: EncoderHead, task: &str) -> Result<()> {
        let have = self.info().head;
        if have == want {
            return Ok(());
        }
        Err(Error::invalid(
            "model",
            format!("{} has {}; {task} needs {}", self.dir.display(), head_name(have), head_name(want)),
        ))
    }

    /// Runs a sequence-classification model and returns the logits row of every input.
    fn sequence_logits(&self, inputs: &[Encoded], batch_size: usize) -> Result<Vec<Vec<f32>>> {
        let n_labels = self.info().labels.len();
        let mut out = vec![Vec::new(); inputs.len()];
        self.run(inputs, batch_size, |i, _, logits| {
            out[i] = logits.map(<[f32]>::to_vec).unwrap_or_default();
        })?;
        if let Some(row) = out.iter().find(|r| r.len() != n_labels) {
            return Err(Error::invalid(
                "model output",
                format!("{} logits per input but {n_labels} labels in the config", row.len()),
            ));
        }
        Ok(out)
    }

    /// Classifies texts: every label (or the best `top_k`) with its score, best first.
    pub fn classify(&self, texts: &[&str], opts: ClassifyOptions) -> Result<Vec<Vec<LabelScore>>> {
        let inputs: Vec<(&str, Option<&str>)> = texts.iter().map(|&t| (t, None)).collect();
        self.classify_inputs(&inputs, opts)
    }

    /// Classifies text pairs (`text`, `text_pair`), as NLI models read premise and hypothesis.
    pub fn classify_pairs(&self, pairs: &[(&str, &str)], opts: ClassifyOptions) -> Result<Vec<Vec<LabelScore>>> {
        let inputs: Vec<(&str, Option<&str>)> = pairs.iter().map(|&(a, b)| (a, Some(b))).collect();
        self.classify_inputs(&inputs, opts)
    }

    fn classify_inputs(&self, inputs: &[(&str, Option<&str>)], opts: ClassifyOptions) -> Result<Vec<Vec<LabelScore>>> {
        self.require_head(EncoderHead::SequenceClassification, "classification")?;
        if opts.top_k == Some(0) {
            return Err(Error::invalid("top_k", "0 (ask for at least one label, or none for all)"));
        }
        let encoded = inputs
            .iter()
            .enumerate()
            .map(|(i, &(t, p))| self.tokenizer.encode(t, p, opts.overflow, false, &|| format!("input[{i}]")))
            .collect::<Result<Vec<_>>>()?;
        let logits = self.sequence_logits(&encoded, opts.batch_size)?;
        let info = self.info();
        let function = opts.function.resolve(info.problem_type.as_deref(), info.labels.len());
        Ok(logits
            .iter()
            .map(|row| {
                let mut scores: Vec<LabelScore> = function
                    .apply(row)
                    .into_iter()
                    .zip(&info.labels)
                    .map(|(score, label)| LabelScore { label: label.clone(), score })
                    .collect();
                // Stable, like Python's `list.sort(reverse=True)`: equal scores keep label order.
                scores.sort_by(|a, b| b.score.total_cmp(&a.score));
                if let Some(k) = opts.top_k {
                    scores.truncate(k);
                }
                scores
            })
            .collect())
    }

    /// Scores every (query, document) pair with a cross-encoder and returns the documents
    /// best first (ties keep input order, as `CrossEncoder.rank` does).
    pub fn rerank(&self, query: &str, documents: &[&str], opts: RerankOptions) -> Result<Vec<Ranked>> {
        self.require_head(EncoderHead::SequenceClassification, "reranking")?;
        if opts.top_n == Some(0) {
            return Err(Error::invalid("top_n", "0 (ask for at least one document, or none for all)"));
        }
        let n_labels = self.info().labels.len();
        if n_labels == 0 {
            return Err(Error::invalid("model", format!("{} has a classification head with no labels", self.dir.display())));
        }
        // sentence-transformers tokenizes `[query, document]` with `truncation="longest_first"`.
        let encoded = documents
            .iter()
            .enumerate()
            .map(|(i, d)| self.tokenizer.encode(query, Some(d), opts.overflow, false, &|| format!("document[{i}]")))
            .collect::<Result<Vec<_>>>()?;
        let logits = self.sequence_logits(&encoded, opts.batch_size)?;
        let mut ranked: Vec<Ranked> = logits
            .into_iter()
            .enumerate()
            .map(|(index, raw)| {
                let last = raw[n_labels - 1];
                let score = match (opts.raw_scores, n_labels) {
                    (true, _) => last,
                    (false, 1) => sigmoid(last),
                    (false, _) => softmax(&raw)[n_labels - 1],
                };
                Ranked { index, score, raw }
            })
            .collect();
        ranked.sort_by(|a, b| b.score.total_cmp(&a.score));
        if let Some(n) = opts.top_n {
            ranked.truncate(n);
        }
        Ok(ranked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_matches_reference_values() {
        // numpy: softmax([1, 2, 3]) = [0.09003057, 0.24472847, 0.66524096]
        let s = softmax(&[1.0, 2.0, 3.0]);
        for (got, want) in s.iter().zip([0.090_030_57, 0.244_728_47, 0.665_240_96]) {
            assert!((got - want).abs() < 1e-7, "{got} vs {want}");
        }
        // Shift invariance keeps huge logits finite.
        let s = softmax(&[1000.0, 1000.0]);
        assert_eq!(s, vec![0.5, 0.5]);
        assert!(softmax(&[]).is_empty());
        // exp(-10000) underflows to exactly zero, which question answering relies on.
        assert_eq!(softmax(&[-10000.0, 0.0])[0], 0.0);
    }

    #[test]
    fn sigmoid_and_argmax() {
        assert_eq!(sigmoid(0.0), 0.5);
        assert!((sigmoid(2.0) - 0.880_797_1).abs() < 1e-7);
        assert_eq!(argmax(&[0.1, 0.7, 0.7, 0.2]), 1, "first of equal maxima, as numpy");
        assert_eq!(argmax(&[]), 0);
    }

    #[test]
    fn auto_function_follows_the_pipeline_order() {
        use ScoreFunction as F;
        assert_eq!(F::Auto.resolve(None, 3), F::Softmax);
        assert_eq!(F::Auto.resolve(None, 1), F::Sigmoid);
        assert_eq!(F::Auto.resolve(Some("multi_label_classification"), 4), F::Sigmoid);
        assert_eq!(F::Auto.resolve(Some("single_label_classification"), 1), F::Sigmoid);
        assert_eq!(F::Auto.resolve(Some("regression"), 1), F::None);
        assert_eq!(F::Softmax.resolve(Some("regression"), 1), F::Softmax);
        assert_eq!(F::from_name("SIGMOID").unwrap(), F::Sigmoid);
        assert!(ScoreFunction::from_name("tanh").is_err());
    }
}
