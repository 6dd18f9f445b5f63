//! One file per architecture.

pub mod gemma2;
pub mod gemma3;
pub mod gpt2;
pub mod llama;
pub mod mistral;
pub mod phi3;
pub mod qwen2;
pub mod qwen3;
