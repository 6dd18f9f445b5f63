//! Logits parity with Hugging Face transformers on a tiny random-weight Llama
//! (fixtures/tiny-llama, made by scripts/make_fixtures.py). Tolerance: max |Δ| ≤ 1e-4 in f32,
//! for the safetensors and the GGUF copy of the same weights, full prompt and token by token.

use candle_core::{safetensors, Device, Tensor};
use plinth_io::fetch::ModelLocation;
use plinth_models::{load_decoder, Decoder};
use plinth_testutil::{assert_close, fixture};

const TOL: f32 = 1e-4;

struct Reference {
    ids: Vec<u32>,
    logits: Vec<Vec<f32>>,
    logits_decode: Vec<Vec<f32>>,
}

fn reference() -> Reference {
    let t = safetensors::load(fixture("tiny-llama/reference.safetensors"), &Device::Cpu).unwrap();
    let ids = t["input_ids"].flatten_all().unwrap().to_vec1::<i64>().unwrap().into_iter().map(|i| i as u32).collect();
    let rows = |n: &str| t[n].to_vec2::<f32>().unwrap();
    Reference { ids, logits: rows("logits"), logits_decode: rows("logits_decode") }
}

fn models() -> Vec<(&'static str, Box<dyn Decoder>)> {
    let dir = fixture("tiny-llama");
    vec![
        ("safetensors", load_decoder(&ModelLocation::Dir(dir.clone())).unwrap().model),
        ("gguf", load_decoder(&ModelLocation::Gguf(dir.join("model.gguf"))).unwrap().model),
    ]
}

fn rows(t: &Tensor) -> Vec<Vec<f32>> {
    t.to_vec2::<f32>().unwrap()
}

#[test]
fn full_prompt_logits_match_transformers() {
    let r = reference();
    for (fmt, m) in models() {
        let mut cache = m.new_cache();
        let got = rows(&m.forward(&r.ids, &mut cache, true).unwrap());
        assert_eq!(got.len(), r.ids.len());
        for (i, (g, w)) in got.iter().zip(&r.logits).enumerate() {
            assert_close(&format!("{fmt} position {i}"), g, w, TOL);
        }
        assert_eq!(cache.len(), r.ids.len());
    }
}

#[test]
fn kv_cache_decoding_matches_full_recompute_and_transformers() {
    let r = reference();
    for (fmt, m) in models() {
        let mut cache = m.new_cache();
        for (i, &id) in r.ids.iter().enumerate() {
            let step = rows(&m.forward(&[id], &mut cache, false).unwrap()).remove(0);
            assert_close(&format!("{fmt} step {i} vs transformers (cached)"), &step, &r.logits_decode[i], TOL);
            assert_close(&format!("{fmt} step {i} vs full prompt"), &step, &r.logits[i], TOL);
        }
    }
}

#[test]
fn chunked_prefill_equals_one_pass() {
    let r = reference();
    for (fmt, m) in models() {
        let mut cache = m.new_cache();
        let a = rows(&m.forward(&r.ids[..10], &mut cache, true).unwrap());
        let b = rows(&m.forward(&r.ids[10..], &mut cache, true).unwrap());
        for (i, g) in a.iter().chain(b.iter()).enumerate() {
            assert_close(&format!("{fmt} chunked position {i}"), g, &r.logits[i], TOL);
        }
    }
}

#[test]
fn last_only_logits_equal_last_row() {
    let r = reference();
    let (_, m) = models().remove(0);
    let mut cache = m.new_cache();
    let last = rows(&m.forward(&r.ids, &mut cache, false).unwrap());
    assert_eq!(last.len(), 1);
    assert_close("last row", &last[0], r.logits.last().unwrap(), TOL);
}

#[test]
fn context_overflow_is_an_error_not_a_panic() {
    let (_, m) = models().remove(1);
    let ctx = m.info().context_length;
    let ids = vec![1u32; ctx + 1];
    let mut cache = m.new_cache();
    let e = m.forward(&ids, &mut cache, false).unwrap_err().to_string();
    assert!(e.contains("context window"), "{e}");
}
