//! Hugging Face PEFT's adapter files: `adapter_config.json` and `adapter_model.safetensors`
//! with keys `base_model.model.<module>.lora_A.weight` (`[r, in]`) and `...lora_B.weight`
//! (`[out, r]`). Written to temporary files and renamed, so a directory never holds half an
//! adapter.
//!
//! **Row order of `q_proj` / `k_proj`.** An adapter's `B` has the rows of the layer it adapts.
//! Files are always in Hugging Face order, the one PEFT trains in and `merge_and_unload`
//! adds to. In memory (a [`LoraSet`] attached to a model) `B` has the row order of the
//! model's own weights, which for a `llama` GGUF is not Hugging Face's: llama.cpp's converter
//! permutes the q/k rows of every head so that its interleaved rotary pairs sit side by side
//! ([`gguf_qk_permutation`]), and plinth runs those weights unchanged with interleaved rotary.
//! So an adapter trained by plinth on a Llama GGUF holds its q/k `B` rows in GGUF order;
//! [`save`] un-permutes them and [`load`] permutes them back, as said by the [`QkLayout`] of
//! the base (`QkLayout::of`). The permutation only reorders output rows, and AdamW works
//! element by element, so training in either order gives the same adapter once the rows are
//! put back. Other GGUF architectures (qwen2, qwen3, ...) are not permuted by llama.cpp.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use plinth_core::{Error, Result};
use plinth_io::fetch::ModelLocation;
use plinth_models::Decoder;
use serde_json::{json, Value};

use crate::lora::{LoraConfig, LoraEntry, LoraSet};

const PREFIX: &str = "base_model.model.";

fn read_json(path: &Path) -> Result<Value> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::format(path, format!("not valid JSON: {e}")))
}

/// llama.cpp's q/k row permutation (`convert_hf_to_gguf.py`, `LlamaModel.permute`) of a
/// projection with `rows` output rows over `heads` heads: row `i` of the GGUF weight is row
/// `p[i]` of the Hugging Face one. Within each head of `d` rows, Hugging Face keeps the two
/// rotary halves apart (`x[j]` pairs with `x[j + d/2]`); llama.cpp interleaves them (`x[2j]`
/// pairs with `x[2j + 1]`), so GGUF row `2j + s` is Hugging Face row `s * d/2 + j`.
pub fn gguf_qk_permutation(rows: usize, heads: usize) -> Result<Vec<u32>> {
    if heads == 0 || !rows.is_multiple_of(2 * heads) {
        return Err(Error::invalid("q/k permutation", format!("{rows} rows do not split into {heads} heads of an even size")));
    }
    let d = rows / heads;
    let half = d / 2;
    Ok((0..rows).map(|i| ((i / d) * d + (i % 2) * half + (i % d) / 2) as u32).collect())
}

/// The row order of a model's `q_proj` / `k_proj` weights (and so of the `B` of an adapter
/// attached to them); see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QkLayout {
    /// Hugging Face order: safetensors models, and GGUF architectures other than `llama`.
    Hf,
    /// llama.cpp's permuted order of `llama` GGUFs, with the head counts of q and k.
    GgufLlama { heads: usize, kv_heads: usize },
}

impl QkLayout {
    /// The layout of `model` as loaded from `base`.
    pub fn of(base: &ModelLocation, model: &dyn Decoder) -> QkLayout {
        let info = model.info();
        match base {
            ModelLocation::Gguf(_) if info.architecture == "llama" => QkLayout::GgufLlama { heads: info.num_heads, kv_heads: info.num_kv_heads },
            _ => QkLayout::Hf,
        }
    }

    /// The head count to permute over when `module` (`...self_attn.q_proj`) is permuted.
    fn heads(&self, module: &str) -> Option<usize> {
        match *self {
            QkLayout::Hf => None,
            QkLayout::GgufLlama { heads, kv_heads } => {
                if module.ends_with("self_attn.q_proj") {
                    Some(heads)
                } else if module.ends_with("self_attn.k_proj") {
                    Some(kv_heads)
                } else {
                    None
                }
            }
        }
    }

    /// Puts the rows (dimension 0) of a weight, bias or LoRA `B` of `module` from Hugging Face
    /// order into this layout's.
    pub fn permute(&self, module: &str, t: &Tensor) -> Result<Tensor> {
        let Some(heads) = self.heads(module) else { return Ok(t.clone()) };
        let p = gguf_qk_permutation(t.dim(0)?, heads)?;
        let n = p.len();
        Ok(t.index_select(&Tensor::from_vec(p, n, t.device())?, 0)?)
    }

    /// Puts the rows of a weight, bias or LoRA `B` of `module` from this layout's order back
    /// into Hugging Face order.
    pub fn unpermute(&self, module: &str, t: &Tensor) -> Result<Tensor> {
        let Some(heads) = self.heads(module) else { return Ok(t.clone()) };
        let p = gguf_qk_permutation(t.dim(0)?, heads)?;
        let mut inv = vec![0u32; p.len()];
        for (i, &src) in p.iter().enumerate() {
            inv[src as usize] = i as u32;
        }
        let n = inv.len();
        Ok(t.index_select(&Tensor::from_vec(inv, n, t.device())?, 0)?)
    }
}

