//! Merging LoRA adapters into Hugging Face directories (`plinth_train::merge`), from a
//! safetensors base and from a GGUF base, against PEFT's `merge_and_unload` logits in
//! `fixtures/tiny-llama-lora/reference.safetensors`; the q/k row order of adapters on a Llama
//! GGUF (llama.cpp permutes those rows); and failures that leave nothing behind.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{safetensors as st, DType, Device, Tensor};
use plinth_io::fetch::ModelLocation;
use plinth_models::{load_decoder, Decoder};
use plinth_testutil::{assert_close, fixture};
use plinth_train::merge::{export, merge};
use plinth_train::peft::{self, gguf_qk_permutation, QkLayout};
use plinth_train::LoraSet;

/// f32 end to end.
const TOL: f32 = 1e-4;

fn reference() -> HashMap<String, Tensor> {
    st::load(fixture("tiny-llama-lora").join("reference.safetensors"), &Device::Cpu).unwrap()
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_dtype(DType::F32).unwrap().to_vec1::<f32>().unwrap()
}

fn rows(r: &HashMap<String, Tensor>) -> Vec<Vec<u32>> {
    r["input_ids"].to_vec2::<i64>().unwrap().into_iter().map(|row| row.into_iter().map(|i| i as u32).collect()).collect()
}

fn logits(m: &dyn Decoder, ids: &[u32]) -> Vec<f32> {
    flat(&m.forward(ids, &mut m.new_cache(), true).unwrap())
}

/// Every row's logits against `want` (`[rows, T, vocab]`).
fn check(what: &str, m: &dyn Decoder, r: &HashMap<String, Tensor>, want: &str) {
    for (i, ids) in rows(r).iter().enumerate() {
        assert_close(&format!("{what}, row {i}"), &logits(m, ids), &flat(&r[want].get(i).unwrap()), TOL);
    }
}

