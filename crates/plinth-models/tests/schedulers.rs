//! The schedulers against diffusers 0.42 (fixtures/schedulers, written by
//! scripts/make_scheduler_refs.py): timesteps, sigmas and init_noise_sigma for 12 configs x
//! {1, 2, 4, 25, 50} steps, and full denoising loops on fixed arrays (model outputs and noise
//! from pools, step i using pool[i % 8]) comparing every `scale_model_input` output and
//! `prev_sample`; plus the errors for bad input.
//!
//! Tolerances: timesteps |Δ| ≤ 1e-3 (diffusers keeps them as float32); sigmas and
//! init_noise_sigma |Δ| ≤ 1e-6 relative; loop tensors |Δ| ≤ 1e-5 · max(1, |ref|) — absolute
//! 1e-5 for values up to 1 and relative 1e-5 above, since Euler latents start at
//! init_noise_sigma (14.6 for SD) where float32's ulp alone is 1e-6.
//!
//! Zero-terminal-SNR configs (`rescale_betas_zero_snr`) get looser bounds: sigmas 5e-6
//! relative, loop tensors 1e-5 · max(1, max |step input|). torch's float32 `sqrt` on this CPU
//! (AVX-512) is not correctly rounded (1 ulp off for ~18% of the schedule), the rescale
//! passes those ulps through a subtraction, and the Euler latent starts at sigma 4096, where
//! one float32 ulp is 5e-4 and a step's output is a difference of such numbers; these loops
//! also restart every step from diffusers' sample instead of their own.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use plinth_models::diffusion::scheduler::{Scheduler, SchedulerConfig, SchedulerKind};
use plinth_testutil::fixture;
use serde_json::{json, Value};

struct Refs {
    meta: Value,
    tensors: HashMap<String, Tensor>,
}

fn refs() -> Refs {
    let meta: Value = serde_json::from_str(&std::fs::read_to_string(fixture("schedulers/refs.json")).unwrap()).unwrap();
    let tensors = candle_core::safetensors::load(fixture("schedulers/loops.safetensors"), &Device::Cpu).unwrap();
    Refs { meta, tensors }
}

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

fn zero_snr(case: &Value) -> bool {
    case["config"]["rescale_betas_zero_snr"].as_bool() == Some(true)
}

fn build(case: &Value, steps: usize) -> Scheduler {
    let cfg = SchedulerConfig::from_json(&case["config"]).unwrap();
    let kind: SchedulerKind = case["kind"].as_str().unwrap().parse().unwrap();
    Scheduler::new(kind, &cfg, steps, case["eta"].as_f64().unwrap()).unwrap()
}

#[test]
fn schedules_match_diffusers() {
    let r = refs();
    let (mut worst_t, mut worst_s, mut worst_init, mut worst_s_zsnr) = (0f64, 0f64, 0f64, 0f64);
    let mut checked = 0;
    for case in r.meta["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        for (steps, s) in case["schedules"].as_object().unwrap() {
            let steps: usize = steps.parse().unwrap();
            let sched = build(case, steps);
            let sigma_tol = if zero_snr(case) { 5e-6 } else { 1e-6 };
            let (ts, sig) = (f64s(&s["timesteps"]), f64s(&s["sigmas"]));
            assert_eq!(sched.timesteps().len(), ts.len(), "{name}/{steps}: number of timesteps");
            for (a, b) in sched.timesteps().iter().zip(&ts) {
                worst_t = worst_t.max((a - b).abs());
                assert!((a - b).abs() <= 1e-3, "{name}/{steps}: timesteps {:?} vs diffusers {ts:?}", sched.timesteps());
            }
            assert_eq!(sched.sigmas().len(), sig.len(), "{name}/{steps}: number of sigmas");
            for (a, b) in sched.sigmas().iter().zip(&sig) {
                let rel = if *b == 0.0 { a.abs() } else { ((a - b) / b).abs() };
                if zero_snr(case) {
                    worst_s_zsnr = worst_s_zsnr.max(rel);
                } else {
                    worst_s = worst_s.max(rel);
                }
                assert!(rel <= sigma_tol, "{name}/{steps}: sigma {a} vs diffusers {b} (rel {rel:e})");
            }
            let init = s["init_noise_sigma"].as_f64().unwrap();
            let rel = ((sched.init_noise_sigma() - init) / init).abs();
            worst_init = worst_init.max(rel);
            assert!(rel <= sigma_tol, "{name}/{steps}: init_noise_sigma {} vs {init}", sched.init_noise_sigma());
            checked += 1;
        }
    }
    println!(
        "{checked} schedules: max |Δ timestep| {worst_t:e}, max rel Δ sigma {worst_s:e} (zero-SNR configs {worst_s_zsnr:e}), max rel Δ init_noise_sigma {worst_init:e}"
    );
    assert!(checked >= 60);
}

