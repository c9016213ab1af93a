"""What `tpi-chat serve` refuses, with OpenAI's status and error shape, and that it keeps
serving afterwards; and that it will not listen beyond this computer without a key."""

from __future__ import annotations

import json
import time

import pytest

from tests.core.serve.conftest import KEY, MODEL, assert_error_shape, raw
from tests.fixtures.cli import run_cli

pytestmark = pytest.mark.slow  # a server process of the tiny model, ~10 s to start

AUTH = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
HELLO = {"model": MODEL, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 2}


@pytest.fixture(autouse=True)
def still_serving(server):
    yield
    assert server.alive(), server.stderr()[-2000:]
    status, body = raw(server.url, "POST", "/v1/chat/completions",
                       json.dumps(HELLO).encode(), AUTH)
    assert status == 200 and body["usage"]["completion_tokens"] == 2, body


def _post(server, body: bytes | dict, headers=AUTH, path="/v1/chat/completions"):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return raw(server.url, "POST", path, data, headers)


@pytest.mark.parametrize("body", [b'{"model": "tiny-llama", "messages": [', b"\xff\xfe",
                                  b"", b"[1, 2]", b'"text"'])
def test_malformed_json_is_400(server, body):
    status, got = _post(server, body)
    assert status == 400
    assert_error_shape(got, 400)


def test_a_ten_megabyte_body_is_413_unparsed(server):
    body = b'{"model": "tiny-llama", "messages": [{"role": "user", "content": "' + \
        b"a" * 10_000_000 + b'"}]}'
    t0 = time.monotonic()
    status, got = _post(server, body)
    assert status == 413
    assert assert_error_shape(got, 413)["code"] == "request_too_large"
    assert time.monotonic() - t0 < 5


def test_a_ten_megabyte_message_from_the_client_is_413(client):
    import openai

    with pytest.raises(openai.APIStatusError) as e:
        client.chat.completions.create(model=MODEL, messages=[
            {"role": "user", "content": "a" * 10_000_000}])
    assert e.value.status_code == 413
    assert_error_shape(e.value.response.json(), 413)


def test_unknown_fields_are_ignored(client):
    r = client.chat.completions.create(model=MODEL, messages=HELLO["messages"], max_tokens=2,
                                       extra_body={"frobnicate": {"x": 1}, "mirostat": 2},
                                       user="someone", metadata={"k": "v"})
    assert r.usage.completion_tokens == 2


@pytest.mark.parametrize("field,value", [
    ("temperature", "hot"), ("temperature", 3), ("top_p", True), ("max_tokens", 1.5),
    ("max_tokens", 0), ("stream", "yes"), ("messages", "hello"), ("messages", []),
    ("messages", [{"role": "wizard", "content": "x"}]), ("messages", [{"role": "user"}]),
    ("stop", 3), ("stop", ["a"] * 17), ("seed", "7"), ("presence_penalty", 9),
    ("logit_bias", {"x": 1}), ("model", 5), ("stream_options", "yes"),
])
def test_wrong_types_and_values_are_400_naming_the_field(server, field, value):
    status, got = _post(server, {**HELLO, field: value})
    assert status == 400, got
    assert_error_shape(got, 400, field if field != "messages" else None)
    assert got["error"]["param"].startswith(field)


@pytest.mark.parametrize("field,value", [("n", 2), ("logprobs", True), ("tools", [{}]),
                                         ("response_format", {"type": "json_object"})])
def test_what_cannot_be_honoured_is_400_not_ignored(server, field, value):
    status, got = _post(server, {**HELLO, field: value})
    assert status == 400
    assert assert_error_shape(got, 400)["param"] == field


def test_a_wrong_or_missing_key_is_401(server, client):
    import openai

    bad = openai.OpenAI(base_url=server.api, api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as e:
        bad.chat.completions.create(model=MODEL, messages=HELLO["messages"])
    assert assert_error_shape(e.value.response.json(), 401)["code"] == "invalid_api_key"
    for headers in ({}, {"Authorization": KEY}, {"Authorization": "Basic " + KEY}):
        for method, path in (("GET", "/v1/models"), ("POST", "/v1/completions")):
            status, got = raw(server.url, method, path, b"{}", headers)
            assert status == 401, (headers, path)
            assert_error_shape(got, 401)


def test_an_unknown_model_is_404(client):
    import openai

    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="gpt-4o", messages=HELLO["messages"])
    assert assert_error_shape(e.value.response.json(), 404)["code"] == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4o")


def test_an_unknown_route_is_404_in_the_same_shape(server):
    status, got = raw(server.url, "GET", "/v1/embeddings", None, AUTH)
    assert status in (404, 405)
    assert_error_shape(got, status)


def test_a_prompt_longer_than_the_context_is_413(client):
    import openai

    # the tiny model's context is 256 tokens; its byte-level tokenizer makes >= 1 token of
    # 4 characters
    with pytest.raises(openai.APIStatusError) as e:
        client.completions.create(model=MODEL, prompt="lorem ipsum " * 200, max_tokens=2)
    assert e.value.status_code == 413
    assert assert_error_shape(e.value.response.json(), 413)["code"] == \
        "context_length_exceeded"


def test_a_lan_address_without_a_key_refuses_to_start(tiny):
    t0 = time.monotonic()
    run = run_cli("serve", "--model", str(tiny), "--host", "0.0.0.0", "--port", "0",
                  timeout=120)
    assert run.code == 2
    assert "--host 0.0.0.0" in run.stderr and "--api-key" in run.stderr
    assert "serving" not in run.stdout
    assert run.stderr.count("\n") == 1, run.stderr  # one sentence, before loading anything
    assert time.monotonic() - t0 < 60
