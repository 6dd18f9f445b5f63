//! Marian (opus-mt) tokenization without a `tokenizer.json`: the repository's `source.spm`
//! (a SentencePiece model, read here from its protobuf by hand: pieces with score and type,
//! the unknown id, and the normalizer spec with its precompiled character map) becomes a
//! `tokenizers` Unigram pipeline laid out as transformers' `SpmConverter` emulates
//! SentencePiece; the pieces then go through `vocab.json` as transformers' `MarianTokenizer`
//! does (pieces missing from it become `<unk>`), and `</s>` is appended. Decoding maps ids back
//! through `vocab.json` and joins the pieces with `▁` turned into spaces.
//!
//! Not covered: user-defined spm pieces (opus-mt has none), byte-fallback models, and
//! sacremoses punctuation normalization (transformers applies it only when that package is
//! installed).

use std::collections::{HashMap, HashSet};
use std::path::Path;

use plinth_core::{Error, Result};
use tokenizers::models::unigram::Unigram;
use tokenizers::normalizers::replace::ReplacePattern;
use tokenizers::normalizers::{NormalizerWrapper, Precompiled, Prepend, Replace, Sequence};

/// The SentencePiece piece types (sentencepiece_model.proto).
const NORMAL: u64 = 1;
const USER_DEFINED: u64 = 4;
/// transformers' `SPIECE_UNDERLINE`.
const UNDERLINE: char = '\u{2581}';
/// What SentencePiece decodes an unknown piece to.
const UNK_SURFACE: &str = " \u{2047} ";
/// spm files are a few MB at most; anything far larger is not one.
const MAX_SPM_BYTES: u64 = 256 << 20;

/// The parts of a SentencePiece `ModelProto` that tokenization needs.
#[derive(Debug)]
pub(crate) struct SpmModel {
    /// (piece, score, type) in id order.
    pub pieces: Vec<(String, f32, u64)>,
    pub unk_id: usize,
    model_type: u64,
    byte_fallback: bool,
    charsmap: Vec<u8>,
    add_dummy_prefix: bool,
    remove_extra_whitespaces: bool,
    escape_whitespaces: bool,
}

/// A bounds-checked protobuf wire-format reader.
struct Wire<'a> {
    buf: &'a [u8],
    pos: usize,
    path: &'a Path,
}

enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed32(u32),
    Fixed64,
}

impl<'a> Wire<'a> {
    fn new(buf: &'a [u8], path: &'a Path) -> Self {
        Wire { buf, pos: 0, path }
    }

    fn bad(&self, what: &str) -> Error {
        Error::format(self.path, format!("not a SentencePiece model: {what} at byte {}", self.pos))
    }

    fn varint(&mut self) -> Result<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.buf.get(self.pos).ok_or_else(|| self.bad("truncated varint"))?;
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.bad("varint longer than 10 bytes"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len()).ok_or_else(|| self.bad("field runs past the end"))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    /// The next (field number, value), or `None` at the end.
    fn next(&mut self) -> Result<Option<(u64, Value<'a>)>> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let value = match key & 7 {
            0 => Value::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Value::Fixed64
            }
            2 => {
                let n = usize::try_from(self.varint()?).map_err(|_| self.bad("length overflow"))?;
                Value::Bytes(self.take(n)?)
            }
            5 => Value::Fixed32(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes"))),
            w => return Err(self.bad(&format!("wire type {w}"))),
        };
        Ok(Some((key >> 3, value)))
    }
}

impl SpmModel {
    pub fn read(path: &Path) -> Result<Self> {
        let len = std::fs::metadata(path).map_err(|e| Error::io(path, e))?.len();
        if len > MAX_SPM_BYTES {
            return Err(Error::format(path, format!("{len} bytes is too large for a SentencePiece model")));
        }
        let buf = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::parse(&buf, path)
    }

