"""What of a new prompt the KV cache already holds, so only the rest is run.

Its own module because both the Generator (generate.py) and the draft model's runner
(speculative.py) reuse their caches this way, and generate.py already knows speculative.py.
"""

from __future__ import annotations


def common_prefix(cached: list[int], ids: list[int]) -> int:
    """How many leading ids the cache already holds (at least one id is left to run, so
    the step has logits to give)."""
    n = 0
    for a, b in zip(cached, ids, strict=False):
        if a != b:
            break
        n += 1
    return min(n, len(ids) - 1)
