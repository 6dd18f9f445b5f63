//! Serving adapters by slot: a sequence whose KV cache names a slot gets that adapter, others
//! the base model, also when both run in one batch.

use candle_core::{safetensors, Device};
use plinth_io::fetch::ModelLocation;
use plinth_models::load_decoder;
use plinth_testutil::{assert_close, fixture};
use plinth_train::{peft, LoraSet};

const TOL: f32 = 1e-4;

#[test]
fn slots_choose_the_adapter_per_sequence() {
    let r = safetensors::load(fixture("tiny-llama-lora").join("reference.safetensors"), &Device::Cpu).unwrap();
    let ids: Vec<u32> = r["input_ids"].get(0).unwrap().to_vec1::<i64>().unwrap().into_iter().map(|i| i as u32).collect();
    let want_base = r["logits_base"].get(0).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let want_adapter = r["logits_adapter"].get(0).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let m = load_decoder(&ModelLocation::Dir(fixture("tiny-llama"))).unwrap().model;
    let set = peft::load(&fixture("tiny-llama-lora"), m.as_ref(), peft::QkLayout::Hf).unwrap();
    set.install(m.as_ref(), 1).unwrap();

    let run = |slot: Option<usize>| {
        let mut c = m.new_cache();
        c.adapter = slot;
        m.forward(&ids, &mut c, true).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap()
    };
    assert_close("slot 1", &run(Some(1)), &want_adapter, TOL);
    assert_close("no slot", &run(None), &want_base, TOL);
    assert_close("empty slot 3", &run(Some(3)), &want_base, TOL);

    // A batched decode step mixing both equals each run alone.
    let prefix = &ids[..10];
    let mut caches: Vec<_> = [Some(1), None, Some(1)]
        .into_iter()
        .map(|s| {
            let mut c = m.new_cache();
            c.adapter = s;
            m.forward(prefix, &mut c, false).unwrap();
            c
        })
        .collect();
    let step = [ids[10], ids[10], ids[11]];
    let mut refs: Vec<&mut _> = caches.iter_mut().collect();
    let batched = m.forward_batch(&step, &mut refs).unwrap().to_vec2::<f32>().unwrap();
    for (i, (slot, tok)) in [(Some(1), ids[10]), (None, ids[10]), (Some(1), ids[11])].into_iter().enumerate() {
        let mut c = m.new_cache();
        c.adapter = slot;
        m.forward(prefix, &mut c, false).unwrap();
        let alone = m.forward(&[tok], &mut c, false).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_close(&format!("batched row {i}"), &batched[i], &alone, TOL);
    }

    LoraSet::uninstall(m.as_ref(), 1).unwrap();
    assert_close("uninstalled", &run(Some(1)), &want_base, TOL);
}
