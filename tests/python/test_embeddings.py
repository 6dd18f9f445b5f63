"""`/v1/embeddings` and `/v1/rerank` of `plinth serve`, with the official `openai` package.

One server serves a decoder (SmolLM2), the embedding model all-MiniLM-L6-v2 and a tiny
cross-encoder side by side. Embeddings are compared with sentence-transformers' reference
vectors committed in fixtures/embeddings/minilm (made by scripts/make_encoder_fixtures.py),
so a wrong pooling, normalisation or tokenization fails here too.
"""
import base64
import concurrent.futures
import json
import math
import os
import struct

import httpx
import openai
import pytest

from test_openai_client import REPO, assert_error, client_of, serving

EMBEDDER = "all-minilm-l6-v2"
RERANKER = os.path.join(REPO, "fixtures", "encoders", "tiny-bert-rerank")
MIN_COSINE = 0.9999        # vs sentence-transformers
MIN_BATCH_COSINE = 0.99999  # concurrent (batched) vs alone


def load_reference():
    d = os.path.join(REPO, "fixtures", "embeddings", "minilm")
    meta = json.load(open(os.path.join(d, "sentences.json")))
    raw = open(os.path.join(d, "embeddings.safetensors"), "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    info = header["embeddings"]
    assert info["dtype"] == "F32"
    rows, dim = info["shape"]
    start, end = info["data_offsets"]
    flat = struct.unpack(f"<{rows * dim}f", raw[8 + n + start:8 + n + end])
    return meta["sentences"], [list(flat[i * dim:(i + 1) * dim]) for i in range(rows)]


def cosine(a, b):
    dot = sum(x * y for x, y in zip(a, b))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


@pytest.fixture(scope="module")
def server():
    yield from serving(["--model", EMBEDDER, "--model", RERANKER, "--alias", "smollm2", "--alias", "minilm", "--alias", "reranker"])


@pytest.fixture(scope="module")
def client(server):
    yield from client_of(server)


def test_models_are_listed_side_by_side(server):
    assert server.model_ids == ["smollm2", "minilm", "reranker"]


def test_float_embeddings_match_sentence_transformers(client):
    sentences, want = load_reference()
    got = client.embeddings.create(model="minilm", input=sentences[:40], encoding_format="float")
    assert got.object == "list" and got.model == "minilm" and len(got.data) == 40
    assert got.usage.prompt_tokens > 40 and got.usage.total_tokens == got.usage.prompt_tokens
    for d, w, s in zip(got.data, want, sentences):
        assert len(d.embedding) == 384
        assert cosine(d.embedding, w) >= MIN_COSINE, s


def test_base64_is_the_same_vector(client, server):
    sentences, want = load_reference()
    # The openai client asks for base64 by default and decodes it itself.
    by_default = client.embeddings.create(model="minilm", input=sentences[0])
    floats = client.embeddings.create(model="minilm", input=sentences[0], encoding_format="float")
    assert by_default.data[0].embedding == pytest.approx(floats.data[0].embedding, abs=1e-7)
    r = httpx.post(f"{server.url}/v1/embeddings", json={"model": "minilm", "input": [sentences[0]], "encoding_format": "base64"}, timeout=30)
    assert r.status_code == 200, r.text
    raw = base64.b64decode(r.json()["data"][0]["embedding"])
    vec = struct.unpack(f"<{len(raw) // 4}f", raw)
    assert len(vec) == 384 and cosine(vec, want[0]) >= MIN_COSINE


def test_token_ids_and_dimensions(client):
    text = client.embeddings.create(model="minilm", input="hello world", encoding_format="float").data[0].embedding
    # [hello, world] in the bert-base-uncased vocabulary; the server adds [CLS] / [SEP].
    ids = client.embeddings.create(model="minilm", input=[[7592, 2088]], encoding_format="float")
    assert ids.data[0].embedding == pytest.approx(text, abs=1e-6)
    assert ids.usage.prompt_tokens == 4
    short = client.embeddings.create(model="minilm", input="hello world", dimensions=128, encoding_format="float").data[0].embedding
    assert len(short) == 128 and math.isclose(sum(x * x for x in short), 1.0, rel_tol=1e-5)


def test_concurrent_requests_equal_single_requests(client):
    sentences, _ = load_reference()
    groups = [sentences[i:i + 5] for i in range(0, 80, 5)]
    alone = [client.embeddings.create(model="minilm", input=g, encoding_format="float") for g in groups]
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        together = list(pool.map(lambda g: client.embeddings.create(model="minilm", input=g, encoding_format="float"), groups))
    for a, t in zip(alone, together):
        for x, y in zip(a.data, t.data):
            assert cosine(x.embedding, y.embedding) >= MIN_BATCH_COSINE


def test_decoder_still_chats_beside_encoders(client):
    r = client.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": "Hi"}], max_tokens=4, temperature=0)
    assert r.choices[0].message.content


@pytest.mark.parametrize("body, param", [
    ({"model": "minilm", "input": []}, "input"),
    ({"model": "minilm", "input": ""}, "input"),
    ({"model": "minilm", "input": ["x"] * 2049}, "input"),
    ({"model": "minilm", "input": ["a", 1]}, "input"),
    ({"model": "minilm", "input": [[1, 2], "a"]}, "input"),
    ({"model": "minilm", "input": {"text": "a"}}, "input"),
    ({"model": "minilm", "input": 42}, "input"),
    ({"model": "minilm", "input": [-3]}, "input"),
    ({"model": "minilm", "input": [[999999]]}, "input"),
    ({"model": "minilm", "input": "word " * 400}, "input"),
    ({"model": "minilm", "input": "a", "encoding_format": "hex"}, "encoding_format"),
    ({"model": "minilm", "input": "a", "dimensions": 0}, "dimensions"),
    ({"model": "minilm", "input": "a", "dimensions": 385}, "dimensions"),
    ({"model": "smollm2", "input": "a"}, "model"),
    ({"input": "a"}, "model"),
])
def test_bad_embedding_requests_get_openai_errors(client, body, param):
    with pytest.raises(openai.BadRequestError) as e:
        client.post("/embeddings", body=body, cast_to=httpx.Response)
    err = e.value.body
    assert e.value.status_code == 400 and err["param"] == param and err["type"] == "invalid_request_error", err
    assert err["message"]


def test_overlong_input_is_cut_when_asked(client, server):
    r = httpx.post(f"{server.url}/v1/embeddings", json={"model": "minilm", "input": "word " * 400, "truncate": True}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["prompt_tokens"] == 256


def test_unknown_model_and_bad_json(server):
    assert_error(httpx.post(f"{server.url}/v1/embeddings", json={"model": "nope", "input": "a"}, timeout=30), 404, "model_not_found")
    assert_error(httpx.post(f"{server.url}/v1/embeddings", content=b"{not json", timeout=30), 400)
    err = assert_error(httpx.post(f"{server.url}/v1/chat/completions", json={"model": "minilm", "messages": [{"role": "user", "content": "hi"}]}, timeout=30), 400)
    assert "encoder" in err["message"]


def test_rerank_in_both_shapes(server):
    docs = ["a cat is an animal", "paris is a city", "the cat sat on the mat"]
    r = httpx.post(f"{server.url}/v1/rerank", json={"model": "reranker", "query": "cats", "documents": docs, "top_n": 2, "return_documents": True}, timeout=30)
    assert r.status_code == 200, r.text
    res = r.json()["results"]
    assert len(res) == 2 and res[0]["relevance_score"] >= res[1]["relevance_score"]
    assert res[0]["document"]["text"] == docs[res[0]["index"]]
    # text-embeddings-inference's shape: `texts` in, a bare list out, no model needed.
    t = httpx.post(f"{server.url}/rerank", json={"query": "cats", "texts": docs}, timeout=30)
    assert t.status_code == 200, t.text
    tei = t.json()
    assert [x["index"] for x in tei][:2] == [x["index"] for x in res]
    assert tei[0]["score"] == pytest.approx(res[0]["relevance_score"], abs=1e-6)
    assert_error(httpx.post(f"{server.url}/v1/rerank", json={"model": "minilm", "query": "q", "documents": ["a"]}, timeout=30), 400)
    assert_error(httpx.post(f"{server.url}/v1/rerank", json={"model": "reranker", "query": "q", "documents": []}, timeout=30), 400)
    assert_error(httpx.post(f"{server.url}/v1/rerank", json={"model": "reranker", "documents": ["a"]}, timeout=30), 400)


def test_metrics_count_embeddings(server, client):
    client.embeddings.create(model="minilm", input=["one", "two", "three"], encoding_format="float")
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    inputs = [float(line.split()[-1]) for line in text.splitlines() if line.startswith('plinth_embedding_inputs_total{model="minilm"}')]
    assert inputs and inputs[0] >= 3, text
