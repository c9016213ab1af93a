"""Fit verdicts: this computer, with the paired devices, with the memory window, too big."""

from __future__ import annotations

from core.library.catalog import load_catalog
from core.library.fit import Resources, Verdict, assess

GB = 10**9


def _by_size():
    entries = load_catalog()
    return min(entries, key=lambda e: e.size), max(entries, key=lambda e: e.size)


def test_small_fits_here_and_70b_needs_more():
    small, big = _by_size()
    res = Resources(local_budget=8 * GB, window="all")
    assert assess(small, res).verdict is Verdict.THIS_COMPUTER
    fit = assess(big, res)
    assert fit.verdict is Verdict.TOO_BIG and "pairing devices" in fit.detail


def test_devices_budgets_add_up():
    _, big = _by_size()  # ~42.5 GB
    four = Resources(local_budget=16 * GB, device_budgets=(10 * GB,) * 3, window="all")
    assert assess(big, four).verdict is Verdict.TOO_BIG  # 10 + 30 GB < 42.5 GB + 4 allowances
    five = Resources(local_budget=16 * GB, device_budgets=(14 * GB,) * 3, window="all")
    fit = assess(big, five)
    assert fit.verdict is Verdict.WITH_DEVICES and not fit.windowed


def test_the_memory_window_lets_a_big_model_stream():
    _, big = _by_size()
    res = Resources(local_budget=8 * GB, window="auto")
    fit = assess(big, res)
    assert fit.verdict is Verdict.THIS_COMPUTER and fit.windowed
    assert fit.ms_per_token is None and "stream" in fit.detail
    tiny = Resources(local_budget=1 * GB, device_budgets=(2 * GB,) * 3, window=2)
    fit = assess(big, tiny)
    assert fit.verdict is Verdict.WITH_DEVICES and fit.windowed


def test_speed_scales_the_measured_bytes_per_second():
    small, _ = _by_size()
    res = Resources(local_budget=8 * GB, local_bytes_per_s=2 * GB)
    fit = assess(small, res)
    assert fit.ms_per_token == 1000 * small.size / (2 * GB)
    assert assess(small, Resources(local_budget=8 * GB)).ms_per_token is None
