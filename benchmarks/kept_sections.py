"""What a re-render of RESULTS.md keeps from the RESULTS.md it replaces.

Each step's section, its rows of the Targets table and its notes are rendered from its JSON
in benchmarks/out. When that JSON is missing (a reset machine, a step that needs LLAMA_CPP=1
or root), re-rendering would drop them, so report.render() carries that step's part of the
current RESULTS.md over verbatim instead. A step's section is found by its "## " heading,
its Targets rows by a mark in their first cell, its notes and errors by their first word
(run_all.py writes "<step> took 3.1 min", "<step> exited with 1").
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Step:
    heading: str  # what the step's "## " heading starts with (its section runs to the next)
    marks: tuple[str, ...] = ()  # a Targets row is the step's if its first cell holds one


# Keyed by run_all.py's step names. tests/benchmarks/test_kept_sections.py checks the
# headings and marks against what the *_report.py builders write.
STEPS: dict[str, Step] = {
    "collectives": Step("## Collectives ("),
    "engine": Step("## Engine: ", ("1 rank, all resident: decode ms/token vs transformers",
                                   "2 ranks vs 1 rank (window all)")),
    "memory": Step("## Memory: ", ("64-layer Llama",)),
    "streaming": Step("## Streaming behind compute "),
    "70b": Step("## Llama 2-70B-shaped layers "),
    "speculative": Step("## Speculative decoding ", ("speculative / plain decode",)),
    "serve": Step("## The API against the engine ", ("streamed through the API",)),
    "planner": Step("## Planner on "),
    "llama.cpp": Step("## Ours vs llama.cpp, ", ("same file,",)),
    "perplexity": Step("## Perplexity: ", ("perplexity, ours / llama.cpp",)),
}


@dataclass
class Previous:
    """The parts of an earlier RESULTS.md that belong to steps (or to the whole run)."""
    sections: dict[str, list[str]] = field(default_factory=dict)  # step -> its "## " blocks
    rows: dict[str, list[str]] = field(default_factory=dict)  # step -> its Targets rows
    machine: list[str] = field(default_factory=list)  # the "## Machine" block
    notes: list[str] = field(default_factory=list)  # "## Notes on this run" items
    errors: list[str] = field(default_factory=list)  # "## Errors" items


def _blocks(text: str) -> list[list[str]]:
    """The "## " sections of a markdown text, each with its heading and every line up to the
    next one (its trailing blank line included); the text before the first is left out."""
    blocks: list[list[str]] = []
    for line in text.splitlines():
        if line.startswith("## "):
            blocks.append([])
        if blocks:
            blocks[-1].append(line)
    return blocks


def row_step(row: str) -> str | None:
    """The step a Targets table row belongs to, by the marks in its first cell."""
    first = row.strip("|").split("|", 1)[0]
    return next((name for name, s in STEPS.items() if any(m in first for m in s.marks)), None)


def note_steps(note: str) -> set[str]:
    """The steps a note or error names at its start: "engine took 11.9 min" -> {"engine"},
    "llama.cpp, perplexity re-run on their own (...)" -> both."""
    named = set()
    for word in note.split():
        word = word.rstrip(",")
        if word not in STEPS:
            break
        named.add(word)
    return named


def parse(text: str, exclude: Iterable[str] = ()) -> Previous:
    """The step parts of `text`, leaving out those of the steps in `exclude` (those this run
    measured: their old numbers must not come back if the new run failed)."""
    skip = set(exclude)
    prev = Previous()
    for block in _blocks(text):
        head = block[0]
        items = [line[2:] for line in block if line.startswith("- ")]
        if head == "## Machine":
            prev.machine = block
        elif head == "## Notes on this run":
            prev.notes = [n for n in items if not note_steps(n) & skip]
        elif head == "## Errors":
            prev.errors = [e for e in items if not note_steps(e) & skip]
        elif head == "## Targets":
            for row in block:
                step = row_step(row) if row.startswith("| ") else None
                if step and step not in skip:
                    prev.rows.setdefault(step, []).append(row)
        else:
            step = next((n for n, s in STEPS.items() if head.startswith(s.heading)), None)
            if step and step not in skip:
                prev.sections.setdefault(step, []).extend(block)
    return prev


def merge_items(old: list[str], fresh: list[str], kept: set[str]) -> list[str]:
    """Notes (or errors) of this render: the old list's order, with its items of the kept
    steps that the fresh list says nothing about, and every fresh item (new ones last)."""
    left = list(fresh)
    spoken = set().union(*(note_steps(n) for n in fresh))
    out = []
    for item in old:
        if item in left:
            left.remove(item)
            out.append(item)
        elif note_steps(item) & (kept - spoken):
            out.append(item)
    return out + left
