"""The app's local API server (Settings -> Local API server) over the model the engine has
loaded: the same Generator as the app's chat, and every reply run on the engine thread
(`run_on`: EngineWorker.run_on_engine), so the API and the chat share the model, one
OpenMP team steps it (worker.py says why that matters), and the two never interleave (a
request waits while the user's reply streams, and the other way round).

Two inputs, from two threads: `configure(settings)` from the GUI (on/off, port, key, LAN;
the server is started or stopped on a thread of its own, so the GUI never waits), and
`attach(model)` from the engine thread after each load (and `attach(None)` before the model
closes: that one stops the server before returning, as ApiServer needs stopping before
its runner closes). `changed(ApiState)` says what runs, for the status bar and settings.
`set_context_overflow` gives the API's chats the app's context policy (Settings ->
Context); a running server restarts with it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import shiboken6
from PySide6.QtCore import QObject, Signal

from core.engine.context_policy import DROP_OLDEST
from core.engine.generate import GenerationResult, Generator
from core.errors import TpiError
from core.serve.hand_over import RunOn

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServedModel:
    """What the server needs of the loaded model."""

    tokenizer: Any  # ChatTokenizer
    generator: Generator
    name: str


@dataclass(frozen=True)
class ApiState:
    enabled: bool
    url: str = ""  # while serving
    error: str = ""  # why it is not serving although enabled
    requests: int = 0  # answered since it started

    def text(self) -> str:
        """The status bar's words."""
        if not self.enabled:
            return ""
        if self.url:
            return f"API {self.url.rsplit(':', 1)[-1]}"
        return "API off" if self.error else "API waiting for a model"


class ApiServerHost(QObject):
    """Runs at most one core.serve ApiServer, over the loaded model, as configured."""

    changed = Signal(object)  # ApiState

    def __init__(self, run_on: RunOn, on_step: Callable[[], None] | None = None,
                 parent: QObject | None = None):
        super().__init__(parent)
        self.run_on = run_on
        self.on_step = on_step  # after each token of a reply, on the engine thread
        self._state_lock = threading.Lock()
        self._reconcile_lock = threading.Lock()  # one start/stop at a time
        self._settings: dict | None = None  # app.store.settings_keys.API_SERVER's value
        self._model: ServedModel | None = None
        self._server = None  # core.serve.server.ApiServer
        self._served: tuple | None = None  # (settings, model) the server runs with
        self._requests = 0
        self._overflow = DROP_OLDEST  # what a chat longer than the context drops
        self.state = ApiState(False)

    def configure(self, settings: dict) -> None:
        """The user's settings (from any thread, returns at once)."""
        with self._state_lock:
            self._settings = dict(settings)
        threading.Thread(target=self._reconcile, name="tpi-api-config", daemon=True).start()

    def set_context_overflow(self, overflow: str) -> None:
        """The app's context policy, for the API's chats too (from any thread)."""
        with self._state_lock:
            if overflow == self._overflow:
                return
            self._overflow = overflow
        threading.Thread(target=self._reconcile, name="tpi-api-config", daemon=True).start()

    def attach(self, model: ServedModel | None) -> None:
        """The engine's model (None: it is about to close). Blocks until applied."""
        with self._state_lock:
            self._model = model
        self._reconcile()

    def stop(self) -> None:
        """Stop serving (the app quits)."""
        with self._state_lock:
            self._settings = None
        self._reconcile()

    def _reconcile(self) -> None:
        with self._reconcile_lock:
            with self._state_lock:
                settings, model, overflow = self._settings, self._model, self._overflow
            enabled = bool(settings and settings.get("enabled"))
            wanted = ((tuple(sorted(settings.items())), id(model), overflow)
                      if enabled and model else None)
            if self._server is not None and self._served != wanted:
                self._server.stop()
                self._server, self._served = None, None
                log.info("API server stopped")
            if wanted is not None and self._server is None:
                self._start(settings, model, wanted)
            elif not enabled:
                self._set(ApiState(False))
            elif model is None:
                self._set(ApiState(True))

    def _start(self, settings: dict, model: ServedModel, wanted: tuple) -> None:
        from core.serve.server import ApiServer, ServeConfig

        key = settings.get("api_key") or None
        if settings.get("lan") and not key:
            self._set(ApiState(True, error="Listening on the network needs an API key"))
            return
        config = ServeConfig(host="0.0.0.0" if settings.get("lan") else "127.0.0.1",
                             port=int(settings.get("port", 8080)), api_key=key,
                             context_overflow=wanted[2])
        try:
            server = ApiServer(model.tokenizer, None, model.name, config,
                               generator=model.generator, on_reply=self._on_reply,
                               run_on=self.run_on, on_step=self.on_step).start()
        except TpiError as e:
            log.warning("The API server did not start: %s", e)
            text = str(e)
            self._set(ApiState(True, error=text[:1].upper() + text[1:]))
            return
        self._server, self._served, self._requests = server, wanted, 0
        log.info("API server for %s at %s", model.name, server.url)
        self._set(ApiState(True, url=server.url))

    def _on_reply(self, _result: GenerationResult, _gone: bool) -> None:
        with self._state_lock:
            self._requests += 1
            state = ApiState(True, url=self.state.url, requests=self._requests)
        self._set(state)

    def _set(self, state: ApiState) -> None:
        self.state = state
        if shiboken6.isValid(self):
            self.changed.emit(state)
