"""`python -m core.cli --self-test`: the unfrozen path of the bundle's smoke test."""

from __future__ import annotations

import os
import subprocess
import sys


def test_self_test_passes_with_a_bare_environment(tmp_path):
    # Only what the interpreter needs to start; the self-test must isolate its own caches.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    p = subprocess.run([sys.executable, "-m", "core.cli", "--self-test"], capture_output=True,
                       text=True, timeout=240, env=env, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.strip().splitlines()
    assert lines and lines[-1].startswith("self-test passed: 2 ranks agree with 1 rank"), p.stdout
    assert list(tmp_path.iterdir()) == []  # wrote nothing outside its temp dir


def test_a_failed_check_prints_the_reason_and_exits_1(monkeypatch, capsys):
    from core import selftest

    for var in ("TPI_CHAT_CACHE", "HF_HOME", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE",
                "HF_HUB_DISABLE_PROGRESS_BARS", "TRANSFORMERS_VERBOSITY"):
        monkeypatch.setenv(var, "")  # main() points them at its temp dir; restored after

    def disagree(work):
        raise AssertionError("2 ranks gave [5, 6], 1 rank gave [5, 7]")

    monkeypatch.setattr(selftest, "run_self_test", disagree)
    assert selftest.main() == 1
    err = capsys.readouterr().err.strip()
    assert err == "self-test FAILED: AssertionError: 2 ranks gave [5, 6], 1 rank gave [5, 7]"
