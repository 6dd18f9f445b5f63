//! `plinth answer`: question answering three ways, chosen by the flags and the model.
//! `--corpus DIR`: retrieval-augmented; the embedder finds the passages, the LLM answers and
//! cites them (file + line range). `--context FILE` with an LLM: generative QA over the file
//! (whole when it fits the prompt, else its best passages). `--context FILE` with an encoder
//! checkpoint that has a QA head: extractive QA, the span of the file that answers.
//!
//! Output goes through a locked stdout with `writeln!`, so a closed pipe is an error line,
//! not a panic.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use plinth_tasks::rag::{answer, answer_context, context_fits, AnswerOptions, PassageIndex, RagAnswer};
use plinth_tasks::QaOptions;
use serde_json::json;

use crate::cli::AnswerArgs;
use crate::cmd::embed::progress_bar;
use crate::load;

pub fn run(a: AnswerArgs) -> Result<()> {
    if a.question.trim().is_empty() {
        anyhow::bail!("the question (--question) is empty");
    }
    if a.top_k == Some(0) {
        anyhow::bail!("invalid --top-k: must be at least 1");
    }
    if a.max_tokens == 0 {
        anyhow::bail!("invalid --max-tokens: must be at least 1");
    }
    // The context is read before any model is loaded: a wrong path fails at once.
    let context = match (&a.context, &a.corpus) {
        (Some(_), Some(_)) | (None, None) => anyhow::bail!("give exactly one of --context FILE (answer from one text) or --corpus DIR (retrieve from a folder of .txt / .md files)"),
        (Some(c), None) if c == "-" => Some(std::io::read_to_string(std::io::stdin()).context("reading the context from stdin")?),
        (Some(c), None) => Some(std::fs::read_to_string(c).with_context(|| format!("reading the context {c}"))?),
        (None, Some(_)) => None,
    };
    let location = load::resolve(&a.model.model)?;
    if load::is_encoder(&location) {
        let Some(context) = context else {
            anyhow::bail!(
                "{} is an encoder: it can only pick an answer span out of one --context FILE; retrieval over --corpus needs an instruct LLM as --model (e.g. the default)",
                a.model.model
            )
        };
        return extractive(&a, &context);
    }
    let m = load::load(&a.model)?;
    let opts = AnswerOptions { top_k: a.top_k.unwrap_or(4), max_tokens: a.max_tokens, ..Default::default() };
    let mut out = std::io::stdout().lock();
    let mut failed = None;
    let mut stream = |t: &str| {
        if !a.json && failed.is_none() {
            if let Err(e) = out.write_all(t.as_bytes()).and_then(|_| out.flush()) {
                failed = Some(e);
            }
        }
    };
    let result = match (&a.corpus, context) {
        (Some(dir), _) => {
            let embedder = load::load_encoder(&a.embedder)?;
            let bar = std::cell::OnceCell::new();
            let index = PassageIndex::open_corpus(&embedder, Path::new(dir), &mut |done, total| {
                bar.get_or_init(|| progress_bar(total, "embedding corpus")).set_position(done as u64);
            })?;
            if let Some(b) = bar.get() {
                b.finish_and_clear();
            }
            if let Some(w) = &index.cache_warning {
                eprintln!("warning: {w}");
            }
            answer(m.model.as_ref(), &m.tokenizer, &embedder, &index, &a.question, &opts, &mut stream)?
        }
        (None, Some(text)) => {
            let label = match a.context.as_deref() {
                Some("-") | None => "stdin".to_string(),
                Some(c) => Path::new(c).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| c.to_string()),
            };
            let embedder = if context_fits(m.model.as_ref(), &m.tokenizer, &a.question, &text, &opts)? {
                None
            } else {
                eprintln!("note: {label} does not fit the model's context; answering from its {} best passages (embedder {})", opts.top_k, a.embedder);
                Some(load::load_encoder(&a.embedder)?)
            };
            answer_context(m.model.as_ref(), &m.tokenizer, embedder.as_ref(), &a.question, &label, &text, &opts, &mut stream)?
        }
        (None, None) => unreachable!("checked above"),
    };
    if let Some(e) = failed {
        return Err(e.into());
    }
    report(&mut out, &a, &result)
}

fn report(out: &mut impl Write, a: &AnswerArgs, r: &RagAnswer) -> Result<()> {
    if a.json {
        writeln!(
            out,
            "{}",
            json!({
                "question": a.question,
                "answer": r.answer,
                "sources": r.sources,
                "cited": r.cited,
                "retrieved": r.retrieved,
                "dropped": r.dropped,
                "prompt_tokens": r.prompt_tokens,
            })
        )?;
        return Ok(());
    }
    writeln!(out, "\n\nSources:")?;
    for s in &r.sources {
        let mark = if r.cited.contains(&s.id) { " (cited)" } else { "" };
        writeln!(out, "  [{}] {}:{}-{}  {:.3}{mark}", s.id, s.file, s.start_line, s.end_line, s.score)?;
    }
    if r.dropped > 0 {
        writeln!(out, "  ({} more retrieved passages did not fit the context)", r.dropped)?;
    }
    Ok(())
}

/// Extractive QA with an encoder's QA head, as the transformers pipeline.
fn extractive(a: &AnswerArgs, context: &str) -> Result<()> {
    let model = load::load_encoder(&a.model.model)?;
    let opts = QaOptions {
        top_k: a.top_k.unwrap_or(1),
        max_seq_len: a.max_seq_len,
        doc_stride: a.doc_stride,
        max_answer_len: a.max_answer_len,
        ..Default::default()
    };
    let answers = model.answer(&a.question, context, &opts)?;
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
