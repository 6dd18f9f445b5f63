//! The Llama decoder (Llama 2/3.x, SmolLM2, TinyLlama): RMSNorm, rotary embeddings with
//! optional scaling, grouped-query attention, SwiGLU MLP, tied or separate output head. Tensor
//! names are Hugging Face's; GGUF files arrive through the name table.
//!
//! The same block, with options, is the body of the close relatives that have their own files:
//! `mistral` (sliding window), `qwen2` (q/k/v biases, found from the weights), `qwen3` (q/k
//! RMSNorm per head).

use std::sync::Arc;

use candle_core::quantized::QTensor;
use candle_core::{DType, Device, Tensor};
use plinth_core::{Error, Result};
use plinth_io::gguf::GgufFile;

use crate::layers::{scaled_dot_product_attention, AttentionOptions, Linear, Masks, QLinear, RmsNorm, RopeScaling, RopeStyle, RotaryEmbedding, RowAdapters};
use crate::config::{check_dims, check_even_rotary, Dims};
use crate::weights::Weights;
use crate::{Decoder, DecoderInfo, KvCache};

/// Transformers' defaults for fields a `config.json` may omit, per `model_type`.
#[derive(Debug, Clone)]
pub struct HfDefaults {
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    pub qk_norm: bool,
    /// Whether `sliding_window` applies without `use_sliding_window` (Mistral: yes; Qwen: no).
    pub sliding_by_default: bool,
}

/// Per-layer windows from `layer_types` (transformers v5) or the older `sliding_window`,
/// `use_sliding_window` and `max_window_layers` fields.
pub fn hf_layer_windows(json: &serde_json::Value, n: usize, d: &HfDefaults) -> Vec<Option<usize>> {
    let window = json.get("sliding_window").and_then(|v| v.as_u64()).map(|v| v as usize);
    if let Some(types) = json.get("layer_types").and_then(|v| v.as_array()) {
        return (0..n)
            .map(|i| match types.get(i).and_then(|t| t.as_str()) {
                Some("sliding_attention") => window,
                _ => None,
            })
            .collect();
    }
    let enabled = json.get("use_sliding_window").and_then(|v| v.as_bool()).unwrap_or(d.sliding_by_default);
    if !enabled {
        return vec![None; n];
    }
    let from = if d.sliding_by_default { 0 } else { json.get("max_window_layers").and_then(|v| v.as_u64()).unwrap_or(0) as usize };
    (0..n).map(|i| if i >= from { window } else { None }).collect()
}

/// Hyper-parameters, from GGUF metadata or a Hugging Face `config.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub max_position_embeddings: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: Option<RopeScaling>,
    pub tie_word_embeddings: bool,
    /// Per-layer sliding attention window (`None` = full attention).
    pub layer_windows: Vec<Option<usize>>,
    /// Qwen 3: RMSNorm over each head of q and k before the rotary embedding.
    pub qk_norm: bool,
}

