//! Phi-3 (Phi-3, Phi-3.5-mini, Phi-4-mini; `model_type` "phi3"): the Llama block with fused
//! weights — one `qkv_proj` for attention and one `gate_up_proj` for the MLP — plus a sliding
//! window on every layer when the config sets one, partial rotary embeddings, and LongRoPE
//! scaling. This module owns the config parsing (`config.json` and llama.cpp's `phi3` GGUF),
//! the LongRoPE short/long tables, and the model.

use std::path::Path;
use std::sync::Arc;

use candle_core::quantized::QTensor;
use candle_core::{Device, Tensor, D};
use plinth_core::{Error, Result};
use plinth_io::gguf::GgufFile;

use crate::config::{check_dims, Dims};
use crate::layers::{scaled_dot_product_attention, AttentionOptions, Linear, Masks, QLinear, RmsNorm, RopeStyle, RotaryEmbedding};
use crate::weights::Weights;
use crate::{Decoder, DecoderInfo, KvCache};

/// LongRoPE ("longrope", older "su"): per-frequency divisors, one set for sequences within the
/// pretraining length and one beyond it, and a factor on cos/sin.
#[derive(Debug, Clone, PartialEq)]
pub struct LongRope {
    pub short_factor: Vec<f32>,
    pub long_factor: Vec<f32>,
    pub original_max_position: usize,
    pub attention_factor: f64,
}

/// Hyper-parameters, from a Hugging Face `config.json` or GGUF metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct Phi3Config {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    /// Leading dimensions of each head that rotate; the rest pass through.
    pub rotary_dim: usize,
    pub max_position_embeddings: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub long_rope: Option<LongRope>,
    pub tie_word_embeddings: bool,
    /// Applies to every layer (transformers picks one mask function for the whole model).
    pub sliding_window: Option<usize>,
}

impl Phi3Config {
    /// Reads a `config.json` the way transformers' `Phi3Config` does, with its defaults for
    /// omitted fields and its precedence of `rope_scaling` over `rope_parameters`.
    pub fn from_hf(json: &serde_json::Value, path: &Path) -> Result<Self> {
        let u = |key: &str, default: usize| -> Result<usize> {
            match json.get(key).filter(|v| !v.is_null()) {
                None => Ok(default),
                Some(v) => v.as_u64().map(|v| v as usize).ok_or_else(|| Error::format(path, format!("config field '{key}' is not a non-negative integer"))),
            }
        };
        if let Some(act) = json.get("hidden_act").and_then(|v| v.as_str()).filter(|a| *a != "silu") {
            return Err(Error::unsupported(path, format!("hidden_act '{act}'")));
        }
        let hidden_size = u("hidden_size", 3072)?;
        let num_heads = u("num_attention_heads", 32)?;
        let head_dim = u("head_dim", hidden_size / num_heads.max(1))?;
        let max_position_embeddings = u("max_position_embeddings", 4096)?;
        let rope = json
            .get("rope_scaling")
            .filter(|v| v.as_object().is_some_and(|o| !o.is_empty()))
            .or_else(|| json.get("rope_parameters").filter(|v| !v.is_null()));
        let num = |key: &str| rope.and_then(|r| r.get(key)).or_else(|| json.get(key)).and_then(|v| v.as_f64());
        let rope_theta = num("rope_theta").unwrap_or(10_000.0);
        let partial = num("partial_rotary_factor").unwrap_or(1.0);
        // Python's `int()` truncates.
        let rotary_dim = (head_dim as f64 * partial) as usize;
        let ty = rope.and_then(|r| r.get("rope_type").or_else(|| r.get("type"))).and_then(|v| v.as_str()).unwrap_or("default");
        let long_rope = match ty {
            "default" => None,
            // Phi3Config renames the older spellings; "yarn" included, oddly, so a yarn config
            // fails here for want of factor lists, as it does in transformers.
            "longrope" | "su" | "yarn" => {
                let r = rope.unwrap_or(&serde_json::Value::Null);
                let factors = |key: &str| -> Result<Vec<f32>> {
                    let list = r.get(key).and_then(|v| v.as_array()).ok_or_else(|| Error::missing(path, format!("rope field '{key}'")))?;
                    let vals: Option<Vec<f32>> = list.iter().map(|x| x.as_f64().map(|x| x as f32)).collect();
                    vals.ok_or_else(|| Error::format(path, format!("rope field '{key}' must be a list of numbers")))
                };
                // Phi3's top-level field wins over one inside the rope dict.
                let original = u("original_max_position_embeddings", 4096)?;
                let factor = r.get("factor").and_then(|v| v.as_f64()).unwrap_or(max_position_embeddings as f64 / original.max(1) as f64);
                let attention_factor =
                    r.get("attention_factor").and_then(|v| v.as_f64()).unwrap_or_else(|| default_attention_factor(factor, original));
                Some(LongRope { short_factor: factors("short_factor")?, long_factor: factors("long_factor")?, original_max_position: original, attention_factor })
            }
            other => return Err(Error::unsupported(path, format!("rope scaling type '{other}'"))),
        };
        let cfg = Phi3Config {
            vocab_size: u("vocab_size", 32064)?,
            hidden_size,
            intermediate_size: u("intermediate_size", 8192)?,
            num_layers: u("num_hidden_layers", 32)?,
            num_heads,
            num_kv_heads: u("num_key_value_heads", num_heads)?,
            head_dim,
            rotary_dim,
            max_position_embeddings,
            rms_norm_eps: json.get("rms_norm_eps").and_then(|v| v.as_f64()).unwrap_or(1e-5),
            rope_theta,
            long_rope,
            tie_word_embeddings: json.get("tie_word_embeddings").and_then(|v| v.as_bool()).unwrap_or(false),
            sliding_window: json.get("sliding_window").and_then(|v| v.as_u64()).map(|v| v as usize),
        };
        cfg.validate(path)?;
        Ok(cfg)
    }

