//! Retrieval-augmented answers: an encoder finds the passages, a decoder answers from them and
//! cites them. This module owns the passages of a corpus directory (every `.txt` / `.md` file
//! below it, cut at paragraphs and, when long, at line then sentence boundaries, each passage
//! knowing its file and 1-based inclusive line range), their embedding cache, retrieval, the
//! prompt that numbers the passages for an instruct LLM (within its context budget), and the
//! parsing of the `[n]` citations the model writes. Generative QA over a single text
//! ([`answer_context`]) uses the same machinery when the text does not fit the prompt.
//!
//! The cache (`DIR/.plinth-rag-embeddings`) follows `search.rs`: keyed by every file's path
//! and SHA-256, the passage budget and the embedder's identity ([`crate::search::model_key`]),
//! and written to a temporary file then renamed, so an edited corpus is re-embedded and an
//! interrupted run never leaves a cache that later looks valid.
//!
//! ```no_run
//! # fn main() -> plinth_core::Result<()> {
//! use plinth_io::fetch::ModelLocation;
//! use plinth_tasks::rag::{answer, AnswerOptions, PassageIndex};
//! use plinth_tasks::EncoderModel;
//!
//! let embedder = EncoderModel::load("models/all-MiniLM-L6-v2".as_ref())?;
//! let index = PassageIndex::open_corpus(&embedder, "fixtures/corpus".as_ref(), &mut |_, _| {})?;
//! for hit in index.retrieve(&embedder, "When was the lighthouse lit?", 4)? {
//!     let p = &index.passages[hit.index];
//!     println!("{:.3} {}:{}-{}", hit.score, p.file, p.start_line, p.end_line);
//! }
//! let llm = plinth_models::load_decoder(&ModelLocation::Gguf("smollm2.gguf".into()))?;
//! let tok = plinth_tokenize::Tokenizer::from_gguf(llm.gguf.as_ref().unwrap())?;
//! let a = answer(llm.model.as_ref(), &tok, &embedder, &index, "When was the lighthouse lit?", &AnswerOptions::default(), &mut |t| print!("{t}"))?;
//! for c in &a.sources {
//!     println!("[{}] {}:{}-{} {}", c.id, c.file, c.start_line, c.end_line, if a.cited.contains(&c.id) { "cited" } else { "" });
//! }
//! # Ok(())
//! # }
//! ```

use std::path::{Path, PathBuf};

use plinth_core::{Error, Result};
use sha2::{Digest, Sha256};

use crate::embed::{cosine, EmbedOptions};
use crate::search::{read_cache, write_cache};
use crate::model::EncoderModel;

/// The cache file inside a corpus directory (hidden, so the walk skips it).
pub const CACHE_NAME: &str = ".plinth-rag-embeddings";
const MAGIC: &[u8] = b"PLINTH-RAG-EMBEDDINGS 1\n";
/// Files larger than this are refused rather than read whole into memory.
const MAX_FILE_BYTES: u64 = 64 << 20;
/// Passage length in embedder tokens: all-MiniLM-L6-v2 was trained on 128-token inputs.
pub const PASSAGE_TOKENS: usize = 128;

/// A piece of a corpus file: `text` is lines `start_line..=end_line` (1-based) of `file`
/// joined with `\n`, or, for a single line longer than the budget, a sentence-aligned part of it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Passage {
    /// Path relative to the corpus directory, `/`-separated.
    pub file: String,
    pub start_line: usize,
    pub end_line: usize,
    pub text: String,
    /// The file's title (a `# ` line, or a first line standing alone), prefixed to the text
    /// for embedding: passages rarely repeat it.
    #[serde(skip)]
    pub title: Option<String>,
}

impl Passage {
    fn embed_text(&self) -> String {
        match &self.title {
            Some(t) if !self.text.contains(t.as_str()) => format!("{t}\n{}", self.text),
            _ => self.text.clone(),
        }
    }
}

/// Every `.txt` and `.md` file below `dir`, sorted by relative path; hidden files and
/// directories (the cache among them) are skipped.
pub fn corpus_files(dir: &Path) -> Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        return Err(Error::missing(dir, "a corpus directory of .txt / .md files"));
    }
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).map_err(|e| Error::io(&d, e))? {
            let p = e.map_err(|e| Error::io(&d, e))?.path();
            if p.file_name().and_then(|n| n.to_str()).is_none_or(|n| n.starts_with('.')) {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
            } else if matches!(p.extension().and_then(|x| x.to_str()), Some("txt" | "md")) {
                files.push(p);
            }
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(Error::missing(dir, "no .txt or .md files in the corpus directory"));
    }
    Ok(files)
}

