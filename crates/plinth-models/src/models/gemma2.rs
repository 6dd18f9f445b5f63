//! Gemma 2: embeddings scaled by `sqrt(hidden)`, four `1 + w` RMSNorms per layer (before and
//! after both attention and the MLP), attention scaled by `query_pre_attn_scalar^-0.5` with
//! logit soft-capping, sliding-window and full layers alternating, a GeGLU MLP, and soft-capped
//! output logits. Tensor names are Hugging Face's.
//!
//! The block is configurable so that `gemma3` is this file with options: per-head q/k norms,
//! a rotary base of its own for sliding layers, and no soft-capping.

use std::path::Path;
use std::sync::Arc;

use candle_core::quantized::QTensor;
use candle_core::{DType, Device, Tensor};
use plinth_core::{Error, Result};
use serde_json::Value;

use crate::config::{check_dims, check_even_rotary, Dims};
use crate::layers::{scaled_dot_product_attention, AttentionOptions, Linear, Masks, QLinear, RmsNorm, RopeScaling, RopeStyle, RotaryEmbedding};
use crate::weights::Weights;
use crate::{Decoder, DecoderInfo, KvCache};

/// Transformers' defaults for fields a `config.json` may omit, and the options that tell the
/// Gemma generations apart.
#[derive(Debug, Clone)]
pub struct GemmaDefaults {
    pub max_position_embeddings: usize,
    pub final_logit_softcapping: Option<f64>,
    pub attn_logit_softcapping: Option<f64>,
    /// Gemma 3's attention reads no soft-cap even when its config carries one.
    pub applies_attn_softcap: bool,
    /// Without `layer_types`, every `n`-th layer is full attention and the rest slide.
    pub sliding_window_pattern: usize,
    /// Gemma 3: `1 + w` RMSNorm over each head of q and k before the rotary embedding.
    pub qk_norm: bool,
}

/// Transformers' `Gemma2Config` defaults.
pub const GEMMA2_DEFAULTS: GemmaDefaults = GemmaDefaults {
    max_position_embeddings: 8192,
    final_logit_softcapping: Some(30.0),
    attn_logit_softcapping: Some(50.0),
    applies_attn_softcap: true,
    sliding_window_pattern: 2,
    qk_norm: false,
};

/// Rotary settings of one layer type.
#[derive(Debug, Clone, PartialEq)]
pub struct GemmaRope {
    pub theta: f64,
    pub scaling: Option<RopeScaling>,
}

/// Reads one rope dict (`rope_theta`, `rope_type` or the older `type`, `factor`); `theta` is
/// the base when the dict has none.
pub fn parse_rope(r: Option<&Value>, theta: f64, path: &Path) -> Result<GemmaRope> {
    let Some(r) = r.filter(|v| !v.is_null()) else { return Ok(GemmaRope { theta, scaling: None }) };
    if !r.is_object() {
        return Err(Error::format(path, "rope parameters are not an object"));
    }
    let theta = r.get("rope_theta").and_then(Value::as_f64).unwrap_or(theta);
    let scaling = match r.get("rope_type").or_else(|| r.get("type")).and_then(Value::as_str).unwrap_or("default") {
        "default" => None,
        "linear" => match r.get("factor").and_then(Value::as_f64) {
            Some(factor) if factor > 0.0 => Some(RopeScaling::Linear { factor }),
            _ => return Err(Error::format(path, "linear rope scaling needs a positive 'factor'")),
        },
        other => return Err(Error::unsupported(path, format!("rope scaling type '{other}'"))),
    };
    if theta.is_nan() || theta <= 0.0 {
        return Err(Error::format(path, format!("rope_theta {theta} is not positive")));
    }
    Ok(GemmaRope { theta, scaling })
}

/// How the MLP's gate is activated (`hidden_activation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    GeluTanh,
    GeluErf,
}

