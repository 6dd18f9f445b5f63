//! Gemma 3 (text): the Gemma 2 block with a `1 + w` RMSNorm over each head of q and k, no
//! soft-capping by default (and none in attention at all), five sliding layers per full one,
//! and separate rotary settings for the two layer types — the global layers' base (and any
//! context scaling) differs from the sliding layers' `rope_local_base_freq`.

use std::path::Path;

use plinth_core::Result;
use serde_json::Value;

use crate::models::gemma2::{parse_rope, Gemma, GemmaConfig, GemmaDefaults, GemmaRope};
use crate::weights::Weights;
use crate::Decoder;

/// Transformers' `Gemma3TextConfig` defaults.
const DEFAULTS: GemmaDefaults = GemmaDefaults {
    max_position_embeddings: 131_072,
    final_logit_softcapping: None,
    attn_logit_softcapping: None,
    applies_attn_softcap: false,
    sliding_window_pattern: 6,
    qk_norm: true,
};

/// Rotary settings of the full and the sliding layers. Transformers v5 writes
/// `rope_parameters` keyed by layer type; older configs have `rope_theta` and
/// `rope_local_base_freq`, with `rope_scaling` applying to the full layers only.
fn hf_ropes(json: &Value, path: &Path) -> Result<(GemmaRope, GemmaRope)> {
    let full_theta = json.get("rope_theta").and_then(Value::as_f64).unwrap_or(1_000_000.0);
    let local_theta = json.get("rope_local_base_freq").and_then(Value::as_f64).unwrap_or(10_000.0);
    let params = json.get("rope_parameters").filter(|v| !v.is_null());
    match params {
        Some(p) if p.get("full_attention").is_some() || p.get("sliding_attention").is_some() => {
            Ok((parse_rope(p.get("full_attention"), full_theta, path)?, parse_rope(p.get("sliding_attention"), local_theta, path)?))
        }
        flat => {
            let full = parse_rope(flat.or_else(|| json.get("rope_scaling")), full_theta, path)?;
            Ok((full, parse_rope(None, local_theta, path)?))
        }
    }
}

pub fn load_hf(json: &Value, path: &Path, w: &Weights, model_type: &str) -> Result<Box<dyn Decoder>> {
    // Hub configs from before `layer_types` give the period as `sliding_window_pattern`.
    let pattern = ["sliding_window_pattern", "_sliding_window_pattern"]
        .iter()
        .find_map(|k| json.get(*k).and_then(Value::as_u64))
        .map_or(DEFAULTS.sliding_window_pattern, |p| p as usize);
    let d = GemmaDefaults { sliding_window_pattern: pattern, ..DEFAULTS };
    let (full, sliding) = hf_ropes(json, path)?;
    let cfg = GemmaConfig::from_hf(json, path, &d, full, sliding)?;
    Ok(Box::new(Gemma::load(cfg, w, model_type)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::RopeScaling;

    fn config(json: &Value) -> Result<GemmaConfig> {
        let (full, sliding) = hf_ropes(json, Path::new("config.json"))?;
        GemmaConfig::from_hf(json, Path::new("config.json"), &DEFAULTS, full, sliding)
    }

    #[test]
    fn pre_v5_config_scales_only_global_rope() {
        // The shape of google/gemma-3-4b-it's text_config before transformers v5.
        let json = serde_json::json!({
            "model_type": "gemma3_text", "vocab_size": 32, "hidden_size": 16, "intermediate_size": 32,
            "num_hidden_layers": 7, "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 8,
            "rope_theta": 1000000.0, "rope_local_base_freq": 10000.0, "sliding_window_pattern": 6,
            "rope_scaling": { "rope_type": "linear", "factor": 8.0 }, "torch_dtype": "bfloat16",
            "final_logit_softcapping": null, "attn_logit_softcapping": 50.0
        });
        let cfg = config(&json).unwrap();
        assert_eq!(cfg.layer_sliding, [true, true, true, true, true, false, true]);
        assert_eq!(cfg.rope_full, GemmaRope { theta: 1e6, scaling: Some(RopeScaling::Linear { factor: 8.0 }) });
        assert_eq!(cfg.rope_sliding, GemmaRope { theta: 1e4, scaling: None });
        assert_eq!((cfg.attn_logit_softcapping, cfg.final_logit_softcapping), (None, None));
        assert_eq!(cfg.sliding_window, Some(4096));
        // sqrt(16) is exact in bf16; sqrt(3072) is not, and transformers uses the rounded value.
        assert_eq!(cfg.embed_scale, 4.0);
        let mut big = json.clone();
        big["hidden_size"] = 3072.into();
        assert_eq!(config(&big).unwrap().embed_scale, 55.5);
    }

    #[test]
    fn bad_configs_are_errors() {
        let base = serde_json::json!({
            "vocab_size": 32, "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2,
            "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 8
        });
        let with = |k: &str, v: Value| {
            let mut j = base.clone();
            j[k] = v;
            j
        };
        assert!(config(&base).is_ok());
        assert!(config(&with("rope_parameters", serde_json::json!({ "full_attention": { "rope_type": "yarn" } }))).is_err());
        assert!(config(&with("layer_types", serde_json::json!(["sliding_attention"]))).is_err());
        assert!(config(&with("hidden_activation", "relu".into())).is_err());
        assert!(config(&with("use_bidirectional_attention", true.into())).is_err());
        assert!(config(&with("sliding_window", 0.into())).is_err());
        assert!(config(&with("num_key_value_heads", 3.into())).is_err());
    }
}