impl LlamaConfig {
    /// Reads `{arch}.*` keys as llama.cpp's converter writes them.
    pub fn from_gguf(g: &GgufFile) -> Result<Self> {
        let arch = g.architecture()?.to_string();
        let k = |s: &str| format!("{arch}.{s}");
        let hidden_size = g.require_usize(&k("embedding_length"))?;
        let num_heads = g.require_usize(&k("attention.head_count"))?;
        let num_kv_heads = g.get_usize(&k("attention.head_count_kv")).unwrap_or(num_heads);
        if num_heads == 0 || num_kv_heads == 0 || num_heads % num_kv_heads != 0 {
            return Err(Error::format(g.path(), format!("head counts {num_heads}/{num_kv_heads} are not a valid grouping")));
        }
        let head_dim = g.get_usize(&k("attention.key_length")).unwrap_or(hidden_size / num_heads);
        let vocab_size = match g.get_usize(&k("vocab_size")) {
            Some(v) => v,
            None => g
                .tensor_info("token_embd.weight")
                .map(|t| t.shape[0])
                .ok_or_else(|| Error::missing(g.path(), "tensor 'token_embd.weight'"))?,
        };
        let scaling = match g.get_str(&k("rope.scaling.type")) {
            None | Some("none") => None,
            Some("linear") => Some(RopeScaling::Linear { factor: g.get_f64(&k("rope.scaling.factor")).unwrap_or(1.0) }),
            // llama.cpp stores Llama 3 scaling as precomputed `rope_freqs.weight` factors.
            Some(other) => return Err(Error::unsupported(g.path(), format!("rope scaling type '{other}'"))),
        };
        let cfg = LlamaConfig {
            vocab_size,
            hidden_size,
            intermediate_size: g.require_usize(&k("feed_forward_length"))?,
            num_layers: g.require_usize(&k("block_count"))?,
            num_heads,
            num_kv_heads,
            head_dim,
            max_position_embeddings: g.require_usize(&k("context_length"))?,
            rms_norm_eps: g.get_f64(&k("attention.layer_norm_rms_epsilon")).unwrap_or(1e-5),
            rope_theta: g.get_f64(&k("rope.freq_base")).unwrap_or(10_000.0),
            rope_scaling: scaling,
            tie_word_embeddings: g.tensor_info("output.weight").is_none(),
            layer_windows: Vec::new(),
            qk_norm: g.tensor_info("blk.0.attn_q_norm.weight").is_some(),
        };
        let window = g.get_usize(&k("attention.sliding_window"));
        let cfg = LlamaConfig { layer_windows: vec![window; cfg.num_layers], ..cfg };
        cfg.validate(g.path())?;
        Ok(cfg)
    }

    /// Reads a Hugging Face `config.json` (older and transformers-v5 spellings of rope fields);
    /// `d` holds the transformers defaults of the `model_type` for fields the file leaves out.
    pub fn from_hf(json: &serde_json::Value, path: &std::path::Path, d: &HfDefaults) -> Result<Self> {
        let u = |key: &str| -> Result<usize> {
            json.get(key)
                .and_then(|v| v.as_u64())
                .map(|v| v as usize)
                .ok_or_else(|| Error::missing(path, format!("config field '{key}'")))
        };
        let f = |key: &str, default: f64| json.get(key).and_then(|v| v.as_f64()).unwrap_or(default);
        let hidden_size = u("hidden_size")?;
        let num_heads = u("num_attention_heads")?;
        let num_kv_heads = u("num_key_value_heads").unwrap_or(num_heads);
        let rope = json.get("rope_parameters").or_else(|| json.get("rope_scaling")).filter(|v| !v.is_null());
        let rope_theta = rope
            .and_then(|r| r.get("rope_theta"))
            .and_then(|v| v.as_f64())
            .unwrap_or_else(|| f("rope_theta", 10_000.0));
        let rope_scaling = match rope {
            None => None,
            Some(r) => {
                let ty = r.get("rope_type").or_else(|| r.get("type")).and_then(|v| v.as_str()).unwrap_or("default");
                let g = |k: &str, d: f64| r.get(k).and_then(|v| v.as_f64()).unwrap_or(d);
                match ty {
                    "default" => None,
                    "linear" => Some(RopeScaling::Linear { factor: g("factor", 1.0) }),
                    "llama3" => Some(RopeScaling::Llama3 {
                        factor: g("factor", 8.0),
                        low_freq_factor: g("low_freq_factor", 1.0),
                        high_freq_factor: g("high_freq_factor", 4.0),
                        original_max_position: g("original_max_position_embeddings", 8192.0) as usize,
                    }),
                    other => return Err(Error::unsupported(path, format!("rope scaling type '{other}'"))),
                }
            }
        };
        let cfg = LlamaConfig {
            vocab_size: u("vocab_size")?,
            hidden_size,
            intermediate_size: u("intermediate_size")?,
            num_layers: u("num_hidden_layers")?,
            num_heads,
            num_kv_heads,
            head_dim: u("head_dim").unwrap_or(hidden_size / num_heads.max(1)),
            max_position_embeddings: u("max_position_embeddings").unwrap_or(d.max_position_embeddings),
            rms_norm_eps: f("rms_norm_eps", 1e-6),
            rope_theta,
            rope_scaling,
            tie_word_embeddings: json.get("tie_word_embeddings").and_then(|v| v.as_bool()).unwrap_or(d.tie_word_embeddings),
            layer_windows: Vec::new(),
            qk_norm: d.qk_norm,
        };
        let cfg = LlamaConfig { layer_windows: hf_layer_windows(json, cfg.num_layers, d), ..cfg };
        cfg.validate(path)?;
        Ok(cfg)
    }

