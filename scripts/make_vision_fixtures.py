"""Tiny random-weight vision models for plinth's vision parity tests.

Builds, seeded, with transformers:
  fixtures/tiny-clip      CLIPModel (model_type clip): ViT 32x32, patch 8, text causal, EOS pooling
  fixtures/tiny-siglip    SiglipModel (model_type siglip): ViT 32x32, patch 4, attention-pool head
  fixtures/tiny-idefics3  Idefics3ForConditionalGeneration: SigLIP-style ViT 32x32, patch 4,
                          pixel shuffle x2 (16 image tokens per tile), tiny Llama text model
Each directory gets config.json, model.safetensors, a WordLevel tokenizer.json with the model's
special tokens and post-processor, preprocessor_config.json, and reference.safetensors:
  CLIP / SigLIP: pixel_values [2,3,32,32], text_ids_{0,1,2} (int64, as the tokenizer returns
    them: special tokens, no padding), image_embeds [2,E], text_embeds [3,E] (get_*_features,
    unnormalised), logits_per_image [2,3]. SigLIP's text features are computed on ids padded to
    max_position_embeddings with pad_token_id and no attention mask, as SigLIP was trained.
  Idefics3: pixel_values [2,3,32,32] (one image as 2 tiles), input_ids [1,T] (a chat prompt with
    2*16 <image> tokens), connector [32,H] (connector output), inputs_embeds [T,H] (after
    inputs_merger), logits [T,vocab] (one forward over the prompt).
Norm weights and biases are perturbed (0.1 * N(0,1)) so a runtime that drops one fails.

Rerun: /path/to/venv/bin/python scripts/make_vision_fixtures.py [--out fixtures]
(packages: scripts/requirements-ref.txt). Deterministic: reruns give identical files.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch
import transformers
from safetensors.torch import save_file
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from tokenizers import AddedToken

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_fixtures import SEED, seed_everything, versions, write_json  # noqa: E402

WORDS = ["a", "photo", "of", "the", "cat", "dog", "small", "red", "car", "on", "road", "this", "is",
         "picture", "describe", "image", "what", "in", "user", "assistant", ":", ".", ",", "?"]
TEXTS = ["a photo of a cat", "a dog", "a photo of a small red car on the road ."]
CLIP_MEAN, CLIP_STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]


def perturb(model: torch.nn.Module) -> None:
    g = torch.Generator().manual_seed(SEED + 1)
    with torch.no_grad():
        for _, p in model.named_parameters():
            if p.dim() <= 1:
                p.add_(0.1 * torch.randn(p.shape, generator=g))


def pixels(n: int, size: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(SEED + 2)
    return torch.randn((n, 3, size, size), generator=g)


def word_level(vocab: dict[str, int], unk: str, specials: list[str], post=None) -> Tokenizer:
    tok = Tokenizer(models.WordLevel(vocab, unk_token=unk))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    if post is not None:
        tok.post_processor = post
    return tok


def save_dir(model, d: Path, ref: dict, tok: Tokenizer, files: dict) -> None:
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    model.save_pretrained(str(d))
    for f in sorted(p.name for p in d.iterdir()):
        if f not in ("config.json", "model.safetensors"):
            (d / f).unlink()
    tok.save(str(d / "tokenizer.json"))
    for name, obj in files.items():
        write_json(d / name, obj)
    save_file({k: v.contiguous() for k, v in ref.items()}, str(d / "reference.safetensors"),
              metadata={"made_by": "scripts/make_vision_fixtures.py; " + versions()})
    size = sum(p.stat().st_size for p in d.iterdir())
    print(f"  {d}: {size / 1024:.0f} KiB")


def dual_reference(model, tok: Tokenizer, px: torch.Tensor, pad_to: int | None, pad_id: int) -> dict:
    ids = [tok.encode(t).ids for t in TEXTS]
    with torch.no_grad():
        image_embeds = model.get_image_features(pixel_values=px).pooler_output
        if pad_to is None:
            # CLIP: each text alone (its causal mask makes padding irrelevant).
            text_embeds = torch.cat([model.get_text_features(input_ids=torch.tensor([i])).pooler_output for i in ids])
        else:
            batch = torch.tensor([i + [pad_id] * (pad_to - len(i)) for i in ids])
            text_embeds = model.get_text_features(input_ids=batch).pooler_output
        longest = max(len(i) for i in ids) if pad_to is None else pad_to
        batch = torch.tensor([i + [pad_id] * (longest - len(i)) for i in ids])
        mask = torch.tensor([[1] * len(i) + [0] * (longest - len(i)) for i in ids]) if pad_to is None else None
        out = model(input_ids=batch, pixel_values=px, attention_mask=mask)
    print(f"  image_embeds std {image_embeds.std():.3f}, text_embeds std {text_embeds.std():.3f}, "
          f"logits {out.logits_per_image.tolist()}")
    ref = {"pixel_values": px, "image_embeds": image_embeds, "text_embeds": text_embeds,
           "logits_per_image": out.logits_per_image}
    for i, t in enumerate(ids):
        ref[f"text_ids_{i}"] = torch.tensor(t, dtype=torch.int64)
    return ref


def make_clip(out: Path) -> None:
    specials = ["<|startoftext|>", "<|endoftext|>"]
    vocab = {"<|unk|>": 0, **{w: i + 1 for i, w in enumerate(WORDS)}}
    vocab.update({s: len(vocab) + k for k, s in enumerate(specials)})
    bos, eos = vocab["<|startoftext|>"], vocab["<|endoftext|>"]
    post = processors.TemplateProcessing(single="<|startoftext|> $A <|endoftext|>",
                                         special_tokens=[("<|startoftext|>", bos), ("<|endoftext|>", eos)])
    tok = word_level(vocab, "<|unk|>", specials, post)
    text = dict(vocab_size=len(vocab), hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                num_attention_heads=4, max_position_embeddings=16, hidden_act="quick_gelu",
                bos_token_id=bos, eos_token_id=eos, pad_token_id=eos)
    vision = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  image_size=32, patch_size=8, hidden_act="quick_gelu")
    cfg = transformers.CLIPConfig(text_config=text, vision_config=vision, projection_dim=40)
    cfg._attn_implementation = "eager"
    seed_everything(SEED)
    model = transformers.CLIPModel(cfg).eval()
    perturb(model)
    ref = dual_reference(model, tok, pixels(2, 32), None, eos)
    pre = {"image_processor_type": "CLIPImageProcessor", "do_resize": True, "size": {"shortest_edge": 32},
           "do_center_crop": True, "crop_size": {"height": 32, "width": 32}, "resample": 3, "do_rescale": True,
           "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": CLIP_MEAN, "image_std": CLIP_STD,
           "do_convert_rgb": True}
    tcfg = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
            "pad_token": "<|endoftext|>", "unk_token": "<|unk|>", "model_max_length": 16}
    save_dir(model, out / "tiny-clip", ref, tok, {"preprocessor_config.json": pre, "tokenizer_config.json": tcfg})


def make_siglip(out: Path) -> None:
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(WORDS)}}
    eos = vocab["</s>"]
    post = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", eos)])
    tok = word_level(vocab, "<unk>", ["</s>", "<unk>", "<pad>"], post)
    max_pos = 16
    text = dict(vocab_size=len(vocab), hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                num_attention_heads=4, max_position_embeddings=max_pos, pad_token_id=eos, eos_token_id=eos,
                bos_token_id=None, projection_size=48)
    vision = dict(hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                  image_size=32, patch_size=4)
    cfg = transformers.SiglipConfig(text_config=text, vision_config=vision)
    cfg._attn_implementation = "eager"
    seed_everything(SEED)
    model = transformers.SiglipModel(cfg).eval()
    perturb(model)
    ref = dual_reference(model, tok, pixels(2, 32), max_pos, eos)
    pre = {"image_processor_type": "SiglipImageProcessor", "do_resize": True, "size": {"height": 32, "width": 32},
           "resample": 3, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
           "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}
    tcfg = {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "</s>", "pad_token": "</s>", "unk_token": "<unk>",
            "model_max_length": max_pos}
    save_dir(model, out / "tiny-siglip", ref, tok, {"preprocessor_config.json": pre, "tokenizer_config.json": tcfg})


SMOLVLM_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n"
    "{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)


def make_idefics3(out: Path) -> None:
    base = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    added = (["<fake_token_around_image>", "<image>", "<global-img>"]
             + [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)] + ["<end_of_utterance>"])
    words = ["User", "Assistant", "Describe"] + WORDS
    vocab = {s: i for i, s in enumerate(base)}
    vocab.update({w: len(vocab) + i for i, w in enumerate(words)})
    vocab.update({s: len(vocab) + i for i, s in enumerate(added)})
    tok = word_level(vocab, "<|endoftext|>", base + added)
    vocab_size = 128
    image_size, patch, scale = 32, 4, 2
    seq_len = (image_size // patch) ** 2 // scale**2
    text = dict(model_type="llama", vocab_size=vocab_size, hidden_size=64, intermediate_size=128,
                num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                rms_norm_eps=1e-5, bos_token_id=vocab["<|im_start|>"], eos_token_id=vocab["<end_of_utterance>"],
                pad_token_id=vocab["<|im_end|>"], tie_word_embeddings=False, initializer_range=0.2)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  image_size=image_size, patch_size=patch)
    cfg = transformers.Idefics3Config(text_config=text, vision_config=vision, scale_factor=scale,
                                      image_token_id=vocab["<image>"], tie_word_embeddings=False)
    cfg._attn_implementation = "eager"
    seed_everything(SEED)
    model = transformers.Idefics3ForConditionalGeneration(cfg).eval()
    perturb(model)
    # One image as two tiles, laid out as Idefics3Processor writes a 1x1 split plus the global image.
    img = lambda head: ["<fake_token_around_image>", head] + ["<image>"] * seq_len  # noqa: E731
    prompt = (["<|im_start|>", "User", ":"] + img("<row_1_col_1>") + img("<global-img>")
              + ["<fake_token_around_image>", "Describe", "this", "image", ".", "<end_of_utterance>",
                 "Assistant", ":"])
    ids = torch.tensor([[vocab[t] for t in prompt]])
    px = pixels(2, image_size)
    with torch.no_grad():
        feats = model.model.get_image_features(px.unsqueeze(0)).pooler_output
        connector = torch.cat(feats, 0)
        embeds = model.model.inputs_merger(ids, model.model.get_input_embeddings()(ids), connector)[0]
        logits = model(input_ids=ids, pixel_values=px.unsqueeze(0), use_cache=False).logits[0]
    print(f"  connector std {connector.std():.3f}, logits std {logits.std():.3f}, prompt {ids.shape[1]} tokens")
    ref = {"pixel_values": px, "input_ids": ids, "connector": connector, "inputs_embeds": embeds, "logits": logits}
    pre = {"image_processor_type": "Idefics3ImageProcessor", "do_convert_rgb": True, "do_resize": True,
           "size": {"longest_edge": 2 * image_size}, "resample": 1, "do_image_splitting": True,
           "max_image_size": {"longest_edge": image_size}, "do_rescale": True, "rescale_factor": 1 / 255,
           "do_normalize": True, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "do_pad": True}
    tcfg = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|im_start|>",
            "eos_token": "<end_of_utterance>", "pad_token": "<|im_end|>", "unk_token": "<|endoftext|>",
            "additional_special_tokens": ["<fake_token_around_image>", "<image>", "<end_of_utterance>"],
            "chat_template": SMOLVLM_TEMPLATE, "model_max_length": 256}
    files = {"preprocessor_config.json": pre, "tokenizer_config.json": tcfg,
             "chat_template.json": {"chat_template": SMOLVLM_TEMPLATE},
             "processor_config.json": {"image_seq_len": seq_len, "processor_class": "Idefics3Processor"}}
    save_dir(model, out / "tiny-idefics3", ref, tok, files)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "fixtures"))
    ap.add_argument("--only", nargs="*", default=["clip", "siglip", "idefics3"])
    a = ap.parse_args()
    out = Path(a.out)
    torch.set_num_threads(1)
    for name in a.only:
        print(name)
        {"clip": make_clip, "siglip": make_siglip, "idefics3": make_idefics3}[name](out)


if __name__ == "__main__":
    main()