fn read_text(path: &Path) -> Result<(String, Vec<u8>)> {
    let len = std::fs::metadata(path).map_err(|e| Error::io(path, e))?.len();
    if len > MAX_FILE_BYTES {
        return Err(Error::format(path, format!("{len} bytes; corpus files are limited to {MAX_FILE_BYTES} bytes")));
    }
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let text = String::from_utf8(bytes.clone()).map_err(|_| Error::format(path, "not UTF-8 text"))?;
    Ok((text, bytes))
}

/// A Markdown heading, or a plain-text one: a short line that does not end a sentence.
fn is_heading(line: &str) -> bool {
    let t = line.trim();
    t.starts_with('#') || (t.chars().count() <= 60 && !t.ends_with(['.', '!', '?', ':', ';', ',', ')', '"', '\'']))
}

/// Cuts one file's text into passages of at most `budget` tokens (as counted by `count`):
/// paragraphs (runs of non-blank lines; a paragraph of headings alone joins the next one), packed
/// line by line when too long, and a single over-long line split at sentences
/// ([`crate::chunk::split`]), its parts keeping that line's number.
pub fn passages_of(file: &str, text: &str, budget: usize, count: &dyn Fn(&str) -> usize) -> Vec<Passage> {
    let lines: Vec<&str> = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l)).collect();
    // The title: a `# ` line, else a first line that stands alone as a heading.
    let plain_title = lines.first().filter(|l| is_heading(l) && lines.get(1).is_none_or(|n| n.trim().is_empty()));
    let title = lines
        .iter()
        .find(|l| l.starts_with("# "))
        .or(plain_title)
        .map(|l| l.trim_start_matches('#').trim().to_string())
        .filter(|t| !t.is_empty());
    // Paragraphs as 0-based inclusive line ranges.
    let mut paras: Vec<(usize, usize)> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim().is_empty() {
            i += 1;
            continue;
        }
        let start = i;
        while i < lines.len() && !lines[i].trim().is_empty() {
            i += 1;
        }
        paras.push((start, i - 1));
    }
    let mut merged: Vec<(usize, usize)> = Vec::new();
    let mut pending: Option<usize> = None;
    for (a, b) in paras {
        let start = pending.take().unwrap_or(a);
        if (a == b && is_heading(lines[a])) || (a..=b).all(|k| lines[k].trim_start().starts_with('#')) {
            pending = Some(start);
        } else {
            merged.push((start, b));
        }
    }
    if let Some(s) = pending {
        // Headings at the end of the file with nothing under them: keep them (they are text).
        merged.push((s, lines.len() - 1));
    }
    let budget = budget.max(1);
    let title_tokens = title.as_deref().map(count).unwrap_or(0);
    let line_budget = budget.saturating_sub(title_tokens).max(budget / 2).max(1);
    let mk = |a: usize, b: usize, text: String| Passage { file: file.to_string(), start_line: a + 1, end_line: b + 1, text, title: title.clone() };
    let join = |a: usize, b: usize| lines[a..=b].join("\n").trim_end().to_string();
    let mut out = Vec::new();
    for (a, b) in merged {
        let mut start = a;
        let mut k = a;
        while k <= b {
            // Extend [start, k] while it fits; a lone line that does not fit is split.
            if count(&join(start, k)) <= line_budget {
                k += 1;
                continue;
            }
            if k > start {
                out.push(mk(start, k - 1, join(start, k - 1)));
                start = k;
                continue;
            }
            for c in crate::chunk::split(lines[k], line_budget, count) {
                let t = c.text.trim();
                if !t.is_empty() {
                    out.push(mk(k, k, t.to_string()));
                }
            }
            k += 1;
            start = k;
        }
        if start <= b {
            // Trailing blank lines never reach here: paragraphs end at a non-blank line.
            let (s, e) = (start, b);
            if !join(s, e).trim().is_empty() {
                out.push(mk(s, e, join(s, e)));
            }
        }
    }
    out
}

/// A passage's rank after retrieval: `index` into [`PassageIndex::passages`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Retrieved {
    pub index: usize,
    pub score: f32,
}

/// Embedded passages of a corpus (or of one text).
#[derive(Debug, Clone)]
pub struct PassageIndex {
    pub passages: Vec<Passage>,
    /// Row-major `[passages, dim]`, L2-normalised.
    vectors: Vec<f32>,
    dim: usize,
    /// Whether the embeddings came from the cache.
    pub cached: bool,
    /// Where the cache is (none for a single text).
    pub cache_path: Option<PathBuf>,
    /// Why the cache could not be written, if it could not (the index is still complete).
    pub cache_warning: Option<String>,
}

