//! The whole text-to-image pipeline against diffusers on the tiny random-weight pipelines
//! (`fixtures/tiny-sd`, `fixtures/tiny-sdxl`; references in `pipeline.safetensors`, written by
//! `scripts/make_diffusion_fixtures.py` from the same starting latents): prompt encoding
//! (CLIP's 77 padded ids, the negative prompt first under guidance; SDXL's two encoders,
//! pooled embeds and size ids), the scheduler loop with classifier-free guidance, and the VAE
//! decode to `output_type="np"` pixels. Also: a seed gives the same PNG bytes, and bad
//! requests are refused before any work.

use std::collections::HashMap;

use candle_core::{safetensors, Device, Tensor};
use plinth_tasks::imagine::{ImagineRequest, TextToImage};
use plinth_testutil::{assert_tensor_close, fixture, flat};

/// Max |Δ| against diffusers, f32, relative to the reference's largest magnitude where that
/// exceeds 1: prompt embeddings are O(1) and the image is in [0, 1] (observed ~1e-6), while
/// the random-weight UNets drive the final latents to |x| ~ 13 (SD) and ~ 54 (SDXL), where
/// the observed error is 2e-5 to 9e-5 absolute (under 2e-6 relative).
const TOL: f32 = 1e-4;

fn reference(dir: &str) -> HashMap<String, Tensor> {
    safetensors::load(fixture(dir).join("pipeline.safetensors"), &Device::Cpu).unwrap()
}

fn check(what: &str, got: &Tensor, want: &Tensor) {
    let scale = flat(want).iter().fold(1f32, |m, x| m.max(x.abs()));
    assert_tensor_close(what, got, want, TOL * scale);
}

fn request(prompt: &str, negative: Option<&str>, steps: usize, guidance: f64, scheduler: &str) -> ImagineRequest {
    ImagineRequest {
        prompt: prompt.into(),
        negative_prompt: negative.map(str::to_string),
        width: Some(64),
        height: Some(64),
        steps: Some(steps),
        guidance: Some(guidance),
        scheduler: Some(scheduler.parse().unwrap()),
        seed: Some(0),
    }
}

/// `[1, 3, H, W]` -> diffusers' `[1, H, W, 3]`.
fn nhwc(t: &Tensor) -> Tensor {
    t.permute((0, 2, 3, 1)).unwrap().contiguous().unwrap()
}

#[test]
fn sd_pipeline_matches_diffusers() {
    let r = reference("tiny-sd");
    let pipe = TextToImage::load(&fixture("tiny-sd")).unwrap();
    let s = pipe.resolve(&request("a red lighthouse at dawn", None, 3, 7.5, "ddim")).unwrap();
    let cond = pipe.encode_prompt(&s).unwrap();
    assert!(cond.guided && cond.added.is_none());
    let want = Tensor::cat(&[&r["negative_prompt_embeds"], &r["prompt_embeds"]], 0).unwrap();
    check("SD prompt embeds (negative, positive)", &cond.hidden, &want);
    let latents = pipe.denoise_from(&s, r["latents"].clone()).unwrap();
    check("SD final latents (DDIM, 3 steps, guidance 7.5)", &latents, &r["final_latents"]);
    check("SD image", &nhwc(&pipe.decode_float(&latents).unwrap()), &r["image"]);
}

#[test]
fn sdxl_pipeline_matches_diffusers() {
    let r = reference("tiny-sdxl");
    let pipe = TextToImage::load(&fixture("tiny-sdxl")).unwrap();
    // Without guidance: one pass, pooled text and size ids from the prompt alone.
    let s = pipe.resolve(&request("a red lighthouse at dawn", None, 2, 0.0, "euler")).unwrap();
    let cond = pipe.encode_prompt(&s).unwrap();
    assert!(!cond.guided);
    check("SDXL prompt embeds", &cond.hidden, &r["nocfg_prompt_embeds"]);
    let added = cond.added.as_ref().unwrap();
    check("SDXL pooled embeds", &added.text_embeds, &r["nocfg_pooled_prompt_embeds"]);
    check("SDXL time ids", &added.time_ids, &r["nocfg_add_time_ids"]);
    let latents = pipe.denoise_from(&s, r["latents"].clone()).unwrap();
    check("SDXL final latents (Euler trailing, 2 steps)", &latents, &r["nocfg_final_latents"]);
    check("SDXL image", &nhwc(&pipe.decode_float(&latents).unwrap()), &r["nocfg_image"]);

    // With guidance and a negative prompt (encoded, not zeroed).
    let s = pipe.resolve(&request("a red lighthouse at dawn", Some("blurry"), 2, 5.0, "euler")).unwrap();
    let cond = pipe.encode_prompt(&s).unwrap();
    let want = Tensor::cat(&[&r["cfg_negative_prompt_embeds"], &r["cfg_prompt_embeds"]], 0).unwrap();
    check("SDXL guided prompt embeds", &cond.hidden, &want);
    let pooled = Tensor::cat(&[&r["cfg_negative_pooled_prompt_embeds"], &r["cfg_pooled_prompt_embeds"]], 0).unwrap();
    check("SDXL guided pooled embeds", &cond.added.as_ref().unwrap().text_embeds, &pooled);
    let latents = pipe.denoise_from(&s, r["latents"].clone()).unwrap();
    check("SDXL guided final latents", &latents, &r["cfg_final_latents"]);
    check("SDXL guided image", &nhwc(&pipe.decode_float(&latents).unwrap()), &r["cfg_image"]);
}

