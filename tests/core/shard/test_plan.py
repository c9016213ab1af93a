"""The planner: exact apportioning, uneven and empty shares, column units, stable keys."""

from __future__ import annotations

import json
import random

import pytest

from core.errors import TpiError
from core.model.config import ModelConfig
from core.shard.plan import Plan, apportion, make_plan, parse_shares


def _cfg(kv_heads: int = 4, heads: int = 8, intermediate: int = 192) -> ModelConfig:
    return ModelConfig.from_hf(
        {
            "model_type": "llama",
            "vocab_size": 512,
            "hidden_size": 64,
            "intermediate_size": intermediate,
            "num_hidden_layers": 2,
            "num_attention_heads": heads,
            "num_key_value_heads": kv_heads,
        }
    )


def _assert_tiles(plan: Plan, cfg: ModelConfig) -> None:
    k = c = 0
    for i, s in enumerate(plan.ranks):
        assert (s.rank, s.kv_start, s.col_start) == (i, k, c)
        assert s.kv_end >= s.kv_start and s.col_end >= s.col_start
        k, c = s.kv_end, s.col_end
    assert (k, c) == (cfg.num_kv_heads, cfg.intermediate_size)


def test_apportion_sums_exactly() -> None:
    rng = random.Random(0)
    for _ in range(200):
        total = rng.randint(0, 500)
        shares = [rng.uniform(0.0, 10.0) for _ in range(rng.randint(1, 7))]
        shares[0] += 0.1  # never all zero
        counts = apportion(total, shares)
        assert sum(counts) == total
        assert all(n >= 0 for n in counts)
        # Largest remainder: every count is within one of the exact quota.
        for n, s in zip(counts, shares, strict=True):
            assert abs(n - total * s / sum(shares)) < 1


def test_apportion_ties_go_to_lower_rank() -> None:
    assert apportion(1, [1, 1]) == [1, 0]
    assert apportion(5, [1, 1, 1]) == [2, 2, 1]


def test_three_to_one() -> None:
    cfg = _cfg()
    plan = make_plan(cfg, [3, 1])
    assert [r.num_kv_heads for r in plan.ranks] == [3, 1]
    assert [r.num_cols for r in plan.ranks] == [128, 64]
    _assert_tiles(plan, cfg)


def test_rank_may_hold_zero_heads() -> None:
    cfg = _cfg()
    plan = make_plan(cfg, [1, 0.01])
    assert [r.num_kv_heads for r in plan.ranks] == [4, 0]
    assert plan.ranks[1].kv_start == plan.ranks[1].kv_end == 4
    _assert_tiles(plan, cfg)


def test_equal_world_size_and_more_ranks_than_heads() -> None:
    cfg = _cfg(kv_heads=2, heads=4)
    plan = make_plan(cfg, world_size=3)
    assert plan.world_size == 3
    assert sorted(r.num_kv_heads for r in plan.ranks) == [0, 1, 1]
    _assert_tiles(plan, cfg)


def test_columns_move_in_aligned_blocks() -> None:
    cfg = _cfg(intermediate=192 * 4)
    for shares in ([1, 1], [3, 1], [1, 2, 1], [5, 3, 1, 1]):
        plan = make_plan(cfg, shares)
        assert all(r.col_start % 64 == 0 for r in plan.ranks)
        _assert_tiles(plan, cfg)
    odd = _cfg(intermediate=100)  # not a multiple of 8: single columns
    plan = make_plan(odd, [1, 2])
    assert [r.num_cols for r in plan.ranks] == [33, 67]
    _assert_tiles(plan, odd)


def test_key_is_deterministic_and_depends_on_the_split_only() -> None:
    cfg = _cfg()
    assert make_plan(cfg, [3, 1]).key() == make_plan(cfg, [3, 1]).key()
    assert make_plan(cfg, [2, 2]).key() == make_plan(cfg, [1, 1]).key()
    assert make_plan(cfg, [3, 1]).key() != make_plan(cfg, [1, 1]).key()
    assert make_plan(cfg, [1, 1]).key() != make_plan(cfg, [1, 1, 1]).key()
    assert len(make_plan(cfg, [1]).key()) == 12


def test_dict_round_trip_through_json() -> None:
    plan = make_plan(_cfg(), [3, 1, 0.5])
    again = Plan.from_dict(json.loads(json.dumps(plan.to_dict())))
    assert again == plan
    assert again.key() == plan.key()


@pytest.mark.parametrize("shares", [[0, 0], [-1, 2], [float("nan"), 1], [float("inf"), 1]])
def test_bad_shares_are_refused(shares: list[float]) -> None:
    with pytest.raises(TpiError):
        make_plan(_cfg(), shares)


def test_parse_shares() -> None:
    assert parse_shares("3,1") == [3.0, 1.0]
    assert parse_shares(" 1, 0.5 ,") == [1.0, 0.5]
    for bad in ("", "a,b", "0,0", "-1,1", "nan,1"):
        with pytest.raises(TpiError):
            parse_shares(bad)
