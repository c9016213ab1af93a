"""Codec round trips and header validation: bad frames are ProtocolError, never a crash."""

from __future__ import annotations

import pickle
import random

import msgpack
import pytest
import torch

from core.comm.codec import (
    DTYPES,
    PROTOCOL_VERSION,
    CodecLimits,
    decode,
    encode,
)
from core.errors import ProtocolError

OPS = {"step", "hello"}


def _header(**over) -> bytes:
    h = {"v": PROTOCOL_VERSION, "op": "step", "meta": {},
         "tensors": [{"dtype": "float32", "shape": [2, 3]}]}
    h.update(over)
    return msgpack.packb(h, use_bin_type=True)


def _bytes(frames) -> list[bytes]:
    return [bytes(f) for f in frames]


@pytest.mark.parametrize("name", sorted(DTYPES))
def test_round_trip_every_dtype(name):
    dtype = DTYPES[name]
    t = (torch.arange(24) % 100).to(dtype).view(2, 3, 4)
    frames = encode("step", {"pos": 3, "s": "x", "b": b"\x00", "l": [1.5, None, True]},
                    [t, t[0], torch.empty(0, 5, dtype=dtype), torch.tensor(7, dtype=dtype)])
    msg = decode(_bytes(frames), OPS)
    assert msg.op == "step"
    assert msg.meta == {"pos": 3, "s": "x", "b": b"\x00", "l": [1.5, None, True]}
    assert [x.dtype for x in msg.tensors] == [dtype] * 4
    assert torch.equal(msg.tensors[0], t) and torch.equal(msg.tensors[1], t[0])
    assert msg.tensors[2].shape == (0, 5) and msg.tensors[3].shape == ()
    assert torch.equal(msg.tensors[3], torch.tensor(7, dtype=dtype))


def test_encode_is_zero_copy_for_contiguous_tensors():
    t = torch.zeros(4)
    frames = encode("step", {}, [t])
    t[0] = 5
    assert torch.frombuffer(frames[1], dtype=torch.float32)[0] == 5


def test_writable_decode_gives_private_copies():
    frames = _bytes(encode("step", {}, [torch.ones(3)]))
    t = decode(frames, OPS, writable=True).tensors[0]
    t += 1
    assert torch.equal(t, torch.full((3,), 2.0))


def test_wrong_version_names_both():
    with pytest.raises(ProtocolError, match=f"peer speaks protocol 2, we speak {PROTOCOL_VERSION}"):
        decode([_header(v=2), bytes(24)], OPS)


@pytest.mark.parametrize("frames, match", [
    ([_header(op="rm -rf"), bytes(24)], "Unknown message kind"),
    ([_header(tensors=[{"dtype": "object", "shape": [1]}]), bytes(8)], "dtype"),
    ([_header(tensors=[{"dtype": "complex64", "shape": [1]}]), bytes(8)], "dtype"),
    ([_header(), bytes(23)], "needs 24 bytes"),
    ([_header(), bytes(25)], "needs 24 bytes"),
    ([_header(), bytes(24), bytes(24)], "declares 1 tensors but 2"),
    ([_header()], "declares 1 tensors but 0"),
    ([_header(tensors=[{"dtype": "float32", "shape": [-1, 3]}]), bytes(24)], "shape"),
    ([_header(tensors=[{"dtype": "float32", "shape": [2.0, 3]}]), bytes(24)], "shape"),
    ([_header(tensors=[{"dtype": "float32", "shape": "23"}]), bytes(24)], "shape"),
    ([_header(tensors=[{"dtype": "float32", "shape": [True]}]), bytes(4)], "shape"),
    ([_header(tensors=[{"dtype": "uint8", "shape": [1 << 40, 1 << 40]}]), b""], "limit"),
    ([_header(v=True), bytes(24)], "protocol version"),
    ([_header(extra=1), bytes(24)], "unknown fields"),
    ([_header(meta=[1]), bytes(24)], "meta"),
    ([msgpack.packb([1, 2]), bytes(24)], "not a map"),
    ([b"\xc1", bytes(24)], "not valid msgpack"),
    ([msgpack.packb({"v": 1, 1: 2}), bytes(24)], "not valid msgpack"),
    ([_header() + b"\x00", bytes(24)], "not valid msgpack"),
    ([], "Empty"),
])
def test_malformed_messages_are_protocol_errors(frames, match):
    with pytest.raises(ProtocolError, match=match):
        decode(frames, OPS)


def test_ext_types_and_timestamps_are_refused():
    ext = msgpack.packb({"v": 1, "op": "step", "meta": {"x": msgpack.ExtType(5, b"ab")},
                         "tensors": []})
    ts = msgpack.packb({"v": 1, "op": "step", "meta": {"x": msgpack.Timestamp(1, 0)},
                        "tensors": []})
    for header in (ext, ts):
        with pytest.raises(ProtocolError):
            decode([header], OPS)


