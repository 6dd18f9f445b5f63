#!/usr/bin/env python3
"""Generate the reference fixtures used by plinth's parity tests.

What it makes (all paths relative to --out, default ``fixtures``):

* ``tokenizer/corpus.json`` -- a fixed, hand-written list of test strings
  (English, whitespace runs, numbers, contractions, punctuation, code, URLs,
  many scripts, emoji/ZWJ/flags/skin tones, combining marks, long words and
  the model's special-token text).  The list lives in this file (CORPUS).
* ``tokenizer/smollm2_ids.json`` -- for every corpus string, the token ids
  produced by the Hugging Face tokenizer that ``transformers`` builds from the
  SmolLM2-135M-Instruct GGUF (``add_special_tokens=False``) and the decode of
  those ids; plus bos/eos/add_bos and a chat-template example.  transformers
  ignores the GGUF's ``tokenizer.ggml.pre = "smollm"``, so the script puts
  SmolLM's digit split back in front of the byte-level pre-tokenizer (see
  load_hf_tokenizer); the note is recorded in the JSON "reference" field.
* ``tiny-llama/config.json`` + ``tiny-llama/model.safetensors`` -- a tiny
  random-weight Llama (2 layers, hidden 64, 4 heads, 2 kv heads, vocab 256,
  seed 0, initializer_range 0.2, f32) saved by ``transformers``'
  ``save_pretrained``.  The RMSNorm weights (all 1.0 after init) are then set
  to 1 + 0.1*N(0,1) with a seeded generator so a runtime that drops a norm
  weight fails.  config.json also gets the classic top-level ``rope_theta``
  and ``torch_dtype`` keys next to transformers 5's ``rope_parameters``/``dtype``.
* ``tiny-llama/model.gguf`` -- the same weights written with the ``gguf``
  package's GGUFWriter (arch ``llama``, all-F32, llama.cpp tensor names,
  Q/K rows permuted exactly like llama.cpp's ``convert_hf_to_gguf.py``,
  no tokenizer metadata).  The script checks it with an independent numpy
  forward pass using llama.cpp's rotary convention (adjacent pairs).
* ``tiny-llama/reference.safetensors`` -- ``input_ids`` [1, 24] (int64),
  ``logits`` [24, 256] from one full-prompt forward pass and
  ``logits_decode`` [24, 256] from feeding one token at a time with the KV
  cache (both float32, eager attention; row i = logits after token i).
* ``smollm2/passage.txt`` -- a short English passage written for this
  project (PASSAGE below).
* ``smollm2/reference.json`` -- teacher-forced reference on that passage from
  the SmolLM2 GGUF loaded by ``transformers`` (weights dequantized to
  float32): input ids, per-position top-1 prediction, per-position NLL of the
  next token and the perplexity.  The passage is tokenized exactly as written
  to passage.txt (including its final newline), without BOS.

Everything is deterministic (fixed seeds, fixed text, CPU, float32).

How to rerun::

    python -m venv .venv-ref
    .venv-ref/bin/pip install -r scripts/requirements-ref.txt
    .venv-ref/bin/python scripts/make_fixtures.py \\
        --gguf /path/to/SmolLM2-135M-Instruct.Q4_1.gguf --out fixtures

No network access is needed: the tokenizer and model come from the GGUF file.
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import os
import random
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

import gguf
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

# Deterministic CPU execution.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
torch.use_deterministic_algorithms(True)
torch.set_num_threads(1)

SEED = 0

# --------------------------------------------------------------------------
# Tokenizer corpus (hand-written, fixed order).
# --------------------------------------------------------------------------

CORPUS: list[str] = [
    # --- plain English -----------------------------------------------------
    "Hello world",
    "Hello, world!",
    "hello",
    "Hello",
    "HELLO",
    "hElLo WoRlD",
    "The quick brown fox jumps over the lazy dog.",
    "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG!",
    "It was the best of times, it was the worst of times.",
    "A journey of a thousand miles begins with a single step.",
    "Please send the report to the committee before Friday afternoon.",
    "She sells seashells by the seashore.",
    "Why is the sky blue? Because of Rayleigh scattering.",
    "To be, or not to be: that is the question.",
    "The meeting was postponed; nobody knew why.",
    "Dr. Smith arrived at 9 a.m. on Monday, Jan. 5th.",
    "e.g. i.e. etc. vs. Mr. Mrs. Ms.",
    "The U.S.A. and the U.K. signed the treaty.",
    "I", "a", "A", "x", "Z",
    "ok", "OK", "Ok",
    "tokenization", "Tokenization", " tokenization", "TOKENIZATION",
    "unbelievable", "re-enter", "well-known", "state-of-the-art",
    "Once upon a time, in a land far, far away, there lived a king.",
    # --- whitespace ---------------------------------------------------------
    "",
    " ",
    "  ",
    "   ",
    "    ",
    "\n",
    "\n\n",
    "\n\n\n",
    "\t",
    "\t\t",
    "\t\tx",
    "  a",
    "a  ",
    " a",
    "a ",
    " hello world ",
    "hello  world",
    "hello   world",
    "hello\tworld",
    "a\nb",
    "a\n\nb",
    "a\r\nb",
    "\r\n",
    " \n ",
    "line one\nline two\n",
    "\n hello",
    "x \t y",
    "    indented",
    "trailing   \n",
    "\n\n\nThree newlines before",
    "after three newlines\n\n\n",
    "  \n\t \n",
    "a\u00a0b",
    "\u3000",
    "a\u200bb",
    "\u000b\u000c",
    # --- numbers ------------------------------------------------------------
    "0",
    "1",
    "12",
    "123",
    "1234",
    "12345",
    "123456",
    "1234567",
    "12345678",
    "123456789",
    "1234567890",
    "123456789012345",
    "3.14159",
    "2.718281828459045",
    "1,000,000",
    "-42",
    "+7",
    "1e10",
    "6.022e23",
    "0x1F",
    "0b1010",
    "2024-01-15",
    "12:30:45",
    "$19.99",
    "€5,50",
    "100%",
    "1/2",
    "v1.2.3",
    "007",
    "3rd",
    "10th place",
    "phone: 555-0123",
    "In 1969, 3 astronauts flew 384400 km.",
    "½ ¾ ² ³",
    "١٢٣٤",
    "４２",
    "x1y22z333",
    "a  1",
    "total:   42 items",
    "  123",
    "x\n\n2024",
    "\u00b2\u00b3 and \u2167 and \u0663",
    # --- contractions -------------------------------------------------------
    "don't",
    "DON'T",
    "I'LL",
    "I'll",
    "we've",
    "WE'VE",
    "you're",
    "they'd",
    "it's",
    "He's",
    "I'm",
    "I'M",
    "can't won't shouldn't",
    "y'all",
    "'s",
    "'t",
    "o'clock",
    "rock 'n' roll",
    "I\u2019m",
    "We'Ve",
    "'ll 're 've 'd 'm 's 't",
    # --- punctuation --------------------------------------------------------
    "!!!",
    "?!?!",
    "...",
    "\u2026",
    "---",
    "\u2014",
    "--",
    "((()))",
    "[]{}<>",
    "@#$%^&*",
    "!@#$%^&*()_+-=",
    "a.b.c",
    '"quoted"',
    "'single'",
    "\u00abguillemets\u00bb",
    "\u201ccurly\u201d",
    "~`|\\",
    ";;;;",
    ",,,",
    "::",
    "=>",
    "->",
    "!=",
    "<=>",
    "***bold***",
    "__init__",
    "Wait... what?!",
    "(a) [b] {c}",
    # --- code ---------------------------------------------------------------
    "def add(a, b):\n    return a + b\n",
    "class Point:\n    def __init__(self, x, y):\n        self.x = x\n        self.y = y\n",
    "squares = [x ** 2 for x in range(10) if x % 2 == 0]",
    "import numpy as np\nprint(np.zeros((3, 4)).shape)",
    "fn main() {\n    println!(\"Hello, world!\");\n}\n",
    "pub struct Cache<T: Clone> {\n    items: Vec<Option<T>>,\n}",
    "match x {\n    Some(v) => v * 2,\n    None => 0,\n}",
    "let mut v: Vec<u32> = (0..10).map(|i| i * i).collect();",
    "impl<'a> Iterator for Tokens<'a> { type Item = &'a str; }",
    '{"name": "plinth", "version": 1, "tags": ["llm", "rust"], "ok": true}',
    '{\n  "a": [1, 2, 3],\n  "b": null\n}',
    "<!DOCTYPE html>\n<html><body><p class=\"x\">Hi &amp; bye</p></body></html>",
    "<div id=\"main\"><a href=\"/about\">About</a></div>",
    "const f = (x) => x.map(y => y * 2);",
    "#include <stdio.h>\nint main(void) { return 0; }",
    "SELECT id, name FROM users WHERE age >= 18 ORDER BY name;",
    "ls -la | grep '.rs' > out.txt && echo $?",
    "^[a-zA-Z0-9._%+-]+@[a-z]+\\.[a-z]{2,}$",
    "# Title\n\n- item one\n- item two\n\n**bold** and `code`",
    "\\frac{a}{b} + \\sum_{i=0}^{n} x_i^2",
    "key: value\nlist:\n  - one\n  - two\n",
    "--- a/file.txt\n+++ b/file.txt\n@@ -1,2 +1,2 @@\n-old\n+new",
    "\tif (x) {\n\t\treturn;\n\t}",
    "x=1;y=2;z=x+y",
    "snake_case camelCase PascalCase SCREAMING_CASE kebab-case",
    # --- URLs and emails ----------------------------------------------------
    "https://example.com/path?query=1&b=2#frag",
    "http://localhost:8080/",
    "www.example.org",
    "ftp://files.example.net/pub/file.tar.gz",
    "Visit https://example.com/docs/index.html for details.",
    "user@example.com",
    "first.last+tag@sub.example.co.uk",
    "mailto:someone@example.com",
    "Contact: <admin@example.org>",
    # --- accented Latin -----------------------------------------------------
    "Le caf\u00e9 est tr\u00e8s agr\u00e9able \u00e0 Paris.",
    "O\u00f9 est la biblioth\u00e8que ?",
    "\u00c7a va ? \u00c9l\u00e8ve, na\u00efve, c\u0153ur, No\u00ebl",
    "Stra\u00dfe",
    "Gr\u00fc\u00dfe aus M\u00fcnchen",
    "Fu\u00dfg\u00e4nger\u00fcberg\u00e4nge",
    "Die Gr\u00f6\u00dfe der B\u00e4ume \u00fcberrascht.",
    "Ti\u1ebfng Vi\u1ec7t",
    "Xin ch\u00e0o, b\u1ea1n c\u00f3 kh\u1ecfe kh\u00f4ng?",
    "Ng\u01b0\u1eddi Vi\u1ec7t Nam \u0111\u1eb9p",
    "\u00bfD\u00f3nde est\u00e1 el ba\u00f1o? \u00a1Ol\u00e9!",
    "Za\u017c\u00f3\u0142\u0107 g\u0119\u015bl\u0105 ja\u017a\u0144",
    "P\u0159\u00edli\u0161 \u017elu\u0165ou\u010dk\u00fd k\u016f\u0148",
    "\u0130stanbul \u0131\u0131 iI",
    "\u00de\u00f3r\u00f0ur \u00e6\u00f0i",
    "S\u00e3o Paulo, a\u00e7\u00e3o, cora\u00e7\u00f5es",
    "\u00c5ngstr\u00f6m \u00f8 \u00e5",
    # --- Greek, Cyrillic, Arabic, Hebrew, Indic, Thai, others ---------------
    "\u0393\u03b5\u03b9\u03ac \u03c3\u03bf\u03c5 \u039a\u03cc\u03c3\u03bc\u03b5",
    "\u03b1\u03b2\u03b3\u03b4\u03b5\u03b6\u03b7\u03b8",
    "\u0391\u0392\u0393\u0394",
    "\u0397 \u03b3\u03c1\u03ae\u03b3\u03bf\u03c1\u03b7 \u03ba\u03b1\u03c6\u03ad \u03b1\u03bb\u03b5\u03c0\u03bf\u03cd",
    "\u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440!",
    "\u0421\u044a\u0435\u0448\u044c \u0436\u0435 \u0435\u0449\u0451 \u044d\u0442\u0438\u0445 \u043c\u044f\u0433\u043a\u0438\u0445 \u0444\u0440\u0430\u043d\u0446\u0443\u0437\u0441\u043a\u0438\u0445 \u0431\u0443\u043b\u043e\u043a",
    "\u041f\u0420\u0418\u0412\u0415\u0422",
    "\u0423\u043a\u0440\u0430\u0457\u043d\u0430 \u0457 \u0454 \u0491",
    "\u0417\u0434\u0440\u0430\u0432\u0441\u0442\u0432\u0443\u0439\u0442\u0435",
    "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645",
    "\u0627\u0644\u0633\u0644\u0627\u0645 \u0639\u0644\u064a\u0643\u0645",
    "\u0627\u0644\u0639\u0631\u0628\u064a\u0629 123",
    "\u05e9\u05dc\u05d5\u05dd \u05e2\u05d5\u05dc\u05dd",
    "\u05e2\u05d1\u05e8\u05d9\u05ea",
    "Hello \u05e9\u05dc\u05d5\u05dd world",
    "\u0928\u092e\u0938\u094d\u0924\u0947 \u0926\u0941\u0928\u093f\u092f\u093e",
    "\u0939\u093f\u0928\u094d\u0926\u0940 \u092d\u093e\u0937\u093e",
    "\u0915\u094d\u0937\u0924\u094d\u0930\u093f\u092f",
    "\u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35\u0e0a\u0e32\u0e27\u0e42\u0e25\u0e01",
    "\u0e20\u0e32\u0e29\u0e32\u0e44\u0e17\u0e22",
    "\u0e01\u0e23\u0e38\u0e07\u0e40\u0e17\u0e1e\u0e21\u0e2b\u0e32\u0e19\u0e04\u0e23",
    "\u0532\u0561\u0580\u0565\u0582",
    "\u10d2\u10d0\u10db\u10d0\u10e0\u10ef\u10dd\u10d1\u10d0",
    "\u1230\u120b\u121d",
    "\u0bb5\u0ba3\u0b95\u0bcd\u0b95\u0bae\u0bcd",
    "\u09b9\u09cd\u09af\u09be\u09b2\u09cb",
    # --- CJK ----------------------------------------------------------------
    "\u4f60\u597d\uff0c\u4e16\u754c\uff01",
    "\u4e2d\u6587\u5206\u8bcd\u6d4b\u8bd5",
    "\u6211\u7231\u5317\u4eac\u5929\u5b89\u95e8",
    "\u3053\u3093\u306b\u3061\u306f\u4e16\u754c",
    "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8",
    "\u30ab\u30bf\u30ab\u30ca",
    "\u3072\u3089\u304c\u306a",
    "\u6771\u4eac\u30bf\u30ef\u30fc",
    "\uc548\ub155\ud558\uc138\uc694 \uc138\uacc4",
    "\ud55c\uad6d\uc5b4 \ud14d\uc2a4\ud2b8",
    "\u6f22\u5b57\u304b\u306a\u4ea4\u3058\u308a\u6587",
    "\u4e2d\u6587English\u6df7\u5408",
    "\uff08\u5168\u89d2\uff09",
    "\u300c\u5f15\u7528\u300d",
    "\u9f8d \U00020bb7",  # includes a CJK Ext-B character (U+20BB7)
    # --- emoji --------------------------------------------------------------
    "\U0001f600",
    "\U0001f600\U0001f603\U0001f604",
    "\U0001f44d",
    "\U0001f44d\U0001f3fd",
    "\U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466",
    "\U0001f1eb\U0001f1f7",
    "\U0001f1ef\U0001f1f5\U0001f1fa\U0001f1f8",
    "\U0001f3f3\ufe0f\u200d\U0001f308",
    "\u2764\ufe0f",
    "\U0001f469\U0001f3fe\u200d\U0001f4bb",
    "I \u2764\ufe0f Rust \U0001f980",
    "\U0001f642 hi",
    "hello \U0001f30d!",
    "\U0001f9d1\u200d\U0001f91d\u200d\U0001f9d1",
    "\u2615",
    "#\ufe0f\u20e3",
    "1\ufe0f\u20e3",
    "\u2603 \u2602 \u2600",
    # --- combining marks ----------------------------------------------------
    "e\u0301",
    "cafe\u0301",
    "n\u0303",
    "a\u0300\u0301\u0302",
    "Z\u0351\u036b\u0343a\u0310l\u0352g\u0301o\u0489",
    "o\u0308",
    "A\u030a",
    "\u00e9 vs e\u0301",
    "\u0301",
    # --- long words / long runs ---------------------------------------------
    "supercalifragilisticexpialidocious",
    "pneumonoultramicroscopicsilicovolcanoconiosis",
    "Donaudampfschifffahrtsgesellschaftskapit\u00e4n",
    "antidisestablishmentarianism",
    "x" * 200,
    "ab" * 50,
    "1" * 64,
    "-" * 80,
    "=" * 40,
    " " * 33,
    "\n" * 17,
    "\U0001f600" * 20,
    "\u4e2d" * 30,
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud exercitation ullamco laboris nisi ut aliquip ex ea commodo consequat.",
    # --- special-token text ------------------------------------------------
    "<|im_start|>user\nhi<|im_end|>",
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "Hello<|endoftext|>world",
    "text before <|im_start|>assistant\nSure!<|im_end|>\n",
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "<|im_end|><|im_end|>",
    " <|endoftext|> ",
    "<|endoftext|><|endoftext|>",
    "<|im_start|",
    "<|endoftext",
    "< |endoftext| >",
    "<|unknown|>",
    "<|IM_START|>",
    "a<|im_start|>b<|im_end|>c",
    "<repo_name>plinth<file_sep>src/main.rs",
    "<filename>",
    # --- misc control / mixed -----------------------------------------------
    "a\u0000b",
    "\u001b[31mred\u001b[0m",
    "\u007f",
    "tab\there, newline\nthere, cr\rhere",
    "Mixed: English, \u0420\u0443\u0441\u0441\u043a\u0438\u0439, \u4e2d\u6587, \u0627\u0644\u0639\u0631\u0628\u064a\u0629, \U0001f680 and 42!",
    "Price: \u00a3100 / \u00a512,000 / \u20b9500",
    "\u2200x \u2208 \u211d: x\u00b2 \u2265 0",
    "\u2190 \u2191 \u2192 \u2193 \u21d2",
    "\u00a9 2024 \u00ae \u2122",
    "\ufeffBOM at start",
    "\ufb01nance \ufb02ow",  # ligature characters
    "\u2460\u2461\u2462",
    "Tab\tseparated\tvalues\t1\t2\t3",
    "CSV,with,commas,1,2.5,\"quoted, field\"",
]

# --------------------------------------------------------------------------
# Passage for the teacher-forced SmolLM2 reference (written for plinth).
# --------------------------------------------------------------------------

PASSAGE = """\
Lighthouses are among the oldest pieces of public infrastructure that people still recognize today. Long before engines, radio or satellites, sailors depended on fires and lamps placed on high ground to warn them of rocks, sandbars and the narrow mouths of dangerous harbors. The most famous early example was the Pharos of Alexandria, built on a small island off the Egyptian coast in the third century before the common era. Ancient writers described a tall stone tower topped by a fire whose glow could be seen far out at sea, and the structure stood, in one form or another, for well over a thousand years before earthquakes finally brought it down.

