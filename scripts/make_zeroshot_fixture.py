#!/usr/bin/env python3
"""Zero-shot classification reference: a tiny random-weight BERT NLI checkpoint and the outputs
of transformers 4.x's ZeroShotClassificationPipeline on it.

Writes
  fixtures/encoders/tiny-bert-nli/   BertForSequenceClassification, id2label {0: contradiction,
                                     1: neutral, 2: entailment}, the WordPiece tokenizer of
                                     fixtures/encoders/tiny-bert-seqcls (copied), 64 positions
  fixtures/encoders/zeroshot.json    pipeline outputs ({labels, scores}, best first) for texts x
                                     label sets, single- and multi-label, default and custom
                                     hypothesis templates; one text is longer than the model's 64
                                     tokens so that the pipeline's truncation="only_first" matters

The weights are random (seeded), so the scores mean nothing; they only have to be reproduced.
As in make_encoder_fixtures.py, 1-D parameters are perturbed and the classifier is scaled x5 so
that scores differ clearly between labels.

Run with the transformers 4 packages in front of the reference venv (torch, numpy):
    PYTHONPATH=/work/tf4 /work/refvenv/bin/python scripts/make_zeroshot_fixture.py
(see fixtures/encoders/README.md for installing scripts/requirements-ref-tf4.txt into a directory).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import tokenizers  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification, pipeline  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
ENC = ROOT / "fixtures" / "encoders"
TOKENIZER_FROM = ENC / "tiny-bert-seqcls"
OUT_DIR = ENC / "tiny-bert-nli"
OUT_JSON = ENC / "zeroshot.json"
SEED = 4242

LABELS = ["contradiction", "neutral", "entailment"]
CFG = dict(vocab_size=800, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
           max_position_embeddings=64, type_vocab_size=2, initializer_range=0.2, hidden_act="gelu",
           layer_norm_eps=1e-12, pad_token_id=0, num_labels=3, id2label=dict(enumerate(LABELS)),
           label2id={l: i for i, l in enumerate(LABELS)})

TEXTS = [
    "The striker scored twice in the final minutes and the crowd went wild.",
    "Whisk the eggs with sugar, then fold in the flour and bake for twenty minutes.",
    "The parliament voted on the new budget after a long debate.",
    "Café déjà vu — a naïve test with accents and an em dash.",
    # Longer than the model's 64 tokens with any hypothesis: the pipeline cuts the text
    # (only_first), never the hypothesis.
    "The committee, after reviewing the proposal in detail and hearing from several experts, "
    "decided that the project should be postponed until the next financial year, because the "
    "costs of the new building had risen sharply and the town council wanted more time to find "
    "other sources of money, such as grants from the region or a loan from the national bank.",
]
LABEL_SETS = [
    ["sports", "cooking", "politics"],
    ["positive", "negative"],
    ["technology", "food", "travel", "music", "a very long label about the weather in the mountains"],
    # One label: the pipeline then scores entailment vs contradiction even when multi_label=False.
    ["urgent"],
]
TEMPLATES = [None, "The topic of this text is {}."]


def versions() -> dict:
    return {"transformers": transformers.__version__, "tokenizers": tokenizers.__version__,
            "torch": torch.__version__, "numpy": np.__version__, "python": sys.version.split()[0]}


def build_model() -> BertForSequenceClassification:
    torch.manual_seed(SEED)
    cfg = BertConfig(**CFG)
    cfg._attn_implementation = "eager"
    model = BertForSequenceClassification(cfg).to(torch.float32).eval()
    with torch.no_grad():
        g = torch.Generator().manual_seed(SEED + 1000)
        for _, p in model.named_parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn(p.shape, generator=g))
        model.classifier.weight.mul_(5.0)
    return model


def main() -> None:
    assert transformers.__version__.startswith("4."), f"needs transformers 4.x, got {transformers.__version__}"
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    model = build_model()
    if OUT_DIR.exists():
        shutil.rmtree(OUT_DIR)
    OUT_DIR.mkdir(parents=True)
    model.save_pretrained(str(OUT_DIR), safe_serialization=True)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(TOKENIZER_FROM / f, OUT_DIR / f)
    for f in sorted(os.listdir(OUT_DIR)):
        if f not in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
            os.remove(OUT_DIR / f)

    tok = AutoTokenizer.from_pretrained(str(OUT_DIR))
    assert tok.is_fast and tok.model_max_length == 64, tok
    reloaded = transformers.AutoModelForSequenceClassification.from_pretrained(str(OUT_DIR)).eval()
    clf = pipeline("zero-shot-classification", model=reloaded, tokenizer=tok, device="cpu")
    assert clf.entailment_id == 2, clf.entailment_id

    cases = []
    long_cut = False
    for text in TEXTS:
        for labels in LABEL_SETS:
            for template in TEMPLATES:
                for multi in (False, True):
                    if len(labels) == 1 and multi:
                        continue  # the same computation as multi_label=False for one label
                    kw = {"multi_label": multi}
                    if template is not None:
                        kw["hypothesis_template"] = template
                    out = clf(text, candidate_labels=labels, **kw)
                    cases.append({"text": text, "candidate_labels": labels, "multi_label": multi,
                                  "hypothesis_template": template,
                                  "labels": out["labels"], "scores": [float(s) for s in out["scores"]]})
        if len(tok(text)["input_ids"]) > 64:
            long_cut = True
    assert long_cut, "no text is longer than the model"

    spread = [max(c["scores"]) - min(c["scores"]) for c in cases if len(c["scores"]) > 1 and not c["multi_label"]]
    print(f"{len(cases)} cases; single-label best-worst score spread min {min(spread):.3f} "
          f"median {sorted(spread)[len(spread) // 2]:.3f}")
    doc = {"made_by": "scripts/make_zeroshot_fixture.py", "versions": versions(), "model": "tiny-bert-nli",
           "default_hypothesis_template": "This example is {}.", "cases": cases}
    OUT_JSON.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {OUT_DIR.relative_to(ROOT)} and {OUT_JSON.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
