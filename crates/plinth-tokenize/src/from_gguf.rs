//! Building a [`Tokenizer`] from GGUF `tokenizer.*` metadata. Owns the translation of
//! llama.cpp's vocabulary description (tokens, types, merges or scores, special ids) into the
//! `tokenizers` pipeline Hugging Face would build for the same model.
//!
//! GGUF metadata is untrusted: every wrong type, length mismatch or out-of-range id is an
//! [`Error::Format`] naming the file, never a panic.

use std::collections::HashMap;

use plinth_core::{Error, Result};
use plinth_io::{GgufFile, Value};
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::byte_level::ByteLevel;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::decoders::DecoderWrapper;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormalizerSequence};
use tokenizers::{AddedToken, NormalizerWrapper};

use crate::tokenizer::{collect_special, Tokenizer, EOG_TEXTS};

/// llama.cpp's `tokenizer.ggml.token_type` values.
const TYPE_NORMAL: u64 = 1;
const TYPE_UNKNOWN: u64 = 2;
const TYPE_CONTROL: u64 = 3;
const TYPE_USER_DEFINED: u64 = 4;

/// The SentencePiece word-boundary marker.
const SPM_SPACE: &str = "\u{2581}";

pub(crate) fn build(g: &GgufFile) -> Result<Tokenizer> {
    let m = Meta { g };
    let model = m
        .str("tokenizer.ggml.model")?
        .ok_or_else(|| Error::missing(g.path(), "tokenizer metadata (tokenizer.ggml.model)"))?;
    let is_spm = match model {
        "gpt2" => false,
        "llama" => true,
        other => {
            return Err(Error::unsupported(
                g.path(),
                format!("tokenizer model '{other}'"),
            ))
        }
    };
    let tokens = m
        .str_array("tokenizer.ggml.tokens")?
        .ok_or_else(|| Error::missing(g.path(), "tokenizer metadata (tokenizer.ggml.tokens)"))?;
    if tokens.is_empty() {
        return Err(Error::format(g.path(), "tokenizer.ggml.tokens is empty"));
    }
    let n = tokens.len();
    let types = match m.uint_array("tokenizer.ggml.token_type")? {
        Some(t) if t.len() != n => {
            return Err(Error::format(
                g.path(),
                format!(
                    "tokenizer.ggml.token_type has {} entries but there are {n} tokens",
                    t.len()
                ),
            ))
        }
        Some(t) => t,
        None => vec![TYPE_NORMAL; n],
    };

    let bos = m.id("tokenizer.ggml.bos_token_id", n)?;
    let eos = m.id("tokenizer.ggml.eos_token_id", n)?;
    let unk = m.id("tokenizer.ggml.unknown_token_id", n)?;
    let eot = m.id("tokenizer.ggml.eot_token_id", n)?;
    let eom = m.id("tokenizer.ggml.eom_token_id", n)?;
    // Still validated, so a corrupt file is caught here rather than at generation time.
    let _pad = m.id("tokenizer.ggml.padding_token_id", n)?;
    // llama.cpp's defaults: SentencePiece models start with BOS, byte-level BPE ones do not.
    let add_bos = m.bool("tokenizer.ggml.add_bos_token")?.unwrap_or(is_spm);
    let add_eos = m.bool("tokenizer.ggml.add_eos_token")?.unwrap_or(false);
    let chat_template = m.str("tokenizer.chat_template")?.map(str::to_owned);

    // Duplicate token strings exist in some vocabularies; like Hugging Face's conversion, the
    // last id wins for encoding, while every id still decodes.
    let vocab: Vocab = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.to_string(), i as u32))
        .collect();
    let unk_token = unk.map(|id| tokens[id as usize].to_string());

    let mut inner = if is_spm {
        let add_space_prefix = m.bool("tokenizer.ggml.add_space_prefix")?.unwrap_or(true);
        let merges = match m.str_array("tokenizer.ggml.merges")? {
            Some(list) => split_merges(g, &list, &vocab)?,
            None => {
                let scores = m.f32_array("tokenizer.ggml.scores")?.ok_or_else(|| {
                    Error::missing(
                        g.path(),
                        "tokenizer metadata (tokenizer.ggml.scores or tokenizer.ggml.merges)",
                    )
                })?;
                if scores.len() != n {
                    return Err(Error::format(
                        g.path(),
                        format!(
                            "tokenizer.ggml.scores has {} entries but there are {n} tokens",
                            scores.len()
                        ),
                    ));
                }
                merges_from_scores(&tokens, &scores)
            }
        };
        spm_tokenizer(g, vocab, merges, unk_token, add_space_prefix)?
    } else {
        let list = m.str_array("tokenizer.ggml.merges")?.ok_or_else(|| {
            Error::missing(g.path(), "tokenizer metadata (tokenizer.ggml.merges)")
        })?;
        let merges = split_merges(g, &list, &vocab)?;
        let pre = m.str("tokenizer.ggml.pre")?.unwrap_or("default");
        let pre = crate::pretok::for_name(pre).map_err(|e| Error::format(g.path(), e))?;
        let model = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .ignore_merges(pre.ignore_merges)
            .build()
            .map_err(|e| Error::format(g.path(), format!("tokenizer vocabulary: {e}")))?;
        let mut t = tokenizers::Tokenizer::new(model);
        t.with_pre_tokenizer(Some(pre.pre_tokenizer));
        t.with_decoder(Some(ByteLevel::default()));
        t
    };

    // Control (and unknown) tokens are special: matched whole in input text, skippable on
    // decode. User-defined ones are matched whole too but are ordinary text.
    let added = |wanted: &dyn Fn(u64) -> bool, special: bool| -> Vec<AddedToken> {
        tokens
            .iter()
            .zip(&types)
            .filter(|(t, &ty)| wanted(ty) && !t.is_empty())
            .map(|(t, _)| AddedToken::from(t.to_string(), special).normalized(false))
            .collect()
    };
    inner.add_special_tokens(&added(&|ty| ty == TYPE_CONTROL || ty == TYPE_UNKNOWN, true));
    inner.add_tokens(&added(&|ty| ty == TYPE_USER_DEFINED, false));

    let mut eos_ids: Vec<u32> = Vec::new();
    for id in [eos, eot, eom].into_iter().flatten() {
        if !eos_ids.contains(&id) {
            eos_ids.push(id);
        }
    }
    for (i, (t, &ty)) in tokens.iter().zip(&types).enumerate() {
        let id = i as u32;
        if ty == TYPE_CONTROL && EOG_TEXTS.contains(t) && !eos_ids.contains(&id) {
            eos_ids.push(id);
        }
    }

    Ok(Tokenizer {
        special: collect_special(&inner),
        pad: None,
        vocab_size: inner.get_vocab_size(true),
        inner,
        bos,
        eos: eos_ids,
        add_bos: add_bos && bos.is_some(),
        add_eos: add_eos && eos.is_some(),
        chat_template,
        bos_token: bos.map(|id| tokens[id as usize].to_string()),
        eos_token: eos.map(|id| tokens[id as usize].to_string()),
    })
}

