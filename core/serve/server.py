"""ApiServer: the API over a started model, in threads of its own.

    server = ApiServer(tokenizer, runner, "SmolLM2-135M-Instruct", ServeConfig()).start()
    print(server.url)            # http://127.0.0.1:8080
    server.stop()                # before runner.close()

Threads: uvicorn's event loop (HTTP), the front desk (tokenize and admit, in arrival
order) and the model worker (the only one that steps the runner; `tpi-chat serve` runs its
jobs on the main thread, which loaded the model: start(model_thread=False) and
worker.serve_here). The app can run one from its engine thread over the model it
has loaded: pass its ChatSession's `generator` (so the KV bookkeeping of the app's chat and
of the API stay one) and `run_on`, which posts the replies to the engine thread (the model
worker's thread then only hands them over, hand_over.py); start() and stop() return
promptly and may be called from any thread but the server's own (stop() on the engine
thread too: a reply posted there and not begun is withdrawn).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import uvicorn

from core.comm.endpoint import is_loopback
from core.engine.context_policy import DROP_OLDEST, ContextPolicy
from core.engine.generate import GenerationResult, Generator, StepRunner
from core.errors import TpiError
from core.model.tokenizer import ChatTokenizer
from core.serve.app import Service, build_app
from core.serve.desk import FrontDesk
from core.serve.engine_worker import JobQueue, ModelWorker
from core.serve.hand_over import RunOn

START_TIMEOUT_S = 30.0


@dataclass
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    api_key: str | None = None
    max_queue: int = 16  # requests waiting behind the running one; more get a 503
    max_body: int = 1_000_000  # bytes of a request body; more get a 413 unparsed
    context_overflow: str = DROP_OLDEST  # a chat longer than the context (context_policy.py)
    stream_interval_ms: float = 50.0  # streamed text at most this often (text_batcher.py)


def check_exposure(host: str, api_key: str | None) -> None:
    """Anything but loopback lets other computers use the model: that needs a key."""
    if not is_loopback(host) and not api_key:
        raise TpiError(f"--host {host} would let other computers use the model, so it needs "
                       "--api-key KEY too (or keep the default --host 127.0.0.1).")


def listen_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0: any free one), or a TpiError."""
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as e:
        raise TpiError(f"cannot listen on {host}:{port} ({e.strerror or e})") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(128)
    except OSError as e:
        sock.close()
        raise TpiError(f"cannot listen on {host}:{port} ({e.strerror or e})") from None
    sock.set_inheritable(False)
    return sock


class ApiServer:
    def __init__(self, tokenizer: ChatTokenizer, runner: StepRunner | None, model_name: str,
                 config: ServeConfig, *, generator: Generator | None = None,
                 on_reply: Callable[[GenerationResult, bool], None] | None = None,
                 run_on: RunOn | None = None, on_step: Callable[[], None] | None = None):
        check_exposure(config.host, config.api_key)
        if generator is None:
            if runner is None:
                raise ValueError("ApiServer needs a runner or a generator")
            generator = Generator(runner, tokenizer.eos_ids)
        self.config = config
        self.model_name = model_name
        self.queue = JobQueue(config.max_queue)
        self.worker = ModelWorker(tokenizer, generator, self.queue, on_reply,
                                  stream_interval_s=config.stream_interval_ms / 1000,
                                  run_on=run_on, on_step=on_step)
        self._desk_thread = ThreadPoolExecutor(1, thread_name_prefix="tpi-serve-desk")
        desk = FrontDesk(ChatTokenizer(tokenizer.model_dir),
                         lambda: generator.runner.max_seq, self.queue,
                         ContextPolicy(config.context_overflow))
        app = build_app(Service(model_name, config.api_key, config.max_body, desk,
                                self._desk_thread))
        self._uvicorn = uvicorn.Server(uvicorn.Config(
            app, log_config=None, log_level="warning", access_log=False, lifespan="off",
            http="h11", loop="asyncio", ws="none", timeout_keep_alive=30,
            timeout_graceful_shutdown=3, limit_concurrency=config.max_queue + 64))
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None

    @property
    def port(self) -> int:
        return self._sock.getsockname()[1] if self._sock else self.config.port

    @property
    def url(self) -> str:
        host = self.config.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"

    @property
    def serving(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, sock: socket.socket | None = None, model_thread: bool = True
              ) -> ApiServer:
        """Listen (on `sock` if given, e.g. bound before the model was loaded) and serve;
        returns once requests are answered, or raises TpiError. model_thread=False: the
        caller runs the replies itself with `self.worker.serve_here(...)`, on the thread
        that loaded the model (engine_worker.py says why that is faster)."""
        self._sock = sock or listen_socket(self.config.host, self.config.port)
        if model_thread:
            self.worker.start()
        self._thread = threading.Thread(target=self._uvicorn.run,
                                        kwargs={"sockets": [self._sock]},
                                        name="tpi-serve-http", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._uvicorn.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise TpiError(f"the API server did not start on {self.url}")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Fail the waiting requests, end the running reply after its current token, close
        the connections; the runner is the caller's to close afterwards."""
        self.worker.stop()
        self._uvicorn.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
        self._desk_thread.shutdown(wait=False, cancel_futures=True)
        if self._sock is not None:
            self._sock.close()
