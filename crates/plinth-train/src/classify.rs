//! Encoders become classifiers: a linear head trained on a frozen sentence encoder (a "linear
//! probe", the head SetFit fits after its contrastive stage), written as a Hugging Face
//! `*ForSequenceClassification` directory that plinth's own loader reads back, so that
//! `plinth classify` (and `EncoderModel::classify`) serves it.
//!
//! Data ([`read_labelled`]): CSV or TSV with a header naming a `text` and a `label` column
//! (RFC 4180 quoting: fields in double quotes may hold the delimiter, line breaks and doubled
//! quotes), or JSON lines `{"text": ..., "label": ...}`. Label ids are the labels sorted
//! alphabetically.
//!
//! Training ([`train_head`]): every text is embedded once, with the model's own
//! sentence-transformers pooling and normalisation (`EncoderModel::embed`); the encoder is
//! frozen, so the head is multinomial logistic regression `softmax(W e + b)` on those vectors,
//! fitted by AdamW on mini-batches in a seeded order with cross-entropy loss. While fitting,
//! the features are centred on their training mean and divided by their mean L2 norm (both
//! folded back into `W` and `b` afterwards), so that one learning rate suits normalised and raw
//! embeddings alike. A held-out set is scored after
//! every epoch; the majority class is the baseline. LoRA on the encoder itself is not done
//! here: the probe is what runs in seconds on a CPU.
//!
//! Output ([`save_classifier`]): the base's tokenizer files (and `sentence_bert_config.json`,
//! so inputs are cut at the same length as when the embeddings were computed), `config.json`
//! with `architectures: ["BertForSequenceClassification"]` (or the RoBERTa-family name),
//! `id2label` / `label2id` / `num_labels`, and `model.safetensors` with the encoder's tensors
//! under `bert.` (`roberta.`) and the head as `classifier.weight` / `classifier.bias`. BERT's
//! own classification head reads the pooler (dense + tanh on `[CLS]`), which a probe on mean
//! pooled embeddings does not map onto, so the config also says `"plinth_pooling": "mean"` (or
//! `"cls"`) and `"plinth_normalize"`: plinth's BERT loader then feeds `classifier` the same
//! sentence embedding the head was trained on. transformers loads the directory as a
//! `BertForSequenceClassification` but ignores those two fields and runs the classifier on
//! the pooler, so its predictions differ; plinth's are the trained head's. The directory is
//! written beside `out` under a hidden name and renamed into place when complete.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use plinth_core::{Error, Result};
use plinth_io::safetensors::{read_config, SafetensorsWeights};
use plinth_tasks::{EmbedInput, EmbedOptions, EncoderModel, LabelScore, Pooling};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::merge::TOKENIZER_FILES;
use crate::optim::{AdamW, AdamWConfig};
use crate::staging::Staging;

/// One labelled example: `(text, label)`.
pub type Labelled = (String, String);

// ---------------------------------------------------------------------------------------
// Data
// ---------------------------------------------------------------------------------------

/// Reads labelled texts: `.jsonl` / `.json` as JSON lines (`{"text", "label"}`; a label may
/// be a string, an integer or a boolean), `.tsv` as tab-separated and anything else as CSV,
/// both with a header holding `text` and `label` columns (any order, any case, other columns
/// ignored). Blank lines are skipped; an empty text or label, a row with the wrong number of
/// fields or a broken quote is an error naming its line.
pub fn read_labelled(path: &Path) -> Result<Vec<Labelled>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let text = String::from_utf8(bytes).map_err(|e| Error::format(path, format!("not UTF-8 text: {e}")))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    let out = match ext.as_str() {
        "jsonl" | "json" | "ndjson" => labelled_from_jsonl(text).map_err(|why| Error::format(path, why))?,
        "tsv" => labelled_from_csv(text, '\t').map_err(|why| Error::format(path, why))?,
        _ => labelled_from_csv(text, ',').map_err(|why| Error::format(path, why))?,
    };
    if out.is_empty() {
        return Err(Error::format(path, "no examples (the file has a header or nothing at all)"));
    }
    Ok(out)
}

fn labelled_from_jsonl(text: &str) -> std::result::Result<Vec<Labelled>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let n = i + 1;
        let v: Value = serde_json::from_str(line).map_err(|e| format!("line {n}: not valid JSON: {e}"))?;
        let text = match v.get("text") {
            Some(Value::String(s)) => s.clone(),
            Some(_) => return Err(format!("line {n}: 'text' must be a string")),
            None => return Err(format!("line {n}: no 'text' field")),
        };
        let label = match v.get("label") {
            Some(Value::String(s)) => s.trim().to_string(),
            Some(Value::Number(x)) if x.is_i64() || x.is_u64() => x.to_string(),
            Some(Value::Bool(b)) => b.to_string(),
            Some(_) => return Err(format!("line {n}: 'label' must be a string or an integer")),
            None => return Err(format!("line {n}: no 'label' field")),
        };
        out.push(check_row(text, label, n)?);
    }
    Ok(out)
}

