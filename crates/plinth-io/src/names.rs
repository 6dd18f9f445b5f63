//! The one table that maps llama.cpp's GGUF tensor names to Hugging Face tensor names. Model
//! code asks for weights by their Hugging Face names only; a GGUF file is read through this
//! table, so the same model file serves both formats.

/// `(gguf, hf)` patterns; `{}` stands for the layer index.
const DECODER_NAMES: &[(&str, &str)] = &[
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
];

fn translate(name: &str, from_gguf: bool) -> Option<String> {
    for &(gguf, hf) in DECODER_NAMES {
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

/// GGUF name -> Hugging Face name, `None` for names outside the table.
pub fn gguf_to_hf(name: &str) -> Option<String> {
    translate(name, true)
}

/// Hugging Face name -> GGUF name, `None` for names outside the table.
pub fn hf_to_gguf(name: &str) -> Option<String> {
    translate(name, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_both_ways_with_layer_index() {
        assert_eq!(gguf_to_hf("blk.12.attn_q.weight").as_deref(), Some("model.layers.12.self_attn.q_proj.weight"));
        assert_eq!(hf_to_gguf("model.layers.3.mlp.down_proj.weight").as_deref(), Some("blk.3.ffn_down.weight"));
        assert_eq!(gguf_to_hf("output.weight").as_deref(), Some("lm_head.weight"));
        for &(g, h) in DECODER_NAMES {
            let (g, h) = (g.replace("{}", "7"), h.replace("{}", "7"));
            assert_eq!(gguf_to_hf(&g), Some(h.clone()));
            assert_eq!(hf_to_gguf(&h), Some(g));
        }
    }

    #[test]
    fn rejects_non_numeric_layer_and_unknown_names() {
        assert_eq!(gguf_to_hf("blk.x.attn_q.weight"), None);
        assert_eq!(gguf_to_hf("blk..attn_q.weight"), None);
        assert_eq!(gguf_to_hf("rope_freqs.weight"), None);
    }
}