    fn validate(&self, path: &std::path::Path) -> Result<()> {
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
        check_even_rotary(path, self.head_dim)
    }
}

struct Attention {
    q_proj: QLinear,
    k_proj: QLinear,
    v_proj: QLinear,
    o_proj: QLinear,
    q_norm: Option<RmsNorm>,
    k_norm: Option<RmsNorm>,
}

struct Mlp {
    gate_proj: QLinear,
    up_proj: QLinear,
    down_proj: QLinear,
}

struct Layer {
    window: Option<usize>,
    input_layernorm: RmsNorm,
    self_attn: Attention,
    post_attention_layernorm: RmsNorm,
    mlp: Mlp,
}

enum Embedding {
    Quantized(Arc<QTensor>),
    Dense(Tensor),
}

/// A loaded Llama-family model.
pub struct Llama {
    cfg: LlamaConfig,
    info: DecoderInfo,
    embed_tokens: Embedding,
    layers: Vec<Layer>,
    norm: RmsNorm,
    lm_head: QLinear,
    rope: RotaryEmbedding,
    device: Device,
    /// The KV cache's storage type: f16 for block-quantized weights (see
    /// `kv::quantized_model_kv_dtype`).
    kv_dtype: Option<DType>,
    /// Module path of the decoder body (`model`; `model.text_model` inside Idefics3).
    prefix: String,
}

impl Llama {
    pub fn load(cfg: LlamaConfig, w: &Weights, architecture: &str, rope_style: RopeStyle) -> Result<Self> {
        Self::load_prefixed(cfg, w, architecture, rope_style, "model")
    }

