"""A fast fake backend for the app tests: scripted replies streamed word by word."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from app.engine.worker import LoadedModel
from core.engine.chat import Reply
from core.engine.generate import GenerationResult
from core.engine.options import RunOptions
from core.engine.rank_stats import RankStats


def fake_rank_stats(rank: int) -> RankStats:
    """A real RankStats, as a rank with 4 of its 6 blocks of 1 MiB resident reports it."""
    return RankStats(rank=rank, pid=1, rss_mb=100.0, peak_rss_mb=120.0, resident_blocks=4,
                     resident_bytes=4 << 20, budget_blocks=6, total_blocks=6,
                     total_bytes=6 << 20, loads=0, bytes_read=0, stall_s=0.0, kv_heads=2,
                     mlp_cols=96)


@dataclass
class FakeSession:
    """Replies with `script(text)`, one word per `delay` seconds, honouring should_stop."""

    script: object
    delay: float = 0.0
    system: str | None = None
    messages: list[dict] = field(default_factory=list)
    seen: list[tuple] = field(default_factory=list)

    def send(self, text, params, on_text=None, should_stop=None) -> Reply:
        self.seen.append((self.system, [dict(m) for m in self.messages], text))
        self.messages.append({"role": "user", "content": text})
        t0 = time.perf_counter()
        out, ids, reason = "", [], "eos"
        words = self.script(text)
        for i, w in enumerate(words):
            piece = w if i == 0 else " " + w if not w.startswith("\n") else w
            out += piece
            ids.append(i)
            if on_text:
                on_text(piece)
            if should_stop and should_stop():
                reason = "stopped"
                break
            if self.delay:
                time.sleep(self.delay)
        dt = time.perf_counter() - t0
        self.messages.append({"role": "assistant", "content": out})
        result = GenerationResult(
            token_ids=ids, prompt_tokens=10, reused_tokens=0, stop_reason=reason,
            ttft_ms=5.0, decode_ms_per_token=1.0, tokens_per_s=len(ids) / dt if dt else 123.0)
        return Reply(out, result)


def echo_script(text: str) -> list[str]:
    return ["You", "said:", *text.split()]


class FakeLoader:
    """A loader for EngineWorker: returns a FakeSession-backed model, optionally slowly."""

    def __init__(self, script=echo_script, delay: float = 0.0, load_s: float = 0.0,
                 world_size: int = 2):
        self.script, self.delay, self.load_s, self.world_size = script, delay, load_s, world_size
        self.sessions: list[FakeSession] = []
        self.closed = 0
        self.load_threads: set[int] = set()
        self.device_names: list[list[str]] = []  # per load: the enrolled devices it was given

    def __call__(self, model, opts: RunOptions, progress, **devices) -> LoadedModel:
        self.load_threads.add(threading.get_ident())
        self.device_names.append([d.name for d in devices.get("devices", [])])
        steps = 10
        for i in range(steps + 1):
            progress("Importing model", i, steps)
            if self.load_s:
                time.sleep(self.load_s / steps)

        def make() -> FakeSession:
            s = FakeSession(self.script, self.delay)
            self.sessions.append(s)
            return s

        def close() -> None:
            self.closed += 1

        return LoadedModel(
            name="Fake-Model", world_size=self.world_size, close=close,
            rank_stats=lambda: [fake_rank_stats(r) for r in range(self.world_size)],
            session_factory=make)
