#!/usr/bin/env python3
"""Writes fixtures/clip-bpe: a tiny CLIP BPE tokenizer in the slow-tokenizer layout that
diffusers checkpoints ship (`vocab.json` + `merges.txt`, no `tokenizer.json`), and the ids
transformers' `CLIPTokenizer` gives for a set of prompts, padded and truncated to 77 as the
Stable Diffusion pipelines call it.

The vocabulary is laid out like CLIP's: the 256 byte-level symbols, the same with `</w>`,
the merged symbols in merge order, then `<|startoftext|>` and `<|endoftext|>`. The merges are
learned here from a small prompt corpus (deterministic: ties break on the pair's text).

Run with the reference venv: `python scripts/make_clip_bpe_fixture.py`.
"""
import collections
import json
import pathlib
import re

from transformers import CLIPTokenizer

OUT = pathlib.Path(__file__).resolve().parent.parent / "fixtures" / "clip-bpe"
N_MERGES = 200

CORPUS = """a red lighthouse at dawn watercolor painting of a cat sitting on a chair
a photograph of an astronaut riding a horse on the moon highly detailed
a castle on a hill at sunset oil painting trending on artstation
portrait of a dog wearing sunglasses studio lighting sharp focus
a bowl of fruit still life with apples and oranges in the style of cezanne
the city skyline at night with neon lights reflected in the rain
blurry low quality ugly deformed watermark text signature"""


def bytes_to_unicode():
    """CLIP's (and GPT-2's) reversible byte -> printable character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def learn_merges(words, n):
    b2u = bytes_to_unicode()
    freq = collections.Counter(words)
    seqs = {w: [b2u[b] for b in w.encode()] for w in freq}
    for w in seqs:
        seqs[w][-1] += "</w>"
    merges = []
    for _ in range(n):
        pairs = collections.Counter()
        for w, s in seqs.items():
            for a, b in zip(s, s[1:]):
                pairs[(a, b)] += freq[w]
        if not pairs:
            break
        best = min(pairs.items(), key=lambda kv: (-kv[1], kv[0]))[0]
        merges.append(best)
        for w, s in seqs.items():
            out, i = [], 0
            while i < len(s):
                if i + 1 < len(s) and (s[i], s[i + 1]) == best:
                    out.append(s[i] + s[i + 1])
                    i += 2
                else:
                    out.append(s[i])
                    i += 1
            seqs[w] = out
    return merges


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    words = re.findall(r"[a-z]+", CORPUS.lower())
    merges = learn_merges(words, N_MERGES)
    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    ids = {tok: i for i, tok in enumerate(dict.fromkeys(vocab))}
    (OUT / "vocab.json").write_text(json.dumps(ids, ensure_ascii=False))
    (OUT / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    # As Stable Diffusion 2.x / SD-Turbo ship it: padding with "!" (id 0), not the eos token.
    special = {
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "!",
    }
    (OUT / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")
    config = {"tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "do_lower_case": True, **special}
    (OUT / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")

    prompts = [
        "a red lighthouse at dawn, watercolor",
        "A Photograph of an ASTRONAUT riding a horse!!",
        "",
        "portrait  of a\tdog\nwearing sunglasses",
        "café crème brûlée 🍮 x2 = 3.5 it's we'll they're",
        "<|startoftext|>literal specials<|endoftext|> stay special",
        " ".join(["castle"] * 100),
    ]
    refs = {"vocab_size": len(ids), "cases": []}
    for pad in ["!", "<|endoftext|>"]:
        tok = CLIPTokenizer.from_pretrained(str(OUT), pad_token=pad)
        for p in prompts:
            padded = tok(p, padding="max_length", max_length=77, truncation=True)["input_ids"]
            plain = tok(p)["input_ids"]
            refs["cases"].append({"pad_token": pad, "prompt": p, "ids": plain, "padded": padded})
    (OUT / "refs.json").write_text(json.dumps(refs, ensure_ascii=False, indent=1) + "\n")
    print(f"wrote {OUT}: {len(ids)} tokens, {len(merges)} merges, {len(refs['cases'])} cases")


if __name__ == "__main__":
    main()
