//! Token-for-token parity of [`Tokenizer::from_file`] with Hugging Face on two tokenizer
//! families, over every string of fixtures/tokenizer/corpus.json:
//!
//! * `fixtures/tokenizer/smollm2-hf/` -- byte-level BPE (SmolLM2-135M-Instruct's tokenizer as
//!   transformers' `save_pretrained` writes it: tokenizer.json, tokenizer_config.json,
//!   chat_template.jinja);
//! * `fixtures/tokenizer/minilm/` -- BERT WordPiece (all-MiniLM-L6-v2's files, unmodified):
//!   lowercasing/accent handling by the BertNormalizer, `[CLS] .. [SEP]` from the
//!   TemplateProcessing post-processor, `##` joining by the WordPiece decoder. Its tokenizer.json
//!   also carries sentence-transformers' fixed padding to 128 and truncation at 128, which
//!   transformers turns off for a plain `tokenizer(text)` call and so must plinth.
//!
//! The reference (`reference.json` in each directory, made by
//! scripts/make_tokenizer_json_fixtures.py) is `transformers.AutoTokenizer` (the fast
//! tokenizer): `ids` = add_special_tokens=False, `ids_special` = add_special_tokens=True,
//! `decoded` = `decode(ids, skip_special_tokens=False)`. Decoding is compared exactly with
//! transformers, not approximately: for both tokenizers transformers' own
//! `clean_up_tokenization_spaces` is False, so its decode is exactly the `tokenizers` library's
//! decoder output (for MiniLM that includes the WordPiece decoder's own `cleanup`, e.g.
//! "hello ," -> "hello,"), which the generator script checks too. Every mismatch is reported.

use std::path::PathBuf;

use plinth_tokenize::{Message, Tokenizer};
use serde::Deserialize;

mod common;
use common::compare_case;

#[derive(Deserialize)]
struct Reference {
    cases: Vec<Case>,
    #[serde(default)]
    bos_token_id: Option<u32>,
    #[serde(default)]
    eos_token_id: Option<u32>,
    #[serde(default)]
    chat_example: Option<String>,
    #[serde(default)]
    chat_example_ids: Option<Vec<u32>>,
    #[serde(default)]
    cls_token_id: Option<u32>,
    #[serde(default)]
    sep_token_id: Option<u32>,
}

#[derive(Deserialize)]
struct Case {
    text: String,
    ids: Vec<u32>,
    ids_special: Vec<u32>,
    decoded: String,
}

fn dir(name: &str) -> PathBuf {
    plinth_testutil::fixture(&format!("tokenizer/{name}"))
}

fn load(name: &str) -> (Tokenizer, Reference) {
    let dir = dir(name);
    let tok = Tokenizer::from_file(&dir.join("tokenizer.json"))
        .unwrap_or_else(|e| panic!("{name}: Tokenizer::from_file: {e}"));
    let json = std::fs::read_to_string(dir.join("reference.json")).unwrap();
    let reference: Reference = serde_json::from_str(&json).expect("reference fixture parses");
    let corpus: Vec<String> = serde_json::from_str(
        &std::fs::read_to_string(plinth_testutil::fixture("tokenizer/corpus.json")).unwrap(),
    )
    .unwrap();
    let texts: Vec<&str> = reference.cases.iter().map(|c| c.text.as_str()).collect();
    assert_eq!(
        texts, corpus,
        "{name}: reference.json does not cover corpus.json (regenerate it)"
    );
    (tok, reference)
}


