//! Linear layers. [`Linear`] is the seam that quantization and LoRA wrap: a model holds
//! `Box<dyn Linear>`-compatible layers and never knows whether the weight is f32, quantized, or
//! carries an adapter.

use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{Module, Tensor, D};
use plinth_core::Result;
use std::sync::Arc;

/// `y = x W^T (+ b)` for `x` of shape `[..., in]`.
pub trait Linear: Send + Sync {
    fn forward(&self, x: &Tensor) -> Result<Tensor>;
    /// Parameter count, for `plinth inspect`.
    fn params(&self) -> usize;
}

/// From this many input rows on, a quantized weight is dequantized and multiplied in f32.
///
/// The quantized kernels quantize activations to 8 bits (as llama.cpp does), which costs
/// accuracy: on SmolLM2 Q4_1 greedy answers visibly drift from the f32 reference. For a
/// prompt (many rows) dequantizing the weight once per call is cheap next to the GEMM and
/// gives the reference's numbers; single-token decode stays on the bandwidth-bound
/// quantized path.
pub const DEQUANT_MIN_ROWS: usize = 32;

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
        let rows = x.elem_count() / x.dim(D::Minus1)?.max(1);
        let y = match &self.w {
            QMatMul::QTensor(q) if rows >= DEQUANT_MIN_ROWS => {
                QMatMul::Tensor(q.dequantize(&x.device().clone())?).forward(x)?
            }
            w => w.forward(x)?,
        };
        Ok(match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }
    fn params(&self) -> usize {
        self.params
    }
}
