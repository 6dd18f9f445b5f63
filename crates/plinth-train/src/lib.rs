//! Adapting models: LoRA adapters attached to a frozen base through the `QLinear` seam of
//! `plinth-models` ([`lora`]), PEFT-format adapter files ([`peft`]), the causal-LM loss with
//! masked positions ([`loss`]), and AdamW with gradient clipping ([`optim`]). The model code
//! is the inference code: training runs the same forward pass with candle's autodiff, the
//! adapter matrices being its only variables.

pub mod lora;
pub mod loss;
pub mod optim;
pub mod peft;

pub use lora::{LoraConfig, LoraSet};
pub use loss::{causal_lm_loss, IGNORE};
pub use optim::{clip_grad_norm, AdamW, AdamWConfig};
