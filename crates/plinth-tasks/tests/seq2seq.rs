//! The seq2seq task layer: Marian's SentencePiece tokenizer against transformers'
//! `MarianTokenizer` (`fixtures/tiny-marian-tok`, `scripts/make_marian_tokenizer_fixture.py`),
//! and text-to-text generation end to end: tiny-marian with that tokenizer against
//! transformers' `generate` + `batch_decode`, and tiny-t5 / tiny-bart through a word-level
//! `tokenizer.json` written here whose words name the ids, checked against the transformers ids
//! of `fixtures/tiny-<name>/reference.safetensors`. All comparisons are exact (ids and text).

use std::path::{Path, PathBuf};

use plinth_engine::seq2seq::Seq2SeqOverrides;
use plinth_tasks::seq2seq::{is_seq2seq_dir, MarianTokenizer, Seq2SeqModel};
use plinth_testutil::fixture;
use serde_json::{json, Value};

fn reference() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("tiny-marian-tok/reference.json")).unwrap()).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

/// A fresh directory holding `files` copied from fixtures (`(fixture path, name)`).
fn model_dir(tag: &str, files: &[(PathBuf, &str)]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("plinth-seq2seq-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for (from, name) in files {
        std::fs::copy(from, dir.join(name)).unwrap();
    }
    dir
}

fn model_files(name: &str) -> Vec<(PathBuf, &'static str)> {
    ["config.json", "model.safetensors", "generation_config.json"].iter().map(|f| (fixture(&format!("tiny-{name}/{f}")), *f)).collect()
}

#[test]
fn marian_tokenizer_matches_transformers() {
    let tok = MarianTokenizer::from_dir(&fixture("tiny-marian-tok")).unwrap();
    let r = reference();
    let mut n = 0;
    for case in r["encode"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        assert_eq!(tok.encode(text).unwrap(), ids(&case["ids"]), "encode {text:?} (transformers pieces {})", case["pieces"]);
        n += 1;
    }
    for case in r["decode"].as_array().unwrap() {
        let want = case["text"].as_str().unwrap();
        assert_eq!(tok.decode(&ids(&case["ids"])), want, "decode {}", case["ids"]);
        n += 1;
    }
    println!("{n} encode/decode cases identical to MarianTokenizer");
    // Special tokens written in the text are split out, as the slow tokenizer does.
    assert_eq!(tok.encode("a </s> b <pad> c").unwrap(), vec![3, 0, 36, 127, 2, 1, 0]);
}

#[test]
fn marian_translation_matches_transformers_generate() {
    let mut files = model_files("marian");
    for f in ["source.spm", "target.spm", "vocab.json", "tokenizer_config.json"] {
        files.push((fixture(&format!("tiny-marian-tok/{f}")), f));
    }
    let dir = model_dir("marian", &files);
    assert!(is_seq2seq_dir(&dir));
    let m = Seq2SeqModel::load(&dir).unwrap();
    let r = &reference()["translate"];
    let texts: Vec<&str> = r["texts"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    let max_new = r["max_new_tokens"].as_u64().unwrap() as usize;
    for (name, beams) in [("greedy", 1), ("beam", 3)] {
        let o = Seq2SeqOverrides { max_new_tokens: Some(max_new), num_beams: Some(beams), ..Default::default() };
        let got = m.generate(&texts, &o).unwrap();
        let want_ids = r[format!("{name}_ids")].as_array().unwrap();
        for (i, g) in got.iter().enumerate() {
            let mut want = ids(&want_ids[i]);
            // transformers pads finished rows; ours stop at EOS.
            while want.len() > g.hypothesis.ids.len() && want.last() == Some(&127) {
                want.pop();
            }
            assert_eq!(g.hypothesis.ids, want, "{name} text {i}");
            assert_eq!(g.text, r[name][i].as_str().unwrap(), "{name} text {i}");
        }
        println!("marian {name}: {:?}", got.iter().map(|g| g.text.as_str()).collect::<Vec<_>>());
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A word-level tokenizer.json: id i is the word `w{i}`, special tokens keep their names, and
/// the post-processor adds `prefix` before and `</s>` after the text (as T5's / BART's do).
fn word_tokenizer(specials: &[(&str, u32)], prefix: Option<&str>, vocab_size: u32) -> Value {
    let mut vocab = serde_json::Map::new();
    for i in 0..vocab_size {
        let name = specials.iter().find(|s| s.1 == i).map_or(format!("w{i}"), |s| s.0.to_string());
        vocab.insert(name, json!(i));
    }
    let seq = |id: &str| json!({"Sequence": {"id": id, "type_id": 0}});
    let special = |t: &str| json!({"SpecialToken": {"id": t, "type_id": 0}});
    let mut single = vec![seq("A"), special("</s>")];
    let mut pair = vec![seq("A"), special("</s>"), seq("B"), special("</s>")];
    let mut special_tokens = serde_json::Map::new();
    for &(t, id) in specials.iter().filter(|s| s.0 == "</s>" || Some(s.0) == prefix) {
        special_tokens.insert(t.into(), json!({"id": t, "ids": [id], "tokens": [t]}));
    }
    if let Some(p) = prefix {
        single.insert(0, special(p));
        pair.insert(0, special(p));
    }
    let added: Vec<Value> = specials
        .iter()
        .map(|&(t, id)| json!({"id": id, "content": t, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}))
        .collect();
    json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added, "normalizer": null,
        "pre_tokenizer": {"type": "WhitespaceSplit"},
        "post_processor": {"type": "TemplateProcessing", "single": single, "pair": pair, "special_tokens": special_tokens},
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}
    })
}

