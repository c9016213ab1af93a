"""`tpi-chat serve` through the official openai client: the same greedy reply as
`tpi-chat generate`, streamed and not, and the sampling fields honoured."""

from __future__ import annotations

import json

import pytest

from core.model.tokenizer import ChatTokenizer
from tests.core.serve.conftest import KEY, MODEL, raw
from tests.fixtures.cli import run_cli

pytestmark = pytest.mark.slow  # a server process of the tiny model, ~10 s to start

SYSTEM = "You answer in one word."
PROMPT = "Which colour is the sky?"
N = 24
MESSAGES = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": PROMPT}]


def _finish(stop_reason: str) -> str:
    return "length" if stop_reason == "length" else "stop"


@pytest.fixture(scope="module")
def generated(tiny):
    """What `tpi-chat generate` answers, greedy: chat and --raw."""
    out = {}
    for kind, extra in (("chat", ("--system", SYSTEM)), ("raw", ("--raw",))):
        run = run_cli("generate", "--model", str(tiny), "--prompt", PROMPT, "--temperature",
                      "0", "--max-new-tokens", str(N), "--json", *extra)
        assert run.code == 0, run.stderr
        out[kind] = run.json()
        assert out[kind]["text"]
    return out


def test_models_lists_the_served_model(client):
    assert [m.id for m in client.models.list()] == [MODEL]
    assert client.models.retrieve(MODEL).id == MODEL


def test_chat_greedy_equals_generate(client, generated):
    want = generated["chat"]
    r = client.chat.completions.create(model=MODEL, messages=MESSAGES, temperature=0,
                                       max_tokens=N)
    assert r.object == "chat.completion" and len(r.choices) == 1
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content == want["text"]
    assert r.choices[0].finish_reason == _finish(want["stop_reason"])
    assert r.usage.prompt_tokens == want["prompt_tokens"]
    assert r.usage.completion_tokens == len(want["token_ids"])
    assert r.usage.total_tokens == want["prompt_tokens"] + len(want["token_ids"])


def test_chat_streamed_greedy_equals_generate(client, generated):
    want = generated["chat"]
    chunks = list(client.chat.completions.create(
        model=MODEL, messages=MESSAGES, temperature=0, max_completion_tokens=N, stream=True,
        stream_options={"include_usage": True}))
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    with_choices = [c for c in chunks if c.choices]
    assert with_choices[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in with_choices) == want["text"]
    assert len(with_choices) > 3  # streamed in pieces, not in one chunk
    finishes = [c.choices[0].finish_reason for c in with_choices]
    assert finishes[:-1] == [None] * (len(finishes) - 1)
    assert finishes[-1] == _finish(want["stop_reason"])
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == len(
        want["token_ids"])
    assert chunks[-1].usage.prompt_tokens == want["prompt_tokens"]


def test_completion_greedy_equals_generate_raw(client, generated):
    want = generated["raw"]
    r = client.completions.create(model=MODEL, prompt=PROMPT, temperature=0, max_tokens=N)
    assert r.choices[0].text == want["text"]
    assert r.usage.completion_tokens == len(want["token_ids"])
    assert r.usage.prompt_tokens == want["prompt_tokens"]
    streamed = list(client.completions.create(model=MODEL, prompt=PROMPT, temperature=0,
                                              max_tokens=N, stream=True))
    assert "".join(c.choices[0].text for c in streamed) == want["text"]
    assert streamed[-1].choices[0].finish_reason == _finish(want["stop_reason"])
    echoed = client.completions.create(model=MODEL, prompt=PROMPT, temperature=0,
                                       max_tokens=N, echo=True)
    assert echoed.choices[0].text == PROMPT + want["text"]


def test_the_wire_is_openais_sse(server, generated):
    """data: lines, a first chunk with the role, the finish on the last one, data: [DONE]."""
    body = json.dumps({"model": MODEL, "messages": MESSAGES, "temperature": 0,
                       "max_tokens": 4, "stream": True}).encode()
    status, text = raw(server.url, "POST", "/v1/chat/completions", body,
                       {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    assert status == 200
    events = text.split("\n\n")
    assert events[-1] == "" and events[-2] == "data: [DONE]"
    assert all(e.startswith("data: ") for e in events[:-1])
    chunks = [json.loads(e[6:]) for e in events[:-2]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[-1]["choices"][0]["delta"] == {}
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert 3 <= len(chunks) <= 6  # the role, 1 to 4 pieces of text, the finish


@pytest.mark.parametrize("stream", [False, True])
def test_stop_strings_end_the_reply_and_are_cut(client, generated, stream):
    text = generated["chat"]["text"]
    stop = text[len(text) // 2: len(text) // 2 + 3]
    want = text[:text.find(stop)]
    r = client.chat.completions.create(model=MODEL, messages=MESSAGES, temperature=0,
                                       max_tokens=N, stop=["\x00never", stop], stream=stream)
    if stream:
        chunks = [c for c in r if c.choices]
        got = "".join(c.choices[0].delta.content or "" for c in chunks)
        finish = chunks[-1].choices[0].finish_reason
    else:
        got, finish = r.choices[0].message.content, r.choices[0].finish_reason
    assert got == want
    assert finish == "stop"


def test_max_tokens_ends_with_length(client):
    r = client.chat.completions.create(model=MODEL, messages=MESSAGES, temperature=0,
                                       max_tokens=3)
    assert r.usage.completion_tokens == 3 and r.choices[0].finish_reason == "length"


def test_penalties_and_logit_bias_change_the_greedy_reply(client, tiny, generated):
    plain = generated["chat"]["text"]
    for field in ("frequency_penalty", "presence_penalty"):
        r = client.chat.completions.create(model=MODEL, messages=MESSAGES, temperature=0,
                                           max_tokens=N, **{field: 2.0})
        assert r.choices[0].message.content != plain, field
    tok = ChatTokenizer(tiny)
    forced = tok.encode("k")[0]
    r = client.chat.completions.create(model=MODEL, messages=MESSAGES, temperature=0,
                                       max_tokens=5, logit_bias={str(forced): 100})
    assert r.choices[0].message.content == tok.decode([forced] * 5)


def test_a_seed_repeats_a_sampled_reply(client):
    def sample(seed: int) -> str:
        r = client.chat.completions.create(model=MODEL, messages=MESSAGES, temperature=1.0,
                                           top_p=0.9, max_tokens=12, seed=seed)
        return r.choices[0].message.content

    assert sample(7) == sample(7)
