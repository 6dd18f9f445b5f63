//! An encoder checkpoint ready for tasks: the model, its tokenizer, and the
//! sentence-transformers description around it (`modules.json`: where the transformer lives,
//! how token vectors are pooled, whether embeddings are normalised, `max_seq_length`).

use std::path::{Path, PathBuf};

use candle_core::Tensor;
use plinth_core::{Error, Result};
use plinth_models::{Encoder, EncoderBatch, EncoderInfo};
use serde_json::Value as Json;

use crate::text::{Encoded, EncoderTokenizer};

/// How token vectors become one sentence vector (sentence-transformers' `Pooling` modes).
/// Several modes concatenate, in sentence-transformers' order: cls, max, mean, mean_sqrt_len, last token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Pooling {
    pub cls: bool,
    pub max: bool,
    pub mean: bool,
    pub mean_sqrt_len: bool,
    pub last_token: bool,
}

impl Pooling {
    pub const MEAN: Pooling = Pooling { cls: false, max: false, mean: true, mean_sqrt_len: false, last_token: false };
    pub const CLS: Pooling = Pooling { cls: true, max: false, mean: false, mean_sqrt_len: false, last_token: false };

    /// Parses `1_Pooling/config.json`.
    pub fn from_config(path: &Path) -> Result<Self> {
        let j = read_json(path)?;
        // sentence-transformers 6 writes one `pooling_mode` string instead of the flags.
        if let Some(mode) = j.get("pooling_mode").and_then(Json::as_str) {
            return Self::from_name(mode).map_err(|e| Error::format(path, e.to_string()));
        }
        let flag = |k: &str| j.get(k).and_then(Json::as_bool).unwrap_or(false);
        if flag("pooling_mode_weightedmean_tokens") {
            return Err(Error::unsupported(path, "weighted-mean pooling"));
        }
        let p = Pooling {
            cls: flag("pooling_mode_cls_token"),
            max: flag("pooling_mode_max_tokens"),
            mean: flag("pooling_mode_mean_tokens"),
            mean_sqrt_len: flag("pooling_mode_mean_sqrt_len_tokens"),
            last_token: flag("pooling_mode_lasttoken"),
        };
        if p == Pooling::default() {
            return Err(Error::format(path, "no pooling mode is switched on"));
        }
        Ok(p)
    }

    /// Parses a mode name (`mean`, `cls`, `max`, `lasttoken`, `mean_sqrt_len`).
    pub fn from_name(name: &str) -> Result<Self> {
        let mut p = Pooling::default();
        match name.to_ascii_lowercase().replace(['-', '_'], "").as_str() {
            "mean" => p.mean = true,
            "cls" => p.cls = true,
            "max" => p.max = true,
            "lasttoken" | "last" => p.last_token = true,
            "meansqrtlen" => p.mean_sqrt_len = true,
            other => return Err(Error::invalid("pooling", format!("'{other}' (choose mean, cls, max, lasttoken or mean_sqrt_len)"))),
        }
        Ok(p)
    }

    fn modes(&self) -> usize {
        [self.cls, self.max, self.mean, self.mean_sqrt_len, self.last_token].iter().filter(|&&b| b).count()
    }

    /// Pools one row: `tokens` is `[len, hidden]` row-major, real tokens only.
    pub fn pool(&self, tokens: &[f32], hidden: usize) -> Vec<f32> {
        let len = tokens.len() / hidden.max(1);
        let mut out = Vec::with_capacity(hidden * self.modes());
        let row = |i: usize| &tokens[i * hidden..(i + 1) * hidden];
        if self.cls {
            out.extend_from_slice(row(0));
        }
        if self.max {
            let mut m = vec![f32::NEG_INFINITY; hidden];
            for i in 0..len {
                m.iter_mut().zip(row(i)).for_each(|(a, &b)| *a = a.max(b));
            }
            out.extend(m);
        }
        if self.mean || self.mean_sqrt_len {
            let mut s = vec![0f32; hidden];
            for i in 0..len {
                s.iter_mut().zip(row(i)).for_each(|(a, &b)| *a += b);
            }
            if self.mean {
                out.extend(s.iter().map(|v| v / (len as f32).max(1e-9)));
            }
            if self.mean_sqrt_len {
                out.extend(s.iter().map(|v| v / (len as f32).sqrt().max(1e-9)));
            }
        }
        if self.last_token {
            out.extend_from_slice(row(len.saturating_sub(1)));
        }
        out
    }
}

/// L2-normalises in place (as `torch.nn.functional.normalize`, eps 1e-12).
pub fn normalize(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= n);
}

/// A loaded encoder with its tokenizer and sentence-transformers settings.
pub struct EncoderModel {
    pub model: Box<dyn Encoder>,
    pub tokenizer: EncoderTokenizer,
    /// Pooling from `modules.json` (mean for a plain checkpoint, as sentence-transformers does).
    pub pooling: Pooling,
    /// Whether `modules.json` ends in `Normalize`.
    pub normalize: bool,
    /// Where it was loaded from.
    pub dir: PathBuf,
    /// Whether `modules.json` was present.
    pub sentence_transformers: bool,
}

