//! `plinth eval`: perplexity of a text file, or answer accuracy and reference loss on held-out
//! records, for a model with or without a LoRA adapter (`--compare`: both, side by side).

use std::io::IsTerminal;
use std::path::Path;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use plinth_models::Decoder;
use plinth_tokenize::Tokenizer;
use plinth_train::eval::{self, AccuracyReport, EvalOptions, PerplexityOptions, PerplexityReport};
use plinth_train::{peft, LoraSet, QkLayout, Record};
use serde_json::{json, Value};

use crate::cli::EvalArgs;
use crate::load;

/// What is measured.
enum Task {
    Perplexity(Vec<u32>),
    Accuracy(Vec<eval::Example>),
}

/// One model's result.
enum Outcome {
    Perplexity(PerplexityReport),
    Accuracy(AccuracyReport),
}

impl Outcome {
    fn to_json(&self) -> Value {
        match self {
            Outcome::Perplexity(r) => json!({ "perplexity": r }),
            Outcome::Accuracy(r) => json!({ "accuracy": r }),
        }
    }

    /// `(label, value, lower is better)` rows of the summary table.
    fn rows(&self) -> Vec<(&'static str, f64, bool)> {
        match self {
            Outcome::Perplexity(r) => vec![("perplexity", r.ppl, true), ("mean NLL (nats/token)", r.nll_mean, true)],
            Outcome::Accuracy(r) => vec![
                ("exact match", r.accuracy, false),
                ("normalized match", r.normalized_accuracy, false),
                ("reference NLL (nats/token)", r.mean_nll_of_reference, true),
                ("NLL with end marker", r.mean_nll_with_end, true),
            ],
        }
    }
}

/// Held-out examples from a data file: chat records (last message = reference answer) and
/// prompt/completion pairs.
fn examples(path: &Path) -> Result<Vec<eval::Example>> {
    let records = plinth_train::read_records(path).context("reading --data")?;
    records
        .into_iter()
        .enumerate()
        .map(|(i, r)| match r {
            Record::Chat(m) => Ok(eval::Example::Chat(m)),
            Record::Prompt { prompt, completion } => Ok(eval::Example::Prompt { prompt, completion }),
            Record::Text(_) => anyhow::bail!(
                "{}: record {} is plain text, which has no reference answer to score; --data takes chat or prompt/completion records (use --perplexity FILE for text)",
                path.display(),
                i + 1
            ),
        })
        .collect()
}

fn bar(total: usize, what: &str, json: bool) -> ProgressBar {
    if json || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total as u64);
    bar.set_style(ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} eta {eta}").expect("static template").progress_chars("=> "));
    bar.set_prefix(what.to_string());
    bar
}

fn evaluate(model: &dyn Decoder, tok: &Tokenizer, task: &Task, a: &EvalArgs, what: &str) -> Result<Outcome> {
    match task {
        Task::Perplexity(ids) => {
            let chunks = (ids.len() / a.ctx.max(1)).min(a.chunks.unwrap_or(usize::MAX));
            let pb = bar(chunks, what, a.json);
            let mut opts = PerplexityOptions::for_tokenizer(tok);
            opts.ctx = a.ctx;
            opts.max_chunks = a.chunks;
            opts.progress = Some(Box::new(|p: &eval::PerplexityProgress| {
                pb.set_length(p.chunks as u64);
                pb.set_position(p.chunk as u64);
                pb.set_message(format!("ppl {:.4}", p.ppl));
            }));
            let r = eval::perplexity(model, ids, opts);
            pb.finish_and_clear();
            Ok(Outcome::Perplexity(r.context("--perplexity")?))
        }
        Task::Accuracy(examples) => {
            let pb = bar(examples.len(), what, a.json);
            let mut correct = 0;
            let opts = EvalOptions {
                max_tokens: a.max_tokens,
                progress: Some(Box::new(|done, _total, r: &eval::ExampleResult| {
                    correct += r.normalized_match as usize;
                    pb.set_position(done as u64);
                    pb.set_message(format!("{correct} matched"));
                })),
                ..Default::default()
            };
            let r = eval::evaluate_examples(model, tok, examples, opts);
            pb.finish_and_clear();
            Ok(Outcome::Accuracy(r.context("--data")?))
        }
    }
}

