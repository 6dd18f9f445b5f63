#!/usr/bin/env python3
"""Serving throughput: `plinth serve` vs llama.cpp's server on the same GGUF and thread count.

What it measures: total generated tokens per second across C concurrent requests (C = 1, 4,
16 by default), each a non-streaming POST /v1/chat/completions asking for max_tokens=128
(greedy by default) with its own prompt, chosen to draw long answers. Generated tokens are
the completion_tokens of each response's usage (the OpenAI API cannot ignore EOS, so a
request may stop early; both servers are credited with what they really produced). The
clock runs from sending the first request of a round to receiving the last response.

How: each server is started on a free port, warmed up with one short request, measured at
every concurrency level, and stopped; then the other. With --runs R this is repeated R times
(alternating plinth and llama.cpp, so drift in machine load hits both alike) and the report
is the median per level.
  * plinth:    PLINTH serve --port 0 --threads T --max-running MAX(C) --model PATH
  * llama.cpp: python -m llama_cpp.server --model PATH --n_threads T --n_threads_batch T
               --n_ctx 4096 --port P  (llama-cpp-python[server]; this Python must import it)
Only the standard library is used for the HTTP side.

Usually run through scripts/bench-serve, which sets up the Python, the binary and the model.
"""
import argparse
import concurrent.futures
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

PROMPTS = [
    "Write a long essay about the history of Rome.",
    "Explain in detail how a steam engine works.",
    "Describe, step by step, how to bake a loaf of sourdough bread.",
    "Tell me a long story about a dragon who learns to sing.",
    "Write a detailed travel guide to Japan.",
    "Explain the causes and consequences of the French Revolution.",
    "Describe the water cycle in as much detail as you can.",
    "Write a long letter to a friend about your summer holidays.",
    "Explain how computers store and process information.",
    "Write a detailed review of your favourite book.",
    "Describe the life cycle of a star, from birth to death.",
    "Explain the rules of chess and some basic strategies.",
    "Write a long essay about the importance of education.",
    "Describe how the human heart works.",
    "Write a story about a detective solving a mystery in London.",
    "Explain the theory of evolution and the evidence for it.",
]


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            return next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        import platform
        return platform.processor() or "unknown"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url, body, timeout=600):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


class ServerProc:
    def __init__(self, name, cmd, url=None, listen_re=None, timeout=180):
        self.name = name
        self.log = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE if listen_re else self.log,
                                     stderr=self.log, text=True, bufsize=1)
        deadline = time.monotonic() + timeout
        if listen_re:  # wait for the listening line on stdout, then keep draining stdout
            found = threading.Event()
            box = {}

            def pump():
                for line in self.proc.stdout:
                    m = re.search(listen_re, line)
                    if m and "url" not in box:
                        box["url"] = m.group(1)
                        found.set()
            threading.Thread(target=pump, daemon=True).start()
            while not found.wait(0.2):
                self._check(deadline, cmd)
            url = box["url"]
        self.url = url
        while True:  # ready when it lists its models
            try:
                with urllib.request.urlopen(f"{url}/v1/models", timeout=5) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            self._check(deadline, cmd)
            time.sleep(0.2)

    def _check(self, deadline, cmd):
        if self.proc.poll() is not None:
            sys.exit(f"error: {' '.join(cmd)} exited with {self.proc.returncode}:\n{self.tail()}")
        if time.monotonic() > deadline:
            self.stop()
            sys.exit(f"error: {' '.join(cmd)} did not come up in time:\n{self.tail()}")

    def tail(self):
        self.log.seek(0)
        return self.log.read()[-3000:]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def measure(url, model, concurrency, max_tokens, temperature):
    """One round of `concurrency` simultaneous requests; returns (generated tokens, seconds, latencies)."""
    def one(i):
        t0 = time.perf_counter()
        r = post(f"{url}/v1/chat/completions", {
            "model": model, "messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
            "max_tokens": max_tokens, "temperature": temperature, "seed": i})
        return r["usage"]["completion_tokens"], time.perf_counter() - t0

    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(max_workers=concurrency) as pool:
        res = list(pool.map(one, range(concurrency)))
    wall = time.perf_counter() - t0
    return sum(n for n, _ in res), wall, [s for _, s in res]


