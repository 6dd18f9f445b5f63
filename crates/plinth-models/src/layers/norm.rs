//! Normalisation layers.

use candle_core::Tensor;
use plinth_core::Result;

/// Root-mean-square norm: `x / sqrt(mean(x^2) + eps) * w`, computed in f32.
pub struct RmsNorm {
    weight: Tensor,
    eps: f32,
}

impl RmsNorm {
    pub fn new(weight: Tensor, eps: f64) -> Self {
        RmsNorm { weight, eps: eps as f32 }
    }
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(candle_nn::ops::rms_norm(&x.contiguous()?, &self.weight, self.eps)?)
    }
    pub fn params(&self) -> usize {
        self.weight.elem_count()
    }
}
