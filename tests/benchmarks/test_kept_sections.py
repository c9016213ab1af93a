"""Re-rendering RESULTS.md keeps what it cannot re-render (benchmarks/kept_sections.py): a
step whose JSON is missing from benchmarks/out keeps its section, Targets rows and notes of
the RESULTS.md being replaced, verbatim and in place; a step whose JSON is there is rendered
fresh; a step that ran now and left no JSON does not get its old numbers back."""

from __future__ import annotations

import json
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))  # the benchmark modules import each other as top-level names

import kept_sections  # noqa: E402
import report  # noqa: E402
import run_all  # noqa: E402
import serve_report  # noqa: E402
import speculative_report  # noqa: E402

from tests.benchmarks.test_serve_report import SAMPLE  # noqa: E402

ENGINE_ROWS = [
    "| default model, 1 rank, all resident: decode ms/token vs transformers | <= 0.8 | 0.111 | "
    "0.112 | PASS |",
    "| default model, 2 ranks vs 1 rank (window all): decode ms/token | <= 1.5 | 1.222 | - | "
    "PASS |",
]
MEMORY_ROW = ("| 64-layer Llama, 2 ranks: peak RSS of all processes, window 2 / window all, "
              "same tokens (yes) | <= 0.4 | 0.333 | psutil: 0.3 | PASS |")
SPEC_ROW = ("| default model, 2 ranks, 2 ms per send, greedy: speculative / plain decode "
            "ms/token, same tokens (yes) | <= 0.5 | 0.444 | 0.44 | PASS |")
OLD_SERVE_ROW = ("| default model, 1 rank, streamed through the API: tokens/s, API / engine | "
                 ">= 0.95 | 0.555 | 0.555 (3/3 within) | MISS |")
OLD_SERVE = ["## The API against the engine (benchmarks/bench_serve.py, issue 16)", "",
             "OLD serve numbers, 0.555.", ""]
KEPT = {  # step -> its section as the old RESULTS.md has it
    "engine": ["## Engine: ours vs transformers", "", "Started 2026-11-01.", "",
               "### default (0.0 GB fp32)", "", "| engine | x |", "|---|---|", "| a | 1 |", ""],
    "speculative": ["## Speculative decoding against link latency (issue 14)", "",
                    "| a | b |", "|---|---|", "| 2 | 0.444 |", "", "Load note.", ""],
    "collectives": ["## Collectives (benchmarks/bench_collectives.py)", "", "us, 9 iterations.",
                    ""],
    "planner": ["## Planner on an emulated home network (benchmarks/bench_planner.py)", "",
                "Not run: no root.", ""],
}
MACHINE = ["## Machine", "", "- CPU: Old CPU, 2 cores; RAM 8 GiB; Linux", "",
           "- Date: 2026-11-01; load average at start [1, 1, 1]", ""]
OLD = "\n".join([
    "# Benchmark results", "", "Written by `make bench`.", "",
    *MACHINE,
    "## Targets", "", "| target | limit | measured (ratio of medians) | paired median | result |",
    "|---|---|---|---|---|", *ENGINE_ROWS, MEMORY_ROW, SPEC_ROW, OLD_SERVE_ROW, "",
    "## Notes on this run", "", "- engine took 11.9 min", "- serve took 2.0 min",
    "- Not about a step.", "- planner took 33.6 min", "",
    *KEPT["engine"], *KEPT["speculative"], *OLD_SERVE, *KEPT["collectives"], *KEPT["planner"],
    "## Errors", "", "- collectives exited with 1 (see the `make bench` log)", "",
    *report.NOTES, "",
]) + "\n"


def _blocks(md: str) -> dict[str, list[str]]:
    return {b[0]: b for b in kept_sections._blocks(md)}


def _targets(md: str) -> list[str]:
    return [r for r in _blocks(md)["## Targets"] if r.startswith("| ") and " limit " not in r]


def _serve_only(tmp_path: Path) -> Path:
    out = tmp_path / "out"
    out.mkdir()
    (out / "serve.json").write_text(json.dumps(SAMPLE))
    return out


def test_missing_steps_keep_their_parts_and_the_present_one_is_fresh(tmp_path):
    md = report.render(_serve_only(tmp_path), {"notes": ["Not about a step."], "errors": []},
                       kept_sections.parse(OLD))
    blocks = _blocks(md)
    for step, section in KEPT.items():
        assert blocks[section[0]] == section, step
    assert blocks["## Machine"] == MACHINE  # it describes the engine's run, kept
    serve = blocks[OLD_SERVE[0]]
    assert serve == serve_report.serve_section(SAMPLE) and "OLD" not in md
    assert _targets(md) == [*ENGINE_ROWS, MEMORY_ROW, SPEC_ROW,
                            *serve_report.serve_targets(SAMPLE)]
    assert [h for h in blocks if h.startswith("## ")] == [
        "## Machine", "## Targets", "## Notes on this run", KEPT["engine"][0],
        KEPT["speculative"][0], OLD_SERVE[0], KEPT["collectives"][0], KEPT["planner"][0],
        "## Errors", "## How to read this"]
    # serve's old timing is not about the serve.json rendered now; the others are kept
    assert blocks["## Notes on this run"][2:-1] == [
        "- engine took 11.9 min", "- Not about a step.", "- planner took 33.6 min"]
    assert blocks["## Errors"][2] == "- collectives exited with 1 (see the `make bench` log)"


def test_without_a_previous_results_md_missing_steps_are_left_out(tmp_path):
    md = report.render(_serve_only(tmp_path), {"notes": [], "errors": []})
    assert not any(s[0] in md for s in KEPT.values())
    assert "| 64-layer Llama, window 2 / all peak RSS | <= 0.4 | - | - | not measured |" in md
    assert "- Code: abc1234" in md  # the Machine section from serve.json, as before


