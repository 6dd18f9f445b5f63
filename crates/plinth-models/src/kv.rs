//! The per-sequence KV cache. Owned by the engine, lent to the model for each forward pass.
//! Storage grows in chunks and is written in place, so a decode step does not copy the cache.

use candle_core::{DType, Tensor};
use plinth_core::Result;

/// Positions added per growth step: memory grows in blocks of this many positions as a
/// sequence gets longer, instead of being reserved for the maximum length up front.
pub const GROW_BY: usize = 256;

/// What a model with quantized (GGUF) weights stores its cache as: f16, as llama.cpp does,
/// unless `PLINTH_KV_CACHE=f32` (read once). Models with float weights keep f32, so that they
/// stay comparable with their float references.
pub fn quantized_model_kv_dtype() -> DType {
    static DT: std::sync::OnceLock<DType> = std::sync::OnceLock::new();
    *DT.get_or_init(|| if std::env::var("PLINTH_KV_CACHE").is_ok_and(|v| v.eq_ignore_ascii_case("f32")) { DType::F32 } else { DType::F16 })
}

/// Keys and values of every layer for one sequence, layout `[1, kv_heads, positions, head_dim]`.
#[derive(Debug, Clone)]
pub struct KvCache {
    layers: Vec<candle_nn::kv_cache::KvCache>,
    len: usize,
    /// The adapter slot this sequence runs with (`None`: the base model). Models pass it to
    /// their linear layers, so one batch can mix sequences of different adapters.
    pub adapter: Option<usize>,
    /// What keys and values are stored as (`None`: as they come, f32 for every model here).
    dtype: Option<DType>,
}

impl KvCache {
    pub fn new(num_layers: usize) -> Self {
        KvCache { layers: (0..num_layers).map(|_| candle_nn::kv_cache::KvCache::new(2, GROW_BY)).collect(), len: 0, adapter: None, dtype: None }
    }

    /// A cache that stores keys and values as `dtype` (f16 halves the memory a decoded token
    /// reads from the cache; attention widens them back to f32 as it reads).
    pub fn with_dtype(num_layers: usize, dtype: DType) -> Self {
        KvCache { dtype: Some(dtype), ..KvCache::new(num_layers) }
    }

    /// Number of positions cached (the next token's position).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Storage blocks (of [`GROW_BY`] positions) this cache holds.
    pub fn blocks(&self) -> usize {
        if self.len == 0 { 0 } else { self.len.div_ceil(GROW_BY) }
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn reset(&mut self) {
        self.layers.iter_mut().for_each(|l| l.reset());
        self.len = 0;
    }

    /// Checks that `n` new tokens fit after the cached ones within `context` positions and
    /// returns the first new position. Every model's forward pass starts with this.
    pub fn check_room(&self, n: usize, context: usize) -> Result<usize> {
        if n == 0 {
            return Err(plinth_core::Error::invalid("input", "no tokens to run"));
        }
        if self.len + n > context {
            return Err(plinth_core::Error::ContextOverflow { prompt_tokens: self.len + n, context });
        }
        Ok(self.len)
    }

    /// Appends one layer's new keys/values and returns the whole cached keys/values.
    pub fn append(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let cached = match self.dtype {
            Some(dt) if dt != k.dtype() => self.layers[layer].append(&k.to_dtype(dt)?, &v.to_dtype(dt)?)?,
            _ => self.layers[layer].append(k, v)?,
        };
        // The cache copies into its own buffer, which cuts the autodiff graph. A training
        // forward pass runs from an empty cache, where the cached keys and values are exactly
        // the new ones: hand those back so that gradients reach the k/v projections.
        if self.len == 0 && (k.track_op() || v.track_op()) {
            return Ok((k.clone(), v.clone()));
        }
        Ok(cached)
    }

    /// Marks `n` new positions as cached; called once per forward pass after all layers.
    pub fn advance(&mut self, n: usize) {
        self.len += n;
    }
}
