//! The GPT-2 decoder (`model_type` "gpt2", GGUF `gpt2`): learned absolute position embeddings,
//! pre-norm LayerNorm blocks with biases, fused q/k/v projection, full multi-head attention,
//! a two-layer MLP, and an output head tied to the token embedding.
//!
//! Hugging Face stores the projections as `Conv1D` weights, `[in, out]`; they are transposed
//! once at load time so that every layer is an ordinary `[out, in]` [`QLinear`]. llama.cpp's
//! converter has already done that transpose, so GGUF weights load as they are (and may stay
//! quantized).

use std::path::Path;
use std::sync::Arc;

use candle_core::quantized::QTensor;
use candle_core::{Device, Tensor, D};
use plinth_core::{Error, Result};
use plinth_io::gguf::GgufFile;

use crate::config::{check_dims, Dims};
pub use crate::layers::Activation;
use crate::layers::{scaled_dot_product_attention, AttentionOptions, LayerNorm, Linear, Masks, QLinear};
use crate::weights::Weights;
use crate::{Decoder, DecoderInfo, KvCache};

/// Hyper-parameters, from a Hugging Face `config.json` or GGUF metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct Gpt2Config {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub inner_size: usize,
    /// Rows of the position embedding table: the context window.
    pub max_positions: usize,
    pub layer_norm_eps: f64,
    pub activation: Activation,
    pub scale_attn_weights: bool,
    pub scale_attn_by_inverse_layer_idx: bool,
    pub tie_word_embeddings: bool,
}

impl Gpt2Config {
    /// Reads a `config.json`. Fields it leaves out take `GPT2Config`'s defaults, as they do in
    /// transformers; the generic names of `attribute_map` (`hidden_size`, ...) are accepted too.
    pub fn from_hf(json: &serde_json::Value, path: &Path) -> Result<Self> {
        let u = |keys: &[&str], default: usize| -> Result<usize> {
            for k in keys {
                match json.get(*k) {
                    None | Some(serde_json::Value::Null) => continue,
                    Some(v) => {
                        return v
                            .as_u64()
                            .map(|v| v as usize)
                            .ok_or_else(|| Error::format(path, format!("config field '{k}' is not a non-negative integer")))
                    }
                }
            }
            Ok(default)
        };
        let b = |key: &str, default: bool| json.get(key).and_then(|v| v.as_bool()).unwrap_or(default);
        let hidden_size = u(&["n_embd", "hidden_size"], 768)?;
        let activation = match json.get("activation_function").and_then(|v| v.as_str()) {
            Some(name) => Activation::from_hf(name, "activation_function", path)?,
            None => Activation::GeluTanh,
        };
        let cfg = Gpt2Config {
            vocab_size: u(&["vocab_size"], 50257)?,
            hidden_size,
            num_layers: u(&["n_layer", "num_hidden_layers"], 12)?,
            num_heads: u(&["n_head", "num_attention_heads"], 12)?,
            inner_size: u(&["n_inner"], 4 * hidden_size)?,
            max_positions: u(&["n_positions", "max_position_embeddings"], 1024)?,
            layer_norm_eps: json.get("layer_norm_epsilon").and_then(|v| v.as_f64()).unwrap_or(1e-5),
            activation,
            scale_attn_weights: b("scale_attn_weights", true),
            scale_attn_by_inverse_layer_idx: b("scale_attn_by_inverse_layer_idx", false),
            tie_word_embeddings: b("tie_word_embeddings", true),
        };
        // `reorder_and_upcast_attn` only changes where the scale is applied and upcasts half
        // precision scores to f32; plinth already computes attention in f32, so either value
        // gives transformers' numbers and neither needs checking.
        cfg.validate(path)?;
        Ok(cfg)
    }

    /// Reads `gpt2.*` keys as llama.cpp's converter writes them.
    pub fn from_gguf(g: &GgufFile) -> Result<Self> {
        let arch = g.architecture()?.to_string();
        let k = |s: &str| format!("{arch}.{s}");
        let hidden_size = g.require_usize(&k("embedding_length"))?;
        let vocab_size = match g.get_usize(&k("vocab_size")) {
            Some(v) => v,
            None => g
                .tensor_info("token_embd.weight")
                .map(|t| t.shape[0])
                .ok_or_else(|| Error::missing(g.path(), "tensor 'token_embd.weight'"))?,
        };
        let cfg = Gpt2Config {
            vocab_size,
            hidden_size,
            num_layers: g.require_usize(&k("block_count"))?,
            num_heads: g.require_usize(&k("attention.head_count"))?,
            inner_size: g.get_usize(&k("feed_forward_length")).unwrap_or(4 * hidden_size),
            max_positions: g.require_usize(&k("context_length"))?,
            layer_norm_eps: g.get_f64(&k("attention.layer_norm_epsilon")).unwrap_or(1e-5),
            activation: Activation::GeluTanh,
            scale_attn_weights: true,
            scale_attn_by_inverse_layer_idx: false,
            tie_word_embeddings: g.tensor_info("output.weight").is_none(),
        };
        cfg.validate(g.path())?;
        Ok(cfg)
    }

