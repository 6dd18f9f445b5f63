//! ModernBERT (`model_type` "modernbert"): a pre-LN encoder with rotary positions instead of a
//! position table, global attention every few layers and bidirectional sliding-window
//! attention in between (each kind with its own rotary theta), a fused q/k/v projection, a
//! GeGLU MLP, LayerNorms that usually have no bias, and a final norm. Task heads run a
//! prediction head (dense + activation + norm) first; sequence classification pools by the
//! first token or by the masked mean (`classifier_pooling`).
//!
//! Tensor names follow transformers 5 (`layers.N.attn.Wqkv`, `layers.N.mlp.Wi`, ...; task
//! checkpoints nest the body under `model.`). Older `config.json`s describe the layer pattern
//! and thetas with `global_attn_every_n_layers` / `global_rope_theta` / `local_rope_theta`;
//! newer ones with `layer_types` / `rope_parameters`. Both are read.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use plinth_core::{Error, Result};

use crate::layers::{Activation, LayerNorm, Linear, QLinear};
use crate::models::bert::{body_prefix, check_batch, head_labels, ConfigReader, EncoderDims, Positions};
use crate::weights::Weights;
use crate::{Encoder, EncoderBatch, EncoderHead, EncoderInfo, EncoderOutput};

/// How sequence classification reduces the tokens to one vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClassifierPooling {
    /// The first token's hidden state.
    Cls,
    /// The mean over the real (unmasked) tokens.
    Mean,
}

/// ModernBERT's hyper-parameters beyond the sizes every encoder has.
#[derive(Debug, Clone, PartialEq)]
pub struct ModernBertConfig {
    pub dims: EncoderDims,
    /// Per layer: whether it attends within the sliding window (else globally).
    pub sliding: Vec<bool>,
    /// Half-window: a token sees the keys at distance `<= window` (`local_attention / 2`).
    pub window: usize,
    pub global_theta: f64,
    pub local_theta: f64,
    pub classifier_activation: Activation,
    pub classifier_pooling: ClassifierPooling,
}

/// The rotary theta of one layer kind: `rope_parameters[kind].rope_theta`, else the old flat
/// key, else transformers' default. Only the plain ("default") rotary type is implemented.
fn rope_theta(c: &ConfigReader, kind: &str, old_key: &str, default: f64) -> Result<f64> {
    let params = c.json.get("rope_parameters").and_then(|p| p.get(kind)).filter(|p| !p.is_null());
    if let Some(p) = params {
        if let Some(t) = p.get("rope_type").and_then(|t| t.as_str()).filter(|t| *t != "default") {
            return Err(Error::unsupported(c.path, format!("rope_type '{t}' for {kind} layers")));
        }
        if let Some(theta) = p.get("rope_theta") {
            return theta.as_f64().ok_or_else(|| Error::format(c.path, format!("rope_parameters.{kind}.rope_theta is not a number")));
        }
    }
    c.f64(old_key, default)
}

impl ModernBertConfig {
    pub fn from_hf(json: &serde_json::Value, path: &Path) -> Result<Self> {
        let c = ConfigReader { json, path };
        let pad = c.usize("pad_token_id", Some(50283))?;
        let dims = EncoderDims {
            vocab_size: c.usize("vocab_size", None)?,
            hidden_size: c.usize("hidden_size", None)?,
            num_layers: c.usize("num_hidden_layers", None)?,
            num_heads: c.usize("num_attention_heads", None)?,
            intermediate_size: c.usize("intermediate_size", None)?,
            max_position_embeddings: c.usize("max_position_embeddings", Some(8192))?,
            type_vocab_size: 0,
            layer_norm_eps: c.f64("norm_eps", 1e-5)?,
            activation: c.activation("hidden_activation", Activation::GeluErf)?,
            pad_token_id: u32::try_from(pad).map_err(|_| Error::format(path, format!("pad_token_id {pad} is out of range")))?,
            positions: Positions::FromZero,
        };
        dims.validate(path)?;
        if !(dims.hidden_size / dims.num_heads).is_multiple_of(2) {
            return Err(Error::format(path, format!("head size {} is not even, as rotary embeddings need", dims.hidden_size / dims.num_heads)));
        }
        let sliding = match json.get("layer_types").filter(|v| !v.is_null()) {
            Some(v) => {
                let kinds = v.as_array().ok_or_else(|| Error::format(path, "config field 'layer_types' is not a list"))?;
                if kinds.len() != dims.num_layers {
                    return Err(Error::format(path, format!("layer_types has {} entries for {} layers", kinds.len(), dims.num_layers)));
                }
                kinds
                    .iter()
                    .map(|k| match k.as_str() {
                        Some("sliding_attention") => Ok(true),
                        Some("full_attention") => Ok(false),
                        _ => Err(Error::unsupported(path, format!("layer type {k}"))),
                    })
                    .collect::<Result<Vec<_>>>()?
            }
            None => {
                let every = c.usize("global_attn_every_n_layers", Some(3))?.max(1);
                (0..dims.num_layers).map(|i| !i.is_multiple_of(every)).collect()
            }
        };
        let pooling = match c.str("classifier_pooling")?.unwrap_or("cls") {
            "cls" => ClassifierPooling::Cls,
            "mean" => ClassifierPooling::Mean,
            other => return Err(Error::unsupported(path, format!("classifier_pooling '{other}'"))),
        };
        Ok(ModernBertConfig {
            window: c.usize("local_attention", Some(128))? / 2,
            global_theta: rope_theta(&c, "full_attention", "global_rope_theta", 160_000.0)?,
            local_theta: rope_theta(&c, "sliding_attention", "local_rope_theta", 10_000.0)?,
            classifier_activation: c.activation("classifier_activation", Activation::GeluErf)?,
            classifier_pooling: pooling,
            sliding,
            dims,
        })
    }

