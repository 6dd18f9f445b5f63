//! BART (`model_type` "bart", bart-large-cnn style) and mBART ("mbart"), and the
//! BART-family encoder-decoder stack that Marian (`marian.rs`) configures with its own
//! positions.
//!
//! The stack: token embeddings (times `sqrt(d_model)` when `scale_embedding`) plus a position
//! table (BART's learned one is read with an offset of 2; Marian's is sinusoidal and computed),
//! optionally `layernorm_embedding`; encoder layers (self-attention, feed-forward) and decoder
//! layers (causal self-attention, cross-attention over the encoder output, feed-forward),
//! post-LN (BART, Marian) or pre-LN with a final `layer_norm` per stack (mBART); then the
//! `lm_head` (the decoder's embedding table unless `lm_head.weight` is stored) plus
//! `final_logits_bias`.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use plinth_core::{Error, Result};

use crate::config::{check_dims, Dims};
use crate::layers::cross_attention::{causal_bias, check_source, check_target, padding_bias, Attention};
use crate::layers::{Activation, LayerNorm, Linear, QLinear};
use crate::models::bert::ConfigReader;
use crate::seq2seq::{config_bool, config_id, Seq2Seq, Seq2SeqCache, Seq2SeqInfo};
use crate::weights::Weights;

/// nn.LayerNorm's default; BART-family configs carry no epsilon.
const LN_EPS: f64 = 1e-5;

/// The sizes and switches of a BART-family model.
#[derive(Debug, Clone)]
pub(crate) struct BartDims {
    pub model_type: String,
    /// Source vocabulary (encoder embedding rows).
    pub vocab_size: usize,
    /// Target vocabulary (decoder embedding rows, logits); Marian's `decoder_vocab_size`.
    pub target_vocab_size: usize,
    pub d_model: usize,
    pub encoder_layers: usize,
    pub decoder_layers: usize,
    pub encoder_heads: usize,
    pub decoder_heads: usize,
    pub encoder_ffn: usize,
    pub decoder_ffn: usize,
    pub max_positions: usize,
    pub activation: Activation,
    pub scale_embedding: bool,
    /// Encoder and decoder share one embedding table (`model.shared.weight`).
    pub shared_embeddings: bool,
    /// mBART: LayerNorm before each sub-layer and a final `layer_norm` per stack.
    pub pre_ln: bool,
    pub pad_token_id: u32,
    pub eos_token_id: u32,
    pub decoder_start_token_id: u32,
}

/// Reads the BART-family fields of `config.json`. `default_start` gives the decoder start id
/// when the config has none (BART: eos; Marian: pad).
pub(crate) fn bart_dims(json: &serde_json::Value, path: &Path, model_type: &str, default_start: fn(u32, u32) -> u32) -> Result<BartDims> {
    let c = ConfigReader { json, path };
    let vocab_size = c.usize("vocab_size", None)?;
    let d_model = c.usize("d_model", None)?;
    let pad_token_id = config_id(json, path, "pad_token_id")?.ok_or_else(|| Error::missing(path, "config field 'pad_token_id'"))?;
    let eos_token_id = config_id(json, path, "eos_token_id")?.ok_or_else(|| Error::missing(path, "config field 'eos_token_id'"))?;
    let decoder_start_token_id = config_id(json, path, "decoder_start_token_id")?.unwrap_or(default_start(pad_token_id, eos_token_id));
    let shared_embeddings = config_bool(json, path, "share_encoder_decoder_embeddings", true)?;
    let d = BartDims {
        model_type: model_type.to_string(),
        vocab_size,
        target_vocab_size: if shared_embeddings { vocab_size } else { c.usize("decoder_vocab_size", Some(vocab_size))? },
        d_model,
        encoder_layers: c.usize("encoder_layers", None)?,
        decoder_layers: c.usize("decoder_layers", None)?,
        encoder_heads: c.usize("encoder_attention_heads", None)?,
        decoder_heads: c.usize("decoder_attention_heads", None)?,
        encoder_ffn: c.usize("encoder_ffn_dim", None)?,
        decoder_ffn: c.usize("decoder_ffn_dim", None)?,
        max_positions: c.usize("max_position_embeddings", None)?,
        activation: c.activation("activation_function", Activation::GeluErf)?,
        scale_embedding: config_bool(json, path, "scale_embedding", false)?,
        shared_embeddings,
        pre_ln: model_type == "mbart",
        pad_token_id,
        eos_token_id,
        decoder_start_token_id,
    };
    d.validate(path)?;
    Ok(d)
}

