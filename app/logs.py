"""The app's log file: what went wrong after a desktop launch, where nobody reads stderr.

`setup_logging()` (once, from app.main.main) sends every logger's records to a rotating
file, LOG_FILE in `log_dir()`: platformdirs' user log folder for "tpi-chat", or the folder
named by $TPI_CHAT_LOGS (the test session points it at a temp dir). It also routes Python
warnings and unhandled exceptions (Qt slots and QThreadPool jobs reach `sys.excepthook`,
Python threads `threading.excepthook`) into the same file; the previous hooks still run,
so the terminal keeps showing them too. Help -> Open log folder shows the folder.

Kept free of Qt: a failure before the QApplication exists is worth logging too.
"""

from __future__ import annotations

import logging
import os
import platform
import sys
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from logging.handlers import RotatingFileHandler
from pathlib import Path
from types import TracebackType

import platformdirs

APP_NAME = "tpi-chat"
ENV_VAR = "TPI_CHAT_LOGS"
LEVEL_ENV_VAR = "TPI_CHAT_LOG_LEVEL"  # e.g. DEBUG, to also keep the debug records
LOG_FILE = "tpi-chat.log"
MAX_BYTES = 1_000_000
BACKUPS = 5  # tpi-chat.log.1 .. .5: at most ~6 MB on disk
FORMAT = "%(asctime)s %(levelname)s [%(threadName)s] %(name)s: %(message)s"

log = logging.getLogger(__name__)


def log_dir() -> Path:
    """Where the log file lives: $TPI_CHAT_LOGS, else the user log folder (not created)."""
    override = os.environ.get(ENV_VAR)
    return Path(override).expanduser() if override else Path(
        platformdirs.user_log_dir(APP_NAME))


@dataclass
class _Installed:
    """What setup_logging changed, so that teardown_logging can put it back."""

    handler: RotatingFileHandler
    root_level: int
    excepthook: Callable[..., object]
    threading_excepthook: Callable[[threading.ExceptHookArgs], object]


_installed: _Installed | None = None


def setup_logging(folder: Path | str | None = None, max_bytes: int = MAX_BYTES,
                  backups: int = BACKUPS) -> Path | None:
    """Log to a rotating file in `folder` (default: `log_dir()`); returns the file's path.

    Idempotent: a second call returns the file already in use. Returns None when the folder
    cannot be written: the app must still start, so this says why on stderr and goes on.
    """
    global _installed
    if _installed is not None:
        return Path(_installed.handler.baseFilename)
    folder = Path(folder) if folder is not None else log_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handler = RotatingFileHandler(folder / LOG_FILE, maxBytes=max_bytes,
                                      backupCount=backups, encoding="utf-8")
    except OSError as e:
        print(f"TPI Chat cannot write its log file in {folder} ({e}); errors go to the "
              "terminal only.", file=sys.stderr, flush=True)
        return None
    handler.setFormatter(logging.Formatter(FORMAT))
    root = logging.getLogger()
    _installed = _Installed(handler, root.level, sys.excepthook, threading.excepthook)
    root.addHandler(handler)
    logging.captureWarnings(True)  # warnings.warn(...) -> the "py.warnings" logger
    root.setLevel(_level())
    sys.excepthook = _log_unhandled
    threading.excepthook = _log_unhandled_in_thread
    log.info("TPI Chat starting (Python %s, %s)", platform.python_version(),
             platform.platform())
    return Path(handler.baseFilename)


def teardown_logging() -> None:
    """Undo setup_logging: close the file, restore the hooks (tests; the app never needs it)."""
    global _installed
    installed, _installed = _installed, None
    if installed is None:
        return
    root = logging.getLogger()
    root.removeHandler(installed.handler)
    installed.handler.close()
    root.setLevel(installed.root_level)
    logging.captureWarnings(False)
    sys.excepthook = installed.excepthook
    threading.excepthook = installed.threading_excepthook


def _level() -> int:
    """The root level: INFO, or $TPI_CHAT_LOG_LEVEL when it names a level."""
    name = os.environ.get(LEVEL_ENV_VAR, "").strip().upper()
    level = logging.getLevelName(name) if name else logging.INFO
    if not isinstance(level, int):  # getLevelName answers "Level X" for unknown names
        warnings.warn(f"{LEVEL_ENV_VAR}={name!r} is not a logging level; using INFO",
                      stacklevel=2)
        return logging.INFO
    return level


def _log_unhandled(exc_type: type[BaseException], exc: BaseException,
                   tb: TracebackType | None) -> None:
    """sys.excepthook: log, then let the previous hook report it as before."""
    if not issubclass(exc_type, KeyboardInterrupt):  # Ctrl+C in a terminal is no bug
        log.critical("Unhandled exception", exc_info=(exc_type, exc, tb))
    previous = _installed.excepthook if _installed is not None else sys.__excepthook__
    previous(exc_type, exc, tb)


def _log_unhandled_in_thread(args: threading.ExceptHookArgs) -> None:
    """threading.excepthook: log, then let the previous hook report it as before."""
    if not issubclass(args.exc_type, SystemExit):  # the thread's normal way out
        name = args.thread.name if args.thread is not None else "?"
        log.critical("Unhandled exception in thread %s", name,
                     exc_info=(args.exc_type, args.exc_value, args.exc_traceback))
    previous = (_installed.threading_excepthook if _installed is not None
                else threading.__excepthook__)
    previous(args)
