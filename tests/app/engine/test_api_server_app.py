"""Settings -> Local API server on the real engine (a tiny model): the app's chat and a
real HTTP client (the openai package) share the model, each waiting for the other."""

from __future__ import annotations

import os
import socket
import threading
import time

import pytest
from PySide6.QtCore import Qt

from app.engine.worker import default_loader
from benchmarks.thread_counts import per_token, thread_counts
from tests.app.conftest import close_window, open_window, send

pytestmark = pytest.mark.slow

LONG = {"temperature": 0.0, "top_p": 1.0, "top_k": 0, "max_new_tokens": 150,
        "repetition_penalty": 1.0}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from tests.fixtures.tiny_models import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "llama", "llama",
                           max_position_embeddings=512)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serving_window(qtbot, model, **api):
    port = free_port()
    w = open_window(qtbot, default_loader, model=str(model), sampling=LONG,
                    api_server={"enabled": True, "port": port, "api_key": "", "lan": False,
                                **api})
    # the state is set on the server's thread, the status bar by a queued signal: wait for it
    qtbot.waitUntil(lambda: w.status.api.text() == f"API {port}", timeout=30000)
    assert w.status.api.isVisible() and w.engine.api.state.url
    return w, f"http://127.0.0.1:{port}/v1"


def slow_steps(w, seconds: float = 0.01) -> None:
    """Every forward step of the window's model takes at least `seconds`."""
    runner = w.engine.worker._session.generator.runner
    step = runner.step

    def slow(*args, **kwargs):
        time.sleep(seconds)
        return step(*args, **kwargs)

    runner.step = slow


def client(url: str):
    import openai

    return openai.OpenAI(base_url=url, api_key="none", max_retries=0, timeout=120)


def stream_api(url: str, out: dict, started: threading.Event | None = None) -> None:
    """One streamed chat completion; records when its first and last text came."""
    stream = client(url).chat.completions.create(
        model="llama", messages=[{"role": "user", "content": "tell me a story"}],
        max_tokens=150, temperature=0, stream=True)
    text = ""
    for chunk in stream:
        piece = chunk.choices[0].delta.content if chunk.choices else None
        if piece:
            out.setdefault("first", time.monotonic())
            text += piece
            if started is not None:
                started.set()
    out["last"] = time.monotonic()
    out["text"] = text


def test_an_api_request_waits_for_the_users_reply(qtbot, tiny_model):
    w, url = serving_window(qtbot, tiny_model)
    loaded_on = set(w.engine.worker.torch_thread_ids)  # the engine thread, which loaded it
    app_done: dict = {}
    w.engine.worker.finished.connect(lambda _s: app_done.setdefault("t", time.monotonic()))
    tokens: list[float] = []
    w.engine.worker.token.connect(lambda _p: tokens.append(time.monotonic()))
    api: dict = {}
    w.composer.editor.setPlainText("hello")
    qtbot.keyClick(w.composer.editor, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: len(tokens) >= 3, timeout=30000)  # the user's reply streams
    t = threading.Thread(target=stream_api, args=(url, api), daemon=True)
    t.start()
    qtbot.waitUntil(lambda: "t" in app_done, timeout=60000)
    qtbot.waitUntil(lambda: not t.is_alive(), timeout=60000)
    assert api["text"] and app_done["t"] <= api["first"]  # it waited, then got its answer
    # the API's reply stepped the model on the engine thread too: a second thread would
    # give libgomp a second OpenMP team, and both the API and the chat would decode at
    # about half speed (core/serve/engine_worker.py)
    assert len(loaded_on) == 1 and w.engine.worker.torch_thread_ids == loaded_on
    # the count is updated once the server has finished the reply, which can be just
    # after the client read its last chunk (failed a fresh-clone CI run once)
    qtbot.waitUntil(lambda: "1 answered" in w.settings.api_server.state.text(), timeout=5000)
    # the API and the chat share one Generator: its KV cache bookkeeping stays right, so
    # the same message in a new chat gets the same (greedy) reply after the API's turn
    before = w.chat_view.messages[-1].text()
    w.new_chat()
    send(qtbot, w, "hello", timeout=60000)
    assert before and w.chat_view.messages[-1].text() == before
    close_window(w)


def test_the_users_reply_waits_for_an_api_request_then_off_and_port_taken(qtbot, tiny_model):
    w, url = serving_window(qtbot, tiny_model)
    slow_steps(w)  # the API's first reply lasts, so the second one is surely queued
    waited: list[bool] = []
    w.engine.worker.waiting_for_api.connect(waited.append)
    api: dict = {}
    started = threading.Event()
    t = threading.Thread(target=stream_api, args=(url, api, started), daemon=True)
    t.start()
    qtbot.waitUntil(started.is_set, timeout=60000)  # the API's reply streams
    queued: dict = {}  # a second request waits in the server's queue
    t2 = threading.Thread(target=stream_api, args=(url, queued), daemon=True)
    t2.start()
    qtbot.waitUntil(lambda: w.engine.api._server.queue.waiting() == 1, timeout=30000)
    first: dict = {}
    w.engine.worker.token.connect(lambda _p: first.setdefault("t", time.monotonic()))
    send(qtbot, w, "hello", timeout=60000)
    t.join(60)
    t2.join(60)
    assert waited[:1] == [True]  # the chat said it waited for the API
    assert api["text"] and api["last"] <= first["t"]
    # the user waited for the running request only, not for the queued one too
    assert queued["text"] and first["t"] < queued["first"]
    assert w.chat_view.messages[-1].role == "assistant" and w.chat_view.messages[-1].text()
    # turned off, nothing listens; on again on a taken port, it says why it is off
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    w.settings.api_server.enabled.setChecked(False)
    qtbot.waitUntil(lambda: not w.status.api.isVisible(), timeout=10000)  # (queued)
    assert not w.engine.api.state.enabled
    with socket.socket() as s, pytest.raises(OSError):
        s.settimeout(2)
        s.connect(("127.0.0.1", port))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        w.settings.api_server.port.setValue(taken.getsockname()[1])
        w.settings.api_server.enabled.setChecked(True)
        qtbot.waitUntil(lambda: w.status.api.text() == "API off", timeout=10000)
        assert "cannot listen" in w.engine.api.state.error.lower()
    w.settings.api_server.lan.setChecked(True)  # the network needs a key
    qtbot.waitUntil(lambda: "needs an API key" in w.engine.api.state.error, timeout=10000)
    close_window(w)