    /// Reads llama.cpp's `phi3.*` keys; LongRoPE factors are the `rope_factors_{short,long}`
    /// tensors.
    pub fn from_gguf(g: &GgufFile) -> Result<Self> {
        let arch = g.architecture()?.to_string();
        let k = |s: &str| format!("{arch}.{s}");
        let hidden_size = g.require_usize(&k("embedding_length"))?;
        let num_heads = g.require_usize(&k("attention.head_count"))?;
        let head_dim = g.get_usize(&k("attention.key_length")).unwrap_or(hidden_size / num_heads.max(1));
        let max_position_embeddings = g.require_usize(&k("context_length"))?;
        let vocab_size = match g.get_usize(&k("vocab_size")) {
            Some(v) => v,
            None => g.tensor_info("token_embd.weight").map(|t| t.shape[0]).ok_or_else(|| Error::missing(g.path(), "tensor 'token_embd.weight'"))?,
        };
        let factors = |name: &str| -> Result<Option<Vec<f32>>> {
            if g.tensor_info(name).is_none() {
                return Ok(None);
            }
            Ok(Some(g.qtensor(name, &Device::Cpu)?.dequantize(&Device::Cpu)?.flatten_all()?.to_vec1::<f32>()?))
        };
        let long_rope = match (factors("rope_factors_short.weight")?, factors("rope_factors_long.weight")?) {
            (None, None) => None,
            (Some(short_factor), Some(long_factor)) => {
                let original = g.get_usize(&k("rope.scaling.original_context_length")).unwrap_or(max_position_embeddings);
                // Files converted before llama.cpp wrote the key get the value its converter writes.
                let attention_factor = g
                    .get_f64(&k("rope.scaling.attn_factor"))
                    .unwrap_or_else(|| default_attention_factor(max_position_embeddings as f64 / original.max(1) as f64, original));
                Some(LongRope { short_factor, long_factor, original_max_position: original, attention_factor })
            }
            _ => return Err(Error::format(g.path(), "only one of rope_factors_short/rope_factors_long is present")),
        };
        let cfg = Phi3Config {
            vocab_size,
            hidden_size,
            intermediate_size: g.require_usize(&k("feed_forward_length"))?,
            num_layers: g.require_usize(&k("block_count"))?,
            num_heads,
            num_kv_heads: g.get_usize(&k("attention.head_count_kv")).unwrap_or(num_heads),
            head_dim,
            rotary_dim: g.get_usize(&k("rope.dimension_count")).unwrap_or(head_dim),
            max_position_embeddings,
            rms_norm_eps: g.get_f64(&k("attention.layer_norm_rms_epsilon")).unwrap_or(1e-5),
            rope_theta: g.get_f64(&k("rope.freq_base")).unwrap_or(10_000.0),
            long_rope,
            tie_word_embeddings: g.tensor_info("output.weight").is_none(),
            // The converter writes 0 for "no window".
            sliding_window: g.get_usize(&k("attention.sliding_window")).filter(|&w| w > 0),
        };
        cfg.validate(g.path())?;
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
        if self.rotary_dim == 0 || !self.rotary_dim.is_multiple_of(2) || self.rotary_dim > self.head_dim {
            return bad(format!("rotary dimension {} is not a positive even number <= head dimension {}", self.rotary_dim, self.head_dim));
        }
        // Also keeps the fused row counts (`2 * intermediate`, `(heads + 2 kv) * head_dim`) from overflowing.
        if self.num_heads > 4096 || !(1..=1 << 20).contains(&self.hidden_size) || !(1..=1 << 20).contains(&self.intermediate_size) {
            return bad(format!("{} heads / hidden {} / intermediate {} are out of range", self.num_heads, self.hidden_size, self.intermediate_size));
        }
        if self.sliding_window == Some(0) {
            return bad("sliding_window 0 would hide every position".to_string());
        }
        if let Some(lr) = &self.long_rope {
            if lr.original_max_position == 0 || !(lr.attention_factor.is_finite() && lr.attention_factor > 0.0) {
                return bad(format!("longrope original length {} / attention factor {} are out of range", lr.original_max_position, lr.attention_factor));
            }
            for (name, f) in [("short", &lr.short_factor), ("long", &lr.long_factor)] {
                if f.len() != self.rotary_dim / 2 || !f.iter().all(|x| x.is_finite() && *x > 0.0) {
                    return bad(format!("longrope {name} factors must be {} positive numbers, found {}", self.rotary_dim / 2, f.len()));
                }
            }
        }
        Ok(())
    }
}

