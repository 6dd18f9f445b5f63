//! Sentence embeddings: tokenize, run the encoder in length-sorted batches, pool, normalise.
//! The numbers match sentence-transformers' `encode` on the same directory
//! (`tests/minilm_reference.rs`: cosine ≥ 0.9999 on 110+ varied sentences).

use plinth_core::{Error, Result};

use crate::model::{normalize, EncoderModel};
use crate::text::{Encoded, Overflow};

/// One input: text, or token ids (OpenAI's token-array form; special tokens are added).
#[derive(Debug, Clone, Copy)]
pub enum EmbedInput<'a> {
    Text(&'a str),
    Ids(&'a [u32]),
}

/// How to embed.
#[derive(Debug, Clone, Copy)]
pub struct EmbedOptions {
    /// L2-normalise; `None` follows the model (`Normalize` in `modules.json`).
    pub normalize: Option<bool>,
    /// Cut over-long inputs (default) or refuse them.
    pub overflow: Overflow,
    /// Rows per forward pass.
    pub batch_size: usize,
    /// Keep only the first `dimensions` values (re-normalised when normalising), for
    /// Matryoshka-trained models and OpenAI's `dimensions` parameter.
    pub dimensions: Option<usize>,
}

impl Default for EmbedOptions {
    fn default() -> Self {
        EmbedOptions { normalize: None, overflow: Overflow::Truncate, batch_size: 32, dimensions: None }
    }
}

/// Embeddings in input order, and the number of tokens read (special tokens included).
#[derive(Debug, Clone)]
pub struct Embeddings {
    pub vectors: Vec<Vec<f32>>,
    pub tokens: usize,
}

impl EncoderModel {
    /// Embeds texts.
    pub fn embed(&self, texts: &[&str], opts: EmbedOptions) -> Result<Embeddings> {
        let inputs: Vec<EmbedInput> = texts.iter().map(|t| EmbedInput::Text(t)).collect();
        self.embed_inputs(&inputs, opts, &mut |_| {})
    }

    /// Tokenizes inputs (validating each: overflow, ids in vocabulary).
    pub fn tokenize_inputs(&self, inputs: &[EmbedInput], overflow: Overflow) -> Result<Vec<Encoded>> {
        inputs
            .iter()
            .enumerate()
            .map(|(i, inp)| {
                let what = || format!("input[{i}]");
                match inp {
                    EmbedInput::Text(t) => self.tokenizer.encode(t, None, overflow, false, &what),
                    EmbedInput::Ids(ids) => self.tokenizer.encode_ids(ids, overflow, &what),
                }
            })
            .collect()
    }

    /// Embeds inputs; `progress(n)` is called after each batch with the rows done so far.
    pub fn embed_inputs(&self, inputs: &[EmbedInput], opts: EmbedOptions, progress: &mut dyn FnMut(usize)) -> Result<Embeddings> {
        self.check_dimensions(opts.dimensions)?;
        let encoded = self.tokenize_inputs(inputs, opts.overflow)?;
        let vectors = self.embed_encoded(&encoded, opts, progress)?;
        Ok(Embeddings { vectors, tokens: encoded.iter().map(Encoded::len).sum() })
    }

    /// Validates OpenAI's `dimensions` against this model.
    pub fn check_dimensions(&self, dimensions: Option<usize>) -> Result<()> {
        match dimensions {
            Some(d) if d == 0 || d > self.embedding_dim() => Err(Error::invalid(
                "dimensions",
                format!("{d} is not between 1 and the model's embedding size {}", self.embedding_dim()),
            )),
            _ => Ok(()),
        }
    }

    /// Embeds already tokenized inputs.
    pub fn embed_encoded(&self, encoded: &[Encoded], opts: EmbedOptions, progress: &mut dyn FnMut(usize)) -> Result<Vec<Vec<f32>>> {
        let mut out = self.pool_encoded(encoded, opts.batch_size, progress)?;
        out.iter_mut().for_each(|v| self.finish(v, &opts));
        Ok(out)
    }

    /// Pooled, not yet normalised or shortened vectors (the batching service applies each
    /// request's options afterwards with [`EncoderModel::finish`]).
    pub fn pool_encoded(&self, encoded: &[Encoded], batch_size: usize, progress: &mut dyn FnMut(usize)) -> Result<Vec<Vec<f32>>> {
        let h = self.info().hidden_size;
        let mut out = vec![Vec::new(); encoded.len()];
        let mut done = 0;
        self.run(encoded, batch_size, |i, hidden, _| {
            out[i] = self.pooling.pool(hidden, h);
            done += 1;
            if done % batch_size.max(1) == 0 || done == encoded.len() {
                progress(done);
            }
        })?;
        Ok(out)
    }

    /// Applies `dimensions` and normalisation to a pooled vector.
    pub fn finish(&self, v: &mut Vec<f32>, opts: &EmbedOptions) {
        if let Some(d) = opts.dimensions {
            v.truncate(d);
        }
        if opts.normalize.unwrap_or(self.normalize) {
            normalize(v);
        }
    }
}

/// Cosine similarity.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb).max(1e-12)
}