fn check_row(text: String, label: String, line: usize) -> std::result::Result<Labelled, String> {
    if text.trim().is_empty() {
        return Err(format!("line {line}: empty text"));
    }
    if label.is_empty() {
        return Err(format!("line {line}: empty label"));
    }
    Ok((text, label))
}

fn labelled_from_csv(text: &str, delimiter: char) -> std::result::Result<Vec<Labelled>, String> {
    let rows = parse_csv(text, delimiter)?;
    let Some((_, header)) = rows.first() else { return Ok(Vec::new()) };
    let names: Vec<String> = header.iter().map(|h| h.trim().to_ascii_lowercase()).collect();
    let column = |want: &str| {
        names.iter().position(|n| n == want).ok_or_else(|| {
            format!("line 1: the header has no '{want}' column (columns: {}; expected 'text' and 'label')", header.join(", "))
        })
    };
    let (ti, li) = (column("text")?, column("label")?);
    let mut out = Vec::with_capacity(rows.len() - 1);
    for (line, fields) in rows.into_iter().skip(1) {
        if fields.len() != names.len() {
            return Err(format!("line {line}: {} fields, but the header has {}", fields.len(), names.len()));
        }
        let mut fields = fields;
        let label = std::mem::take(&mut fields[li]).trim().to_string();
        let text = std::mem::take(&mut fields[ti]);
        out.push(check_row(text, label, line)?);
    }
    Ok(out)
}

/// Splits CSV text into records of fields, each with the (1-based) line it starts on.
/// Blank lines are skipped. RFC 4180: a field that starts with `"` runs to the next lone `"`
/// (`""` is one quote) and may hold the delimiter and line breaks; blanks around a quoted
/// field are dropped. A quote inside an unquoted field, or anything but blanks and a
/// delimiter or line end after a closing quote, is an error.
fn parse_csv(text: &str, delimiter: char) -> std::result::Result<Vec<(usize, Vec<String>)>, String> {
    let mut rows = Vec::new();
    let mut chars = text.chars().peekable();
    let mut line = 1;
    while chars.peek().is_some() {
        let start = line;
        let mut fields = Vec::new();
        let mut field = String::new();
        let mut quoted_field = false;
        loop {
            // At the start of a field; blanks before an opening quote are dropped.
            let mut look = chars.clone();
            while look.peek().is_some_and(|&c| c != delimiter && (c == ' ' || c == '\t')) {
                look.next();
            }
            if look.peek() == Some(&'"') {
                chars = look;
                chars.next();
                quoted_field = true;
                let open = line;
                loop {
                    match chars.next() {
                        None => return Err(format!("line {open}: a quoted field is never closed")),
                        Some('"') if chars.peek() == Some(&'"') => {
                            chars.next();
                            field.push('"');
                        }
                        Some('"') => break,
                        Some(c) => {
                            if c == '\n' {
                                line += 1;
                            }
                            field.push(c);
                        }
                    }
                }
                // Blanks between the closing quote and the delimiter are dropped.
                while chars.peek().is_some_and(|&c| c != delimiter && (c == ' ' || c == '\t')) {
                    chars.next();
                }
                match chars.peek() {
                    None | Some('\n') | Some('\r') => {}
                    Some(&c) if c == delimiter => {}
                    Some(&c) => return Err(format!("line {line}: '{c}' after a closing quote (a quoted field must end at a delimiter or the line's end)")),
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c == delimiter || c == '\n' || c == '\r' {
                        break;
                    }
                    if c == '"' {
                        return Err(format!("line {line}: a quote inside an unquoted field (quote the whole field and double the quote: \"a \"\"b\"\" c\")"));
                    }
                    field.push(c);
                    chars.next();
                }
            }
            fields.push(std::mem::take(&mut field));
            match chars.next() {
                Some(c) if c == delimiter => continue,
                Some('\r') => {
                    if chars.peek() == Some(&'\n') {
                        chars.next();
                    }
                    line += 1;
                    break;
                }
                Some('\n') => {
                    line += 1;
                    break;
                }
                // The end of the text (a field stops at nothing else).
                _ => break,
            }
        }
        let blank = fields.len() == 1 && fields[0].trim().is_empty() && !quoted_field;
        if !blank {
            rows.push((start, fields));
        }
    }
    Ok(rows)
}

