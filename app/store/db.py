"""Conversations, messages and settings in SQLite (stdlib sqlite3, WAL mode).

The database lives in platformdirs' user data dir for "tpi-chat", or in the folder named by
the environment variable `TPI_CHAT_DATA` (tests point it at a temp dir). Every write is its
own transaction, so killing the app loses at most the tokens streamed since the last update
of the assistant message row.

The schema is versioned (`PRAGMA user_version`) and upgraded at open by the steps in
`app.store.migrations`; opening raises `StoreError` (with a message for the user) when the
file comes from a newer app or an upgrade step fails.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The errors are re-exported so the app can catch them from here (`except StoreError`).
from app.store.migrations import MigrationError as MigrationError
from app.store.migrations import NewerSchemaError as NewerSchemaError
from app.store.migrations import StoreError as StoreError
from app.store.migrations import check_not_newer, migrate
from core.cluster.identity import DATA_ENV_VAR, default_data_dir

ENV_VAR = DATA_ENV_VAR
DB_NAME = "chats.sqlite3"


def data_dir() -> Path:
    """The folder holding the database (and, shared with the command line, this
    computer's identity and devices), created if missing."""
    path = default_data_dir()
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass
class Conversation:
    """One chat: its title, system prompt and timestamps (seconds since the epoch)."""

    id: int
    title: str
    system_prompt: str
    created: float
    updated: float


@dataclass
class Message:
    """One turn of a conversation."""

    id: int
    conversation_id: int
    role: str  # "user" | "assistant"
    content: str
    position: int


class Store:
    """All persistent state of the app. Used from the GUI thread only."""

    def __init__(self, path: str | Path | None = None):
        """Open (creating or upgrading) the database; raises `StoreError` if it cannot."""
        self.path = Path(path) if path else data_dir() / DB_NAME
        # Before connecting read-write: even setting WAL mode would write to a newer file.
        check_not_newer(self.path)
        self.db = sqlite3.connect(str(self.path), isolation_level=None)
        try:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("PRAGMA foreign_keys=ON")
            migrate(self.db, self.path)
        except BaseException:
            self.db.close()  # do not keep the file open (or locked, on Windows) after failing
            raise

    def close(self) -> None:
        self.db.close()

    # conversations -------------------------------------------------------------------
    def create_conversation(self, title: str = "New chat", system_prompt: str = "") -> int:
        now = time.time()
        cur = self.db.execute(
            "INSERT INTO conversations (title, system_prompt, created, updated) VALUES (?,?,?,?)",
            (title, system_prompt, now, now),
        )
        return int(cur.lastrowid)

    def conversations(self) -> list[Conversation]:
        """All conversations, most recently updated first."""
        rows = self.db.execute(
            "SELECT id, title, system_prompt, created, updated FROM conversations "
            "ORDER BY updated DESC, id DESC"
        ).fetchall()
        return [Conversation(*r) for r in rows]

    def conversation(self, conv_id: int) -> Conversation | None:
        row = self.db.execute(
            "SELECT id, title, system_prompt, created, updated FROM conversations WHERE id=?",
            (conv_id,),
        ).fetchone()
        return Conversation(*row) if row else None

    def rename_conversation(self, conv_id: int, title: str) -> None:
        self.db.execute("UPDATE conversations SET title=? WHERE id=?", (title, conv_id))

    def set_system_prompt(self, conv_id: int, prompt: str) -> None:
        self.db.execute("UPDATE conversations SET system_prompt=? WHERE id=?", (prompt, conv_id))

    def delete_conversation(self, conv_id: int) -> None:
        with self.db:
            self.db.execute("BEGIN")
            self.db.execute("DELETE FROM messages WHERE conversation_id=?", (conv_id,))
            self.db.execute("DELETE FROM conversations WHERE id=?", (conv_id,))

    def touch(self, conv_id: int) -> None:
        self.db.execute("UPDATE conversations SET updated=? WHERE id=?", (time.time(), conv_id))

    # messages ------------------------------------------------------------------------
    def messages(self, conv_id: int) -> list[Message]:
        rows = self.db.execute(
            "SELECT id, conversation_id, role, content, position FROM messages "
            "WHERE conversation_id=? ORDER BY position",
            (conv_id,),
        ).fetchall()
        return [Message(*r) for r in rows]

    def add_message(self, conv_id: int, role: str, content: str) -> int:
        """Append a message; returns its id."""
        with self.db:
            self.db.execute("BEGIN")
            (pos,) = self.db.execute(
                "SELECT COALESCE(MAX(position), -1) + 1 FROM messages WHERE conversation_id=?",
                (conv_id,),
            ).fetchone()
            cur = self.db.execute(
                "INSERT INTO messages (conversation_id, role, content, position) "
                "VALUES (?,?,?,?)",
                (conv_id, role, content, pos),
            )
            self.db.execute(
                "UPDATE conversations SET updated=? WHERE id=?", (time.time(), conv_id)
            )
        return int(cur.lastrowid)

    def update_message(self, msg_id: int, content: str) -> None:
        self.db.execute("UPDATE messages SET content=? WHERE id=?", (content, msg_id))

    def delete_message(self, msg_id: int) -> None:
        self.db.execute("DELETE FROM messages WHERE id=?", (msg_id,))

    def delete_messages_from(self, conv_id: int, position: int) -> None:
        """Drop the messages at `position` and after (regenerate, edit and resend)."""
        self.db.execute(
            "DELETE FROM messages WHERE conversation_id=? AND position>=?", (conv_id, position)
        )

    # settings ------------------------------------------------------------------------
    def get_setting(self, key: str, default: Any = None) -> Any:
        row = self.db.execute("SELECT value FROM settings WHERE key=?", (key,)).fetchone()
        if row is None:
            return default
        try:
            return json.loads(row[0])
        except ValueError:
            return default

    def set_setting(self, key: str, value: Any) -> None:
        self.db.execute(
            "INSERT INTO settings (key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
            (key, json.dumps(value)),
        )

    # export --------------------------------------------------------------------------
    def export_markdown(self, conv_id: int) -> str:
        """The conversation as a Markdown document."""
        conv = self.conversation(conv_id)
        if conv is None:
            raise KeyError(conv_id)
        out = [f"# {conv.title}", ""]
        if conv.system_prompt.strip():
            out += ["> **System:** " + conv.system_prompt.strip().replace("\n", "\n> "), ""]
        for m in self.messages(conv_id):
            out += [f"## {'You' if m.role == 'user' else 'Assistant'}", "", m.content.rstrip(), ""]
        return "\n".join(out)