/// The SentencePiece-as-BPE pipeline of Hugging Face's `LlamaTokenizerFast` (legacy mode):
/// spaces become `▁` with one prepended, unknown bytes fall back to `<0xNN>` tokens, and the
/// decoder undoes both.
fn spm_tokenizer(
    g: &GgufFile,
    vocab: Vocab,
    merges: Vec<(String, String)>,
    unk_token: Option<String>,
    add_space_prefix: bool,
) -> Result<tokenizers::Tokenizer> {
    let mut builder = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .byte_fallback(true)
        .fuse_unk(true);
    if let Some(unk) = unk_token {
        builder = builder.unk_token(unk);
    }
    let model = builder
        .build()
        .map_err(|e| Error::format(g.path(), format!("tokenizer vocabulary: {e}")))?;
    let mut t = tokenizers::Tokenizer::new(model);

    let replace = |from: &str, to: &str| {
        Replace::new(from, to)
            .map_err(|e| Error::Tokenizer(format!("building the SentencePiece pipeline: {e}")))
    };
    let mut norm: Vec<NormalizerWrapper> = Vec::new();
    if add_space_prefix {
        norm.push(Prepend::new(SPM_SPACE.into()).into());
    }
    norm.push(replace(" ", SPM_SPACE)?.into());
    t.with_normalizer(Some(NormalizerSequence::new(norm)));

    let mut dec: Vec<DecoderWrapper> = vec![
        replace(SPM_SPACE, " ")?.into(),
        ByteFallback::new().into(),
        Fuse::new().into(),
    ];
    if add_space_prefix {
        dec.push(Strip::new(' ', 1, 0).into());
    }
    t.with_decoder(Some(DecoderSequence::new(dec)));
    Ok(t)
}

/// Splits `"a b"` merge strings. Byte-level BPE encodes spaces as `Ġ`, so the separator is the
/// first space after the first character (a merge's left side may itself be a literal space,
/// as llama.cpp allows). Merges naming strings that are not tokens can never apply; they are
/// dropped, as llama.cpp effectively does, rather than rejecting the whole vocabulary.
fn split_merges(g: &GgufFile, list: &[&str], vocab: &Vocab) -> Result<Vec<(String, String)>> {
    let mut out = Vec::with_capacity(list.len());
    for (i, merge) in list.iter().enumerate() {
        let first_len = merge.chars().next().map_or(0, char::len_utf8);
        let Some(pos) = merge
            .get(first_len..)
            .and_then(|rest| rest.find(' '))
            .map(|p| p + first_len)
        else {
            return Err(Error::format(
                g.path(),
                format!(
                    "tokenizer.ggml.merges[{i}] = {merge:?} is not two tokens separated by a space"
                ),
            ));
        };
        let (left, right) = (&merge[..pos], &merge[pos + 1..]);
        if vocab.contains_key(left)
            && vocab.contains_key(right)
            && vocab.contains_key(&format!("{left}{right}"))
        {
            out.push((left.to_string(), right.to_string()));
        }
    }
    Ok(out)
}

