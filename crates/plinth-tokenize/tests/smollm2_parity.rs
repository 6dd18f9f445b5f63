//! Token-for-token parity with the Hugging Face tokenizer on the real SmolLM2-135M-Instruct
//! GGUF (reference ids in fixtures/tokenizer/smollm2_ids.json, made by
//! scripts/make_fixtures.py). Every mismatch is reported, not just the first.

use plinth_tokenize::{Detokenizer, Message, Tokenizer};
use serde::Deserialize;

mod common;
use common::compare_case;

#[derive(Deserialize)]
struct Reference {
    bos_token_id: u32,
    eos_token_id: u32,
    add_bos_token: bool,
    chat_example: String,
    chat_example_ids: Vec<u32>,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    text: String,
    ids: Vec<u32>,
    decoded: String,
}

fn load() -> (Tokenizer, Reference) {
    let path = plinth_testutil::smollm2_gguf();
    let gguf = plinth_io::GgufFile::open(&path).expect("open SmolLM2 GGUF");
    let tok = Tokenizer::from_gguf(&gguf).expect("tokenizer from GGUF");
    let json =
        std::fs::read_to_string(plinth_testutil::fixture("tokenizer/smollm2_ids.json")).unwrap();
    let reference: Reference = serde_json::from_str(&json).expect("reference fixture parses");
    assert!(
        reference.cases.len() >= 200,
        "fixture has only {} cases",
        reference.cases.len()
    );
    (tok, reference)
}


#[test]
fn every_corpus_case_matches_hugging_face() {
    let (tok, reference) = load();
    let mut failures = Vec::new();
    for case in &reference.cases {
        compare_case(&tok, &case.text, &case.ids, &case.decoded, &mut failures);
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        reference.cases.len(),
        failures.join("\n")
    );
    println!(
        "{} parity cases match (encode, decode, streaming decode)",
        reference.cases.len()
    );
}

#[test]
fn special_ids_and_policy_match() {
    let (tok, reference) = load();
    assert_eq!(tok.bos_id(), Some(reference.bos_token_id));
    assert_eq!(tok.eos_ids().first(), Some(&reference.eos_token_id));
    assert!(tok.is_eos(reference.eos_token_id));
    assert_eq!(tok.add_bos(), reference.add_bos_token);
    assert_eq!(tok.vocab_size(), 49152);
    assert_eq!(tok.token_text(2).as_deref(), Some("<|im_end|>"));
    let special = tok.special_tokens();
    assert_eq!(special.len(), 17, "{special:?}");
    assert_eq!(special[1], ("<|im_start|>".to_string(), 1));
    // add_bos_token is false for this model, so add_special changes nothing.
    assert_eq!(
        tok.encode("Hi", true).unwrap(),
        tok.encode("Hi", false).unwrap()
    );
}

#[test]
fn chat_template_matches_hugging_face() {
    let (tok, reference) = load();
    let messages = [
        Message::new("system", "You are a helpful assistant."),
        Message::new("user", "What is 2+2?"),
    ];
    let text = tok.chat().unwrap().render(&messages, true).unwrap();
    assert_eq!(text, reference.chat_example);
    assert_eq!(
        tok.encode(&text, false).unwrap(),
        reference.chat_example_ids
    );
    // Special tokens come out of decode unless skipped.
    assert_eq!(
        tok.decode(&reference.chat_example_ids, false).unwrap(),
        reference.chat_example
    );
    let plain = tok.decode(&reference.chat_example_ids, true).unwrap();
    assert!(
        !plain.contains("<|im_start|>") && plain.contains("What is 2+2?"),
        "{plain:?}"
    );
}

#[test]
fn streaming_emits_whole_characters() {
    let (tok, _) = load();
    let text = "naïve 😀👍🏽 日本語 ok";
    let ids = tok.encode(text, false).unwrap();
    let mut d = Detokenizer::new(&tok, false);
    let mut out = String::new();
    for &id in &ids {
        let piece = d.push(id).unwrap();
        assert!(
            !piece.contains('\u{FFFD}'),
            "partial character emitted: {piece:?}"
        );
        out.push_str(&piece);
    }
    out.push_str(&d.finish().unwrap());
    assert_eq!(out, text);
    assert!(
        d.push(u32::MAX).is_err(),
        "an id outside the vocabulary is an error"
    );
}

#[test]
fn tokenizer_json_with_config_loads_the_same_tokenizer() {
    let (tok, reference) = load();
    let dir = std::env::temp_dir().join(format!("plinth-tokenize-hf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("tokenizer.json");
    tok.inner().save(&json, false).unwrap();
    let config = serde_json::json!({
        "bos_token": "<|im_start|>",
        "eos_token": {"content": "<|im_end|>", "special": true},
        "add_bos_token": false,
        "chat_template": tok.chat_template().unwrap(),
    });
    std::fs::write(dir.join("tokenizer_config.json"), config.to_string()).unwrap();
    let hf = Tokenizer::from_file(&json).unwrap();
    assert_eq!(hf.bos_id(), Some(1));
    assert!(hf.is_eos(2));
    for case in &reference.cases {
        assert_eq!(
            hf.encode(&case.text, false).unwrap(),
            case.ids,
            "{:?}",
            case.text
        );
    }
    let messages = [Message::new("user", "What is 2+2?")];
    assert_eq!(
        hf.chat().unwrap().render(&messages, true).unwrap(),
        tok.chat().unwrap().render(&messages, true).unwrap()
    );

    let err = Tokenizer::from_file(&dir.join("missing.json")).unwrap_err();
    assert!(err.to_string().contains("missing.json"), "{err}");
}
