"""A master Session with real `tpi-chat worker` processes, each on a device of its own
(a network namespace on a bridge, tests/fixtures/home_lan.py), CURVE everywhere: same
greedy tokens as a local cluster, a SIGKILLed worker mid-reply and its return, a
corrupted shard, an enrolled device that is off at start (left out, shown offline)."""

from __future__ import annotations

import hashlib
import socket
import threading
import time

import pytest

from core.cluster.session import Session, starts_reply
from core.cluster.worker_spec import WorkerSpec
from core.comm.curve import Keys
from core.cpu import usable_cores
from core.engine.generate import Generator
from core.engine.options import RunOptions
from core.engine.sampler import SamplingParams
from core.errors import PeerError
from core.ranks.local_cluster import LocalCluster
from tests.core.cluster.devices import make_device
from tests.fixtures.tiny_models import make_tiny_model

GREEDY = SamplingParams(temperature=0, max_new_tokens=16)
PROMPT = [1, 5, 9, 23, 42, 7, 99, 3]
OPTS = RunOptions(context=256, threads=1)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("llama"), "llama", num_hidden_layers=4)


@pytest.fixture(scope="module")
def reference(tiny):
    c = LocalCluster(tiny, RunOptions(ranks=3, context=256, threads=1)).start()
    try:
        return Generator(c, {2}).generate(PROMPT, GREEDY).token_ids
    finally:
        c.close()


@pytest.mark.slow
def test_remote_ranks_match_local_then_survive_a_killed_worker(tiny, reference, tmp_path,
                                                                remote_workers):
    master = make_device(tmp_path, "master", "worker")
    w1, w2 = (remote_workers.start(n, tmp_path / n, "1GB") for n in ("w1", "w2"))
    try:
        specs = [w.pair(master.identity, master.trust) for w in (w1, w2)]
        s = Session(tiny, master.identity, specs, opts=OPTS, master_budget=2**30).start()
        try:
            gen = Generator(s, {2})
            assert gen.generate(PROMPT, GREEDY).token_ids == reference
            # other devices: the CurveZMQ data plane, not the loopback fast path
            assert s.cluster.group.local_links == [] and s.cluster.bind_host == "0.0.0.0"
            rows = s.device_status()
            assert [r.name for r in rows] == ["This device", "w1", "w2"]
            assert rows[1].role == "worker" and rows[1].resident_blocks > 0
            deadline = time.monotonic() + 10  # the heartbeat's first pong
            while s.device_status()[1].rtt_ms is None and time.monotonic() < deadline:
                time.sleep(0.05)
            assert s.device_status()[1].rtt_ms is not None

            t_kill = []

            def kill_w2(tok: int) -> None:
                if not t_kill:
                    w2.kill()
                    t_kill.append(time.monotonic())

            with pytest.raises(PeerError, match="'w2'") as err:
                gen.generate(PROMPT + [11, 12], SamplingParams(temperature=0,
                                                               max_new_tokens=200), kill_w2)
            detect_s = time.monotonic() - t_kill[0]
            print(f"failure detected {detect_s:.2f} s after SIGKILL: {err.value}")
            assert detect_s < 3.0
            # the next message runs on the remaining devices (master + w1)
            gen.generate(PROMPT, GREEDY)
            assert s.world_size == 2
            assert [r.state for r in s.device_status()][-1] == "offline"

            # w2 comes back (same device, same ports): it rejoins at the next message
            w2 = remote_workers.start("w2", tmp_path / "w2", "1GB")
            deadline = time.monotonic() + 15
            while not s._rejoin and time.monotonic() < deadline:
                time.sleep(0.1)
            assert gen.generate(PROMPT, GREEDY).token_ids == reference
            assert s.world_size == 3
            assert [r.state for r in s.device_status()] == ["ready"] * 3
        finally:
            s.close()
    finally:
        w1.stop()
        w2.stop()


