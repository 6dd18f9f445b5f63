//! `plinth translate`: a text of any length into another language, with an instruct LLM (the
//! default) or an encoder-decoder model directory. Paragraphs are kept; the translation
//! streams batch by batch (or one `--json` object).

use std::io::{IsTerminal, Read, Write};

use anyhow::{Context, Result};
use plinth_engine::Seq2SeqOverrides;
use plinth_io::fetch::ModelLocation;
use plinth_tasks::seq2seq::{is_seq2seq_dir, Seq2SeqModel};
use plinth_tasks::translate::{translate_llm, translate_seq2seq, TranslateOptions};
use serde_json::json;

use crate::cli::TranslateArgs;
use crate::load;

pub fn read_input(file: Option<&str>) -> Result<String> {
    match file {
        Some(f) if f != "-" => std::fs::read_to_string(f).with_context(|| format!("reading {f}")),
        _ => {
            if std::io::stdin().is_terminal() {
                eprintln!("reading the text from stdin (Ctrl-D to finish)");
            }
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s).context("reading stdin")?;
            Ok(s)
        }
    }
}

pub fn run(a: TranslateArgs) -> Result<()> {
    if a.to.trim().is_empty() {
        anyhow::bail!("invalid --to: name the target language (e.g. --to fr)");
    }
    let text = read_input(a.file.as_deref())?;
    let show = !a.json && std::io::stderr().is_terminal();
    let mut out = std::io::stdout().lock();
    let mut failed = None;
    let mut on_batch = |i: usize, n: usize| {
        if show && n > 1 {
            eprint!("\rtranslated batch {i}/{n}");
            if i == n {
                eprintln!();
            }
        }
    };
    let mut on_text = |t: &str| {
        if !a.json && failed.is_none() {
            if let Err(e) = out.write_all(t.as_bytes()).and_then(|_| out.flush()) {
                failed = Some(e);
            }
        }
    };
    let mut opts = TranslateOptions::new(&a.to);
    opts.from = a.from.clone();
    opts.context = a.context;
    let report = match load::resolve(&a.model.model)? {
        ModelLocation::Dir(d) if is_seq2seq_dir(&d) => {
            if a.context.is_some() {
                anyhow::bail!("--context applies to LLMs; an encoder-decoder model takes its source sentence by sentence");
            }
            let m = Seq2SeqModel::load(&d)?;
            let overrides = Seq2SeqOverrides { num_beams: a.num_beams, ..Default::default() };
            translate_seq2seq(&m, &text, &opts, &overrides, &mut on_batch, &mut on_text)?
        }
        _ => {
            if a.num_beams.is_some() {
                anyhow::bail!("--num-beams applies to encoder-decoder models; {} is a decoder-only LLM", a.model.model);
            }
            let m = load::load(&a.model)?;
            translate_llm(m.model.as_ref(), &m.tokenizer, &text, &opts, &mut on_batch, &mut on_text)?
        }
    };
    if let Some(e) = failed {
        return Err(e.into());
    }
    if a.json {
        writeln!(out, "{}", json!({"translation": report.translation, "to": a.to, "from": a.from, "paragraphs": report.paragraphs, "batches": report.batches}))?;
    } else if !report.translation.ends_with('\n') {
        writeln!(out)?;
    }
    Ok(())
}
