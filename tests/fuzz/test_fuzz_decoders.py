"""Every decoder, in this process, on mutated real messages: ProtocolError or a valid
result, nothing else, and no "bug" log line from a decoder's last-resort handler.

Fast (thousands of frames a second), so it gets the most examples; the same decoders
then face a real process in test_fuzz_worker.py.
"""

from __future__ import annotations

import logging
import sys
import time
from contextlib import contextmanager
from types import SimpleNamespace

import pytest
from hypothesis import given, settings

from core.cluster.identity import is_public_key
from core.cluster.pairing import OPS_TO_WORKER, valid_name, valid_pake
from core.cluster.pairing_code import mac_ok
from core.cluster.pairing_wire import FrameParser, WireError, unpack
from core.cluster.shard_cache import ShardCache
from core.cluster.ship_messages import REPLY_OPS, REQUEST_OPS, parse_reply
from core.cluster.ship_receiver import serve_shipping
from core.cluster.worker_protocol import TO_MASTER, TO_WORKER, RunRank
from core.comm import fastlink, wire
from core.comm.codec import DEFAULT_LIMITS, decode, encode
from core.comm.handshake import _check_hello, check_welcome
from core.comm.plane import DataPlane
from core.errors import ProtocolError
from core.ranks.rank_process import CONTROL_OPS, RankSetup, check_step
from core.ranks.rank_wire import shown_text, stats_from_wire
from core.worker import LIMITS as WORKER_LIMITS
from tests.fuzz import seeds
from tests.fuzz.conftest import examples, tally
from tests.fuzz.mutations import mutated

ALL_OPS = TO_WORKER | TO_MASTER | set(CONTROL_OPS) | {"welcome", "ring_hello", "step"}


class _Bugs(logging.Handler):
    """Collects error records: a decoder's catch-all logs one when it hides a bug."""

    def __init__(self):
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


@pytest.fixture
def bugs():
    h = _Bugs()
    root = logging.getLogger("core")
    root.addHandler(h)
    yield h
    root.removeHandler(h)


SERVER_HEADROOM = 980  # frames a receiving thread has left under CPython's default 1000


@contextmanager
def _server_stack():
    """Hypothesis raises the recursion limit to the test's depth + 2000 while it runs,
    which hid a RecursionError (str() of a 1000-deep list) that a real receiving thread,
    a few frames deep under the default limit, raises: give the check what it would
    have there."""
    depth, f = 0, sys._getframe()
    while f is not None:
        depth, f = depth + 1, f.f_back
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(depth + SERVER_HEADROOM)
    try:
        yield
    finally:
        sys.setrecursionlimit(old)


def _fuzz(target: str, strategy, check, bugs: _Bugs) -> None:
    """Run `check(frames)` on `examples("decoder")` mutated messages; it returns True
    when the message was taken as valid, False when refused (a ship_error reply, say),
    or raises ProtocolError."""
    t = tally(target, "decoder")

    @settings(max_examples=examples("decoder"))
    @given(strategy)
    def run(case):
        _name, frames = case
        t.frames += 1
        try:
            with _server_stack():
                ok = check(frames)
        except ProtocolError as e:
            assert str(e) and len(str(e)) < 1000, f"unreadable refusal: {str(e)[:200]}"
            ok = False
        if ok:
            t.accepted += 1
        else:
            t.refused += 1
        assert not bugs.records, bugs.records[0].getMessage()

    start = time.monotonic()
    try:
        run()
    finally:
        t.seconds += time.monotonic() - start


def _target(name):
    def mark(fn):
        fn.fuzz_target = name
        return fn
    return mark


@_target("codec.decode (every op)")
def test_codec_never_raises_anything_but_protocol_error(bugs):
    family = (seeds.worker_requests() + seeds.master_replies() + seeds.rank_control()
              + seeds.rank_setup())

    def check(frames):
        decode(frames, ALL_OPS, DEFAULT_LIMITS)
        decode(frames, ALL_OPS, WORKER_LIMITS, writable=True)
        return True

    _fuzz("codec.decode (every op)", mutated(family), check, bugs)


