//! Weights by Hugging Face name, from either a GGUF file (through the name table in
//! `plinth_io::names`) or safetensors. Shapes are checked against what the config implies
//! before a layer is built, so a mismatched file fails with the tensor's name.

use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use plinth_core::{Error, Result};
use plinth_io::{gguf::GgufFile, names, safetensors::SafetensorsWeights};

use crate::layers::QLinear;

/// Where weights are read from.
pub enum Weights {
    Gguf(Arc<GgufFile>),
    Safetensors(Arc<SafetensorsWeights>),
}

impl Weights {
    pub fn device(&self) -> Device {
        Device::Cpu
    }

    fn gguf_name(g: &GgufFile, hf: &str) -> Result<String> {
        let arch = g.architecture()?;
        names::hf_to_gguf(arch, hf)
            .ok_or_else(|| Error::invalid("tensor name", format!("'{hf}' has no GGUF equivalent for architecture '{arch}'")))
    }

    pub fn contains(&self, hf: &str) -> bool {
        match self {
            Weights::Gguf(g) => Self::gguf_name(g, hf).is_ok_and(|n| g.tensor_info(&n).is_some()),
            Weights::Safetensors(s) => s.contains(hf),
        }
    }

    pub fn is_gguf(&self) -> bool {
        matches!(self, Weights::Gguf(_))
    }

    fn check(name: &str, expected: &[usize], found: &[usize]) -> Result<()> {
        if expected != found {
            return Err(Error::Shape { name: name.to_string(), expected: expected.to_vec(), found: found.to_vec() });
        }
        Ok(())
    }

    /// A dense f32 tensor (norm weights, biases, embeddings), dequantized if needed.
    pub fn tensor(&self, hf: &str, shape: &[usize]) -> Result<Tensor> {
        let t = match self {
            Weights::Gguf(g) => g.qtensor(&Self::gguf_name(g, hf)?, &Device::Cpu)?.dequantize(&Device::Cpu)?,
            Weights::Safetensors(s) => s.load(hf, DType::F32, &Device::Cpu)?,
        };
        Self::check(hf, shape, t.dims())?;
        Ok(t)
    }

    /// A weight kept in its stored quantization; safetensors weights are f32, or quantized to
    /// the in-situ type when one was asked for and the row length fits its block size.
    pub fn qtensor(&self, hf: &str, shape: &[usize]) -> Result<Arc<QTensor>> {
        let q = match self {
            Weights::Gguf(g) => g.qtensor(&Self::gguf_name(g, hf)?, &Device::Cpu)?,
            Weights::Safetensors(s) => {
                let t = s.load(hf, DType::F32, &Device::Cpu)?;
                Self::check(hf, shape, t.dims())?;
                let dtype = match s.quantize() {
                    Some(q) if shape.last().is_some_and(|&n| n % q.block_size() == 0) => q,
                    _ => GgmlDType::F32,
                };
                QTensor::quantize(&t, dtype)?
            }
        };
        Self::check(hf, shape, q.shape().dims())?;
        Ok(Arc::new(q))
    }

    /// A linear layer `[out, in]` named `{prefix}.weight` with an optional `{prefix}.bias`.
    pub fn linear(&self, prefix: &str, out_dim: usize, in_dim: usize) -> Result<QLinear> {
        let bias_name = format!("{prefix}.bias");
        let bias = if self.contains(&bias_name) { Some(self.tensor(&bias_name, &[out_dim])?) } else { None };
        let w_name = format!("{prefix}.weight");
        match self {
            Weights::Safetensors(s) if s.quantize().is_none() => Ok(QLinear::from_tensor(self.tensor(&w_name, &[out_dim, in_dim])?, bias)),
            _ => QLinear::from_qtensor(repack_for_speed(self.qtensor(&w_name, &[out_dim, in_dim])?)?, bias),
        }
    }
}

/// Opt-in speed trade (`PLINTH_REPACK_Q8=1`, the CLI's `--repack-q8`): weight types whose
/// candle matmul kernel has no SIMD path (Q4_1, Q5_0, Q5_1: scalar code, about half the speed
/// of Q8_0 here) are re-quantized to Q8_0 once at load. On SmolLM2 Q4_1 this makes decode
/// ~1.4x faster and lets batched decode scale (the scalar kernel is compute-bound), for ~45 MB
/// more memory and a small accuracy cost: perplexity on the reference passage moves from
/// +0.06 % to +0.84 % of llama.cpp's, and prompt logits are no longer exactly transformers'.
/// Off by default (correctness first); our own kernels (the performance issue) will make it
/// unnecessary.
fn repack_for_speed(q: Arc<QTensor>) -> Result<Arc<QTensor>> {
    let slow = matches!(q.dtype(), GgmlDType::Q4_1 | GgmlDType::Q5_0 | GgmlDType::Q5_1);
    let on = std::env::var("PLINTH_REPACK_Q8").is_ok_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"));
    if !slow || !on {
        return Ok(q);
    }
    let inner = q.shape().dims().last().copied().unwrap_or(0);
    if inner % GgmlDType::Q8_0.block_size() != 0 {
        return Ok(q);
    }
    Ok(Arc::new(QTensor::quantize(&q.dequantize(&Device::Cpu)?, GgmlDType::Q8_0)?))
}
