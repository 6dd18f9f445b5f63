//! Linear layers. [`Linear`] is the seam that quantization and LoRA wrap: a model holds
//! `Box<dyn Linear>`-compatible layers and never knows whether the weight is f32, quantized, or
//! carries an adapter.

use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{Module, Tensor};
use plinth_core::Result;
use std::sync::Arc;

/// `y = x W^T (+ b)` for `x` of shape `[..., in]`.
pub trait Linear: Send + Sync {
    fn forward(&self, x: &Tensor) -> Result<Tensor>;
    /// Parameter count, for `plinth inspect`.
    fn params(&self) -> usize;
}

/// A linear layer over a quantized or plain weight (candle's `QMatMul` covers both).
pub struct QLinear {
    w: QMatMul,
    bias: Option<Tensor>,
    params: usize,
}

impl QLinear {
    pub fn from_qtensor(w: Arc<QTensor>, bias: Option<Tensor>) -> Result<Self> {
        let params = w.shape().elem_count() + bias.as_ref().map_or(0, |b| b.elem_count());
        Ok(QLinear { w: QMatMul::from_arc(w)?, bias, params })
    }

    pub fn from_tensor(w: Tensor, bias: Option<Tensor>) -> Self {
        let params = w.elem_count() + bias.as_ref().map_or(0, |b| b.elem_count());
        QLinear { w: QMatMul::Tensor(w), bias, params }
    }
}

impl Linear for QLinear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.w.forward(x)?;
        Ok(match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }
    fn params(&self) -> usize {
        self.params
    }
}
