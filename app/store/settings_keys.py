"""The app's saved settings, each declared once: key, type, default and how to read it back.

Values live as JSON in the Store's settings table, under the key names and in the formats
earlier versions wrote, so a user's settings survive an update. Each `Setting.parse` turns
whatever is stored (possibly garbage from an older version or a hand edit) into a valid
value, or raises TypeError/ValueError; `Setting.get` then logs that and returns the
default. The legacy "devices" key is not here: app.devices.roster moves it to devices.json.

    ranks = RANKS.get(store)   # an int in 1..MAX_LOCAL_RANKS, whatever the database holds
    RANKS.set(store, 3)
"""

from __future__ import annotations

import logging
import string
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from core.engine.context_policy import DROP_OLDEST, OVERFLOW_POLICIES
from core.engine.options import RunOptions

T = TypeVar("T")

log = logging.getLogger(__name__)

MAX_LOCAL_RANKS = 4  # ranks on this computer: rank 0 + up to 3 worker processes
MIN_CONTEXT, MAX_CONTEXT = 256, 1 << 20  # tokens; the model's own maximum caps it at load
WINDOW_AUTO, WINDOW_ALL = "auto", "all"

# SamplingParams' fields as stored (asdict), with the JSON types each may hold.
SAMPLING_FIELDS: dict[str, tuple[type, ...]] = {
    "temperature": (float, int), "top_k": (int,), "top_p": (float, int),
    "repetition_penalty": (float, int), "seed": (int, type(None)), "max_new_tokens": (int,),
}


class SettingsStore(Protocol):
    """The part of app.store.db.Store a Setting uses."""

    def get_setting(self, key: str, default: Any = None) -> Any: ...

    def set_setting(self, key: str, value: Any) -> None: ...


@dataclass(frozen=True)
class Setting(Generic[T]):
    """One saved setting: its stored `key`, its `default` and its `parse`/validate."""

    key: str
    default: T
    parse: Callable[[Any], T]  # a stored value -> a valid T; raises TypeError/ValueError
    doc: str = ""

    def get(self, store: SettingsStore) -> T:
        """The saved value, or the default when none is saved or it is not valid."""
        raw = store.get_setting(self.key, self.default)
        try:
            return self.parse(raw)
        except (TypeError, ValueError) as e:
            log.warning("Setting %r: ignoring the saved value %.200r (%s); using %r",
                        self.key, raw, e, self.default)
            return self.parse(self.default)  # a fresh copy when the default is mutable

    def set(self, store: SettingsStore, value: T) -> None:
        """Save `value`; an invalid one raises here (a bug) rather than saving garbage."""
        store.set_setting(self.key, self.parse(value))


# parsers: the stored format of every key is that of earlier versions ---------------------
def _no_bool(value: Any) -> Any:
    """JSON true/false are ints to Python: refuse them where a number is expected."""
    if isinstance(value, bool):
        raise TypeError(f"expected a number, not {value!r}")
    return value


def parse_model(value: Any) -> str | None:
    """A model folder, GGUF file or hub id; None means the default model."""
    if value is None or isinstance(value, str):
        return value
    raise TypeError(f"expected a path or None, not {type(value).__name__}")


def parse_sampling(value: Any) -> dict[str, Any]:
    """SamplingParams as a dict, keeping only known fields of the right JSON type.

    Ranges are checked where the dict becomes SamplingParams (SettingsPanel.set_params):
    a field dropped here falls back to the panel's default for it alone.
    """
    if not isinstance(value, dict):
        raise TypeError(f"expected a dict, not {type(value).__name__}")
    return {k: v for k, v in value.items() if k in SAMPLING_FIELDS
            and not isinstance(v, bool) and isinstance(v, SAMPLING_FIELDS[k])}


def parse_window(value: Any) -> str | int:
    """The memory window: "auto", "all" or a block count of at least 1."""
    if value in (WINDOW_AUTO, WINDOW_ALL):
        return value
    if isinstance(_no_bool(value), int) and value >= 1:
        return value
    raise ValueError("expected 'auto', 'all' or a block count of at least 1")


def parse_ranks(value: Any) -> int:
    """Ranks on this computer, 1..MAX_LOCAL_RANKS (a digit string, as int() read it, too)."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if not isinstance(_no_bool(value), int):
        raise TypeError(f"expected a whole number, not {type(value).__name__}")
    if not 1 <= value <= MAX_LOCAL_RANKS:
        raise ValueError(f"expected 1 to {MAX_LOCAL_RANKS} ranks")
    return value


def parse_geometry(value: Any) -> str | None:
    """QWidget.saveGeometry() as hex text; None (or "") when never saved."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"expected hex text, not {type(value).__name__}")
    if len(value) % 2 or not set(value) <= set(string.hexdigits):
        raise ValueError("expected hex text")
    return value


