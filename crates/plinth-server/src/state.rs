//! What the handlers share: the served models (each with its engine, tokenizer, chat
//! template and latency histograms), the request counter, and the access settings.

use std::path::PathBuf;
use std::sync::Arc;

use plinth_engine::Engine;
use candle_core::Tensor;
use plinth_tasks::imagine::ImagineService;
use plinth_tasks::{EmbedService, ImagePrompter};
use plinth_tokenize::{ChatTemplate, Tokenizer};

use crate::error::ApiError;
use crate::gate::Cors;
use crate::metrics::{ModelMetrics, RequestCounter};
use crate::images::ImagePolicy;
use crate::request::{ImageRef, Prompt};

pub struct AppState {
    pub models: Vec<ModelState>,
    pub encoders: Vec<EncoderState>,
    /// Text-to-image pipelines, each with its own worker thread and queue.
    pub generators: Vec<GeneratorState>,
    /// LoRA adapters served on top of `models`, by name.
    pub adapters: std::sync::RwLock<Vec<AdapterState>>,
    pub requests: RequestCounter,
    pub api_key: Option<String>,
    pub cors: Option<Cors>,
    pub max_body_bytes: usize,
    pub images: ImagePolicy,
}

pub struct ModelState {
    pub name: String,
    pub path: PathBuf,
    /// Shared with the engine thread, to install and remove adapters while it serves.
    pub model: Arc<dyn plinth_models::Decoder>,
    /// When the server loaded it, for `/v1/models`.
    pub created: u64,
    pub engine: Engine,
    pub tokenizer: Arc<Tokenizer>,
    /// Parsed once at start-up; the error says why chat requests cannot be served.
    pub template: Result<ChatTemplate, String>,
    /// Vision-language models: turns image parts into tiles and image tokens.
    pub prompter: Option<ImagePrompter>,
    pub metrics: ModelMetrics,
}

/// A LoRA adapter installed in slot `slot` of decoder `model`.
#[derive(Debug, Clone)]
pub struct AdapterState {
    pub name: String,
    pub model: usize,
    pub slot: usize,
    pub path: PathBuf,
    pub created: u64,
}

/// A served encoder: embeddings through its batching service, reranking beside it.
pub struct EncoderState {
    pub name: String,
    pub path: PathBuf,
    pub created: u64,
    pub service: EmbedService,
}

/// A served text-to-image pipeline.
pub struct GeneratorState {
    pub name: String,
    pub path: PathBuf,
    pub created: u64,
    pub service: ImagineService,
}

impl AppState {
    /// The decoder and adapter slot a request's `model` names: an adapter's name, else a
    /// model's (without adapter).
    pub fn route(&self, name: &str) -> Result<(usize, Option<usize>), ApiError> {
        let adapters = self.adapters.read().unwrap_or_else(|p| p.into_inner());
        if let Some(a) = adapters.iter().find(|a| a.name == name) {
            return Ok((a.model, Some(a.slot)));
        }
        drop(adapters);
        Ok((self.find(name)?, None))
    }

    /// The index of the model a request names; exact names win over case-insensitive ones.
    pub fn find(&self, name: &str) -> Result<usize, ApiError> {
        (self.models.iter().position(|m| m.name == name))
            .or_else(|| self.models.iter().position(|m| m.name.eq_ignore_ascii_case(name)))
            .ok_or_else(|| {
                if self.encoders.iter().any(|e| e.name.eq_ignore_ascii_case(name)) {
                    ApiError::invalid("model", format!("'{name}' is an encoder model (embeddings, reranking); it cannot generate text"))
                } else if self.generators.iter().any(|g| g.name.eq_ignore_ascii_case(name)) {
                    ApiError::invalid("model", format!("'{name}' is a text-to-image model; use POST /v1/images/generations"))
                } else {
                    ApiError::ModelNotFound(name.to_string())
                }
            })
    }

    /// Cancels every request and stops the scheduler threads.
    pub fn shutdown_engines(&self) {
        for m in &self.models {
            m.engine.shutdown();
        }
    }
}

impl ModelState {
    /// Token ids of a prompt: chat messages through the model's template (which writes any
    /// BOS itself, so none is added), plain text with the tokenizer's special tokens, token
    /// ids as given.
    /// Images in chat messages are fetched and decoded under `policy`, and their tiles returned
    /// beside the ids. Blocking.
    pub fn prompt(&self, prompt: &Prompt, images: &[ImageRef], policy: &ImagePolicy) -> Result<(Vec<u32>, Option<Tensor>), ApiError> {
        match prompt {
            Prompt::Chat(messages) => {
                if let (None, [first, ..]) = (&self.prompter, images) {
                    return Err(ApiError::invalid(
                        &first.param,
                        format!("model '{}' reads text only; images need a vision-language model (e.g. SmolVLM)", self.name),
                    ));
                }
                let template = self.template.as_ref().map_err(|why| ApiError::invalid("messages", why.clone()))?;
                let text = match &self.prompter {
                    Some(_) => template.render(&plinth_tasks::vlm::as_parts(messages), true),
                    None => template.render(messages, true),
                };
                let text = text.map_err(|e| ApiError::core(e, "messages"))?;
                let (text, pixels) = match &self.prompter {
                    Some(p) if !images.is_empty() => {
                        let decoded = policy.load_all(images)?;
                        p.expand(&text, &decoded).map_err(|e| ApiError::core(e, "messages"))?
                    }
                    _ => (text, None),
                };
                Ok((self.tokenizer.encode(&text, false)?, pixels))
            }
            Prompt::Text(text) => Ok((self.tokenizer.encode(text, true)?, None)),
            Prompt::Tokens(ids) => Ok((ids.clone(), None)),
        }
    }
}
