"""Quantized tiny models shared by the engine's tests: a Llama whose dims every block
format can split, and GGUFs of it in each format, imported once per module."""

from __future__ import annotations

import pytest

from core.model.gguf_import import import_gguf
from tests.core.model.conftest import write_gguf
from tests.fixtures.tiny_models import make_tiny_model

# Dims that every block format can split: head_dim 32, 256-wide rows for Q4_K.
ALIGNED = dict(hidden_size=256, intermediate_size=512, num_attention_heads=8,
               num_key_value_heads=4, num_hidden_layers=2)


@pytest.fixture(scope="module")
def hf_model(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("aligned"), "llama", **ALIGNED)


@pytest.fixture(scope="module")
def gguf_models(hf_model, tmp_path_factory, request):
    """{gguf dtype: imported model dir}, in a module cache of their own."""
    import os

    root = tmp_path_factory.mktemp("gguf")
    old = os.environ.get("TPI_CHAT_CACHE")
    os.environ["TPI_CHAT_CACHE"] = str(root / "cache")
    try:
        return {d: import_gguf(write_gguf(hf_model, root / f"{d}.gguf", dtype=d))
                for d in ("q8_0", "q4_0", "q4_1", "mixed")}
    finally:
        if old is not None:
            os.environ["TPI_CHAT_CACHE"] = old
