"""OpenAI compatibility of `plinth serve`, checked with the official `openai` Python package.

The tests start the real binary (`target/debug/plinth serve --port 0 --threads 2`, or
$PLINTH_BIN) on the model $PLINTH_TEST_MODEL (default smollm2-135m-instruct, which
scripts/fetch-models caches), talk to it through `openai.OpenAI` (and `httpx` for what the
client hides: raw SSE framing, error bodies, headers) and stop it with SIGTERM, which must
end it with exit status 0 within 10 s. A second server with `--api-key secret` checks auth.

Generation is kept short (max_tokens 5-24) so that the suite runs in well under a minute on
two cores with the debug build. Run through scripts/test, or by hand:
    .venv-test/bin/python -m pytest -q tests/python
"""
import concurrent.futures
import json
import os
import queue
import re
import signal
import subprocess
import tempfile
import threading
import time

import httpx
import openai
import pytest

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PLINTH_BIN = os.environ.get("PLINTH_BIN") or os.path.join(REPO, "target", "debug", "plinth")
MODEL = os.environ.get("PLINTH_TEST_MODEL") or "smollm2-135m-instruct"
LISTEN_RE = re.compile(r"plinth serve listening on (http://127\.0\.0\.1:\d+)")
START_TIMEOUT_S = 120
STOP_TIMEOUT_S = 10
REQUEST_TIMEOUT_S = 120

JAPAN = [{"role": "user", "content": "What is the capital of Japan?"}]
ESSAY = [{"role": "user", "content": "Write a long essay about the history of Rome."}]


# --------------------------------------------------------------------------------------------
# Servers


class Server:
    """One running `plinth serve` process."""

    def __init__(self, extra_args=()):
        self.log = tempfile.NamedTemporaryFile(prefix="plinth-serve-", suffix=".log", delete=False)
        cmd = [PLINTH_BIN, "serve", "--port", "0", "--threads", "2", "--model", MODEL, *extra_args]
        self.cmd = cmd
        try:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.log, text=True, bufsize=1)
        except FileNotFoundError:
            pytest.fail(f"no plinth binary at {PLINTH_BIN} (build it with `cargo build -p plinth-cli`, "
                        f"or point PLINTH_BIN at one)")
        self.stdout_lines = []
        lines = queue.Queue()

        def pump():  # keeps reading stdout so that the server never blocks on a full pipe
            for line in self.proc.stdout:
                self.stdout_lines.append(line)
                lines.put(line)
            lines.put(None)

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + START_TIMEOUT_S
        self.url = None
        while self.url is None:
            left = deadline - time.monotonic()
            if left <= 0:
                self.kill()
                pytest.fail(f"`{' '.join(cmd)}` printed no listening line within {START_TIMEOUT_S} s\n{self.tail()}")
            try:
                line = lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                code = self.proc.wait()
                pytest.fail(f"`{' '.join(cmd)}` exited with {code} before listening\n{self.tail()}")
            m = LISTEN_RE.search(line)
            if m:
                self.url = m.group(1)
        # The server's own name for the model: what GET /v1/models lists first.
        r = httpx.get(f"{self.url}/v1/models", headers=self.auth_headers(extra_args), timeout=30)
        assert r.status_code == 200, r.text
        self.model_ids = [m["id"] for m in r.json()["data"]]
        assert self.model_ids, r.text
        self.model = self.model_ids[0]

    @staticmethod
    def auth_headers(extra_args):
        args = list(extra_args)
        if "--api-key" in args:
            return {"Authorization": f"Bearer {args[args.index('--api-key') + 1]}"}
        return {}

    def tail(self, n=4000):
        self.log.flush()
        with open(self.log.name, errors="replace") as f:
            err = f.read()[-n:]
        return f"--- stdout ---\n{''.join(self.stdout_lines)[-n:]}--- stderr ---\n{err}"

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self):
        """SIGTERM; the server must exit with status 0 within STOP_TIMEOUT_S."""
        assert self.proc.poll() is None, f"the server died during the tests\n{self.tail()}"
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"the server did not exit within {STOP_TIMEOUT_S} s of SIGTERM\n{self.tail()}")
        assert code == 0, f"the server exited with {code} on SIGTERM\n{self.tail()}"
        os.unlink(self.log.name)


def serving(extra_args=()):
    """A fixture body: a server for the fixture's scope, stopped cleanly (or killed on failure)."""
    s = Server(extra_args)
    try:
        yield s
    except BaseException:
        s.kill()
        raise
    s.stop()


def client_of(server):
    """A fixture body: an `openai.OpenAI` client of `server`."""
    c = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=REQUEST_TIMEOUT_S)
    yield c
    c.close()


