//! Tiny random encoder-decoders (BART, Marian, T5) against transformers
//! (`fixtures/tiny-<name>/reference.safetensors`, written by
//! `scripts/make_seq2seq_fixtures.py`): the encoder's last hidden state and the
//! teacher-forced logits of a padded batch; the same logits one token per decode call through
//! the cache; a row run alone equals its row in the padded batch; reordering the cache
//! reorders the next step's logits. Broken directories give errors that say what is wrong.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{safetensors, DType, Device, Tensor};
use plinth_models::{is_seq2seq_type, load_seq2seq, Seq2Seq};
use plinth_testutil::{assert_close, fixture, max_abs_diff};

/// Max |Δ| against transformers (f32 encoder hidden states and logits), and between two
/// plinth runs that differ only in batching or in how many decoder tokens one call feeds.
const TOL: f32 = 1e-4;
/// The same for tiny-t5, whose f32 logits are ill-conditioned: its attention scores are
/// unscaled (T5) on a doubled init, and the decoder's residual stream reaches ~90 before the
/// final norm. transformers' own f32 logits are 1.3e-4 from its f64 forward pass of the same
/// weights (and a rerun differs from the committed reference by 7.4e-5); ours are 1.8e-4 from
/// that f64 pass. The encoder output stays within 2.1e-5. tiny-t5-calm, the same
/// architecture with T5's own init, is held to [`TOL`]; tiny-t5 stays for its generation
/// references (a beam that ends on a chosen EOS).
const T5_TOL: f32 = 3e-4;

struct Case {
    model: Box<dyn Seq2Seq>,
    r: HashMap<String, Tensor>,
}

impl Case {
    fn open(name: &str) -> Self {
        let dir = fixture(name);
        let model = load_seq2seq(&dir).unwrap_or_else(|e| panic!("{name}: {e}"));
        let r = safetensors::load(dir.join("reference.safetensors"), &Device::Cpu).unwrap();
        Case { model, r }
    }

    /// An i64 reference tensor as u32 (the trait's id dtype).
    fn ids(&self, key: &str) -> Tensor {
        self.r[key].to_dtype(DType::U32).unwrap()
    }

    fn f32s(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    }

    fn want(&self, key: &str) -> Vec<f32> {
        Self::f32s(&self.r[key])
    }

    /// Teacher-forced logits `[b, t, vocab]` of `dec` in one decode call.
    fn one_shot(&self, ids: &Tensor, mask: &Tensor, dec: &Tensor) -> Tensor {
        let enc = self.model.encode(ids, mask).unwrap();
        let mut cache = self.model.new_cache();
        let logits = self.model.decode(dec, &enc, mask, &mut cache).unwrap();
        assert_eq!(cache.len(), dec.dim(1).unwrap(), "the cache advanced by the chunk length");
        logits
    }
}

/// Encoder hidden states and teacher-forced logits against transformers.
fn check_parity(name: &str, tol: f32) {
    let c = Case::open(name);
    let (ids, mask, dec) = (c.ids("input_ids"), c.ids("attention_mask"), c.ids("decoder_input_ids"));
    let enc = c.model.encode(&ids, &mask).unwrap();
    let (d, _) = max_abs_diff(&Case::f32s(&enc), &c.want("encoder_last_hidden_state"));
    // Every fixture's encoder output meets the strict tolerance; only T5's logits need more.
    println!("{name}: encoder last hidden state max |Δ| = {d:e} (tolerance {TOL:e})");
    assert_close(&format!("{name} encoder hidden"), &Case::f32s(&enc), &c.want("encoder_last_hidden_state"), TOL);

    let logits = c.one_shot(&ids, &mask, &dec);
    assert_eq!(logits.dims(), c.r["logits"].dims());
    let (d, _) = max_abs_diff(&Case::f32s(&logits), &c.want("logits"));
    println!("{name}: teacher-forced logits max |Δ| = {d:e} (tolerance {tol:e})");
    assert_close(&format!("{name} logits"), &Case::f32s(&logits), &c.want("logits"), tol);
}

