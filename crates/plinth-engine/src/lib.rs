//! Turning a model into text: sampling ([`sampler`]), stop strings matched across token
//! boundaries ([`stop`]), and the generation loop over an engine-owned KV cache
//! ([`generate`]), which streams text as it is decoded.

pub mod generate;
pub mod sampler;
pub mod stop;

pub use generate::{FinishReason, GenerateRequest, GenerateOutput, Session};
pub use sampler::{LogitsProcessor, SamplingParams};
pub use stop::{StopMatcher, StopOutcome};
