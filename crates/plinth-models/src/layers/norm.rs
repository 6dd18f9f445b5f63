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
    /// Gemma stores `w` and scales by `1 + w`.
    pub fn new_one_plus(weight: Tensor, eps: f64) -> Result<Self> {
        Ok(RmsNorm { weight: (weight + 1.0)?, eps: eps as f32 })
    }
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if x.track_op() {
            // Under autodiff: the composed form (the fused kernel has no backward pass).
            return Ok(candle_nn::ops::rms_norm_slow(x, &self.weight, self.eps)?);
        }
        Ok(candle_nn::ops::rms_norm(&x.contiguous()?, &self.weight, self.eps)?)
    }
    pub fn params(&self) -> usize {
        self.weight.elem_count()
    }
}

/// Layer norm with weight and bias: `(x - mean) / sqrt(var + eps) * w + b`.
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f32,
}

impl LayerNorm {
    pub fn new(weight: Tensor, bias: Tensor, eps: f64) -> Self {
        LayerNorm { weight, bias, eps: eps as f32 }
    }
    /// The scale and shift vectors.
    pub fn weights(&self) -> (&Tensor, &Tensor) {
        (&self.weight, &self.bias)
    }
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if x.track_op() {
            return Ok(candle_nn::ops::layer_norm_slow(x, &self.weight, &self.bias, self.eps)?);
        }
        Ok(candle_nn::ops::layer_norm(&x.contiguous()?, &self.weight, &self.bias, self.eps)?)
    }
    pub fn params(&self) -> usize {
        self.weight.elem_count() + self.bias.elem_count()
    }
}
