#!/usr/bin/env python3
"""plinth vs llama.cpp (and PyTorch) on the same GGUF, the same thread count and the same workload.

What it measures, per run: prefill throughput of a 512-token prompt in one forward pass,
time to first token (that prefill + picking the first token greedily), decode throughput of
128 greedy tokens fed one at a time, and the process's peak RSS.

How: the two engines run ALTERNATELY (plinth, llama.cpp, plinth, llama.cpp, ... --pairs
times) so that drift in machine load hits both alike, and every run is a fresh process so
that peak RSS is per run.
  * plinth:    target/release/plinth bench --runs 1 --json --threads T --model PATH
               (see crates/plinth-cli/src/cmd/bench.rs).
  * llama.cpp: this script re-run as a child (--llama-child) that loads llama_cpp.Llama and
               mirrors `plinth bench`: the same filler text tokenized by the model's own
               tokenizer and cut to 512 ids, the same 16-token warm-up, argmax sampling.
  * PyTorch:   where torch, transformers and gguf are importable (or with --torch), a third
               child loads the same GGUF through transformers (which dequantizes it to float32),
               prefills the same 512 ids with a KV cache and decodes 128 greedy tokens; it runs
               in the same rotation (plinth, llama.cpp, PyTorch, plinth, ...).
The report is the median of each metric over the runs, with the ratios plinth/llama.cpp and
plinth/PyTorch. Caveat: the Python children's peak RSS includes the interpreter (llama.cpp:
~10-20 MB; PyTorch: torch itself, a few hundred MB, and float32 weights).

Usually run through scripts/bench-peers, which sets up the Python and the model path.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

PROMPT_TOKENS, GEN_TOKENS, WARMUP_TOKENS = 512, 128, 16
# Same text as FILLER in crates/plinth-cli/src/cmd/bench.rs.
FILLER = ("The quick brown fox jumps over the lazy dog while the committee debates "
          "the budget for next year's lighthouse restoration, citing 1,234 letters from residents. ")
# (key, label, which direction is better)
METRICS = [("prefill_tok_s", "prefill tok/s", "higher"), ("decode_tok_s", "decode tok/s", "higher"),
           ("ttft_ms", "time to first token ms", "lower"), ("peak_rss_mb", "peak RSS MB", "lower")]
RSS_CAVEAT = ("llama.cpp's peak RSS includes the Python interpreter running llama-cpp-python (~10-20 MB); "
              "PyTorch's includes torch and float32 weights.")


def llama_child(model, threads):
    """One llama.cpp run in this (fresh) process; prints one JSON line like `plinth bench --json`."""
    import llama_cpp
    import numpy as np

    llm = llama_cpp.Llama(model, n_ctx=1024, n_batch=512, n_ubatch=512, n_threads=threads,
                          n_threads_batch=threads, verbose=False)
    ids = []
    while len(ids) < PROMPT_TOKENS:
        ids += llm.tokenize(FILLER.encode(), add_bos=False, special=False)
    ids = ids[:PROMPT_TOKENS]
    n_vocab = llm.n_vocab()

    def argmax():  # greedy pick from the last position's logits, like plinth's argmax
        return int(np.argmax(np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(n_vocab,))))

    llm.reset()
    llm.eval(ids[:WARMUP_TOKENS])  # warm-up, untimed (same as plinth bench)
    llm.reset()
    t0 = time.perf_counter()
    llm.eval(ids)
    t_prefill = time.perf_counter() - t0
    tok = argmax()
    t_first = time.perf_counter() - t0
    t1 = time.perf_counter()
    for _ in range(GEN_TOKENS):
        llm.eval([tok])
        tok = argmax()
    t_dec = time.perf_counter() - t1
    print(json.dumps({"prefill_tok_s": PROMPT_TOKENS / t_prefill, "decode_tok_s": GEN_TOKENS / t_dec,
                      "ttft_ms": t_first * 1000.0,
                      "peak_rss_mb": peak_rss_mb(),
                      "version": llama_cpp.__version__}))


def torch_child(model, threads):
    """One PyTorch run (transformers on the GGUF, dequantized to float32); prints one JSON line."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(threads)
    d, f = os.path.split(os.path.abspath(model))
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    lm = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32).eval()
    ids = []
    while len(ids) < PROMPT_TOKENS:
        ids += tok(FILLER, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([ids[:PROMPT_TOKENS]])

    with torch.inference_mode():
        lm(ids[:, :WARMUP_TOKENS], use_cache=True)  # warm-up, untimed
        t0 = time.perf_counter()
        out = lm(ids, use_cache=True)
        t_prefill = time.perf_counter() - t0
        tok_id = out.logits[0, -1].argmax().view(1, 1)
        t_first = time.perf_counter() - t0
        # transformers >= 5.2x names the KV cache `cache` (older versions: `past_key_values`).
        key = "cache" if hasattr(out, "cache") else "past_key_values"
        past = getattr(out, key)
        t1 = time.perf_counter()
        for _ in range(GEN_TOKENS):
            out = lm(tok_id, use_cache=True, **{key: past})
            past = getattr(out, key)
            tok_id = out.logits[0, -1].argmax().view(1, 1)
        t_dec = time.perf_counter() - t1
    print(json.dumps({"prefill_tok_s": PROMPT_TOKENS / t_prefill, "decode_tok_s": GEN_TOKENS / t_dec,
                      "ttft_ms": t_first * 1000.0,
                      "peak_rss_mb": peak_rss_mb(),
                      "version": f"torch {torch.__version__}, transformers {transformers.__version__}"}))


def torch_available():
    # find_spec, not import: importing torch here would inflate every child's peak RSS (see
    # peak_rss_mb).
    import importlib.util
    return all(importlib.util.find_spec(m) is not None for m in ("gguf", "torch", "transformers"))


def peak_rss_mb():
    """This process's peak resident set (VmHWM) in MB. Not getrusage's ru_maxrss: Linux carries
    that over from the parent through fork and exec, so a child would report the parent's peak."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_json(cmd, env=None):
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        sys.exit(f"error: {' '.join(cmd)} exited with {p.returncode}:\n{p.stderr}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            return next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        import platform
        return platform.processor() or "unknown"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="path of a .gguf file")
    ap.add_argument("--pairs", type=int, default=5, help="alternating rounds of every engine (at least 5)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--plinth", default="target/release/plinth")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    ap.add_argument("--torch", choices=["auto", "yes", "no"], default="auto",
                    help="also run PyTorch (transformers on the GGUF); auto: when importable")
    ap.add_argument("--llama-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--torch-child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.llama_child:
        return llama_child(a.model, a.threads)
    if a.torch_child:
        return torch_child(a.model, a.threads)
    if a.pairs < 5:
        ap.error("--pairs must be at least 5")
    if not os.path.isfile(a.model):
        ap.error(f"no such file: {a.model}")

    plinth_cmd = [a.plinth, "bench", "--runs", "1", "--json", "--threads", str(a.threads), "--model", a.model,
                  "--prompt-tokens", str(PROMPT_TOKENS), "--gen-tokens", str(GEN_TOKENS)]
    llama_cmd = [sys.executable, os.path.abspath(__file__), "--llama-child", "--threads", str(a.threads),
                 "--model", a.model]
    torch_cmd = [sys.executable, os.path.abspath(__file__), "--torch-child", "--threads", str(a.threads),
                 "--model", a.model]
    with_torch = a.torch == "yes" or (a.torch == "auto" and torch_available())
    peers = [("plinth", plinth_cmd), ("llama.cpp", llama_cmd)] + ([("pytorch", torch_cmd)] if with_torch else [])
    runs = {name: [] for name, _ in peers}
    for i in range(a.pairs):
        for name, cmd in peers:
            r = run_json(cmd)
            runs[name].append(r)
            print(f"pair {i + 1}/{a.pairs} {name:9}: prefill {r['prefill_tok_s']:7.1f} tok/s  decode "
                  f"{r['decode_tok_s']:6.1f} tok/s  ttft {r['ttft_ms']:7.1f} ms  rss {r['peak_rss_mb']:6.1f} MB",
                  file=sys.stderr)

    med = {n: {k: round(statistics.median(r[k] for r in rs), 2) for k, _, _ in METRICS} for n, rs in runs.items()}

    def ratio(peer):
        return {k: round(med["plinth"][k] / med[peer][k], 3) if med[peer][k] else None for k, _, _ in METRICS}

    ratios = {peer: ratio(peer) for peer in runs if peer != "plinth"}
    info = {"cpu": cpu_model(), "logical_cpus": os.cpu_count(), "threads": a.threads, "pairs": a.pairs,
            "model": a.model, "prompt_tokens": PROMPT_TOKENS, "gen_tokens": GEN_TOKENS,
            "llama_cpp_python": runs["llama.cpp"][0]["version"],
            "pytorch": runs["pytorch"][0]["version"] if "pytorch" in runs else None}
    if a.json:
        print(json.dumps({**info, "median": med, "ratio_plinth_over_llama_cpp": ratios["llama.cpp"],
                          "ratio_plinth_over_pytorch": ratios.get("pytorch"), "runs": runs,
                          "better": {k: b for k, _, b in METRICS}, "note": RSS_CAVEAT}))
        return
    others = [p for p in runs if p != "plinth"]
    print(f"plinth vs {' and '.join(others)} on {os.path.basename(a.model)} "
          f"(llama-cpp-python {info['llama_cpp_python']}" + (f"; {info['pytorch']}" if info["pytorch"] else "") + ")")
    print(f"CPU: {info['cpu']} ({info['logical_cpus']} logical CPUs), threads {a.threads}, "
          f"{a.pairs} alternating rounds, prompt {PROMPT_TOKENS} tokens, {GEN_TOKENS} generated; medians")
    head = f"{'metric':24}" + "".join(f"{p:>11}" for p in runs) + "".join(f"{'plinth/' + p:>18}" for p in others)
    print(head + "  better")
    for k, label, better in METRICS:
        row = f"{label:24}" + "".join(f"{med[p][k]:>11.1f}" for p in runs)
        row += "".join(f"{('n/a' if ratios[p][k] is None else f'{ratios[p][k]:.2f}x'):>18}" for p in others)
        print(row + f"  {better}")
    print("ratio > 1 is better for plinth on tok/s rows, worse on the ms and MB rows.")
    print(f"note: {RSS_CAVEAT}")


if __name__ == "__main__":
    main()
