"""window="auto": each rank's window follows its memory budget; tokens stay the same."""

from __future__ import annotations

import pytest

from core.cluster.identity import load_or_create
from core.cluster.session import Session
from core.engine.auto_window import MIN_WINDOW, OVERHEAD_BYTES, window_for_budget
from core.engine.generate import Generator
from core.engine.options import RunOptions, parse_window
from core.engine.sampler import SamplingParams
from core.ranks.local_cluster import LocalCluster
from tests.fixtures.tiny_models import make_tiny_model

GREEDY = SamplingParams(temperature=0, max_new_tokens=12)
PROMPT = [1, 5, 9, 23, 42, 7, 99, 3]
LAYERS = 4  # -> 8 layer blocks per rank


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("llama"), "llama", num_hidden_layers=LAYERS)


def _run(tiny, opts: RunOptions) -> tuple[list[int], list, LocalCluster]:
    c = LocalCluster(tiny, opts).start()
    try:
        ids = Generator(c, {2}).generate(PROMPT, GREEDY).token_ids
        return ids, c.refresh_stats(), c
    finally:
        c.close()


def test_window_for_budget_counts_blocks_after_the_overhead():
    blocks = [100] * 10
    assert window_for_budget(OVERHEAD_BYTES + 550, blocks) == 5
    assert window_for_budget(OVERHEAD_BYTES + 550, blocks, fixed_bytes=300) == MIN_WINDOW
    assert window_for_budget(OVERHEAD_BYTES + 1000, blocks) is None
    assert window_for_budget(0, blocks) == MIN_WINDOW
    assert parse_window("auto") == "auto" and parse_window("all") is None


def test_auto_window_follows_each_ranks_budget_with_the_same_tokens(tiny):
    base = dict(ranks=2, context=128, threads=1)
    ref, _, _ = _run(tiny, RunOptions(**base))
    ids, stats, c = _run(tiny, RunOptions(**base, window="auto", budgets=[2**40, 1]))
    assert ids == ref
    assert c.windows == [None, MIN_WINDOW] and c.window_label == "auto: all/2"
    big, small = stats
    assert big.budget_blocks == big.total_blocks == 2 * LAYERS
    assert small.budget_blocks == MIN_WINDOW < small.total_blocks
    assert small.resident_blocks <= MIN_WINDOW and small.loads > small.total_blocks


def test_auto_without_budgets_keeps_everything(tiny):
    c = LocalCluster(tiny, RunOptions(window="auto", context=128, threads=1)).start()
    try:
        assert c.windows == [None] and c.rank0.scheduler.keep_all
    finally:
        c.close()


def test_session_gives_this_devices_budget_to_its_local_ranks(tiny, tmp_path):
    s = Session(tiny, load_or_create(tmp_path), [], local_ranks=1, master_budget=2,
                opts=RunOptions(window="auto", context=128, threads=1)).start()
    try:
        assert s.cluster.opts.budgets == [1, 1]
        assert s.cluster.windows == [MIN_WINDOW, MIN_WINDOW]
        assert Generator(s, {2}).generate(PROMPT, GREEDY).token_ids
    finally:
        s.close()