/// Transformers' LongRoPE default (and llama.cpp's converter's): `sqrt(1 + ln f / ln original)`.
fn default_attention_factor(factor: f64, original: usize) -> f64 {
    if factor <= 1.0 { 1.0 } else { (1.0 + factor.ln() / (original as f64).ln()).sqrt() }
}

/// Rotary tables. With LongRoPE transformers picks short or long factors per forward call from
/// the call's last position, so cached keys keep whichever set was active when they were
/// written; plinth does the same to match it.
struct Rope {
    short: RotaryEmbedding,
    /// The long table and the last position (exclusive) the short one serves.
    long: Option<(RotaryEmbedding, usize)>,
    rotary_dim: usize,
    attention_factor: f64,
}

impl Rope {
    fn new(cfg: &Phi3Config, device: &Device) -> Result<Self> {
        let table = |len: usize, factors: Option<&[f32]>| {
            RotaryEmbedding::new(cfg.rotary_dim, len, cfg.rope_theta, None, factors, RopeStyle::Half, device)
        };
        let max = cfg.max_position_embeddings;
        Ok(match &cfg.long_rope {
            None => Rope { short: table(max, None)?, long: None, rotary_dim: cfg.rotary_dim, attention_factor: 1.0 },
            Some(lr) => {
                let short_len = max.min(lr.original_max_position);
                Rope {
                    short: table(short_len, Some(&lr.short_factor))?,
                    long: Some((table(max, Some(&lr.long_factor))?, short_len)),
                    rotary_dim: cfg.rotary_dim,
                    attention_factor: lr.attention_factor,
                }
            }
        })
    }

    /// The table for a forward call whose positions end (exclusive) at `end`.
    fn table(&self, end: usize) -> &RotaryEmbedding {
        match &self.long {
            Some((long, short_len)) if end > *short_len => long,
            _ => &self.short,
        }
    }

