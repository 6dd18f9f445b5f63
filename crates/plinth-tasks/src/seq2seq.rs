//! Text in, text out with an encoder-decoder model (Marian translators, T5, BART
//! summarizers): [`Seq2SeqModel`] holds the model, its tokenizer and its generation settings,
//! and [`Seq2SeqModel::generate_texts`] tokenizes a batch the way the model's Hugging Face
//! tokenizer does (EOS appended), runs [`plinth_engine::seq2seq::generate`] and decodes
//! without special tokens.
//!
//! Tokenizers: `tokenizer.json` when the directory has one (T5, BART; its post-processor
//! appends `</s>`), else Marian's `source.spm` + `vocab.json` ([`MarianTokenizer`]).

mod marian_tok;

use std::path::{Path, PathBuf};

use plinth_core::{Error, Result};
use plinth_engine::seq2seq::{generate, max_source_tokens, Hypothesis, Seq2SeqGeneration, Seq2SeqOverrides};
use plinth_models::{Seq2Seq, Seq2SeqInfo};

pub use marian_tok::MarianTokenizer;

/// Most sources per `generate` call: bounds the decoder batch (× beams) and the padding waste.
const BATCH: usize = 16;
/// Most padded source tokens per `generate` call (sources × the longest): long sources go in
/// smaller batches, as the encoder's attention grows with the square of their length.
const BATCH_TOKENS: usize = 8192;

/// Whether `dir` holds an encoder-decoder model (its config.json `model_type` is one that
/// `plinth_models::load_seq2seq` knows). Missing or unreadable config: `false`.
pub fn is_seq2seq_dir(dir: &Path) -> bool {
    plinth_io::safetensors::read_config(dir)
        .ok()
        .and_then(|c| c.get("model_type").and_then(|m| m.as_str()).map(plinth_models::is_seq2seq_type))
        .unwrap_or(false)
}

/// An encoder-decoder model's tokenizer.
pub enum Seq2SeqTokenizer {
    /// `tokenizer.json` (a Hugging Face fast tokenizer).
    Json(Box<tokenizers::Tokenizer>),
    /// Marian's SentencePiece model + `vocab.json`.
    Marian(Box<MarianTokenizer>),
}

impl std::fmt::Debug for Seq2SeqTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Seq2SeqTokenizer::Json(_) => f.write_str("Seq2SeqTokenizer::Json"),
            Seq2SeqTokenizer::Marian(m) => write!(f, "Seq2SeqTokenizer::Marian({m:?})"),
        }
    }
}

impl Seq2SeqTokenizer {
    /// `dir/tokenizer.json`, else Marian's `source.spm` + `vocab.json`.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        if path.is_file() {
            let mut tok = plinth_tokenize::Tokenizer::from_file(&path)?.inner().clone();
            // Inputs are batched and padded by generate; the file's own settings would cut or pad them.
            tok.with_truncation(None).map_err(|e| Error::Tokenizer(e.to_string()))?;
            tok.with_padding(None);
            return Ok(Seq2SeqTokenizer::Json(Box::new(tok)));
        }
        if MarianTokenizer::present(dir) {
            return Ok(Seq2SeqTokenizer::Marian(Box::new(MarianTokenizer::from_dir(dir)?)));
        }
        Err(Error::missing(path, "tokenizer.json (or Marian's source.spm + vocab.json): the model's tokenizer"))
    }

    /// Source ids of `text`, special tokens (EOS) added as the Hugging Face tokenizer does.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        match self {
            Seq2SeqTokenizer::Json(t) => Ok(t.encode(text, true).map_err(|e| Error::Tokenizer(e.to_string()))?.get_ids().to_vec()),
            Seq2SeqTokenizer::Marian(m) => m.encode(text),
        }
    }

    /// Text of generated ids, special tokens skipped.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        match self {
            Seq2SeqTokenizer::Json(t) => t.decode(ids, true).map_err(|e| Error::Tokenizer(e.to_string())),
            Seq2SeqTokenizer::Marian(m) => Ok(m.decode(ids)),
        }
    }
}

/// One generated text with its ids and score.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Generated {
    pub text: String,
    /// Source tokens (EOS included).
    pub source_tokens: usize,
    /// Decoder start token, generated tokens and EOS when generated.
    pub hypothesis: Hypothesis,
}

/// An encoder-decoder model ready to turn texts into texts.
pub struct Seq2SeqModel {
    model: Box<dyn Seq2Seq>,
    tokenizer: Seq2SeqTokenizer,
    generation: Seq2SeqGeneration,
    config: serde_json::Value,
    dir: PathBuf,
}

