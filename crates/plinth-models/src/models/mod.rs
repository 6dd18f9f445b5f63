//! One file per architecture.

pub mod llama;
pub mod mistral;
pub mod qwen2;
pub mod qwen3;
