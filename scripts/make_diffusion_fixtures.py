"""Tiny random-weight Stable Diffusion models for plinth's diffusion parity tests.

Builds, seeded, with diffusers + transformers (diffusers folder layout):
  fixtures/tiny-sd     SD 2.x style: unet (CrossAttnDown + Down, attention_head_dim [2, 4] used as
                       head counts, linear projections), vae, text_encoder (CLIPTextModel, gelu),
                       tokenizer, scheduler (DDIM), model_index.json
  fixtures/tiny-sd15   SD 1.5 style unet (attention_head_dim 8, conv projections) and a quick_gelu
                       text_encoder
  fixtures/tiny-sdxl   SDXL style: unet (Down + CrossAttnDown, transformer_layers_per_block [1, 2],
                       text_time added conditioning), vae (scaling 0.13025), text_encoder
                       (quick_gelu) + text_encoder_2 (CLIPTextModelWithProjection, gelu),
                       tokenizer + tokenizer_2, scheduler (EulerAncestral, trailing)
Weights are rounded to f16 and saved as f16 (`diffusion_pytorch_model.safetensors`,
`model.safetensors`) to keep the fixtures small; every reference is computed in f32 from the
rounded weights, so a loader that widens f16 to f32 reproduces them exactly. Norm weights and all
biases are perturbed (0.1 * N(0,1)) so a runtime that drops one fails.

reference.safetensors (per fixture; inputs stored beside outputs):
  unet_sample [2,4,8,12], unet_timestep [1] (f64), unet_ehs [2,77,C], unet_out [2,4,8,12];
  unet_odd_sample [1,4,9,9], unet_odd_timestep, unet_odd_ehs, unet_odd_out (odd latent size,
  exercising upsample_size); SDXL also unet_text_embeds [2,P], unet_time_ids [2,6] (used by
  both calls) — SDXL's UNet requires them.
  vae_latents [1,4,8,8] (already divided by scaling_factor), vae_decoded [1,3,16,16] (tiny-sd,
  tiny-sdxl).
  text_ids [2,77] (int64, from the tokenizer, padded to 77), text_last_hidden_state,
  text_penultimate (hidden_states[-2]), text_pooled; for text_encoder_2 the same with prefix
  text2_ and text2_text_embeds (projection).
pipeline.safetensors + pipeline.json (tiny-sd, tiny-sdxl): full diffusers pipeline runs (call
arguments in the JSON): input latents, final latents, per-step latents, the float image
(output_type "np", [1,H,W,3]) and what encode_prompt returns.

The tokenizer is fixtures/clip-bpe (a small CLIP BPE vocabulary, scripts/make_clip_bpe_fixture.py),
saved as published checkpoints ship it: vocab.json + merges.txt, no tokenizer.json.

Rerun: /path/to/venv/bin/python scripts/make_diffusion_fixtures.py [--out fixtures]
(diffusers 0.42, transformers 5, torch). Deterministic: reruns give identical files.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

import diffusers
import transformers
from diffusers import (AutoencoderKL, DDIMScheduler, EulerAncestralDiscreteScheduler, EulerDiscreteScheduler,
                       StableDiffusionPipeline, StableDiffusionXLPipeline, UNet2DConditionModel)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

SEED = 0
ROOT = Path(__file__).resolve().parent.parent
PROMPTS = ["a red lighthouse at dawn", "blurry"]


def seed(s: int) -> torch.Generator:
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)
    return torch.Generator().manual_seed(s)


def randn(shape, s: int) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(s))


def finish(model: torch.nn.Module, s: int) -> torch.nn.Module:
    """Perturbs 1-d parameters, rounds every weight to f16 (stored as f16), eval mode."""
    g = torch.Generator().manual_seed(s)
    with torch.no_grad():
        for _, p in model.named_parameters():
            if p.dim() <= 1:
                p.add_(0.1 * torch.randn(p.shape, generator=g))
            p.copy_(p.half().float())
    return model.eval()


def save_f16(model, d: Path) -> None:
    """save_pretrained (config + safetensors), then rewrite the weights as f16."""
    model.save_pretrained(d, safe_serialization=True)
    for f in d.glob("*.safetensors"):
        from safetensors.torch import load_file
        t = load_file(f)
        save_file({k: v.half().contiguous() for k, v in t.items()}, f, metadata={"format": "pt"})


# --------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------

def tokenizer_src() -> Path:
    """The committed CLIP BPE tokenizer (scripts/make_clip_bpe_fixture.py writes it)."""
    src = ROOT / "fixtures" / "clip-bpe"
    if not (src / "vocab.json").exists():
        sys.exit("fixtures/clip-bpe is missing: run scripts/make_clip_bpe_fixture.py first")
    return src


def copy_tokenizer(src: Path, dst: Path) -> CLIPTokenizer:
    dst.mkdir(parents=True, exist_ok=True)
    for f in ["vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"]:
        if (src / f).exists():
            shutil.copy(src / f, dst / f)
    return CLIPTokenizer.from_pretrained(dst)


def text_config(tok: CLIPTokenizer, act: str, layers: int, proj: int | None = None) -> CLIPTextConfig:
    vocab = tok.get_vocab()
    kw = dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=48, num_hidden_layers=layers,
              num_attention_heads=4, max_position_embeddings=77, hidden_act=act,
              bos_token_id=vocab["<|startoftext|>"], eos_token_id=vocab["<|endoftext|>"],
              pad_token_id=tok.pad_token_id)
    if proj:
        kw["projection_dim"] = proj
    return CLIPTextConfig(**kw)


def text_refs(model, tok: CLIPTokenizer, prefix: str, ref: dict) -> None:
    ids = tok(PROMPTS, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        out = model(ids, output_hidden_states=True)
    ref[f"{prefix}_ids"] = ids.to(torch.int64)
    ref[f"{prefix}_last_hidden_state"] = out.last_hidden_state
    ref[f"{prefix}_penultimate"] = out.hidden_states[-2]
    if isinstance(model, CLIPTextModelWithProjection):
        ref[f"{prefix}_text_embeds"] = out.text_embeds
        # pooled (final-LN output at the eos position) is not returned with the projection.
        eos = (ids == model.config.eos_token_id).int().argmax(-1)
        ref[f"{prefix}_pooled"] = out.last_hidden_state[torch.arange(ids.shape[0]), eos]
    else:
        ref[f"{prefix}_pooled"] = out.pooler_output


# --------------------------------------------------------------------------
# UNet / VAE
# --------------------------------------------------------------------------

def unet_refs(unet: UNet2DConditionModel, ref: dict, cross: int, s: int, added_dim: int | None = None) -> None:
    def run(prefix: str, shape, t: float, k: int):
        sample, ehs = randn(shape, s + k), randn((shape[0], 77, cross), s + k + 1)
        kw = {}
        if added_dim is not None:
            te, ti = randn((shape[0], added_dim), s + k + 2), torch.tensor([[64.0, 64.0, 0.0, 0.0, 64.0, 64.0]] * shape[0])
            ti[0] = torch.tensor([96.0, 80.0, 4.0, 8.0, 64.0, 48.0])
            kw["added_cond_kwargs"] = {"text_embeds": te, "time_ids": ti}
            ref[f"{prefix}_text_embeds"], ref[f"{prefix}_time_ids"] = te, ti
        with torch.no_grad():
            out = unet(sample, torch.tensor(t, dtype=torch.float64), ehs, **kw).sample
        ref[f"{prefix}_sample"], ref[f"{prefix}_timestep"] = sample, torch.tensor([t], dtype=torch.float64)
        ref[f"{prefix}_ehs"], ref[f"{prefix}_out"] = ehs, out

    run("unet", (2, 4, 8, 12), 437.0, 10)
    run("unet_odd", (1, 4, 9, 9), 21.5, 20)


def vae_refs(vae: AutoencoderKL, ref: dict, s: int) -> None:
    z = randn((1, 4, 8, 8), s)
    with torch.no_grad():
        ref["vae_latents"], ref["vae_decoded"] = z, vae.decode(z).sample


SD_UNET = dict(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(16, 32), layers_per_block=2,
               down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
               cross_attention_dim=32, attention_head_dim=[2, 4], use_linear_projection=True, norm_num_groups=8,
               upcast_attention=True)
SD15_UNET = dict(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(16, 32), layers_per_block=1,
                 down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
                 cross_attention_dim=32, attention_head_dim=8, norm_num_groups=8)
SDXL_UNET = dict(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(16, 32), layers_per_block=1,
                 down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
                 transformer_layers_per_block=[1, 2], cross_attention_dim=64, attention_head_dim=[2, 4],
                 use_linear_projection=True, norm_num_groups=8, addition_embed_type="text_time",
                 addition_time_embed_dim=8, projection_class_embeddings_input_dim=6 * 8 + 32)
VAE = dict(in_channels=3, out_channels=3, block_out_channels=(16, 32), layers_per_block=1, latent_channels=4,
           norm_num_groups=8, down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
           sample_size=16)
SCHED = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000)


def quick_text_encoder(tok: CLIPTokenizer) -> CLIPTextModel:
    """The SD 1.5-style encoder; tiny-sd15 and tiny-sdxl share it (same bytes: git stores it once)."""
    seed(SEED + 10)
    return finish(CLIPTextModel(text_config(tok, "quick_gelu", 2)), SEED + 11)


def make_vae(**extra) -> AutoencoderKL:
    """tiny-sd and tiny-sdxl share the VAE weights (only the config differs)."""
    seed(SEED + 4)
    return finish(AutoencoderKL(**VAE, **extra), SEED + 5)


def np_image(img) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(img)).float()


def make_sd(out: Path, tok_src: Path) -> None:
    d = out / "tiny-sd"
    shutil.rmtree(d, ignore_errors=True)
    seed(SEED)
    tok = copy_tokenizer(tok_src, d / "tokenizer")
    te = finish(CLIPTextModel(text_config(tok, "gelu", 3)), SEED + 1)
    seed(SEED + 2)
    unet = finish(UNet2DConditionModel(**SD_UNET), SEED + 3)
    vae = make_vae()
    sched = DDIMScheduler(**SCHED, clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type="epsilon")
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=te, tokenizer=tok, unet=unet, scheduler=sched,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(d, safe_serialization=True)
    drop_tokenizer_json(d)
    for sub in ["unet", "vae", "text_encoder"]:
        save_f16(getattr(pipe, sub), d / sub)
    ref: dict = {}
    unet_refs(unet, ref, 32, 100)
    vae_refs(vae, ref, 200)
    text_refs(te, tok, "text", ref)
    save_file({k: v.contiguous() for k, v in ref.items()}, d / "reference.safetensors")

    # Full pipeline: DDIM, 3 steps, CFG 7.5, fixed latents.
    latents = randn((1, 4, 32, 32), 300)
    args = dict(prompt=PROMPTS[0], negative_prompt="", guidance_scale=7.5, num_inference_steps=3, height=64, width=64,
                eta=0.0, output_type="np", scheduler="DDIMScheduler (scheduler/scheduler_config.json)")
    steps: list[torch.Tensor] = []

    def cb(p, i, t, kw):
        steps.append(kw["latents"].clone())
        return kw

    with torch.no_grad():
        img = pipe(prompt=args["prompt"], negative_prompt="", guidance_scale=7.5, num_inference_steps=3, height=64,
                   width=64, eta=0.0, latents=latents.clone(), output_type="np", callback_on_step_end=cb).images
        pe, ne = pipe.encode_prompt(args["prompt"], "cpu", 1, True, "")
    pref = {"latents": latents, "final_latents": steps[-1].clone(), "image": np_image(img), "prompt_embeds": pe,
            "negative_prompt_embeds": ne, "timesteps": pipe.scheduler.timesteps.to(torch.int64)}
    pref.update({f"latents_step_{i}": s for i, s in enumerate(steps)})
    save_file({k: v.contiguous() for k, v in pref.items()}, d / "pipeline.safetensors")
    (d / "pipeline.json").write_text(json.dumps(args, indent=1) + "\n")


def make_sd15(out: Path, tok_src: Path) -> None:
    d = out / "tiny-sd15"
    shutil.rmtree(d, ignore_errors=True)
    tok = CLIPTokenizer.from_pretrained(tok_src)
    te = quick_text_encoder(tok)
    seed(SEED + 12)
    unet = finish(UNet2DConditionModel(**SD15_UNET), SEED + 13)
    save_f16(unet, d / "unet")
    save_f16(te, d / "text_encoder")
    ref: dict = {}
    unet_refs(unet, ref, 32, 400)
    text_refs(te, tok, "text", ref)
    save_file({k: v.contiguous() for k, v in ref.items()}, d / "reference.safetensors")


def make_sdxl(out: Path, tok_src: Path) -> None:
    d = out / "tiny-sdxl"
    shutil.rmtree(d, ignore_errors=True)
    seed(SEED + 20)
    tok = copy_tokenizer(tok_src, d / "tokenizer")
    tok2 = copy_tokenizer(tok_src, d / "tokenizer_2")
    te = quick_text_encoder(tok)
    te2 = finish(CLIPTextModelWithProjection(text_config(tok2, "gelu", 3, proj=32)), SEED + 22)
    seed(SEED + 23)
    unet = finish(UNet2DConditionModel(**SDXL_UNET), SEED + 24)
    vae = make_vae(scaling_factor=0.13025, force_upcast=True)
    sched = EulerAncestralDiscreteScheduler(**SCHED, timestep_spacing="trailing", steps_offset=1,
                                            prediction_type="epsilon")
    pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=te, text_encoder_2=te2, tokenizer=tok, tokenizer_2=tok2,
                                     unet=unet, scheduler=sched, force_zeros_for_empty_prompt=True,
                                     add_watermarker=False)
    pipe.save_pretrained(d, safe_serialization=True)
    drop_tokenizer_json(d)
    for sub in ["unet", "vae", "text_encoder", "text_encoder_2"]:
        save_f16(getattr(pipe, sub), d / sub)
    ref: dict = {}
    unet_refs(unet, ref, 64, 500, added_dim=32)
    vae_refs(vae, ref, 600)
    text_refs(te, tok, "text", ref)
    text_refs(te2, tok2, "text2", ref)
    save_file({k: v.contiguous() for k, v in ref.items()}, d / "reference.safetensors")

    # Full pipeline: Euler (trailing), 2 steps, without CFG and with CFG 5.0 + negative prompt.
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config, timestep_spacing="trailing")
    latents = randn((1, 4, 32, 32), 700)
    runs = {"nocfg": dict(guidance_scale=0.0, negative_prompt=None), "cfg": dict(guidance_scale=5.0, negative_prompt="blurry")}
    pref = {"latents": latents}
    for name, kw in runs.items():
        steps: list[torch.Tensor] = []

        def cb(p, i, t, k):
            steps.append(k["latents"].clone())
            return k

        with torch.no_grad():
            img = pipe(prompt=PROMPTS[0], num_inference_steps=2, height=64, width=64, latents=latents.clone(),
                       output_type="np", callback_on_step_end=cb, **kw).images
            pe, ne, pp, npp = pipe.encode_prompt(PROMPTS[0], device="cpu", num_images_per_prompt=1,
                                                 do_classifier_free_guidance=kw["guidance_scale"] > 1.0,
                                                 negative_prompt=kw["negative_prompt"])
        pref.update({f"{name}_image": np_image(img), f"{name}_final_latents": steps[-1].clone(), f"{name}_prompt_embeds": pe,
                     f"{name}_pooled_prompt_embeds": pp, f"{name}_timesteps": pipe.scheduler.timesteps.float()})
        pref.update({f"{name}_latents_step_{i}": s for i, s in enumerate(steps)})
        if ne is not None:
            pref[f"{name}_negative_prompt_embeds"] = ne
            pref[f"{name}_negative_pooled_prompt_embeds"] = npp
        pref[f"{name}_add_time_ids"] = torch.tensor([[64.0, 64.0, 0.0, 0.0, 64.0, 64.0]])
    save_file({k: v.contiguous() for k, v in pref.items()}, d / "pipeline.safetensors")
    args = dict(prompt=PROMPTS[0], num_inference_steps=2, height=64, width=64, output_type="np",
                scheduler="EulerDiscreteScheduler.from_config(scheduler_config, timestep_spacing='trailing')",
                runs={k: v for k, v in runs.items()}, original_size=[64, 64], crops_coords_top_left=[0, 0],
                target_size=[64, 64])
    (d / "pipeline.json").write_text(json.dumps(args, indent=1) + "\n")


def drop_tokenizer_json(d: Path) -> None:
    """Published diffusers checkpoints (SD-Turbo, SDXL-Turbo) ship their tokenizers as
    vocab.json + merges.txt only; transformers' save_pretrained adds a tokenizer.json, which
    would let plinth's loader skip the path real checkpoints take."""
    for sub in ["tokenizer", "tokenizer_2"]:
        (d / sub / "tokenizer.json").unlink(missing_ok=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(ROOT / "fixtures"))
    out = Path(ap.parse_args().out)
    torch.set_num_threads(1)
    src = tokenizer_src()
    make_sd(out, src)
    make_sd15(out, src)
    make_sdxl(out, src)
    print(f"diffusers {diffusers.__version__}, transformers {transformers.__version__}, torch {torch.__version__}")


if __name__ == "__main__":
    main()
