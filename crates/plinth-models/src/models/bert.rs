//! BERT and its post-LayerNorm relatives: BERT (`model_type` "bert", which covers MiniLM and
//! the sentence-transformers checkpoints), RoBERTa ("roberta"), XLM-RoBERTa ("xlm-roberta")
//! and CamemBERT ("camembert"). They share one block; RoBERTa and its descendants differ only
//! in their position ids (counted from `pad_token_id + 1` over the non-pad tokens) and in
//! having a single token type.
//!
//! This file also owns the encoder stack that DistilBERT reuses with its own tensor names
//! (`distilbert.rs`): embeddings + LayerNorm, post-LN layers (self-attention over the whole
//! padded batch with an additive mask, then the feed-forward network), an optional pooler,
//! and the task heads (sequence / token classification, extractive question answering); and
//! the config, batch-check and label helpers that `modernbert.rs` shares.
//!
//! A sequence-classification config with `"plinth_pooling"` (`mean` / `cls`, optionally
//! `"plinth_normalize": true`) is plinth's linear probe (`plinth-train`'s `classify`): its
//! `classifier` reads that sentence embedding instead of BERT's pooler (`Head::Probe`).
//!
//! The batch runs as one `[batch * seq, hidden]` matrix through every projection; attention
//! is one batched matmul over `[batch * heads, seq, seq]`. q, k and v are fused into one
//! `[3 hidden, hidden]` projection at load time, with the `1/sqrt(head_dim)` score scale
//! folded into the query rows.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use plinth_core::{Error, Result};

use crate::config::{check_dims, Dims};
use crate::encoder::config_labels;
use crate::layers::{fused, Activation, LayerNorm, Linear, QLinear};
use crate::weights::Weights;
use crate::{Encoder, EncoderBatch, EncoderHead, EncoderInfo, EncoderOutput};

/// Reads the fields of a `config.json`, naming the file and the field in every error.
pub(crate) struct ConfigReader<'a> {
    pub json: &'a serde_json::Value,
    pub path: &'a Path,
}

impl ConfigReader<'_> {
    fn get(&self, key: &str) -> Option<&serde_json::Value> {
        self.json.get(key).filter(|v| !v.is_null())
    }

    /// A non-negative integer field; `default: None` makes it required.
    pub fn usize(&self, key: &str, default: Option<usize>) -> Result<usize> {
        match self.get(key) {
            Some(v) => v
                .as_u64()
                .map(|v| v as usize)
                .ok_or_else(|| Error::format(self.path, format!("config field '{key}' is not a non-negative integer"))),
            None => default.ok_or_else(|| Error::missing(self.path, format!("config field '{key}'"))),
        }
    }

    pub fn f64(&self, key: &str, default: f64) -> Result<f64> {
        match self.get(key) {
            Some(v) => v.as_f64().ok_or_else(|| Error::format(self.path, format!("config field '{key}' is not a number"))),
            None => Ok(default),
        }
    }

    pub fn str(&self, key: &str) -> Result<Option<&str>> {
        match self.get(key) {
            Some(v) => v.as_str().map(Some).ok_or_else(|| Error::format(self.path, format!("config field '{key}' is not a string"))),
            None => Ok(None),
        }
    }

    pub fn activation(&self, key: &str, default: Activation) -> Result<Activation> {
        match self.str(key)? {
            Some(name) => Activation::from_hf(name, key, self.path),
            None => Ok(default),
        }
    }
}

/// Where a token's position id comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Positions {
    /// `0, 1, 2, ...` in every row (BERT, DistilBERT).
    FromZero,
    /// RoBERTa's: `pad + 1 + (non-pad tokens so far)` for a non-pad token, `pad` for a pad
    /// token. Computed from the ids, as transformers does, not from the attention mask.
    AfterPadding(u32),
}

/// The sizes of an encoder, whatever its config calls them.
#[derive(Debug, Clone, PartialEq)]
pub struct EncoderDims {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub intermediate_size: usize,
    /// Rows of the position table.
    pub max_position_embeddings: usize,
    /// 0 for models without token type embeddings (DistilBERT).
    pub type_vocab_size: usize,
    pub layer_norm_eps: f64,
    pub activation: Activation,
    pub pad_token_id: u32,
    pub positions: Positions,
}

