"""Test-wide set-up: no hub access, a cache dir of the test session's own, and Ctrl-C
delivered to the processes tests start."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

# A suite started from a background job of a non-interactive shell (CI scripts, `cmd &`)
# inherits SIGINT ignored, and so would every process it starts: a test pressing Ctrl-C
# on `tpi-chat perplexity` then watched it run on. A handler here (not SIG_IGN) makes
# children start with the default action again.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session", autouse=True)
def _session_env(tmp_path_factory):
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    os.environ["TPI_CHAT_LOGS"] = str(tmp_path_factory.mktemp("tpi-logs"))  # never the user's
    # Keep an explicit TPI_CHAT_CACHE (CI points it at a reusable dir); else a fresh one.
    if "TPI_CHAT_CACHE" not in os.environ:
        os.environ["TPI_CHAT_CACHE"] = str(tmp_path_factory.mktemp("tpi-cache"))
    yield


@pytest.fixture(scope="session")
def built_kernels(_session_env) -> Path | None:
    """The kernel library compiled once into the session cache (None without a compiler);
    tests with caches of their own link it in: tests/fixtures/kernel_cache.py."""
    from tests.fixtures.kernel_cache import build_once

    return build_once(Path(os.environ["TPI_CHAT_CACHE"]))


@pytest.fixture
def remote_workers():
    """Workers on devices of their own (network namespaces on a bridge): see
    tests/fixtures/home_lan.py. Skipped where namespaces cannot be made (not root)."""
    from tests.fixtures import home_lan

    why = home_lan.available()
    if why is not None:
        pytest.skip(why)
    with home_lan.HomeLan() as lan:
        yield home_lan.RemoteWorkers(lan)
