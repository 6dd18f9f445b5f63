//! Architecture name -> constructor, keyed by `config.json` `model_type` and GGUF
//! `general.architecture`. Adding an architecture is one file in `models/`, one entry in
//! [`ARCHITECTURES`] (decoders), [`ENCODERS`] (encoders) or [`IMAGE_TEXT`] (dual encoders), and
//! one parity test.

use std::path::Path;
use std::sync::Arc;

use candle_core::quantized::GgmlDType;
use plinth_core::{Error, Result};
use plinth_io::{fetch::ModelLocation, gguf::GgufFile, safetensors::{self, SafetensorsWeights}};

use crate::models;
use crate::weights::Weights;
use crate::{Decoder, Encoder, ImageTextModel};

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
    Architecture { names: &["gpt2"], hf: models::gpt2::load_hf, gguf: Some(models::gpt2::load_gguf) },
    Architecture { names: &["phi3"], hf: models::phi3::load_hf, gguf: Some(models::phi3::load_gguf) },
    Architecture { names: &["gemma2"], hf: models::gemma2::load_hf, gguf: None },
    Architecture { names: &["gemma3_text"], hf: models::gemma3::load_hf, gguf: None },
    // SmolVLM has Idefics3's tensor layout and forward pass (transformers' modular_smolvlm).
    Architecture { names: &["idefics3", "smolvlm"], hf: models::idefics3::load_hf, gguf: None },
    // New architectures: one line above this comment.
];

/// Builds an encoder from a parsed `config.json` (its path, for error messages) and weights.
pub type EncoderLoader = fn(&serde_json::Value, &Path, &Weights, &str) -> Result<Box<dyn Encoder>>;

/// One supported encoder architecture (Hugging Face safetensors directories only: llama.cpp's
/// BERT GGUFs carry no task heads, and the encoders are small enough to run in f32).
pub struct EncoderArchitecture {
    /// `model_type` values it answers to.
    pub names: &'static [&'static str],
    pub hf: EncoderLoader,
}

pub const ENCODERS: &[EncoderArchitecture] = &[
    EncoderArchitecture { names: &["bert"], hf: models::bert::load_hf },
    EncoderArchitecture { names: &["roberta", "xlm-roberta", "camembert"], hf: models::bert::load_hf },
    EncoderArchitecture { names: &["distilbert"], hf: models::distilbert::load_hf },
    EncoderArchitecture { names: &["modernbert"], hf: models::modernbert::load_hf },
    // New encoders: one line above this comment.
];

/// Builds a dual encoder from a parsed `config.json` (its path, for error messages) and weights.
pub type ImageTextLoader = fn(&serde_json::Value, &Path, &Weights, &str) -> Result<Box<dyn ImageTextModel>>;

/// One supported dual encoder (image + text towers in one space; safetensors directories only).
pub struct ImageTextArchitecture {
    /// `model_type` values it answers to.
    pub names: &'static [&'static str],
    pub hf: ImageTextLoader,
}

pub const IMAGE_TEXT: &[ImageTextArchitecture] = &[
    ImageTextArchitecture { names: &["clip"], hf: models::clip::load_hf },
    ImageTextArchitecture { names: &["siglip"], hf: models::siglip::load_hf },
    // New dual encoders: one line above this comment.
];

/// An entry of one of the architecture tables, found by the names it answers to.
trait Named: 'static {
    fn names(&self) -> &'static [&'static str];
}

macro_rules! named {
    ($($t:ty),*) => {$(impl Named for $t {
        fn names(&self) -> &'static [&'static str] {
            self.names
        }
    })*};
}
named!(Architecture, EncoderArchitecture, ImageTextArchitecture);

fn find_in<T: Named>(table: &'static [T], name: &str) -> Option<&'static T> {
    table.iter().find(|a| a.names().contains(&name))
}

/// Every name a table answers to, comma-separated.
fn names_in<T: Named>(table: &'static [T]) -> String {
    table.iter().flat_map(|a| a.names().iter().copied()).collect::<Vec<_>>().join(", ")
}

fn find(name: &str) -> Option<&'static Architecture> {
    find_in(ARCHITECTURES, name)
}

pub fn supported_architectures() -> String {
    names_in(ARCHITECTURES)
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

/// How to load a model.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadOptions {
    /// In-situ quantization of safetensors linear weights (`q8_0`, `q4_0`, `q4_k`, ...).
    pub quantize: Option<GgmlDType>,
}

/// Parses a `--quantize` name.
pub fn parse_quantize(name: &str) -> Result<GgmlDType> {
    Ok(match name.to_ascii_lowercase().as_str() {
        "q8_0" => GgmlDType::Q8_0,
        "q4_0" => GgmlDType::Q4_0,
        "q4_1" => GgmlDType::Q4_1,
        "q5_0" => GgmlDType::Q5_0,
        "q4_k" => GgmlDType::Q4K,
        "q5_k" => GgmlDType::Q5K,
        "q6_k" => GgmlDType::Q6K,
        "f16" => GgmlDType::F16,
        other => return Err(Error::invalid("quantization", format!("'{other}' (choose q8_0, q4_0, q4_1, q5_0, q4_k, q5_k, q6_k or f16)"))),
    })
}

