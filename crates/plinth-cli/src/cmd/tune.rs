//! `plinth tune`: LoRA fine-tuning of a decoder. Flags are checked and the data read before
//! the (slow) model load; the data report is printed before the first step; the run writes
//! the PEFT adapter, checkpoints and `metrics.jsonl` (the library), `eval.jsonl` (the held-out
//! loss, with `--eval`) and `loss.png`.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use plinth_models::Decoder;
use plinth_train::lora::LoraSet;
use plinth_train::peft::QkLayout;
use plinth_train::train::checkpoint_dir;
use plinth_train::{read_records, tokenize, DataReport, Example, LoraConfig, RunOptions, StepInfo, TrainConfig};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::cli::TuneArgs;
use crate::cmd::generate::round2;
use crate::load;

/// One line of `DIR/eval.jsonl`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct EvalPoint {
    step: usize,
    eval_loss: f64,
}

/// The checks that need neither data nor model.
fn configs(a: &TuneArgs) -> Result<(LoraConfig, TrainConfig)> {
    let targets: Vec<String> = a.target_modules.iter().map(|t| t.trim().to_string()).filter(|t| !t.is_empty()).collect();
    let lora = LoraConfig { r: a.rank, alpha: a.alpha, dropout: a.dropout, target_modules: targets };
    lora.validate()?;
    let cfg = TrainConfig {
        epochs: a.epochs.unwrap_or(1),
        max_steps: a.max_steps,
        batch_size: a.batch_size.unwrap_or(4),
        grad_accum: a.grad_accum,
        lr: a.lr.unwrap_or(2e-4),
        warmup_steps: a.warmup,
        weight_decay: a.weight_decay,
        max_grad_norm: a.max_grad_norm,
        seed: a.seed,
        save_every: a.save_every,
    };
    cfg.validate()?;
    if a.weight_decay < 0.0 || !a.weight_decay.is_finite() {
        anyhow::bail!("invalid --weight-decay: must be 0 or more, got {}", a.weight_decay);
    }
    if a.max_grad_norm < 0.0 || a.max_grad_norm.is_nan() {
        anyhow::bail!("invalid --max-grad-norm: must be 0 (off) or more, got {}", a.max_grad_norm);
    }
    if a.max_len < 2 {
        anyhow::bail!("invalid --max-len: must be at least 2");
    }
    Ok((lora, cfg))
}

/// The step of the checkpoint in `out`, if there is one.
fn checkpoint_step(out: &Path) -> Option<usize> {
    let bytes = std::fs::read(checkpoint_dir(out).join("trainer_state.json")).ok()?;
    serde_json::from_slice::<serde_json::Value>(&bytes).ok()?.get("step")?.as_u64().map(|s| s as usize)
}

/// `adapter_config.json`'s `base_model_name_or_path`: the path of a local model, else the
/// name given (a catalog name or `org/name`).
fn base_name(spec: &str, location: &Path) -> String {
    if Path::new(spec).exists() {
        std::fs::canonicalize(location).unwrap_or_else(|_| location.to_path_buf()).display().to_string()
    } else {
        spec.to_string()
    }
}

fn describe(what: &str, file: &Path, r: &DataReport, max_len: usize, pack: bool) -> String {
    let shape = if pack { format!("packed into {max_len}-token windows") } else { format!("cut at --max-len {max_len}") };
    format!(
        "{what}: {} ({} records, {}) -> {} examples, {} tokens, {} label tokens; truncated {} ({shape}), dropped {} (nothing left to learn)",
        file.display(),
        r.records,
        r.format,
        r.examples,
        r.tokens,
        r.label_tokens,
        r.truncated,
        r.dropped
    )
}

/// Attaches the adapters of `set` to `model` as detached views of its variables (sharing
/// their storage, so they follow the optimizer's updates): forward passes then build no
/// autodiff graph and take the same numeric path as the base model without an adapter
/// (the quantized kernel for short inputs), so that losses with and without an adapter, here
/// and in `plinth eval`, compare like for like. `set.attach` restores the variables.
pub fn attach_for_inference(model: &dyn Decoder, set: &LoraSet) -> Result<()> {
    let layers = model.linear_layers();
    for e in &set.entries {
        let (_, lin) = layers.iter().find(|(n, _)| *n == e.name).with_context(|| format!("the model has no layer '{}'", e.name))?;
        lin.set_lora(Some(plinth_models::layers::Lora { a: e.a.as_tensor().detach(), b: e.b.as_tensor().detach(), scale: set.config.scale(), dropout: 0.0 }))?;
    }
    Ok(())
}

