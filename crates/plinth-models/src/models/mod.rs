//! One file per architecture: the decoders, the encoders (`bert` with its relatives,
//! `distilbert`, `modernbert`) and the image models (`clip`, `siglip`, `idefics3`).

pub mod bart;
pub mod bert;
pub mod clip;
pub mod clip_text;
pub mod distilbert;
pub mod gemma2;
pub mod gemma3;
pub mod gpt2;
pub mod idefics3;
pub mod llama;
pub mod marian;
pub mod mistral;
pub mod modernbert;
pub mod phi3;
pub mod qwen2;
pub mod qwen3;
pub mod siglip;
pub mod t5;