def test_limits_are_configurable():
    small = CodecLimits(max_header_bytes=64, max_total_bytes=16, max_tensors=1)
    with pytest.raises(ProtocolError, match="limit"):
        decode([_header(), bytes(24)], OPS, limits=small)
    with pytest.raises(ProtocolError, match="exceeds"):
        decode([_header(meta={"pad": "x" * 100}), bytes(24)], OPS, limits=small)
    one = CodecLimits(max_tensors=1)
    with pytest.raises(ProtocolError, match="limit is 1"):
        decode(_bytes(encode("step", {}, [torch.ones(1), torch.ones(1)])), OPS, limits=one)


def test_random_bytes_never_crash():
    rng = random.Random(1234)
    good = _bytes(encode("step", {"pos": 1}, [torch.ones(2, 2)]))
    for _ in range(500):
        frames = [bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 64)))
                  for _ in range(rng.randrange(1, 4))]
        if rng.random() < 0.5:  # mutate a valid message instead
            frames = [bytearray(f) for f in good]
            f = frames[rng.randrange(len(frames))]
            if f:
                f[rng.randrange(len(f))] = rng.getrandbits(8)
            frames = [bytes(f) for f in frames]
        try:
            decode(frames, OPS)
        except ProtocolError:
            pass


class _Evil:
    """Unpickling this would create a file: proof it never happens."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_pickle_payloads_are_never_unpickled(tmp_path):
    target = tmp_path / "pwned"
    payload = pickle.dumps(_Evil(str(target)))
    with pytest.raises(ProtocolError):
        decode([payload], OPS)  # as a header
    with pytest.raises(ProtocolError):
        decode([_header(), payload], OPS)  # as a tensor of the wrong size
    h = _header(tensors=[{"dtype": "uint8", "shape": [len(payload)]}])
    msg = decode([h, payload], OPS)  # as a tensor of the right size: just bytes
    assert bytes(msg.tensors[0].numpy()) == payload
    h = msgpack.packb({"v": 1, "op": "step", "meta": {"x": payload}, "tensors": []})
    assert decode([h], OPS).meta["x"] == payload  # as metadata: just bytes
    assert not target.exists()


def test_encode_refuses_unsendable_things():
    with pytest.raises(ValueError):
        encode("step", {}, [torch.ones(2, dtype=torch.complex64)])
    with pytest.raises(TypeError):
        encode("step", {"x": object()})


# Each of these once escaped decode() as something other than ProtocolError (issue 13).
_DEEP = b"\x91" * 1000 + b"\xc0"  # [[[...[None]...]]], 1000 lists deep


@pytest.mark.parametrize("frames, match", [
    ([msgpack.packb({"v": PROTOCOL_VERSION, "op": "step", "meta": {}, "tensors": [],
                     "zz": 1, b"x": 1}, use_bin_type=True)], "non-string key"),
    ([_header(tensors=[{"dtype": "uint8", "shape": [0, 2**64 - 1]}]), b""], "limit"),
    ([_header(tensors=[{"dtype": "uint8", "shape": [0, 2**28, 2**28, 2**28]}]), b""],
     "limit"),
    ([_header(tensors=[{"dtype": "float32", "shape": [2**26, 0, 2]}]), b""], "limit"),
    ([b"\x84\xa1v\x01\xa2op\xa4step\xa4meta\x80\xa7tensors\x91\x82\xa5dtype\xa5uint8"
      b"\xa5shape" + _DEEP, b""], "shape"),
    ([b"\x84\xa1v\x01\xa2op\xa4step\xa4meta\x80\xa7tensors\x91\x82\xa5dtype" + _DEEP
      + b"\xa5shape\x91\x00", b""], "dtype"),
    ([msgpack.packb({"v": PROTOCOL_VERSION, "op": "x" * 60000, "meta": {}, "tensors": []})],
     "Unknown message kind"),
])
def test_hostile_headers_are_short_protocol_errors(frames, match, caplog):
    with pytest.raises(ProtocolError, match=match) as e:
        decode(frames, OPS)
    assert len(str(e.value)) < 300
    assert not [r for r in caplog.records if "codec bug" in r.getMessage()]


def test_largest_allowed_empty_tensor_still_decodes():
    limit = CodecLimits(max_total_bytes=1024)
    msg = decode([_header(tensors=[{"dtype": "float32", "shape": [0, 256]}]), b""], OPS,
                 limit)
    assert msg.tensors[0].shape == (0, 256)
    with pytest.raises(ProtocolError, match="limit"):
        decode([_header(tensors=[{"dtype": "float32", "shape": [0, 257]}]), b""], OPS, limit)


def test_an_unforeseen_failure_is_still_a_protocol_error_and_logged(monkeypatch, caplog):
    import core.comm.codec as codec

    def broken(*a):
        raise TypeError("a bug")

    monkeypatch.setattr(codec, "_check_plain", broken)
    with pytest.raises(ProtocolError, match="TypeError"):
        decode(encode("step", {"a": 1}), OPS)
    assert [r for r in caplog.records if "codec bug" in r.getMessage()]
