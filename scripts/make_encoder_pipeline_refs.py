#!/usr/bin/env python3
"""transformers 4.x pipeline references for the tiny encoders (part of make_encoder_fixtures.py).

transformers 5 dropped the question-answering pipeline, so the pipeline references come from
transformers 4.x.  make_encoder_fixtures.py runs this script as a subprocess with
PYTHONPATH=<dir with the packages of scripts/requirements-ref-tf4.txt> in front of the reference
venv (whose torch and numpy it uses), passes the texts and pipeline parameters as a JSON spec,
and adds the cross-encoder reference before writing fixtures/encoders/pipelines.json.

Before running the pipelines it checks that transformers 4 reads every tiny model directory
(written by transformers 5) to the same token ids and outputs as reference.safetensors.

Standalone use (normally not needed):
    PYTHONPATH=/tmp/tf4 .venv-ref/bin/python scripts/make_encoder_pipeline_refs.py \\
        --encoders fixtures/encoders --spec spec.json --out part.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import tokenizers  # noqa: E402
import transformers  # noqa: E402
from safetensors import safe_open  # noqa: E402
from transformers import AutoTokenizer, pipeline  # noqa: E402

torch.use_deterministic_algorithms(True)
torch.set_num_threads(1)
torch.manual_seed(0)


def tf4_versions() -> dict:
    import huggingface_hub
    import safetensors

    return {"transformers": transformers.__version__, "tokenizers": tokenizers.__version__,
            "huggingface_hub": huggingface_hub.__version__, "torch": torch.__version__,
            "numpy": np.__version__, "safetensors": safetensors.__version__,
            "python": sys.version.split()[0]}


def py(x):
    """numpy scalars/arrays -> plain Python for JSON."""
    if isinstance(x, dict):
        return {k: py(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [py(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return x


def check_model_dir(d: Path, ref_inputs: list) -> None:
    """transformers 4 must tokenize REF_INPUTS and run the model exactly like reference.safetensors says."""
    with safe_open(str(d / "reference.safetensors"), "pt") as f:
        ref = {k: f.get_tensor(k) for k in f.keys()}
        meta = f.metadata()
    assert json.loads(meta["inputs"]) == ref_inputs, d
    tok = AutoTokenizer.from_pretrained(str(d))
    assert tok.is_fast, d
    ids = ref["input_ids"]
    for i, (a, b) in enumerate(ref_inputs):
        e = tok(a, b) if b is not None else tok(a)
        n = int(ref["attention_mask"][i].sum())
        assert e["input_ids"] == ids[i, :n].tolist(), (d, i, e["input_ids"], ids[i, :n].tolist())
        if "token_type_ids" in e and ref["token_type_ids"].any():
            assert e["token_type_ids"] == ref["token_type_ids"][i, :n].tolist(), (d, i)
    cfg = transformers.AutoConfig.from_pretrained(str(d))
    arch = cfg.architectures[0]
    cls = getattr(transformers, arch)
    model = cls.from_pretrained(str(d), attn_implementation="eager").eval()
    kw = {"input_ids": ids, "attention_mask": ref["attention_mask"]}
    if cfg.model_type == "bert":
        kw["token_type_ids"] = ref["token_type_ids"]
    with torch.no_grad():
        out = model(**kw, output_hidden_states=True)
    worst = (out.hidden_states[-1] - ref["last_hidden_state"]).abs().max().item()
    if "logits" in ref:
        got = (torch.stack([out.start_logits, out.end_logits], -1) if arch.endswith("QuestionAnswering")
               else out.logits)
        worst = max(worst, (got - ref["logits"]).abs().max().item())
    if "pooler_output" in ref:
        worst = max(worst, (out.pooler_output - ref["pooler_output"]).abs().max().item())
    assert worst < 1e-5, (d, worst)
    print(f"    {d.name}: transformers {transformers.__version__} matches reference.safetensors (max diff {worst:.1e})")


def token_classification(enc: Path, spec: dict) -> dict:
    res = {"params": {"task": "token-classification", "ignore_labels": ["O"], "ignore_labels_note": "the pipeline default (not passed)",
                      "aggregation_strategies": spec["aggregation_strategies"], "stride": None,
                      "device": "cpu"},
           "texts": spec["texts"], "models": {}}
    for name in spec["models"]:
        per = {}
        for strat in spec["aggregation_strategies"]:
            pipe = pipeline("token-classification", model=str(enc / name), tokenizer=str(enc / name),
                            aggregation_strategy=strat, device=-1)
            per[strat] = [py(pipe(t)) for t in spec["texts"]]
        res["models"][name] = per
        n = {s: sum(len(x) for x in v) for s, v in per.items()}
        print(f"    {name}: entities per strategy {n}")
    return res


def question_answering(enc: Path, spec: dict) -> dict:
    p = dict(spec["params"])
    res = {"params": dict(p, max_question_len=64, align_to_words=True, padding="do_not_pad (one item per call)",
                          note="called as pipe(question=q, context=c, **params); transformers 4 "
                               "QuestionAnsweringPipeline defaults for max_question_len/align_to_words"),
           "cases": spec["cases"], "models": {}}
    for name in spec["models"]:
        pipe = pipeline("question-answering", model=str(enc / name), device=-1)
        outs = []
        for case in spec["cases"]:
            o = pipe(question=case["question"], context=case["context"], **p)
            o = o if isinstance(o, list) else [o]
            outs.append(py(o))
            for a in o:
                assert case["context"][a["start"]:a["end"]] == a["answer"], (name, a)
        # The long context must really be split into several windows.
        tok = pipe.tokenizer
        long_case = max(spec["cases"], key=lambda c: len(c["context"]))
        n_win = len(tok(long_case["question"], long_case["context"], truncation="only_second",
                        max_length=p["max_seq_len"], stride=p["doc_stride"], return_overflowing_tokens=True,
                        padding="do_not_pad")["input_ids"])
        res["models"][name] = outs
        print(f"    {name}: long context -> {n_win} windows; top answers {[o[0]['answer'] for o in outs]}")
        assert n_win > 1
    return res


def text_classification(enc: Path, spec: dict) -> dict:
    res = {"params": {"task": "text-classification", "top_k": None,
                      "function_to_apply": "softmax (the pipeline default for num_labels > 1, "
                                           "problem_type unset)"},
           "texts": spec["texts"], "models": {}}
    for name in spec["models"]:
        d = enc / name
        pipe = pipeline("text-classification", model=str(d), device=-1)
        outs = [py(pipe(t, top_k=None)) for t in spec["texts"]]
        # Check the function the pipeline applied: softmax over the raw logits.
        logits = []
        for t, o in zip(spec["texts"], outs):
            enc_ = pipe.tokenizer(t, return_tensors="pt")
            with torch.no_grad():
                lg = pipe.model(**enc_).logits[0]
            logits.append([float(x) for x in lg])
            probs = torch.softmax(lg, -1)
            for item in o:
                lid = pipe.model.config.label2id[item["label"]]
                assert abs(probs[lid].item() - item["score"]) < 1e-6, (name, t, item)
        res["models"][name] = {"outputs": outs, "logits": logits}
        print(f"    {name}: top labels {[o[0]['label'] for o in outs]}")
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--encoders", type=Path, required=True)
    ap.add_argument("--spec", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    assert transformers.__version__.startswith("4."), transformers.__version__
    spec = json.loads(args.spec.read_text(encoding="utf-8"))
    ref_inputs = [list(x) for x in spec["ref_inputs"]]
    print(f"  transformers 4 side: {tf4_versions()}")
    for name in spec["all_models"]:
        check_model_dir(args.encoders / name, ref_inputs)
    result = {
        "made_by": "scripts/make_encoder_fixtures.py -> scripts/make_encoder_pipeline_refs.py "
                   "(transformers 4.x pipelines, CPU, float32); cross_encoder from the main reference venv",
        "versions": tf4_versions(),
        "token_classification": token_classification(args.encoders, spec["token_classification"]),
        "question_answering": question_answering(args.encoders, spec["question_answering"]),
        "text_classification": text_classification(args.encoders, spec["text_classification"]),
    }
    with open(args.out, "w", encoding="utf-8", newline="\n") as f:
        json.dump(result, f, ensure_ascii=False, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