@pytest.mark.slow
def test_corrupted_shard_on_worker_is_resent(tiny, reference, tmp_path, remote_workers):
    master = make_device(tmp_path, "master", "worker")
    w = remote_workers.start("w", tmp_path / "w", "1GB")
    try:
        spec = w.pair(master.identity, master.trust)
        s = Session(tiny, master.identity, [spec], opts=OPTS, local_ranks=1,
                    master_budget=2**30).start()
        try:
            assert s.world_size == 3
            assert Generator(s, {2}).generate(PROMPT, GREEDY).token_ids == reference
            blocks = sorted(p for p in (w.data_dir / "shards").rglob("*") if p.is_file()
                            and not p.name.startswith(".") and p.suffix != ".json")
            assert blocks, list((w.data_dir / "shards").rglob("*"))
            victim = blocks[0]
            good = hashlib.sha256(victim.read_bytes()).hexdigest()
            data = bytearray(victim.read_bytes())
            data[len(data) // 2] ^= 0xFF
            victim.write_bytes(data)
            s.recover()  # a new plan ships again: the damaged file is found by hash
            assert hashlib.sha256(victim.read_bytes()).hexdigest() == good
            assert Generator(s, {2}).generate(PROMPT, GREEDY).token_ids == reference
        finally:
            s.close()
    finally:
        w.stop()


def switched_off_device(name: str) -> WorkerSpec:
    """An enrolled device that is off: nothing listens on its control port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return WorkerSpec(name, f"tcp://127.0.0.1:{port}", Keys.generate().public_key, 2**30)


@pytest.mark.slow
def test_a_device_that_does_not_answer_is_left_out_and_shown_offline(tiny, tmp_path,
                                                                      remote_workers):
    master = make_device(tmp_path, "master", "worker")
    w = remote_workers.start("w", tmp_path / "w", "1GB")
    try:
        off = switched_off_device("off")
        stages: list[tuple[str, str | None, int, int]] = []
        pushed: list[list] = []
        got_push = threading.Event()

        def progress(stage: str, done: int, total: int) -> None:
            stages.append((str(stage), getattr(stage, "device", None), done, total))

        def on_status(rows: list) -> None:
            pushed.append(rows)
            got_push.set()

        budgets_asked: list[list[str]] = []

        def budget(answering: list[WorkerSpec]) -> int:
            budgets_asked.append([a.name for a in answering])
            return 2**30

        specs = [off, w.pair(master.identity, master.trust)]
        # no --threads: the ranks on a machine share its cores
        s = Session(tiny, master.identity, specs, opts=RunOptions(context=256),
                    master_budget=budget, progress=progress, on_status=on_status).start()
        try:
            assert s.world_size == 2 and s.silent == [off] and budgets_asked == [["w"]]
            # rank 0 takes this machine's cores; the device its own (pinned to one)
            assert [st.threads for st in s.cluster.rank_stats()] == [usable_cores(), 1]
            assert stages[0] == ("contacting devices", None, 0, 2)
            shipping = [x for x in stages if x[1] is not None]
            assert shipping and {x[:2] for x in shipping} == {("sending shards to 'w'", "w")}
            assert shipping[-1][2] == shipping[-1][3] > 0
            assert Generator(s, {2}).generate(PROMPT, GREEDY).token_ids

            rows = s.device_status()
            assert [(r.name, r.state) for r in rows][1:] == [("w", "ready"), ("off", "offline")]
            assert rows[2].share == ("Did not answer when the model loaded; "
                                     "it joins at the next load.")
            assert got_push.wait(10.0)
            assert pushed[-1][-1].name == "off" and pushed[-1][-1].share == rows[2].share
        finally:
            s.close()
    finally:
        w.stop()


def test_a_speculative_check_inside_a_reply_is_no_moment_to_re_plan():
    """A returned device rejoins when a reply starts (a prefill, a regenerate), never at
    a speculative step checking drafts, though it feeds several ids behind the end."""
    assert starts_reply(8, 0, 0, False)  # a prompt
    assert starts_reply(1, 5, 9, False)  # a regenerate from position 5
    assert not starts_reply(1, 9, 9, False)  # a decode step
    assert not starts_reply(5, 9, 9, True)  # a check of 4 drafts after the last token
    assert not starts_reply(5, 7, 12, True)  # ... after drafts refused at 7..11
