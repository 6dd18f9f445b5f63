//! Tiny random vision models (CLIP, SigLIP, Idefics3) against transformers
//! (`fixtures/tiny-{clip,siglip,idefics3}/reference.safetensors`, written by
//! `scripts/make_vision_fixtures.py`): image and text embeddings, image-text logits, the
//! Idefics3 connector output, merged prompt embeddings and decoder logits. Also: bad pixel
//! shapes, image-token counts and over-long texts give errors that say what is wrong.

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{safetensors, DType, Device, Tensor};
use plinth_io::fetch::ModelLocation;
use plinth_models::{is_image_text_type, load_decoder, load_image_text, Decoder, ImageTextModel, ScoreKind};
use plinth_testutil::{assert_tensor_close, fixture, flat, max_abs_diff};

/// Max |Δ| against transformers (f32 embeddings, logits).
const TOL: f32 = 1e-4;

fn reference(dir: &str) -> HashMap<String, Tensor> {
    safetensors::load(fixture(dir).join("reference.safetensors"), &Device::Cpu).unwrap()
}

fn check(what: &str, got: &Tensor, want: &Tensor) {
    assert_tensor_close(what, got, want, TOL);
}

fn texts(r: &HashMap<String, Tensor>) -> Vec<Vec<u32>> {
    (0..)
        .map_while(|i| r.get(&format!("text_ids_{i}")))
        .map(|t| t.to_vec1::<i64>().unwrap().into_iter().map(|x| x as u32).collect())
        .collect()
}

fn l2_normalize(t: &Tensor) -> Tensor {
    t.broadcast_div(&t.sqr().unwrap().sum_keepdim(1).unwrap().sqrt().unwrap()).unwrap()
}

/// `logits_per_image` as transformers computes it from the unnormalised embeddings.
fn logits(m: &dyn ImageTextModel, img: &Tensor, txt: &Tensor) -> Tensor {
    let cos = l2_normalize(img).matmul(&l2_normalize(txt).t().unwrap()).unwrap();
    ((cos * m.info().logit_scale as f64).unwrap() + m.info().logit_bias as f64).unwrap()
}

fn dual(dir: &str, kind: ScoreKind) {
    let path: PathBuf = fixture(dir);
    let m = load_image_text(&path).unwrap_or_else(|e| panic!("{dir}: {e}"));
    assert_eq!(m.info().score, kind);
    let r = reference(dir);
    let img = m.embed_images(&r["pixel_values"]).unwrap();
    check(&format!("{dir} image_embeds"), &img, &r["image_embeds"]);
    let ids = texts(&r);
    assert_eq!(ids.len(), 3);
    let txt = m.embed_texts(&ids).unwrap();
    check(&format!("{dir} text_embeds"), &txt, &r["text_embeds"]);
    check(&format!("{dir} logits_per_image"), &logits(m.as_ref(), &img, &txt), &r["logits_per_image"]);
    // A text alone equals its row in the batch (padding never leaks into a text's embedding).
    for (i, t) in ids.iter().enumerate() {
        let alone = m.embed_texts(std::slice::from_ref(t)).unwrap();
        let (d, _) = max_abs_diff(&flat(&alone), &flat(&txt.get(i).unwrap()));
        assert!(d <= 1e-5, "{dir}: text {i} alone differs from its batch row by {d}");
    }
}

#[test]
fn clip_matches_transformers() {
    assert!(is_image_text_type("clip"));
    dual("tiny-clip", ScoreKind::Softmax);
}

#[test]
fn siglip_matches_transformers() {
    assert!(is_image_text_type("siglip"));
    assert!(!is_image_text_type("llama"));
    dual("tiny-siglip", ScoreKind::Sigmoid);
}