impl EncoderDims {
    /// Rejects sizes that cannot work or that no real model has, naming the config file.
    pub(crate) fn validate(&self, path: &Path) -> Result<()> {
        let bad = |what: String| Err(Error::format(path, what));
        let (h, n) = (self.hidden_size, self.num_heads);
        if n == 0 || h == 0 || !h.is_multiple_of(n) {
            return bad(format!("hidden size {h} is not divisible into {n} attention heads"));
        }
        if h > 1 << 16 || self.intermediate_size == 0 || self.intermediate_size > 1 << 20 {
            return bad(format!("hidden size {h} / intermediate size {} are out of range", self.intermediate_size));
        }
        if self.type_vocab_size > 1 << 16 {
            return bad(format!("type_vocab_size {} is out of range", self.type_vocab_size));
        }
        if self.pad_token_id as usize >= self.vocab_size {
            return bad(format!("pad_token_id {} is outside the vocabulary of {}", self.pad_token_id, self.vocab_size));
        }
        if self.max_tokens() == 0 {
            return bad(format!(
                "max_position_embeddings {} leaves no room for tokens after RoBERTa's padding offset",
                self.max_position_embeddings
            ));
        }
        check_dims(
            path,
            Dims {
                num_heads: n,
                num_kv_heads: n,
                head_dim: h / n,
                max_positions: self.max_position_embeddings,
                num_layers: self.num_layers,
                vocab_size: self.vocab_size,
            },
        )
    }

    /// The longest sequence the position table allows: RoBERTa spends `pad + 1` rows on its
    /// offset (514 rows give 512 tokens).
    pub fn max_tokens(&self) -> usize {
        match self.positions {
            Positions::FromZero => self.max_position_embeddings,
            Positions::AfterPadding(pad) => self.max_position_embeddings.saturating_sub(pad as usize + 1),
        }
    }

    fn head_dim(&self) -> usize {
        self.hidden_size / self.num_heads
    }
}

/// Reads a BERT / RoBERTa / XLM-RoBERTa / CamemBERT `config.json`.
pub fn bert_dims(json: &serde_json::Value, path: &Path, model_type: &str) -> Result<EncoderDims> {
    let c = ConfigReader { json, path };
    let roberta = model_type != "bert";
    // Only absolute positions exist in current transformers; older configs could ask for
    // relative-position attention, which this block does not implement.
    if let Some(kind) = c.str("position_embedding_type")?.filter(|k| *k != "absolute") {
        return Err(Error::unsupported(path, format!("position_embedding_type '{kind}'")));
    }
    let pad = c.usize("pad_token_id", Some(if roberta { 1 } else { 0 }))?;
    let pad_token_id = u32::try_from(pad).map_err(|_| Error::format(path, format!("pad_token_id {pad} is out of range")))?;
    let dims = EncoderDims {
        vocab_size: c.usize("vocab_size", None)?,
        hidden_size: c.usize("hidden_size", None)?,
        num_layers: c.usize("num_hidden_layers", None)?,
        num_heads: c.usize("num_attention_heads", None)?,
        intermediate_size: c.usize("intermediate_size", None)?,
        max_position_embeddings: c.usize("max_position_embeddings", None)?,
        type_vocab_size: c.usize("type_vocab_size", Some(2))?.max(1),
        layer_norm_eps: c.f64("layer_norm_eps", 1e-12)?,
        activation: c.activation("hidden_act", Activation::GeluErf)?,
        pad_token_id,
        positions: if roberta { Positions::AfterPadding(pad_token_id) } else { Positions::FromZero },
    };
    dims.validate(path)?;
    Ok(dims)
}

/// The tensor names of one encoder layer, relative to the layer's prefix.
pub(crate) struct LayerNames {
    pub q: &'static str,
    pub k: &'static str,
    pub v: &'static str,
    pub attn_out: &'static str,
    pub attn_norm: &'static str,
    pub up: &'static str,
    pub down: &'static str,
    pub out_norm: &'static str,
}

