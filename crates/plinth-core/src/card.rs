//! What a model is, as a user sees it: which modalities go in and come out, and which tasks it
//! can do. This is where "an LLM is the text-only member of the foundation-model family" becomes
//! visible in `plinth inspect`.

use serde::Serialize;

/// A kind of data a model consumes or produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Modality {
    Text,
    Image,
    Audio,
    /// A vector (sentence embeddings).
    Embedding,
    /// Class labels with scores (whole text, per token, or an answer span).
    Labels,
}

/// A task a model can be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Task {
    TextGeneration,
    Chat,
    Summarization,
    Translation,
    QuestionAnswering,
    Embedding,
    Classification,
    /// Labels per token: named entities.
    TokenClassification,
    /// Ranking documents by relevance to a query.
    Reranking,
    /// Semantic search over a corpus (of texts, or of images for image-text models).
    Search,
    /// Describing or answering questions about images (captioning, visual QA).
    ImageToText,
    /// Classifying images into labels named at request time.
    ZeroShotImageClassification,
    /// Generating images from a text prompt.
    TextToImage,
}

/// The user-facing description of a loaded model.
#[derive(Debug, Clone, Serialize)]
pub struct ModelCard {
    /// Architecture as named by the file (`llama`, `qwen2`, ...).
    pub architecture: String,
    /// `"decoder"` (GPT-style, generates), `"encoder"` (BERT-style, understands) or
    /// `"encoder-decoder"` (T5/BART-style, rewrites one text into another).
    pub family: &'static str,
    pub inputs: Vec<Modality>,
    pub outputs: Vec<Modality>,
    pub tasks: Vec<Task>,
}

impl ModelCard {
    /// A text-in, text-out decoder: a large language model. Instruction-tuned models (those with a
    /// chat template) can also chat and be prompted for the derived tasks.
    pub fn text_decoder(architecture: &str, has_chat_template: bool) -> Self {
        let mut tasks = vec![Task::TextGeneration];
        if has_chat_template {
            tasks.extend([
                Task::Chat,
                Task::Summarization,
                Task::Translation,
                Task::QuestionAnswering,
                Task::Classification,
            ]);
        }
        ModelCard {
            architecture: architecture.to_string(),
            family: "decoder",
            inputs: vec![Modality::Text],
            outputs: vec![Modality::Text],
            tasks,
        }
    }

    /// A BERT-style encoder. `head` is the task head of the checkpoint (`None` for a bare
    /// encoder or sentence-transformers model, which embeds).
    pub fn text_encoder(architecture: &str, head: Option<Task>) -> Self {
        let (outputs, tasks) = match head {
            None => (vec![Modality::Embedding], vec![Task::Embedding, Task::Search]),
            Some(Task::Reranking) => (vec![Modality::Labels], vec![Task::Reranking]),
            Some(t) => (vec![Modality::Labels], vec![t]),
        };
        ModelCard { architecture: architecture.to_string(), family: "encoder", inputs: vec![Modality::Text], outputs, tasks }
    }

    /// An encoder-decoder (seq2seq) model: Marian, T5, BART. Text in, text out, for the
    /// tasks it was trained on (translation for opus-mt, summarization for bart-cnn, prefixed
    /// tasks for T5): the card lists what the family does, not one checkpoint's training.
    pub fn text_seq2seq(architecture: &str) -> Self {
        ModelCard {
            architecture: architecture.to_string(),
            family: "encoder-decoder",
            inputs: vec![Modality::Text],
            outputs: vec![Modality::Text],
            tasks: vec![Task::Translation, Task::Summarization, Task::TextGeneration],
        }
    }

    /// A dual encoder (CLIP, SigLIP): images and texts in, embeddings in one shared space out.
    pub fn image_text(architecture: &str) -> Self {
        ModelCard {
            architecture: architecture.to_string(),
            family: "dual-encoder",
            inputs: vec![Modality::Image, Modality::Text],
            outputs: vec![Modality::Embedding, Modality::Labels],
            tasks: vec![Task::Embedding, Task::ZeroShotImageClassification, Task::Search],
        }
    }

    /// A vision-language decoder (SmolVLM / Idefics3): images and text in, text out.
    pub fn vision_language(architecture: &str) -> Self {
        ModelCard {
            architecture: architecture.to_string(),
            family: "vision-language decoder",
            inputs: vec![Modality::Image, Modality::Text],
            outputs: vec![Modality::Text],
            tasks: vec![Task::ImageToText, Task::Chat, Task::QuestionAnswering, Task::TextGeneration],
        }
    }

    /// A latent diffusion pipeline (Stable Diffusion family): a text prompt in, an image out.
    pub fn text_to_image(architecture: &str) -> Self {
        ModelCard {
            architecture: architecture.to_string(),
            family: "latent diffusion",
            inputs: vec![Modality::Text],
            outputs: vec![Modality::Image],
            tasks: vec![Task::TextToImage],
        }
    }

    /// True for text-only models (text in; text, labels or embeddings out): the LLM corner
    /// of the foundation-model family, decoders and encoders alike.
    pub fn is_llm(&self) -> bool {
        self.inputs == [Modality::Text] && self.outputs.iter().all(|m| matches!(m, Modality::Text | Modality::Embedding | Modality::Labels))
    }
}
