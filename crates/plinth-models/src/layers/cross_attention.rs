//! Multi-head attention for encoder-decoder models (BART, Marian, T5): encoder
//! self-attention over a padded source, decoder self-attention that appends to a
//! [`crate::Seq2SeqCache`] slot, and cross-attention whose keys/values over the encoder
//! output are computed once and then reused from the cache.
//!
//! Scores are `q k^T * scale + bias`, where the additive `bias` carries the padding and causal
//! masks and, for T5, the relative position bias (T5 does not scale: `scale = 1`). Tensors
//! are `[b, heads, len, head_dim]`; the whole batch runs as one batched matmul.

use candle_core::{DType, Device, Tensor};
use plinth_core::{Error, Result};

use crate::layers::{Linear, QLinear};
use crate::weights::Weights;

/// The additive value of a masked score. transformers' eager path uses `finfo.min` too: a row
/// whose keys are all masked then attends uniformly instead of producing NaN.
pub const MASKED: f32 = f32::MIN;

/// q/k/v/o projections with `heads` heads of `head_dim` (T5's `d_kv` need not be
/// `d_model / heads`).
pub struct Attention {
    q: QLinear,
    k: QLinear,
    v: QLinear,
    o: QLinear,
    heads: usize,
    head_dim: usize,
    scale: f64,
}

impl Attention {
    /// Loads `{prefix}.{names[i]}` for q, k, v, o (biases when stored). `scale` multiplies
    /// `q k^T`: `head_dim^-0.5` for BART / Marian, 1 for T5.
    pub fn load(w: &Weights, prefix: &str, names: [&str; 4], d_model: usize, heads: usize, head_dim: usize, scale: f64) -> Result<Self> {
        let inner = heads * head_dim;
        let p = |n: &str| format!("{prefix}.{n}");
        Ok(Attention {
            q: w.linear(&p(names[0]), inner, d_model)?,
            k: w.linear(&p(names[1]), inner, d_model)?,
            v: w.linear(&p(names[2]), inner, d_model)?,
            o: w.linear(&p(names[3]), d_model, inner)?,
            heads,
            head_dim,
            scale,
        })
    }

    pub fn params(&self) -> usize {
        [&self.q, &self.k, &self.v, &self.o].iter().map(|l| l.params()).sum()
    }

    /// `[b, t, d]` through `proj` -> `[b, heads, t, head_dim]`.
    fn split(&self, proj: &QLinear, x: &Tensor) -> Result<Tensor> {
        let (b, t, d) = x.dims3()?;
        let y = proj.forward(&x.reshape((b * t, d))?)?;
        Ok(y.reshape((b, t, self.heads, self.head_dim))?.transpose(1, 2)?.contiguous()?)
    }

    /// Keys and values of `src` `[b, s, d]`, each `[b, heads, s, head_dim]`.
    pub fn key_values(&self, src: &Tensor) -> Result<(Tensor, Tensor)> {
        Ok((self.split(&self.k, src)?, self.split(&self.v, src)?))
    }

    /// `softmax(q k^T * scale + bias) v`, then the output projection: `x` `[b, t, d]`,
    /// `k`/`v` `[b, heads, s, head_dim]`, `bias` broadcastable to `[b, heads, t, s]`.
    fn attend(&self, x: &Tensor, k: &Tensor, v: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let q = self.split(&self.q, x)?;
        let mut scores = q.matmul(&k.t()?)?;
        if self.scale != 1.0 {
            scores = (scores * self.scale)?;
        }
        if let Some(bias) = bias {
            scores = scores.broadcast_add(bias)?;
        }
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let ctx = probs.matmul(v)?.transpose(1, 2)?.reshape((b * t, self.heads * self.head_dim))?;
        Ok(self.o.forward(&ctx)?.reshape((b, t, self.o.dims().0))?)
    }

    /// Encoder self-attention over the whole (padded) source.
    pub fn encoder_self(&self, x: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        let (k, v) = self.key_values(x)?;
        self.attend(x, &k, &v, bias)
    }

    /// Decoder self-attention: appends this chunk's keys/values to `slot` and attends over
    /// every cached position (`bias` holds the causal mask, `[t, past + t]` or broadcastable).
    pub fn decoder_self(&self, x: &Tensor, slot: &mut Option<(Tensor, Tensor)>, bias: Option<&Tensor>) -> Result<Tensor> {
        let (k, v) = self.key_values(x)?;
        let (k, v) = match slot.take() {
            Some((pk, pv)) => (Tensor::cat(&[&pk, &k], 2)?, Tensor::cat(&[&pv, &v], 2)?),
            None => (k, v),
        };
        let out = self.attend(x, &k, &v, bias)?;
        *slot = Some((k, v));
        Ok(out)
    }

    /// Cross-attention over the encoder output: keys/values come from `slot` when the
    /// cache already holds them, else they are computed from `encoder_hidden` and stored.
    pub fn cross(&self, x: &Tensor, encoder_hidden: &Tensor, slot: &mut Option<(Tensor, Tensor)>, bias: Option<&Tensor>) -> Result<Tensor> {
        if slot.is_none() {
            *slot = Some(self.key_values(encoder_hidden)?);
        }
        let Some((k, v)) = slot.as_ref() else { unreachable!("filled above") };
        self.attend(x, k, v, bias)
    }
}