impl BartDims {
    fn validate(&self, path: &Path) -> Result<()> {
        for (heads, layers) in [(self.encoder_heads, self.encoder_layers), (self.decoder_heads, self.decoder_layers)] {
            if heads == 0 || !self.d_model.is_multiple_of(heads) {
                return Err(Error::format(path, format!("d_model {} is not divisible into {heads} attention heads", self.d_model)));
            }
            check_dims(
                path,
                Dims {
                    num_heads: heads,
                    num_kv_heads: heads,
                    head_dim: self.d_model / heads,
                    max_positions: self.max_positions,
                    num_layers: layers,
                    vocab_size: self.vocab_size.max(self.target_vocab_size),
                },
            )?;
        }
        if self.target_vocab_size == 0 || self.target_vocab_size > 1 << 22 {
            return Err(Error::format(path, format!("decoder vocabulary {} is out of range", self.target_vocab_size)));
        }
        for ffn in [self.encoder_ffn, self.decoder_ffn] {
            if ffn == 0 || ffn > 1 << 20 {
                return Err(Error::format(path, format!("feed-forward size {ffn} is out of range")));
            }
        }
        for (what, id) in [("pad_token_id", self.pad_token_id), ("eos_token_id", self.eos_token_id), ("decoder_start_token_id", self.decoder_start_token_id)] {
            if id as usize >= self.target_vocab_size {
                return Err(Error::format(path, format!("{what} {id} is outside the vocabulary of {}", self.target_vocab_size)));
            }
        }
        Ok(())
    }
}

fn layer_norm(w: &Weights, prefix: &str, d: usize) -> Result<LayerNorm> {
    Ok(LayerNorm::new(w.tensor(&format!("{prefix}.weight"), &[d])?, w.tensor(&format!("{prefix}.bias"), &[d])?, LN_EPS))
}

const ATTN_NAMES: [&str; 4] = ["q_proj", "k_proj", "v_proj", "out_proj"];

/// `fc2(act(fc1(x)))`.
pub(crate) struct FeedForward {
    fc1: QLinear,
    fc2: QLinear,
    act: Activation,
}

impl FeedForward {
    fn load(w: &Weights, prefix: &str, d: usize, ffn: usize, act: Activation) -> Result<Self> {
        Ok(FeedForward { fc1: w.linear(&format!("{prefix}.fc1"), ffn, d)?, fc2: w.linear(&format!("{prefix}.fc2"), d, ffn)?, act })
    }

    fn params(&self) -> usize {
        self.fc1.params() + self.fc2.params()
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, t, d) = x.dims3()?;
        let y = self.fc2.forward(&self.act.apply(&self.fc1.forward(&x.reshape((b * t, d))?)?)?)?;
        Ok(y.reshape((b, t, d))?)
    }
}