    /// [`Llama::load`] with the decoder body under `prefix` (`model.text_model` when it is the
    /// language half of a vision-language model); the output head stays `lm_head`.
    pub fn load_prefixed(cfg: LlamaConfig, w: &Weights, architecture: &str, rope_style: RopeStyle, prefix: &str) -> Result<Self> {
        let (h, hd) = (cfg.hidden_size, cfg.head_dim);
        let embed_name = &format!("{prefix}.embed_tokens.weight");
        let embed_q = w.qtensor(embed_name, &[cfg.vocab_size, h])?;
        let tied = cfg.tie_word_embeddings || !w.contains("lm_head.weight");
        let lm_head = if tied {
            QLinear::from_qtensor(embed_q.clone(), None)?
        } else {
            w.linear("lm_head", cfg.vocab_size, h)?
        };
        let embed_tokens = match w {
            Weights::Gguf(_) => Embedding::Quantized(embed_q),
            Weights::Safetensors(_) => Embedding::Dense(w.tensor(embed_name, &[cfg.vocab_size, h])?),
        };
        let mut layers = Vec::with_capacity(cfg.num_layers);
        for i in 0..cfg.num_layers {
            let p = format!("{prefix}.layers.{i}");
            let head_norm = |n: &str| -> Result<Option<RmsNorm>> {
                Ok(if cfg.qk_norm { Some(RmsNorm::new(w.tensor(&format!("{p}.self_attn.{n}.weight"), &[hd])?, cfg.rms_norm_eps)) } else { None })
            };
            layers.push(Layer {
                window: cfg.layer_windows.get(i).copied().flatten(),
                input_layernorm: RmsNorm::new(w.tensor(&format!("{p}.input_layernorm.weight"), &[h])?, cfg.rms_norm_eps),
                self_attn: Attention {
                    q_proj: w.linear(&format!("{p}.self_attn.q_proj"), cfg.num_heads * hd, h)?,
                    k_proj: w.linear(&format!("{p}.self_attn.k_proj"), cfg.num_kv_heads * hd, h)?,
                    v_proj: w.linear(&format!("{p}.self_attn.v_proj"), cfg.num_kv_heads * hd, h)?,
                    o_proj: w.linear(&format!("{p}.self_attn.o_proj"), h, cfg.num_heads * hd)?,
                    q_norm: head_norm("q_norm")?,
                    k_norm: head_norm("k_norm")?,
                },
                post_attention_layernorm: RmsNorm::new(
                    w.tensor(&format!("{p}.post_attention_layernorm.weight"), &[h])?,
                    cfg.rms_norm_eps,
                ),
                mlp: Mlp {
                    gate_proj: w.linear(&format!("{p}.mlp.gate_proj"), cfg.intermediate_size, h)?,
                    up_proj: w.linear(&format!("{p}.mlp.up_proj"), cfg.intermediate_size, h)?,
                    down_proj: w.linear(&format!("{p}.mlp.down_proj"), h, cfg.intermediate_size)?,
                },
            });
        }
        let norm = RmsNorm::new(w.tensor(&format!("{prefix}.norm.weight"), &[h])?, cfg.rms_norm_eps);
        let freq_factors = match w {
            Weights::Gguf(g) if g.tensor_info("rope_freqs.weight").is_some() => Some(
                g.qtensor("rope_freqs.weight", &Device::Cpu)?.dequantize(&Device::Cpu)?.flatten_all()?.to_vec1::<f32>()?,
            ),
            _ => None,
        };
        let rope = RotaryEmbedding::new(
            hd,
            cfg.max_position_embeddings,
            cfg.rope_theta,
            cfg.rope_scaling.as_ref(),
            freq_factors.as_deref(),
            rope_style,
            &w.device(),
        )?;
        let layer_params: usize = layers
            .iter()
            .map(|l| {
                l.input_layernorm.params()
                    + l.self_attn.q_norm.as_ref().map_or(0, |n| n.params())
                    + l.self_attn.k_norm.as_ref().map_or(0, |n| n.params())
                    + l.post_attention_layernorm.params()
                    + [&l.self_attn.q_proj, &l.self_attn.k_proj, &l.self_attn.v_proj, &l.self_attn.o_proj]
                        .iter()
                        .map(|x| x.params())
                        .sum::<usize>()
                    + [&l.mlp.gate_proj, &l.mlp.up_proj, &l.mlp.down_proj].iter().map(|x| x.params()).sum::<usize>()
            })
            .sum();
        let parameters =
            cfg.vocab_size * h + layer_params + norm.params() + if tied { 0 } else { lm_head.params() };
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
        let quantized = layers.first().is_some_and(|l| l.self_attn.q_proj.is_block_quantized());
        let kv_dtype = quantized.then(crate::kv::quantized_model_kv_dtype);
        Ok(Llama { cfg, info, embed_tokens, layers, norm, lm_head, rope, device: w.device(), kv_dtype, prefix: prefix.to_string() })
    }

    pub fn config(&self) -> &LlamaConfig {
        &self.cfg
    }

    fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        Ok(match &self.embed_tokens {
            Embedding::Quantized(q) => q.embedding(ids)?,
            Embedding::Dense(t) => t.embedding(ids)?,
        })
    }

    /// Token embeddings `[ids.len(), hidden]` (ids beyond the vocabulary are refused).
    pub fn embed_ids(&self, ids: &[u32]) -> Result<Tensor> {
        if let Some(&bad) = ids.iter().find(|&&id| id as usize >= self.cfg.vocab_size) {
            return Err(Error::invalid("token id", format!("{bad} is outside the vocabulary of {}", self.cfg.vocab_size)));
        }
        self.embed(&Tensor::new(ids, &self.device)?)
    }

    /// [`Decoder::forward`] from input embeddings `[seq, hidden]` instead of token ids.
    pub fn forward_embeds(&self, embeds: &Tensor, cache: &mut KvCache, all_logits: bool) -> Result<Tensor> {
        let (seq, hidden) = embeds.dims2()?;
        if hidden != self.cfg.hidden_size || seq == 0 {
            return Err(Error::invalid("input embeddings", format!("{:?}, expected [seq >= 1, {}]", embeds.dims(), self.cfg.hidden_size)));
        }
        let start = cache.check_room(seq, self.rope.max_positions())?;
        let masks = [Masks::new(seq, start, &self.windows(), &self.device)?];
        Ok(self.run(embeds.unsqueeze(0)?, &mut [cache], &masks, !all_logits)?.squeeze(0)?)
    }
}

