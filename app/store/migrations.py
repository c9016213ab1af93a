"""Schema versions of the chat database and the migrations between them.

The version lives in the database itself (`PRAGMA user_version`):

* 0 with no tables: a brand-new file; every step below runs, so it ends at the latest version
  by the same path an old database takes (one code path, tested from the first schema).
* 0 with tables: written by a release from before versioning. Those releases always created
  exactly `SCHEMA_V1`, so such a file is schema 1. Step 1 still runs on it: it is all
  `CREATE ... IF NOT EXISTS`, which adds nothing to a complete v1 file and finishes one whose
  first-ever creation was interrupted (old releases relied on re-running it at every open).
* 1..LATEST: migrated by the remaining steps, one transaction each.
* Above what this code knows: refused with `NewerSchemaError`, before anything writes to the
  file. Opening it read-only instead was rejected on purpose: a newer schema may have moved
  or reinterpreted data, so reading it with this code could show chats as empty or wrong,
  and the app writes on ordinary actions (a new chat, a setting), which would then fail with
  SQLite's obscure "attempt to write a readonly database". A clear "update the app" is better.

Before migrating a file that already holds data, a copy is written next to it with SQLite's
backup API (`chats.sqlite3.bak-v1`), consistent even while the file is in WAL mode.

Adding a version: append a `Migration` whose `version` is the previous last one plus one.
Never edit a released step; a database that already ran it would not run it again.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

# The schema every release before versioning created (schema 1). Frozen: never edit.
SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS conversations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    title TEXT NOT NULL,
    system_prompt TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    role TEXT NOT NULL,
    content TEXT NOT NULL,
    position INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_conversation ON messages(conversation_id, position);
CREATE TABLE IF NOT EXISTS settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""

# Schema 2: the conversation list (`ORDER BY updated DESC, id DESC`, on every refresh)
# becomes a walk of this index instead of a scan of the table plus a sort.
SCHEMA_V2 = """
CREATE INDEX conversations_by_updated ON conversations(updated, id);
"""


class StoreError(RuntimeError):
    """The chat database cannot be opened; the message is meant for the user."""


class NewerSchemaError(StoreError):
    """The database was written by a newer app; it was left untouched."""

    def __init__(self, path: Path, found: int, known: int):
        super().__init__(
            f"this chat database was written by a newer TPI Chat (schema {found}, this one "
            f"knows up to {known}); update the app. The database was not changed: {path}"
        )
        self.path, self.found, self.known = path, found, known


class MigrationError(StoreError):
    """A migration step failed and was rolled back; the database is at the previous version."""


@dataclass(frozen=True)
class Migration:
    """One step: turns a database at `version - 1` into one at `version`.

    `apply` runs inside the step's transaction, so it must only use `db.execute` (never
    `executescript` or `commit`, which would end the transaction early). Foreign keys are off
    while it runs (SQLite's procedure for rebuilding a table) and checked before the commit.
    """

    version: int
    summary: str
    apply: Callable[[sqlite3.Connection], None]


def sql_step(script: str) -> Callable[[sqlite3.Connection], None]:
    """A step that runs each statement of `script` with `execute`, inside the transaction."""

    def apply(db: sqlite3.Connection) -> None:
        for statement in split_statements(script):
            db.execute(statement)

    return apply


def split_statements(script: str) -> list[str]:
    """`script` cut into complete statements (a `;` inside a string or trigger is kept)."""
    statements, pending = [], ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n\t;"):  # not just the empty tail after the last `;`
                statements.append(pending.strip())
            pending = ""
    if pending.strip(" \n\t;"):
        raise ValueError(f"incomplete SQL statement: {pending.strip()!r}")
    return statements


MIGRATIONS: Sequence[Migration] = (
    Migration(1, "create the first schema", sql_step(SCHEMA_V1)),
    Migration(2, "index conversations by last update", sql_step(SCHEMA_V2)),
)


def latest_version(migrations: Sequence[Migration]) -> int:
    """The version the steps lead to; they must be numbered 1, 2, 3... in order."""
    for index, step in enumerate(migrations, start=1):
        if step.version != index:
            raise ValueError(f"migration #{index} is numbered {step.version}")
    return len(migrations)


def user_version(db: sqlite3.Connection) -> int:
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def has_schema(db: sqlite3.Connection) -> bool:
    """Whether the file holds any table or index (an empty file means a new database)."""
    return db.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchone() is not None


def check_not_newer(path: Path, migrations: Sequence[Migration] | None = None) -> None:
    """Raise `NewerSchemaError` if the file at `path` is from a newer app.

    Reads through a read-only connection so that a newer database is refused before this
    code could write to it (setting WAL mode or migrating would). A missing file is new.
    """
    known = latest_version(MIGRATIONS if migrations is None else migrations)
    if not path.is_file():
        return
    probe = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
    try:
        found = user_version(probe)
    finally:
        probe.close()
    if found > known:
        raise NewerSchemaError(path, found, known)


def backup_path(path: Path, version: int) -> Path:
    return path.with_name(f"{path.name}.bak-v{version}")


def write_backup(db: sqlite3.Connection, target: Path) -> None:
    """Copy the database behind `db` to `target` with the backup API.

    Written to a temporary name and renamed, so a crash mid-copy never replaces an earlier
    good backup with a partial one. The copy is switched to a rollback journal so it is one
    self-contained file (the WAL flag in its header would otherwise come along).
    """
    partial = target.with_name(target.name + ".partial")
    try:
        partial.unlink(missing_ok=True)  # left by a crash during an earlier attempt
        copy = sqlite3.connect(str(partial))
        try:
            db.backup(copy)
            copy.execute("PRAGMA journal_mode=DELETE")
        finally:
            copy.close()
        os.replace(partial, target)
    except (OSError, sqlite3.Error) as exc:  # e.g. a full disk: better not to upgrade at all
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
        raise StoreError(
            f"could not copy the chat database to {target} before upgrading it: {exc}. "
            "Nothing was changed."
        ) from exc


def migrate(
    db: sqlite3.Connection, path: Path, migrations: Sequence[Migration] | None = None
) -> int:
    """Bring the database behind `db` (autocommit mode) to the latest version; returns it.

    A database already at the latest version is not written to (and not backed up again).
    """
    steps = MIGRATIONS if migrations is None else migrations
    latest = latest_version(steps)
    current = user_version(db)
    if current > latest:
        raise NewerSchemaError(path, current, latest)
    if current == latest:
        return current
    backup = None
    if has_schema(db):
        # A pre-versioning file (0 with tables) is schema 1, so its copy is named bak-v1.
        backup = backup_path(path, max(current, 1))
        write_backup(db, backup)
    with _foreign_keys_off(db):
        for step in steps[current:]:
            _run_step(db, path, step, latest, backup)
    return user_version(db)


@contextlib.contextmanager
def _foreign_keys_off(db: sqlite3.Connection) -> Iterator[None]:
    """Foreign keys off during the steps, restored after (it cannot change inside a
    transaction, and a table rebuild would otherwise cascade-delete the rows pointing at it)."""
    (was_on,) = db.execute("PRAGMA foreign_keys").fetchone()
    db.execute("PRAGMA foreign_keys=OFF")
    try:
        yield
    finally:
        db.execute(f"PRAGMA foreign_keys={'ON' if was_on else 'OFF'}")


def _run_step(
    db: sqlite3.Connection, path: Path, step: Migration, latest: int, backup: Path | None
) -> None:
    """Apply one step in its own transaction; on any failure roll back and raise."""
    db.execute("BEGIN IMMEDIATE")  # takes the write lock now, so the version read below holds
    try:
        found = user_version(db)  # another process may have migrated since we looked
        if found > latest:
            raise NewerSchemaError(path, found, latest)
        if found >= step.version:
            db.execute("ROLLBACK")
            return
        step.apply(db)
        _check_step(db, step)
        db.execute(f"PRAGMA user_version={step.version}")
        db.execute("COMMIT")
    except BaseException as exc:
        if db.in_transaction:
            db.execute("ROLLBACK")
        if isinstance(exc, StoreError) or not isinstance(exc, Exception):
            raise
        raise _failure(path, step, backup, exc) from exc


def _check_step(db: sqlite3.Connection, step: Migration) -> None:
    """Refuse to commit a step that ended its transaction early or broke a foreign key."""
    if not db.in_transaction:
        raise RuntimeError("the step committed on its own (executescript or commit?)")
    broken = db.execute("PRAGMA foreign_key_check").fetchall()
    if broken:
        raise RuntimeError(f"the step broke {len(broken)} foreign key reference(s)")


def _failure(path: Path, step: Migration, backup: Path | None, exc: Exception) -> MigrationError:
    before = step.version - 1
    copy = f"; a copy from before the upgrade is at {backup}" if backup else ""
    return MigrationError(
        f"could not upgrade the chat database {path} from schema {before} to {step.version} "
        f"({step.summary}): {exc}. That step was undone; the database is at schema {before}"
        f"{copy}."
    )
