"""config.json parsing: the supported architectures, RoPE variants and one-sentence refusals."""

from __future__ import annotations

import json

import pytest

from core.errors import ModelError
from core.model.config import ModelConfig, load_config

LLAMA = {
    "model_type": "llama",
    "architectures": ["LlamaForCausalLM"],
    "vocab_size": 1000,
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 8,
    "num_key_value_heads": 2,
    "rms_norm_eps": 1e-5,
    "rope_theta": 500000.0,
    "max_position_embeddings": 4096,
    "bos_token_id": 1,
    "eos_token_id": [2, 3],
}


def _one_sentence(err: ModelError) -> str:
    msg = str(err)
    assert msg and "\n" not in msg and "Traceback" not in msg
    return msg


def test_llama_fields():
    cfg = ModelConfig.from_hf(LLAMA)
    assert cfg.arch == "llama"
    assert (cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.group_size) == (8, 2, 16, 4)
    assert cfg.rope_theta == 500000.0 and cfg.rope_scaling is None
    assert not cfg.qkv_bias and not cfg.qk_norm and not cfg.tie_word_embeddings
    assert cfg.bos_token_id == 1 and cfg.eos_token_ids == (2, 3)


def test_qwen2_has_qkv_bias_by_default():
    cfg = ModelConfig.from_hf({**LLAMA, "model_type": "qwen2", "eos_token_id": 7})
    assert cfg.qkv_bias and not cfg.qk_norm and cfg.eos_token_ids == (7,)


def test_qwen3_has_qk_norm_and_explicit_head_dim():
    cfg = ModelConfig.from_hf({**LLAMA, "model_type": "qwen3", "head_dim": 32})
    assert cfg.qk_norm and not cfg.qkv_bias and cfg.head_dim == 32


def test_transformers5_rope_parameters():
    hf = {k: v for k, v in LLAMA.items() if k != "rope_theta"}
    hf["rope_parameters"] = {"rope_theta": 123456.0, "rope_type": "default"}
    cfg = ModelConfig.from_hf(hf)
    assert cfg.rope_theta == 123456.0 and cfg.rope_scaling is None


LLAMA3_SCALING = {
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
}


def test_llama3_rope_scaling_classic_fields():
    cfg = ModelConfig.from_hf({**LLAMA, "rope_scaling": {"type": "llama3", **LLAMA3_SCALING}})
    assert cfg.rope_scaling == {"rope_type": "llama3", **LLAMA3_SCALING}


def test_llama3_rope_scaling_in_rope_parameters():
    hf = {k: v for k, v in LLAMA.items() if k != "rope_theta"}
    hf["rope_parameters"] = {"rope_theta": 5e5, "rope_type": "llama3", **LLAMA3_SCALING}
    cfg = ModelConfig.from_hf(hf)
    assert cfg.rope_theta == 5e5
    assert cfg.rope_scaling == {"rope_type": "llama3", **LLAMA3_SCALING}


def test_unsupported_rope_scaling_refused():
    with pytest.raises(ModelError) as e:
        ModelConfig.from_hf({**LLAMA, "rope_scaling": {"rope_type": "yarn", "factor": 4.0}})
    assert "yarn" in _one_sentence(e.value)


def test_unsupported_architecture_named():
    with pytest.raises(ModelError) as e:
        ModelConfig.from_hf({**LLAMA, "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]})
    msg = _one_sentence(e.value)
    assert "GPT2LMHeadModel" in msg and "llama" in msg


def test_missing_field_named():
    hf = {k: v for k, v in LLAMA.items() if k != "hidden_size"}
    with pytest.raises(ModelError) as e:
        ModelConfig.from_hf(hf)
    assert "hidden_size" in _one_sentence(e.value)


def test_missing_config_json(tmp_path):
    with pytest.raises(ModelError) as e:
        load_config(tmp_path)
    assert "config.json" in _one_sentence(e.value)


def test_malformed_config_json(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ModelError) as e:
        load_config(tmp_path)
    assert "JSON" in _one_sentence(e.value)


def test_round_trip_dict():
    cfg = ModelConfig.from_hf({**LLAMA, "rope_scaling": {"rope_type": "llama3", **LLAMA3_SCALING}})
    assert ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3"])
def test_config_saved_by_transformers(tiny_models, arch):
    """What transformers 5 writes (rope_parameters etc.) parses into the fixture's shapes."""
    cfg = load_config(tiny_models[arch])
    assert cfg.arch == arch
    assert (cfg.hidden_size, cfg.num_layers, cfg.num_heads, cfg.num_kv_heads) == (64, 3, 8, 4)
    assert cfg.head_dim == 8 and cfg.vocab_size == 512
    assert cfg.qkv_bias == (arch == "qwen2") and cfg.qk_norm == (arch == "qwen3")
    assert cfg.eos_token_ids == (2,) and cfg.bos_token_id == 1
