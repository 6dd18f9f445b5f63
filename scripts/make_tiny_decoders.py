"""Tiny random-weight decoders for per-architecture parity tests.

For each architecture this builds a tiny model with transformers (seeded; norm weights and
biases perturbed so a runtime that drops or misplaces one fails), saves `config.json` and
`model.safetensors` under fixtures/tiny-<name>/, and writes `reference.safetensors` with
  input_ids      int64 [1, 24]
  logits         float32 [24, vocab]  one forward over the whole prompt
  logits_decode  float32 [24, vocab]  one token at a time with the KV cache
The Llama config here only feeds the file-handling variants: tiny-llama-sharded (3 shards + index), tiny-llama-bf16
and tiny-llama-f16 (weights stored in bf16/f16; the reference is computed in f32 from the
rounded weights).

Rerun: /path/to/venv/bin/python scripts/make_tiny_decoders.py [--out fixtures] [--only NAME ...]
(packages: scripts/requirements-ref.txt). Deterministic: reruns give identical files.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

import torch
import transformers
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_fixtures import SEED, dtype_kwargs, seed_everything, versions  # noqa: E402

COMMON = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
              initializer_range=0.2, bos_token_id=1, eos_token_id=2, pad_token_id=0)

ARCHS = {
    "llama": ("LlamaConfig", dict(COMMON, rms_norm_eps=1e-5, tie_word_embeddings=False)),
    "llama3": ("LlamaConfig", dict(COMMON, rms_norm_eps=1e-5, tie_word_embeddings=True,
                                   rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                                                    "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                                    "original_max_position_embeddings": 32})),
    "mistral": ("MistralConfig", dict(COMMON, sliding_window=8, rms_norm_eps=1e-5, tie_word_embeddings=False)),
    "qwen2": ("Qwen2Config", dict(COMMON, rms_norm_eps=1e-6, tie_word_embeddings=True, use_sliding_window=False)),
    "qwen3": ("Qwen3Config", dict(COMMON, head_dim=32, rms_norm_eps=1e-6, tie_word_embeddings=True,
                                  use_sliding_window=False)),
    "gemma2": ("Gemma2Config", dict(COMMON, num_hidden_layers=3, head_dim=16, sliding_window=8,
                                    query_pre_attn_scalar=16, attn_logit_softcapping=50.0,
                                    final_logit_softcapping=30.0, hidden_activation="gelu_pytorch_tanh")),
    "gemma3_text": ("Gemma3TextConfig", dict(COMMON, num_hidden_layers=3, head_dim=16, sliding_window=8,
                                             query_pre_attn_scalar=16, rope_local_base_freq=10000.0,
                                             hidden_activation="gelu_pytorch_tanh",
                                             layer_types=["sliding_attention", "full_attention", "sliding_attention"])),
    "phi3": ("Phi3Config", dict(COMMON, rms_norm_eps=1e-5, tie_word_embeddings=False,
                                original_max_position_embeddings=128, rope_scaling=None)),
    "gpt2": ("GPT2Config", dict(vocab_size=256, n_positions=128, n_embd=64, n_layer=2, n_head=4,
                                initializer_range=0.2, activation_function="gelu_new",
                                bos_token_id=1, eos_token_id=2)),
}

SEQ = 24


def build(cfg_name: str, kwargs: dict) -> torch.nn.Module:
    cfg = getattr(transformers, cfg_name)(**kwargs, **dtype_kwargs(torch.float32))
    cfg._attn_implementation = "eager"
    seed_everything(SEED)
    model = transformers.AutoModelForCausalLM.from_config(cfg).to(torch.float32).eval()
    with torch.no_grad():
        g = torch.Generator().manual_seed(SEED + 1)
        for name, p in model.named_parameters():
            # Norms start at exactly 1 (or 0 for Gemma's 1+w) and biases at 0: perturb both.
            if p.dim() == 1:
                p.add_(0.1 * torch.randn(p.shape, generator=g))
    return model


def reference(model: torch.nn.Module, vocab: int) -> dict:
    g = torch.Generator().manual_seed(SEED + 2)
    ids = torch.randint(0, vocab, (1, SEQ), generator=g, dtype=torch.int64)
    with torch.no_grad():
        full = model(input_ids=ids, use_cache=False).logits[0].float()
        past, steps = None, []
        for i in range(SEQ):
            out = model(input_ids=ids[:, i:i + 1], past_key_values=past, use_cache=True)
            past = out.past_key_values
            steps.append(out.logits[0, -1].float())
        dec = torch.stack(steps)
    print(f"  max |full - decode| = {(full - dec).abs().max().item():.3e}, logits std {full.std().item():.3f}")
    return {"input_ids": ids.contiguous(), "logits": full.contiguous(), "logits_decode": dec.contiguous()}


def save(model: torch.nn.Module, d: Path, ref: dict, **save_kwargs) -> None:
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    model.save_pretrained(str(d), **save_kwargs)
    for f in sorted(os.listdir(d)):
        if not (f == "config.json" or f.endswith(".safetensors") or f.endswith(".index.json")):
            os.remove(d / f)
    save_file(ref, str(d / "reference.safetensors"), metadata={"made_by": "scripts/make_tiny_decoders.py; " + versions()})


# HF -> llama.cpp names for the Llama-family layers (mirrors crates/plinth-io/src/names.rs).
GGUF_LAYER_NAMES = {
    "input_layernorm.weight": "attn_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight", "self_attn.q_proj.bias": "attn_q.bias",
    "self_attn.k_proj.weight": "attn_k.weight", "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.weight": "attn_v.weight", "self_attn.v_proj.bias": "attn_v.bias",
    "self_attn.o_proj.weight": "attn_output.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight", "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}


def export_qwen2_gguf(model: torch.nn.Module, path: Path) -> None:
    """The same weights as a llama.cpp-style `qwen2` GGUF (F32; Qwen keeps HF's q/k row order)."""
    import gguf

    cfg = model.config
    w = gguf.GGUFWriter(str(path), "qwen2")
    w.add_name("tiny-qwen2")
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    rope = (getattr(cfg, "rope_parameters", None) or {}).get("rope_theta", getattr(cfg, "rope_theta", 10000.0))
    w.add_rope_freq_base(float(rope))
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_file_type(0)
    sd = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    w.add_tensor("token_embd.weight", sd["model.embed_tokens.weight"])
    w.add_tensor("output_norm.weight", sd["model.norm.weight"])
    if not cfg.tie_word_embeddings:
        w.add_tensor("output.weight", sd["lm_head.weight"])
    for i in range(cfg.num_hidden_layers):
        for hf, g in GGUF_LAYER_NAMES.items():
            key = f"model.layers.{i}.{hf}"
            if key in sd:
                w.add_tensor(f"blk.{i}.{g}", sd[key])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=Path("fixtures"), type=Path)
    ap.add_argument("--only", nargs="*", default=None)
    args = ap.parse_args()
    print(versions())
    for name, (cfg_name, kwargs) in ARCHS.items():
        if args.only and name not in args.only:
            continue
        print(name)
        model = build(cfg_name, kwargs)
        ref = reference(model, model.config.vocab_size)
        if name != "llama":  # fixtures/tiny-llama (with its GGUF copy) comes from make_fixtures.py
            save(model, args.out / f"tiny-{name.replace('_text', '')}", ref)
            if name == "qwen2":
                export_qwen2_gguf(model, args.out / "tiny-qwen2" / "model.gguf")
        else:
            save(model, args.out / "tiny-llama-sharded", ref, max_shard_size="150KB")
            for dt, label in ((torch.bfloat16, "bf16"), (torch.float16, "f16")):
                rounded = build(cfg_name, kwargs)
                with torch.no_grad():
                    for p in rounded.parameters():
                        p.copy_(p.to(dt).to(torch.float32))
                print(f"llama {label}")
                r = reference(rounded, rounded.config.vocab_size)
                save(rounded.to(dt), args.out / f"tiny-llama-{label}", r)


if __name__ == "__main__":
    main()
