//! Tokenizers built from small hand-written GGUF files: malformed or missing metadata gives a
//! one-line error naming the file, a tiny byte-level vocabulary exercises streaming decode of
//! characters split across byte tokens, and a tiny SentencePiece vocabulary the "llama" model.

use plinth_core::Error;
use plinth_io::GgufFile;
use plinth_testutil::GgufBuilder;
use plinth_tokenize::{Detokenizer, Tokenizer};

/// GPT-2's byte -> printable char table: printable Latin-1 bytes map to themselves, the rest
/// to U+0100 onwards.
fn byte_chars() -> Vec<char> {
    let keep =
        |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
    let mut next = 256;
    (0u32..256)
        .map(|b| {
            if keep(b) {
                char::from_u32(b).unwrap()
            } else {
                next += 1;
                char::from_u32(next - 1).unwrap()
            }
        })
        .collect()
}

fn u32_array(values: &[u32]) -> Vec<u8> {
    let mut p = 4u32.to_le_bytes().to_vec();
    p.extend((values.len() as u64).to_le_bytes());
    values.iter().for_each(|v| p.extend(v.to_le_bytes()));
    p
}

fn f32_array(values: &[f32]) -> Vec<u8> {
    let mut p = 6u32.to_le_bytes().to_vec();
    p.extend((values.len() as u64).to_le_bytes());
    values.iter().for_each(|v| p.extend(v.to_le_bytes()));
    p
}

fn kv_bool(b: GgufBuilder, key: &str, v: bool) -> GgufBuilder {
    b.kv_raw(key, 7, vec![v as u8])
}

/// A byte-level BPE vocabulary: the 256 byte tokens, "hi" via one merge, and a control token.
fn byte_level(
    name: &str,
    extra: impl FnOnce(GgufBuilder) -> GgufBuilder,
) -> Result<Tokenizer, Error> {
    let chars = byte_chars();
    let mut tokens: Vec<String> = chars.iter().map(|c| c.to_string()).collect();
    tokens.push("hi".into());
    tokens.push("<|end|>".into());
    let refs: Vec<&str> = tokens.iter().map(String::as_str).collect();
    let mut types = vec![1u32; tokens.len()];
    *types.last_mut().unwrap() = 3;
    let b = GgufBuilder::new()
        .kv_str("general.architecture", "llama")
        .kv_str("tokenizer.ggml.model", "gpt2")
        .kv_str("tokenizer.ggml.pre", "default")
        .kv_str_array("tokenizer.ggml.tokens", &refs)
        .kv_raw("tokenizer.ggml.token_type", 9, u32_array(&types))
        .kv_str_array("tokenizer.ggml.merges", &["h i"])
        .kv_u32("tokenizer.ggml.eos_token_id", 257);
    open(name, &extra(b))
}

fn open(name: &str, b: &GgufBuilder) -> Result<Tokenizer, Error> {
    let path = b.write(name);
    Tokenizer::from_gguf(&GgufFile::open(&path).expect("test GGUF parses"))
}

fn assert_names_file(err: &Error, file: &str, what: &str) {
    let msg = err.to_string();
    assert!(msg.contains(file) && msg.contains(what), "{msg}");
    assert!(!msg.contains('\n'), "one line: {msg}");
}

#[test]
fn missing_tokenizer_metadata_names_the_file() {
    let b = GgufBuilder::new().kv_str("general.architecture", "llama");
    let err = open("no-tokenizer.gguf", &b).unwrap_err();
    assert!(matches!(err, Error::Missing { .. }), "{err:?}");
    assert_names_file(&err, "no-tokenizer.gguf", "tokenizer.ggml.model");

    let b = GgufBuilder::new()
        .kv_str("general.architecture", "llama")
        .kv_str("tokenizer.ggml.model", "gpt2");
    let err = open("no-tokens.gguf", &b).unwrap_err();
    assert_names_file(&err, "no-tokens.gguf", "tokenizer.ggml.tokens");
}

#[test]
fn unsupported_model_is_reported() {
    let b = GgufBuilder::new()
        .kv_str("tokenizer.ggml.model", "bert")
        .kv_str_array("tokenizer.ggml.tokens", &["a"]);
    let err = open("bert.gguf", &b).unwrap_err();
    assert!(matches!(err, Error::Unsupported { .. }), "{err:?}");
    assert_names_file(&err, "bert.gguf", "tokenizer model 'bert'");
}

#[test]
fn malformed_metadata_is_an_error_not_a_panic() {
    let err = byte_level("bos-range.gguf", |b| {
        b.kv_u32("tokenizer.ggml.bos_token_id", 9999)
    })
    .unwrap_err();
    assert_names_file(&err, "bos-range.gguf", "bos_token_id is 9999");

    let err = byte_level("model-type.gguf", |b| b.kv_u32("tokenizer.ggml.model", 7)).unwrap_err();
    assert!(matches!(err, Error::Format { .. }), "{err:?}");

    let err = byte_level("types-len.gguf", |b| {
        b.kv_raw("tokenizer.ggml.token_type", 9, u32_array(&[1, 1]))
    })
    .unwrap_err();
    assert_names_file(&err, "types-len.gguf", "token_type has 2 entries");

    let err = byte_level("bad-merge.gguf", |b| {
        b.kv_str_array("tokenizer.ggml.merges", &["nospace"])
    })
    .unwrap_err();
    assert_names_file(&err, "bad-merge.gguf", "merges[0]");

    let err = byte_level("flag-type.gguf", |b| {
        b.kv_u32("tokenizer.ggml.add_bos_token", 1)
    })
    .unwrap_err();
    assert_names_file(&err, "flag-type.gguf", "add_bos_token should be a bool");

    // A merge of strings that are not tokens cannot apply; it is dropped, not fatal.
    let tok = byte_level("odd-merge.gguf", |b| {
        b.kv_str_array("tokenizer.ggml.merges", &["h i", "zz q"])
    })
    .unwrap();
    assert_eq!(tok.encode("hi", false).unwrap(), [256]);
}

