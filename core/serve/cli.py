"""`tpi-chat serve`: the model opened as `tpi-chat generate` opens it, behind the API."""

from __future__ import annotations

import os
import signal
import sys
import threading
from argparse import Namespace

from core.cli_commands import open_for, speculator_for, start_for
from core.cluster.open_model import model_display_name
from core.engine.generate import GenerationResult, Generator
from core.errors import TpiError
from core.serve.server import ApiServer, ServeConfig, check_exposure, listen_socket

KEY_ENV = "TPI_CHAT_API_KEY"


def cmd_serve(args: Namespace) -> int:
    key = args.api_key or os.environ.get(KEY_ENV) or None
    if args.max_queue < 0 or not 0 <= args.port <= 65535:
        raise TpiError("--max-queue must be 0 or more and --port from 0 to 65535")
    if not 0 <= args.stream_interval_ms <= 10_000:
        raise TpiError("--stream-interval-ms must be from 0 to 10000")
    config = ServeConfig(host=args.host, port=args.port, api_key=key,
                         max_queue=args.max_queue, context_overflow=args.context_overflow,
                         stream_interval_ms=args.stream_interval_ms)
    check_exposure(config.host, key)
    sock = listen_socket(config.host, config.port)  # a taken port fails before the load
    cluster = spec = None
    try:
        model_dir, tokenizer = open_for(args)
        cluster = start_for(args, model_dir)
        spec = speculator_for(args, model_dir, tokenizer, cluster)
    except BaseException:
        sock.close()
        if cluster is not None:
            cluster.close()
        raise
    server: ApiServer | None = None
    done = threading.Event()

    def on_term(*_) -> None:
        done.set()
        if server is not None:
            server.worker.cancel_current()

    signal.signal(signal.SIGTERM, on_term)
    try:
        name = model_display_name(args.model)
        generator = Generator(cluster, tokenizer.eos_ids, speculator=spec)
        # The replies run on this thread, which loaded the model: one OpenMP team, as in
        # `tpi-chat generate` (core/serve/engine_worker.py says why).
        server = ApiServer(tokenizer, None, name, config, generator=generator,
                           on_reply=_log_reply).start(sock, model_thread=False)
        ranks = cluster.world_size
        print(f"TPI Chat serving '{name}' on {ranks} rank{'s' if ranks != 1 else ''} at "
              f"{server.url}/v1{' (API key required)' if key else ''}. Ctrl-C stops.",
              flush=True)
        server.worker.serve_here(lambda: done.is_set() or not server.serving)
        if not done.is_set():
            print("tpi-chat: the HTTP server stopped", file=sys.stderr)
            return 1
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        if server is not None:
            server.stop()
        cluster.close()
        if spec is not None:
            spec.close()


def _log_reply(r: GenerationResult, gone: bool) -> None:
    what = "client went away" if gone else r.stop_reason
    kept = "" if r.acceptance is None else f", {r.acceptance:.0%} of drafts kept"
    print(f"tpi-chat: {r.prompt_tokens} prompt tokens ({r.reused_tokens} cached), "
          f"{len(r.token_ids)} generated ({what}), first token {r.ttft_ms:.0f} ms, "
          f"{r.tokens_per_s:.1f} tokens/s{kept}", file=sys.stderr, flush=True)
