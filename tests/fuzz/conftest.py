"""Hypothesis profiles for the fuzz tests, and the per-target tally they report.

HYPOTHESIS_PROFILE picks the budget: "ci" (the default: `make test`, a few seconds per
target, fixed seed) or "fuzz" (`make fuzz`: many more examples, random seed). The
numbers of examples can be overridden with TPI_FUZZ_DECODER_EXAMPLES and
TPI_FUZZ_PORT_EXAMPLES. Each target records what it tried in `TALLY`; the table is
printed at the end of the run and, with TPI_FUZZ_REPORT=path, written there as JSON
(`python -m tests.fuzz.report path` renders it as markdown).
"""

from __future__ import annotations

import json
import os
import time

import pytest
from hypothesis import HealthCheck, settings

from tests.fuzz.report import Tally, markdown

_COMMON = dict(deadline=None, database=None, print_blob=True,
               suppress_health_check=list(HealthCheck))
settings.register_profile("ci", derandomize=True, **_COMMON)
settings.register_profile("fuzz", derandomize=False, **_COMMON)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
if PROFILE not in ("ci", "fuzz"):
    raise pytest.UsageError(f"HYPOTHESIS_PROFILE must be ci or fuzz, not {PROFILE!r}")
settings.load_profile(PROFILE)

_BUDGET = {"ci": {"decoder": 400, "port": 300}, "fuzz": {"decoder": 8000, "port": 60_000}}


def examples(kind: str) -> int:
    """How many examples a target of `kind` ("decoder" or "port") runs in this profile."""
    env = os.environ.get(f"TPI_FUZZ_{kind.upper()}_EXAMPLES")
    return int(env) if env else _BUDGET[PROFILE][kind]


TALLY: dict[str, Tally] = {}


def tally(target: str, kind: str) -> Tally:
    return TALLY.setdefault(target, Tally(target, kind))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    target = getattr(item.function, "fuzz_target", None)
    if target and rep.when == "call" and rep.failed and target in TALLY:
        TALLY[target].crashes += 1
        TALLY[target].notes.append(str(rep.longrepr).splitlines()[-1][:200])


def pytest_sessionstart(session):
    session.config._fuzz_t0 = time.monotonic()


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not TALLY:
        return
    terminalreporter.write_sep("=", f"fuzz results (profile {PROFILE})")
    terminalreporter.write_line(markdown(list(TALLY.values())))
    path = os.environ.get("TPI_FUZZ_REPORT")
    if path:
        with open(path, "w") as f:
            json.dump({"profile": PROFILE,
                       "seconds": round(time.monotonic() - config._fuzz_t0, 1),
                       "targets": [t.to_dict() for t in TALLY.values()]}, f, indent=1)
