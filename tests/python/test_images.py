"""Images in `/v1/chat/completions`, with the official `openai` package.

One server serves SmolLM2 (text only) beside a tiny random-weight SmolVLM (Idefics3, from
fixtures/tiny-idefics3), with local images allowed under fixtures/images. The vision model's
answers are noise (random weights), so these tests check the plumbing: an image sent as a
base64 data URL reaches the model (the prompt grows by its image tokens, and a different
image changes the greedy answer), streaming works, and every bad input gets its 400 with the
OpenAI error body naming the content part.
"""
import base64
import os

import httpx
import openai
import pytest

from test_openai_client import REPO, assert_error, client_of, serving

VLM = os.path.join(REPO, "fixtures", "tiny-idefics3")
IMAGES = os.path.join(REPO, "fixtures", "images")


def data_url(name, mime="image/png"):
    with open(os.path.join(IMAGES, name), "rb") as f:
        return f"data:{mime};base64,{base64.b64encode(f.read()).decode()}"


def ask(image_url, text="What is in the image?"):
    return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": image_url}},
                                         {"type": "text", "text": text}]}]


@pytest.fixture(scope="module")
def server():
    yield from serving(["--model", VLM, "--alias", "smollm2", "--alias", "vlm",
                        "--allow-local-images", IMAGES, "--max-images", "2", "--max-image-bytes", "200000"])


@pytest.fixture(scope="module")
def client(server):
    yield from client_of(server)


def chat(server, messages, model="vlm", **kw):
    body = {"model": model, "messages": messages, "max_tokens": 4, "temperature": 0, **kw}
    return httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=60)


def test_base64_image_is_answered(client):
    text_only = client.chat.completions.create(
        model="vlm", messages=[{"role": "user", "content": "What is in the image?"}], max_tokens=4, temperature=0)
    r = client.chat.completions.create(model="vlm", messages=ask(data_url("m_150x100.png")), max_tokens=4, temperature=0)
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].finish_reason in ("stop", "length")
    # 150x100 -> a 2x2 split at the tiny model's 32-pixel tiles plus the global image: five tiles
    # of 16 image tokens, each with its marker tokens around it.
    assert r.usage.prompt_tokens >= text_only.usage.prompt_tokens + 5 * 16
    assert r.usage.completion_tokens >= 1
    # Plain-string turns reach SmolVLM's parts-only template as text (not dropped).
    longer = client.chat.completions.create(
        model="vlm", messages=[{"role": "user", "content": "What is in the image? Tell me."}], max_tokens=1, temperature=0)
    assert longer.usage.prompt_tokens > text_only.usage.prompt_tokens


def test_the_image_changes_the_answer(client):
    answers = set()
    for name in ("m_150x100.png", "l_256x256_alpha_grid.png", "d_97x61_gray.png"):
        r = client.chat.completions.create(model="vlm", messages=ask(data_url(name)), max_tokens=6, temperature=0,
                                           logprobs=True)
        answers.add(tuple(t.logprob for t in r.choices[0].logprobs.content))
    assert len(answers) > 1, "three different images gave identical log-probabilities"


def test_streaming_with_an_image(client):
    stream = client.chat.completions.create(model="vlm", messages=ask(data_url("f_33x33.webp", "image/webp")),
                                            max_tokens=4, temperature=0, stream=True)
    chunks = list(stream)
    assert chunks and chunks[-1].choices[0].finish_reason in ("stop", "length")


def test_local_file_inside_the_allowed_folder(server):
    r = chat(server, ask("m_150x100.png"))
    assert r.status_code == 200, r.text
    r2 = chat(server, ask(f"file://{os.path.join(IMAGES, 'm_150x100.png')}"))
    assert r2.status_code == 200, r2.text
    assert r.json()["choices"][0]["message"]["content"] == r2.json()["choices"][0]["message"]["content"]


@pytest.mark.parametrize("url, needle", [
    (data_url("bad_corrupt.png"), "corrupt"),
    (data_url("bad_truncated.png"), "PNG"),
    (data_url("bad_not_image.txt", "text/plain"), "not an image"),
    (data_url("bad_bomb_30000x30000.png"), "Mpx"),
    ("data:image/png;base64,%%%", "base64"),
    ("data:image/png,rawbytes", "base64"),
    ("data:image/png;base64," + base64.b64encode(os.urandom(300_000)).decode(), "limit"),  # over --max-image-bytes
    ("https://example.invalid/cat.png", "--allow-remote-images"),
    ("../tiny-idefics3/config.json", "outside the allowed folder"),
    ("/etc/hostname", "outside the allowed folder"),
    ("gopher://x/y.png", "scheme"),
])
def test_bad_images_get_a_400_naming_the_part(server, url, needle):
    err = assert_error(chat(server, ask(url)), 400)
    assert err["param"] == "messages[0].content[0].image_url", err
    assert needle in err["message"], err


def test_too_many_images(server):
    parts = [{"type": "image_url", "image_url": {"url": data_url("a_1x1.png")}} for _ in range(3)]
    err = assert_error(chat(server, [{"role": "user", "content": parts}]), 400)
    assert "too many images" in err["message"] and err["param"] == "messages[0].content[2].image_url", err


def test_text_models_refuse_images(server):
    err = assert_error(chat(server, ask(data_url("a_1x1.png")), model="smollm2"), 400)
    assert "reads text only" in err["message"], err


def test_malformed_image_parts(server):
    err = assert_error(chat(server, [{"role": "user", "content": [{"type": "image_url", "image_url": {"detail": "low"}}]}]), 400)
    assert err["param"] == "messages[0].content[0].image_url", err
    err = assert_error(chat(server, [{"role": "assistant", "content": [{"type": "image_url", "image_url": {"url": data_url("a_1x1.png")}}]},
                                     {"role": "user", "content": "hi"}]), 400)
    assert "only accepted in user messages" in err["message"], err


def test_openai_client_raises_bad_request(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="vlm", messages=ask(data_url("bad_corrupt.png")), max_tokens=4)
    assert e.value.status_code == 400
