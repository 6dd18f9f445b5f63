//! The LoRA training loop: seeded data order, gradient accumulation over micro-batches (the
//! loss of a step is the mean over every counted position of the step, as transformers' with
//! `num_items_in_batch`), global-norm clipping, AdamW with linear warm-up and cosine decay
//! (transformers' `get_cosine_schedule_with_warmup`), metrics as JSON lines, and atomic
//! checkpoints that a killed run resumes from to the same result.
//!
//! Determinism: the order of examples in epoch `e` is a permutation drawn from `seed + e`,
//! and step `s` always covers the same examples, so a resumed run computes exactly the steps
//! an uninterrupted one would (there is no dropout randomness to restore).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{Device, Tensor};
use plinth_core::{Error, Result};
use plinth_models::Decoder;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::data::Example;
use crate::lora::LoraSet;
use crate::loss::sequence_loss_sum;
use crate::optim::{clip_grad_norm, AdamW, AdamWConfig};
use crate::peft;

/// How to train.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrainConfig {
    pub epochs: usize,
    /// Stop after this many optimizer steps (overrides `epochs` when smaller).
    pub max_steps: Option<usize>,
    /// Sequences per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    pub grad_accum: usize,
    pub lr: f64,
    pub warmup_steps: usize,
    pub weight_decay: f64,
    /// Clip the global gradient norm to this (0 = off).
    pub max_grad_norm: f64,
    pub seed: u64,
    /// Write a checkpoint every this many steps (0 = only at the end).
    pub save_every: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig { epochs: 1, max_steps: None, batch_size: 4, grad_accum: 1, lr: 2e-4, warmup_steps: 0, weight_decay: 0.0, max_grad_norm: 1.0, seed: 42, save_every: 50 }
    }
}

impl TrainConfig {
    pub fn validate(&self) -> Result<()> {
        for (flag, v) in [("--epochs", self.epochs), ("--batch-size", self.batch_size), ("--grad-accum", self.grad_accum)] {
            if v == 0 {
                return Err(Error::invalid(flag, "must be at least 1"));
            }
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(Error::invalid("--lr", format!("must be positive, got {}", self.lr)));
        }
        if self.max_steps == Some(0) {
            return Err(Error::invalid("--max-steps", "must be at least 1"));
        }
        Ok(())
    }

    /// Optimizer steps for `n` examples.
    pub fn total_steps(&self, n: usize) -> usize {
        let per_epoch = n.div_ceil(self.batch_size * self.grad_accum).max(1);
        let all = per_epoch * self.epochs;
        self.max_steps.map_or(all, |m| m.min(all))
    }

    /// The learning rate of (0-based) step `s`: linear warm-up, then cosine decay to 0.
    pub fn lr_at(&self, s: usize, total: usize) -> f64 {
        if s < self.warmup_steps {
            return self.lr * s as f64 / self.warmup_steps.max(1) as f64;
        }
        let progress = (s - self.warmup_steps) as f64 / (total.saturating_sub(self.warmup_steps)).max(1) as f64;
        self.lr * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
    }
}

/// One finished optimizer step.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepInfo {
    pub step: usize,
    pub total_steps: usize,
    pub epoch: usize,
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
    /// Tokens (all positions) processed in this step.
    pub tokens: usize,
    pub tokens_per_s: f64,
    pub elapsed_s: f64,
}

/// Saved with each checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TrainerState {
    step: usize,
    config: TrainConfig,
    examples: usize,
    last_loss: f64,
}

/// Where a run keeps its checkpoint.
pub fn checkpoint_dir(out: &Path) -> PathBuf {
    out.join("checkpoint")
}

/// The examples of step `s`, as micro-batches.
fn step_examples(n: usize, cfg: &TrainConfig, s: usize) -> (usize, Vec<Vec<usize>>) {
    let per_step = cfg.batch_size * cfg.grad_accum;
    let start = s * per_step;
    let epoch = start / n;
    let mut order: Vec<usize> = (0..n).collect();
    let mut picked = Vec::with_capacity(per_step);
    let mut cur_epoch = usize::MAX;
    for k in start..start + per_step {
        let e = k / n;
        if e != cur_epoch {
            order = (0..n).collect();
            order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(cfg.seed.wrapping_add(e as u64)));
            cur_epoch = e;
        }
        picked.push(order[k % n]);
    }
    (epoch, picked.chunks(cfg.batch_size).map(<[usize]>::to_vec).collect())
}

