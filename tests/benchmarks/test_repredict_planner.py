"""benchmarks/repredict_planner.py on a small planner.json: each run re-priced from the
numbers it recorded (or its phase's), with devices' missing messaging numbers filled in."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))  # the benchmark modules import each other as top-level names

import repredict_planner  # noqa: E402

from core.cluster.cost_model import Member, predict  # noqa: E402
from core.cluster.measures import DeviceSpeed, LinkSpeed  # noqa: E402
from core.shard.plan import make_plan  # noqa: E402
from tests.core.cluster.test_planner import CFG, MODEL  # noqa: E402

DEV = {"read_gbps": {"q4_1": 6.5, "q8_0": 10.0}, "layer_ms": 0.08, "gflops": 80.0,
       "disk_gbps": 1.2, "free_bytes": 2**34, "cores": 1}
MEASURED = {"This device": {"device": DEV, "link": None, "budget": 2**30},
            "dev-b": {"device": DEV, "link": {"rtt_ms": [0.45] * 5, "mbps": 300.0},
                      "budget": 2**30}}


def run(label: str, delay: float, **kw) -> dict:
    return {"rep": 0, "label": label, "delay_ms": delay, "decode_ms_per_token": 30.0,
            "predicted_ms_per_token": 40.0, **kw}


def test_runs_are_repriced_from_their_own_or_their_phase_measurements():
    data = {"measured": [{"rep": 0, "phase": 1, **MEASURED}],
            "runs": [run("b forced", 0.0), run("c forced", 0.0),  # no phase 2 measured
                     run("b forced", 0.0, measured=MEASURED)]}
    rows = repredict_planner.repredict(data, MODEL)
    assert len(rows) == 2 and rows[0]["again"] == pytest.approx(rows[1]["again"])
    assert rows[0]["devices"] == ["This device", "dev-b"]  # forced: both used
    # the old-device echo priced whole; filling msg_ms in takes 2 x 0.07 off each round trip
    filled = repredict_planner.repredict(data, MODEL, msg_ms=0.07, frame_ms=0.05)
    assert rows[0]["link"] - filled[0]["link"] == pytest.approx(60.5 * 0.14, rel=0.01)
    dev = DeviceSpeed.from_dict(DEV)
    two = [Member("This device", dev, None, 2**30),
           Member("dev-b", dev, LinkSpeed((0.45,) * 5, 300.0), 2**30)]
    best = min(predict(MODEL, make_plan(CFG, s), two).ms_per_token
               for s in ([1.0, 1.0], [2**30, 2**30]))
    assert rows[0]["again"] == pytest.approx(best, rel=1e-6)
    assert repredict_planner.table(rows)[1].startswith("b forced")