def test_esc_while_the_users_reply_waits_for_an_api_request(qtbot, tiny_model):
    """The reply waits on the engine thread's queue behind the API's: Esc answers it at
    once, the API's reply goes on, and the next message is answered."""
    w, url = serving_window(qtbot, tiny_model)
    slow_steps(w, 0.02)  # the API's reply lasts 3 s or more
    api: dict = {}
    started = threading.Event()
    t = threading.Thread(target=stream_api, args=(url, api, started), daemon=True)
    t.start()
    qtbot.waitUntil(started.is_set, timeout=60000)
    w.composer.editor.setPlainText("hello")
    qtbot.keyClick(w.composer.editor, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: "Waiting for an API request" in w.status.stage.text(),
                    timeout=10000)
    qtbot.keyClick(w.composer.editor, Qt.Key.Key_Escape)
    qtbot.waitUntil(lambda: not w.controller.busy, timeout=5000)
    assert t.is_alive()  # answered before the API's reply ended
    assert w.controller.last_error == "Stopped while an API request was using the model."
    t.join(60)
    assert api["text"]
    send(qtbot, w, "hello again", timeout=60000)
    assert w.chat_view.messages[-1].role == "assistant" and w.chat_view.messages[-1].text()
    close_window(w)


def test_after_an_api_reply_the_chats_openmp_threads_do_not_sleep_between_regions(
        qtbot, tiny_model):
    """Counts, not wall-clock (the machine may be loaded): libgomp makes every OpenMP
    team sleep between parallel regions once more threads than cores ran them. On main,
    where the API's replies ran on a thread of their own, an OpenMP worker of the chat's
    reply after an API reply slept 36 times a token (a tiny model; ~190 with the default
    one); on the engine thread alone, under 1."""
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one core: torch runs no OpenMP team")
    w, url = serving_window(qtbot, tiny_model)
    api: dict = {}
    stream_api(url, api)  # a reply of the API first, then the app's chat
    assert api["text"]
    stats: list = []
    w.engine.worker.finished.connect(stats.append)
    engine: list[int] = []  # the engine thread's id for the OS
    w.engine.worker.run_on_engine(lambda: engine.append(threading.get_native_id()))
    qtbot.waitUntil(lambda: bool(engine), timeout=10000)
    python_threads = {t.native_id for t in threading.enumerate()} - set(engine)
    before = thread_counts()
    send(qtbot, w, "hello", timeout=60000)
    after = thread_counts()
    n = stats[-1].new_tokens
    assert n >= 20
    # the threads that worked in this reply and that Python does not run (OpenMP's
    # workers among them), and the engine thread, which leads its OpenMP team
    rows = {"engine" if tid == engine[0] else tid: round(vol, 1)
            for us, vol, tid in per_token(before, after, n)
            if us >= 50 and tid not in python_threads}
    assert "engine" in rows and len(rows) >= 2, rows  # an OpenMP worker worked too
    print("voluntary switches per token:", rows)
    assert max(rows.values()) < 10, f"voluntary switches per token: {rows}"
    close_window(w)


def test_the_devices_panel_goes_on_updating_during_an_api_reply(qtbot, tiny_model,
                                                                 monkeypatch):
    """An API reply runs on the engine thread, where the panel's 1 s timer lives: it cannot
    fire until the reply ends, and the panel froze. The reply's tokens now push the stats,
    as the chat's own do, and the rows say the device is busy."""
    import app.engine.worker as engine_worker

    monkeypatch.setattr(engine_worker, "STATS_INTERVAL_S", 0.05)
    w, url = serving_window(qtbot, tiny_model)
    slow_steps(w, 0.01)  # 150 tokens: 1.5 s or more
    rows: list = []
    w.engine.worker.stats.connect(lambda r: rows.append((time.monotonic(), r)))
    api: dict = {}
    t = threading.Thread(target=stream_api, args=(url, api), daemon=True)
    t.start()
    qtbot.waitUntil(lambda: not t.is_alive(), timeout=60000)
    assert api["text"]
    # busy rows from the reply's own tokens (the update forced as it ends says "ready", and
    # may land before the client reads the last chunk)
    during = [r for at, r in rows if api["first"] <= at <= api["last"]
              and r and r[0].state == "busy"]
    took = api["last"] - api["first"]
    assert len(during) >= 3, f"{len(during)} busy stats updates in a {took:.1f} s reply"
    qtbot.waitUntil(lambda: rows[-1][1][0].state == "ready", timeout=5000)
    close_window(w)