impl Layer {
    /// Runs `x` (`[batch, seq, hidden]`), where row `i` of the batch belongs to the sequence
    /// whose cache is `caches[i]` and mask set is `masks[i]`. Projections and the MLP run on
    /// the whole batch (the weights are read once); rotary positions, the cache and attention
    /// are per sequence.
    fn forward(&self, cfg: &LlamaConfig, rope: &RotaryEmbedding, x: &Tensor, layer: usize, caches: &mut [&mut KvCache], masks: &[Masks]) -> Result<Tensor> {
        let (b, seq, _) = x.dims3()?;
        let h = self.input_layernorm.forward(x)?;
        let a = &self.self_attn;
        let heads = |t: Tensor, n: usize| -> Result<Tensor> {
            // One position: [b, 1, n, d] and [b, n, 1, d] are the same memory, no copy needed.
            if seq == 1 {
                return Ok(t.reshape((b, n, 1, cfg.head_dim))?);
            }
            Ok(t.reshape((b, seq, n, cfg.head_dim))?.transpose(1, 2)?.contiguous()?)
        };
        let norm = |t: Tensor, n: &Option<RmsNorm>| -> Result<Tensor> { n.as_ref().map_or(Ok(t.clone()), |n| n.forward(&t)) };
        let [q, k, v]: [Tensor; 3] = QLinear::forward_many(&[&a.q_proj, &a.k_proj, &a.v_proj], &h)?.try_into().expect("three projections");
        let q = norm(heads(q, cfg.num_heads)?, &a.q_norm)?;
        let k = norm(heads(k, cfg.num_kv_heads)?, &a.k_norm)?;
        let v = heads(v, cfg.num_kv_heads)?;
        let mut outs = Vec::with_capacity(b);
        for (i, cache) in caches.iter_mut().enumerate() {
            let start = cache.len();
            let row = |t: &Tensor| -> Result<Tensor> { Ok(if b == 1 { t.clone() } else { t.narrow(0, i, 1)?.contiguous()? }) };
            let qi = rope.apply(&row(&q)?, start)?;
            let ki = rope.apply(&row(&k)?, start)?;
            let (ki, vi) = cache.append(layer, &ki, &row(&v)?)?;
            outs.push(scaled_dot_product_attention(&qi, &ki, &vi, masks[i].get(self.window)?, AttentionOptions::default())?);
        }
        let attn = if b == 1 { outs.pop().expect("one sequence") } else { Tensor::cat(&outs, 0)? };
        let attn = if seq == 1 { attn } else { attn.transpose(1, 2)? }.reshape((b, seq, cfg.num_heads * cfg.head_dim))?;
        let x = (x + a.o_proj.forward(&attn)?)?;
        let h = self.post_attention_layernorm.forward(&x)?;
        let m = &self.mlp;
        let [gate, up]: [Tensor; 2] = QLinear::forward_many(&[&m.gate_proj, &m.up_proj], &h)?.try_into().expect("two projections");
        let gated = crate::layers::fused::silu_mul(&gate, &up)?;
        Ok((x + m.down_proj.forward(&gated)?)?)
    }
}

impl Llama {
    fn windows(&self) -> Vec<Option<usize>> {
        self.layers.iter().map(|l| l.window).collect()
    }

    /// The layers, final norm and head over `x` (`[batch, seq, hidden]`).
    fn run(&self, mut x: Tensor, caches: &mut [&mut KvCache], masks: &[Masks], last_only: bool) -> Result<Tensor> {
        // Row i of every linear layer's input belongs to cache i's sequence.
        let _adapters = RowAdapters::set(caches.iter().map(|c| c.adapter).collect());
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(&self.cfg, &self.rope, &x, i, caches, masks)?;
        }
        let seq = x.dim(1)?;
        for c in caches.iter_mut() {
            c.advance(seq);
        }
        let x = if last_only { x.narrow(1, seq - 1, 1)? } else { x };
        self.lm_head.forward(&self.norm.forward(&x)?)
    }
}