/// Loads a decoder from a GGUF file or a Hugging Face directory.
pub fn load_decoder(loc: &ModelLocation) -> Result<LoadedDecoder> {
    load_decoder_with(loc, LoadOptions::default())
}

/// [`load_decoder`] with options.
pub fn load_decoder_with(loc: &ModelLocation, opts: LoadOptions) -> Result<LoadedDecoder> {
    match loc {
        ModelLocation::Gguf(path) if opts.quantize.is_some() => Err(Error::invalid(
            "--quantize",
            format!("{} is a GGUF file and already quantized; in-situ quantization applies to safetensors models", path.display()),
        )),
        ModelLocation::Gguf(path) => {
            let g = Arc::new(GgufFile::open(path)?);
            let arch = g.architecture()?.to_string();
            let loader = find(&arch).and_then(|a| a.gguf).ok_or_else(|| Error::format(path, unknown(&arch).to_string()))?;
            let model = loader(&g, &Weights::Gguf(g.clone()), &arch)?;
            Ok(LoadedDecoder { model, gguf: Some(g) })
        }
        ModelLocation::Dir(dir) => load_hf_dir(dir, opts),
    }
}

fn load_hf_dir(dir: &Path, opts: LoadOptions) -> Result<LoadedDecoder> {
    let (json, config_path, model_type) = read_model_type(dir)?;
    let arch = find(&model_type).ok_or_else(|| Error::format(&config_path, unknown(&model_type).to_string()))?;
    let w = Weights::Safetensors(Arc::new(SafetensorsWeights::open_dir(dir)?.with_quantize(opts.quantize)));
    Ok(LoadedDecoder { model: (arch.hf)(&json, &config_path, &w, &model_type)?, gguf: None })
}

fn find_encoder(model_type: &str) -> Option<&'static EncoderArchitecture> {
    find_in(ENCODERS, model_type)
}

/// The encoder `model_type`s, comma-separated.
pub fn supported_encoders() -> String {
    names_in(ENCODERS)
}

/// Whether `model_type` names an encoder (load it with [`load_encoder`]) rather than a
/// decoder (load it with [`load_decoder`]).
pub fn is_encoder_type(model_type: &str) -> bool {
    find_encoder(model_type).is_some()
}

/// Loads an encoder from a Hugging Face directory (`config.json` + safetensors). The head is
/// chosen by `architectures[0]` (see [`crate::EncoderHead::from_config`]).
pub fn load_encoder(dir: &Path) -> Result<Box<dyn Encoder>> {
    let (json, config_path, model_type) = read_model_type(dir)?;
    let arch = find_encoder(&model_type)
        .ok_or_else(|| Error::UnknownArchitecture { name: model_type.clone(), supported: supported_encoders() })?;
    let w = Weights::Safetensors(Arc::new(SafetensorsWeights::open_dir(dir)?));
    (arch.hf)(&json, &config_path, &w, &model_type)
}

/// A Hugging Face directory's `config.json`, its path and its required `model_type`.
pub(crate) fn read_model_type(dir: &Path) -> Result<(serde_json::Value, std::path::PathBuf, String)> {
    let json = safetensors::read_config(dir)?;
    let config_path = dir.join("config.json");
    let model_type = json
        .get("model_type")
        .and_then(|v| v.as_str())
        .ok_or_else(|| Error::missing(&config_path, "config field 'model_type'"))?
        .to_string();
    Ok((json, config_path, model_type))
}

fn find_image_text(model_type: &str) -> Option<&'static ImageTextArchitecture> {
    find_in(IMAGE_TEXT, model_type)
}

/// The dual-encoder `model_type`s, comma-separated.
pub fn supported_image_text() -> String {
    names_in(IMAGE_TEXT)
}

/// Whether `model_type` names a dual image-text encoder (load it with [`load_image_text`]).
pub fn is_image_text_type(model_type: &str) -> bool {
    find_image_text(model_type).is_some()
}

/// Loads a dual image-text encoder (CLIP, SigLIP) from a Hugging Face directory.
pub fn load_image_text(dir: &Path) -> Result<Box<dyn ImageTextModel>> {
    let (json, config_path, model_type) = read_model_type(dir)?;
    let arch = find_image_text(&model_type)
        .ok_or_else(|| Error::UnknownArchitecture { name: model_type.clone(), supported: supported_image_text() })?;
    let w = Weights::Safetensors(Arc::new(SafetensorsWeights::open_dir(dir)?));
    (arch.hf)(&json, &config_path, &w, &model_type)
}
