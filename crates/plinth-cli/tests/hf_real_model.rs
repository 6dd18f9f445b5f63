//! The real SmolLM2 as a Hugging Face directory: the GGUF is converted once per test run into
//! `config.json` + `model.safetensors` (f32, Hugging Face names and q/k row order) +
//! `tokenizer.json` / `tokenizer_config.json`, then run through the safetensors loader. Its
//! prompt logits must equal the GGUF path's (both multiply dequantized weights in f32;
//! tolerance 1e-3 absolute on logits of magnitude ~20), and `generate --chat` must work from
//! the directory.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use candle_core::{Device, Tensor};
use plinth_io::fetch::ModelLocation;
use plinth_io::{names, GgufFile};
use plinth_models::load_decoder;
use plinth_testutil::{assert_close, smollm2_gguf};
use plinth_tokenize::Tokenizer;

/// Undoes llama.cpp's q/k row permutation (its converter interleaves the rotary halves).
fn unpermute(w: &Tensor, heads: usize) -> Tensor {
    let (out, inp) = w.dims2().unwrap();
    w.reshape((heads, out / heads / 2, 2, inp)).unwrap().transpose(1, 2).unwrap().reshape((out, inp)).unwrap()
}

fn convert(gguf: &Path, dir: &Path) {
    let g = GgufFile::open(gguf).unwrap();
    let heads = g.get_usize("llama.attention.head_count").unwrap();
    let kv_heads = g.get_usize("llama.attention.head_count_kv").unwrap();
    let mut tensors = HashMap::new();
    for t in &g.tensors {
        let hf = names::gguf_to_hf("llama", &t.name).unwrap_or_else(|| panic!("unmapped {}", t.name));
        let w = g.qtensor(&t.name, &Device::Cpu).unwrap().dequantize(&Device::Cpu).unwrap();
        let w = if t.name.ends_with("attn_q.weight") {
            unpermute(&w, heads)
        } else if t.name.ends_with("attn_k.weight") {
            unpermute(&w, kv_heads)
        } else {
            w
        };
        tensors.insert(hf, w);
    }
    std::fs::create_dir_all(dir).unwrap();
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors")).unwrap();
    let u = |k: &str| g.get_usize(&format!("llama.{k}")).unwrap();
    let config = serde_json::json!({
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "vocab_size": 49152,
        "hidden_size": u("embedding_length"),
        "intermediate_size": u("feed_forward_length"),
        "num_hidden_layers": u("block_count"),
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "max_position_embeddings": u("context_length"),
        "rms_norm_eps": g.get_f64("llama.attention.layer_norm_rms_epsilon").unwrap(),
        "rope_theta": g.get_f64("llama.rope.freq_base").unwrap(),
        "tie_word_embeddings": true,
        "bos_token_id": 1,
        "eos_token_id": 2,
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let tok = Tokenizer::from_gguf(&g).unwrap();
    tok.inner().save(dir.join("tokenizer.json"), false).unwrap();
    let tc = serde_json::json!({
        "chat_template": tok.chat_template().unwrap(),
        "bos_token": "<|im_start|>",
        "eos_token": "<|im_end|>",
        "add_bos_token": false,
    });
    std::fs::write(dir.join("tokenizer_config.json"), tc.to_string()).unwrap();
}

/// The converted directory, made once per test binary run.
fn hf_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("smollm2-hf");
        if !dir.join("tokenizer_config.json").exists() {
            let _ = std::fs::remove_dir_all(&dir);
            convert(&smollm2_gguf(), &dir);
        }
        dir
    })
}

#[test]
fn safetensors_directory_matches_the_gguf() {
    let dir = hf_dir();
    let tok = Tokenizer::from_file(&dir.join("tokenizer.json")).unwrap();
    let ids = tok.encode("Lighthouses guided ships along rocky coasts for centuries, long before radio and satellites.", false).unwrap();
    let ids: Vec<u32> = ids.iter().cycle().take(40).copied().collect(); // ≥ 32 rows: the f32 prompt path
    let logits = |loc: ModelLocation| {
        let m = load_decoder(&loc).unwrap().model;
        m.forward(&ids, &mut m.new_cache(), true).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap()
    };
    let from_gguf = logits(ModelLocation::Gguf(smollm2_gguf()));
    let from_dir = logits(ModelLocation::Dir(dir.clone()));
    assert_close("safetensors vs GGUF logits", &from_dir, &from_gguf, 1e-3);
}

#[test]
fn generate_and_inspect_from_the_directory() {
    let dir = hf_dir().display().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_plinth"))
        .args(["generate", "--model", &dir, "--chat", "--prompt", "What is the capital of Japan?", "-t", "0", "-n", "16", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["text"].as_str().unwrap().contains("Tokyo"), "{v}");

    let out = Command::new(env!("CARGO_BIN_EXE_plinth")).args(["inspect", &dir, "--json", "--quantize", "q8_0"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["architecture"], "llama");
    assert_eq!(v["has_chat_template"], true);
    let (disk, mem) = (v["file_bytes"].as_f64().unwrap(), v["memory_bytes"].as_f64().unwrap());
    assert!(mem < disk * 0.5, "q8_0 should at least halve f32 weights: {mem} vs {disk}");
}
