"""The SQLite store: conversations, messages, settings, export; schema versions and migrations."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from app.store import migrations as store_migrations
from app.store.db import MigrationError, NewerSchemaError, Store, StoreError
from app.store.migrations import (
    MIGRATIONS,
    Migration,
    latest_version,
    migrate,
    split_statements,
    sql_step,
)


def test_conversations_messages_and_settings(tmp_path):
    store = Store(tmp_path / "db.sqlite3")
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    a = store.create_conversation("First", "Be brief.")
    b = store.create_conversation("Second")
    store.add_message(a, "user", "hi")
    mid = store.add_message(a, "assistant", "")
    store.update_message(mid, "hello **there**")
    assert [c.id for c in store.conversations()][0] == a  # most recently updated first
    assert [(m.role, m.content, m.position) for m in store.messages(a)] == [
        ("user", "hi", 0), ("assistant", "hello **there**", 1)]
    store.rename_conversation(b, "Renamed")
    assert store.conversation(b).title == "Renamed"
    store.set_setting("sampling", {"temperature": 0.2})
    assert store.get_setting("sampling") == {"temperature": 0.2}
    assert store.get_setting("missing", 7) == 7
    md = store.export_markdown(a)
    assert md.startswith("# First") and "**System:** Be brief." in md and "hello **there**" in md
    store.delete_messages_from(a, 1)
    assert len(store.messages(a)) == 1
    store.delete_conversation(a)
    assert store.conversation(a) is None and store.messages(a) == []
    store.close()


def test_default_location_follows_env(tmp_path, monkeypatch):
    monkeypatch.setenv("TPI_CHAT_DATA", str(tmp_path / "elsewhere"))
    store = Store()
    assert store.path.parent == tmp_path / "elsewhere"
    store.close()


# Schema versions and migrations ------------------------------------------------------------

# The schema every release before versioning created, copied here on purpose rather than
# imported: if app.store.migrations.SCHEMA_V1 is ever edited, these tests still start from
# what real users' files contain.
FROZEN_V1_SCHEMA = """
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

V1_CONVERSATIONS = [(1, "Old chat", "Be brief.", 100.0, 200.0), (2, "Older", "", 50.0, 60.0)]
V1_MESSAGES = [(1, 1, "user", "hi; it's me", 0), (2, 1, "assistant", "hello **there**", 1),
               (3, 2, "user", "anyone?", 0)]
V1_SETTINGS = [("sampling", '{"temperature": 0.2}'), ("ranks", "2")]


