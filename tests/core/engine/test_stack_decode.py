"""The one-call decode of every layer (core/engine/stack_decode.py) at one rank: the same
numbers as going layer by layer, bit for bit, and taken only where it applies."""

from __future__ import annotations

import pytest
import torch

from core.kernels import library
from core.model.config import load_config
from core.shard.plan import make_plan
from tests.core.engine.test_quantized_weights import IDS
from tests.fixtures.thread_cluster import ThreadCluster

pytestmark = pytest.mark.skipif(library.kernels() is None, reason="no compiled kernels here")


def _decode(model_dir, shares, out, stack: bool, window=None) -> tuple[torch.Tensor, list]:
    """Logits of a short prefill then decode steps; and whether each rank took the stack."""
    cluster = ThreadCluster(model_dir, make_plan(load_config(model_dir), shares), out,
                            dtype="auto", window=window)
    try:
        if not stack:
            for r in cluster.ranks:
                r._stack = False  # looked at, and not taken: layer by layer
        rows = [cluster.step_all(IDS[:5], 0)[-1]]
        rows += [cluster.step_all([t], p)[0] for p, t in enumerate(IDS[5:20], start=5)]
        return torch.stack(rows), [r._stack for r in cluster.ranks]
    finally:
        cluster.close()


@pytest.mark.parametrize("dtype", ["q4_0", "q8_0", "mixed"])
def test_the_stack_gives_the_layer_by_layer_numbers_exactly(gguf_models, dtype, tmp_path):
    model = gguf_models[dtype]
    got, taken = _decode(model, [1], tmp_path / "s", stack=True)
    want, _ = _decode(model, [1], tmp_path / "l", stack=False)
    assert taken[0], "one rank with every block resident should decode in one call"
    assert torch.equal(got, want)


def test_the_stack_is_not_taken_with_two_ranks_or_a_window(gguf_models, tmp_path):
    model = gguf_models["q4_1"]
    _, taken = _decode(model, [1, 1], tmp_path / "two", stack=True)
    assert taken == [False, False]  # an allreduce between half-layers: layer by layer
    _, taken = _decode(model, [1], tmp_path / "win", stack=True, window=2)
    assert taken == [False]  # streamed blocks are freed after use: no fixed pointers
