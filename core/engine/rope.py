"""Rotary position embeddings, computed as Hugging Face does so logits match to the bit.

Supports the default RoPE, "linear" scaling and Llama 3.1's "llama3" frequency scaling.
Tables are built once per rank for the whole context and sliced per step.
"""

from __future__ import annotations

import math

import torch

from core.model.config import ModelConfig


def inv_freq(cfg: ModelConfig) -> torch.Tensor:
    """[head_dim/2] inverse frequencies, after any scaling the config asks for."""
    hd = cfg.head_dim
    freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, hd, 2, dtype=torch.int64).float() / hd))
    scaling = cfg.rope_scaling or {}
    kind = scaling.get("rope_type", "default")
    if kind == "linear":
        return freq / float(scaling["factor"])
    if kind == "llama3":
        return _llama3(freq, scaling)
    return freq


def _llama3(freq: torch.Tensor, s: dict) -> torch.Tensor:
    factor, lo, hi = float(s["factor"]), float(s["low_freq_factor"]), float(s["high_freq_factor"])
    old_len = float(s["original_max_position_embeddings"])
    lo_wavelen, hi_wavelen = old_len / lo, old_len / hi
    wavelen = 2 * math.pi / freq
    scaled = torch.where(wavelen > lo_wavelen, freq / factor, freq)
    smooth = (old_len / wavelen - lo) / (hi - lo)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < hi_wavelen) * ~(wavelen > lo_wavelen)
    return torch.where(medium, smoothed, scaled)


def rope_tables(cfg: ModelConfig, max_seq: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos, signed_sin), each [max_seq, head_dim], for positions 0..max_seq-1.

    signed_sin is sin with its first half negated, which folds rotate_half's negation
    into the table (see apply_rope).
    """
    pos = torch.arange(max_seq, dtype=torch.int64).float()
    freqs = pos[:, None] * inv_freq(cfg)[None, :]  # [S, hd/2]
    emb = torch.cat((freqs, freqs), dim=-1)  # [S, hd]
    sin = emb.sin()
    half = sin.shape[-1] // 2
    sin[:, :half].neg_()
    return emb.cos(), sin


def apply_rope(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    """x [..., hd] rotated by tables broadcast against it (HF's rotate_half convention).

    HF: x * cos + cat(-x2, x1) * sin. Here cat(x2, x1) is a roll by half and the minus sits
    in signed_sin: three ops instead of seven, same values up to float rounding.
    """
    return torch.addcmul(x * cos, x.roll(x.shape[-1] // 2, -1), signed_sin)
