#!/usr/bin/env python3
"""Reference fixtures for plinth's ModernBERT parity test (crates/plinth-models/tests/
tiny_encoder_parity.rs).

Writes ``encoders/tiny-modernbert[-seqcls|-tokcls|-qa]/`` under --out (default ``fixtures``):
tiny random-weight ModernBERT models saved with transformers' ``save_pretrained`` (float32
safetensors), the tiny-bert WordPiece tokenizer of ``fixtures/encoders/tiny-bert`` (made by
scripts/make_encoder_fixtures.py, which must have run first; ModernBERT's own tokenizer is a
BPE, but the model only sees ids, and a real tokenizer keeps the directories usable end to end),
and ``reference.safetensors`` with the same keys as the other encoder fixtures:

    input_ids, attention_mask, token_type_ids (all zero: ModernBERT has none) int64 [B,T];
    last_hidden_state float32 [B,T,H] (the base model's output, after its final norm);
    logits float32 (seqcls [B,3], tokcls [B,T,9], qa [B,T,2] = start/end stacked).

The models are chosen to exercise everything that differs from BERT: hidden 32, 3 layers with
``layer_types`` full / sliding / full (``global_attn_every_n_layers`` 2), ``local_attention`` 4
(a half-window of 2 tokens, so the longer inputs see the window), different rotary thetas for
global and local layers, the GeGLU MLP, bias-free LayerNorms (and, in the tokcls model, every
optional bias switched on), the prediction head before each task head, and ``mean``
classifier pooling in the seqcls model (``cls`` elsewhere). Every 1-d parameter gets
+ 0.1 * N(0, 1) and the classifier weights are scaled x5, so a runtime that drops one fails.
Eager attention, eval mode, no grad; deterministic.

    .venv-ref/bin/python scripts/make_modernbert_fixture.py [--out fixtures] [--tokenizer fixtures/encoders/tiny-bert]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
import transformers  # noqa: E402

from make_encoder_fixtures import save_safetensors  # noqa: E402  (sorted-header writer, one copy)

INPUTS = [
    ["The quick brown fox jumps over the lazy dog near the river bank.", None],
    ["Where is the station?", "The station is two streets north of the old market square."],
    ["Short one.", None],
    ["Numbers like 42 and 7 are split into pieces, and so are unusual words such as zygote.", None],
]
SEQCLS_LABELS = ["negative", "neutral", "positive"]
TOKCLS_LABELS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]

BASE = dict(
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=3,
    num_attention_heads=4,
    max_position_embeddings=64,
    local_attention=4,
    global_attn_every_n_layers=2,
    global_rope_theta=160000.0,
    local_rope_theta=10000.0,
    initializer_range=0.2,
)

MODELS = {
    "tiny-modernbert": ("ModernBertModel", {}),
    "tiny-modernbert-seqcls": (
        "ModernBertForSequenceClassification",
        dict(num_labels=3, id2label=dict(enumerate(SEQCLS_LABELS)), label2id={l: i for i, l in enumerate(SEQCLS_LABELS)},
             classifier_pooling="mean"),
    ),
    "tiny-modernbert-tokcls": (
        "ModernBertForTokenClassification",
        dict(num_labels=len(TOKCLS_LABELS), id2label=dict(enumerate(TOKCLS_LABELS)),
             label2id={l: i for i, l in enumerate(TOKCLS_LABELS)},
             norm_bias=True, attention_bias=True, mlp_bias=True, classifier_bias=True),
    ),
    "tiny-modernbert-qa": ("ModernBertForQuestionAnswering", dict(num_labels=2)),
}


def encode(tok) -> dict[str, torch.Tensor]:
    encs = [tok(a, b) if b is not None else tok(a) for a, b in INPUTS]
    T = max(len(e["input_ids"]) for e in encs)
    B = len(encs)
    ids = torch.full((B, T), tok.pad_token_id, dtype=torch.int64)
    mask = torch.zeros((B, T), dtype=torch.int64)
    for i, e in enumerate(encs):
        n = len(e["input_ids"])
        ids[i, :n] = torch.tensor(e["input_ids"])
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros((B, T), dtype=torch.int64)}


def build(cls_name: str, kwargs: dict, tok, seed: int) -> torch.nn.Module:
    cfg = transformers.ModernBertConfig(
        **BASE,
        **kwargs,
        vocab_size=len(tok),
        pad_token_id=tok.pad_token_id,
        cls_token_id=tok.cls_token_id,
        sep_token_id=tok.sep_token_id,
        bos_token_id=tok.cls_token_id,
        eos_token_id=tok.sep_token_id,
    )
    cfg._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = getattr(transformers, cls_name)(cfg).to(torch.float32).eval()
    with torch.no_grad():
        g = torch.Generator().manual_seed(seed + 1000)
        for _, p in model.named_parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn(p.shape, generator=g))
        if hasattr(model, "classifier"):
            model.classifier.weight.mul_(5.0)
    return model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("fixtures"))
    ap.add_argument("--tokenizer", type=Path, default=Path("fixtures/encoders/tiny-bert"), help="directory of the tokenizer to reuse")
    args = ap.parse_args()
    tok = transformers.AutoTokenizer.from_pretrained(args.tokenizer)
    batch = encode(tok)
    assert batch["input_ids"].shape[1] > 2 * BASE["local_attention"], "inputs must be longer than the local window"
    for seed, (name, (cls_name, kwargs)) in enumerate(MODELS.items()):
        model = build(cls_name, kwargs, tok, 100 + seed)
        kw = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        with torch.no_grad():
            out = model(**kw)
            base = model if cls_name == "ModernBertModel" else model.model
            hidden = base(**kw).last_hidden_state
        ref = dict(batch, last_hidden_state=hidden)
        if cls_name.endswith("QuestionAnswering"):
            ref["logits"] = torch.stack([out.start_logits, out.end_logits], dim=-1)
        elif cls_name != "ModernBertModel":
            ref["logits"] = out.logits
        d = args.out / "encoders" / name
        d.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(d)
        tok.save_pretrained(d)
        ref = {k: v.detach().contiguous() for k, v in ref.items()}
        save_safetensors(ref, d / "reference.safetensors", {"inputs": json.dumps(INPUTS), "transformers": transformers.__version__})
        # The saved directory must load back to the same numbers.
        again = getattr(transformers, cls_name).from_pretrained(d, attn_implementation="eager").eval()
        with torch.no_grad():
            h2 = (again if cls_name == "ModernBertModel" else again.model)(**kw).last_hidden_state
        assert torch.equal(h2, hidden), name
        print(f"{name}: {sorted(ref)} T={batch['input_ids'].shape[1]} layer_types={model.config.layer_types}")


if __name__ == "__main__":
    main()
