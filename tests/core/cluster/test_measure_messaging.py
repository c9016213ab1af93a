"""The messaging measurement on real loopback sockets: a control echo (codec, CURVE, the
worker's answer) against a data-plane-shaped frame on the same kind of socket."""

from __future__ import annotations

from core.cluster.measure_messaging import loopback_ms, per_end_ms


def test_a_control_echo_costs_more_than_a_data_plane_frame():
    ctl, frame = loopback_ms(rounds=60)
    assert len(ctl) == len(frame) == 60
    assert all(x > 0 for x in ctl + frame)
    # the control path decodes and re-encodes a msgpack header and a tensor on both ends
    assert min(ctl) > min(frame)


def test_per_end_numbers_are_halves_and_sane():
    msg, frame = per_end_ms(rounds=40)
    assert 0 < msg < 5 and 0 < frame < 5