/// A fresh, empty scratch directory for one test.
fn scratch(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("merge-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

fn hf_base() -> ModelLocation {
    ModelLocation::Dir(fixture("tiny-llama"))
}

fn gguf_base() -> ModelLocation {
    ModelLocation::Gguf(fixture("tiny-llama/model.gguf"))
}

fn tensors(dir: &Path) -> HashMap<String, Tensor> {
    st::load(dir.join("model.safetensors"), &Device::Cpu).unwrap()
}

fn assert_same_tensors(what: &str, got: &HashMap<String, Tensor>, want: &HashMap<String, Tensor>, tol: f32) {
    let mut a: Vec<&String> = got.keys().collect();
    let mut b: Vec<&String> = want.keys().collect();
    a.sort();
    b.sort();
    assert_eq!(a, b, "{what}: tensor names");
    for n in a {
        assert_eq!(got[n].dims(), want[n].dims(), "{what}: {n}");
        assert_close(&format!("{what}: {n}"), &flat(&got[n]), &flat(&want[n]), tol);
    }
}

#[test]
fn merged_hf_directory_matches_peft_merge_and_the_attached_adapter() {
    let r = reference();
    let root = scratch("hf");
    let out = root.join("merged");
    let mut calls = Vec::new();
    let rep = merge(&hf_base(), &fixture("tiny-llama-lora"), &out, |d, t| calls.push((d, t))).unwrap();
    println!("{rep:?}");
    assert_eq!(rep.out, out);
    assert_eq!(rep.tensors, 3 + 2 * 9);
    assert_eq!(rep.merged.len(), 14);
    assert!(rep.merged.contains(&"model.layers.1.self_attn.k_proj".to_string()));
    assert_eq!(rep.files, ["config.json", "model.safetensors"]);
    assert_eq!(calls.len(), rep.tensors);
    assert_eq!(calls.last(), Some(&(rep.tensors, rep.tensors)));
    assert!(rep.notes.iter().any(|n| n.contains("no tokenizer")), "{:?}", rep.notes);
    // Nothing but the directory itself is left beside it.
    assert_eq!(entries(&root), ["merged"]);

    // What transformers needs: f32 weights, a safetensors "format" entry, the config.
    let bytes = std::fs::read(out.join("model.safetensors")).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    assert_eq!(meta.metadata().as_ref().and_then(|m| m.get("format")).map(String::as_str), Some("pt"));
    assert!(meta.tensors().values().all(|t| t.dtype == safetensors::Dtype::F32));
    let cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["model_type"], "llama");
    assert_eq!(cfg["torch_dtype"], "float32");

    let merged = load_decoder(&ModelLocation::Dir(out.clone())).unwrap().model;
    check("merged directory vs PEFT merge_and_unload", merged.as_ref(), &r, "logits_merged");
    // ... and vs the base with the adapter attached.
    let base = load_decoder(&hf_base()).unwrap().model;
    peft::load(&fixture("tiny-llama-lora"), base.as_ref(), QkLayout::Hf).unwrap().attach(base.as_ref()).unwrap();
    for ids in rows(&r) {
        assert_close("merged vs attached", &logits(merged.as_ref(), &ids), &logits(base.as_ref(), &ids), TOL);
    }
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn gguf_qk_permutation_is_llama_cpps() {
    // llama.cpp: w.reshape(heads, 2, d/2, in).swapaxes(1, 2): head 0 of 8 rows reads 0 4 1 5 2 6 3 7.
    assert_eq!(gguf_qk_permutation(16, 2).unwrap(), [0, 4, 1, 5, 2, 6, 3, 7, 8, 12, 9, 13, 10, 14, 11, 15]);
    assert!(gguf_qk_permutation(12, 4).is_err());
    // The HF weights permuted this way are the GGUF's.
    let hf = tensors(&fixture("tiny-llama"));
    let g = plinth_io::GgufFile::open(fixture("tiny-llama/model.gguf")).unwrap();
    let layout = QkLayout::GgufLlama { heads: 4, kv_heads: 2 };
    for (gg, name) in [("blk.1.attn_q.weight", "model.layers.1.self_attn.q_proj"), ("blk.1.attn_k.weight", "model.layers.1.self_attn.k_proj")] {
        let w = g.qtensor(gg, &Device::Cpu).unwrap().dequantize(&Device::Cpu).unwrap();
        let permuted = layout.permute(name, &hf[&format!("{name}.weight")]).unwrap();
        assert_eq!(flat(&permuted), flat(&w), "{name}");
        assert_eq!(flat(&layout.unpermute(name, &w).unwrap()), flat(&hf[&format!("{name}.weight")]), "{name}");
    }
    // v_proj and the MLP are not permuted.
    let v = &hf["model.layers.0.self_attn.v_proj.weight"];
    assert_eq!(flat(&layout.permute("model.layers.0.self_attn.v_proj", v).unwrap()), flat(v));
}

#[test]
fn hf_layout_adapter_on_a_gguf_base_attaches_saves_and_merges_like_on_the_hf_base() {
    let r = reference();
    let gguf = gguf_base();
    let m = load_decoder(&gguf).unwrap().model;
    let layout = QkLayout::of(&gguf, m.as_ref());
    assert_eq!(layout, QkLayout::GgufLlama { heads: 4, kv_heads: 2 });
    check("GGUF base", m.as_ref(), &r, "logits_base");

    // The PEFT adapter (Hugging Face rows) on the GGUF-loaded model: the same logits as on the
    // safetensors-loaded one, which are PEFT's.
    let set = peft::load(&fixture("tiny-llama-lora"), m.as_ref(), layout).unwrap();
    set.attach(m.as_ref()).unwrap();
    check("PEFT adapter on the GGUF base", m.as_ref(), &r, "logits_adapter");

    // Taken as it is (no permutation), the q/k deltas land on the wrong rotary rows.
    LoraSet::detach(m.as_ref()).unwrap();
    let unpermuted = peft::load(&fixture("tiny-llama-lora"), m.as_ref(), QkLayout::Hf).unwrap();
    unpermuted.attach(m.as_ref()).unwrap();
    let ids = &rows(&r)[0];
    let (d, _) = plinth_testutil::max_abs_diff(&logits(m.as_ref(), ids), &flat(&r["logits_adapter"].get(0).unwrap()));
    assert!(d > 1e-2, "the permutation should matter on this fixture (max |Δ| {d})");
    LoraSet::detach(m.as_ref()).unwrap();

    // Saved from the GGUF model, the adapter file is PEFT's again, bit for bit.
    let root = scratch("gguf");
    let saved = root.join("adapter");
    peft::save(&set, &saved, "tiny-llama/model.gguf", layout).unwrap();
    let want = st::load(fixture("tiny-llama-lora").join("adapter_model.safetensors"), &Device::Cpu).unwrap();
    let got = st::load(saved.join("adapter_model.safetensors"), &Device::Cpu).unwrap();
    assert_same_tensors("saved adapter", &got, &want, 0.0);

    // Merged from the GGUF: the same Hugging Face weights as merged from the safetensors base.
    let from_gguf = root.join("from-gguf");
    let rep = merge(&gguf, &fixture("tiny-llama-lora"), &from_gguf, |_, _| {}).unwrap();
    assert_eq!((rep.tensors, rep.merged.len()), (21, 14));
    assert!(rep.notes.iter().any(|n| n.contains("no tokenizer metadata")), "{:?}", rep.notes);
    let merged = load_decoder(&ModelLocation::Dir(from_gguf.clone())).unwrap().model;
    check("merged from the GGUF vs PEFT merge_and_unload", merged.as_ref(), &r, "logits_merged");
    let from_hf = root.join("from-hf");
    merge(&hf_base(), &fixture("tiny-llama-lora"), &from_hf, |_, _| {}).unwrap();
    assert_same_tensors("GGUF vs safetensors merge", &tensors(&from_gguf), &tensors(&from_hf), 1e-6);
    let cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(from_gguf.join("config.json")).unwrap()).unwrap();
    for key in ["vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim", "tie_word_embeddings"] {
        let hf: serde_json::Value = serde_json::from_slice(&std::fs::read(fixture("tiny-llama").join("config.json")).unwrap()).unwrap();
        assert_eq!(cfg[key], hf[key], "config {key}");
    }

    // Without an adapter, the GGUF exports to exactly the safetensors fixture.
    let exported = root.join("exported");
    export(&gguf, &exported, |_, _| {}).unwrap();
    assert_same_tensors("exported GGUF", &tensors(&exported), &tensors(&fixture("tiny-llama")), 0.0);
    std::fs::remove_dir_all(&root).unwrap();
}

/// An adapter trained by plinth on a GGUF base (its q/k `B` rows in GGUF order) behaves the
/// same once saved and merged into a Hugging Face directory.
#[test]
fn adapter_made_on_the_gguf_base_saves_and_merges_consistently() {
    let r = reference();
    let gguf = gguf_base();
    let m = load_decoder(&gguf).unwrap().model;
    let layout = QkLayout::of(&gguf, m.as_ref());
    let set = LoraSet::init(m.as_ref(), Default::default(), 3).unwrap();
    for (i, e) in set.entries.iter().enumerate() {
        let b = Tensor::randn(0f32, 0.05, e.b.dims(), &Device::Cpu).unwrap();
        e.b.set(&(b * (1.0 + i as f64 / 10.0)).unwrap()).unwrap();
    }
    set.attach(m.as_ref()).unwrap();
    let ids = &rows(&r)[1];
    let want = logits(m.as_ref(), ids);

    let root = scratch("trained-on-gguf");
    peft::save(&set, &root.join("adapter"), "tiny-llama/model.gguf", layout).unwrap();
    // Loaded onto the safetensors base (Hugging Face order) it is the same adapter.
    let hf = load_decoder(&hf_base()).unwrap().model;
    peft::load(&root.join("adapter"), hf.as_ref(), QkLayout::Hf).unwrap().attach(hf.as_ref()).unwrap();
    assert_close("saved from GGUF, attached to safetensors", &logits(hf.as_ref(), ids), &want, TOL);
    for base in [gguf_base(), hf_base()] {
        let out = root.join(if matches!(base, ModelLocation::Gguf(_)) { "m-gguf" } else { "m-hf" });
        merge(&base, &root.join("adapter"), &out, |_, _| {}).unwrap();
        let merged = load_decoder(&ModelLocation::Dir(out)).unwrap().model;
        assert_close(&format!("merged onto {}", base.path().display()), &logits(merged.as_ref(), ids), &want, TOL);
    }
    std::fs::remove_dir_all(&root).unwrap();
}

/// Qwen 2 GGUFs are not permuted by llama.cpp: the layout is Hugging Face's, and the merge of
/// a plinth adapter equals the GGUF model with it attached.
#[test]
fn qwen2_gguf_merges_without_permutation() {
    let gguf = ModelLocation::Gguf(fixture("tiny-qwen2/model.gguf"));
    let m = load_decoder(&gguf).unwrap().model;
    assert_eq!(QkLayout::of(&gguf, m.as_ref()), QkLayout::Hf);
    let set = LoraSet::init(m.as_ref(), Default::default(), 5).unwrap();
    for e in &set.entries {
        e.b.set(&Tensor::randn(0f32, 0.05, e.b.dims(), &Device::Cpu).unwrap()).unwrap();
    }
    set.attach(m.as_ref()).unwrap();
    let ids: Vec<u32> = (0..20).map(|i| (i * 37 + 5) % m.info().vocab_size as u32).collect();
    let root = scratch("qwen2");
    peft::save(&set, &root.join("adapter"), "tiny-qwen2/model.gguf", QkLayout::Hf).unwrap();
    merge(&gguf, &root.join("adapter"), &root.join("merged"), |_, _| {}).unwrap();
    let cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(root.join("merged/config.json")).unwrap()).unwrap();
    assert_eq!(cfg["architectures"][0], "Qwen2ForCausalLM");
    let merged = load_decoder(&ModelLocation::Dir(root.join("merged"))).unwrap().model;
    assert_close("qwen2 merged vs attached", &logits(merged.as_ref(), &ids), &logits(m.as_ref(), &ids), TOL);
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn bad_inputs_fail_clearly_and_leave_nothing_behind() {
    let root = scratch("bad");
    let out = root.join("merged");

    // An adapter made for another model: one layer's lora_A has the wrong input size.
    let adapter = root.join("adapter");
    std::fs::create_dir(&adapter).unwrap();
    std::fs::copy(fixture("tiny-llama-lora").join("adapter_config.json"), adapter.join("adapter_config.json")).unwrap();
    let mut t = st::load(fixture("tiny-llama-lora").join("adapter_model.safetensors"), &Device::Cpu).unwrap();
    let key = "base_model.model.model.layers.1.mlp.down_proj.lora_A.weight";
    assert_eq!(t[key].dims(), [4, 128]);
    t.insert(key.to_string(), Tensor::zeros((4, 96), DType::F32, &Device::Cpu).unwrap());
    st::save(&t, adapter.join("adapter_model.safetensors")).unwrap();
    for base in [hf_base(), gguf_base()] {
        let e = merge(&base, &adapter, &out, |_, _| {}).unwrap_err().to_string();
        assert!(e.contains("model.layers.1.mlp.down_proj"), "{e}");
        assert!(!out.exists());
    }

    // No adapter directory at all.
    let e = merge(&hf_base(), &root.join("nope"), &out, |_, _| {}).unwrap_err().to_string();
    assert!(e.contains("nope") && e.contains("does not exist"), "{e}");
    // A directory that is not an adapter.
    let e = merge(&hf_base(), &fixture("tiny-llama"), &out, |_, _| {}).unwrap_err().to_string();
    assert!(e.contains("adapter_config.json"), "{e}");
    assert!(!out.exists());

    // An output directory that already holds something is never touched.
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("keep.txt"), "mine").unwrap();
    let e = merge(&hf_base(), &fixture("tiny-llama-lora"), &out, |_, _| {}).unwrap_err().to_string();
    assert!(e.contains("already exists"), "{e}");
    assert_eq!(entries(&out), ["keep.txt"]);
    std::fs::remove_dir_all(&out).unwrap();

    // Nothing else was left beside the output: no half-written directory.
    assert_eq!(entries(&root), ["adapter"]);

    // An empty output directory is fine.
    std::fs::create_dir(&out).unwrap();
    merge(&hf_base(), &fixture("tiny-llama-lora"), &out, |_, _| {}).unwrap();
    assert_eq!(entries(&out), ["config.json", "model.safetensors"]);
    std::fs::remove_dir_all(&root).unwrap();
}