/// Hyper-parameters from a Hugging Face `config.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct GemmaConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub max_position_embeddings: usize,
    pub rms_norm_eps: f64,
    pub query_pre_attn_scalar: f64,
    pub attn_logit_softcapping: Option<f64>,
    pub final_logit_softcapping: Option<f64>,
    pub tie_word_embeddings: bool,
    pub activation: Activation,
    /// Whether each layer is a sliding-attention layer.
    pub layer_sliding: Vec<bool>,
    /// Window of the sliding layers (`None`: they attend to everything).
    pub sliding_window: Option<usize>,
    pub rope_full: GemmaRope,
    pub rope_sliding: GemmaRope,
    pub qk_norm: bool,
    /// `sqrt(hidden_size)` rounded to the checkpoint's dtype, as transformers multiplies it.
    pub embed_scale: f64,
}

/// `x` rounded to the float type a config's `dtype` (or older `torch_dtype`) names.
fn round_to_model_dtype(json: &Value, x: f64) -> Result<f64> {
    let dtype = match json.get("dtype").or_else(|| json.get("torch_dtype")).and_then(Value::as_str) {
        Some("bfloat16") => DType::BF16,
        Some("float16") => DType::F16,
        _ => DType::F32,
    };
    let t = Tensor::new(&[x as f32], &Device::Cpu)?.to_dtype(dtype)?.to_dtype(DType::F32)?;
    Ok(t.to_vec1::<f32>()?[0] as f64)
}

impl GemmaConfig {
    /// Reads a `config.json`; `d` fills what the file leaves out, and the caller has already
    /// read the rotary settings, whose layout differs between the generations.
    pub fn from_hf(json: &Value, path: &Path, d: &GemmaDefaults, rope_full: GemmaRope, rope_sliding: GemmaRope) -> Result<Self> {
        let u = |key: &str| -> Result<usize> {
            json.get(key).and_then(Value::as_u64).map(|v| v as usize).ok_or_else(|| Error::missing(path, format!("config field '{key}'")))
        };
        let u_or = |key: &str, default: usize| json.get(key).and_then(Value::as_u64).map_or(default, |v| v as usize);
        // An explicit `null` switches a cap off; only an absent field takes the default.
        let cap = |key: &str, default: Option<f64>| match json.get(key) {
            None => default,
            Some(v) => v.as_f64(),
        };
        if json.get("use_bidirectional_attention").and_then(Value::as_bool) == Some(true) {
            return Err(Error::unsupported(path, "bidirectional attention (an embedding model, not a decoder)"));
        }
        let activation = match json.get("hidden_activation").and_then(Value::as_str).unwrap_or("gelu_pytorch_tanh") {
            "gelu_pytorch_tanh" | "gelu_new" => Activation::GeluTanh,
            "gelu" => Activation::GeluErf,
            other => return Err(Error::unsupported(path, format!("hidden_activation '{other}'"))),
        };
        let num_layers = u("num_hidden_layers")?;
        let layer_sliding = match json.get("layer_types").and_then(Value::as_array) {
            Some(types) => {
                if types.len() != num_layers {
                    return Err(Error::format(path, format!("{} layer_types for {num_layers} layers", types.len())));
                }
                types
                    .iter()
                    .map(|t| match t.as_str() {
                        Some("sliding_attention") => Ok(true),
                        Some("full_attention") => Ok(false),
                        _ => Err(Error::unsupported(path, format!("layer type {t}"))),
                    })
                    .collect::<Result<Vec<_>>>()?
            }
            None => {
                let n = d.sliding_window_pattern.max(1);
                (0..num_layers).map(|i| !(i + 1).is_multiple_of(n)).collect()
            }
        };
        let sliding_window = match json.get("sliding_window") {
            None => Some(4096),
            Some(v) => v.as_u64().map(|v| v as usize),
        };
        let hidden_size = u("hidden_size")?;
        let cfg = GemmaConfig {
            vocab_size: u("vocab_size")?,
            hidden_size,
            intermediate_size: u("intermediate_size")?,
            num_layers,
            num_heads: u("num_attention_heads")?,
            num_kv_heads: u_or("num_key_value_heads", 4),
            head_dim: u_or("head_dim", 256),
            max_position_embeddings: u_or("max_position_embeddings", d.max_position_embeddings),
            rms_norm_eps: json.get("rms_norm_eps").and_then(Value::as_f64).unwrap_or(1e-6),
            query_pre_attn_scalar: json.get("query_pre_attn_scalar").and_then(Value::as_f64).unwrap_or(256.0),
            attn_logit_softcapping: if d.applies_attn_softcap { cap("attn_logit_softcapping", d.attn_logit_softcapping) } else { None },
            final_logit_softcapping: cap("final_logit_softcapping", d.final_logit_softcapping),
            tie_word_embeddings: json.get("tie_word_embeddings").and_then(Value::as_bool).unwrap_or(true),
            activation,
            layer_sliding,
            sliding_window,
            rope_full,
            rope_sliding,
            qk_norm: d.qk_norm,
            embed_scale: round_to_model_dtype(json, (hidden_size as f64).sqrt())?,
        };
        cfg.validate(path)?;
        Ok(cfg)
    }

