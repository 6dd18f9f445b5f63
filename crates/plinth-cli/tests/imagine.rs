//! `plinth imagine` on the tiny random-weight Stable Diffusion pipelines (fixtures/tiny-sd,
//! fixtures/tiny-sdxl): PNGs of the requested size with their settings in the metadata, the
//! same seed giving the same bytes, `--json`, `--count`, `inspect`'s text -> image card, and
//! clear errors for bad sizes, step counts, prompts, schedulers and models. The pixels
//! themselves are checked against diffusers in plinth-tasks' `tests/imagine.rs`.

use plinth_testutil::fixture;
use serde_json::Value;

fn plinth(args: &[&str]) -> (i32, String, String) {
    plinth_testutil::run_with_stdin(env!("CARGO_BIN_EXE_plinth"), args, "")
}

fn fx(rel: &str) -> String {
    fixture(rel).display().to_string()
}

fn tmp(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("plinth-imagine-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[test]
fn writes_a_png_with_its_settings_and_a_seed_repeats_it() {
    let out = tmp("a.png");
    let o = out.display().to_string();
    let args = ["imagine", "a red lighthouse at dawn", "-m", &fx("tiny-sd"), "-o", &o, "--steps", "2", "--seed", "5", "-W", "64", "-H", "48", "--json"];
    let (code, stdout, err) = plinth(&args);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(v["settings"]["seed"], 5, "{v}");
    assert_eq!((v["settings"]["width"].as_u64(), v["settings"]["height"].as_u64()), (Some(64), Some(48)));
    assert!(v["seconds"]["denoise"].as_f64().unwrap() >= 0.0, "{v}");
    let first = std::fs::read(&out).unwrap();
    let img = plinth_image::decode_image(&first, &Default::default()).unwrap();
    assert_eq!((img.width(), img.height()), (64, 48));
    let text = plinth_image::png_text(&first).unwrap();
    let params = &text.iter().find(|(k, _)| k == "parameters").unwrap().1;
    assert!(params.starts_with("a red lighthouse at dawn\n") && params.contains("Seed: 5") && params.contains("Size: 64x48"), "{params}");
    // Same seed, same bytes; another seed, another image.
    let (code, _, err) = plinth(&args);
    assert_eq!(code, 0, "{err}");
    assert_eq!(std::fs::read(&out).unwrap(), first);
    let mut other = args.to_vec();
    other[9] = "6";
    assert_eq!(plinth(&other).0, 0);
    assert_ne!(std::fs::read(&out).unwrap(), first);
}

#[test]
fn count_writes_numbered_files_with_consecutive_seeds() {
    let out = tmp("many.png");
    let o = out.display().to_string();
    let (code, stdout, err) =
        plinth(&["imagine", "a cat", "-m", &fx("tiny-sd"), "-o", &o, "--steps", "1", "--seed", "9", "-W", "32", "-H", "32", "--count", "2"]);
    assert_eq!(code, 0, "{err}");
    assert!(stdout.contains("seed 9") && stdout.contains("seed 10"), "{stdout}");
    assert!(out.exists() && out.with_file_name("many-1.png").exists());
}

#[test]
fn sdxl_pipeline_generates() {
    let o = tmp("xl.png").display().to_string();
    let (code, stdout, err) = plinth(&["imagine", "a castle", "-m", &fx("tiny-sdxl"), "-o", &o, "--steps", "2", "--seed", "1", "-W", "32", "-H", "32", "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(v["settings"]["scheduler"], "euler-a", "SDXL fixture's own scheduler: {v}");
}

#[test]
fn bad_requests_fail_clearly() {
    let sd = fx("tiny-sd");
    let o = tmp("bad.png").display().to_string();
    let cases: &[(&[&str], &str)] = &[
        (&["-W", "65"], "multiple of"),
        (&["-H", "100000"], "limit"),
        (&["--steps", "0"], "steps"),
        (&["--steps", "5000"], "steps"),
        (&["--guidance", "-2"], "guidance"),
        (&["--scheduler", "pndm"], "euler-a"),
        (&["--count", "0"], "--count"),
    ];
    for (extra, want) in cases {
        let mut args = vec!["imagine", "a cat", "-m", &sd, "-o", &o];
        args.extend_from_slice(extra);
        let (code, _, err) = plinth(&args);
        assert_ne!(code, 0, "{extra:?} should fail");
        assert!(err.contains(want), "{extra:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    let (code, _, err) = plinth(&["imagine", "  ", "-m", &sd, "-o", &o]);
    assert!(code != 0 && err.contains("prompt is empty"), "{err}");
    let (code, _, err) = plinth(&["imagine", "a cat", "-m", &fx("tiny-llama"), "-o", &o]);
    assert!(code != 0 && err.contains("not a text-to-image model"), "{err}");
}

#[test]
fn inspect_shows_text_to_image() {
    let (code, out, err) = plinth(&["inspect", &fx("tiny-sd")]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("latent diffusion") && out.contains("StableDiffusionPipeline"), "{out}");
    assert!(out.contains("modality     text → image"), "{out}");
    let (code, out, err) = plinth(&["inspect", &fx("tiny-sdxl"), "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["card"]["tasks"][0], "text-to-image", "{v}");
    assert_eq!(v["is_llm"], false);
    assert!(v["parameters"].as_u64().unwrap() > 0);
}
