//! Checks shared by every architecture's config reader: the size fields that a corrupt or
//! hostile `config.json` / GGUF header could use to size huge buffers.

use std::path::Path;

use plinth_core::{Error, Result};

/// The sizes every decoder has.
pub struct Dims {
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub max_positions: usize,
    pub num_layers: usize,
    pub vocab_size: usize,
}

/// Rejects sizes no real model has: invalid head grouping, head size outside 1..=1024, context
/// beyond 2^21, more than 1024 layers or a vocabulary beyond 2^22 — naming the file.
pub fn check_dims(path: &Path, d: Dims) -> Result<()> {
    let bad = |what: String| Err(Error::format(path, what));
    if d.num_heads == 0 || d.num_kv_heads == 0 || !d.num_heads.is_multiple_of(d.num_kv_heads) {
        return bad(format!("head counts {}/{} are not a valid grouping", d.num_heads, d.num_kv_heads));
    }
    if d.head_dim == 0 || d.head_dim > 1024 {
        return bad(format!("head dimension {} is not in 1..=1024", d.head_dim));
    }
    if d.max_positions == 0 || d.max_positions > 1 << 21 {
        return bad(format!("context length {} is out of range", d.max_positions));
    }
    if d.num_layers == 0 || d.num_layers > 1024 || d.vocab_size == 0 || d.vocab_size > 1 << 22 {
        return bad(format!("{} layers / vocabulary {} are out of range", d.num_layers, d.vocab_size));
    }
    Ok(())
}

/// Rotary embeddings rotate pairs: the rotated size must be even.
pub fn check_even_rotary(path: &Path, dim: usize) -> Result<()> {
    if !dim.is_multiple_of(2) {
        return Err(Error::format(path, format!("rotary dimension {dim} is not even")));
    }
    Ok(())
}