/// One residual sub-layer, post-LN (`norm(x + f(x))`) or pre-LN (`x + f(norm(x))`).
fn residual(x: &Tensor, norm: &LayerNorm, pre_ln: bool, f: impl FnOnce(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
    if pre_ln {
        Ok((x + f(&norm.forward(x)?)?)?)
    } else {
        norm.forward(&(x + f(x)?)?)
    }
}

/// A BART-family encoder layer: self-attention, then the feed-forward network.
pub(crate) struct EncoderLayer {
    attn: Attention,
    attn_norm: LayerNorm,
    ffn: FeedForward,
    ffn_norm: LayerNorm,
}

impl EncoderLayer {
    pub fn load(w: &Weights, prefix: &str, d: &BartDims) -> Result<Self> {
        let (h, heads) = (d.d_model, d.encoder_heads);
        let hd = h / heads;
        Ok(EncoderLayer {
            attn: Attention::load(w, &format!("{prefix}.self_attn"), ATTN_NAMES, h, heads, hd, (hd as f64).powf(-0.5))?,
            attn_norm: layer_norm(w, &format!("{prefix}.self_attn_layer_norm"), h)?,
            ffn: FeedForward::load(w, prefix, h, d.encoder_ffn, d.activation)?,
            ffn_norm: layer_norm(w, &format!("{prefix}.final_layer_norm"), h)?,
        })
    }

    fn params(&self) -> usize {
        self.attn.params() + self.attn_norm.params() + self.ffn.params() + self.ffn_norm.params()
    }

    fn forward(&self, x: &Tensor, pad: Option<&Tensor>, pre_ln: bool) -> Result<Tensor> {
        let x = residual(x, &self.attn_norm, pre_ln, |h| self.attn.encoder_self(h, pad))?;
        residual(&x, &self.ffn_norm, pre_ln, |h| self.ffn.forward(h))
    }
}

/// A BART-family decoder layer: causal self-attention, cross-attention, feed-forward.
pub(crate) struct DecoderLayer {
    self_attn: Attention,
    self_norm: LayerNorm,
    cross: Attention,
    cross_norm: LayerNorm,
    ffn: FeedForward,
    ffn_norm: LayerNorm,
}

impl DecoderLayer {
    pub fn load(w: &Weights, prefix: &str, d: &BartDims) -> Result<Self> {
        let (h, heads) = (d.d_model, d.decoder_heads);
        let hd = h / heads;
        let scale = (hd as f64).powf(-0.5);
        Ok(DecoderLayer {
            self_attn: Attention::load(w, &format!("{prefix}.self_attn"), ATTN_NAMES, h, heads, hd, scale)?,
            self_norm: layer_norm(w, &format!("{prefix}.self_attn_layer_norm"), h)?,
            cross: Attention::load(w, &format!("{prefix}.encoder_attn"), ATTN_NAMES, h, heads, hd, scale)?,
            cross_norm: layer_norm(w, &format!("{prefix}.encoder_attn_layer_norm"), h)?,
            ffn: FeedForward::load(w, prefix, h, d.decoder_ffn, d.activation)?,
            ffn_norm: layer_norm(w, &format!("{prefix}.final_layer_norm"), h)?,
        })
    }

    fn params(&self) -> usize {
        self.self_attn.params() + self.self_norm.params() + self.cross.params() + self.cross_norm.params() + self.ffn.params() + self.ffn_norm.params()
    }

    #[allow(clippy::too_many_arguments)]
    fn forward(
        &self,
        x: &Tensor,
        encoder_hidden: &Tensor,
        self_kv: &mut Option<(Tensor, Tensor)>,
        cross_kv: &mut Option<(Tensor, Tensor)>,
        causal: Option<&Tensor>,
        pad: Option<&Tensor>,
        pre_ln: bool,
    ) -> Result<Tensor> {
        let x = residual(x, &self.self_norm, pre_ln, |h| self.self_attn.decoder_self(h, self_kv, causal))?;
        let x = residual(&x, &self.cross_norm, pre_ln, |h| self.cross.cross(h, encoder_hidden, cross_kv, pad))?;
        residual(&x, &self.ffn_norm, pre_ln, |h| self.ffn.forward(h))
    }
}

/// Where the position vectors come from: a table read from the file (BART: learned, rows
/// `offset..`) or computed at load (Marian: sinusoidal, offset 0).
pub(crate) struct PositionTable {
    pub table: Tensor,
    pub offset: usize,
}

impl PositionTable {
    /// Rows for positions `start..start + t`, `[t, d]`.
    fn rows(&self, start: usize, t: usize) -> Result<Tensor> {
        Ok(self.table.narrow(0, start + self.offset, t)?)
    }

    fn params(&self, stored: bool) -> usize {
        if stored { self.table.elem_count() } else { 0 }
    }
}

/// The embedding side of one stack.
pub(crate) struct StackInput {
    pub tokens: Tensor,
    pub positions: PositionTable,
    pub norm: Option<LayerNorm>,
}

impl StackInput {
    fn forward(&self, ids: &Tensor, start: usize, scale: f64) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let d = self.tokens.dim(1)?;
        let x = self.tokens.embedding(&ids.to_dtype(DType::U32)?.flatten_all()?)?.reshape((b, t, d))?;
        let x = if scale != 1.0 { (x * scale)? } else { x };
        let x = x.broadcast_add(&self.positions.rows(start, t)?)?;
        match &self.norm {
            Some(n) => n.forward(&x),
            None => Ok(x),
        }
    }
}

/// A loaded BART, mBART or Marian model.
pub struct BartModel {
    info: Seq2SeqInfo,
    pre_ln: bool,
    embed_scale: f64,
    target_vocab: usize,
    encoder_input: StackInput,
    decoder_input: StackInput,
    encoder_layers: Vec<EncoderLayer>,
    decoder_layers: Vec<DecoderLayer>,
    encoder_norm: Option<LayerNorm>,
    decoder_norm: Option<LayerNorm>,
    /// Carries `final_logits_bias` as its bias.
    lm_head: QLinear,
    source_vocab: usize,
}

