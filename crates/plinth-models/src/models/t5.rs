//! T5 and flan-t5 (`model_type` "t5"): pre-norm blocks with T5's RMS norm (no mean
//! subtraction, no bias), unscaled attention whose scores get a learned relative position
//! bias (bucketed distances; bidirectional in the encoder, causal in the decoder; the table
//! lives only in block 0 and every block reuses it), a ReLU or gated feed-forward network
//! (`feed_forward_proj`: `relu`, `gated-gelu` = tanh-approximated gelu, `gated-silu`, ...),
//! and no position embeddings. Before the `lm_head` the decoder output is scaled by
//! `d_model^-0.5` when `scale_decoder_outputs` says so (transformers 5; older configs say it
//! with `tie_word_embeddings`, true for the original T5, false for T5 v1.1 / flan-t5).

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use plinth_core::{Error, Result};

use crate::config::{check_dims, Dims};
use crate::layers::cross_attention::{add_bias, causal_bias, check_source, check_target, padding_bias, Attention};
use crate::layers::{Activation, Linear, QLinear, RmsNorm};
use crate::models::bert::ConfigReader;
use crate::seq2seq::{config_bool, config_id, Seq2Seq, Seq2SeqCache, Seq2SeqInfo};
use crate::weights::Weights;

/// The sizes and switches of a T5 model.
#[derive(Debug, Clone)]
struct T5Dims {
    vocab_size: usize,
    d_model: usize,
    d_kv: usize,
    d_ff: usize,
    num_layers: usize,
    num_decoder_layers: usize,
    num_heads: usize,
    num_buckets: usize,
    max_distance: usize,
    eps: f64,
    activation: Activation,
    gated: bool,
    scale_decoder_outputs: bool,
    pad_token_id: u32,
    eos_token_id: u32,
    decoder_start_token_id: u32,
}

fn t5_dims(json: &serde_json::Value, path: &Path) -> Result<T5Dims> {
    let c = ConfigReader { json, path };
    let num_layers = c.usize("num_layers", None)?;
    // transformers 5 derives the activation from feed_forward_proj alone ("gated-gelu" keeps
    // its historical gelu_new) and ignores a saved dense_act_fn.
    let proj = c.str("feed_forward_proj")?.unwrap_or("relu");
    let parts: Vec<&str> = proj.split('-').collect();
    let (gated, act_name) = match parts.as_slice() {
        [act] => (false, *act),
        ["gated", act] => (true, if *act == "gelu" { "gelu_new" } else { *act }),
        _ => return Err(Error::format(path, format!("feed_forward_proj '{proj}' is not 'ACT' or 'gated-ACT'"))),
    };
    let pad_token_id = config_id(json, path, "pad_token_id")?.unwrap_or(0);
    // The old field names the rescale too: tie_word_embeddings false means no rescale.
    let tied = config_bool(json, path, "tie_word_embeddings", true)?;
    let d = T5Dims {
        vocab_size: c.usize("vocab_size", None)?,
        d_model: c.usize("d_model", None)?,
        d_kv: c.usize("d_kv", None)?,
        d_ff: c.usize("d_ff", None)?,
        num_layers,
        num_decoder_layers: c.usize("num_decoder_layers", Some(num_layers))?,
        num_heads: c.usize("num_heads", None)?,
        num_buckets: c.usize("relative_attention_num_buckets", Some(32))?,
        max_distance: c.usize("relative_attention_max_distance", Some(128))?,
        eps: c.f64("layer_norm_epsilon", 1e-6)?,
        activation: Activation::from_hf(act_name, "feed_forward_proj", path)?,
        gated,
        scale_decoder_outputs: config_bool(json, path, "scale_decoder_outputs", tied)?,
        pad_token_id,
        eos_token_id: config_id(json, path, "eos_token_id")?.unwrap_or(1),
        decoder_start_token_id: config_id(json, path, "decoder_start_token_id")?.unwrap_or(pad_token_id),
    };
    for layers in [d.num_layers, d.num_decoder_layers] {
        check_dims(
            path,
            Dims { num_heads: d.num_heads, num_kv_heads: d.num_heads, head_dim: d.d_kv, max_positions: 1, num_layers: layers, vocab_size: d.vocab_size },
        )?;
    }
    if d.d_model == 0 || d.d_model > 1 << 16 || d.d_ff == 0 || d.d_ff > 1 << 20 {
        return Err(Error::format(path, format!("d_model {} / d_ff {} are out of range", d.d_model, d.d_ff)));
    }
    if d.num_buckets < 4 || d.num_buckets > 1 << 12 || d.max_distance < d.num_buckets / 2 {
        return Err(Error::format(path, format!("relative attention buckets {} / max distance {} are out of range", d.num_buckets, d.max_distance)));
    }
    for (what, id) in [("pad_token_id", d.pad_token_id), ("eos_token_id", d.eos_token_id), ("decoder_start_token_id", d.decoder_start_token_id)] {
        if id as usize >= d.vocab_size {
            return Err(Error::format(path, format!("{what} {id} is outside the vocabulary of {}", d.vocab_size)));
        }
    }
    Ok(d)
}

