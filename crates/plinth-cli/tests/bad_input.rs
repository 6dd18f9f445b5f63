//! The binary on bad input: a one-line `error: ...` naming the file and the problem, a
//! non-zero exit status, and never a panic.

use std::process::Command;

use plinth_testutil::{fixture, write_temp, GgufBuilder};

fn plinth(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_plinth")).args(args).env("HF_HUB_OFFLINE", "1").output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

/// Runs `generate` on `path` and checks the failure shape; returns stderr.
fn fails_cleanly(path: &str, expect: &str) -> String {
    let (code, _, err) = plinth(&["generate", "--model", path, "--prompt", "hi", "-n", "2"]);
    assert_ne!(code, 0, "expected failure for {path}");
    assert!(!err.contains("panicked"), "panic for {path}: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "error is not one line: {err}");
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.contains(expect), "expected '{expect}' in: {err}");
    err
}

#[test]
fn wrong_magic() {
    let p = write_temp("cli-magic.gguf", b"PK\x03\x04 this is a zip, not a model");
    let err = fails_cleanly(p.to_str().unwrap(), "not a GGUF file");
    assert!(err.contains("cli-magic.gguf"));
}

#[test]
fn truncated_file() {
    let bytes = std::fs::read(fixture("tiny-llama/model.gguf")).unwrap();
    for cut in [10, 500, bytes.len() / 2] {
        let p = write_temp(&format!("cli-trunc-{cut}.gguf"), &bytes[..cut]);
        fails_cleanly(p.to_str().unwrap(), "truncated");
    }
}

#[test]
fn absurd_tensor_count() {
    let mut bytes = GgufBuilder::new().kv_str("general.architecture", "llama").build();
    bytes[8..16].copy_from_slice(&(1u64 << 61).to_le_bytes());
    let p = write_temp("cli-count.gguf", &bytes);
    fails_cleanly(p.to_str().unwrap(), "tensor count");
}

#[test]
fn unknown_architecture() {
    let p = GgufBuilder::new().kv_str("general.architecture", "mamba9").tensor_f32("w", &[4], &[0.0; 4]).write("cli-arch.gguf");
    fails_cleanly(p.to_str().unwrap(), "unknown architecture 'mamba9'");
}

#[test]
fn unsupported_tensor_type() {
    let p = GgufBuilder::new()
        .kv_str("general.architecture", "llama")
        .tensor_raw("token_embd.weight", &[256], 19, vec![0; 74])
        .write("cli-iq.gguf");
    fails_cleanly(p.to_str().unwrap(), "unsupported tensor type");
}

#[test]
fn missing_tokenizer_metadata() {
    // The tiny parity model is a valid Llama with no tokenizer in its metadata.
    let p = fixture("tiny-llama/model.gguf");
    let err = fails_cleanly(p.to_str().unwrap(), "tokenizer");
    assert!(err.contains("model.gguf") && err.contains("missing"), "{err}");
}

#[test]
fn missing_file_and_unknown_name() {
    fails_cleanly("/nonexistent/dir/model.gguf", "no such file");
    fails_cleanly("not-a-model-name", "known names");
}

#[test]
fn invalid_sampling_values_are_rejected_before_loading() {
    let (code, _, err) = plinth(&["generate", "--model", "/nonexistent.gguf", "--prompt", "x", "--temperature", "-1"]);
    assert_ne!(code, 0);
    assert!(err.contains("temperature"), "{err}");
    let (code, _, err) = plinth(&["generate", "--prompt", "x", "--top-p", "1.5", "--model", "/nonexistent.gguf"]);
    assert_ne!(code, 0);
    assert!(err.contains("top_p") || err.contains("top-p"), "{err}");
}
