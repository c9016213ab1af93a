"""The planner in a real Session: this computer and one `tpi-chat worker` on a device of
its own (a network namespace on a bridge), 5 ms emulated on every link. The model fits
here, so the planner leaves the device out and its card says why; forced in, it takes
part and the replies are the same tokens."""

from __future__ import annotations

import pytest

from core.cluster.plan_devices import PlanPolicy
from core.cluster.session import Session
from core.engine.generate import Generator
from core.engine.options import RunOptions
from core.engine.sampler import SamplingParams
from tests.core.cluster.devices import make_device
from tests.fixtures.tiny_models import make_tiny_model

GREEDY = SamplingParams(temperature=0, max_new_tokens=8)
PROMPT = [1, 5, 9, 23, 42, 7, 99, 3]
OPTS = RunOptions(context=256, threads=1, link_delay_ms=5.0)


@pytest.mark.slow
def test_a_device_that_only_adds_latency_is_left_out_until_forced(tmp_path, remote_workers):
    tiny = make_tiny_model(tmp_path / "llama", "llama", num_hidden_layers=4)
    master = make_device(tmp_path, "master", "worker")
    w = remote_workers.start("mini-pc", tmp_path / "mini-pc", "1GB", mbit=100)
    try:
        spec = w.pair(master.identity, master.trust)
        s = Session(tiny, master.identity, [spec], opts=OPTS, master_budget=2**30,
                    policy=PlanPolicy()).start()
        try:
            assert s.world_size == 1 and s.choice.names == ["This device"]
            alone = Generator(s, {2}).generate(PROMPT, GREEDY).token_ids
            rows = s.device_status()
            assert [r.name for r in rows] == ["This device", "mini-pc"]
            assert rows[1].state == "standby"
            assert "of link latency; not needed: the model fits here" in rows[1].share
            extra = float(rows[1].share.split("~")[1].split(" ")[0])
            assert 40 <= extra <= 200  # 8 allreduces x 2 sends x 5 ms, and the broadcast
            assert rows[0].predicted_ms is not None and "GB/s" in rows[0].measured
        finally:
            s.close()

        forced = Session(tiny, master.identity, [spec], opts=OPTS, master_budget=2**30,
                         policy=PlanPolicy(frozenset({"mini-pc"}))).start()
        try:
            assert forced.world_size == 2 and forced.choice.left_out == {}
            assert Generator(forced, {2}).generate(PROMPT, GREEDY).token_ids == alone
            rows = forced.device_status()
            assert [r.state for r in rows] == ["ready", "ready"]
            assert "link" in rows[1].measured and "Mbit/s" in rows[1].measured
            pred = forced.choice.prediction
            assert pred.link_ms >= 8 * 2 * 5 and pred.ms_per_token > pred.link_ms
        finally:
            forced.close()
    finally:
        w.stop()
