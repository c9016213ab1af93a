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


def test_a_running_ranks_shard_is_in_use_until_it_exits(tmp_path, monkeypatch):
    """What keeps a master's quota from deleting a shard a rank reads (and the record of
    which shard each rank reads ends with the rank: rank numbers come from the master)."""
    import subprocess
    import sys

    from core.cluster import rank_runner

    monkeypatch.setattr(rank_runner, "spawn_rank", lambda *a, **k: subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(30)"]))
    r = RankRunner(Keys.generate(), "127.0.0.1", tmp_path)
    r.start("me", 1, "tcp://127.0.0.1:1", tmp_path / "s1")
    r.start("me", 2, "tcp://127.0.0.1:1", tmp_path / "s2")
    assert r.uses(tmp_path / "s1") and r.uses(tmp_path / "s2")
    r.stop("me", 1)
    assert not r.uses(tmp_path / "s1") and r.uses(tmp_path / "s2")
    r.stop_all()
    assert not r.uses(tmp_path / "s2") and r.dirs == {}
