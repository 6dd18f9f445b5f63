//! Turning text into encoder input: special tokens, token types, character offsets and
//! truncation, exactly as a Hugging Face fast tokenizer called with `truncation=True` /
//! `max_length` does (the same `tokenizer.json`, through the same `tokenizers` library).

use std::path::Path;

use plinth_core::{Error, Result};
use tokenizers::{Encoding, TruncationDirection, TruncationParams, TruncationStrategy};

/// One encoded input: ids, token types and (when asked for) character offsets.
pub type Encoded = Encoding;

/// A tokenizer for an encoder model.
#[derive(Clone)]
pub struct EncoderTokenizer {
    plain: tokenizers::Tokenizer,
    truncating: tokenizers::Tokenizer,
    max_len: usize,
    pad_id: u32,
}

impl std::fmt::Debug for EncoderTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncoderTokenizer").field("max_len", &self.max_len).finish()
    }
}

fn tok_err(e: impl std::fmt::Display) -> Error {
    Error::Tokenizer(e.to_string())
}

/// What to do with an input longer than the model takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    /// Keep the first tokens (as sentence-transformers and the transformers pipelines do).
    Truncate,
    /// Refuse with an error naming the input and both lengths.
    Error,
}

impl EncoderTokenizer {
    /// Loads `dir/tokenizer.json`; inputs are cut (or refused) at `max_len` tokens,
    /// special tokens included.
    pub fn from_dir(dir: &Path, max_len: usize) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        if !path.exists() {
            return Err(Error::missing(&path, "tokenizer.json (the encoder's tokenizer)"));
        }
        let plain = plinth_tokenize::Tokenizer::from_file(&path)?.inner().clone();
        Self::from_tokenizer(plain, max_len)
    }

    /// Wraps a loaded tokenizer (padding and truncation already off).
    pub fn from_tokenizer(plain: tokenizers::Tokenizer, max_len: usize) -> Result<Self> {
        if max_len < 4 {
            return Err(Error::invalid("max sequence length", format!("{max_len} is too short for an encoder input")));
        }
        let mut truncating = plain.clone();
        truncating.with_truncation(Some(trunc_params(max_len, TruncationStrategy::LongestFirst, 0))).map_err(tok_err)?;
        let pad_id = plain
            .get_padding()
            .map(|p| p.pad_id)
            .or_else(|| ["[PAD]", "<pad>", "<|padding|>"].iter().find_map(|t| plain.token_to_id(t)))
            .unwrap_or(0);
        Ok(EncoderTokenizer { plain, truncating, max_len, pad_id })
    }

    /// Longest input in tokens, special tokens included.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.plain
    }

    /// Encodes one text (`pair` = `None`) or a text pair, with special tokens. `offsets`
    /// asks for character offsets (slower); `what` names the input in the error for
    /// [`Overflow::Error`].
    pub fn encode(&self, text: &str, pair: Option<&str>, overflow: Overflow, offsets: bool, what: &dyn Fn() -> String) -> Result<Encoded> {
        let enc = self.run(&self.plain, text, pair, offsets)?;
        if enc.len() <= self.max_len {
            return Ok(enc);
        }
        match overflow {
            Overflow::Truncate => self.run(&self.truncating, text, pair, offsets),
            Overflow::Error => Err(Error::invalid(
                what(),
                format!("{} tokens, more than the model's limit of {} (truncation is off)", enc.len(), self.max_len),
            )),
        }
    }

    fn run(&self, tok: &tokenizers::Tokenizer, text: &str, pair: Option<&str>, offsets: bool) -> Result<Encoded> {
        let mut enc = match (pair, offsets) {
            (None, false) => tok.encode_fast(text, true),
            (None, true) => tok.encode_char_offsets(text, true),
            (Some(p), false) => tok.encode_fast((text, p), true),
            (Some(p), true) => tok.encode_char_offsets((text, p), true),
        }
        .map_err(tok_err)?;
        // Overflowing windows are only wanted by callers that ask for them (question answering
        // builds its own tokenizer for that).
        enc.get_overflowing_mut().clear();
        Ok(enc)
    }

    /// Already-tokenized input (OpenAI's token-array form): special tokens are added around
    /// it as for text. Ids outside the vocabulary are refused.
    pub fn encode_ids(&self, ids: &[u32], overflow: Overflow, what: &dyn Fn() -> String) -> Result<Encoded> {
        let vocab = self.plain.get_vocab_size(true) as u32;
        if let Some(bad) = ids.iter().find(|&&i| i >= vocab) {
            return Err(Error::invalid(what(), format!("token id {bad} is outside the vocabulary (size {vocab})")));
        }
        let tokens: Vec<String> = ids.iter().map(|&i| self.plain.id_to_token(i).unwrap_or_default()).collect();
        let n = ids.len();
        let enc = Encoding::new(ids.to_vec(), vec![0; n], tokens, vec![None; n], vec![(0, 0); n], vec![0; n], vec![1; n], vec![], Default::default());
        let tok = if overflow == Overflow::Truncate { &self.truncating } else { &self.plain };
        let mut out = tok.post_process(enc, None, true).map_err(tok_err)?;
        out.get_overflowing_mut().clear();
        if out.len() > self.max_len {
            return Err(Error::invalid(
                what(),
                format!("{} tokens, more than the model's limit of {} (truncation is off)", out.len(), self.max_len),
            ));
        }
        Ok(out)
    }

    /// A copy that splits a long second sequence into overlapping windows of `max_len`
    /// tokens with `stride` tokens of overlap (extractive question answering).
    pub fn windowed(&self, max_len: usize, stride: usize) -> Result<tokenizers::Tokenizer> {
        let mut t = self.plain.clone();
        t.with_truncation(Some(trunc_params(max_len, TruncationStrategy::OnlySecond, stride))).map_err(tok_err)?;
        Ok(t)
    }

    /// Joins tokens back into text the way the tokenizer's decoder does (`##` pieces glued,
    /// byte-level pieces decoded), as transformers' `convert_tokens_to_string`.
    pub fn tokens_to_string(&self, tokens: Vec<String>) -> Result<String> {
        use tokenizers::Decoder;
        match self.plain.get_decoder() {
            Some(d) => d.decode(tokens).map_err(tok_err),
            None => Ok(tokens.join(" ")),
        }
    }
}

fn trunc_params(max_length: usize, strategy: TruncationStrategy, stride: usize) -> TruncationParams {
    TruncationParams { max_length, strategy, stride, direction: TruncationDirection::Right }
}
