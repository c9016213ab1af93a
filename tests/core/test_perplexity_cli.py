"""`tpi-chat perplexity` as a user runs it: numbers, JSON, ranks, errors and Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from core.cli import build_parser, main
from core.model.tokenizer import ChatTokenizer
from tests.fixtures.cli import ROOT, run_cli
from tests.fixtures.hf_perplexity import TEXT_FILE, hf_perplexity, sample_text
from tests.fixtures.tiny_models import make_tiny_model

CONTEXT = 64


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("ppl-cli"), "llama")  # context 256


@pytest.fixture(scope="module")
def text(tmp_path_factory):
    path = tmp_path_factory.mktemp("ppl-text") / "sample.txt"
    path.write_text(sample_text(), encoding="utf-8")
    return path


def test_the_window_is_512_tokens_unless_asked_and_generate_keeps_its_context():
    args = build_parser().parse_args(["perplexity", "--text", "t.txt"])
    assert (args.context, args.json, args.ranks) == (512, False, 1)
    assert build_parser().parse_args(["perplexity", "--text", "t", "--context", "64"]).context == 64
    assert build_parser().parse_args(["generate", "--prompt", "hi"]).context == 4096


def _run_main(capsys, *argv: str) -> tuple[int, str]:
    code = main(["perplexity", *argv])
    return code, capsys.readouterr().err


def _unreadable(tmp_path, kind: str):
    if kind == "folder":
        return tmp_path
    path = tmp_path / f"{kind}.txt"
    if kind == "latin1":
        path.write_bytes(b"caf\xe9 au lait")
    return path


@pytest.mark.parametrize(("kind", "words"), [
    ("missing", "does not exist"), ("folder", "is a folder"), ("latin1", "is not UTF-8 text")])
def test_an_unreadable_text_is_one_sentence_before_any_model_loads(capsys, tmp_path, kind,
                                                                   words):
    path = _unreadable(tmp_path, kind)
    code, err = _run_main(capsys, "--model", str(tmp_path / "no-model"), "--text", str(path))
    assert code == 2
    assert err.startswith("tpi-chat: ") and words in err and str(path) in err
    assert len(err.strip().splitlines()) == 1  # no traceback, and the model was not opened


def test_a_context_larger_than_the_model_is_refused(capsys, tiny, text):
    code, err = _run_main(capsys, "--model", str(tiny), "--text", str(text), "--context", "512")
    assert code == 2
    assert err.splitlines()[-1].startswith("tpi-chat: --context 512 is larger than the "
                                           "model's context of 256")
    assert "Traceback" not in err


def test_a_text_shorter_than_two_windows_is_refused(capsys, tiny, tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("The quick brown fox jumps over the lazy dog.", encoding="utf-8")
    code, err = _run_main(capsys, "--model", str(tiny), "--text", str(short), "--context",
                          str(CONTEXT))
    assert code == 2
    assert err.splitlines()[-1].startswith("tpi-chat: the text is ")  # a line of its own
    assert f"needs at least {2 * CONTEXT}" in err and "use a longer text" in err


def _json_run(tiny, text, *extra: str):
    run = run_cli("perplexity", "--model", str(tiny), "--text", str(text), "--context",
                  str(CONTEXT), "--dtype", "fp32", "--json", *extra)
    assert run.code == 0, run.stderr
    lines = run.stdout.strip().splitlines()
    with pytest.raises(ValueError):  # exactly one JSON line, the last
        json.loads(lines[-2])
    return run, run.json()


@pytest.mark.slow
def test_json_run_equals_transformers_on_the_same_windows(tiny, text):
    run, got = _json_run(tiny, text)
    tokens = ChatTokenizer(tiny).encode(text.read_text(encoding="utf-8"))  # no BOS: tiny
    want, count = hf_perplexity(tiny, tokens, CONTEXT)
    assert got["perplexity"] == pytest.approx(want, rel=1e-4)
    assert got["tokens"] == count == got["windows"] * (CONTEXT - 1 - CONTEXT // 2)
    assert got["windows"] == len(tokens) // CONTEXT >= 3
    assert (got["context"], got["dtype"], got["ranks"], got["bos"]) == (CONTEXT, "fp32", 1,
                                                                          False)
    assert got["seconds"] > 0 and got["perplexity_error"] > 0
    n = got["windows"]
    for k in range(1, n + 1):  # a progress line per window, on stderr
        assert f"perplexity: [{k}/{n}] " in run.stderr
    assert "[1/" not in run.stdout


@pytest.mark.slow
def test_two_ranks_give_the_same_perplexity(tiny, text):
    _, one = _json_run(tiny, text)
    _, two = _json_run(tiny, text, "--ranks", "2")
    assert two["ranks"] == 2
    assert two["tokens"] == one["tokens"]
    assert two["perplexity"] == pytest.approx(one["perplexity"], rel=1e-4)


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_with_the_perplexity_so_far(tiny, tmp_path):
    """Ctrl-C in a terminal reaches the whole process group: rank 1's process too."""
    long_text = tmp_path / "long.txt"
    long_text.write_text(TEXT_FILE.read_text(encoding="utf-8"), encoding="utf-8")
    # 6 allreduces a window, 30 ms each: hundreds of windows would take minutes
    proc = subprocess.Popen(
        [sys.executable, "-m", "core.cli", "perplexity", "--model", str(tiny), "--text",
         str(long_text), "--context", str(CONTEXT), "--ranks", "2", "--link-delay-ms", "30",
         "--json"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True)
    err = ""
    try:
        deadline = time.monotonic() + 240
        while "perplexity: [2/" not in err:
            line = proc.stderr.readline()
            assert line and time.monotonic() < deadline, err
            err += line
        os.killpg(proc.pid, signal.SIGINT)
        t0 = time.monotonic()
        out, rest = proc.communicate(timeout=60)
        stopped_in = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    err += rest
    assert proc.returncode == 130, err
    assert stopped_in < 15, stopped_in
    assert "Traceback" not in err
    assert "perplexity: stopped after" in err and "perplexity so far" in err
    assert "{" not in out  # no JSON for a run that did not finish
    time.sleep(0.5)
    with pytest.raises(ProcessLookupError):  # no rank process left behind
        os.killpg(proc.pid, 0)