@pytest.fixture(scope="session")
def server():
    yield from serving()


@pytest.fixture(scope="session")
def client(server):
    yield from client_of(server)


@pytest.fixture(scope="session")
def auth_server():
    yield from serving(["--api-key", "secret"])


@pytest.fixture(scope="session")
def model(server):
    return server.model


# --------------------------------------------------------------------------------------------
# Helpers


def chat(client, model, messages=JAPAN, **kw):
    kw.setdefault("max_tokens", 16)
    return client.chat.completions.create(model=model, messages=messages, **kw)


@pytest.fixture(scope="session")
def greedy_japan(client, model):
    """The non-streaming greedy answer several tests compare against."""
    return chat(client, model, temperature=0, max_tokens=16)


def running_sequences(url):
    text = httpx.get(f"{url}/metrics", timeout=10).text
    vals = [float(m.group(2)) for m in re.finditer(r"(?m)^plinth_running_sequences(\{[^}]*\})?\s+(\S+)", text)]
    assert vals, f"no plinth_running_sequences in /metrics:\n{text}"
    return sum(vals)


def assert_error(r, status, code=None):
    assert r.status_code == status, f"expected {status}, got {r.status_code}: {r.text}"
    body = r.json()
    assert isinstance(body, dict) and isinstance(body.get("error"), dict), r.text
    err = body["error"]
    for key in ("message", "type", "param", "code"):
        assert key in err, f"error body lacks {key!r}: {r.text}"
    assert isinstance(err["message"], str) and err["message"], r.text
    assert isinstance(err["type"], str) and err["type"], r.text
    if code is not None:
        assert err["code"] == code, r.text
    return err


# --------------------------------------------------------------------------------------------
# Plain endpoints


def test_health(server):
    r = httpx.get(f"{server.url}/health", timeout=10)
    assert r.status_code == 200, r.text


def test_models_list(client, server):
    models = client.models.list()
    ids = [m.id for m in models.data]
    assert server.model in ids
    if not os.path.exists(MODEL):  # a catalog name is served under that name
        assert MODEL in ids, ids
    for m in models.data:
        assert m.object == "model"


def test_metrics_gauge(server):
    r = httpx.get(f"{server.url}/metrics", timeout=10)
    assert r.status_code == 200
    assert re.search(r'(?m)^plinth_running_sequences\{[^}]*model="[^"]+"[^}]*\}\s+\d', r.text), r.text


# --------------------------------------------------------------------------------------------
# Chat completions


def test_chat_greedy(greedy_japan):
    r = greedy_japan
    assert r.id
    assert r.object == "chat.completion"
    assert isinstance(r.created, int) and r.created > 1_600_000_000
    assert r.system_fingerprint
    assert r.model
    assert len(r.choices) == 1
    c = r.choices[0]
    assert c.index == 0
    assert c.message.role == "assistant"
    assert "Tokyo" in c.message.content, c.message.content
    assert c.finish_reason in ("stop", "length")
    u = r.usage
    assert u.prompt_tokens > 0 and u.completion_tokens > 0
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens


def test_chat_streaming_matches_greedy(client, model, greedy_japan):
    stream = chat(client, model, temperature=0, max_tokens=16, stream=True)
    chunks = list(stream)
    assert chunks
    ids = {ch.id for ch in chunks}
    assert len(ids) == 1, ids
    assert all(ch.object == "chat.completion.chunk" for ch in chunks)
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == greedy_japan.choices[0].message.content
    finishes = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert finishes == [greedy_japan.choices[0].finish_reason], "exactly one finish_reason, on the last choice chunk"
    assert chunks[-1].choices[0].finish_reason is not None
    assert all(ch.usage is None for ch in chunks), "no usage unless stream_options.include_usage"


def test_chat_streaming_include_usage(client, model, greedy_japan):
    chunks = list(chat(client, model, temperature=0, max_tokens=16, stream=True,
                       stream_options={"include_usage": True}))
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.completion_tokens == greedy_japan.usage.completion_tokens
    assert last.usage.prompt_tokens == greedy_japan.usage.prompt_tokens
    assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens
    assert all(ch.usage is None for ch in chunks[:-1])
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == greedy_japan.choices[0].message.content


def test_chat_streaming_sse_framing(server, model):
    """The raw stream: text/event-stream, JSON `data:` events, ended by `data: [DONE]`."""
    body = {"model": model, "messages": JAPAN, "temperature": 0, "max_tokens": 8, "stream": True}
    with httpx.Client(timeout=REQUEST_TIMEOUT_S) as hc:
        with hc.stream("POST", f"{server.url}/v1/chat/completions", json=body) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            data = [line[len("data:"):].strip() for line in r.iter_lines() if line.startswith("data:")]
    assert data and data[-1] == "[DONE]", data[-3:]
    assert "[DONE]" not in data[:-1]
    for d in data[:-1]:
        json.loads(d)