    fn head_dim(&self) -> usize {
        self.dims.hidden_size / self.dims.num_heads
    }
}

/// A LayerNorm whose bias is optional (`norm_bias: false` stores none).
fn norm(w: &Weights, prefix: &str, dim: usize, eps: f64) -> Result<LayerNorm> {
    let weight = w.tensor(&format!("{prefix}.weight"), &[dim])?;
    let bias_name = format!("{prefix}.bias");
    let bias = if w.contains(&bias_name) { w.tensor(&bias_name, &[dim])? } else { Tensor::zeros(dim, DType::F32, &Device::Cpu)? };
    Ok(LayerNorm::new(weight, bias, eps))
}

/// `Wqkv` with the score scale folded into the query rows (rotation commutes with scaling,
/// so this is exact in real arithmetic and saves a pass over every score matrix).
fn scaled_wqkv(w: &Weights, prefix: &str, h: usize, scale: f64) -> Result<QLinear> {
    let weight = w.tensor(&format!("{prefix}.weight"), &[3 * h, h])?;
    let fold = |t: &Tensor| -> Result<Tensor> { Ok(Tensor::cat(&[(t.narrow(0, 0, h)? * scale)?, t.narrow(0, h, 2 * h)?], 0)?) };
    let bias_name = format!("{prefix}.bias");
    let bias = if w.contains(&bias_name) { Some(fold(&w.tensor(&bias_name, &[3 * h])?)?) } else { None };
    Ok(QLinear::from_tensor(fold(&weight)?, bias))
}

struct Layer {
    /// `None` in layer 0, whose input is the already normalised embedding.
    attn_norm: Option<LayerNorm>,
    wqkv: QLinear,
    wo: QLinear,
    mlp_norm: LayerNorm,
    wi: QLinear,
    mlp_wo: QLinear,
    sliding: bool,
}

impl Layer {
    fn params(&self) -> usize {
        [&self.wqkv, &self.wo, &self.wi, &self.mlp_wo].iter().map(|l| l.params()).sum::<usize>()
            + self.attn_norm.as_ref().map_or(0, LayerNorm::params)
            + self.mlp_norm.params()
    }
}

/// Per-forward tables shared by the layers: rotary cos/sin for both thetas and both masks.
struct Context {
    global_rope: (Tensor, Tensor),
    local_rope: (Tensor, Tensor),
    global_mask: Option<Tensor>,
    local_mask: Option<Tensor>,
}

/// cos/sin `[t, head_dim / 2]` computed in f32 as transformers does.
fn rope_tables(theta: f64, head_dim: usize, t: usize) -> Result<(Tensor, Tensor)> {
    let half = head_dim / 2;
    let inv: Vec<f32> = (0..half).map(|i| 1.0 / (theta as f32).powf((2 * i) as f32 / head_dim as f32)).collect();
    let (mut cos, mut sin) = (Vec::with_capacity(t * half), Vec::with_capacity(t * half));
    for p in 0..t {
        for f in &inv {
            let a = p as f32 * f;
            cos.push(a.cos());
            sin.push(a.sin());
        }
    }
    let dev = Device::Cpu;
    Ok((Tensor::from_vec(cos, (t, half), &dev)?, Tensor::from_vec(sin, (t, half), &dev)?))
}

