"""The SQLite store: conversations, messages, settings, export."""

from __future__ import annotations

from app.store import Store


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
