//! The smallest useful retrieval: every non-empty line of a text file is a document; the
//! corpus is embedded once and cached next to the file (`.<name>.plinth-embeddings`), keyed
//! by the file's SHA-256 and the model's identity, so an edited corpus or another model
//! re-embeds instead of returning stale hits. The cache is written to a temporary file and
//! renamed, so an interrupted run never leaves a cache that later looks valid.

use std::io::Write;
use std::path::{Path, PathBuf};

use plinth_core::{Error, Result};
use sha2::{Digest, Sha256};

use crate::embed::{cosine, EmbedOptions};
use crate::model::EncoderModel;

const MAGIC: &[u8] = b"PLINTH-EMBEDDINGS 1\n";

/// One line of the corpus and its embedding.
#[derive(Debug, Clone)]
pub struct Document {
    /// 1-based line number in the file.
    pub line: usize,
    pub text: String,
}

/// An embedded corpus.
#[derive(Debug, Clone)]
pub struct CorpusIndex {
    pub docs: Vec<Document>,
    /// Row-major `[docs, dim]`.
    pub vectors: Vec<f32>,
    pub dim: usize,
    /// Whether it came from the cache.
    pub cached: bool,
    pub cache_path: PathBuf,
}

/// A search result.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Hit {
    pub line: usize,
    pub text: String,
    pub score: f32,
}

fn hex(d: impl AsRef<[u8]>) -> String {
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// A cheap identity for a model directory: its config, tokenizer, pooling files and the
/// sizes plus first and last 64 KiB of every weight file.
pub fn model_key(model: &EncoderModel) -> Result<String> {
    dir_key(&model.dir, &format!("{:?}|{}|{}", model.pooling, model.normalize, model.tokenizer.max_len()))
}

/// A cheap identity for a model directory (see [`model_key`]), plus `extra` settings.
pub fn dir_key(dir: &Path, extra: &str) -> Result<String> {
    let mut h = Sha256::new();
    let mut files: Vec<PathBuf> = Vec::new();
    for root in [dir.to_path_buf()] {
        let mut stack = vec![root];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).map_err(|e| Error::io(&d, e))? {
                let p = e.map_err(|e| Error::io(&d, e))?.path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    files.push(p);
                }
            }
        }
    }
    files.sort();
    for p in files {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with('.') {
            continue;
        }
        h.update(p.strip_prefix(dir).unwrap_or(&p).to_string_lossy().as_bytes());
        if name.ends_with(".safetensors") {
            use std::io::{Read, Seek, SeekFrom};
            let mut f = std::fs::File::open(&p).map_err(|e| Error::io(&p, e))?;
            let len = f.metadata().map_err(|e| Error::io(&p, e))?.len();
            h.update(len.to_le_bytes());
            let mut buf = vec![0u8; 65536.min(len as usize)];
            f.read_exact(&mut buf).map_err(|e| Error::io(&p, e))?;
            h.update(&buf);
            f.seek(SeekFrom::End(-(buf.len() as i64))).map_err(|e| Error::io(&p, e))?;
            f.read_exact(&mut buf).map_err(|e| Error::io(&p, e))?;
            h.update(&buf);
        } else if name.ends_with(".json") || name.ends_with(".txt") {
            h.update(std::fs::read(&p).map_err(|e| Error::io(&p, e))?);
        }
    }
    h.update(extra.as_bytes());
    Ok(hex(h.finalize()))
}

/// Where the cache of `corpus` lives.
pub fn cache_path(corpus: &Path) -> PathBuf {
    let name = corpus.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "corpus".into());
    corpus.with_file_name(format!(".{name}.plinth-embeddings"))
}

/// Reads the corpus's documents.
pub fn read_corpus(corpus: &Path) -> Result<(Vec<Document>, String)> {
    let bytes = std::fs::read(corpus).map_err(|e| Error::io(corpus, e))?;
    let text = String::from_utf8(bytes.clone()).map_err(|_| Error::format(corpus, "not UTF-8 text"))?;
    let docs: Vec<Document> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| Document { line: i + 1, text: l.trim().to_string() })
        .collect();
    if docs.is_empty() {
        return Err(Error::format(corpus, "no non-empty lines to search"));
    }
    Ok((docs, hex(Sha256::digest(&bytes))))
}

