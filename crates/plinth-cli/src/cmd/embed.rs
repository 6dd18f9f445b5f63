//! `plinth embed` and `plinth search`: sentence embeddings and the corpus search built on them.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use plinth_tasks::{CorpusIndex, EmbedInput, EmbedOptions, Overflow};
use serde_json::json;

use crate::cli::{EmbedArgs, SearchArgs, TextsArg, TruncateArg};
use crate::load;

/// Texts from arguments, else `--file` (or `-`), else stdin; one per line, blank lines kept
/// out only when read from a file or stdin.
pub fn read_texts(a: &TextsArg) -> Result<Vec<String>> {
    if !a.texts.is_empty() {
        if a.file.is_some() {
            anyhow::bail!("give texts either as arguments or with --file, not both");
        }
        return Ok(a.texts.clone());
    }
    let lines: Vec<String> = match a.file.as_deref() {
        Some(f) if f != "-" => {
            let text = std::fs::read_to_string(f).with_context(|| format!("reading {f}"))?;
            text.lines().map(str::to_string).collect()
        }
        _ => {
            if std::io::stdin().is_terminal() {
                eprintln!("reading texts from stdin, one per line (Ctrl-D to finish)");
            }
            std::io::stdin().lock().lines().collect::<std::io::Result<_>>().context("reading stdin")?
        }
    };
    let texts: Vec<String> = lines.into_iter().filter(|l| !l.trim().is_empty()).collect();
    if texts.is_empty() {
        anyhow::bail!("no input texts (give them as arguments, with --file, or on stdin)");
    }
    Ok(texts)
}

impl TruncateArg {
    pub fn overflow(&self) -> Overflow {
        if self.no_truncate {
            Overflow::Error
        } else {
            Overflow::Truncate
        }
    }
}

/// A progress bar on stderr for long jobs, hidden when stderr is not a terminal.
pub fn progress_bar(total: usize, what: &str) -> ProgressBar {
    if total < 64 || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total as u64);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {per_sec} eta {eta}").expect("static template").progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}

pub fn run_embed(a: EmbedArgs) -> Result<()> {
    if !a.image.is_empty() {
        return crate::cmd::vision::run_embed_images(a);
    }
    if a.batch_size == 0 {
        anyhow::bail!("invalid --batch-size: must be at least 1");
    }
    let texts = read_texts(&a.texts)?;
    let model = load::load_encoder(&a.model.model)?;
    let normalize = if a.no_normalize { Some(false) } else if a.normalize { Some(true) } else { None };
    let opts = EmbedOptions { normalize, overflow: a.truncate.overflow(), batch_size: a.batch_size, dimensions: a.dimensions };
    let inputs: Vec<EmbedInput> = texts.iter().map(|t| EmbedInput::Text(t)).collect();
    let bar = progress_bar(texts.len(), "embedding");
    let emb = model.embed_inputs(&inputs, opts, &mut |n| bar.set_position(n as u64))?;
    bar.finish_and_clear();
    match a.output.as_deref() {
        Some(path) if path.ends_with(".npy") => {
            let dim = emb.vectors.first().map_or(0, Vec::len);
            write_npy(path, &emb.vectors, dim).with_context(|| format!("writing {path}"))?;
            eprintln!("wrote {} embeddings of {dim} dimensions to {path}", emb.vectors.len());
        }
        Some(path) => {
            let f = std::fs::File::create(path).with_context(|| format!("creating {path}"))?;
            write_jsonl(std::io::BufWriter::new(f), &texts, &emb.vectors).with_context(|| format!("writing {path}"))?;
        }
        None => write_jsonl(std::io::stdout().lock(), &texts, &emb.vectors)?,
    }
    Ok(())
}

fn write_jsonl(mut out: impl Write, texts: &[String], vectors: &[Vec<f32>]) -> Result<()> {
    for (t, v) in texts.iter().zip(vectors) {
        writeln!(out, "{}", json!({"text": t, "embedding": v}))?;
    }
    out.flush()?;
    Ok(())
}

/// NumPy's `.npy` v1.0: magic, a header dict padded to a 64-byte boundary, then the data.
/// Written to a temporary file and renamed, so a failed run leaves no half file.
pub(crate) fn write_npy(path: &str, rows: &[Vec<f32>], dim: usize) -> Result<()> {
    let header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({}, {dim}), }}", rows.len());
    let unpadded = 10 + header.len() + 1;
    let pad = (64 - unpadded % 64) % 64;
    let mut bytes = Vec::with_capacity(unpadded + pad + rows.len() * dim * 4);
    bytes.extend_from_slice(b"\x93NUMPY\x01\x00");
    bytes.extend_from_slice(&((header.len() + pad + 1) as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend(std::iter::repeat_n(b' ', pad));
    bytes.push(b'\n');
    for r in rows {
        r.iter().for_each(|v| bytes.extend_from_slice(&v.to_le_bytes()));
    }
    let tmp = format!("{path}.part-{}", std::process::id());
    std::fs::write(&tmp, &bytes)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })?;
    Ok(())
}

pub fn run_search(a: SearchArgs) -> Result<()> {
    if a.top_k == 0 {
        anyhow::bail!("invalid --top-k: must be at least 1");
    }
    if a.query.trim().is_empty() {
        anyhow::bail!("the query is empty");
    }
    let corpus_name = match (&a.corpus, &a.images) {
        (Some(c), None) => c.clone(),
        (None, Some(dir)) => {
            let dir = dir.clone();
            return crate::cmd::vision::run_search_images(a, &dir);
        }
        _ => anyhow::bail!("give either --corpus FILE or --images DIR"),
    };
    let model = load::load_encoder(&a.model.model)?;
    let corpus = std::path::Path::new(&corpus_name);
    let bar = std::cell::OnceCell::new();
    let index = CorpusIndex::open(&model, corpus, &mut |done, total| {
        bar.get_or_init(|| progress_bar(total, "embedding corpus")).set_position(done as u64);
    })?;
    if let Some(b) = bar.get() {
        b.finish_and_clear();
    }
    let q = model.embed(&[a.query.as_str()], EmbedOptions { normalize: Some(true), ..Default::default() })?;
    let hits = index.search(&q.vectors[0], a.top_k);
    // writeln! rather than println!: a closed pipe is an error, not a panic.
    let mut out = std::io::stdout().lock();
    if a.json {
        writeln!(
            out,
            "{}",
            json!({"query": a.query, "corpus": corpus_name, "documents": index.docs.len(), "cached": index.cached, "results": hits})
        )?;
        return Ok(());
    }
    for h in &hits {
        writeln!(out, "{:.4}  {}:{}  {}", h.score, corpus_name, h.line, h.text)?;
    }
    Ok(())
}