#[test]
fn dual_encoders_refuse_bad_input() {
    for dir in ["tiny-clip", "tiny-siglip"] {
        let m = load_image_text(&fixture(dir)).unwrap();
        let s = m.info().image_size;
        let e = m.embed_images(&Tensor::zeros((1, 3, s, s + 1), DType::F32, &Device::Cpu).unwrap()).unwrap_err().to_string();
        assert!(e.contains("pixel values") && e.contains(&format!("[n, 3, {s}, {s}]")), "{dir}: {e}");
        let e = m.embed_images(&Tensor::zeros((1, 1, s, s), DType::F32, &Device::Cpu).unwrap()).unwrap_err().to_string();
        assert!(e.contains("pixel values"), "{dir}: {e}");
        let long = vec![vec![3u32; m.info().text_max_positions + 1]];
        let e = m.embed_texts(&long).unwrap_err().to_string();
        assert!(e.contains(&format!("{} tokens", m.info().text_max_positions + 1)), "{dir}: {e}");
        let e = m.embed_texts(&[vec![3, 1_000_000]]).unwrap_err().to_string();
        assert!(e.contains("outside the vocabulary"), "{dir}: {e}");
        assert!(m.embed_texts(&[]).is_err());
    }
    // A decoder directory is not a dual encoder.
    let e = load_image_text(&fixture("tiny-idefics3")).err().expect("idefics3 is a decoder").to_string();
    assert!(e.contains("idefics3"), "{e}");
}

fn idefics3() -> Box<dyn Decoder> {
    load_decoder(&ModelLocation::Dir(fixture("tiny-idefics3"))).unwrap_or_else(|e| panic!("tiny-idefics3: {e}")).model
}

fn prompt_ids(r: &HashMap<String, Tensor>) -> Vec<u32> {
    r["input_ids"].flatten_all().unwrap().to_vec1::<i64>().unwrap().into_iter().map(|x| x as u32).collect()
}

#[test]
fn idefics3_matches_transformers() {
    let m = idefics3();
    let v = m.vision().expect("idefics3 reads images");
    let r = reference("tiny-idefics3");
    let ids = prompt_ids(&r);
    let px = &r["pixel_values"];
    assert_eq!(v.vision_info().image_seq_len, 16);
    assert_eq!(v.vision_info().image_token, "<image>");
    assert!(m.info().parameters > v.vision_info().vision_parameters);

    let embeds = v.prompt_embeddings(&ids, px).unwrap();
    check("idefics3 inputs_embeds", &embeds, &r["inputs_embeds"]);
    // The connector output sits at the image token positions, in order.
    let pos: Vec<usize> = ids.iter().enumerate().filter(|(_, &id)| id == v.vision_info().image_token_id).map(|(i, _)| i).collect();
    let at = embeds.index_select(&Tensor::new(pos.iter().map(|&p| p as u32).collect::<Vec<_>>(), &Device::Cpu).unwrap(), 0).unwrap();
    check("idefics3 connector", &at, &r["connector"]);

    let mut cache = m.new_cache();
    let logits = v.forward_embeds(&embeds, &mut cache, true).unwrap();
    check("idefics3 logits", &logits, &r["logits"]);
    assert_eq!(cache.len(), ids.len());

    // In two chunks through the cache, then one decoded token: the same last-position logits.
    let mut cache = m.new_cache();
    let split = 20;
    v.forward_embeds(&embeds.narrow(0, 0, split).unwrap(), &mut cache, false).unwrap();
    let last = v.forward_embeds(&embeds.narrow(0, split, ids.len() - split).unwrap(), &mut cache, false).unwrap();
    check("idefics3 chunked last logits", &last, &r["logits"].narrow(0, ids.len() - 1, 1).unwrap());
    let step = m.forward(&[ids[0]], &mut cache, false).unwrap();
    assert_eq!(step.dims(), &[1, m.info().vocab_size]);

    // Text-only use goes through the ordinary decoder path: the prompt's text positions before
    // the first image equal transformers' logits there.
    let first_image = pos[0];
    let mut cache = m.new_cache();
    let text = m.forward(&ids[..first_image], &mut cache, true).unwrap();
    check("idefics3 text-only prefix logits", &text, &r["logits"].narrow(0, 0, first_image).unwrap());
}

