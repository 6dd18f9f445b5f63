//! The binary with encoder-decoder models: `inspect` shows their card, and `translate`
//! takes the seq2seq path for a Marian directory (tiny random weights + a tiny SentencePiece
//! tokenizer: the words are meaningless, so only structure, format and errors are checked;
//! parity with transformers is in plinth-models and plinth-tasks).

use std::path::PathBuf;

use plinth_testutil::fixture;
use serde_json::Value;

fn plinth(args: &[&str], stdin: &str) -> (i32, String, String) {
    plinth_testutil::run_with_stdin(env!("CARGO_BIN_EXE_plinth"), args, stdin)
}

/// tiny-marian's weights with tiny-marian-tok's tokenizer: a complete opus-mt-style directory.
fn marian_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("plinth-cli-seq2seq-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for (from, files) in [("tiny-marian", &["config.json", "model.safetensors", "generation_config.json"][..]), ("tiny-marian-tok", &["source.spm", "target.spm", "vocab.json", "tokenizer_config.json"][..])] {
        for f in files {
            std::fs::copy(fixture(from).join(f), dir.join(f)).unwrap();
        }
    }
    dir
}

#[test]
fn inspect_shows_an_encoder_decoder_card() {
    let dir = fixture("tiny-t5");
    let (code, out, err) = plinth(&["inspect", dir.to_str().unwrap(), "--json"], "");
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["card"]["family"], "encoder-decoder");
    assert_eq!(v["supported"], true);
    assert_eq!(v["card"]["outputs"], serde_json::json!(["text"]));
    assert!(v["card"]["tasks"].as_array().unwrap().iter().any(|t| t == "translation"));
}

#[test]
fn translate_with_a_marian_directory_keeps_paragraphs() {
    let dir = marian_dir("para");
    let text = "Hello there. How are you today?\n\nA second paragraph.\n\n\nA third one. With two sentences.\n";
    let (code, out, err) = plinth(&["translate", "--model", dir.to_str().unwrap(), "--to", "de", "--num-beams", "2", "--json"], text);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["paragraphs"], 3);
    let t = v["translation"].as_str().unwrap();
    assert_eq!(t.matches("\n\n\n").count(), 1, "separators kept verbatim: {t:?}");
    assert_eq!(t.split("\n\n").filter(|p| !p.trim().is_empty()).count(), 3, "{t:?}");
    // Streaming text output equals the JSON translation.
    let (code, streamed, err) = plinth(&["translate", "--model", dir.to_str().unwrap(), "--to", "de", "--num-beams", "2"], text);
    assert_eq!(code, 0, "{err}");
    assert_eq!(streamed, t);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn translate_refuses_flags_of_the_other_kind_of_model() {
    let dir = marian_dir("flags");
    let (code, _, err) = plinth(&["translate", "--model", dir.to_str().unwrap(), "--to", "de", "--context", "128"], "Hi.");
    assert_ne!(code, 0);
    assert!(err.contains("--context"), "{err}");
    let (code, _, err) = plinth(&["translate", "--model", dir.to_str().unwrap(), "--to", "de", "--num-beams", "0"], "Hi.");
    assert_ne!(code, 0);
    assert!(err.contains("beams"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let (code, _, err) = plinth(&["translate", "--model", dir.to_str().unwrap(), "--to", " "], "Hi.");
    assert_ne!(code, 0);
    assert!(err.contains("--to"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn summarize_with_a_seq2seq_model_goes_map_reduce_past_its_encoder_limit() {
    let dir = marian_dir("summ");
    // tiny-marian's encoder takes 64 positions: this text needs several parts.
    let text: String = (0..30).map(|i| format!("Sentence number {i} says something. ")).collect();
    let (code, out, err) = plinth(&["summarize", "--model", dir.to_str().unwrap(), "--words", "5", "--json"], &text);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert!(v["parts"].as_u64().unwrap() >= 3, "{v}");
    assert!(v["rounds"].as_u64().unwrap() >= 2, "{v}");
    assert!(!v["summary"].as_str().unwrap().is_empty());
    let (code, _, err) = plinth(&["summarize", "--model", dir.to_str().unwrap(), "--style", "bullet"], &text);
    assert_ne!(code, 0);
    assert!(err.contains("--style"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}
