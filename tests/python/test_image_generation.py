"""`POST /v1/images/generations`, with the official `openai` package.

One server serves SmolLM2 beside a tiny random-weight Stable Diffusion pipeline
(fixtures/tiny-sd, diffusers layout). The pictures are noise (random weights), so these tests
check the contract: the PNGs have the requested size and carry their settings, a seed
reproduces an image byte for byte, image jobs do not hold up text requests, the image queue
is bounded, and every bad request gets a 400 with OpenAI's error body naming the parameter.
"""
import base64
import concurrent.futures
import os
import struct
import time
import zlib

import httpx
import openai
import pytest

from test_openai_client import JAPAN, REPO, assert_error, client_of, serving

SD = os.path.join(REPO, "fixtures", "tiny-sd")


@pytest.fixture(scope="module")
def server():
    yield from serving(["--model", SD, "--alias", "smollm2", "--alias", "tiny-sd", "--max-image-queue", "2"])


@pytest.fixture(scope="module")
def client(server):
    yield from client_of(server)


def png_info(data):
    """(width, height, {keyword: text}) of a PNG, read chunk by chunk with CRC checks."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, size, text = 8, None, {}
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind = data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert zlib.crc32(kind + body) == crc, f"bad CRC in {kind}"
        if kind == b"IHDR":
            size = struct.unpack(">II", body[:8])
        elif kind == b"iTXt":
            key, rest = body.split(b"\0", 1)
            # compression flag, method, language tag\0, translated keyword\0, text
            compressed = rest[0]
            _, _, payload = rest[2:].split(b"\0", 2)
            text[key.decode("latin-1")] = (zlib.decompress(payload) if compressed else payload).decode()
        elif kind == b"tEXt":
            key, value = body.split(b"\0", 1)
            text[key.decode("latin-1")] = value.decode("latin-1")
        pos += 12 + length
    return size[0], size[1], text


def generate(server, timeout=120, **body):
    return httpx.post(f"{server.url}/v1/images/generations", json={"model": "tiny-sd", **body}, timeout=timeout)


def test_listed_as_a_model(client):
    ids = [m.id for m in client.models.list().data]
    assert "tiny-sd" in ids and "smollm2" in ids


def test_b64_png_of_the_requested_size_with_settings(client):
    r = client.images.generate(model="tiny-sd", prompt="a red lighthouse at dawn", n=2, size="64x48",
                               response_format="b64_json", extra_body={"seed": 7, "steps": 2})
    assert r.created > 0 and len(r.data) == 2
    pngs = [base64.b64decode(d.b64_json) for d in r.data]
    for i, png in enumerate(pngs):
        w, h, text = png_info(png)
        assert (w, h) == (64, 48)
        assert text["parameters"].startswith("a red lighthouse at dawn\n")
        assert f"Seed: {7 + i}" in text["parameters"] and "Steps: 2" in text["parameters"]
        assert '"seed":' in text["plinth"]
    # Two images of one request use consecutive seeds, so they differ.
    assert pngs[0] != pngs[1]


def test_same_seed_same_bytes(client):
    def once():
        r = client.images.generate(model="tiny-sd", prompt="a castle on a hill", size="64x64",
                                   extra_body={"seed": 42, "steps": 2, "scheduler": "euler-a"})
        return base64.b64decode(r.data[0].b64_json)

    a, b = once(), once()
    assert a == b
    r = client.images.generate(model="tiny-sd", prompt="a castle on a hill", size="64x64",
                               extra_body={"seed": 43, "steps": 2, "scheduler": "euler-a"})
    assert base64.b64decode(r.data[0].b64_json) != a


def test_default_model_and_format(server):
    # No model, no response_format: the first text-to-image model, images in the response.
    r = httpx.post(f"{server.url}/v1/images/generations", json={"prompt": "a cat", "size": "64x64", "steps": 1}, timeout=120)
    assert r.status_code == 200, r.text
    assert png_info(base64.b64decode(r.json()["data"][0]["b64_json"]))[:2] == (64, 64)


@pytest.mark.parametrize("body, param", [
    ({"prompt": "x", "response_format": "url"}, "response_format"),
    ({"prompt": "x", "size": "65x64"}, "size"),
    ({"prompt": "x", "size": "big"}, "size"),
    ({"prompt": "x", "size": "8192x8192"}, "size"),
    ({"prompt": "x", "n": 11}, "n"),
    ({"prompt": "x", "n": 0}, "n"),
    ({"prompt": ""}, "prompt"),
    ({"prompt": "   "}, "prompt"),
    ({}, "prompt"),
    ({"prompt": 3}, "prompt"),
    ({"prompt": "x", "steps": 0}, "steps"),
    ({"prompt": "x", "steps": 100000}, "steps"),
    ({"prompt": "x", "guidance_scale": -1}, "guidance_scale"),
    ({"prompt": "x", "scheduler": "pndm"}, "scheduler"),
    ({"prompt": "x", "seed": -5}, "seed"),
    ({"prompt": "x", "style": "vivid"}, "style"),
    ({"prompt": "x", "quality": "hd"}, "quality"),
    ({"prompt": "x", "output_format": "jpeg"}, "output_format"),
    ({"prompt": "x", "frobnicate": True}, "frobnicate"),
])
def test_bad_requests_are_400s_naming_the_parameter(server, body, param):
    err = assert_error(generate(server, **body), 400)
    assert err["param"] == param, err
    assert err["type"] == "invalid_request_error"


def test_url_format_through_the_client(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.images.generate(model="tiny-sd", prompt="x", response_format="url")
    assert "b64_json" in str(e.value)


def test_malformed_json_and_wrong_models(server):
    r = httpx.post(f"{server.url}/v1/images/generations", content=b'{"prompt": "x",', headers={"content-type": "application/json"}, timeout=30)
    assert_error(r, 400)
    assert "text-to-image" in assert_error(generate(server, prompt="x", model="smollm2"), 400)["message"]
    assert_error(generate(server, prompt="x", model="no-such-model"), 404, "model_not_found")
    # The image model cannot chat.
    r = httpx.post(f"{server.url}/v1/chat/completions", json={"model": "tiny-sd", "messages": JAPAN}, timeout=30)
    assert "images/generations" in assert_error(r, 400)["message"]


def test_text_is_not_held_up_by_image_jobs(server, client):
    """A chat request sent while an image job runs finishes before it: the image job has its
    own worker and queue."""
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        t0 = time.monotonic()
        image = pool.submit(generate, server, prompt="a long job", size="64x64", steps=30, seed=1)
        time.sleep(0.3)
        chat = client.chat.completions.create(model="smollm2", messages=JAPAN, max_tokens=4, temperature=0)
        chat_done = time.monotonic() - t0
        r = image.result()
        image_done = time.monotonic() - t0
    assert r.status_code == 200, r.text
    assert chat.choices[0].message.content
    assert chat_done < image_done, f"chat finished at {chat_done:.2f} s, the image at {image_done:.2f} s"


def test_full_image_queue_answers_429(server):
    """--max-image-queue 2: of four concurrent slow jobs, at least one is refused at once."""
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(generate, server, prompt="queued", size="64x64", steps=10, seed=i) for i in range(4)]
        results = [f.result() for f in futures]
    codes = sorted(r.status_code for r in results)
    assert codes.count(200) >= 2 and 429 in codes, codes
    refused = next(r for r in results if r.status_code == 429)
    assert_error(refused, 429, "rate_limit_exceeded")
    assert refused.headers.get("retry-after")
