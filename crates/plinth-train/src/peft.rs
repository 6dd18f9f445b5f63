//! Hugging Face PEFT's adapter files: `adapter_config.json` and `adapter_model.safetensors`
//! with keys `base_model.model.<module>.lora_A.weight` (`[r, in]`) and `...lora_B.weight`
//! (`[out, r]`). Written to temporary files and renamed, so a directory never holds half an
//! adapter.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use plinth_core::{Error, Result};
use plinth_models::Decoder;
use serde_json::{json, Value};

use crate::lora::{LoraConfig, LoraEntry, LoraSet};

const PREFIX: &str = "base_model.model.";

fn read_json(path: &Path) -> Result<Value> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::format(path, format!("not valid JSON: {e}")))
}

/// Reads an adapter directory and checks it against `model`.
pub fn load(dir: &Path, model: &dyn Decoder) -> Result<LoraSet> {
    let cfg_path = dir.join("adapter_config.json");
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
        entries.push(LoraEntry { name: name.clone(), a: Var::from_tensor(a)?, b: Var::from_tensor(b)? });
    }
    LoraSet::from_entries(model, config, entries)
}

/// Writes `set` as a PEFT adapter for `base` (the base model's name or path).
pub fn save(set: &LoraSet, dir: &Path, base: &str) -> Result<()> {
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
        tensors.push((format!("{PREFIX}{}.lora_B.weight", e.name), e.b.as_tensor().clone()));
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
