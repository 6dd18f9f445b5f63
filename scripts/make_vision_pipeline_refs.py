#!/usr/bin/env python3
"""End-to-end references for plinth's image tasks, from image files to answers, made with
transformers 5.24 and its PIL-backend image processors on the tiny random-weight models of
scripts/make_vision_fixtures.py and the test images of scripts/make_image_fixtures.py.

Writes fixtures/vision-pipeline/refs.json:
- clip / siglip: L2-normalised image embeddings of three files (processor + get_image_features),
  normalised text embeddings and zero-shot probabilities for labels put into the default
  template (CLIP: softmax over labels of logit_scale * cos; SigLIP: sigmoid(logit_scale * cos +
  logit_bias), texts padded to the full position table with the pad token and no attention
  mask, as SigLIP was trained and as transformers 4.x's pipeline fed it);
- idefics3: for two files, the processor's input_ids for the chat prompt (so the image-token
  layout, the tiles and the tokenization are all checked) and the last-position logits.

Run: /work/refvenv/bin/python scripts/make_vision_pipeline_refs.py (Pillow 13, no torchvision).
"""

import json
from pathlib import Path

import torch
import transformers
from PIL import Image
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil
from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "fixtures"
IMAGES = ["m_150x100.png", "n_61x97.jpg", "c_301x13_rgba.png"]
LABELS = ["a cat", "a dog", "a car"]
TEMPLATE = "This is a photo of {}."


def load_images(names):
    return [Image.open(FIX / "images" / n) for n in names]


def processor_kwargs(d: Path) -> dict:
    cfg = json.loads((d / "preprocessor_config.json").read_text())
    cfg.pop("image_processor_type", None)
    return cfg


def dual(name: str, proc_cls, pad_to_max: bool) -> dict:
    d = FIX / name
    model = transformers.AutoModel.from_pretrained(str(d)).eval()
    tok = transformers.PreTrainedTokenizerFast(tokenizer_file=str(d / "tokenizer.json"))
    proc = proc_cls(**processor_kwargs(d))
    px = proc([img.convert("RGB") if img.mode == "P" else img for img in load_images(IMAGES)], return_tensors="pt")["pixel_values"]
    texts = [TEMPLATE.format(label) for label in LABELS]
    cfg = model.config.text_config
    with torch.no_grad():
        img = model.get_image_features(pixel_values=px)
        img = getattr(img, "pooler_output", img)
        ids = [tok(t)["input_ids"] for t in texts]
        if pad_to_max:
            n = cfg.max_position_embeddings
            ids = [i + [cfg.pad_token_id] * (n - len(i)) for i in ids]
            txt = model.get_text_features(input_ids=torch.tensor(ids))
        else:
            txt = torch.cat([getattr(o, "pooler_output", o) for o in
                             (model.get_text_features(input_ids=torch.tensor([i])) for i in ids)])
        txt = getattr(txt, "pooler_output", txt)
        img = img / img.norm(dim=-1, keepdim=True)
        txt = txt / txt.norm(dim=-1, keepdim=True)
        logits = img @ txt.T * model.logit_scale.exp()
        if hasattr(model, "logit_bias"):
            logits = logits + model.logit_bias
            probs = torch.sigmoid(logits)
        else:
            probs = logits.softmax(dim=-1)
    return {"images": IMAGES, "labels": LABELS, "template": TEMPLATE,
            "image_embeds": img.tolist(), "text_embeds": txt.tolist(), "probs": probs.tolist()}


def idefics3() -> dict:
    d = FIX / "tiny-idefics3"
    model = transformers.Idefics3ForConditionalGeneration.from_pretrained(str(d)).eval()
    tok = transformers.PreTrainedTokenizerFast.from_pretrained(str(d))
    image_proc = Idefics3ImageProcessorPil(**processor_kwargs(d))
    proc = transformers.Idefics3Processor(image_processor=image_proc, tokenizer=tok, image_seq_len=16,
                                          chat_template=json.loads((d / "chat_template.json").read_text())["chat_template"])
    out = []
    for name, question in [("m_150x100.png", "Describe this image."), ("b_7x300.png", "What is it?")]:
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
        text = proc.apply_chat_template(messages, add_generation_prompt=True)
        inputs = proc(text=text, images=[load_images([name])], return_tensors="pt")
        with torch.no_grad():
            logits = model(**inputs, use_cache=False).logits[0, -1]
        out.append({"image": name, "question": question, "text": text,
                    "input_ids": inputs["input_ids"][0].tolist(),
                    "tiles": int(inputs["pixel_values"].shape[1]), "last_logits": logits.tolist()})
    return {"cases": out}


def main() -> None:
    torch.set_num_threads(1)
    refs = {
        "transformers": transformers.__version__,
        "clip": dual("tiny-clip", CLIPImageProcessorPil, pad_to_max=False),
        "siglip": dual("tiny-siglip", SiglipImageProcessorPil, pad_to_max=True),
        "idefics3": idefics3(),
    }
    out = FIX / "vision-pipeline"
    out.mkdir(exist_ok=True)
    (out / "refs.json").write_text(json.dumps(refs, indent=1) + "\n")
    print(f"wrote {out / 'refs.json'}")


if __name__ == "__main__":
    main()
