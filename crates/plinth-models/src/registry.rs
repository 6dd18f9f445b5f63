//! Architecture name -> constructor. Adding an architecture is one file in `models/`, one
//! entry here, and one parity test.

use std::path::Path;
use std::sync::Arc;

use plinth_core::{Error, Result};
use plinth_io::{fetch::ModelLocation, gguf::GgufFile, safetensors::{self, SafetensorsWeights}};

use crate::models::llama::{Llama, LlamaConfig};
use crate::weights::Weights;
use crate::Decoder;

/// Architectures that load through the Llama code (same tensors and maths).
const LLAMA_LIKE: &[&str] = &["llama"];

pub fn supported_architectures() -> String {
    LLAMA_LIKE.join(", ")
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
            if !LLAMA_LIKE.contains(&arch.as_str()) {
                return Err(unknown(&arch)).map_err(|e| Error::format(path, e.to_string()));
            }
            let cfg = LlamaConfig::from_gguf(&g)?;
            let model = Llama::load(cfg, &Weights::Gguf(g.clone()), &arch)?;
            Ok(LoadedDecoder { model: Box::new(model), gguf: Some(g) })
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
    if !LLAMA_LIKE.contains(&model_type.as_str()) {
        return Err(Error::format(&config_path, unknown(&model_type).to_string()));
    }
    let cfg = LlamaConfig::from_hf(&json, &config_path)?;
    let w = Weights::Safetensors(Arc::new(SafetensorsWeights::open_dir(dir)?));
    Ok(LoadedDecoder { model: Box::new(Llama::load(cfg, &w, &model_type)?), gguf: None })
}
