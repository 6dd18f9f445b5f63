//! Resolving `--model` and loading a decoder with its tokenizer.


use anyhow::Result;
use plinth_io::fetch::{self, FetchOptions, ModelLocation};
use plinth_io::safetensors::{read_generation_defaults, GenerationDefaults};
use plinth_models::{load_decoder_with, parse_quantize, Decoder, LoadOptions};

use crate::cli::ModelArg;
use plinth_tokenize::Tokenizer;

pub struct Loaded {
    pub model: Box<dyn Decoder>,
    pub tokenizer: Tokenizer,
    pub location: ModelLocation,
    /// Sampling defaults the model ships (`generation_config.json`), used where the user gave none.
    pub generation: GenerationDefaults,
}

/// Resolves (fetching a catalog model on first use, with a progress bar) and loads.
pub fn resolve(spec: &str) -> Result<ModelLocation> {
    let progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
    Ok(fetch::resolve(spec, FetchOptions { progress, download: true })?)
}

pub fn load(arg: &ModelArg) -> Result<Loaded> {
    if arg.repack_q8 {
        // Read by plinth_models' weight loader; set before any model thread exists.
        std::env::set_var("PLINTH_REPACK_Q8", "1");
    }
    let quantize = arg.quantize.as_deref().map(parse_quantize).transpose()?;
    let location = resolve(&arg.model)?;
    let loaded = load_decoder_with(&location, LoadOptions { quantize })?;
    let tokenizer = match &loaded.gguf {
        Some(g) => Tokenizer::from_gguf(g)?,
        None => Tokenizer::from_file(&location.path().join("tokenizer.json"))?,
    };
    let generation = match &location {
        ModelLocation::Dir(d) => read_generation_defaults(d)?,
        ModelLocation::Gguf(_) => GenerationDefaults::default(),
    };
    Ok(Loaded { model: loaded.model, tokenizer, location, generation })
}

/// Resolves and loads an encoder (a Hugging Face or sentence-transformers directory).
pub fn load_encoder(spec: &str) -> Result<plinth_tasks::EncoderModel> {
    match resolve(spec)? {
        ModelLocation::Dir(d) => Ok(plinth_tasks::EncoderModel::load(&d)?),
        ModelLocation::Gguf(p) => anyhow::bail!(
            "{} is a GGUF file; encoders (BERT-style models) load from a Hugging Face or sentence-transformers directory",
            p.display()
        ),
    }
}

/// Whether a resolved location is an encoder (a sentence-transformers directory or a
/// directory whose `config.json` names an encoder architecture).
pub fn is_encoder(loc: &ModelLocation) -> bool {
    let ModelLocation::Dir(d) = loc else { return false };
    if d.join("modules.json").exists() {
        return true;
    }
    plinth_io::safetensors::read_config(d)
        .ok()
        .and_then(|c| c.get("model_type").and_then(|v| v.as_str()).map(plinth_models::is_encoder_type))
        .unwrap_or(false)
}