def parse_context(value: Any) -> int:
    """The context length in tokens, MIN_CONTEXT..MAX_CONTEXT."""
    if not isinstance(_no_bool(value), int):
        raise TypeError(f"expected a whole number, not {type(value).__name__}")
    if not MIN_CONTEXT <= value <= MAX_CONTEXT:
        raise ValueError(f"expected {MIN_CONTEXT} to {MAX_CONTEXT} tokens")
    return value


def parse_overflow(value: Any) -> str:
    """What happens when a conversation outgrows the context (core.engine.context_policy)."""
    if value not in OVERFLOW_POLICIES:
        raise ValueError(f"expected one of {', '.join(OVERFLOW_POLICIES)}")
    return value


def parse_flag(value: Any) -> bool:
    """A checkbox-like setting: JSON true or false only."""
    if not isinstance(value, bool):
        raise TypeError(f"expected true or false, not {value!r}")
    return value


def parse_speed(value: Any) -> dict[str, float]:
    """Measured decode speeds (weight bytes/s): "local" (this computer alone) and
    "cluster" (with paired devices); other keys and non-positive numbers are dropped."""
    if not isinstance(value, dict):
        raise TypeError(f"expected a dict, not {type(value).__name__}")
    return {k: float(v) for k, v in value.items() if k in ("local", "cluster")
            and isinstance(_no_bool(v), (int, float)) and v > 0}


API_SERVER_DEFAULT: dict[str, Any] = {"enabled": False, "port": 8080, "api_key": "",
                                      "lan": False}
MAX_API_KEY = 200


def parse_api_server(value: Any) -> dict[str, Any]:
    """The app's API server: on/off, port, key (may be empty) and whether it listens on
    the LAN; a missing or bad field takes its default."""
    if not isinstance(value, dict):
        raise TypeError(f"expected a dict, not {type(value).__name__}")
    out = dict(API_SERVER_DEFAULT)
    if isinstance(value.get("enabled"), bool):
        out["enabled"] = value["enabled"]
    if isinstance(value.get("lan"), bool):
        out["lan"] = value["lan"]
    port = value.get("port")
    if isinstance(_no_bool(port), int) and 1 <= port <= 65535:
        out["port"] = port
    key = value.get("api_key")
    if isinstance(key, str) and len(key) <= MAX_API_KEY and key.isprintable():
        out["api_key"] = key
    return out


def parse_speculate_setting(value: Any) -> str | int:
    """Speculative decoding: "auto", "off" or a number of draft tokens a step."""
    from core.engine.spec_control import K_MAX

    if value in ("auto", "off"):
        return value
    if isinstance(_no_bool(value), int) and 1 <= value <= K_MAX:
        return value
    raise ValueError(f"expected auto, off or 1..{K_MAX}, not {value!r}")


# the settings --------------------------------------------------------------------------
MODEL: Setting[str | None] = Setting(
    "model", None, parse_model, "The last model loaded (None: the default model).")
SAMPLING: Setting[dict[str, Any]] = Setting(
    "sampling", {}, parse_sampling, "Sampling parameters (SamplingParams as a dict).")
WINDOW: Setting[str | int] = Setting(
    "window", WINDOW_AUTO, parse_window, "Layer blocks each rank keeps in memory.")
SPECULATE: Setting[str | int] = Setting(
    "speculate", "auto", parse_speculate_setting,
    "Speculative decoding: auto, off or draft tokens a step (the draft is the model itself, "
    "quantized, on this computer).")
RANKS: Setting[int] = Setting(
    "ranks", 1, parse_ranks, "Ranks run on this computer (Model -> Local ranks).")
GEOMETRY: Setting[str | None] = Setting(
    "geometry", None, parse_geometry, "The main window's size and place.")
PANEL_VISIBLE: Setting[bool] = Setting(
    "panel_visible", True, parse_flag, "Whether the side panel (View -> Show) is shown.")
CONTEXT: Setting[int] = Setting(
    "context", RunOptions.context, parse_context,
    "Context length in tokens (up to the model's maximum; a change reloads the model).")
CONTEXT_OVERFLOW: Setting[str] = Setting(
    "context_overflow", DROP_OLDEST, parse_overflow,
    "When a conversation outgrows the context: drop-oldest, drop-middle or stop.")

DECODE_SPEED: Setting[dict[str, float]] = Setting(
    "decode_speed", {}, parse_speed, "Measured decode speeds, for the model library.")
API_SERVER: Setting[dict[str, Any]] = Setting(
    "api_server", API_SERVER_DEFAULT, parse_api_server,
    "Settings -> Local API server: on/off, port, API key, LAN.")

ALL: tuple[Setting[Any], ...] = (MODEL, SAMPLING, WINDOW, RANKS, GEOMETRY, PANEL_VISIBLE,
                                 DECODE_SPEED, API_SERVER, SPECULATE, CONTEXT,
                                 CONTEXT_OVERFLOW)
