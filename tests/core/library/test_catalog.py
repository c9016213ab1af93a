"""The shipped catalog loads, spans tiny to 70B, and a bad entry is refused with a reason."""

from __future__ import annotations

import json

import pytest

from core.errors import ModelError
from core.library.catalog import load_catalog, safe_relative
from core.model.default_model import GGUF_NAME


def test_the_shipped_catalog_spans_home_sized_models():
    entries = load_catalog()
    assert len(entries) >= 6
    params = [e.parameters for e in entries]
    assert min(params) < 200e6 and max(params) > 65e9
    for e in entries:
        assert e.size > 0 and e.license and e.chat_template and e.quantization
        assert e.repo.count("/") == 1
    # the default model's file is a catalog entry's file (what the fake hub serves)
    assert any(e.files[0].name == GGUF_NAME for e in entries)
    assert any(not e.is_gguf for e in entries)  # and a Hugging Face folder


@pytest.mark.parametrize("name", ["../x.gguf", "/etc/passwd", "a/../../b", "a\\b.gguf",
                                  ".hidden", "", "a//b"])
def test_unsafe_file_names_are_refused(name, tmp_path):
    assert not safe_relative(name)
    bad = {"models": [{"id": "x", "name": "X", "repo": "o/r", "files": [
        {"name": name, "size": 1}], "parameters": 1, "quantization": "Q8_0",
        "license": "mit", "chat_template": "ChatML", "layers": 1, "hidden_size": 1,
        "vocab_size": 1}]}
    path = tmp_path / "models.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(ModelError, match="safe relative path"):
        load_catalog(path)


def test_a_broken_catalog_says_what_is_wrong(tmp_path):
    path = tmp_path / "models.json"
    path.write_text("{not json")
    with pytest.raises(ModelError, match="not valid JSON"):
        load_catalog(path)
    path.write_text(json.dumps({"models": [{"id": "x", "repo": "no-slash"}]}))
    with pytest.raises(ModelError, match="model #1"):
        load_catalog(path)