    fn validate(&self, path: &Path) -> Result<()> {
        let bad = |what: String| Err(Error::format(path, what));
        if self.num_heads == 0 || self.hidden_size == 0 || !self.hidden_size.is_multiple_of(self.num_heads) {
            return bad(format!("hidden size {} is not divisible into {} heads", self.hidden_size, self.num_heads));
        }
        if self.hidden_size / self.num_heads > 1024 || self.inner_size == 0 || self.inner_size > 1 << 20 {
            return bad(format!("head size {} / inner size {} are out of range", self.hidden_size / self.num_heads, self.inner_size));
        }
        check_dims(
            path,
            Dims {
                num_heads: self.num_heads,
                num_kv_heads: self.num_heads,
                head_dim: self.hidden_size / self.num_heads,
                max_positions: self.max_positions,
                num_layers: self.num_layers,
                vocab_size: self.vocab_size,
            },
        )
    }

    fn head_dim(&self) -> usize {
        self.hidden_size / self.num_heads
    }
}

struct Block {
    ln_1: LayerNorm,
    c_attn: QLinear,
    attn_proj: QLinear,
    /// `q k^T` multiplier: `1/sqrt(head_dim)` and/or `1/(layer + 1)`, per the config.
    scale: f64,
    ln_2: LayerNorm,
    c_fc: QLinear,
    mlp_proj: QLinear,
}

enum Embedding {
    Quantized(Arc<QTensor>),
    Dense(Tensor),
}

/// A loaded GPT-2 model.
pub struct Gpt2 {
    cfg: Gpt2Config,
    info: DecoderInfo,
    wte: Embedding,
    /// `[max_positions, hidden]`.
    wpe: Tensor,
    blocks: Vec<Block>,
    ln_f: LayerNorm,
    lm_head: QLinear,
    device: Device,
}

/// A Conv1D layer as an `[out, in]` linear layer.
fn conv1d(w: &Weights, prefix: &str, in_dim: usize, out_dim: usize) -> Result<QLinear> {
    if w.is_gguf() {
        return w.linear(prefix, out_dim, in_dim);
    }
    let weight = w.tensor(&format!("{prefix}.weight"), &[in_dim, out_dim])?;
    let bias = w.tensor(&format!("{prefix}.bias"), &[out_dim])?;
    Ok(QLinear::from_tensor(weight.t()?.contiguous()?, Some(bias)))
}

impl Gpt2 {
    pub fn load(cfg: Gpt2Config, w: &Weights, architecture: &str) -> Result<Self> {
        let (h, inner, eps) = (cfg.hidden_size, cfg.inner_size, cfg.layer_norm_eps);
        // The original checkpoints (`gpt2`, `gpt2-medium`, ...) were saved from `GPT2Model` and
        // lack the `transformer.` prefix that `GPT2LMHeadModel` adds.
        let root = if !w.contains("transformer.wte.weight") && w.contains("wte.weight") { "" } else { "transformer." };
        let norm = |p: &str| -> Result<LayerNorm> {
            Ok(LayerNorm::new(w.tensor(&format!("{p}.weight"), &[h])?, w.tensor(&format!("{p}.bias"), &[h])?, eps))
        };
        let wte_name = format!("{root}wte.weight");
        let (wte, tied_head) = if w.is_gguf() {
            let q = w.qtensor(&wte_name, &[cfg.vocab_size, h])?;
            (Embedding::Quantized(q.clone()), QLinear::from_qtensor(q, None)?)
        } else {
            let t = w.tensor(&wte_name, &[cfg.vocab_size, h])?;
            // The head shares the embedding's storage rather than holding a second copy.
            (Embedding::Dense(t.clone()), QLinear::from_tensor(t, None))
        };
        let tied = cfg.tie_word_embeddings || !w.contains("lm_head.weight");
        let lm_head = if tied { tied_head } else { w.linear("lm_head", cfg.vocab_size, h)? };
        let wpe = w.tensor(&format!("{root}wpe.weight"), &[cfg.max_positions, h])?;
        let mut blocks = Vec::with_capacity(cfg.num_layers);
        for i in 0..cfg.num_layers {
            let p = format!("{root}h.{i}");
            let mut scale = if cfg.scale_attn_weights { 1.0 / (cfg.head_dim() as f64).sqrt() } else { 1.0 };
            if cfg.scale_attn_by_inverse_layer_idx {
                scale /= (i + 1) as f64;
            }
            blocks.push(Block {
                ln_1: norm(&format!("{p}.ln_1"))?,
                c_attn: conv1d(w, &format!("{p}.attn.c_attn"), h, 3 * h)?,
                attn_proj: conv1d(w, &format!("{p}.attn.c_proj"), h, h)?,
                scale,
                ln_2: norm(&format!("{p}.ln_2"))?,
                c_fc: conv1d(w, &format!("{p}.mlp.c_fc"), h, inner)?,
                mlp_proj: conv1d(w, &format!("{p}.mlp.c_proj"), inner, h)?,
            });
        }
        let ln_f = norm(&format!("{root}ln_f"))?;
        let block_params: usize = blocks
            .iter()
            .map(|b| {
                b.ln_1.params()
                    + b.ln_2.params()
                    + [&b.c_attn, &b.attn_proj, &b.c_fc, &b.mlp_proj].iter().map(|l| l.params()).sum::<usize>()
            })
            .sum();
        let parameters = cfg.vocab_size * h
            + wpe.elem_count()
            + block_params
            + ln_f.params()
            + if tied { 0 } else { lm_head.params() };
        let info = DecoderInfo {
            architecture: architecture.to_string(),
            vocab_size: cfg.vocab_size,
            context_length: cfg.max_positions,
            num_layers: cfg.num_layers,
            hidden_size: h,
            num_heads: cfg.num_heads,
            num_kv_heads: cfg.num_heads,
            head_dim: cfg.head_dim(),
            parameters,
        };
        Ok(Gpt2 { cfg, info, wte, wpe, blocks, ln_f, lm_head, device: w.device() })
    }

