//! Generation with encoder-decoder models ([`plinth_models::Seq2Seq`]: Marian, T5, BART):
//! the generation settings read from a model directory ([`Seq2SeqGeneration`]), the logits
//! processors transformers applies to them, and [`generate`]: greedy search or beam search,
//! step for step as transformers 5.24's `generate` does it, so ids and `sequences_scores`
//! can be compared with it number for number.
//!
//! The source batch is encoded once; the decoder then runs one token per step over a
//! [`plinth_models::Seq2SeqCache`] that this module owns. Beam search keeps `num_beams` rows
//! per source and reorders the cache after every step; sources whose search is over are
//! dropped from the batch (their result can no longer change), and so are finished greedy
//! rows.

use std::cmp::Ordering;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use plinth_core::{Error, Result};
use plinth_models::{Seq2Seq, Seq2SeqCache, Seq2SeqInfo};
use serde_json::Value;

/// Most tokens a generated sequence may have (start token included) whatever the settings
/// say; models with relative positions (T5) have no limit of their own.
pub const MAX_LENGTH_LIMIT: usize = 8192;
/// Longest source for models without a position limit of their own (T5): the encoder's
/// attention grows with the square of it.
pub const MAX_SOURCE_TOKENS: usize = 4096;
/// Most beams per source.
pub const MAX_BEAMS: usize = 64;
/// Most decoder rows (sources × beams) in one batch; callers split larger batches.
pub const MAX_ROWS: usize = 2048;

/// transformers' `early_stopping`: when a beam search is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub enum EarlyStopping {
    /// `True`: as soon as `num_beams` hypotheses are finished.
    WhenFull,
    /// `False` (the default): when the best running beam, scored at its current length, can no
    /// longer beat the worst finished hypothesis.
    #[default]
    Heuristic,
    /// `"never"`: as `False`, but with a positive length penalty the best running beam is
    /// scored at the maximum length (the canonical beam search).
    Never,
}

/// The generation settings of an encoder-decoder model: `generation_config.json`, falling back
/// to the same fields of `config.json`, then to transformers' defaults. Lengths count the
/// decoder start token, as transformers' `max_length` / `min_length` do.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Seq2SeqGeneration {
    /// `None`: the model's (`Seq2SeqInfo::decoder_start_token_id`).
    pub decoder_start_token_id: Option<u32>,
    /// Empty: the model's `eos_token_id`.
    pub eos_token_ids: Vec<u32>,
    pub pad_token_id: Option<u32>,
    pub bos_token_id: Option<u32>,
    /// Forced as the first generated token (BART summarizers, mBART).
    pub forced_bos_token_id: Option<u32>,
    /// Forced as the last token when `max_length` is reached.
    pub forced_eos_token_ids: Vec<u32>,
    /// Token sequences never generated (Marian bans its pad token this way).
    pub bad_words_ids: Vec<Vec<u32>>,
    pub num_beams: usize,
    pub length_penalty: f32,
    /// 0: off.
    pub no_repeat_ngram_size: usize,
    pub early_stopping: EarlyStopping,
    /// Longest output, start token included. `max_new_tokens` wins when both are set.
    pub max_length: Option<usize>,
    pub max_new_tokens: Option<usize>,
    /// Shortest output (start token included) before EOS is allowed.
    pub min_length: usize,
    /// Wins over `min_length` when set.
    pub min_new_tokens: Option<usize>,
    /// `max_position_embeddings` from config.json: transformers caps its *default* max length
    /// (20 new tokens) there.
    pub default_length_cap: Option<usize>,
}

impl Default for Seq2SeqGeneration {
    /// transformers' defaults (`GenerationConfig._get_default_generation_params`).
    fn default() -> Self {
        Seq2SeqGeneration {
            decoder_start_token_id: None,
            eos_token_ids: Vec::new(),
            pad_token_id: None,
            bos_token_id: None,
            forced_bos_token_id: None,
            forced_eos_token_ids: Vec::new(),
            bad_words_ids: Vec::new(),
            num_beams: 1,
            length_penalty: 1.0,
            no_repeat_ngram_size: 0,
            early_stopping: EarlyStopping::Heuristic,
            max_length: None,
            max_new_tokens: None,
            min_length: 0,
            min_new_tokens: None,
            default_length_cap: None,
        }
    }
}

