//! Token classification (named-entity recognition) on a checkpoint whose head is
//! `*ForTokenClassification`, matching transformers 4.x' `TokenClassificationPipeline` with a
//! fast tokenizer: softmax per token, special tokens skipped, `word` = the vocabulary token,
//! character offsets into the input, the pipeline's sub-word rule, and its five aggregation
//! strategies (`none`, `simple`, `first`, `average`, `max`) with the B-/I- grouping rules.
//!
//! Offsets are in characters (Unicode scalar values), as Python indexes strings; slicing the
//! input goes through a char → byte table, never straight through byte indices.

use std::path::Path;

use plinth_core::{Error, Result};
use plinth_models::EncoderHead;

use crate::classify::{argmax, softmax};
use crate::model::EncoderModel;
use crate::text::Overflow;

/// How tokens are merged into entities (transformers' `AggregationStrategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Aggregation {
    /// One result per token, with its own best label and index.
    #[default]
    None,
    /// Consecutive tokens with the same tag (a `B-` starts a new entity) are grouped.
    Simple,
    /// Words take the label of their first token, then grouped as `Simple`.
    First,
    /// Words take the label of their averaged token scores, then grouped.
    Average,
    /// Words take the label of their most confident token, then grouped.
    Max,
}

impl Aggregation {
    /// Parses `none`, `simple`, `first`, `average` or `max` (any case).
    pub fn from_name(name: &str) -> Result<Self> {
        match name.to_ascii_lowercase().as_str() {
            "none" => Ok(Aggregation::None),
            "simple" => Ok(Aggregation::Simple),
            "first" => Ok(Aggregation::First),
            "average" => Ok(Aggregation::Average),
            "max" => Ok(Aggregation::Max),
            other => Err(Error::invalid("aggregation", format!("'{other}' (choose none, simple, first, average or max)"))),
        }
    }
}

/// How to tag tokens.
#[derive(Debug, Clone)]
pub struct NerOptions {
    pub aggregation: Aggregation,
    /// Labels (or, aggregated, entity groups) left out of the result; the pipeline's
    /// default is `["O"]`.
    pub ignore_labels: Vec<String>,
    /// Cut over-long inputs (as the pipeline does) or refuse them.
    pub overflow: Overflow,
    /// Rows per forward pass.
    pub batch_size: usize,
}

impl Default for NerOptions {
    fn default() -> Self {
        NerOptions { aggregation: Aggregation::None, ignore_labels: vec!["O".into()], overflow: Overflow::Truncate, batch_size: 32 }
    }
}

/// One tagged token, word or entity.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Entity {
    /// The label (`B-PER`), or for aggregated results the entity group (`PER`).
    pub entity: String,
    pub score: f32,
    /// The vocabulary token (`##ing`, `Ġworld`) for [`Aggregation::None`]; the detokenized
    /// tokens for aggregated results; the original text for unknown tokens.
    pub word: String,
    /// Character offsets into the input (end exclusive).
    pub start: usize,
    pub end: usize,
    /// Token position in the encoded input (special tokens counted); only without aggregation.
    pub index: Option<usize>,
}

/// A token before aggregation (the pipeline's `pre_entity`).
#[derive(Debug, Clone)]
pub(crate) struct PreEntity {
    pub word: String,
    pub scores: Vec<f32>,
    pub start: usize,
    pub end: usize,
    pub index: usize,
    pub is_subword: bool,
}

/// A string indexable by character position, as Python slices `str`.
pub(crate) struct CharText<'a> {
    text: &'a str,
    /// Byte offset of every char, plus the text length at the end.
    bytes: Vec<usize>,
}

impl<'a> CharText<'a> {
    pub fn new(text: &'a str) -> Self {
        let mut bytes: Vec<usize> = text.char_indices().map(|(b, _)| b).collect();
        bytes.push(text.len());
        CharText { text, bytes }
    }

    pub fn chars(&self) -> usize {
        self.bytes.len() - 1
    }

