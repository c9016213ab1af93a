"""The GGUF tensor table without the metadata: the same tensors as gguf's reader, fast, and
a clear error for damaged headers."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from gguf import GGUFReader

from core.errors import ModelError
from core.model.gguf_tensors import read_tensors
from tests.core.model.conftest import write_gguf


@pytest.mark.parametrize("dtype", ["f32", "f16", "q8_0", "q4_1", "mixed"])
def test_same_tensors_as_ggufs_reader(tiny_models, tmp_path, dtype):
    f = write_gguf(tiny_models["llama"], tmp_path / "m.gguf", dtype=dtype)
    ours = read_tensors(f)
    theirs = {t.name: t for t in GGUFReader(f).tensors}
    assert sorted(ours) == sorted(theirs)
    for name, t in theirs.items():
        o = ours[name]
        assert o.shape == tuple(int(x) for x in t.shape) and o.tensor_type == int(t.tensor_type)
        assert o.data.dtype == t.data.dtype and np.array_equal(o.data, t.data), name


def test_the_default_model_reads_the_same(tmp_path):
    from core.model.default_model import default_gguf_path

    ours = read_tensors(default_gguf_path())
    theirs = {t.name: t for t in GGUFReader(default_gguf_path()).tensors}
    assert sorted(ours) == sorted(theirs)
    t = "blk.3.ffn_down.weight"
    assert np.array_equal(ours[t].data, theirs[t].data)


def _header(n_tensors: int, n_kv: int, rest: bytes = b"") -> bytes:
    return b"GGUF" + struct.pack("<IQQ", 3, n_tensors, n_kv) + rest


@pytest.mark.parametrize("raw,why", [
    (b"GGUF\x01\x00\x00\x00", "version 2 or 3"),
    (_header(2**60, 0), "claims"),
    (_header(0, 1, struct.pack("<Q", 2**62) + b"k"), "truncated or damaged"),
    (_header(0, 1, struct.pack("<Q", 1) + b"k" + struct.pack("<IIQ", 9, 8, 2**40)),
     "truncated or damaged"),
    (_header(1, 0, struct.pack("<Q", 1) + b"t" + struct.pack("<IQIQ", 1, 64, 0, 10**9)),
     "runs past the end"),
])
def test_damaged_headers_are_clear_errors(tmp_path, raw, why):
    f = tmp_path / "bad.gguf"
    f.write_bytes(raw + b"\0" * 64)
    with pytest.raises(ModelError, match=why):
        read_tensors(f)