fn print_one(label: &str, o: &Outcome) {
    match o {
        Outcome::Perplexity(r) => {
            let pm = r.ppl_stderr.map_or(String::new(), |s| format!(" +/- {s:.4}"));
            println!("{label}perplexity {:.4}{pm} ({} windows of {} tokens, {} tokens scored; mean NLL {:.4})", r.ppl, r.chunks, r.ctx, r.tokens_scored, r.nll_mean);
        }
        Outcome::Accuracy(r) => {
            println!(
                "{label}exact match {}/{} ({:.1}%), normalized {}/{} ({:.1}%), reference NLL {:.4} nats/token ({} tokens), with end marker {:.4}",
                r.exact_match,
                r.examples,
                100.0 * r.accuracy,
                r.normalized_match,
                r.examples,
                100.0 * r.normalized_accuracy,
                r.mean_nll_of_reference,
                r.reference_tokens,
                r.mean_nll_with_end
            );
        }
    }
}

fn print_table(base: &Outcome, adapted: &Outcome) {
    println!("{:<28} {:>12} {:>12} {:>10}", "", "base", "adapter", "change");
    for ((label, b, lower), (_, t, _)) in base.rows().into_iter().zip(adapted.rows()) {
        let is_rate = label.ends_with("match");
        let fmt = |v: f64| if is_rate { format!("{:.1}%", 100.0 * v) } else { format!("{v:.4}") };
        let change = if is_rate {
            format!("{:+.1} pt", 100.0 * (t - b))
        } else if b != 0.0 {
            format!("{:+.1}%", 100.0 * (t - b) / b.abs())
        } else {
            "-".into()
        };
        let better = if (t < b) == lower && t != b { " better" } else { "" };
        println!("{label:<28} {:>12} {:>12} {:>10}{better}", fmt(b), fmt(t), change);
    }
}

pub fn run(a: EvalArgs) -> Result<()> {
    if a.ctx < 3 {
        anyhow::bail!("invalid --ctx: must be at least 3, got {}", a.ctx);
    }
    if a.chunks == Some(0) || a.max_tokens == Some(0) {
        anyhow::bail!("invalid {}: must be at least 1", if a.chunks == Some(0) { "--chunks" } else { "--max-tokens" });
    }
    if let Some(d) = &a.adapter {
        if !d.join("adapter_config.json").is_file() {
            anyhow::bail!("--adapter {}: not a PEFT adapter directory (no adapter_config.json)", d.display());
        }
    }
    // Inputs are read before the model is loaded; tokenizing needs the model's tokenizer.
    let text = match &a.perplexity {
        Some(p) => Some(std::fs::read_to_string(p).with_context(|| format!("reading --perplexity {}", p.display()))?),
        None => None,
    };
    let data = a.data.as_deref().map(examples).transpose()?;
    let m = load::load(&a.model)?;
    let model = m.model.as_ref();
    let task = match (text, data) {
        (Some(t), _) => Task::Perplexity(eval::perplexity_tokens(&m.tokenizer, &t)?),
        (None, Some(d)) => Task::Accuracy(d),
        (None, None) => unreachable!("clap requires --data or --perplexity"),
    };
    let adapter = match &a.adapter {
        Some(dir) => Some(peft::load(dir, model, QkLayout::of(&m.location, model)).with_context(|| format!("loading --adapter {}", dir.display()))?),
        None => None,
    };
    let base = if a.compare || adapter.is_none() { Some(evaluate(model, &m.tokenizer, &task, &a, "base")?) } else { None };
    let adapted = match &adapter {
        Some(set) => {
            // Detached: no autodiff graph, and the base's numeric path, so --compare compares
            // like for like.
            crate::cmd::tune::attach_for_inference(model, set)?;
            let r = evaluate(model, &m.tokenizer, &task, &a, "adapter");
            LoraSet::detach(model)?;
            Some(r?)
        }
        None => None,
    };
    let model_name = m.location.path().display().to_string();
    let adapter_name = a.adapter.as_ref().map(|d| d.display().to_string());
    if a.json {
        let mut v = json!({ "model": model_name, "adapter": adapter_name });
        match (&base, &adapted) {
            (Some(b), Some(t)) => {
                v["base"] = b.to_json();
                v["adapted"] = t.to_json();
            }
            (Some(o), None) | (None, Some(o)) => {
                if let (Value::Object(dst), Value::Object(src)) = (&mut v, o.to_json()) {
                    dst.extend(src);
                }
            }
            (None, None) => {}
        }
        println!("{v}");
        return Ok(());
    }
    match (&base, &adapted) {
        (Some(b), Some(t)) => {
            print_one("base:    ", b);
            print_one("adapter: ", t);
            println!();
            print_table(b, t);
        }
        (Some(o), None) | (None, Some(o)) => print_one("", o),
        (None, None) => {}
    }
    Ok(())
}
