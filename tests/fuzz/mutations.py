"""Structure-aware mutations of real messages, as Hypothesis strategies.

`mutated(seeds)` draws one seed message (a list of frames made by the real encoders, see
seeds.py) and applies one to three mutations, each picked from:

- structure: the msgpack header decoded, one node (the root, a field, a list item, a
  key) replaced by a hostile value (huge or negative ints, NaN, bool for int, bytes for
  str, mixed str/bytes keys, long strings, nesting deeper than the decoder allows),
  a field deleted or added, the op swapped for another known op; packed again;
- tensor descriptions: shapes with zeros beside huge sizes, too many dims, odd dtypes;
- frames: dropped, duplicated, emptied, added, a tensor frame cut or grown;
- bytes: bits flipped, bytes inserted, deleted, overwritten, a frame truncated.

Nothing here knows a port or a decoder: tests pair these with a target.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import msgpack
from hypothesis import strategies as st

MAX_FRAME = 512 * 1024  # mutations never make a frame bigger than this
_DEEP = "\x00deep:"


@dataclass(frozen=True)
class Seed:
    """One real message: `frames` as the sender puts them on the wire after any
    routing frames; `header` is the index of its msgpack header frame (-1: none)."""

    name: str
    frames: tuple[bytes, ...]
    header: int = 0


HOSTILE = [0, -1, 1, 255, 256, 2**31 - 1, 2**31, 2**32, 2**53 + 1, 2**63 - 1, -2**63,
           2**64 - 1, math.nan, math.inf, -math.inf, -0.0, 1e308, 5e-324, True, False, None,
           "", b"", "\x00", "../../../etc/passwd", "CON", "é" * 8, "\ud7ff", "A" * 300,
           [], {}, [[]], {"": None}, [0, 2**64 - 1], {"x": [None]}, "float64", "object",
           "tcp://[::1", "tcp://127.0.0.1:0", "tcp://127.0.0.1:65536"]
DTYPES = ["float32", "float16", "bfloat16", "int64", "int32", "int8", "uint8", "float64",
          "complex64", "bool", "object", "", "float32\x00", "FLOAT32", 1, None, b"float32"]
OPS = ["ping", "info", "run_rank", "stop_rank", "ship_begin", "ship_chunk", "ship_end_file",
       "ship_commit", "pong", "refused", "ship_have", "ship_ack", "ship_error", "hello",
       "setup", "ready", "stats", "error", "bye", "welcome", "ring_hello", "step", "", "x" * 70]


class _Draw:
    """Mutation decisions from a Random that Hypothesis seeds (uniform: Hypothesis's own
    draws lean to 0, which made most mutations empty a frame or replace the whole
    header), values from Hypothesis strategies (which know the edge cases)."""

    def __init__(self, draw, rnd):
        self.draw, self.rnd = draw, rnd

    def __call__(self, strategy):
        return self.draw(strategy)

    def int(self, lo: int, hi: int) -> int:
        return self.rnd.randint(lo, hi)


def pick(d: _Draw, items):
    return items[d.int(0, len(items) - 1)]


def _scalar() -> st.SearchStrategy:
    return st.one_of(
        st.sampled_from(HOSTILE),
        st.integers(min_value=-2**63, max_value=2**64 - 1),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=40),
        st.binary(max_size=40),
        st.booleans(),
    )


def _hostile_values() -> st.SearchStrategy:
    """Values to put where the protocol expects something else."""
    return st.one_of(
        _scalar(),
        st.lists(_scalar(), max_size=9),
        st.dictionaries(st.one_of(st.text(max_size=6), st.binary(max_size=6)), _scalar(),
                        max_size=5),
        # nesting n deep, spliced raw; half of them near the edges that matter: Python's
        # recursion limit (1000, less the caller's stack) and msgpack's 1024 levels
        st.one_of(st.integers(10, 3000), st.integers(850, 1030)).map(
            lambda n: f"{_DEEP}{n}"),
        st.sampled_from([1000, 65_000, 70_000, 300_000]).map(lambda n: "s" * n),  # limits
    )


HOSTILE_VALUES = _hostile_values()
KEYS = st.one_of(st.binary(max_size=8), st.text(max_size=8), st.integers(-5, 5))
_DIM = st.one_of(st.sampled_from([0, 0, 1, 2**28, 2**31, 2**32, 2**63 - 1, 2**64 - 1, -1]),
                st.integers(0, 4096))
SHAPE = st.one_of(st.lists(_DIM, min_size=1, max_size=4), st.lists(_DIM, max_size=10))


def _pack(obj: object, bin_type: bool) -> bytes:
    """msgpack of `obj`, each deep marker (packed as a fixstr: it is under 32 bytes)
    replaced by "[[[...[None]...]]]" that many lists deep, which msgpack.packb itself
    would refuse to make."""
    raw = msgpack.packb(obj, use_bin_type=bin_type)
    tag = _DEEP.encode()
    while (i := raw.find(tag)) > 0:
        j = k = i + len(tag)
        while raw[k:k + 1].isdigit():
            k += 1
        raw = raw[:i - 1] + b"\x91" * int(raw[j:k]) + b"\xc0" + raw[k:]
    return raw


def _paths(obj: object, path: tuple = (), depth: int = 0) -> list[tuple]:
    """Every node's path (keys / indexes) in a decoded header, the root first."""
    out = [path]
    if depth > 6:
        return out
    if isinstance(obj, dict):
        for k, v in list(obj.items())[:16]:
            out += _paths(v, (*path, k), depth + 1)
    elif isinstance(obj, list):
        for i, v in enumerate(obj[:16]):
            out += _paths(v, (*path, i), depth + 1)
    return out