    pub fn config(&self) -> &Gpt2Config {
        &self.cfg
    }

    fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        Ok(match &self.wte {
            Embedding::Quantized(q) => q.embedding(ids)?,
            Embedding::Dense(t) => t.embedding(ids)?,
        })
    }
}

impl Block {
    fn forward(&self, cfg: &Gpt2Config, x: &Tensor, layer: usize, cache: &mut KvCache, masks: &Masks) -> Result<Tensor> {
        let (b, seq, h) = x.dims3()?;
        let qkv = self.c_attn.forward(&self.ln_1.forward(x)?)?;
        let heads = |i: usize| -> Result<Tensor> {
            Ok(qkv
                .narrow(D::Minus1, i * h, h)?
                .reshape((b, seq, cfg.num_heads, cfg.head_dim()))?
                .transpose(1, 2)?
                .contiguous()?)
        };
        let (q, k, v) = (heads(0)?, heads(1)?, heads(2)?);
        let (k, v) = cache.append(layer, &k, &v)?;
        let opts = AttentionOptions { scale: Some(self.scale), ..Default::default() };
        let attn = scaled_dot_product_attention(&q, &k, &v, masks.get(None)?, opts)?;
        let attn = attn.transpose(1, 2)?.reshape((b, seq, h))?;
        let x = (x + self.attn_proj.forward(&attn)?)?;
        let m = cfg.activation.apply(&self.c_fc.forward(&self.ln_2.forward(&x)?)?)?;
        Ok((x + self.mlp_proj.forward(&m)?)?)
    }
}

impl Decoder for Gpt2 {
    fn info(&self) -> &DecoderInfo {
        &self.info
    }

    fn new_cache(&self) -> KvCache {
        KvCache::new(self.cfg.num_layers)
    }

    fn forward(&self, ids: &[u32], cache: &mut KvCache, all_logits: bool) -> Result<Tensor> {
        let seq = ids.len();
        // Learned positions end at the table's last row: there is nothing to extrapolate with.
        let start = cache.check_room(seq, self.cfg.max_positions)?;
        if let Some(&bad) = ids.iter().find(|&&id| id as usize >= self.cfg.vocab_size) {
            return Err(Error::invalid("token id", format!("{bad} is outside the vocabulary of {}", self.cfg.vocab_size)));
        }
        let ids_t = Tensor::new(ids, &self.device)?;
        let pos = self.wpe.narrow(0, start, seq)?;
        let mut x = (self.embed(&ids_t)? + pos)?.unsqueeze(0)?;
        let masks = Masks::new(seq, start, &[], &self.device)?;
        for (i, block) in self.blocks.iter().enumerate() {
            x = block.forward(&self.cfg, &x, i, cache, &masks)?;
        }
        cache.advance(seq);
        let x = if all_logits { x } else { x.narrow(1, seq - 1, 1)? };
        let x = self.ln_f.forward(&x)?;
        Ok(self.lm_head.forward(&x)?.squeeze(0)?)
    }
}

pub fn load_hf(json: &serde_json::Value, path: &Path, w: &Weights, model_type: &str) -> Result<Box<dyn Decoder>> {
    Ok(Box::new(Gpt2::load(Gpt2Config::from_hf(json, path)?, w, model_type)?))
}

pub fn load_gguf(g: &GgufFile, w: &Weights, arch: &str) -> Result<Box<dyn Decoder>> {
    Ok(Box::new(Gpt2::load(Gpt2Config::from_gguf(g)?, w, arch)?))
}
