//! Phi-3 logits parity with Hugging Face transformers on a tiny random-weight model
//! (fixtures/tiny-phi3, made by scripts/make_tiny_decoders.py): fused qkv and gate/up weights.
//! The whole prompt in one pass, and token by token through the KV cache, both within
//! max |Δ| ≤ 1e-4 (f32) of transformers' own full-prompt and cached-decoding logits.

use candle_core::{safetensors, Device};
use plinth_io::fetch::ModelLocation;
use plinth_models::load_decoder;
use plinth_testutil::{assert_close, fixture, GgufBuilder};

mod common;
use common::{check_parity, TOL};


#[test]
fn phi3_fused_qkv_and_gate_up() {
    check_parity("tiny-phi3", TOL);
}

/// The fixture as llama.cpp's converter lays it out (fused tensors under `attn_qkv` and
/// `ffn_up`, window 0 for "none"), with LongRoPE factor tensors of 1 so the long table takes
/// over past position 8 without changing the numbers.
#[test]
fn gguf_layout_matches_transformers() {
    let src = fixture("tiny-phi3");
    let t = safetensors::load(src.join("model.safetensors"), &Device::Cpu).unwrap();
    let mut b = GgufBuilder::new()
        .kv_str("general.architecture", "phi3")
        .kv_u32("phi3.context_length", 128)
        .kv_u32("phi3.embedding_length", 64)
        .kv_u32("phi3.feed_forward_length", 128)
        .kv_u32("phi3.block_count", 2)
        .kv_u32("phi3.attention.head_count", 4)
        .kv_u32("phi3.attention.head_count_kv", 2)
        .kv_u32("phi3.rope.dimension_count", 16)
        .kv_u32("phi3.attention.sliding_window", 0)
        .kv_u32("phi3.rope.scaling.original_context_length", 8)
        .kv_f32("phi3.rope.scaling.attn_factor", 1.0)
        .kv_f32("phi3.attention.layer_norm_rms_epsilon", 1e-5)
        .tensor_f32("rope_factors_short.weight", &[8], &[1.0; 8])
        .tensor_f32("rope_factors_long.weight", &[8], &[1.0; 8]);
    let mut names: Vec<&String> = t.keys().collect();
    names.sort();
    for hf in names {
        let shape: Vec<u64> = t[hf].dims().iter().map(|&d| d as u64).collect();
        let data = t[hf].flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let gguf = plinth_io::names::hf_to_gguf("phi3", hf).unwrap_or_else(|| panic!("no GGUF name for {hf}"));
        b = b.tensor_f32(&gguf, &shape, &data);
    }
    let path = b.write("tiny-phi3.gguf");

    let r = safetensors::load(src.join("reference.safetensors"), &Device::Cpu).unwrap();
    let ids: Vec<u32> = r["input_ids"].flatten_all().unwrap().to_vec1::<i64>().unwrap().into_iter().map(|i| i as u32).collect();
    let want = r["logits"].to_vec2::<f32>().unwrap();
    let m = load_decoder(&ModelLocation::Gguf(path)).unwrap_or_else(|e| panic!("gguf: {e}")).model;
    let got = m.forward(&ids, &mut m.new_cache(), true).unwrap().to_vec2::<f32>().unwrap();
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_close(&format!("gguf prompt position {i}"), g, w, TOL);
    }
    let mut cache = m.new_cache();
    for (i, &id) in ids.iter().enumerate() {
        let step = m.forward(&[id], &mut cache, false).unwrap().to_vec2::<f32>().unwrap().remove(0);
        assert_close(&format!("gguf cached step {i}"), &step, &want[i], TOL);
    }
}

mod config {
    use plinth_core::Error;
    use plinth_models::models::phi3::Phi3Config;
    use serde_json::json;

    fn parse(v: serde_json::Value) -> plinth_core::Result<Phi3Config> {
        Phi3Config::from_hf(&v, std::path::Path::new("config.json"))
    }

    /// Phi-4-mini's spelling: old-style `rope_scaling`, top-level theta and partial factor.
    fn phi4_like(rope_scaling: serde_json::Value) -> serde_json::Value {
        json!({"model_type": "phi3", "hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2,
               "num_hidden_layers": 2, "intermediate_size": 128, "vocab_size": 256,
               "max_position_embeddings": 131072, "original_max_position_embeddings": 4096,
               "partial_rotary_factor": 0.75, "rope_theta": 10000.0, "rope_scaling": rope_scaling})
    }

    #[test]
    fn longrope_factors_and_attention_factor() {
        let c = parse(phi4_like(json!({"type": "longrope", "short_factor": vec![1.0; 6], "long_factor": vec![2.0; 6]}))).unwrap();
        assert_eq!(c.rotary_dim, 12);
        let lr = c.long_rope.unwrap();
        assert_eq!((lr.original_max_position, lr.long_factor.len()), (4096, 6));
        // factor 32 from the two lengths: sqrt(1 + ln 32 / ln 4096) = sqrt(17 / 12).
        assert!((lr.attention_factor - (17.0f64 / 12.0).sqrt()).abs() < 1e-12);
    }

    #[test]
    fn defaults_for_omitted_fields() {
        let c = parse(json!({"model_type": "phi3"})).unwrap();
        assert_eq!((c.vocab_size, c.hidden_size, c.num_layers, c.num_kv_heads, c.head_dim), (32064, 3072, 32, 32, 96));
        assert_eq!((c.max_position_embeddings, c.rotary_dim, c.sliding_window), (4096, 96, None));
        assert!(c.long_rope.is_none() && !c.tie_word_embeddings);
    }

    #[test]
    fn bad_rope_configs_are_errors() {
        let short = phi4_like(json!({"type": "longrope", "short_factor": vec![1.0; 5], "long_factor": vec![2.0; 6]}));
        assert!(matches!(parse(short), Err(Error::Format { .. })));
        let missing = phi4_like(json!({"type": "longrope", "short_factor": vec![1.0; 6]}));
        assert!(matches!(parse(missing), Err(Error::Missing { .. })));
        let other = phi4_like(json!({"type": "dynamic", "factor": 2.0}));
        assert!(matches!(parse(other), Err(Error::Unsupported { .. })));
    }
}

#[test]
fn out_of_vocabulary_token_is_an_error() {
    let m = load_decoder(&ModelLocation::Dir(fixture("tiny-phi3"))).unwrap().model;
    let mut cache = m.new_cache();
    assert!(m.forward(&[1, 256], &mut cache, false).is_err());
    assert!(m.forward(&[], &mut cache, false).is_err());
    assert_eq!(cache.len(), 0);
}
