//! The training loop on the tiny Llama: the loss falls, checkpoints are complete at every
//! step boundary, and a run interrupted after a checkpoint resumes to exactly the result of
//! an uninterrupted run (same seed, no dropout: equal within float tolerance).

use std::panic::{catch_unwind, AssertUnwindSafe};

use plinth_io::fetch::ModelLocation;
use plinth_models::{load_decoder, Decoder};
use plinth_testutil::fixture;
use plinth_train::peft::QkLayout;
use plinth_train::{train, Example, LoraConfig, LoraSet, RunOptions, TrainConfig, IGNORE};

/// Final loss of a resumed run vs an uninterrupted one.
const RESUME_TOL: f64 = 1e-5;

fn model() -> Box<dyn Decoder> {
    load_decoder(&ModelLocation::Dir(fixture("tiny-llama"))).unwrap().model
}

/// A learnable toy task: each sequence counts up from a start token; the first 4 positions
/// are prompt (not learned).
fn examples() -> Vec<Example> {
    (0..12u32)
        .map(|k| {
            let ids: Vec<u32> = (0..16).map(|i| (3 + k * 7 + i) % 250).collect();
            let labels = ids.iter().enumerate().map(|(i, &t)| if i < 4 { IGNORE } else { t as i64 }).collect();
            Example { ids, labels }
        })
        .collect()
}

fn config() -> TrainConfig {
    TrainConfig { epochs: 2, batch_size: 2, grad_accum: 2, lr: 3e-2, warmup_steps: 1, save_every: 2, max_grad_norm: 1.0, ..Default::default() }
}

fn lora() -> LoraConfig {
    LoraConfig { r: 4, alpha: 8.0, ..Default::default() }
}

#[test]
fn loss_falls_and_resume_matches_an_uninterrupted_run() {
    let ex = examples();
    let cfg = config();
    assert_eq!(cfg.total_steps(ex.len()), 6);
    let root = std::env::temp_dir().join(format!("plinth-train-loop-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);

    let m = model();
    let set = LoraSet::init(m.as_ref(), lora(), 1).unwrap();
    let full = train(m.as_ref(), &set, &ex, &cfg, RunOptions { out: &root.join("full"), base_name: "tiny-llama", resume: false, layout: QkLayout::Hf }, |_| {}).unwrap();
    assert_eq!(full.len(), 6);
    println!("losses: {:?}", full.iter().map(|s| s.loss).collect::<Vec<_>>());
    assert!(full[5].loss < full[0].loss * 0.8, "loss did not fall: {:?}", full.iter().map(|s| s.loss).collect::<Vec<_>>());
    assert!(root.join("full/adapter_model.safetensors").exists() && root.join("full/checkpoint/optimizer.safetensors").exists());
    assert_eq!(std::fs::read_to_string(root.join("full/metrics.jsonl")).unwrap().lines().count(), 6);
    assert_eq!(full[0].lr, 0.0, "warm-up starts at 0, as transformers' schedule");

    // Interrupted during step 3 (after the step-2 checkpoint), then resumed.
    let m = model();
    let set = LoraSet::init(m.as_ref(), lora(), 1).unwrap();
    let dir = root.join("resumed");
    let r = catch_unwind(AssertUnwindSafe(|| {
        train(m.as_ref(), &set, &ex, &cfg, RunOptions { out: &dir, base_name: "tiny-llama", resume: false, layout: QkLayout::Hf }, |s| {
            if s.step == 3 {
                panic!("simulated kill after step 3");
            }
        })
    }));
    assert!(r.is_err());
    assert!(dir.join("checkpoint/trainer_state.json").exists());
    let m = model();
    let set = LoraSet::init(m.as_ref(), lora(), 99).unwrap(); // different init: must be overwritten by the checkpoint
    let rest = train(m.as_ref(), &set, &ex, &cfg, RunOptions { out: &dir, base_name: "tiny-llama", resume: true, layout: QkLayout::Hf }, |_| {}).unwrap();
    assert_eq!(rest.len(), 6, "metrics keep the 2 checkpointed steps and add 4");
    assert_eq!(std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap().lines().count(), 6);
    for (a, b) in full.iter().zip(&rest) {
        assert!((a.loss - b.loss).abs() <= RESUME_TOL, "step {}: {} vs {}", a.step, a.loss, b.loss);
    }

    // Changed settings refuse to resume.
    let m = model();
    let set = LoraSet::init(m.as_ref(), lora(), 1).unwrap();
    let other = TrainConfig { lr: 1e-3, ..cfg };
    let e = train(m.as_ref(), &set, &ex, &other, RunOptions { out: &dir, base_name: "tiny-llama", resume: true, layout: QkLayout::Hf }, |_| {}).unwrap_err().to_string();
    assert!(e.contains("--resume"), "{e}");
    std::fs::remove_dir_all(&root).unwrap();
}

/// LoRA dropout: seeded, so two runs (and a resumed one) agree; and it does change training.
#[test]
fn dropout_is_reproducible_and_active() {
    let ex = examples();
    let cfg = TrainConfig { max_steps: Some(3), ..config() };
    let root = std::env::temp_dir().join(format!("plinth-train-dropout-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let run = |dropout: f64, name: &str| {
        let m = model();
        let set = LoraSet::init(m.as_ref(), LoraConfig { dropout, ..lora() }, 1).unwrap();
        let out = root.join(name);
        train(m.as_ref(), &set, &ex, &cfg, RunOptions { out: &out, base_name: "tiny-llama", resume: false, layout: QkLayout::Hf }, |_| {})
            .unwrap()
            .iter()
            .map(|s| s.loss)
            .collect::<Vec<_>>()
    };
    let (a, b, none) = (run(0.2, "a"), run(0.2, "b"), run(0.0, "none"));
    assert_eq!(a, b, "same seed, same masks");
    assert_eq!(a[0], none[0], "B starts at 0, so the first loss does not see dropout");
    assert_ne!(a[2], none[2], "dropout changes the trajectory");
    std::fs::remove_dir_all(&root).unwrap();
}
