"""Request bodies checked into dataclasses; anything wrong is a 400 naming the field.

Fields this server does not know are ignored, as OpenAI's API does; fields it knows but
cannot honour (n > 1, logprobs, tools, a JSON response_format, suffix, best_of > 1) are
refused, so a client never gets less than it asked for without being told.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from core.serve.errors import bad_request

MAX_STOPS = 16
SEED_RANGE = (-(2**63), 2**64 - 1)  # what torch.Generator.manual_seed accepts


@dataclass
class Sampling:
    """How to pick tokens; OpenAI's defaults (temperature 1, no length limit but the
    context)."""

    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int | None = None
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[int, float] = field(default_factory=dict)


@dataclass
class ChatRequest:
    model: str
    messages: list[dict[str, str]]
    sampling: Sampling
    stream: bool = False
    include_usage: bool = False


@dataclass
class CompletionRequest:
    model: str
    prompt: str | list[int]
    sampling: Sampling
    stream: bool = False
    include_usage: bool = False
    echo: bool = False


def parse_chat(body: Any) -> ChatRequest:
    body = _object(body)
    _refuse_unsupported(body)
    for name in ("tools", "functions"):
        if body.get(name):
            raise bad_request(f"'{name}' is not supported: this server has no tool calls.",
                              name)
    fmt = body.get("response_format")
    if fmt is not None and (not isinstance(fmt, dict) or fmt.get("type") != "text"):
        raise bad_request("Only response_format {'type': 'text'} is supported.",
                          "response_format")
    return ChatRequest(model=_model(body), messages=_messages(body.get("messages")),
                       sampling=_sampling(body), stream=_bool(body, "stream"),
                       include_usage=_include_usage(body))


def parse_completion(body: Any) -> CompletionRequest:
    body = _object(body)
    _refuse_unsupported(body)
    if body.get("suffix"):
        raise bad_request("'suffix' is not supported.", "suffix")
    best_of = _int(body, "best_of", 1, 1_000_000)
    if best_of is not None and best_of > 1:
        raise bad_request("best_of > 1 is not supported: one completion per request.",
                          "best_of")
    return CompletionRequest(model=_model(body), prompt=_prompt(body.get("prompt")),
                             sampling=_sampling(body), stream=_bool(body, "stream"),
                             include_usage=_include_usage(body), echo=_bool(body, "echo"))


def _object(body: Any) -> dict:
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.")
    return body


def _refuse_unsupported(body: dict) -> None:
    n = _int(body, "n", 1, 128)
    if n is not None and n > 1:
        raise bad_request("n > 1 is not supported: one choice per request.", "n")
    if body.get("logprobs") not in (None, False, 0):
        raise bad_request("logprobs are not supported.", "logprobs")
    if body.get("top_logprobs") not in (None, 0):
        raise bad_request("logprobs are not supported.", "top_logprobs")


def _model(body: dict) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("'model' must be given, as a string (GET /v1/models lists it).",
                          "model")
    return model


def _messages(value: Any) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise bad_request("'messages' must be a non-empty list.", "messages")
    out = []
    for i, m in enumerate(value):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise bad_request(f"{where} must be an object.", where)
        role = m.get("role")
        if role not in ("system", "developer", "user", "assistant"):
            raise bad_request(f"{where}.role must be 'system', 'developer', 'user' or "
                              f"'assistant' (this server has no tool calls).", f"{where}.role")
        if m.get("tool_calls"):
            raise bad_request("tool calls are not supported.", f"{where}.tool_calls")
        out.append({"role": "system" if role == "developer" else role,
                    "content": _content(m.get("content"), f"{where}.content")})
    return out


def _content(value: Any, where: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):  # content parts: text only
        texts = []
        for part in value:
            if not isinstance(part, dict) or part.get("type") != "text" \
                    or not isinstance(part.get("text"), str):
                raise bad_request(f"{where}: only text parts are supported.", where)
            texts.append(part["text"])
        return "\n".join(texts)
    raise bad_request(f"{where} must be a string or a list of text parts.", where)


def _prompt(value: Any) -> str | list[int]:
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], str | list):
        value = value[0]  # a batch of one
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(_is_int(t) and t >= 0 for t in value):
        return list(value)
    raise bad_request("'prompt' must be a string or a list of token ids (one prompt per "
                      "request).", "prompt")


def _sampling(body: dict) -> Sampling:
    s = Sampling()
    s.temperature = _num(body, "temperature", 0.0, 2.0, s.temperature)
    s.top_p = _num(body, "top_p", 0.0, 1.0, s.top_p)
    s.max_tokens = _int(body, "max_tokens", 1, 2**31)
    newer = _int(body, "max_completion_tokens", 1, 2**31)
    if newer is not None:
        s.max_tokens = newer
    s.stop = _stop(body.get("stop"))
    s.seed = _int(body, "seed", *SEED_RANGE)
    s.presence_penalty = _num(body, "presence_penalty", -2.0, 2.0, 0.0)
    s.frequency_penalty = _num(body, "frequency_penalty", -2.0, 2.0, 0.0)
    s.logit_bias = _logit_bias(body.get("logit_bias"))
    return s


def _stop(value: Any) -> list[str]:
    if value is None:
        return []
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(x, str) for x in stops) \
            or len(stops) > MAX_STOPS:
        raise bad_request(f"'stop' must be a string or a list of at most {MAX_STOPS} "
                          "strings.", "stop")
    return [x for x in stops if x]


def _logit_bias(value: Any) -> dict[int, float]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise bad_request("'logit_bias' must map token ids to numbers.", "logit_bias")
    out = {}
    for k, v in value.items():
        try:
            tok = int(k)
        except (TypeError, ValueError):
            tok = -1
        if tok < 0 or not _is_number(v) or not -100 <= v <= 100:
            raise bad_request("'logit_bias' must map token ids to numbers in "
                              "[-100, 100].", "logit_bias")
        out[tok] = float(v)
    return out


def _include_usage(body: dict) -> bool:
    opts = body.get("stream_options")
    if opts is None:
        return False
    if not isinstance(opts, dict):
        raise bad_request("'stream_options' must be an object.", "stream_options")
    return _bool(opts, "include_usage")


def _bool(body: dict, name: str) -> bool:
    v = body.get(name)
    if v is None:
        return False
    if not isinstance(v, bool):
        raise bad_request(f"'{name}' must be true or false.", name)
    return v


def _num(body: dict, name: str, lo: float, hi: float, default: float) -> float:
    v = body.get(name)
    if v is None:
        return default
    if not _is_number(v) or not lo <= v <= hi:
        raise bad_request(f"'{name}' must be a number from {lo:g} to {hi:g}.", name)
    return float(v)


def _int(body: dict, name: str, lo: int, hi: int) -> int | None:
    v = body.get(name)
    if v is None:
        return None
    if not _is_int(v) or not lo <= v <= hi:
        raise bad_request(f"'{name}' must be an integer from {lo} to {hi}.", name)
    return int(v)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and v == v  # not NaN