/// What a user may change on top of a model's generation settings (`None`: keep).
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(default)]
pub struct Seq2SeqOverrides {
    pub num_beams: Option<usize>,
    pub max_new_tokens: Option<usize>,
    pub max_length: Option<usize>,
    pub min_length: Option<usize>,
    pub min_new_tokens: Option<usize>,
    pub length_penalty: Option<f32>,
    pub no_repeat_ngram_size: Option<usize>,
    pub early_stopping: Option<EarlyStopping>,
}

impl<'de> serde::Deserialize<'de> for EarlyStopping {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        early_stopping_from(&v).ok_or_else(|| serde::de::Error::custom(format!("early_stopping must be true, false or \"never\", got {v}")))
    }
}

fn early_stopping_from(v: &Value) -> Option<EarlyStopping> {
    match v {
        Value::Bool(true) => Some(EarlyStopping::WhenFull),
        Value::Bool(false) => Some(EarlyStopping::Heuristic),
        Value::String(s) if s == "never" => Some(EarlyStopping::Never),
        _ => None,
    }
}

/// Reads one field from the generation config, else from config.json.
struct Fields<'a> {
    sources: Vec<(&'a Value, &'a Path)>,
}

impl Fields<'_> {
    /// The first non-null value of `key` and the file it came from.
    fn get(&self, key: &str) -> Option<(&Value, &Path)> {
        self.sources.iter().find_map(|(v, p)| v.get(key).filter(|x| !x.is_null()).map(|x| (x, *p)))
    }

    fn id(v: &Value, key: &str, path: &Path) -> Result<u32> {
        v.as_u64().and_then(|n| u32::try_from(n).ok()).ok_or_else(|| Error::format(path, format!("{key}: expected a token id, got {v}")))
    }

    fn opt_id(&self, key: &str) -> Result<Option<u32>> {
        self.get(key).map(|(v, p)| Self::id(v, key, p)).transpose()
    }

    /// An id or a list of ids.
    fn ids(&self, key: &str) -> Result<Vec<u32>> {
        match self.get(key) {
            None => Ok(Vec::new()),
            Some((Value::Array(a), p)) => a.iter().map(|v| Self::id(v, key, p)).collect(),
            Some((v, p)) => Ok(vec![Self::id(v, key, p)?]),
        }
    }

    fn usize(&self, key: &str) -> Result<Option<usize>> {
        self.get(key)
            .map(|(v, p)| v.as_u64().and_then(|n| usize::try_from(n).ok()).ok_or_else(|| Error::format(p, format!("{key}: expected a non-negative integer, got {v}"))))
            .transpose()
    }

    fn f32(&self, key: &str) -> Result<Option<f32>> {
        self.get(key).map(|(v, p)| v.as_f64().map(|x| x as f32).ok_or_else(|| Error::format(p, format!("{key}: expected a number, got {v}")))).transpose()
    }
}

