"""Text-to-image benchmark: plinth vs PyTorch (diffusers StableDiffusionPipeline) on the same
pipeline folder, the same prompt, seed, size, step count and thread count.

The model is a random-weight Stable Diffusion pipeline with SD-Turbo's real geometry (that of
SD 2.1-base), made once with diffusers/transformers from configs under a fixed torch seed and
saved with save_pretrained (safetensors) into --cache (not committed):
  UNet          UNet2DConditionModel, block_out_channels [320,640,1280,1280], attention_head_dim
                [5,10,20,20], cross_attention_dim 1024, linear projections, 2 layers per
                block, sample_size 64 (~866M parameters);
  VAE           AutoencoderKL with SD's defaults (block_out_channels [128,256,512,512], 2
                layers per block, 4 latent channels, sample_size 512, scaling 0.18215);
  text encoder  CLIPTextModel with OpenCLIP-H geometry (hidden 1024, 23 layers, 16 heads,
                intermediate 4096, gelu, 77 positions, vocab 49408, projection 512);
  tokenizer     fixtures/clip-bpe copied in: a 714-id CLIP BPE, NOT SD's 49408-word one; its
                ids (< 714) fit the encoder's vocabulary and the prompt costs the same (the
                encoder always sees 77 padded positions), so it is fine for timing only;
  scheduler     EulerDiscreteScheduler with SD-Turbo's config (scaled_linear 0.00085-0.012,
                "trailing" spacing, steps_offset 1, epsilon prediction).
Random weights cost what trained ones cost. The build checks that a small image decodes to
finite pixels, and every timed diffusers image is checked too; WEIGHT_SCALE (multiplies every
UNet and VAE weight after init) is there should a random init ever overflow float32: with
torch 2.15 / diffusers 0.42.1 the default init (scale 1.0) stays finite.

Per step count (--steps, default 1 and 4; guidance 0, the SD-Turbo recipe; --size, default
512x512), the two engines run ALTERNATELY (plinth, diffusers, plinth, ... --pairs rounds),
each in a fresh process so that peak RSS (VmHWM) is per run:
  * plinth:    plinth --threads T imagine PROMPT -m DIR -o OUT.png --steps N --guidance 0
               --seed 1 -W S -H S --scheduler euler --json (crates/plinth-cli/src/cmd/imagine.rs);
               its seconds.total (model loading excluded) and stages
               (text_encoder, denoise, vae_decode).
  * diffusers: this script re-run as a child (--torch-child): torch.set_num_threads(T),
               StableDiffusionPipeline.from_pretrained(DIR, torch_dtype=float32), loading
               excluded, one untimed warm-up call at 1 step, then one timed call
               pipe(PROMPT, num_inference_steps=N, guidance_scale=0.0, height=S, width=S,
               generator=torch.Generator().manual_seed(1), output_type="pil").
               The stages are timed inside that same call by wrapping pipe.encode_prompt,
               pipe.unet.forward and pipe.vae.decode: text_encoder = encode_prompt,
               denoise = from the end of encode_prompt to the start of vae.decode (latent
               noise, scheduler and UNet loop), vae_decode = vae.decode; the remainder of
               total is input checks and the tensor -> PIL conversion.
Reported: seconds per image (total), per UNet step (denoise / N), VAE decode and text
encoder, peak RSS, as medians over rounds, with the ratio plinth / diffusers (lower is better
for plinth). Caveat: diffusers' peak RSS includes the interpreter and torch itself.

Usually run through scripts/bench-imagine, which builds plinth and sets up the Python.
"""
import argparse
import json
import os
import shlex
import shutil
import statistics
import sys
import time

from bench_peers import cpu_model, peak_rss_mb, run_json  # shared with the text benchmark