const BERT_LAYER: LayerNames = LayerNames {
    q: "attention.self.query",
    k: "attention.self.key",
    v: "attention.self.value",
    attn_out: "attention.output.dense",
    attn_norm: "attention.output.LayerNorm",
    up: "intermediate.dense",
    down: "output.dense",
    out_norm: "output.LayerNorm",
};

/// A LayerNorm stored as `weight`/`bias`, or as `gamma`/`beta` in checkpoints converted from
/// the original TensorFlow BERT.
pub(crate) fn layer_norm(w: &Weights, prefix: &str, dim: usize, eps: f64) -> Result<LayerNorm> {
    let (wn, bn) = if !w.contains(&format!("{prefix}.weight")) && w.contains(&format!("{prefix}.gamma")) {
        ("gamma", "beta")
    } else {
        ("weight", "bias")
    };
    Ok(LayerNorm::new(w.tensor(&format!("{prefix}.{wn}"), &[dim])?, w.tensor(&format!("{prefix}.{bn}"), &[dim])?, eps))
}

/// q, k and v as one `[3 h, h]` projection, so that the three read the activations once; the
/// query rows carry the score scale, which saves a pass over every `[seq, seq]` score matrix.
fn fused_qkv(w: &Weights, names: [String; 3], h: usize, q_scale: f64) -> Result<QLinear> {
    let mut weights = Vec::with_capacity(3);
    let mut biases = Vec::with_capacity(3);
    for (i, n) in names.iter().enumerate() {
        let bias_name = format!("{n}.bias");
        let mut wt = w.tensor(&format!("{n}.weight"), &[h, h])?;
        let mut bt = if w.contains(&bias_name) { w.tensor(&bias_name, &[h])? } else { Tensor::zeros(h, DType::F32, &Device::Cpu)? };
        if i == 0 {
            wt = (wt * q_scale)?;
            bt = (bt * q_scale)?;
        }
        weights.push(wt);
        biases.push(bt);
    }
    Ok(QLinear::from_tensor(Tensor::cat(&weights, 0)?, Some(Tensor::cat(&biases, 0)?)))
}

/// A linear layer whose bias is applied by the fused kernel that follows it.
pub(crate) struct Dense {
    w: QLinear,
    bias: Vec<f32>,
}

impl Dense {
    fn load(w: &Weights, prefix: &str, out_dim: usize, in_dim: usize) -> Result<Self> {
        let bias_name = format!("{prefix}.bias");
        let bias = if w.contains(&bias_name) { w.tensor(&bias_name, &[out_dim])?.to_vec1::<f32>()? } else { vec![0.0; out_dim] };
        Ok(Dense { w: QLinear::from_tensor(w.tensor(&format!("{prefix}.weight"), &[out_dim, in_dim])?, None), bias })
    }

    fn params(&self) -> usize {
        self.w.params() + self.bias.len()
    }
}

/// LayerNorm weights as plain vectors for the fused kernels.
pub(crate) struct Norm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
    eps: f64,
}

impl Norm {
    fn load(w: &Weights, prefix: &str, dim: usize, eps: f64) -> Result<Self> {
        let ln = layer_norm(w, prefix, dim, eps)?;
        let (g, b) = ln.weights();
        Ok(Norm { gamma: g.to_vec1::<f32>()?, beta: b.to_vec1::<f32>()?, eps })
    }

    fn params(&self) -> usize {
        self.gamma.len() + self.beta.len()
    }

    /// `LayerNorm(y + bias + residual)`.
    fn residual(&self, y: &Tensor, bias: &[f32], residual: &Tensor) -> Result<Tensor> {
        fused::bias_residual_layer_norm(y, residual, bias, &self.gamma, &self.beta, self.eps)
    }
}

/// One post-LN encoder layer: `x = norm(x + attn(x)); x = norm(x + down(act(up(x))))`.
///
/// Runs on the fused kernels of [`fused`]: candle does the four matrix products, everything
/// between them is one pass each (attention straight from the fused q/k/v output, bias +
/// activation, bias + residual + LayerNorm).
pub(crate) struct Layer {
    qkv: QLinear,
    attn_out: Dense,
    attn_norm: Norm,
    up: Dense,
    down: Dense,
    out_norm: Norm,
}

