//! The CLIP tokenizer built from `vocab.json` + `merges.txt` (diffusers' layout) against
//! transformers' `CLIPTokenizer` on `fixtures/clip-bpe` (scripts/make_clip_bpe_fixture.py):
//! plain ids and the 77-id padded/truncated form the Stable Diffusion pipelines feed.

use plinth_testutil::fixture;
use plinth_tokenize::Tokenizer;

/// The fixture as SD 1.x ships it: padded with the end-of-text token, so "!" is ordinary text.
fn eos_padded_copy() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("plinth-clip-bpe-eos-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["vocab.json", "merges.txt"] {
        std::fs::copy(fixture("clip-bpe").join(f), dir.join(f)).unwrap();
    }
    let cfg = r#"{"tokenizer_class": "CLIPTokenizer", "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}"#;
    std::fs::write(dir.join("tokenizer_config.json"), cfg).unwrap();
    dir
}

#[test]
fn clip_bpe_ids_equal_transformers() {
    let dir = fixture("clip-bpe");
    let tok = Tokenizer::from_dir(&dir).unwrap();
    let eos_dir = eos_padded_copy();
    let eos_tok = Tokenizer::from_dir(&eos_dir).unwrap();
    assert_eq!(eos_tok.pad_id(), Some(713));
    let refs: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("refs.json")).unwrap()).unwrap();
    assert_eq!(tok.vocab_size(), refs["vocab_size"].as_u64().unwrap() as usize);
    assert_eq!(tok.pad_id(), Some(0), "the fixture pads with '!', as SD 2.x does");
    let ids = |v: &serde_json::Value| v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect::<Vec<_>>();
    let mut checked = 0;
    for case in refs["cases"].as_array().unwrap() {
        let prompt = case["prompt"].as_str().unwrap();
        let tok = if case["pad_token"] == "!" { &tok } else { &eos_tok };
        let pad = tok.pad_id().unwrap();
        assert_eq!(tok.encode(prompt, true).unwrap(), ids(&case["ids"]), "plain ids of {prompt:?} (pad {pad})");
        let (padded, real) = tok.encode_fixed(prompt, 77, pad).unwrap();
        assert_eq!(padded, ids(&case["padded"]), "padded ids of {prompt:?} (pad {pad})");
        assert!(real <= 77 && padded[real - 1] == 713, "the last real id is the end-of-text token");
        checked += 1;
    }
    assert_eq!(checked, 14);
    std::fs::remove_dir_all(&eos_dir).unwrap();
}

#[test]
fn missing_files_are_named() {
    let dir = std::env::temp_dir().join(format!("plinth-clip-bpe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(fixture("clip-bpe/vocab.json"), dir.join("vocab.json")).unwrap();
    let err = Tokenizer::from_dir(&dir).unwrap_err().to_string();
    assert!(err.contains("tokenizer.json") && err.contains("merges.txt"), "{err}");
    std::fs::write(dir.join("merges.txt"), "#version: 0.2\na b c\n").unwrap();
    let err = Tokenizer::from_dir(&dir).unwrap_err().to_string();
    assert!(err.contains("merges.txt") && err.contains("line 2"), "{err}");
    std::fs::write(dir.join("merges.txt"), "#version: 0.2\n").unwrap();
    std::fs::write(dir.join("vocab.json"), "{\"a\": 0}").unwrap();
    let err = Tokenizer::from_dir(&dir).unwrap_err().to_string();
    assert!(err.contains("<|startoftext|>"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
