//! The one table that maps llama.cpp's GGUF tensor names to Hugging Face tensor names. Model
//! code asks for weights by their Hugging Face names only; a GGUF file is read through this
//! table, so the same model file serves both formats.
//!
//! Most decoders share llama.cpp's Llama names ([`DECODER_NAMES`]); an architecture whose HF
//! names or GGUF names differ has its own rows, which are consulted first.

/// `(gguf, hf)` patterns; `{}` stands for the layer index.
pub const DECODER_NAMES: &[(&str, &str)] = &[
    ("token_embd.weight", "model.embed_tokens.weight"),
    ("output_norm.weight", "model.norm.weight"),
    ("output.weight", "lm_head.weight"),
    ("blk.{}.attn_norm.weight", "model.layers.{}.input_layernorm.weight"),
    ("blk.{}.attn_q.weight", "model.layers.{}.self_attn.q_proj.weight"),
    ("blk.{}.attn_k.weight", "model.layers.{}.self_attn.k_proj.weight"),
    ("blk.{}.attn_v.weight", "model.layers.{}.self_attn.v_proj.weight"),
    ("blk.{}.attn_q.bias", "model.layers.{}.self_attn.q_proj.bias"),
    ("blk.{}.attn_k.bias", "model.layers.{}.self_attn.k_proj.bias"),
    ("blk.{}.attn_v.bias", "model.layers.{}.self_attn.v_proj.bias"),
    ("blk.{}.attn_output.weight", "model.layers.{}.self_attn.o_proj.weight"),
    ("blk.{}.ffn_norm.weight", "model.layers.{}.post_attention_layernorm.weight"),
    ("blk.{}.ffn_gate.weight", "model.layers.{}.mlp.gate_proj.weight"),
    ("blk.{}.ffn_up.weight", "model.layers.{}.mlp.up_proj.weight"),
    ("blk.{}.ffn_down.weight", "model.layers.{}.mlp.down_proj.weight"),
    ("blk.{}.attn_q_norm.weight", "model.layers.{}.self_attn.q_norm.weight"),
    ("blk.{}.attn_k_norm.weight", "model.layers.{}.self_attn.k_norm.weight"),
];

/// Gemma 2/3: four norms per layer; llama.cpp's `ffn_norm` is Gemma's pre-feed-forward norm.
pub const GEMMA_NAMES: &[(&str, &str)] = &[
    ("blk.{}.post_attention_norm.weight", "model.layers.{}.post_attention_layernorm.weight"),
    ("blk.{}.ffn_norm.weight", "model.layers.{}.pre_feedforward_layernorm.weight"),
    ("blk.{}.post_ffw_norm.weight", "model.layers.{}.post_feedforward_layernorm.weight"),
];

/// Phi-3: fused q/k/v and fused gate/up projections.
pub const PHI3_NAMES: &[(&str, &str)] = &[
    ("blk.{}.attn_qkv.weight", "model.layers.{}.self_attn.qkv_proj.weight"),
    ("blk.{}.ffn_up.weight", "model.layers.{}.mlp.gate_up_proj.weight"),
];

/// GPT-2: its own HF names (`transformer.*`), biases everywhere, learned positions.
pub const GPT2_NAMES: &[(&str, &str)] = &[
    ("token_embd.weight", "transformer.wte.weight"),
    ("position_embd.weight", "transformer.wpe.weight"),
    ("output_norm.weight", "transformer.ln_f.weight"),
    ("output_norm.bias", "transformer.ln_f.bias"),
    ("output.weight", "lm_head.weight"),
    ("blk.{}.attn_norm.weight", "transformer.h.{}.ln_1.weight"),
    ("blk.{}.attn_norm.bias", "transformer.h.{}.ln_1.bias"),
    ("blk.{}.attn_qkv.weight", "transformer.h.{}.attn.c_attn.weight"),
    ("blk.{}.attn_qkv.bias", "transformer.h.{}.attn.c_attn.bias"),
    ("blk.{}.attn_output.weight", "transformer.h.{}.attn.c_proj.weight"),
    ("blk.{}.attn_output.bias", "transformer.h.{}.attn.c_proj.bias"),
    ("blk.{}.ffn_norm.weight", "transformer.h.{}.ln_2.weight"),
    ("blk.{}.ffn_norm.bias", "transformer.h.{}.ln_2.bias"),
    ("blk.{}.ffn_up.weight", "transformer.h.{}.mlp.c_fc.weight"),
    ("blk.{}.ffn_up.bias", "transformer.h.{}.mlp.c_fc.bias"),
    ("blk.{}.ffn_down.weight", "transformer.h.{}.mlp.c_proj.weight"),
    ("blk.{}.ffn_down.bias", "transformer.h.{}.mlp.c_proj.bias"),
];