/// The sliding-window mask `[b, 1, t, t]` with padding folded in: a key is hidden when it is
/// padding or further than `window` from the query. Built in one pass so that a key hidden
/// for both reasons gets one large negative number, not two that overflow to -inf.
fn window_mask(real: &[f32], b: usize, t: usize, window: usize) -> Result<Tensor> {
    let mut m = vec![0f32; b * t * t];
    for r in 0..b {
        for i in 0..t {
            for j in 0..t {
                if real[r * t + j] == 0.0 || i.abs_diff(j) > window {
                    m[(r * t + i) * t + j] = f32::MIN;
                }
            }
        }
    }
    Ok(Tensor::from_vec(m, (b, 1, t, t), &Device::Cpu)?)
}

/// What runs on the encoder's output, after the prediction head.
enum Head {
    None,
    Sequence { dense: QLinear, norm: LayerNorm, classifier: QLinear },
    PerToken { dense: QLinear, norm: LayerNorm, classifier: QLinear },
}

/// A loaded ModernBERT.
pub struct ModernBert {
    cfg: ModernBertConfig,
    info: EncoderInfo,
    tok_embeddings: Tensor,
    emb_norm: LayerNorm,
    layers: Vec<Layer>,
    final_norm: LayerNorm,
    head: Head,
}

