#!/usr/bin/env python3
"""Writes fixtures/schedulers/: diffusers' noise schedulers (EulerAncestralDiscrete,
EulerDiscrete, DDIM) run on fixed arrays, as references for
crates/plinth-models/tests/schedulers.rs.

Run: /work/refvenv/bin/python scripts/make_scheduler_refs.py   (torch, diffusers, numpy, safetensors)

refs.json: per case, the scheduler_config.json-like dict, the kind plinth runs it as, eta, and
for every step count diffusers' `timesteps`, `sigmas` (Euler family) and `init_noise_sigma`.
loops.safetensors: the inputs shared by all loops (`sample0` [1,4,8,8], pools of model outputs
and N(0,1) noise; step i uses pool[i % POOL]) and, per case and step count,
`{case}/{steps}/scaled` and `{case}/{steps}/prev` ([steps,1,4,8,8]): scale_model_input's output
and prev_sample after each step, the loop fed by its own outputs like a pipeline.
refs.json also holds `noise_seed0`/`noise_seed42`: the first values of plinth's NoiseRng (ChaCha8
keyed by the seed's little-endian bytes, Box-Muller) from the from-the-specification ChaCha8
below, an independent check of the Rust stream.
Seeded: rerunning reproduces the files (given the same library versions, in refs.json).
"""
import json
import math
import os
import struct

import diffusers
import numpy as np
import torch
from diffusers import DDIMScheduler, EulerAncestralDiscreteScheduler, EulerDiscreteScheduler
from diffusers.schedulers import scheduling_euler_ancestral_discrete as ea_mod
from safetensors.numpy import save_file

OUT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "schedulers"))
STEPS = [1, 2, 4, 25, 50]
LOOP_STEPS = [1, 2, 4, 25]  # 50-step loops only for the cases marked `loop50`, to keep the files small
POOL = 8
SHAPE = (1, 4, 8, 8)

SD = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "num_train_timesteps": 1000}
CASES = [
    # name, class, config (besides _class_name), plinth kind, eta, loop50
    ("sd15_euler", "EulerDiscreteScheduler",
     {**SD, "timestep_spacing": "leading", "steps_offset": 1, "prediction_type": "epsilon"}, "euler", 0.0, True),
    ("sd15_ddim_eta", "DDIMScheduler",
     {**SD, "timestep_spacing": "leading", "steps_offset": 1, "set_alpha_to_one": False, "clip_sample": False},
     "ddim", 0.7, False),
    ("sd21_ddim_v", "DDIMScheduler",
     {**SD, "timestep_spacing": "leading", "steps_offset": 1, "set_alpha_to_one": False, "clip_sample": False,
      "prediction_type": "v_prediction"}, "ddim", 0.0, True),
    ("sdturbo_euler", "EulerDiscreteScheduler",
     {**SD, "timestep_spacing": "trailing", "steps_offset": 1, "interpolation_type": "linear",
      "use_karras_sigmas": False, "prediction_type": "epsilon"}, "euler", 0.0, False),
    ("sdxlturbo_ea", "EulerAncestralDiscreteScheduler",
     {**SD, "timestep_spacing": "trailing", "steps_offset": 1, "prediction_type": "epsilon"}, "euler-a", 0.0, True),
    ("linspace_ea_v", "EulerAncestralDiscreteScheduler",
     {"beta_schedule": "linear", "prediction_type": "v_prediction"}, "euler-a", 0.0, False),
    ("cos_ddim_clip", "DDIMScheduler",
     {"beta_schedule": "squaredcos_cap_v2", "clip_sample": True, "clip_sample_range": 1.5,
      "timestep_spacing": "linspace"}, "ddim", 0.0, False),
    ("cos_euler_v", "EulerDiscreteScheduler",
     {"beta_schedule": "squaredcos_cap_v2", "prediction_type": "v_prediction", "timestep_spacing": "linspace"},
     "euler", 0.0, False),
    ("zsnr_ddim_v_trailing", "DDIMScheduler",
     {**SD, "timestep_spacing": "trailing", "rescale_betas_zero_snr": True, "prediction_type": "v_prediction",
      "clip_sample": False}, "ddim", 0.0, False),
    ("zsnr_euler_v", "EulerDiscreteScheduler",
     {**SD, "timestep_spacing": "trailing", "rescale_betas_zero_snr": True, "prediction_type": "v_prediction"},
     "euler", 0.0, False),
    ("sample_ddim", "DDIMScheduler",
     {**SD, "prediction_type": "sample", "clip_sample": False, "timestep_spacing": "trailing"}, "ddim", 0.3, False),
    ("sample_euler", "EulerDiscreteScheduler", {**SD, "prediction_type": "sample"}, "euler", 0.0, False),
]
CLASSES = {
    "EulerDiscreteScheduler": EulerDiscreteScheduler,
    "EulerAncestralDiscreteScheduler": EulerAncestralDiscreteScheduler,
    "DDIMScheduler": DDIMScheduler,
}