/// transformers' `_relative_position_bucket` for `rel = key_pos - query_pos`, computed in
/// f32 as torch does (the logarithmic buckets truncate, so boundary cases depend on it).
pub fn relative_bucket(rel: i64, bidirectional: bool, num_buckets: usize, max_distance: usize) -> usize {
    let mut nb = num_buckets as i64;
    let mut bucket = 0i64;
    let dist = if bidirectional {
        nb /= 2;
        if rel > 0 {
            bucket += nb;
        }
        rel.abs()
    } else {
        (-rel).max(0)
    };
    let max_exact = nb / 2;
    if dist < max_exact {
        return (bucket + dist) as usize;
    }
    let ratio = ((dist as f32) / (max_exact as f32)).ln();
    let denom = ((max_distance as f64) / (max_exact as f64)).ln() as f32;
    let large = max_exact + (ratio / denom * (nb - max_exact) as f32) as i64;
    (bucket + large.min(nb - 1)) as usize
}

/// The relative position bias table of block 0 (`[buckets, heads]`).
struct RelativeBias {
    table: Tensor,
    bidirectional: bool,
    num_buckets: usize,
    max_distance: usize,
}

impl RelativeBias {
    /// `[1, heads, t, past + t]` for queries at positions `past..past + t`.
    fn compute(&self, t: usize, past: usize) -> Result<Tensor> {
        let total = past + t;
        let idx: Vec<u32> = (0..t)
            .flat_map(|i| (0..total).map(move |j| (j as i64, (past + i) as i64)))
            .map(|(k, q)| relative_bucket(k - q, self.bidirectional, self.num_buckets, self.max_distance) as u32)
            .collect();
        let heads = self.table.dim(1)?;
        let v = self.table.embedding(&Tensor::new(idx, &Device::Cpu)?)?; // [t * total, heads]
        Ok(v.reshape((t, total, heads))?.permute((2, 0, 1))?.unsqueeze(0)?.contiguous()?)
    }
}

/// `wo(act(wi_0 x) * wi_1 x)` (gated) or `wo(act(wi x))`.
struct FeedForward {
    wi: QLinear,
    wi_1: Option<QLinear>,
    wo: QLinear,
    act: Activation,
    norm: RmsNorm,
}

impl FeedForward {
    fn load(w: &Weights, prefix: &str, d: &T5Dims) -> Result<Self> {
        let p = |n: &str| format!("{prefix}.DenseReluDense.{n}");
        let (wi, wi_1) = if d.gated {
            (w.linear(&p("wi_0"), d.d_ff, d.d_model)?, Some(w.linear(&p("wi_1"), d.d_ff, d.d_model)?))
        } else {
            (w.linear(&p("wi"), d.d_ff, d.d_model)?, None)
        };
        Ok(FeedForward {
            wi,
            wi_1,
            wo: w.linear(&p("wo"), d.d_model, d.d_ff)?,
            act: d.activation,
            norm: rms_norm(w, &format!("{prefix}.layer_norm"), d)?,
        })
    }

    fn params(&self) -> usize {
        self.wi.params() + self.wi_1.as_ref().map_or(0, |l| l.params()) + self.wo.params() + self.norm.params()
    }

    /// `x + ffn(norm(x))`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, t, d) = x.dims3()?;
        let h = self.norm.forward(&x.reshape((b * t, d))?)?;
        let mut inner = self.act.apply(&self.wi.forward(&h)?)?;
        if let Some(wi_1) = &self.wi_1 {
            inner = (inner * wi_1.forward(&h)?)?;
        }
        Ok((x + self.wo.forward(&inner)?.reshape((b, t, d))?)?)
    }
}

fn rms_norm(w: &Weights, prefix: &str, d: &T5Dims) -> Result<RmsNorm> {
    Ok(RmsNorm::new(w.tensor(&format!("{prefix}.weight"), &[d.d_model])?, d.eps))
}

