"""Ties the chat view, the composer, the store and the engine together for one window.

Sends, regenerates and edit-and-resends; streams the reply into the view and into its
assistant row (saved at most every SAVE_INTERVAL_S, and when it ends). A reply keeps
streaming into its own conversation when the user switches to another one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from PySide6.QtCore import QObject, Signal

from app.chat.input_box import InputBox
from app.chat.view import ChatView
from app.engine.host import EngineHost
from app.engine.worker import ReplyStats
from app.store.db import Store
from core.engine.sampler import SamplingParams

SAVE_INTERVAL_S = 0.25
TITLE_CHARS = 40


@dataclass
class _Stream:
    conv_id: int
    msg_id: int
    text: str = ""
    saved_at: float = 0.0
    roles: tuple[str, ...] = ()  # of the history the reply answers


def title_from(text: str) -> str:
    """A conversation title from its first message."""
    line = " ".join(text.split())
    return line if len(line) <= TITLE_CHARS else line[: TITLE_CHARS - 1].rstrip() + "\u2026"


class ChatController(QObject):
    """The conversation logic of the main window (no widgets of its own)."""

    conversation_created = Signal(int)
    conversations_changed = Signal()
    reply_finished = Signal(object)  # ReplyStats
    busy_changed = Signal(bool)

    def __init__(self, store: Store, engine: EngineHost, view: ChatView, composer: InputBox,
                 params: Callable[[], SamplingParams]):
        super().__init__()
        self.store, self.engine, self.view, self.composer = store, engine, view, composer
        self.params = params
        self.conv_id: int | None = None
        self.stream: _Stream | None = None
        self.ready = False
        self.queued = False  # a user message waits for the model to be ready
        self.load_error = ""  # why the last load gave no model (none is loading now)
        self.last_error = ""
        # per conversation, where its last reply's context began (ChatView.set_out_of_view
        # arguments): messages before it were out of the model's view
        self.out_of_view: dict[int, tuple[int, int, bool]] = {}
        composer.submitted.connect(self.send_text)
        composer.stop_requested.connect(self.stop)
        view.regenerate_requested.connect(self.regenerate)
        view.edit_requested.connect(self.edit_last)
        w = engine.worker
        w.token.connect(self._on_token)
        w.finished.connect(self._on_finished)
        w.failed.connect(self._on_failed)

    @property
    def busy(self) -> bool:
        return self.stream is not None

    # conversations -------------------------------------------------------------------
    def open(self, conv_id: int | None) -> None:
        """Show conversation `conv_id` (None = an empty new chat, created on first send)."""
        self.conv_id = conv_id
        self.composer.set_editing(False)
        if self.queued:  # the waiting message stays stored; Regenerate answers it later
            self.queued = False
            self.composer.set_busy(False)
        if conv_id is None:
            self.view.set_messages([])
            return
        msgs = self.store.messages(conv_id)
        live = self.stream if self.stream and self.stream.conv_id == conv_id else None
        shown = [(m.role, m.content) for m in msgs if not (live and m.id == live.msg_id)]
        self.view.set_messages(shown)
        if conv_id in self.out_of_view:
            self.view.set_out_of_view(*self.out_of_view[conv_id])
        if live:
            self.view.begin_stream(live.text)

    # sending -------------------------------------------------------------------------
    def send_text(self, text: str) -> None:
        """The user sent `text` (replacing their last message when editing)."""
        if self.busy:
            return
        if self.conv_id is None:
            self.conv_id = self.store.create_conversation(title_from(text))
            self.conversation_created.emit(self.conv_id)
        if self.composer.editing:
            self._drop_from_last_user()
            self.composer.set_editing(False)
        conv = self.store.conversation(self.conv_id)
        if conv and conv.title == "New chat" and not self.store.messages(self.conv_id):
            self.store.rename_conversation(self.conv_id, title_from(text))
        self.store.add_message(self.conv_id, "user", text)
        self.view.add_message("user", text)
        self.conversations_changed.emit()
        self.start_reply()

    def start_reply(self) -> None:
        """Generate the assistant's reply to the conversation as stored."""
        if self.busy or self.conv_id is None:
            return
        conv = self.store.conversation(self.conv_id)
        msgs = self.store.messages(self.conv_id)
        history = [{"role": m.role, "content": m.content} for m in msgs]
        if conv is None or not history or history[-1]["role"] != "user":
            return
        if not self.ready and self.load_error:  # nothing is loading: say so, never wait
            self.view.fail_stream("", f"No model is loaded ({self.load_error}). Load one "
                                  "from the Model menu, then Regenerate.")
            return
        if not self.ready:
            self.queued = True
            self.view.show_status("Waiting for the model to load\u2026")
            self.composer.set_busy(True)
            return
        self.queued = False
        self.view.show_status("Thinking\u2026")
        msg_id = self.store.add_message(self.conv_id, "assistant", "")
        self.stream = _Stream(self.conv_id, msg_id, saved_at=time.monotonic(),
                              roles=tuple(m["role"] for m in history))
        self.composer.set_busy(True)
        self.busy_changed.emit(True)
        self.engine.send(history, conv.system_prompt, self.params())

    def model_ready(self, ready: bool) -> None:
        """True: a model is loaded; False: one is loading now."""
        self.ready = ready
        self.load_error = ""
        if ready and self.queued:
            self.start_reply()

    def model_failed(self, message: str) -> None:
        """The load ended without a model: a waiting message ends with why."""
        self.ready = False
        self.load_error = message.rstrip(".")
        if self.queued:
            self.queued = False
            self.view.end_stream("", error=f"The model did not load: {message}")
            self.composer.set_busy(False)

    def stop(self) -> None:
        if self.busy:
            self.engine.stop()
        elif self.queued:
            self.queued = False
            self.view.end_stream("", error="Cancelled.")
            self.composer.set_busy(False)

    def regenerate(self) -> None:
        """Drop the last reply and generate it again."""
        if self.busy or self.conv_id is None:
            return
        msgs = self.store.messages(self.conv_id)
        if msgs and msgs[-1].role == "assistant":
            self.store.delete_message(msgs[-1].id)
            self.view.remove_last()
        elif self.view.messages and self.view.messages[-1].role == "assistant":
            self.view.remove_last()  # an error note that was never stored
        self.start_reply()

    def edit_last(self) -> None:
        """Put the last user message in the composer; sending replaces it."""
        if self.busy or self.conv_id is None:
            return
        users = [m for m in self.store.messages(self.conv_id) if m.role == "user"]
        if users:
            self.composer.set_text(users[-1].content)
            self.composer.set_editing(True)
            self.composer.focus()

    def _drop_from_last_user(self) -> None:
        msgs = self.store.messages(self.conv_id)
        users = [i for i, m in enumerate(msgs) if m.role == "user"]
        if not users:
            return
        i = users[-1]
        self.store.delete_messages_from(self.conv_id, msgs[i].position)
        self.view.remove_last(len(self.view.messages) - i)

    # engine signals ------------------------------------------------------------------
    def _on_token(self, piece: str) -> None:
        s = self.stream
        if s is None:
            return
        s.text += piece
        if s.conv_id == self.conv_id:
            self.view.append_token(piece)
        now = time.monotonic()
        if now - s.saved_at >= SAVE_INTERVAL_S:
            self.store.update_message(s.msg_id, s.text)
            s.saved_at = now

    def _on_finished(self, stats: ReplyStats) -> None:
        s = self.stream
        if s is None:
            return
        self.stream = None
        text = stats.text or s.text
        note = ""
        if stats.stop_reason == "stopped":
            note = " \u00b7 stopped"
        elif stats.stop_reason == "length":
            note = " \u00b7 hit the token limit"
        summary = f"{stats.new_tokens} tokens \u00b7 {stats.tokens_per_s:.1f} tok/s{note}"
        if text:
            self.store.update_message(s.msg_id, text)
        else:
            self.store.delete_message(s.msg_id)
        self.store.touch(s.conv_id)
        self._note_out_of_view(s, stats.out_of_view)
        if s.conv_id == self.conv_id:
            self.view.end_stream(text, stats=summary,
                                 error="" if text else "The model returned an empty reply.")
        self.composer.set_busy(False)
        self.busy_changed.emit(False)
        self.conversations_changed.emit()
        self.reply_finished.emit(stats)

    def _note_out_of_view(self, s: _Stream, out: tuple[int, int]) -> None:
        """Remember (and show) where the model's view of the conversation began."""
        lo, hi = out
        if hi > lo:
            mark = (s.roles[:hi].count("user"), hi - lo, lo > 0)
            self.out_of_view[s.conv_id] = mark
            if s.conv_id == self.conv_id:
                self.view.set_out_of_view(*mark)
        elif self.out_of_view.pop(s.conv_id, None) and s.conv_id == self.conv_id:
            self.view.clear_out_of_view()

    def _on_failed(self, message: str) -> None:
        self.last_error = message
        s = self.stream
        self.stream = None
        if s is not None:
            if s.text:
                self.store.update_message(s.msg_id, s.text)
            else:
                self.store.delete_message(s.msg_id)
        if s is None or s.conv_id == self.conv_id:
            self.view.fail_stream(s.text if s else "", message)
        self.composer.set_busy(False)
        self.busy_changed.emit(False)
