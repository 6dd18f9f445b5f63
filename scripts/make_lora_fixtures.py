"""LoRA reference fixtures (Hugging Face PEFT) on the committed tiny Llama.

Base model: fixtures/tiny-llama (made by make_fixtures.py), loaded in float32, eager attention, eval
mode, on CPU. Writes fixtures/tiny-llama-lora/ with
  adapter_config.json, adapter_model.safetensors
      a PEFT LoRA adapter (r=4, lora_alpha=8 -> scale 2.0, dropout 0, no bias, on q/k/v/o/gate/up/down),
      saved with PeftModel.save_pretrained before any training step. Its weights are NOT PEFT's
      default init (lora_B = 0 would make the adapter a no-op and the lora_A gradients zero):
      lora_A ~ U(-1/sqrt(in), 1/sqrt(in)) (the distribution of PEFT's kaiming_uniform(a=sqrt(5)))
      and lora_B ~ N(0, 0.02^2), both from a seeded torch.Generator (see init_lora). The init is
      recorded under "plinth_fixture_init" in adapter_config.json.
  reference.safetensors
      input_ids       int64 [2, 24]   seeded token ids < 256
      labels          int64 [2, 24]   input_ids with -100 on the first 8 (row 0) / 5 (row 1) positions
      logits_base     f32 [2, 24, 256] base model alone
      logits_adapter  f32 [2, 24, 256] base + adapter (before training)
      logits_merged   f32 [2, 24, 256] merge_and_unload() of the saved (pre-training) adapter
      loss0           f32 [1]  transformers' causal-LM loss of base + adapter on (input_ids, labels):
                               labels shifted left by one inside the model, mean cross-entropy over
                               all non-masked shifted positions of the whole batch
      losses          f32 [4]  loss before each of 3 AdamW steps and after the last
      grad.<key>      f32      d loss0 / d LoRA parameter, <key> as in adapter_model.safetensors
      after.<key>     f32      LoRA parameters after the 3 steps
  README.md

Optimizer: torch.optim.AdamW over the LoRA parameters only, lr 1e-2, betas (0.9, 0.999), eps 1e-8,
weight_decay 0.01 (decoupled), no clipping, no scheduler, full batch every step.

Rerun: /path/to/venv/bin/python scripts/make_lora_fixtures.py [--out fixtures]
(packages: scripts/requirements-ref.txt, incl. peft). Deterministic: reruns give identical files.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_fixtures import SEED, dtype_kwargs, seed_everything, versions  # noqa: E402

import peft  # noqa: E402
from peft import LoraConfig, PeftModel, get_peft_model, get_peft_model_state_dict  # noqa: E402
from transformers import LlamaForCausalLM  # noqa: E402

BASE_DIR_NAME = "tiny-llama"
OUT_DIR_NAME = "tiny-llama-lora"
R, ALPHA = 4, 8
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
B_STD = 0.02
BATCH, SEQ = 2, 24
MASKED_PREFIX = (8, 5)  # labels = -100 on these many leading positions of row 0 / row 1
LR, BETAS, EPS, WD = 1e-2, (0.9, 0.999), 1e-8, 0.01
STEPS = 3

INIT_RECORD = {
    "lora_A": "uniform(-1/sqrt(in_features), 1/sqrt(in_features)) (same distribution as PEFT's default "
              "kaiming_uniform_(a=sqrt(5)))",
    "lora_B": f"normal(mean 0, std {B_STD}) instead of PEFT's zeros",
    "generator": f"torch.Generator().manual_seed({SEED + 10}); lora_A then lora_B for each LoRA module, "
                 "modules in named_modules() order",
    "made_by": "scripts/make_lora_fixtures.py",
}


def peft_versions() -> str:
    return f"peft {peft.__version__}, " + versions()


def load_base(path: Path) -> LlamaForCausalLM:
    model = LlamaForCausalLM.from_pretrained(str(path), attn_implementation="eager", **dtype_kwargs(torch.float32))
    return model.to(torch.float32).eval()


def init_lora(model: PeftModel) -> None:
    g = torch.Generator().manual_seed(SEED + 10)
    n = 0
    with torch.no_grad():
        for _, module in model.named_modules():
            if not (hasattr(module, "lora_A") and "default" in getattr(module, "lora_A", {})):
                continue
            a = module.lora_A["default"].weight  # [r, in]
            b = module.lora_B["default"].weight  # [out, r]
            bound = 1.0 / math.sqrt(a.shape[1])
            a.copy_((torch.rand(a.shape, generator=g, dtype=torch.float32) * 2.0 - 1.0) * bound)
            b.copy_(torch.randn(b.shape, generator=g, dtype=torch.float32) * B_STD)
            n += 1
    assert n == 7 * model.config.num_hidden_layers, n


def saved_key(param_name: str) -> str:
    """In-model parameter name -> PEFT's saved state-dict key (the adapter name is dropped)."""
    return param_name.replace(".lora_A.default.", ".lora_A.").replace(".lora_B.default.", ".lora_B.")


