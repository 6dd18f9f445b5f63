//! Encoder-decoder generation against transformers 5.24 `generate` on the tiny Marian, T5 and
//! BART fixtures (`scripts/make_seq2seq_fixtures.py`, `fixtures/seq2seq-README.md`): the same
//! batched sources and kwargs, greedy and beam ids identical, beam `sequences_scores` within
//! 1e-4 (f32 log-softmax sums over ≤ 10 steps; the model's logits already match to ~1e-6).

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use plinth_engine::seq2seq::{generate, EarlyStopping, Seq2SeqGeneration, Seq2SeqOverrides};
use plinth_testutil::fixture;

const SCORE_TOL: f32 = 1e-4;

struct Reference {
    sources: Vec<Vec<u32>>,
    tensors: HashMap<String, Tensor>,
}

impl Reference {
    fn load(dir: &Path) -> Self {
        let tensors = candle_core::safetensors::load(dir.join("reference.safetensors"), &Device::Cpu).unwrap();
        let ids: Vec<Vec<i64>> = tensors["input_ids"].to_vec2().unwrap();
        let mask: Vec<Vec<i64>> = tensors["attention_mask"].to_vec2().unwrap();
        let sources = ids.iter().zip(&mask).map(|(i, m)| i.iter().zip(m).filter(|(_, &m)| m == 1).map(|(&t, _)| t as u32).collect()).collect();
        Reference { sources, tensors }
    }

    fn ids(&self, name: &str) -> Vec<u32> {
        self.tensors[name].to_vec1::<i64>().unwrap().into_iter().map(|t| t as u32).collect()
    }

    fn scores(&self) -> Vec<f32> {
        self.tensors["beam_scores"].to_dtype(DType::F32).unwrap().to_vec1().unwrap()
    }
}

fn check(name: &str) {
    let dir = fixture(&format!("tiny-{name}"));
    let model = plinth_models::load_seq2seq(&dir).unwrap();
    let reference = Reference::load(&dir);
    let base = Seq2SeqGeneration::from_dir(&dir).unwrap();
    // The reference's sources differ in length (row 1 was padded): padding is exercised.
    assert_ne!(reference.sources[0].len(), reference.sources[1].len());

    let greedy = base.clone().with_overrides(&Seq2SeqOverrides { max_new_tokens: Some(10), num_beams: Some(1), ..Default::default() });
    let got = generate(model.as_ref(), &reference.sources, &greedy).unwrap();
    for (i, h) in got.iter().enumerate() {
        let want = reference.ids(&format!("greedy_{i}"));
        println!("{name} greedy {i}: {:?}", h.ids);
        assert_eq!(h.ids, want, "{name} greedy row {i}");
    }

    let beam = base.with_overrides(&Seq2SeqOverrides {
        max_new_tokens: Some(10),
        num_beams: Some(3),
        length_penalty: Some(1.0),
        no_repeat_ngram_size: Some(2),
        early_stopping: Some(EarlyStopping::WhenFull),
        ..Default::default()
    });
    let got = generate(model.as_ref(), &reference.sources, &beam).unwrap();
    let want_scores = reference.scores();
    let mut max_diff = 0f32;
    for (i, h) in got.iter().enumerate() {
        let want = reference.ids(&format!("beam_{i}"));
        assert_eq!(h.ids, want, "{name} beam row {i}");
        max_diff = max_diff.max((h.score - want_scores[i]).abs());
    }
    println!("{name} beam: scores {:?} vs transformers {want_scores:?}, max |Δ| {max_diff:.2e}", got.iter().map(|h| h.score).collect::<Vec<_>>());
    assert!(max_diff < SCORE_TOL, "{name}: beam score max |Δ| {max_diff} ≥ {SCORE_TOL}");

    // Each source alone gives what it gets in the batch (rows never see each other).
    for (i, src) in reference.sources.iter().enumerate() {
        let alone = generate(model.as_ref(), std::slice::from_ref(src), &beam).unwrap();
        assert_eq!(alone[0].ids, got[i].ids, "{name} beam row {i} alone");
        assert!((alone[0].score - got[i].score).abs() < SCORE_TOL, "{name} beam row {i} alone: score");
    }
}

#[test]
fn tiny_bart_matches_transformers_generate() {
    check("bart");
}

#[test]
fn tiny_marian_matches_transformers_generate() {
    check("marian");
}

#[test]
fn tiny_t5_matches_transformers_generate() {
    check("t5");
}

#[test]
fn generation_settings_come_from_the_model_directory() {
    let marian = Seq2SeqGeneration::from_dir(&fixture("tiny-marian")).unwrap();
    assert_eq!((marian.decoder_start_token_id, marian.eos_token_ids.clone()), (Some(127), vec![0]));
    assert_eq!((marian.bad_words_ids.clone(), marian.forced_eos_token_ids.clone()), (vec![vec![127]], vec![0]));
    let bart = Seq2SeqGeneration::from_dir(&fixture("tiny-bart")).unwrap();
    assert_eq!((bart.forced_bos_token_id, bart.decoder_start_token_id, bart.pad_token_id), (Some(0), Some(2), Some(1)));
    let model = plinth_models::load_seq2seq(&fixture("tiny-bart")).unwrap();
    // No max length anywhere: transformers' 20 new tokens + the start token.
    assert_eq!(bart.resolved_max_length(model.info()), 21);
    let missing = Seq2SeqGeneration::from_dir(Path::new("/nonexistent/model")).unwrap_err().to_string();
    assert!(missing.contains("config.json"), "{missing}");
}
