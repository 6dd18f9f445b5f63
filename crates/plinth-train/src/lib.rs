//! Adapting models: LoRA adapters attached to a frozen base through the `QLinear` seam of
//! `plinth-models` ([`lora`]), PEFT-format adapter files ([`peft`]), the causal-LM loss with
//! masked positions ([`loss`]), AdamW with gradient clipping ([`optim`]), training data from
//! chat, prompt/completion and text files ([`data`]), the loop with checkpoints ([`train`])
//! and evaluation: llama.cpp-style perplexity and answer accuracy ([`eval`]), and merging an
//! adapter into its base as a Hugging Face model directory ([`merge`]); and for encoders, a
//! classification head trained on frozen sentence embeddings ([`classify`]). The model code
//! is the inference code: training runs the same forward pass with candle's autodiff, the
//! adapter matrices being its only variables.

pub mod classify;
pub mod data;
pub mod eval;
pub mod lora;
pub mod loss;
pub mod merge;
pub mod optim;
pub mod peft;
mod staging;
pub mod train;

pub use classify::{
    read_labelled, save_classifier, split_holdout, train_head, tune_classifier, ClassifyConfig, ClassifyProgress, ClassifyReport,
    EpochStats, Labelled, LinearHead, ProbePooling,
};
pub use lora::{LoraConfig, LoraSet};
pub use loss::{causal_lm_loss, IGNORE};
pub use merge::MergeReport;
pub use optim::{clip_grad_norm, AdamW, AdamWConfig};
pub use peft::QkLayout;
pub use data::{read_records, tokenize, DataReport, Example, Record};
pub use train::{train, RunOptions, StepInfo, TrainConfig};