#[test]
fn sdxl_empty_negative_prompt_is_zeros() {
    // force_zeros_for_empty_prompt: without a negative prompt the unconditional half is zeros.
    let pipe = TextToImage::load(&fixture("tiny-sdxl")).unwrap();
    let s = pipe.resolve(&request("a castle", None, 1, 5.0, "euler")).unwrap();
    let cond = pipe.encode_prompt(&s).unwrap();
    let uncond = cond.hidden.narrow(0, 0, 1).unwrap();
    assert!(flat(&uncond).iter().all(|&x| x == 0.0));
    assert!(flat(&cond.hidden.narrow(0, 1, 1).unwrap()).iter().any(|&x| x != 0.0));
}

#[test]
fn a_seed_gives_the_same_png_and_another_seed_another() {
    let pipe = TextToImage::load(&fixture("tiny-sd")).unwrap();
    let mut req = request("a cat on a chair", Some("blurry"), 3, 7.5, "euler-a");
    req.width = Some(48);
    req.height = Some(32);
    req.seed = Some(11);
    let s = pipe.resolve(&req).unwrap();
    let mut steps = Vec::new();
    let a = pipe
        .generate(&s, &mut |p| {
            steps.push(p);
            Ok(())
        })
        .unwrap();
    assert_eq!((a.width, a.height, a.rgb.len()), (48, 32, 48 * 32 * 3));
    // Encoded, three steps, decoded.
    assert_eq!(steps.len(), 5, "{steps:?}");
    let b = pipe.generate(&s, &mut |_| Ok(())).unwrap();
    assert_eq!(a.png().unwrap(), b.png().unwrap());
    req.seed = Some(12);
    let c = pipe.generate(&pipe.resolve(&req).unwrap(), &mut |_| Ok(())).unwrap();
    assert_ne!(a.rgb, c.rgb);
    // A progress callback's error stops the run.
    let err = pipe.generate(&s, &mut |_| Err(plinth_core::Error::invalid("run", "stopped by the caller"))).unwrap_err();
    assert!(err.to_string().contains("stopped by the caller"));
}

#[test]
fn bad_requests_are_refused_with_the_reason() {
    let pipe = TextToImage::load(&fixture("tiny-sd")).unwrap();
    let ok = request("a cat", None, 2, 7.5, "ddim");
    let err = |f: &dyn Fn(&mut ImagineRequest)| {
        let mut r = ok.clone();
        f(&mut r);
        pipe.resolve(&r).unwrap_err().to_string()
    };
    assert!(err(&|r| r.prompt = " \n".into()).contains("prompt is empty"));
    assert!(err(&|r| r.width = Some(65)).contains("multiple of"));
    assert!(err(&|r| r.height = Some(0)).contains("multiple of"));
    assert!(err(&|r| r.width = Some(1 << 20)).contains("limit"));
    assert!(err(&|r| r.steps = Some(0)).contains("steps"));
    assert!(err(&|r| r.steps = Some(100_000)).contains("steps"));
    assert!(err(&|r| r.guidance = Some(f64::NAN)).contains("guidance"));
    assert!(err(&|r| r.guidance = Some(-1.0)).contains("guidance"));
    assert!("pndm".parse::<plinth_models::diffusion::scheduler::SchedulerKind>().unwrap_err().to_string().contains("euler-a"));
    let s = pipe.resolve(&ok).unwrap();
    assert_eq!((s.width, s.height, s.steps, s.scheduler.as_str()), (64, 64, 2, "ddim"));
}

#[test]
fn broken_pipelines_fail_to_load_with_the_reason() {
    let dir = std::env::temp_dir().join(format!("plinth-imagine-broken-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("model_index.json"), r#"{"_class_name": "FluxPipeline"}"#).unwrap();
    let e = TextToImage::load(&dir).err().unwrap().to_string();
    assert!(e.contains("FluxPipeline") && e.contains("StableDiffusionPipeline"), "{e}");
    std::fs::write(dir.join("model_index.json"), r#"{"_class_name": "StableDiffusionPipeline"}"#).unwrap();
    let e = TextToImage::load(&dir).err().unwrap().to_string();
    assert!(e.contains("tokenizer"), "{e}");
    std::fs::write(dir.join("model_index.json"), "{not json").unwrap();
    let e = TextToImage::load(&dir).err().unwrap().to_string();
    assert!(e.contains("model_index.json"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