/// One token per decode call through the cache gives the one-shot logits (and so
/// transformers').
fn check_incremental(name: &str, tol: f32) {
    let c = Case::open(name);
    let (ids, mask, dec) = (c.ids("input_ids"), c.ids("attention_mask"), c.ids("decoder_input_ids"));
    let one_shot = c.one_shot(&ids, &mask, &dec);
    let enc = c.model.encode(&ids, &mask).unwrap();
    let mut cache = c.model.new_cache();
    let t = dec.dim(1).unwrap();
    let mut worst = 0f32;
    for i in 0..t {
        let step = c.model.decode(&dec.narrow(1, i, 1).unwrap(), &enc, &mask, &mut cache).unwrap();
        assert_eq!(cache.len(), i + 1);
        assert!(cache.cross_kv.iter().all(Option::is_some), "cross-attention K/V cached after the first step");
        let got = Case::f32s(&step);
        let want = Case::f32s(&one_shot.narrow(1, i, 1).unwrap());
        worst = worst.max(max_abs_diff(&got, &want).0);
        assert_close(&format!("{name} step {i} vs one-shot"), &got, &want, tol);
        let reference = Case::f32s(&c.r["logits"].narrow(1, i, 1).unwrap());
        assert_close(&format!("{name} step {i} vs transformers"), &got, &reference, tol);
    }
    println!("{name}: incremental vs one-shot logits max |Δ| = {worst:e} (tolerance {tol:e})");
}

/// Row 1 (padded in the batch) run alone, unpadded, equals its row of the batch.
fn check_row_alone(name: &str, tol: f32) {
    let c = Case::open(name);
    let (ids, mask, dec) = (c.ids("input_ids"), c.ids("attention_mask"), c.ids("decoder_input_ids"));
    let batch = c.one_shot(&ids, &mask, &dec);
    let real = mask.get(1).unwrap().to_vec1::<u32>().unwrap().iter().filter(|&&m| m == 1).count();
    assert!(real < ids.dim(1).unwrap(), "row 1 of the fixture is padded");
    let ids1 = ids.narrow(0, 1, 1).unwrap().narrow(1, 0, real).unwrap();
    let mask1 = mask.narrow(0, 1, 1).unwrap().narrow(1, 0, real).unwrap();
    let alone = c.one_shot(&ids1, &mask1, &dec.narrow(0, 1, 1).unwrap());
    let (got, want) = (Case::f32s(&alone), Case::f32s(&batch.narrow(0, 1, 1).unwrap()));
    println!("{name}: row alone vs padded batch logits max |Δ| = {:e} (tolerance {tol:e})", max_abs_diff(&got, &want).0);
    assert_close(&format!("{name} row 1 alone"), &got, &want, tol);
}

/// Swapping the cache's rows swaps the next step's logits.
fn check_reorder(name: &str, tol: f32) {
    let c = Case::open(name);
    let (ids, mask, dec) = (c.ids("input_ids"), c.ids("attention_mask"), c.ids("decoder_input_ids"));
    let enc = c.model.encode(&ids, &mask).unwrap();
    let t = dec.dim(1).unwrap();
    let (prefix, next) = (dec.narrow(1, 0, t - 1).unwrap(), dec.narrow(1, t - 1, 1).unwrap().contiguous().unwrap());
    let mut cache = c.model.new_cache();
    c.model.decode(&prefix, &enc, &mask, &mut cache).unwrap();
    let straight = c.model.decode(&next, &enc, &mask, &mut cache.clone()).unwrap();

    let swap = Tensor::new(&[1u32, 0], &Device::Cpu).unwrap();
    cache.reorder(&[1, 0]).unwrap();
    let (enc_s, mask_s, next_s) =
        (enc.index_select(&swap, 0).unwrap(), mask.index_select(&swap, 0).unwrap(), next.index_select(&swap, 0).unwrap());
    let swapped = c.model.decode(&next_s, &enc_s, &mask_s, &mut cache).unwrap();
    for row in 0..2 {
        let got = Case::f32s(&swapped.get(row).unwrap());
        let want = Case::f32s(&straight.get(1 - row).unwrap());
        assert_close(&format!("{name} reordered row {row}"), &got, &want, tol);
    }
    // The rows differ, so the check above could fail if reorder did nothing.
    let (d, _) = max_abs_diff(&Case::f32s(&straight.get(0).unwrap()), &Case::f32s(&straight.get(1).unwrap()));
    assert!(d > 1e-2, "{name}: the two rows' logits should differ (max |Δ| {d:e})");
}