def test_n_two_choices(client, model):
    r = chat(client, model, messages=ESSAY, temperature=1.0, seed=7, n=2, max_tokens=8)
    assert sorted(c.index for c in r.choices) == [0, 1]
    for c in r.choices:
        assert isinstance(c.message.content, str) and c.message.content
        assert c.finish_reason in ("stop", "length")


def test_seed_reproducible(client, model):
    msgs = [{"role": "user", "content": "Tell me a story about a dragon."}]
    a = chat(client, model, messages=msgs, temperature=1.0, seed=1234, max_tokens=24).choices[0].message.content
    b = chat(client, model, messages=msgs, temperature=1.0, seed=1234, max_tokens=24).choices[0].message.content
    c = chat(client, model, messages=msgs, temperature=1.0, seed=4321, max_tokens=24).choices[0].message.content
    assert a == b
    assert a != c, "two seeds gave the same 24 sampled tokens"


def test_stop_sequence(client, model, greedy_japan):
    full = greedy_japan.choices[0].message.content
    words = full.split()
    assert len(words) >= 3, full
    stop = words[len(words) // 2]
    cut = full[:full.find(stop)]
    assert cut, (full, stop)
    r = chat(client, model, temperature=0, max_tokens=16, stop=[stop])
    assert r.choices[0].message.content == cut, (full, stop)
    assert r.choices[0].finish_reason == "stop"
    # streamed: the held-back text must never leak the stop word
    chunks = list(chat(client, model, temperature=0, max_tokens=16, stop=stop, stream=True))
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == cut
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason] == ["stop"]


def test_chat_logprobs(client, model):
    r = chat(client, model, messages=ESSAY, temperature=0, max_tokens=8, logprobs=True, top_logprobs=3)
    c = r.choices[0]
    assert c.finish_reason == "length"
    entries = c.logprobs.content
    assert len(entries) == r.usage.completion_tokens == 8
    for e in entries:
        assert e.logprob <= 0
        assert len(e.top_logprobs) == 3
        tops = [t.logprob for t in e.top_logprobs]
        assert tops == sorted(tops, reverse=True)
        assert all(t <= 0 for t in tops)
        # greedy: the picked token is the most likely one
        assert e.token == e.top_logprobs[0].token
        assert abs(e.logprob - e.top_logprobs[0].logprob) < 1e-4
    assert "".join(e.token for e in entries) == c.message.content


def test_max_tokens_length(client, model):
    r = chat(client, model, messages=ESSAY, temperature=0, max_tokens=5)
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 5


def test_unknown_model_via_client(client):
    with pytest.raises(openai.NotFoundError):
        chat(client, "no-such-model", max_tokens=4)


# --------------------------------------------------------------------------------------------
# Text completions


def test_completions(client, model):
    r = client.completions.create(model=model, prompt="The capital of France is", max_tokens=8, temperature=0)
    assert r.id and r.object == "text_completion" and r.created > 0
    assert len(r.choices) == 1 and r.choices[0].index == 0
    assert r.choices[0].text
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens

    chunks = list(client.completions.create(model=model, prompt="The capital of France is", max_tokens=8,
                                            temperature=0, stream=True))
    assert chunks
    assert "".join(ch.choices[0].text for ch in chunks if ch.choices) == r.choices[0].text
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason] \
        == [r.choices[0].finish_reason]


def test_completions_logprobs(client, model):
    r = client.completions.create(model=model, prompt="Once upon a time", max_tokens=8, temperature=0, logprobs=2)
    c = r.choices[0]
    lp = c.logprobs
    n = r.usage.completion_tokens
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == n
    assert all(x <= 0 for x in lp.token_logprobs)
    assert all(len(t) == 2 for t in lp.top_logprobs)
    assert "".join(lp.tokens) == c.text
    if lp.text_offset is not None:
        assert len(lp.text_offset) == n
        assert lp.text_offset == sorted(lp.text_offset)


# --------------------------------------------------------------------------------------------
# Concurrency and disconnects

PROMPTS = [
    "The capital of France is", "Water boils at", "The largest planet in the solar system is",
    "My favourite colour is", "Once upon a time, in a small village,", "The best way to learn to code is",
    "1, 2, 3, 4,", "The opposite of hot is", "In 1492, Columbus", "A recipe for pancakes:",
    "The sun rises in the", "Dear diary, today I", "def fibonacci(n):", "The three primary colors are",
    "Cats are known for", "The meaning of life is",
]


