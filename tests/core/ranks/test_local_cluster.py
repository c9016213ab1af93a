"""Ranks as real processes over real sockets: tokens, KV reuse, windows, failures."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch

from core.engine.chat import ChatSession
from core.engine.options import RunOptions
from core.engine.sampler import SamplingParams
from core.errors import PeerError, ShardError, TpiError
from core.model.tokenizer import ChatTokenizer
from core.ranks.local_cluster import LocalCluster
from tests.fixtures.cli import run_cli
from tests.fixtures.tiny_models import load_hf_model, make_tiny_model

GREEDY = SamplingParams(temperature=0, max_new_tokens=32)
PROMPT = "The quick brown fox jumps over the lazy dog and then"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("llama"), "llama", num_hidden_layers=4)


def _hf_greedy(model_dir, ids: list[int], n: int) -> list[int]:
    ref = load_hf_model(model_dir)
    with torch.no_grad():
        out = ref.generate(torch.tensor([ids]), max_new_tokens=n, do_sample=False,
                           eos_token_id=2, pad_token_id=0)
    return out[0, len(ids):].tolist()


@pytest.mark.slow
def test_cli_three_ranks_greedy_equals_transformers(tiny):
    run = run_cli("generate", "--model", str(tiny), "--ranks", "3", "--temperature", "0",
                  "--max-new-tokens", "32", "--raw", "--json", "--prompt", PROMPT)
    assert run.code == 0, run.stderr
    got = run.json()
    ids = ChatTokenizer(tiny).encode(PROMPT)
    assert got["prompt_tokens"] == len(ids)
    assert got["token_ids"] == _hf_greedy(tiny, ids, 32)
    assert got["ranks"] == 3 and len(got["peak_rss_mb"]) == 3
    for key in ("text", "ttft_ms", "decode_ms_per_token", "tokens_per_s", "window"):
        assert key in got


def _two_ranks(tiny, *args: str):
    return run_cli("generate", "--model", str(tiny), "--ranks", "2", "--temperature", "0",
                   "--max-new-tokens", "12", "--raw", "--json", "--prompt", PROMPT, *args)


@pytest.fixture(scope="module")
def whole_model_run(tiny):
    """Two ranks holding all their blocks: the tokens the streamed runs below must give
    (one run for both tests; each started the same one of its own)."""
    run = _two_ranks(tiny, "--window", "all")
    assert run.code == 0, run.stderr
    return run.json()


@pytest.mark.slow
def test_window_one_gives_the_same_tokens_as_all(tiny, whole_model_run):
    run = _two_ranks(tiny, "--window", "1")
    assert run.code == 0, run.stderr
    assert run.json()["token_ids"] == whole_model_run["token_ids"]
    assert run.json()["window"] == "1" and whole_model_run["window"] == "all"


@pytest.mark.slow
def test_prefetch_depth_reaches_every_rank_and_keeps_the_tokens(tiny, whole_model_run):
    limited = _two_ranks(tiny, "--window", "3", "--prefetch", "1")
    assert limited.code == 0, limited.stderr
    assert limited.json()["token_ids"] == whole_model_run["token_ids"]
    bad = _two_ranks(tiny, "--window", "3", "--prefetch", "0")
    assert bad.code != 0 and "--prefetch must be at least 1 block" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_terminal_chat_answers_then_quits_on_slash_quit(tiny):
    p = subprocess.run([sys.executable, "-m", "core.cli", "chat", "--model", str(tiny),
                        "--max-new-tokens", "4"],
                       input="hello there\n/quit\nnot sent\n", capture_output=True,
                       text=True, timeout=240)
    assert p.returncode == 0, p.stderr
    assert p.stdout.count("bot> ") == 1  # one answer; /quit ended it before "not sent"


def test_follow_up_reuses_the_kv_cache_and_matches_a_fresh_run(tiny):
    cluster = LocalCluster(tiny, RunOptions(ranks=2)).start()
    try:
        per_rank = max(1, (os.cpu_count() or 1) // 2)  # two ranks here share the cores
        assert [st.threads for st in cluster.rank_stats()] == [per_rank, per_rank]
        tok = ChatTokenizer(tiny)
        chat = ChatSession(tok, cluster, system="Be brief.")
        chat.send("hello", GREEDY)
        second = chat.send("and again", GREEDY)
        assert second.result.reused_tokens > 0
        fresh = ChatSession(tok, cluster, system="Be brief.")
        fresh.messages = chat.messages[:-1]
        fresh.generator.forget()
        again = fresh.regenerate(GREEDY)
        assert again.result.reused_tokens == 0
        assert again.result.token_ids == second.result.token_ids
    finally:
        cluster.close()


def test_missing_config_is_one_clear_sentence(tmp_path):
    run = run_cli("generate", "--model", str(tmp_path), "--prompt", "hi", timeout=120)
    assert run.code == 2
    assert "Traceback" not in run.stderr
    assert run.stderr.startswith("tpi-chat: ") and "config.json" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1


def test_truncated_shard_mid_stream_is_reported_and_nothing_hangs(tiny):
    cluster = LocalCluster(tiny, RunOptions(ranks=2, window=2)).start()
    try:
        victim = cluster.rank_dirs[1] / "L002.mlp.safetensors"
        data = victim.read_bytes()
        victim.write_bytes(data[: len(data) // 2])
        t0 = time.monotonic()
        with pytest.raises(TpiError, match="is corrupt|truncated or corrupt") as err:
            cluster.step([5, 6, 7], 0)
        assert time.monotonic() - t0 < 20
        assert "rank 1" in str(err.value)
    finally:
        cluster.close()
        victim.write_bytes(data)


def test_truncated_shard_of_rank0_is_named(tiny):
    cluster = LocalCluster(tiny, RunOptions(ranks=1, window=1)).start()
    try:
        victim = cluster.rank_dirs[0] / "L001.attn.safetensors"
        data = victim.read_bytes()
        victim.write_bytes(data[:100])
        with pytest.raises(ShardError, match="L001.attn"):
            cluster.step([5, 6, 7], 0)
    finally:
        cluster.close()
        victim.write_bytes(data)


def test_killed_worker_mid_reply_ends_the_reply_with_a_clear_error(tiny):
    cluster = LocalCluster(tiny, RunOptions(ranks=3)).start()
    try:
        chat = ChatSession(ChatTokenizer(tiny), cluster)
        killed = threading.Event()

        def kill_after_some_tokens(piece: str) -> None:
            if not killed.is_set():
                os.kill(cluster.procs[1].pid, signal.SIGKILL)
                killed.set()

        t0 = time.monotonic()
        with pytest.raises(PeerError, match="rank 2") as err:
            chat.send("tell me a long story", SamplingParams(temperature=0, max_new_tokens=200),
                      on_text=kill_after_some_tokens)
        assert time.monotonic() - t0 < 10
        assert "Traceback" not in str(err.value)
        assert chat.messages == []  # the failed turn is not kept half-done
    finally:
        cluster.close()


def test_garbage_to_every_open_port_does_not_disturb_the_cluster(tiny):
    import zmq

    cluster = LocalCluster(tiny, RunOptions(ranks=2)).start()
    try:
        before = cluster.step([5, 6, 7], 0)
        ctx = zmq.Context.instance()
        endpoints = [cluster.control.endpoint] + [
            v for v in cluster.group.endpoints.values() if isinstance(v, str) and "tcp" in v]
        for ep in endpoints:
            for kind in (zmq.DEALER, zmq.PUSH):
                s = ctx.socket(kind)
                s.linger = 0
                s.connect(ep)
                s.send_multipart([os.urandom(64), b"\x80\x04\x95pickle"], zmq.NOBLOCK)
                s.close()
        time.sleep(0.5)
        after = cluster.step([5, 6, 7], 0)
        assert torch.equal(before, after)
    finally:
        cluster.close()
