//! Shared by the per-architecture parity tests: load a tiny fixture, run the whole prompt
//! and then token by token through the KV cache, and compare both with transformers' logits.

use candle_core::{safetensors, Device};
use plinth_io::fetch::ModelLocation;
use plinth_models::load_decoder;
use plinth_testutil::{assert_close, fixture};

/// The tolerance of every tiny-model parity test (f32 logits, max |Δ|).
#[allow(dead_code)]
pub const TOL: f32 = 1e-4;

/// Loads `fixtures/<dir>` and checks it against its `reference.safetensors`.
pub fn check_parity(dir: &str, tol: f32) {
    check_parity_of(dir, ModelLocation::Dir(fixture(dir)), tol)
}

/// Checks the model at `loc` against `fixtures/<dir>/reference.safetensors`.
pub fn check_parity_of(dir: &str, loc: ModelLocation, tol: f32) {
    let path = fixture(dir);
    let r = safetensors::load(path.join("reference.safetensors"), &Device::Cpu).unwrap();
    let ids: Vec<u32> = r["input_ids"].flatten_all().unwrap().to_vec1::<i64>().unwrap().into_iter().map(|i| i as u32).collect();
    let want = r["logits"].to_vec2::<f32>().unwrap();
    let want_decode = r["logits_decode"].to_vec2::<f32>().unwrap();

    let m = load_decoder(&loc).unwrap_or_else(|e| panic!("{dir}: {e}")).model;
    let mut cache = m.new_cache();
    let got = m.forward(&ids, &mut cache, true).unwrap().to_vec2::<f32>().unwrap();
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_close(&format!("{dir} prompt position {i}"), g, w, tol);
    }
    let mut cache = m.new_cache();
    for (i, &id) in ids.iter().enumerate() {
        let step = m.forward(&[id], &mut cache, false).unwrap().to_vec2::<f32>().unwrap().remove(0);
        assert_close(&format!("{dir} cached step {i} vs transformers decode"), &step, &want_decode[i], tol);
        assert_close(&format!("{dir} cached step {i} vs full prompt"), &step, &want[i], tol);
    }
}