    fn validate(&self, path: &Path) -> Result<()> {
        let bad = |what: String| Err(Error::format(path, what));
        check_dims(
            path,
            Dims {
                num_heads: self.num_heads,
                num_kv_heads: self.num_kv_heads,
                head_dim: self.head_dim,
                max_positions: self.max_position_embeddings,
                num_layers: self.num_layers,
                vocab_size: self.vocab_size,
            },
        )?;
        check_even_rotary(path, self.head_dim)?;
        if self.hidden_size == 0 || self.sliding_window == Some(0) {
            return bad("hidden size and sliding window must be positive".to_string());
        }
        // Non-positive values would turn every score or logit into NaN.
        let positive = |x: f64| x > 0.0;
        let caps_ok = [self.attn_logit_softcapping, self.final_logit_softcapping].iter().flatten().all(|&c| positive(c));
        if !positive(self.query_pre_attn_scalar) || !caps_ok {
            return bad("query_pre_attn_scalar and soft-caps must be positive".to_string());
        }
        Ok(())
    }

    fn window(&self, layer: usize) -> Option<usize> {
        if self.layer_sliding[layer] { self.sliding_window } else { None }
    }
}

struct Layer {
    window: Option<usize>,
    /// Index into [`Gemma::ropes`].
    rope: usize,
    input_layernorm: RmsNorm,
    q_proj: QLinear,
    k_proj: QLinear,
    v_proj: QLinear,
    o_proj: QLinear,
    q_norm: Option<RmsNorm>,
    k_norm: Option<RmsNorm>,
    post_attention_layernorm: RmsNorm,
    pre_feedforward_layernorm: RmsNorm,
    gate_proj: QLinear,
    up_proj: QLinear,
    down_proj: QLinear,
    post_feedforward_layernorm: RmsNorm,
}

enum Embedding {
    Quantized(Arc<QTensor>),
    Dense(Tensor),
}

/// A loaded Gemma 2 or Gemma 3 text model.
pub struct Gemma {
    cfg: GemmaConfig,
    info: DecoderInfo,
    embed_tokens: Embedding,
    layers: Vec<Layer>,
    norm: RmsNorm,
    lm_head: QLinear,
    /// Full-attention rotary table, then the sliding layers' one when it differs.
    ropes: Vec<RotaryEmbedding>,
    device: Device,
}

