//! Architecture name -> constructor, keyed by `config.json` `model_type` and GGUF
//! `general.architecture`. Adding an architecture is one file in `models/`, one entry in
//! [`ARCHITECTURES`], and one parity test.

use std::path::Path;
use std::sync::Arc;

use plinth_core::{Error, Result};
use plinth_io::{fetch::ModelLocation, gguf::GgufFile, safetensors::{self, SafetensorsWeights}};

use crate::models;
use crate::weights::Weights;
use crate::Decoder;

/// Builds a model from a parsed `config.json` (its path, for error messages) and weights.
pub type HfLoader = fn(&serde_json::Value, &Path, &Weights, &str) -> Result<Box<dyn Decoder>>;
/// Builds a model from GGUF metadata and weights.
pub type GgufLoader = fn(&GgufFile, &Weights, &str) -> Result<Box<dyn Decoder>>;

/// One supported architecture.
pub struct Architecture {
    /// `model_type` values and GGUF `general.architecture` values it answers to.
    pub names: &'static [&'static str],
    pub hf: HfLoader,
    /// `None` where llama.cpp defines no GGUF layout (or plinth does not read it yet).
    pub gguf: Option<GgufLoader>,
}

pub const ARCHITECTURES: &[Architecture] = &[
    Architecture { names: &["llama"], hf: models::llama::load_hf, gguf: Some(models::llama::load_family_gguf) },
    Architecture { names: &["mistral"], hf: models::mistral::load_hf, gguf: None },
    Architecture { names: &["qwen2"], hf: models::qwen2::load_hf, gguf: Some(models::llama::load_family_gguf) },
    Architecture { names: &["qwen3"], hf: models::qwen3::load_hf, gguf: Some(models::llama::load_family_gguf) },
    // New architectures: one line above this comment.
];

fn find(name: &str) -> Option<&'static Architecture> {
    ARCHITECTURES.iter().find(|a| a.names.contains(&name))
}

pub fn supported_architectures() -> String {
    ARCHITECTURES.iter().flat_map(|a| a.names.iter().copied()).collect::<Vec<_>>().join(", ")
}

/// Whether `name` (a `model_type` or GGUF architecture) can be loaded.
pub fn is_supported(name: &str) -> bool {
    find(name).is_some()
}

/// A decoder plus the file handle it came from (the GGUF also holds the tokenizer).
pub struct LoadedDecoder {
    pub model: Box<dyn Decoder>,
    pub gguf: Option<Arc<GgufFile>>,
}

fn unknown(name: &str) -> Error {
    Error::UnknownArchitecture { name: name.to_string(), supported: supported_architectures() }
}

/// Loads a decoder from a GGUF file or a Hugging Face directory.
pub fn load_decoder(loc: &ModelLocation) -> Result<LoadedDecoder> {
    match loc {
        ModelLocation::Gguf(path) => {
            let g = Arc::new(GgufFile::open(path)?);
            let arch = g.architecture()?.to_string();
            let loader = find(&arch).and_then(|a| a.gguf).ok_or_else(|| Error::format(path, unknown(&arch).to_string()))?;
            let model = loader(&g, &Weights::Gguf(g.clone()), &arch)?;
            Ok(LoadedDecoder { model, gguf: Some(g) })
        }
        ModelLocation::Dir(dir) => load_hf_dir(dir),
    }
}

fn load_hf_dir(dir: &Path) -> Result<LoadedDecoder> {
    let json = safetensors::read_config(dir)?;
    let config_path = dir.join("config.json");
    let model_type = json
        .get("model_type")
        .and_then(|v| v.as_str())
        .ok_or_else(|| Error::missing(&config_path, "config field 'model_type'"))?
        .to_string();
    let arch = find(&model_type).ok_or_else(|| Error::format(&config_path, unknown(&model_type).to_string()))?;
    let w = Weights::Safetensors(Arc::new(SafetensorsWeights::open_dir(dir)?));
    Ok(LoadedDecoder { model: (arch.hf)(&json, &config_path, &w, &model_type)?, gguf: None })
}