def _get(obj: object, path: tuple) -> object:
    for p in path:
        obj = obj[p]  # type: ignore[index]
    return obj


def _structure(draw, frames: list[bytes], seed: Seed) -> list[bytes]:
    if seed.header < 0 or seed.header >= len(frames):
        return frames
    try:
        obj = msgpack.unpackb(frames[seed.header], raw=False, strict_map_key=False)
    except Exception:
        return frames  # already mangled by an earlier mutation
    paths = _paths(obj)
    # the root itself rarely: replacing the whole header tests little beyond "not a map"
    path = pick(draw, paths[1:]) if len(paths) > 1 and draw.int(0, 9) else ()
    action = pick(draw, _STRUCTURE_ACTIONS)
    if action == "op" and isinstance(obj, dict):
        obj["op"] = pick(draw, OPS)
    elif action == "add_root" and isinstance(obj, dict):  # unknown fields, odd key types
        for _ in range(draw.int(1, 3)):
            obj[draw(KEYS)] = draw(HOSTILE_VALUES)
    elif action in ("shape", "dtype", "tensors") and isinstance(obj, dict):
        descs = obj.get("tensors")
        if not isinstance(descs, list) or not descs or action == "tensors":
            n = draw.int(0, 70) if action == "tensors" else 1
            descs = obj["tensors"] = [{"dtype": "uint8", "shape": [0]} for _ in range(n)]
            frames = [*frames[:seed.header + 1], *[b""] * n]
        i = draw.int(0, len(descs) - 1) if descs else 0
        d = descs[i] if descs else None
        if isinstance(d, dict) and action == "dtype":
            d["dtype"] = pick(draw, DTYPES)
        elif isinstance(d, dict):
            d["shape"] = draw(SHAPE)
            frames = _fit(frames, seed.header + 1 + i, d, draw)
    elif action == "delete" and path:
        parent = _get(obj, path[:-1])
        try:
            del parent[path[-1]]  # type: ignore[attr-defined]
        except (TypeError, IndexError, KeyError):
            pass
    elif action == "add":
        node = _get(obj, path)
        key = draw(KEYS)
        value = draw(HOSTILE_VALUES)
        if isinstance(node, dict):
            node[key] = value
        elif isinstance(node, list):
            node.append(value)
    else:  # replace
        value = draw(HOSTILE_VALUES)
        if not path:
            obj = value
        else:
            parent = _get(obj, path[:-1])
            parent[path[-1]] = value  # type: ignore[index]
    try:
        packed = _pack(obj, draw(st.booleans()))
    except (OverflowError, ValueError, TypeError):
        return frames
    if len(packed) > MAX_FRAME:
        packed = packed[:MAX_FRAME]
    return [*frames[:seed.header], packed, *frames[seed.header + 1:]]


