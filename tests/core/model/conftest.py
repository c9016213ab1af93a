"""Fixtures for the model tests: an isolated cache dir, tiny model dirs, GGUFs made from them.

`write_gguf` writes a tiny HF model as llama.cpp would (q/k rows permuted for llama,
GGUF tensor names, tokenizer and chat template in the metadata), so the importer is
tested against a file whose true weights we know exactly.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from core.model.gguf_import import permute_qk
from tests.fixtures.kquants import quantize_q4_k
from tests.fixtures.tiny_models import BASE, make_tiny_model
from tests.fixtures.tiny_tokenizer import CHATML_TEMPLATE

_GLOBAL = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}
_BLOCK = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.q_proj.bias": "attn_q.bias",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.v_proj.bias": "attn_v.bias",
    "self_attn.o_proj.weight": "attn_output.weight",
    "self_attn.q_norm.weight": "attn_q_norm.weight",
    "self_attn.k_norm.weight": "attn_k_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch) -> Path:
    """Every test gets its own empty TPI_CHAT_CACHE, and no hub access."""
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("TPI_CHAT_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


@pytest.fixture(scope="session")
def _tiny_models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny_models")
    return {arch: make_tiny_model(root / arch, arch) for arch in ("llama", "qwen2", "qwen3")}


@pytest.fixture
def tiny_model(_tiny_models, tmp_path) -> Path:
    """A private copy of the tiny llama model dir (tests may damage it)."""
    return Path(shutil.copytree(_tiny_models["llama"], tmp_path / "llama"))


@pytest.fixture
def tiny_models(_tiny_models) -> dict[str, Path]:
    """The shared tiny llama/qwen2/qwen3 dirs: read only."""
    return _tiny_models


def hf_to_gguf_name(hf: str) -> str:
    if hf in _GLOBAL:
        return _GLOBAL[hf]
    _, _, layer, rest = hf.split(".", 3)
    return f"blk.{layer}.{_BLOCK[rest]}"


def write_gguf(
    model_dir: Path,
    out: Path,
    *,
    arch: str | None = None,
    dtype: str = "f32",
    rope_freqs: np.ndarray | None = None,
    name: str = "tiny",
    shape: dict | None = None,
) -> Path:
    """Write the HF model in `model_dir` as a llama.cpp-style GGUF at `out`; `shape`
    overrides metadata values written by the GGUFWriter's add_<key> (e.g. head_count)."""
    import gguf

    cfg = json.loads((model_dir / "config.json").read_text())
    arch = arch or cfg["model_type"]
    heads, kv_heads = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // heads
    w = gguf.GGUFWriter(str(out), arch)
    over = shape or {}
    w.add_name(name)
    w.add_block_count(over.get("block_count", cfg["num_hidden_layers"]))
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(over.get("embedding_length", cfg["hidden_size"]))
    w.add_feed_forward_length(over.get("feed_forward_length", cfg["intermediate_size"]))
    w.add_head_count(over.get("head_count", heads))
    w.add_head_count_kv(over.get("head_count_kv", kv_heads))
    w.add_key_length(over.get("key_length", head_dim))
    w.add_value_length(head_dim)
    w.add_rope_dimension_count(head_dim)
    theta = cfg.get("rope_theta") or (cfg.get("rope_parameters") or {}).get("rope_theta", 1e4)
    w.add_rope_freq_base(over.get("rope_freq_base", float(theta)))
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    _add_tokenizer(w, model_dir)
    for hf, t in load_file(str(model_dir / "model.safetensors")).items():
        t = t.astype(np.float32)
        if arch == "llama" and ".q_proj." in hf:
            t = permute_qk(t, heads)
        elif arch == "llama" and ".k_proj." in hf:
            t = permute_qk(t, kv_heads)
        if dtype == "f16" and t.ndim == 2:
            w.add_tensor(hf_to_gguf_name(hf), t.astype(np.float16))
        elif dtype != "f32" and t.ndim == 2:
            qtype = _quant_type(dtype, hf, t.shape[1])
            q = quantize_q4_k(t) if qtype == "Q4_K" else gguf.quants.quantize(
                t, gguf.GGMLQuantizationType[qtype])
            w.add_tensor(hf_to_gguf_name(hf), q, raw_dtype=gguf.GGMLQuantizationType[qtype])
        else:
            w.add_tensor(hf_to_gguf_name(hf), t)
    if rope_freqs is not None:
        w.add_tensor("rope_freqs.weight", rope_freqs.astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out


def _quant_type(dtype: str, hf: str, cols: int) -> str:
    """The GGML type of a matrix: `dtype` itself, or for "mixed" what a Q4_K_M file does
    (Q4_K, with a higher-bit type for v and down projections; Q5_0 stands in for Q6_K,
    which the gguf package cannot write), falling back to Q4_1 where 256 does not divide."""
    if dtype != "mixed":
        return dtype.upper()
    if ".v_proj." in hf or ".down_proj." in hf:
        return "Q5_0"
    return "Q4_K" if cols % 256 == 0 else "Q4_1"


def _add_tokenizer(w, model_dir: Path) -> None:
    tok = json.loads((model_dir / "tokenizer.json").read_text())
    vocab = tok["model"]["vocab"]
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    special = {a["content"] for a in tok.get("added_tokens", [])}
    merges = [m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([3 if t in special else 1 for t in tokens])
    w.add_token_merges(merges)
    w.add_bos_token_id(BASE["bos_token_id"])
    w.add_eos_token_id(BASE["eos_token_id"])
    w.add_pad_token_id(0)
    w.add_add_bos_token(False)
    w.add_chat_template(CHATML_TEMPLATE)