/// Reads an adapter directory (Hugging Face row order) and checks it against `model`, whose
/// q/k rows are in `layout` order (`QkLayout::of(base, model)`); `B` comes back in that order.
pub fn load(dir: &Path, model: &dyn Decoder, layout: QkLayout) -> Result<LoraSet> {
    if !dir.is_dir() {
        let what = if dir.exists() { "is not a directory" } else { "does not exist" };
        return Err(Error::invalid("adapter", format!("{} {what} (expected a PEFT adapter directory with adapter_config.json)", dir.display())));
    }
    let cfg_path = dir.join("adapter_config.json");
    if !cfg_path.exists() {
        return Err(Error::missing(dir, "adapter_config.json (not a PEFT adapter directory)"));
    }
    let cfg = read_json(&cfg_path)?;
    let ty = cfg.get("peft_type").and_then(Value::as_str).unwrap_or("");
    if ty != "LORA" {
        return Err(Error::unsupported(&cfg_path, format!("peft_type '{ty}' (only LORA adapters are supported)")));
    }
    for (flag, what) in [("use_dora", "DoRA"), ("fan_in_fan_out", "fan_in_fan_out weights")] {
        if cfg.get(flag).and_then(Value::as_bool) == Some(true) {
            return Err(Error::unsupported(&cfg_path, what));
        }
    }
    let r = cfg.get("r").and_then(Value::as_u64).ok_or_else(|| Error::missing(&cfg_path, "field 'r'"))? as usize;
    let alpha = cfg.get("lora_alpha").and_then(Value::as_f64).unwrap_or(8.0);
    // rsLoRA scales by alpha / sqrt(r); expressed through alpha so that `scale()` stays one rule.
    let alpha = if cfg.get("use_rslora").and_then(Value::as_bool) == Some(true) { alpha * (r as f64).sqrt() } else { alpha };
    let targets = match cfg.get("target_modules") {
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).map(str::to_string).collect(),
        Some(Value::String(s)) => vec![s.clone()],
        _ => Vec::new(),
    };
    let config = LoraConfig { r, alpha, dropout: cfg.get("lora_dropout").and_then(Value::as_f64).unwrap_or(0.0), target_modules: targets };
    let weights_path = dir.join("adapter_model.safetensors");
    if !weights_path.exists() {
        return Err(Error::missing(&weights_path, "adapter_model.safetensors (plinth reads safetensors adapters, not .bin)"));
    }
    let tensors = candle_core::safetensors::load(&weights_path, &Device::Cpu).map_err(|e| Error::format(&weights_path, e.to_string()))?;
    let mut pairs: HashMap<String, (Option<Tensor>, Option<Tensor>)> = HashMap::new();
    for (k, t) in tensors {
        let rest = k.strip_prefix(PREFIX).unwrap_or(&k);
        let (module, which) = if let Some(m) = rest.strip_suffix(".lora_A.weight") {
            (m, 0)
        } else if let Some(m) = rest.strip_suffix(".lora_B.weight") {
            (m, 1)
        } else {
            return Err(Error::unsupported(&weights_path, format!("tensor '{k}' (only lora_A / lora_B weights are supported)")));
        };
        let e = pairs.entry(module.to_string()).or_default();
        let t = t.to_dtype(DType::F32)?;
        if which == 0 { e.0 = Some(t) } else { e.1 = Some(t) }
    }
    let layers = model.linear_layers();
    let mut entries = Vec::new();
    let mut names: Vec<&String> = pairs.keys().collect();
    names.sort();
    for name in names {
        let (a, b) = &pairs[name];
        let (Some(a), Some(b)) = (a, b) else {
            return Err(Error::format(&weights_path, format!("'{name}' has only one of lora_A / lora_B")));
        };
        let Some((_, lin)) = layers.iter().find(|(n, _)| n == name) else {
            return Err(Error::invalid("adapter", format!("{} adapts '{name}', which this model does not have", weights_path.display())));
        };
        let (out, inp) = lin.dims();
        if a.dims() != [r, inp] || b.dims() != [out, r] {
            return Err(Error::Shape { name: format!("{name} lora_A/lora_B"), expected: vec![r, inp, out, r], found: [a.dims(), b.dims()].concat() });
        }
        let b = layout.permute(name, b)?;
        entries.push(LoraEntry { name: name.clone(), a: Var::from_tensor(a)?, b: Var::from_tensor(&b)? });
    }
    LoraSet::from_entries(model, config, entries)
}

/// Writes `set` as a PEFT adapter for `base` (the base model's name or path), in Hugging Face
/// row order; `layout` is the order of the model the set was attached to.
pub fn save(set: &LoraSet, dir: &Path, base: &str, layout: QkLayout) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let c = &set.config;
    let config = json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base,
        "r": c.r,
        "lora_alpha": c.alpha,
        "lora_dropout": c.dropout,
        "target_modules": c.target_modules,
        "bias": "none",
        "fan_in_fan_out": false,
        "use_rslora": false,
        "use_dora": false,
        "inference_mode": true,
        "init_lora_weights": true,
        "modules_to_save": null,
        "library_name": "plinth",
    });
    let mut tensors: Vec<(String, Tensor)> = Vec::new();
    for e in &set.entries {
        tensors.push((format!("{PREFIX}{}.lora_A.weight", e.name), e.a.as_tensor().clone()));
        tensors.push((format!("{PREFIX}{}.lora_B.weight", e.name), layout.unpermute(&e.name, e.b.as_tensor())?));
    }
    let weights = dir.join("adapter_model.safetensors");
    let tmp = dir.join(format!(".adapter_model.safetensors.part-{}", std::process::id()));
    candle_core::safetensors::save(&tensors.into_iter().collect::<HashMap<_, _>>(), &tmp).map_err(|e| Error::format(&tmp, e.to_string()))?;
    std::fs::rename(&tmp, &weights).map_err(|e| Error::io(&weights, e))?;
    let cfg_path = dir.join("adapter_config.json");
    let tmp = dir.join(format!(".adapter_config.json.part-{}", std::process::id()));
    std::fs::write(&tmp, serde_json::to_string_pretty(&config).unwrap_or_default()).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, &cfg_path).map_err(|e| Error::io(&cfg_path, e))
}
