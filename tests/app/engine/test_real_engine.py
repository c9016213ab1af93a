"""The app on the real engine (LocalCluster) and a tiny random model built on the fly."""

from __future__ import annotations

import threading

import psutil
import pytest

from app.engine.worker import default_loader
from tests.app.conftest import caught, close_window, open_window, send

pytestmark = pytest.mark.slow

GREEDY = {"temperature": 0.0, "top_p": 1.0, "top_k": 0, "max_new_tokens": 12,
          "repetition_penalty": 1.0}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from tests.fixtures.tiny_models import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "llama", "llama")


@pytest.mark.parametrize("ranks", [1, 2])
def test_real_engine_streams_reply_off_the_gui_thread(qtbot, tiny_model, ranks):
    w = open_window(qtbot, default_loader, model=str(tiny_model), ranks=ranks,
                    sampling=GREEDY)
    assert w.status.cluster.text() == f"{ranks} rank" + ("s" if ranks > 1 else "")
    tokens: list[str] = []
    w.engine.worker.token.connect(tokens.append)
    with caught(qtbot, w.engine.worker.finished, timeout=60000) as done:
        send(qtbot, w, "What is the capital of France?", timeout=60000)
    stats = done.args[0]
    assert stats.new_tokens >= 1 and stats.prompt_tokens > 5 and tokens
    assert "".join(tokens) == stats.text
    shown = w.chat_view.messages[-1]
    assert shown.role == "assistant" and shown.text() == stats.text
    assert "tok/s" in w.status.speed.text()
    # torch ran on the engine thread only (the worker records every forward step's thread)
    worker = w.engine.worker
    assert worker.torch_thread_ids and threading.get_ident() not in worker.torch_thread_ids
    qtbot.waitUntil(lambda: len(w.devices.cards) == ranks, timeout=5000)
    close_window(w)
    # closing the window closed the cluster: no local rank process is left behind
    assert not [p for p in psutil.Process().children(recursive=True) if p.is_running()
                and p.status() != psutil.STATUS_ZOMBIE and "rank" in " ".join(p.cmdline())]