impl std::fmt::Debug for Seq2SeqModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Seq2SeqModel").field("dir", &self.dir).field("info", self.model.info()).finish()
    }
}

impl Seq2SeqModel {
    /// Loads the model, its tokenizer and its generation settings from a Hugging Face directory.
    pub fn load(dir: &Path) -> Result<Self> {
        let config = plinth_io::safetensors::read_config(dir)?;
        let tokenizer = Seq2SeqTokenizer::from_dir(dir)?;
        let generation = Seq2SeqGeneration::from_dir(dir)?;
        generation.validate().map_err(|e| Error::format(dir.join("generation_config.json"), e.to_string()))?;
        let model = plinth_models::load_seq2seq(dir)?;
        Ok(Seq2SeqModel { model, tokenizer, generation, config, dir: dir.to_path_buf() })
    }

    pub fn info(&self) -> &Seq2SeqInfo {
        self.model.info()
    }

    pub fn model(&self) -> &dyn Seq2Seq {
        self.model.as_ref()
    }

    pub fn tokenizer(&self) -> &Seq2SeqTokenizer {
        &self.tokenizer
    }

    /// The directory's generation settings (before any overrides).
    pub fn generation(&self) -> &Seq2SeqGeneration {
        &self.generation
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// config.json's `task_specific_params.<task>.prefix` (T5: `"translate English to German: "`,
    /// `"summarize: "`); callers prepend it to each text.
    pub fn task_prefix(&self, task: &str) -> Option<&str> {
        self.config.get("task_specific_params")?.get(task)?.get("prefix")?.as_str()
    }

    /// Longest source in tokens (EOS included): the encoder's positions, or
    /// `plinth_engine::seq2seq::MAX_SOURCE_TOKENS` for models without a limit (T5).
    pub fn max_source_tokens(&self) -> usize {
        max_source_tokens(self.info())
    }

    /// Source tokens of `text` (EOS included), to plan batches that fit.
    pub fn count_tokens(&self, text: &str) -> Result<usize> {
        Ok(self.tokenizer.encode(text)?.len())
    }

    /// One output text per input text.
    pub fn generate_texts(&self, texts: &[&str], overrides: &Seq2SeqOverrides) -> Result<Vec<String>> {
        Ok(self.generate(texts, overrides)?.into_iter().map(|g| g.text).collect())
    }

    /// One [`Generated`] per input text. Texts are batched by length (results do not depend on
    /// the batching: rows never see each other).
    pub fn generate(&self, texts: &[&str], overrides: &Seq2SeqOverrides) -> Result<Vec<Generated>> {
        let settings = self.generation.clone().with_overrides(overrides);
        settings.validate()?;
        let mut sources = Vec::with_capacity(texts.len());
        for (i, text) in texts.iter().enumerate() {
            let ids = self.tokenizer.encode(text)?;
            let max = self.max_source_tokens();
            if ids.len() > max {
                return Err(Error::invalid(
                    "text",
                    format!("text {i} has {} tokens; this {} model takes at most {max}: split it", ids.len(), self.info().architecture),
                ));
            }
            if let Some(&bad) = ids.iter().find(|&&t| t as usize >= self.info().vocab_size) {
                return Err(Error::Tokenizer(format!("token id {bad} of text {i} is outside the model's vocabulary of {}", self.info().vocab_size)));
            }
            sources.push(ids);
        }
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(sources[i].len()));
        let mut out: Vec<Option<Generated>> = vec![None; texts.len()];
        let mut rest = order.as_slice();
        while !rest.is_empty() {
            // Longest first, so the first source of a batch sets its padded length.
            let fit = (BATCH_TOKENS / sources[rest[0]].len().max(1)).clamp(1, BATCH);
            let (chunk, tail) = rest.split_at(fit.min(rest.len()));
            rest = tail;
            let batch: Vec<Vec<u32>> = chunk.iter().map(|&i| sources[i].clone()).collect();
            for (&i, hypothesis) in chunk.iter().zip(generate(self.model.as_ref(), &batch, &settings)?) {
                let text = self.tokenizer.decode(&hypothesis.ids)?;
                out[i] = Some(Generated { text, source_tokens: sources[i].len(), hypothesis });
            }
        }
        Ok(out.into_iter().map(|g| g.expect("every text is in one batch")).collect())
    }
}
