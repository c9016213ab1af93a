"""What rank 0 takes from a worker rank's control messages, checked before use.

A worker rank is a peer (on a paired device, possibly not ours), so its `ready` and
`stats` numbers and its `error` text are validated here: a field out of shape is a
ProtocolError naming it, never a TypeError in the listener that reads them.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from core.comm.codec import shown
from core.engine.rank_stats import RankStats
from core.errors import ProtocolError

MAX_TEXT = 500  # characters of a rank's error message we keep
_MAX_INT = 2**63 - 1
_FIELDS = [(f.name, f.type, f.default is dataclasses.MISSING)
           for f in dataclasses.fields(RankStats)]


def stats_from_wire(meta: dict[str, Any], rank: int) -> RankStats:
    """The RankStats a rank pushed (`ready`, `stats`), its rank as we know it; every
    number a non-negative int or finite float of its field's type, unknown keys ignored."""
    values: dict[str, Any] = {}
    for name, kind, required in _FIELDS:
        if name not in meta:
            if required:
                raise ProtocolError(f"rank {rank}'s stats lack '{name}'")
            continue
        v = meta[name]
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ProtocolError(f"rank {rank}'s stats field '{name}' is {shown(v)}, "
                                "not a number")
        if kind == "int" and not (isinstance(v, int) and 0 <= v <= _MAX_INT):
            raise ProtocolError(f"rank {rank}'s stats field '{name}' is {shown(v)}, "
                                "not a count")
        if kind == "float" and not (math.isfinite(v) and v >= 0):
            raise ProtocolError(f"rank {rank}'s stats field '{name}' is {shown(v)}")
        values[name] = float(v) if kind == "float" else v
    values["rank"] = rank  # what the sender says its rank is counts for nothing
    return RankStats(**values)


def shown_text(value: object) -> str:
    """A rank's error message as we show it: a string of at most MAX_TEXT characters."""
    text = value if isinstance(value, str) else shown(value)
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT - 3] + "..."