    /// `text[start:end]` with Python's clamping (out-of-range or reversed bounds give less
    /// or nothing, never a panic).
    pub fn slice(&self, start: usize, end: usize) -> &'a str {
        let n = self.chars();
        let (s, e) = (start.min(n), end.min(n));
        if s >= e {
            return "";
        }
        &self.text[self.bytes[s]..self.bytes[e]]
    }
}

/// The pipeline's `get_tag`: (`is B-`, tag). Labels without a B-/I- prefix count as `I-`.
pub(crate) fn get_tag(label: &str) -> (bool, &str) {
    if let Some(tag) = label.strip_prefix("B-") {
        (true, tag)
    } else if let Some(tag) = label.strip_prefix("I-") {
        (false, tag)
    } else {
        (false, label)
    }
}

/// f32 mean, NaN-skipping as `np.nanmean` (NaN when every value is NaN or there are none).
fn nanmean(values: impl Iterator<Item = f32>) -> f32 {
    let (sum, n) = values.filter(|v| !v.is_nan()).fold((0f32, 0usize), |(s, n), v| (s + v, n + 1));
    if n == 0 {
        f32::NAN
    } else {
        sum / n as f32
    }
}

/// `group_sub_entities`: one entity from consecutive tokens/words of one tag. The group name
/// is the label after its first `-` (`B-PER` → `PER`), as `split("-", 1)[-1]`.
fn group_sub_entities(entities: &[Entity], join: &dyn Fn(Vec<String>) -> Result<String>) -> Result<Entity> {
    let first = &entities[0];
    let group = first.entity.split_once('-').map_or(first.entity.as_str(), |(_, rest)| rest);
    Ok(Entity {
        entity: group.to_string(),
        score: nanmean(entities.iter().map(|e| e.score)),
        word: join(entities.iter().map(|e| e.word.clone()).collect())?,
        start: first.start,
        end: entities[entities.len() - 1].end,
        index: None,
    })
}

/// `group_entities`: consecutive entities join the current group while their tag equals the
/// previous one's and they are not `B-`.
pub(crate) fn group_entities(entities: &[Entity], join: &dyn Fn(Vec<String>) -> Result<String>) -> Result<Vec<Entity>> {
    let mut groups = Vec::new();
    let mut current: Vec<Entity> = Vec::new();
    for entity in entities {
        if let Some(last) = current.last() {
            let (is_b, tag) = get_tag(&entity.entity);
            let (_, last_tag) = get_tag(&last.entity);
            if tag == last_tag && !is_b {
                current.push(entity.clone());
                continue;
            }
            groups.push(group_sub_entities(&current, join)?);
            current.clear();
        }
        current.push(entity.clone());
    }
    if !current.is_empty() {
        groups.push(group_sub_entities(&current, join)?);
    }
    Ok(groups)
}

/// `aggregate_word`: one word from its tokens.
fn aggregate_word(tokens: &[PreEntity], strategy: Aggregation, labels: &[String], join: &dyn Fn(Vec<String>) -> Result<String>) -> Result<Entity> {
    let label = |i: usize| labels.get(i).cloned().unwrap_or_else(|| format!("LABEL_{i}"));
    let (entity, score) = match strategy {
        Aggregation::Max => {
            // `max(entities, key=lambda e: e["scores"].max())`: the first token with the
            // highest top score.
            let mut best = &tokens[0];
            let top = |t: &PreEntity| t.scores.get(argmax(&t.scores)).copied().unwrap_or(f32::NAN);
            for t in &tokens[1..] {
                if top(t) > top(best) {
                    best = t;
                }
            }
            let i = argmax(&best.scores);
            (label(i), best.scores.get(i).copied().unwrap_or(f32::NAN))
        }
        Aggregation::Average => {
            let n = tokens[0].scores.len();
            let avg: Vec<f32> = (0..n).map(|j| nanmean(tokens.iter().map(|t| t.scores.get(j).copied().unwrap_or(f32::NAN)))).collect();
            let i = argmax(&avg);
            (label(i), avg.get(i).copied().unwrap_or(f32::NAN))
        }
        // First (None and Simple never reach here).
        _ => {
            let s = &tokens[0].scores;
            let i = argmax(s);
            (label(i), s.get(i).copied().unwrap_or(f32::NAN))
        }
    };
    Ok(Entity {
        entity,
        score,
        word: join(tokens.iter().map(|t| t.word.clone()).collect())?,
        start: tokens[0].start,
        end: tokens[tokens.len() - 1].end,
        index: None,
    })
}