impl std::fmt::Debug for EncoderModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncoderModel").field("dir", &self.dir).field("info", self.model.info()).finish()
    }
}

fn read_json(path: &Path) -> Result<Json> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::format(path, format!("not valid JSON: {e}")))
}

impl EncoderModel {
    /// Loads a Hugging Face encoder directory or a sentence-transformers directory.
    pub fn load(dir: &Path) -> Result<Self> {
        let modules_path = dir.join("modules.json");
        let mut model_dir = dir.to_path_buf();
        let mut pooling = Pooling::MEAN;
        let mut normalize = false;
        let st = modules_path.exists();
        if st {
            let modules = read_json(&modules_path)?;
            let list = modules.as_array().ok_or_else(|| Error::format(&modules_path, "expected a list of modules"))?;
            let mut saw_pooling = false;
            for m in list {
                let ty = m.get("type").and_then(Json::as_str).unwrap_or("");
                let sub = dir.join(m.get("path").and_then(Json::as_str).unwrap_or(""));
                match ty.rsplit('.').next().unwrap_or("") {
                    "Transformer" => model_dir = sub,
                    "Pooling" => {
                        pooling = Pooling::from_config(&sub.join("config.json"))?;
                        saw_pooling = true;
                    }
                    "Normalize" => normalize = true,
                    other => return Err(Error::unsupported(&modules_path, format!("sentence-transformers module '{other}' ({ty})"))),
                }
            }
            if !saw_pooling {
                return Err(Error::format(&modules_path, "no Pooling module"));
            }
        }
        let model = plinth_models::load_encoder(&model_dir)?;
        let info = model.info().clone();
        let max_len = max_seq_length(&model_dir, &info)?;
        let tokenizer = EncoderTokenizer::from_dir(&model_dir, max_len)?;
        Ok(EncoderModel { model, tokenizer, pooling, normalize, dir: dir.to_path_buf(), sentence_transformers: st })
    }

    pub fn info(&self) -> &EncoderInfo {
        self.model.info()
    }

    /// Width of a pooled embedding.
    pub fn embedding_dim(&self) -> usize {
        self.info().hidden_size * self.pooling.modes()
    }

    /// Runs `inputs` through the model in batches of at most `batch_size` rows, longest
    /// first so that each batch pads little, calling `each(input index, hidden [len, H]
    /// row-major over the real tokens, head logits row)` for every input. Logits rows are
    /// `[labels]` for sequence heads and `[len, labels]` for token heads.
    pub fn run(&self, inputs: &[Encoded], batch_size: usize, mut each: impl FnMut(usize, &[f32], Option<&[f32]>)) -> Result<()> {
        let mut order: Vec<usize> = (0..inputs.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(inputs[i].len()));
        let h = self.info().hidden_size;
        for chunk in order.chunks(batch_size.max(1)) {
            let ids: Vec<Vec<u32>> = chunk.iter().map(|&i| inputs[i].get_ids().to_vec()).collect();
            let types: Vec<Vec<u32>> = chunk.iter().map(|&i| inputs[i].get_type_ids().to_vec()).collect();
            // Token types only for models that read them: transformers passes
            // `token_type_ids` only when the tokenizer lists them (BERT), so RoBERTa-style
            // models (one type) and DistilBERT (none) see zeros whatever the post-processor set.
            let types = (self.info().type_vocab_size > 1).then_some(types.as_slice());
            let batch = EncoderBatch::new(&ids, types, self.tokenizer.pad_id())?;
            let t = batch.seq_len();
            let out = self.model.forward(&batch)?;
            let hidden = flat(&out.hidden)?;
            let logits = out.logits.as_ref().map(flat).transpose()?;
            let per_token = out.logits.as_ref().is_some_and(|x| x.rank() == 3);
            for (r, &i) in chunk.iter().enumerate() {
                let len = batch.lengths[r];
                let hrow = &hidden[r * t * h..(r * t + len) * h];
                let lrow = logits.as_ref().map(|l| {
                    let n = l.len() / chunk.len();
                    let row = &l[r * n..(r + 1) * n];
                    // Token heads: keep the real tokens only.
                    if per_token { &row[..len * (n / t)] } else { row }
                });
                each(i, hrow, lrow);
            }
        }
        Ok(())
    }
}

fn flat(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.flatten_all()?.to_dtype(candle_core::DType::F32)?.to_vec1::<f32>()?)
}

/// `max_seq_length` from `sentence_bert_config.json`, else the tokenizer's
/// `model_max_length`, capped by the model's position table.
fn max_seq_length(dir: &Path, info: &EncoderInfo) -> Result<usize> {
    let cap = info.max_positions;
    let from = |file: &str, key: &str| -> Result<Option<usize>> {
        let p = dir.join(file);
        if !p.exists() {
            return Ok(None);
        }
        Ok(read_json(&p)?.get(key).and_then(Json::as_u64).map(|v| v as usize))
    };
    let n = from("sentence_bert_config.json", "max_seq_length")?
        .or(from("tokenizer_config.json", "model_max_length")?.filter(|&n| n < 1_000_000))
        .unwrap_or(cap);
    Ok(n.min(cap))
}