/// Both stacks' layers, under `model.encoder.layers.{i}` and `model.decoder.layers.{i}`.
fn load_stacks(w: &Weights, d: &BartDims) -> Result<(Vec<EncoderLayer>, Vec<DecoderLayer>)> {
    let enc = (0..d.encoder_layers).map(|i| EncoderLayer::load(w, &format!("model.encoder.layers.{i}"), d)).collect::<Result<Vec<_>>>()?;
    let dec = (0..d.decoder_layers).map(|i| DecoderLayer::load(w, &format!("model.decoder.layers.{i}"), d)).collect::<Result<Vec<_>>>()?;
    Ok((enc, dec))
}

/// The encoder and decoder token tables: `model.shared.weight` when the embeddings are
/// shared (older checkpoints may store it only as `model.encoder.embed_tokens.weight`), else
/// each stack's own `embed_tokens`.
pub(crate) fn token_tables(w: &Weights, d: &BartDims) -> Result<(Tensor, Tensor)> {
    let h = d.d_model;
    if d.shared_embeddings {
        let name = ["model.shared.weight", "model.encoder.embed_tokens.weight", "model.decoder.embed_tokens.weight"]
            .into_iter()
            .find(|n| w.contains(n))
            .unwrap_or("model.shared.weight");
        let t = w.tensor(name, &[d.vocab_size, h])?;
        Ok((t.clone(), t))
    } else {
        Ok((
            w.tensor("model.encoder.embed_tokens.weight", &[d.vocab_size, h])?,
            w.tensor("model.decoder.embed_tokens.weight", &[d.target_vocab_size, h])?,
        ))
    }
}

impl BartModel {
    /// Builds the model once the position tables are known; reads every other tensor.
    /// `positions_stored`: whether the position tables came from the file (for the parameter
    /// count).
    pub(crate) fn assemble(w: &Weights, d: &BartDims, enc_pos: PositionTable, dec_pos: PositionTable, layernorm_embedding: bool, positions_stored: bool) -> Result<Self> {
        let h = d.d_model;
        let (enc_tokens, dec_tokens) = token_tables(w, d)?;
        let emb_norm = |stack: &str| -> Result<Option<LayerNorm>> {
            if layernorm_embedding { Ok(Some(layer_norm(w, &format!("model.{stack}.layernorm_embedding"), h)?)) } else { Ok(None) }
        };
        let final_norm = |stack: &str| -> Result<Option<LayerNorm>> {
            if d.pre_ln { Ok(Some(layer_norm(w, &format!("model.{stack}.layer_norm"), h)?)) } else { Ok(None) }
        };
        let (encoder_layers, decoder_layers) = load_stacks(w, d)?;
        let v = d.target_vocab_size;
        // transformers skips a missing final_logits_bias (zeros) and unties an lm_head stored
        // with its own values; a tied one is the decoder's table.
        let bias = if w.contains("final_logits_bias") {
            w.tensor("final_logits_bias", &[1, v])?.reshape(v)?
        } else {
            Tensor::zeros(v, DType::F32, &Device::Cpu)?
        };
        let (lm_weight, lm_stored) =
            if w.contains("lm_head.weight") { (w.tensor("lm_head.weight", &[v, h])?, true) } else { (dec_tokens.clone(), false) };
        let lm_head = QLinear::from_tensor(lm_weight, Some(bias));
        let encoder_input = StackInput { tokens: enc_tokens, positions: enc_pos, norm: emb_norm("encoder")? };
        let decoder_input = StackInput { tokens: dec_tokens, positions: dec_pos, norm: emb_norm("decoder")? };
        let encoder_norm = final_norm("encoder")?;
        let decoder_norm = final_norm("decoder")?;
        let norms = |n: &Option<LayerNorm>| n.as_ref().map_or(0, LayerNorm::params);
        let parameters = encoder_input.tokens.elem_count()
            + if d.shared_embeddings { 0 } else { decoder_input.tokens.elem_count() }
            + encoder_input.positions.params(positions_stored)
            + decoder_input.positions.params(positions_stored)
            + norms(&encoder_input.norm)
            + norms(&decoder_input.norm)
            + norms(&encoder_norm)
            + norms(&decoder_norm)
            + encoder_layers.iter().map(EncoderLayer::params).sum::<usize>()
            + decoder_layers.iter().map(DecoderLayer::params).sum::<usize>()
            + if lm_stored { lm_head.params() } else { v };
        let info = Seq2SeqInfo {
            architecture: d.model_type.clone(),
            vocab_size: v,
            d_model: h,
            encoder_layers: d.encoder_layers,
            decoder_layers: d.decoder_layers,
            max_source_positions: Some(d.max_positions),
            max_target_positions: Some(d.max_positions),
            parameters,
            pad_token_id: d.pad_token_id,
            eos_token_id: d.eos_token_id,
            decoder_start_token_id: d.decoder_start_token_id,
        };
        Ok(BartModel {
            info,
            pre_ln: d.pre_ln,
            embed_scale: if d.scale_embedding { (h as f64).sqrt() } else { 1.0 },
            target_vocab: v,
            encoder_input,
            decoder_input,
            encoder_layers,
            decoder_layers,
            encoder_norm,
            decoder_norm,
            lm_head,
            source_vocab: d.vocab_size,
        })
    }

