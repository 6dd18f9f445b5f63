"""Adapt -> evaluate -> serve, end to end on the real SmolLM2-135M-Instruct:

1. `plinth tune` trains a LoRA adapter on a small synthetic task (tune_task.py: answer a
   review's sentiment with one word) — 48 examples, 12 steps;
2. `plinth eval --compare` measures held-out accuracy (reviews whose subject/adjective pairs
   never occur in training) for the base model and with the adapter: it must rise clearly;
3. `plinth serve --adapter sentiment=DIR` serves it, and the official `openai` client asks
   the adapter and the base model side by side.
"""
import json
import os
import subprocess
import tempfile

import pytest

import tune_task
from test_openai_client import PLINTH_BIN, client_of, serving

TUNE_TIMEOUT_S = 900
BASE_MAX_ACCURACY = 0.3   # SmolLM2 answers in sentences (or wrongly) before tuning
TUNED_MIN_ACCURACY = 0.8  # after tuning, on held-out reviews


@pytest.fixture(scope="module")
def tuned():
    work = tempfile.mkdtemp(prefix="plinth-tune-e2e-")
    train, held = tune_task.split()
    tune_task.write(os.path.join(work, "train.jsonl"), train[:48])
    tune_task.write(os.path.join(work, "heldout.jsonl"), held[:20])
    out = os.path.join(work, "adapter")
    r = subprocess.run([PLINTH_BIN, "--threads", "2", "tune", "--data", os.path.join(work, "train.jsonl"), "--out", out,
                        "--max-steps", "12", "--batch-size", "4", "--lr", "1e-3", "--save-every", "0", "--json"],
                       capture_output=True, text=True, timeout=TUNE_TIMEOUT_S)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads(r.stdout.strip().splitlines()[-1])
    return work, out, report, held[:20]


def test_tune_writes_a_peft_adapter_and_the_loss_falls(tuned):
    _, out, report, _ = tuned
    assert report["steps"] == 12 and report["data"]["examples"] == 48 and report["data"]["truncated"] == 0
    for f in ("adapter_config.json", "adapter_model.safetensors", "metrics.jsonl", "loss.png"):
        assert os.path.exists(os.path.join(out, f)), f
    cfg = json.load(open(os.path.join(out, "adapter_config.json")))
    assert cfg["peft_type"] == "LORA" and cfg["r"] == 8
    losses = [json.loads(l)["loss"] for l in open(os.path.join(out, "metrics.jsonl"))]
    assert losses[-1] < losses[0] / 10, losses


def test_held_out_accuracy_rises(tuned):
    work, out, _, _ = tuned
    r = subprocess.run([PLINTH_BIN, "--threads", "2", "eval", "--data", os.path.join(work, "heldout.jsonl"), "--adapter", out,
                        "--compare", "--json"], capture_output=True, text=True, timeout=TUNE_TIMEOUT_S)
    assert r.returncode == 0, r.stderr[-3000:]
    d = json.loads(r.stdout)
    before = d["base"]["accuracy"]["normalized_accuracy"]
    after = d["adapted"]["accuracy"]["normalized_accuracy"]
    print(f"held-out accuracy: base {before:.2f}, adapter {after:.2f}")
    assert before <= BASE_MAX_ACCURACY and after >= TUNED_MIN_ACCURACY, (before, after)


def test_the_adapter_is_served_to_the_openai_client(tuned):
    _, out, _, held = tuned
    gen = serving(["--adapter", f"sentiment={out}"])
    server = next(gen)
    try:
        client = next(client_of(server))
        assert "sentiment" in [m.id for m in client.models.list().data]
        right = base_right = 0
        for review, label in held[:6]:
            q = [{"role": "user", "content": tune_task.QUESTION.format(r=review)}]
            tuned_answer = client.chat.completions.create(model="sentiment", messages=q, temperature=0, max_tokens=8)
            base_answer = client.chat.completions.create(model=server.model, messages=q, temperature=0, max_tokens=8)
            assert tuned_answer.model == "sentiment"
            right += tuned_answer.choices[0].message.content.strip().lower() == label
            base_right += base_answer.choices[0].message.content.strip().lower() == label
        assert right >= 5 and base_right <= 2, (right, base_right)
    finally:
        try:
            next(gen)
        except StopIteration:
            pass
