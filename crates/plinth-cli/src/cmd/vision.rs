//! The image commands: `plinth describe` (a vision-language model answers about images),
//! and the `--image` / `--images` forms of `embed`, `classify` and `search` (an image-text
//! dual encoder embeds, classifies zero-shot and searches folders).

use std::io::Write;

use anyhow::{Context, Result};
use plinth_engine::{GenerateRequest, Session};
use plinth_image::ImageLimits;
use plinth_tasks::image_text::{DEFAULT_TEMPLATE, IMAGE_EXTENSIONS};
use plinth_tasks::vlm::image_turn;
use plinth_tasks::ImageIndex;
use serde_json::json;

use crate::cli::{ClassifyArgs, DescribeArgs, EmbedArgs, SearchArgs};
use crate::cmd::embed::{progress_bar, read_texts};
use crate::cmd::generate::{report, run_and_print};
use crate::load;

pub fn run_describe(a: DescribeArgs) -> Result<()> {
    a.sampling.params(&Default::default())?;
    let images = load::read_images(&a.images)?;
    let m = load::load(&a.model)?;
    let prompter = load::image_prompter(&m, "describe")?;
    let sampling = a.sampling.params(&m.generation)?;
    let template = m.tokenizer.chat()?;
    let text = template.render(&[image_turn(images.len(), &a.prompt)], true)?;
    let (text, pixels) = prompter.expand(&text, &images)?;
    let prompt_ids = m.tokenizer.encode(&text, false)?;
    let req = GenerateRequest { prompt_ids, max_tokens: a.sampling.max_tokens, sampling, stop: a.sampling.stop.clone() };
    let mut session = Session::new(m.model.as_ref(), &m.tokenizer).with_context_limit(a.sampling.context);
    let out = run_and_print(&mut session, &req, pixels.as_ref(), a.json)?;
    let tiles = pixels.as_ref().map_or(0, |p| p.dims()[0]);
    report(&out, a.json, json!({"text": out.text.trim(), "images": a.images, "image_tiles": tiles}), &format!("{tiles} image tiles, "))
}

/// `plinth embed --image ...`: image embeddings, and the texts given beside them in the same
/// space, as JSON lines (`{"image": ..., "embedding": [...]}` / `{"text": ...}`) or `.npy`.
pub fn run_embed_images(a: EmbedArgs) -> Result<()> {
    if a.batch_size == 0 {
        anyhow::bail!("invalid --batch-size: must be at least 1");
    }
    if a.dimensions.is_some() || a.no_normalize {
        anyhow::bail!("--dimensions and --no-normalize apply to text encoders; image-text embeddings are always L2-normalised");
    }
    // Texts only when given explicitly: stdin is not read for an image job.
    let texts = if a.texts.texts.is_empty() && a.texts.file.is_none() { Vec::new() } else { read_texts(&a.texts)? };
    let images = load::read_images(&a.image)?;
    let p = load::load_image_text(&a.model.model, "--image")?;
    let bar = progress_bar(images.len(), "embedding images");
    let mut rows = p.embed_images(&images, a.batch_size, &mut |n| bar.set_position(n as u64))?;
    bar.finish_and_clear();
    rows.extend(p.embed_texts(&texts.iter().map(String::as_str).collect::<Vec<_>>())?);
    let labels: Vec<serde_json::Value> =
        a.image.iter().map(|i| json!({"image": i})).chain(texts.iter().map(|t| json!({"text": t}))).collect();
    match a.output.as_deref() {
        Some(path) if path.ends_with(".npy") => {
            let dim = rows.first().map_or(0, Vec::len);
            crate::cmd::embed::write_npy(path, &rows, dim).with_context(|| format!("writing {path}"))?;
            eprintln!("wrote {} embeddings of {dim} dimensions to {path} (images first, then texts)", rows.len());
        }
        Some(path) => {
            let f = std::fs::File::create(path).with_context(|| format!("creating {path}"))?;
            write_labelled(std::io::BufWriter::new(f), &labels, &rows).with_context(|| format!("writing {path}"))?;
        }
        None => write_labelled(std::io::stdout().lock(), &labels, &rows)?,
    }
    Ok(())
}

fn write_labelled(mut out: impl Write, labels: &[serde_json::Value], rows: &[Vec<f32>]) -> Result<()> {
    for (l, v) in labels.iter().zip(rows) {
        let mut obj = l.clone();
        obj["embedding"] = json!(v);
        writeln!(out, "{obj}")?;
    }
    out.flush()?;
    Ok(())
}

/// `plinth classify --image ... --labels a,b`: zero-shot image classification.
pub fn run_classify_images(a: ClassifyArgs, labels: Vec<String>) -> Result<()> {
    let images = load::read_images(&a.image)?;
    let spec = a.model.as_deref().ok_or_else(|| anyhow::anyhow!("--image needs an image-text model (CLIP or SigLIP directory) as --model"))?;
    let p = load::load_image_text(spec, "--image")?;
    let template = a.hypothesis_template.as_deref().unwrap_or(DEFAULT_TEMPLATE);
    let label_refs: Vec<&str> = labels.iter().map(String::as_str).collect();
    let mut out = std::io::stdout().lock();
    for (path, img) in a.image.iter().zip(&images) {
        let mut scores = p.classify(img, &label_refs, template)?;
        if a.top_k > 0 {
            scores.truncate(a.top_k);
        }
        if a.json {
            writeln!(out, "{}", json!({"image": path, "scoring": p.info().score, "labels": scores}))?;
        } else {
            let shown: Vec<String> = scores.iter().map(|s| format!("{} ({:.4})", s.label, s.score)).collect();
            writeln!(out, "{path}\t{}", shown.join(", "))?;
        }
    }
    Ok(())
}

/// `plinth search --images DIR QUERY`: text-to-image retrieval over a folder.
pub fn run_search_images(a: SearchArgs, dir: &str) -> Result<()> {
    let p = load::load_image_text(&a.model.model, "--images")?;
    let bar = std::cell::OnceCell::new();
    let index = ImageIndex::open(&p, std::path::Path::new(dir), &ImageLimits::default(), &mut |done, total| {
        bar.get_or_init(|| progress_bar(total, "embedding images")).set_position(done as u64);
    })?;
    if let Some(b) = bar.get() {
        b.finish_and_clear();
    }
    for (path, why) in &index.skipped {
        eprintln!("skipped {}: {why}", path.display());
    }
    let q = p.embed_texts(&[a.query.as_str()])?.remove(0);
    let hits = index.search(&q, a.top_k);
    let mut out = std::io::stdout().lock();
    if a.json {
        let v = json!({"query": a.query, "images": dir, "indexed": index.len(), "embedded": index.embedded,
            "skipped": index.skipped.len(), "results": hits});
        writeln!(out, "{v}")?;
        return Ok(());
    }
    if index.is_empty() {
        eprintln!("no images ({}) under {dir}", IMAGE_EXTENSIONS.join(", "));
    }
    for h in &hits {
        writeln!(out, "{:.4}  {}", h.score, h.path.display())?;
    }
    Ok(())
}