For many centuries afterward, coastal lights remained simple. Monks, town councils and merchant guilds kept wood or coal fires burning in open iron baskets, and the results were smoky, dim and unreliable. A fire that could not be seen through rain or fog offered little comfort to a captain trying to find a safe channel at night. As trade across the Atlantic and the North Sea grew, governments began to treat lighthouses as a shared responsibility, collecting small fees from ships that entered a port and using the money to build and staff towers along the busiest routes.

The greatest change came in the early nineteenth century, when the French engineer Augustin Fresnel designed a new kind of lens. Instead of one thick curved piece of glass, his lens used many thin rings of prisms arranged around a central lamp. The rings bent and gathered the light into a narrow, powerful beam while weighing far less than a solid lens of the same size. Towers fitted with these lenses could be seen for twenty miles or more, and by rotating the lens or adding shutters, each station could be given its own pattern of flashes, so that sailors knew exactly which light they were looking at.

Keeping those lights burning was demanding work. Keepers trimmed wicks, polished brass and glass, carried fuel up narrow stairs and recorded the weather in careful logbooks. Many lived with their families on isolated rocks where supply boats might not arrive for weeks during winter storms.

During the twentieth century, electric lamps, automatic timers and radio beacons gradually took over most of those duties. Today nearly every lighthouse operates without a resident keeper, and satellite positioning guides the majority of ships. Yet the towers remain useful as backup aids and as landmarks, and many have been preserved as museums that remind visitors how much effort once went into making the sea a little safer.
"""

# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


def versions() -> str:
    import safetensors
    import tokenizers

    return (
        f"transformers {transformers.__version__}, tokenizers {tokenizers.__version__}, "
        f"torch {torch.__version__}, gguf {gguf_version()}, numpy {np.__version__}, "
        f"safetensors {safetensors.__version__}, python {sys.version.split()[0]}"
    )


def gguf_version() -> str:
    try:
        from importlib.metadata import version

        return version("gguf")
    except Exception:  # pragma: no cover
        return "unknown"


def seed_everything(seed: int = SEED) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def dtype_kwargs(dtype: torch.dtype) -> dict:
    """transformers renamed `torch_dtype` to `dtype`; use whichever it takes."""
    major, minor = (int(p) for p in transformers.__version__.split(".")[:2])
    if (major, minor) >= (4, 56):
        return {"dtype": dtype}
    return {"torch_dtype": dtype}


def write_json(path: Path, obj, *, indent=1) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        json.dump(obj, f, ensure_ascii=False, indent=indent)
        f.write("\n")


def gguf_kv(reader: gguf.GGUFReader, key: str):
    field = reader.fields.get(key)
    if field is None:
        return None
    if hasattr(field, "contents"):
        return field.contents()
    # Older gguf: decode by hand (scalars / strings only).
    part = field.parts[field.data[0]]
    if field.types and field.types[0] == gguf.GGUFValueType.STRING:
        return bytes(part).decode("utf-8")
    return part.tolist()[0]


# --------------------------------------------------------------------------
# a + b: tokenizer corpus and reference ids
# --------------------------------------------------------------------------


# Set by load_hf_tokenizer: what (if anything) was changed in the tokenizer transformers built.
TOKENIZER_PATCH_NOTE = "none"


def load_hf_tokenizer(gguf_path: Path):
    """The transformers tokenizer built from the GGUF, with the SmolLM pre-tokenizer restored.

    The GGUF says ``tokenizer.ggml.pre = "smollm"``.  llama.cpp (LLAMA_VOCAB_PRE_TYPE_SMOLLM)
    and SmolLM2's own tokenizer.json first split every number character (\\p{N}) into its own
    piece, then apply the GPT-2 byte-level regex.  transformers' GGUF tokenizer builder has no
    entry for "smollm" and leaves only the plain GPT-2 ByteLevel pre-tokenizer, which differs
    e.g. on whitespace before digits ("a  1").  We put the digit split back in front; the
    vocabulary, merges and special tokens stay exactly as transformers read them from the GGUF.
    """
    global TOKENIZER_PATCH_NOTE
    from tokenizers import pre_tokenizers

    tok = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    pre = gguf_kv(gguf.GGUFReader(str(gguf_path)), "tokenizer.ggml.pre")
    backend = tok.backend_tokenizer
    current = json.loads(backend.to_str())["pre_tokenizer"]
    if pre == "smollm" and current.get("type") == "ByteLevel":
        backend.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Digits(individual_digits=True),
                pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
            ]
        )
        TOKENIZER_PATCH_NOTE = (
            "transformers' GGUF tokenizer builder ignores tokenizer.ggml.pre='smollm' (plain GPT-2 "
            "ByteLevel pre-tokenizer); the pre-tokenizer was replaced with "
            "Sequence[Digits(individual_digits=True), ByteLevel(add_prefix_space=False, use_regex=True)] "
            "as in SmolLM2's tokenizer.json and llama.cpp's LLAMA_VOCAB_PRE_TYPE_SMOLLM "
            "(split each \\p{N} first, then the GPT-2 regex); vocab, merges and special tokens unchanged"
        )
    elif pre == "smollm":
        TOKENIZER_PATCH_NOTE = f"none (transformers already set pre_tokenizer {current.get('type')})"
    return tok


def load_unpatched_tokenizer(gguf_path: Path):
    return AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)


def make_tokenizer_fixtures(gguf_path: Path, out: Path) -> None:
    assert len(CORPUS) >= 220, len(CORPUS)
    assert len(set(CORPUS)) == len(CORPUS), "duplicate corpus strings"
    write_json(out / "tokenizer" / "corpus.json", CORPUS)

    reader = gguf.GGUFReader(str(gguf_path))
    tok = load_hf_tokenizer(gguf_path)

    gguf_meta = {
        k: gguf_kv(reader, k)
        for k in (
            "tokenizer.ggml.model",
            "tokenizer.ggml.pre",
            "tokenizer.ggml.bos_token_id",
            "tokenizer.ggml.eos_token_id",
            "tokenizer.ggml.unknown_token_id",
            "tokenizer.ggml.padding_token_id",
            "tokenizer.ggml.add_bos_token",
            "tokenizer.ggml.add_eos_token",
        )
    }
    print("GGUF tokenizer metadata:", gguf_meta)

    add_bos = getattr(tok, "add_bos_token", None)
    if add_bos is None:
        add_bos = gguf_meta["tokenizer.ggml.add_bos_token"]
    print(
        f"tokenizer class {type(tok).__name__}: bos_token_id={tok.bos_token_id} "
        f"eos_token_id={tok.eos_token_id} add_bos_token={add_bos} "
        f"clean_up_tokenization_spaces={getattr(tok, 'clean_up_tokenization_spaces', None)}"
    )

    print("tokenizer patch:", TOKENIZER_PATCH_NOTE)
    raw = load_unpatched_tokenizer(gguf_path)
    changed = [t for t in CORPUS if raw(t, add_special_tokens=False)["input_ids"] != tok(t, add_special_tokens=False)["input_ids"]]
    print(f"{len(changed)} corpus strings tokenize differently without the patch: {changed[:8]!r}")

    cases = []
    for text in CORPUS:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        decoded = tok.decode(ids, skip_special_tokens=False)
        cases.append({"text": text, "ids": list(map(int, ids)), "decoded": decoded})

    messages = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "What is 2+2?"},
    ]
    chat = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    chat_ids = tok(chat, add_special_tokens=False)["input_ids"]
    print("chat_example:", repr(chat))
    print("chat_example_ids:", chat_ids)

    n_roundtrip = sum(c["decoded"] == c["text"] for c in cases)
    print(f"{len(cases)} tokenizer cases, {n_roundtrip} decode back to the exact input")
    for c in cases[:3] + cases[-3:]:
        print(f"  {c['text']!r:.60} -> {c['ids'][:12]}")

    doc = {
        "reference": (
            "Hugging Face tokenizer built by transformers from the GGUF file "
            f"{gguf_path.name} (AutoTokenizer.from_pretrained(dir, gguf_file=...); "
            f"class {type(tok).__name__}); ids = tokenizer(text, add_special_tokens=False)"
            "['input_ids'] (special-token text in the input IS matched as special tokens); "
            "decoded = tokenizer.decode(ids, skip_special_tokens=False); "
            f"clean_up_tokenization_spaces={getattr(tok, 'clean_up_tokenization_spaces', None)}; "
            f"workaround: {TOKENIZER_PATCH_NOTE}; " + versions()
        ),
        "add_special_tokens": False,
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
        "add_bos_token": add_bos,
        "gguf_tokenizer_metadata": gguf_meta,
        "chat_example": chat,
        "chat_example_ids": list(map(int, chat_ids)),
        "cases": cases,
    }
    # One case per line keeps the file small and diff-friendly.
    path = out / "tokenizer" / "smollm2_ids.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write("{\n")
        head = {k: v for k, v in doc.items() if k != "cases"}
        for k, v in head.items():
            f.write(f" {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)},\n")
        f.write(' "cases": [\n')
        for i, c in enumerate(cases):
            sep = "," if i + 1 < len(cases) else ""
            f.write("  " + json.dumps(c, ensure_ascii=False) + sep + "\n")
        f.write(" ]\n}\n")
    # Check the hand-written JSON parses back to the same document.
    with open(path, encoding="utf-8") as f:
        assert json.load(f) == doc


# --------------------------------------------------------------------------
# c: tiny random Llama (safetensors + GGUF + reference logits)
# --------------------------------------------------------------------------


def permute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp convert_hf_to_gguf.py LlamaModel.permute (HF -> GGUF rotary layout)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def make_tiny_llama(out: Path) -> None:
    d = out / "tiny-llama"
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)

    cfg = LlamaConfig(
        vocab_size=256,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        tie_word_embeddings=False,
        attention_bias=False,
        mlp_bias=False,
        initializer_range=0.2,
        hidden_act="silu",
        bos_token_id=1,
        eos_token_id=2,
        **dtype_kwargs(torch.float32),
    )
    cfg._attn_implementation = "eager"

    seed_everything(SEED)
    model = LlamaForCausalLM(cfg).to(torch.float32).eval()
    # Norm weights are initialised to exactly 1; perturb them (seeded) so a
    # runtime that ignores or misplaces a norm weight fails the parity test.
    with torch.no_grad():
        g = torch.Generator().manual_seed(SEED + 1)
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))

    rope_params = getattr(cfg, "rope_parameters", None) or {}
    rope_theta = float(rope_params.get("rope_theta", getattr(cfg, "rope_theta", 10000.0)))
    assert rope_theta == 10000.0, rope_theta

    try:
        model.save_pretrained(str(d), safe_serialization=True)
    except TypeError:  # newer transformers always writes safetensors and dropped the flag
        model.save_pretrained(str(d))
    for f in sorted(os.listdir(d)):
        if f not in ("config.json", "model.safetensors"):
            os.remove(d / f)
        else:
            os.chmod(d / f, 0o644)
    # transformers >= 5 writes rope_theta only inside "rope_parameters" and the dtype as "dtype";
    # also write the classic top-level keys so loaders that expect either layout find them.
    with open(d / "config.json", encoding="utf-8") as f:
        cfg_json = json.load(f)
    cfg_json.setdefault("rope_theta", rope_theta)
    cfg_json.setdefault("torch_dtype", "float32")
    write_json(d / "config.json", dict(sorted(cfg_json.items())), indent=2)

    # ---- GGUF copy of the same weights -----------------------------------
    sd = {k: v.detach().cpu().numpy().astype(np.float32) for k, v in model.state_dict().items()}
    n_head, n_kv = cfg.num_attention_heads, cfg.num_key_value_heads
    head_dim = cfg.hidden_size // n_head

    w = gguf.GGUFWriter(str(d / "model.gguf"), "llama")
    w.add_name("tiny-llama")
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_rope_freq_base(rope_theta)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_rope_dimension_count(head_dim)
    w.add_vocab_size(cfg.vocab_size)
    w.add_file_type(0)  # LlamaFileType.ALL_F32

    def put(name: str, arr: np.ndarray) -> None:
        w.add_tensor(name, np.ascontiguousarray(arr, dtype=np.float32))

    put("token_embd.weight", sd["model.embed_tokens.weight"])
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        put(f"blk.{i}.attn_norm.weight", sd[p + "input_layernorm.weight"])
        put(f"blk.{i}.attn_q.weight", permute_qk(sd[p + "self_attn.q_proj.weight"], n_head))
        put(f"blk.{i}.attn_k.weight", permute_qk(sd[p + "self_attn.k_proj.weight"], n_kv))
        put(f"blk.{i}.attn_v.weight", sd[p + "self_attn.v_proj.weight"])
        put(f"blk.{i}.attn_output.weight", sd[p + "self_attn.o_proj.weight"])
        put(f"blk.{i}.ffn_norm.weight", sd[p + "post_attention_layernorm.weight"])
        put(f"blk.{i}.ffn_gate.weight", sd[p + "mlp.gate_proj.weight"])
        put(f"blk.{i}.ffn_up.weight", sd[p + "mlp.up_proj.weight"])
        put(f"blk.{i}.ffn_down.weight", sd[p + "mlp.down_proj.weight"])
    put("output_norm.weight", sd["model.norm.weight"])
    put("output.weight", sd["lm_head.weight"])

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    # ---- reference logits --------------------------------------------------
    g = torch.Generator().manual_seed(SEED + 2)
    input_ids = torch.randint(0, cfg.vocab_size, (1, 24), generator=g, dtype=torch.int64)
    with torch.no_grad():
        full = model(input_ids=input_ids, use_cache=False).logits[0].float()
        # Newer transformers call the KV-cache argument `cache`; older ones `past_key_values`.
        cache_arg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
        past = None
        steps = []
        for t in range(input_ids.shape[1]):
            o = model(input_ids=input_ids[:, t : t + 1], use_cache=True, **{cache_arg: past})
            past = getattr(o, "cache", None)
            if past is None:
                past = o.past_key_values
            steps.append(o.logits[0, -1].float())
        dec = torch.stack(steps)

    from safetensors.torch import save_file

    save_file(
        {
            "input_ids": input_ids.contiguous(),
            "logits": full.contiguous(),
            "logits_decode": dec.contiguous(),
        },
        str(d / "reference.safetensors"),
        metadata={"reference": "transformers LlamaForCausalLM, float32, eager attention; " + versions()},
    )
    # The saved directory must load back (config.json with both key layouts) to the same model.
    reloaded = LlamaForCausalLM.from_pretrained(str(d), attn_implementation="eager", **dtype_kwargs(torch.float32)).eval()
    with torch.no_grad():
        again = reloaded(input_ids=input_ids, use_cache=False).logits[0].float()
    assert torch.equal(again, full), (again - full).abs().max()

    diff = (full - dec).abs().max().item()
    print(f"tiny-llama input_ids[:8]={input_ids[0, :8].tolist()}")
    print(f"tiny-llama logits std={full.std().item():.4f}, max|logits - logits_decode| = {diff:.3e}")
    assert diff < 1e-4, diff

    # Sanity: the GGUF reads back, and un-permuting recovers the HF weights.
    r = gguf.GGUFReader(str(d / "model.gguf"))
    names = [t.name for t in r.tensors]
    assert len(names) == 3 + 9 * cfg.num_hidden_layers, names
    tq = next(t for t in r.tensors if t.name == "blk.0.attn_q.weight")
    assert list(tq.shape) == [cfg.hidden_size, cfg.hidden_size]
    np_logits = gguf_numpy_forward(d / "model.gguf", input_ids[0].numpy())
    gdiff = float(np.abs(np_logits - full.double().numpy()).max())
    print(f"tiny-llama GGUF: {len(names)} tensors, {len(r.fields)} kv fields; "
          f"numpy llama.cpp-style forward of model.gguf vs HF logits: max abs diff {gdiff:.3e}")
    assert gdiff < 1e-4, gdiff
    os.chmod(d / "reference.safetensors", 0o644)


def gguf_numpy_forward(path: Path, ids: np.ndarray) -> np.ndarray:
    """Independent float64 forward pass of the tiny GGUF with llama.cpp semantics.

    llama.cpp runs llama with LLAMA_ROPE_TYPE_NORM: rotary pairs are adjacent elements
    (x[2i], x[2i+1]) of each head, which is why the converter permutes Q/K rows.  If this
    matches the HF logits, the permutation and the metadata are right.
    """
    r = gguf.GGUFReader(str(path))
    kv = {k: gguf_kv(r, k) for k in r.fields if not k.startswith("GGUF.")}
    W = {t.name: np.asarray(t.data, dtype=np.float64).reshape([int(x) for x in reversed(t.shape)]) for t in r.tensors}
    n_layer, n_head, n_kv = kv["llama.block_count"], kv["llama.attention.head_count"], kv["llama.attention.head_count_kv"]
    eps, base, n_rot = kv["llama.attention.layer_norm_rms_epsilon"], kv["llama.rope.freq_base"], kv["llama.rope.dimension_count"]
    hd = kv["llama.embedding_length"] // n_head
    T = len(ids)

    def rms(x, w):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w

    pos = np.arange(T)[:, None]
    theta = pos * base ** (-np.arange(0, n_rot, 2) / n_rot)[None, :]  # [T, n_rot/2]
    cos, sin = np.cos(theta)[:, None, :], np.sin(theta)[:, None, :]

    def rope(x):  # x: [T, H, hd], adjacent pairs
        x0, x1 = x[..., 0:n_rot:2], x[..., 1:n_rot:2]
        out = x.copy()
        out[..., 0:n_rot:2] = x0 * cos - x1 * sin
        out[..., 1:n_rot:2] = x0 * sin + x1 * cos
        return out

    h = W["token_embd.weight"][ids]
    mask = np.triu(np.full((T, T), -np.inf), 1)
    for i in range(n_layer):
        b = f"blk.{i}."
        x = rms(h, W[b + "attn_norm.weight"])
        q = rope((x @ W[b + "attn_q.weight"].T).reshape(T, n_head, hd))
        k = rope((x @ W[b + "attn_k.weight"].T).reshape(T, n_kv, hd))
        v = (x @ W[b + "attn_v.weight"].T).reshape(T, n_kv, hd)
        rep = n_head // n_kv
        k, v = np.repeat(k, rep, axis=1), np.repeat(v, rep, axis=1)
        att = np.einsum("thd,shd->hts", q, k) / math.sqrt(hd) + mask
        att = np.exp(att - att.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        o = np.einsum("hts,shd->thd", att, v).reshape(T, n_head * hd)
        h = h + o @ W[b + "attn_output.weight"].T
        x = rms(h, W[b + "ffn_norm.weight"])
        gate = x @ W[b + "ffn_gate.weight"].T
        h = h + ((gate / (1 + np.exp(-gate))) * (x @ W[b + "ffn_up.weight"].T)) @ W[b + "ffn_down.weight"].T
    return rms(h, W["output_norm.weight"]) @ W["output.weight"].T


# --------------------------------------------------------------------------
# d + e: SmolLM2 teacher-forced reference on the passage
# --------------------------------------------------------------------------


def make_smollm2_reference(gguf_path: Path, out: Path) -> None:
    d = out / "smollm2"
    d.mkdir(parents=True, exist_ok=True)
    with open(d / "passage.txt", "w", encoding="utf-8", newline="\n") as f:
        f.write(PASSAGE)
    print(f"passage: {len(PASSAGE.split())} words")

    tok = load_hf_tokenizer(gguf_path)
    ids = tok(PASSAGE, add_special_tokens=False)["input_ids"][:512]
    n = len(ids)

    seed_everything(SEED)
    extra = {}
    try:  # transformers >= 5 can keep GGUF blocks packed; ask for plain float32 weights explicitly.
        from transformers import GgufConfig

        if "dequantize" in inspect.signature(GgufConfig.__init__).parameters:
            extra["quantization_config"] = GgufConfig(dequantize=True)
    except ImportError:
        pass
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf_path.parent),
        gguf_file=gguf_path.name,
        attn_implementation="eager",
        **dtype_kwargs(torch.float32),
        **extra,
    ).eval()
    for name, p in model.named_parameters():
        assert p.dtype == torch.float32, (name, p.dtype)
    for name, mod in model.named_modules():
        assert type(mod).__module__.startswith(("torch.", "transformers.models.", "transformers.activations")), (
            name,
            type(mod),
        )
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids], dtype=torch.int64), use_cache=False).logits[0].float()
    logp = torch.log_softmax(logits.double(), dim=-1)
    tgt = torch.tensor(ids[1:], dtype=torch.int64)
    nll = (-logp[:-1].gather(1, tgt[:, None])[:, 0]).tolist()
    top1 = logits[:-1].argmax(dim=-1).tolist()
    ppl = math.exp(sum(nll) / len(nll))
    acc = sum(int(a == b) for a, b in zip(top1, ids[1:])) / len(top1)
    print(f"smollm2: {n} tokens, perplexity {ppl:.4f}, top-1 accuracy {acc:.3f}")

    write_json(
        d / "reference.json",
        {
            "reference": (
                f"transformers AutoModelForCausalLM from {gguf_path.name} (Q4_1 weights "
                "dequantized to float32 by transformers), float32 CPU forward, eager attention, "
                "tokenized by the transformers tokenizer from the same GGUF with "
                f"add_special_tokens=False (tokenizer workaround: {TOKENIZER_PATCH_NOTE}); " + versions()
            ),
            "note": (
                "top1[i] and nll[i] are for position i predicting input_ids[i+1], "
                "i in 0..n-1 (n-1 entries); nll uses log_softmax in float64 of the float32 "
                "logits; ppl = exp(mean(nll))"
            ),
            "n_tokens": n,
            "input_ids": ids,
            "top1": top1,
            "nll": [round(x, 6) for x in nll],
            "ppl": ppl,
        },
        indent=None,
    )


def make_smollm2_llamacpp_reference(gguf_path: Path, out: Path) -> None:
    """Teacher-forced reference from llama.cpp (llama-cpp-python) on the same passage ids.

    llama.cpp keeps the weights quantized and quantizes activations to 8 bits inside its
    matmuls, exactly like plinth's single-token decode path; this is the reference for that
    path (transformers' dequantized float32 is the reference for prefill).
    """
    try:
        import llama_cpp
    except ImportError:
        print("llama-cpp-python not installed: skipping reference_llamacpp.json")
        return
    d = out / "smollm2"
    ids = json.loads((d / "reference.json").read_text())["input_ids"]
    m = llama_cpp.Llama(
        str(gguf_path), n_ctx=1024, n_batch=1024, n_ubatch=1024, n_threads=2, logits_all=True, verbose=False, seed=SEED
    )
    m.eval(ids)
    logits = np.array(m.scores[: len(ids)], dtype=np.float64)
    mx = logits.max(axis=1, keepdims=True)
    logp = logits - mx - np.log(np.exp(logits - mx).sum(axis=1, keepdims=True))
    nll = [-float(logp[i, ids[i + 1]]) for i in range(len(ids) - 1)]
    top1 = [int(x) for x in logits[:-1].argmax(axis=1)]
    ppl = math.exp(sum(nll) / len(nll))
    print(f"smollm2 llama.cpp: {len(ids)} tokens, perplexity {ppl:.4f}")
    write_json(
        d / "reference_llamacpp.json",
        {
            "reference": f"llama.cpp via llama-cpp-python {llama_cpp.__version__}, {gguf_path.name}, 2 threads, "
            "one batch with logits for every position (weights quantized, activations quantized to 8 bits "
            "in the matmuls), same input_ids as reference.json; " + versions(),
            "note": "top1[i] and nll[i] are for position i predicting input_ids[i+1]; ppl = exp(mean(nll))",
            "n_tokens": len(ids),
            "input_ids": ids,
            "top1": top1,
            "nll": [round(x, 6) for x in nll],
            "ppl": ppl,
        },
        indent=None,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gguf", required=True, type=Path, help="path to SmolLM2-135M-Instruct GGUF")
    ap.add_argument("--out", default=Path("fixtures"), type=Path, help="output directory (default: fixtures)")
    args = ap.parse_args()
    gguf_path = args.gguf.resolve()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)

    print(versions())
    make_tokenizer_fixtures(gguf_path, out)
    make_tiny_llama(out)
    make_smollm2_reference(gguf_path, out)
    make_smollm2_llamacpp_reference(gguf_path, out)


if __name__ == "__main__":
    main()
