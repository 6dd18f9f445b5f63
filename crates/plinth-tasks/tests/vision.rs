//! Image tasks end to end, from image files to answers, against transformers 5.24 with its
//! PIL-backend processors (`fixtures/vision-pipeline/refs.json`, written by
//! `scripts/make_vision_pipeline_refs.py` on the tiny random-weight models): CLIP and SigLIP
//! embeddings and zero-shot probabilities, and the SmolVLM (Idefics3) prompt: token ids with
//! the expanded image layout, tile count and last-position logits.

use plinth_image::{load_image, ImageLimits};
use plinth_models::{load_decoder, Decoder};
use plinth_tasks::vlm::image_turn;
use plinth_tasks::{ImageIndex, ImagePrompter, ImageTextPipeline};
use plinth_testutil::{assert_close, fixture, max_abs_diff};
use plinth_tokenize::Tokenizer;
use serde_json::Value;

/// f32 end to end on lossless images (the preprocessing is bit-exact).
const TOL: f32 = 1e-4;
/// JPEG files: `image` and libjpeg-turbo decode a few levels apart (max 3/255 on this file),
/// which moves a tiny random model's embedding by about 1e-2.
const JPEG_TOL: f32 = 3e-2;

fn refs() -> Value {
    serde_json::from_slice(&std::fs::read(fixture("vision-pipeline/refs.json")).unwrap()).unwrap()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

fn check_dual(name: &str, key: &str) {
    let r = &refs()[key];
    let p = ImageTextPipeline::load(&fixture(name)).unwrap();
    let files: Vec<String> = r["images"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
    let images: Vec<_> = files.iter().map(|f| load_image(fixture(&format!("images/{f}")), &ImageLimits::default()).unwrap()).collect();
    let got = p.embed_images(&images, 2, &mut |_| {}).unwrap();
    let labels: Vec<&str> = r["labels"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    let template = r["template"].as_str().unwrap();
    for (i, f) in files.iter().enumerate() {
        let tol = if f.ends_with(".jpg") { JPEG_TOL } else { TOL };
        let want = floats(&r["image_embeds"][i]);
        eprintln!("{key} {f}: image embedding max |Δ| {:.2e}", max_abs_diff(&got[i], &want).0);
        assert_close(&format!("{key} image embedding of {f}"), &got[i], &want, tol);
        let scores = p.classify(&images[i], &labels, template).unwrap();
        let want = floats(&r["probs"][i]);
        for (j, l) in labels.iter().enumerate() {
            let s = scores.iter().find(|s| s.label == *l).unwrap().score;
            eprintln!("{key} {f} '{l}': probability {s:.6} vs transformers {:.6}", want[j]);
            assert!((s - want[j]).abs() <= tol, "{key} {f} '{l}': {s} vs transformers {}", want[j]);
        }
    }
    let hyps: Vec<String> = labels.iter().map(|l| template.replace("{}", l)).collect();
    let texts = p.embed_texts(&hyps.iter().map(String::as_str).collect::<Vec<_>>()).unwrap();
    for (i, t) in texts.iter().enumerate() {
        assert_close(&format!("{key} text embedding {i}"), t, &floats(&r["text_embeds"][i]), TOL);
    }
}

#[test]
fn clip_embeddings_and_zero_shot_match_transformers() {
    check_dual("tiny-clip", "clip");
}

#[test]
fn siglip_embeddings_and_zero_shot_match_transformers() {
    check_dual("tiny-siglip", "siglip");
}

#[test]
fn zero_shot_rejects_bad_requests() {
    let p = ImageTextPipeline::load(&fixture("tiny-clip")).unwrap();
    let img = load_image(fixture("images/m_150x100.png"), &ImageLimits::default()).unwrap();
    assert!(p.classify(&img, &[], "{}").unwrap_err().to_string().contains("at least one"));
    assert!(p.classify(&img, &["a"], "no slot").unwrap_err().to_string().contains("no '{}'"));
    // A text longer than the position table is cut, keeping the special tokens at its ends.
    let long = "cat ".repeat(100);
    let ids = p.text_ids(&long).unwrap();
    assert_eq!(ids.len(), p.info().text_max_positions);
    let full = p.text_ids("cat").unwrap();
    assert_eq!((ids[0], ids.last()), (full[0], full.last()));
    // Everything between the two special tokens is the text's own tokens, cut at the end.
    assert_eq!(full.len(), 3, "BOS, cat, EOS: {full:?}");
    assert!(ids[1..ids.len() - 1].iter().all(|&t| t == full[1]), "{ids:?}");
    let varied = "a photo of the small red car on the road ".repeat(4);
    let (cut, whole) = (p.text_ids(&varied).unwrap(), p.text_ids("a photo of the small red car on the road").unwrap());
    assert_eq!(cut.len(), p.info().text_max_positions);
    assert_eq!(&cut[..whole.len() - 1], &whole[..whole.len() - 1], "BOS and the text's first tokens, in order");
    assert_eq!(cut.last(), whole.last(), "the end-of-text token survives the cut");
}

#[test]
fn image_folder_search_caches_and_reembeds_only_changed_files() {
    let p = ImageTextPipeline::load(&fixture("tiny-clip")).unwrap();
    let dir = std::env::temp_dir().join(format!("plinth-image-search-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    for (f, to) in [("m_150x100.png", "m.png"), ("f_33x33.webp", "sub/f.webp"), ("bad_corrupt.png", "broken.png")] {
        std::fs::copy(fixture(&format!("images/{f}")), dir.join(to)).unwrap();
    }
    std::fs::write(dir.join("notes.txt"), "not an image extension").unwrap();
    let limits = ImageLimits::default();
    let first = ImageIndex::open(&p, &dir, &limits, &mut |_, _| {}).unwrap();
    assert_eq!((first.len(), first.embedded, first.skipped.len()), (2, 2, 1));
    let q = p.embed_texts(&["a photo"]).unwrap().remove(0);
    let hits = first.search(&q, 5);
    assert_eq!(hits.len(), 2);
    // The hit's score is the cosine of the query with the image's own embedding.
    let img = load_image(&hits[0].path, &limits).unwrap();
    let direct = p.embed_images(&[img], 1, &mut |_| {}).unwrap().remove(0);
    let cos: f32 = direct.iter().zip(&q).map(|(a, b)| a * b).sum();
    assert!((cos - hits[0].score).abs() < 1e-5, "{cos} vs {}", hits[0].score);
    let again = ImageIndex::open(&p, &dir, &limits, &mut |_, _| {}).unwrap();
    assert_eq!((again.len(), again.embedded), (2, 0), "unchanged files come from the cache");
    std::fs::copy(fixture("images/n_61x97.jpg"), dir.join("n.jpg")).unwrap();
    let third = ImageIndex::open(&p, &dir, &limits, &mut |_, _| {}).unwrap();
    assert_eq!((third.len(), third.embedded), (3, 1), "only the new file is embedded");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn smolvlm_prompt_ids_tiles_and_logits_match_transformers() {
    let dir = fixture("tiny-idefics3");
    let model = load_decoder(&plinth_io::fetch::ModelLocation::Dir(dir.clone())).unwrap().model;
    let tok = Tokenizer::from_file(&dir.join("tokenizer.json")).unwrap();
    let vision = model.vision().expect("a vision-language model");
    let prompter = ImagePrompter::load(&dir, vision.vision_info(), &tok).unwrap();
    let template = tok.chat().unwrap();
    for case in refs()["idefics3"]["cases"].as_array().unwrap() {
        let file = case["image"].as_str().unwrap();
        let img = load_image(fixture(&format!("images/{file}")), &ImageLimits::default()).unwrap();
        let text = template.render(&[image_turn(1, case["question"].as_str().unwrap())], true).unwrap();
        assert_eq!(text, case["text"].as_str().unwrap(), "chat template output for {file}");
        let (expanded, pixels) = prompter.expand(&text, &[img]).unwrap();
        let pixels = pixels.unwrap();
        let ids = tok.encode(&expanded, false).unwrap();
        let want: Vec<u32> = case["input_ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        assert_eq!(ids, want, "input ids of {file}");
        assert_eq!(pixels.dims()[0] as u64, case["tiles"].as_u64().unwrap(), "tiles of {file}");
        let embeds = vision.prompt_embeddings(&ids, &pixels).unwrap();
        let mut cache = model.new_cache();
        let logits = vision.forward_embeds(&embeds, &mut cache, false).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let (d, _) = max_abs_diff(&logits, &floats(&case["last_logits"]));
        eprintln!("idefics3 {file}: {} prompt ids equal, last logits max |Δ| {d:.2e}", ids.len());
        assert!(d <= TOL, "last logits of {file}: max |Δ| {d:.2e} > {TOL}");
    }
    // A plain-string turn reaches a vision-language template as a text part, not dropped.
    let plain = template.render(&plinth_tasks::vlm::as_parts(&[plinth_tokenize::Message::new("user", "What is it?")]), true).unwrap();
    assert!(plain.contains("User: What is it?<end_of_utterance>"), "{plain}");
    // Placeholder and image counts must agree.
    let err = prompter.expand("no placeholder", &[load_image(fixture("images/a_1x1.png"), &ImageLimits::default()).unwrap()]);
    assert!(err.unwrap_err().to_string().contains("0 '<image>' placeholders for 1 images"));
}

/// The engine's two paths (one session; the batching scheduler) give the same greedy tokens
/// for an image prompt, and a follow-up turn in a session reuses the cached image prefix.
#[test]
fn image_prompts_generate_the_same_in_a_session_and_the_scheduler() {
    use plinth_engine::{Engine, EngineConfig, Event, GenerateRequest, GenerationOptions, Request, SamplingParams, Session};
    let dir = fixture("tiny-idefics3");
    let model: std::sync::Arc<dyn Decoder> = load_decoder(&plinth_io::fetch::ModelLocation::Dir(dir.clone())).unwrap().model.into();
    let tok = Tokenizer::from_file(&dir.join("tokenizer.json")).unwrap();
    let vision = model.vision().unwrap();
    let prompter = ImagePrompter::load(&dir, vision.vision_info(), &tok).unwrap();
    let text = tok.chat().unwrap().render(&[image_turn(1, "Describe this image.")], true).unwrap();
    let img = load_image(fixture("images/m_150x100.png"), &ImageLimits::default()).unwrap();
    let (expanded, pixels) = prompter.expand(&text, &[img]).unwrap();
    let ids = tok.encode(&expanded, false).unwrap();

    let req = GenerateRequest { prompt_ids: ids.clone(), max_tokens: 6, sampling: SamplingParams::greedy(), stop: vec![] };
    let mut session = Session::new(model.as_ref(), &tok);
    let single = session.generate_with_images(&req, pixels.as_ref(), &mut |_| true).unwrap();
    assert_eq!(single.prefilled_tokens, ids.len());
    // The prompt plus the reply: the cache already holds all but the last sampled token
    // (never fed), so one token is prefilled and the image is not encoded again.
    let mut longer = ids.clone();
    longer.extend(&single.token_ids);
    let follow = GenerateRequest { prompt_ids: longer, ..req.clone() };
    let again = session.generate_with_images(&follow, pixels.as_ref(), &mut |_| true).unwrap();
    assert_eq!(again.prefilled_tokens, 1);
    // Without its image the prompt is refused, never run with empty image slots.
    let err = session.generate(&req, &mut |_| true).unwrap_err().to_string();
    assert!(err.contains("image tiles"), "{err}");

    let engine = Engine::start_shared(model.clone(), std::sync::Arc::new(Tokenizer::from_file(&dir.join("tokenizer.json")).unwrap()), EngineConfig { prefill_chunk: 32, ..Default::default() });
    let text_only = tok.encode("User: hi", false).unwrap();
    let mut rx_text = engine.submit(Request { prompt_ids: text_only, options: GenerationOptions::new(6, SamplingParams::greedy(), vec![]) }).unwrap();
    let mut rx = engine
        .submit_with_images(Request { prompt_ids: ids, options: GenerationOptions::new(6, SamplingParams::greedy(), vec![]) }, pixels)
        .unwrap();
    let mut got = Vec::new();
    while let Some(ev) = rx.blocking_recv() {
        match ev {
            Event::Token { id, .. } if id != u32::MAX => got.push(id),
            Event::Done { .. } => break,
            Event::Error(e) => panic!("{e}"),
            _ => {}
        }
    }
    assert_eq!(got, single.token_ids, "scheduler (chunked prefill of 32, batched with a text request) vs session");
    while let Some(ev) = rx_text.blocking_recv() {
        if matches!(ev, Event::Done { .. }) {
            break;
        }
    }
}
