//! The real SmolLM2 as a Hugging Face directory: the GGUF is converted once per test run by
//! `plinth_train::merge::export` into `config.json` + `model.safetensors` (f32, Hugging Face
//! names and q/k row order) + `tokenizer.json` / `tokenizer_config.json` /
//! `generation_config.json`, then run through the safetensors loader. Its
//! prompt logits must equal the GGUF path's (both multiply dequantized weights in f32;
//! tolerance 1e-3 absolute on logits of magnitude ~20), and `generate --chat` must work from
//! the directory.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use plinth_io::fetch::ModelLocation;
use plinth_models::load_decoder;
use plinth_testutil::{assert_close, smollm2_gguf};
use plinth_tokenize::Tokenizer;

/// The converted directory, made once per test binary run.
fn hf_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("smollm2-exported");
        // The export writes the directory whole or not at all.
        if !dir.exists() {
            plinth_train::merge::export(&ModelLocation::Gguf(smollm2_gguf()), &dir, |_, _| {}).unwrap();
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
        // An f32 cache for both: a quantized model's default f16 cache would add its own
        // rounding (~1e-2 on these logits) to what this test isolates, the two loaders.
        let mut cache = plinth_models::KvCache::new(m.info().num_layers);
        m.forward(&ids, &mut cache, true).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap()
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