/// The distinct labels, sorted: label `i` of the head is `labels_of(..)[i]`.
pub fn labels_of(data: &[Labelled]) -> Vec<String> {
    let mut labels: Vec<String> = data.iter().map(|(_, l)| l.clone()).collect();
    labels.sort();
    labels.dedup();
    labels
}

/// Splits off a held-out set of about `fraction` of the examples, per label (stratified)
/// and in a seeded random order, keeping at least one example of every label for training.
/// Returns `(train, held_out)`; the examples keep their file order within each part.
pub fn split_holdout(data: &[Labelled], fraction: f64, seed: u64) -> (Vec<Labelled>, Vec<Labelled>) {
    let mut by_label: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, (_, l)) in data.iter().enumerate() {
        by_label.entry(l.as_str()).or_default().push(i);
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut held = vec![false; data.len()];
    for idx in by_label.values_mut() {
        idx.shuffle(&mut rng);
        let k = ((idx.len() as f64 * fraction.clamp(0.0, 1.0)).round() as usize).min(idx.len() - 1);
        idx[..k].iter().for_each(|&i| held[i] = true);
    }
    let (mut train, mut eval) = (Vec::new(), Vec::new());
    for (ex, h) in data.iter().zip(held) {
        if h { eval.push(ex.clone()) } else { train.push(ex.clone()) }
    }
    (train, eval)
}

// ---------------------------------------------------------------------------------------
// The head
// ---------------------------------------------------------------------------------------

/// Which sentence embedding the head reads (the base's sentence-transformers pooling).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbePooling {
    /// Mean of the real tokens' hidden states.
    Mean,
    /// The first token's hidden state.
    Cls,
}

impl ProbePooling {
    /// The value of `"plinth_pooling"` in the written config.
    pub fn name(self) -> &'static str {
        match self {
            ProbePooling::Mean => "mean",
            ProbePooling::Cls => "cls",
        }
    }

    /// The probe pooling for a model's sentence-transformers pooling; other modes (max,
    /// mean_sqrt_len, last token, concatenations) have no head in plinth's loader.
    pub fn of(p: Pooling) -> Result<Self> {
        if p == Pooling::MEAN {
            Ok(ProbePooling::Mean)
        } else if p == Pooling::CLS {
            Ok(ProbePooling::Cls)
        } else {
            Err(Error::invalid(
                "pooling",
                format!("{p:?}: a classification head can be trained on mean or cls pooled embeddings only"),
            ))
        }
    }

    fn pooling(self) -> Pooling {
        match self {
            ProbePooling::Mean => Pooling::MEAN,
            ProbePooling::Cls => Pooling::CLS,
        }
    }
}

/// A trained linear classifier over sentence embeddings: `logits = W e + b`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinearHead {
    /// Label of each row, sorted (id order).
    pub labels: Vec<String>,
    /// Embedding width.
    pub dim: usize,
    /// `[labels, dim]`, row-major, applied to the embedding as the model pools (and
    /// normalises) it.
    pub weight: Vec<f32>,
    /// `[labels]`.
    pub bias: Vec<f32>,
    pub pooling: ProbePooling,
    /// Whether embeddings are L2-normalised before the head.
    pub normalize: bool,
}

impl LinearHead {
    /// The logits of one embedding.
    pub fn logits(&self, embedding: &[f32]) -> Vec<f32> {
        self.weight
            .chunks(self.dim.max(1))
            .zip(&self.bias)
            .map(|(row, b)| row.iter().zip(embedding).map(|(w, x)| w * x).sum::<f32>() + b)
            .collect()
    }

    /// Index of the best label (the first of equal maxima).
    pub fn predict_id(&self, embedding: &[f32]) -> usize {
        argmax(&self.logits(embedding))
    }

    /// Every label with its softmax probability, best first (ties keep label order), as
    /// `EncoderModel::classify` returns them.
    pub fn scores(&self, embedding: &[f32]) -> Vec<LabelScore> {
        let mut s: Vec<LabelScore> = plinth_tasks::classify::softmax(&self.logits(embedding))
            .into_iter()
            .zip(&self.labels)
            .map(|(score, label)| LabelScore { label: label.clone(), score })
            .collect();
        s.sort_by(|a, b| b.score.total_cmp(&a.score));
        s
    }

    /// The options that embed texts the way this head expects them.
    pub fn embed_options(&self) -> EmbedOptions {
        EmbedOptions { normalize: Some(self.normalize), ..EmbedOptions::default() }
    }

