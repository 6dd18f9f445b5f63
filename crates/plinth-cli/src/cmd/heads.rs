//! `plinth classify`, `ner`, `answer` and `rerank`: the task heads of encoder checkpoints
//! (`*ForSequenceClassification`, `*ForTokenClassification`, `*ForQuestionAnswering`, and
//! cross-encoders), with post-processing as in the transformers pipelines.
//!
//! Output goes through a locked stdout with `writeln!`, not `println!`, so that a closed pipe
//! (`plinth classify -f big.txt | head`) ends the run with an error line instead of a panic.

use std::io::Write;

use anyhow::{Context, Result};
use plinth_tasks::{Aggregation, ClassifyOptions, NerOptions, QaOptions, RerankOptions};
use serde_json::json;

use crate::cli::{AnswerArgs, ClassifyArgs, NerArgs, RerankArgs};
use crate::cmd::embed::read_texts;
use crate::load;

pub fn run_classify(a: ClassifyArgs) -> Result<()> {
    let texts = read_texts(&a.texts)?;
    let model = load::load_encoder(&a.model.model)?;
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

pub fn run_ner(a: NerArgs) -> Result<()> {
    let aggregation = Aggregation::from_name(&a.aggregation)?;
    let texts = read_texts(&a.texts)?;
    let model = load::load_encoder(&a.model.model)?;
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let results = model.ner(&refs, &NerOptions { aggregation, ..Default::default() })?;
    let mut out = std::io::stdout().lock();
    for (t, entities) in texts.iter().zip(&results) {
        if a.json {
            writeln!(out, "{}", json!({"text": t, "entities": entities}))?;
            continue;
        }
        writeln!(out, "{t}")?;
        if entities.is_empty() {
            writeln!(out, "  (no entities)")?;
        }
        for e in entities {
            writeln!(out, "  {:<8} {:.4}  {}..{}  {}", e.entity, e.score, e.start, e.end, e.word)?;
        }
    }
    Ok(())
}

pub fn run_answer(a: AnswerArgs) -> Result<()> {
    let context = if a.context == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading the context from stdin")?
    } else {
        std::fs::read_to_string(&a.context).with_context(|| format!("reading the context {}", a.context))?
    };
    let model = load::load_encoder(&a.model.model)?;
    let opts = QaOptions {
        top_k: a.top_k,
        max_seq_len: a.max_seq_len,
        doc_stride: a.doc_stride,
        max_answer_len: a.max_answer_len,
        ..Default::default()
    };
    let answers = model.answer(&a.question, &context, &opts)?;
    let mut out = std::io::stdout().lock();
    if a.json {
        writeln!(out, "{}", json!({"question": a.question, "answers": answers}))?;
        return Ok(());
    }
    for ans in &answers {
        writeln!(out, "{:.4}  [{}..{}]  {}", ans.score, ans.start, ans.end, ans.answer)?;
    }
    Ok(())
}

pub fn run_rerank(a: RerankArgs) -> Result<()> {
    let docs = read_texts(&a.documents)?;
    let model = load::load_encoder(&a.model.model)?;
    let refs: Vec<&str> = docs.iter().map(String::as_str).collect();
    let top_n = (a.top_n > 0).then_some(a.top_n);
    let ranked = model.rerank(&a.query, &refs, RerankOptions { top_n, ..Default::default() })?;
    let mut out = std::io::stdout().lock();
    if a.json {
        let results: Vec<_> = ranked.iter().map(|r| json!({"index": r.index, "score": r.score, "text": docs[r.index]})).collect();
        writeln!(out, "{}", json!({"query": a.query, "results": results}))?;
        return Ok(());
    }
    for r in &ranked {
        writeln!(out, "{:.4}  #{}  {}", r.score, r.index, docs[r.index])?;
    }
    Ok(())
}
