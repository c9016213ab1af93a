"""The model configuration the engine needs, read from a Hugging Face config.json.

One dataclass covers the Llama family (Llama 2/3/3.1/3.2, SmolLM, TinyLlama, Yi), Mistral,
Qwen2/2.5 (q/k/v bias) and Qwen3 (per-head q/k RMSNorm). Anything else is refused with one
sentence naming the architecture, instead of failing later inside a matmul.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from core.errors import ModelError

# model_type -> (qkv bias default, q/k norm)
_ARCHS: dict[str, tuple[bool, bool]] = {
    "llama": (False, False),
    "mistral": (False, False),
    "qwen2": (True, False),
    "qwen3": (False, True),
}
SUPPORTED_ARCHS = tuple(_ARCHS)
_ROPE_TYPES = ("default", "linear", "llama3")


@dataclass(frozen=True)
class ModelConfig:
    """Shapes and hyper-parameters of a decoder-only transformer, as the engine uses them."""

    arch: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    max_position_embeddings: int
    tie_word_embeddings: bool
    qkv_bias: bool
    qk_norm: bool
    rope_scaling: dict[str, Any] | None = None
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = field(default_factory=tuple)

    @property
    def group_size(self) -> int:
        """Query heads per KV head (GQA)."""
        return self.num_heads // self.num_kv_heads

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["eos_token_ids"] = list(self.eos_token_ids)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        d = dict(d)
        d["eos_token_ids"] = tuple(d.get("eos_token_ids") or ())
        return cls(**d)

    @classmethod
    def from_hf(cls, hf: dict[str, Any]) -> ModelConfig:
        """Build from the dict of a Hugging Face config.json."""
        arch = str(hf.get("model_type", "")).lower()
        if arch not in _ARCHS:
            named = hf.get("architectures") or [arch or "unknown"]
            raise ModelError(
                f"architecture '{named[0]}' is not supported; TPI Chat runs "
                f"{', '.join(SUPPORTED_ARCHS)} models"
            )
        bias_default, qk_norm = _ARCHS[arch]
        try:
            hidden = int(hf["hidden_size"])
            heads = int(hf["num_attention_heads"])
            kv_heads = int(hf.get("num_key_value_heads") or heads)
            head_dim = int(hf.get("head_dim") or hidden // heads)
            theta, scaling = _rope(hf)
            cfg = cls(
                arch=arch,
                vocab_size=int(hf["vocab_size"]),
                hidden_size=hidden,
                intermediate_size=int(hf["intermediate_size"]),
                num_layers=int(hf["num_hidden_layers"]),
                num_heads=heads,
                num_kv_heads=kv_heads,
                head_dim=head_dim,
                rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
                rope_theta=theta,
                max_position_embeddings=int(hf.get("max_position_embeddings", 2048)),
                tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
                qkv_bias=bool(hf.get("attention_bias", bias_default)),
                qk_norm=qk_norm,
                rope_scaling=scaling,
                bos_token_id=_opt_int(hf.get("bos_token_id")),
                eos_token_ids=_eos(hf.get("eos_token_id")),
            )
        except KeyError as e:
            raise ModelError(f"config.json lacks the field {e.args[0]!r}") from None
        except (TypeError, ValueError) as e:
            raise ModelError(f"config.json has a malformed value: {e}") from None
        if heads % kv_heads:
            raise ModelError(f"config.json: {heads} heads do not divide into {kv_heads} KV heads")
        if hf.get("mlp_bias"):
            raise ModelError("models with MLP bias are not supported")
        if hf.get("hidden_act", "silu") != "silu":
            raise ModelError(f"activation '{hf.get('hidden_act')}' is not supported (only silu)")
        return cfg


def load_config(model_dir: Path) -> ModelConfig:
    """Read and validate `model_dir/config.json`."""
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise ModelError(f"{model_dir} is not a model folder: it has no config.json")
    try:
        hf = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelError(f"{path} cannot be read as JSON ({e})") from None
    if not isinstance(hf, dict):
        raise ModelError(f"{path} does not hold a JSON object")
    return ModelConfig.from_hf(hf)


def _rope(hf: dict[str, Any]) -> tuple[float, dict[str, Any] | None]:
    """(theta, scaling) from either the classic fields or transformers 5 `rope_parameters`."""
    params = hf.get("rope_parameters")
    if isinstance(params, dict):
        theta = float(params.get("rope_theta", hf.get("rope_theta", 10000.0)))
        scaling = {k: v for k, v in params.items() if k != "rope_theta"}
    else:
        theta = float(hf.get("rope_theta", 10000.0))
        scaling = dict(hf["rope_scaling"]) if hf.get("rope_scaling") else {}
    rope_type = scaling.get("rope_type") or scaling.get("type") or "default"
    if rope_type not in _ROPE_TYPES:
        raise ModelError(f"rope scaling '{rope_type}' is not supported")
    if rope_type == "default":
        return theta, None
    scaling["rope_type"] = rope_type
    scaling.pop("type", None)
    return theta, scaling


def _opt_int(v: Any) -> int | None:
    return None if v is None else int(v)


def _eos(v: Any) -> tuple[int, ...]:
    if v is None:
        return ()
    if isinstance(v, list | tuple):
        return tuple(int(x) for x in v)
    return (int(v),)