impl CorpusIndex {
    /// Loads the cached embeddings of `corpus` when they match the file and the model, else
    /// embeds every line (`progress(done, total)`) and writes the cache.
    pub fn open(model: &EncoderModel, corpus: &Path, progress: &mut dyn FnMut(usize, usize)) -> Result<Self> {
        let (docs, digest) = read_corpus(corpus)?;
        let key = format!("corpus={digest} model={}", model_key(model)?);
        let cache = cache_path(corpus);
        let dim = model.embedding_dim();
        if let Some(vectors) = read_cache(&cache, MAGIC, &key, docs.len() * dim) {
            return Ok(CorpusIndex { docs, vectors, dim, cached: true, cache_path: cache });
        }
        let texts: Vec<&str> = docs.iter().map(|d| d.text.as_str()).collect();
        let total = texts.len();
        let inputs: Vec<crate::EmbedInput> = texts.iter().map(|t| crate::EmbedInput::Text(t)).collect();
        let opts = EmbedOptions { normalize: Some(true), ..Default::default() };
        let emb = model.embed_inputs(&inputs, opts, &mut |n| progress(n, total))?;
        let vectors: Vec<f32> = emb.vectors.into_iter().flatten().collect();
        // A cache that cannot be written (read-only directory) only costs time next run.
        if let Err(e) = write_cache(&cache, MAGIC, &key, &vectors) {
            eprintln!("warning: could not cache embeddings at {}: {e}", cache.display());
        }
        Ok(CorpusIndex { docs, vectors, dim, cached: false, cache_path: cache })
    }

    /// The `k` documents most similar to `query` (cosine), best first.
    pub fn search(&self, query: &[f32], k: usize) -> Vec<Hit> {
        let mut hits: Vec<Hit> = self
            .docs
            .iter()
            .zip(self.vectors.chunks(self.dim.max(1)))
            .map(|(d, v)| Hit { line: d.line, text: d.text.clone(), score: cosine(query, v) })
            .collect();
        hits.sort_by(|a, b| b.score.total_cmp(&a.score));
        hits.truncate(k);
        hits
    }
}

/// Reads an embedding cache file: `magic`, the key line, then little-endian f32s. `None`
/// when the file is missing, of another format or key, or of the wrong size.
pub(crate) fn read_cache(path: &Path, magic: &[u8], key: &str, floats: usize) -> Option<Vec<f32>> {
    let bytes = std::fs::read(path).ok()?;
    let rest = bytes.strip_prefix(magic)?;
    let nl = rest.iter().position(|&b| b == b'\n')?;
    if &rest[..nl] != key.as_bytes() {
        return None;
    }
    let data = &rest[nl + 1..];
    if data.len() != floats * 4 {
        return None;
    }
    Some(data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}

/// Writes an embedding cache file atomically (temporary file, fsync, rename).
pub(crate) fn write_cache(path: &Path, magic: &[u8], key: &str, vectors: &[f32]) -> Result<()> {
    let mut bytes = Vec::with_capacity(magic.len() + key.len() + 1 + vectors.len() * 4);
    bytes.extend_from_slice(magic);
    bytes.extend_from_slice(key.as_bytes());
    bytes.push(b'\n');
    vectors.iter().for_each(|v| bytes.extend_from_slice(&v.to_le_bytes()));
    write_atomic(path, &bytes)
}

/// Writes `bytes` to `path` through a temporary file, fsync and rename, so an interrupted
/// run never leaves a partial file under the final name.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("part-{}", std::process::id()));
    let res = (|| {
        let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        f.write_all(bytes).map_err(|e| Error::io(&tmp, e))?;
        f.sync_all().map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}