impl Seq2SeqGeneration {
    /// Reads `dir/generation_config.json` (optional) over `dir/config.json`.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let config_path = dir.join("config.json");
        let config = read_json(&config_path)?.ok_or_else(|| Error::missing(&config_path, "config.json"))?;
        let gen_path = dir.join("generation_config.json");
        let generation = read_json(&gen_path)?;
        Self::from_json(&config, &config_path, generation.as_ref().map(|g| (g, gen_path.as_path())))
    }

    /// The settings from parsed `config.json` and `generation_config.json` values (the paths
    /// name the files in errors).
    pub fn from_json(config: &Value, config_path: &Path, generation: Option<(&Value, &Path)>) -> Result<Self> {
        let mut sources = Vec::new();
        if let Some((g, p)) = generation {
            sources.push((g, p));
        }
        sources.push((config, config_path));
        let f = Fields { sources };
        let d = Seq2SeqGeneration::default();
        let bad_words_ids = match f.get("bad_words_ids") {
            None => Vec::new(),
            Some((Value::Array(seqs), p)) => seqs
                .iter()
                .map(|s| match s {
                    Value::Array(ids) if !ids.is_empty() => ids.iter().map(|v| Fields::id(v, "bad_words_ids", p)).collect(),
                    _ => Err(Error::format(p, format!("bad_words_ids: expected non-empty lists of token ids, got {s}"))),
                })
                .collect::<Result<_>>()?,
            Some((v, p)) => return Err(Error::format(p, format!("bad_words_ids: expected a list of lists, got {v}"))),
        };
        let early_stopping = match f.get("early_stopping") {
            None => d.early_stopping,
            Some((v, p)) => early_stopping_from(v).ok_or_else(|| Error::format(p, format!("early_stopping: expected true, false or \"never\", got {v}")))?,
        };
        Ok(Seq2SeqGeneration {
            decoder_start_token_id: f.opt_id("decoder_start_token_id")?,
            eos_token_ids: f.ids("eos_token_id")?,
            pad_token_id: f.opt_id("pad_token_id")?,
            bos_token_id: f.opt_id("bos_token_id")?,
            forced_bos_token_id: f.opt_id("forced_bos_token_id")?,
            forced_eos_token_ids: f.ids("forced_eos_token_id")?,
            bad_words_ids,
            num_beams: f.usize("num_beams")?.unwrap_or(d.num_beams),
            length_penalty: f.f32("length_penalty")?.unwrap_or(d.length_penalty),
            no_repeat_ngram_size: f.usize("no_repeat_ngram_size")?.unwrap_or(0),
            early_stopping,
            max_length: f.usize("max_length")?,
            max_new_tokens: f.usize("max_new_tokens")?,
            min_length: f.usize("min_length")?.unwrap_or(0),
            min_new_tokens: f.usize("min_new_tokens")?,
            default_length_cap: config.get("max_position_embeddings").and_then(Value::as_u64).map(|n| n as usize),
        })
    }

    /// These settings with the user's changes on top (checked by [`Self::validate`]).
    pub fn with_overrides(mut self, o: &Seq2SeqOverrides) -> Self {
        if let Some(n) = o.num_beams {
            self.num_beams = n;
        }
        if let Some(n) = o.max_new_tokens {
            self.max_new_tokens = Some(n);
        }
        if let Some(n) = o.max_length {
            // An explicit max_length replaces the model's max_new_tokens, which would win over it.
            self.max_length = Some(n);
            if o.max_new_tokens.is_none() {
                self.max_new_tokens = None;
            }
        }
        if let Some(n) = o.min_length {
            self.min_length = n;
            if o.min_new_tokens.is_none() {
                self.min_new_tokens = None;
            }
        }
        if let Some(n) = o.min_new_tokens {
            self.min_new_tokens = Some(n);
        }
        if let Some(x) = o.length_penalty {
            self.length_penalty = x;
        }
        if let Some(n) = o.no_repeat_ngram_size {
            self.no_repeat_ngram_size = n;
        }
        if let Some(e) = o.early_stopping {
            self.early_stopping = e;
        }
        self
    }

    /// Checks the knobs that do not depend on the model; the error names the knob.
    pub fn validate(&self) -> Result<()> {
        if !(1..=MAX_BEAMS).contains(&self.num_beams) {
            return Err(Error::invalid("num_beams", format!("{} is not in 1..={MAX_BEAMS}", self.num_beams)));
        }
        if !self.length_penalty.is_finite() {
            return Err(Error::invalid("length_penalty", format!("{} is not a finite number", self.length_penalty)));
        }
        if let Some(n) = self.max_new_tokens {
            if !(1..MAX_LENGTH_LIMIT).contains(&n) {
                return Err(Error::invalid("max_new_tokens", format!("{n} is not in 1..{MAX_LENGTH_LIMIT}")));
            }
        }
        if let Some(n) = self.max_length {
            if !(2..=MAX_LENGTH_LIMIT).contains(&n) {
                return Err(Error::invalid("max_length", format!("{n} is not in 2..={MAX_LENGTH_LIMIT} (it counts the decoder start token)")));
            }
        }
        if self.bad_words_ids.iter().any(Vec::is_empty) {
            return Err(Error::invalid("bad_words_ids", "an empty token sequence"));
        }
        Ok(())
    }

    /// The longest output for `model` (start token included): `max_new_tokens + 1`, else
    /// `max_length`, else 21 capped at `max_position_embeddings` (transformers' rules), and
    /// never more tokens than the decoder has positions for.
    pub fn resolved_max_length(&self, info: &Seq2SeqInfo) -> usize {
        let wanted = match (self.max_new_tokens, self.max_length) {
            (Some(n), _) => n + 1,
            (None, Some(n)) => n,
            (None, None) => self.default_length_cap.map_or(21, |c| c.min(21)),
        };
        // The last token is never fed to the decoder, so max_target_positions + 1 tokens fit.
        let model_cap = info.max_target_positions.map_or(MAX_LENGTH_LIMIT, |p| p.saturating_add(1));
        wanted.min(model_cap).clamp(2, MAX_LENGTH_LIMIT)
    }
}

