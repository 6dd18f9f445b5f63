//! The encoder side of the model zoo: BERT-style models that read a whole (padded) batch of
//! sequences at once and return one hidden state per token, plus the task head the checkpoint
//! was trained with (`*ForSequenceClassification`, `*ForTokenClassification`,
//! `*ForQuestionAnswering`). Pooling, normalisation and the task post-processing live above,
//! in `plinth-tasks`; a model only turns token ids into tensors.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use plinth_core::{Error, Result};

/// Which head a checkpoint carries, from `config.json` `architectures[0]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EncoderHead {
    /// The bare encoder (`BertModel`, sentence-transformers checkpoints, `*ForMaskedLM` bodies).
    None,
    /// One score vector per sequence: `[batch, num_labels]`.
    SequenceClassification,
    /// One score vector per token: `[batch, seq, num_labels]`.
    TokenClassification,
    /// Start and end logits per token: `[batch, seq, 2]`.
    QuestionAnswering,
}

impl EncoderHead {
    /// The head named by `config.json` `architectures[0]`'s suffix. Anything that is not one of
    /// the three task heads (`BertModel`, `*ForMaskedLM`, `*ForPreTraining`, a missing list)
    /// loads as the bare encoder: those heads predict tokens, which no encoder task here uses.
    pub fn from_config(json: &serde_json::Value) -> Self {
        let arch = json.get("architectures").and_then(|a| a.get(0)).and_then(|a| a.as_str()).unwrap_or("");
        if arch.ends_with("ForSequenceClassification") {
            EncoderHead::SequenceClassification
        } else if arch.ends_with("ForTokenClassification") {
            EncoderHead::TokenClassification
        } else if arch.ends_with("ForQuestionAnswering") {
            EncoderHead::QuestionAnswering
        } else {
            EncoderHead::None
        }
    }
}

/// `id2label` from a config in id order, `None` when the config has none. Ids must be
/// `0..n` with none missing, as transformers writes them.
pub fn config_labels(json: &serde_json::Value, path: &Path) -> Result<Option<Vec<String>>> {
    let Some(map) = json.get("id2label").and_then(|v| v.as_object()) else { return Ok(None) };
    let mut labels = vec![None; map.len()];
    for (k, v) in map {
        let slot = k.parse::<usize>().ok().and_then(|i| labels.get_mut(i));
        let (Some(slot), Some(name)) = (slot, v.as_str()) else {
            return Err(Error::format(path, format!("id2label entry '{k}' is not an id in 0..{} with a string label", map.len())));
        };
        *slot = Some(name.to_string());
    }
    // Every slot is filled: `map.len()` distinct keys, each landing in `0..map.len()`.
    Ok(Some(labels.into_iter().flatten().collect()))
}

/// Facts about an encoder that the task layer and the CLI need.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EncoderInfo {
    /// `model_type` (`bert`, `roberta`, `xlm-roberta`, `distilbert`, ...).
    pub architecture: String,
    pub head: EncoderHead,
    /// `id2label` in id order (`LABEL_i` where the config has none); empty for the bare encoder
    /// and for question answering, whose two outputs are the start and end logits.
    pub labels: Vec<String>,
    /// `problem_type` from the config when set (`single_label_classification`,
    /// `multi_label_classification`, `regression`).
    pub problem_type: Option<String>,
    pub vocab_size: usize,
    /// Longest sequence the position table allows, in tokens (RoBERTa's offset already taken
    /// off: 514 positions give 512 tokens).
    pub max_positions: usize,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    /// Whether the model reads token type (segment) ids; sentence pairs need them for BERT.
    pub type_vocab_size: usize,
    pub pad_token_id: u32,
    pub parameters: usize,
}

/// A right-padded batch: `ids`, `type_ids` u32 `[batch, seq]`; `mask` f32 `[batch, seq]`
/// with 1 for real tokens and 0 for padding.
#[derive(Debug, Clone)]
pub struct EncoderBatch {
    pub ids: Tensor,
    pub type_ids: Tensor,
    pub mask: Tensor,
    /// Real (unpadded) length of each row.
    pub lengths: Vec<usize>,
}

impl EncoderBatch {
    /// Pads `seqs` on the right with `pad_id` to the longest row. `type_ids`, when given,
    /// must have the same lengths as `seqs`; otherwise every token has type 0.
    pub fn new(seqs: &[Vec<u32>], type_ids: Option<&[Vec<u32>]>, pad_id: u32) -> Result<Self> {
        if seqs.is_empty() {
            return Err(Error::invalid("encoder batch", "no sequences"));
        }
        let t = seqs.iter().map(Vec::len).max().unwrap_or(0);
        if t == 0 {
            return Err(Error::invalid("encoder batch", "every sequence is empty"));
        }
        let b = seqs.len();
        let mut ids = vec![pad_id; b * t];
        let mut types = vec![0u32; b * t];
        let mut mask = vec![0f32; b * t];
        for (i, s) in seqs.iter().enumerate() {
            ids[i * t..i * t + s.len()].copy_from_slice(s);
            mask[i * t..i * t + s.len()].fill(1.0);
            if let Some(tt) = type_ids {
                let tt = tt.get(i).filter(|tt| tt.len() == s.len()).ok_or_else(|| {
                    Error::invalid("encoder batch", format!("token type ids of row {i} do not match its length {}", s.len()))
                })?;
                types[i * t..i * t + s.len()].copy_from_slice(tt);
            }
        }
        let dev = Device::Cpu;
        Ok(EncoderBatch {
            ids: Tensor::from_vec(ids, (b, t), &dev)?,
            type_ids: Tensor::from_vec(types, (b, t), &dev)?,
            mask: Tensor::from_vec(mask, (b, t), &dev)?,
            lengths: seqs.iter().map(Vec::len).collect(),
        })
    }

    pub fn batch_size(&self) -> usize {
        self.lengths.len()
    }

    pub fn seq_len(&self) -> usize {
        self.ids.dims().get(1).copied().unwrap_or(0)
    }

    /// Whether any position is padding; a batch of equal-length rows needs no attention mask.
    pub fn has_padding(&self) -> Result<bool> {
        Ok(self.mask.flatten_all()?.min(0)?.to_dtype(DType::F32)?.to_scalar::<f32>()? < 1.0)
    }

    /// The additive attention mask `[batch, 1, 1, seq]`: 0 where a key is a real token, a
    /// large negative number where it is padding (not -inf, so that a fully masked row can
    /// never turn into NaN).
    pub fn additive_mask(&self, dtype: DType) -> Result<Tensor> {
        let (b, t) = self.mask.dims2()?;
        Ok(((self.mask.ones_like()? - &self.mask)? * f32::MIN as f64)?.reshape((b, 1, 1, t))?.to_dtype(dtype)?)
    }
}

/// What an encoder returns for a batch.
#[derive(Debug, Clone)]
pub struct EncoderOutput {
    /// Last hidden state `[batch, seq, hidden]` (padding rows included; mask them).
    pub hidden: Tensor,
    /// The head's output (see [`EncoderHead`]); `None` for the bare encoder.
    pub logits: Option<Tensor>,
    /// BERT's pooler output (dense + tanh on the first token) `[batch, hidden]`, where the
    /// checkpoint has a pooler; some sentence-embedding recipes use it.
    pub pooled: Option<Tensor>,
}

/// A BERT-style encoder: a padded batch in, hidden states (and head logits) out.
pub trait Encoder: Send + Sync {
    fn info(&self) -> &EncoderInfo;
    fn forward(&self, batch: &EncoderBatch) -> Result<EncoderOutput>;
}