def lora_params(model: PeftModel) -> dict[str, torch.nn.Parameter]:
    return {saved_key(n): p for n, p in model.named_parameters() if p.requires_grad}


def manual_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    tgt = labels[:, 1:].reshape(-1)
    lg = logits[:, :-1].reshape(-1, logits.shape[-1])
    keep = tgt != -100
    return F.cross_entropy(lg[keep], tgt[keep], reduction="mean")


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(SEED + 20)
    ids = torch.randint(0, 256, (BATCH, SEQ), generator=g, dtype=torch.int64)
    labels = ids.clone()
    for row, n in enumerate(MASKED_PREFIX):
        labels[row, :n] = -100
    return ids, labels


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=Path("fixtures"), type=Path)
    args = ap.parse_args()
    print(peft_versions())
    base_path = args.out / BASE_DIR_NAME
    out = args.out / OUT_DIR_NAME

    ids, labels = batch()
    base = load_base(base_path)
    with torch.no_grad():
        logits_base = base(input_ids=ids, use_cache=False).logits.float().clone()

    seed_everything(SEED)
    cfg = LoraConfig(r=R, lora_alpha=ALPHA, lora_dropout=0.0, target_modules=TARGETS, bias="none",
                     task_type="CAUSAL_LM")
    model = get_peft_model(base, cfg)
    init_lora(model)
    model.eval()
    scale = model.base_model.model.model.layers[0].self_attn.q_proj.scaling["default"]
    assert scale == ALPHA / R == 2.0, scale

    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        saved = load_file(str(Path(tmp) / "adapter_model.safetensors"))
        conf = json.loads((Path(tmp) / "adapter_config.json").read_text())
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        shutil.copyfile(Path(tmp) / "adapter_model.safetensors", out / "adapter_model.safetensors")

    # Canonical adapter_config.json: target_modules is a set inside PEFT (order varies per process).
    conf["target_modules"] = sorted(conf["target_modules"])
    conf["base_model_name_or_path"] = f"fixtures/{BASE_DIR_NAME}"
    conf["plinth_fixture_init"] = INIT_RECORD
    with open(out / "adapter_config.json", "w", encoding="utf-8", newline="\n") as f:
        json.dump(conf, f, indent=2, sort_keys=True)
        f.write("\n")

    params = lora_params(model)
    assert sorted(params) == sorted(saved), (sorted(params)[:3], sorted(saved)[:3])
    assert sorted(get_peft_model_state_dict(model)) == sorted(saved)
    for k, p in params.items():
        assert torch.equal(p.detach(), saved[k]), k
    initial = {k: p.detach().clone() for k, p in params.items()}

    with torch.no_grad():
        logits_adapter = model(input_ids=ids, use_cache=False).logits.float().clone()
        with model.disable_adapter():
            again = model(input_ids=ids, use_cache=False).logits.float()
    assert torch.equal(again, logits_base)
    print(f"  max |adapter - base| logits = {(logits_adapter - logits_base).abs().max().item():.3e}")

    # Gradients of loss0.
    out0 = model(input_ids=ids, labels=labels, use_cache=False)
    loss0 = out0.loss
    ml = manual_loss(out0.logits.float(), labels)
    assert torch.allclose(loss0, ml, rtol=0, atol=1e-6), (loss0.item(), ml.item())
    assert torch.allclose(out0.logits.detach(), logits_adapter, rtol=0, atol=1e-6)
    loss0.backward()
    grads = {k: p.grad.detach().clone() for k, p in params.items()}
    assert all(g.abs().max() > 0 for g in grads.values())
    print(f"  loss0 = {loss0.item():.6f} over {(labels[:, 1:] != -100).sum().item()} targets")

    # 3 AdamW steps on the same batch (the first step reuses loss0's gradients).
    order = sorted(params)
    opt = torch.optim.AdamW([params[k] for k in order], lr=LR, betas=BETAS, eps=EPS, weight_decay=WD,
                            foreach=False)
    losses = [loss0.detach().clone()]
    for step in range(STEPS):
        if step > 0:
            opt.zero_grad(set_to_none=True)
            loss = model(input_ids=ids, labels=labels, use_cache=False).loss
            loss.backward()
            losses.append(loss.detach().clone())
        opt.step()
    with torch.no_grad():
        losses.append(model(input_ids=ids, labels=labels, use_cache=False).loss.detach().clone())
    losses_t = torch.stack(losses).float()
    print("  losses =", [round(x, 6) for x in losses_t.tolist()])
    after = {k: p.detach().clone() for k, p in params.items()}

    # merge_and_unload of the pre-training adapter, reloaded from the written files.
    fresh = load_base(base_path)
    reloaded = PeftModel.from_pretrained(fresh, str(out)).eval()
    for k, p in lora_params(reloaded).items():
        assert torch.equal(p.detach(), initial[k]), k
    with torch.no_grad():
        assert torch.equal(reloaded(input_ids=ids, use_cache=False).logits.float(), logits_adapter)
        merged = reloaded.merge_and_unload().eval()
        logits_merged = merged(input_ids=ids, use_cache=False).logits.float().clone()
    d = (logits_merged - logits_adapter).abs().max().item()
    print(f"  max |merged - adapter| logits = {d:.3e}")
    assert d < 1e-4, d

    ref = {"input_ids": ids, "labels": labels, "logits_base": logits_base, "logits_adapter": logits_adapter,
           "logits_merged": logits_merged, "loss0": loss0.detach().reshape(1).float(), "losses": losses_t}
    for k in order:
        ref[f"grad.{k}"] = grads[k]
        ref[f"after.{k}"] = after[k]
    ref = {k: v.contiguous() for k, v in ref.items()}
    # One metadata key only: safetensors writes the metadata map in hash order, so several keys
    # would make the header (and the file bytes) differ between runs.
    meta = {"made_by": (
        "scripts/make_lora_fixtures.py; " + peft_versions()
        + f"; LoRA r={R} lora_alpha={ALPHA} scale={ALPHA / R} dropout=0 bias=none targets={','.join(TARGETS)}"
        + "; loss: transformers ForCausalLMLoss (labels shifted left by one, mean CE over labels != -100, whole batch)"
        + f"; optimizer: torch.optim.AdamW lr={LR} betas={BETAS} eps={EPS} weight_decay={WD} steps={STEPS}")}
    save_file(ref, str(out / "reference.safetensors"), metadata=meta)
    write_readme(out / "README.md")
    for f in sorted(out.iterdir()):
        print(f"  {f} {f.stat().st_size} bytes")


