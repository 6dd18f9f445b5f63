#!/usr/bin/env python3
"""SmolVLM at its real size, with random weights: a check that plinth's Idefics3 path holds at
SmolVLM-256M-Instruct's geometry (512-pixel tiles, 16-pixel patches, pixel-shuffle 4 -> 64
tokens per tile, the SmolLM2-135M decoder), and how long `plinth describe` takes on a CPU.
The real checkpoint cannot be downloaded here; its sizes are written out below.

Writes a model directory (about 1 GB of f32), then compares the last-position logits of
transformers (PIL-backend processor) and `plinth describe`-equivalent prompt ids, and times
`plinth describe --max-tokens 16`.

Run: /work/refvenv/bin/python scripts/check_smolvlm_geometry.py [--plinth target/release/plinth] [--dir DIR]
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
import transformers
from PIL import Image
from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "fixtures" / "tiny-idefics3"


def make(d: Path) -> None:
    tok_json = json.loads((TINY / "tokenizer.json").read_text())
    vocab = len(tok_json["model"]["vocab"]) + len([t for t in tok_json["added_tokens"] if t["id"] >= len(tok_json["model"]["vocab"])])
    ids = {t["content"]: t["id"] for t in tok_json["added_tokens"]}
    text = dict(model_type="llama", vocab_size=max(vocab, 128), hidden_size=576, intermediate_size=1536,
                num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192,
                rms_norm_eps=1e-5, rope_theta=100000.0, tie_word_embeddings=True,
                bos_token_id=ids["<|im_start|>"], eos_token_id=ids["<end_of_utterance>"], pad_token_id=ids["<|im_end|>"])
    vision = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                  image_size=512, patch_size=16)
    cfg = transformers.Idefics3Config(text_config=text, vision_config=vision, scale_factor=4,
                                      image_token_id=ids["<image>"], tie_word_embeddings=True)
    torch.manual_seed(0)
    model = transformers.Idefics3ForConditionalGeneration(cfg).eval()
    model.save_pretrained(str(d))
    for f in ["tokenizer.json", "tokenizer_config.json", "chat_template.json"]:
        (d / f).write_text((TINY / f).read_text())
    pre = json.loads((TINY / "preprocessor_config.json").read_text())
    pre.update({"size": {"longest_edge": 1024}, "max_image_size": {"longest_edge": 512}})
    (d / "preprocessor_config.json").write_text(json.dumps(pre, indent=1))
    (d / "processor_config.json").write_text(json.dumps({"image_seq_len": 64, "processor_class": "Idefics3Processor"}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--plinth", default=str(ROOT / "target" / "release" / "plinth"))
    ap.add_argument("--dir", default="/tmp/plinth-smolvlm-geometry")
    ap.add_argument("--image", default=str(ROOT / "fixtures" / "images" / "m_150x100.png"))
    a = ap.parse_args()
    d = Path(a.dir)
    if not (d / "model.safetensors").exists():
        d.mkdir(parents=True, exist_ok=True)
        make(d)
    torch.set_num_threads(2)
    model = transformers.Idefics3ForConditionalGeneration.from_pretrained(str(d)).eval()
    tok = transformers.PreTrainedTokenizerFast.from_pretrained(str(d))
    pre = json.loads((d / "preprocessor_config.json").read_text())
    pre.pop("image_processor_type")
    proc = transformers.Idefics3Processor(image_processor=Idefics3ImageProcessorPil(**pre), tokenizer=tok, image_seq_len=64,
                                          chat_template=json.loads((d / "chat_template.json").read_text())["chat_template"])
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe this image."}]}]
    text = proc.apply_chat_template(messages, add_generation_prompt=True)
    inputs = proc(text=text, images=[[Image.open(a.image)]], return_tensors="pt")
    t = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=16, do_sample=False)
    torch_s = time.perf_counter() - t
    want = out[0, inputs["input_ids"].shape[1]:].tolist()
    print(f"transformers: {inputs['pixel_values'].shape[1]} tiles, {inputs['input_ids'].shape[1]} prompt tokens, "
          f"generate 16 tokens in {torch_s:.1f} s: {want}")
    t = time.perf_counter()
    r = subprocess.run([a.plinth, "--threads", "2", "describe", a.image, "-m", str(d), "--max-tokens", "16", "-t", "0",
                        "--json"], capture_output=True, text=True)
    plinth_s = time.perf_counter() - t
    if r.returncode != 0:
        sys.exit(f"plinth failed: {r.stderr}")
    got = json.loads(r.stdout)
    print(f"plinth: {got['image_tiles']} tiles, {got['prompt_tokens']} prompt tokens, describe in {plinth_s:.1f} s "
          f"(process, model load included; prefill {got['prefill_tok_s']} tok/s, decode {got['decode_tok_s']} tok/s)")
    ids = tok(got["text"], add_special_tokens=False)["input_ids"] if got["text"] else []
    print("same greedy text:", tok.decode(want, skip_special_tokens=True).strip() == got["text"].strip(), ids[:8])


if __name__ == "__main__":
    main()