def test_concurrent_equals_sequential(client, model):
    assert len(set(PROMPTS)) == 16

    def one(p):
        r = client.completions.create(model=model, prompt=p, max_tokens=8, temperature=0)
        return r.choices[0].text

    sequential = [one(p) for p in PROMPTS]
    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        concurrent_ = list(pool.map(one, PROMPTS))
    diff = [(p, s, c) for p, s, c in zip(PROMPTS, sequential, concurrent_) if s != c]
    assert not diff, f"{len(diff)} of 16 differ (prompt, alone, concurrently): {diff}"


def test_disconnect_mid_stream_frees_sequence(server, model):
    body = {"model": model, "messages": ESSAY, "temperature": 0, "max_tokens": 400, "stream": True}
    with httpx.Client(timeout=REQUEST_TIMEOUT_S) as hc:
        with hc.stream("POST", f"{server.url}/v1/chat/completions", json=body) as r:
            assert r.status_code == 200
            # Keep the iterator: leaving a `for` over r.iter_lines() would close the generator
            # chain and with it the connection, before the gauge could be seen at 1.
            lines = r.iter_lines()
            got = 0
            while got < 2:
                if next(lines).startswith("data:"):
                    got += 1
            # The gauge is updated once per engine step, a moment after the first token is sent.
            deadline = time.monotonic() + 2
            while running_sequences(server.url) < 1:
                assert time.monotonic() < deadline, "the streaming request is not counted as running"
                time.sleep(0.05)
    # the response and the client are closed: the server must notice and drop the sequence
    deadline = time.monotonic() + 5
    while True:
        n = running_sequences(server.url)
        if n == 0:
            break
        assert time.monotonic() < deadline, f"plinth_running_sequences is still {n} 5 s after the disconnect"
        time.sleep(0.1)


# --------------------------------------------------------------------------------------------
# Bad input: OpenAI-shaped errors

MSG = [{"role": "user", "content": "hi"}]
BAD = [
    ("negative_temperature", {"messages": MSG, "temperature": -1}, 400),
    ("empty_messages", {"messages": []}, 400),
    ("messages_not_a_list", {"messages": "hi"}, 400),
    ("unknown_model", {"messages": MSG, "model": "no-such-model"}, 404),
]


@pytest.mark.parametrize("body,status", [(b, s) for _, b, s in BAD], ids=[i for i, _, _ in BAD])
def test_bad_input(server, model, body, status):
    body = {"model": model, "max_tokens": 4, **body}
    r = httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=30)
    assert_error(r, status)


def test_malformed_json(server):
    r = httpx.post(f"{server.url}/v1/chat/completions", content=b'{"model": "x", "messages": [',
                   headers={"content-type": "application/json"}, timeout=30)
    assert_error(r, 400)


def test_prompt_longer_than_context(server, model):
    words = 10_000  # " hello" is one token: well past SmolLM2's 8192-token window
    body = {"model": model, "max_tokens": 4, "messages": [{"role": "user", "content": "hello " * words}]}
    r = httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=60)
    err = assert_error(r, 400, code="context_length_exceeded")
    nums = sorted({int(x) for x in re.findall(r"\d+", err["message"].replace(",", ""))})
    assert any(n >= words for n in nums), f"the prompt's length is not in the message: {err['message']}"
    assert any(256 <= n < words for n in nums), f"the context length is not in the message: {err['message']}"
    # and the server is still fine afterwards
    assert httpx.get(f"{server.url}/health", timeout=10).status_code == 200


# --------------------------------------------------------------------------------------------
# API key


def test_api_key(auth_server):
    url = auth_server.url
    assert_error(httpx.get(f"{url}/v1/models", timeout=10), 401)
    assert_error(httpx.get(f"{url}/v1/models", headers={"Authorization": "Bearer wrong"}, timeout=10), 401)
    body = {"model": auth_server.model, "messages": MSG, "max_tokens": 4}
    assert_error(httpx.post(f"{url}/v1/chat/completions", json=body, timeout=30), 401)
    r = httpx.get(f"{url}/v1/models", headers={"Authorization": "Bearer secret"}, timeout=10)
    assert r.status_code == 200, r.text

    with openai.OpenAI(base_url=f"{url}/v1", api_key="wrong", max_retries=0, timeout=REQUEST_TIMEOUT_S) as bad:
        with pytest.raises(openai.AuthenticationError):
            bad.chat.completions.create(model=auth_server.model, messages=MSG, max_tokens=4)
    with openai.OpenAI(base_url=f"{url}/v1", api_key="secret", max_retries=0, timeout=REQUEST_TIMEOUT_S) as good:
        r = good.chat.completions.create(model=auth_server.model, messages=MSG, max_tokens=4)
        assert r.choices[0].message.content is not None