impl Layer {
    pub fn load(w: &Weights, prefix: &str, names: &LayerNames, d: &EncoderDims) -> Result<Self> {
        let (h, eps) = (d.hidden_size, d.layer_norm_eps);
        let p = |n: &str| format!("{prefix}.{n}");
        let scale = 1.0 / (d.head_dim() as f64).sqrt();
        Ok(Layer {
            qkv: fused_qkv(w, [p(names.q), p(names.k), p(names.v)], h, scale)?,
            attn_out: Dense::load(w, &p(names.attn_out), h, h)?,
            attn_norm: Norm::load(w, &p(names.attn_norm), h, eps)?,
            up: Dense::load(w, &p(names.up), d.intermediate_size, h)?,
            down: Dense::load(w, &p(names.down), h, d.intermediate_size)?,
            out_norm: Norm::load(w, &p(names.out_norm), h, eps)?,
        })
    }

    fn params(&self) -> usize {
        self.qkv.params() + [&self.attn_out, &self.up, &self.down].iter().map(|l| l.params()).sum::<usize>()
            + self.attn_norm.params()
            + self.out_norm.params()
    }

    /// `x` is `[b * t, h]`; `mask` is `[b * t]`, 1 for tokens and 0 for padding.
    fn forward(&self, x: &Tensor, b: usize, t: usize, heads: usize, act: Activation, mask: &[f32]) -> Result<Tensor> {
        let ctx = fused::self_attention(&self.qkv.forward(x)?, mask, b, t, heads)?;
        let x = self.attn_norm.residual(&self.attn_out.w.forward(&ctx)?, &self.attn_out.bias, x)?;
        let inner = fused::bias_act(&self.up.w.forward(&x)?, &self.up.bias, act)?;
        self.out_norm.residual(&self.down.w.forward(&inner)?, &self.down.bias, &x)
    }
}

/// Word + position (+ token type) embeddings, then LayerNorm.
pub(crate) struct Embeddings {
    word: Tensor,
    position: Tensor,
    token_type: Option<Tensor>,
    norm: LayerNorm,
}

impl Embeddings {
    /// `token_type`: the table's name, `None` for models without token types.
    pub fn load(w: &Weights, word: &str, position: &str, token_type: Option<&str>, norm: &str, d: &EncoderDims) -> Result<Self> {
        let h = d.hidden_size;
        Ok(Embeddings {
            word: w.tensor(word, &[d.vocab_size, h])?,
            position: w.tensor(position, &[d.max_position_embeddings, h])?,
            token_type: token_type.map(|n| w.tensor(n, &[d.type_vocab_size, h])).transpose()?,
            norm: layer_norm(w, norm, h, d.layer_norm_eps)?,
        })
    }

    fn params(&self) -> usize {
        self.word.elem_count() + self.position.elem_count() + self.token_type.as_ref().map_or(0, Tensor::elem_count) + self.norm.params()
    }

    /// `ids` and `types` are flat `[b * t]`; returns `[b * t, h]`.
    fn forward(&self, ids: &[u32], types: &Tensor, b: usize, t: usize, positions: Positions) -> Result<Tensor> {
        let dev = Device::Cpu;
        let h = self.word.dim(1)?;
        let x = self.word.embedding(&Tensor::new(ids, &dev)?)?;
        let x = match positions {
            // Every row has the same positions: add the table's first t rows to each.
            Positions::FromZero => x.reshape((b, t, h))?.broadcast_add(&self.position.narrow(0, 0, t)?)?.reshape((b * t, h))?,
            Positions::AfterPadding(pad) => {
                let mut pos = Vec::with_capacity(ids.len());
                for row in ids.chunks(t) {
                    let mut seen = 0u32;
                    pos.extend(row.iter().map(|&id| {
                        if id == pad {
                            pad
                        } else {
                            seen += 1;
                            pad + seen
                        }
                    }));
                }
                (x + self.position.embedding(&Tensor::new(pos, &dev)?)?)?
            }
        };
        let x = match &self.token_type {
            None => x,
            // RoBERTa's single type: the same row for every token, no lookup needed.
            Some(tt) if tt.dim(0)? == 1 => x.broadcast_add(&tt.get(0)?)?,
            Some(tt) => (x + tt.embedding(types)?)?,
        };
        self.norm.forward(&x)
    }
}

