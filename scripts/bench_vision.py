"""Image-embedding benchmark: plinth vs PyTorch (transformers CLIPModel) on the same model, the
same images, batch size and thread count.

The model is a random-weight CLIP with ViT-B/32 geometry (transformers' CLIPConfig defaults:
vision 768 hidden, 12 layers, 12 heads, patch 32, image 224; default text tower; projection
512), made once with save_pretrained and cached (--cache), with a preprocessor_config.json of
CLIPImageProcessor's defaults and a tiny word-level tokenizer.json (plinth's loader wants one;
the benchmark embeds no text). Random weights cost what trained ones cost.

Per batch size, the two engines run ALTERNATELY (plinth, PyTorch, plinth, ... --pairs rounds),
each in a fresh process so that peak RSS (VmHWM) is per run:
  * plinth:  plinth --threads T bench --images N --batch-size B --runs R --json --model DIR
             (crates/plinth-cli/src/cmd/bench_images.rs).
  * PyTorch: this script re-run as a child (--torch-child): torch.set_num_threads(T),
             inference_mode, float32, the model's default attention; the same N images (the
             same seeded generator as plinth's), cycled from a pool the same size as plinth's.
Three stages, each timed over all N images, median of R passes per process:
  preprocess  the processor alone (plinth's vs transformers' PIL-backend CLIPImageProcessorPil,
              the processor plinth's is bit-exact with), images to a pixel batch;
  forward     the model alone on pixel batches preprocessed beforehand
              (CLIPModel.get_image_features for PyTorch);
  end to end  processor + forward + L2 normalisation.
The report is the median over rounds, with the ratio plinth / PyTorch. Caveat: PyTorch's peak
RSS includes the interpreter and torch itself (a few hundred MB).

Usually run through scripts/bench-vision, which builds plinth and sets up the Python.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from bench_peers import cpu_model, peak_rss_mb, run_json  # shared with the text benchmark

IMAGE_WIDTH, IMAGE_HEIGHT, SEED = 640, 480, 1234  # as in bench_images.rs
POOL_MIN = 16  # as POOL_MIN in bench_images.rs
STAGES = [("preprocess_images_per_s", "preprocess images/s"), ("forward_images_per_s", "forward images/s"),
          ("end_to_end_images_per_s", "end to end images/s"), ("peak_rss_mb", "peak RSS MB")]
MODEL_NAME = "clip-vit-b32-geometry-random"


def random_images(n, w, h, seed):
    """The images of bench_images.rs's random_images: splitmix64 words, little-endian bytes."""
    import numpy as np

    per = w * h * 3
    words = (per + 7) // 8
    gold = np.uint64(0x9E3779B97F4A7C15)
    out = []
    with np.errstate(over="ignore"):
        for i in range(n):
            k = np.arange(i * words + 1, (i + 1) * words + 1, dtype=np.uint64)
            z = np.uint64(seed) + k * gold
            z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
            z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
            z = z ^ (z >> np.uint64(31))
            out.append(z.astype("<u8").view(np.uint8)[:per].reshape(h, w, 3))
    return out


