//! Image-text tasks on a dual encoder (CLIP, SigLIP): image and text embeddings in one space,
//! zero-shot image classification with the model's own scoring (CLIP's softmax over the labels,
//! SigLIP's independent sigmoids, as transformers' `zero-shot-image-classification` pipeline),
//! and text-to-image search over a folder whose embeddings are cached beside it
//! (`DIR/.plinth-image-embeddings.json`, keyed by the model and each file's size and
//! modification time, written atomically; changed files alone are re-embedded).

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use plinth_core::{Error, Result};
use plinth_image::{ImageLimits, ImageProcessor, RgbImage};
use plinth_models::{ImageTextInfo, ImageTextModel, ScoreKind};
use plinth_tokenize::Tokenizer;

use crate::classify::LabelScore;
use crate::embed::cosine;
use crate::model::normalize;

/// transformers' default hypothesis template for zero-shot image classification.
pub const DEFAULT_TEMPLATE: &str = "This is a photo of {}.";

/// Image files a folder search reads, by extension.
pub const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "webp", "gif"];

/// A dual encoder with its tokenizer and image processor.
pub struct ImageTextPipeline {
    pub dir: PathBuf,
    model: Box<dyn ImageTextModel>,
    tokenizer: Tokenizer,
    processor: ImageProcessor,
}

impl ImageTextPipeline {
    /// Loads `config.json` + safetensors, `tokenizer.json` and `preprocessor_config.json`.
    pub fn load(dir: &Path) -> Result<Self> {
        let model = plinth_models::load_image_text(dir)?;
        let tokenizer = Tokenizer::from_file(&dir.join("tokenizer.json"))?;
        let processor = ImageProcessor::from_dir(dir)?;
        if processor.image_size() != model.info().image_size {
            return Err(Error::format(
                dir.join("preprocessor_config.json"),
                format!("makes {}-pixel images but the model reads {}", processor.image_size(), model.info().image_size),
            ));
        }
        Ok(ImageTextPipeline { dir: dir.to_path_buf(), model, tokenizer, processor })
    }

    pub fn info(&self) -> &ImageTextInfo {
        self.model.info()
    }

    pub fn processor(&self) -> &ImageProcessor {
        &self.processor
    }

    /// The dual encoder itself, for callers that preprocess on their own (benchmarks time the
    /// forward pass apart from preprocessing).
    pub fn model(&self) -> &dyn ImageTextModel {
        self.model.as_ref()
    }

    /// L2-normalised embeddings of `images`, `batch` at a time; `progress(done)` after each batch.
    pub fn embed_images(&self, images: &[RgbImage], batch: usize, progress: &mut dyn FnMut(usize)) -> Result<Vec<Vec<f32>>> {
        let mut out = Vec::with_capacity(images.len());
        for chunk in images.chunks(batch.max(1)) {
            let pixels = chunk.iter().map(|img| Ok(self.processor.preprocess(img)?.pixel_values)).collect::<Result<Vec<_>>>()?;
            let emb = self.model.embed_images(&Tensor::cat(&pixels, 0)?)?;
            out.extend(rows(&emb)?);
            progress(out.len());
        }
        Ok(out)
    }

    /// Token ids of `text` as the model reads it: special tokens added, and too-long texts cut
    /// in the middle of the text so the special tokens at either end survive (CLIP pools at
    /// its end-of-text token), as the tokenizer's `truncation=True` does.
    pub fn text_ids(&self, text: &str) -> Result<Vec<u32>> {
        let with = self.tokenizer.encode(text, true)?;
        let max = self.info().text_max_positions;
        if with.len() <= max {
            return Ok(with);
        }
        let bare = self.tokenizer.encode(text, false)?;
        // The special tokens are what `with` adds around `bare`: find where `bare` sits in it.
        let extra = with.len().saturating_sub(bare.len());
        let prefix = (0..=extra).find(|&p| with[p..p + bare.len()] == bare[..]).unwrap_or(0);
        let suffix = extra - prefix;
        let keep = max.saturating_sub(prefix + suffix);
        let mut ids = with[..prefix].to_vec();
        ids.extend_from_slice(&bare[..keep]);
        ids.extend_from_slice(&with[with.len() - suffix..]);
        Ok(ids)
    }

