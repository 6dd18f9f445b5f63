//! Rotary position embeddings with frequency base and the rope-scaling variants found in
//! GGUF metadata and Hugging Face configs (linear, Llama 3).

use candle_core::{DType, Device, Tensor};
use plinth_core::Result;

/// How the pairs that rotate together are laid out in a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    /// Adjacent pairs `(x0, x1), (x2, x3), ...` — llama.cpp's layout, which its converter
    /// produces for Llama by permuting the q/k weights.
    Interleaved,
    /// First half with second half `(x0, x_{d/2}), ...` — Hugging Face's `rotate_half`.
    Half,
}

/// Context-extension scaling of the rotary frequencies.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    /// Positions divided by `factor`.
    Linear { factor: f64 },
    /// Llama 3.x frequency-dependent scaling.
    Llama3 { factor: f64, low_freq_factor: f64, high_freq_factor: f64, original_max_position: usize },
}

/// Precomputed cos/sin tables, `[max_positions, rotary_dim / 2]`.
pub struct RotaryEmbedding {
    cos: Tensor,
    sin: Tensor,
    style: RopeStyle,
}

impl RotaryEmbedding {
    /// `freq_factors` are llama.cpp's `rope_freqs.weight` divisors, when the file has them.
    pub fn new(
        head_dim: usize,
        max_positions: usize,
        theta: f64,
        scaling: Option<&RopeScaling>,
        freq_factors: Option<&[f32]>,
        style: RopeStyle,
        device: &Device,
    ) -> Result<Self> {
        let half = head_dim / 2;
        let mut inv_freq: Vec<f64> =
            (0..half).map(|i| 1.0 / theta.powf((2 * i) as f64 / head_dim as f64)).collect();
        let mut pos_scale = 1.0;
        match scaling {
            None => {}
            Some(RopeScaling::Linear { factor }) => pos_scale = 1.0 / factor,
            Some(&RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position }) => {
                // Same rule as transformers' `_compute_llama3_parameters`.
                let low_wavelen = original_max_position as f64 / low_freq_factor;
                let high_wavelen = original_max_position as f64 / high_freq_factor;
                for f in inv_freq.iter_mut() {
                    let wavelen = 2.0 * std::f64::consts::PI / *f;
                    if wavelen > low_wavelen {
                        *f /= factor;
                    } else if wavelen >= high_wavelen {
                        let smooth = (original_max_position as f64 / wavelen - low_freq_factor)
                            / (high_freq_factor - low_freq_factor);
                        *f = (1.0 - smooth) * *f / factor + smooth * *f;
                    }
                }
            }
        }
        if let Some(ff) = freq_factors {
            for (f, d) in inv_freq.iter_mut().zip(ff) {
                *f /= *d as f64;
            }
        }
        let mut cos = Vec::with_capacity(max_positions * half);
        let mut sin = Vec::with_capacity(max_positions * half);
        for p in 0..max_positions {
            for f in &inv_freq {
                let a = p as f64 * pos_scale * f;
                cos.push(a.cos() as f32);
                sin.push(a.sin() as f32);
            }
        }
        Ok(RotaryEmbedding {
            cos: Tensor::from_vec(cos, (max_positions, half), device)?,
            sin: Tensor::from_vec(sin, (max_positions, half), device)?,
            style,
        })
    }

    pub fn max_positions(&self) -> usize {
        self.cos.dims()[0]
    }

    /// Rotates `x` of shape `[batch, heads, seq, head_dim]` starting at position `start`.
    pub fn apply(&self, x: &Tensor, start: usize) -> Result<Tensor> {
        let seq = x.dim(2)?;
        let cos = self.cos.narrow(0, start, seq)?;
        let sin = self.sin.narrow(0, start, seq)?;
        let x = x.contiguous()?;
        let dtype = x.dtype();
        let x = if dtype == DType::F32 { x } else { x.to_dtype(DType::F32)? };
        // The fused kernels have no backward pass; under autodiff (LoRA training) the
        // composed forms give the same values and carry gradients.
        let y = match (self.style, x.track_op()) {
            (RopeStyle::Interleaved, false) => candle_nn::rotary_emb::rope_i(&x, &cos, &sin)?,
            (RopeStyle::Half, false) => candle_nn::rotary_emb::rope(&x, &cos, &sin)?,
            (RopeStyle::Interleaved, true) => candle_nn::rotary_emb::rope_i_slow(&x, &cos, &sin)?,
            (RopeStyle::Half, true) => candle_nn::rotary_emb::rope_slow(&x, &cos, &sin)?,
        };
        Ok(y.to_dtype(dtype)?)
    }
}
