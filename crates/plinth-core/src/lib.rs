//! Shared vocabulary of every plinth crate: the structured [`Error`], [`Result`], and the small
//! types that describe what a model is (its [`ModelCard`]: modalities in and out, the tasks it
//! can do). No crate below this one; everything else depends on it.

mod card;
mod error;

pub use card::{Modality, ModelCard, Task};
pub use error::{Error, Result};
