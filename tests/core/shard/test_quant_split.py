"""Splitting into block-quantized shards: a GGUF's bytes carried over, rows cut on block
boundaries, one part per format, and refusals that say what to do."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gguf import GGUFReader

from core.errors import ShardError
from core.model.config import load_config
from core.model.gguf_import import import_gguf
from core.shard.blocks import attn_block, mlp_block
from core.shard.manifest import load_manifest, read_block
from core.shard.plan import make_plan
from core.shard.splitter import split_model
from tests.core.model.conftest import write_gguf

ALIGNED = dict(hidden_size=256, intermediate_size=512, num_attention_heads=8,
               num_key_value_heads=4, num_hidden_layers=2)


def _gguf_rows(path, name):
    """The raw block bytes of a GGUF tensor, [rows, row bytes]."""
    return next(np.asarray(t.data) for t in GGUFReader(path).tensors if t.name == name)


@pytest.mark.parametrize("dtype,bb", [("q8_0", 34), ("q4_0", 18), ("q4_1", 20)])
def test_gguf_blocks_land_in_the_shards_byte_for_byte(tiny_model, tmp_path, dtype, bb):
    src = write_gguf(tiny_model("qwen2", **ALIGNED), tmp_path / "m.gguf", dtype=dtype)
    model = import_gguf(src)
    result = split_model(model, make_plan(load_config(model), [1, 3]), tmp_path / "out")
    assert result.dtype == "gguf" and result.conversions == []
    m = load_manifest(result.rank_dirs[1])
    c0, c1 = m.share.col_start, m.share.col_end
    assert c0 % 32 == 0 and 0 < c0 < c1
    blk = read_block(result.rank_dirs[1], m, mlp_block(1))
    gate, up = (_gguf_rows(src, f"blk.1.ffn_{n}.weight") for n in ("gate", "up"))
    down = _gguf_rows(src, "blk.1.ffn_down.weight")
    assert np.array_equal(blk[f"w_gate_up.0.{dtype}"].numpy(),
                          np.concatenate([gate[c0:c1], up[c0:c1]]))
    assert np.array_equal(blk[f"w_down.0.{dtype}"].numpy(), down[:, c0 // 32 * bb : c1 // 32 * bb])
    assert blk["norm"].dtype == torch.float32


def test_a_mix_of_formats_keeps_one_part_per_format(tiny_model, tmp_path):
    src = write_gguf(tiny_model("llama", **ALIGNED), tmp_path / "m.gguf", dtype="mixed")
    model = import_gguf(src)
    result = split_model(model, make_plan(load_config(model), [1, 1]), tmp_path / "out")
    m = load_manifest(result.rank_dirs[0])
    attn = read_block(result.rank_dirs[0], m, attn_block(0))
    # q and k came as Q4_K (regrouped into q4_1), v as Q5_0 (requantized to q8_0)
    assert sorted(k for k in attn if k.startswith("wqkv")) == ["wqkv.0.q4_1", "wqkv.1.q8_0"]
    # rows: q (2 KV heads x group 2 x 32) + k (2 x 32), then v (2 x 32)
    assert attn["wqkv.0.q4_1"].shape[0] == 3 * attn["wqkv.1.q8_0"].shape[0] == 192
    assert any(line.startswith("Q4_K -> q4_1") for line in result.conversions)
    assert any(line.startswith("Q5_0 -> q8_0") for line in result.conversions)


def test_quantized_shards_are_a_fraction_of_fp32(tiny_model, tmp_path):
    model = tiny_model("llama", **ALIGNED)
    plan = make_plan(load_config(model), [1, 1])
    fp32 = split_model(model, plan, tmp_path, "float32").bytes_per_rank
    for dtype, most in (("q8_0", 0.3), ("q4_0", 0.18), ("q4_1", 0.19)):
        sizes = split_model(model, plan, tmp_path, dtype).bytes_per_rank
        assert all(s < most * f for s, f in zip(sizes, fp32, strict=True)), dtype


def test_a_split_off_block_boundaries_is_refused(tiny_model, tmp_path):
    model = tiny_model("llama")  # head_dim 8: three ranks cut o_proj inside a block
    with pytest.raises(ShardError, match="32-column block boundaries"):
        split_model(model, make_plan(load_config(model), [2, 1, 1]), tmp_path, "q4_1")
    assert not any(p.name.startswith("rank") for p in tmp_path.rglob("*") if p.is_dir()
                   and "tmp" not in p.name)


def test_gguf_dtype_needs_a_gguf(tiny_model, tmp_path):
    model = tiny_model("llama", **ALIGNED)
    with pytest.raises(ShardError, match="Hugging Face folder"):
        split_model(model, make_plan(load_config(model), [1]), tmp_path, "gguf")
