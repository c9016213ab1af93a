"""The splitter: the ranks' slices put back together give the original weights exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from core.errors import ShardError
from core.model.config import load_config
from core.shard.blocks import EMBED, HEAD, attn_block, block_order, mlp_block
from core.shard.layout import dtype_name
from core.shard.manifest import Manifest, load_manifest, read_block
from core.shard.plan import make_plan
from core.shard.splitter import SplitResult, split_model

SHARES = [[1], [1, 1], [1, 1, 1], [3, 1], [1, 0.01], [1, 2, 1]]


def _original(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(model_dir / "model.safetensors"))


def _split(model_dir: Path, shares: list[float], out: Path, **kw) -> SplitResult:
    return split_model(model_dir, make_plan(load_config(model_dir), shares), out, **kw)


def _unfuse_attn(m: Manifest, blk: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Split a rank's attn block back into q/k/v/o using the manifest's shapes."""
    cfg, s = m.config, m.share
    if s.num_kv_heads == 0:
        return {}
    hq, hk = s.num_kv_heads * cfg.group_size * cfg.head_dim, s.num_kv_heads * cfg.head_dim
    # Stored [in, out] (blocks.py): transpose back to HF's [out, in] to compare.
    cols = m.block(blk["__name__"]).tensors["wqkv"][1]
    assert cols == hq + 2 * hk
    q, k, v = torch.split(blk["wqkv"].t(), [hq, hk, hk])
    out = {"q": q, "k": k, "v": v, "o": blk["wo"].t()}
    if "bqkv" in blk:
        out["bq"], out["bk"], out["bv"] = torch.split(blk["bqkv"], [hq, hk, hk])
    return out


def _load(result: SplitResult) -> list[tuple[Manifest, dict[str, dict[str, torch.Tensor]]]]:
    out = []
    for d in result.rank_dirs:
        m = load_manifest(d)
        blocks = {}
        for name in m.block_names():
            blk = read_block(d, m, name)
            blocks[name] = {**blk, "__name__": name}
        out.append((m, blocks))
    return out


@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3"])
@pytest.mark.parametrize("shares", SHARES, ids=[":".join(map(str, s)) for s in SHARES])
def test_slices_reconstruct_the_weights(tiny_model, tmp_path, arch, shares) -> None:
    model_dir = tiny_model(arch)
    ref = _original(model_dir)
    cfg = load_config(model_dir)
    result = _split(model_dir, shares, tmp_path)
    assert not result.cached
    assert [p.name for p in result.rank_dirs] == [f"rank{r}" for r in range(len(shares))]
    ranks = _load(result)

    for i in range(cfg.num_layers):
        p = f"model.layers.{i}."
        parts: dict[str, list[torch.Tensor]] = {}
        for m, blocks in ranks:
            a, f = blocks[attn_block(i)], blocks[mlp_block(i)]
            # Norms are replicated on every rank, even one without heads or columns.
            assert torch.equal(a["norm"], ref[p + "input_layernorm.weight"])
            assert torch.equal(f["norm"], ref[p + "post_attention_layernorm.weight"])
            if m.share.num_kv_heads == 0:
                assert set(a) == {"norm", "__name__"}
            elif cfg.qk_norm:
                assert torch.equal(a["q_norm"], ref[p + "self_attn.q_norm.weight"])
                assert torch.equal(a["k_norm"], ref[p + "self_attn.k_norm.weight"])
            for k, t in _unfuse_attn(m, a).items():
                parts.setdefault(k, []).append(t)
            c = m.share.num_cols
            assert tuple(f["w_gate_up"].shape) == (cfg.hidden_size, 2 * c)
            gate, up = torch.split(f["w_gate_up"].t(), [c, c])
            parts.setdefault("gate", []).append(gate)
            parts.setdefault("up", []).append(up)
            parts.setdefault("down", []).append(f["w_down"].t())

        a = p + "self_attn."
        for key, hf in [("q", "q_proj"), ("k", "k_proj"), ("v", "v_proj")]:
            assert torch.equal(torch.cat(parts[key]), ref[a + hf + ".weight"])
            if cfg.qkv_bias:
                assert torch.equal(torch.cat(parts["b" + key]), ref[a + hf + ".bias"])
        assert torch.equal(torch.cat(parts["o"], dim=1), ref[a + "o_proj.weight"])
        assert torch.equal(torch.cat(parts["gate"]), ref[p + "mlp.gate_proj.weight"])
        assert torch.equal(torch.cat(parts["up"]), ref[p + "mlp.up_proj.weight"])
        assert torch.equal(torch.cat(parts["down"], dim=1), ref[p + "mlp.down_proj.weight"])

    m0, b0 = ranks[0]
    assert m0.block_names() == [EMBED, HEAD, *block_order(cfg.num_layers)]
    assert torch.equal(b0[EMBED]["embed"], ref["model.embed_tokens.weight"])
    assert torch.equal(b0[HEAD]["norm"], ref["model.norm.weight"])
    assert torch.equal(b0[HEAD]["lm_head"], ref["lm_head.weight"].t())
    for m, _ in ranks[1:]:
        assert m.block_names() == block_order(cfg.num_layers)
    assert result.bytes_per_rank == [m.total_bytes for m, _ in ranks]


