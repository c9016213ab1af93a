"""The PyInstaller bundle, checked as a user gets it: dist/tpi-chat/tpi-chat.

Building takes about 5-6 minutes on 2 cores, too long for CI, so this is the release
check (packaging/README.md): `TPI_CHAT_BUNDLE_TEST=1` builds with `make bundle` first;
otherwise an already built dist/tpi-chat is checked, and without one the tests skip.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = ROOT / "dist" / "tpi-chat"
EXE = BUNDLE / ("tpi-chat.exe" if sys.platform == "win32" else "tpi-chat")
BUILD = os.environ.get("TPI_CHAT_BUNDLE_TEST") == "1"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (BUILD or EXE.exists()),
                       reason="no bundle: run `make bundle` or set TPI_CHAT_BUNDLE_TEST=1"),
]


def _size_mb(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file() and not f.is_symlink()
               ) / 2**20


@pytest.fixture(scope="module")
def bundle() -> Path:
    if BUILD:
        t0 = time.perf_counter()
        subprocess.run(["make", "bundle"], cwd=ROOT, check=True, timeout=1800)
        print(f"\nbundle built in {time.perf_counter() - t0:.0f} s")
    assert EXE.is_file()
    return BUNDLE


@pytest.mark.timeout(2400)
def test_self_test_passes_from_the_bundle_with_an_empty_environment(bundle):
    p = subprocess.run([str(EXE), "--self-test"], capture_output=True, text=True,
                       timeout=300, env={}, cwd="/")
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.strip().splitlines()[-1].startswith("self-test passed"), p.stdout
    if shutil.which("cc"):  # the bundle was built with its kernels; an empty env has no cc
        assert "compiled kernels" in p.stdout, p.stdout
    print(f"\n{p.stdout.strip()}\nbundle size: {_size_mb(bundle):.0f} MiB")


def test_bundle_ships_no_cuda_and_no_test_tools(bundle):
    names = [p.relative_to(bundle).as_posix().lower() for p in bundle.rglob("*")]
    assert not [n for n in names if n.rsplit("/", 1)[-1].startswith(("libcu", "libnccl"))]
    for tool in ("pytest", "_pytest", "ruff", "ipython", "tkinter", "matplotlib"):
        assert not [n for n in names if f"/{tool}/" in f"/{n}/"], tool


def test_app_starts_its_window_not_the_terminal_fallback(bundle, tmp_path):
    env = {"QT_QPA_PLATFORM": "offscreen", "HOME": str(tmp_path),
           "TPI_CHAT_CACHE": str(tmp_path / "cache")}
    proc = subprocess.Popen([str(EXE)], env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(15)
        alive = proc.poll() is None  # the terminal chat would quit at once on empty stdin
    finally:
        proc.terminate()
        try:
            out = proc.communicate(timeout=30)[0]
        except subprocess.TimeoutExpired:
            proc.kill()
            out = proc.communicate()[0]
    assert alive, out
    # The terminal fallback (when the GUI cannot be imported) starts with progress bars.
    assert "importing model" not in out and "Ctrl-D quits" not in out, out


def test_bundled_worker_advertises_itself_over_mdns(bundle, tmp_path):
    """The mini PC runs the same bundle as `tpi-chat worker`: a master must find it."""
    import re
    import threading

    from core.cluster.discovery import Browser

    seen: set[str] = set()
    lines: list[str] = []
    proc = subprocess.Popen([str(EXE), "worker", "--name", "bundled-mini", "--host",
                             "127.0.0.1", "--data-dir", str(tmp_path / "w"), "--pair"],
                            env={"HOME": str(tmp_path)}, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        with Browser(lambda ev: seen.add(ev.peer.fingerprint) if ev.kind != "remove"
                     else None, interfaces=["127.0.0.1"]):
            deadline = time.monotonic() + 90
            fp = None
            while time.monotonic() < deadline and (fp is None or fp not in seen):
                m = re.search(r"worker 'bundled-mini' \(([0-9a-f-]+)\)", "".join(lines))
                fp = m.group(1) if m else None
                time.sleep(0.2)
            assert fp is not None and fp in seen, ("not seen over mDNS", lines, seen)
    finally:
        proc.send_signal(2)  # SIGINT: the worker unregisters and says goodbye
        proc.wait(timeout=30)
        reader.join(5)
    out = "".join(lines)
    assert "pairing code: " in out and "worker stopped" in out, out