    fn max_positions(&self) -> usize {
        self.info.max_target_positions.unwrap_or(usize::MAX)
    }
}

impl Seq2Seq for BartModel {
    fn info(&self) -> &Seq2SeqInfo {
        &self.info
    }

    fn encode(&self, input_ids: &Tensor, attention_mask: &Tensor) -> Result<Tensor> {
        check_source(input_ids, attention_mask, self.source_vocab, self.info.max_source_positions)?;
        let pad = padding_bias(attention_mask)?;
        let mut x = self.encoder_input.forward(input_ids, 0, self.embed_scale)?;
        for layer in &self.encoder_layers {
            x = layer.forward(&x, pad.as_ref(), self.pre_ln)?;
        }
        match &self.encoder_norm {
            Some(n) => n.forward(&x),
            None => Ok(x),
        }
    }

    fn decode(&self, decoder_ids: &Tensor, encoder_hidden: &Tensor, attention_mask: &Tensor, cache: &mut Seq2SeqCache) -> Result<Tensor> {
        let (b, t, _) = check_target(decoder_ids, encoder_hidden, attention_mask, cache, self.target_vocab, self.info.d_model)?;
        if cache.self_kv.len() != self.decoder_layers.len() || cache.cross_kv.len() != self.decoder_layers.len() {
            return Err(Error::invalid("decoder cache", format!("has {} layers, the model {}", cache.self_kv.len(), self.decoder_layers.len())));
        }
        let past = cache.len();
        if past + t > self.max_positions() {
            return Err(Error::ContextOverflow { prompt_tokens: past + t, context: self.max_positions() });
        }
        let causal = causal_bias(t, past)?;
        let pad = padding_bias(attention_mask)?;
        let mut x = self.decoder_input.forward(decoder_ids, past, self.embed_scale)?;
        for (i, layer) in self.decoder_layers.iter().enumerate() {
            x = layer.forward(&x, encoder_hidden, &mut cache.self_kv[i], &mut cache.cross_kv[i], causal.as_ref(), pad.as_ref(), self.pre_ln)?;
        }
        if let Some(n) = &self.decoder_norm {
            x = n.forward(&x)?;
        }
        let d = self.info.d_model;
        let logits = self.lm_head.forward(&x.reshape((b * t, d))?)?.reshape((b, t, self.target_vocab))?;
        cache.advance(t);
        Ok(logits)
    }
}

/// Loads a BART ("bart") or mBART ("mbart") checkpoint: learned positions with transformers'
/// offset of 2, `layernorm_embedding` on both stacks.
pub fn load_hf(json: &serde_json::Value, path: &Path, w: &Weights, model_type: &str) -> Result<Box<dyn Seq2Seq>> {
    let d = bart_dims(json, path, model_type, |_pad, eos| eos)?;
    let rows = d.max_positions + 2;
    let pos = |stack: &str| -> Result<PositionTable> {
        Ok(PositionTable { table: w.tensor(&format!("model.{stack}.embed_positions.weight"), &[rows, d.d_model])?, offset: 2 })
    };
    Ok(Box::new(BartModel::assemble(w, &d, pos("encoder")?, pos("decoder")?, true, true)?))
}
