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

/// The `model_type` of a resolved directory, if it has a readable `config.json`.
fn model_type(loc: &ModelLocation) -> Option<String> {
    let ModelLocation::Dir(d) = loc else { return None };
    plinth_io::safetensors::read_config(d).ok()?.get("model_type")?.as_str().map(str::to_string)
}

/// Whether a resolved location is an image-text dual encoder (CLIP, SigLIP).
pub fn is_image_text(loc: &ModelLocation) -> bool {
    model_type(loc).is_some_and(|t| plinth_models::is_image_text_type(&t))
}

/// Resolves and loads a dual encoder with its tokenizer and image processor; `flag` names the
/// option that needs one, for the error.
pub fn load_image_text(spec: &str, flag: &str) -> Result<plinth_tasks::ImageTextPipeline> {
    let loc = resolve(spec)?;
    if !is_image_text(&loc) {
        anyhow::bail!(
            "{flag} needs an image-text model directory (CLIP or SigLIP: {}) as --model; '{spec}' is not one",
            plinth_models::supported_image_text()
        );
    }
    Ok(plinth_tasks::ImageTextPipeline::load(loc.path())?)
}

/// The image prompter of a loaded vision-language model; `flag` names the option that needs it.
pub fn image_prompter(m: &Loaded, flag: &str) -> Result<plinth_tasks::ImagePrompter> {
    let Some(vision) = m.model.vision() else {
        anyhow::bail!(
            "{flag} needs a vision-language model (e.g. SmolVLM: idefics3) as --model; {} reads text only",
            m.location.path().display()
        );
    };
    Ok(plinth_tasks::ImagePrompter::load(m.location.path(), vision.vision_info(), &m.tokenizer)?)
}

/// Reads and decodes image files with the default limits.
pub fn read_images(paths: &[String]) -> Result<Vec<plinth_image::RgbImage>> {
    let limits = plinth_image::ImageLimits::default();
    paths.iter().map(|p| Ok(plinth_image::load_image(std::path::Path::new(p), &limits)?)).collect()
}