def make_v1_database(path: Path) -> None:
    """A chats file exactly as releases before versioning left it (user_version 0, WAL)."""
    db = sqlite3.connect(str(path), isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA foreign_keys=ON")
    db.executescript(FROZEN_V1_SCHEMA)
    db.executemany("INSERT INTO conversations VALUES (?,?,?,?,?)", V1_CONVERSATIONS)
    db.executemany("INSERT INTO messages VALUES (?,?,?,?,?)", V1_MESSAGES)
    db.executemany("INSERT INTO settings VALUES (?,?)", V1_SETTINGS)
    db.close()


def raw(path: Path, sql: str) -> list[tuple]:
    """Rows of `sql` read straight from the file, not through Store."""
    db = sqlite3.connect(str(path))
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def version_of(path: Path) -> int:
    return raw(path, "PRAGMA user_version")[0][0]


def schema_of(path: Path) -> list[tuple]:
    return raw(path, "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY name")


def assert_v1_data(path: Path) -> None:
    assert raw(path, "SELECT * FROM conversations ORDER BY id") == V1_CONVERSATIONS
    assert raw(path, "SELECT * FROM messages ORDER BY id") == V1_MESSAGES
    assert raw(path, "SELECT * FROM settings ORDER BY key") == sorted(V1_SETTINGS)


LATEST = latest_version(MIGRATIONS)


def test_there_is_a_migration_past_the_first_schema():
    assert LATEST >= 2
    assert [step.version for step in MIGRATIONS] == list(range(1, LATEST + 1))


def test_first_schema_file_is_migrated_with_its_data_and_a_backup(tmp_path):
    path = tmp_path / "chats.sqlite3"
    make_v1_database(path)
    store = Store(path)
    # the data, through the public API
    assert [(c.id, c.title, c.system_prompt, c.created, c.updated)
            for c in store.conversations()] == V1_CONVERSATIONS
    assert [(m.id, m.conversation_id, m.role, m.content, m.position)
            for m in store.messages(1) + store.messages(2)] == V1_MESSAGES
    assert store.get_setting("sampling") == {"temperature": 0.2}
    assert store.get_setting("ranks") == 2
    # the version and the migration's effect: the conversation list walks the new index
    assert store.db.execute("PRAGMA user_version").fetchone()[0] == LATEST
    assert store.db.execute("SELECT tbl_name FROM sqlite_master WHERE type='index' AND "
                            "name='conversations_by_updated'").fetchall() == [("conversations",)]
    plan = store.db.execute("EXPLAIN QUERY PLAN SELECT id, title, system_prompt, created, "
                            "updated FROM conversations ORDER BY updated DESC, id DESC").fetchall()
    assert any("conversations_by_updated" in row[-1] for row in plan), plan
    assert not any("TEMP B-TREE" in row[-1] for row in plan), plan
    # still a working store: foreign keys back on (the steps turn them off), writes succeed
    assert store.db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    store.add_message(2, "assistant", "yes")
    assert store.conversations()[0].id == 2
    store.delete_conversation(1)
    store.close()
    assert raw(path, "SELECT id FROM messages ORDER BY id") == [(3,), (4,)]

    backup = tmp_path / "chats.sqlite3.bak-v1"
    assert sorted(p.name for p in tmp_path.glob("*.bak*")) == [backup.name]
    assert_v1_data(backup)
    assert version_of(backup) == 0
    assert schema_of(backup) == schema_of_fresh_v1(tmp_path / "reference.sqlite3")
    assert raw(backup, "PRAGMA journal_mode") == [("delete",)]  # one self-contained file


def schema_of_fresh_v1(path: Path) -> list[tuple]:
    make_v1_database(path)
    return schema_of(path)


def test_new_file_is_created_at_the_latest_version_without_a_backup(tmp_path):
    path = tmp_path / "chats.sqlite3"
    store = Store(path)
    assert store.db.execute("PRAGMA user_version").fetchone()[0] == LATEST
    assert store.conversations() == []
    store.close()
    assert list(tmp_path.glob("*.bak*")) == []
    # the same schema as a first-schema file once migrated
    old = tmp_path / "old.sqlite3"
    make_v1_database(old)
    Store(old).close()
    assert schema_of(path) == schema_of(old)


def test_opening_twice_migrates_and_backs_up_once(tmp_path):
    path = tmp_path / "chats.sqlite3"
    make_v1_database(path)
    Store(path).close()
    backup = tmp_path / "chats.sqlite3.bak-v1"
    first_backup = backup.read_bytes()
    schema = schema_of(path)
    store = Store(path)
    assert store.db.execute("PRAGMA user_version").fetchone()[0] == LATEST
    store.close()
    assert sorted(p.name for p in tmp_path.glob("*.bak*")) == [backup.name]
    assert backup.read_bytes() == first_backup
    assert schema_of(path) == schema
    assert_v1_data(path)


def test_an_interrupted_first_creation_is_completed(tmp_path):
    # releases before versioning ran their CREATE statements one by one at every open, so a
    # file may hold only the first table; it is treated as schema 1 and completed.
    path = tmp_path / "chats.sqlite3"
    db = sqlite3.connect(str(path))
    db.execute(split_statements(FROZEN_V1_SCHEMA)[0])
    db.close()
    store = Store(path)
    store.set_setting("k", "v")
    assert store.get_setting("k") == "v"
    store.close()
    assert version_of(path) == LATEST
    assert (tmp_path / "chats.sqlite3.bak-v1").exists()


def test_a_file_from_a_newer_app_is_refused_and_left_untouched(tmp_path):
    path = tmp_path / "chats.sqlite3"
    make_v1_database(path)
    db = sqlite3.connect(str(path), isolation_level=None)
    db.execute(f"PRAGMA user_version={LATEST + 3}")
    db.execute("CREATE TABLE from_the_future (x)")
    db.execute("PRAGMA journal_mode=DELETE")  # so even Store's `journal_mode=WAL` would show
    db.close()
    before = path.read_bytes()
    message = (rf"written by a newer TPI Chat \(schema {LATEST + 3}, this one knows up to "
               rf"{LATEST}\); update the app")
    with pytest.raises(NewerSchemaError, match=message) as refused:
        Store(path)
    assert isinstance(refused.value, StoreError)
    assert path.read_bytes() == before
    assert list(tmp_path.glob("*.bak*")) == []
    # migrate() itself refuses too, for a caller that did not probe read-only first
    db = sqlite3.connect(str(path), isolation_level=None)
    with pytest.raises(NewerSchemaError, match=message):
        migrate(db, path)
    db.close()
    assert path.read_bytes() == before


BROKEN_STEP = """
ALTER TABLE messages ADD COLUMN created REAL NOT NULL DEFAULT 0;
UPDATE conversations SET title = 'clobbered';
DELETE FROM settings;
INSERT INTO no_such_table VALUES (1);
"""


def test_a_failing_migration_leaves_the_file_at_the_old_version_with_its_data(
    tmp_path, monkeypatch
):
    path = tmp_path / "chats.sqlite3"
    make_v1_database(path)
    broken = Migration(2, "deliberately broken", sql_step(BROKEN_STEP))
    monkeypatch.setattr(store_migrations, "MIGRATIONS", (MIGRATIONS[0], broken))
    with pytest.raises(MigrationError, match=r"from schema 1 to 2 \(deliberately broken\): "
                                             r"no such table: no_such_table") as failed:
        Store(path)
    assert "chats.sqlite3.bak-v1" in str(failed.value)
    assert version_of(path) == 1
    assert_v1_data(path)  # the title update and the settings delete were rolled back
    assert "created" not in [row[1] for row in raw(path, "PRAGMA table_info(messages)")]
    assert_v1_data(tmp_path / "chats.sqlite3.bak-v1")
    # fixed app: the real migrations then run from where the file was left
    monkeypatch.undo()
    store = Store(path)
    assert store.db.execute("PRAGMA user_version").fetchone()[0] == LATEST
    store.close()
    assert_v1_data(path)


def test_a_step_that_commits_on_its_own_is_reported(tmp_path):
    # executescript COMMITs before running, which would end the step's transaction early
    path = tmp_path / "chats.sqlite3"
    make_v1_database(path)
    sneaky = Migration(2, "uses executescript", lambda db: db.executescript("SELECT 1;"))
    db = sqlite3.connect(str(path), isolation_level=None)
    with pytest.raises(MigrationError, match="committed on its own"):
        migrate(db, path, (MIGRATIONS[0], sneaky))
    assert not db.in_transaction
    db.close()
    assert version_of(path) == 1


def test_migrations_must_be_numbered_in_order():
    with pytest.raises(ValueError, match="numbered 3"):
        latest_version((MIGRATIONS[0], Migration(3, "skips 2", sql_step(""))))


def test_sql_steps_are_split_into_whole_statements():
    script = ("INSERT INTO t VALUES ('a;b');\n"
              "CREATE TRIGGER x AFTER INSERT ON t BEGIN SELECT 1; END;\n")
    assert split_statements(script) == [
        "INSERT INTO t VALUES ('a;b');",
        "CREATE TRIGGER x AFTER INSERT ON t BEGIN SELECT 1; END;",
    ]
    with pytest.raises(ValueError, match="incomplete"):
        split_statements("SELECT 'unterminated;")


def test_no_upgrade_without_a_backup(tmp_path):
    path = tmp_path / "chats.sqlite3"
    make_v1_database(path)
    (tmp_path / "chats.sqlite3.bak-v1.partial").mkdir()  # the copy cannot be written
    with pytest.raises(StoreError, match="could not copy the chat database"):
        Store(path)
    assert version_of(path) == 0
    assert_v1_data(path)
    assert not (tmp_path / "chats.sqlite3.bak-v1").exists()