    /// L2-normalised embeddings of `texts`.
    pub fn embed_texts(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let ids = texts.iter().map(|t| self.text_ids(t)).collect::<Result<Vec<_>>>()?;
        rows(&self.model.embed_texts(&ids)?)
    }

    /// Zero-shot classification of `image` among `labels`, each put into `template` (`{}`
    /// marks the label), best first. Scores are probabilities as the model defines them.
    pub fn classify(&self, image: &RgbImage, labels: &[&str], template: &str) -> Result<Vec<LabelScore>> {
        if labels.is_empty() {
            return Err(Error::invalid("labels", "give at least one candidate label"));
        }
        if !template.contains("{}") {
            return Err(Error::invalid("template", format!("'{template}' has no '{{}}' where the label goes")));
        }
        let hypotheses: Vec<String> = labels.iter().map(|l| template.replace("{}", l)).collect();
        let texts = self.embed_texts(&hypotheses.iter().map(String::as_str).collect::<Vec<_>>())?;
        let img = self.embed_images(std::slice::from_ref(image), 1, &mut |_| {})?.remove(0);
        let info = self.info();
        let logits: Vec<f32> = texts.iter().map(|t| cosine(&img, t) * info.logit_scale + info.logit_bias).collect();
        let probs = scores(info.score, &logits);
        let mut out: Vec<LabelScore> = labels.iter().zip(probs).map(|(l, score)| LabelScore { label: l.to_string(), score }).collect();
        out.sort_by(|a, b| b.score.total_cmp(&a.score));
        Ok(out)
    }
}

/// Probabilities from logits the way the model was trained to score them.
pub fn scores(kind: ScoreKind, logits: &[f32]) -> Vec<f32> {
    match kind {
        ScoreKind::Sigmoid => logits.iter().map(|&x| 1.0 / (1.0 + (-x).exp())).collect(),
        ScoreKind::Softmax => {
            let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let exps: Vec<f32> = logits.iter().map(|&x| (x - max).exp()).collect();
            let sum: f32 = exps.iter().sum();
            exps.into_iter().map(|e| e / sum).collect()
        }
    }
}

fn rows(t: &Tensor) -> Result<Vec<Vec<f32>>> {
    let mut v = t.to_device(&Device::Cpu)?.to_vec2::<f32>()?;
    v.iter_mut().for_each(|r| normalize(r));
    Ok(v)
}

/// One image of a searched folder.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Entry {
    /// Path relative to the folder.
    file: String,
    size: u64,
    /// Modification time, nanoseconds since the epoch.
    mtime: u128,
    vector: Vec<f32>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct CacheFile {
    model: String,
    entries: Vec<Entry>,
}

/// A search result: an image file and its cosine similarity to the query.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ImageHit {
    pub path: PathBuf,
    pub score: f32,
}

/// The embedded images of a folder.
pub struct ImageIndex {
    pub dir: PathBuf,
    entries: Vec<Entry>,
    /// Images embedded by this call (the rest came from the cache).
    pub embedded: usize,
    /// Files skipped because they could not be read as images, with why.
    pub skipped: Vec<(PathBuf, String)>,
    pub cache_path: PathBuf,
}

/// Where the cache of folder `dir` lives.
pub fn image_cache_path(dir: &Path) -> PathBuf {
    dir.join(".plinth-image-embeddings.json")
}