/// Mean loss per counted token over `examples` with the adapters of `set` (teacher-forced,
/// no autodiff), as `plinth eval` computes it; the training variables are attached again
/// afterwards.
fn eval_loss(model: &dyn Decoder, set: &LoraSet, examples: &[Example]) -> Result<f64> {
    attach_for_inference(model, set)?;
    let result = (|| -> Result<f64> {
        let (mut sum, mut count) = (0f64, 0usize);
        for ex in examples {
            let (l, n) = plinth_train::loss::sequence_loss_sum(model, &ex.ids, &ex.labels)?;
            sum += l.to_scalar::<f32>()? as f64;
            count += n;
        }
        anyhow::ensure!(count > 0, "the eval data has no position to score");
        Ok(sum / count as f64)
    })();
    set.attach(model)?;
    result
}

/// The points of `path` up to step `upto` (a resumed run recomputes those after its checkpoint).
fn read_eval_points(path: &Path, upto: usize) -> Vec<EvalPoint> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<EvalPoint>(l).ok())
        .filter(|p| p.step <= upto)
        .collect()
}

fn write_eval_points(path: &Path, points: &[EvalPoint]) -> Result<()> {
    let text: String = points.iter().map(|p| serde_json::to_string(p).unwrap_or_default() + "\n").collect();
    let tmp = path.with_extension("jsonl.part");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

fn append_eval_point(path: &Path, p: EvalPoint) -> Result<()> {
    let mut f = std::fs::OpenOptions::new().append(true).create(true).open(path).with_context(|| format!("writing {}", path.display()))?;
    writeln!(f, "{}", serde_json::to_string(&p)?).with_context(|| format!("writing {}", path.display()))
}

fn progress_bar(start: usize, total: usize) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total as u64);
    bar.set_style(
        ProgressStyle::with_template("training [{bar:30}] {pos}/{len} {msg} eta {eta}").expect("static template").progress_chars("=> "),
    );
    bar.set_position(start as u64);
    bar.reset_eta();
    bar
}

/// `--task classify`: a linear head on the frozen encoder's sentence embeddings.
fn run_classify(a: &TuneArgs) -> Result<()> {
    use plinth_train::classify::{tune_classifier, ClassifyConfig, ClassifyProgress};
    let defaults = ClassifyConfig::default();
    let cfg = ClassifyConfig {
        epochs: a.epochs.unwrap_or(defaults.epochs),
        batch_size: a.batch_size.unwrap_or(defaults.batch_size),
        lr: a.lr.unwrap_or(defaults.lr),
        weight_decay: if a.weight_decay > 0.0 { a.weight_decay } else { defaults.weight_decay },
        seed: a.seed,
        ..defaults
    };
    if a.resume {
        anyhow::bail!("--resume applies to --task lm (a classification head trains in seconds; run it again)");
    }
    let base = match load::resolve(&a.model.model)? {
        plinth_io::fetch::ModelLocation::Dir(d) => d,
        plinth_io::fetch::ModelLocation::Gguf(p) => anyhow::bail!("--task classify needs an encoder directory (e.g. all-minilm-l6-v2), not the GGUF file {}", p.display()),
    };
    let bar = std::cell::RefCell::new(None::<ProgressBar>);
    let quiet = a.json;
    let report = tune_classifier(&base, &a.data, a.eval.as_deref(), &a.out, &cfg, &mut |p| match p {
        ClassifyProgress::Embedding { done, total } => {
            let mut b = bar.borrow_mut();
            let b = b.get_or_insert_with(|| crate::cmd::embed::progress_bar(total, "embedding"));
            b.set_position(done as u64);
        }
        ClassifyProgress::Epoch(e) if !quiet && (e.epoch == 1 || e.epoch % 10 == 0 || e.epoch == cfg.epochs) => {
            if let Some(b) = bar.borrow_mut().take() {
                b.finish_and_clear();
            }
            let held = e.eval_accuracy.map_or(String::new(), |acc| format!(", held-out accuracy {acc:.3}"));
            eprintln!("epoch {}/{}: loss {:.4}, train accuracy {:.3}{held}", e.epoch, cfg.epochs, e.train_loss, e.train_accuracy);
        }
        ClassifyProgress::Epoch(_) => {}
    })?;
    if a.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("wrote {} ({} labels: {})", a.out.display(), report.labels.len(), report.labels.join(", "));
        if let (Some(before), Some(after)) = (report.baseline_eval_accuracy, report.eval_accuracy) {
            println!("held-out accuracy {before:.3} (majority class) -> {after:.3}");
        }
        println!("train accuracy {:.3}; use it with: plinth classify --model {}", report.train_accuracy, a.out.display());
    }
    Ok(())
}