/// Merges for a SentencePiece vocabulary that ships scores instead of merges, built the way
/// transformers' GGUF converter does: every split of a token into two tokens is a merge,
/// ranked by the merged token's score (ties by the parts' scores), highest first.
fn merges_from_scores(tokens: &[&str], scores: &[f32]) -> Vec<(String, String)> {
    let mut score_of: HashMap<&str, f32> = HashMap::with_capacity(tokens.len());
    let mut order: Vec<&str> = Vec::with_capacity(tokens.len());
    for (t, &s) in tokens.iter().zip(scores) {
        if score_of.insert(t, s).is_none() {
            order.push(t);
        }
    }
    let mut merges: Vec<(&str, &str, f32)> = Vec::new();
    for piece in order {
        let piece_score = score_of[piece];
        let mut local: Vec<(&str, &str, f32)> = piece
            .char_indices()
            .skip(1)
            .map(|(i, _)| (&piece[..i], &piece[i..]))
            .filter(|(l, r)| score_of.contains_key(l) && score_of.contains_key(r))
            .map(|(l, r)| (l, r, piece_score))
            .collect();
        // Stable sorts, descending, like the Python original: ties keep split order.
        local.sort_by(|a, b| {
            let ka = (score_of[a.0], score_of[a.1]);
            let kb = (score_of[b.0], score_of[b.1]);
            kb.0.total_cmp(&ka.0).then(kb.1.total_cmp(&ka.1))
        });
        merges.extend(local);
    }
    merges.sort_by(|a, b| b.2.total_cmp(&a.2));
    merges
        .into_iter()
        .map(|(l, r, _)| (l.to_string(), r.to_string()))
        .collect()
}

/// Typed, checked access to GGUF metadata.
struct Meta<'a> {
    g: &'a GgufFile,
}

impl<'a> Meta<'a> {
    fn wrong(&self, key: &str, want: &str, v: &Value) -> Error {
        Error::format(
            self.g.path(),
            format!("{key} should be {want}, found {}", v.type_name()),
        )
    }

    fn str(&self, key: &str) -> Result<Option<&'a str>> {
        match self.g.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .map(Some)
                .ok_or_else(|| self.wrong(key, "a string", v)),
        }
    }

    fn bool(&self, key: &str) -> Result<Option<bool>> {
        match self.g.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| self.wrong(key, "a bool", v)),
        }
    }

    /// A token id, checked against the vocabulary size.
    fn id(&self, key: &str, n_tokens: usize) -> Result<Option<u32>> {
        let Some(v) = self.g.get(key) else {
            return Ok(None);
        };
        // llama.cpp writes -1 (as i32 or u32::MAX) for "no such token".
        if v.as_i64() == Some(-1) || v.as_u64() == Some(u32::MAX as u64) {
            return Ok(None);
        }
        let id = v
            .as_u64()
            .ok_or_else(|| self.wrong(key, "an unsigned integer", v))?;
        if id >= n_tokens as u64 {
            return Err(Error::format(
                self.g.path(),
                format!("{key} is {id} but the vocabulary has {n_tokens} tokens"),
            ));
        }
        Ok(Some(id as u32))
    }

    fn array(&self, key: &str) -> Result<Option<&'a [Value]>> {
        match self.g.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_array()
                .map(Some)
                .ok_or_else(|| self.wrong(key, "an array", v)),
        }
    }

    fn str_array(&self, key: &str) -> Result<Option<Vec<&'a str>>> {
        let Some(a) = self.array(key)? else {
            return Ok(None);
        };
        a.iter()
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| self.wrong(key, "an array of strings", v))
            })
            .collect::<Result<_>>()
            .map(Some)
    }

    fn uint_array(&self, key: &str) -> Result<Option<Vec<u64>>> {
        let Some(a) = self.array(key)? else {
            return Ok(None);
        };
        a.iter()
            .map(|v| {
                v.as_u64()
                    .ok_or_else(|| self.wrong(key, "an array of unsigned integers", v))
            })
            .collect::<Result<_>>()
            .map(Some)
    }

    fn f32_array(&self, key: &str) -> Result<Option<Vec<f32>>> {
        let Some(a) = self.array(key)? else {
            return Ok(None);
        };
        a.iter()
            .map(|v| {
                v.as_f64()
                    .map(|f| f as f32)
                    .ok_or_else(|| self.wrong(key, "an array of numbers", v))
            })
            .collect::<Result<_>>()
            .map(Some)
    }
}
