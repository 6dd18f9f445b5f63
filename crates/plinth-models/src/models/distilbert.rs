//! DistilBERT (`model_type` "distilbert"): BERT's post-LN block under other tensor names
//! (`transformer.layer.N.attention.q_lin`, `sa_layer_norm`, `ffn.lin1`, ...), no token type
//! embeddings and no pooler. The stack and heads are `bert.rs`'s; this file maps names and
//! reads DistilBERT's config (`dim`, `hidden_dim`, `n_layers`, `n_heads`, `activation`).

use std::path::Path;

use plinth_core::{Error, Result};

use crate::layers::Activation;
use crate::models::bert::{body_prefix, head_labels, BertEncoder, ConfigReader, Embeddings, EncoderDims, Head, Layer, LayerNames, Positions};
use crate::weights::Weights;
use crate::{Encoder, EncoderHead};

const DISTILBERT_LAYER: LayerNames = LayerNames {
    q: "attention.q_lin",
    k: "attention.k_lin",
    v: "attention.v_lin",
    attn_out: "attention.out_lin",
    attn_norm: "sa_layer_norm",
    up: "ffn.lin1",
    down: "ffn.lin2",
    out_norm: "output_layer_norm",
};

/// Reads a DistilBERT `config.json`; the generic names (`hidden_size`, ...) of its
/// `attribute_map` are accepted too.
pub fn distilbert_dims(json: &serde_json::Value, path: &Path) -> Result<EncoderDims> {
    let c = ConfigReader { json, path };
    let either = |a: &str, b: &str| c.usize(a, None).or_else(|e| c.usize(b, None).map_err(|_| e));
    let pad = c.usize("pad_token_id", Some(0))?;
    let dims = EncoderDims {
        vocab_size: c.usize("vocab_size", None)?,
        hidden_size: either("dim", "hidden_size")?,
        num_layers: either("n_layers", "num_hidden_layers")?,
        num_heads: either("n_heads", "num_attention_heads")?,
        intermediate_size: c.usize("hidden_dim", None)?,
        max_position_embeddings: c.usize("max_position_embeddings", None)?,
        type_vocab_size: 0,
        // Fixed in transformers' DistilBERT, not a config field.
        layer_norm_eps: 1e-12,
        activation: c.activation("activation", Activation::GeluErf)?,
        pad_token_id: u32::try_from(pad).map_err(|_| Error::format(path, format!("pad_token_id {pad} is out of range")))?,
        positions: Positions::FromZero,
    };
    dims.validate(path)?;
    Ok(dims)
}

/// Loads a DistilBERT checkpoint (`DistilBertModel` or one of its task heads).
pub fn load_hf(json: &serde_json::Value, path: &Path, w: &Weights, model_type: &str) -> Result<Box<dyn Encoder>> {
    let d = distilbert_dims(json, path)?;
    let kind = EncoderHead::from_config(json);
    let root = body_prefix(w, "distilbert", "embeddings.word_embeddings.weight", kind);
    let h = d.hidden_size;
    let e = |n: &str| format!("{root}embeddings.{n}");
    let embeddings = Embeddings::load(w, &e("word_embeddings.weight"), &e("position_embeddings.weight"), None, &e("LayerNorm"), &d)?;
    let layers = (0..d.num_layers)
        .map(|i| Layer::load(w, &format!("{root}transformer.layer.{i}"), &DISTILBERT_LAYER, &d))
        .collect::<Result<Vec<_>>>()?;
    let (head, labels) = match kind {
        EncoderHead::None => (Head::None, Vec::new()),
        EncoderHead::SequenceClassification => {
            let labels = head_labels(json, path, w, "classifier.weight")?;
            let pre = w.linear("pre_classifier", h, h)?;
            let out = w.linear("classifier", labels.len(), h)?;
            (Head::Sequence { pre: Some((pre, Activation::Relu)), out, on_pooler: false }, labels)
        }
        EncoderHead::TokenClassification => {
            let labels = head_labels(json, path, w, "classifier.weight")?;
            (Head::PerToken(w.linear("classifier", labels.len(), h)?), labels)
        }
        EncoderHead::QuestionAnswering => (Head::PerToken(w.linear("qa_outputs", 2, h)?), Vec::new()),
    };
    Ok(Box::new(BertEncoder::assemble(model_type, json, d, embeddings, layers, None, kind, head, labels)))
}