/// `x + attn(norm(x))`, the norm applied on the flattened rows.
fn pre_norm(x: &Tensor, norm: &RmsNorm, f: impl FnOnce(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
    let (b, t, d) = x.dims3()?;
    let h = norm.forward(&x.reshape((b * t, d))?)?.reshape((b, t, d))?;
    Ok((x + f(&h)?)?)
}

const ATTN_NAMES: [&str; 4] = ["q", "k", "v", "o"];

fn attention(w: &Weights, prefix: &str, d: &T5Dims) -> Result<Attention> {
    // T5 folds the score scale into its initialisation: no 1/sqrt(d_kv).
    Attention::load(w, prefix, ATTN_NAMES, d.d_model, d.num_heads, d.d_kv, 1.0)
}

struct EncoderBlock {
    attn: Attention,
    attn_norm: RmsNorm,
    ffn: FeedForward,
}

struct DecoderBlock {
    self_attn: Attention,
    self_norm: RmsNorm,
    cross: Attention,
    cross_norm: RmsNorm,
    ffn: FeedForward,
}

/// A loaded T5 model.
pub struct T5Model {
    info: Seq2SeqInfo,
    shared: Tensor,
    encoder: Vec<EncoderBlock>,
    encoder_bias: RelativeBias,
    encoder_norm: RmsNorm,
    decoder: Vec<DecoderBlock>,
    decoder_bias: RelativeBias,
    decoder_norm: RmsNorm,
    lm_head: QLinear,
    output_scale: Option<f64>,
}

impl T5Model {
    fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        Ok(self.shared.embedding(&ids.to_dtype(DType::U32)?.flatten_all()?)?.reshape((b, t, self.info.d_model))?)
    }
}

impl Seq2Seq for T5Model {
    fn info(&self) -> &Seq2SeqInfo {
        &self.info
    }

    fn encode(&self, input_ids: &Tensor, attention_mask: &Tensor) -> Result<Tensor> {
        let (_, s) = check_source(input_ids, attention_mask, self.info.vocab_size, None)?;
        let bias = add_bias(Some(self.encoder_bias.compute(s, 0)?), padding_bias(attention_mask)?.as_ref())?;
        let mut x = self.embed(input_ids)?;
        for blk in &self.encoder {
            x = pre_norm(&x, &blk.attn_norm, |h| blk.attn.encoder_self(h, bias.as_ref()))?;
            x = blk.ffn.forward(&x)?;
        }
        let (b, s, d) = x.dims3()?;
        Ok(self.encoder_norm.forward(&x.reshape((b * s, d))?)?.reshape((b, s, d))?)
    }

    fn decode(&self, decoder_ids: &Tensor, encoder_hidden: &Tensor, attention_mask: &Tensor, cache: &mut Seq2SeqCache) -> Result<Tensor> {
        let (b, t, _) = check_target(decoder_ids, encoder_hidden, attention_mask, cache, self.info.vocab_size, self.info.d_model)?;
        if cache.self_kv.len() != self.decoder.len() || cache.cross_kv.len() != self.decoder.len() {
            return Err(Error::invalid("decoder cache", format!("has {} layers, the model {}", cache.self_kv.len(), self.decoder.len())));
        }
        let past = cache.len();
        let self_bias = add_bias(Some(self.decoder_bias.compute(t, past)?), causal_bias(t, past)?.as_ref())?;
        let pad = padding_bias(attention_mask)?;
        let mut x = self.embed(decoder_ids)?;
        for (i, blk) in self.decoder.iter().enumerate() {
            x = pre_norm(&x, &blk.self_norm, |h| blk.self_attn.decoder_self(h, &mut cache.self_kv[i], self_bias.as_ref()))?;
            x = pre_norm(&x, &blk.cross_norm, |h| blk.cross.cross(h, encoder_hidden, &mut cache.cross_kv[i], pad.as_ref()))?;
            x = blk.ffn.forward(&x)?;
        }
        let d = self.info.d_model;
        let mut h = self.decoder_norm.forward(&x.reshape((b * t, d))?)?;
        if let Some(s) = self.output_scale {
            h = (h * s)?;
        }
        let logits = self.lm_head.forward(&h)?.reshape((b, t, self.info.vocab_size))?;
        cache.advance(t);
        Ok(logits)
    }
}