    pub fn parse(buf: &[u8], path: &Path) -> Result<Self> {
        let mut m = SpmModel {
            pieces: Vec::new(),
            unk_id: 0,
            model_type: 1,
            byte_fallback: false,
            charsmap: Vec::new(),
            add_dummy_prefix: true,
            remove_extra_whitespaces: true,
            escape_whitespaces: true,
        };
        let mut top = Wire::new(buf, path);
        while let Some((field, v)) = top.next()? {
            match (field, v) {
                (1, Value::Bytes(b)) => m.pieces.push(Self::piece(b, path)?),
                (2, Value::Bytes(b)) => {
                    let mut w = Wire::new(b, path);
                    while let Some((f, v)) = w.next()? {
                        match (f, v) {
                            (3, Value::Varint(t)) => m.model_type = t,
                            (35, Value::Varint(t)) => m.byte_fallback = t != 0,
                            (40, Value::Varint(t)) => m.unk_id = usize::try_from(t).unwrap_or(usize::MAX),
                            _ => {}
                        }
                    }
                }
                (3, Value::Bytes(b)) => {
                    let mut w = Wire::new(b, path);
                    while let Some((f, v)) = w.next()? {
                        match (f, v) {
                            (2, Value::Bytes(c)) => m.charsmap = c.to_vec(),
                            (3, Value::Varint(t)) => m.add_dummy_prefix = t != 0,
                            (4, Value::Varint(t)) => m.remove_extra_whitespaces = t != 0,
                            (5, Value::Varint(t)) => m.escape_whitespaces = t != 0,
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        if m.pieces.is_empty() {
            return Err(Error::format(path, "not a SentencePiece model: no pieces"));
        }
        if m.unk_id >= m.pieces.len() {
            return Err(Error::format(path, format!("unk id {} is not one of the {} pieces", m.unk_id, m.pieces.len())));
        }
        Ok(m)
    }

    fn piece(b: &[u8], path: &Path) -> Result<(String, f32, u64)> {
        let (mut piece, mut score, mut ty) = (String::new(), 0f32, NORMAL);
        let mut w = Wire::new(b, path);
        while let Some((f, v)) = w.next()? {
            match (f, v) {
                (1, Value::Bytes(s)) => piece = String::from_utf8(s.to_vec()).map_err(|_| Error::format(path, "a piece is not UTF-8"))?,
                (2, Value::Fixed32(x)) => score = f32::from_bits(x),
                (3, Value::Varint(t)) => ty = t,
                _ => {}
            }
        }
        Ok((piece, score, ty))
    }

    /// A `tokenizers` pipeline that segments text as SentencePiece does (transformers'
    /// `SpmConverter` layout); its ids are spm piece ids.
    fn pipeline(&self, path: &Path) -> Result<tokenizers::Tokenizer> {
        if self.model_type != 1 {
            return Err(Error::unsupported(path, format!("SentencePiece model type {} (only unigram, 1, is supported)", self.model_type)));
        }
        if self.byte_fallback {
            return Err(Error::unsupported(path, "SentencePiece byte fallback"));
        }
        // Control, unknown and unused pieces never match text in SentencePiece: give them
        // strings no text contains (ids stay the same).
        let vocab = self
            .pieces
            .iter()
            .enumerate()
            .map(|(i, (p, s, t))| (if matches!(*t, NORMAL | USER_DEFINED) { p.clone() } else { format!("\u{0}{i}\u{0}") }, f64::from(*s)))
            .collect();
        let model = Unigram::from(vocab, Some(self.unk_id), false).map_err(|e| Error::format(path, format!("unigram model: {e}")))?;
        let tok_err = |e: tokenizers::Error| Error::Tokenizer(e.to_string());
        let mut norms: Vec<NormalizerWrapper> = Vec::new();
        if !self.charsmap.is_empty() {
            let p = Precompiled::from(&self.charsmap).map_err(|e| Error::format(path, format!("precompiled character map: {e}")))?;
            norms.push(p.into());
        }
        if self.remove_extra_whitespaces {
            norms.push(Replace::new(ReplacePattern::Regex(r"\A +| +\z".into()), "").map_err(tok_err)?.into());
            norms.push(Replace::new(ReplacePattern::Regex(" {2,}".into()), " ").map_err(tok_err)?.into());
        }
        let space = if self.escape_whitespaces { UNDERLINE.to_string() } else { " ".to_string() };
        if self.escape_whitespaces {
            norms.push(Replace::new(" ", space.clone()).map_err(tok_err)?.into());
        }
        // SentencePiece's dummy prefix goes before any non-empty text, even one that starts
        // with a space; Metaspace's "first" scheme would skip it once leading spaces were
        // stripped (the text no longer starts at offset 0). Each encode call is one chunk.
        if self.add_dummy_prefix {
            norms.push(Prepend::new(space).into());
        }
        let mut tok = tokenizers::Tokenizer::new(model);
        tok.with_normalizer(Some(Sequence::new(norms)));
        Ok(tok)
    }
}

/// transformers' `MarianTokenizer` over `source.spm` + `vocab.json` (+ `target_vocab.json`
/// when `tokenizer_config.json` says `separate_vocabs`).
pub struct MarianTokenizer {
    spm: tokenizers::Tokenizer,
    source_pieces: Vec<String>,
    vocab: HashMap<String, u32>,
    /// Target ids to tokens (the inverse of vocab.json, or of target_vocab.json).
    inverse: HashMap<u32, String>,
    /// Pieces of the model that decodes (normal / user-defined only).
    decode_pieces: HashSet<String>,
    /// Tokens split out of the text before SentencePiece, longest first.
    added: Vec<(String, u32)>,
    special_ids: HashSet<u32>,
    unk_id: u32,
    eos_id: u32,
}

impl std::fmt::Debug for MarianTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MarianTokenizer").field("vocab", &self.vocab.len()).finish()
    }
}

fn read_vocab(path: &Path) -> Result<HashMap<String, u32>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::format(path, format!("expected a JSON object of token -> id: {e}")))
}

/// A special token named in tokenizer_config.json: a string or `{"content": ...}`.
fn token_name(v: Option<&serde_json::Value>, default: &str) -> String {
    match v {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(o) => o.get("content").and_then(|c| c.as_str()).unwrap_or(default).to_string(),
        None => default.to_string(),
    }
}

impl MarianTokenizer {
    /// Whether `dir` holds Marian's tokenizer files.
    pub fn present(dir: &Path) -> bool {
        dir.join("source.spm").is_file() && dir.join("vocab.json").is_file()
    }