/// (max |a - b| / max(floor, |b|), max |a - b|) over the elements.
fn max_scaled_diff(a: &Tensor, b: &Tensor, floor: f64) -> (f64, f64) {
    let a: Vec<f32> = a.flatten_all().unwrap().to_vec1().unwrap();
    let b: Vec<f32> = b.flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(a.len(), b.len());
    let mut worst = (0f64, 0f64); // (scaled error, absolute error)
    for (x, y) in a.iter().zip(&b) {
        let d = (*x as f64 - *y as f64).abs();
        let scaled = d / (y.abs() as f64).max(floor);
        assert!(x.is_finite(), "non-finite output");
        if scaled > worst.0 {
            worst.0 = scaled;
        }
        worst.1 = worst.1.max(d);
    }
    worst
}

#[test]
fn loops_match_diffusers() {
    let r = refs();
    let t = |k: &str| r.tensors.get(k).unwrap_or_else(|| panic!("fixture tensor {k}")).clone();
    let (sample0, mo_pool, nz_pool) = (t("sample0"), t("model_output_pool"), t("noise_pool"));
    let pool = r.meta["pool"].as_u64().unwrap() as usize;
    let (mut worst_scaled, mut worst_abs, mut steps_checked) = (0f64, 0f64, 0);
    for case in r.meta["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let (mut case_worst, mut case_abs) = (0f64, 0f64);
        for steps in case["loops"].as_array().unwrap() {
            let steps = steps.as_u64().unwrap() as usize;
            let mut sched = build(case, steps);
            let (ref_scaled, ref_prev) = (t(&format!("{name}/{steps}/scaled")), t(&format!("{name}/{steps}/prev")));
            let mut sample = sample0.affine(sched.init_noise_sigma() as f32 as f64, 0.0).unwrap();
            for i in 0..steps {
                // The tolerance's floor: 1, or for zero-SNR configs the step input's magnitude.
                let floor = if zero_snr(case) {
                    sample.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap().max(1.0) as f64
                } else {
                    1.0
                };
                let mo = mo_pool.get(i % pool).unwrap();
                let noise = nz_pool.get(i % pool).unwrap();
                let scaled = sched.scale_model_input(&sample, i).unwrap();
                let (s, a) = max_scaled_diff(&scaled, &ref_scaled.get(i).unwrap(), floor);
                assert!(s <= 1e-5, "{name}/{steps} step {i}: scale_model_input off by {a:e} (scaled {s:e})");
                let prev = sched.step(&mo, i, &sample, Some(&noise)).unwrap();
                let (s2, a2) = max_scaled_diff(&prev, &ref_prev.get(i).unwrap(), floor);
                assert!(s2 <= 1e-5, "{name}/{steps} step {i}: prev_sample off by {a2:e} (scaled {s2:e})");
                worst_scaled = worst_scaled.max(s.max(s2));
                worst_abs = worst_abs.max(a.max(a2));
                case_worst = case_worst.max(s.max(s2));
                case_abs = case_abs.max(a.max(a2));
                // Zero-SNR loops restart each step from diffusers' sample: the first step's
                // 1-ulp-at-4096 differences would otherwise dominate every later comparison.
                sample = if zero_snr(case) { ref_prev.get(i).unwrap() } else { prev };
                steps_checked += 1;
            }
        }
        println!("{name}: max |Δ|/max(floor,|ref|) {case_worst:.2e}, max |Δ| {case_abs:.2e}");
    }
    println!("{steps_checked} steps: max |Δ|/max(floor,|ref|) {worst_scaled:e}, max |Δ| {worst_abs:e}");
    assert!(steps_checked > 400);
}

fn cfg(v: Value) -> SchedulerConfig {
    SchedulerConfig::from_json(&v).unwrap()
}

fn err_text<T: std::fmt::Debug>(r: plinth_core::Result<T>) -> String {
    r.expect_err("expected an error").to_string()
}

#[test]
fn kinds_parse_and_name() {
    for k in SchedulerKind::all() {
        assert_eq!(k.name().parse::<SchedulerKind>().unwrap(), *k);
    }
    assert_eq!("Euler_Ancestral".parse::<SchedulerKind>().unwrap(), SchedulerKind::EulerAncestral);
    assert_eq!("DDIM".parse::<SchedulerKind>().unwrap(), SchedulerKind::Ddim);
    let e = err_text("pndm".parse::<SchedulerKind>());
    assert!(e.contains("expected one of euler-a, euler, ddim"), "{e}");
    assert!(SchedulerKind::EulerAncestral.needs_noise() && !SchedulerKind::Euler.needs_noise());
}

