"""GGUF import: exact weights back from llama.cpp-style files, caching, errors, the default model.

The fast tests write tiny HF models as GGUFs the way llama.cpp does (q/k rows permuted for
llama) and check the import gives back the very same tensors. The slow test converts the
embedded SmolLM2 and compares it with transformers' own GGUF loader.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from core.errors import ModelError
from core.model import gguf_import
from core.model.config import load_config
from core.model.gguf_import import (
    gguf_cache_key,
    import_gguf,
    llama3_rope_factors,
    permute_qk,
    unpermute_qk,
)
from core.model.gguf_weights import open_weights
from core.model.model_dir import resolve_model
from core.model.reference import transformers_model
from core.model.tokenizer import ChatTokenizer
from tests.core.model.conftest import write_gguf
from tests.fixtures.tiny_tokenizer import CHATML_TEMPLATE, EOS_ID


def _same_tensors(hf_dir, out_dir, atol=0.0):
    ref = load_file(str(hf_dir / "model.safetensors"))
    got = open_weights(out_dir)
    assert sorted(got.names()) == sorted(ref)
    for name, t in ref.items():
        g = got.get(name).numpy()
        assert g.dtype == np.float32 and g.shape == t.shape, name
        np.testing.assert_allclose(g, t, rtol=0, atol=atol, err_msg=name)


def test_permutation_round_trip():
    w = np.arange(8 * 6 * 3, dtype=np.float32).reshape(48, 3)
    p = permute_qk(w, 6)
    assert not np.array_equal(p, w)
    assert np.array_equal(unpermute_qk(p, 6), w)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3"])
def test_import_gives_back_the_hf_weights(tiny_models, tmp_path, arch):
    src = tiny_models[arch]
    out = import_gguf(write_gguf(src, tmp_path / f"{arch}.gguf"))
    _same_tensors(src, out)
    ours, theirs = load_config(out), load_config(src)
    for field in (
        "arch",
        "hidden_size",
        "intermediate_size",
        "num_layers",
        "num_heads",
        "num_kv_heads",
        "head_dim",
        "qkv_bias",
        "qk_norm",
        "rope_theta",
        "rms_norm_eps",
        "tie_word_embeddings",
        "vocab_size",
        "eos_token_ids",
    ):
        assert getattr(ours, field) == getattr(theirs, field), field


def test_imported_model_runs_in_transformers_with_same_logits(tiny_models, tmp_path):
    from transformers import AutoModelForCausalLM

    src = tiny_models["llama"]
    out = import_gguf(write_gguf(src, tmp_path / "m.gguf"))
    ids = torch.tensor([[1, 5, 77, 300, 12, 9]])
    with torch.no_grad():
        ref = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32).eval()(ids).logits
        got = transformers_model(out)(ids).logits
    assert torch.equal(ref, got)


def test_import_writes_no_weights(tiny_models, tmp_path):
    """The weights stay in the GGUF: the model dir is config, tokenizer and a pointer."""
    gguf_file = write_gguf(tiny_models["llama"], tmp_path / "m.gguf")
    out = import_gguf(gguf_file)
    assert not list(out.glob("*.safetensors"))
    ptr = json.loads((out / "gguf.json").read_text())
    assert ptr["file"] == str(gguf_file.resolve()) and ptr["size"] == gguf_file.stat().st_size


def test_a_moved_gguf_is_found_again(tiny_models, tmp_path):
    gguf_file = write_gguf(tiny_models["llama"], tmp_path / "m.gguf")
    out = import_gguf(gguf_file)
    (tmp_path / "elsewhere").mkdir()
    moved = gguf_file.rename(tmp_path / "elsewhere" / "m.gguf")
    with pytest.raises(ModelError, match="is gone; open it again"):
        open_weights(out)
    assert import_gguf(moved) == out  # same contents, same dir, pointer updated
    _same_tensors(tiny_models["llama"], out)


@pytest.mark.parametrize("dtype,atol", [("f16", 1e-3), ("q8_0", 2e-2)])
def test_quantized_tensors_are_dequantized(tiny_models, tmp_path, dtype, atol):
    src = tiny_models["llama"]
    out = import_gguf(write_gguf(src, tmp_path / f"{dtype}.gguf", dtype=dtype))
    _same_tensors(src, out, atol=atol)


def test_tokenizer_and_chat_template_come_along(tiny_models, tmp_path):
    src = tiny_models["qwen2"]
    out = import_gguf(write_gguf(src, tmp_path / "m.gguf"))
    assert resolve_model(out) == out
    ours, theirs = ChatTokenizer(out), ChatTokenizer(src)
    text = "The capital of France is Paris. Grüße 🙂"
    assert ours.encode(text) == theirs.encode(text)
    assert ours.hf.chat_template == CHATML_TEMPLATE
    msgs = [{"role": "user", "content": "Hi!"}]
    assert ours.apply_chat(msgs) == theirs.apply_chat(msgs)
    assert EOS_ID in ours.eos_ids


def test_second_import_is_reused_and_progress_reported(tiny_models, tmp_path, isolated_cache):
    gguf_file = write_gguf(tiny_models["llama"], tmp_path / "m.gguf")
    calls: list[tuple[int, int]] = []
    out = import_gguf(gguf_file, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(0, 1), (1, 1)]
    assert out.parent == isolated_cache / "models" and out.name.startswith("m-")
    stamp = (out / "config.json").stat().st_mtime_ns
    calls.clear()
    assert import_gguf(gguf_file, progress=lambda d, t: calls.append((d, t))) == out
    assert calls == [] and (out / "config.json").stat().st_mtime_ns == stamp
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no temp dirs left


def test_llama3_rope_table_becomes_rope_scaling(tiny_models, tmp_path):
    """llama.cpp keeps llama 3 RoPE scaling only as a `rope_freqs` table; we rebuild it."""
    src = tiny_models["llama"]
    theta = load_config(src).rope_theta
    table = llama3_rope_factors(8, theta, factor=8.0, low=1.0, high=4.0, orig_ctx=8192)
    assert table.max() > 1.0  # the table really scales something
    out = import_gguf(write_gguf(src, tmp_path / "m.gguf", rope_freqs=table))
    assert load_config(out).rope_scaling == {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    }
    _same_tensors(src, out)  # and rope_freqs itself is not a weight
    rope = transformers_model(out).model.rotary_emb
    ref = 1.0 / theta ** (torch.arange(0, 8, 2, dtype=torch.float64) / 8) / torch.tensor(table)
    torch.testing.assert_close(rope.inv_freq.double(), ref, rtol=1e-5, atol=0)


def test_identity_rope_table_is_plain_rope(tiny_models, tmp_path):
    out = import_gguf(write_gguf(tiny_models["llama"], tmp_path / "m.gguf", rope_freqs=np.ones(4)))
    assert load_config(out).rope_scaling is None


def test_unreproducible_rope_table_refused(tiny_models, tmp_path):
    table = np.array([1.0, 3.0, 1.0, 5.0])
    with pytest.raises(ModelError) as e:
        import_gguf(write_gguf(tiny_models["llama"], tmp_path / "m.gguf", rope_freqs=table))
    assert "RoPE" in str(e.value)


def test_llama3_fit_recovers_meta_values():
    table = llama3_rope_factors(64, 500000.0, 32.0, 1.0, 4.0, 8192)
    assert gguf_import._fit_llama3(table, 64, 500000.0) == {
        "rope_type": "llama3",
        "factor": 32.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    }
    assert gguf_import._fit_llama3(np.ones(32), 64, 500000.0) is None


def test_not_a_gguf(tmp_path):
    f = tmp_path / "model.gguf"
    f.write_bytes(b"PK\x03\x04 definitely a zip")
    with pytest.raises(ModelError) as e:
        import_gguf(f)
    assert str(e.value) == "model.gguf is not a GGUF file"


def test_truncated_gguf(tiny_models, tmp_path, isolated_cache):
    f = write_gguf(tiny_models["llama"], tmp_path / "m.gguf")
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError) as e:
        import_gguf(f)
    assert "truncated" in str(e.value) and "\n" not in str(e.value)
    assert list((isolated_cache / "models").iterdir()) == []  # nothing half-written kept


@pytest.mark.parametrize("shape", [
    {"head_count": 0, "key_length": 0}, {"feed_forward_length": 0}, {"embedding_length": 0},
    {"block_count": 0}, {"rope_freq_base": 0.0}, {"head_count": 4, "head_count_kv": 3},
])
def test_a_zero_model_shape_is_a_clear_error(tiny_models, tmp_path, shape):
    f = write_gguf(tiny_models["llama"], tmp_path / "m.gguf", shape=shape)
    with pytest.raises(ModelError) as e:
        import_gguf(f)
    assert "m.gguf is damaged" in str(e.value) and "\n" not in str(e.value)


def test_the_cache_key_changes_with_the_file(tiny_models, tmp_path):
    """An edit in place of a weight far from both ends (size kept) gives a new key, so a
    stale import (and the shards split from it) is not reused; a move keeps the key."""
    f = write_gguf(tiny_models["llama"], tmp_path / "m.gguf")
    first = import_gguf(f)
    key = gguf_cache_key(f)
    moved = f.rename(tmp_path / "n.gguf")
    assert gguf_cache_key(moved) == key
    data = bytearray(moved.read_bytes())
    data[len(data) // 2 + 77] ^= 0xFF
    time.sleep(0.01)
    moved.write_bytes(bytes(data))
    assert gguf_cache_key(moved) != key
    assert import_gguf(moved).name.split("-")[-1] != first.name.split("-")[-1]


def test_unsupported_gguf_architecture(tiny_models, tmp_path):
    f = write_gguf(tiny_models["llama"], tmp_path / "m.gguf", arch="gpt2")
    with pytest.raises(ModelError) as e:
        import_gguf(f)
    assert "'gpt2'" in str(e.value) and "qwen2" in str(e.value)


@pytest.fixture(scope="session")
def default_import(_session_env):
    """The default model converted into the session's cache: the engine tests' CLI runs
    import it there too, so a full run converts it once (a fresh import is checked by
    test_default_model.py's fresh-cache run and by the tiny GGUF tests here)."""
    from core.model.default_model import default_gguf_path

    return default_gguf_path(), import_gguf(default_gguf_path())


@pytest.mark.slow
def test_default_model_matches_transformers_gguf_loader(default_import, monkeypatch):
    """Same logits as transformers' own GGUF dequantization + un-permutation, and Paris."""
    import functools

    import gguf
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    gguf_file, out = default_import
    # Reference: transformers' GGUF path (loading through from_pretrained(gguf_file=...)
    # needs `accelerate`, which we do not install; this is the same code underneath).
    cfg = AutoConfig.from_pretrained(str(gguf_file.parent), gguf_file=gguf_file.name)
    ref = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    # transformers rebuilds gguf's name table (arch, layers) once per submodule (~400
    # times, ~40% of this load's CPU); it is a pure function of its arguments and only
    # read, so one build per argument pair gives the same mapping.
    monkeypatch.setattr(gguf, "get_tensor_name_map", functools.cache(gguf.get_tensor_name_map))
    tensors = load_gguf_checkpoint(str(gguf_file), return_tensors=True, model_to_load=ref)
    missing = ref.load_state_dict(tensors["tensors"], strict=False).missing_keys
    assert missing == ["lm_head.weight"]  # tied to the embedding
    ref.tie_weights()
    ref.eval()
    ours = transformers_model(out)

    tok = ChatTokenizer(out)
    ids = tok.apply_chat([{"role": "user", "content": "What is the capital of France?"}])
    x = torch.tensor([ids])
    with torch.no_grad():
        diff = (ref(x).logits - ours(x).logits).abs().max().item()
    assert diff < 1e-4
    gen = ours.generate(x, max_new_tokens=20, do_sample=False, eos_token_id=sorted(tok.eos_ids))
    answer = tok.decode(gen[0, len(ids) :].tolist())
    assert "Paris" in answer
    cfg = load_config(out)
    assert (cfg.arch, cfg.num_layers, cfg.hidden_size, cfg.tie_word_embeddings) == (
        "llama",
        30,
        576,
        True,
    )


def test_resolve_model_imports_a_gguf_file_or_its_folder(tiny_models, tmp_path, isolated_cache):
    folder = tmp_path / "downloads"
    folder.mkdir()
    f = write_gguf(tiny_models["llama"], folder / "tiny.gguf")
    out = resolve_model(f)
    assert out.parent == isolated_cache / "models" and (out / "config.json").is_file()
    assert resolve_model(folder) == out