impl Gemma {
    pub fn load(cfg: GemmaConfig, w: &Weights, architecture: &str) -> Result<Self> {
        let (h, hd, eps) = (cfg.hidden_size, cfg.head_dim, cfg.rms_norm_eps);
        let embed_name = "model.embed_tokens.weight";
        let tied = cfg.tie_word_embeddings || !w.contains("lm_head.weight");
        // Gemma's vocabulary is large: the tied head shares the embedding's storage.
        let (embed_tokens, tied_head) = match w {
            Weights::Gguf(_) => {
                let q = w.qtensor(embed_name, &[cfg.vocab_size, h])?;
                (Embedding::Quantized(q.clone()), if tied { Some(QLinear::from_qtensor(q, None)?) } else { None })
            }
            Weights::Safetensors(_) => {
                let t = w.tensor(embed_name, &[cfg.vocab_size, h])?;
                let head = if tied { Some(QLinear::from_tensor(t.clone(), None)) } else { None };
                (Embedding::Dense(t), head)
            }
        };
        let lm_head = match tied_head {
            Some(head) => head,
            None => w.linear("lm_head", cfg.vocab_size, h)?,
        };
        let norm = |name: &str, dim: usize| RmsNorm::new_one_plus(w.tensor(name, &[dim])?, eps);
        let mut ropes = vec![rotary(&cfg, &cfg.rope_full, w)?];
        let sliding_rope = if cfg.rope_sliding == cfg.rope_full {
            0
        } else {
            ropes.push(rotary(&cfg, &cfg.rope_sliding, w)?);
            1
        };
        let mut layers = Vec::with_capacity(cfg.num_layers);
        for i in 0..cfg.num_layers {
            let p = format!("model.layers.{i}");
            let head_norm = |n: &str| -> Result<Option<RmsNorm>> {
                if cfg.qk_norm { Ok(Some(norm(&format!("{p}.self_attn.{n}.weight"), hd)?)) } else { Ok(None) }
            };
            layers.push(Layer {
                window: cfg.window(i),
                rope: if cfg.layer_sliding[i] { sliding_rope } else { 0 },
                input_layernorm: norm(&format!("{p}.input_layernorm.weight"), h)?,
                q_proj: w.linear(&format!("{p}.self_attn.q_proj"), cfg.num_heads * hd, h)?,
                k_proj: w.linear(&format!("{p}.self_attn.k_proj"), cfg.num_kv_heads * hd, h)?,
                v_proj: w.linear(&format!("{p}.self_attn.v_proj"), cfg.num_kv_heads * hd, h)?,
                o_proj: w.linear(&format!("{p}.self_attn.o_proj"), h, cfg.num_heads * hd)?,
                q_norm: head_norm("q_norm")?,
                k_norm: head_norm("k_norm")?,
                post_attention_layernorm: norm(&format!("{p}.post_attention_layernorm.weight"), h)?,
                pre_feedforward_layernorm: norm(&format!("{p}.pre_feedforward_layernorm.weight"), h)?,
                gate_proj: w.linear(&format!("{p}.mlp.gate_proj"), cfg.intermediate_size, h)?,
                up_proj: w.linear(&format!("{p}.mlp.up_proj"), cfg.intermediate_size, h)?,
                down_proj: w.linear(&format!("{p}.mlp.down_proj"), h, cfg.intermediate_size)?,
                post_feedforward_layernorm: norm(&format!("{p}.post_feedforward_layernorm.weight"), h)?,
            });
        }
        let final_norm = norm("model.norm.weight", h)?;
        let layer_params: usize = layers.iter().map(Layer::params).sum();
        let parameters = cfg.vocab_size * h + layer_params + final_norm.params() + if tied { 0 } else { lm_head.params() };
        let info = DecoderInfo {
            architecture: architecture.to_string(),
            vocab_size: cfg.vocab_size,
            context_length: cfg.max_position_embeddings,
            num_layers: cfg.num_layers,
            hidden_size: h,
            num_heads: cfg.num_heads,
            num_kv_heads: cfg.num_kv_heads,
            head_dim: hd,
            parameters,
        };
        Ok(Gemma { cfg, info, embed_tokens, layers, norm: final_norm, lm_head, ropes, device: w.device() })
    }

    pub fn config(&self) -> &GemmaConfig {
        &self.cfg
    }

    fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        let x = match &self.embed_tokens {
            Embedding::Quantized(q) => q.embedding(ids)?,
            Embedding::Dense(t) => t.embedding(ids)?,
        };
        Ok((x * self.cfg.embed_scale)?)
    }
}

fn rotary(cfg: &GemmaConfig, r: &GemmaRope, w: &Weights) -> Result<RotaryEmbedding> {
    RotaryEmbedding::new(cfg.head_dim, cfg.max_position_embeddings, r.theta, r.scaling.as_ref(), None, RopeStyle::Half, &w.device())
}

impl Layer {
    fn params(&self) -> usize {
        let norms = [&self.input_layernorm, &self.post_attention_layernorm, &self.pre_feedforward_layernorm, &self.post_feedforward_layernorm];
        let linears = [&self.q_proj, &self.k_proj, &self.v_proj, &self.o_proj, &self.gate_proj, &self.up_proj, &self.down_proj];
        norms.iter().map(|n| n.params()).sum::<usize>()
            + [&self.q_norm, &self.k_norm].iter().map(|n| n.as_ref().map_or(0, |n| n.params())).sum::<usize>()
            + linears.iter().map(|l| l.params()).sum::<usize>()
    }