fn hex(d: impl AsRef<[u8]>) -> String {
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn token_counter(embedder: &EncoderModel) -> impl Fn(&str) -> usize + '_ {
    |s: &str| embedder.tokenizer.inner().encode_fast(s, false).map(|e| e.len()).unwrap_or(usize::MAX / 4)
}

fn passage_budget(embedder: &EncoderModel) -> usize {
    // Two places for [CLS] / [SEP].
    PASSAGE_TOKENS.min(embedder.tokenizer.max_len().saturating_sub(2)).max(8)
}

fn embed_passages(embedder: &EncoderModel, passages: &[Passage], progress: &mut dyn FnMut(usize, usize)) -> Result<Vec<f32>> {
    let texts: Vec<String> = passages.iter().map(Passage::embed_text).collect();
    let inputs: Vec<crate::EmbedInput> = texts.iter().map(|t| crate::EmbedInput::Text(t)).collect();
    let total = inputs.len();
    let opts = EmbedOptions { normalize: Some(true), ..Default::default() };
    let emb = embedder.embed_inputs(&inputs, opts, &mut |n| progress(n, total))?;
    Ok(emb.vectors.into_iter().flatten().collect())
}

impl PassageIndex {
    /// The passages of every file below `dir`, with their embeddings from the cache when it
    /// matches the files and the embedder, else embedded now (`progress(done, total)`) and
    /// cached.
    pub fn open_corpus(embedder: &EncoderModel, dir: &Path, progress: &mut dyn FnMut(usize, usize)) -> Result<Self> {
        let budget = passage_budget(embedder);
        let count = token_counter(embedder);
        let mut key = Sha256::new();
        key.update(MAGIC);
        key.update(format!("budget={budget}\n").as_bytes());
        let mut passages = Vec::new();
        for path in corpus_files(dir)? {
            let rel = path.strip_prefix(dir).unwrap_or(&path).components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/");
            let (text, bytes) = read_text(&path)?;
            key.update(format!("{rel}\0{}\n", hex(Sha256::digest(&bytes))).as_bytes());
            passages.extend(passages_of(&rel, &text, budget, &count));
        }
        if passages.is_empty() {
            return Err(Error::missing(dir, "no text in the corpus files"));
        }
        let key = format!("{} model={}", hex(key.finalize()), crate::search::model_key(embedder)?);
        let cache = dir.join(CACHE_NAME);
        let dim = embedder.embedding_dim();
        if let Some(vectors) = read_cache(&cache, MAGIC, &key, passages.len() * dim) {
            return Ok(PassageIndex { passages, vectors, dim, cached: true, cache_path: Some(cache), cache_warning: None });
        }
        let vectors = embed_passages(embedder, &passages, progress)?;
        // A cache that cannot be written (read-only directory) only costs time next run.
        let cache_warning = write_cache(&cache, MAGIC, &key, &vectors).err().map(|e| format!("could not cache embeddings at {}: {e}", cache.display()));
        Ok(PassageIndex { passages, vectors, dim, cached: false, cache_path: Some(cache), cache_warning })
    }

    /// The passages of one text (named `label` in citations), embedded now, not cached.
    pub fn from_text(embedder: &EncoderModel, label: &str, text: &str) -> Result<Self> {
        let passages = passages_of(label, text, passage_budget(embedder), &token_counter(embedder));
        if passages.is_empty() {
            return Err(Error::invalid(label, "the text is empty"));
        }
        let vectors = embed_passages(embedder, &passages, &mut |_, _| {})?;
        Ok(PassageIndex { passages, vectors, dim: embedder.embedding_dim(), cached: false, cache_path: None, cache_warning: None })
    }

    /// The `k` passages most similar to `question` (cosine of normalised embeddings), best
    /// first; ties keep corpus order.
    pub fn retrieve(&self, embedder: &EncoderModel, question: &str, k: usize) -> Result<Vec<Retrieved>> {
        if question.trim().is_empty() {
            return Err(Error::invalid("question", "is empty"));
        }
        if embedder.embedding_dim() != self.dim {
            return Err(Error::invalid("embedder", format!("makes {}-dimensional vectors but the index holds {}", embedder.embedding_dim(), self.dim)));
        }
        let q = embedder.embed(&[question], EmbedOptions { normalize: Some(true), ..Default::default() })?;
        let q = &q.vectors[0];
        let mut hits: Vec<Retrieved> = self.vectors.chunks(self.dim.max(1)).enumerate().map(|(index, v)| Retrieved { index, score: cosine(q, v) }).collect();
        hits.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.index.cmp(&b.index)));
        hits.truncate(k);
        Ok(hits)
    }
}

pub use crate::answer::{answer, answer_context, context_fits, parse_citations, AnswerOptions, Citation, RagAnswer};