    /// Rotates the leading `rotary_dim` of each head of `x` `[b, heads, seq, head_dim]`.
    fn apply(&self, table: &RotaryEmbedding, x: &Tensor, start: usize) -> Result<Tensor> {
        let head_dim = x.dim(D::Minus1)?;
        let rot = if self.rotary_dim == head_dim { x.clone() } else { x.narrow(D::Minus1, 0, self.rotary_dim)? };
        let mut rot = table.apply(&rot, start)?;
        // Transformers scales cos and sin; scaling the rotated part is the same product.
        if self.attention_factor != 1.0 {
            rot = (rot * self.attention_factor)?;
        }
        if self.rotary_dim == head_dim {
            return Ok(rot);
        }
        // Contiguous parts make a contiguous result, which the KV cache's in-place write needs.
        let pass = x.narrow(D::Minus1, self.rotary_dim, head_dim - self.rotary_dim)?.contiguous()?;
        Ok(Tensor::cat(&[&rot.contiguous()?, &pass], D::Minus1)?)
    }
}

enum Embedding {
    /// GGUF: rows are dequantized as they are looked up.
    Quantized(Arc<QTensor>),
    Dense(Tensor),
}

struct Layer {
    input_layernorm: RmsNorm,
    /// Rows: q heads, then k heads, then v heads.
    qkv_proj: QLinear,
    o_proj: QLinear,
    post_attention_layernorm: RmsNorm,
    /// Rows: gate, then up.
    gate_up_proj: QLinear,
    down_proj: QLinear,
}

/// A loaded Phi-3 model.
pub struct Phi3 {
    cfg: Phi3Config,
    info: DecoderInfo,
    embed_tokens: Embedding,
    layers: Vec<Layer>,
    norm: RmsNorm,
    lm_head: QLinear,
    rope: Rope,
    device: Device,
}

impl Phi3 {
    pub fn load(cfg: Phi3Config, w: &Weights, architecture: &str) -> Result<Self> {
        let (h, hd, inter) = (cfg.hidden_size, cfg.head_dim, cfg.intermediate_size);
        let embed_name = "model.embed_tokens.weight";
        let tied = cfg.tie_word_embeddings || !w.contains("lm_head.weight");
        let embed_q = w.qtensor(embed_name, &[cfg.vocab_size, h])?;
        let lm_head = if tied { QLinear::from_qtensor(embed_q.clone(), None)? } else { w.linear("lm_head", cfg.vocab_size, h)? };
        let embed_tokens = match w {
            Weights::Gguf(_) => Embedding::Quantized(embed_q),
            Weights::Safetensors(_) => Embedding::Dense(w.tensor(embed_name, &[cfg.vocab_size, h])?),
        };
        let qkv_rows = (cfg.num_heads + 2 * cfg.num_kv_heads) * hd;
        let norm = |name: &str| -> Result<RmsNorm> { Ok(RmsNorm::new(w.tensor(name, &[h])?, cfg.rms_norm_eps)) };
        let mut layers = Vec::with_capacity(cfg.num_layers);
        for i in 0..cfg.num_layers {
            let p = format!("model.layers.{i}");
            layers.push(Layer {
                input_layernorm: norm(&format!("{p}.input_layernorm.weight"))?,
                qkv_proj: w.linear(&format!("{p}.self_attn.qkv_proj"), qkv_rows, h)?,
                o_proj: w.linear(&format!("{p}.self_attn.o_proj"), h, cfg.num_heads * hd)?,
                post_attention_layernorm: norm(&format!("{p}.post_attention_layernorm.weight"))?,
                gate_up_proj: w.linear(&format!("{p}.mlp.gate_up_proj"), 2 * inter, h)?,
                down_proj: w.linear(&format!("{p}.mlp.down_proj"), h, inter)?,
            });
        }
        let norm = norm("model.norm.weight")?;
        let rope = Rope::new(&cfg, &w.device())?;
        let layer_params: usize = layers
            .iter()
            .map(|l| {
                l.input_layernorm.params()
                    + l.post_attention_layernorm.params()
                    + [&l.qkv_proj, &l.o_proj, &l.gate_up_proj, &l.down_proj].iter().map(|x| x.params()).sum::<usize>()
            })
            .sum();
        let parameters = cfg.vocab_size * h + layer_params + norm.params() + if tied { 0 } else { lm_head.params() };
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
        Ok(Phi3 { cfg, info, embed_tokens, layers, norm, lm_head, rope, device: w.device() })
    }

