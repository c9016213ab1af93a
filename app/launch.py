"""The `tpi-chat` console entry point: the window with no arguments, else core's CLI.

Lives in app/ because choosing the GUI means importing Qt, which core/ never does. Where no
window can open, the terminal chat starts instead, after saying why. Qt is never left to
abort: on a desktop that lacks the system libraries of Qt's platform plugin (or whose X
display refuses connections) the launcher says what to install (app/platform_check.py), in
the terminal and as a desktop notification, then starts the terminal chat when it runs in a
terminal, or exits with status 1 when it does not (started from a menu: a chat reading a
closed stdin would load the model only to quit).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass

from app import platform_check
from core.cli import main as cli_main


@dataclass(frozen=True)
class NoWindow:
    """Why the window cannot open here."""

    reason: str  # one sentence completing "TPI Chat cannot open its window because ..."
    message: str  # everything the terminal shows: the reason and what to install
    command: str | None = None  # the install command alone (for the notification)
    headless: bool = False  # no display at all: the terminal chat is simply the app here


def _cannot(reason: str, details: str = "", command: str | None = None) -> NoWindow:
    message = f"TPI Chat cannot open its window because {reason}."
    return NoWindow(reason, f"{message}\n{details}" if details else message, command)


def why_no_window(env: Mapping[str, str] | None = None) -> NoWindow | None:
    """Why the window cannot open here, or None when it can; checked before Qt loads.

    A missing display, Qt's system libraries, a broken Qt and a refused X display count; the
    app's own import errors are bugs and must surface, not hide behind the terminal chat.
    """
    env = os.environ if env is None else env
    linux = sys.platform.startswith("linux")
    if linux and not (env.get("DISPLAY") or env.get("WAYLAND_DISPLAY")
                      or env.get("QT_QPA_PLATFORM")):
        return NoWindow("there is no display (neither DISPLAY nor WAYLAND_DISPLAY is set)",
                        "", headless=True)
    xcb = linux and platform_check.xcb_will_load(env, platform_check.wayland_usable(env))
    if linux:
        needed = platform_check.GUI_SONAMES + (platform_check.XCB_SONAMES if xcb else ())
        missing = platform_check.missing_libraries(needed)
        if missing:
            os_release = platform_check.read_os_release()
            return NoWindow(f"Qt needs system libraries that are missing here: "
                            f"{', '.join(missing)}",
                            platform_check.missing_libraries_message(missing, os_release),
                            platform_check.install_command(missing, os_release))
    try:
        import PySide6.QtWidgets  # noqa: F401
    except ImportError as e:
        missing = platform_check.sonames_in_error(str(e))
        os_release = platform_check.read_os_release() if missing else ""
        return _cannot(f"Qt for Python (PySide6) cannot be loaded ({e})",
                       platform_check.install_advice(missing, os_release) if missing else "",
                       platform_check.install_command(missing, os_release))
    if xcb:
        refused = platform_check.x_display_error(env.get("DISPLAY"))
        if refused is not None:
            return _cannot(refused)
    return None


def gui_unavailable_reason() -> str | None:
    """Why the window cannot open here (one sentence), or None when it can."""
    no_window = why_no_window()
    return None if no_window is None else no_window.reason


def _interactive() -> bool:
    """Started in a terminal (someone can type into the terminal chat)?"""
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except (ValueError, OSError):
        return False


def _window_blocked(no_window: NoWindow) -> int:
    """Say why (terminal and desktop notification); then the terminal chat, or exit 1."""
    print(no_window.message, file=sys.stderr, flush=True)
    if no_window.command:
        body = f"Missing system libraries. Install them with:\n{no_window.command}"
    else:
        body = f"Because {no_window.reason}. Run tpi-chat in a terminal for details."
    platform_check.notify("TPI Chat cannot open its window", body)
    if _interactive():
        print("Starting the terminal chat instead.", file=sys.stderr, flush=True)
        return cli_main(["chat"])
    print("The terminal chat works meanwhile: run `tpi-chat chat` in a terminal.",
          file=sys.stderr, flush=True)
    return 1


def main(argv: list[str] | None = None) -> int:
    """`tpi-chat [ARGS]`: subcommands go to core.cli; none starts the desktop app."""
    args = sys.argv[1:] if argv is None else argv
    if args:
        return cli_main(args)
    no_window = why_no_window()
    if no_window is not None and no_window.headless:
        print(f"TPI Chat cannot open its window because {no_window.reason}; starting the "
              "terminal chat instead.", file=sys.stderr, flush=True)
        return cli_main(["chat"])
    if no_window is not None:
        return _window_blocked(no_window)
    from app.main import main as app_main

    return app_main()


if __name__ == "__main__":
    sys.exit(main())