    pub fn from_dir(dir: &Path) -> Result<Self> {
        let spm_path = dir.join("source.spm");
        let source = SpmModel::read(&spm_path)?;
        let vocab_path = dir.join("vocab.json");
        let vocab = read_vocab(&vocab_path)?;
        let config_path = dir.join("tokenizer_config.json");
        let config: serde_json::Value = match std::fs::read_to_string(&config_path) {
            Ok(t) => serde_json::from_str(&t).map_err(|e| Error::format(&config_path, format!("invalid JSON: {e}")))?,
            Err(_) => serde_json::Value::Null,
        };
        let id_of = |name: &str| vocab.get(name).copied().ok_or_else(|| Error::missing(&vocab_path, format!("the token '{name}'")));
        let unk_id = id_of(&token_name(config.get("unk_token"), "<unk>"))?;
        let eos_id = id_of(&token_name(config.get("eos_token"), "</s>"))?;
        let pad = token_name(config.get("pad_token"), "<pad>");
        let pad_id = id_of(&pad)?;
        let mut added: Vec<(String, u32)> =
            vec![(token_name(config.get("unk_token"), "<unk>"), unk_id), (token_name(config.get("eos_token"), "</s>"), eos_id), (pad, pad_id)];
        let mut special_ids: HashSet<u32> = added.iter().map(|a| a.1).collect();
        if let Some(decoder) = config.get("added_tokens_decoder").and_then(|d| d.as_object()) {
            for (id, t) in decoder {
                let (Ok(id), Some(content)) = (id.parse::<u32>(), t.get("content").and_then(|c| c.as_str())) else { continue };
                if !added.iter().any(|a| a.0 == content) {
                    added.push((content.to_string(), id));
                }
                if t.get("special").and_then(|s| s.as_bool()).unwrap_or(false) {
                    special_ids.insert(id);
                }
            }
        }
        added.sort_by_key(|a| std::cmp::Reverse(a.0.len()));
        let separate = config.get("separate_vocabs").and_then(|s| s.as_bool()).unwrap_or(false);
        // transformers 5 decodes with the source model unless the vocabularies are separate.
        let (inverse, decode_model) = if separate {
            let target = read_vocab(&dir.join("target_vocab.json"))?;
            (target.into_iter().map(|(k, v)| (v, k)).collect(), Some(SpmModel::read(&dir.join("target.spm"))?))
        } else {
            (vocab.iter().map(|(k, v)| (*v, k.clone())).collect(), None)
        };
        let spm = source.pipeline(&spm_path)?;
        let normal = |m: &SpmModel| m.pieces.iter().filter(|p| matches!(p.2, NORMAL | USER_DEFINED)).map(|p| p.0.clone()).collect();
        let decode_pieces = decode_model.as_ref().map_or_else(|| normal(&source), normal);
        let source_pieces = source.pieces.into_iter().map(|p| p.0).collect();
        Ok(MarianTokenizer { spm, source_pieces, vocab, inverse, decode_pieces, added, special_ids, unk_id, eos_id })
    }

