//! LoRA training against PyTorch + PEFT on the tiny Llama (`fixtures/tiny-llama-lora`, made
//! by `scripts/make_lora_fixtures.py`): the adapted model's logits, the loss, the gradient of
//! every LoRA matrix, three AdamW steps, and the PEFT file round trip.

use std::collections::HashMap;

use candle_core::{safetensors, Device, Tensor};
use plinth_io::fetch::ModelLocation;
use plinth_models::{load_decoder, Decoder};
use plinth_testutil::{assert_close, fixture};
use plinth_train::peft::QkLayout;
use plinth_train::{causal_lm_loss, peft, AdamW, AdamWConfig, LoraSet};

/// Logits and gradients (f32 end to end).
const TOL: f32 = 1e-4;
/// Losses of the optimizer steps.
const LOSS_TOL: f32 = 1e-5;

fn reference() -> HashMap<String, Tensor> {
    safetensors::load(fixture("tiny-llama-lora").join("reference.safetensors"), &Device::Cpu).unwrap()
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

fn batch(r: &HashMap<String, Tensor>) -> Vec<(Vec<u32>, Vec<i64>)> {
    let ids = r["input_ids"].to_vec2::<i64>().unwrap();
    let labels = r["labels"].to_vec2::<i64>().unwrap();
    ids.into_iter().map(|row| row.into_iter().map(|i| i as u32).collect()).zip(labels).collect()
}

fn model() -> Box<dyn Decoder> {
    load_decoder(&ModelLocation::Dir(fixture("tiny-llama"))).unwrap().model
}

fn logits(m: &dyn Decoder, ids: &[u32]) -> Vec<f32> {
    flat(&m.forward(ids, &mut m.new_cache(), true).unwrap())
}

#[test]
fn adapter_logits_loss_gradients_and_three_adamw_steps_match_peft() {
    let r = reference();
    let m = model();
    let b = batch(&r);
    let t = b[0].0.len();
    let vocab = m.info().vocab_size;
    // The base alone, then with the PEFT adapter attached.
    for (i, (ids, _)) in b.iter().enumerate() {
        assert_close(&format!("base logits row {i}"), &logits(m.as_ref(), ids), &flat(&r["logits_base"].get(i).unwrap()), TOL);
    }
    let set = peft::load(&fixture("tiny-llama-lora"), m.as_ref(), QkLayout::Hf).unwrap();
    assert_eq!((set.config.r, set.entries.len()), (4, 14));
    set.attach(m.as_ref()).unwrap();
    for (i, (ids, _)) in b.iter().enumerate() {
        assert_close(&format!("adapter logits row {i}"), &logits(m.as_ref(), ids), &flat(&r["logits_adapter"].get(i).unwrap()), TOL);
    }
    assert_eq!(flat(&r["logits_adapter"]).len(), 2 * t * vocab);

    let vars = set.vars();
    let names: Vec<String> = set.entries.iter().flat_map(|e| [format!("{}.lora_A.weight", e.name), format!("{}.lora_B.weight", e.name)]).collect();
    let want_losses = flat(&r["losses"]);
    let mut opt = AdamW::new(&vars, AdamWConfig { lr: 1e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01 }).unwrap();
    for (step, &want) in want_losses.iter().enumerate() {
        let (loss, _) = causal_lm_loss(m.as_ref(), &b).unwrap();
        let got = loss.to_scalar::<f32>().unwrap();
        println!("step {step}: loss {got:.6} (PEFT {want:.6})");
        assert!((got - want).abs() <= LOSS_TOL, "loss {step}: {got} vs {want}");
        if step == 3 {
            break;
        }
        let grads = loss.backward().unwrap();
        let grads: Vec<Tensor> = vars.iter().map(|v| grads.get(v.as_tensor()).cloned().unwrap_or_else(|| v.as_tensor().zeros_like().unwrap())).collect();
        if step == 0 {
            let mut worst = 0f32;
            for (n, g) in names.iter().zip(&grads) {
                let w = flat(&r[&format!("grad.base_model.model.{n}")]);
                worst = worst.max(plinth_testutil::max_abs_diff(&flat(g), &w).0);
                assert_close(&format!("gradient of {n}"), &flat(g), &w, TOL);
            }
            println!("gradients: max |Δ| {worst:.2e}");
        }
        opt.step(&vars, &grads, 1e-2).unwrap();
    }
    for (n, v) in names.iter().zip(&vars) {
        assert_close(&format!("{n} after 3 steps"), &flat(v.as_tensor()), &flat(&r[&format!("after.base_model.model.{n}")]), TOL);
    }
}

#[test]
fn peft_round_trip_and_detach() {
    let m = model();
    let set = peft::load(&fixture("tiny-llama-lora"), m.as_ref(), QkLayout::Hf).unwrap();
    let dir = std::env::temp_dir().join(format!("plinth-peft-rt-{}", std::process::id()));
    peft::save(&set, &dir, "fixtures/tiny-llama", QkLayout::Hf).unwrap();
    let again = peft::load(&dir, m.as_ref(), QkLayout::Hf).unwrap();
    assert_eq!(again.config.r, set.config.r);
    assert_eq!(again.config.scale(), set.config.scale());
    for (a, b) in set.entries.iter().zip(&again.entries) {
        assert_eq!(a.name, b.name);
        assert_eq!(flat(a.a.as_tensor()), flat(b.a.as_tensor()));
        assert_eq!(flat(a.b.as_tensor()), flat(b.b.as_tensor()));
    }
    let r = reference();
    let ids: Vec<u32> = r["input_ids"].get(0).unwrap().to_vec1::<i64>().unwrap().into_iter().map(|i| i as u32).collect();
    again.attach(m.as_ref()).unwrap();
    assert_close("reloaded adapter", &logits(m.as_ref(), &ids), &flat(&r["logits_adapter"].get(0).unwrap()), TOL);
    LoraSet::detach(m.as_ref()).unwrap();
    assert_close("detached", &logits(m.as_ref(), &ids), &flat(&r["logits_base"].get(0).unwrap()), TOL);
    // A fresh adapter (B = 0) changes nothing.
    let fresh = LoraSet::init(m.as_ref(), Default::default(), 7).unwrap();
    fresh.attach(m.as_ref()).unwrap();
    assert_close("fresh adapter", &logits(m.as_ref(), &ids), &flat(&r["logits_base"].get(0).unwrap()), TOL);
    std::fs::remove_dir_all(&dir).unwrap();
}