def batches(n, batch, pool):
    return [((k * batch) % pool, min(batch, n - k * batch)) for k in range((n + batch - 1) // batch)]


def make_model(d):
    """A random-weight CLIP of ViT-B/32 geometry in directory `d` (once; reused when present)."""
    done = os.path.join(d, ".complete")
    if os.path.exists(done):
        return
    import torch
    import transformers
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers, processors
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    print(f"bench-vision: making a random-weight CLIP (ViT-B/32 geometry) in {d}", file=sys.stderr)
    os.makedirs(d, exist_ok=True)
    torch.manual_seed(SEED)
    cfg = transformers.CLIPConfig()
    model = transformers.CLIPModel(cfg).eval()
    model.save_pretrained(d)
    CLIPImageProcessorPil().save_pretrained(d)
    t = cfg.text_config
    specials = {"<|startoftext|>": t.bos_token_id, "<|endoftext|>": t.eos_token_id}
    words = ["a", "photo", "of", "the", "cat", "dog"]
    vocab = {"<|unk|>": 0, **{w: i + 2 for i, w in enumerate(words)}, **specials}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<|unk|>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    tok.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>", special_tokens=list(specials.items()))
    tok.save(os.path.join(d, "tokenizer.json"))
    open(done, "w").write(f"torch {torch.__version__}, transformers {transformers.__version__}\n")


def torch_child(a):
    """One PyTorch process; prints one JSON line like `plinth bench --images --json`."""
    import torch
    import transformers
    from PIL import Image
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    torch.set_num_threads(a.threads)
    model = transformers.CLIPModel.from_pretrained(a.model_dir, dtype=torch.float32).eval()
    proc = CLIPImageProcessorPil.from_pretrained(a.model_dir)
    n, batch = a.images, min(a.batch_size, a.images)
    pool_len = batch * -(-POOL_MIN // batch)
    pool = [Image.fromarray(x) for x in random_images(pool_len, IMAGE_WIDTH, IMAGE_HEIGHT, SEED)]
    plan = batches(n, batch, pool_len)

    def preprocess(imgs):
        return proc(images=imgs, return_tensors="pt")["pixel_values"]

    pixels = [preprocess(pool[i:i + batch]) for i in range(0, pool_len, batch)]
    rates = {k: [] for k, _ in STAGES[:3]}
    with torch.inference_mode():
        model.get_image_features(pixel_values=pixels[0])  # warm-up, untimed
        for _ in range(a.runs):
            t = time.perf_counter()
            for s, k in plan:
                preprocess(pool[s:s + k])
            rates["preprocess_images_per_s"].append(n / (time.perf_counter() - t))
            t = time.perf_counter()
            for s, k in plan:
                model.get_image_features(pixel_values=pixels[s // batch][:k])
            rates["forward_images_per_s"].append(n / (time.perf_counter() - t))
            t = time.perf_counter()
            for s, k in plan:
                out = model.get_image_features(pixel_values=preprocess(pool[s:s + k]))
                emb = out if isinstance(out, torch.Tensor) else out.pooler_output
                torch.nn.functional.normalize(emb, dim=-1).tolist()
            rates["end_to_end_images_per_s"].append(n / (time.perf_counter() - t))
    print(json.dumps({**{k: statistics.median(v) for k, v in rates.items()}, "peak_rss_mb": peak_rss_mb(),
                      "attention": model.config._attn_implementation,
                      "version": f"torch {torch.__version__}, transformers {transformers.__version__}"}))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--plinth", default="target/release/plinth")
    ap.add_argument("--images", type=int, default=32, help="images per timed pass")
    ap.add_argument("--batch-sizes", default="1,8", help="comma-separated")
    ap.add_argument("--pairs", type=int, default=3, help="alternating rounds of both engines per batch size")
    ap.add_argument("--runs", type=int, default=3, help="timed passes per process (median)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cache", default=os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")),
                                                    "plinth", "bench-vision"))
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    ap.add_argument("--torch-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--model-dir", help=argparse.SUPPRESS)
    ap.add_argument("--batch-size", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.torch_child:
        return torch_child(a)
    sizes = [int(b) for b in a.batch_sizes.split(",") if b.strip()]
    if a.images < 1 or a.pairs < 1 or a.runs < 1 or not sizes or min(sizes) < 1:
        ap.error("--images, --pairs, --runs and every batch size must be at least 1")
    d = os.path.join(a.cache, MODEL_NAME)
    make_model(d)

    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), MKL_NUM_THREADS=str(a.threads))
    load = os.getloadavg()
    results = []
    for b in sizes:
        plinth_cmd = [a.plinth, "--threads", str(a.threads), "bench", "--images", str(a.images), "--batch-size",
                      str(b), "--runs", str(a.runs), "--json", "--model", d]
        torch_cmd = [sys.executable, os.path.abspath(__file__), "--torch-child", "--threads", str(a.threads),
                     "--images", str(a.images), "--batch-size", str(b), "--runs", str(a.runs), "--model-dir", d]
        runs = {"plinth": [], "pytorch": []}
        for i in range(a.pairs):
            for name, cmd in (("plinth", plinth_cmd), ("pytorch", torch_cmd)):
                r = run_json(cmd, env)
                runs[name].append(r)
                print(f"batch {b} round {i + 1}/{a.pairs} {name:7}: preprocess {r['preprocess_images_per_s']:6.1f}  "
                      f"forward {r['forward_images_per_s']:6.1f}  end to end {r['end_to_end_images_per_s']:6.1f} "
                      f"images/s  rss {r['peak_rss_mb']:6.0f} MB", file=sys.stderr)
        med = {n: {k: round(statistics.median(r[k] for r in rs), 2) for k, _ in STAGES} for n, rs in runs.items()}
        ratio = {k: round(med["plinth"][k] / med["pytorch"][k], 3) if med["pytorch"][k] else None for k, _ in STAGES}
        results.append({"batch_size": b, "median": med, "ratio_plinth_over_pytorch": ratio, "runs": runs})
    info = {"cpu": cpu_model(), "logical_cpus": os.cpu_count(), "threads": a.threads, "pairs": a.pairs,
            "runs": a.runs, "images": a.images, "input": f"{IMAGE_WIDTH}x{IMAGE_HEIGHT}", "model": d,
            "load_avg_at_start": [round(x, 2) for x in load], "load_avg_at_end": [round(x, 2) for x in os.getloadavg()],
            "pytorch": results[0]["runs"]["pytorch"][0]["version"],
            "pytorch_attention": results[0]["runs"]["pytorch"][0]["attention"]}
    if a.json:
        print(json.dumps({**info, "results": results}))
        return
    print(f"plinth vs PyTorch ({info['pytorch']}, attention {info['pytorch_attention']}) on a random-weight CLIP "
          f"with ViT-B/32 geometry")
    print(f"CPU: {info['cpu']} ({info['logical_cpus']} logical CPUs), threads {a.threads}, {a.images} random "
          f"{info['input']} images, medians of {a.pairs} alternating rounds x {a.runs} passes; "
          f"load average {info['load_avg_at_start'][0]} at start, {info['load_avg_at_end'][0]} at end")
    print(f"{'batch':>5}  {'metric':22}{'plinth':>10}{'pytorch':>10}{'plinth/pytorch':>16}")
    for r in results:
        for k, label in STAGES:
            q = r["ratio_plinth_over_pytorch"][k]
            print(f"{r['batch_size']:>5}  {label:22}{r['median']['plinth'][k]:>10.1f}{r['median']['pytorch'][k]:>10.1f}"
                  f"{'n/a' if q is None else f'{q:.2f}x':>16}")
    print("ratio > 1 is better for plinth on images/s rows, worse on peak RSS.")
    print("note: PyTorch's peak RSS includes the Python interpreter and torch itself.")


if __name__ == "__main__":
    main()