fn read_json(path: &Path) -> Result<Option<Value>> {
    match std::fs::read_to_string(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path, e)),
        Ok(text) => serde_json::from_str(&text).map(Some).map_err(|e| Error::format(path, format!("invalid JSON: {e}"))),
    }
}

/// One generated sequence: the decoder start token, the generated tokens and, when the model
/// chose (or was forced to) end, the EOS token — transformers' `generate` output cut after
/// the first EOS.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Hypothesis {
    pub ids: Vec<u32>,
    /// Beam search: transformers' `sequences_scores` (sum of the processed log-probabilities
    /// divided by `generated_len ** length_penalty`). Greedy: the sum of the chosen tokens'
    /// log-probabilities after the processors, without length penalty.
    pub score: f32,
}

/// The processors transformers' `generate` builds from the settings, in its order:
/// no-repeat n-grams, bad words, min length, forced BOS, forced EOS.
#[derive(Debug, Clone)]
pub(crate) struct Processors {
    pub no_repeat_ngram_size: usize,
    /// Bad word sequences minus the single-token EOS ones (transformers drops those).
    pub bad_words: Vec<Vec<u32>>,
    pub eos: Vec<u32>,
    /// EOS is banned while the sequence (start token included) is shorter than this.
    pub min_length: usize,
    pub forced_bos: Option<u32>,
    pub forced_eos: Vec<u32>,
    pub max_length: usize,
}

impl Processors {
    /// Applies every processor to one row's scores; `seq` is the row's tokens so far (start
    /// token included).
    pub fn apply(&self, scores: &mut [f32], seq: &[u32]) {
        let cur_len = seq.len();
        let n = self.no_repeat_ngram_size;
        if n > 0 && cur_len >= n {
            // A window of n tokens whose first n-1 equal the last n-1 tokens bans its last.
            let prefix = &seq[cur_len + 1 - n..];
            for w in seq.windows(n) {
                if &w[..n - 1] == prefix {
                    if let Some(s) = scores.get_mut(w[n - 1] as usize) {
                        *s = f32::NEG_INFINITY;
                    }
                }
            }
        }
        for bad in &self.bad_words {
            let (last, prefix) = bad.split_last().expect("validated non-empty");
            if prefix.len() <= cur_len && seq.ends_with(prefix) {
                if let Some(s) = scores.get_mut(*last as usize) {
                    *s = f32::NEG_INFINITY;
                }
            }
        }
        if cur_len < self.min_length {
            for &e in &self.eos {
                if let Some(s) = scores.get_mut(e as usize) {
                    *s = f32::NEG_INFINITY;
                }
            }
        }
        if let Some(b) = self.forced_bos.filter(|_| cur_len == 1) {
            force(scores, &[b]);
        }
        if !self.forced_eos.is_empty() && cur_len + 1 == self.max_length {
            force(scores, &self.forced_eos);
        }
    }
}

