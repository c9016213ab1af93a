"""The API-vs-engine section of RESULTS.md (benchmarks/serve_report.py) on fixed serve.json
samples: the numbers, both targets' limits and verdicts, and the rows in the Targets table."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))  # the benchmark modules import each other as top-level names

import report  # noqa: E402
import run_all  # noqa: E402
import serve_report  # noqa: E402

# As bench_serve.py writes it: 3 repetitions, engine and API alternating.
SAMPLE = {
    "engine": {"ttft_ms": 40.0, "tokens_per_s": 50.0},
    "api": {"ttft_ms": 47.0, "tokens_per_s": 48.0},
    "cli_fresh_process": {"ttft_ms": 120.0, "tokens_per_s": 49.0},
    "runs": {
        "engine": [{"ttft_ms": 40.0, "tokens_per_s": 50.0, "tokens": 64},
                   {"ttft_ms": 38.0, "tokens_per_s": 52.0, "tokens": 64},
                   {"ttft_ms": 45.0, "tokens_per_s": 46.0, "tokens": 64}],
        "api": [{"ttft_ms": 47.0, "tokens_per_s": 48.0, "tokens": 64},
                {"ttft_ms": 50.0, "tokens_per_s": 49.0, "tokens": 64},
                {"ttft_ms": 46.0, "tokens_per_s": 45.0, "tokens": 64}],
        "cli": [{"ttft_ms": 120.0, "tokens_per_s": 49.0, "tokens": 64}],
    },
    "load_per_rep": [0.31, 0.42, 0.5],
    "reps": 3, "new_tokens": 64, "ranks": 1,
    "machine": {"cpu": "Test CPU", "cores": 2, "ram_gib": 8.0, "os": "Linux 6.1",
                "python": "3.11.7", "torch": "2.13.0", "transformers": "5.24.0",
                "date": "2026-12-02T12:00:00+00:00", "load_avg_at_start": [0.2, 0.3, 0.4],
                "code": "abc1234"},
    "load_avg_at_end": [0.6, 0.4, 0.4],
}


def _with(**medians: float) -> dict:
    d = copy.deepcopy(SAMPLE)
    d["api"].update(medians)
    return d


def test_section_shows_medians_limits_repetitions_and_verdicts():
    text = "\n".join(serve_report.serve_section(SAMPLE))
    assert text.startswith("## The API against the engine")
    assert "Started 2026-12-02T12:00:00+00:00 (code abc1234), load average then " \
           "[0.2, 0.3, 0.4], at end [0.6, 0.4, 0.4] (2 cores)" in text
    assert "3 repetitions;" in text and "smoke run" not in text
    # limit 1.1 x 40 + 5 = 49.0; per repetition 49.0, 46.8, 54.5 -> 2 of 3 within
    assert "| time to first token, ms | 47.0 | 40.0 | <= 1.1 x engine + 5 = 49.0 | 2/3 | " \
           "PASS |" in text
    # limit 0.95 x 50 = 47.5; per repetition 47.5, 49.4, 43.7 -> 2 of 3 within
    assert "| streamed tokens/s | 48.0 | 50.0 | >= 0.95 x engine = 47.5 | 2/3 | PASS |" in text
    assert "| 2 | 38.0 | 50.0 | 52.0 | 49.0 | 64 / 64 | 0.42 |" in text
    # spread (max - min) / median: engine TTFT (45 - 38) / 40
    assert "| median (spread) | 40.0 (0.17) | 47.0 (0.09) | 50.0 (0.12) | 48.0 (0.08) |" in text
    assert "120.0 ms to the first token, 49.0 tokens/s" in text


@pytest.mark.parametrize("api, ttft, tps", [
    ({"ttft_ms": 49.0, "tokens_per_s": 47.5}, "PASS", "PASS"),  # exactly at both limits
    ({"ttft_ms": 49.1}, "MISS", "PASS"),
    ({"tokens_per_s": 47.4}, "PASS", "MISS"),
    ({"ttft_ms": None, "tokens_per_s": None}, "not measured", "not measured"),
])
def test_verdicts_at_and_past_the_limits(api, ttft, tps):
    got = [c["result"] for c in serve_report.checks(_with(**api))]
    assert got == [ttft, tps]
    text = "\n".join(serve_report.serve_section(_with(**api)))
    assert text.count(f"| {ttft} |") >= 1 and text.count(f"| {tps} |") >= 1


def test_targets_table_rows_in_results_md(tmp_path):
    (tmp_path / "serve.json").write_text(json.dumps(_with(ttft_ms=60.0)))
    md = report.render(tmp_path, {"notes": [], "errors": []})
    targets = md.split("## Targets", 1)[1].split("\n## ", 1)[0]
    rows = [r for r in targets.splitlines() if "through the API" in r]
    assert len(rows) == 2, targets
    assert rows[0].endswith("| <= 1.1 x 40.0 + 5 = 49.0 ms | 60.0 ms | "
                            "2/3 repetitions within | MISS |")
    # ratio of medians 48 / 50; paired: median of 0.96, 0.942, 0.978
    assert rows[1].endswith("| >= 0.95 | 0.960 | 0.960 (2/3 within) | PASS |")
    assert "## The API against the engine" in md
    assert "- Code: abc1234" in md  # serve.json alone still says what machine and code


def test_a_smoke_run_says_so():
    d = copy.deepcopy(SAMPLE)
    d["reps"] = 2
    assert "2 repetitions (a smoke run);" in "\n".join(serve_report.serve_section(d))
    assert all("(smoke run: 2 repetitions)" in r for r in serve_report.serve_targets(d))
    assert serve_report.serve_targets(None) == []


def test_run_all_plans_the_serve_step():
    full = {name: cmd for name, cmd, _ in run_all.plan(quick=False, llama=False)}
    assert full["serve"][0].endswith("bench_serve.py") and "--cli-reps" in full["serve"]
    quick = run_all.select("serve", quick=True)
    assert [(n, j) for n, _, j in quick] == [("serve", "serve.json")]
    assert quick[0][1][1:] == ["--reps", "2", "--new-tokens", "24"]


def test_a_repetition_exactly_at_its_limits_is_within():
    d = copy.deepcopy(SAMPLE)
    d["runs"]["engine"] = [{"ttft_ms": 40.0, "tokens_per_s": 50.0, "tokens": 64}] * 2
    d["runs"]["api"] = [{"ttft_ms": 49.0, "tokens_per_s": 47.5, "tokens": 64},
                        {"ttft_ms": 49.5, "tokens_per_s": 47.4, "tokens": 64}]
    assert [c["within"] for c in serve_report.checks(d)] == [1, 1]
