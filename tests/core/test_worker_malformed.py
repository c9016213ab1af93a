"""One message from a paired master must never stop `tpi-chat worker` (issue 13, item 4).

A real worker process, a real CURVE connection from a master it trusts; each message
below once ended the daemon's serve loop (a TypeError or an overflow escaping the
codec). Now each gets one `refused` answer, one log line, and the worker goes on.
"""

from __future__ import annotations

import msgpack
import pytest

from tests.fixtures.paired_worker import PairedWorker


def _header(**fields) -> bytes:
    h = {"v": 1, "op": "ping", "meta": {}, "tensors": []}
    h.update(fields)
    return msgpack.packb(h, use_bin_type=True)


def _deep(n: int) -> bytes:
    return b"\x91" * n + b"\xc0"  # [[[...[None]...]]], n lists deep


# Each once raised something other than ProtocolError out of the worker's decoder.
KILLERS = {
    # sorted() of the unknown fields: str < bytes is a TypeError
    "bytes key beside str key": [msgpack.packb(
        {"v": 1, "op": "ping", "meta": {}, "tensors": [], "zz": 1, b"x": 1},
        use_bin_type=True)],
    # a zero in the shape made the byte count 0; torch.empty overflowed on the other size
    "shape [0, 2**64-1]": [_header(op="ship_chunk", tensors=[
        {"dtype": "uint8", "shape": [0, 2**64 - 1]}]), b""],
    # torch computes strides from the non-zero sizes: 2**84 overflows int64
    "shape [0, 2**28, 2**28, 2**28]": [_header(op="ship_chunk", tensors=[
        {"dtype": "uint8", "shape": [0, 2**28, 2**28, 2**28]}]), b""],
    # the error text quoted the shape with repr(): RecursionError at ~1000 levels
    "shape nested 1000 deep": [
        b"\x84\xa1v\x01\xa2op\xaaship_chunk\xa4meta\x80\xa7tensors\x91\x82\xa5dtype"
        b"\xa5uint8\xa5shape" + _deep(1000), b""],
    "dtype nested 1000 deep": [
        b"\x84\xa1v\x01\xa2op\xaaship_chunk\xa4meta\x80\xa7tensors\x91\x82\xa5dtype"
        + _deep(1000) + b"\xa5shape\x91\x00", b""],
}


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    w = PairedWorker(tmp_path_factory.mktemp("malformed") / "w")
    yield w
    w.stop()


@pytest.mark.parametrize("name", list(KILLERS))
def test_one_malformed_message_is_refused_and_the_worker_goes_on(worker, name):
    assert worker.ping()
    sock = worker.connect()
    try:
        reply = worker.request(sock, KILLERS[name])
    finally:
        sock.close()
    assert reply is not None, f"no answer; the worker said: {worker.proc.lines[-8:]}"
    assert reply.op == "refused" and reply.meta["message"]
    assert len(reply.meta["message"]) <= 300
    assert worker.alive(), worker.proc.lines[-20:]
    assert worker.ping()
    assert not worker.tracebacks(), worker.proc.lines


def test_bad_requests_get_their_own_refusal_on_one_connection(worker):
    """Several bad requests on one connection, then a good one: each is answered."""
    sock = worker.connect()
    try:
        for frames in KILLERS.values():
            assert worker.request(sock, frames).op == "refused"
        for meta in ({"rank": "1", "split_id": "x", "control": "tcp://a:1"},
                     {"rank": 1, "split_id": "../x", "control": "tcp://a:1"},
                     {"rank": 1, "split_id": "x", "control": "tcp://a:99999"},
                     {"rank": 2**64 - 1}):
            assert worker.request(sock, [_header(op="run_rank", meta=meta)]).op == "refused"
        rep = worker.request(sock, [_header(op="stop_rank", meta={"rank": 2**64 - 1})])
        assert rep.op == "rank_stopped"
        rep = worker.request(sock, [_header(op="ping", meta={"t": 3})])
        assert rep.op == "pong" and rep.meta["t"] == 3
    finally:
        sock.close()
    assert worker.alive()
    refusals = [x for x in worker.proc.lines if "refused a control message" in x]
    assert refusals, worker.proc.lines[-20:]  # logged, one line each (rate-limited)