def test_tied_embeddings_are_stored_once(tiny_model, tmp_path) -> None:
    """Tied: the head holds the embedding transposed, and there is no embed block."""
    model_dir = tiny_model("llama", tie_word_embeddings=True)
    ref = _original(model_dir)
    assert "lm_head.weight" not in ref
    result = _split(model_dir, [1, 1], tmp_path)
    m = load_manifest(result.rank_dirs[0])
    assert EMBED not in m.block_names()
    assert set(m.block(HEAD).tensors) == {"norm", "lm_head"}
    head = read_block(result.rank_dirs[0], m, HEAD)
    assert torch.equal(head["norm"], ref["model.norm.weight"])
    assert torch.equal(head["lm_head"], ref["model.embed_tokens.weight"].t())


def test_manifest_records_everything(tiny_model, tmp_path) -> None:
    model_dir = tiny_model("qwen2")
    cfg = load_config(model_dir)
    plan = make_plan(cfg, [3, 1])
    result = split_model(model_dir, plan, tmp_path, model_hash="abc123")
    assert result.root == tmp_path / f"abc123-{plan.key()}-float32"
    for r, d in enumerate(result.rank_dirs):
        m = load_manifest(d)
        assert (m.rank, m.model_hash, m.dtype) == (r, "abc123", "float32")
        assert m.config == cfg and m.plan == plan and m.share == plan.ranks[r]
        b = m.block(attn_block(0))
        hq = m.share.num_kv_heads * cfg.group_size * cfg.head_dim
        hk = m.share.num_kv_heads * cfg.head_dim
        assert b.tensors == {
            "norm": (64,),
            "wqkv": (64, hq + 2 * hk),
            "bqkv": (hq + 2 * hk,),
            "wo": (hq, 64),
        }
        assert b.bytes == (d / b.file).stat().st_size


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_split(tiny_model, tmp_path, dtype) -> None:
    model_dir = tiny_model("llama")
    ref = _original(model_dir)
    result = _split(model_dir, [1, 1], tmp_path, dtype=dtype)
    assert result.root.name.endswith("-" + dtype_name(dtype))
    m = load_manifest(result.rank_dirs[1])
    assert m.dtype == dtype_name(dtype)
    blk = read_block(result.rank_dirs[1], m, mlp_block(2))
    assert blk["w_down"].dtype == dtype
    want = ref["model.layers.2.mlp.down_proj.weight"][:, m.share.col_start : m.share.col_end]
    assert torch.equal(blk["w_down"], want.t().to(dtype))


def test_plan_of_another_model_is_refused(tiny_model, tmp_path) -> None:
    other = make_plan(load_config(tiny_model("llama", num_key_value_heads=2)), [1, 1])
    with pytest.raises(ShardError, match="make a new plan"):
        split_model(tiny_model("llama"), other, tmp_path)
    assert not any(tmp_path.iterdir())


def test_unsafe_model_hash_is_refused(tiny_model, tmp_path) -> None:
    model_dir = tiny_model("llama")
    plan = make_plan(load_config(model_dir), [1])
    with pytest.raises(ShardError, match="model hash"):
        split_model(model_dir, plan, tmp_path / "out", model_hash="../../evil")
    assert not (tmp_path / "out").exists()


def test_unsupported_dtype_is_refused(tiny_model, tmp_path) -> None:
    model_dir = tiny_model("llama")
    plan = make_plan(load_config(model_dir), [1])
    with pytest.raises(ShardError, match="float32, float16, bfloat16 or int8"):
        split_model(model_dir, plan, tmp_path, dtype=torch.float64)
