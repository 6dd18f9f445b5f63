#!/usr/bin/env python3
"""Writes fixtures/images/: small test images, broken files, and the reference outputs of
Pillow's resize and of transformers' PIL-backend image processors that
crates/plinth-image/tests/ compare against.

Run: /work/refvenv/bin/python scripts/make_image_fixtures.py
(Pillow, numpy, safetensors, transformers; torchvision only for the PIL-vs-torchvision
measurement, optional: put it on PYTHONPATH and the figure lands in manifest.json.)

Everything is seeded: rerunning reproduces the files byte for byte (given the same library
versions, which manifest.json records).
"""
import io
import json
import os
import struct
import sys
import types
import zlib

import numpy as np
import PIL
from PIL import Image
from safetensors.numpy import save_file

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "images")
OUT = os.path.normpath(OUT)
rng = np.random.default_rng(20240607)

FILTERS = {  # plinth name -> Pillow Resampling value
    "nearest": Image.Resampling.NEAREST,
    "box": Image.Resampling.BOX,
    "bilinear": Image.Resampling.BILINEAR,
    "hamming": Image.Resampling.HAMMING,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


def fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def fnv1a64_np(a: np.ndarray) -> str:
    # Vectorised FNV-1a would not be sequential; the arrays are small, so loop in Python
    # over bytes converted once.
    return f"{fnv1a64(a.astype(np.uint8).tobytes()):016x}"


def pattern(w, h, channels):
    """Gradients + edges + noise: smooth parts test interpolation, edges test ringing/clipping."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    planes = []
    for c in range(channels):
        g = (x * (37 + 11 * c) / max(w, 1) + y * (53 - 7 * c) / max(h, 1)) * 255 / 90
        g += 60 * (((x // 5 + y // 3 + c) % 2) - 0.5)  # checker edges
        g += rng.normal(0, 25, size=(h, w))
        planes.append(np.clip(g, 0, 255))
    return np.stack(planes, -1).astype(np.uint8)


def save(img: Image.Image, name, **kw):
    path = os.path.join(OUT, name)
    img.save(path, **kw)
    return name


def make_sources():
    """(file name, lossless?) for every image the tests decode."""
    names = []
    names.append(save(Image.fromarray(pattern(1, 1, 3), "RGB"), "a_1x1.png"))
    names.append(save(Image.fromarray(pattern(7, 300, 3), "RGB"), "b_7x300.png"))
    rgba = pattern(301, 13, 4)
    rgba[..., 3] = np.linspace(0, 255, 301, dtype=np.float64)[None, :].astype(np.uint8)
    rgba[0, :, 3] = 0
    rgba[1, :, 3] = 255
    names.append(save(Image.fromarray(rgba, "RGBA"), "c_301x13_rgba.png"))
    names.append(save(Image.fromarray(pattern(97, 61, 1)[..., 0], "L"), "d_97x61_gray.png"))
    pal = Image.fromarray(pattern(640, 17, 3), "RGB").quantize(colors=37, dither=Image.Dither.NONE)
    names.append(save(pal, "e_640x17_palette.png"))
    names.append(save(Image.fromarray(pattern(33, 33, 3), "RGB"), "f_33x33.webp", lossless=True, quality=100))
    f1 = Image.fromarray(pattern(150, 110, 3), "RGB").quantize(colors=64, dither=Image.Dither.NONE)
    f2 = Image.fromarray(255 - pattern(150, 110, 3), "RGB").quantize(colors=64, dither=Image.Dither.NONE)
    names.append(save(f1, "g_150x110_2frames.gif", save_all=True, append_images=[f2], duration=100, loop=0))
    names.append(save(Image.fromarray(pattern(500, 2, 3), "RGB"), "h_500x2.png"))
    la = np.stack([pattern(40, 90, 1)[..., 0], rng.integers(0, 256, (90, 40)).astype(np.uint8)], -1)
    names.append(save(Image.fromarray(la, "LA"), "i_40x90_gray_alpha.png"))
    wa = pattern(120, 80, 4)
    names.append(save(Image.fromarray(wa, "RGBA"), "j_120x80_rgba.webp", lossless=True, quality=100))
    ptr = Image.fromarray(pattern(45, 150, 3), "RGB").quantize(colors=16, dither=Image.Dither.NONE)
    names.append(save(ptr, "k_45x150_palette_trns.png", transparency=3))
    # Every (value, alpha) pair once: the RGB conversion must match Pillow's alpha_composite
    # integer arithmetic exactly.
    v = np.arange(256, dtype=np.uint8)
    grid = np.zeros((256, 256, 4), np.uint8)
    grid[..., 0] = v[None, :]
    grid[..., 1] = 255 - v[None, :]
    grid[..., 2] = (v[None, :].astype(int) * 7 % 256).astype(np.uint8)
    grid[..., 3] = v[:, None]
    names.append(save(Image.fromarray(grid, "RGBA"), "l_256x256_alpha_grid.png"))
    names.append(save(Image.fromarray(pattern(150, 100, 3), "RGB"), "m_150x100.png"))
    names.append(save(Image.fromarray(pattern(61, 97, 3), "RGB"), "n_61x97.jpg", quality=90))
    return names


def make_broken():
    png = open(os.path.join(OUT, "d_97x61_gray.png"), "rb").read()
    broken = {}
    broken["bad_truncated.png"] = png[: len(png) // 2]
    # Valid signature and IHDR, garbage compressed data (CRC fixed so only the zlib stream fails).
    idat = b"\x78\x9c" + bytes(rng.integers(0, 256, 200, dtype=np.uint8))
    broken["bad_corrupt.png"] = png_bytes(300, 200, 2, idat)
    broken["bad_not_image.txt"] = b"hello, this is not an image\n" * 4
    broken["bad_empty.png"] = b""
    # A decompression bomb's header: 30000x30000 RGB, but only a few bytes of data.
    broken["bad_bomb_30000x30000.png"] = png_bytes(30000, 30000, 2, zlib.compress(b"\x00" * 100))
    jpg = open(os.path.join(OUT, "n_61x97.jpg"), "rb").read()
    broken["bad_truncated.jpg"] = jpg[:200]
    for name, data in broken.items():
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)
    return sorted(broken)


def png_bytes(w, h, color_type, idat):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 8, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def to_rgb(img: Image.Image) -> np.ndarray:
    from transformers.image_transforms import convert_to_rgb

    return convert_to_rgb(img, return_numpy=True)


def resize_targets(w, h):
    t = [(1, 1), (1, h), (w, 1), (2 * w + 1, h), (w, 3 * h), (w // 2 + 1, h // 2 + 1),
         (w // 3 + 1, h // 7 + 1), (17, 23), (w + 1, max(1, h - 1)), (64, 5), (5, 64),
         (max(1, w - 1), h + 2), (w * 5 // 4 + 1, h * 4 // 5 + 1)]
    seen, out = set(), []
    for tw, th in t:
        tw, th = min(max(tw, 1), 700), min(max(th, 1), 700)
        if (tw, th) not in seen:
            seen.add((tw, th))
            out.append((tw, th))
    return out


def main():
    os.makedirs(OUT, exist_ok=True)
    for f in os.listdir(OUT):
        if f.endswith((".png", ".jpg", ".webp", ".gif", ".txt", ".safetensors")) or f == "manifest.json":
            os.remove(os.path.join(OUT, f))
    sources = make_sources()
    broken = make_broken()
    lossless = [s for s in sources if not s.endswith(".jpg")]

    decoded = {}
    for s in sources:
        im = Image.open(os.path.join(OUT, s))
        decoded[s] = np.ascontiguousarray(to_rgb(im))
    save_file({k: v for k, v in decoded.items()}, os.path.join(OUT, "decoded_rgb.safetensors"))

    # Pillow resize: full outputs for one target per (image, filter), FNV-1a hashes for many.
    full, hashes = {}, {}
    for s in lossless:
        arr = decoded[s]
        h, w = arr.shape[:2]
        pil = Image.fromarray(arr, "RGB")
        for fname, fval in FILTERS.items():
            tw, th = max(1, min(37, w * 3 // 2 + 1)), max(1, min(29, h * 3 // 2 + 1))
            full[f"{s}/{fname}/{tw}x{th}"] = np.ascontiguousarray(np.array(pil.resize((tw, th), fval)))
            for tw, th in resize_targets(w, h):
                out = np.array(pil.resize((tw, th), fval))
                hashes[f"{s}/{fname}/{tw}x{th}"] = fnv1a64_np(out)
    save_file(full, os.path.join(OUT, "resize_full.safetensors"))

    manifest = {
        "versions": {"pillow": PIL.__version__, "numpy": np.__version__},
        "sources": sources,
        "lossless": lossless,
        "broken": broken,
        "resize_hashes": hashes,
        "processors": {},
    }
    import transformers

    manifest["versions"]["transformers"] = transformers.__version__
    run_processors(manifest, lossless)
    manifest["idefics3_prompts"] = idefics3_prompts()
    with open(os.path.join(OUT, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    print(f"wrote {len(os.listdir(OUT))} files, {total / 1e6:.2f} MB, into {OUT}")


PROCESSORS = {
    # name: (config, images it runs on)
    "clip_small": ({"image_processor_type": "CLIPImageProcessor", "do_resize": True, "size": {"shortest_edge": 40},
                    "resample": 3, "do_center_crop": True, "crop_size": {"height": 32, "width": 32},
                    "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
                    "image_mean": [0.48145466, 0.4578275, 0.40821073],
                    "image_std": [0.26862954, 0.26130258, 0.27577711], "do_convert_rgb": True}, None),
    "clip_default": ({"image_processor_type": "CLIPImageProcessor", "crop_size": 224, "size": 224,
                      "do_center_crop": True, "do_normalize": True, "do_resize": True, "resample": 3,
                      "image_mean": [0.48145466, 0.4578275, 0.40821073],
                      "image_std": [0.26862954, 0.26130258, 0.27577711]}, ["m_150x100.png"]),
    # No resize: center crop pads small images with zeros; no normalisation; lanczos unused.
    "clip_crop_pad": ({"image_processor_type": "CLIPImageProcessorFast", "do_resize": False,
                       "do_center_crop": True, "crop_size": {"height": 24, "width": 36},
                       "do_normalize": False, "resample": 1},
                      ["a_1x1.png", "b_7x300.png", "f_33x33.webp", "d_97x61_gray.png"]),
    "siglip_small": ({"image_processor_type": "SiglipImageProcessor", "do_resize": True,
                      "size": {"height": 48, "width": 48}, "resample": 3, "do_rescale": True,
                      "rescale_factor": 0.00392156862745098, "do_normalize": True,
                      "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}, None),
    "siglip_bilinear": ({"image_processor_type": "SiglipImageProcessor", "size": {"height": 20, "width": 44},
                         "resample": 2}, ["c_301x13_rgba.png", "m_150x100.png", "k_45x150_palette_trns.png"]),
    "idefics3_small": ({"image_processor_type": "Idefics3ImageProcessor", "do_resize": True,
                        "size": {"longest_edge": 96}, "max_image_size": {"longest_edge": 32}, "resample": 1,
                        "do_image_splitting": True, "do_pad": True, "do_rescale": True,
                        "rescale_factor": 0.00392156862745098, "do_normalize": True,
                        "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]},
                       ["a_1x1.png", "b_7x300.png", "c_301x13_rgba.png", "d_97x61_gray.png", "e_640x17_palette.png",
                        "f_33x33.webp", "g_150x110_2frames.gif", "i_40x90_gray_alpha.png", "m_150x100.png"]),
    "smolvlm_nosplit": ({"image_processor_type": "SmolVLMImageProcessor", "size": {"longest_edge": 64},
                         "max_image_size": {"longest_edge": 32}, "do_image_splitting": False, "resample": 1},
                        ["b_7x300.png", "m_150x100.png", "f_33x33.webp"]),
}


def pil_class(kind):
    base = kind.removesuffix("Fast")
    if base == "CLIPImageProcessor":
        from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil as C
        from transformers.models.clip.image_processing_clip import CLIPImageProcessor as T
    elif base == "SiglipImageProcessor":
        from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil as C
        from transformers.models.siglip.image_processing_siglip import SiglipImageProcessor as T
    elif base in ("Idefics3ImageProcessor", "SmolVLMImageProcessor"):
        from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil as C
        from transformers.models.idefics3.image_processing_idefics3 import Idefics3ImageProcessor as T
    else:
        raise ValueError(kind)
    return C, T


def run_processors(manifest, lossless):
    try:
        import torchvision  # noqa: F401

        have_tv = True
    except ImportError:
        have_tv = False
    for name, (config, images) in PROCESSORS.items():
        with open(os.path.join(OUT, f"proc_{name}.json"), "w") as f:
            json.dump(config, f, indent=1)
        kwargs = {k: v for k, v in config.items() if k != "image_processor_type"}
        C, T = pil_class(config["image_processor_type"])
        proc = C(**kwargs)
        tv = T(**kwargs) if have_tv else None
        is_idefics = "max_image_size" in config
        out, info, tv_delta = {}, {}, 0.0
        for s in images or lossless:
            im = Image.open(os.path.join(OUT, s))
            extra = {"return_row_col_info": True} if is_idefics else {}
            r = proc(images=im, return_tensors="np", **extra)
            pv = np.asarray(r["pixel_values"], dtype=np.float32)
            if is_idefics:
                pv = pv[0]  # [batch=1, tiles, 3, H, W]
                info[s] = {"rows": int(r["rows"][0][0]), "cols": int(r["cols"][0][0])}
                mask = np.asarray(r["pixel_attention_mask"])
                assert mask.all(), "single image tiles are always full size"
            else:
                info[s] = {"rows": 0, "cols": 0}
            out[s] = np.ascontiguousarray(pv)
            if tv is not None:
                rt = tv(images=im, return_tensors="pt", **extra)
                pt = np.asarray(rt["pixel_values"].numpy(), dtype=np.float32)
                pt = pt[0] if is_idefics else pt
                if pt.shape == pv.shape:
                    tv_delta = max(tv_delta, float(np.abs(pt - pv).max()))
                else:
                    tv_delta = float("inf")
        save_file(out, os.path.join(OUT, f"proc_{name}.safetensors"))
        entry = {"images": info}
        if have_tv:
            entry["max_abs_delta_pil_vs_torchvision"] = tv_delta
        manifest["processors"][name] = entry
        print(f"{name}: {len(out)} images" + (f", PIL vs torchvision max |d| = {tv_delta:.4g}" if have_tv else ""))


def idefics3_prompts():
    """The text the real processors substitute for one <image>, for a few (rows, cols)."""
    from transformers.models.idefics3.processing_idefics3 import Idefics3Processor
    from transformers.models.smolvlm.processing_smolvlm import get_image_prompt_string

    out = {}
    for rows, cols in [(0, 0), (1, 2), (3, 4)]:
        fake = types.SimpleNamespace(fake_image_token="<fake_token_around_image>", global_image_tag="<global-img>",
                                     image_token="<image>", image_seq_len=3)
        s = Idefics3Processor.replace_image_token(fake, {"rows": [[rows]], "cols": [[cols]]}, 0)
        s2 = get_image_prompt_string(rows, cols, 3, "<fake_token_around_image>", "<image>", "<global-img>")
        assert s == s2, (s, s2)
        out[f"{rows}x{cols}"] = s
    return out


if __name__ == "__main__":
    sys.exit(main())
