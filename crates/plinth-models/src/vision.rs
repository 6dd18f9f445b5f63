//! The image side of the model zoo. Two shapes of model read images:
//! - dual encoders ([`ImageTextModel`]: CLIP, SigLIP) embed images and texts into one space, for
//!   image embeddings, zero-shot image classification and text-to-image search;
//! - vision-language decoders ([`VisionLanguage`]: Idefics3 / SmolVLM) read images inside a chat
//!   prompt and answer in text. They are [`crate::Decoder`]s whose [`crate::Decoder::vision`]
//!   is `Some`, so the engine, sampler and server treat them like any other decoder.
//!
//! Models take preprocessed pixels: `[n, 3, H, W]` f32, resized, rescaled and normalised the way
//! the checkpoint's image processor does it (`plinth-image` owns file decoding and that
//! preprocessing). Pooling choices that belong to a model (CLIP's EOS token, SigLIP's last token
//! and attention-pooling head) live in the model; L2 normalisation and scoring live in
//! `plinth-tasks`.

use candle_core::Tensor;
use plinth_core::Result;

use crate::kv::KvCache;

/// How a dual encoder turns image-text similarity into a probability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ScoreKind {
    /// CLIP: `softmax_over_labels(logit_scale * cos(image, text))` (the labels compete).
    Softmax,
    /// SigLIP: `sigmoid(logit_scale * cos(image, text) + logit_bias)`, each label on its own.
    Sigmoid,
}

/// Facts about a dual encoder that the task layer and the CLI need.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ImageTextInfo {
    /// `model_type` (`clip`, `siglip`).
    pub architecture: String,
    /// Length of the shared embedding (`projection_dim` for CLIP, the hidden size for SigLIP).
    pub embedding_dim: usize,
    /// Side of the square pixel input, in pixels.
    pub image_size: usize,
    /// Longest text, in tokens (special tokens included).
    pub text_max_positions: usize,
    pub score: ScoreKind,
    /// `exp(logit_scale)` as stored: multiplies the cosine similarity.
    pub logit_scale: f32,
    /// Added after scaling (SigLIP); 0 for CLIP.
    pub logit_bias: f32,
    pub parameters: usize,
}

/// A CLIP-style dual encoder.
pub trait ImageTextModel: Send + Sync {
    fn info(&self) -> &ImageTextInfo;

    /// `[n, 3, image_size, image_size]` normalised pixels -> `[n, embedding_dim]` image
    /// embeddings (projected, not L2-normalised).
    fn embed_images(&self, pixel_values: &Tensor) -> Result<Tensor>;

    /// Token ids of each text as the tokenizer returns them (special tokens included, no
    /// padding, at most `text_max_positions` long) -> `[n, embedding_dim]` text embeddings
    /// (projected, not L2-normalised). The model pads the way it was trained (SigLIP to its full
    /// length with the pad token; CLIP pools at the end-of-text token, so padding is irrelevant).
    fn embed_texts(&self, ids: &[Vec<u32>]) -> Result<Tensor>;
}

/// Facts about a vision-language decoder's image input.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VisionLanguageInfo {
    /// The placeholder token the prompt carries once per image feature (`<image>`).
    pub image_token: String,
    pub image_token_id: u32,
    /// Image tokens per tile (`(image_size / patch_size)^2 / scale_factor^2` for Idefics3).
    pub image_seq_len: usize,
    /// Side of a square tile the vision encoder reads, in pixels.
    pub image_size: usize,
    /// Parameters of the vision encoder and connector (the decoder's are in `DecoderInfo`).
    pub vision_parameters: usize,
}

/// The image half of a vision-language decoder.
pub trait VisionLanguage: Send + Sync {
    fn vision_info(&self) -> &VisionLanguageInfo;

    /// Input embeddings `[ids.len(), hidden]` for a prompt: token embeddings, with the
    /// features of `pixel_values` (`[tiles, 3, S, S]`, in prompt order) written over the image
    /// token positions. `ids` must hold exactly `tiles * image_seq_len` image tokens.
    fn prompt_embeddings(&self, ids: &[u32], pixel_values: &Tensor) -> Result<Tensor>;

    /// [`crate::Decoder::forward`] from input embeddings (consecutive rows of
    /// [`VisionLanguage::prompt_embeddings`], so a long prompt can be fed in chunks).
    fn forward_embeds(&self, embeds: &Tensor, cache: &mut KvCache, all_logits: bool) -> Result<Tensor>;
}