/// Checks a batch against the model's limits before anything is computed; returns its
/// `(batch, seq)` and the ids, flat.
pub(crate) fn check_batch(batch: &EncoderBatch, d: &EncoderDims) -> Result<(usize, usize, Vec<u32>)> {
    let (b, t) = batch.ids.dims2()?;
    if b == 0 || t == 0 {
        return Err(Error::invalid("encoder batch", "no tokens"));
    }
    for (what, x) in [("token type ids", &batch.type_ids), ("attention mask", &batch.mask)] {
        if x.dims() != [b, t] {
            return Err(Error::invalid("encoder batch", format!("{what} have shape {:?}, ids {:?}", x.dims(), [b, t])));
        }
    }
    if t > d.max_tokens() {
        return Err(Error::ContextOverflow { prompt_tokens: t, context: d.max_tokens() });
    }
    let ids = batch.ids.flatten_all()?.to_dtype(DType::U32)?.to_vec1::<u32>()?;
    if let Some(&bad) = ids.iter().find(|&&id| id as usize >= d.vocab_size) {
        return Err(Error::invalid("token id", format!("{bad} is outside the vocabulary of {}", d.vocab_size)));
    }
    if d.type_vocab_size > 0 {
        let types = batch.type_ids.flatten_all()?.to_dtype(DType::U32)?.max(0)?.to_scalar::<u32>()?;
        if types as usize >= d.type_vocab_size {
            return Err(Error::invalid("token type id", format!("{types} is outside the model's {} token types", d.type_vocab_size)));
        }
    }
    Ok((b, t, ids))
}

/// What runs on the encoder's output.
pub(crate) enum Head {
    None,
    /// `out(act(pre(x)))` on one vector per sequence: the first token's hidden state, or
    /// BERT's pooler output when `on_pooler`.
    Sequence { pre: Option<(QLinear, Activation)>, out: QLinear, on_pooler: bool },
    /// A linear layer on every token: token classification and question answering (2 outputs).
    PerToken(QLinear),
    /// plinth's linear probe (`plinth tune --task classify`): `classifier` on the
    /// sentence-transformers embedding instead of the pooler, as config `"plinth_pooling"`
    /// says: `"mean"` (mean of the real tokens) or `"cls"` (first token), L2-normalised when
    /// `"plinth_normalize"` is true.
    Probe { out: QLinear, mean: bool, normalize: bool },
}

/// The probe pooling a config asks for (`"plinth_pooling"`, `"plinth_normalize"`):
/// `Some((mean, normalize))`, `None` when absent.
fn probe_pooling(json: &serde_json::Value, path: &Path) -> Result<Option<(bool, bool)>> {
    let c = ConfigReader { json, path };
    let mean = match c.str("plinth_pooling")? {
        None => return Ok(None),
        Some("mean") => true,
        Some("cls") => false,
        Some(other) => return Err(Error::unsupported(path, format!("plinth_pooling '{other}' (mean or cls)"))),
    };
    let normalize = match c.get("plinth_normalize") {
        None => false,
        Some(v) => v.as_bool().ok_or_else(|| Error::format(path, "config field 'plinth_normalize' is not a boolean"))?,
    };
    Ok(Some((mean, normalize)))
}

impl Head {
    fn params(&self) -> usize {
        match self {
            Head::None => 0,
            Head::Sequence { pre, out, .. } => pre.as_ref().map_or(0, |(l, _)| l.params()) + out.params(),
            Head::PerToken(l) | Head::Probe { out: l, .. } => l.params(),
        }
    }
}

/// The number of labels a classification head has and their names: `id2label` when the
/// config has it, else `num_labels`, else the rows of the output weight, named `LABEL_i`.
pub(crate) fn head_labels(json: &serde_json::Value, path: &Path, w: &Weights, out_weight: &str) -> Result<Vec<String>> {
    if let Some(labels) = config_labels(json, path)? {
        if !labels.is_empty() {
            return Ok(labels);
        }
    }
    let n = match (ConfigReader { json, path }).usize("num_labels", Some(0))? {
        0 => match w {
            Weights::Safetensors(s) => s.load(out_weight, DType::F32, &Device::Cpu)?.dim(0)?,
            Weights::Gguf(_) => return Err(Error::missing(path, "config field 'id2label'")),
        },
        n => n,
    };
    if n == 0 || n > 1 << 20 {
        return Err(Error::format(path, format!("{n} labels is out of range")));
    }
    Ok((0..n).map(|i| format!("LABEL_{i}")).collect())
}