/// encode (both ways), decode and streaming decode of every case; all failures in one report.
fn check_corpus(name: &str) {
    let (tok, reference) = load(name);
    let mut failures = Vec::new();
    for case in &reference.cases {
        compare_case(&tok, &case.text, &case.ids, &case.decoded, &mut failures);
        let ids = tok.encode(&case.text, true).unwrap();
        if ids != case.ids_special {
            failures.push(format!(
                "encode+special {:?}\n   got  {:?}\n   want {:?}",
                case.text, ids, case.ids_special
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{name}: {} failures over {} cases:\n{}",
        failures.len(),
        reference.cases.len(),
        failures.join("\n")
    );
    println!(
        "{name}: {} cases match (encode, encode+special, decode, streaming decode)",
        reference.cases.len()
    );
}

#[test]
fn smollm2_tokenizer_json_matches_hugging_face() {
    check_corpus("smollm2-hf");
}

#[test]
fn minilm_wordpiece_tokenizer_json_matches_hugging_face() {
    check_corpus("minilm");
}

#[test]
fn minilm_special_tokens_and_no_padding() {
    let (tok, reference) = load("minilm");
    let (cls, sep) = (
        reference.cls_token_id.unwrap(),
        reference.sep_token_id.unwrap(),
    );
    assert_eq!((cls, sep), (101, 102));
    // The post-processor wraps the text; tokenizer.json's padding (Fixed 128) is not applied.
    assert_eq!(
        tok.encode("Hello world", true).unwrap(),
        vec![cls, 7592, 2088, sep]
    );
    assert_eq!(tok.encode("", true).unwrap(), vec![cls, sep]);
    assert_eq!(tok.encode("", false).unwrap(), Vec::<u32>::new());
    // Nor its truncation at 128: a long input keeps every token, as transformers does.
    let long = "word ".repeat(300);
    assert_eq!(tok.encode(&long, false).unwrap().len(), 300);
    assert_eq!(tok.encode(&long, true).unwrap().len(), 302);
    assert_eq!(
        tok.decode(&[cls, 7592, 2088, sep], true).unwrap(),
        "hello world"
    );
    assert_eq!(tok.bos_id(), None);
    assert!(!tok.add_bos());
    assert_eq!(tok.vocab_size(), 30522);
}

#[test]
fn smollm2_tokenizer_json_chat_template_and_special_ids() {
    let (tok, reference) = load("smollm2-hf");
    assert_eq!(tok.bos_id(), reference.bos_token_id);
    assert_eq!(tok.bos_id(), Some(1));
    assert_eq!(tok.eos_ids().first().copied(), reference.eos_token_id);
    assert!(tok.is_eos(2));
    assert!(!tok.add_bos());
    assert_eq!(tok.vocab_size(), 49152);

    let messages = [
        Message::new("system", "You are a helpful assistant."),
        Message::new("user", "What is 2+2?"),
    ];
    let text = tok.chat().unwrap().render(&messages, true).unwrap();
    assert_eq!(Some(&text), reference.chat_example.as_ref());
    let ids = tok.encode(&text, false).unwrap();
    assert_eq!(Some(&ids), reference.chat_example_ids.as_ref());
    assert_eq!(tok.decode(&ids, false).unwrap(), text);
}

/// The tokenizer.json route and the GGUF route build the same SmolLM2 tokenizer.
#[test]
fn smollm2_tokenizer_json_agrees_with_gguf() {
    let (json_tok, reference) = load("smollm2-hf");
    let gguf =
        plinth_io::GgufFile::open(plinth_testutil::smollm2_gguf()).expect("open SmolLM2 GGUF");
    let gguf_tok = Tokenizer::from_gguf(&gguf).expect("tokenizer from GGUF");
    let mut failures = Vec::new();
    for case in &reference.cases {
        for add_special in [false, true] {
            let a = json_tok.encode(&case.text, add_special).unwrap();
            let b = gguf_tok.encode(&case.text, add_special).unwrap();
            if a != b {
                failures.push(format!(
                    "{:?} (add_special={add_special})\n   tokenizer.json {a:?}\n   gguf           {b:?}",
                    case.text
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} differences:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(json_tok.bos_id(), gguf_tok.bos_id());
    assert_eq!(json_tok.eos_ids(), gguf_tok.eos_ids());
    assert_eq!(json_tok.vocab_size(), gguf_tok.vocab_size());
    assert_eq!(json_tok.special_tokens(), gguf_tok.special_tokens());
    let messages = [Message::new("user", "What is 2+2?")];
    assert_eq!(
        json_tok.chat().unwrap().render(&messages, true).unwrap(),
        gguf_tok.chat().unwrap().render(&messages, true).unwrap()
    );
}