/// The additive padding mask `[b, 1, 1, s]` of an attention mask (u32 `[b, s]`, 1 = token):
/// 0 where a key is a token, [`MASKED`] where it is padding. `None` when nothing is padded.
pub fn padding_bias(attention_mask: &Tensor) -> Result<Option<Tensor>> {
    let (b, s) = attention_mask.dims2()?;
    let m = attention_mask.to_dtype(DType::U32)?.flatten_all()?.to_vec1::<u32>()?;
    if m.iter().all(|&x| x != 0) {
        return Ok(None);
    }
    let bias: Vec<f32> = m.iter().map(|&x| if x != 0 { 0.0 } else { MASKED }).collect();
    Ok(Some(Tensor::from_vec(bias, (b, 1, 1, s), &Device::Cpu)?))
}

/// The additive causal mask `[1, 1, t, past + t]` of a decoder chunk of `t` tokens after
/// `past` cached ones; `None` for a single token (it sees everything cached).
pub fn causal_bias(t: usize, past: usize) -> Result<Option<Tensor>> {
    if t <= 1 {
        return Ok(None);
    }
    let total = past + t;
    let bias: Vec<f32> = (0..t).flat_map(|i| (0..total).map(move |j| if j > past + i { MASKED } else { 0.0 })).collect();
    Ok(Some(Tensor::from_vec(bias, (1, 1, t, total), &Device::Cpu)?))
}

/// `a + b` for optional additive biases of broadcast-compatible shapes.
pub fn add_bias(a: Option<Tensor>, b: Option<&Tensor>) -> Result<Option<Tensor>> {
    Ok(match (a, b) {
        (Some(a), Some(b)) => Some(a.broadcast_add(b)?),
        (Some(a), None) => Some(a),
        (None, Some(b)) => Some(b.clone()),
        (None, None) => None,
    })
}

/// Checks the inputs of an encode call: ids and mask are `[b, s]` with `b, s > 0`, `s`
/// within `max_len` (when there is a limit), ids inside the vocabulary. Returns `(b, s)`.
pub fn check_source(input_ids: &Tensor, attention_mask: &Tensor, vocab: usize, max_len: Option<usize>) -> Result<(usize, usize)> {
    let (b, s) = input_ids.dims2().map_err(|_| Error::invalid("input_ids", format!("shape {:?}, expected [batch, seq]", input_ids.dims())))?;
    if attention_mask.dims() != [b, s] {
        return Err(Error::invalid("attention_mask", format!("shape {:?} differs from input_ids {:?}", attention_mask.dims(), [b, s])));
    }
    if b == 0 || s == 0 {
        return Err(Error::invalid("input_ids", "no tokens"));
    }
    if let Some(max) = max_len.filter(|&m| s > m) {
        return Err(Error::ContextOverflow { prompt_tokens: s, context: max });
    }
    check_ids("input_ids", input_ids, vocab)?;
    Ok((b, s))
}

/// Checks that every id of `ids` is inside a vocabulary of `vocab`.
pub fn check_ids(what: &str, ids: &Tensor, vocab: usize) -> Result<()> {
    let flat = ids.to_dtype(DType::U32)?.flatten_all()?.to_vec1::<u32>()?;
    if let Some(&bad) = flat.iter().find(|&&id| id as usize >= vocab) {
        return Err(Error::invalid(what, format!("token id {bad} is outside the vocabulary of {vocab}")));
    }
    Ok(())
}

/// Checks the inputs of a decode call against each other and the cache; returns `(b, t, s)`.
pub fn check_target(
    decoder_ids: &Tensor,
    encoder_hidden: &Tensor,
    attention_mask: &Tensor,
    cache: &crate::Seq2SeqCache,
    vocab: usize,
    d_model: usize,
) -> Result<(usize, usize, usize)> {
    let (b, t) = decoder_ids.dims2().map_err(|_| Error::invalid("decoder_ids", format!("shape {:?}, expected [batch, len]", decoder_ids.dims())))?;
    if b == 0 || t == 0 {
        return Err(Error::invalid("decoder_ids", "no tokens"));
    }
    let (eb, s, d) = encoder_hidden
        .dims3()
        .map_err(|_| Error::invalid("encoder_hidden", format!("shape {:?}, expected [batch, seq, d_model]", encoder_hidden.dims())))?;
    if eb != b || d != d_model {
        return Err(Error::invalid("encoder_hidden", format!("shape {:?}, expected [{b}, seq, {d_model}]", encoder_hidden.dims())));
    }
    if attention_mask.dims() != [b, s] {
        return Err(Error::invalid("attention_mask", format!("shape {:?}, expected {:?}", attention_mask.dims(), [b, s])));
    }
    if let Some((k, _)) = cache.self_kv.iter().chain(cache.cross_kv.iter()).flatten().next() {
        if k.dim(0)? != b {
            return Err(Error::invalid("decoder cache", format!("holds {} rows but decoder_ids has {b}", k.dim(0)?)));
        }
    }
    check_ids("decoder_ids", decoder_ids, vocab)?;
    Ok((b, t, s))
}
