//! The real SmolLM2-135M-Instruct Q4_1 GGUF, teacher-forced on a committed passage, against
//! Hugging Face transformers loading the same GGUF (dequantized to f32; see
//! fixtures/smollm2/reference.json for versions). plinth keeps the weights quantized and
//! quantizes activations to 8 bits inside the matmuls, so it is not bit-identical; the
//! tolerances are: top-1 next-token agreement ≥ 97%, perplexity within 2%.

use plinth_io::fetch::ModelLocation;
use plinth_models::load_decoder;
use plinth_testutil::{fixture, smollm2_gguf};

#[test]
fn teacher_forced_top1_and_perplexity_match_transformers() {
    let text = std::fs::read_to_string(fixture("smollm2/reference.json")).unwrap();
    let r: serde_json::Value = serde_json::from_str(&text).unwrap();
    let ids: Vec<u32> = r["input_ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
    let top1: Vec<u32> = r["top1"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
    let ref_ppl = r["ppl"].as_f64().unwrap();
    assert!(ids.len() >= 300, "passage too short for a meaningful test");

    let m = load_decoder(&ModelLocation::Gguf(smollm2_gguf())).unwrap().model;
    let mut cache = m.new_cache();
    let logits = m.forward(&ids, &mut cache, true).unwrap().to_vec2::<f32>().unwrap();
    let n = ids.len() - 1;
    let mut agree = 0;
    let mut nll = 0.0f64;
    for i in 0..n {
        let row = &logits[i];
        let argmax = row.iter().enumerate().fold((0, f32::MIN), |b, (j, &x)| if x > b.1 { (j, x) } else { b }).0;
        agree += (argmax as u32 == top1[i]) as usize;
        let max = row.iter().cloned().fold(f32::MIN, f32::max) as f64;
        let lse = max + row.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln();
        nll += lse - row[ids[i + 1] as usize] as f64;
    }
    let agreement = agree as f64 / n as f64;
    let ppl = (nll / n as f64).exp();
    println!("top-1 agreement {:.4} over {n} positions; perplexity {ppl:.4} vs reference {ref_ppl:.4}", agreement);
    assert!(agreement >= 0.97, "top-1 agreement {agreement:.4} < 0.97");
    assert!((ppl / ref_ppl - 1.0).abs() <= 0.02, "perplexity {ppl:.4} not within 2% of {ref_ppl:.4}");
}
