"""LoRA training benchmark: plinth vs PyTorch + PEFT on SmolLM2-135M-Instruct, same data
(tests/python/tune_task.py), rank, alpha, target modules, batch size, optimizer and thread
count. Reports training tokens per second (all tokens of every sequence, prompt included,
as both compute a forward and backward pass over them) and peak RSS, alternating the two in
fresh processes. Called by scripts/bench-train.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "python"))
import tune_task  # noqa: E402

TORCH_SCRIPT = r"""
import json, resource, sys, time
import torch
threads, steps, batch, rank, alpha, gguf_dir, gguf_file, data = sys.argv[1:9]
threads, steps, batch, rank, alpha = int(threads), int(steps), int(batch), int(rank), float(alpha)
torch.set_num_threads(threads)
torch.manual_seed(0)
from transformers import AutoModelForCausalLM, AutoTokenizer
from peft import LoraConfig, get_peft_model
tok = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_file)
model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_file, torch_dtype=torch.float32)
model = get_peft_model(model, LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=["q_proj","k_proj","v_proj","o_proj","gate_proj","up_proj","down_proj"], task_type="CAUSAL_LM"))
opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3, weight_decay=0.0)
rows = [json.loads(l) for l in open(data)]
texts = [tok.apply_chat_template(r["messages"], tokenize=False) for r in rows]
enc = [tok(t, return_tensors="pt", add_special_tokens=False)["input_ids"][0] for t in texts]
model.train()
def step(i):
    # Sequences one by one with gradient accumulation, as plinth runs them (no padding work).
    opt.zero_grad()
    n = 0
    for k in range(batch):
        ids = enc[(i * batch + k) % len(enc)].unsqueeze(0)
        out = model(input_ids=ids, labels=ids)
        (out.loss / batch).backward()
        n += ids.shape[1]
    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
    opt.step()
    return n
step(0)
t0 = time.perf_counter(); tokens = 0
for i in range(1, steps + 1):
    tokens += step(i)
dt = time.perf_counter() - t0
print(json.dumps({"tokens_per_s": tokens / dt, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--plinth", required=True)
    p.add_argument("--gguf", required=True, help="the SmolLM2 GGUF both load")
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--alpha", type=float, default=16)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--pairs", type=int, default=2)
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    work = tempfile.mkdtemp(prefix="plinth-bench-train-")
    train, _ = tune_task.split()
    data = os.path.join(work, "train.jsonl")
    tune_task.write(data, train[:64])
    rows = {"plinth": [], "pytorch+peft": []}
    for i in range(a.pairs):
        out = os.path.join(work, f"out{i}")
        cmd = [a.plinth, "--threads", str(a.threads), "tune", "--model", a.gguf, "--data", data, "--out", out,
               "--max-steps", str(a.steps + 1), "--batch-size", str(a.batch_size), "--rank", str(a.rank),
               "--alpha", str(a.alpha), "--lr", "1e-3", "--save-every", "0", "--json"]
        r = subprocess.run(["/usr/bin/time", "-f", "%M", *cmd], capture_output=True, text=True, check=True)
        rep = json.loads(r.stdout.strip().splitlines()[-1])
        rss = int(r.stderr.strip().splitlines()[-1]) / 1024
        rows["plinth"].append({"tokens_per_s": rep["tokens_per_s"], "peak_rss_mb": rss})
        env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), TOKENIZERS_PARALLELISM="false")
        t = subprocess.run([sys.executable, "-c", TORCH_SCRIPT, str(a.threads), str(a.steps), str(a.batch_size), str(a.rank),
                            str(a.alpha), os.path.dirname(a.gguf), os.path.basename(a.gguf), data],
                           capture_output=True, text=True, check=True, env=env)
        rows["pytorch+peft"].append(json.loads(t.stdout.strip().splitlines()[-1]))
        if not a.json:
            print(f"pair {i + 1}/{a.pairs}: plinth {rows['plinth'][-1]['tokens_per_s']:.1f} tok/s, "
                  f"pytorch+peft {rows['pytorch+peft'][-1]['tokens_per_s']:.1f} tok/s", file=sys.stderr)
    med = {k: {m: statistics.median(r[m] for r in v) for m in ("tokens_per_s", "peak_rss_mb")} for k, v in rows.items()}
    ratio = {m: med["plinth"][m] / med["pytorch+peft"][m] for m in ("tokens_per_s", "peak_rss_mb")}
    report = {"steps": a.steps, "batch_size": a.batch_size, "rank": a.rank, "threads": a.threads, "pairs": a.pairs, "median": med, "ratio_plinth_over_pytorch": ratio}
    if a.json:
        print(json.dumps(report))
        return
    print(f"LoRA r={a.rank} on SmolLM2-135M, batch {a.batch_size} (sequences one by one), {a.threads} threads, medians of {a.pairs} pairs")
    print(f"{'':20}{'plinth':>10}{'pytorch+peft':>14}{'ratio':>8}")
    for m, label in (("tokens_per_s", "train tok/s"), ("peak_rss_mb", "peak RSS (MB)")):
        print(f"{label:20}{med['plinth'][m]:10.1f}{med['pytorch+peft'][m]:14.1f}{ratio[m]:8.2f}x")


if __name__ == "__main__":
    main()
