"""Request checks: what a body becomes, and the 400s with the field named."""

from __future__ import annotations

import pytest

from core.serve.errors import ApiError
from core.serve.schemas import parse_chat, parse_completion

MSG = [{"role": "user", "content": "hi"}]


def test_a_chat_request_with_openais_defaults():
    r = parse_chat({"model": "m", "messages": MSG, "whatever": [1]})
    assert (r.model, r.messages, r.stream, r.include_usage) == ("m", MSG, False, False)
    s = r.sampling
    assert (s.temperature, s.top_p, s.max_tokens, s.stop, s.seed) == (1.0, 1.0, None, [], None)


def test_fields_are_read():
    r = parse_chat({"model": "m", "stream": True, "stream_options": {"include_usage": True},
                    "messages": [{"role": "developer", "content": "be brief"},
                                 {"role": "user", "content": [{"type": "text", "text": "a"},
                                                              {"type": "text", "text": "b"}]}],
                    "temperature": 0, "top_p": 0.5, "max_tokens": 9,
                    "max_completion_tokens": 7, "stop": "END", "seed": 3,
                    "frequency_penalty": -1.5, "logit_bias": {"42": -100}, "n": 1})
    assert r.messages == [{"role": "system", "content": "be brief"},
                          {"role": "user", "content": "a\nb"}]
    assert r.stream and r.include_usage
    s = r.sampling
    assert (s.temperature, s.top_p, s.max_tokens, s.stop, s.seed) == (0.0, 0.5, 7, ["END"], 3)
    assert (s.frequency_penalty, s.logit_bias) == (-1.5, {42: -100.0})


def test_null_means_the_default():
    r = parse_chat({"model": "m", "messages": MSG, "temperature": None, "stop": None,
                    "stream": None, "max_tokens": None})
    assert r.sampling.temperature == 1.0 and r.sampling.max_tokens is None


@pytest.mark.parametrize("prompt,want", [("hi", "hi"), (["hi"], "hi"), ([5, 6], [5, 6]),
                                         ([[5, 6]], [5, 6])])
def test_a_completion_prompt(prompt, want):
    assert parse_completion({"model": "m", "prompt": prompt}).prompt == want


@pytest.mark.parametrize("body,param", [
    ({"model": "m", "prompt": ["a", "b"]}, "prompt"),
    ({"model": "m", "prompt": [-1]}, "prompt"),
    ({"model": "m", "prompt": "x", "best_of": 2}, "best_of"),
    ({"model": "m", "prompt": "x", "suffix": "y"}, "suffix"),
    ({"prompt": "x"}, "model"),
    ({"model": "m", "prompt": "x", "temperature": float("nan")}, "temperature"),
    ({"model": "m", "prompt": "x", "seed": 2**64}, "seed"),
    ({"model": "m", "prompt": "x", "logit_bias": {"1": 101}}, "logit_bias"),
])
def test_completion_refusals_name_the_field(body, param):
    with pytest.raises(ApiError) as e:
        parse_completion(body)
    assert e.value.status == 400 and e.value.param == param
