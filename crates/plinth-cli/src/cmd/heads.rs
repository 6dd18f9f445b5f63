//! `plinth ner` and `rerank`: the task heads of encoder checkpoints
//! (`*ForTokenClassification` and cross-encoders), with post-processing as in the
//! transformers pipelines (`classify` is in `classify.rs`, `answer` in `answer.rs`).
//!
//! Output goes through a locked stdout with `writeln!`, not `println!`, so that a closed pipe
//! (`plinth classify -f big.txt | head`) ends the run with an error line instead of a panic.

use std::io::Write;

use anyhow::Result;
use plinth_tasks::{Aggregation, NerOptions, RerankOptions};
use serde_json::json;

use crate::cli::{NerArgs, RerankArgs};
use crate::cmd::embed::read_texts;
use crate::load;

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
