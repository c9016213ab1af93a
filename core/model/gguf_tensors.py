"""The tensor table of a GGUF file, read without parsing its metadata values.

gguf's GGUFReader builds Python objects for every metadata value, which for a 49k-token
vocabulary and its merges takes 5-20 s on a small CPU, at every model start. The splitter
only needs each tensor's name, shape, type and bytes, so this reads the header, steps over
the metadata (looking only at `general.alignment`) and maps the tensor data.

Every count and length is checked against the file's size before it is used, so a damaged
or hostile file is a ModelError, never a huge allocation.
"""

from __future__ import annotations

import math
import mmap
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.errors import ModelError

# value type -> fixed size in bytes (8 = string and 9 = array are handled apart)
_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_STRING, _ARRAY = 8, 9
_FLOATS = {0: np.float32, 1: np.float16}  # F32, F16; BF16 comes as bytes, as in gguf's reader
_MAX_DIMS = 4


@dataclass
class GgufTensor:
    """One tensor: `shape` in GGUF order (columns first), `data` as gguf's reader gives it
    ([..., rows, row bytes] uint8 for block types, the float array otherwise)."""

    name: str
    shape: tuple[int, ...]
    tensor_type: int
    data: np.ndarray


class _Cursor:
    def __init__(self, buf: memoryview, name: str):
        self.buf, self.pos, self.name = buf, 0, name

    def need(self, n: int) -> None:
        if n < 0 or self.pos + n > len(self.buf):
            raise ModelError(f"{self.name} is truncated or damaged (its header runs past the end)")

    def unpack(self, fmt: str):
        size = struct.calcsize(fmt)
        self.need(size)
        out = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += size
        return out[0] if len(out) == 1 else out

    def string(self) -> bytes:
        n = self.unpack("<Q")
        self.need(n)
        s = bytes(self.buf[self.pos : self.pos + n])
        self.pos += n
        return s

    def skip_value(self, vtype: int) -> None:
        if vtype == _STRING:
            self.need(8)
            self.pos += 8 + self.unpack_peek_len()
        elif vtype == _ARRAY:
            etype, count = self.unpack("<IQ")
            if etype in _SIZES:
                self.need(count * _SIZES[etype])
                self.pos += count * _SIZES[etype]
            elif etype == _STRING:
                self.need(count * 8)  # every string has at least its length
                for _ in range(count):
                    self.pos += 8 + self.unpack_peek_len()
            else:
                raise ModelError(f"{self.name} has a metadata array of unknown type {etype}")
        elif vtype in _SIZES:
            self.need(_SIZES[vtype])
            self.pos += _SIZES[vtype]
        else:
            raise ModelError(f"{self.name} has a metadata value of unknown type {vtype}")

    def unpack_peek_len(self) -> int:
        """The length of the string at pos (its 8 bytes are checked), with its body checked."""
        self.need(8)
        (n,) = struct.unpack_from("<Q", self.buf, self.pos)
        if n > len(self.buf) - self.pos - 8:
            raise ModelError(f"{self.name} is truncated or damaged (a string runs past the end)")
        return n


def read_tensors(path: Path) -> dict[str, GgufTensor]:
    """Name -> tensor of the GGUF at `path`, its data memory-mapped (read only)."""
    from gguf.constants import GGML_QUANT_SIZES

    path = Path(path)
    mm = _map(path)
    infos, start = _table(mm, path.name)
    out = {}
    for name, dims, ttype, offset in infos:
        out[name] = _tensor(mm, path.name, name, dims, ttype, start + offset, GGML_QUANT_SIZES)
    return out


def data_start(path: Path) -> int:
    """Where the tensor data begins: the bytes before it are the header, the metadata and
    the tensor table (every tensor's name, shape, type and offset)."""
    path = Path(path)
    return _table(_map(path), path.name)[1]  # the map closes when its views are gone


def _map(path: Path) -> mmap.mmap:
    try:
        with open(path, "rb") as f:
            return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot read {path.name} ({e})") from None


def _table(mm: mmap.mmap, fname: str) -> tuple[list[tuple[str, tuple[int, ...], int, int]],
                                              int]:
    """The tensor table (name, dims, type, offset) and where the data begins."""
    c = _Cursor(memoryview(mm), fname)
    magic, version = c.unpack("<4sI")
    if magic != b"GGUF" or version not in (2, 3):
        raise ModelError(f"{fname} is not a GGUF file of version 2 or 3")
    n_tensors, n_kv = c.unpack("<QQ")
    if n_tensors > len(mm) // 24 or n_kv > len(mm) // 12:  # the least each entry takes
        raise ModelError(f"{fname} is damaged (it claims {n_tensors} tensors)")
    alignment = 32
    for _ in range(n_kv):
        key, vtype = c.string(), c.unpack("<I")
        if key == b"general.alignment" and vtype == 4:
            alignment = c.unpack("<I") or 32
        else:
            c.skip_value(vtype)
    infos = []
    for _ in range(n_tensors):
        name = c.string().decode("utf-8", "replace")
        n_dims = c.unpack("<I")
        if not 1 <= n_dims <= _MAX_DIMS:
            raise ModelError(f"{fname}: tensor {name} has {n_dims} dimensions")
        dims = tuple(c.unpack("<" + "Q" * n_dims)) if n_dims > 1 else (c.unpack("<Q"),)
        ttype, offset = c.unpack("<IQ")
        infos.append((name, dims, ttype, offset))
    return infos, -(-c.pos // alignment) * alignment


def _tensor(mm: mmap.mmap, fname: str, name: str, dims: tuple[int, ...], ttype: int,
            at: int, sizes: dict) -> GgufTensor:
    if ttype not in sizes:
        raise ModelError(f"{fname}: tensor {name} has an unknown type {ttype}")
    block, type_size = sizes[ttype]
    count = math.prod(dims)
    if dims[0] % block:
        raise ModelError(f"{fname}: tensor {name}'s rows are not whole blocks")
    nbytes = count // block * type_size
    if at + nbytes > len(mm):
        raise ModelError(f"{fname} is truncated: tensor {name} runs past the end")
    rows = tuple(reversed(dims[1:]))
    if ttype in _FLOATS:
        data = np.frombuffer(mm, dtype=_FLOATS[ttype], count=count, offset=at)
        data = data.reshape(*rows, dims[0])
    else:
        data = np.frombuffer(mm, dtype=np.uint8, count=nbytes, offset=at)
        data = data.reshape(*rows, dims[0] // block * type_size)
    return GgufTensor(name, dims, ttype, data)
