"""core.cli_commands' progress on stderr: shards going to a device get the device card's
line, and a stage left unfinished does not leave the next one drawn over its tail."""

from __future__ import annotations

import io

from core.cli_commands import _stage_progress
from core.progress import DeviceStage

MB = 1_000_000


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_shipping_to_a_device_prints_the_cards_line(monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    clock, out = FakeClock(), io.StringIO()
    report = _stage_progress(out, clock)
    stage = DeviceStage("sending shards to 'mini-pc'", "mini-pc")
    done = 412 * MB - 60 * 1_130_000
    report(stage, done, 980 * MB)
    for _ in range(61):
        clock.t += 0.1
        done += 1_130_000 if done < 412 * MB else 0
        report(stage, done, 980 * MB)
    row = out.getvalue().rsplit("\r", 1)[-1].rstrip()
    assert row.startswith("'mini-pc' [#")
    assert row.endswith("] Shipping 412 / 980 MB \u00b7 11.3 MB/s \u00b7 50 s left")
    report(stage, 980 * MB, 980 * MB)
    report("starting ranks", 1, 1)
    lines = out.getvalue().split("\n")
    assert "] Shipped 980 MB \u00b7 " in lines[0] and lines[1].startswith("\rstarting ranks [")


def test_a_ship_given_up_ends_its_line_before_the_next_stage(monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    clock, out = FakeClock(), io.StringIO()
    report = _stage_progress(out, clock)
    report(DeviceStage("sending shards to 'nas'", "nas"), 5 * MB, 900 * MB)  # then it fails
    report("splitting model", 0, 3)
    first, second = out.getvalue().split("\n", 1)
    assert first.startswith("\r'nas' [") and "Shipping 5 / 900 MB" in first
    assert second.startswith("\rsplitting model [")