README = """\
# tiny-llama-lora

LoRA reference fixtures from Hugging Face PEFT on the tiny Llama in `../tiny-llama`
(float32, eager attention, eval mode, CPU). Made by `scripts/make_lora_fixtures.py`;
regenerate with

    /path/to/venv/bin/python scripts/make_lora_fixtures.py --out fixtures

(packages: `scripts/requirements-ref.txt`, including `peft`). Reruns give identical files.

- `adapter_config.json`, `adapter_model.safetensors`: a PEFT LoRA adapter, r = 4,
  lora_alpha = 8 (scale alpha/r = 2.0), no dropout, no bias, on q/k/v/o/gate/up/down_proj
  of both layers, saved before any training step. Keys look like
  `base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight` (`[r, in]`) and
  `...lora_B.weight` (`[out, r]`); the layer computes `W x + 2.0 * B (A x)`.
  Not PEFT's default init: `lora_A ~ U(-1/sqrt(in), 1/sqrt(in))`, `lora_B ~ N(0, 0.02^2)`
  (seeded), so the adapter changes the logits and `lora_A` gets non-zero gradients; recorded
  under `plinth_fixture_init` in `adapter_config.json` (PEFT warns about that extra key
  when loading and ignores it).
- `reference.safetensors`:
  - `input_ids`, `labels` int64 `[2, 24]`; labels are the ids with `-100` on the first
    8 positions of row 0 and the first 5 of row 1.
  - `logits_base`, `logits_adapter`, `logits_merged` f32 `[2, 24, 256]`: the base model,
    base + adapter, and `merge_and_unload()` of the adapter (equal to `logits_adapter`
    up to float error).
  - `loss0` f32 `[1]`: transformers' causal-LM loss (labels shifted left by one inside
    the model; mean cross-entropy over every non-`-100` target of the whole batch, here
    16 + 19 = 35 targets).
  - `grad.<key>`: gradient of `loss0` for every adapter tensor, `<key>` as in
    `adapter_model.safetensors`.
  - `losses` f32 `[4]`: the loss before each of 3 full-batch `torch.optim.AdamW` steps
    (LoRA parameters only, lr 1e-2, betas (0.9, 0.999), eps 1e-8, weight_decay 0.01,
    no clipping, no scheduler) and after the last; `after.<key>`: the adapter tensors
    after the 3 steps.
"""


def write_readme(path: Path) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(README)


if __name__ == "__main__":
    main()