/// `aggregate`: per-token results for `None`/`Simple`, words for the others, then grouping
/// for everything but `None`.
pub(crate) fn aggregate(pre: &[PreEntity], strategy: Aggregation, labels: &[String], join: &dyn Fn(Vec<String>) -> Result<String>) -> Result<Vec<Entity>> {
    let entities: Vec<Entity> = match strategy {
        Aggregation::None | Aggregation::Simple => pre
            .iter()
            .map(|p| {
                let i = argmax(&p.scores);
                Entity {
                    entity: labels.get(i).cloned().unwrap_or_else(|| format!("LABEL_{i}")),
                    score: p.scores.get(i).copied().unwrap_or(f32::NAN),
                    word: p.word.clone(),
                    start: p.start,
                    end: p.end,
                    index: Some(p.index),
                }
            })
            .collect(),
        _ => {
            // `aggregate_words`: a word is a token followed by its sub-word tokens.
            let mut words = Vec::new();
            let mut start = 0;
            for i in 1..=pre.len() {
                if i == pre.len() || !pre[i].is_subword {
                    if i > start {
                        words.push(aggregate_word(&pre[start..i], strategy, labels, join)?);
                    }
                    start = i;
                }
            }
            words
        }
    };
    if strategy == Aggregation::None {
        return Ok(entities);
    }
    group_entities(&entities, join)
}

/// Reads a special token's text (`unk_token`, `cls_token`) from `tokenizer_config.json` or
/// `special_tokens_map.json` in `dir`, where transformers takes it from.
pub(crate) fn configured_special_token(dir: &Path, key: &str) -> Option<String> {
    ["tokenizer_config.json", "special_tokens_map.json"].iter().find_map(|f| {
        let bytes = std::fs::read(dir.join(f)).ok()?;
        let json: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
        match json.get(key)? {
            serde_json::Value::String(s) => Some(s.clone()),
            v => v.get("content").and_then(|c| c.as_str()).map(str::to_string),
        }
    })
}

/// The unknown token's id: the configured `unk_token`, else the tokenizer model's own.
fn unk_id(dir: &Path, tok: &tokenizers::Tokenizer) -> Option<u32> {
    use tokenizers::ModelWrapper as M;
    if let Some(id) = configured_special_token(dir, "unk_token").and_then(|t| tok.token_to_id(&t)) {
        return Some(id);
    }
    match tok.get_model() {
        M::WordPiece(m) => tok.token_to_id(&m.unk_token),
        M::WordLevel(m) => tok.token_to_id(&m.unk_token),
        M::BPE(m) => m.unk_token.as_ref().and_then(|u| tok.token_to_id(u)),
        M::Unigram(_) => tok.token_to_id("<unk>"),
    }
}

/// Whether the tokenizer marks word continuations (`continuing_subword_prefix`, WordPiece's
/// `##`), which lets the pipeline tell sub-words exactly instead of guessing from spaces.
fn has_subword_prefix(tok: &tokenizers::Tokenizer) -> bool {
    use tokenizers::ModelWrapper as M;
    match tok.get_model() {
        M::WordPiece(m) => !m.continuing_subword_prefix.is_empty(),
        M::BPE(m) => m.continuing_subword_prefix.as_ref().is_some_and(|p| !p.is_empty()),
        M::WordLevel(_) | M::Unigram(_) => false,
    }
}