fn force(scores: &mut [f32], ids: &[u32]) {
    scores.fill(f32::NEG_INFINITY);
    for &i in ids {
        if let Some(s) = scores.get_mut(i as usize) {
            *s = 0.0;
        }
    }
}

/// In-place log-softmax in f32 (as torch's `log_softmax` on f32 logits).
pub(crate) fn log_softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        return;
    }
    let sum: f32 = x.iter().map(|v| (v - max).exp()).sum();
    let lse = sum.ln();
    for v in x.iter_mut() {
        *v = *v - max - lse;
    }
}

/// Longest source `generate` accepts for a model: its encoder positions, else
/// [`MAX_SOURCE_TOKENS`].
pub fn max_source_tokens(info: &Seq2SeqInfo) -> usize {
    info.max_source_positions.unwrap_or(MAX_SOURCE_TOKENS)
}

/// Everything [`generate`] fixed before the first step.
struct Plan {
    start: u32,
    eos: Vec<u32>,
    max_length: usize,
    processors: Processors,
    vocab: usize,
}

fn plan(model: &dyn Seq2Seq, sources: &[Vec<u32>], s: &Seq2SeqGeneration) -> Result<Plan> {
    s.validate()?;
    let info = model.info();
    let vocab = info.vocab_size;
    if sources.is_empty() {
        return Err(Error::invalid("sources", "no source sequence to generate from"));
    }
    if sources.len() * s.num_beams > MAX_ROWS {
        return Err(Error::invalid(
            "batch",
            format!("{} sources × {} beams exceed {MAX_ROWS} decoder rows; split the batch", sources.len(), s.num_beams),
        ));
    }
    for (i, src) in sources.iter().enumerate() {
        if src.is_empty() {
            return Err(Error::invalid("source", format!("source {i} has no tokens")));
        }
        let max = max_source_tokens(info);
        if src.len() > max {
            return Err(Error::invalid("source", format!("source {i} has {} tokens; this {} model takes at most {max}", src.len(), info.architecture)));
        }
        if let Some(&bad) = src.iter().find(|&&t| t as usize >= vocab) {
            return Err(Error::invalid("source", format!("source {i} has token id {bad}, outside the vocabulary of {vocab}")));
        }
    }
    let start = s.decoder_start_token_id.unwrap_or(info.decoder_start_token_id);
    let eos = if s.eos_token_ids.is_empty() { vec![info.eos_token_id] } else { s.eos_token_ids.clone() };
    let check = |what: &str, id: u32| -> Result<()> {
        if id as usize >= vocab {
            return Err(Error::invalid(what, format!("token id {id} is outside the vocabulary of {vocab}")));
        }
        Ok(())
    };
    check("decoder_start_token_id", start)?;
    eos.iter().try_for_each(|&e| check("eos_token_id", e))?;
    s.forced_eos_token_ids.iter().try_for_each(|&e| check("forced_eos_token_id", e))?;
    if let Some(b) = s.forced_bos_token_id {
        check("forced_bos_token_id", b)?;
    }
    s.bad_words_ids.iter().flatten().try_for_each(|&t| check("bad_words_ids", t))?;
    let max_length = s.resolved_max_length(info);
    let bad_words = s.bad_words_ids.iter().filter(|w| !(w.len() == 1 && eos.contains(&w[0]))).cloned().collect();
    let processors = Processors {
        no_repeat_ngram_size: s.no_repeat_ngram_size,
        bad_words,
        eos: eos.clone(),
        min_length: s.min_new_tokens.map_or(s.min_length, |n| n + 1),
        forced_bos: s.forced_bos_token_id,
        forced_eos: s.forced_eos_token_ids.clone(),
        max_length,
    };
    Ok(Plan { start, eos, max_length, processors, vocab })
}

