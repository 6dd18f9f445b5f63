//! The [`Tokenizer`] type: encode/decode over a `tokenizers::Tokenizer`, plus what generation
//! needs beside the vocabulary (BOS/EOS ids and policy, the chat template, special tokens).
//! Construction lives in `from_gguf` and `from_hf`.

use std::path::Path;

use plinth_core::{Error, Result};

use crate::chat::ChatTemplate;

/// A tokenizer and the generation-relevant facts that travel with it.
pub struct Tokenizer {
    pub(crate) inner: tokenizers::Tokenizer,
    pub(crate) bos: Option<u32>,
    /// Every id that ends generation: EOS first, then EOT/EOM and the like.
    pub(crate) eos: Vec<u32>,
    pub(crate) add_bos: bool,
    pub(crate) add_eos: bool,
    pub(crate) chat_template: Option<String>,
    pub(crate) bos_token: Option<String>,
    pub(crate) eos_token: Option<String>,
    /// `tokenizer_config.json`'s `pad_token`, where it names a known token.
    pub(crate) pad: Option<u32>,
    /// Special (control) tokens, sorted by id.
    pub(crate) special: Vec<(String, u32)>,
    /// `inner.get_vocab_size(true)`, computed once: tokenizers builds the whole vocabulary map
    /// to answer it, which cost a 2x slowdown when the sampler asked for every token.
    pub(crate) vocab_size: usize,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("add_bos", &self.add_bos)
            .field("add_eos", &self.add_eos)
            .field("chat_template", &self.chat_template.is_some())
            .finish()
    }
}

pub(crate) fn tok_err(e: impl std::fmt::Display) -> Error {
    Error::Tokenizer(e.to_string())
}

impl Tokenizer {
    /// Builds the tokenizer described by a GGUF file's `tokenizer.*` metadata.
    pub fn from_gguf(gguf: &plinth_io::GgufFile) -> Result<Self> {
        crate::from_gguf::build(gguf)
    }

    /// Loads a Hugging Face `tokenizer.json`; a `tokenizer_config.json` (and
    /// `generation_config.json`, `chat_template.jinja`) beside it supply the chat template
    /// and BOS/EOS policy when present.
    pub fn from_file(tokenizer_json: &Path) -> Result<Self> {
        crate::from_hf::load(tokenizer_json)
    }

    /// The tokenizer in a Hugging Face folder: `tokenizer.json`, or for a `CLIPTokenizer` the
    /// `vocab.json` + `merges.txt` pair diffusers checkpoints ship.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        crate::from_hf::load_dir(dir)
    }

    /// The padding id the tokenizer's config names, if any.
    pub fn pad_id(&self) -> Option<u32> {
        self.pad
    }

    /// `text` as exactly `len` ids, the way diffusers feeds CLIP text encoders
    /// (`padding="max_length", truncation=True`): with BOS/EOS, cut to `len` keeping the final
    /// EOS, then padded with `pad`. Returns the ids and how many were real (before padding).
    pub fn encode_fixed(&self, text: &str, len: usize, pad: u32) -> Result<(Vec<u32>, usize)> {
        let mut ids = self.encode(text, true)?;
        if ids.len() > len {
            let last = ids.last().copied();
            ids.truncate(len);
            if let (Some(l), Some(slot)) = (last, ids.last_mut()) {
                if self.eos.contains(&l) {
                    *slot = l;
                }
            }
        }
        let real = ids.len();
        ids.resize(len, pad);
        Ok((ids, real))
    }

    /// Encodes `text`. Special-token text in `text` (e.g. `<|im_start|>`) always becomes the
    /// special token, as Hugging Face does. With `add_special`, BOS is prepended when the model
    /// asks for it (and EOS appended likewise).
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>> {
        let enc = self.inner.encode_fast(text, add_special).map_err(tok_err)?;
        let mut ids = enc.get_ids().to_vec();
        if add_special {
            // A tokenizer.json post-processor may already have added them; never double up.
            if let (true, Some(bos)) = (self.add_bos, self.bos) {
                if ids.first() != Some(&bos) {
                    ids.insert(0, bos);
                }
            }
            if let (true, Some(&eos)) = (self.add_eos, self.eos.first()) {
                if ids.last() != Some(&eos) {
                    ids.push(eos);
                }
            }
        }
        Ok(ids)
    }

    /// Decodes ids to text. An id outside the vocabulary is an error rather than silently
    /// dropped, because it means the model and tokenizer disagree.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.check_ids(ids)?;
        self.inner.decode(ids, skip_special).map_err(tok_err)
    }

    pub(crate) fn check_ids(&self, ids: &[u32]) -> Result<()> {
        match ids.iter().find(|&&id| self.inner.id_to_token(id).is_none()) {
            Some(id) => Err(Error::Tokenizer(format!(
                "token id {id} is outside the vocabulary ({} tokens)",
                self.vocab_size()
            ))),
            None => Ok(()),
        }
    }

    /// The vocabulary entry for `id` as stored (e.g. `Ġworld` for byte-level BPE, `▁world`
    /// for SentencePiece); use [`decode`](Self::decode) for display text.
    pub fn token_text(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Number of token ids, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.bos
    }

    /// All ids that end generation (EOS first).
    pub fn eos_ids(&self) -> &[u32] {
        &self.eos
    }

    pub fn is_eos(&self, id: u32) -> bool {
        self.eos.contains(&id)
    }

    /// Whether `encode(.., true)` prepends BOS.
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }

    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }

    /// Special tokens (text, id), sorted by id.
    pub fn special_tokens(&self) -> Vec<(String, u32)> {
        self.special.clone()
    }

    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// The model's chat template, ready to render. Like Hugging Face's `apply_chat_template`,
    /// encode the rendered text with `add_special = false`: templates write BOS themselves.
    pub fn chat(&self) -> Result<ChatTemplate> {
        let source = self.chat_template.as_deref().ok_or_else(|| {
            Error::Template(
                "this model has no chat template (tokenizer.chat_template is missing); use plain generation without --chat"
                    .into(),
            )
        })?;
        ChatTemplate::new(
            source,
            self.bos_token.as_deref().unwrap_or(""),
            self.eos_token.as_deref().unwrap_or(""),
        )
    }
}

/// Special tokens of a built `tokenizers::Tokenizer`, sorted by id.
pub(crate) fn collect_special(inner: &tokenizers::Tokenizer) -> Vec<(String, u32)> {
    let mut special: Vec<(String, u32)> = inner
        .get_added_tokens_decoder()
        .into_iter()
        .filter(|(_, t)| t.special)
        .map(|(id, t)| (t.content, id))
        .collect();
    special.sort_by_key(|&(_, id)| id);
    special
}

/// Names of control tokens that end a turn in common chat formats. Models often list only one
/// EOS id while emitting another of these at the end of a reply; llama.cpp treats the same
/// set as end-of-generation.
pub(crate) const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|eom_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "<|return|>",
    "<|call|>",
    "<｜end▁of▁sentence｜>",
];
