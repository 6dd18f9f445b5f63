//! GPT-2 logits parity with Hugging Face transformers on a tiny random-weight model
//! (fixtures/tiny-gpt2, made by scripts/make_tiny_decoders.py): the whole prompt in one pass and
//! token by token through the KV cache, both within max |Δ| ≤ 1e-4 (f32). Also: the learned
//! position table bounds the context, and old checkpoints without the `transformer.` prefix load.

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{safetensors, Device, Tensor};
use plinth_core::Error;
use plinth_io::fetch::ModelLocation;
use plinth_models::load_decoder;
use plinth_testutil::{assert_close, fixture, GgufBuilder};

mod common;
use common::{check_parity, TOL};


#[test]
fn gpt2_conv1d_learned_positions_tied_head() {
    check_parity("tiny-gpt2", TOL);
}

#[test]
fn gpt2_info_matches_config() {
    let m = load_decoder(&ModelLocation::Dir(fixture("tiny-gpt2"))).unwrap().model;
    let i = m.info();
    assert_eq!((i.architecture.as_str(), i.vocab_size, i.context_length), ("gpt2", 256, 128));
    assert_eq!((i.num_layers, i.hidden_size, i.num_heads, i.num_kv_heads, i.head_dim), (2, 64, 4, 4, 16));
    // wte + wpe + 2 × (2 LayerNorms + c_attn + c_proj + c_fc + c_proj) + ln_f; the head is tied.
    let block = 2 * 2 * 64 + (64 * 192 + 192) + (64 * 64 + 64) + (64 * 256 + 256) + (256 * 64 + 64);
    assert_eq!(i.parameters, 256 * 64 + 128 * 64 + 2 * block + 2 * 64);
}

#[test]
fn prompt_longer_than_positions_is_an_error() {
    let m = load_decoder(&ModelLocation::Dir(fixture("tiny-gpt2"))).unwrap().model;
    let mut cache = m.new_cache();
    let long = vec![5u32; 129];
    match m.forward(&long, &mut cache, false) {
        Err(Error::ContextOverflow { prompt_tokens: 129, context: 128 }) => {}
        other => panic!("expected ContextOverflow, got {:?}", other.map(|t| t.shape().clone())),
    }
    assert_eq!(cache.len(), 0, "a refused pass must not advance the cache");

    // The same bound holds when the overflow comes from what is already cached.
    m.forward(&vec![5u32; 128], &mut cache, false).unwrap();
    assert!(matches!(m.forward(&[5], &mut cache, false), Err(Error::ContextOverflow { prompt_tokens: 129, .. })));
}

#[test]
fn out_of_vocabulary_id_is_an_error() {
    let m = load_decoder(&ModelLocation::Dir(fixture("tiny-gpt2"))).unwrap().model;
    let mut cache = m.new_cache();
    assert!(matches!(m.forward(&[1, 256], &mut cache, true), Err(Error::Invalid { .. })));
    assert!(matches!(m.forward(&[], &mut cache, true), Err(Error::Invalid { .. })));
}

/// A fresh directory for a model assembled by a test.
fn temp_model_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("plinth-test-{}", std::process::id())).join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The fixture rewritten under the original `gpt2` repository's names, without `transformer.`.
#[test]
fn unprefixed_checkpoint_names_load() {
    let src = fixture("tiny-gpt2");
    let tensors = safetensors::load(src.join("model.safetensors"), &Device::Cpu).unwrap();
    let renamed: HashMap<String, Tensor> =
        tensors.into_iter().map(|(k, v)| (k.strip_prefix("transformer.").unwrap_or(&k).to_string(), v)).collect();
    let dir = temp_model_dir("gpt2-unprefixed");
    std::fs::copy(src.join("config.json"), dir.join("config.json")).unwrap();
    safetensors::save(&renamed, dir.join("model.safetensors")).unwrap();

    let r = safetensors::load(src.join("reference.safetensors"), &Device::Cpu).unwrap();
    let ids: Vec<u32> = r["input_ids"].flatten_all().unwrap().to_vec1::<i64>().unwrap().into_iter().map(|i| i as u32).collect();
    let want = r["logits"].to_vec2::<f32>().unwrap();
    let m = load_decoder(&ModelLocation::Dir(dir)).unwrap_or_else(|e| panic!("unprefixed: {e}")).model;
    let got = m.forward(&ids, &mut m.new_cache(), true).unwrap().to_vec2::<f32>().unwrap();
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_close(&format!("unprefixed prompt position {i}"), g, w, TOL);
    }
}

#[test]
fn unsupported_activation_is_a_clear_error() {
    let src = fixture("tiny-gpt2");
    let mut cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(src.join("config.json")).unwrap()).unwrap();
    cfg["activation_function"] = "mish".into();
    let dir = temp_model_dir("gpt2-mish");
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    std::fs::copy(src.join("model.safetensors"), dir.join("model.safetensors")).unwrap();
    match load_decoder(&ModelLocation::Dir(dir)) {
        Err(e @ Error::Unsupported { .. }) => assert!(e.to_string().contains("mish"), "{e}"),
        Err(e) => panic!("expected Unsupported, got {e}"),
        Ok(_) => panic!("expected Unsupported, got a model"),
    }
}

/// The fixture as llama.cpp's converter lays it out: GGUF names, projections already
/// transposed to `[out, in]`, and `output.weight` written as a copy of the embedding.
#[test]
fn gguf_layout_matches_transformers() {
    let src = fixture("tiny-gpt2");
    let t = safetensors::load(src.join("model.safetensors"), &Device::Cpu).unwrap();
    let mut b = GgufBuilder::new()
        .kv_str("general.architecture", "gpt2")
        .kv_u32("gpt2.context_length", 128)
        .kv_u32("gpt2.embedding_length", 64)
        .kv_u32("gpt2.feed_forward_length", 256)
        .kv_u32("gpt2.block_count", 2)
        .kv_u32("gpt2.attention.head_count", 4)
        .kv_f32("gpt2.attention.layer_norm_epsilon", 1e-5);
    let mut names: Vec<&String> = t.keys().collect();
    names.sort();
    for hf in names {
        let mut x = t[hf].clone();
        if x.rank() == 2 && hf.contains(".h.") {
            x = x.t().unwrap().contiguous().unwrap();
        }
        let shape: Vec<u64> = x.dims().iter().map(|&d| d as u64).collect();
        let data = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let gguf = plinth_io::names::hf_to_gguf("gpt2", hf).unwrap_or_else(|| panic!("no GGUF name for {hf}"));
        b = b.tensor_f32(&gguf, &shape, &data);
        if gguf == "token_embd.weight" {
            b = b.tensor_f32("output.weight", &shape, &data);
        }
    }
    let path = b.write("tiny-gpt2.gguf");

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
