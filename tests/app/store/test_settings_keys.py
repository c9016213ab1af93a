"""Settings as declared keys: today's stored values read back, garbage falls back to the
default, values round-trip in today's format, and a window opens on garbage settings."""

from __future__ import annotations

import logging
from dataclasses import asdict

import pytest

from app.store.db import Store
from app.store.settings_keys import (
    ALL,
    API_SERVER_DEFAULT,
    CONTEXT,
    CONTEXT_OVERFLOW,
    GEOMETRY,
    MODEL,
    PANEL_VISIBLE,
    RANKS,
    SAMPLING,
    SAMPLING_FIELDS,
    SPECULATE,
    WINDOW,
    Setting,
)
from core.engine.options import RunOptions
from core.engine.sampler import SamplingParams
from tests.app.conftest import close_window, open_window
from tests.app.fake_engine import FakeLoader

SAMPLING_JSON = ('{"temperature": 0.2, "top_k": 40, "top_p": 0.9, "repetition_penalty": 1.1, '
                 '"seed": null, "max_new_tokens": 512}')
# The settings table as the app before declared keys wrote it: key -> JSON text.
TODAYS_ROWS = {
    "model": '"/models/smollm.gguf"',
    "sampling": SAMPLING_JSON,
    "window": "3",
    "ranks": "2",
    "geometry": '"01d9d0cb00030000"',
    "panel_visible": "false",
    "decode_speed": '{"local": 2.5e9}',
    "api_server": '{"enabled": true, "port": 8123, "api_key": "k", "lan": false}',
    "speculate": "4",
    "context": "2048",
    "context_overflow": '"drop-middle"',
}


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "chats.sqlite3")
    yield s
    s.close()


def put_raw(store: Store, key: str, json_text: str) -> None:
    """A row exactly as an earlier version left it in the database."""
    store.db.execute("INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)",
                     (key, json_text))


def test_every_key_is_declared_once_with_todays_name():
    assert [s.key for s in ALL] == list(TODAYS_ROWS)
    assert set(SAMPLING_FIELDS) == set(asdict(SamplingParams()))


def test_values_saved_by_todays_app_are_read_back(store):
    for key, text in TODAYS_ROWS.items():
        put_raw(store, key, text)
    assert MODEL.get(store) == "/models/smollm.gguf"
    assert SAMPLING.get(store) == {"temperature": 0.2, "top_k": 40, "top_p": 0.9,
                                   "repetition_penalty": 1.1, "seed": None,
                                   "max_new_tokens": 512}
    assert WINDOW.get(store) == 3 and RANKS.get(store) == 2 and SPECULATE.get(store) == 4
    assert GEOMETRY.get(store) == "01d9d0cb00030000" and PANEL_VISIBLE.get(store) is False
    put_raw(store, "window", '"all"')
    assert WINDOW.get(store) == "all"
    put_raw(store, "ranks", '"3"')  # int() read a digit string; so does RANKS
    assert RANKS.get(store) == 3


def test_nothing_saved_gives_the_defaults(store):
    assert [s.get(store) for s in ALL] == [None, {}, "auto", 1, None, True, {},
                                           API_SERVER_DEFAULT, "auto", 4096, "drop-oldest"]


@pytest.mark.parametrize("setting, value", [
    (MODEL, None), (MODEL, "/m/x.gguf"),
    (SAMPLING, asdict(SamplingParams(temperature=0.3, top_k=5))),
    (WINDOW, "auto"), (WINDOW, "all"), (WINDOW, 7),
    (RANKS, 1), (RANKS, 4),
    (GEOMETRY, "01d9d0cb"), (PANEL_VISIBLE, False), (PANEL_VISIBLE, True),
    (SPECULATE, "auto"), (SPECULATE, "off"), (SPECULATE, 6),
    (CONTEXT, 256), (CONTEXT, 2048), (CONTEXT_OVERFLOW, "stop"),
    (CONTEXT_OVERFLOW, "drop-middle"),
])
def test_values_round_trip_in_todays_format(store, setting: Setting, value):
    setting.set(store, value)
    assert setting.get(store) == value
    assert store.get_setting(setting.key) == value  # the same JSON an older version reads


@pytest.mark.parametrize("setting, garbage", [
    (RANKS, "abc"), (RANKS, 0), (RANKS, 9), (RANKS, 2.5), (RANKS, True), (RANKS, [2]),
    (SPECULATE, 0), (SPECULATE, 99), (SPECULATE, "fast"), (SPECULATE, True),
    (WINDOW, 7.5), (WINDOW, 0), (WINDOW, "junk"), (WINDOW, True), (WINDOW, None),
    (MODEL, 42), (MODEL, ["a"]),
    (SAMPLING, "hot"), (SAMPLING, [1, 2]),
    (GEOMETRY, 12), (GEOMETRY, "not hex"), (GEOMETRY, "abc"),
    (PANEL_VISIBLE, "no"), (PANEL_VISIBLE, 0),
    (CONTEXT, 100), (CONTEXT, "2048"), (CONTEXT, True), (CONTEXT, 2048.0),
    (CONTEXT_OVERFLOW, "truncate"), (CONTEXT_OVERFLOW, 1),
])
def test_garbage_falls_back_to_the_default_and_is_logged(store, caplog, setting: Setting,
                                                         garbage):
    store.set_setting(setting.key, garbage)
    with caplog.at_level(logging.WARNING, logger="app.store.settings_keys"):
        assert setting.get(store) == setting.default
    assert f"Setting {setting.key!r}: ignoring the saved value" in caplog.text


def test_unreadable_json_falls_back_to_the_default(store):
    put_raw(store, "ranks", "{not json")
    assert RANKS.get(store) == 1


def test_sampling_keeps_only_known_fields_of_the_right_type(store):
    store.set_setting("sampling", {"temperature": "hot", "top_k": 2.5, "seed": True,
                                   "bogus": 1, "top_p": 0.5, "max_new_tokens": 64})
    assert SAMPLING.get(store) == {"top_p": 0.5, "max_new_tokens": 64}


def test_an_invalid_value_is_refused_rather_than_saved(store):
    for setting, bad in ((RANKS, 0), (WINDOW, 2.5), (PANEL_VISIBLE, "yes")):
        with pytest.raises((TypeError, ValueError)):
            setting.set(store, bad)
        assert store.get_setting(setting.key) is None


def test_the_window_opens_on_garbage_settings_with_the_defaults(qtbot):
    w = open_window(qtbot, FakeLoader(), ranks="abc", window=7.5, panel_visible="no",
                    geometry="zz", sampling=[1], model=42)
    assert w.run_options() == RunOptions(ranks=1, window="auto", speculate="auto")
    assert w.rank_actions[1].isChecked() and w.right.isVisible()
    assert w.settings.memory_window.value() == "auto" and w.model_path is None
    w.set_local_ranks(3)
    w.set_memory_window(5)
    assert (w.store.get_setting("ranks"), w.store.get_setting("window")) == (3, 5)
    assert w.run_options() == RunOptions(ranks=3, window=5, speculate="auto")
    close_window(w)
