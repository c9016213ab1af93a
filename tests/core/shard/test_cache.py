"""Split caching and atomicity: finished rank dirs are reused, unfinished ones never seen."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from core.model.config import load_config
from core.shard.fingerprint import model_fingerprint
from core.shard.layout import TMP_MARK
from core.shard.plan import make_plan
from core.shard.splitter import split_model


def _mtimes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")}


def test_second_split_is_cached(tiny_model, tmp_path) -> None:
    model_dir = tiny_model("llama")
    plan = make_plan(load_config(model_dir), [3, 1])
    first = split_model(model_dir, plan, tmp_path)
    before = _mtimes(first.root)
    calls: list[tuple[int, int]] = []
    second = split_model(model_dir, plan, tmp_path, progress=lambda d, t: calls.append((d, t)))
    assert second.cached and not first.cached
    assert second.root == first.root and second.rank_dirs == first.rank_dirs
    assert second.bytes_per_rank == first.bytes_per_rank
    assert calls == []
    assert _mtimes(first.root) == before


def test_progress_counts_every_block(tiny_model, tmp_path) -> None:
    model_dir = tiny_model("llama")
    plan = make_plan(load_config(model_dir), [1, 1])
    calls: list[tuple[int, int]] = []
    written: list[int] = []
    result = split_model(
        model_dir,
        plan,
        tmp_path,
        progress=lambda d, t: calls.append((d, t)),
        on_written=written.append,
    )
    total = 2 + 2 * (2 * 3)  # embed + head, then attn + mlp per layer per rank
    assert calls == [(i, total) for i in range(1, total + 1)]
    assert sum(written) == sum(result.bytes_per_rank)


def test_only_missing_or_damaged_ranks_are_redone(tiny_model, tmp_path) -> None:
    model_dir = tiny_model("llama")
    plan = make_plan(load_config(model_dir), [1, 1, 1])
    first = split_model(model_dir, plan, tmp_path)
    r0, r1, r2 = first.rank_dirs
    keep = _mtimes(r0)
    for p in r1.iterdir():
        p.unlink()
    r1.rmdir()
    with open(r2 / "L001.mlp.safetensors", "r+b") as f:
        f.truncate(100)
    again = split_model(model_dir, plan, tmp_path)
    assert not again.cached
    assert _mtimes(r0) == keep
    assert again.bytes_per_rank == first.bytes_per_rank
    assert (r2 / "L001.mlp.safetensors").stat().st_size > 100
    assert split_model(model_dir, plan, tmp_path).cached


def test_interrupted_split_leaves_nothing_that_looks_finished(tiny_model, tmp_path) -> None:
    model_dir = tiny_model("llama")
    plan = make_plan(load_config(model_dir), [1, 1])

    def boom(done: int, total: int) -> None:
        if done == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        split_model(model_dir, plan, tmp_path, progress=boom)
    (root,) = tmp_path.iterdir()
    assert list(root.iterdir()) == []  # neither rank dirs nor temp dirs
    assert not split_model(model_dir, plan, tmp_path).cached


def test_stale_temp_dirs_of_dead_processes_are_removed(tiny_model, tmp_path) -> None:
    model_dir = tiny_model("llama")
    plan = make_plan(load_config(model_dir), [1, 1])
    root = split_model(model_dir, plan, tmp_path).root
    (root / "rank1").rename(root / f"rank1{TMP_MARK}999999999")  # pid that cannot exist
    (root / f"rank0{TMP_MARK}{os.getppid()}").mkdir()  # a live process: left alone
    split_model(model_dir, plan, tmp_path)
    names = sorted(p.name for p in root.iterdir())
    assert names == ["rank0", f"rank0{TMP_MARK}{os.getppid()}", "rank1"]


def test_other_dtype_or_plan_gets_its_own_folder(tiny_model, tmp_path) -> None:
    import torch

    model_dir = tiny_model("llama")
    cfg = load_config(model_dir)
    a = split_model(model_dir, make_plan(cfg, [1, 1]), tmp_path)
    b = split_model(model_dir, make_plan(cfg, [1, 1]), tmp_path, dtype=torch.bfloat16)
    c = split_model(model_dir, make_plan(cfg, [3, 1]), tmp_path)
    assert len({a.root, b.root, c.root}) == 3
    assert not (b.cached or c.cached)


def test_fingerprint_tracks_config_and_weights(tiny_model, tmp_path) -> None:
    from core.model.weights import WeightReader

    a, b = tiny_model("llama"), tiny_model("qwen2")
    fa = model_fingerprint(a, WeightReader(a).files())
    assert fa == model_fingerprint(a, WeightReader(a).files())
    assert fa != model_fingerprint(b, WeightReader(b).files())
    assert len(fa) == 16


def test_rank_finished_meanwhile_by_another_process_is_kept(tiny_model, tmp_path) -> None:
    from core.shard.manifest import load_manifest
    from core.shard.splitter import _move_into_place

    model_dir = tiny_model("llama")
    plan = make_plan(load_config(model_dir), [1, 1])
    final = split_model(model_dir, plan, tmp_path).rank_dirs[1]
    before = _mtimes(final)
    ours = final.with_name(f"rank1{TMP_MARK}{os.getpid()}")
    ours.mkdir()
    _move_into_place(ours, final, load_manifest(final))
    assert _mtimes(final) == before
