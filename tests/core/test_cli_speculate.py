"""`tpi-chat generate --speculate/--draft` as a user runs it: the same greedy reply as
without speculation, the steps reported in --json, clear errors for bad values."""

from __future__ import annotations

import pytest

from tests.fixtures.cli import run_cli
from tests.fixtures.tiny_models import make_tiny_model

PROMPT = "hello there"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("llama"), "llama")


def _generate(tiny, *extra: str) -> dict:
    run = run_cli("generate", "--model", str(tiny), "--ranks", "2", "--temperature", "0",
                  "--max-new-tokens", "20", "--prompt", PROMPT, "--json", *extra)
    assert run.code == 0, run.stderr
    return run.json()


@pytest.mark.slow  # two 2-rank runs through the CLI
def test_speculating_gives_the_plain_reply_and_reports_its_steps(tiny):
    plain = _generate(tiny, "--speculate", "off")
    spec = _generate(tiny, "--speculate", "3", "--draft", "self")
    assert spec["token_ids"] == plain["token_ids"]
    assert plain["draft_k"] == [] and plain["acceptance"] is None
    assert spec["draft_k"] and all(1 <= k <= 3 for k in spec["draft_k"])
    assert len(spec["accepted_per_step"]) == len(spec["draft_k"])
    assert 0 <= spec["acceptance"] <= 1


def test_a_bad_value_is_refused_before_anything_starts(tiny):
    run = run_cli("generate", "--model", str(tiny), "--prompt", PROMPT, "--speculate", "fast")
    assert run.code == 2 and "--speculate takes auto, off or a number" in run.stderr