#[test]
fn no_chat_template_is_a_clear_error() {
    let tok = byte_level("no-template.gguf", |b| b).unwrap();
    assert!(tok.chat_template().is_none());
    let err = tok.chat().unwrap_err();
    assert!(matches!(err, Error::Template(_)), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("no chat template") && msg.contains("without --chat"),
        "{msg}"
    );
}

#[test]
fn bos_and_eos_policy_follow_metadata() {
    let tok = byte_level("policy.gguf", |b| {
        let b = b.kv_u32("tokenizer.ggml.bos_token_id", 257);
        kv_bool(
            kv_bool(b, "tokenizer.ggml.add_bos_token", true),
            "tokenizer.ggml.add_eos_token",
            true,
        )
    })
    .unwrap();
    assert_eq!(tok.encode("hi", true).unwrap(), [257, 256, 257]);
    assert_eq!(tok.encode("hi", false).unwrap(), [256]);
    // The control token is matched whole in text and can be skipped on decode.
    assert_eq!(tok.encode("hi<|end|>", false).unwrap(), [256, 257]);
    assert_eq!(tok.decode(&[256, 257], false).unwrap(), "hi<|end|>");
    assert_eq!(tok.decode(&[256, 257], true).unwrap(), "hi");
    assert!(tok.is_eos(257) && !tok.is_eos(256));
    assert_eq!(tok.special_tokens(), [("<|end|>".to_string(), 257)]);
    assert!(tok.decode(&[258], false).is_err(), "out-of-vocabulary id");
}

#[test]
fn detokenizer_joins_an_emoji_split_across_byte_tokens() {
    let tok = byte_level("emoji.gguf", |b| b).unwrap();
    let ids = tok.encode("a😀b", false).unwrap();
    assert_eq!(ids.len(), 6, "one token per byte: {ids:?}");
    let mut d = Detokenizer::new(&tok, false);
    let pieces: Vec<String> = ids.iter().map(|&id| d.push(id).unwrap()).collect();
    assert_eq!(pieces, ["a", "", "", "", "😀", "b"]);
    assert_eq!(d.finish().unwrap(), "");

    // A stream that ends mid-character flushes what a full decode would show.
    let mut d = Detokenizer::new(&tok, false);
    assert_eq!(d.push(ids[1]).unwrap(), "");
    assert_eq!(d.finish().unwrap(), tok.decode(&ids[1..2], false).unwrap());
}

/// A tiny SentencePiece vocabulary (scores, no merges) in the shape llama.cpp writes.
fn sentencepiece(name: &str) -> Tokenizer {
    let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
    let mut types = vec![2u32, 3, 3];
    tokens.extend((0..=255u8).map(|b| format!("<0x{b:02X}>")));
    types.extend([6u32; 256]);
    for piece in [
        "▁", "h", "e", "l", "o", "w", "r", "d", "he", "ll", "llo", "hello", "▁hello", "▁w", "or",
        "▁wor", "ld", "▁world",
    ] {
        tokens.push(piece.into());
        types.push(1);
    }
    // Longer pieces score higher, so they are merged first.
    let scores: Vec<f32> = tokens
        .iter()
        .zip(&types)
        .map(|(t, &ty)| {
            if ty == 1 {
                t.chars().count() as f32
            } else {
                0.0
            }
        })
        .collect();
    let refs: Vec<&str> = tokens.iter().map(String::as_str).collect();
    let b = GgufBuilder::new()
        .kv_str("tokenizer.ggml.model", "llama")
        .kv_str_array("tokenizer.ggml.tokens", &refs)
        .kv_raw("tokenizer.ggml.token_type", 9, u32_array(&types))
        .kv_raw("tokenizer.ggml.scores", 9, f32_array(&scores))
        .kv_u32("tokenizer.ggml.unknown_token_id", 0)
        .kv_u32("tokenizer.ggml.bos_token_id", 1)
        .kv_u32("tokenizer.ggml.eos_token_id", 2);
    open(name, &b).unwrap()
}

#[test]
fn sentencepiece_vocabulary_encodes_and_decodes() {
    let tok = sentencepiece("spm.gguf");
    let id = |s: &str| tok.inner().token_to_id(s).unwrap();
    // BOS by default for SentencePiece models; a space prefix is added; "▁" marks spaces.
    assert_eq!(
        tok.encode("hello world", true).unwrap(),
        [1, id("▁hello"), id("▁world")]
    );
    assert_eq!(
        tok.decode(&tok.encode("hello world", true).unwrap(), true)
            .unwrap(),
        "hello world"
    );
    // Characters outside the vocabulary fall back to byte tokens and decode back.
    let ids = tok.encode("hello é", false).unwrap();
    assert_eq!(ids, [id("▁hello"), id("▁"), id("<0xC3>"), id("<0xA9>")]);
    assert_eq!(tok.decode(&ids, false).unwrap(), "hello é");
    let mut d = Detokenizer::new(&tok, false);
    let streamed: String =
        ids.iter().map(|&i| d.push(i).unwrap()).collect::<String>() + &d.finish().unwrap();
    assert_eq!(streamed, "hello é");
    assert_eq!(tok.decode(&[1, id("▁hello"), 2], true).unwrap(), "hello");
}
