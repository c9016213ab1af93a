"""What a worker tells its master about a rank that failed: the last line of its log."""

from __future__ import annotations

from core.cluster.rank_runner import MAX_WORDS, TAIL_BYTES, RankRunner, log_tail
from core.comm.curve import Keys


def test_log_tail_reads_a_bounded_end_and_keeps_one_short_line(tmp_path):
    log = tmp_path / "rank1.log"
    assert log_tail(log) == ""  # no log yet
    log.write_text("x" * (10 * TAIL_BYTES) + "\nTraceback...\nrank 1: rank 0 sent no setup "
                   "within 60 s\n\n")
    assert log_tail(log) == "rank 1: rank 0 sent no setup within 60 s"
    log.write_text("y" * (3 * MAX_WORDS))
    assert log_tail(log) == "y" * MAX_WORDS


def test_last_words_only_for_this_masters_failed_ranks(tmp_path):
    r = RankRunner(Keys.generate(), "127.0.0.1", tmp_path)
    (tmp_path / "rank1.log").write_text("boom\n")
    (tmp_path / "rank2.log").write_text("fine\n")
    r._remember(("me", 1), 1)
    r._remember(("me", 2), 0)
    r._remember(("other", 1), 1)
    assert r.last_words("me") == {"1": "boom"}