/// Generates one hypothesis per source: greedy when `settings.num_beams == 1`, else beam
/// search. Sources are token ids (EOS already appended, as the tokenizers do).
pub fn generate(model: &dyn Seq2Seq, sources: &[Vec<u32>], settings: &Seq2SeqGeneration) -> Result<Vec<Hypothesis>> {
    let plan = plan(model, sources, settings)?;
    let (ids, mask) = source_batch(sources, model.info().pad_token_id)?;
    let encoded = model.encode(&ids, &mask)?;
    if settings.num_beams == 1 {
        greedy(model, encoded, mask, sources.len(), &plan)
    } else {
        let rows: Vec<u32> = (0..sources.len() as u32).flat_map(|b| std::iter::repeat_n(b, settings.num_beams)).collect();
        let idx = Tensor::new(rows.as_slice(), &Device::Cpu)?;
        let beam = BeamSettings { num_beams: settings.num_beams, length_penalty: settings.length_penalty, early_stopping: settings.early_stopping };
        beam_search(model, encoded.index_select(&idx, 0)?, mask.index_select(&idx, 0)?, sources.len(), &plan, &beam)
    }
}

/// Right-padded u32 `input_ids` and `attention_mask`.
fn source_batch(sources: &[Vec<u32>], pad: u32) -> Result<(Tensor, Tensor)> {
    let s = sources.iter().map(Vec::len).max().unwrap_or(0);
    let mut ids = Vec::with_capacity(sources.len() * s);
    let mut mask = Vec::with_capacity(sources.len() * s);
    for src in sources {
        ids.extend(src.iter().copied().chain(std::iter::repeat_n(pad, s - src.len())));
        mask.extend((0..s).map(|i| u32::from(i < src.len())));
    }
    let shape = (sources.len(), s);
    Ok((Tensor::from_vec(ids, shape, &Device::Cpu)?, Tensor::from_vec(mask, shape, &Device::Cpu)?))
}

/// One decoder step: feeds each row's last token and returns the rows' next-token logits.
fn step(model: &dyn Seq2Seq, last: &[u32], encoded: &Tensor, mask: &Tensor, cache: &mut Seq2SeqCache, vocab: usize) -> Result<Vec<f32>> {
    let ids = Tensor::from_vec(last.to_vec(), (last.len(), 1), &Device::Cpu)?;
    let logits = model.decode(&ids, encoded, mask, cache)?;
    let dims = logits.dims().to_vec();
    if dims != [last.len(), 1, vocab] {
        return Err(Error::Shape { name: "decoder logits".into(), expected: vec![last.len(), 1, vocab], found: dims });
    }
    Ok(logits.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
}

/// Keeps rows `keep` of the encoder output, its mask and the cache.
fn keep_rows(keep: &[u32], encoded: &mut Tensor, mask: &mut Tensor, cache: &mut Seq2SeqCache) -> Result<()> {
    let idx = Tensor::new(keep, &Device::Cpu)?;
    *encoded = encoded.index_select(&idx, 0)?;
    *mask = mask.index_select(&idx, 0)?;
    cache.reorder(keep)
}

/// Greedy search: argmax of the processed logits; a row stops at EOS, all stop at max length.
fn greedy(model: &dyn Seq2Seq, mut encoded: Tensor, mut mask: Tensor, batch: usize, plan: &Plan) -> Result<Vec<Hypothesis>> {
    let mut seqs: Vec<Vec<u32>> = vec![vec![plan.start]; batch];
    let mut scores = vec![0f32; batch];
    let mut active: Vec<usize> = (0..batch).collect();
    let mut cache = model.new_cache();
    while !active.is_empty() && seqs[active[0]].len() < plan.max_length {
        let last: Vec<u32> = active.iter().map(|&b| *seqs[b].last().expect("starts with one token")).collect();
        let logits = step(model, &last, &encoded, &mask, &mut cache, plan.vocab)?;
        let mut keep = Vec::with_capacity(active.len());
        for (r, &b) in active.iter().enumerate() {
            let mut row = logits[r * plan.vocab..(r + 1) * plan.vocab].to_vec();
            plan.processors.apply(&mut row, &seqs[b]);
            let next = argmax(&row);
            log_softmax(&mut row);
            scores[b] += row[next];
            seqs[b].push(next as u32);
            if !plan.eos.contains(&(next as u32)) {
                keep.push(r as u32);
            }
        }
        if keep.len() < active.len() {
            active = keep.iter().map(|&r| active[r as usize]).collect();
            if !active.is_empty() {
                keep_rows(&keep, &mut encoded, &mut mask, &mut cache)?;
            }
        }
    }
    Ok(seqs.into_iter().zip(scores).map(|(ids, score)| Hypothesis { ids, score }).collect())
}

/// The first index of the largest value (torch's `argmax`); NaN never wins.
fn argmax(x: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] || (x[best].is_nan() && !v.is_nan()) {
            best = i;
        }
    }
    best
}