    /// Classifies texts in memory: embeds them with `model` (which must pool as the head
    /// was trained) and applies the head.
    pub fn classify(&self, model: &EncoderModel, texts: &[&str]) -> Result<Vec<Vec<LabelScore>>> {
        if model.pooling != self.pooling.pooling() || model.embedding_dim() != self.dim {
            return Err(Error::invalid(
                "model",
                format!(
                    "{} pools {:?} into {} values; the head was trained on {} pooling of {}",
                    model.dir.display(),
                    model.pooling,
                    model.embedding_dim(),
                    self.pooling.name(),
                    self.dim
                ),
            ));
        }
        let e = model.embed(texts, self.embed_options())?;
        Ok(e.vectors.iter().map(|v| self.scores(v)).collect())
    }
}

fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}

// ---------------------------------------------------------------------------------------
// Training
// ---------------------------------------------------------------------------------------

/// How to train the head.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ClassifyConfig {
    pub epochs: usize,
    /// Examples per optimizer step.
    pub batch_size: usize,
    pub lr: f64,
    /// AdamW's decoupled weight decay on `W` (not on the bias).
    pub weight_decay: f64,
    /// Seeds the example order (epoch `e` uses `seed + e`) and the held-out split.
    pub seed: u64,
    /// When no held-out set is given: the fraction of the data held out (stratified by
    /// label); 0 trains on everything.
    pub eval_fraction: f64,
    /// Texts per encoder forward pass while embedding.
    pub embed_batch_size: usize,
}

impl Default for ClassifyConfig {
    fn default() -> Self {
        ClassifyConfig { epochs: 100, batch_size: 16, lr: 1e-2, weight_decay: 0.01, seed: 42, eval_fraction: 0.0, embed_batch_size: 32 }
    }
}

impl ClassifyConfig {
    pub fn validate(&self) -> Result<()> {
        for (flag, v) in [("--epochs", self.epochs), ("--batch-size", self.batch_size), ("embed batch size", self.embed_batch_size)] {
            if v == 0 {
                return Err(Error::invalid(flag, "must be at least 1"));
            }
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(Error::invalid("--lr", format!("must be positive, got {}", self.lr)));
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            return Err(Error::invalid("--weight-decay", format!("must be 0 or more, got {}", self.weight_decay)));
        }
        if !(0.0..1.0).contains(&self.eval_fraction) {
            return Err(Error::invalid("--eval-fraction", format!("must be in [0, 1), got {}", self.eval_fraction)));
        }
        Ok(())
    }
}

/// Loss and accuracy after one epoch (over the whole training set, and the held-out set
/// when there is one).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EpochStats {
    /// 1-based.
    pub epoch: usize,
    /// Mean cross-entropy over the training set with the epoch's final weights.
    pub train_loss: f32,
    pub train_accuracy: f32,
    pub eval_loss: Option<f32>,
    pub eval_accuracy: Option<f32>,
}

/// What training did and how well the head does.
#[derive(Debug, Clone, Serialize)]
pub struct ClassifyReport {
    /// Label names in id order.
    pub labels: Vec<String>,
    /// Training examples per label, in id order.
    pub label_counts: Vec<usize>,
    pub train_examples: usize,
    pub eval_examples: usize,
    pub dim: usize,
    pub pooling: ProbePooling,
    pub normalize: bool,
    /// The most frequent training label (the first in id order on a tie): the baseline.
    pub majority_label: String,
    /// Accuracy of always answering the majority label, before training.
    pub baseline_train_accuracy: f32,
    pub baseline_eval_accuracy: Option<f32>,
    /// After the last epoch.
    pub train_loss: f32,
    pub train_accuracy: f32,
    pub eval_loss: Option<f32>,
    pub eval_accuracy: Option<f32>,
    pub epochs: Vec<EpochStats>,
    pub embed_seconds: f64,
    pub train_seconds: f64,
    /// Set by [`tune_classifier`]: the directory written and its files.
    pub out: Option<PathBuf>,
    pub files: Vec<String>,
}

/// What [`train_head`] reports while it runs.
#[derive(Debug, Clone, Copy)]
pub enum ClassifyProgress<'a> {
    /// Texts embedded so far, of `total`.
    Embedding { done: usize, total: usize },
    Epoch(&'a EpochStats),
}