#[test]
fn default_kind_from_class_name() {
    let k = |c: &str| cfg(json!({"_class_name": c})).default_kind();
    assert_eq!(k("EulerDiscreteScheduler"), Some(SchedulerKind::Euler));
    assert_eq!(k("EulerAncestralDiscreteScheduler"), Some(SchedulerKind::EulerAncestral));
    assert_eq!(k("DDIMScheduler"), Some(SchedulerKind::Ddim));
    assert_eq!(k("PNDMScheduler"), None);
    assert_eq!(cfg(json!({})).default_kind(), None);
}

#[test]
fn class_defaults_differ_per_kind() {
    // No timestep_spacing: Euler uses linspace (first timestep 999), DDIM leading (first 750).
    let c = cfg(json!({"_class_name": "PNDMScheduler", "steps_offset": 0, "trained_betas": null}));
    assert_eq!(Scheduler::new(SchedulerKind::Euler, &c, 4, 0.0).unwrap().timesteps()[0], 999.0);
    assert_eq!(Scheduler::new(SchedulerKind::Ddim, &c, 4, 0.0).unwrap().timesteps()[0], 750.0);
}

#[test]
fn bad_steps_and_eta() {
    let c = cfg(json!({"num_train_timesteps": 1000}));
    let e = err_text(Scheduler::new(SchedulerKind::Euler, &c, 0, 0.0));
    assert!(e.contains("steps") && e.contains("1..=1000"), "{e}");
    let e = err_text(Scheduler::new(SchedulerKind::Ddim, &c, 1001, 0.0));
    assert!(e.contains("1001"), "{e}");
    let small = cfg(json!({"num_train_timesteps": 100}));
    assert!(Scheduler::new(SchedulerKind::Euler, &small, 101, 0.0).is_err());
    assert!(Scheduler::new(SchedulerKind::Euler, &small, 100, 0.0).is_ok());
    let e = err_text(Scheduler::new(SchedulerKind::Euler, &c, 4, 0.5));
    assert!(e.contains("only the ddim scheduler takes eta"), "{e}");
    assert!(Scheduler::new(SchedulerKind::Ddim, &c, 4, -0.1).is_err());
    assert!(Scheduler::new(SchedulerKind::Ddim, &c, 4, f64::NAN).is_err());
    assert!(Scheduler::new(SchedulerKind::Ddim, &c, 4, 1.5).is_err());
    // leading + steps_offset 1 with 1000 steps reaches timestep 1000, which DDIM cannot index.
    let off = cfg(json!({"steps_offset": 1}));
    let e = err_text(Scheduler::new(SchedulerKind::Ddim, &off, 1000, 0.0));
    assert!(e.contains("timestep 1000"), "{e}");
}

#[test]
fn unsupported_config_values() {
    let cases = [
        (json!({"beta_schedule": "sigmoid"}), SchedulerKind::Euler, "beta_schedule"),
        (json!({"prediction_type": "flow"}), SchedulerKind::Euler, "prediction_type"),
        (json!({"timestep_spacing": "karras"}), SchedulerKind::Euler, "timestep_spacing"),
        (json!({"trained_betas": [0.1, 0.2]}), SchedulerKind::Euler, "trained_betas"),
        (json!({"use_karras_sigmas": true}), SchedulerKind::Euler, "use_karras_sigmas"),
        (json!({"use_exponential_sigmas": true}), SchedulerKind::Euler, "use_exponential_sigmas"),
        (json!({"use_beta_sigmas": true}), SchedulerKind::Euler, "use_beta_sigmas"),
        (json!({"timestep_type": "continuous"}), SchedulerKind::Euler, "timestep_type"),
        (json!({"final_sigmas_type": "sigma_min"}), SchedulerKind::Euler, "final_sigmas_type"),
        (json!({"interpolation_type": "log_linear"}), SchedulerKind::Euler, "interpolation_type"),
        (json!({"thresholding": true}), SchedulerKind::Ddim, "thresholding"),
        (json!({"prediction_type": "sample"}), SchedulerKind::EulerAncestral, "sample"),
        (
            json!({"rescale_betas_zero_snr": true, "timestep_spacing": "trailing"}),
            SchedulerKind::Ddim,
            "rescale_betas_zero_snr",
        ),
    ];
    for (v, kind, key) in cases {
        let e = match SchedulerConfig::from_json(&v) {
            Err(e) => e,
            Ok(c) => Scheduler::new(kind, &c, 4, 0.0).expect_err(&format!("{v} should be refused")),
        };
        assert!(matches!(e, plinth_core::Error::Unsupported { .. }), "{v}: {e:?}");
        assert!(e.to_string().contains(key), "{v}: {e}");
    }
    // Keys only another class reads are ignored, as diffusers' from_config ignores them.
    let c = cfg(json!({"use_karras_sigmas": true, "thresholding": false}));
    assert!(Scheduler::new(SchedulerKind::Ddim, &c, 4, 0.0).is_ok());
    assert!(Scheduler::new(SchedulerKind::EulerAncestral, &c, 4, 0.0).is_ok());
}