struct BeamSettings {
    num_beams: usize,
    length_penalty: f32,
    early_stopping: EarlyStopping,
}

/// transformers marks impossible candidates by adding this.
const PENALTY: f32 = -1.0e9;

/// One source's beam search state.
struct BeamRow {
    /// `num_beams` running hypotheses, best first, with their summed log-probs.
    running: Vec<(Vec<u32>, f32)>,
    /// Up to `num_beams` finished hypotheses with their length-penalized scores, best first.
    finished: Vec<(Vec<u32>, f32)>,
    /// transformers' `is_early_stop_heuristic_unsatisfied` (sticky once false).
    improvable: bool,
}

/// Indices of the `k` largest values, largest first; ties go to the lower index (NaN counts
/// as -inf).
fn top_k(values: &[f32], k: usize) -> Vec<usize> {
    let key = |i: usize| if values[i].is_nan() { f32::NEG_INFINITY } else { values[i] };
    let cmp = |a: &usize, b: &usize| key(*b).partial_cmp(&key(*a)).unwrap_or(Ordering::Equal).then(a.cmp(b));
    let mut idx: Vec<usize> = (0..values.len()).collect();
    let k = k.min(idx.len());
    if k < idx.len() && k > 0 {
        idx.select_nth_unstable_by(k - 1, cmp);
    }
    idx.truncate(k);
    idx.sort_by(cmp);
    idx
}

fn length_divisor(len: usize, length_penalty: f32) -> f32 {
    (len as f64).powf(length_penalty as f64) as f32
}