    /// Source ids of `text` with `</s>` appended (`MarianTokenizer(text).input_ids`).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = Vec::new();
        let mut rest = text;
        // Added tokens are split out first; each chunk between them is segmented on its own.
        while !rest.is_empty() {
            let hit = self.added.iter().filter_map(|(t, id)| rest.find(t.as_str()).map(|at| (at, t.len(), *id))).min_by_key(|h| h.0);
            let (chunk, next) = match hit {
                Some((at, len, id)) => (&rest[..at], Some((id, &rest[at + len..]))),
                None => (rest, None),
            };
            self.encode_chunk(chunk, &mut ids)?;
            match next {
                Some((id, after)) => {
                    ids.push(id);
                    rest = after;
                }
                None => break,
            }
        }
        ids.push(self.eos_id);
        Ok(ids)
    }

    fn encode_chunk(&self, mut chunk: &str, ids: &mut Vec<u32>) -> Result<()> {
        if chunk.is_empty() {
            return Ok(());
        }
        // A leading language code (`>>fra<<`) is one token (opus-mt multilingual targets).
        if chunk.starts_with(">>") {
            if let Some(end) = chunk.find("<<") {
                ids.push(self.vocab.get(&chunk[..end + 2]).copied().unwrap_or(self.unk_id));
                chunk = &chunk[end + 2..];
            }
        }
        let enc = self.spm.encode(chunk, false).map_err(|e| Error::Tokenizer(e.to_string()))?;
        for &spm_id in enc.get_ids() {
            let piece = &self.source_pieces[spm_id as usize];
            ids.push(self.vocab.get(piece).copied().unwrap_or(self.unk_id));
        }
        Ok(())
    }

    /// Text of target ids, special tokens skipped (`decode(ids, skip_special_tokens=True)`).
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut out = String::new();
        for id in ids.iter().filter(|id| !self.special_ids.contains(id)) {
            match self.inverse.get(id).or_else(|| self.source_pieces.get(*id as usize)) {
                Some(t) if self.decode_pieces.contains(t) => out.push_str(t),
                _ => out.push_str(UNK_SURFACE),
            }
        }
        out.replace(UNDERLINE, " ").trim().to_string()
    }

    pub fn eos_id(&self) -> u32 {
        self.eos_id
    }

    /// Ids that decoding leaves out.
    pub fn special_ids(&self) -> &HashSet<u32> {
        &self.special_ids
    }
}