@_target("worker requests -> handlers")
def test_worker_request_handlers_answer_every_request(bugs, tmp_path):
    """The worker's decode, then its handlers: shipping answers every request with a
    reply the master can parse; run_rank's checks raise ProtocolError only."""
    cache = ShardCache(tmp_path / "shards")

    def check(frames):
        msg = decode(frames, TO_WORKER, WORKER_LIMITS)
        if msg.op in REQUEST_OPS:
            op, meta = serve_shipping(cache, msg)
            assert op in REPLY_OPS
            reply = parse_reply(decode(encode(op, meta), TO_MASTER))  # a valid answer
            return reply.op != "ship_error"
        if msg.op == "run_rank":
            RunRank.from_meta(msg.meta)
        return True

    try:
        _fuzz("worker requests -> handlers", mutated(seeds.worker_requests(seeds.manifest())),
              check, bugs)
    finally:
        cache.close()


@_target("master: worker replies")
def test_master_parses_worker_replies(bugs):
    def check(frames):
        msg = decode(frames, TO_MASTER)
        if msg.op in REPLY_OPS:
            parse_reply(msg)
        return True

    _fuzz("master: worker replies", mutated(seeds.master_replies()), check, bugs)


@_target("rank 0: rank control")
def test_rank0_reads_rank_messages(bugs):
    def check(frames):
        msg = decode(frames, CONTROL_OPS)
        if msg.op in ("ready", "stats"):
            stats_from_wire(msg.meta, 1)
        elif msg.op == "error":
            assert len(shown_text(msg.meta.get("message"))) <= 500
        return True

    _fuzz("rank 0: rank control", mutated(seeds.rank_control()), check, bugs)


@_target("worker rank: setup")
def test_worker_rank_checks_its_setup(bugs):
    def check(frames):
        msg = decode(frames, CONTROL_OPS)
        if msg.op == "setup":
            RankSetup.from_meta(msg.meta, 1, own_rank_dir=False)
        return True

    _fuzz("worker rank: setup", mutated(seeds.rank_setup()), check, bugs)


@_target("data plane: hello/welcome/step")
def test_data_plane_set_up_and_steps(bugs):
    key = "k" * 40  # rank 1's CURVE key: its slot admits no other
    plane = DataPlane(0, 2, token=seeds.TOKEN, rank_keys={1: key})
    runtime = SimpleNamespace(cfg=SimpleNamespace(hidden_size=seeds.HIDDEN), max_seq=64)

    def check(frames):
        if not frames:
            raise ProtocolError("no frames")
        if len(frames[0]) == wire.HOT_SIZE + 32:  # a fast-link hello: header + HMAC
            fastlink._admit(frames[0], seeds.TOKEN, {1})
            return True
        kind, _, _ = wire.unpack(frames[0])
        rest = frames[1:]
        if kind == wire.Kind.HELLO:
            _check_hello(plane, rest, {}, key)
        elif kind == wire.Kind.WELCOME:
            check_welcome(decode(rest, {"welcome"}).meta, 2)
        elif kind == wire.Kind.RING_HELLO:
            decode(rest, {"ring_hello"})
        elif kind == wire.Kind.STEP:
            msg = decode(rest, {"step"})
            if msg.meta.get("op") == "step":
                check_step(msg.meta, msg.tensors[0] if len(msg.tensors) == 1 else None,
                           runtime)
        return True

    _fuzz("data plane: hello/welcome/step", mutated(seeds.data_plane()), check, bugs)


@_target("pairing port: frames")
def test_pairing_frames_decode_or_refuse(bugs):
    """The worker's pairing port before any key is trusted: its frame parser on the
    joined wire bytes (raw seeds carry their own length prefixes) and `unpack` on each
    frame, then the checks the server runs on a hello's and a confirm's fields. In a
    real process in test_fuzz_pairing_port.py, ~100x slower; this is where a decoder
    bug (such as str() of a deeply nested op) shows at once."""

    def check(frames):
        bodies, data, parser = list(frames), b"".join(frames), FrameParser()
        try:
            while data:
                n = parser.want()
                body = parser.feed(data[:n])
                data = data[n:]
                if body is not None:
                    bodies.append(body)
        except WireError:
            pass  # refused framing; the bodies read before it are still decoded
        valid = True
        for body in bodies:
            try:
                msg = unpack(body, OPS_TO_WORKER)
            except WireError:
                valid = False
                continue
            if msg.op == "hello":
                valid &= valid_name(msg.meta.get("name")) and valid_pake(msg.meta.get("pake"))
            elif msg.op == "confirm":
                valid &= (is_public_key(msg.meta.get("public_key"))
                          and mac_ok(b"\0" * 32, msg.meta.get("mac")))
        return valid

    _fuzz("pairing port: frames", mutated(seeds.pairing_requests()), check, bugs)
