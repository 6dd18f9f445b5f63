//! Broken Hugging Face directories: each gives an error that names what is wrong.

use std::path::{Path, PathBuf};

use plinth_io::fetch::ModelLocation;
use plinth_models::load_decoder;
use plinth_testutil::fixture;

/// A private copy of a fixture directory that a test may break.
fn copy_fixture(name: &str, tag: &str) -> PathBuf {
    let src = fixture(name);
    let dst = std::env::temp_dir().join(format!("plinth-hf-bad-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dst);
    std::fs::create_dir_all(&dst).unwrap();
    for e in std::fs::read_dir(&src).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, dst.join(p.file_name().unwrap())).unwrap();
    }
    dst
}

fn load_err(dir: &Path) -> String {
    match load_decoder(&ModelLocation::Dir(dir.to_path_buf())) {
        Ok(_) => panic!("{} should not load", dir.display()),
        Err(e) => e.to_string(),
    }
}

fn edit_config(dir: &Path, f: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) {
    let p = dir.join("config.json");
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    f(v.as_object_mut().unwrap());
    std::fs::write(&p, serde_json::to_string(&v).unwrap()).unwrap();
}

#[test]
fn missing_shard_is_named() {
    let d = copy_fixture("tiny-llama-sharded", "shard");
    std::fs::remove_file(d.join("model-00002-of-00003.safetensors")).unwrap();
    let e = load_err(&d);
    assert!(e.contains("model-00002-of-00003.safetensors") && e.contains("missing"), "{e}");
}

#[test]
fn shape_mismatch_names_tensor_and_shapes() {
    let d = copy_fixture("tiny-qwen2", "shape");
    edit_config(&d, |c| {
        c.insert("intermediate_size".into(), 96.into());
    });
    let e = load_err(&d);
    assert!(e.contains("mlp.gate_proj.weight") && e.contains("[96, 64]") && e.contains("[128, 64]"), "{e}");
}

#[test]
fn config_missing_required_field() {
    let d = copy_fixture("tiny-mistral", "field");
    edit_config(&d, |c| {
        c.remove("hidden_size");
    });
    let e = load_err(&d);
    assert!(e.contains("config.json") && e.contains("hidden_size"), "{e}");
}

#[test]
fn unknown_model_type_lists_supported() {
    let d = copy_fixture("tiny-qwen3", "type");
    edit_config(&d, |c| {
        c.insert("model_type".into(), "mamba9".into());
    });
    let e = load_err(&d);
    assert!(e.contains("unknown architecture 'mamba9'") && e.contains("qwen3"), "{e}");
}

#[test]
fn missing_weights_file() {
    let d = copy_fixture("tiny-qwen3", "weights");
    std::fs::remove_file(d.join("model.safetensors")).unwrap();
    let e = load_err(&d);
    assert!(e.contains("model.safetensors"), "{e}");
}

#[test]
fn malformed_config_json() {
    let d = copy_fixture("tiny-qwen3", "json");
    std::fs::write(d.join("config.json"), "{\"model_type\": \"qwen3\",").unwrap();
    let e = load_err(&d);
    assert!(e.contains("config.json") && e.contains("invalid JSON"), "{e}");
}
