"""RMSNorm as a plain function (weights live in streamed blocks, not in modules)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """Normalise the last dim in fp32, then scale, as HF's LlamaRMSNorm (x is fp32 here).

    torch's fused kernel matches HF's five-op version on fp32 input (max diff 0 in our
    checks) and is one op instead of six: ~60 norms a token make the difference visible in decode.
    """
    return F.rms_norm(x, weight.shape, weight, eps)