PROMPT = "a red lighthouse at dawn, watercolor"  # tokenizes within fixtures/clip-bpe's merges
SEED, BUILD_SEED = 1, 1234
WEIGHT_SCALE = 1.0  # < 1 if a random init ever overflows float32 (see make_model); 1.0 was finite
MODEL_NAME = "sd-turbo-geometry-random"
DEFAULT_CACHE = "/tmp/plinth-bench-sd-turbo-geometry"
TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json")
# (key, label); seconds are lower-is-better, like peak RSS.
METRICS = [("total", "seconds per image"), ("unet_step", "UNet s/step"), ("vae_decode", "VAE decode s"),
           ("text_encoder", "text encoder s"), ("peak_rss_mb", "peak RSS MB")]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def sd_turbo_configs():
    """The component configs: SD-Turbo's (= SD 2.1-base's) geometry."""
    unet = dict(
        sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=[320, 640, 1280, 1280], attention_head_dim=[5, 10, 20, 20],
        cross_attention_dim=1024, use_linear_projection=True,
        down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
        up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
        act_fn="silu", norm_num_groups=32, norm_eps=1e-5, flip_sin_to_cos=True, freq_shift=0)
    vae = dict(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
        block_out_channels=[128, 256, 512, 512], down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4, act_fn="silu", norm_num_groups=32, sample_size=512,
        scaling_factor=0.18215)
    text = dict(
        hidden_size=1024, num_hidden_layers=23, num_attention_heads=16, intermediate_size=4096,
        hidden_act="gelu", max_position_embeddings=77, vocab_size=49408, projection_dim=512,
        bos_token_id=49406, eos_token_id=49407, pad_token_id=1)
    sched = dict(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        prediction_type="epsilon", timestep_spacing="trailing", steps_offset=1,
        interpolation_type="linear", use_karras_sigmas=False)
    return unet, vae, text, sched


def make_model(d):
    """The random-weight pipeline in directory `d` (once; reused when `.complete` is there)."""
    done = os.path.join(d, ".complete")
    if os.path.exists(done):
        return
    import diffusers
    import torch
    import transformers
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel

    print(f"bench-imagine: making a random-weight SD-Turbo-geometry pipeline in {d} (~5 GB, once)",
          file=sys.stderr)
    if os.path.exists(d):
        shutil.rmtree(d)  # a half-written earlier attempt
    unet_cfg, vae_cfg, text_cfg, sched_cfg = sd_turbo_configs()
    torch.manual_seed(BUILD_SEED)
    unet = UNet2DConditionModel(**unet_cfg).eval()
    vae = AutoencoderKL(**vae_cfg).eval()
    text = transformers.CLIPTextModel(transformers.CLIPTextConfig(**text_cfg)).eval()
    with torch.no_grad():
        # PyTorch's default init keeps each layer's scale but not the stack's: without this,
        # the VAE decoder of a random pipeline can overflow float32 to inf/NaN. Scaling every
        # weight leaves the cost of each layer unchanged.
        for m in (unet, vae) if WEIGHT_SCALE != 1.0 else ():
            for p in m.parameters():
                p.mul_(WEIGHT_SCALE)
    tok_dir = os.path.join(d, "tokenizer.staging")
    os.makedirs(tok_dir, exist_ok=True)
    for f in TOKENIZER_FILES:
        shutil.copy(os.path.join(tok_dir_src(), f), tok_dir)
    tokenizer = transformers.CLIPTokenizer.from_pretrained(tok_dir)
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet,
        scheduler=EulerDiscreteScheduler(**sched_cfg), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    finite_check(pipe, 128)
    pipe.save_pretrained(d, safe_serialization=True)
    shutil.rmtree(tok_dir)
    # The fixture's own four files, as SD checkpoints ship them (no tokenizer.json), whatever
    # save_pretrained wrote.
    shutil.rmtree(os.path.join(d, "tokenizer"))
    shutil.copytree(tok_dir_src(), os.path.join(d, "tokenizer"), ignore=lambda _, names: [
        n for n in names if n not in TOKENIZER_FILES])
    open(done, "w").write(f"torch {torch.__version__}, diffusers {diffusers.__version__}, "
                          f"transformers {transformers.__version__}, weight scale {WEIGHT_SCALE}\n")


def tok_dir_src():
    return os.path.join(ROOT, "fixtures", "clip-bpe")


def finite_check(pipe, size):
    """Fails unless a small 1-step image decodes to finite, non-constant pixels."""
    import torch

    with torch.no_grad():
        img = pipe(PROMPT, num_inference_steps=1, guidance_scale=0.0, height=size, width=size,
                   generator=torch.Generator().manual_seed(SEED), output_type="pt").images
    if not torch.isfinite(img).all():
        sys.exit("error: the random pipeline decodes to inf/NaN; lower WEIGHT_SCALE")
    print(f"bench-imagine: {size}x{size} check: pixels in [{img.min():.3f}, {img.max():.3f}], "
          f"std {img.std():.3f}", file=sys.stderr)


