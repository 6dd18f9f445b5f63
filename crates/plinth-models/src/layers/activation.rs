//! Elementwise nonlinearities, by the names transformers' `ACT2FN` gives them in a config
//! (`activation_function`, `hidden_act`, `activation`, ...). Shared by every architecture whose
//! config names its activation, so that one name always means one formula.

use std::path::Path;

use candle_core::Tensor;
use plinth_core::{Error, Result};

/// The nonlinearity of an MLP or head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// The tanh approximation ("gelu_new", the original GPT-2's).
    GeluTanh,
    /// The exact erf form ("gelu", BERT's).
    GeluErf,
    Relu,
    Silu,
    /// `x * sigmoid(1.702 x)`.
    QuickGelu,
    /// BERT's pooler and RoBERTa's classification head.
    Tanh,
}

impl Activation {
    /// Parses transformers' name for it; `field` is the config key it came from, so that an
    /// unsupported value is reported where the user will look for it.
    pub fn from_hf(name: &str, field: &str, path: &Path) -> Result<Self> {
        Ok(match name {
            // transformers' three tanh forms are the same formula, written differently.
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Activation::GeluTanh,
            "gelu" | "gelu_python" => Activation::GeluErf,
            "relu" => Activation::Relu,
            "silu" | "swish" => Activation::Silu,
            "quick_gelu" => Activation::QuickGelu,
            "tanh" => Activation::Tanh,
            other => return Err(Error::unsupported(path, format!("{field} '{other}'"))),
        })
    }

    pub fn apply(self, x: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Activation::GeluTanh => x.gelu()?,
            Activation::GeluErf => x.gelu_erf()?,
            Activation::Relu => x.relu()?,
            Activation::Silu => x.silu()?,
            Activation::QuickGelu => (x * candle_nn::ops::sigmoid(&(x * 1.702)?)?)?,
            Activation::Tanh => x.tanh()?,
        })
    }
}
