"""The fuzz tally and its markdown table (`python -m tests.fuzz.report results.json`)."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field


@dataclass
class Tally:
    """What one fuzz target tried and saw."""

    target: str
    kind: str  # "decoder" (in-process) or "port" (a real process over a real socket)
    frames: int = 0  # messages tried
    refused: int = 0  # answered or raised as malformed (ProtocolError / refused)
    accepted: int = 0  # decoded and handled as valid
    crashes: int = 0  # failed runs: an exception that is not ProtocolError, a dead process
    seconds: float = 0.0
    rss_mb: float | None = None  # growth over the run (ports only)
    fds: int | None = None
    threads: int | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _growth(v, unit: str = "") -> str:
    return "-" if v is None else f"{v:+.1f}{unit}" if isinstance(v, float) else f"{v:+d}"


def markdown(tallies: list[Tally]) -> str:
    rows = ["| target | kind | frames tried | refused | accepted | crashes | frames/s "
            "| RSS growth | fds | threads |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for t in tallies:
        rate = t.frames / t.seconds if t.seconds else 0
        rows.append(f"| {t.target} | {t.kind} | {t.frames:,} | {t.refused:,} | "
                    f"{t.accepted:,} | {t.crashes} | {rate:,.0f} | "
                    f"{_growth(t.rss_mb, ' MB')} | {_growth(t.fds)} | "
                    f"{_growth(t.threads)} |")
    return "\n".join(rows)


def main(argv: list[str]) -> int:
    data = json.loads(open(argv[0]).read())
    tallies = [Tally(**t) for t in data["targets"]]
    print(f"profile {data['profile']}, {data['seconds']:.0f} s in all\n")
    print(markdown(tallies))
    for t in tallies:
        for n in t.notes:
            print(f"- {t.target}: {n}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
