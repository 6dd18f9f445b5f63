//! Parity with Pillow 13 and transformers 5.24's PIL-backend image processors, against the
//! committed references of `scripts/make_image_fixtures.py` in `fixtures/images/`.
//! Tolerances: decoding of lossless formats and resizing are compared exactly (u8); processor
//! `pixel_values` within 1e-5 (they are expected to be bit-identical); JPEG decoding within
//! a stated bound, since `image` and libjpeg-turbo use different IDCTs and upsampling.

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use plinth_image::{
    decode_image, idefics3_image_prompt, load_image, resize, Filter, ImageLimits, ImageProcessor, RgbImage,
};
use serde_json::Value;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/images")
}

fn manifest() -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir().join("manifest.json")).unwrap()).unwrap()
}

fn tensors(name: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(dir().join(name), &Device::Cpu).unwrap()
}

fn names(m: &Value, key: &str) -> Vec<String> {
    m[key].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect()
}

fn load(name: &str) -> RgbImage {
    load_image(dir().join(name), &ImageLimits::default()).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn u8_image(t: &Tensor) -> RgbImage {
    let (h, w, c) = t.dims3().unwrap();
    assert_eq!(c, 3);
    RgbImage::from_raw(w as u32, h as u32, t.flatten_all().unwrap().to_vec1::<u8>().unwrap()).unwrap()
}

fn max_u8_delta(a: &RgbImage, b: &RgbImage) -> u8 {
    assert_eq!(a.dimensions(), b.dimensions());
    a.as_raw().iter().zip(b.as_raw()).map(|(x, y)| x.abs_diff(*y)).max().unwrap_or(0)
}

fn fnv1a64(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{h:016x}")
}

fn filter(name: &str) -> Filter {
    match name {
        "nearest" => Filter::Nearest,
        "box" => Filter::Box,
        "bilinear" => Filter::Bilinear,
        "hamming" => Filter::Hamming,
        "bicubic" => Filter::Bicubic,
        "lanczos" => Filter::Lanczos,
        _ => panic!("filter {name}"),
    }
}

#[test]
fn lossless_decoding_matches_pillow_convert_to_rgb() {
    let m = manifest();
    let refs = tensors("decoded_rgb.safetensors");
    let lossless = names(&m, "lossless");
    assert!(lossless.len() >= 12);
    for name in &lossless {
        let got = load(name);
        let want = u8_image(&refs[name]);
        let d = max_u8_delta(&got, &want);
        assert_eq!(d, 0, "{name}: decoded RGB differs from Pillow + convert_to_rgb by max |d| = {d}");
    }
}

#[test]
fn jpeg_decode_is_close_to_pillow() {
    let refs = tensors("decoded_rgb.safetensors");
    let got = load("n_61x97.jpg");
    let want = u8_image(&refs["n_61x97.jpg"]);
    let d = max_u8_delta(&got, &want);
    let mean: f64 = got.as_raw().iter().zip(want.as_raw()).map(|(a, b)| a.abs_diff(*b) as f64).sum::<f64>()
        / got.as_raw().len() as f64;
    eprintln!("JPEG decode vs Pillow: max |d| = {d}, mean |d| = {mean:.3}");
    assert!(d <= 8 && mean < 1.0, "JPEG decode vs Pillow: max |d| = {d}, mean |d| = {mean:.3} (bound 8 / 1.0)");
}

#[test]
fn resize_is_bit_exact_with_pillow() {
    let m = manifest();
    let decoded = tensors("decoded_rgb.safetensors");
    let full = tensors("resize_full.safetensors");
    // Full arrays: report the largest difference, which must be 0.
    let mut worst = (0u8, String::new());
    for (key, want) in &full {
        let mut parts = key.rsplitn(3, '/');
        let (size, f, img) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
        let (w, h) = size.split_once('x').unwrap();
        let src = u8_image(&decoded[img]);
        let got = resize(&src, w.parse().unwrap(), h.parse().unwrap(), filter(f));
        let d = max_u8_delta(&got, &u8_image(want));
        if d > worst.0 {
            worst = (d, key.clone());
        }
    }
    eprintln!("resize vs Pillow: {} full outputs, max |d| = {}", full.len(), worst.0);
    assert_eq!(worst.0, 0, "resize vs Pillow: max |d| = {} at {}", worst.0, worst.1);
    // Hashes of many more sizes (up- and down-scaling, 1-pixel edges).
    let hashes = m["resize_hashes"].as_object().unwrap();
    assert!(hashes.len() > 500, "{} hashed resizes", hashes.len());
    let mut bad = vec![];
    for (key, want) in hashes {
        let mut parts = key.rsplitn(3, '/');
        let (size, f, img) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
        let (w, h) = size.split_once('x').unwrap();
        let src = u8_image(&decoded[img]);
        let got = resize(&src, w.parse().unwrap(), h.parse().unwrap(), filter(f));
        if fnv1a64(got.as_raw()) != want.as_str().unwrap() {
            bad.push(key.clone());
        }
    }
    eprintln!("resize vs Pillow: {} hashed outputs, {} differ", hashes.len(), bad.len());
    assert!(bad.is_empty(), "{} of {} resizes differ from Pillow, e.g. {:?}", bad.len(), hashes.len(), &bad[..bad.len().min(8)]);
}

#[test]
fn processors_match_transformers_pil_backend() {
    let m = manifest();
    let procs = m["processors"].as_object().unwrap();
    assert!(procs.len() >= 7);
    for (name, entry) in procs {
        let cfg_path = dir().join(format!("proc_{name}.json"));
        let cfg: Value = serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
        let p = ImageProcessor::from_json(&cfg, &cfg_path).unwrap();
        let refs = tensors(&format!("proc_{name}.safetensors"));
        let mut worst = 0f32;
        for (img, info) in entry["images"].as_object().unwrap() {
            let out = p.preprocess(&load(img)).unwrap_or_else(|e| panic!("{name}/{img}: {e}"));
            let want = &refs[img];
            assert_eq!(out.pixel_values.dims(), want.dims(), "{name}/{img}: tiles x 3 x H x W");
            assert_eq!(out.rows as u64, info["rows"].as_u64().unwrap(), "{name}/{img}: rows");
            assert_eq!(out.cols as u64, info["cols"].as_u64().unwrap(), "{name}/{img}: cols");
            let d = (out.pixel_values.to_dtype(DType::F32).unwrap() - want)
                .unwrap()
                .abs()
                .unwrap()
                .flatten_all()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            worst = worst.max(d);
        }
        eprintln!("{name}: pixel_values max |d| = {worst:e} ({})", p.describe());
        assert!(worst <= 1e-5, "{name}: pixel_values vs transformers PIL backend max |d| = {worst:e} (tolerance 1e-5)");
    }
}

#[test]
fn image_size_of_each_processor() {
    let p = |n: &str| {
        let path = dir().join(format!("proc_{n}.json"));
        let cfg: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        ImageProcessor::from_json(&cfg, &path).unwrap()
    };
    assert_eq!(p("clip_small").image_size(), 32);
    assert_eq!(p("clip_default").image_size(), 224);
    assert_eq!(p("siglip_small").image_size(), 48);
    assert_eq!(p("idefics3_small").image_size(), 32);
}

#[test]
fn idefics3_prompt_matches_processor_strings() {
    let m = manifest();
    for (key, want) in m["idefics3_prompts"].as_object().unwrap() {
        let (r, c) = key.split_once('x').unwrap();
        let got = idefics3_image_prompt(
            r.parse().unwrap(),
            c.parse().unwrap(),
            3,
            "<fake_token_around_image>",
            "<image>",
            "<global-img>",
        );
        assert_eq!(got, want.as_str().unwrap(), "rows x cols = {key}");
    }
}

#[test]
fn broken_files_are_rejected_with_named_problems() {
    let limits = ImageLimits::default();
    let err = |name: &str| load_image(dir().join(name), &limits).unwrap_err().to_string();
    let e = err("bad_not_image.txt");
    assert!(e.contains("not an image (unrecognised format"), "{e}");
    let e = err("bad_empty.png");
    assert!(e.contains("not an image"), "{e}");
    let e = err("bad_truncated.png");
    assert!(e.contains("corrupt/truncated PNG"), "{e}");
    let e = err("bad_corrupt.png");
    assert!(e.contains("corrupt/truncated PNG"), "{e}");
    let e = err("bad_truncated.jpg");
    assert!(e.contains("corrupt/truncated JPEG"), "{e}");
    // The bomb is refused from its header: 30000 x 30000 x 3 bytes are never allocated.
    let e = err("bad_bomb_30000x30000.png");
    assert!(e.contains("image is 30000x30000 = 900 Mpx, limit 50 Mpx"), "{e}");
    assert!(e.contains("bad_bomb_30000x30000.png"), "{e}");
    // Byte limit before anything else.
    let bytes = std::fs::read(dir().join("m_150x100.png")).unwrap();
    let e = decode_image(&bytes, &ImageLimits { max_bytes: 1000, ..limits }).unwrap_err().to_string();
    assert!(e.contains(&format!("image file is {} bytes, limit 1000 bytes", bytes.len())), "{e}");
    let e = decode_image(&bytes, &ImageLimits { max_pixels: 14_999, ..limits }).unwrap_err().to_string();
    assert!(e.contains("image is 150x100 = 0.01"), "{e}");
}

#[test]
fn gif_uses_the_first_frame() {
    let refs = tensors("decoded_rgb.safetensors");
    let got = load("g_150x110_2frames.gif");
    assert_eq!(max_u8_delta(&got, &u8_image(&refs["g_150x110_2frames.gif"])), 0);
}