impl ModernBert {
    pub fn load(cfg: ModernBertConfig, json: &serde_json::Value, path: &Path, w: &Weights, architecture: &str) -> Result<Self> {
        let d = &cfg.dims;
        let (h, eps) = (d.hidden_size, d.layer_norm_eps);
        let kind = EncoderHead::from_config(json);
        let root = body_prefix(w, "model", "embeddings.tok_embeddings.weight", kind);
        let tok_embeddings = w.tensor(&format!("{root}embeddings.tok_embeddings.weight"), &[d.vocab_size, h])?;
        let emb_norm = norm(w, &format!("{root}embeddings.norm"), h, eps)?;
        let scale = 1.0 / (cfg.head_dim() as f64).sqrt();
        let layers = (0..d.num_layers)
            .map(|i| {
                let p = format!("{root}layers.{i}");
                Ok(Layer {
                    attn_norm: if i == 0 { None } else { Some(norm(w, &format!("{p}.attn_norm"), h, eps)?) },
                    wqkv: scaled_wqkv(w, &format!("{p}.attn.Wqkv"), h, scale)?,
                    wo: w.linear(&format!("{p}.attn.Wo"), h, h)?,
                    mlp_norm: norm(w, &format!("{p}.mlp_norm"), h, eps)?,
                    wi: w.linear(&format!("{p}.mlp.Wi"), 2 * d.intermediate_size, h)?,
                    mlp_wo: w.linear(&format!("{p}.mlp.Wo"), h, d.intermediate_size)?,
                    sliding: cfg.sliding[i],
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let final_norm = norm(w, &format!("{root}final_norm"), h, eps)?;
        let (head, labels) = match kind {
            EncoderHead::None => (Head::None, Vec::new()),
            _ => {
                let labels = match kind {
                    EncoderHead::QuestionAnswering => Vec::new(),
                    _ => head_labels(json, path, w, "classifier.weight")?,
                };
                let dense = w.linear("head.dense", h, h)?;
                let hnorm = norm(w, "head.norm", h, eps)?;
                let outputs = if kind == EncoderHead::QuestionAnswering { 2 } else { labels.len() };
                let classifier = w.linear("classifier", outputs, h)?;
                let head = match kind {
                    EncoderHead::SequenceClassification => Head::Sequence { dense, norm: hnorm, classifier },
                    _ => Head::PerToken { dense, norm: hnorm, classifier },
                };
                (head, labels)
            }
        };
        let head_params = match &head {
            Head::None => 0,
            Head::Sequence { dense, norm, classifier } | Head::PerToken { dense, norm, classifier } => dense.params() + norm.params() + classifier.params(),
        };
        let parameters = tok_embeddings.elem_count()
            + emb_norm.params()
            + layers.iter().map(Layer::params).sum::<usize>()
            + final_norm.params()
            + head_params;
        let info = EncoderInfo {
            architecture: architecture.to_string(),
            head: kind,
            labels,
            problem_type: json.get("problem_type").and_then(|v| v.as_str()).map(str::to_string),
            vocab_size: d.vocab_size,
            max_positions: d.max_tokens(),
            hidden_size: h,
            num_layers: d.num_layers,
            num_heads: d.num_heads,
            type_vocab_size: 0,
            pad_token_id: d.pad_token_id,
            parameters,
        };
        Ok(ModernBert { cfg, info, tok_embeddings, emb_norm, layers, final_norm, head })
    }

    pub fn config(&self) -> &ModernBertConfig {
        &self.cfg
    }

    /// One layer on `x` `[b * t, h]`.
    fn layer(&self, l: &Layer, x: &Tensor, b: usize, t: usize, ctx: &Context) -> Result<Tensor> {
        let heads = self.cfg.dims.num_heads;
        let (h, d) = (self.cfg.dims.hidden_size, self.cfg.head_dim());
        let normed = match &l.attn_norm {
            Some(n) => n.forward(x)?,
            None => x.clone(),
        };
        let ((cos, sin), mask) = if l.sliding { (&ctx.local_rope, &ctx.local_mask) } else { (&ctx.global_rope, &ctx.global_mask) };
        // [b*t, 3h] -> [3, b, heads, t, d]: one copy gives q, k and v in head-major order.
        let qkv = l.wqkv.forward(&normed)?.reshape((b, t, 3, heads, d))?.permute((2, 0, 3, 1, 4))?.contiguous()?;
        let q = candle_nn::rotary_emb::rope(&qkv.get(0)?, cos, sin)?.reshape((b * heads, t, d))?;
        let k = candle_nn::rotary_emb::rope(&qkv.get(1)?, cos, sin)?.reshape((b * heads, t, d))?;
        let v = qkv.get(2)?.reshape((b * heads, t, d))?;
        let scores = q.matmul(&k.t()?)?;
        let scores = match mask {
            Some(m) => scores.reshape((b, heads, t, t))?.broadcast_add(m)?.reshape((b * heads, t, t))?,
            None => scores,
        };
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let attn = probs.matmul(&v)?.reshape((b, heads, t, d))?.transpose(1, 2)?.reshape((b * t, h))?;
        let x = (x + l.wo.forward(&attn)?)?;
        let up = l.wi.forward(&l.mlp_norm.forward(&x)?)?;
        let inter = self.cfg.dims.intermediate_size;
        let glu = (self.cfg.dims.activation.apply(&up.narrow(1, 0, inter)?)? * up.narrow(1, inter, inter)?)?;
        Ok((x + l.mlp_wo.forward(&glu)?)?)
    }
}

impl Encoder for ModernBert {
    fn info(&self) -> &EncoderInfo {
        &self.info
    }

    fn forward(&self, batch: &EncoderBatch) -> Result<EncoderOutput> {
        let (b, t, ids) = check_batch(batch, &self.cfg.dims)?;
        let h = self.cfg.dims.hidden_size;
        let real = batch.mask.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        let padded = real.contains(&0.0);
        let ctx = Context {
            global_rope: rope_tables(self.cfg.global_theta, self.cfg.head_dim(), t)?,
            local_rope: rope_tables(self.cfg.local_theta, self.cfg.head_dim(), t)?,
            global_mask: if padded { Some(batch.additive_mask(DType::F32)?) } else { None },
            local_mask: if padded || t > self.cfg.window + 1 { Some(window_mask(&real, b, t, self.cfg.window)?) } else { None },
        };
        let mut x = self.emb_norm.forward(&self.tok_embeddings.embedding(&Tensor::new(ids, &Device::Cpu)?)?)?;
        for l in &self.layers {
            x = self.layer(l, &x, b, t, &ctx)?;
        }
        let x = self.final_norm.forward(&x)?;
        let hidden = x.reshape((b, t, h))?;
        let logits = match &self.head {
            Head::None => None,
            Head::Sequence { dense, norm, classifier } => {
                let pooled = match self.cfg.classifier_pooling {
                    ClassifierPooling::Cls => hidden.narrow(1, 0, 1)?.reshape((b, h))?,
                    ClassifierPooling::Mean => {
                        let m = batch.mask.to_dtype(DType::F32)?;
                        let sum = hidden.broadcast_mul(&m.unsqueeze(2)?)?.sum(1)?;
                        sum.broadcast_div(&m.sum_keepdim(1)?)?
                    }
                };
                let y = norm.forward(&self.cfg.classifier_activation.apply(&dense.forward(&pooled)?)?)?;
                Some(classifier.forward(&y)?)
            }
            Head::PerToken { dense, norm, classifier } => {
                let y = norm.forward(&self.cfg.classifier_activation.apply(&dense.forward(&x)?)?)?;
                let y = classifier.forward(&y)?;
                let n = y.dim(1)?;
                Some(y.reshape((b, t, n))?)
            }
        };
        Ok(EncoderOutput { hidden, logits, pooled: None })
    }
}

/// Loads a ModernBERT checkpoint (`ModernBertModel` or one of its task heads).
pub fn load_hf(json: &serde_json::Value, path: &Path, w: &Weights, model_type: &str) -> Result<Box<dyn Encoder>> {
    let cfg = ModernBertConfig::from_hf(json, path)?;
    Ok(Box::new(ModernBert::load(cfg, json, path, w, model_type)?))
}
