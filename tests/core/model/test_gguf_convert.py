"""GGUF tensors to our block formats: carried bytes, the Q4_K regrouping, requantization."""

from __future__ import annotations

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize, quantize

from core.model.gguf_convert import ConversionReport, convert_rows, native_format, q4k_to_q4_1
from core.shard.qformats import FORMATS
from tests.fixtures.kquants import quantize_q4_k


def _weights(rows=8, cols=512, seed=0):
    return np.random.default_rng(seed).standard_normal((rows, cols)).astype(np.float32)


def test_our_q4_k_test_blocks_are_valid():
    w = _weights()
    back = dequantize(quantize_q4_k(w), T.Q4_K)
    assert np.abs(back - w).max() < 0.25 * np.abs(w).max()  # 4 bits: coarse but right


@pytest.mark.parametrize("t,name", [(T.Q8_0, "q8_0"), (T.Q4_0, "q4_0"), (T.Q4_1, "q4_1")])
def test_legacy_blocks_are_carried_byte_for_byte(t, name):
    raw = quantize(_weights(), t)
    report = ConversionReport()
    q = convert_rows(raw, t, 512, native_format(t), report, "w")
    assert q.fmt.name == name and np.array_equal(q.data.numpy(), raw)
    assert report.lines() == []  # nothing lossy to report


def test_q4_k_regroups_into_q4_1_with_only_fp16_rounding():
    w = _weights()
    raw = quantize_q4_k(w)
    q = q4k_to_q4_1(raw)
    assert q.shape == (8, 512 // 32 * 20)
    ref = dequantize(raw, T.Q4_K)
    got = dequantize(q, T.Q4_1)
    rel = np.sqrt(((got - ref) ** 2).sum() / (ref**2).sum())
    assert 0 < rel < 1e-3  # fp16 rounding of d*sc and dmin*m, nothing more
    # the 4-bit codes themselves are untouched: same nibbles, regrouped
    def nibbles(b):
        return np.sort(np.concatenate([b.ravel() & 15, b.ravel() >> 4]))

    assert np.array_equal(nibbles(q.reshape(-1, 20)[:, 4:]), nibbles(raw.reshape(-1, 144)[:, 16:]))


def test_native_formats():
    assert native_format(T.Q4_K).name == "q4_1"
    assert native_format(T.Q3_K).name == "q4_1"
    assert native_format(T.Q6_K).name == "q8_0"
    assert native_format(T.Q5_0).name == "q8_0"
    assert native_format(T.F16).name == "q8_0"


def test_requantized_types_report_their_added_error():
    w = _weights()
    report = ConversionReport()
    q = convert_rows(quantize(w, T.Q5_0), T.Q5_0, 512, FORMATS["q8_0"], report, "a")
    convert_rows(quantize_q4_k(w), T.Q4_K, 512, FORMATS["q4_1"], report, "b")
    convert_rows(quantize_q4_k(w), T.Q4_K, 512, FORMATS["q4_1"], report, "b")  # counted once
    assert q.fmt.name == "q8_0" and q.rows == 8
    lines = report.lines()
    assert len(lines) == 2 and lines[0].startswith("Q4_K -> q4_1: 1 tensors, added error")
    errors = report.to_dict()
    assert 0 < errors["Q4_K->q4_1"] < 1e-3 and 0 < errors["Q5_0->q8_0"] < 0.02