fn check_json_tokenizer_model(name: &str, specials: &[(&str, u32)], prefix: Option<&str>) {
    let dir = model_dir(name, &model_files(name));
    std::fs::write(dir.join("tokenizer.json"), word_tokenizer(specials, prefix, 128).to_string()).unwrap();
    let m = Seq2SeqModel::load(&dir).unwrap();
    let refs = candle_core::safetensors::load(fixture(&format!("tiny-{name}/reference.safetensors")), &candle_core::Device::Cpu).unwrap();
    let input: Vec<Vec<i64>> = refs["input_ids"].to_vec2().unwrap();
    let mask: Vec<Vec<i64>> = refs["attention_mask"].to_vec2().unwrap();
    let is_special = |id: u32| specials.iter().any(|s| s.1 == id);
    let words = |ids: &[u32]| ids.iter().filter(|&&i| !is_special(i)).map(|i| format!("w{i}")).collect::<Vec<_>>().join(" ");
    let mut texts = Vec::new();
    for (row, m_row) in input.iter().zip(&mask) {
        let src: Vec<u32> = row.iter().zip(m_row).filter(|(_, &k)| k == 1).map(|(&t, _)| t as u32).collect();
        let text = words(&src);
        // The tokenizer gives back exactly the reference source, specials included.
        assert_eq!(m.tokenizer().encode(&text).unwrap(), src, "{name}: encode {text:?}");
        texts.push(text);
    }
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    let o = Seq2SeqOverrides { max_new_tokens: Some(10), num_beams: Some(1), ..Default::default() };
    let got = m.generate_texts(&texts, &o).unwrap();
    for (i, text) in got.iter().enumerate() {
        let want: Vec<u32> = refs[format!("greedy_{i}").as_str()].to_vec1::<i64>().unwrap().into_iter().map(|t| t as u32).collect();
        assert_eq!(text, &words(&want), "{name} greedy text {i}");
    }
    println!("{name} greedy texts: {got:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn t5_through_tokenizer_json_matches_transformers_ids() {
    check_json_tokenizer_model("t5", &[("<pad>", 0), ("</s>", 1), ("<unk>", 2)], None);
}

#[test]
fn bart_through_tokenizer_json_matches_transformers_ids() {
    // <unk> at 125: no reference source or output uses that id.
    check_json_tokenizer_model("bart", &[("<s>", 0), ("<pad>", 1), ("</s>", 2), ("<unk>", 125)], Some("<s>"));
}

#[test]
fn missing_tokenizer_and_bad_input_are_named() {
    let dir = model_dir("notok", &model_files("t5"));
    let e = Seq2SeqModel::load(&dir).unwrap_err().to_string();
    assert!(e.contains("tokenizer.json") && e.contains("source.spm"), "{e}");
    assert!(is_seq2seq_dir(&dir));
    assert!(!is_seq2seq_dir(Path::new("/nonexistent")));
    let _ = std::fs::remove_dir_all(&dir);

    let bad = model_dir("badspm", &[(fixture("tiny-marian-tok/vocab.json"), "vocab.json"), (fixture("tiny-marian/config.json"), "source.spm")]);
    let e = MarianTokenizer::from_dir(&bad).unwrap_err().to_string();
    assert!(e.contains("source.spm"), "{e}");
    let _ = std::fs::remove_dir_all(&bad);
}

#[test]
fn batching_does_not_change_results_and_long_texts_are_refused() {
    let mut files = model_files("marian");
    for f in ["source.spm", "target.spm", "vocab.json", "tokenizer_config.json"] {
        files.push((fixture(&format!("tiny-marian-tok/{f}")), f));
    }
    let dir = model_dir("marian-batch", &files);
    let m = Seq2SeqModel::load(&dir).unwrap();
    let o = Seq2SeqOverrides { max_new_tokens: Some(6), num_beams: Some(2), ..Default::default() };
    // 40 texts of many lengths: several batches (at most 16 each), sorted by length inside.
    let texts: Vec<String> = (0..40).map(|i| "the river flows slowly ".repeat(1 + i % 5) + &"x".repeat(i % 3)).collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let all = m.generate(&refs, &o).unwrap();
    for (i, t) in refs.iter().enumerate().step_by(7) {
        let alone = m.generate(&[t], &o).unwrap();
        assert_eq!((&alone[0].text, &alone[0].hypothesis.ids), (&all[i].text, &all[i].hypothesis.ids), "text {i}");
        // Padding changes the matmul shapes, hence the last bits of the sums.
        assert!((alone[0].hypothesis.score - all[i].hypothesis.score).abs() < 1e-5, "text {i}");
    }
    let max = m.max_source_tokens();
    let long = "the river ".repeat(max);
    let e = m.generate_texts(&["short", &long], &o).unwrap_err().to_string();
    assert!(e.contains("text 1 has") && e.contains(&format!("at most {max}")), "{e}");
    assert!(m.generate_texts(&[], &o).unwrap().is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}
