//! Loading a [`Tokenizer`] from a Hugging Face `tokenizer.json`, with the generation facts
//! that live beside it: `tokenizer_config.json` (chat template, BOS/EOS, add_bos/add_eos),
//! `chat_template.jinja` (newer repos keep the template there) and `generation_config.json`
//! (models often list several end-of-turn ids only there).

use std::path::Path;

use plinth_core::{Error, Result};
use serde_json::Value as Json;

use crate::tokenizer::{collect_special, Tokenizer, EOG_TEXTS};

pub(crate) fn load(path: &Path) -> Result<Tokenizer> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    build(&bytes, path)
}

/// The tokenizer in a Hugging Face folder: `tokenizer.json` when there is one, else the slow
/// `vocab.json` + `merges.txt` pair of a `CLIPTokenizer` (what diffusers checkpoints ship).
pub(crate) fn load_dir(dir: &Path) -> Result<Tokenizer> {
    let json = dir.join("tokenizer.json");
    if json.exists() {
        return load(&json);
    }
    let config = read_json(&dir.join("tokenizer_config.json"))?.unwrap_or(Json::Null);
    let class = config["tokenizer_class"].as_str().unwrap_or("");
    if dir.join("vocab.json").exists() && dir.join("merges.txt").exists() && (class.is_empty() || class.starts_with("CLIPTokenizer")) {
        return build(&crate::clip_bpe::tokenizer_json(dir, &config)?, &dir.join("vocab.json"));
    }
    Err(Error::missing(
        dir,
        "tokenizer.json (or, for a CLIPTokenizer, vocab.json and merges.txt); other slow-tokenizer formats need converting with transformers first",
    ))
}

/// `bytes` is a `tokenizer.json`; `path` names it in errors and locates its sibling files.
fn build(bytes: &[u8], path: &Path) -> Result<Tokenizer> {
    let mut inner = tokenizers::Tokenizer::from_bytes(bytes)
        .map_err(|e| Error::format(path, format!("not a usable tokenizer.json: {e}")))?;
    // A tokenizer.json may carry batch settings (sentence-transformers repos ship padding to a
    // fixed 128 and truncation at 128). transformers switches both off for a plain
    // `tokenizer(text)` call, and a runtime encoding one prompt wants neither: padding would
    // append [PAD] ids, truncation would silently drop the end of the prompt.
    inner.with_padding(None);
    inner
        .with_truncation(None)
        .map_err(|e| Error::format(path, format!("not a usable tokenizer.json: {e}")))?;
    let dir = path.parent().unwrap_or(Path::new("."));

    let config = read_json(&dir.join("tokenizer_config.json"))?.unwrap_or(Json::Null);
    let generation = read_json(&dir.join("generation_config.json"))?.unwrap_or(Json::Null);

    let bos_token = token_field(&config["bos_token"]);
    let pad = token_field(&config["pad_token"]).and_then(|t| inner.token_to_id(&t));
    let eos_token = token_field(&config["eos_token"]);
    let bos = bos_token.as_deref().and_then(|t| inner.token_to_id(t));
    let mut eos: Vec<u32> = Vec::new();
    let mut push = |id: u32| {
        if !eos.contains(&id) {
            eos.push(id);
        }
    };
    if let Some(id) = eos_token.as_deref().and_then(|t| inner.token_to_id(t)) {
        push(id);
    }
    match &generation["eos_token_id"] {
        Json::Number(n) => n
            .as_u64()
            .and_then(|v| u32::try_from(v).ok())
            .into_iter()
            .for_each(&mut push),
        Json::Array(a) => a
            .iter()
            .filter_map(|v| v.as_u64())
            .filter_map(|v| u32::try_from(v).ok())
            .for_each(&mut push),
        _ => {}
    }
    let special = collect_special(&inner);
    for (text, id) in &special {
        if EOG_TEXTS.contains(&text.as_str()) {
            push(*id);
        }
    }

    let chat_template = match &config["chat_template"] {
        Json::String(s) => Some(s.clone()),
        // A list of named templates: the "default" one is what apply_chat_template uses.
        Json::Array(list) => list
            .iter()
            .find(|t| t["name"] == "default")
            .or_else(|| list.first())
            .and_then(|t| t["template"].as_str())
            .map(str::to_owned),
        _ => match std::fs::read_to_string(dir.join("chat_template.jinja")) {
            Ok(s) => Some(s),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => processor_chat_template(dir)?,
            Err(e) => return Err(Error::io(dir.join("chat_template.jinja"), e)),
        },
    };

    Ok(Tokenizer {
        special,
        bos,
        eos,
        add_bos: config["add_bos_token"].as_bool().unwrap_or(false) && bos.is_some(),
        add_eos: config["add_eos_token"].as_bool().unwrap_or(false),
        chat_template,
        bos_token,
        eos_token,
        pad,
        vocab_size: inner.get_vocab_size(true),
        inner,
    })
}

/// A JSON file that may be absent.
fn read_json(path: &Path) -> Result<Option<Json>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::format(path, format!("invalid JSON: {e}"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// `"<s>"` or `{"content": "<s>", ...}` (the AddedToken form).
pub(crate) fn token_field(v: &Json) -> Option<String> {
    match v {
        Json::String(s) => Some(s.clone()),
        Json::Object(o) => o.get("content").and_then(Json::as_str).map(str::to_owned),
        _ => None,
    }
}

/// The template multimodal repos (SmolVLM, LLaVA) keep in `chat_template.json` beside the
/// processor config: `{"chat_template": "..."}`.
fn processor_chat_template(dir: &Path) -> Result<Option<String>> {
    let path = dir.join("chat_template.json");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(&path, e)),
    };
    let json: Json = serde_json::from_str(&text).map_err(|e| Error::format(&path, format!("not valid JSON: {e}")))?;
    match &json["chat_template"] {
        Json::String(s) => Ok(Some(s.clone())),
        _ => Err(Error::format(&path, "has no string field 'chat_template'")),
    }
}
