"""The splitter streams: it reads one layer at a time and never holds much more than a block.

Every tensor the WeightReader hands out is tracked with a weakref finalizer, so the test
measures exactly how many bytes of source weights are alive at once. CPython frees a
tensor as soon as its last reference goes, so the measure is deterministic.
"""

from __future__ import annotations

import re
import weakref

import torch

from core.model.config import load_config
from core.model.weights import WeightReader
from core.shard.plan import make_plan
from core.shard.splitter import split_model

LAYERS = 8


class _Tracker:
    def __init__(self) -> None:
        self.live = 0
        self.peak = 0
        self.layers_read: list[int] = []
        self.whole_reads: list[str] = []

    def track(self, name: str, t: torch.Tensor, whole: bool) -> torch.Tensor:
        n = t.untyped_storage().nbytes()
        self.live += n
        self.peak = max(self.peak, self.live)
        weakref.finalize(t, self._free, n)
        m = re.match(r"model\.layers\.(\d+)\.", name)
        if m:
            self.layers_read.append(int(m.group(1)))
            if whole:
                self.whole_reads.append(name)
        return t

    def _free(self, n: int) -> None:
        self.live -= n


def test_split_streams_layer_by_layer(tiny_model, tmp_path, monkeypatch) -> None:
    model_dir = tiny_model("qwen2", num_hidden_layers=LAYERS)
    cfg = load_config(model_dir)
    tr = _Tracker()
    get, rows, cols = WeightReader.get, WeightReader.get_rows, WeightReader.get_cols
    monkeypatch.setattr(WeightReader, "get", lambda s, n: tr.track(n, get(s, n), True))
    monkeypatch.setattr(
        WeightReader, "get_rows", lambda s, n, a, b: tr.track(n, rows(s, n, a, b), False)
    )
    monkeypatch.setattr(
        WeightReader, "get_cols", lambda s, n, a, b: tr.track(n, cols(s, n, a, b), False)
    )

    split_model(model_dir, make_plan(cfg, [1, 1, 2]), tmp_path)

    # Layer-major order: every rank gets layer i before anything of layer i+1 is read.
    assert tr.layers_read == sorted(tr.layers_read)
    assert set(tr.layers_read) == set(range(LAYERS))
    # Only the replicated norms are read whole; projections are read as row/column slices.
    assert tr.whole_reads and all(n.endswith("norm.weight") for n in tr.whole_reads)

    d, hd = cfg.hidden_size, cfg.head_dim
    layer_params = (
        d * cfg.num_heads * hd * 2  # q, o
        + d * cfg.num_kv_heads * hd * 2  # k, v
        + 3 * d * cfg.intermediate_size
    )
    layer_bytes = 4 * layer_params
    embed_bytes = 4 * cfg.vocab_size * d
    # At most one block of one rank (or the embedding / lm_head alone) is ever resident.
    assert tr.peak <= max(layer_bytes, embed_bytes)
    assert tr.peak < 0.3 * LAYERS * layer_bytes
    assert tr.live == 0