#[test]
fn malformed_config() {
    for v in [
        json!([1, 2]),
        json!({"beta_start": "small"}),
        json!({"num_train_timesteps": -5}),
        json!({"num_train_timesteps": 1.5}),
        json!({"num_train_timesteps": 0}),
        json!({"num_train_timesteps": 1_000_000_000u64}),
        json!({"beta_start": 0.0}),
        json!({"beta_end": 1.5}),
        json!({"clip_sample": "yes"}),
        json!({"steps_offset": 1000}),
        json!({"clip_sample_range": -1.0}),
    ] {
        let e = SchedulerConfig::from_json(&v).expect_err(&format!("{v} should be refused"));
        assert!(matches!(e, plinth_core::Error::Format { .. }), "{v}: {e:?}");
    }
    let dir = std::env::temp_dir().join(format!("plinth-sched-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("scheduler_config.json");
    std::fs::write(&p, "{\"beta_start\": 0.00085,").unwrap();
    let e = SchedulerConfig::load(&p).unwrap_err();
    assert!(matches!(e, plinth_core::Error::Format { .. }) && e.to_string().contains("scheduler_config.json"), "{e}");
    std::fs::write(&p, r#"{"_class_name": "EulerDiscreteScheduler", "beta_schedule": "scaled_linear"}"#).unwrap();
    let c = SchedulerConfig::load(&p).unwrap();
    assert_eq!(c.default_kind(), Some(SchedulerKind::Euler));
    assert!(matches!(SchedulerConfig::load(Path::new("/nonexistent/x.json")), Err(plinth_core::Error::Io { .. })));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn step_input_errors() {
    let c = cfg(json!({"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}));
    let x = Tensor::zeros((1, 4, 8, 8), candle_core::DType::F32, &Device::Cpu).unwrap();
    let mut ea = Scheduler::new(SchedulerKind::EulerAncestral, &c, 2, 0.0).unwrap();
    assert!(ea.needs_noise());
    assert!(err_text(ea.step(&x, 0, &x, None)).contains("noise"));
    assert!(err_text(ea.step(&x, 2, &x, Some(&x))).contains("2 steps"));
    let wrong = Tensor::zeros((1, 4, 8, 9), candle_core::DType::F32, &Device::Cpu).unwrap();
    assert!(matches!(ea.step(&wrong, 0, &x, Some(&x)), Err(plinth_core::Error::Shape { .. })));
    assert!(matches!(ea.step(&x, 0, &x, Some(&wrong)), Err(plinth_core::Error::Shape { .. })));
    assert!(ea.scale_model_input(&x, 5).is_err());
    let mut eu = Scheduler::new(SchedulerKind::Euler, &c, 2, 0.0).unwrap();
    assert!(!eu.needs_noise());
    assert!(eu.step(&x, 0, &x, None).is_ok());
    let mut dd = Scheduler::new(SchedulerKind::Ddim, &c, 2, 0.0).unwrap();
    assert!(!dd.needs_noise() && dd.sigmas().is_empty() && dd.init_noise_sigma() == 1.0);
    assert!(dd.step(&x, 1, &x, None).is_ok());
    let mut dd_eta = Scheduler::new(SchedulerKind::Ddim, &c, 2, 0.5).unwrap();
    assert!(dd_eta.needs_noise());
    assert!(dd_eta.step(&x, 0, &x, None).is_err());
}

/// NoiseRng against the script's from-the-specification ChaCha8 + Box-Muller (exact f32
/// equality: both round the same f64 values; a 1-ulp difference in the platform's f64 `log`
/// or `cos` would have to straddle a float32 rounding boundary to show up).
#[test]
fn noise_matches_independent_chacha8() {
    use plinth_models::diffusion::noise::NoiseRng;
    let r = refs();
    for (seed, key) in [(0u64, "noise_seed0"), (42, "noise_seed42")] {
        let want: Vec<f32> = f64s(&r.meta[key]).into_iter().map(|x| x as f32).collect();
        let t = NoiseRng::new(seed).randn(&[2, 4]).unwrap();
        let got: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(got, want, "seed {seed}");
        // Same seed, same tensor; another seed, another tensor.
        let again: Vec<f32> = NoiseRng::new(seed).randn(&[2, 4]).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(got, again);
    }
    assert_ne!(f64s(&r.meta["noise_seed0"]), f64s(&r.meta["noise_seed42"]));
}
