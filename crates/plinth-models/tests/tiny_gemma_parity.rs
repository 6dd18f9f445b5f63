//! Gemma 2 and Gemma 3 (text) logits parity with Hugging Face transformers on tiny
//! random-weight models (fixtures/tiny-gemma2, fixtures/tiny-gemma3, made by
//! scripts/make_tiny_decoders.py): the whole prompt in one pass, and token by token through the
//! KV cache past the sliding window, both within max |Δ| ≤ 1e-4 (f32) of transformers.


mod common;
use common::{check_parity, TOL};


#[test]
fn gemma2_softcaps_sliding_window_four_norms() {
    check_parity("tiny-gemma2", TOL);
}

#[test]
fn gemma3_qk_norm_two_rope_bases() {
    check_parity("tiny-gemma3", TOL);
}
