//! One file per architecture: the decoders, and the encoders (`bert` with its relatives,
//! `distilbert`, `modernbert`).

pub mod bart;
pub mod bert;
pub mod distilbert;
pub mod gemma2;
pub mod gemma3;
pub mod gpt2;
pub mod llama;
pub mod marian;
pub mod mistral;
pub mod modernbert;
pub mod phi3;
pub mod qwen2;
pub mod qwen3;
pub mod t5;