_ITEMSIZE = {"float32": 4, "float16": 2, "bfloat16": 2, "int64": 8, "int32": 4,
             "int8": 1, "uint8": 1}


def _fit(frames: list[bytes], i: int, desc: dict, draw) -> list[bytes]:
    """Mostly make tensor frame i as long as `desc` says (so the message gets past the
    byte count check to whatever comes next); sometimes leave it wrong."""
    if i >= len(frames) or draw.int(0, 3) == 3:
        return frames
    dtype = desc.get("dtype")
    size = _ITEMSIZE.get(dtype, 1) if isinstance(dtype, str) else 1
    for s in desc["shape"]:
        if not isinstance(s, int) or s < 0:
            return frames
        size *= s
    if size > MAX_FRAME:
        return frames
    return frames[:i] + [bytes(size)] + frames[i + 1:]


def _frames(draw, frames: list[bytes], seed: Seed) -> list[bytes]:
    action = pick(draw, ("drop", "dup", "empty", "add", "resize"))
    i = draw.int(0, max(0, len(frames) - 1))
    if action == "drop" and len(frames) > 1:
        return frames[:i] + frames[i + 1:]
    if action == "dup" and frames:
        return frames[:i + 1] + frames[i:]
    if action == "empty" and frames:
        return frames[:i] + [b""] + frames[i + 1:]
    if action == "add":
        return [*frames, draw(st.binary(max_size=64))]
    if frames:  # resize: cut or grow one frame (a tensor's byte count no longer matches)
        f = frames[i]
        n = draw.int(0, len(f) + 64)
        return frames[:i] + [(f * 2 + b"\x00" * 64)[:n]] + frames[i + 1:]
    return frames


def _bytes(draw, frames: list[bytes], seed: Seed) -> list[bytes]:
    if not frames:
        return [draw(st.binary(max_size=64))]
    i = draw.int(0, len(frames) - 1)
    f = bytearray(frames[i])
    action = pick(draw, ("flip", "insert", "delete", "overwrite", "truncate"))
    pos = draw.int(0, len(f))
    if action == "flip" and f:
        for _ in range(draw.int(1, 8)):
            p = draw.int(0, len(f) - 1)
            f[p] ^= 1 << draw.int(0, 7)
    elif action == "insert":
        f[pos:pos] = draw(st.binary(min_size=1, max_size=16))
    elif action == "delete":
        del f[pos:pos + draw.int(1, 16)]
    elif action == "overwrite":
        chunk = draw(st.binary(min_size=1, max_size=16))
        f[pos:pos + len(chunk)] = chunk
    else:
        del f[pos:]
    return frames[:i] + [bytes(f)] + frames[i + 1:]


_STRUCTURE_ACTIONS = ("replace", "replace", "delete", "add", "add_root", "op", "shape",
                      "shape", "dtype", "tensors")
MUTATORS = {"structure": _structure, "frames": _frames, "bytes": _bytes}


def mutated(seeds: list[Seed], kinds: tuple[str, ...] = ("structure",) * 5 + ("frames",
                                                                           "bytes")
            ) -> st.SearchStrategy[tuple[str, list[bytes]]]:
    """(seed name, mutated frames) from 1-3 mutations of one of `seeds`."""

    @st.composite
    def strategy(draw) -> tuple[str, list[bytes]]:
        draw = _Draw(draw, draw(st.randoms(use_true_random=True)))
        seed = pick(draw, seeds)
        frames = list(seed.frames)
        for _ in range(draw.int(1, 3)):
            kind = pick(draw, kinds)
            frames = MUTATORS[kind](draw, frames, seed)
        return seed.name, frames

    return strategy()