/// Greedy decoding, one token per call through the cache, reproduces transformers' batched
/// `generate` output (`greedy`, 10 new tokens). The logits processors that generate applied
/// are redone here from the fixture README: `forced_bos` (BART: token 0 first), `bad_words`
/// (Marian: the pad id 127 never chosen), `forced_eos` (BART, Marian: EOS in the last slot).
/// No fixture row finishes early, so there is no finished-row padding to redo.
fn check_greedy(name: &str) {
    let c = Case::open(name);
    let (ids, mask) = (c.ids("input_ids"), c.ids("attention_mask"));
    let want = c.r["greedy"].to_vec2::<i64>().unwrap();
    let (forced_bos, banned, forced_eos) = match name {
        "tiny-bart" => (Some(0u32), None, Some(2u32)),
        "tiny-marian" => (None, Some(127usize), Some(0u32)),
        _ => (None, None, None),
    };
    let enc = c.model.encode(&ids, &mask).unwrap();
    let mut cache = c.model.new_cache();
    let start = c.model.info().decoder_start_token_id;
    let mut out: Vec<Vec<u32>> = vec![vec![start]; 2];
    let new_tokens = want[0].len() - 1;
    for step in 0..new_tokens {
        let last: Vec<u32> = out.iter().map(|r| *r.last().unwrap()).collect();
        let next = Tensor::from_vec(last, (2, 1), &Device::Cpu).unwrap();
        let logits = c.model.decode(&next, &enc, &mask, &mut cache).unwrap().squeeze(1).unwrap().to_vec2::<f32>().unwrap();
        for (row, l) in out.iter_mut().zip(logits) {
            let forced = if step == 0 { forced_bos } else { None }.or(if step + 1 == new_tokens { forced_eos } else { None });
            let tok = forced.unwrap_or_else(|| {
                let best = l.iter().enumerate().filter(|(i, _)| Some(*i) != banned).max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0;
                best as u32
            });
            row.push(tok);
        }
    }
    for (row, (got, want)) in out.iter().zip(&want).enumerate() {
        let want: Vec<u32> = want.iter().map(|&x| x as u32).collect();
        assert_eq!(got, &want, "{name} greedy row {row}");
    }
}

macro_rules! seq2seq_tests {
    ($($module:ident => $name:literal, $tol:expr);* $(;)?) => {$(
        mod $module {
            #[test]
            fn matches_transformers() {
                super::check_parity($name, $tol);
            }
            #[test]
            fn incremental_decode_matches_one_shot() {
                super::check_incremental($name, $tol);
            }
            #[test]
            fn row_alone_matches_padded_batch() {
                super::check_row_alone($name, $tol);
            }
            #[test]
            fn greedy_matches_generate() {
                super::check_greedy($name);
            }
            #[test]
            fn reorder_swaps_rows() {
                super::check_reorder($name, $tol);
            }
        }
    )*};
}

seq2seq_tests! {
    bart => "tiny-bart", super::TOL;
    marian => "tiny-marian", super::TOL;
    t5 => "tiny-t5", super::T5_TOL;
    t5_calm => "tiny-t5-calm", super::TOL;
}

/// A private copy of a fixture directory that a test may break.
fn copy_fixture(name: &str, tag: &str) -> PathBuf {
    let src = fixture(name);
    let dst = std::env::temp_dir().join(format!("plinth-s2s-bad-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dst);
    std::fs::create_dir_all(&dst).unwrap();
    for e in std::fs::read_dir(&src).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, dst.join(p.file_name().unwrap())).unwrap();
    }
    dst
}

