"""A tiny opus-mt style Marian tokenizer (SentencePiece unigram + vocab.json) with transformers
references, for plinth's Marian tokenizer parity test and the end-to-end seq2seq task test.

Writes fixtures/tiny-marian-tok/:
  source.spm, target.spm  unigram SentencePiece models trained here on a small built-in corpus:
                          source with nmt_nfkc normalization (as opus-mt), target with identity
  vocab.json              opus-mt layout: "</s>" 0, "<unk>" 1, then spm's normal pieces in spm order
                          up to id 126, "<pad>" 127. spm pieces past that are left out on purpose, so
                          they map to <unk> as in transformers. 128 entries: the tiny-marian model's
                          vocabulary, so the two directories together make a working model.
  tokenizer_config.json   from MarianTokenizer.save_pretrained
  reference.json          for each text: MarianTokenizer(text).input_ids and its pieces; decode cases
                          (ids -> text with skip_special_tokens=True); and translations of the texts
                          by fixtures/tiny-marian through this tokenizer: greedy and beam
                          (`generate(**batch, max_new_tokens=8[, num_beams=3])`, decoded with
                          skip_special_tokens=True)

Rerun: /path/to/venv/bin/python scripts/make_marian_tokenizer_fixture.py [--out fixtures]
(packages: scripts/requirements-ref.txt plus sentencepiece 0.2.x). Deterministic (one training
thread, fixed corpus).
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import sys
import tempfile
from pathlib import Path

import sentencepiece as spm
import torch
import transformers
from transformers import MarianMTModel, MarianTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_fixtures import versions, write_json  # noqa: E402

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "A small frog sat on a green leaf by the river.",
    "Tom asked his teacher for advice about the exam.",
    "We translate short sentences from English into French and German.",
    "Machine translation models read a source sentence and write a target sentence.",
    "Numbers like 12, 345 and 6789 appear in text too.",
    "Café, naïve, résumé and façade keep their accents.",
    "She said: \"It's raining again!\" and opened her umbrella.",
    "Ich bin ein kleiner Frosch. Das Wetter ist heute schön.",
    "Le chat dort sur le canapé pendant que la pluie tombe.",
    "The river flows slowly through the old town at night.",
    "Good morning, how are you today? I am fine, thank you.",
] * 4

TEXTS = [
    "The quick brown fox.",
    "  Leading and   repeated   spaces  ",
    "Café naïve façade",
    "Ｆｕｌｌ-width ｆｉｎｅ ligature ﬁne",
    "Unseen glyphs: 東京 🙂 ✓",
    ">>fra<< Good morning, Tom!",
    "Numbers 2024 and 3.14",
    "",
]

MAX_NEW_TOKENS = 8


def train_spm(normalization: str) -> bytes:
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS), model_writer=buf, vocab_size=140, model_type="unigram",
        normalization_rule_name=normalization, character_coverage=1.0, num_threads=1, hard_vocab_limit=False,
        unk_id=0, bos_id=-1, eos_id=1, pad_id=-1, minloglevel=2,
    )
    return buf.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "fixtures"))
    args = ap.parse_args()
    out = Path(args.out) / "tiny-marian-tok"
    model_dir = Path(args.out) / "tiny-marian"
    out.mkdir(parents=True, exist_ok=True)

    model = train_spm("nmt_nfkc")
    (out / "source.spm").write_bytes(model)
    # transformers 5.24 decodes with the source model when the vocabulary is shared; the target
    # model only needs to exist (identity normalization keeps the file small).
    (out / "target.spm").write_bytes(train_spm("identity"))
    sp = spm.SentencePieceProcessor(model_proto=model)
    normal = [sp.id_to_piece(i) for i in range(sp.get_piece_size()) if not (sp.is_control(i) or sp.is_unknown(i))]
    vocab = {"</s>": 0, "<unk>": 1}
    for piece in normal[: 127 - 2]:
        vocab[piece] = len(vocab)
    vocab["<pad>"] = 127
    write_json(out / "vocab.json", vocab)
    left_out = normal[127 - 2:]

    with tempfile.TemporaryDirectory() as tmp:
        tok = MarianTokenizer(source_spm=str(out / "source.spm"), target_spm=str(out / "target.spm"),
                              vocab=str(out / "vocab.json"))
        tok.save_pretrained(tmp)
        shutil.copy(Path(tmp) / "tokenizer_config.json", out / "tokenizer_config.json")
    tok = MarianTokenizer.from_pretrained(str(out))

    encoded = []
    for text in TEXTS:
        ids = tok(text).input_ids
        encoded.append({"text": text, "ids": ids, "pieces": tok.convert_ids_to_tokens(ids)})
    decode_cases = [
        [127, 5, 6, 7, 0],
        [127, 30, 1, 31, 0, 127, 127],
        [2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12],
        list(range(100, 127)),
    ] + [e["ids"] for e in encoded]
    decoded = [{"ids": ids, "text": tok.decode(ids, skip_special_tokens=True)} for ids in decode_cases]

    mt = MarianMTModel.from_pretrained(str(model_dir)).eval()
    texts = [t for t in TEXTS if t]
    batch = tok(texts, return_tensors="pt", padding=True)
    translations = {}
    with torch.no_grad():
        for name, kw in {"greedy": dict(num_beams=1), "beam": dict(num_beams=3)}.items():
            gen = mt.generate(**batch, max_new_tokens=MAX_NEW_TOKENS, do_sample=False, **kw)
            translations[name] = tok.batch_decode(gen, skip_special_tokens=True)
            translations[name + "_ids"] = gen.tolist()

    write_json(out / "reference.json", {
        "made_by": "scripts/make_marian_tokenizer_fixture.py",
        "versions": versions() + f", sentencepiece {spm.__version__}",
        "transformers": transformers.__version__,
        "left_out_of_vocab_json": left_out,
        "encode": encoded,
        "decode": decoded,
        "translate": {"model": "fixtures/tiny-marian", "texts": texts, "max_new_tokens": MAX_NEW_TOKENS, **translations},
    })
    print(f"wrote {out}: {len(vocab)} vocab entries, {len(left_out)} spm pieces left out")
    print(json.dumps(encoded[:3], ensure_ascii=False)[:500])


if __name__ == "__main__":
    main()
