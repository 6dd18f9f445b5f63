//! Scaled dot-product attention with grouped-query heads, a causal (optionally sliding-window)
//! mask, and optional logit soft-capping.

use candle_core::{DType, Device, Tensor};
use plinth_core::Result;

/// Additive causal mask `[seq, past + seq]`: query `i` (absolute position `past + i`) sees key
/// `j` when `j <= past + i` and, with a sliding `window`, `past + i - j < window`.
pub fn causal_mask(seq: usize, past: usize, window: Option<usize>, device: &Device) -> Result<Tensor> {
    let total = past + seq;
    let window = window.unwrap_or(usize::MAX);
    let mask: Vec<f32> = (0..seq)
        .flat_map(|i| {
            (0..total).map(move |j| {
                let q = past + i;
                if j > q || q - j >= window { f32::NEG_INFINITY } else { 0.0 }
            })
        })
        .collect();
    Ok(Tensor::from_vec(mask, (seq, total), device)?)
}

/// Whether a forward pass of `seq` new tokens after `past` cached ones needs a mask at all.
pub fn needs_mask(seq: usize, past: usize, window: Option<usize>) -> bool {
    seq > 1 || window.is_some_and(|w| past + seq > w)
}

/// Per-model attention knobs.
#[derive(Debug, Clone, Copy, Default)]
pub struct AttentionOptions {
    /// Multiplier of `q k^T`; `None` means `1 / sqrt(head_dim)`.
    pub scale: Option<f64>,
    /// Gemma 2: `cap * tanh(scores / cap)` before the mask.
    pub softcap: Option<f64>,
}

/// `softmax(q k^T * scale + mask) v` where `q` is `[1, heads, seq, d]` and `k`, `v` are
/// `[1, kv_heads, total, d]`; query heads are grouped onto kv heads without copying k/v.
pub fn scaled_dot_product_attention(q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>, opts: AttentionOptions) -> Result<Tensor> {
    let (_, _, seq, d) = q.dims4()?;
    let scale = opts.scale.unwrap_or(1.0 / (d as f64).sqrt());
    if seq == 1 {
        if let Some(out) = super::decode_attention::decode_attention(q, k, v, mask, scale as f32, opts.softcap.map(|c| c as f32))? {
            return Ok(out);
        }
    }
    general_attention(q, k, v, mask, opts)
}

/// [`scaled_dot_product_attention`] through candle ops (two GEMMs and a softmax): every shape,
/// dtype and autodiff.
pub(crate) fn general_attention(q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>, opts: AttentionOptions) -> Result<Tensor> {
    let (b, heads, seq, d) = q.dims4()?;
    let kv_heads = k.dim(1)?;
    let group = heads / kv_heads;
    let total = k.dim(2)?;
    let scale = opts.scale.unwrap_or(1.0 / (d as f64).sqrt());
    // Fold the group into the query rows: [b, kv_heads, group * seq, d] shares each kv head.
    let q = q.contiguous()?.reshape((b, kv_heads, group * seq, d))?;
    // A reduced-precision cache (f16) is widened to the queries' dtype for the products.
    let k = if k.dtype() == q.dtype() { k.contiguous()? } else { k.to_dtype(q.dtype())? };
    let v = if v.dtype() == q.dtype() { v.contiguous()? } else { v.to_dtype(q.dtype())? };
    let raw = q.matmul(&k.t()?)?;
    if !raw.track_op() && raw.dtype() == DType::F32 {
        // One pass for scale, cap, mask and softmax, with the vectorized exp.
        let m = match mask {
            Some(m) if m.elem_count() == seq * total => Some(m.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?),
            Some(m) => return Err(plinth_core::Error::invalid("attention mask", format!("{:?} for {seq} queries over {total} keys", m.dims()))),
            None => None,
        };
        let att = super::fused::scaled_masked_softmax(&raw, m.as_deref(), seq, scale as f32, opts.softcap.map(|c| c as f32))?;
        return Ok(att.matmul(&v)?.reshape((b, heads, seq, d))?);
    }
    let mut att = (raw * scale)?;
    if let Some(cap) = opts.softcap {
        att = ((att / cap)?.tanh()? * cap)?;
    }
    let att = match mask {
        Some(m) => att.reshape((b, kv_heads, group, seq, total))?.broadcast_add(m)?.reshape((b, kv_heads, group * seq, total))?,
        None => att,
    };
    let att = att.to_dtype(DType::F32)?;
    // softmax_last_dim is a fused kernel without a backward pass; the composed form carries
    // gradients under autodiff (LoRA training).
    let att = if att.track_op() { candle_nn::ops::softmax(&att, candle_core::D::Minus1)? } else { candle_nn::ops::softmax_last_dim(&att)? };
    let out = att.matmul(&v)?;
    Ok(out.reshape((b, heads, seq, d))?)
}

/// The masks one forward pass needs, built once and shared by every layer with the same window.
pub struct Masks {
    full: Option<Tensor>,
    windowed: Vec<(usize, Option<Tensor>)>,
}

impl Masks {
    /// `windows` lists each layer's sliding window (`None` = full attention).
    pub fn new(seq: usize, past: usize, windows: &[Option<usize>], device: &Device) -> Result<Self> {
        let full = if seq > 1 { Some(causal_mask(seq, past, None, device)?) } else { None };
        let mut windowed: Vec<(usize, Option<Tensor>)> = Vec::new();
        for w in windows.iter().flatten() {
            if windowed.iter().all(|(x, _)| x != w) {
                let m = if needs_mask(seq, past, Some(*w)) { Some(causal_mask(seq, past, Some(*w), device)?) } else { None };
                windowed.push((*w, m));
            }
        }
        Ok(Masks { full, windowed })
    }

    pub fn get(&self, window: Option<usize>) -> Result<Option<&Tensor>> {
        Ok(match window {
            None => self.full.as_ref(),
            Some(w) => self.windowed.iter().find(|(x, _)| *x == w).and_then(|(_, m)| m.as_ref()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sliding_window_mask_limits_lookback() {
        let m = causal_mask(3, 2, Some(2), &Device::Cpu).unwrap().to_vec2::<f32>().unwrap();
        // Query at absolute position 2 sees keys 1 and 2; position 4 sees keys 3 and 4.
        let allowed = |row: &Vec<f32>| row.iter().enumerate().filter(|(_, &x)| x == 0.0).map(|(j, _)| j).collect::<Vec<_>>();
        assert_eq!(allowed(&m[0]), vec![1, 2]);
        assert_eq!(allowed(&m[2]), vec![3, 4]);
        assert!(!needs_mask(1, 5, None));
        assert!(needs_mask(1, 5, Some(4)));
    }
}
