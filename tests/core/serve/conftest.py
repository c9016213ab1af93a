"""One tiny random model and one `tpi-chat serve` of it (with an API key) for the package;
raw HTTP for what the openai client will not send."""

from __future__ import annotations

import http.client
import json
from urllib.parse import urlsplit

import pytest

from tests.fixtures.serve import ServeProcess
from tests.fixtures.tiny_models import make_tiny_model

KEY = "sk-test-key"
MODEL = "tiny-llama"  # the served name is the model folder's


@pytest.fixture(scope="package")
def tiny(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("serve") / MODEL, "llama")


@pytest.fixture(scope="package")
def server(tiny):
    s = ServeProcess("--model", str(tiny), "--api-key", KEY)
    yield s
    s.close()


@pytest.fixture
def client(server):
    import openai

    return openai.OpenAI(base_url=server.api, api_key=KEY, max_retries=0, timeout=60)


def raw(url: str, method: str, path: str, body: bytes | None = None,
        headers: dict | None = None) -> tuple[int, dict | str]:
    """One request by http.client: (status, the JSON body or the text if not JSON)."""
    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        text = resp.read().decode()
    finally:
        conn.close()
    try:
        return resp.status, json.loads(text)
    except ValueError:
        return resp.status, text


def assert_error_shape(body, status: int, param: str | None = None) -> dict:
    """OpenAI's {"error": {"message", "type", "param", "code"}}."""
    assert isinstance(body, dict) and set(body) == {"error"}, body
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}, err
    assert isinstance(err["message"], str) and err["message"], err
    assert err["type"] == ("server_error" if status >= 500 else "invalid_request_error")
    if param is not None:
        assert err["param"] == param, err
    return err