def torch_child(a):
    """One diffusers process; prints one JSON line shaped like `plinth imagine --json`'s."""
    import diffusers
    import torch
    import transformers
    from diffusers import StableDiffusionPipeline

    torch.set_num_threads(a.threads)
    pipe = StableDiffusionPipeline.from_pretrained(a.model_dir, torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    marks = {}
    unet_s = []
    finite = []

    def timed(name, fn, after=None):
        def wrapper(*args, **kw):
            t = time.perf_counter()
            marks[name + "_start"] = t
            out = fn(*args, **kw)
            marks[name + "_end"] = time.perf_counter()
            if after:
                after(out, marks[name + "_end"] - t)
            return out
        return wrapper

    pipe.encode_prompt = timed("encode", pipe.encode_prompt)
    pipe.unet.forward = timed("unet", pipe.unet.forward, lambda _, s: unet_s.append(s))
    # The check runs after the timer has stopped; a NaN image would make the timing meaningless.
    pipe.vae.decode = timed("decode", pipe.vae.decode,
                            lambda out, _: finite.append(bool(torch.isfinite(out[0]).all())))

    def call(steps):
        return pipe(PROMPT, num_inference_steps=steps, guidance_scale=0.0, height=a.size, width=a.size,
                    generator=torch.Generator().manual_seed(SEED), output_type="pil").images[0]

    call(1)  # warm-up, untimed
    marks.clear()
    unet_s.clear()
    finite.clear()
    t = time.perf_counter()
    image = call(a.steps)
    total = time.perf_counter() - t
    if not all(finite):
        sys.exit("error: diffusers decoded inf/NaN pixels")
    if len(unet_s) != a.steps:  # guidance 0: one UNet call per step, no unconditional batch
        sys.exit(f"error: {len(unet_s)} UNet calls for {a.steps} steps")
    if a.out:
        image.save(a.out)
    print(json.dumps({
        "seconds": {"text_encoder": marks["encode_end"] - marks["encode_start"],
                    "denoise": marks["decode_start"] - marks["encode_end"],
                    "vae_decode": marks["decode_end"] - marks["decode_start"], "total": total,
                    "unet_forwards": sum(unet_s)},
        "unet_calls": len(unet_s), "peak_rss_mb": peak_rss_mb(),
        "version": f"torch {torch.__version__}, diffusers {diffusers.__version__}, "
                   f"transformers {transformers.__version__}"}))


def flatten(r, steps):
    """One run's JSON line -> the reported metrics."""
    s = r["seconds"]
    return {"total": s["total"], "unet_step": s["denoise"] / steps, "vae_decode": s["vae_decode"],
            "text_encoder": s["text_encoder"], "peak_rss_mb": r.get("peak_rss_mb")}


def check_settings(got, steps, size):
    """Stops when plinth did not run what was asked (a default overriding a flag)."""
    want = {"steps": steps, "width": size, "height": size, "guidance": 0.0, "seed": SEED}
    wrong = {k: (got[k], v) for k, v in want.items() if k in got and got[k] != v}
    if wrong:
        sys.exit(f"error: plinth ran other settings than asked ((got, asked) by key): {wrong}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--plinth", default="target/release/plinth")
    ap.add_argument("--steps", default="1,4", help="comma-separated step counts")
    ap.add_argument("--size", type=int, default=512, help="width = height in pixels, a multiple of 8")
    ap.add_argument("--pairs", type=int, default=2, help="alternating rounds of both engines per step count")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--engines", default="plinth,diffusers", help="which to run: plinth, diffusers or both")
    ap.add_argument("--cache", default=DEFAULT_CACHE)
    ap.add_argument("--out-dir", default="/tmp", help="where the images go (overwritten each run)")
    ap.add_argument("--dry-run", action="store_true", help="print the commands, build and run nothing")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    ap.add_argument("--torch-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--model-dir", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.torch_child:
        a.steps = int(a.steps)
        return torch_child(a)
    steps = [int(s) for s in a.steps.split(",") if s.strip()]
    engines = [e.strip() for e in a.engines.split(",") if e.strip()]
    if a.pairs < 1 or a.threads < 1 or not steps or min(steps) < 1:
        ap.error("--pairs, --threads and every step count must be at least 1")
    if a.size < 64 or a.size % 8:
        ap.error("--size must be a multiple of 8, at least 64")
    if not engines or set(engines) - {"plinth", "diffusers"}:
        ap.error("--engines takes plinth, diffusers or plinth,diffusers")
    d = os.path.join(a.cache, MODEL_NAME)
    if not a.dry_run:
        make_model(d)

    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), MKL_NUM_THREADS=str(a.threads))
    load = os.getloadavg()
    results = []
    for n in steps:
        cmds = {
            "plinth": [a.plinth, "--threads", str(a.threads), "imagine", PROMPT, "-m", d, "-o",
                       os.path.join(a.out_dir, f"bench-imagine-plinth-{n}.png"), "--steps", str(n),
                       "--guidance", "0", "--seed", str(SEED), "-W", str(a.size), "-H", str(a.size),
                       "--scheduler", "euler", "--json"],
            "diffusers": [sys.executable, os.path.abspath(__file__), "--torch-child", "--threads", str(a.threads),
                          "--steps", str(n), "--size", str(a.size), "--model-dir", d,
                          "--out", os.path.join(a.out_dir, f"bench-imagine-diffusers-{n}.png")],
        }
        if a.dry_run:
            for e in engines:
                print(shlex.join(cmds[e]))
            continue
        runs = {e: [] for e in engines}
        for i in range(a.pairs):
            for e in engines:
                # plinth imagine --json reports its own peak RSS (VmHWM), as the child does.
                r = run_json(cmds[e], env)
                if e == "plinth":
                    check_settings(r.get("settings", {}), n, a.size)
                runs[e].append(r)
                m = flatten(r, n)
                print(f"{n} step(s) round {i + 1}/{a.pairs} {e:9}: total {m['total']:7.2f} s  UNet "
                      f"{m['unet_step']:6.2f} s/step  VAE {m['vae_decode']:6.2f} s  text {m['text_encoder']:5.2f} s  "
                      f"rss {m['peak_rss_mb']:6.0f} MB", file=sys.stderr)
        med = {e: {k: round(statistics.median(flatten(r, n)[k] for r in rs), 3) for k, _ in METRICS}
               for e, rs in runs.items()}
        ratio = None
        if len(engines) == 2:
            ratio = {k: round(med["plinth"][k] / med["diffusers"][k], 3) if med["diffusers"][k] else None
                     for k, _ in METRICS}
        results.append({"steps": n, "median": med, "ratio_plinth_over_diffusers": ratio, "runs": runs})
    if a.dry_run:
        return
    info = {"cpu": cpu_model(), "logical_cpus": os.cpu_count(), "threads": a.threads, "pairs": a.pairs,
            "size": f"{a.size}x{a.size}", "guidance": 0.0, "seed": SEED, "prompt": PROMPT, "model": d,
            "load_avg_at_start": [round(x, 2) for x in load],
            "load_avg_at_end": [round(x, 2) for x in os.getloadavg()]}
    if "diffusers" in engines:
        info["diffusers"] = results[0]["runs"]["diffusers"][0]["version"]
    if a.json:
        print(json.dumps({**info, "results": results}))
        return
    print(f"plinth vs diffusers ({info.get('diffusers', 'not run')}) on a random-weight pipeline with "
          f"SD-Turbo geometry, {info['size']}, guidance 0, Euler")
    print(f"CPU: {info['cpu']} ({info['logical_cpus']} logical CPUs), threads {a.threads}, medians of "
          f"{a.pairs} rounds (fresh processes, alternating); load average {info['load_avg_at_start'][0]} at "
          f"start, {info['load_avg_at_end'][0]} at end")
    print(f"{'steps':>5}  {'metric':20}" + "".join(f"{e:>11}" for e in engines)
          + (f"{'plinth/diffusers':>18}" if len(engines) == 2 else ""))
    for r in results:
        for k, label in METRICS:
            row = f"{r['steps']:>5}  {label:20}" + "".join(f"{r['median'][e][k]:>11.2f}" for e in engines)
            if r["ratio_plinth_over_diffusers"]:
                q = r["ratio_plinth_over_diffusers"][k]
                row += f"{'n/a' if q is None else f'{q:.2f}x':>18}"
            print(row)
    print("every row is lower-is-better; a ratio below 1 favours plinth.")
    print("note: diffusers' peak RSS includes the Python interpreter and torch itself.")


if __name__ == "__main__":
    main()
