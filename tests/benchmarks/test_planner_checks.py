"""bench_planner's checks on made-up runs: the choice and adding-a-device verdicts are
paired (each repetition's ratio between phase 3's back-to-back runs, then the median), so
a plan that drifts between minutes does not count against the planner, and a real
slowdown still does."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import bench_planner  # noqa: E402

DEVICES = {"b forced": ["This device", "dev-b"], "c forced": ["This device", "dev-c"],
           "b+c forced": ["This device", "dev-b", "dev-c"]}


def runs(alone: list[float], b_offered: list[float], bc_offered: list[float]) -> list[dict]:
    """Five repetitions at 0 ms: the subsets forced, then phase 3's three runs."""
    out = []
    for rep, (a, b, bc) in enumerate(zip(alone, b_offered, bc_offered, strict=True)):
        made = {"alone": a * 0.8, "b forced": 30.0, "c forced": 31.0, "b+c forced": 45.0,
                "alone again": a, "b offered again": b, "b+c offered": bc}
        out += [{"rep": rep, "label": label, "delay_ms": 0.0, "decode_ms_per_token": ms,
                 "predicted_ms_per_token": ms, "devices": DEVICES.get(label, ["This device"])}
                for label, ms in made.items()]
    return out


def test_a_plan_that_drifts_between_repetitions_passes_when_each_pair_agrees():
    drift = [8.0, 12.0, 9.0, 13.0, 10.0]
    checks = bench_planner.summarise(runs(drift, [x * 1.02 for x in drift],
                                          [x * 1.03 for x in drift]))["checks"]
    for name in ("choice vs best subset @0", "adding dev-b @0", "adding dev-c too @0"):
        assert checks[name]["pass"] and checks[name]["value"] < 1.04, name
        assert len(checks[name]["paired"]) == 5


def test_a_device_that_slows_every_pair_fails_the_adding_check():
    alone = [10.0] * 5
    checks = bench_planner.summarise(runs(alone, [10.5] * 5, [13.0] * 5))["checks"]
    assert checks["adding dev-b @0"]["pass"]
    assert not checks["adding dev-c too @0"]["pass"]
    assert abs(checks["adding dev-c too @0"]["value"] - 13.0 / 10.5) < 1e-3
    assert not checks["choice vs best subset @0"]["pass"]


def test_each_back_to_back_set_is_its_own_pair_and_the_forced_runs_count_for_all():
    first = runs([10.0] * 5, [10.2] * 5, [10.3] * 5)
    second = [{**r, "pair": 1, "decode_ms_per_token": r["decode_ms_per_token"] * 1.3}
              for r in first if r["label"] in ("alone again", "b offered again", "b+c offered")]
    checks = bench_planner.summarise(first + second)["checks"]
    assert len(checks["adding dev-b @0"]["paired"]) == 10  # 5 repetitions x 2 sets
    assert checks["adding dev-b @0"]["value"] < 1.03  # 30% slower together: no step slower
    # the pick (this computer alone) is the fastest subset's plan in every set
    assert checks["choice vs best subset @0"]["same_plan"] == [10, 10]


def test_a_device_whose_fresh_measurement_failed_stops_the_run():
    good = {"device": {"read_gbps": {"q4_1": 8.0}}}
    bench_planner.unmeasured({"This device": good, "dev-b": good})
    with pytest.raises(RuntimeError, match="dev-c") as got:
        bench_planner.unmeasured({"This device": good, "dev-c": {"device": {"read_gbps": {}}}})
    assert "This device" not in str(got.value)
