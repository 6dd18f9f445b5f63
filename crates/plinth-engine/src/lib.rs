//! Turning a model into text: sampling ([`sampler`]), stop strings matched across token
//! boundaries ([`stop`]), one sequence's generation state ([`sequence`]), the single-sequence
//! loop over an engine-owned KV cache ([`generate`]), and the continuous-batching scheduler
//! thread that serves many sequences at once ([`scheduler`]). Encoder-decoder models
//! generate through [`seq2seq`]: greedy and beam search as transformers' `generate`, over a
//! decoder cache the engine owns. Prompts of vision-language models carry image tiles
//! ([`images`]): both the session and the scheduler prefill them from input embeddings.

pub mod generate;
pub mod images;
pub mod sampler;
pub mod scheduler;
pub mod sequence;
pub mod seq2seq;
pub mod stop;

pub use generate::{GenerateOutput, GenerateRequest, Session};
pub use images::check_prompt_images;
pub use scheduler::{Engine, EngineConfig, EngineStats, Event, Request};
pub use seq2seq::{generate as generate_seq2seq, EarlyStopping, Hypothesis, Seq2SeqGeneration, Seq2SeqOverrides};
pub use sequence::{FinishReason, GenerationOptions, StepOutput, TokenLogprob};
pub use sampler::{LogitsProcessor, SamplingParams};
pub use stop::{StopMatcher, StopOutcome};