/// Loads a T5 / flan-t5 checkpoint (`T5ForConditionalGeneration` tensor names).
pub fn load_hf(json: &serde_json::Value, path: &Path, w: &Weights, model_type: &str) -> Result<Box<dyn Seq2Seq>> {
    let d = t5_dims(json, path)?;
    let (v, h) = (d.vocab_size, d.d_model);
    let shared_name = ["shared.weight", "encoder.embed_tokens.weight"].into_iter().find(|n| w.contains(n)).unwrap_or("shared.weight");
    let shared = w.tensor(shared_name, &[v, h])?;
    let rel = |stack: &str, bidirectional: bool| -> Result<RelativeBias> {
        let name = format!("{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight");
        Ok(RelativeBias { table: w.tensor(&name, &[d.num_buckets, d.num_heads])?, bidirectional, num_buckets: d.num_buckets, max_distance: d.max_distance })
    };
    let encoder = (0..d.num_layers)
        .map(|i| {
            let p = format!("encoder.block.{i}.layer");
            Ok(EncoderBlock {
                attn: attention(w, &format!("{p}.0.SelfAttention"), &d)?,
                attn_norm: rms_norm(w, &format!("{p}.0.layer_norm"), &d)?,
                ffn: FeedForward::load(w, &format!("{p}.1"), &d)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let decoder = (0..d.num_decoder_layers)
        .map(|i| {
            let p = format!("decoder.block.{i}.layer");
            Ok(DecoderBlock {
                self_attn: attention(w, &format!("{p}.0.SelfAttention"), &d)?,
                self_norm: rms_norm(w, &format!("{p}.0.layer_norm"), &d)?,
                cross: attention(w, &format!("{p}.1.EncDecAttention"), &d)?,
                cross_norm: rms_norm(w, &format!("{p}.1.layer_norm"), &d)?,
                ffn: FeedForward::load(w, &format!("{p}.2"), &d)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    // A stored lm_head is used as stored (transformers unties it when its values differ).
    let (lm_weight, lm_stored) = if w.contains("lm_head.weight") { (w.tensor("lm_head.weight", &[v, h])?, true) } else { (shared.clone(), false) };
    let lm_head = QLinear::from_tensor(lm_weight, None);
    let encoder_bias = rel("encoder", true)?;
    let decoder_bias = rel("decoder", false)?;
    let encoder_norm = rms_norm(w, "encoder.final_layer_norm", &d)?;
    let decoder_norm = rms_norm(w, "decoder.final_layer_norm", &d)?;
    let parameters = shared.elem_count()
        + encoder.iter().map(|b| b.attn.params() + b.attn_norm.params() + b.ffn.params()).sum::<usize>()
        + decoder.iter().map(|b| b.self_attn.params() + b.self_norm.params() + b.cross.params() + b.cross_norm.params() + b.ffn.params()).sum::<usize>()
        + encoder_bias.table.elem_count()
        + decoder_bias.table.elem_count()
        + encoder_norm.params()
        + decoder_norm.params()
        + if lm_stored { lm_head.params() } else { 0 };
    let info = Seq2SeqInfo {
        architecture: model_type.to_string(),
        vocab_size: v,
        d_model: h,
        encoder_layers: d.num_layers,
        decoder_layers: d.num_decoder_layers,
        max_source_positions: None,
        max_target_positions: None,
        parameters,
        pad_token_id: d.pad_token_id,
        eos_token_id: d.eos_token_id,
        decoder_start_token_id: d.decoder_start_token_id,
    };
    Ok(Box::new(T5Model {
        info,
        shared,
        encoder,
        encoder_bias,
        encoder_norm,
        decoder,
        decoder_bias,
        decoder_norm,
        lm_head,
        output_scale: d.scale_decoder_outputs.then(|| (h as f64).powf(-0.5)),
    }))
}

#[cfg(test)]
mod tests {
    use super::relative_bucket;

    /// Where the bucket changes, scanning `rel` upwards from -1000, as transformers 5.24's
    /// `T5Attention._relative_position_bucket` gives it for 32 buckets / max distance 128.
    #[test]
    fn buckets_match_transformers() {
        let bidirectional = [
            (-90, 14), (-63, 13), (-45, 12), (-31, 11), (-22, 10), (-15, 9), (-11, 8), (-7, 7), (-6, 6), (-5, 5), (-4, 4), (-3, 3),
            (-2, 2), (-1, 1), (0, 0), (1, 17), (2, 18), (3, 19), (4, 20), (5, 21), (6, 22), (7, 23), (8, 24), (12, 25), (16, 26),
            (23, 27), (32, 28), (46, 29), (64, 30), (91, 31),
        ];
        let causal = [
            (-112, 30), (-98, 29), (-86, 28), (-76, 27), (-66, 26), (-58, 25), (-51, 24), (-45, 23), (-39, 22), (-34, 21), (-30, 20),
            (-26, 19), (-23, 18), (-20, 17), (-18, 16), (-15, 15), (-14, 14), (-13, 13), (-12, 12), (-11, 11), (-10, 10), (-9, 9),
            (-8, 8), (-7, 7), (-6, 6), (-5, 5), (-4, 4), (-3, 3), (-2, 2), (-1, 1), (0, 0),
        ];
        for (bi, want) in [(true, &bidirectional[..]), (false, &causal[..])] {
            let got: Vec<(i64, usize)> = (-999..=1000)
                .filter_map(|r| {
                    let b = relative_bucket(r, bi, 32, 128);
                    (b != relative_bucket(r - 1, bi, 32, 128)).then_some((r, b))
                })
                .collect();
            let want: Vec<(i64, usize)> = want.iter().map(|&(r, b)| (r, b as usize)).collect();
            assert_eq!(got, want, "bidirectional {bi}");
        }
    }
}