def test_a_step_that_ran_now_does_not_get_its_old_numbers_back(tmp_path):
    out = _serve_only(tmp_path)
    prev = kept_sections.parse(OLD, exclude={"engine", "speculative"})
    md = report.render(out, {"notes": ["engine took 0.1 min"],
                             "errors": ["engine exited with 1 (see the `make bench` log)"]},
                       prev)
    blocks = _blocks(md)
    assert KEPT["engine"][0] not in blocks and KEPT["speculative"][0] not in blocks
    assert blocks[KEPT["collectives"][0]] == KEPT["collectives"]
    # the engine's rows say "not measured", the speculative ones are gone
    assert _targets(md)[:3] == [*report.engine_targets(None), MEMORY_ROW]
    assert SPEC_ROW not in md and "- engine took 11.9 min" not in md
    assert "- engine took 0.1 min" in md and "- engine exited with 1" in md
    # with the engine's run gone the machine line comes from the next step that has one
    assert "- Code: abc1234" in md and MACHINE[2] not in md


def test_render_only_keeps_the_committed_sections(tmp_path, monkeypatch):
    """run_all.py --render-only on the RESULTS.md in the repo and serve.json alone: every
    other step's section and row, the Machine section and the notes stay as they are."""
    committed = (BENCH / "RESULTS.md").read_text()
    (tmp_path / "RESULTS.md").write_text(committed)
    monkeypatch.setattr(run_all, "HERE", tmp_path)
    monkeypatch.setattr(run_all, "OUT", _serve_only(tmp_path))
    assert run_all.main(["--render-only"]) == 0
    rendered = (tmp_path / "RESULTS.md").read_text()
    old, new = _blocks(committed), _blocks(rendered)
    serve_head = serve_report.serve_section(SAMPLE)[0]
    assert new[serve_head] == serve_report.serve_section(SAMPLE)
    assert [h for h in new if h != serve_head] == [h for h in old if h != serve_head]
    for head, block in old.items():
        if head not in (serve_head, "## Targets", "## Notes on this run"):
            assert new[head] == block, head
    assert new["## Notes on this run"] == [
        n for n in old["## Notes on this run"] if "serve" not in kept_sections.note_steps(n[2:])]
    others = [r for r in _targets(committed) if kept_sections.row_step(r) != "serve"]
    assert others and [r for r in _targets(rendered)
                       if kept_sections.row_step(r) != "serve"] == others
    assert serve_report.serve_targets(SAMPLE)[0] in _targets(rendered)


def test_every_step_section_of_the_committed_file_is_recognised():
    """A heading the registry no longer matches would make a re-render drop that section."""
    fixed = {"## Machine", "## Targets", "## Notes on this run", "## Errors",
             "## How to read this"}
    for block in kept_sections._blocks((BENCH / "RESULTS.md").read_text()):
        head = block[0]
        assert head in fixed or "run by hand" in head or any(
            head.startswith(s.heading) for s in kept_sections.STEPS.values()), head
    steps = {name for name, _, _ in run_all.plan(quick=False, llama=True)}
    assert steps <= set(kept_sections.STEPS), steps - set(kept_sections.STEPS)


def test_each_row_builder_s_rows_carry_their_step_s_mark():
    delay = {"summary": {"delay_ms": 2.0, "identical": True, "max_ratio": 0.5, "ratio": 0.4,
                         "pass": True},
             "runs": {"plain": [{"ms_per_token": 10.0}], "speculative": [{"ms_per_token": 4.0}]}}
    llama = {"threads": 2, "ratios": [
        {"ours": "ours auto Q8_0", "theirs": "llama.cpp Q8_0", "limit": 1.2, "ratio": 1.1,
         "paired": 1.1, "measure": "decode_ms_per_token"}]}
    ppl = {"limit": 0.01, "by_variant": {"Q8_0": {"rel_diff": 0.002, "pass": True}}}
    memory = {"summary": {"ratio": 0.2, "target": 0.4, "same_tokens": True,
                          "ratio_psutil": 0.19}}
    built = {
        "engine": report.engine_targets(None),
        "memory": report.memory_targets(None) + report.memory_targets(memory),
        "llama.cpp": report.same_file_targets([llama]),
        "perplexity": report.perplexity_targets(ppl),
        "speculative": speculative_report.speculative_targets({"delays": [delay]}),
        "serve": serve_report.serve_targets(SAMPLE),
    }
    for step, rows in built.items():
        assert rows and [kept_sections.row_step(r) for r in rows] == [step] * len(rows), step
    assert kept_sections.row_step("| target | limit | measured |") is None


def test_notes_merge_keeps_old_order_and_replaces_what_the_run_speaks_about():
    old = ["collectives took 5.0 min", "engine took 11.9 min", "Not about a step.",
           "llama.cpp, perplexity re-run on their own (run_all.py --only, 9 min)"]
    kept = {"collectives", "perplexity"}
    assert kept_sections.merge_items(old, ["engine took 1.0 min", "Not about a step."],
                                     kept) == [
        "collectives took 5.0 min", "Not about a step.",
        "llama.cpp, perplexity re-run on their own (run_all.py --only, 9 min)",
        "engine took 1.0 min"]
    # a kept step the fresh notes already speak about (run_notes.json) is not doubled
    assert kept_sections.merge_items(old, ["collectives took 4.0 min"], kept) == [
        "llama.cpp, perplexity re-run on their own (run_all.py --only, 9 min)",
        "collectives took 4.0 min"]