/// Where a run writes and whether it picks up a checkpoint.
#[derive(Debug, Clone, Copy)]
pub struct RunOptions<'a> {
    /// Output directory: checkpoint, metrics, final adapter.
    pub out: &'a Path,
    /// The base model's name or path, recorded in `adapter_config.json`.
    pub base_name: &'a str,
    /// Continue from `out/checkpoint` when there is one.
    pub resume: bool,
    /// The base's q/k row order (`QkLayout::of(base, model)`), so that saved adapters are in
    /// Hugging Face order whatever file the base came from.
    pub layout: peft::QkLayout,
}

/// A training run over `examples` with the adapters of `set` (attached to `model`), writing
/// checkpoints, metrics and the final adapter under `run.out`. `on_step` sees every finished
/// step (progress bars). Returns every step's metrics, earlier ones of a resumed run included.
pub fn train(model: &dyn Decoder, set: &LoraSet, examples: &[Example], cfg: &TrainConfig, run: RunOptions<'_>, mut on_step: impl FnMut(&StepInfo)) -> Result<Vec<StepInfo>> {
    let RunOptions { out, base_name, resume, layout } = run;
    cfg.validate()?;
    if examples.is_empty() {
        return Err(Error::invalid("training data", "no examples"));
    }
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    set.attach(model)?;
    let vars = set.vars();
    let mut opt = AdamW::new(&vars, AdamWConfig { lr: cfg.lr, weight_decay: cfg.weight_decay, ..AdamWConfig::default() })?;
    let total = cfg.total_steps(examples.len());
    let mut start_step = 0;
    let ckpt = checkpoint_dir(out);
    if resume && ckpt.join("trainer_state.json").exists() {
        start_step = load_checkpoint(&ckpt, model, set, &mut opt, cfg, examples.len(), layout)?;
    }
    let metrics_path = out.join("metrics.jsonl");
    let mut history = read_metrics(&metrics_path, start_step);
    write_metrics(&metrics_path, &history)?;
    let mut metrics = std::fs::OpenOptions::new().append(true).create(true).open(&metrics_path).map_err(|e| Error::io(&metrics_path, e))?;
    let t0 = Instant::now();
    for s in start_step..total {
        let ts = Instant::now();
        let (epoch, micro) = step_examples(examples.len(), cfg, s);
        let counted: usize = micro.iter().flatten().map(|&i| examples[i].counted()).sum();
        let tokens: usize = micro.iter().flatten().map(|&i| examples[i].ids.len()).sum();
        let mut grads: Option<Vec<Tensor>> = None;
        let mut loss_sum = 0f64;
        for mb in &micro {
            let mut sum: Option<Tensor> = None;
            for &i in mb {
                // Dropout masks depend on (seed, step, example) only: a resumed run draws the same.
                plinth_models::layers::dropout_seed(cfg.seed.wrapping_mul(0x100_0000_01B3).wrapping_add((s as u64) << 32).wrapping_add(i as u64));
                let (l, n) = sequence_loss_sum(model, &examples[i].ids, &examples[i].labels)?;
                if n == 0 {
                    continue;
                }
                sum = Some(match sum {
                    Some(t) => (t + l)?,
                    None => l,
                });
            }
            let Some(sum) = sum else { continue };
            let loss = (sum / counted.max(1) as f64)?;
            loss_sum += loss.to_scalar::<f32>()? as f64;
            let g = loss.backward()?;
            let g: Vec<Tensor> = vars.iter().map(|v| g.get(v.as_tensor()).cloned().map_or_else(|| v.as_tensor().zeros_like(), Ok)).collect::<candle_core::Result<_>>()?;
            grads = Some(match grads {
                Some(acc) => acc.iter().zip(&g).map(|(a, b)| a + b).collect::<candle_core::Result<_>>()?,
                None => g,
            });
        }
        let Some(mut grads) = grads else {
            return Err(Error::invalid("training data", format!("step {} has no position to learn", s + 1)));
        };
        let grad_norm = if cfg.max_grad_norm > 0.0 { clip_grad_norm(&mut grads, cfg.max_grad_norm)? } else { clip_grad_norm(&mut grads, f64::INFINITY)? };
        if !loss_sum.is_finite() || !grad_norm.is_finite() {
            return Err(Error::invalid("training", format!("the loss diverged at step {} (loss {loss_sum}, gradient norm {grad_norm}); lower --lr", s + 1)));
        }
        let lr = cfg.lr_at(s, total);
        opt.step(&vars, &grads, lr)?;
        let last_loss = loss_sum;
        let info = StepInfo {
            step: s + 1,
            total_steps: total,
            epoch,
            loss: loss_sum,
            lr,
            grad_norm,
            tokens,
            tokens_per_s: tokens as f64 / ts.elapsed().as_secs_f64().max(1e-9),
            elapsed_s: t0.elapsed().as_secs_f64(),
        };
        writeln!(metrics, "{}", serde_json::to_string(&info).unwrap_or_default()).map_err(|e| Error::io(&metrics_path, e))?;
        on_step(&info);
        history.push(info);
        let done = s + 1;
        if (cfg.save_every > 0 && done % cfg.save_every == 0) || done == total {
            save_checkpoint(&ckpt, set, &opt, &TrainerState { step: done, config: cfg.clone(), examples: examples.len(), last_loss }, base_name, layout)?;
        }
    }
    peft::save(set, out, base_name, layout)?;
    Ok(history)
}