def bench_server(srv, model, levels, max_tokens, temperature):
    post(f"{srv.url}/v1/chat/completions", {"model": model, "messages": [{"role": "user", "content": "Hi"}],
                                            "max_tokens": 8, "temperature": 0})  # warm-up
    out = {}
    for c in levels:
        tokens, wall, lat = measure(srv.url, model, c, max_tokens, temperature)
        out[c] = {"tok_s": tokens / wall, "tokens": tokens, "wall_s": wall, "mean_latency_s": statistics.mean(lat)}
        print(f"  {srv.name:9} concurrency {c:3}: {tokens:5} tokens in {wall:6.2f} s = {tokens / wall:7.1f} tok/s",
              file=sys.stderr)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="path of a .gguf file")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--concurrency", default="1,4,16", help="comma-separated levels (default 1,4,16)")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    ap.add_argument("--runs", type=int, default=1, help="repeat everything R times, report medians")
    ap.add_argument("--plinth", default="target/release/plinth")
    ap.add_argument("--only", choices=["plinth", "llama.cpp"], help="measure one server only")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    a = ap.parse_args()
    if not os.path.isfile(a.model):
        ap.error(f"no such file: {a.model}")
    levels = [int(x) for x in a.concurrency.split(",") if x.strip()]
    if not levels or min(levels) < 1:
        ap.error("--concurrency needs positive integers")

    engines = [e for e in ("plinth", "llama.cpp") if a.only in (None, e)]
    llama_version = None
    if "llama.cpp" in engines:
        try:
            import llama_cpp
            import llama_cpp.server.app  # noqa: F401  (the [server] extras)
            llama_version = llama_cpp.__version__
        except ImportError as e:
            sys.exit(f"error: {sys.executable} cannot import llama_cpp.server ({e}); "
                     f"install llama-cpp-python[server] or its extras into it")

    def start(engine):
        if engine == "plinth":
            cmd = [a.plinth, "serve", "--port", "0", "--threads", str(a.threads),
                   "--max-running", str(max(levels)), "--model", a.model]
            srv = ServerProc("plinth", cmd, listen_re=r"plinth serve listening on (http://127\.0\.0\.1:\d+)")
        else:
            port = free_port()
            cmd = [sys.executable, "-m", "llama_cpp.server", "--model", a.model, "--n_threads", str(a.threads),
                   "--n_threads_batch", str(a.threads), "--n_ctx", "4096", "--host", "127.0.0.1",
                   "--port", str(port), "--interrupt_requests", "false", "--verbose", "false"]
            srv = ServerProc("llama.cpp", cmd, url=f"http://127.0.0.1:{port}")
        with urllib.request.urlopen(f"{srv.url}/v1/models", timeout=10) as r:
            srv.model = json.loads(r.read())["data"][0]["id"]
        return srv

    runs = {e: [] for e in engines}
    for i in range(a.runs):
        for engine in engines:
            print(f"run {i + 1}/{a.runs} {engine}", file=sys.stderr)
            srv = start(engine)
            try:
                runs[engine].append(bench_server(srv, srv.model, levels, a.max_tokens, a.temperature))
            finally:
                srv.stop()

    med = {e: {c: round(statistics.median(r[c]["tok_s"] for r in rs), 1) for c in levels} for e, rs in runs.items()}
    ratio = {c: round(med["plinth"][c] / med["llama.cpp"][c], 3) if len(engines) == 2 and med["llama.cpp"][c] else None
             for c in levels}
    info = {"cpu": cpu_model(), "logical_cpus": os.cpu_count(), "threads": a.threads, "runs": a.runs,
            "model": a.model, "max_tokens": a.max_tokens, "temperature": a.temperature,
            "llama_cpp_python": llama_version}
    if a.json:
        print(json.dumps({**info, "tok_s_median": {e: {str(c): v for c, v in m.items()} for e, m in med.items()},
                          "ratio_plinth_over_llama_cpp": {str(c): v for c, v in ratio.items()},
                          "runs_detail": {e: [{str(c): v for c, v in r.items()} for r in rs] for e, rs in runs.items()}}))
        return
    print(f"serving throughput, generated tok/s summed over concurrent requests, on {os.path.basename(a.model)}")
    print(f"CPU: {info['cpu']} ({info['logical_cpus']} logical CPUs), threads {a.threads}, max_tokens "
          f"{a.max_tokens}, temperature {a.temperature}, {a.runs} run(s){', medians' if a.runs > 1 else ''}"
          + (f", llama-cpp-python {llama_version}" if llama_version else ""))
    cols = [e for e in engines]
    print(f"{'concurrency':>11}" + "".join(f"{e + ' tok/s':>17}" for e in cols)
          + (f"{'plinth/llama.cpp':>18}" if len(cols) == 2 else ""))
    for c in levels:
        row = f"{c:>11}" + "".join(f"{med[e][c]:>17.1f}" for e in cols)
        if len(cols) == 2:
            row += f"{'n/a' if ratio[c] is None else f'{ratio[c]:.2f}x':>18}"
        print(row)


if __name__ == "__main__":
    main()