impl Decoder for Llama {
    fn info(&self) -> &DecoderInfo {
        &self.info
    }

    fn linear_layers(&self) -> Vec<(String, &QLinear)> {
        let mut out = Vec::with_capacity(self.layers.len() * 7);
        for (i, l) in self.layers.iter().enumerate() {
            let (a, m) = (&l.self_attn, &l.mlp);
            for (n, lin) in [("self_attn.q_proj", &a.q_proj), ("self_attn.k_proj", &a.k_proj), ("self_attn.v_proj", &a.v_proj), ("self_attn.o_proj", &a.o_proj)] {
                out.push((format!("{}.layers.{i}.{n}", self.prefix), lin));
            }
            for (n, lin) in [("mlp.gate_proj", &m.gate_proj), ("mlp.up_proj", &m.up_proj), ("mlp.down_proj", &m.down_proj)] {
                out.push((format!("{}.layers.{i}.{n}", self.prefix), lin));
            }
        }
        out
    }

    fn new_cache(&self) -> KvCache {
        match self.kv_dtype {
            Some(dt) => KvCache::with_dtype(self.cfg.num_layers, dt),
            None => KvCache::new(self.cfg.num_layers),
        }
    }

    fn forward(&self, ids: &[u32], cache: &mut KvCache, all_logits: bool) -> Result<Tensor> {
        let seq = ids.len();
        let start = cache.check_room(seq, self.rope.max_positions())?;
        let x = self.embed(&Tensor::new(ids, &self.device)?)?.unsqueeze(0)?;
        let masks = [Masks::new(seq, start, &self.windows(), &self.device)?];
        Ok(self.run(x, &mut [cache], &masks, !all_logits)?.squeeze(0)?)
    }

    fn forward_batch(&self, ids: &[u32], caches: &mut [&mut KvCache]) -> Result<Tensor> {
        if ids.len() != caches.len() {
            return Err(Error::invalid("batch", format!("{} tokens for {} caches", ids.len(), caches.len())));
        }
        let windows = self.windows();
        let masks = caches
            .iter()
            .map(|c| Masks::new(1, c.check_room(1, self.rope.max_positions())?, &windows, &self.device))
            .collect::<Result<Vec<_>>>()?;
        let x = self.embed(&Tensor::new(ids, &self.device)?)?.unsqueeze(1)?;
        Ok(self.run(x, caches, &masks, true)?.squeeze(1)?)
    }
}

/// Transformers' `LlamaConfig` defaults.
pub const LLAMA_DEFAULTS: HfDefaults =
    HfDefaults { max_position_embeddings: 2048, tie_word_embeddings: false, qk_norm: false, sliding_by_default: false };

/// Builds a Llama-family model from a `config.json` with the given `model_type` defaults.
pub fn load_family_hf(json: &serde_json::Value, path: &std::path::Path, w: &Weights, model_type: &str, d: &HfDefaults) -> Result<Box<dyn Decoder>> {
    let cfg = LlamaConfig::from_hf(json, path, d)?;
    Ok(Box::new(Llama::load(cfg, w, model_type, RopeStyle::Half)?))
}

/// Builds a Llama-family model from GGUF metadata. llama.cpp permutes Llama's q/k rows for its
/// interleaved rotary layout; the other families keep Hugging Face's half-split layout.
pub fn load_family_gguf(g: &GgufFile, w: &Weights, arch: &str) -> Result<Box<dyn Decoder>> {
    let style = if arch == "llama" { RopeStyle::Interleaved } else { RopeStyle::Half };
    Ok(Box::new(Llama::load(LlamaConfig::from_gguf(g)?, w, arch, style)?))
}

pub fn load_hf(json: &serde_json::Value, path: &std::path::Path, w: &Weights, model_type: &str) -> Result<Box<dyn Decoder>> {
    load_family_hf(json, path, w, model_type, &LLAMA_DEFAULTS)
}