/// A loaded encoder of any of the families that share [`Layer`].
pub struct BertEncoder {
    info: EncoderInfo,
    dims: EncoderDims,
    embeddings: Embeddings,
    layers: Vec<Layer>,
    pooler: Option<QLinear>,
    head: Head,
}

impl BertEncoder {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn assemble(
        architecture: &str,
        json: &serde_json::Value,
        dims: EncoderDims,
        embeddings: Embeddings,
        layers: Vec<Layer>,
        pooler: Option<QLinear>,
        head_kind: EncoderHead,
        head: Head,
        labels: Vec<String>,
    ) -> Self {
        let parameters = embeddings.params()
            + layers.iter().map(Layer::params).sum::<usize>()
            + pooler.as_ref().map_or(0, |p| p.params())
            + head.params();
        let info = EncoderInfo {
            architecture: architecture.to_string(),
            head: head_kind,
            labels,
            problem_type: json.get("problem_type").and_then(|v| v.as_str()).map(str::to_string),
            vocab_size: dims.vocab_size,
            max_positions: dims.max_tokens(),
            hidden_size: dims.hidden_size,
            num_layers: dims.num_layers,
            num_heads: dims.num_heads,
            type_vocab_size: dims.type_vocab_size,
            pad_token_id: dims.pad_token_id,
            parameters,
        };
        BertEncoder { info, dims, embeddings, layers, pooler, head }
    }

    pub fn dims(&self) -> &EncoderDims {
        &self.dims
    }
}

impl Encoder for BertEncoder {
    fn info(&self) -> &EncoderInfo {
        &self.info
    }

    fn forward(&self, batch: &EncoderBatch) -> Result<EncoderOutput> {
        let (b, t, ids) = check_batch(batch, &self.dims)?;
        let h = self.dims.hidden_size;
        let types = batch.type_ids.flatten_all()?.to_dtype(DType::U32)?;
        let mut x = self.embeddings.forward(&ids, &types, b, t, self.dims.positions)?;
        let mask = batch.mask.flatten_all()?.to_vec1::<f32>()?;
        for layer in &self.layers {
            x = layer.forward(&x, b, t, self.dims.num_heads, self.dims.activation, &mask)?;
        }
        let hidden = x.reshape((b, t, h))?;
        let first = hidden.narrow(1, 0, 1)?.reshape((b, h))?;
        let pooled = self.pooler.as_ref().map(|p| -> Result<Tensor> { Ok(p.forward(&first)?.tanh()?) }).transpose()?;
        let logits = match &self.head {
            Head::None => None,
            Head::Sequence { pre, out, on_pooler } => {
                let v = match (on_pooler, &pooled) {
                    (true, Some(p)) => p.clone(),
                    _ => first,
                };
                let v = match pre {
                    Some((l, act)) => act.apply(&l.forward(&v)?)?,
                    None => v,
                };
                Some(out.forward(&v)?)
            }
            Head::Probe { out, mean, normalize } => {
                let v = if *mean {
                    let m = batch.mask.to_dtype(DType::F32)?.reshape((b, t, 1))?;
                    let n = m.sum(1)?.clamp(1e-9, f64::INFINITY)?;
                    hidden.broadcast_mul(&m)?.sum(1)?.broadcast_div(&n)?
                } else {
                    first
                };
                let v = if *normalize { v.broadcast_div(&v.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f64::INFINITY)?)? } else { v };
                Some(out.forward(&v)?)
            }
            Head::PerToken(l) => {
                let y = l.forward(&x)?;
                let n = y.dim(1)?;
                Some(y.reshape((b, t, n))?)
            }
        };
        Ok(EncoderOutput { hidden, logits, pooled })
    }
}

