//! The task layer: what users ask models to do, on top of `plinth-models`. Encoders:
//! sentence embeddings ([`embed`]) and corpus search ([`search`]), sequence classification and
//! cross-encoder reranking ([`classify`]), named-entity recognition ([`ner`]) and extractive
//! question answering ([`qa`]); [`service`] batches concurrent embedding requests for the
//! server. Post-processing follows the transformers pipelines and sentence-transformers, so
//! results can be compared number for number; zero-shot classification with NLI encoders
//! ([`zeroshot`]). Decoders (instruct LLMs): map-reduce summarization of any length of text
//! ([`summarize`], on the token-budget splitter [`chunk`]), paragraph-preserving translation
//! ([`translate`]), retrieval-augmented and generative answers with cited passages ([`rag`],
//! [`answer`]: an encoder retrieves, a decoder answers) and zero-shot classification by label
//! log-likelihoods ([`zeroshot`]). Encoder-decoder models (Marian, T5, BART) with their
//! tokenizers ([`seq2seq`]) translate and summarize through the same splitter. Images:
//! dual encoders (CLIP, SigLIP) embed, classify zero-shot and search folders
//! ([`image_text`]); vision-language decoders get their image prompts from [`vlm`]; Stable
//! Diffusion-family pipelines generate images from text ([`imagine`]).

pub mod answer;
pub mod chunk;
pub mod classify;
pub mod embed;
pub mod image_text;
pub mod imagine;
pub mod model;
pub mod ner;
pub mod qa;
pub mod rag;
pub mod search;
pub mod seq2seq;
pub mod service;
pub mod summarize;
pub mod text;
pub mod translate;
pub mod vlm;
pub mod zeroshot;

pub use classify::{ClassifyOptions, LabelScore, Ranked, RerankOptions, ScoreFunction};
pub use image_text::{ImageHit, ImageIndex, ImageTextPipeline};
pub use vlm::ImagePrompter;
pub use embed::{cosine, EmbedInput, EmbedOptions, Embeddings};
pub use model::{normalize, EncoderModel, Pooling};
pub use ner::{Aggregation, Entity, NerOptions};
pub use qa::{Answer, QaOptions};
pub use rag::{AnswerOptions, Citation, Passage, PassageIndex, RagAnswer};
pub use search::{CorpusIndex, Hit};
pub use seq2seq::{Seq2SeqModel, Seq2SeqTokenizer};
pub use service::{EmbedService, ServiceConfig};
pub use text::{Encoded, EncoderTokenizer, Overflow};
pub use zeroshot::{ZeroShotOptions, ZeroShotScore};
