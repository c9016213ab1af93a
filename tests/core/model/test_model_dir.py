"""resolve_model: what a user may pick, and the one sentence they get when it is wrong."""

from __future__ import annotations

import gc
import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from core.errors import ModelError
from core.model import default_model
from core.model.model_dir import model_hash, resolve_model
from core.model.weights import WeightReader


def _msg(excinfo) -> str:
    msg = str(excinfo.value)
    assert msg and "\n" not in msg
    return msg


def test_valid_dir_resolves_to_itself(tiny_model):
    assert resolve_model(tiny_model) == tiny_model
    assert resolve_model(str(tiny_model)) == tiny_model


def test_picking_config_json_means_its_folder(tiny_model):
    assert resolve_model(tiny_model / "config.json") == tiny_model


def test_missing_path(tmp_path):
    with pytest.raises(ModelError) as e:
        resolve_model(tmp_path / "nope")
    assert "does not exist" in _msg(e)


def test_missing_config(tiny_model):
    (tiny_model / "config.json").unlink()
    with pytest.raises(ModelError) as e:
        resolve_model(tiny_model)
    assert "config.json" in _msg(e)


def test_unsupported_architecture(tiny_model):
    cfg = json.loads((tiny_model / "config.json").read_text())
    cfg.update(model_type="gpt2", architectures=["GPT2LMHeadModel"])
    (tiny_model / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelError) as e:
        resolve_model(tiny_model)
    assert "GPT2LMHeadModel" in _msg(e)


def test_no_weights(tiny_model):
    for f in tiny_model.glob("*.safetensors"):
        f.unlink()
    with pytest.raises(ModelError) as e:
        resolve_model(tiny_model)
    assert "safetensors" in _msg(e)


def test_no_tokenizer(tiny_model):
    (tiny_model / "tokenizer.json").unlink()
    with pytest.raises(ModelError) as e:
        resolve_model(tiny_model)
    assert "tokenizer" in _msg(e)


def test_not_a_gguf(tmp_path):
    f = tmp_path / "notes.gguf"
    f.write_text("hello, this is not a model")
    with pytest.raises(ModelError) as e:
        resolve_model(f)
    assert "not a GGUF" in _msg(e)


def test_default_model_is_found():
    path = default_model.default_gguf_path()
    assert path.name == default_model.GGUF_NAME and path.is_file()


def test_default_model_not_installed(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelError) as e:
        resolve_model(None)
    assert "make setup" in _msg(e)


def test_hash_is_stable_and_location_independent(tiny_model, tmp_path):
    h = model_hash(tiny_model)
    assert len(h) == 16 and int(h, 16) >= 0
    assert model_hash(tiny_model) == h
    moved = shutil.copytree(tiny_model, tmp_path / "elsewhere")
    assert model_hash(moved) == h


def test_hash_changes_with_a_weight(tiny_model):
    before = model_hash(tiny_model)
    path = tiny_model / "model.safetensors"
    # Same names, shapes and offsets (identical header): only the sampled data can tell.
    tensors = {n: t * 1.001 for n, t in load_file(str(path)).items()}
    save_file(tensors, str(path), metadata={"format": "pt"})
    assert model_hash(tiny_model) != before


def test_hash_changes_with_config(tiny_model):
    before = model_hash(tiny_model)
    cfg = json.loads((tiny_model / "config.json").read_text())
    cfg["rms_norm_eps"] = 1e-6
    (tiny_model / "config.json").write_text(json.dumps(cfg))
    assert model_hash(tiny_model) != before


def test_hash_of_sharded_dir(tiny_model):
    """Shards named by an index are all hashed; dropping one is an error, not a silent hash."""
    tensors = load_file(str(tiny_model / "model.safetensors"))
    (tiny_model / "model.safetensors").unlink()
    names = sorted(tensors)
    halves = {"a.safetensors": names[::2], "b.safetensors": names[1::2]}
    weight_map = {}
    for fname, part in halves.items():
        save_file({n: tensors[n] for n in part}, str(tiny_model / fname))
        weight_map.update({n: fname for n in part})
    index = {"metadata": {}, "weight_map": weight_map}
    (tiny_model / "model.safetensors.index.json").write_text(json.dumps(index))
    h = model_hash(tiny_model)
    assert resolve_model(tiny_model) == tiny_model
    t = load_file(str(tiny_model / "b.safetensors"))
    first = next(iter(t))
    t[first] = torch.zeros_like(t[first])
    save_file(t, str(tiny_model / "b.safetensors"))
    assert model_hash(tiny_model) != h
    (tiny_model / "b.safetensors").unlink()
    with pytest.raises(ModelError):
        model_hash(tiny_model)


def test_weight_reader_close_unmaps_its_files(tiny_model):
    """The splitter and model checks open every weight file; closing must let them go
    (a long-running app would otherwise keep each model it ever loaded mapped)."""
    files = [str(f) for f in tiny_model.glob("*.safetensors")]

    def mapped() -> bool:
        maps = Path("/proc/self/maps").read_text()
        return any(f in maps for f in files)

    gc.collect()
    assert files and not mapped()
    with WeightReader(tiny_model) as reader:
        reader.get(reader.names()[0])
        assert mapped()
    gc.collect()
    assert not mapped()
