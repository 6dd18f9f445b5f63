//! Scaled dot-product attention with grouped-query heads and a causal mask.

use candle_core::{DType, Device, Tensor};
use plinth_core::Result;

/// Additive causal mask `[seq, past + seq]`: query `i` sees keys `0..=past + i`.
pub fn causal_mask(seq: usize, past: usize, device: &Device) -> Result<Tensor> {
    let total = past + seq;
    let mask: Vec<f32> = (0..seq)
        .flat_map(|i| (0..total).map(move |j| if j > past + i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Ok(Tensor::from_vec(mask, (seq, total), device)?)
}

/// `softmax(q k^T / sqrt(d) + mask) v` where `q` is `[1, heads, seq, d]` and `k`, `v` are
/// `[1, kv_heads, total, d]`; query heads are grouped onto kv heads without copying k/v.
pub fn scaled_dot_product_attention(q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
    let (b, heads, seq, d) = q.dims4()?;
    let kv_heads = k.dim(1)?;
    let group = heads / kv_heads;
    let total = k.dim(2)?;
    let scale = 1.0 / (d as f64).sqrt();
    // Fold the group into the query rows: [b, kv_heads, group * seq, d] shares each kv head.
    let q = q.reshape((b, kv_heads, group * seq, d))?;
    let k = k.contiguous()?;
    let v = v.contiguous()?;
    let att = (q.matmul(&k.t()?)? * scale)?;
    let att = match mask {
        Some(m) => att.reshape((b, kv_heads, group, seq, total))?.broadcast_add(m)?.reshape((b, kv_heads, group * seq, total))?,
        None => att,
    };
    let att = candle_nn::ops::softmax_last_dim(&att.to_dtype(DType::F32)?)?;
    let out = att.matmul(&v)?;
    Ok(out.reshape((b, heads, seq, d))?)
}

