//! `plinth summarize`: a summary of a text of any length, streamed (or `--json`).

use std::io::{IsTerminal, Read, Write};

use anyhow::{Context, Result};
use plinth_engine::Seq2SeqOverrides;
use plinth_io::fetch::ModelLocation;
use plinth_tasks::seq2seq::{is_seq2seq_dir, Seq2SeqModel};
use plinth_tasks::summarize::{summarize, summarize_seq2seq, Style, SummarizeOptions};
use serde_json::json;

use crate::cli::SummarizeArgs;
use crate::load;

pub fn run(a: SummarizeArgs) -> Result<()> {
    let style = Style::from_name(&a.style)?;
    if a.words == 0 {
        anyhow::bail!("invalid --words: must be at least 1");
    }
    let text = match a.file.as_deref() {
        Some(f) if f != "-" => std::fs::read_to_string(f).with_context(|| format!("reading {f}"))?,
        _ => {
            if std::io::stdin().is_terminal() {
                eprintln!("reading the text from stdin (Ctrl-D to finish)");
            }
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s).context("reading stdin")?;
            s
        }
    };
    let opts = SummarizeOptions { words: a.words, style, context: a.context, ..Default::default() };
    let show = !a.json && std::io::stderr().is_terminal();
    let mut out = std::io::stdout().lock();
    if let ModelLocation::Dir(d) = load::resolve(&a.model.model)? {
        if is_seq2seq_dir(&d) {
            if style != Style::Paragraph || a.context.is_some() {
                anyhow::bail!("--style and --context apply to LLMs; an encoder-decoder model writes the summary it was trained to write");
            }
            let m = Seq2SeqModel::load(&d)?;
            let report = summarize_seq2seq(&m, &text, &opts, &Seq2SeqOverrides::default(), &mut |_, _| {})?;
            if a.json {
                writeln!(out, "{}", json!({"summary": report.summary, "tokens": report.tokens, "parts": report.parts.len(), "rounds": report.rounds}))?;
            } else {
                writeln!(out, "{}", report.summary)?;
            }
            return Ok(());
        }
    }
    let m = load::load(&a.model)?;
    let mut failed = None;
    let report = summarize(
        m.model.as_ref(),
        &m.tokenizer,
        &text,
        &opts,
        &mut |i, n| {
            if show {
                eprint!("\rsummarized part {i}/{n}");
                if i == n {
                    eprintln!();
                }
            }
        },
        &mut |t| {
            if !a.json && failed.is_none() {
                if let Err(e) = out.write_all(t.as_bytes()).and_then(|_| out.flush()) {
                    failed = Some(e);
                }
            }
        },
    )?;
    if let Some(e) = failed {
        return Err(e.into());
    }
    if a.json {
        writeln!(out, "{}", json!({"summary": report.summary, "tokens": report.tokens, "parts": report.parts.len(), "rounds": report.rounds}))?;
    } else {
        writeln!(out)?;
    }
    Ok(())
}
