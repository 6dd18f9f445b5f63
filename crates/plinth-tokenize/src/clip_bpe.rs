//! CLIP's byte-level BPE from the slow-tokenizer files that diffusers checkpoints ship
//! (`vocab.json` + `merges.txt`, no `tokenizer.json`). Builds the same `tokenizers` pipeline
//! transformers' `CLIPTokenizer` assembles — NFC, whitespace runs to one space, lowercase; the
//! CLIP split regex then byte-level; BPE with `</w>` word ends; `<|startoftext|>` ... `<|endoftext|>`
//! around every text — so ids match it token for token.

use std::path::Path;

use plinth_core::{Error, Result};
use serde_json::{json, Value as Json};

const SPLIT: &str = r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

/// The `tokenizer.json` transformers would build for the CLIP tokenizer in `dir`. `config` is
/// its `tokenizer_config.json` (special tokens; their defaults are CLIP's).
pub(crate) fn tokenizer_json(dir: &Path, config: &Json) -> Result<Vec<u8>> {
    let vocab_path = dir.join("vocab.json");
    let merges_path = dir.join("merges.txt");
    let vocab: serde_json::Map<String, Json> = {
        let bytes = std::fs::read(&vocab_path).map_err(|e| Error::io(&vocab_path, e))?;
        serde_json::from_slice(&bytes).map_err(|e| Error::format(&vocab_path, format!("not a JSON object of token -> id: {e}")))?
    };
    let text = std::fs::read_to_string(&merges_path).map_err(|e| Error::io(&merges_path, e))?;
    let mut merges = Vec::new();
    for (n, line) in text.lines().enumerate() {
        // The first line is a `#version` header; blank lines end some files.
        if (n == 0 && line.starts_with("#version")) || line.trim().is_empty() {
            continue;
        }
        let mut parts = line.split(' ');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(a), Some(b), None) => merges.push(json!([a, b])),
            _ => return Err(Error::format(&merges_path, format!("line {} is not two symbols separated by a space", n + 1))),
        }
    }
    let field = |key: &str, default: &str| crate::from_hf::token_field(&config[key]).unwrap_or_else(|| default.to_string());
    let bos = field("bos_token", "<|startoftext|>");
    let eos = field("eos_token", "<|endoftext|>");
    let unk = field("unk_token", "<|endoftext|>");
    let pad = field("pad_token", "<|endoftext|>");
    let id = |tok: &str| {
        vocab
            .get(tok)
            .and_then(Json::as_u64)
            .ok_or_else(|| Error::format(&vocab_path, format!("has no id for the special token '{tok}'")))
    };
    let (bos_id, eos_id) = (id(&bos)?, id(&eos)?);
    // transformers registers every special token as an added token, so text equal to one (the
    // "!" SD 2.x pads with, say) is split out before BPE sees it.
    let mut added: Vec<(u64, &str)> = vec![(bos_id, &bos), (eos_id, &eos)];
    for t in [&unk, &pad] {
        let i = id(t)?;
        if !added.iter().any(|&(j, _)| j == i) {
            added.push((i, t));
        }
    }
    added.sort();
    let added: Vec<Json> = added
        .iter()
        .map(|(i, t)| json!({"id": i, "content": t, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}))
        .collect();
    let doc = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "NFC"},
            {"type": "Replace", "pattern": {"Regex": r"\s+"}, "content": " "},
            {"type": "Lowercase"}
        ]},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": SPLIT}, "behavior": "Removed", "invert": true},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}
        ]},
        "post_processor": {"type": "RobertaProcessing", "sep": [eos, eos_id], "cls": [bos, bos_id], "trim_offsets": false, "add_prefix_space": false},
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {
            "type": "BPE", "dropout": null, "unk_token": unk, "continuing_subword_prefix": "", "end_of_word_suffix": "</w>",
            "fuse_unk": false, "byte_fallback": false, "ignore_merges": false, "vocab": vocab, "merges": merges
        }
    });
    serde_json::to_vec(&doc).map_err(|e| Error::format(dir, e.to_string()))
}
