"""Import a GGUF file (llama, mistral, qwen2, qwen3) as a model dir, once.

The engine reads model dirs (config.json + tokenizer + weights), so a GGUF the user picks,
including the embedded default model, gets one on first use in
`cache_dir()/models/<name>-<hash>`: a Hugging Face config.json read from the metadata, the
tokenizer converted by transformers (chat template kept), and `gguf.json` naming the file.
The weights stay in the GGUF: the splitter reads them from there (gguf_weights.py), in
their own quantization by default. The dir is built beside its final place and renamed
into it when complete, so a half-written dir is never used; a second import is instant.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import ModelError
from core.model.cache import cache_dir
from core.model.config import ModelConfig
from core.progress import StageProgress

SUPPORTED_GGUF_ARCHS = ("llama", "qwen2", "qwen3")  # Mistral GGUFs say "llama"
POINTER = "gguf.json"  # in the model dir: which GGUF file holds the weights
_SAMPLE = 1024 * 1024  # bytes hashed at the end of the file for the cache key
_SAMPLES, _SAMPLE_BLOCK = 32, 64 * 1024  # and blocks spread over the tensor data
_STALE_TMP_SECONDS = 24 * 3600
# Part of the cache key: bump it when the conversion changes, so old dirs are not reused.
# 2: no fp32 copy of the weights, gguf.json points at the file instead.
CONVERTER_VERSION = 2

_GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_BLOCK_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_q.bias": "self_attn.q_proj.bias",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_v.bias": "self_attn.v_proj.bias",
    "attn_output.weight": "self_attn.o_proj.weight",
    "attn_q_norm.weight": "self_attn.q_norm.weight",
    "attn_k_norm.weight": "self_attn.k_norm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
_BLOCK_RE = re.compile(r"^blk\.(\d+)\.(.+)$")
_ROPE_FREQS = "rope_freqs.weight"  # llama 3.1+ RoPE scaling, turned back into config fields
_HF_CLASSES = {
    "llama": "LlamaForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
}


def import_gguf(gguf_path: str | Path, progress: StageProgress | None = None) -> Path:
    """Convert `gguf_path` into a cached HF model dir (or reuse it) and return the dir."""
    src = Path(gguf_path).expanduser()
    _check_magic(src)
    models = cache_dir() / "models"
    models.mkdir(parents=True, exist_ok=True)
    name = f"{_safe_stem(src)}-{gguf_cache_key(src)}"
    final = models / name
    if (final / "config.json").is_file() and (final / POINTER).is_file():
        _point_at(src, final)  # the same file may have moved since
        return final
    _remove_stale_tmp(models, name)
    if final.exists():  # left incomplete by hand: rebuild it
        shutil.rmtree(final, ignore_errors=True)
    tmp = models / f".tmp-{name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        _convert(src, tmp, progress)
        try:
            os.replace(tmp, final)
        except OSError:
            # Another process finished the same import first; its dir is as good as ours.
            if not (final / "config.json").is_file():
                raise
    except OSError as e:
        raise ModelError(
            f"cannot write the converted model to {models} ({e.strerror or _one_line(e)})"
        ) from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def gguf_cache_key(path: Path) -> str:
    """12 hex chars that a changed file cannot keep, without reading the weights.

    Hashed: the converter version, the size and mtime (an edit in place changes it), the
    whole header (metadata, tokenizer and the tensor table: every tensor's name, shape,
    type and offset) and _SAMPLES blocks spread over the tensor data plus its last MiB.
    A copy of the file gets a new mtime, hence a new import (cheap: no weights are
    copied) and a new split.
    """
    from core.model.gguf_tensors import data_start

    st = path.stat()
    size, start = st.st_size, data_start(path)
    h = hashlib.sha256(f"{CONVERTER_VERSION}:{size}:{st.st_mtime_ns}".encode())
    with open(path, "rb") as f:
        h.update(f.read(start))
        span = max(0, size - start - _SAMPLE_BLOCK)
        for i in range(_SAMPLES):
            f.seek(start + span * i // (_SAMPLES - 1))
            h.update(f.read(_SAMPLE_BLOCK))
        f.seek(max(start, size - _SAMPLE))
        h.update(f.read(_SAMPLE))
    return h.hexdigest()[:12]


# ---------------------------------------------------------------- validation


def _check_magic(src: Path) -> None:
    if not src.is_file():
        raise ModelError(f"the model file {src} does not exist")
    with open(src, "rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        raise ModelError(f"{src.name} is not a GGUF file")


def _open_reader(src: Path):
    from gguf import GGUFReader

    try:
        reader = GGUFReader(src, "r")
    except Exception as e:  # the reader raises ValueError, IndexError, struct errors...
        raise ModelError(
            f"{src.name} is not a valid GGUF file, it may be truncated ({_one_line(e)})"
        ) from None
    size = src.stat().st_size
    for t in reader.tensors:
        if t.data_offset + t.n_bytes > size:
            raise ModelError(f"{src.name} is truncated: tensor {t.name} runs past the end")
    return reader


# ---------------------------------------------------------------- conversion


def _convert(src: Path, out: Path, progress: StageProgress | None) -> None:
    reader = _open_reader(src)
    meta = _Meta(reader)
    tensors = {t.name: t for t in reader.tensors}
    hf_config = _hf_config(meta, tensors, src.name)
    ModelConfig.from_hf(hf_config)  # refuse what the engine cannot run before the long part
    for t in tensors.values():
        hf_tensor_name(t.name)  # refuse a tensor the engine has no place for, up front
    if progress:
        progress(0, 1)
    _write_tokenizer(src, meta, out)
    _point_at(src, out)
    (out / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n", encoding="utf-8")
    gen = {
        k: hf_config[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id") if k in hf_config
    }
    if gen:
        (out / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")
    if progress:
        progress(1, 1)


def _point_at(src: Path, out: Path) -> None:
    """Write gguf.json: which file holds the weights (atomically: readers may be open)."""
    ptr = {"file": str(src.resolve()), "size": src.stat().st_size, "key": gguf_cache_key(src),
           "converter": CONVERTER_VERSION}
    text = json.dumps(ptr, indent=1) + "\n"
    path = out / POINTER
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return
    tmp = out / f".{POINTER}.{os.getpid()}.tmp"
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


class _Meta:
    """Typed access to the key/value metadata of a GGUF."""

    def __init__(self, reader):
        self.fields = reader.fields
        self.arch = str(self.get("general.architecture", ""))

    def get(self, key: str, default: Any = None) -> Any:
        field = self.fields.get(key)
        if field is None:
            return default
        try:
            return field.contents()
        except Exception:  # a malformed field is as good as a missing one
            return default

    def arch_get(self, key: str, default: Any = None) -> Any:
        return self.get(f"{self.arch}.{key}", default)


def _positive(file_name: str, **values: float) -> None:
    """A model shape of zero (or less, or not a number) is a damaged file, said so."""
    for what, v in values.items():
        if not (isinstance(v, int | float) and math.isfinite(v) and v > 0):
            raise ModelError(f"{file_name} is damaged: its metadata gives the model "
                             f"{what.replace('_', ' ')} = {v}")


def _hf_config(meta: _Meta, tensors: dict, file_name: str) -> dict[str, Any]:
    arch = meta.arch
    if arch not in SUPPORTED_GGUF_ARCHS:
        raise ModelError(
            f"{file_name} holds a '{arch or 'unknown'}' model; TPI Chat imports GGUF files of "
            "the llama, mistral, qwen2 and qwen3 architectures"
        )
    if "token_embd.weight" not in tensors:
        raise ModelError(f"{file_name} has no token embedding tensor")
    try:
        hidden = int(meta.arch_get("embedding_length"))
        heads = int(meta.arch_get("attention.head_count"))
        kv_heads = int(meta.arch_get("attention.head_count_kv") or heads)
        layers = int(meta.arch_get("block_count"))
        ffn = int(meta.arch_get("feed_forward_length"))
        _positive(file_name, hidden=hidden, heads=heads, kv_heads=kv_heads, layers=layers,
                  ffn=ffn)
        head_dim = int(meta.arch_get("attention.key_length") or hidden // heads)
        rot_dim = int(meta.arch_get("rope.dimension_count") or head_dim)
        theta = _f32(meta.arch_get("rope.freq_base", 10000.0))
        ctx = int(meta.arch_get("context_length", 2048))
        _positive(file_name, head_dim=head_dim, rope_theta=theta, context_length=ctx)
    except (TypeError, ValueError, OverflowError):
        raise ModelError(f"{file_name} lacks the model shape in its metadata") from None
    if heads % kv_heads:
        raise ModelError(f"{file_name} is damaged: {heads} attention heads cannot share "
                         f"{kv_heads} key/value heads evenly")
    if rot_dim != head_dim:
        raise ModelError(f"{file_name} uses partial rotary embeddings, which are not supported")
    vocab = int(tensors["token_embd.weight"].shape[-1])  # GGUF shapes are (cols, rows)
    cfg: dict[str, Any] = {
        "architectures": [_HF_CLASSES[arch]],
        "model_type": arch,
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": ffn,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": ctx,
        "rms_norm_eps": _f32(meta.arch_get("attention.layer_norm_rms_epsilon", 1e-6)),
        "rope_theta": theta,
        "tie_word_embeddings": "output.weight" not in tensors,
        "attention_bias": "blk.0.attn_q.bias" in tensors,
        "torch_dtype": "float32",
    }
    scaling = _rope_scaling(meta, tensors, head_dim, theta, file_name)
    if scaling:
        cfg["rope_scaling"] = scaling
    for key, gguf_key in (("bos_token_id", "bos"), ("pad_token_id", "padding")):
        v = meta.get(f"tokenizer.ggml.{gguf_key}_token_id")
        if v is not None:
            cfg[key] = int(v)
    # End-of-turn ids stop a chat reply just like end-of-sequence (llama 3: <|eot_id|>).
    eos = [meta.get(f"tokenizer.ggml.{k}_token_id") for k in ("eos", "eot", "eom")]
    eos_ids = list(dict.fromkeys(int(v) for v in eos if v is not None))
    if eos_ids:
        cfg["eos_token_id"] = eos_ids[0] if len(eos_ids) == 1 else eos_ids
    return cfg


def _rope_scaling(
    meta: _Meta, tensors: dict, head_dim: int, theta: float, file_name: str
) -> dict[str, Any] | None:
    kind = str(meta.arch_get("rope.scaling.type", "none") or "none")
    factor = meta.arch_get("rope.scaling.factor")
    if kind == "linear" and factor:
        return {"rope_type": "linear", "factor": float(factor)}
    if kind not in ("none", "linear"):
        raise ModelError(f"{file_name} uses '{kind}' RoPE scaling, which is not supported")
    if _ROPE_FREQS not in tensors:
        return None
    from gguf.quants import dequantize

    t = tensors[_ROPE_FREQS]
    freqs = dequantize(np.asarray(t.data), t.tensor_type).astype(np.float64).reshape(-1)
    if np.allclose(freqs, 1.0):
        return None  # an identity table: plain RoPE
    scaling = _fit_llama3(freqs, head_dim, theta)
    if scaling is None:
        raise ModelError(f"{file_name} has a RoPE frequency table TPI Chat cannot reproduce")
    return scaling


def llama3_rope_factors(
    head_dim: int, theta: float, factor: float, low: float, high: float, orig_ctx: int
) -> np.ndarray:
    """The per-frequency divisors llama.cpp stores as `rope_freqs` for llama 3 scaling."""
    freqs = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    out = []
    for freq in freqs:
        wavelen = 2 * math.pi / freq
        if wavelen < orig_ctx / high:
            out.append(1.0)
        elif wavelen > orig_ctx / low:
            out.append(factor)
        else:
            smooth = (orig_ctx / wavelen - low) / (high - low)
            out.append(1.0 / ((1 - smooth) / factor + smooth))
    return np.asarray(out)


def _fit_llama3(freqs: np.ndarray, head_dim: int, theta: float) -> dict[str, Any] | None:
    """Recover the llama3 rope_scaling fields that produce `freqs` (None if none do).

    The GGUF keeps only the resulting table, so we try the boundary values Meta's models
    use and solve the factor from the table, keeping the first combination that reproduces
    every entry.
    """
    if freqs.shape != (head_dim // 2,):
        return None
    wavelen = 2 * math.pi * theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    for orig in (8192, 4096, 2048, 16384, 32768, 65536, 131072):
        for low in (1.0, 2.0):
            for high in (4.0, 2.0, 8.0):
                factor = _llama3_factor(freqs, wavelen, low, high, orig)
                if factor is None or factor <= 1.0:
                    continue
                table = llama3_rope_factors(head_dim, theta, factor, low, high, orig)
                if np.allclose(table, freqs, rtol=1e-4, atol=1e-5):
                    return {
                        "rope_type": "llama3",
                        "factor": factor,
                        "low_freq_factor": low,
                        "high_freq_factor": high,
                        "original_max_position_embeddings": orig,
                    }
    return None


def _llama3_factor(
    freqs: np.ndarray, wavelen: np.ndarray, low: float, high: float, orig: int
) -> float | None:
    """The factor these boundaries imply: read off a fully scaled entry, else solved from a
    smoothed one (1/r = (1 - s)/factor + s)."""
    scaled = wavelen > orig / low
    if scaled.any():
        factor = float(freqs[scaled][0])
    else:
        mid = (wavelen >= orig / high) & ~scaled
        if not mid.any():
            return None
        s = (orig / wavelen[mid][-1] - low) / (high - low)
        denom = 1.0 / float(freqs[mid][-1]) - s
        if denom <= 0:
            return None
        factor = (1.0 - s) / denom
    return float(f"{factor:.6g}")  # the table is float32: 8.0000001 was 8


# ---------------------------------------------------------------- weights


def hf_tensor_name(gguf_name: str) -> str | None:
    """The HF name of a GGUF tensor; None for tensors HF does not keep (rope_freqs)."""
    if gguf_name == _ROPE_FREQS:
        return None
    if gguf_name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[gguf_name]
    m = _BLOCK_RE.match(gguf_name)
    if m and m.group(2) in _BLOCK_NAMES:
        return f"model.layers.{m.group(1)}.{_BLOCK_NAMES[m.group(2)]}"
    raise ModelError(f"the GGUF tensor {gguf_name!r} has no place in a supported architecture")


def permute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's row order for q/k of llama models (interleaved RoPE pairs)."""
    return (
        w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


def unpermute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undo `permute_qk`: back to HF's half-split (rotate_half) row order."""
    return (
        w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


# ---------------------------------------------------------------- tokenizer


def _write_tokenizer(src: Path, meta: _Meta, out: Path) -> None:
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(
            str(src.parent), gguf_file=src.name, local_files_only=True
        )
    except Exception as e:  # transformers raises many types for a tokenizer it cannot convert
        raise ModelError(
            f"the tokenizer in {src.name} cannot be converted ({_one_line(e)})"
        ) from None
    template = meta.get("tokenizer.chat_template")
    if template and not getattr(tok, "chat_template", None):
        tok.chat_template = str(template)
    tok.save_pretrained(str(out))


# ---------------------------------------------------------------- names and cleanup


def _one_line(err: Exception, limit: int = 200) -> str:
    """A library's (often multi-line) error text squeezed into the middle of our sentence."""
    text = " ".join(str(err).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _f32(value: Any) -> float:
    """A float32 metadata value as its shortest decimal (1e-05, not 9.999999747378752e-06)."""
    return float(str(np.float32(value)))


def _safe_stem(src: Path) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", src.stem).strip("._-")
    return (stem or "model")[:80]


def _remove_stale_tmp(models: Path, name: str) -> None:
    """Temp dirs of this model left by a crashed import (a day old: surely not in progress)."""
    now = time.time()
    for d in models.glob(f".tmp-{name}-*"):
        with contextlib.suppress(OSError):
            if now - d.stat().st_mtime > _STALE_TMP_SECONDS:
                shutil.rmtree(d, ignore_errors=True)
