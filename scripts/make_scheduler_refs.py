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
Seeded: rerunning reproduces the files (given the same library versions, in refs.json).
"""
import json
import os

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
    meta = {"diffusers": diffusers.__version__, "torch": torch.__version__, "pool": POOL, "cases": cases}
    with open(os.path.join(OUT, "refs.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    save_file(tensors, os.path.join(OUT, "loops.safetensors"))
    print(f"wrote {len(cases)} cases to {OUT}")


if __name__ == "__main__":
    main()