#[test]
fn idefics3_refuses_bad_input() {
    let m = idefics3();
    let v = m.vision().unwrap();
    let r = reference("tiny-idefics3");
    let ids = prompt_ids(&r);
    let px = &r["pixel_values"];
    // One tile of pixels for a prompt that holds two tiles' image tokens.
    let e = v.prompt_embeddings(&ids, &px.narrow(0, 0, 1).unwrap()).unwrap_err().to_string();
    assert!(e.contains("32 <image> tokens for 1 image tiles") && e.contains("expected 16"), "{e}");
    let e = v.prompt_embeddings(&ids[..ids.len() - 40], px).unwrap_err().to_string();
    assert!(e.contains("tokens for 2 image tiles"), "{e}");
    let s = v.vision_info().image_size;
    let e = v.prompt_embeddings(&ids, &Tensor::zeros((2, 3, s / 2, s / 2), DType::F32, &Device::Cpu).unwrap()).unwrap_err().to_string();
    assert!(e.contains("pixel values"), "{e}");
    let mut bad = ids.clone();
    bad[0] = 100_000;
    assert!(v.prompt_embeddings(&bad, px).unwrap_err().to_string().contains("outside the vocabulary"));
    let mut cache = m.new_cache();
    assert!(v.forward_embeds(&Tensor::zeros((3, 7), DType::F32, &Device::Cpu).unwrap(), &mut cache, false).is_err());
    // Longer than the context window: refused before any work.
    let long = Tensor::zeros((m.info().context_length + 1, m.info().hidden_size), DType::F32, &Device::Cpu).unwrap();
    assert!(v.forward_embeds(&long, &mut cache, false).is_err());
}

/// A private copy of a fixture directory with its `config.json` edited by `f`.
fn broken_copy(name: &str, tag: &str, f: impl FnOnce(&mut serde_json::Value)) -> PathBuf {
    let dst = std::env::temp_dir().join(format!("plinth-vision-bad-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dst);
    std::fs::create_dir_all(&dst).unwrap();
    for e in std::fs::read_dir(fixture(name)).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, dst.join(p.file_name().unwrap())).unwrap();
    }
    let p = dst.join("config.json");
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(&p, serde_json::to_string(&v).unwrap()).unwrap();
    dst
}

#[test]
fn broken_configs_are_named_errors() {
    let d = broken_copy("tiny-clip", "patch", |v| v["vision_config"]["patch_size"] = 5.into());
    let e = load_image_text(&d).err().expect("patch 5 does not divide 32").to_string();
    assert!(e.contains("vision_config") && e.contains("patch size 5"), "{e}");
    let d = broken_copy("tiny-siglip", "heads", |v| v["text_config"]["num_attention_heads"] = 5.into());
    let e = load_image_text(&d).err().expect("5 heads do not divide 48").to_string();
    assert!(e.contains("text_config") && e.contains("5 heads"), "{e}");
    let d = broken_copy("tiny-siglip", "mlp", |v| v["vision_config"]["intermediate_size"] = 64.into());
    let e = load_image_text(&d).err().expect("fc1 is 96 wide").to_string();
    assert!(e.contains("vision_model.encoder.layers.0.mlp.fc1.") && e.contains("expected shape [64]"), "{e}");
    let d = broken_copy("tiny-idefics3", "scale", |v| v["scale_factor"] = 3.into());
    let e = load_decoder(&ModelLocation::Dir(d)).err().expect("scale 3 does not divide 8 patches").to_string();
    assert!(e.contains("scale_factor 3"), "{e}");
    let d = broken_copy("tiny-idefics3", "token", |v| v["image_token_id"] = 500.into());
    let e = load_decoder(&ModelLocation::Dir(d)).err().expect("image token beyond the vocabulary").to_string();
    assert!(e.contains("image_token_id 500"), "{e}");
    let d = broken_copy("tiny-idefics3", "text", |v| v.as_object_mut().unwrap().remove("text_config").map(|_| ()).unwrap());
    let e = load_decoder(&ModelLocation::Dir(d)).err().expect("no text_config").to_string();
    assert!(e.contains("text_config"), "{e}");
}
