"""The engine thread: loads a model, owns the ChatSession, streams replies as Qt signals.

`EngineWorker` is a QObject moved to its own QThread (see app/engine/host.py); the GUI
thread never runs torch and never waits on it. Loading goes through a *loader* callable so
tests can plug in another backend:

    loader(model: str | None, opts: RunOptions, progress(stage, done, total)) -> LoadedModel
    loader(..., devices=[WorkerSpec], on_status=rows_cb)  # when devices are enrolled

Every torch and kernel call of the model runs on this one thread, the local API server's
replies too (`run_on_engine`, given to core.serve through api_host.py): libgomp keeps one
OpenMP team per thread that ran a parallel region, and with two teams on 2 cores every
team sleeps between parallel regions, at about half the decode speed of both the chat and
the API (core/serve/engine_worker.py). The thread's event queue is the line: a chat reply
asked for while an API reply runs waits for it (`waiting_for_api`), and the other way
round, first come, first served.

`stop()` and `cancel_load()` are plain thread-safe methods meant to be called directly from
the GUI thread (a queued slot could not run while the engine thread is busy generating).
`set_remote_devices()` (same kind) hands over the enrolled devices
(DeviceRoster.worker_specs) for the next load: with any, default_loader runs a cluster
Session (through core.cluster.open_model, as the command line does) whose status thread
pushes `stats` once a second, even while a step waits on a device; a stage about one
device (core.progress.DeviceStage: shard shipping) is also reported as `device_progress`
under that device's name.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import shiboken6
from PySide6.QtCore import QObject, Qt, QThread, QTimer, Signal, Slot

from core.cluster.device_status import DeviceStatus, local_rows
from core.cluster.worker_spec import WorkerSpec
from core.engine.context_policy import ContextFull, ContextPolicy
from core.engine.options import RunOptions
from core.engine.sampler import SamplingParams
from core.errors import TpiError
from core.progress import DeviceStage, Progress

STATS_INTERVAL_S = 1.0

log = logging.getLogger(__name__)




class SessionLike(Protocol):
    """The part of core.engine.chat.ChatSession the worker uses."""

    system: str | None
    messages: list[dict]

    def send(self, text: str, params: SamplingParams, on_text=None, should_stop=None) -> Any: ...


@dataclass
class LoadedModel:
    """A model ready to chat: either tokenizer + runner (a real engine) or a session factory.

    `device_status` (a cluster Session) replaces `rank_stats`: its rows are complete, and
    the session pushes them itself; `current_world_size` changes after a re-plan, which
    `recover` starts at once after a failed reply (so the next message does not wait).
    """

    name: str
    world_size: int
    close: Callable[[], None]
    rank_stats: Callable[[], list] = field(default=lambda: [])
    tokenizer: Any = None
    runner: Any = None
    session_factory: Callable[[], SessionLike] | None = None
    device_status: Callable[[], list[DeviceStatus]] | None = None
    current_world_size: Callable[[], int] | None = None
    recover: Callable[[], None] | None = None  # re-plan over the devices still answering
    speculator: Any = None  # core.engine.speculative.Speculator: the draft, when one runs
    context: int = 0  # tokens the model sees at once (0: unknown)
    max_context: int = 0  # the model's own maximum


Loader = Callable[[str | None, RunOptions, Progress], LoadedModel]


@dataclass
class ReplyStats:
    """What the GUI shows about a finished reply."""

    text: str
    stop_reason: str
    new_tokens: int
    prompt_tokens: int
    ttft_ms: float
    tokens_per_s: float
    acceptance: float | None = None  # speculative decoding: share of drafts kept
    out_of_view: tuple[int, int] = (0, 0)  # [lo, hi) of the history the model did not see


class LoadCancelled(Exception):
    """Raised from a progress callback when the user cancelled the load."""


def default_loader(model: str | None, opts: RunOptions, progress: Progress,
                   devices: list[WorkerSpec] | None = None,
                   on_status: Callable[[list], None] | None = None) -> LoadedModel:
    """core.cluster.open_model: GGUF import with progress, tokenizer, then a LocalCluster,
    or a cluster Session when `devices` (enrolled workers) are given."""
    from app.store.db import data_dir
    from core.cluster.open_model import model_display_name, open_model, start_cluster
    from core.model.config import load_config

    model_dir, tokenizer = open_model(model, progress)
    runner = start_cluster(model_dir, opts, devices or [], data_dir=data_dir(),
                           progress=progress, on_status=on_status)
    try:
        spec = _draft(model_dir, tokenizer, opts, runner.world_size, progress, bool(devices))
    except BaseException:
        runner.close()
        raise

    def close() -> None:
        try:
            runner.close()
        finally:
            if spec is not None:
                spec.close()

    loaded = LoadedModel(name=model_display_name(model), world_size=runner.world_size,
                         close=close, tokenizer=tokenizer, runner=runner, speculator=spec,
                         context=runner.max_seq,
                         max_context=load_config(model_dir).max_position_embeddings)
    if devices:  # a Session: its rows are complete and it re-plans after a failure
        loaded.device_status = runner.device_status
        loaded.current_world_size = lambda: runner.world_size
        loaded.recover = runner.recover
    else:
        loaded.rank_stats = runner.rank_stats
    return loaded


def _draft(model_dir, tokenizer, opts: RunOptions, world_size: int, progress: Progress,
           devices: bool):
    """The draft model of opts.speculate; with "auto" one that cannot load only means
    replies come without it (logged), never a failed load."""
    from core.ranks.draft import start_speculator

    try:
        return start_speculator(model_dir, tokenizer, opts, world_size, progress, devices)
    except TpiError as e:
        if opts.speculate != "auto":
            raise
        log.warning("Speculative decoding is off: %s", e)
        return None


class _RecordingRunner:
    """A StepRunner proxy that records which thread runs each forward step."""

    def __init__(self, runner: Any, record: Callable[[], None]):
        self._runner, self._record = runner, record

    @property
    def max_seq(self) -> int:
        return self._runner.max_seq

    def step(self, ids: list[int], pos: int, all_logits: bool = False):
        self._record()
        if all_logits:  # a speculative step checking drafted tokens
            return self._runner.step(ids, pos, all_logits=True)
        return self._runner.step(ids, pos)


class EngineWorker(QObject):
    """Owns the model and the chat session; lives in the engine thread."""

    loading_progress = Signal(str, int, int)  # stage, done, total
    ready = Signal(str, int)  # model name, world size
    load_failed = Signal(str)
    load_cancelled = Signal()
    token = Signal(str)
    finished = Signal(object)  # ReplyStats
    failed = Signal(str)
    stats = Signal(list)  # list[DeviceStatus]
    device_progress = Signal(str, int, int)  # device name, bytes shipped, bytes to ship
    world_size_changed = Signal(int)  # after a re-plan (a device left the cluster)
    waiting_for_api = Signal(bool)  # a reply waits for an API request to finish
    context_info = Signal(int, int)  # after a load: context in use, the model's maximum
    _run_requested = Signal(object)  # a call for the engine thread (run_on_engine)

    def __init__(self, loader: Loader = default_loader):
        super().__init__()
        self._loader = loader
        self._model: LoadedModel | None = None
        self._session: SessionLike | None = None
        # replies are numbered as asked for (reply_requested, GUI thread); stop() stops
        # every one asked for so far, and answers at once one that has not begun
        self._asked = 0  # the last reply asked for
        self._begun = 0  # the last reply whose send began on the engine thread
        self._stopped = 0  # replies up to this one are stopped
        self._answered = 0  # replies up to this one were answered by stop() already
        self._waiting = False  # the last reply asked for waits for an API reply
        self._api_calls = 0  # API replies posted to the engine thread and not over
        self._cancelled_seq = -1
        self._lock = threading.Lock()
        self._busy = False
        self._last_stats = 0.0
        self._last_tps: float | None = None
        self._timer: QTimer | None = None
        self._remote: list[WorkerSpec] = []
        self._policy = ContextPolicy()
        self._load_id = 0  # status rows of a closed session must not reach the panel
        self._stats_error: str | None = None  # the last stats failure logged (not repeats)
        #: thread ids that ran generate / a forward step (tests assert the GUI thread is absent)
        self.torch_thread_ids: set[int] = set()
        self.api = None  # an ApiServerHost, given the model after each load
        self._run_requested.connect(self._run_call, Qt.ConnectionType.QueuedConnection)

    # thread-safe, called directly from the GUI thread ----------------------------------
    def reply_requested(self) -> int:
        """A reply is about to be asked for (before EngineHost's send signal): its number.
        If an API reply holds the engine thread, the reply will wait: says so now, as the
        engine thread cannot until the API reply is over."""
        with self._lock:
            self._asked += 1
            self._waiting = self._api_calls > 0
            n, waiting = self._asked, self._waiting
        if waiting:
            self.waiting_for_api.emit(True)
        return n

    def stop(self) -> None:
        """Ask the running reply to end after its current token; a reply still waiting
        for an API reply to end is answered at once (and never runs)."""
        with self._lock:
            self._stopped = self._asked
            waiting = self._asked > max(self._begun, self._answered)
            if waiting:
                self._answered = self._asked
            waited, self._waiting = self._waiting, False
        if waiting:
            if waited:
                self.waiting_for_api.emit(False)
            self.failed.emit("Stopped while an API request was using the model."
                             if waited else "Stopped.")

    def run_on_engine(self, call: Callable[[], None]) -> None:
        """Run `call` on the engine thread after whatever was asked of it before (the
        API's replies: core.serve's RunOn); returns at once."""
        with self._lock:
            self._api_calls += 1
        self._run_requested.emit(call)

    def cancel_load(self, seq: int) -> None:
        """Discard the result of load number `seq` (and abort its import if still running)."""
        with self._lock:
            self._cancelled_seq = max(self._cancelled_seq, seq)

    def set_remote_devices(self, specs: list[WorkerSpec]) -> None:
        """The paired devices the next load may use."""
        with self._lock:
            self._remote = list(specs)

    def set_context_overflow(self, overflow: str) -> None:
        """What the next replies do when the conversation outgrows the context."""
        with self._lock:
            self._policy = ContextPolicy(overflow)

    def remote_devices(self) -> list[WorkerSpec]:
        with self._lock:
            return list(self._remote)

    def _is_cancelled(self, seq: int) -> bool:
        with self._lock:
            return self._cancelled_seq >= seq

    def _record_thread(self) -> None:
        self.torch_thread_ids.add(threading.get_ident())

    # slots, run in the engine thread -------------------------------------------------
    @Slot()
    def start(self) -> None:
        """Start the once-a-second stats timer (called when the thread starts)."""
        # Python sees a QThread as "Dummy-N": give the log's thread column the Qt name
        threading.current_thread().name = QThread.currentThread().objectName() or "engine"
        self._timer = QTimer(self)
        self._timer.setInterval(int(STATS_INTERVAL_S * 1000))
        self._timer.timeout.connect(self._emit_stats)
        self._timer.start()

    @Slot(int, object, object)
    def load(self, seq: int, model: str | None, opts: RunOptions) -> None:
        """Load `model` (None = the default model), replacing the current one."""
        self._close_model()
        if self._is_cancelled(seq):
            self.load_cancelled.emit()
            return

        def progress(stage: str, done: int, total: int) -> None:
            if self._is_cancelled(seq):
                raise LoadCancelled  # also aborts a shard transfer (ship_sender)
            self.loading_progress.emit(str(stage), int(done), int(total))
            if isinstance(stage, DeviceStage):  # e.g. shards going to a paired device
                self.device_progress.emit(stage.device, int(done), int(total))

        self._load_id += 1
        load_id = self._load_id

        def on_status(rows: list) -> None:  # the session's status thread, not this one
            if load_id == self._load_id and self._model is not None:
                self.stats.emit(rows)

        remote = self.remote_devices()
        extra = dict(devices=remote, on_status=on_status) if remote else {}
        what = model or "the default model"
        try:
            self._record_thread()
            loaded = self._loader(model, opts, progress, **extra)
        except LoadCancelled:
            log.info("Loading %s was cancelled", what)
            self.load_cancelled.emit()
            return
        except TpiError as e:  # worded for the user, who sees it: no traceback needed
            log.warning("Loading %s failed: %s", what, e)
            self.load_failed.emit(str(e))
            return
        except Exception as e:  # a bug, but the app must survive it
            log.exception("Loading %s failed unexpectedly", what)
            self.load_failed.emit(f"Loading the model failed: {e}")
            return
        if self._is_cancelled(seq):
            loaded.close()
            self.load_cancelled.emit()
            return
        self._model = loaded
        if loaded.session_factory is not None:
            self._session = loaded.session_factory()
        else:
            from core.engine.chat import ChatSession

            runner = _RecordingRunner(loaded.runner, self._record_thread)
            self._session = ChatSession(loaded.tokenizer, runner)
            self._session.generator.speculator = loaded.speculator
        log.info("Loaded %s (%s) on %d ranks", loaded.name, what, loaded.world_size)
        self._serve(loaded)
        self.ready.emit(loaded.name, loaded.world_size)
        if loaded.context:
            self.context_info.emit(loaded.context, loaded.max_context or loaded.context)
        self._emit_stats(force=True)

    @Slot(object)
    def _run_call(self, call: Callable[[], None]) -> None:
        """An API reply (run_on_engine), between the chat's replies."""
        self._busy = True
        try:
            call()
        except Exception:  # core.serve's run() never raises: a bug, but the app survives
            log.exception("An API reply failed unexpectedly")
        finally:
            self._busy = False
            with self._lock:
                self._api_calls -= 1
        self._emit_stats(force=True)

    def api_step(self) -> None:
        """After each token of an API reply, on this thread: the 1 s timer cannot fire while
        the reply runs, so the stats go out from here, as the chat's own replies do."""
        if time.monotonic() - self._last_stats >= STATS_INTERVAL_S:
            self._emit_stats()

    @Slot(int, list, str, object)
    def send(self, n: int, messages: list[dict], system: str, params: SamplingParams
             ) -> None:
        """Reply to `messages` (role/content dicts ending with the user's turn); `n` is
        reply_requested()'s number for it."""
        with self._lock:
            self._begun = max(self._begun, n)
            if n <= self._answered:  # stopped while it waited: already answered
                return
            waited = self._waiting and n == self._asked
            if waited:
                self._waiting = False
        if waited:
            self.waiting_for_api.emit(False)

        def stopped() -> bool:
            return self._stopped >= n

        session = self._session
        if session is None:
            self.failed.emit("No model is loaded yet.")
            return
        if not messages or messages[-1].get("role") != "user":
            self.failed.emit("There is no user message to reply to.")
            return
        # A conversation switch, regenerate or edit just rewrites the history: the
        # Generator reuses the KV cache of whatever prefix is unchanged.
        session.system = system or None
        session.messages = [dict(role=m["role"], content=m["content"]) for m in messages[:-1]]
        with self._lock:
            policy = self._policy
        if getattr(session, "policy", policy) != policy:
            session.set_policy(policy)
        self._busy = True
        self._record_thread()

        def on_text(piece: str) -> None:
            self.token.emit(piece)
            if time.monotonic() - self._last_stats >= STATS_INTERVAL_S:
                self._emit_stats()

        try:
            reply = session.send(messages[-1]["content"], params, on_text, stopped)
        except ContextFull as e:  # the stop policy: nothing failed, the chat is full
            self._busy = False
            text = str(e)
            self.failed.emit(text[:1].upper() + text[1:] + ".")
            return
        except TpiError as e:
            log.warning("The reply failed: %s", e)
            self._busy = False
            text = str(e)
            self.failed.emit(text[:1].upper() + text[1:])  # a sentence for the chat
            self._recover()
            self._emit_stats(force=True)  # e.g. the device that dropped out, now offline
            return
        except Exception as e:
            log.exception("The reply failed unexpectedly")
            self._busy = False
            self.failed.emit(f"The reply failed: {e}")
            return
        self._busy = False
        r = reply.result
        self._last_tps = r.tokens_per_s
        self.finished.emit(ReplyStats(
            text=reply.text, stop_reason=r.stop_reason, new_tokens=len(r.token_ids),
            prompt_tokens=r.prompt_tokens, ttft_ms=r.ttft_ms, tokens_per_s=r.tokens_per_s,
            acceptance=getattr(r, "acceptance", None),
            out_of_view=(reply.out_of_view.start, reply.out_of_view.stop),
        ))
        self._emit_stats(force=True)
        self._check_world_size()

    @Slot()
    def shutdown(self) -> None:
        """Close the model, drop the timer and end the engine thread's event loop."""
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.stop()
            shiboken6.delete(timer)  # timers must die in the thread that owns them
        self._close_model()
        QThread.currentThread().quit()

    # internals -----------------------------------------------------------------------
    def _serve(self, loaded: LoadedModel) -> None:
        """Hand a real engine's model to the API server (a test's fake session has none)."""
        session = self._session
        generator = getattr(session, "generator", None)
        if self.api is not None and loaded.tokenizer is not None and generator is not None:
            from app.engine.api_host import ServedModel

            self.api.attach(ServedModel(loaded.tokenizer, generator, loaded.name))

    def _close_model(self) -> None:
        if self.api is not None:
            self.api.attach(None)  # stops the server before its runner closes
        model, self._model, self._session = self._model, None, None
        self._load_id += 1
        if model is not None:
            try:
                model.close()
            except Exception:  # the next model loads regardless
                log.exception("Closing the model %s failed", model.name)

    def _recover(self) -> None:
        m = self._model
        if m is None or m.recover is None:
            return
        try:
            m.recover()
        except Exception:  # the next message tries again, and says why if it fails
            log.exception("Re-planning over the devices still answering failed")
        self._check_world_size()

    def _check_world_size(self) -> None:
        m = self._model
        if m is not None and m.current_world_size is not None:
            n = m.current_world_size()
            if n and n != m.world_size:
                m.world_size = n
                self.world_size_changed.emit(n)

    @Slot()
    def _emit_stats(self, force: bool = False) -> None:
        """Rows for the panel (a Session pushes its own each second: only when `force`)."""
        self._last_stats = time.monotonic()
        m = self._model
        if m is None or (m.device_status is not None and not force):
            return
        try:
            if m.device_status is not None:
                devices: list[DeviceStatus] = m.device_status()
            else:
                devices = local_rows(m.rank_stats(), self._busy, self._last_tps)
        except Exception as e:  # the panel keeps its last rows; the timer tries again
            self._log_stats_error(e)
            return
        self._stats_error = None
        self.stats.emit(devices)

    def _log_stats_error(self, e: Exception) -> None:
        """Log a failure to read the device rows once, not every second it repeats."""
        text = f"{type(e).__name__}: {e}"
        if text != self._stats_error:
            self._stats_error = text
            log.warning("Reading the devices' status failed (repeats are not logged)",
                        exc_info=e)
        else:
            log.debug("Reading the devices' status failed again: %s", text)
