"""Tiny random-weight encoder-decoder models (Marian, T5 gated-gelu, BART) for seq2seq parity tests.

For each architecture this builds a tiny model with transformers (seeded; every 1-D parameter
-- LayerNorm/RMSNorm weights and biases -- and Marian/BART's `final_logits_bias` perturbed so a
runtime that drops or misplaces one fails), saves it with save_pretrained under
fixtures/tiny-<name>/ (config.json, model.safetensors, generation_config.json; no tokenizer, the
tests feed ids), and writes there
  reference.safetensors
    input_ids                 int64 [2, 12]   row 1 right-padded with pad_token_id
    attention_mask            int64 [2, 12]
    decoder_input_ids         int64 [2, 8]    column 0 = decoder_start_token_id
    encoder_last_hidden_state f32   [2, 12, 32]
    logits                    f32   [2, 8, vocab]  teacher-forced on decoder_input_ids (with the mask)
    greedy                    int64 [2, N]    raw batched generate() output (finished rows padded with pad id)
    greedy_lengths            int64 [2]       row length up to and including the first EOS (else N)
    greedy_0, greedy_1        int64 [n_i]     each row trimmed to its length
    beam_0, beam_1            int64 [n_i]     batched beam search, each row trimmed the same way
    beam_scores               f32   [2]       sequences_scores of the beams
  reference.json   generate kwargs, relevant config fields, EOS-occurred flags, versions.

Rerun: /path/to/venv/bin/python scripts/make_seq2seq_fixtures.py [--out fixtures] [--only NAME ...]
(packages: scripts/requirements-ref.txt). Deterministic: reruns give identical files.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

import torch
import transformers
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_fixtures import SEED, dtype_kwargs, seed_everything, versions, write_json  # noqa: E402

SRC_LEN, TGT_LEN, ROW1_LEN = 12, 8, 8  # row 1 has 8 real source tokens + 4 pads

# init_std 0.2. Caveat: tiny-marian's greedy output is one repeated token for both rows (beam search,
# with no_repeat_ngram_size=2, varies); tiny-bart's greedy output depends on the input.
COMMON_BART_LIKE = dict(d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                        decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64,
                        max_position_embeddings=64, init_std=0.2, dropout=0.0, attention_dropout=0.0,
                        activation_dropout=0.0, activation_function="gelu")

ARCHS = {
    # opus-mt style: pad = last id = decoder start, eos 0, sinusoidal positions (not stored),
    # scaled embeddings, shared + tied embeddings, generate bans the pad token.
    "marian": ("MarianConfig", "MarianMTModel",
               dict(COMMON_BART_LIKE, vocab_size=128, decoder_vocab_size=128, activation_function="swish",
                    pad_token_id=127, eos_token_id=0, bos_token_id=None, decoder_start_token_id=127,
                    forced_eos_token_id=0, scale_embedding=True, share_encoder_decoder_embeddings=True,
                    tie_word_embeddings=True, normalize_before=False),
               dict(bad_words_ids=[[127]])),
    # flan-t5 style: gated-gelu (gelu_new), untied lm_head (so no d_model**-0.5 rescale), relative
    # position buckets; pad 0 = decoder start, eos 1. initializer_factor 2 (T5's own fan-in scaled
    # init, doubled). transformers 5 forces T5Config.tie_word_embeddings=True (turning the kwarg into
    # scale_decoder_outputs=False), so build() unties lm_head by hand with std T5_LM_HEAD_STD and
    # writes tie_word_embeddings=false back, as a flan-t5 checkpoint has it.
    "t5": ("T5Config", "T5ForConditionalGeneration",
           dict(vocab_size=128, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=4,
                relative_attention_num_buckets=32, relative_attention_max_distance=128,
                feed_forward_proj="gated-gelu", dropout_rate=0.0, layer_norm_epsilon=1e-6,
                initializer_factor=2.0, tie_word_embeddings=False, pad_token_id=0, eos_token_id=1,
                decoder_start_token_id=0),
           dict()),
    # The same T5 with T5's own init (initializer_factor 1). tiny-t5's doubled init makes its decoder
    # residual stream reach ~90 before the final norm, so f32 implementations (transformers' own
    # included: 1.3e-4 from an f64 run) cannot agree to 1e-4 on its logits; this one is for the 1e-4
    # logits bar, tiny-t5 for generation (it has a beam that ends on a chosen EOS).
    "t5-calm": ("T5Config", "T5ForConditionalGeneration",
                dict(vocab_size=128, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=4,
                     relative_attention_num_buckets=32, relative_attention_max_distance=128,
                     feed_forward_proj="gated-gelu", dropout_rate=0.0, layer_norm_epsilon=1e-6,
                     initializer_factor=1.0, tie_word_embeddings=False, pad_token_id=0, eos_token_id=1,
                     decoder_start_token_id=0),
                dict()),
    # bart-large-cnn style: bos 0, pad 1, eos 2 = decoder start, forced BOS first and forced EOS last,
    # learned positions with offset 2, layernorm_embedding, tied embeddings + final_logits_bias.
    "bart": ("BartConfig", "BartForConditionalGeneration",
             dict(COMMON_BART_LIKE, vocab_size=128, bos_token_id=0, pad_token_id=1, eos_token_id=2,
                  decoder_start_token_id=2, forced_bos_token_id=0, forced_eos_token_id=2,
                  scale_embedding=False, tie_word_embeddings=True),
             dict()),
}

T5_LM_HEAD_STD = 0.5

GREEDY_KW = dict(max_new_tokens=10, do_sample=False, num_beams=1)
BEAM_KW = dict(max_new_tokens=10, do_sample=False, num_beams=3, length_penalty=1.0, no_repeat_ngram_size=2,
               early_stopping=True)

CONFIG_FIELDS = ["model_type", "vocab_size", "decoder_vocab_size", "d_model", "d_kv", "d_ff", "num_layers",
                 "num_decoder_layers", "num_heads", "encoder_layers", "decoder_layers", "encoder_attention_heads",
                 "decoder_attention_heads", "encoder_ffn_dim", "decoder_ffn_dim", "max_position_embeddings",
                 "activation_function", "feed_forward_proj", "dense_act_fn", "is_gated_act", "layer_norm_epsilon",
                 "relative_attention_num_buckets", "relative_attention_max_distance", "scale_embedding",
                 "normalize_before", "add_final_layer_norm", "share_encoder_decoder_embeddings",
                 "tie_word_embeddings", "pad_token_id", "eos_token_id", "bos_token_id", "decoder_start_token_id",
                 "forced_bos_token_id", "forced_eos_token_id"]


def special_ids(cfg) -> set[int]:
    return {i for i in (cfg.pad_token_id, cfg.eos_token_id, getattr(cfg, "bos_token_id", None),
                        cfg.decoder_start_token_id) if i is not None}


def build(cfg_name: str, model_name: str, kwargs: dict, gen_extra: dict) -> torch.nn.Module:
    cfg = getattr(transformers, cfg_name)(**kwargs, **dtype_kwargs(torch.float32))
    cfg._attn_implementation = "eager"
    seed_everything(SEED)
    model = getattr(transformers, model_name)(cfg).to(torch.float32).eval()
    with torch.no_grad():
        g = torch.Generator().manual_seed(SEED + 1)
        for _, p in model.named_parameters():
            # Norm weights start at exactly 1 and biases at 0: perturb both.
            if p.dim() == 1:
                p.add_(0.1 * torch.randn(p.shape, generator=g))
        if hasattr(model, "final_logits_bias"):
            b = model.final_logits_bias
            b.add_(0.1 * torch.randn(b.shape, generator=g))
        if cfg.model_type == "t5":
            w = T5_LM_HEAD_STD * torch.randn(model.lm_head.weight.shape, generator=g)
            model.lm_head.weight = torch.nn.Parameter(w)
            model.all_tied_weights_keys.pop("lm_head.weight", None)
            model.config.tie_word_embeddings = False
            assert model.lm_head.weight.data_ptr() != model.shared.weight.data_ptr()
            assert model.config.scale_decoder_outputs is False
    gen_fields = {k: kwargs.get(k) for k in ("decoder_start_token_id", "pad_token_id", "eos_token_id",
                                              "bos_token_id", "forced_bos_token_id", "forced_eos_token_id")}
    model.generation_config = transformers.GenerationConfig(
        **{k: v for k, v in gen_fields.items() if v is not None}, **gen_extra)
    return model


def make_inputs(cfg) -> dict:
    g = torch.Generator().manual_seed(SEED + 2)
    vocab, special = cfg.vocab_size, special_ids(cfg)
    normal = torch.tensor([i for i in range(vocab) if i not in special], dtype=torch.int64)

    def draw(n):
        return normal[torch.randint(0, len(normal), (n,), generator=g)]

    bos = getattr(cfg, "bos_token_id", None) if cfg.model_type == "bart" else None
    rows, masks = [], []
    for n in (SRC_LEN, ROW1_LEN):
        body = draw(n - 1 - (bos is not None))
        seq = torch.cat([torch.tensor([bos]) if bos is not None else torch.tensor([], dtype=torch.int64),
                         body, torch.tensor([cfg.eos_token_id])])
        pad = torch.full((SRC_LEN - n,), cfg.pad_token_id, dtype=torch.int64)
        rows.append(torch.cat([seq, pad]))
        masks.append(torch.cat([torch.ones(n, dtype=torch.int64), torch.zeros(SRC_LEN - n, dtype=torch.int64)]))
    dec = torch.stack([torch.cat([torch.tensor([cfg.decoder_start_token_id]), draw(TGT_LEN - 1)]) for _ in range(2)])
    return {"input_ids": torch.stack(rows), "attention_mask": torch.stack(masks), "decoder_input_ids": dec}


def trim(seqs: torch.Tensor, eos: int) -> tuple[list[torch.Tensor], list[int], list[bool]]:
    out, lens, hit = [], [], []
    for row in seqs:
        pos = (row[1:] == eos).nonzero()  # column 0 is the decoder start token
        n = int(pos[0, 0]) + 2 if len(pos) else row.numel()
        out.append(row[:n].clone().contiguous())
        lens.append(n)
        hit.append(bool(len(pos)))
    return out, lens, hit


def reference(model) -> tuple[dict, dict]:
    cfg = model.config
    inp = make_inputs(cfg)
    with torch.no_grad():
        out = model(input_ids=inp["input_ids"], attention_mask=inp["attention_mask"],
                    decoder_input_ids=inp["decoder_input_ids"], use_cache=False)
        greedy = model.generate(input_ids=inp["input_ids"], attention_mask=inp["attention_mask"], **GREEDY_KW)
        beam = model.generate(input_ids=inp["input_ids"], attention_mask=inp["attention_mask"],
                              return_dict_in_generate=True, output_scores=True, **BEAM_KW)
    eos = cfg.eos_token_id
    g_rows, g_lens, g_eos = trim(greedy, eos)
    b_rows, b_lens, b_eos = trim(beam.sequences, eos)
    full = 1 + GREEDY_KW["max_new_tokens"]
    forced = getattr(model.generation_config, "forced_eos_token_id", None) is not None
    # EOS in the last slot with forced_eos_token_id set is forced by the logits processor, not chosen.
    g_nat = [h and not (forced and n == full) for h, n in zip(g_eos, g_lens)]
    b_nat = [h and not (forced and n == full) for h, n in zip(b_eos, b_lens)]
    ref = dict(inp)
    ref["encoder_last_hidden_state"] = out.encoder_last_hidden_state.float().contiguous()
    ref["logits"] = out.logits.float().contiguous()
    ref["greedy"] = greedy.contiguous()
    ref["greedy_lengths"] = torch.tensor(g_lens, dtype=torch.int64)
    for i in range(2):
        ref[f"greedy_{i}"] = g_rows[i]
        ref[f"beam_{i}"] = b_rows[i]
    ref["beam_scores"] = beam.sequences_scores.float().contiguous()
    info = {"greedy_eos": g_eos, "beam_eos": b_eos, "greedy_eos_natural": g_nat, "beam_eos_natural": b_nat, "greedy": [r.tolist() for r in g_rows],
            "beam": [r.tolist() for r in b_rows], "beam_scores": [round(float(s), 6) for s in beam.sequences_scores]}
    print(f"  logits std {ref['logits'].std().item():.3f}, enc std {ref['encoder_last_hidden_state'].std().item():.3f}")
    print(f"  greedy {info['greedy']} eos {g_eos} natural {g_nat}")
    print(f"  beam   {info['beam']} eos {b_eos} natural {b_nat}")
    return ref, info


def save(model, d: Path, ref: dict, info: dict) -> None:
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    model.save_pretrained(str(d))
    for f in sorted(os.listdir(d)):
        if f not in ("config.json", "model.safetensors", "generation_config.json"):
            os.remove(d / f)
    save_file(ref, str(d / "reference.safetensors"),
              metadata={"made_by": "scripts/make_seq2seq_fixtures.py; " + versions()})
    cfg = model.config
    from safetensors import safe_open

    with safe_open(str(d / "model.safetensors"), "pt") as f:
        stored = sorted(f.keys())
    write_json(d / "reference.json", {
        "made_by": "scripts/make_seq2seq_fixtures.py",
        "versions": versions(),
        "seed": SEED,
        "model_class": type(model).__name__,
        "config": {k: getattr(cfg, k) for k in CONFIG_FIELDS if hasattr(cfg, k)},
        "generation_config": model.generation_config.to_diff_dict(),
        "has_final_logits_bias": hasattr(model, "final_logits_bias"),
        "stored_tensors": stored,
        "generate": {"greedy": GREEDY_KW, "beam": dict(BEAM_KW, num_return_sequences=1)},
        "generate_call": "model.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs) "
                         "on the whole [2, 12] batch; generation_config.json supplies the special ids",
        "reference_tensors": {k: [str(v.dtype).replace("torch.", ""), list(v.shape)] for k, v in ref.items()},
        "results": info,
    })


def check_reload(model_name: str, d: Path, ref: dict) -> None:
    """from_pretrained on the saved directory reproduces the reference logits exactly."""
    m = getattr(transformers, model_name).from_pretrained(str(d), attn_implementation="eager",
                                                    **dtype_kwargs(torch.float32)).eval()
    with torch.no_grad():
        lg = m(input_ids=ref["input_ids"], attention_mask=ref["attention_mask"],
               decoder_input_ids=ref["decoder_input_ids"], use_cache=False).logits
    diff = (lg - ref["logits"]).abs().max().item()
    print(f"  reload max |diff| = {diff:.3e}")
    assert diff < 1e-5, diff


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=Path("fixtures"), type=Path)
    ap.add_argument("--only", nargs="*", default=None)
    args = ap.parse_args()
    print(versions())
    for name, (cfg_name, model_name, kwargs, gen_extra) in ARCHS.items():
        if args.only and name not in args.only:
            continue
        print(name)
        model = build(cfg_name, model_name, kwargs, gen_extra)
        ref, info = reference(model)
        save(model, args.out / f"tiny-{name}", ref, info)
        check_reload(model_name, args.out / f"tiny-{name}", ref)


if __name__ == "__main__":
    main()