fn load_err(dir: &Path) -> String {
    match load_seq2seq(dir) {
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

/// Rewrites `model.safetensors` without the tensor `drop`.
fn drop_tensor(dir: &Path, drop: &str) {
    let p = dir.join("model.safetensors");
    let mut t = safetensors::load(&p, &Device::Cpu).unwrap();
    assert!(t.remove(drop).is_some(), "{drop} is in the fixture");
    safetensors::save(&t, &p).unwrap();
}

#[test]
fn seq2seq_types_are_known() {
    for t in ["bart", "mbart", "marian", "t5"] {
        assert!(is_seq2seq_type(t), "{t}");
    }
    assert!(!is_seq2seq_type("bert") && !is_seq2seq_type("llama"));
}

#[test]
fn unknown_model_type_lists_supported() {
    let d = copy_fixture("tiny-bart", "type");
    edit_config(&d, |c| {
        c.insert("model_type".into(), "pegasus9".into());
    });
    let e = load_err(&d);
    assert!(e.contains("unknown architecture 'pegasus9'") && e.contains("bart"), "{e}");
}

#[test]
fn missing_tensor_is_named() {
    let d = copy_fixture("tiny-bart", "tensor");
    drop_tensor(&d, "model.decoder.layers.1.encoder_attn.k_proj.weight");
    let e = load_err(&d);
    assert!(e.contains("missing") && e.contains("model.decoder.layers.1.encoder_attn.k_proj.weight"), "{e}");
}

#[test]
fn missing_tensor_is_named_t5_and_marian() {
    for (name, tensor) in
        [("tiny-t5", "decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"), ("tiny-marian", "model.shared.weight")]
    {
        let d = copy_fixture(name, "tensor2");
        drop_tensor(&d, tensor);
        let e = load_err(&d);
        assert!(e.contains("missing") && e.contains(tensor), "{name}: {e}");
    }
}

/// The special ids and sizes the engine reads from `info()`, per fixture (README).
#[test]
fn info_has_the_special_ids() {
    for (name, arch, pad, eos, start, max_pos) in
        [("tiny-bart", "bart", 1, 2, 2, Some(64)), ("tiny-marian", "marian", 127, 0, 127, Some(64)), ("tiny-t5", "t5", 0, 1, 0, None)]
    {
        let m = load_seq2seq(&fixture(name)).unwrap();
        let i = m.info();
        assert_eq!((i.architecture.as_str(), i.pad_token_id, i.eos_token_id, i.decoder_start_token_id), (arch, pad, eos, start), "{name}");
        assert_eq!((i.vocab_size, i.d_model, i.encoder_layers, i.decoder_layers), (128, 32, 2, 2), "{name}");
        assert_eq!((i.max_source_positions, i.max_target_positions), (max_pos, max_pos), "{name}");
        assert!(i.parameters > 128 * 32, "{name}: {} parameters", i.parameters);
    }
}

#[test]
fn missing_config_field_is_named() {
    let d = copy_fixture("tiny-bart", "field");
    edit_config(&d, |c| {
        c.remove("d_model");
    });
    let e = load_err(&d);
    assert!(e.contains("config.json") && e.contains("d_model"), "{e}");
}

#[test]
fn shape_mismatch_names_tensor() {
    let d = copy_fixture("tiny-bart", "shape");
    edit_config(&d, |c| {
        c.insert("encoder_ffn_dim".into(), 48.into());
    });
    let e = load_err(&d);
    assert!(e.contains("model.encoder.layers.0.fc1.bias") && e.contains("[48]") && e.contains("[64]"), "{e}");
}

#[test]
fn bad_inputs_are_errors() {
    let c = Case::open("tiny-bart");
    let (ids, mask, dec) = (c.ids("input_ids"), c.ids("attention_mask"), c.ids("decoder_input_ids"));
    let m = &c.model;
    // A token outside the vocabulary.
    let bad = Tensor::new(&[[5u32, 128]], &Device::Cpu).unwrap();
    let e = m.encode(&bad, &Tensor::ones((1, 2), DType::U32, &Device::Cpu).unwrap()).unwrap_err().to_string();
    assert!(e.contains("128") && e.contains("vocabulary"), "{e}");
    // Mask and ids disagree.
    let e = m.encode(&ids, &mask.narrow(1, 0, 5).unwrap()).unwrap_err().to_string();
    assert!(e.contains("attention_mask"), "{e}");
    // Longer than the position table.
    let long = Tensor::zeros((1, 65), DType::U32, &Device::Cpu).unwrap();
    let e = m.encode(&long, &Tensor::ones((1, 65), DType::U32, &Device::Cpu).unwrap()).unwrap_err().to_string();
    assert!(e.contains("65") && e.contains("64"), "{e}");
    // Decoder rows that do not match the encoder output.
    let enc = m.encode(&ids, &mask).unwrap();
    let mut cache = m.new_cache();
    let e = m.decode(&dec.narrow(0, 0, 1).unwrap(), &enc, &mask, &mut cache).unwrap_err().to_string();
    assert!(e.contains("encoder_hidden"), "{e}");
    assert!(cache.is_empty(), "a refused call leaves the cache as it was");
}