def _chacha8_block(key: bytes, counter: int) -> list:
    """One ChaCha block with 8 rounds (Bernstein's layout: 64-bit counter in words 12-13, zero nonce)."""
    m = 0xFFFFFFFF

    def qr(w, a, b, c, d):
        for x, y, z, r in ((a, b, d, 16), (c, d, b, 12), (a, b, d, 8), (c, d, b, 7)):
            w[x] = (w[x] + w[y]) & m
            w[z] ^= w[x]
            w[z] = ((w[z] << r) | (w[z] >> (32 - r))) & m

    st = [0x61707865, 0x3320646E, 0x79622D32, 0x6B206574] + list(struct.unpack("<8I", key))
    st += [counter & m, counter >> 32, 0, 0]
    w = st[:]
    for _ in range(4):
        qr(w, 0, 4, 8, 12), qr(w, 1, 5, 9, 13), qr(w, 2, 6, 10, 14), qr(w, 3, 7, 11, 15)
        qr(w, 0, 5, 10, 15), qr(w, 1, 6, 11, 12), qr(w, 2, 7, 8, 13), qr(w, 3, 4, 9, 14)
    return [(a + b) & m for a, b in zip(w, st)]


def noise_rng_normals(seed: int, n: int) -> list:
    """plinth's NoiseRng: u64 draws (low word first), Box-Muller pairs, rounded to float32."""
    key = struct.pack("<Q", seed) + bytes(24)
    draws = []
    for block in range((n + 7) // 8 + 1):
        w = _chacha8_block(key, block)
        draws += [w[i] | (w[i + 1] << 32) for i in range(0, 16, 2)]
    out = []
    for i in range(0, n, 2):
        u1 = ((draws[i] >> 11) + 1) * 2.0**-53
        u2 = (draws[i + 1] >> 11) * 2.0**-53
        r = math.sqrt(-2.0 * math.log(u1))
        out += [float(np.float32(r * math.cos(2 * math.pi * u2))), float(np.float32(r * math.sin(2 * math.pi * u2)))]
    return out[:n]


def tolist(t):
    return [float(x) for x in (t.numpy() if isinstance(t, torch.Tensor) else np.asarray(t)).reshape(-1)]


def run_loop(cls, cfg, kind, eta, steps, sample0, mo_pool, nz_pool):
    s = cls(**cfg)
    s.set_timesteps(steps)
    sample = sample0 * s.init_noise_sigma
    scaled_out, prev_out = [], []
    for i, t in enumerate(s.timesteps):
        noise = nz_pool[i % POOL]
        mo = mo_pool[i % POOL]
        scaled = s.scale_model_input(sample, t)
        if kind == "euler-a":
            ea_mod.randn_tensor = lambda *a, _n=noise, **k: _n.clone()
            out = s.step(mo, t, sample)
        elif kind == "ddim":
            out = s.step(mo, t, sample, eta=eta, variance_noise=noise if eta > 0 else None)
        else:
            out = s.step(mo, t, sample)
        sample = out.prev_sample
        scaled_out.append(scaled.numpy().copy())
        prev_out.append(sample.numpy().copy())
    return np.stack(scaled_out), np.stack(prev_out)


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(20261130)
    sample0 = torch.randn(SHAPE, dtype=torch.float32)
    mo_pool = torch.randn((POOL,) + SHAPE, dtype=torch.float32)
    nz_pool = torch.randn((POOL,) + SHAPE, dtype=torch.float32)
    tensors = {"sample0": sample0.numpy(), "model_output_pool": mo_pool.numpy(), "noise_pool": nz_pool.numpy()}
    cases = []
    for name, cls_name, cfg, kind, eta, loop50 in CASES:
        cls = CLASSES[cls_name]
        schedules = {}
        for steps in STEPS:
            s = cls(**cfg)
            s.set_timesteps(steps)
            schedules[str(steps)] = {
                "timesteps": tolist(s.timesteps),
                "sigmas": tolist(s.sigmas) if hasattr(s, "sigmas") else [],
                "init_noise_sigma": float(s.init_noise_sigma),
            }
        loops = LOOP_STEPS + ([50] if loop50 else [])
        for steps in loops:
            scaled, prev = run_loop(cls, cfg, kind, eta, steps, sample0, mo_pool, nz_pool)
            tensors[f"{name}/{steps}/scaled"] = scaled
            tensors[f"{name}/{steps}/prev"] = prev
        cases.append({
            "name": name,
            "config": {"_class_name": cls_name, **cfg},
            "kind": kind,
            "eta": eta,
            "loops": loops,
            "schedules": schedules,
        })
    meta = {"diffusers": diffusers.__version__, "torch": torch.__version__, "pool": POOL,
            "noise_seed0": noise_rng_normals(0, 8), "noise_seed42": noise_rng_normals(42, 8), "cases": cases}
    with open(os.path.join(OUT, "refs.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    save_file(tensors, os.path.join(OUT, "loops.safetensors"))
    print(f"wrote {len(cases)} cases to {OUT}")


if __name__ == "__main__":
    main()