/// Trains a linear head on `model`'s frozen sentence embeddings of `train` and scores it on
/// `eval` (may be empty) after every epoch. Labels are those of `train`, sorted; a held-out
/// label that training never saw is an error.
pub fn train_head(
    model: &EncoderModel,
    train: &[Labelled],
    eval: &[Labelled],
    cfg: &ClassifyConfig,
    progress: &mut dyn FnMut(ClassifyProgress),
) -> Result<(LinearHead, ClassifyReport)> {
    cfg.validate()?;
    let pooling = ProbePooling::of(model.pooling)?;
    let labels = labels_of(train);
    if labels.len() < 2 {
        return Err(Error::invalid("training data", format!("{} label(s) ({}); a classifier needs at least 2", labels.len(), labels.join(", "))));
    }
    let ids: HashMap<&str, u32> = labels.iter().enumerate().map(|(i, l)| (l.as_str(), i as u32)).collect();
    let id_of = |set: &str, (i, (_, l)): (usize, &Labelled)| {
        ids.get(l.as_str()).copied().ok_or_else(|| {
            Error::invalid(format!("{set} example {}", i + 1), format!("label '{l}' does not occur in the training data ({})", labels.join(", ")))
        })
    };
    let y_train = train.iter().enumerate().map(|x| id_of("training", x)).collect::<Result<Vec<u32>>>()?;
    let y_eval = eval.iter().enumerate().map(|x| id_of("held-out", x)).collect::<Result<Vec<u32>>>()?;

    // Embed every text once; the encoder never changes.
    let t0 = Instant::now();
    let texts: Vec<EmbedInput> = train.iter().chain(eval).map(|(t, _)| EmbedInput::Text(t.as_str())).collect();
    let total = texts.len();
    let opts = EmbedOptions { normalize: Some(model.normalize), batch_size: cfg.embed_batch_size, ..EmbedOptions::default() };
    let vectors = model.embed_inputs(&texts, opts, &mut |done| progress(ClassifyProgress::Embedding { done, total }))?.vectors;
    let embed_seconds = t0.elapsed().as_secs_f64();
    let dim = model.embedding_dim();
    let (n, k) = (train.len(), labels.len());

    // Fit on features centred on the training mean and scaled to unit mean norm (sentence
    // embeddings share a large common component); both are folded into W and b at the end.
    let mut center = vec![0f32; dim];
    for v in &vectors[..n] {
        center.iter_mut().zip(v).for_each(|(c, x)| *c += x / n as f32);
    }
    let norm = |v: &[f32]| v.iter().zip(&center).map(|(x, c)| (x - c) * (x - c)).sum::<f32>().sqrt();
    let mean_norm = vectors[..n].iter().map(|v| norm(v)).sum::<f32>() / n as f32;
    let scale = if mean_norm.is_finite() && mean_norm > 0.0 { mean_norm } else { 1.0 };
    let dev = Device::Cpu;
    let matrix = |rows: &[Vec<f32>]| -> Result<Tensor> {
        let flat: Vec<f32> = rows.iter().flat_map(|v| v.iter().zip(&center).map(|(x, c)| (x - c) / scale)).collect();
        Ok(Tensor::from_vec(flat, (rows.len(), dim), &dev)?)
    };
    let x_train = matrix(&vectors[..n])?;
    let x_eval = matrix(&vectors[n..])?;
    let t_train = Tensor::new(y_train.as_slice(), &dev)?;
    let t_eval = Tensor::new(y_eval.as_slice(), &dev)?;

    let t1 = Instant::now();
    let w = Var::zeros((k, dim), DType::F32, &dev)?;
    let b = Var::zeros(k, DType::F32, &dev)?;
    let adam = |weight_decay| AdamWConfig { lr: cfg.lr, weight_decay, ..AdamWConfig::default() };
    let mut opt_w = AdamW::new(&[&w], adam(cfg.weight_decay))?;
    let mut opt_b = AdamW::new(&[&b], adam(0.0))?;
    let logits = |x: &Tensor| -> Result<Tensor> { Ok(x.matmul(&w.as_tensor().t()?)?.broadcast_add(b.as_tensor())?) };
    let score = |x: &Tensor, y: &Tensor, want: &[u32]| -> Result<Option<(f32, f32)>> {
        if want.is_empty() {
            return Ok(None);
        }
        let l = logits(x)?;
        let loss = candle_nn::loss::cross_entropy(&l, y)?.to_scalar::<f32>()?;
        let rows = l.to_vec2::<f32>()?;
        let right = rows.iter().zip(want).filter(|(r, &y)| argmax(r) == y as usize).count();
        Ok(Some((loss, right as f32 / want.len() as f32)))
    };

    let mut epochs = Vec::with_capacity(cfg.epochs);
    let mut order: Vec<u32> = (0..n as u32).collect();
    for epoch in 0..cfg.epochs {
        let mut rng = rand::rngs::StdRng::seed_from_u64(cfg.seed.wrapping_add(epoch as u64));
        order.shuffle(&mut rng);
        for chunk in order.chunks(cfg.batch_size) {
            let idx = Tensor::new(chunk, &dev)?;
            let loss = candle_nn::loss::cross_entropy(&logits(&x_train.index_select(&idx, 0)?)?, &t_train.index_select(&idx, 0)?)?;
            let grads = loss.backward()?;
            let grad = |v: &Var| grads.get(v).cloned().ok_or_else(|| Error::invalid("training", "no gradient reached the head"));
            opt_w.step(&[&w], &[grad(&w)?], cfg.lr)?;
            opt_b.step(&[&b], &[grad(&b)?], cfg.lr)?;
        }
        let (train_loss, train_accuracy) = score(&x_train, &t_train, &y_train)?.unwrap_or_default();
        let ev = score(&x_eval, &t_eval, &y_eval)?;
        let stats = EpochStats { epoch: epoch + 1, train_loss, train_accuracy, eval_loss: ev.map(|e| e.0), eval_accuracy: ev.map(|e| e.1) };
        if !train_loss.is_finite() {
            return Err(Error::invalid("training", format!("the loss became {train_loss} in epoch {} (lower --lr)", epoch + 1)));
        }
        progress(ClassifyProgress::Epoch(&stats));
        epochs.push(stats);
    }
    let train_seconds = t1.elapsed().as_secs_f64();

    // W ((x - c) / s) + b = (W / s) x + (b - (W / s) c).
    let weight: Vec<f32> = w.as_tensor().flatten_all()?.to_vec1::<f32>()?.into_iter().map(|v| v / scale).collect();
    let bias: Vec<f32> = b
        .as_tensor()
        .to_vec1::<f32>()?
        .into_iter()
        .zip(weight.chunks(dim.max(1)))
        .map(|(b, row)| b - row.iter().zip(&center).map(|(w, c)| w * c).sum::<f32>())
        .collect();
    let head = LinearHead { labels: labels.clone(), dim, weight, bias, pooling, normalize: model.normalize };

    let mut label_counts = vec![0usize; k];
    y_train.iter().for_each(|&y| label_counts[y as usize] += 1);
    let majority = argmax_usize(&label_counts);
    let share = |ys: &[u32]| (!ys.is_empty()).then(|| ys.iter().filter(|&&y| y as usize == majority).count() as f32 / ys.len() as f32);
    let last = epochs.last().cloned().ok_or_else(|| Error::invalid("--epochs", "must be at least 1"))?;
    let report = ClassifyReport {
        labels: labels.clone(),
        label_counts,
        train_examples: n,
        eval_examples: eval.len(),
        dim,
        pooling,
        normalize: model.normalize,
        majority_label: labels[majority].clone(),
        baseline_train_accuracy: share(&y_train).unwrap_or(0.0),
        baseline_eval_accuracy: share(&y_eval),
        train_loss: last.train_loss,
        train_accuracy: last.train_accuracy,
        eval_loss: last.eval_loss,
        eval_accuracy: last.eval_accuracy,
        epochs,
        embed_seconds,
        train_seconds,
        out: None,
        files: Vec::new(),
    };
    Ok((head, report))
}