    fn forward(&self, cfg: &GemmaConfig, rope: &RotaryEmbedding, x: &Tensor, layer: usize, cache: &mut KvCache, masks: &Masks) -> Result<Tensor> {
        let (b, seq, _) = x.dims3()?;
        let start = cache.len();
        let h = self.input_layernorm.forward(x)?;
        let heads = |t: Tensor, n: usize| -> Result<Tensor> { Ok(t.reshape((b, seq, n, cfg.head_dim))?.transpose(1, 2)?.contiguous()?) };
        let norm = |t: Tensor, n: &Option<RmsNorm>| -> Result<Tensor> { n.as_ref().map_or(Ok(t.clone()), |n| n.forward(&t)) };
        let q = rope.apply(&norm(heads(self.q_proj.forward(&h)?, cfg.num_heads)?, &self.q_norm)?, start)?;
        let k = rope.apply(&norm(heads(self.k_proj.forward(&h)?, cfg.num_kv_heads)?, &self.k_norm)?, start)?;
        let v = heads(self.v_proj.forward(&h)?, cfg.num_kv_heads)?;
        let (k, v) = cache.append(layer, &k, &v)?;
        let opts = AttentionOptions { scale: Some(cfg.query_pre_attn_scalar.powf(-0.5)), softcap: cfg.attn_logit_softcapping };
        let attn = scaled_dot_product_attention(&q, &k, &v, masks.get(self.window)?, opts)?;
        let attn = attn.transpose(1, 2)?.reshape((b, seq, cfg.num_heads * cfg.head_dim))?;
        let x = (x + self.post_attention_layernorm.forward(&self.o_proj.forward(&attn)?)?)?;
        let h = self.pre_feedforward_layernorm.forward(&x)?;
        let gate = self.gate_proj.forward(&h)?;
        let gate = match cfg.activation {
            Activation::GeluTanh => gate.gelu()?,
            Activation::GeluErf => gate.gelu_erf()?,
        };
        let mlp = self.down_proj.forward(&(gate * self.up_proj.forward(&h)?)?)?;
        Ok((x + self.post_feedforward_layernorm.forward(&mlp)?)?)
    }
}

impl Decoder for Gemma {
    fn info(&self) -> &DecoderInfo {
        &self.info
    }

    fn new_cache(&self) -> KvCache {
        KvCache::new(self.cfg.num_layers)
    }

    fn forward(&self, ids: &[u32], cache: &mut KvCache, all_logits: bool) -> Result<Tensor> {
        let seq = ids.len();
        let start = cache.check_room(seq, self.cfg.max_position_embeddings)?;
        let ids_t = Tensor::new(ids, &self.device)?;
        let mut x = self.embed(&ids_t)?.unsqueeze(0)?;
        let masks = Masks::new(seq, start, &self.layers.iter().map(|l| l.window).collect::<Vec<_>>(), &self.device)?;
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(&self.cfg, &self.ropes[layer.rope], &x, i, cache, &masks)?;
        }
        cache.advance(seq);
        let x = if all_logits { x } else { x.narrow(1, seq - 1, 1)? };
        let logits = self.lm_head.forward(&self.norm.forward(&x)?)?.squeeze(0)?;
        Ok(match self.cfg.final_logit_softcapping {
            Some(cap) => ((logits / cap)?.tanh()? * cap)?,
            None => logits,
        })
    }
}

/// Gemma 2's rotary settings: `rope_parameters` (transformers v5), else the older top-level
/// `rope_theta` and `rope_scaling`.
fn hf_rope(json: &Value, path: &Path) -> Result<GemmaRope> {
    let theta = json.get("rope_theta").and_then(Value::as_f64).unwrap_or(10_000.0);
    let dict = json.get("rope_parameters").filter(|v| !v.is_null()).or_else(|| json.get("rope_scaling"));
    parse_rope(dict, theta, path)
}

pub fn load_hf(json: &Value, path: &Path, w: &Weights, model_type: &str) -> Result<Box<dyn Decoder>> {
    let rope = hf_rope(json, path)?;
    let cfg = GemmaConfig::from_hf(json, path, &GEMMA2_DEFAULTS, rope.clone(), rope)?;
    Ok(Box::new(Gemma::load(cfg, w, model_type)?))
}
