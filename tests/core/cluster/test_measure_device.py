"""The device measurement's parts, in this process: read speeds over fresh allocations and
the sliver layer that layer_ms and the waiting measurement run."""

from __future__ import annotations

import torch

from core.cluster.measure_device import read_s, read_speeds
from core.cluster.measure_workloads import READ_BYTES, sliver_layers


def test_read_speeds_cover_each_format_asked_from_allocations_past_the_cache():
    t, nbytes = read_s("q4_1")
    assert t > 0 and nbytes >= READ_BYTES * 0.9
    got = read_speeds(["q4_1", "float32"], rounds=2)
    assert set(got) == {"q4_1", "float32"}
    assert all(0.01 < v < 1000 for v in got.values())


def test_the_sliver_layers_halves_run_the_engines_attention_and_mlp():
    attn_half, mlp_half, x = sliver_layers(2)
    with torch.inference_mode():
        h = mlp_half(attn_half(x, 1), 1)
    assert h.shape == x.shape and torch.isfinite(h).all() and not torch.equal(h, x)