pub fn run(a: TuneArgs) -> Result<()> {
    if a.task == "classify" {
        return run_classify(&a);
    }
    let t_start = Instant::now();
    let (lora, cfg) = configs(&a)?;
    let ckpt_step = checkpoint_step(&a.out);
    if let (Some(step), false) = (ckpt_step, a.resume) {
        anyhow::bail!(
            "{} already holds a training run (checkpoint at step {step}); pass --resume to continue it or choose another --out",
            a.out.display()
        );
    }
    // Data files are read (and malformed lines reported) before the model is loaded.
    let records = read_records(&a.data).context("reading --data")?;
    let eval_records = a.eval.as_ref().map(|p| read_records(p).context("reading --eval")).transpose()?;

    let m = load::load(&a.model)?;
    let model = m.model.as_ref();
    let set = LoraSet::init(model, lora, a.seed)?;
    let layout = QkLayout::of(&m.location, model);

    let (examples, report) = tokenize(&m.tokenizer, &records, a.max_len, a.pack).context("--data")?;
    let eval_data = match &eval_records {
        Some(r) => Some(tokenize(&m.tokenizer, r, a.max_len, false).context("--eval")?),
        None => None,
    };
    let total = cfg.total_steps(examples.len());
    let start = if a.resume { ckpt_step.unwrap_or(0).min(total) } else { 0 };
    let base_params = model.info().parameters;
    let params = set.parameters();
    if !a.json {
        eprintln!("{}", describe("data", &a.data, &report, a.max_len, a.pack));
        if let (Some(p), Some((_, r))) = (&a.eval, &eval_data) {
            eprintln!("{}", describe("eval", p, r, a.max_len, false));
        }
        let share = if base_params > 0 { format!(" ({:.2}% of {})", 100.0 * params as f64 / base_params as f64, base_params) } else { String::new() };
        eprintln!(
            "LoRA r {} alpha {} on {} layers: {} trainable parameters{share}; {} steps of {} sequence(s)",
            set.config.r,
            set.config.alpha,
            set.entries.len(),
            params,
            total,
            cfg.batch_size * cfg.grad_accum
        );
    } else {
        for (what, r) in std::iter::once(("--data", &report)).chain(eval_data.iter().map(|(_, r)| ("--eval", r))) {
            if r.truncated > 0 || r.dropped > 0 {
                eprintln!("warning: {what}: {} example(s) cut at --max-len {}, {} dropped", r.truncated, a.max_len, r.dropped);
            }
        }
    }
    if a.resume {
        match ckpt_step {
            Some(s) if !a.json => eprintln!("resuming from the checkpoint at step {s} of {total}"),
            Some(_) => {}
            None => eprintln!("warning: no checkpoint in {}; training from the start", a.out.display()),
        }
    }

    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let eval_path = a.out.join("eval.jsonl");
    let mut eval_points = Vec::new();
    let mut eval_before = None;
    if let Some((eval_examples, _)) = &eval_data {
        // The checkpointed adapter is not loaded yet, so on resume the loss "before" is that
        // of the fresh adapter (B = 0: the base model) only when starting from step 0.
        if start == 0 {
            let loss = eval_loss(model, &set, eval_examples)?;
            eval_before = Some(loss);
            eval_points.push(EvalPoint { step: 0, eval_loss: loss });
            if !a.json {
                eprintln!("eval loss before training: {loss:.4}");
            }
        } else {
            eval_points = read_eval_points(&eval_path, start);
            eval_before = eval_points.iter().find(|p| p.step == 0).map(|p| p.eval_loss);
        }
        write_eval_points(&eval_path, &eval_points)?;
    }

    let bar = progress_bar(start, total);
    let tty = std::io::stderr().is_terminal();
    let t_train = Instant::now();
    let (mut run_tokens, mut eval_error) = (0usize, None);
    let mut new_points = Vec::new();
    let history = plinth_train::train(
        model,
        &set,
        &examples,
        &cfg,
        RunOptions { out: &a.out, base_name: &base_name(&a.model.model, m.location.path()), resume: a.resume, layout },
        |s: &StepInfo| {
            run_tokens += s.tokens;
            let rate = run_tokens as f64 / t_train.elapsed().as_secs_f64().max(1e-9);
            bar.set_message(format!("loss {:.4} {:.0} tok/s", s.loss, rate));
            bar.set_position(s.step as u64);
            if !a.json && !tty {
                eprintln!("step {}/{} loss {:.4} lr {:.3e} grad norm {:.3} {:.0} tok/s", s.step, s.total_steps, s.loss, s.lr, s.grad_norm, s.tokens_per_s);
            }
            let due = s.step == s.total_steps || (cfg.save_every > 0 && s.step.is_multiple_of(cfg.save_every));
            if let (true, None, Some((eval_examples, _))) = (due, &eval_error, &eval_data) {
                match eval_loss(model, &set, eval_examples).and_then(|l| {
                    let p = EvalPoint { step: s.step, eval_loss: l };
                    append_eval_point(&eval_path, p)?;
                    Ok(p)
                }) {
                    Ok(p) => {
                        new_points.push(p);
                        bar.println(format!("step {}: eval loss {:.4}", p.step, p.eval_loss));
                        if !a.json && !tty {
                            eprintln!("step {}: eval loss {:.4}", p.step, p.eval_loss);
                        }
                    }
                    Err(e) => eval_error = Some(e),
                }
            }
        },
    );
    bar.finish_and_clear();
    let history = history?;
    if let Some(e) = eval_error {
        return Err(e.context("measuring the --eval loss (the adapter was saved)"));
    }
    let train_secs = t_train.elapsed().as_secs_f64();
    eval_points.extend(new_points);
    // A resumed run that had nothing left to do still reports the final eval loss.
    let mut eval_after = eval_points.iter().find(|p| p.step == total).map(|p| p.eval_loss);
    if let (None, Some((eval_examples, _))) = (eval_after, &eval_data) {
        let l = eval_loss(model, &set, eval_examples)?;
        append_eval_point(&eval_path, EvalPoint { step: total, eval_loss: l })?;
        eval_points.push(EvalPoint { step: total, eval_loss: l });
        eval_after = Some(l);
    }

    let png = a.out.join("loss.png");
    let train_pts: Vec<(f64, f64)> = history.iter().map(|s| (s.step as f64, s.loss)).collect();
    let eval_pts: Vec<(f64, f64)> = eval_points.iter().map(|p| (p.step as f64, p.eval_loss)).collect();
    let plotted = match crate::plot::loss_png(&png, &train_pts, &eval_pts) {
        Ok(text) => {
            if !text {
                eprintln!("warning: no TrueType font found (set PLINTH_FONT=/path/to/font.ttf); {} has no labels", png.display());
            }
            true
        }
        Err(e) => {
            eprintln!("warning: could not write {}: {e:#}", png.display());
            false
        }
    };

    let final_loss = history.last().map(|s| s.loss);
    let tokens_per_s = run_tokens as f64 / train_secs.max(1e-9);
    if a.json {
        let v = json!({
            "out": a.out.display().to_string(),
            "steps": history.len(),
            "resumed_from": if a.resume { ckpt_step } else { None },
            "final_loss": final_loss,
            "eval_loss": eval_data.as_ref().map(|_| json!({ "before": eval_before, "after": eval_after })),
            "data": report,
            "eval_data": eval_data.as_ref().map(|(_, r)| r),
            "trainable_parameters": params,
            "seconds": round2(t_start.elapsed().as_secs_f64()),
            "train_seconds": round2(train_secs),
            "tokens_per_s": round2(tokens_per_s),
            "loss_png": plotted.then(|| png.display().to_string()),
        });
        println!("{v}");
    } else {
        let first = history.first().map_or(f64::NAN, |s| s.loss);
        println!("trained {} steps in {:.1} s ({:.0} tokens/s): loss {:.4} -> {:.4}", history.len(), t_start.elapsed().as_secs_f64(), tokens_per_s, first, final_loss.unwrap_or(f64::NAN));
        if let (Some(b), Some(after)) = (eval_before, eval_after) {
            println!("eval loss {b:.4} -> {after:.4}");
        } else if let Some(after) = eval_after {
            println!("eval loss {after:.4}");
        }
        println!("adapter: {}", a.out.display());
        if plotted {
            println!("loss curve: {}", png.display());
        }
    }
    Ok(())
}