fn read_metrics(path: &Path, upto: usize) -> Vec<StepInfo> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<StepInfo>(l).ok())
        .filter(|s| s.step <= upto)
        .collect()
}

/// Rewrites the metrics file with the steps a resumed run keeps (a killed run may have
/// logged steps after its last checkpoint; they are computed again).
fn write_metrics(path: &Path, steps: &[StepInfo]) -> Result<()> {
    let text: String = steps.iter().map(|s| serde_json::to_string(s).unwrap_or_default() + "\n").collect();
    let tmp = path.with_extension("jsonl.part");
    std::fs::write(&tmp, text).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// Writes the checkpoint into a fresh directory and swaps it in with renames, so that a kill
/// at any moment leaves either the old or the new checkpoint complete.
fn save_checkpoint(dir: &Path, set: &LoraSet, opt: &AdamW, state: &TrainerState, base: &str, layout: peft::QkLayout) -> Result<()> {
    let parent = dir.parent().unwrap_or(Path::new("."));
    let tmp = parent.join(format!(".checkpoint.part-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    peft::save(set, &tmp, base, layout)?;
    let mut tensors = std::collections::HashMap::new();
    for (i, (m, v)) in opt.m.iter().zip(&opt.v).enumerate() {
        tensors.insert(format!("m.{i}"), m.clone());
        tensors.insert(format!("v.{i}"), v.clone());
    }
    tensors.insert("step".to_string(), Tensor::new(&[opt.step as f32], &Device::Cpu)?);
    let opt_path = tmp.join("optimizer.safetensors");
    candle_core::safetensors::save(&tensors, &opt_path).map_err(|e| Error::format(&opt_path, e.to_string()))?;
    let st = tmp.join("trainer_state.json");
    std::fs::write(&st, serde_json::to_string_pretty(state).unwrap_or_default()).map_err(|e| Error::io(&st, e))?;
    let old = parent.join(format!(".checkpoint.old-{}", std::process::id()));
    if dir.exists() {
        std::fs::rename(dir, &old).map_err(|e| Error::io(dir, e))?;
    }
    std::fs::rename(&tmp, dir).map_err(|e| Error::io(dir, e))?;
    let _ = std::fs::remove_dir_all(&old);
    Ok(())
}

/// Restores adapters and optimizer state; returns the number of steps already done.
fn load_checkpoint(dir: &Path, model: &dyn Decoder, set: &LoraSet, opt: &mut AdamW, cfg: &TrainConfig, examples: usize, layout: peft::QkLayout) -> Result<usize> {
    let st_path = dir.join("trainer_state.json");
    let st: TrainerState = serde_json::from_slice(&std::fs::read(&st_path).map_err(|e| Error::io(&st_path, e))?)
        .map_err(|e| Error::format(&st_path, e.to_string()))?;
    if &st.config != cfg || st.examples != examples {
        return Err(Error::invalid(
            "--resume",
            format!("the checkpoint in {} was made with other settings or data ({} examples, {:?}); start a new --out or drop --resume", dir.display(), st.examples, st.config),
        ));
    }
    let saved = peft::load(dir, model, layout)?;
    if saved.entries.len() != set.entries.len() {
        return Err(Error::invalid("--resume", format!("the checkpoint adapts {} layers, this run {}", saved.entries.len(), set.entries.len())));
    }
    for e in &set.entries {
        let s = saved.entries.iter().find(|s| s.name == e.name).ok_or_else(|| Error::invalid("--resume", format!("the checkpoint has no adapter for '{}'", e.name)))?;
        e.a.set(s.a.as_tensor())?;
        e.b.set(s.b.as_tensor())?;
    }
    let opt_path = dir.join("optimizer.safetensors");
    let t = candle_core::safetensors::load(&opt_path, &Device::Cpu).map_err(|e| Error::format(&opt_path, e.to_string()))?;
    for i in 0..opt.m.len() {
        let get = |k: String| t.get(&k).cloned().ok_or_else(|| Error::missing(&opt_path, k));
        opt.m[i] = get(format!("m.{i}"))?;
        opt.v[i] = get(format!("v.{i}"))?;
    }
    opt.step = st.step as u64;
    set.attach(model)?;
    Ok(st.step)
}