fn argmax_usize(v: &[usize]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

// ---------------------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------------------

/// The `*ForSequenceClassification` class and the body's tensor prefix for a `model_type`
/// that plinth's BERT loader reads.
fn family(model_type: &str) -> Option<(&'static str, &'static str)> {
    Some(match model_type {
        "bert" => ("BertForSequenceClassification", "bert"),
        "roberta" => ("RobertaForSequenceClassification", "roberta"),
        "xlm-roberta" => ("XLMRobertaForSequenceClassification", "roberta"),
        "camembert" => ("CamembertForSequenceClassification", "roberta"),
        _ => return None,
    })
}

/// The directory holding the transformer of `model` (the `Transformer` module's path in a
/// sentence-transformers directory, else the directory itself).
fn transformer_dir(model: &EncoderModel) -> Result<PathBuf> {
    let modules = model.dir.join("modules.json");
    if !modules.exists() {
        return Ok(model.dir.clone());
    }
    let text = std::fs::read_to_string(&modules).map_err(|e| Error::io(&modules, e))?;
    let list: Value = serde_json::from_str(&text).map_err(|e| Error::format(&modules, format!("not valid JSON: {e}")))?;
    let sub = list
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m.get("type").and_then(Value::as_str).is_some_and(|t| t.rsplit('.').next() == Some("Transformer")))
        .and_then(|m| m.get("path").and_then(Value::as_str))
        .unwrap_or("");
    Ok(model.dir.join(sub))
}