/// The tables consulted for a GGUF `general.architecture`, most specific first.
fn tables(arch: &str) -> &'static [&'static [(&'static str, &'static str)]] {
    match arch {
        "gemma2" | "gemma3" => &[GEMMA_NAMES, DECODER_NAMES],
        "phi3" => &[PHI3_NAMES, DECODER_NAMES],
        "gpt2" => &[GPT2_NAMES],
        _ => &[DECODER_NAMES],
    }
}

fn translate(arch: &str, name: &str, from_gguf: bool) -> Option<String> {
    for &(gguf, hf) in tables(arch).iter().flat_map(|t| t.iter()) {
        let (src, dst) = if from_gguf { (gguf, hf) } else { (hf, gguf) };
        match src.split_once("{}") {
            None if name == src => return Some(dst.to_string()),
            None => {}
            Some((pre, post)) => {
                let Some(mid) = name.strip_prefix(pre).and_then(|r| r.strip_suffix(post)) else { continue };
                if !mid.is_empty() && mid.bytes().all(|b| b.is_ascii_digit()) {
                    return Some(dst.replacen("{}", mid, 1));
                }
            }
        }
    }
    None
}

/// GGUF name -> Hugging Face name for a GGUF architecture, `None` outside the table.
pub fn gguf_to_hf(arch: &str, name: &str) -> Option<String> {
    translate(arch, name, true)
}

/// Hugging Face name -> GGUF name for a GGUF architecture, `None` outside the table.
pub fn hf_to_gguf(arch: &str, name: &str) -> Option<String> {
    translate(arch, name, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_both_ways_with_layer_index() {
        assert_eq!(gguf_to_hf("llama", "blk.12.attn_q.weight").as_deref(), Some("model.layers.12.self_attn.q_proj.weight"));
        assert_eq!(hf_to_gguf("llama", "model.layers.3.mlp.down_proj.weight").as_deref(), Some("blk.3.ffn_down.weight"));
        assert_eq!(gguf_to_hf("llama", "output.weight").as_deref(), Some("lm_head.weight"));
        for arch in ["llama", "qwen2", "gemma2", "phi3", "gpt2"] {
            for &(g, h) in tables(arch).iter().flat_map(|t| t.iter()) {
                let (g, h) = (g.replace("{}", "7"), h.replace("{}", "7"));
                // Specific rows shadow shared ones, so look the pair up through the same order.
                let hf = gguf_to_hf(arch, &g).unwrap();
                assert_eq!(hf_to_gguf(arch, &hf), Some(g.clone()), "{arch}: {g} -> {hf}");
                let _ = h;
            }
        }
    }

    #[test]
    fn rejects_non_numeric_layer_and_unknown_names() {
        assert_eq!(gguf_to_hf("llama", "blk.x.attn_q.weight"), None);
        assert_eq!(gguf_to_hf("llama", "blk..attn_q.weight"), None);
        assert_eq!(gguf_to_hf("llama", "rope_freqs.weight"), None);
        // Gemma's ffn_norm is not Llama's post-attention norm.
        assert_eq!(gguf_to_hf("gemma2", "blk.0.ffn_norm.weight").as_deref(), Some("model.layers.0.pre_feedforward_layernorm.weight"));
    }
}
