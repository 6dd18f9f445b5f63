//! Marian (`model_type` "marian", the opus-mt translation models): BART's block
//! (`bart.rs`) with sinusoidal positions instead of a learned table, no
//! `layernorm_embedding`, `sqrt(d_model)`-scaled embeddings and swish. The position table is
//! not stored in the checkpoint; it is computed at load exactly as transformers'
//! `MarianSinusoidalPositionalEmbedding` does (sines in the first half of each vector,
//! cosines in the second, not interleaved). Separate encoder / decoder vocabularies
//! (`share_encoder_decoder_embeddings: false`) are read from each stack's `embed_tokens`.

use std::path::Path;

use candle_core::{Device, Tensor};
use plinth_core::Result;

use crate::models::bart::{bart_dims, BartModel, PositionTable};
use crate::seq2seq::Seq2Seq;
use crate::weights::Weights;

/// transformers' table: for position `p` and feature `j`, the angle is
/// `p / 10000^(2 * (j / 2) / dim)` (computed in f64, as numpy does); features `0..ceil(dim/2)`
/// take `sin` of the even-`j` angles, the rest `cos` of the odd-`j` ones.
pub fn sinusoidal_positions(n_pos: usize, dim: usize) -> Result<Tensor> {
    let sentinel = dim.div_ceil(2);
    let mut out = vec![0f32; n_pos * dim];
    for p in 0..n_pos {
        let row = &mut out[p * dim..(p + 1) * dim];
        let angle = |j: usize| p as f64 / 10000f64.powf((2 * (j / 2)) as f64 / dim as f64);
        for (i, j) in (0..dim).step_by(2).enumerate() {
            row[i] = angle(j).sin() as f32;
        }
        for (i, j) in (1..dim).step_by(2).enumerate() {
            row[sentinel + i] = angle(j).cos() as f32;
        }
    }
    Ok(Tensor::from_vec(out, (n_pos, dim), &Device::Cpu)?)
}

/// Loads a Marian checkpoint. The decoder starts from `decoder_start_token_id`, which
/// opus-mt sets to the pad id (also the default here).
pub fn load_hf(json: &serde_json::Value, path: &Path, w: &Weights, model_type: &str) -> Result<Box<dyn Seq2Seq>> {
    let d = bart_dims(json, path, model_type, |pad, _eos| pad)?;
    let table = sinusoidal_positions(d.max_positions, d.d_model)?;
    let enc = PositionTable { table: table.clone(), offset: 0 };
    let dec = PositionTable { table, offset: 0 };
    Ok(Box::new(BartModel::assemble(w, &d, enc, dec, false, false)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sines_then_cosines() {
        let t = sinusoidal_positions(3, 6).unwrap().to_vec2::<f32>().unwrap();
        // Position 0: sin 0 = 0 in the first half, cos 0 = 1 in the second.
        assert_eq!(t[0], vec![0.0, 0.0, 0.0, 1.0, 1.0, 1.0]);
        // Position 2, feature pair 1 (j = 2, 3): angle 2 / 10000^(2/6).
        let a = 2.0f64 / 10000f64.powf(2.0 / 6.0);
        assert!((t[2][1] - a.sin() as f32).abs() < 1e-7 && (t[2][4] - a.cos() as f32).abs() < 1e-7);
    }
}
