"""Embedding benchmark: plinth vs sentence-transformers (PyTorch) on the same model, sentences,
batch size and thread count. Runs the two alternately (A B A B ...), each in a fresh process,
and prints the medians and the ratio plinth / sentence-transformers for sentences per second
and peak RSS. Called by scripts/bench-embed, which prepares the model and the Python.
"""
import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile

SUBJECTS = ["The committee", "A small cat", "Our new database", "The river", "My grandmother", "The central bank",
            "This recipe", "The football team", "A distant galaxy", "The software update", "Every student",
            "The old lighthouse", "An open-source library", "The city council", "A migrating bird"]
VERBS = ["announced", "ignored", "quietly improved", "described", "rejected", "celebrated", "measured", "explained",
         "postponed", "rebuilt", "questioned", "predicted", "translated", "compressed", "painted"]
OBJECTS = ["the budget for next year", "a surprising result", "the missing documentation", "three new bridges",
           "an unusual pattern in the data", "the history of the region", "a faster sorting algorithm",
           "the weather forecast", "several letters from residents", "the final chapter", "a fragile truce",
           "the quarterly earnings report", "a bowl of soup", "the map of the coastline"]
TAILS = ["after a long debate", "despite the rain", "in less than an hour", "for the first time since 1998",
         "with help from volunteers", "while everyone was asleep", "according to the morning newspaper",
         "to the surprise of many observers", "and nobody noticed", "before the deadline"]


def sentences(n, seed=1234):
    """Deterministic English sentences of 6 to ~45 words (one to three clauses)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        clauses = [f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}"
                   + (f" {rng.choice(TAILS)}" if rng.random() < 0.6 else "") for _ in range(rng.choice([1, 1, 2, 3]))]
        out.append(", and ".join(clauses) + ".")
    return out


ST_SCRIPT = r"""
import json, resource, statistics, sys, time
import torch
threads, runs, batch, model_dir, path = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
torch.set_num_threads(threads)
from sentence_transformers import SentenceTransformer
texts = [l for l in open(path).read().splitlines() if l.strip()]
m = SentenceTransformer(model_dir, device="cpu")
m.encode(texts[:batch], batch_size=batch)
rates = []
for _ in range(runs):
    t0 = time.perf_counter()
    m.encode(texts, batch_size=batch)
    rates.append(len(texts) / (time.perf_counter() - t0))
print(json.dumps({"sentences_per_s": statistics.median(rates), "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run_plinth(args, path):
    cmd = [args.plinth, "--threads", str(args.threads), "bench", "--embed", path, "--encoder", args.model,
           "--batch-size", str(args.batch_size), "--runs", str(args.runs), "--json"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def run_st(args, path):
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads), TOKENIZERS_PARALLELISM="false")
    cmd = [sys.executable, "-c", ST_SCRIPT, str(args.threads), str(args.runs), str(args.batch_size), args.model_dir, path]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--plinth", required=True)
    p.add_argument("--model", required=True, help="name or directory for plinth")
    p.add_argument("--model-dir", required=True, help="the same model's directory for sentence-transformers")
    p.add_argument("--sentences", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--pairs", type=int, default=3)
    p.add_argument("--runs", type=int, default=3, help="timed passes per process (median)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()

    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write("\n".join(sentences(args.sentences)) + "\n")
        path = f.name
    rows = {"plinth": [], "sentence-transformers": []}
    try:
        for i in range(args.pairs):
            rows["plinth"].append(run_plinth(args, path))
            rows["sentence-transformers"].append(run_st(args, path))
            if not args.json:
                print(f"pair {i + 1}/{args.pairs}: plinth {rows['plinth'][-1]['sentences_per_s']:.1f}/s, "
                      f"sentence-transformers {rows['sentence-transformers'][-1]['sentences_per_s']:.1f}/s", file=sys.stderr)
    finally:
        os.unlink(path)
    med = {k: {m: statistics.median(r[m] for r in v) for m in ("sentences_per_s", "peak_rss_mb")} for k, v in rows.items()}
    ratio = {m: med["plinth"][m] / med["sentence-transformers"][m] for m in ("sentences_per_s", "peak_rss_mb")}
    tokens = rows["plinth"][0]["tokens"]
    report = {"model": args.model, "sentences": args.sentences, "tokens": tokens, "batch_size": args.batch_size,
              "threads": args.threads, "pairs": args.pairs, "median": med, "ratio_plinth_over_st": ratio}
    if args.json:
        print(json.dumps(report))
        return
    print(f"{args.sentences} sentences ({tokens} tokens), batch {args.batch_size}, {args.threads} threads, "
          f"medians of {args.pairs} alternating pairs")
    print(f"{'':24}{'plinth':>12}{'sent-transf':>14}{'ratio':>9}")
    print(f"{'sentences/s':24}{med['plinth']['sentences_per_s']:12.1f}{med['sentence-transformers']['sentences_per_s']:14.1f}"
          f"{ratio['sentences_per_s']:9.2f}x")
    print(f"{'peak RSS (MB)':24}{med['plinth']['peak_rss_mb']:12.1f}{med['sentence-transformers']['peak_rss_mb']:14.1f}"
          f"{ratio['peak_rss_mb']:9.2f}x")


if __name__ == "__main__":
    main()
