//! `plinth classify`: texts into labels. Without `--labels`, with the head of a
//! `*ForSequenceClassification` checkpoint (its own id2label). With `--labels a,b,c`,
//! zero-shot: an instruct LLM (the default model) scores each label's log-likelihood as its
//! answer, or an NLI checkpoint scores "This example is {label}." as transformers'
//! zero-shot pipeline does.
//!
//! Output goes through a locked stdout with `writeln!`, so that a closed pipe ends the run
//! with an error line instead of a panic.

use std::io::Write;

use anyhow::{Context, Result};
use plinth_io::fetch::ModelLocation;
use plinth_tasks::zeroshot::{parse_labels, zero_shot_llm, ZeroShotOptions, ZeroShotScore};
use plinth_tasks::ClassifyOptions;
use serde_json::json;

use crate::cli::{ClassifyArgs, ModelArg};
use crate::cmd::embed::read_texts;
use crate::load;

pub fn run(a: ClassifyArgs) -> Result<()> {
    if !a.image.is_empty() {
        if a.multi_label {
            anyhow::bail!("--multi-label does not apply to images: CLIP scores the labels against each other, SigLIP each on its own, as trained");
        }
        let labels = parse_labels(a.labels.as_deref().unwrap_or_default())?;
        return crate::cmd::vision::run_classify_images(a, labels);
    }
    let texts = read_texts(&a.texts)?;
    match a.labels.as_deref() {
        Some(list) => zero_shot(&a, list, &texts),
        None => with_head(&a, &texts),
    }
}

/// Classification with the checkpoint's own head and labels.
fn with_head(a: &ClassifyArgs, texts: &[String]) -> Result<()> {
    let spec = a.model.as_deref().context(
        "classify needs --model: a sequence-classification checkpoint (or pass --labels a,b,c for zero-shot classification with an LLM)",
    )?;
    if a.multi_label || a.hypothesis_template.is_some() {
        anyhow::bail!("--multi-label and --hypothesis-template are for zero-shot classification; pass --labels too");
    }
    let location = load::resolve(spec)?;
    if !load::is_encoder(&location) {
        anyhow::bail!(
            "{} is not a classification checkpoint (an encoder directory with a *ForSequenceClassification head); to classify with an LLM pass --labels a,b,c",
            location.path().display()
        );
    }
    let model = load::load_encoder(spec)?;
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let top_k = (a.top_k > 0).then_some(a.top_k);
    let results = model.classify(&refs, ClassifyOptions { top_k, overflow: a.truncate.overflow(), ..Default::default() })?;
    let mut out = std::io::stdout().lock();
    for (t, labels) in texts.iter().zip(&results) {
        if a.json {
            writeln!(out, "{}", json!({"text": t, "labels": labels}))?;
        } else {
            let shown: Vec<String> = labels.iter().map(|l| format!("{} {:.4}", l.label, l.score)).collect();
            writeln!(out, "{}\t{t}", shown.join(", "))?;
        }
    }
    Ok(())
}

/// Zero-shot classification into `list`, with an NLI encoder or an instruct LLM.
fn zero_shot(a: &ClassifyArgs, list: &str, texts: &[String]) -> Result<()> {
    let labels = parse_labels(list)?;
    let spec = a.model.clone().unwrap_or_else(|| plinth_io::catalog::DEFAULT_LLM.to_string());
    let location = load::resolve(&spec)?;
    let opts = ZeroShotOptions {
        multi_label: a.multi_label,
        hypothesis_template: a.hypothesis_template.clone(),
        overflow: a.truncate.overflow(),
        ..Default::default()
    };
    let mut out = std::io::stdout().lock();
    let mut show = |text: &str, mut scores: Vec<ZeroShotScore>, method: &str| -> Result<()> {
        if a.top_k > 0 {
            scores.truncate(a.top_k);
        }
        if a.json {
            writeln!(out, "{}", json!({"text": text, "labels": scores, "multi_label": a.multi_label, "method": method}))?;
        } else {
            let shown: Vec<String> = scores.iter().map(|l| format!("{} {:.4}", l.label, l.score)).collect();
            writeln!(out, "{}\t{text}", shown.join(", "))?;
        }
        Ok(())
    };
    if let (true, ModelLocation::Dir(dir)) = (load::is_encoder(&location), &location) {
        let model = plinth_tasks::EncoderModel::load(dir)?;
        // Check the model before reading every text into pairs.
        model.nli_labels()?;
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        for (t, scores) in texts.iter().zip(model.zero_shot(&refs, &labels, &opts)?) {
            show(t, scores, "nli")?;
        }
        return Ok(());
    }
    if a.hypothesis_template.is_some() {
        anyhow::bail!("--hypothesis-template is for NLI encoders; {spec} is an LLM, which is asked through its chat template");
    }
    let loaded = load::load(&ModelArg { model: spec, quantize: None, repack_q8: false })?;
    for t in texts {
        let scores = zero_shot_llm(loaded.model.as_ref(), &loaded.tokenizer, t, &labels, &opts)?;
        show(t, scores, "llm")?;
    }
    Ok(())
}