fn image_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).map_err(|e| Error::io(&d, e))? {
            let p = e.map_err(|e| Error::io(&d, e))?.path();
            let hidden = p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.'));
            if hidden {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().and_then(|x| x.to_str()).is_some_and(|x| IMAGE_EXTENSIONS.contains(&x.to_ascii_lowercase().as_str())) {
                files.push(p);
            }
        }
    }
    files.sort();
    Ok(files)
}

impl ImageIndex {
    /// Embeds the images under `dir` (recursively), reusing cached vectors of unchanged files.
    /// `progress(done, total)` counts images to embed. Unreadable images are skipped and listed.
    pub fn open(p: &ImageTextPipeline, dir: &Path, limits: &ImageLimits, progress: &mut dyn FnMut(usize, usize)) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::invalid("images folder", format!("{} is not a directory", dir.display())));
        }
        let model = crate::search::dir_key(&p.dir, "")?;
        let cache_path = image_cache_path(dir);
        let old: Vec<Entry> = std::fs::read(&cache_path)
            .ok()
            .and_then(|b| serde_json::from_slice::<CacheFile>(&b).ok())
            .filter(|c| c.model == model)
            .map(|c| c.entries)
            .unwrap_or_default();
        let dim = p.info().embedding_dim;
        let mut entries = Vec::new();
        let mut todo: Vec<(PathBuf, Entry)> = Vec::new();
        for path in image_files(dir)? {
            let meta = std::fs::metadata(&path).map_err(|e| Error::io(&path, e))?;
            let mtime = meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos());
            let file = path.strip_prefix(dir).unwrap_or(&path).to_string_lossy().into_owned();
            let fresh = Entry { file, size: meta.len(), mtime, vector: Vec::new() };
            match old.iter().find(|e| e.file == fresh.file && e.size == fresh.size && e.mtime == fresh.mtime && e.vector.len() == dim) {
                Some(e) => entries.push(e.clone()),
                None => todo.push((path, fresh)),
            }
        }
        let (total, mut skipped, mut embedded) = (todo.len(), Vec::new(), 0);
        // Decoded a batch at a time, so a large folder never holds every image in memory.
        for batch in todo.chunks(16) {
            let mut imgs = Vec::new();
            let mut kept = Vec::new();
            for (path, entry) in batch {
                match plinth_image::load_image(path, limits) {
                    Ok(img) => {
                        imgs.push(img);
                        kept.push(entry.clone());
                    }
                    Err(e) => skipped.push((path.clone(), e.to_string())),
                }
            }
            for (mut entry, v) in kept.into_iter().zip(p.embed_images(&imgs, 8, &mut |_| {})?) {
                entry.vector = v;
                entries.push(entry);
            }
            embedded += batch.len();
            progress(embedded, total);
        }
        entries.sort_by(|a, b| a.file.cmp(&b.file));
        if entries.is_empty() {
            return Err(Error::invalid("images folder", format!("{} holds no readable images ({})", dir.display(), IMAGE_EXTENSIONS.join(", "))));
        }
        if total > 0 {
            let file = CacheFile { model, entries: entries.clone() };
            // A cache that cannot be written (read-only folder) only costs time next run.
            if let Err(e) = crate::search::write_atomic(&cache_path, &serde_json::to_vec(&file).map_err(|e| Error::invalid("cache", e.to_string()))?) {
                eprintln!("warning: could not cache image embeddings at {}: {e}", cache_path.display());
            }
        }
        Ok(ImageIndex { dir: dir.to_path_buf(), entries, embedded: total - skipped.len(), skipped, cache_path })
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The `k` images most similar to `query` (an L2-normalised text embedding), best first.
    pub fn search(&self, query: &[f32], k: usize) -> Vec<ImageHit> {
        let mut hits: Vec<ImageHit> =
            self.entries.iter().map(|e| ImageHit { path: self.dir.join(&e.file), score: cosine(query, &e.vector) }).collect();
        hits.sort_by(|a, b| b.score.total_cmp(&a.score));
        hits.truncate(k);
        hits
    }
}
