"""Per-rank memory windows: how many of a rank's layer blocks fit in its memory budget.

`window="auto"` in RunOptions turns each rank's budget (bytes, `RunOptions.budgets`; a
cluster Session fills them from this device's and each worker's budget) into that rank's
sliding window: budget minus a fixed allowance for what is not layer weights (KV cache,
activations, the Python/torch runtime) minus the blocks that stay resident anyway (embed,
head), divided by the rank's largest layer block. None = all of them fit.
"""

from __future__ import annotations

from core.engine.options import RunOptions
from core.shard.blocks import block_order
from core.shard.manifest import Manifest

# Not layer weights: KV cache (SmolLM2-135M at 4096 tokens is ~190 MB fp32), activations
# and the interpreter + torch (~250 MB RSS before any weight). A fixed allowance, not a
# measurement: it errs on the side of a smaller window.
OVERHEAD_BYTES = 384 * 2**20
MIN_WINDOW = 2  # one block in use while the next one loads


def window_for_budget(budget: int, layer_blocks: list[int], fixed_bytes: int = 0) -> int | None:
    """Blocks of `layer_blocks` (sizes in bytes) that fit in `budget`; None = all fit."""
    if not layer_blocks:
        return None
    room = budget - OVERHEAD_BYTES - fixed_bytes
    fit = room // max(1, max(layer_blocks))
    if fit >= len(layer_blocks):
        return None
    return max(MIN_WINDOW, int(fit))


def manifest_window(budget: int, manifest: Manifest) -> int | None:
    """The auto window of one rank, from its shard manifest."""
    layers = set(block_order(manifest.config.num_layers))
    layer_bytes = [b.bytes for b in manifest.blocks if b.name in layers]
    fixed = sum(b.bytes for b in manifest.blocks if b.name not in layers)
    return window_for_budget(budget, layer_bytes, fixed)


def rank_windows(opts: RunOptions, manifests: list[Manifest]) -> list[int | None]:
    """The window of every rank: opts.window for all, or per budget when it is "auto"."""
    if opts.window != "auto":
        return [opts.window] * len(manifests)
    if opts.budgets is None:
        return [None] * len(manifests)  # nothing to fit into: keep everything resident
    return [manifest_window(b, m) for b, m in zip(opts.budgets, manifests, strict=True)]


def window_label(windows: list[int | None], auto: bool) -> str:
    """"all", "2", or per rank for auto ("auto: 2/all")."""
    names = ["all" if w is None else str(w) for w in windows]
    if not auto:
        return names[0] if names else "all"
    return "auto: " + "/".join(names)