/// Beam search as transformers 5.24 `_beam_search` (no sampling, one returned sequence).
fn beam_search(model: &dyn Seq2Seq, mut encoded: Tensor, mut mask: Tensor, batch: usize, plan: &Plan, bs: &BeamSettings) -> Result<Vec<Hypothesis>> {
    let nb = bs.num_beams;
    let v = plan.vocab;
    let k = 2.max(1 + plan.eos.len()) * nb;
    let mut rows: Vec<BeamRow> = (0..batch)
        .map(|_| BeamRow {
            // Only the first beam is live at the start, so the beams do not all pick the same tokens.
            running: (0..nb).map(|j| (vec![plan.start], if j == 0 { 0.0 } else { PENALTY })).collect(),
            finished: Vec::new(),
            improvable: true,
        })
        .collect();
    let mut active: Vec<usize> = (0..batch).collect();
    let mut cache = model.new_cache();
    let mut cur_len = 1;
    while !active.is_empty() && cur_len < plan.max_length {
        let last: Vec<u32> = active.iter().flat_map(|&b| rows[b].running.iter().map(|(s, _)| *s.last().expect("non-empty"))).collect();
        let logits = step(model, &last, &encoded, &mask, &mut cache, v)?;
        let hits_max = cur_len + 1 >= plan.max_length;
        let mut next_active = Vec::with_capacity(active.len());
        let mut gather = Vec::with_capacity(active.len() * nb);
        for (p, &b) in active.iter().enumerate() {
            let row = &mut rows[b];
            // Accumulated log-probs over (beam, token), flattened as transformers does.
            let mut acc = logits[p * nb * v..(p + 1) * nb * v].to_vec();
            for (j, (seq, score)) in row.running.iter().enumerate() {
                let lp = &mut acc[j * v..(j + 1) * v];
                log_softmax(lp);
                plan.processors.apply(lp, seq);
                lp.iter_mut().for_each(|x| *x += score);
            }
            let cands: Vec<(usize, u32, f32, bool)> = top_k(&acc, k)
                .into_iter()
                .map(|i| {
                    let tok = (i % v) as u32;
                    (i / v, tok, acc[i], hits_max || plan.eos.contains(&tok))
                })
                .collect();
            // Running beams for the next step: the best candidates that did not stop.
            let masked: Vec<f32> = cands.iter().map(|c| c.2 + if c.3 { PENALTY } else { 0.0 }).collect();
            let chosen = top_k(&masked, nb);
            // Finished hypotheses: only stopped candidates among the top num_beams count.
            let full_stop = row.finished.len() == nb && bs.early_stopping == EarlyStopping::WhenFull;
            if row.improvable && !full_stop {
                let div = length_divisor(cur_len, bs.length_penalty);
                for (c, &(beam, tok, score, hit)) in cands.iter().enumerate() {
                    let s = score / div;
                    if c < nb && hit && s.is_finite() {
                        let mut seq = row.running[beam].0.clone();
                        seq.push(tok);
                        row.finished.push((seq, s));
                    }
                }
                // Stable: on equal scores the earlier hypothesis stays ahead.
                row.finished.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap_or(Ordering::Equal));
                row.finished.truncate(nb);
            }
            let running: Vec<(Vec<u32>, f32)> = chosen
                .iter()
                .map(|&c| {
                    let (beam, tok, _, _) = cands[c];
                    let mut seq = row.running[beam].0.clone();
                    seq.push(tok);
                    (seq, masked[c])
                })
                .collect();
            let origins: Vec<u32> = chosen.iter().map(|&c| (p * nb + cands[c].0) as u32).collect();
            row.running = running;
            // Early-stop heuristic, at the new length.
            let hyp_len = if bs.early_stopping == EarlyStopping::Never && bs.length_penalty > 0.0 { plan.max_length - 1 } else { cur_len };
            let best_possible = row.running[0].1 / length_divisor(hyp_len, bs.length_penalty);
            let worst = if row.finished.len() < nb { PENALTY } else { row.finished.last().map_or(PENALTY, |f| f.1) };
            row.improvable &= best_possible > worst;
            let done = !row.improvable || (row.finished.len() == nb && bs.early_stopping == EarlyStopping::WhenFull);
            if !done {
                next_active.push(b);
                gather.extend(origins);
            }
        }
        cur_len += 1;
        active = next_active;
        if !active.is_empty() && cur_len < plan.max_length {
            keep_rows(&gather, &mut encoded, &mut mask, &mut cache)?;
        }
    }
    Ok(rows
        .into_iter()
        .map(|r| match r.finished.into_iter().next() {
            Some((ids, score)) => Hypothesis { ids, score },
            // Nothing finished (every candidate impossible): the best running beam.
            None => {
                let (ids, s) = r.running.into_iter().next().expect("num_beams >= 1");
                let score = s / length_divisor(ids.len() - 1, bs.length_penalty);
                Hypothesis { ids, score }
            }
        })
        .collect())
}

#[cfg(test)]
#[path = "seq2seq_tests.rs"]
mod tests;