/// Writes `head` on `model`'s encoder to `out` as a Hugging Face sequence-classification
/// directory (see the module documentation) and returns the files written, sorted. `out`
/// must not exist, or be empty. `EncoderModel::load(out)` then classifies as `head` does.
pub fn save_classifier(model: &EncoderModel, head: &LinearHead, out: &Path) -> Result<Vec<String>> {
    let src = transformer_dir(model)?;
    let mut config = read_config(&src)?;
    let config_path = src.join("config.json");
    let model_type = config.get("model_type").and_then(Value::as_str).unwrap_or("").to_string();
    let (architecture, prefix) = family(&model_type).ok_or_else(|| {
        Error::unsupported(&config_path, format!("model_type '{model_type}' for a trained classification head (bert, roberta, xlm-roberta, camembert)"))
    })?;
    if head.dim != model.info().hidden_size || head.weight.len() != head.labels.len() * head.dim || head.bias.len() != head.labels.len() {
        return Err(Error::invalid(
            "classification head",
            format!("{} labels x {} inputs does not fit the model's hidden size {}", head.labels.len(), head.dim, model.info().hidden_size),
        ));
    }

    // The encoder body, renamed under the task prefix; any head the base had is dropped.
    let w = SafetensorsWeights::open_dir(&src)?;
    let mut names: Vec<&str> = w.names().collect();
    names.sort();
    let mut tensors: Vec<(String, Tensor)> = Vec::with_capacity(names.len() + 2);
    for name in names {
        let body = name.strip_prefix(&format!("{prefix}.")).unwrap_or(name);
        if ["embeddings.", "encoder.", "pooler."].iter().any(|p| body.starts_with(p)) {
            tensors.push((format!("{prefix}.{body}"), w.load(name, DType::F32, &Device::Cpu)?.contiguous()?));
        }
    }
    if !tensors.iter().any(|(n, _)| n.ends_with("embeddings.word_embeddings.weight")) {
        return Err(Error::missing(&src, "the encoder's tensors (embeddings.word_embeddings.weight)"));
    }
    let (k, d) = (head.labels.len(), head.dim);
    tensors.push(("classifier.weight".into(), Tensor::from_vec(head.weight.clone(), (k, d), &Device::Cpu)?));
    tensors.push(("classifier.bias".into(), Tensor::from_vec(head.bias.clone(), k, &Device::Cpu)?));
    drop(w);

    if let Some(obj) = config.as_object_mut() {
        let id2label: serde_json::Map<String, Value> = head.labels.iter().enumerate().map(|(i, l)| (i.to_string(), json!(l))).collect();
        let label2id: serde_json::Map<String, Value> = head.labels.iter().enumerate().map(|(i, l)| (l.clone(), json!(i))).collect();
        obj.insert("architectures".into(), json!([architecture]));
        obj.insert("id2label".into(), Value::Object(id2label));
        obj.insert("label2id".into(), Value::Object(label2id));
        obj.insert("num_labels".into(), json!(k));
        obj.insert("problem_type".into(), json!("single_label_classification"));
        obj.insert("plinth_pooling".into(), json!(head.pooling.name()));
        obj.insert("plinth_normalize".into(), json!(head.normalize));
        obj.insert("torch_dtype".into(), json!("float32"));
        if obj.contains_key("dtype") {
            obj.insert("dtype".into(), json!("float32"));
        }
    } else {
        return Err(Error::format(&config_path, "not a JSON object"));
    }

    let staging = Staging::new(out)?;
    let dir = staging.path().to_path_buf();
    let st = dir.join("model.safetensors");
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::tensor::serialize_to_file(tensors.iter().map(|(n, t)| (n.as_str(), t)), Some(metadata), &st)
        .map_err(|e| Error::format(&st, format!("writing safetensors: {e}")))?;
    drop(tensors);
    let cfg_out = dir.join("config.json");
    let text = serde_json::to_string_pretty(&config).map_err(|e| Error::format(&cfg_out, e.to_string()))?;
    std::fs::write(&cfg_out, text + "\n").map_err(|e| Error::io(&cfg_out, e))?;
    // The tokenizer, and the sequence length the embeddings were computed with.
    for name in TOKENIZER_FILES.iter().chain(&["sentence_bert_config.json"]) {
        let from = src.join(name);
        if from.is_file() {
            let to = dir.join(name);
            std::fs::copy(&from, &to).map_err(|e| Error::io(&from, e))?;
        }
    }
    let files = staging.finish()?;
    staging.commit()?;
    Ok(files)
}


// ---------------------------------------------------------------------------------------
// All together
// ---------------------------------------------------------------------------------------