impl EncoderModel {
    /// Tags the tokens of each text; one list of entities per text.
    pub fn ner(&self, texts: &[&str], opts: &NerOptions) -> Result<Vec<Vec<Entity>>> {
        self.require_head(EncoderHead::TokenClassification, "token classification")?;
        let labels = &self.info().labels;
        let n_labels = labels.len();
        if n_labels == 0 {
            return Err(Error::invalid("model", format!("{} has a token-classification head with no labels", self.dir.display())));
        }
        let tok = self.tokenizer.inner();
        let unk = unk_id(&self.dir, tok);
        let word_aware = has_subword_prefix(tok);
        let encoded = texts
            .iter()
            .enumerate()
            .map(|(i, t)| self.tokenizer.encode(t, None, opts.overflow, true, &|| format!("input[{i}]")))
            .collect::<Result<Vec<_>>>()?;
        let mut logits = vec![Vec::new(); texts.len()];
        self.run(&encoded, opts.batch_size, |i, _, l| logits[i] = l.map(<[f32]>::to_vec).unwrap_or_default())?;
        let join = |tokens: Vec<String>| self.tokenizer.tokens_to_string(tokens);

        let mut out = Vec::with_capacity(texts.len());
        for ((text, enc), logits) in texts.iter().zip(&encoded).zip(&logits) {
            if logits.len() != enc.len() * n_labels {
                return Err(Error::invalid(
                    "model output",
                    format!("{} logits for {} tokens and {n_labels} labels", logits.len(), enc.len()),
                ));
            }
            let sentence = CharText::new(text);
            let mut pre = Vec::new();
            for (idx, &id) in enc.get_ids().iter().enumerate() {
                if enc.get_special_tokens_mask()[idx] != 0 {
                    continue;
                }
                let (start, end) = enc.get_offsets()[idx];
                let word_ref = sentence.slice(start, end);
                let mut word = tok.id_to_token(id).unwrap_or_default();
                let mut is_subword = if word_aware {
                    word.chars().count() != word_ref.chars().count()
                } else {
                    // The pipeline's fallback for tokenizers that do not mark continuations: a
                    // token is a sub-word unless a space touches its first character.
                    start > 0 && !sentence.slice(start - 1, start + 1).contains(' ')
                };
                if Some(id) == unk {
                    word = word_ref.to_string();
                    is_subword = false;
                }
                let scores = softmax(&logits[idx * n_labels..(idx + 1) * n_labels]);
                pre.push(PreEntity { word, scores, start, end, index: idx, is_subword });
            }
            let entities = aggregate(&pre, opts.aggregation, labels, &join)?;
            out.push(entities.into_iter().filter(|e| !opts.ignore_labels.contains(&e.entity)).collect());
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn join(t: Vec<String>) -> Result<String> {
        Ok(t.join(" "))
    }

    fn ent(label: &str, score: f32, word: &str, start: usize, end: usize) -> Entity {
        Entity { entity: label.into(), score, word: word.into(), start, end, index: None }
    }

    #[test]
    fn tags() {
        assert_eq!(get_tag("B-PER"), (true, "PER"));
        assert_eq!(get_tag("I-PER"), (false, "PER"));
        assert_eq!(get_tag("O"), (false, "O"));
        assert_eq!(get_tag("LABEL_3"), (false, "LABEL_3"));
    }

    #[test]
    fn group_entities_follows_b_i_rules() {
        // (A, B-TAG), (B, I-TAG), (C, I-TAG), (D, B-TAG2), (E, B-TAG2) → ABC/TAG, D/TAG2, E/TAG2.
        let e = vec![
            ent("B-TAG", 0.9, "A", 0, 1),
            ent("I-TAG", 0.8, "B", 2, 3),
            ent("I-TAG", 0.7, "C", 4, 5),
            ent("B-TAG2", 0.6, "D", 6, 7),
            ent("B-TAG2", 0.5, "E", 8, 9),
        ];
        let g = group_entities(&e, &join).unwrap();
        assert_eq!(g.len(), 3);
        assert_eq!((g[0].entity.as_str(), g[0].word.as_str(), g[0].start, g[0].end), ("TAG", "A B C", 0, 5));
        assert!((g[0].score - 0.8).abs() < 1e-6);
        assert_eq!((g[1].entity.as_str(), g[1].word.as_str()), ("TAG2", "D"));
        assert_eq!((g[2].entity.as_str(), g[2].word.as_str()), ("TAG2", "E"));
        // An I- after a different tag starts a new group; unprefixed labels chain as I-.
        let e = vec![ent("I-PER", 0.5, "a", 0, 1), ent("I-LOC", 0.5, "b", 2, 3), ent("O", 0.5, "c", 4, 5), ent("O", 0.5, "d", 6, 7)];
        let g = group_entities(&e, &join).unwrap();
        let names: Vec<_> = g.iter().map(|g| (g.entity.as_str(), g.word.as_str())).collect();
        assert_eq!(names, vec![("PER", "a"), ("LOC", "b"), ("O", "c d")]);
        // The group name is whatever follows the first '-', as `split("-", 1)[-1]`.
        let g = group_entities(&[ent("X-Y-Z", 0.1, "w", 0, 1)], &join).unwrap();
        assert_eq!(g[0].entity, "Y-Z");
        assert!(group_entities(&[], &join).unwrap().is_empty());
    }

    fn pre(word: &str, scores: &[f32], sub: bool, i: usize) -> PreEntity {
        PreEntity { word: word.into(), scores: scores.to_vec(), start: i * 2, end: i * 2 + 1, index: i + 1, is_subword: sub }
    }

    #[test]
    fn word_aggregation_strategies() {
        let labels: Vec<String> = ["O", "B-PER", "I-PER"].iter().map(|s| s.to_string()).collect();
        let tokens = vec![
            pre("Jo", &[0.1, 0.6, 0.3], false, 0),
            pre("##hn", &[0.05, 0.15, 0.8], true, 1),
            pre("runs", &[0.9, 0.05, 0.05], false, 2),
        ];
        let first = aggregate(&tokens, Aggregation::First, &labels, &join).unwrap();
        assert_eq!((first[0].entity.as_str(), first[0].word.as_str(), first[0].start, first[0].end), ("PER", "Jo ##hn", 0, 3));
        assert!((first[0].score - 0.6).abs() < 1e-6);
        assert_eq!(first[1].entity, "O");
        let max = aggregate(&tokens, Aggregation::Max, &labels, &join).unwrap();
        assert_eq!(max[0].entity, "PER");
        assert!((max[0].score - 0.8).abs() < 1e-6);
        let avg = aggregate(&tokens, Aggregation::Average, &labels, &join).unwrap();
        // Averages [0.075, 0.375, 0.55] → I-PER.
        assert_eq!(avg[0].entity, "PER");
        assert!((avg[0].score - 0.55).abs() < 1e-6);
        let none = aggregate(&tokens, Aggregation::None, &labels, &join).unwrap();
        assert_eq!(none.iter().map(|e| e.entity.as_str()).collect::<Vec<_>>(), ["B-PER", "I-PER", "O"]);
        assert_eq!(none[1].index, Some(2));
        let simple = aggregate(&tokens, Aggregation::Simple, &labels, &join).unwrap();
        assert_eq!(simple.len(), 2);
        assert!((simple[0].score - 0.7).abs() < 1e-6);
        // A sub-word at the very start (no word to attach to) opens its own word.
        let lone = vec![pre("##x", &[0.2, 0.8, 0.0], true, 0)];
        assert_eq!(aggregate(&lone, Aggregation::First, &labels, &join).unwrap().len(), 1);
        assert!(aggregate(&[], Aggregation::Average, &labels, &join).unwrap().is_empty());
    }

    #[test]
    fn char_slicing_is_by_character() {
        let t = CharText::new("héllo 🌍 wörld");
        assert_eq!(t.slice(1, 5), "éllo");
        assert_eq!(t.slice(6, 7), "🌍");
        assert_eq!(t.slice(8, 100), "wörld");
        assert_eq!(t.slice(5, 3), "");
        assert_eq!(t.slice(100, 200), "");
    }
}
