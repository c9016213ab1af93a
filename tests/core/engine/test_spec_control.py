"""Choosing k: off where a target step costs what a draft step does, growing with the
acceptance rate where the target step is mostly link latency."""

from __future__ import annotations

import pytest

from core.engine.spec_control import K_MAX, KControl, parse_speculate
from core.errors import TpiError


def _run(control: KControl, plain_ms: float, slope_ms: float, keep_all: bool,
         steps: int = 60) -> list[int]:
    """Feed the controller a simulated target; the k it chose at each step."""
    ks = []
    for _ in range(steps):
        k = control.choose(20)
        ks.append(k)
        if k == 0:
            control.note_plain(plain_ms)
        else:
            control.note_spec(k, k if keep_all else k // 2, plain_ms + slope_ms * k,
                              control.draft_ms)
    return ks


def test_fast_link_stays_plain_without_a_probe():
    """One machine: the draft costs nearly what a target step does; never speculate."""
    ks = _run(KControl(None, draft_ms=30.0, draft_slope_ms=5.0), plain_ms=34.0,
              slope_ms=5.0, keep_all=True)
    assert ks == [0] * len(ks)


def test_slow_link_speculates_and_k_grows_with_acceptance():
    ks = _run(KControl(None, draft_ms=30.0, draft_slope_ms=5.0), plain_ms=400.0,
              slope_ms=5.0, keep_all=True)
    assert ks[0] == 0 and all(k > 0 for k in ks[1:])
    assert ks[-1] == K_MAX and ks[1] < K_MAX


def test_poor_acceptance_lowers_k():
    good = _run(KControl(None, 30.0, 5.0), 400.0, 5.0, keep_all=True)
    poor = _run(KControl(None, 30.0, 5.0), 400.0, 5.0, keep_all=False)
    assert 0 < poor[-1] < good[-1]


def test_fixed_k_and_off():
    assert _run(KControl(3, 30.0), 34.0, 5.0, True, 5) == [3] * 5
    assert _run(KControl(0, 30.0), 400.0, 5.0, True, 5) == [0] * 5
    assert KControl(8, 30.0).choose(2) == 2  # never past the room left


def test_parse_speculate():
    assert parse_speculate("auto").k is None and parse_speculate("off").off
    assert parse_speculate("5", "other-model").k == 5
    for bad in ("fast", "0.5", str(K_MAX + 1), "-1"):
        with pytest.raises(TpiError):
            parse_speculate(bad)


def test_steps_that_really_cost_more_than_plain_turn_it_off():
    """The cost model predicts a gain, but the measured speculative steps say otherwise
    (say, contention it cannot see): back to plain decoding."""
    c = KControl(None, draft_ms=10.0, draft_slope_ms=1.0)
    c.note_plain(100.0)
    assert c.choose(20) > 0
    for _ in range(3):
        k = c.choose(20)
        if k:
            c.note_spec(k, k, 100.0 + k, 10.0, step_ms=150.0 * (k + 1))
    assert c.choose(20) == 0