/// `plinth tune --task classify`: loads the encoder in `base` (a Hugging Face or
/// sentence-transformers directory), reads `data` (and `eval_data`, else holds out
/// `cfg.eval_fraction` of `data`), trains the head and writes the classifier to `out`.
///
/// A base that is itself a plinth-trained classifier (its config has `"plinth_pooling"`) is
/// embedded the way its config says, so that a head can be retrained on it.
pub fn tune_classifier(
    base: &Path,
    data: &Path,
    eval_data: Option<&Path>,
    out: &Path,
    cfg: &ClassifyConfig,
    progress: &mut dyn FnMut(ClassifyProgress),
) -> Result<ClassifyReport> {
    cfg.validate()?;
    if out.exists() && (!out.is_dir() || std::fs::read_dir(out).map_err(|e| Error::io(out, e))?.next().is_some()) {
        return Err(Error::invalid("output directory", format!("{} already exists (choose a new path, or remove it first)", out.display())));
    }
    let mut model = EncoderModel::load(base)?;
    if !model.sentence_transformers {
        let config = read_config(&transformer_dir(&model)?)?;
        match config.get("plinth_pooling").and_then(Value::as_str) {
            Some("mean") => model.pooling = Pooling::MEAN,
            Some("cls") => model.pooling = Pooling::CLS,
            _ => {}
        }
        if let Some(n) = config.get("plinth_normalize").and_then(Value::as_bool) {
            model.normalize = n;
        }
    }
    let all = read_labelled(data)?;
    let (train, eval) = match eval_data {
        Some(p) => (all, read_labelled(p)?),
        None if cfg.eval_fraction > 0.0 => split_holdout(&all, cfg.eval_fraction, cfg.seed),
        None => (all, Vec::new()),
    };
    let (head, mut report) = train_head(&model, &train, &eval, cfg, progress)?;
    report.files = save_classifier(&model, &head, out)?;
    report.out = Some(out.to_path_buf());
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csv(text: &str) -> std::result::Result<Vec<Labelled>, String> {
        labelled_from_csv(text, ',')
    }

    fn pair(t: &str, l: &str) -> Labelled {
        (t.to_string(), l.to_string())
    }

    #[test]
    fn csv_quotes_delimiters_and_line_breaks() {
        let got = csv("id,Text,label\r\n1,\"a, b\",x\r\n2,\"say \"\"hi\"\"\",y\n\n3,\"two\nlines\", z \n4,plain,x").unwrap();
        assert_eq!(got, vec![pair("a, b", "x"), pair("say \"hi\"", "y"), pair("two\nlines", "z"), pair("plain", "x")]);
        // A final line break and an empty quoted trailing field.
        assert_eq!(csv("label,text\nx,\"\"\"\"\n").unwrap(), vec![pair("\"", "x")]);
    }

    #[test]
    fn csv_errors_name_the_line() {
        let err = |t: &str| csv(t).unwrap_err();
        assert!(err("text,category\na,b\n").contains("no 'label' column"), "{}", err("text,category\na,b\n"));
        assert!(err("text,label\na,x\nb,\n").starts_with("line 3: empty label"));
        assert!(err("text,label\na,x\n  ,y\n").starts_with("line 3: empty text"));
        assert!(err("text,label\na,x,extra\n").starts_with("line 2: 3 fields"));
        assert!(err("text,label\nab\"c,x\n").starts_with("line 2: a quote inside an unquoted field"));
        assert!(err("text,label\n\"ab\"c,x\n").starts_with("line 2: 'c' after a closing quote"));
        assert!(err("text,label\na,x\n\"open\nstill,x\n").starts_with("line 3: a quoted field is never closed"));
    }

    #[test]
    fn jsonl_rows() {
        let got = labelled_from_jsonl("{\"text\":\"a\",\"label\":\"x\"}\n\n{\"text\":\"b\",\"label\":1}\n").unwrap();
        assert_eq!(got, vec![pair("a", "x"), pair("b", "1")]);
        assert!(labelled_from_jsonl("{\"text\":\"a\"}").unwrap_err().starts_with("line 1: no 'label'"));
        assert!(labelled_from_jsonl("{\"text\":\"a\",\"label\":1.5}").unwrap_err().contains("string or an integer"));
        assert!(labelled_from_jsonl("\n{oops").unwrap_err().starts_with("line 2: not valid JSON"));
    }

    #[test]
    fn holdout_is_stratified_and_seeded() {
        let data: Vec<Labelled> = (0..30).map(|i| pair(&format!("t{i}"), if i % 3 == 0 { "a" } else { "b" })).collect();
        let (tr, ev) = split_holdout(&data, 0.3, 7);
        assert_eq!((tr.len(), ev.len()), (21, 9));
        assert_eq!(ev.iter().filter(|(_, l)| l == "a").count(), 3);
        assert_eq!(split_holdout(&data, 0.3, 7), (tr, ev));
        // A label with one example stays in training.
        let (tr, ev) = split_holdout(&[pair("x", "a"), pair("y", "b"), pair("z", "b")], 0.5, 1);
        assert!(tr.iter().any(|(_, l)| l == "a") && ev.len() == 1);
    }
}