/// The prefix under which a checkpoint stores the encoder body: task checkpoints nest it
/// under the base model's name (`bert.`, `roberta.`, `distilbert.`), bare ones
/// (`BertModel`, sentence-transformers) do not. Probed with the word embedding table
/// `probe`; when neither is present the expected one is returned, so that the error names it.
pub(crate) fn body_prefix(w: &Weights, base: &str, probe: &str, head: EncoderHead) -> String {
    let nested = format!("{base}.");
    if w.contains(&format!("{nested}{probe}")) {
        nested
    } else if w.contains(probe) || head == EncoderHead::None {
        String::new()
    } else {
        nested
    }
}

/// The task head named by `architectures[0]`, for BERT-family tensor names.
fn bert_head(
    json: &serde_json::Value,
    path: &Path,
    w: &Weights,
    kind: EncoderHead,
    h: usize,
    roberta: bool,
    probe: Option<(bool, bool)>,
) -> Result<(Head, Vec<String>)> {
    Ok(match kind {
        EncoderHead::None => (Head::None, Vec::new()),
        EncoderHead::SequenceClassification if probe.is_some() => {
            let (mean, normalize) = probe.unwrap_or_default();
            let labels = head_labels(json, path, w, "classifier.weight")?;
            (Head::Probe { out: w.linear("classifier", labels.len(), h)?, mean, normalize }, labels)
        }
        EncoderHead::SequenceClassification if roberta => {
            // RoBERTa's head has its own dense + tanh on the first token instead of a pooler.
            let labels = head_labels(json, path, w, "classifier.out_proj.weight")?;
            let pre = w.linear("classifier.dense", h, h)?;
            let out = w.linear("classifier.out_proj", labels.len(), h)?;
            (Head::Sequence { pre: Some((pre, Activation::Tanh)), out, on_pooler: false }, labels)
        }
        EncoderHead::SequenceClassification => {
            let labels = head_labels(json, path, w, "classifier.weight")?;
            let out = w.linear("classifier", labels.len(), h)?;
            (Head::Sequence { pre: None, out, on_pooler: true }, labels)
        }
        EncoderHead::TokenClassification => {
            let labels = head_labels(json, path, w, "classifier.weight")?;
            (Head::PerToken(w.linear("classifier", labels.len(), h)?), labels)
        }
        EncoderHead::QuestionAnswering => (Head::PerToken(w.linear("qa_outputs", 2, h)?), Vec::new()),
    })
}

/// Loads a BERT, RoBERTa, XLM-RoBERTa or CamemBERT checkpoint.
pub fn load_hf(json: &serde_json::Value, path: &Path, w: &Weights, model_type: &str) -> Result<Box<dyn Encoder>> {
    let d = bert_dims(json, path, model_type)?;
    let kind = EncoderHead::from_config(json);
    let roberta = model_type != "bert";
    let root = body_prefix(w, if roberta { "roberta" } else { "bert" }, "embeddings.word_embeddings.weight", kind);
    let h = d.hidden_size;
    let e = |n: &str| format!("{root}embeddings.{n}");
    let embeddings = Embeddings::load(
        w,
        &e("word_embeddings.weight"),
        &e("position_embeddings.weight"),
        Some(&e("token_type_embeddings.weight")),
        &e("LayerNorm"),
        &d,
    )?;
    let layers = (0..d.num_layers)
        .map(|i| Layer::load(w, &format!("{root}encoder.layer.{i}"), &BERT_LAYER, &d))
        .collect::<Result<Vec<_>>>()?;
    // BERT's sequence classifier reads the pooler, so there it is required; elsewhere it is
    // computed when the checkpoint has one (RoBERTa heads and QA / token heads drop it).
    let pooler_name = format!("{root}pooler.dense");
    let probe = probe_pooling(json, path)?.filter(|_| kind == EncoderHead::SequenceClassification);
    let needs_pooler = kind == EncoderHead::SequenceClassification && !roberta && probe.is_none();
    let pooler = if needs_pooler || w.contains(&format!("{pooler_name}.weight")) { Some(w.linear(&pooler_name, h, h)?) } else { None };
    let (head, labels) = bert_head(json, path, w, kind, h, roberta, probe)?;
    Ok(Box::new(BertEncoder::assemble(model_type, json, d, embeddings, layers, pooler, kind, head, labels)))
}