    pub fn config(&self) -> &Phi3Config {
        &self.cfg
    }
}

impl Layer {
    #[allow(clippy::too_many_arguments)]
    fn forward(&self, cfg: &Phi3Config, rope: &Rope, table: &RotaryEmbedding, x: &Tensor, layer: usize, cache: &mut KvCache, mask: Option<&Tensor>) -> Result<Tensor> {
        let (b, seq, _) = x.dims3()?;
        let start = cache.len();
        let hd = cfg.head_dim;
        let (q_len, kv_len) = (cfg.num_heads * hd, cfg.num_kv_heads * hd);
        let qkv = self.qkv_proj.forward(&self.input_layernorm.forward(x)?)?;
        let heads = |from: usize, n: usize| -> Result<Tensor> {
            Ok(qkv.narrow(D::Minus1, from, n * hd)?.reshape((b, seq, n, hd))?.transpose(1, 2)?.contiguous()?)
        };
        let q = rope.apply(table, &heads(0, cfg.num_heads)?, start)?;
        let k = rope.apply(table, &heads(q_len, cfg.num_kv_heads)?, start)?;
        let v = heads(q_len + kv_len, cfg.num_kv_heads)?;
        let (k, v) = cache.append(layer, &k, &v)?;
        let attn = scaled_dot_product_attention(&q, &k, &v, mask, AttentionOptions::default())?;
        let attn = attn.transpose(1, 2)?.reshape((b, seq, q_len))?;
        let x = (x + self.o_proj.forward(&attn)?)?;
        let gate_up = self.gate_up_proj.forward(&self.post_attention_layernorm.forward(&x)?)?;
        let inter = cfg.intermediate_size;
        let gated = (candle_nn::ops::silu(&gate_up.narrow(D::Minus1, 0, inter)?)? * gate_up.narrow(D::Minus1, inter, inter)?)?;
        Ok((x + self.down_proj.forward(&gated)?)?)
    }
}

impl Decoder for Phi3 {
    fn info(&self) -> &DecoderInfo {
        &self.info
    }

    fn new_cache(&self) -> KvCache {
        KvCache::new(self.cfg.num_layers)
    }

    fn forward(&self, ids: &[u32], cache: &mut KvCache, all_logits: bool) -> Result<Tensor> {
        let seq = ids.len();
        let start = cache.check_room(seq, self.cfg.max_position_embeddings)?;
        if let Some(&bad) = ids.iter().find(|&&id| id as usize >= self.cfg.vocab_size) {
            return Err(Error::invalid("input", format!("token id {bad} is outside the vocabulary of {}", self.cfg.vocab_size)));
        }
        let ids_t = Tensor::new(ids, &self.device)?;
        let mut x = match &self.embed_tokens {
            Embedding::Quantized(q) => q.embedding(&ids_t)?,
            Embedding::Dense(t) => t.embedding(&ids_t)?,
        }
        .unsqueeze(0)?;
        let window = self.cfg.sliding_window;
        let masks = Masks::new(seq, start, &[window], &self.device)?;
        let mask = masks.get(window)?;
        let table = self.rope.table(start + seq);
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(&self.cfg, &self.rope, table, &x, i, cache, mask)?;
        }
        cache.advance(seq);
        let x = if all_logits { x } else { x.narrow(1, seq - 1, 1)? };
        let x = self.norm.forward(&x)?;
        Ok(self.lm_head.forward(&x)?.squeeze(0)?)
    }
}

/// llama.cpp keeps Hugging Face's q/k row order and half-split rotation for `phi3`.
pub fn load_gguf(g: &GgufFile, w: &Weights, arch: &str) -> Result<Box<dyn Decoder>> {
    Ok(Box::new(Phi3::load(Phi3Config::from_gguf(g)?, w, arch)?))
}

pub fn load_hf(json: &serde_json::Value, path: &Path, w: &Weights, model_type: &str) -> Result<Box<dyn Decoder>> {
    Ok(Box::new(Phi3::load(Phi3Config::from_hf(json, path)?, w, model_type)?))
}
