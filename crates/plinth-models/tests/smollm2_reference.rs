//! The real SmolLM2-135M-Instruct Q4_1 GGUF, teacher-forced on a committed passage (501
//! tokens), against two references made by scripts/make_fixtures.py from the same GGUF:
//!
//! - Hugging Face transformers, weights dequantized to f32 (fixtures/smollm2/reference.json):
//!   the reference for plinth's prompt (prefill) path, which also multiplies in f32.
//! - llama.cpp through llama-cpp-python (fixtures/smollm2/reference_llamacpp.json): the
//!   reference for plinth's single-token decode path, which like llama.cpp keeps weights
//!   quantized and quantizes activations to 8 bits.
//!
//! Tolerances: prompt path top-1 next-token agreement ≥ 97 % and perplexity within 2 % of
//! transformers (measured: 100 %, +0.00 %). The decode path is bounded by how well two 8-bit
//! activation schemes can agree on this passage: llama.cpp itself agrees with transformers on
//! only 96.0 % of top-1 tokens here (perplexity 36.30 vs 36.20, many near-ties at perplexity
//! 36), so the decode path must agree with llama.cpp on ≥ 93 % and keep perplexity within 1 %
//! of llama.cpp and 2 % of transformers (measured: 94.8 %, +0.06 %).

use plinth_io::fetch::ModelLocation;
use plinth_models::{load_decoder, Decoder};
use plinth_testutil::{fixture, smollm2_gguf};

struct Reference {
    ids: Vec<u32>,
    top1: Vec<u32>,
    ppl: f64,
}

fn reference(name: &str) -> Reference {
    let text = std::fs::read_to_string(fixture(&format!("smollm2/{name}"))).unwrap();
    let r: serde_json::Value = serde_json::from_str(&text).unwrap();
    let u32s = |k: &str| r[k].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect::<Vec<_>>();
    Reference { ids: u32s("input_ids"), top1: u32s("top1"), ppl: r["ppl"].as_f64().unwrap() }
}

/// (top-1 agreement with `r`, perplexity) of logits rows predicting `ids[1..]`.
fn score(logits: &[Vec<f32>], ids: &[u32], top1: &[u32]) -> (f64, f64) {
    let n = ids.len() - 1;
    let (mut agree, mut nll) = (0usize, 0.0f64);
    for i in 0..n {
        let row = &logits[i];
        let argmax = row.iter().enumerate().fold((0, f32::MIN), |b, (j, &x)| if x > b.1 { (j, x) } else { b }).0;
        agree += (argmax as u32 == top1[i]) as usize;
        let max = row.iter().cloned().fold(f32::MIN, f32::max) as f64;
        let lse = max + row.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln();
        nll += lse - row[ids[i + 1] as usize] as f64;
    }
    (agree as f64 / n as f64, (nll / n as f64).exp())
}

fn model() -> Box<dyn Decoder> {
    load_decoder(&ModelLocation::Gguf(smollm2_gguf())).unwrap().model
}

fn check(what: &str, (agreement, ppl): (f64, f64), r: &Reference, min_agreement: f64, ppl_tol: f64) {
    println!("{what}: top-1 agreement {agreement:.4}; perplexity {ppl:.4} vs {:.4} ({:+.2}%)", r.ppl, (ppl / r.ppl - 1.0) * 100.0);
    assert!(agreement >= min_agreement, "{what}: top-1 agreement {agreement:.4} < {min_agreement}");
    assert!((ppl / r.ppl - 1.0).abs() <= ppl_tol, "{what}: perplexity {ppl:.4} not within {ppl_tol} of {:.4}", r.ppl);
}

#[test]
fn prompt_path_matches_transformers() {
    let r = reference("reference.json");
    assert!(r.ids.len() >= 300, "passage too short for a meaningful test");
    let m = model();
    let mut cache = m.new_cache();
    let logits = m.forward(&r.ids, &mut cache, true).unwrap().to_vec2::<f32>().unwrap();
    check("prefill vs transformers", score(&logits, &r.ids, &r.top1), &r, 0.97, 0.02);
}

#[test]
fn decode_path_matches_llama_cpp_and_transformers() {
    let lc = reference("reference_llamacpp.json");
    let hf = reference("reference.json");
    assert_eq!(lc.ids, hf.ids);
    let m = model();
    let mut cache = m.new_cache();
    // One token per forward: the quantized single-row path that generation uses.
    let logits: Vec<Vec<f32>> = lc
        .ids
        .iter()
        .map(|&id| m.forward(&[id], &mut cache, false).unwrap().squeeze(0).unwrap().to_vec1::<f32>().unwrap())
        .collect();
    check("decode vs llama.cpp", score(&logits, &lc.ids, &lc.top1), &lc, 0.93, 0.01);
    check("decode vs transformers", score(&logits, &hf.ids, &hf.top1), &hf, 0.93, 0.02);
}
