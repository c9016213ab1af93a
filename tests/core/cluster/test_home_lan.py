"""Devices on a real (emulated) home network: every worker in its own network namespace,
joined to this computer by veth pairs on bridges, never through this machine's loopback.

Driven as a user's script would: pairing opened on each device (`tpi-chat worker --pair`,
or P pressed in a running worker's console), `tpi-chat pair`, `tpi-chat devices`, `tpi-chat
generate --devices all` as processes (the master pinned to core 0, the workers to core 1).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import pytest

from scripts import home_lan as lan_script
from tests.fixtures import home_lan
from tests.fixtures.cli import ChatProcess, run_cli
from tests.fixtures.tiny_models import make_tiny_model
from tests.fixtures.worker_process import ROOT, WorkerProcess

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(home_lan.available() is not None,
                                 reason=str(home_lan.available()))]

PROMPT = "The capital of France is"
GEN = ("--temperature", "0", "--max-new-tokens", "12", "--raw", "--json", "--threads", "1",
       "--context", "256")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("llama"), "llama", num_hidden_layers=4)


@pytest.fixture(scope="module")
def one_rank_tokens(tiny):
    run = run_cli("generate", "--model", str(tiny), "--prompt", PROMPT, *GEN)
    assert run.code == 0, run.stderr
    return run.json()["token_ids"]


@pytest.fixture
def lan():
    with home_lan.HomeLan() as lan:
        yield lan


def master_cli(data_dir, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    """`tpi-chat ARGS` on this computer (root namespace), pinned to core 0."""
    env = {**os.environ, "TPI_CHAT_DATA": str(data_dir), "PYTHONPATH": str(ROOT)}
    return subprocess.run(["taskset", "-c", "0", sys.executable, "-m", "core.cli", *args],
                          capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)


def pair(master_dir, worker: WorkerProcess, budget: str = "1GB") -> None:
    """`tpi-chat pair` with the code the device shows; when pairing is closed there, the
    user opens it first (P in the worker's console)."""
    run = master_cli(master_dir, "pair", f"{worker.host}:{worker.port}",
                     "--code", worker.current_code(), "--budget", budget)
    assert run.returncode == 0, run.stderr
    assert f"paired with '{worker.name}'" in run.stdout


def test_pair_and_generate_across_two_networks(tiny, one_rank_tokens, lan, tmp_path):
    """Two devices on two networks (Wi-Fi and Ethernet, say: this computer has an address
    on each), one capped at 100 Mbit: the same greedy tokens as one rank alone."""
    wifi, ethernet = lan.network(), lan.network()
    d1, d2 = wifi.device("minipc", mbit=100), ethernet.device("board")
    # the mini PC started with `--pair`; the board runs, and its user presses P to pair
    w1 = WorkerProcess("minipc", tmp_path / "w1", "1GB", device=d1, cores=[1])
    w2 = WorkerProcess("board", tmp_path / "w2", "1GB", device=d2, cores=[1], pair=False)
    assert (w1.host, w2.host) == (d1.ip, d2.ip)
    master = tmp_path / "master"
    pair(master, w1)
    pair(master, w2)

    listed = master_cli(master, "devices")
    assert listed.returncode == 0, listed.stderr
    assert re.search(r"minipc .* answers", listed.stdout), listed.stdout
    assert re.search(r"board .* answers", listed.stdout), listed.stdout

    run = master_cli(master, "generate", "--model", str(tiny), "--prompt", PROMPT, *GEN,
                     "--devices", "all", "--force", "all")
    assert run.returncode == 0, run.stderr + "\n".join(w1.lines + w2.lines)
    got = json.loads(run.stdout.strip().splitlines()[-1])
    assert got["ranks"] == 3, run.stderr
    assert got["token_ids"] == one_rank_tokens
    # what the plan was priced from, for benchmarks/repredict_planner.py: each device's
    # numbers and its link's echoes, and the prediction's terms
    assert set(got["measured"]) == {"This device", "minipc", "board"}
    assert got["measured"]["board"]["link"]["rtt_ms"] and got["prediction"]["link_ms"] > 0
    # each worker ran its rank, reached over its own network
    assert any("running rank" in x for x in w1.lines)
    assert any("running rank" in x for x in w2.lines)
    # the shards went to each device with the device card's line on stderr
    for name in ("minipc", "board"):
        assert re.search(rf"'{name}' \[#{{20}}\] Shipped \d+ KB", run.stderr), run.stderr

    # this computer's address on the Wi-Fi changes (a new DHCP lease): the next run
    # tells the device the new one
    lan_script._ip("addr", "flush", "dev", wifi.bridge)
    lan_script._ip("addr", "add", f"{wifi.subnet}.77/24", "dev", wifi.bridge)
    run = master_cli(master, "generate", "--model", str(tiny), "--prompt", PROMPT, *GEN,
                     "--devices", "minipc", "--force", "all")
    assert run.returncode == 0, run.stderr
    got = json.loads(run.stdout.strip().splitlines()[-1])
    assert got["ranks"] == 2 and got["token_ids"] == one_rank_tokens
    w1.stop()
    w2.stop()


def test_a_device_that_cannot_reach_this_computer_is_left_out(tiny, one_rank_tokens, lan,
                                                                tmp_path):
    """A strict firewall between them: the worker answers pings but its rank cannot
    connect back. The run goes on without it, saying why in the device's own words."""
    net = lan.network()
    dev = net.device("walled")
    w = WorkerProcess("walled", tmp_path / "w", "1GB", device=dev, cores=[1])
    master = tmp_path / "master"
    pair(master, w)
    dev.firewall(net.host_ip, answer_from_ports=[w.control_port, w.port])
    run = master_cli(master, "generate", "--model", str(tiny), "--prompt", PROMPT, *GEN,
                     "--devices", "walled", "--force", "all")
    assert run.returncode == 0, run.stderr
    got = json.loads(run.stdout.strip().splitlines()[-1])
    assert got["ranks"] == 1 and got["token_ids"] == one_rank_tokens
    assert "'walled' left out" in run.stderr
    assert "cannot reach the master" in run.stderr, run.stderr
    w.stop()



def test_chat_goes_on_when_a_device_is_killed_mid_reply_and_it_rejoins(lan, tmp_path):
    tiny = make_tiny_model(tmp_path / "llama", "llama", num_hidden_layers=4,
                           max_position_embeddings=4096)
    net = lan.network()
    d1, d2 = net.device("one", mbit=100), net.device("two")
    w1 = WorkerProcess("one", tmp_path / "w1", "1GB", device=d1, cores=[1])
    w2 = WorkerProcess("two", tmp_path / "w2", "1GB", device=d2, cores=[1])
    master = tmp_path / "master"
    pair(master, w1)
    pair(master, w2)
    # 5 ms per send (emulated link): a 3-rank token takes ~130 ms, so a 24-token reply is
    # ~3 s, long enough to kill a device in the middle of it (each later turn costs as
    # much); plain decoding, so the reply line is "[... N ranks]" and a step is one token
    chat = ChatProcess(master, "--model", str(tiny), "--devices", "all", "--force", "all",
                       "--threads", "1", "--context", "4096", "--max-new-tokens", "24",
                       "--link-delay-ms", "5", "--speculate", "off")
    try:
        chat.wait_for(r"Empty line, /quit")
        chat.wait_for(r"3 ranks\]", chat.say("hello"))
        mark = chat.say("tell me a long story")
        chat.wait_for(r"bot> [^\n]*\S", mark)
        w2.kill()
        killed = time.monotonic()
        m = chat.wait_for(r"\[device 'two' stopped answering[^\]]*\]", mark, timeout=30)
        detect_s = time.monotonic() - killed
        print(f"chat said within {detect_s:.2f} s: {m[0]}")
        assert detect_s < 3.0
        chat.wait_for(r"2 ranks\]", chat.say("are you still there?"))

        # back (same ports): once its link's heartbeat finds it, the next message uses it
        w2 = WorkerProcess("two", tmp_path / "w2", "1GB", device=d2, cores=[1], pair=False)
        ranks = []
        while "3" not in ranks and len(ranks) < 10:
            ranks.append(chat.wait_for(r"(\d) ranks?\]", chat.say("and now?"))[1])
        assert ranks[-1] == "3", ranks
    finally:
        chat.close()
        w1.stop()
        w2.stop()
