//! The image commands on the tiny random-weight models: `describe` and `chat --image` with
//! SmolVLM (Idefics3), `embed` / `classify --image` and `search --images` with CLIP and SigLIP,
//! `inspect`'s model cards, and the errors for wrong models and bad files. The numbers
//! themselves are checked against transformers in plinth-tasks' `tests/vision.rs`; here the
//! commands must wire them up and fail clearly.

use plinth_testutil::fixture;
use serde_json::Value;

fn plinth(args: &[&str], stdin: &str) -> (i32, String, String) {
    plinth_testutil::run_with_stdin(env!("CARGO_BIN_EXE_plinth"), args, stdin)
}

fn fx(rel: &str) -> String {
    fixture(rel).display().to_string()
}

#[test]
fn describe_answers_about_an_image() {
    let (vlm, img) = (fx("tiny-idefics3"), fx("images/m_150x100.png"));
    let (code, out, err) = plinth(&["describe", &img, "-m", &vlm, "--max-tokens", "5", "-t", "0", "--json"], "");
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    // 150x100 at 32-pixel tiles: a 2x2 split plus the global image.
    assert_eq!(v["image_tiles"], 5, "{v}");
    assert!(v["prompt_tokens"].as_u64().unwrap() > 5 * 16, "{v}");
    assert!(v["completion_tokens"].as_u64().unwrap() >= 1, "{v}");
    // Greedy: the same image gives the same answer; another image another prompt.
    let (_, again, _) = plinth(&["describe", &img, "-m", &vlm, "--max-tokens", "5", "-t", "0", "--json"], "");
    assert_eq!(serde_json::from_str::<Value>(again.trim()).unwrap()["text"], v["text"]);
    let (code, out, err) = plinth(&["describe", &fx("images/b_7x300.png"), "-m", &vlm, "--max-tokens", "3", "--json", "-p", "What is it?"], "");
    assert_eq!(code, 0, "{err}");
    assert_eq!(serde_json::from_str::<Value>(out.trim()).unwrap()["image_tiles"], 3);
}

#[test]
fn chat_with_an_image_keeps_it_for_the_conversation() {
    let (code, out, err) = plinth(
        &["chat", "-m", &fx("tiny-idefics3"), "--image", &fx("images/m_150x100.png"), "--max-tokens", "3", "-t", "0"],
        "What is this?\nAnd now?\n",
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.lines().filter(|l| !l.trim().is_empty()).count() >= 1, "{out}");
}

#[test]
fn image_commands_refuse_the_wrong_models_and_bad_files() {
    let img = fx("images/m_150x100.png");
    // A text decoder cannot describe images.
    let smollm2 = plinth_testutil::smollm2_gguf().display().to_string();
    let (code, _, err) = plinth(&["describe", &img, "-m", &smollm2], "");
    assert_ne!(code, 0);
    assert!(err.contains("vision-language model"), "{err}");
    // A vision-language model is not a dual encoder.
    let (code, _, err) = plinth(&["classify", "--image", &img, "--labels", "a,b", "-m", &fx("tiny-idefics3")], "");
    assert_ne!(code, 0);
    assert!(err.contains("image-text model"), "{err}");
    let (code, _, err) = plinth(&["describe", &fx("images/bad_truncated.png"), "-m", &fx("tiny-idefics3")], "");
    assert_ne!(code, 0);
    assert!(err.contains("bad_truncated.png") && err.contains("PNG"), "{err}");
    let (code, _, err) = plinth(&["describe", &fx("images/bad_bomb_30000x30000.png"), "-m", &fx("tiny-idefics3")], "");
    assert_ne!(code, 0);
    assert!(err.contains("900 Mpx"), "{err}");
    let (code, _, err) = plinth(&["embed", "--image", "/no/such.png", "-m", &fx("tiny-clip")], "");
    assert_ne!(code, 0);
    assert!(err.contains("/no/such.png"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn clip_and_siglip_embed_classify_and_search() {
    let (clip, siglip) = (fx("tiny-clip"), fx("tiny-siglip"));
    let (a, b) = (fx("images/m_150x100.png"), fx("images/f_33x33.webp"));
    let (code, out, err) = plinth(&["embed", "a cat", "--image", &a, &b, "-m", &clip], "");
    assert_eq!(code, 0, "{err}");
    let rows: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 3);
    assert_eq!((rows[0]["image"].as_str(), rows[2]["text"].as_str()), (Some(a.as_str()), Some("a cat")));
    for r in &rows {
        let v: Vec<f64> = r["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
        let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5 && v.len() == 40, "{norm} {}", v.len());
    }

    let (code, out, err) = plinth(&["classify", "--image", &a, "--labels", "a cat,a dog,a car", "-m", &clip, "-k", "0", "--json"], "");
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    let sum: f64 = v["labels"].as_array().unwrap().iter().map(|l| l["score"].as_f64().unwrap()).sum();
    assert!((sum - 1.0).abs() < 1e-5 && v["scoring"] == "softmax", "{v}");
    let (code, out, err) = plinth(&["classify", "--image", &a, "--labels", "a cat,a dog", "-m", &siglip, "-k", "0", "--json"], "");
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["scoring"], "sigmoid", "{v}");

    let dir = std::env::temp_dir().join(format!("plinth-cli-image-search-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["m_150x100.png", "f_33x33.webp", "n_61x97.jpg"] {
        std::fs::copy(fixture(&format!("images/{f}")), dir.join(f)).unwrap();
    }
    let d = dir.display().to_string();
    let (code, out, err) = plinth(&["search", "a red bicycle", "--images", &d, "-m", &clip, "-k", "2", "--json"], "");
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!((v["indexed"].as_u64(), v["embedded"].as_u64(), v["results"].as_array().map(Vec::len)), (Some(3), Some(3), Some(2)), "{v}");
    let (_, out, _) = plinth(&["search", "a red bicycle", "--images", &d, "-m", &clip, "-k", "2", "--json"], "");
    let again: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!((again["embedded"].as_u64(), &again["results"]), (Some(0), &v["results"]), "the cache gives the same hits");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn inspect_shows_the_image_modalities() {
    let (code, out, err) = plinth(&["inspect", &fx("tiny-idefics3"), "--json"], "");
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["card"]["inputs"], serde_json::json!(["image", "text"]), "{v}");
    assert_eq!(v["card"]["outputs"], serde_json::json!(["text"]));
    assert_eq!((v["is_llm"].as_bool(), v["supported"].as_bool()), (Some(false), Some(true)));
    let (_, out, _) = plinth(&["inspect", &fx("tiny-siglip"), "--json"], "");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["card"]["outputs"], serde_json::json!(["embedding", "labels"]), "{v}");
    assert!(v["card"]["tasks"].as_array().unwrap().contains(&Value::from("zero-shot-image-classification")));
}
