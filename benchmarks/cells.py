"""Table cells shared by the RESULTS.md sections: numbers and PASS/MISS verdicts."""

from __future__ import annotations


def fmt(x, nd: int = 1) -> str:
    """A number with `nd` decimals if float, as is otherwise; '-' when missing."""
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{nd}f}"
    return str(x)


def verdict(value, limit) -> str:
    """PASS when `value` is at most `limit` (every target is an upper bound)."""
    if value is None:
        return "not measured"
    return "PASS" if value <= limit else "MISS"


def code_of(machine: dict) -> str:
    """' (code <commit ...>)' for a section's "Started" line, '' when not recorded."""
    return f" (code {machine['code']})" if machine.get("code") else ""
