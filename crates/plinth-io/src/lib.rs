//! Model files and where they come from: the GGUF reader ([`gguf`]), safetensors and Hugging
//! Face `config.json` ([`safetensors`]), the GGUF <-> Hugging Face tensor-name table
//! ([`names`]), and the model catalog with its fetcher ([`catalog`], [`fetch`]).

pub mod catalog;
pub mod fetch;
pub mod gguf;
pub mod names;
pub mod safetensors;

pub use gguf::{GgufFile, TensorInfo, TensorType, Value};
