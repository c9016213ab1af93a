"""run_split: the progress line and summary the `tpi-chat split` command prints."""

from __future__ import annotations

import io

import torch

from core.shard.manifest import load_manifest
from core.shard.split_cli import run_split


def test_run_split_reports_progress_and_summary(tiny_model, tmp_path) -> None:
    model_dir = tiny_model("llama")
    out = io.StringIO()
    result = run_split(model_dir, [3, 1], tmp_path, torch.float16, stream=out)
    text = out.getvalue()
    assert not result.cached
    assert text.count("\r") == 2 + 2 * 2 * 3  # one redraw per block
    last_bar, summary = text.rsplit("\r", 1)[1].splitlines()
    assert "100%" in last_bar and "14/14 blocks" in last_bar and "MB" in last_bar
    assert summary.startswith("split in ") and "2 ranks, float16" in summary
    assert str(result.root) in summary
    assert load_manifest(result.rank_dirs[1]).dtype == "float16"

    again = io.StringIO()
    assert run_split(model_dir, [3, 1], tmp_path, torch.float16, stream=again).cached
    assert "\r" not in again.getvalue()
    assert again.getvalue().startswith("already split (cached) into 2 ranks")


def test_run_split_defaults_to_the_cache_dir(tiny_model, tmp_path, monkeypatch) -> None:
    from core.model.cache import ENV_VAR
    from core.model.model_dir import model_hash

    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    model_dir = tiny_model("qwen3")
    result = run_split(model_dir, [1, 1], stream=io.StringIO())
    assert result.root.parent == tmp_path / "shards"
    assert result.root.name.startswith(model_hash(model_dir) + "-")
