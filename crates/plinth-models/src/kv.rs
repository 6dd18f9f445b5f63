//! The per-sequence KV cache. Owned by the engine, lent to the model for each forward pass.
//! Storage grows in chunks and is written in place, so a decode step does not copy the cache.

use candle_core::Tensor;
use plinth_core::Result;

/// Positions added per growth step.
const GROW_BY: usize = 256;

/// Keys and values of every layer for one sequence, layout `[1, kv_heads, positions, head_dim]`.
#[derive(Debug, Clone)]
pub struct KvCache {
    layers: Vec<candle_nn::kv_cache::KvCache>,
    len: usize,
}

impl KvCache {
    pub fn new(num_layers: usize) -> Self {
        KvCache { layers: (0..num_layers).map(|_| candle_nn::kv_cache::KvCache::new(2, GROW_BY)).collect(), len: 0 }
    }

    /// Number of positions cached (the next token's position).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn reset(&mut self) {
        self.layers.iter_mut().for_each(|l| l.reset());
        self.len = 0;
    }

    /// Appends one layer's new keys/values and returns the whole cached keys/values.
    pub fn append(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        Ok(self.layers[layer].append(k, v)?)
    }

    /// Marks `n` new positions as cached; called once per forward pass after all layers.
    pub fn advance(&mut self, n: usize) {
        self.len += n;
    }
}
